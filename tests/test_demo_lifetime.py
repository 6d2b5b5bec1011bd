"""No child of `arena demo` outlives it: killed with kill -9, its terminal closed (SIGHUP), or its stdout
pipe closed (`arena demo | tee`, then Ctrl-C), every process of the run ends within seconds."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_demo import _procs_with_marker

from arena import lifeline
from arena.tools_service import SERVED

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(400)  # a whole demo comes up first (up to 240 s on a busy machine)
GONE_WITHIN_S = 15.0  # "a few seconds", with room for a machine shared by several test runs


class Demo:
    """`arena demo` in its own session, as in its own terminal. Its stdout is a pipe read by a thread,
    or with `terminal=True` a pseudo-terminal (the live dashboard in front, as in tmux)."""

    def __init__(self, tmp_path: Path, terminal: bool = False):
        self.marker = f"ARENA_TEST_{uuid.uuid4().hex}"
        self.run_dir = tmp_path / "run"
        self.output_bytes = bytearray()
        self.hang_up = threading.Event()  # the reader goes away: the pipe or terminal is closed
        argv = [
            sys.executable,
            "-m",
            "arena.cli",
            "demo",
            "--agents",
            "2",
            "--interval",
            "1",
            "--run-dir",
            str(self.run_dir),
        ]
        if terminal:
            self.out, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
            stdout = slave
        else:
            argv.append("--no-dashboard")
            self.out, stdout = os.pipe()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=stdout,
            stderr=stdout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", self.marker: "1"},
        )
        os.close(stdout)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        while not self.hang_up.is_set():
            if select.select([self.out], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.out, 65536)
                except OSError:  # a terminal whose other side is gone
                    chunk = b""
                if not chunk:
                    break
                self.output_bytes += chunk
        os.close(self.out)

    def close_output(self) -> None:
        self.hang_up.set()
        self._reader.join(10)

    def wait_up(self, timeout: float = 240.0) -> None:
        """Until the tools serve (every other part was ready before they started)."""
        deadline = time.monotonic() + timeout
        tools_log = self.run_dir / "tools.log"
        while not (tools_log.exists() and SERVED in tools_log.read_text(errors="replace")):
            assert self.proc.poll() is None, (
                f"the demo exited ({self.proc.returncode}) before it was up:\n{self.output}"
            )
            assert time.monotonic() < deadline, f"the demo was not up within {timeout}s:\n{self.output}"
            time.sleep(0.2)
        assert len(_procs_with_marker(self.marker)) >= 9, (
            "demo, broker, sim, policy, connector, 2 chat nodes, 2 routers, tools"
        )

    @property
    def output(self) -> str:
        return self.output_bytes.decode(errors="replace")

    def assert_nothing_left(self, within: float) -> float:
        """Seconds until no process of the run was left."""
        start = time.monotonic()
        deadline = start + within
        while (left := _procs_with_marker(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            cmds = [
                Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") for pid in left
            ]
            pytest.fail(f"{len(left)} process(es) of the run still there {within:g}s later:\n" + "\n".join(cmds))
        return time.monotonic() - start

    def cleanup(self) -> None:
        self.hang_up.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pid in _procs_with_marker(self.marker):  # whatever a failing run left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def demo(tmp_path):
    made = []

    def start(terminal: bool = False) -> Demo:
        made.append(Demo(tmp_path, terminal))
        return made[-1]

    try:
        yield start
    finally:
        for d in made:
            d.cleanup()


def test_kill_9_of_the_demo_ends_every_child(demo):
    d = demo()
    d.wait_up()
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    print(f"every child gone {d.assert_nothing_left(GONE_WITHIN_S):.1f}s after the kill")


def test_a_closed_terminal_stops_the_demo_in_order(demo):
    d = demo(terminal=True)  # the live dashboard in front, as in a tmux window
    d.wait_up()
    d.close_output()  # the window closes: writes to the terminal now fail ...
    os.killpg(d.proc.pid, signal.SIGHUP)  # ... and its foreground process group is hung up
    assert d.proc.wait(120) == 0, d.output[-3000:]
    d.assert_nothing_left(5)
    # The tools process, whose dashboard was on that terminal, stopped in order by itself (it used to fail
    # on its next status line and hang until the demo killed it 15 s later).
    tools_log = (d.run_dir / "tools.log").read_text(errors="replace")
    assert "the dashboard's terminal is gone" in tools_log and "tools process failed" not in tools_log, tools_log


def test_a_closed_stdout_pipe_then_ctrl_c_stops_everything(demo):
    d = demo()
    d.wait_up()
    d.close_output()  # `arena demo | tee`, Ctrl-C: tee is gone first, writes now fail with EPIPE ...
    d.proc.send_signal(signal.SIGINT)  # ... then the demo gets its SIGINT
    assert d.proc.wait(120) == 0, d.output
    d.assert_nothing_left(5)


def test_a_closed_stdout_pipe_alone_stops_the_demo(demo):
    d = demo()
    d.wait_up()
    d.close_output()  # `arena demo | head`: nobody reads any more, and no signal comes
    assert d.proc.wait(120) == 0, d.output
    d.assert_nothing_left(5)


STUBBORN_PART = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM: not stopping", flush=True))
print("READY", flush=True)
time.sleep(120)
"""


def test_the_lifeline_ends_a_part_whose_supervisor_is_gone_even_when_it_is_no_child_and_hangs(tmp_path):
    """The parent watch alone: the named supervisor is not the part's parent (as for a grandchild, which
    PR_SET_PDEATHSIG does not cover), is left a zombie (killed, not reaped), and the part ignores SIGTERM."""
    script = tmp_path / "part.py"
    script.write_text(STUBBORN_PART)
    supervisor = subprocess.Popen(["sleep", "300"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", lifeline.PARENT_ENV: lifeline.identity(supervisor.pid)}
    part = subprocess.Popen(
        [sys.executable, "-m", "arena.lifeline", str(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert part.stdout.readline().strip() == "READY"
        time.sleep(lifeline.CHECK_S * 3)
        assert part.poll() is None, "a part whose supervisor lives keeps running"
        supervisor.kill()  # not reaped: a zombie, which must count as gone
        started = time.monotonic()
        part.wait(lifeline.GRACE_S + 5)
        print(f"part gone {time.monotonic() - started:.1f}s after its supervisor")
        assert "is gone; stopping" in part.stdout.read()
    finally:
        part.kill()
        supervisor.kill()
        supervisor.wait()


def test_a_part_started_by_hand_has_no_lifeline(tmp_path):
    script = tmp_path / "part.py"
    script.write_text(
        "import os, sys; from arena import lifeline; lifeline.hold(); print(sys.argv[1:], os.getppid() > 0)"
    )
    env = {k: v for k, v in os.environ.items() if k != lifeline.PARENT_ENV}
    out = subprocess.run(
        [sys.executable, "-m", "arena.lifeline", str(script), "a", "--b"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "['a', '--b'] True", out
