"""The arena's scripts as real subprocesses, started as a user starts them, and waited on by their output."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path
from signal import SIGINT

ROOT = Path(__file__).resolve().parent.parent.parent


class Proc:
    """A script running in its own process; its output, line by line, is collected in `lines`.

    Every long-running arena script prints a line containing `READY` on stdout once it serves; `ready_at`
    is the monotonic time that line arrived. With `tty=True` stdout is a pseudo-terminal (rich draws its
    live screen as in a user's terminal; only the lines before READY are kept) and stderr a pipe.
    `new_session=True` keeps a terminal's Ctrl-C for the caller alone.
    """

    def __init__(self, *args: str, env: dict | None = None, cwd: Path = ROOT, tty: bool = False, cols: int = 160,
                 rows: int = 50, new_session: bool = False):  # fmt: skip
        self.args = [sys.executable, *args]
        self.lines: list[str] = []
        self.ready_at: float | None = None
        self.ready_line = ""
        self.launched_at = time.monotonic()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        common = {"cwd": cwd, "stdin": subprocess.DEVNULL, "start_new_session": new_session}
        if tty:
            import fcntl
            import struct
            import termios

            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            full_env.update(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
            self.proc = subprocess.Popen(self.args, stdout=slave, stderr=subprocess.PIPE, env=full_env, **common)
            os.close(slave)
            self._pumps = [threading.Thread(target=self._pump_fd, args=(master,), daemon=True),
                           threading.Thread(target=self._pump, args=(self.proc.stderr,), daemon=True)]  # fmt: skip
        else:
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, **common
            )
            self._pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)]
        for t in self._pumps:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def startup_s(self) -> float | None:
        """Launch -> READY in seconds (None before READY)."""
        return None if self.ready_at is None else self.ready_at - self.launched_at

    def _see(self, line: str) -> None:
        self.lines.append(line)
        if self.ready_at is None and "READY" in line:
            self.ready_at = time.monotonic()
            self.ready_line = line

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self._see(raw.decode(errors="replace").rstrip("\r\n"))

    def _pump_fd(self, fd: int) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            if self.ready_at is None:  # only lines before the live screen matter
                buf += chunk
                *done, buf = buf.split(b"\n")
                for raw in done:
                    self._see(raw.decode(errors="replace").rstrip("\r"))
        os.close(fd)

    def _found(self, text: str) -> str | None:
        """The first line containing `text`; raises if the process exited without one."""
        for line in list(self.lines):
            if text in line:
                return line
        if self.proc.poll() is not None:
            time.sleep(0.2)  # the pump may still hold its last lines
            for line in list(self.lines):
                if text in line:
                    return line
            raise RuntimeError(f"{self.args} exited ({self.proc.returncode}) before {text!r}:\n{self.output}")
        return None

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while (line := self._found(text)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.args}: no {text!r} within {timeout}s:\n{self.output}")
            time.sleep(0.05)
        return line

    def wait_ready(self, timeout: float = 30.0) -> Proc:
        self.wait_for("READY", timeout)
        return self

    async def ready(self, timeout: float = 30.0) -> Proc:
        """wait_ready for an event loop: other tasks run meanwhile."""
        deadline = time.monotonic() + timeout
        while self._found("READY") is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.args}: no 'READY' within {timeout}s:\n" + "\n".join(self.lines[-30:]))
            await asyncio.sleep(0.01)
        return self

    def signal(self, sig: int = SIGINT) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for it to exit (after `timeout` it is killed) and for its last lines."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._pumps:
            t.join(5)
        return self.proc.returncode

    def stop(self, sig: int = SIGINT, timeout: float = 15.0) -> int:
        self.signal(sig)
        return self.wait_exit(timeout)


def stop_all(procs: list[Proc], timeout: float = 20.0) -> None:
    """One SIGINT to each at once (like Ctrl-C in a terminal running them all), then wait for them in
    order; once `timeout` has passed, each one left gets a few seconds more, then is killed."""
    for p in procs:
        p.signal()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.wait_exit(max(3.0, deadline - time.monotonic()))
