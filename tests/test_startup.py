"""Every part waits for its broker the same way: started before the broker exists (people launch the
parts in any order) it says so and tries again each second until --connect-timeout; Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest

from arena.broker import EmbeddedBroker, free_port
from arena.startup import StartupFailed, start_patiently
from tests.support import Proc


class Flaky:
    """An attempt that fails `failures` times, then succeeds; counts what was undone."""

    def __init__(self, failures: int):
        self.failures, self.attempts, self.undone = failures, 0, 0

    async def attempt(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError(f"refused #{self.attempts}")

    async def undo(self) -> None:
        self.undone += 1


async def test_start_patiently_retries_until_it_works_and_undoes_each_failure():
    said: list[str] = []
    f = Flaky(failures=2)
    assert await start_patiently(
        f.attempt, f.undo, stop=asyncio.Event(), timeout_s=10, what="the part", status=said.append
    )
    assert (f.attempts, f.undone) == (3, 2)
    assert said == [f"could not start the part (ConnectionError: refused #{n}); trying again in 1s" for n in (1, 2)]


async def test_start_patiently_gives_up_at_the_timeout_with_the_last_error():
    f = Flaky(failures=99)
    with pytest.raises(StartupFailed, match=r"the part did not start within 2.5s: ConnectionError: refused #\d"):
        await start_patiently(
            f.attempt, f.undo, stop=asyncio.Event(), timeout_s=2.5, what="the part", status=lambda m: None
        )
    assert f.attempts == f.undone >= 2

    async def hangs() -> None:
        await asyncio.sleep(60)

    with pytest.raises(StartupFailed, match=r"did not start within 0.2s \(no answer\)"):
        await start_patiently(
            hangs, f.undo, stop=asyncio.Event(), timeout_s=0.2, what="the part", status=lambda m: None
        )


async def test_a_part_restarted_after_its_broker_went_away_waits_for_it_without_limit(monkeypatch):
    """restart_in_place after the broker went away marks the fresh process: that one start-up outlasts
    --connect-timeout (the broker comes back when it does); the next one is ordinary again."""
    from arena.reconnect import AWAIT_ENV

    monkeypatch.setenv(AWAIT_ENV, "1")
    f = Flaky(failures=3)  # ~3 s of refusals against a 0.5 s timeout
    assert await start_patiently(
        f.attempt, f.undo, stop=asyncio.Event(), timeout_s=0.5, what="x", status=lambda m: None
    )
    assert f.attempts == 4
    f = Flaky(failures=3)
    with pytest.raises(StartupFailed):
        await start_patiently(f.attempt, f.undo, stop=asyncio.Event(), timeout_s=0.5, what="x", status=lambda m: None)


async def test_start_patiently_stops_on_request_while_trying_or_waiting():
    stop = asyncio.Event()
    f = Flaky(failures=99)
    asyncio.get_running_loop().call_later(0.5, stop.set)  # during the 1 s pause after the first failure
    assert await start_patiently(f.attempt, f.undo, stop=stop, timeout_s=30, what="x", status=lambda m: None) is False
    assert f.attempts == f.undone == 1


@pytest.mark.processes
def test_every_part_started_before_its_broker_comes_up_with_it(tmp_path):
    port = free_port()
    at = ["--bootstrap-servers", f"127.0.0.1:{port}"]
    name = f"early_{uuid.uuid4().hex[:6]}"
    parts = {
        "router": Proc(
            "deploy_router_node.py", *at, "--name", name, "--chat-node-name", name, "--connect-timeout", "90"
        ),
        "tools": Proc(
            "tools_and_dashboard.py",
            *at,
            "--no-dashboard",
            "--ledger",
            str(tmp_path / "l.db"),
            "--connect-timeout",
            "90",
        ),
        "chat node": Proc(
            "deploy_chat_node.py", *at, "--name", name, "--base-url", "http://127.0.0.1:9/v1", "--connect-timeout", "90"
        ),
        "viewer": Proc("response_viewer.py", *at, "--connect-timeout", "90"),
    }
    broker = None
    try:
        for p in parts.values():
            p.wait_for("trying again", 60)  # no broker there yet: the first start fails, and it says so
            assert p.proc.poll() is None, p.output
        broker = EmbeddedBroker("127.0.0.1", port).start()
        for p in parts.values():
            p.wait_ready(90)
        for what, p in parts.items():
            p.proc.send_signal(signal.SIGINT)
        for what, p in parts.items():
            assert p.proc.wait(30) == 0, f"{what}:\n{p.output}"
            # each failed attempt is one status line of ours, not the Kafka client's connection errors
            assert "error:" not in p.output and "ERROR" not in p.output and "Traceback" not in p.output, (
                f"{what}:\n{p.output}"
            )
    finally:
        for p in parts.values():
            p.stop()
        if broker is not None:
            broker.stop()


@pytest.mark.processes
def test_a_part_without_a_broker_gives_up_at_connect_timeout_with_a_clear_error():
    p = Proc("deploy_chat_node.py", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--name", "lonely",
             "--base-url", "http://127.0.0.1:9/v1", "--connect-timeout", "3")  # fmt: skip
    assert p.proc.wait(60) == 1, p.output
    assert "error: chat node 'lonely' did not start within 3s" in p.output, p.output


class _Unowned(Exception):
    """Raised by the test's own SIGTERM handler: the runner did not take the signal over."""


def _unowned(*_):
    raise _Unowned


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_event_loop_ends_a_part_quietly(sig):
    import os

    from arena import service

    before = signal.signal(signal.SIGTERM, _unowned)
    try:

        def build():
            os.kill(os.getpid(), sig)  # handled in this thread before the next line runs
            raise AssertionError("the signal did not interrupt the build")

        assert service.main(build) == 0
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("script, args, line, sig", [
    ("deploy_router_node.py", ["--name", "early"], "Starting agent 'early'", signal.SIGTERM),
    ("tools_and_dashboard.py", ["--no-dashboard", "--ledger", "{tmp}/l.db"], "trades restored", signal.SIGINT),
])  # fmt: skip
def test_ctrl_c_while_a_script_still_imports_ends_it_quietly(tmp_path, script, args, line, sig):
    # Both say a line, then import calfkit (seconds) before their event loop runs: a signal lands there.
    p = Proc(script, "--bootstrap-servers", f"127.0.0.1:{free_port()}", *(a.format(tmp=tmp_path) for a in args))
    try:
        p.wait_for(line, 60)
        p.proc.send_signal(sig)
        assert p.proc.wait(30) == 0, p.output
        assert "Traceback" not in p.output and "READY" not in p.output and "Connecting" not in p.output, p.output
    finally:
        p.stop()


def test_ctrl_c_inside_a_class_body_of_an_import_ends_a_part_quietly(monkeypatch):
    """A signal can land while an imported module builds a class (seen in uvicorn, imported by faststream):
    Python 3.11 raises it from __set_name__ wrapped in a RuntimeError. It is still a Ctrl-C: exit 0."""
    from arena import service

    monkeypatch.setattr(service, "own_signals", lambda: None)  # this test process keeps its handlers

    class Interrupted:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    def build():
        class Server:  # what an import does, with the signal arriving here
            limit = Interrupted()

        raise AssertionError("not reached")

    assert service.main(build) == 0

    def broken():
        raise RuntimeError("a real failure")

    with pytest.raises(RuntimeError, match="a real failure"):
        service.main(broken)
