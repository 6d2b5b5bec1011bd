"""`arena tournament`: the comparison's statistics on made-up runs, and a two-run tournament on the
sample recording where deterministic policies give identical runs and the intervals contain them."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from arena.metrics import BASELINE_NAME
from arena.tournament import bootstrap_ci, compare, kendalls_w
from tests.support import Proc
from tests.support.recordings import first_snapshots

ROOT = Path(__file__).resolve().parent.parent
# Both policies trade on the recording's first snapshot; the next four move their marks (returns, drawdown).
# A replay runs at the recording's pace or at most twice it: each snapshot left out saves ~1 s per run.
SNAPSHOTS = 5


def board(returns: dict[str, float], baseline: float = 0.0, dd: float = 1.0) -> dict:
    rows = [
        {
            "name": n,
            "baseline": False,
            "return_pct": r,
            "trades": 2,
            "metrics": {"sharpe": r * 10, "max_drawdown_pct": dd},
        }
        for n, r in returns.items()
    ]
    return {"agents": rows + [{"name": BASELINE_NAME, "baseline": True, "return_pct": baseline, "metrics": {}}]}


def test_bootstrap_interval_of_identical_values_is_that_value():
    assert bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)
    assert bootstrap_ci([]) is None


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_runs():
    few = [1.0, 2.0, 3.0, 4.0]
    lo, hi = bootstrap_ci(few)
    assert min(few) <= lo < 2.5 < hi <= max(few)
    lo2, hi2 = bootstrap_ci(few * 25)
    assert lo < lo2 < 2.5 < hi2 < hi
    assert bootstrap_ci(few) == bootstrap_ci(few), "seeded: the same runs give the same interval"


def test_kendalls_w():
    same = [{"a": 1, "b": 2, "c": 3}] * 3
    assert kendalls_w(same) == pytest.approx(1.0)
    assert kendalls_w([{"a": 1, "b": 2}, {"a": 2, "b": 1}]) == pytest.approx(0.0)
    assert kendalls_w(same[:1]) is None


def test_compare_pairs_each_run_with_its_own_baseline_and_rivals():
    boards = [board({"a": 1.0, "b": 0.5}, baseline=0.2), board({"a": -1.0, "b": 0.0}, baseline=-0.5)]
    comp = compare(boards)
    a = comp["agents"]["a"]
    assert a["return_pct"]["mean"] == pytest.approx(0.0)
    assert (
        a["vs_buy_and_hold"]["mean"] == pytest.approx(((1.0 - 0.2) + (-1.0 + 0.5)) / 2)
        and a["vs_buy_and_hold"]["wins"] == 1
    )
    assert a["rank"]["each_run"] == [1, 2] and comp["ranking"]["same_order_every_run"] is False
    (pair,) = comp["pairs"]
    assert (pair["a"], pair["b"], pair["a_wins"], pair["b_wins"]) == ("a", "b", 1, 1)
    assert pair["return_diff"]["mean"] == pytest.approx((0.5 - 1.0) / 2)
    assert comp["buy_and_hold"]["return_pct"]["mean"] == pytest.approx(-0.15)


DETERMINISTIC = """
[[chat_nodes]]
name = "mo"
model = "momentum"
base_url = "offline"
[[chat_nodes]]
name = "mr"
model = "mean-revert"
base_url = "offline"
[[agents]]
name = "mo"
strategy = "momentum"
chat_node = "mo"
[[agents]]
name = "mr"
strategy = "scalper"
chat_node = "mr"
"""


@pytest.mark.timeout(900)  # two whole arenas one after the other, on a machine that may be busy
def test_two_runs_of_deterministic_policies_are_identical_and_their_intervals_contain_them(tmp_path):
    (tmp_path / "arena.toml").write_text(DETERMINISTIC)
    recording = first_snapshots(SNAPSHOTS, tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arena.cli",
            "tournament",
            str(tmp_path / "arena.toml"),
            "--replay",
            str(recording),
            "--runs",
            "2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["not_in_time"] for r in summary["runs"]] == [[], []], summary["runs"]
    boards = [json.loads((out / f"run-{i}" / "leaderboard.json").read_text()) for i in (1, 2)]
    facts = [
        {
            r["name"]: (r["return_pct"], r["trades"], r["total_value"], r["metrics"]["max_drawdown_pct"])
            for r in b["agents"]
        }
        for b in boards
    ]
    assert facts[0] == facts[1], facts
    assert any(r["trades"] for r in boards[0]["agents"] if not r["baseline"]), "a run where nobody trades proves little"
    for name, a in summary["comparison"]["agents"].items():
        for metric in ("return_pct", "max_drawdown_pct"):
            value = facts[0][name][3 if metric == "max_drawdown_pct" else 0]
            lo, hi = a[metric]["ci95"]
            assert lo <= value <= hi and a[metric]["mean"] == pytest.approx(value), (name, metric, a[metric])
        assert a["rank"]["worst"] == a["rank"]["best"]
    assert summary["comparison"]["ranking"]["same_order_every_run"] is True
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {r["agent"] for r in rows} == {"mo", "mr"}
    assert "<table>" in (out / "index.html").read_text()
    assert "vs buy-and-hold" in proc.stdout


@pytest.mark.timeout(300)
def test_ctrl_c_during_a_tournament_exits_0_and_leaves_no_process_behind(tmp_path):
    """Ctrl-C while a run trades: the run's processes and its broker are stopped, the exit is quiet (0),
    and the runs that finished before it are still summarised."""
    from test_up import _nothing_left  # as test_up takes test_demo's

    (tmp_path / "arena.toml").write_text(DETERMINISTIC)
    marker = f"ARENA_TEST_{uuid.uuid4().hex}"  # every process of the tournament inherits it
    proc = Proc(
        "-m", "arena.cli", "tournament", str(tmp_path / "arena.toml"), "--replay",
        str(first_snapshots(2, tmp_path)), "--runs", "2", "--out", str(tmp_path / "out"),
        env={marker: "1"}, new_session=True,
    )  # fmt: skip
    try:
        proc.wait_for("run-2: warm turn", 300)  # run 1 over; every part of run 2 up, its replay about to start
        code = proc.stop(timeout=60)
    finally:
        proc.stop(signal.SIGKILL)
        left = _nothing_left(marker)
    assert code == 0, proc.output
    assert not left, f"{len(left)} process(es) outlived Ctrl-C:\n{proc.output}"
    assert "Traceback" not in proc.output and "stopped after 1 of 2 runs" in proc.output, proc.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["runs"]) == 1 and summary["comparison"], summary
