"""A part whose broker dies while it starts: after its clients are up, before READY (arena/service.py).

The runner's broker watch must already know the broker the clients started on, so the part restarts in
place and comes up on the fresh broker, as it does when the broker dies while it serves. Held in that
window by the runner's test hook (service.HOLD_ENV), on real processes: a broker and the tools process.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from arena import service
from arena.broker import EmbeddedBroker, free_port
from tests.support import Proc

RESTARTING = "restarting the tools in place"


def _ready_after(proc: Proc, text: str, timeout: float) -> str:
    """The first READY line after the line containing `text`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = list(proc.lines)
        start = next((i for i, line in enumerate(lines) if text in line), None)
        if start is not None and (ready := next((line for line in lines[start:] if "READY" in line), None)):
            return ready
        assert proc.proc.poll() is None, f"exited ({proc.proc.returncode}):\n{proc.output}"
        assert time.monotonic() < deadline, f"no READY after {text!r} within {timeout}s:\n{proc.output}"
        time.sleep(0.05)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("broker_back", [True, False], ids=["back-before-ready", "away-at-ready"])
def test_tools_whose_broker_dies_between_serving_and_ready_restart_on_the_fresh_broker(tmp_path, broker_back):
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    asyncio.run(broker.wait_ready())
    release = tmp_path / "release"
    tools = Proc(
        "tools_and_dashboard.py", "--no-dashboard", "--ledger", str(tmp_path / "ledger.db"),
        "--bootstrap-servers", broker.bootstrap, "--connect-timeout", "120",
        env={service.HOLD_ENV: str(release)},
    )  # fmt: skip
    try:
        tools.wait_for(service.HOLD_ENV, 120)
        assert "tools served" in tools.output and "READY" not in tools.output, tools.output
        broker.proc.kill()
        broker.proc.wait()
        if broker_back:  # as `arena up` does: a fresh, empty broker on the same address at once
            broker.start()
            asyncio.run(broker.wait_ready())
        release.touch()
        tools.wait_for(RESTARTING, 60)
        if not broker_back:  # the fresh process waits for it however long it takes
            tools.wait_for("could not start the tools", 60)
            broker.start()
            asyncio.run(broker.wait_ready())
        ready = _ready_after(tools, RESTARTING, 120)
        assert "served in" in ready, ready
        assert tools.stop(timeout=60) == 0, tools.output
    finally:
        tools.stop(timeout=10)
        broker.stop()
    assert tools.output.count("READY:") == 1, tools.output  # READY only on the broker the tools know
    assert "Traceback" not in tools.output, tools.output
