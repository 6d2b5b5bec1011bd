"""`arena demo`: the one-command arena, run as a newcomer would (headless, since tests have no terminal)."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

from tests.support.procs import Proc


def _procs_with_marker(marker: str) -> list[int]:
    """Live processes whose environment carries the marker (every child inherits the demo's env)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in env and state != "Z":
            found.append(int(pid))
    return found


def _tail(log: Path, chars: int = 3000) -> str:
    return f"--- {log.name}:\n" + (log.read_text(errors="replace")[-chars:] if log.exists() else "(missing)")


def test_demo_runs_for_a_duration_and_the_agents_trade(tmp_path):
    out = tmp_path / "out.json"
    marker = f"ARENA_TEST_{uuid.uuid4().hex}"
    demo = Proc(
        "-m",
        "arena.cli",
        "demo",
        "--duration",
        "20",  # room for ~20 turns
        "--interval",
        "1",
        "--export",
        str(out),
        "--run-dir",
        str(tmp_path / "run"),
        env={marker: "1"},
    )
    try:
        assert demo.proc.wait(300) == 0, demo.output
    finally:
        demo.stop(signal.SIGKILL)
    text = demo.output
    for line in ("broker ready", "feed connected", "agents online: alice, bob, carol", "tools ready"):
        assert line in text, text
    board = json.loads(out.read_text())
    agents = {a["name"]: a for a in board["agents"] if not a.get("baseline")}
    assert set(agents) == {"alice", "bob", "carol"}, board
    for name, row in agents.items():  # every agent thinks on the ticks, without a failed turn
        # (model_errors counts errors and timeouts: no turn stalls, docs/RELIABILITY.md "A turn that stalled")
        assert row["turns"] >= 5 and row["model_errors"] == 0, (
            f"{name}: {row}\n{_tail(tmp_path / 'run' / f'router-{name}.log')}\n{_tail(tmp_path / 'run' / 'tools.log')}"
        )
        assert row["total_value"] > 0
    # carol's random walk trades on any tick; alice (momentum) and bob (mean-revert) trade only when the
    # simulated market moves enough, which a short run may not see
    assert agents["carol"]["trades"] >= 1 and sum(row["trades"] for row in agents.values()) >= 2, board
    assert "Leaderboard" in text or "final standings" in text.lower()
    assert not _procs_with_marker(marker), "a child process outlived the demo"
    logs = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"broker.log", "connector.log", "tools.log", "router-alice.log", "chat-quant.log"} <= logs, logs


def test_demo_ctrl_c_leaves_no_child_behind(tmp_path):
    marker = f"ARENA_TEST_{uuid.uuid4().hex}"
    demo = Proc(
        "-m",
        "arena.cli",
        "demo",
        "--interval",
        "2",
        "--agents",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        env={marker: "1"},
    )
    try:
        demo.wait_for("agents online", timeout=240)
        assert len(_procs_with_marker(marker)) >= 7  # demo, broker, sim, policy, connector, 2 chat nodes, routers
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(90) == 0, demo.output
    finally:
        demo.stop(signal.SIGKILL)
    assert "stopping" in demo.output
    assert not _procs_with_marker(marker), "a child process outlived Ctrl-C"
