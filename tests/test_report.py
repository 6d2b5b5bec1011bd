"""`arena report`: the leaderboard from an export file and from a real ledger file (arena.ledger)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console

from arena.ledger import Ledger
from arena.market import MarketSnapshot, Quote
from arena.metrics import BASELINE_NAME, AgentMetrics
from arena.portfolio import Fill
from arena.report import leaderboard_table, main, print_export
from tests.support.records import fill, rejection

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

EXPORT = {
    "generated_at": "2026-01-01T13:00:00+00:00",
    "agents": [  # the tools process's --export rows; the metric fields are optional
        {
            "name": "bob",
            "total_value": 99_500.0,
            "return_pct": -0.5,
            "cash": 90_000.0,
            "realized_pnl": -200.0,
            "unrealized_pnl": -300.0,
            "fees": 12.5,
            "trades": 4,
            "rejected": 2,
            "model_errors": 1,
        },
        {
            "name": "alice",
            "total_value": 101_234.56,
            "return_pct": 1.23456,
            "cash": 50_000.0,
            "realized_pnl": 1_000.0,
            "unrealized_pnl": 234.56,
            "fees": 20.0,
            "trades": 6,
            "rejected": 0,
            "max_drawdown_pct": 3.21,
            "sharpe": 1.5,
            "win_rate": 66.667,
            "round_trips": 3,
        },
        {
            "name": BASELINE_NAME,
            "baseline": True,
            "total_value": 100_100.0,
            "return_pct": 0.1,
            "cash": 0.0,
            "realized_pnl": 0.0,
            "unrealized_pnl": 100.0,
            "fees": 0.0,
            "trades": 3,
            "rejected": 0,
        },
    ],
}


def render(renderable, width: int = 160) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    p = tmp_path / "leaderboard.json"
    p.write_text(json.dumps(EXPORT))
    return p


def make_ledger(path: Path) -> None:
    """alice: 0.5 BTC at 95,000 (fee 47.50), sells 0.2 at 96,000 (fee 19.20); bob: 100 SOL at 180 (fee 18),
    a rejected oversell, sells 50 at 178 (fee 8.90); carol opened an account and never traded."""
    with Ledger(path) as ledger:

        def rec(key, agent, pid, side, qty, price, fee=0.0, t=1):
            at, trade_id = T0 + timedelta(seconds=t), f"{agent}:run:{key}"
            if price:
                trade = fill(0, agent, side, qty, price, fee=fee, at=at, trade_id=trade_id, product_id=pid)
            else:
                trade = rejection(0, agent, "", qty, at=at, trade_id=trade_id, product_id=pid, side=side)
            ledger.record(trade.trade_id, trade, {"ok": bool(price)})  # as the desk does

        rec("c1", "alice", "BTC-USD", "buy", 0.5, 95_000.0, fee=47.5, t=1)
        rec("c1", "bob", "SOL-USD", "buy", 100, 180.0, fee=18.0, t=2)  # same tool call id, other agent
        rec("c2", "alice", "BTC-USD", "sell", 0.2, 96_000.0, fee=19.2, t=5)
        rec("c2", "bob", "SOL-USD", "sell", 1_000, 0.0, t=6)  # no price: rejected
        rec("c3", "bob", "SOL-USD", "sell", 50, 178.0, fee=8.9, t=7)
        ledger.open_account("carol")


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    p = tmp_path / "arena_ledger.db"
    make_ledger(p)
    return p


def snap(i: int, btc: tuple[float, float], sol: tuple[float, float]) -> MarketSnapshot:
    return MarketSnapshot(
        seq=i,
        published_at=T0 + timedelta(seconds=60 * i),
        quotes={
            "BTC-USD": Quote(product_id="BTC-USD", price=btc[0], best_bid=btc[0], best_ask=btc[1]),
            "SOL-USD": Quote(product_id="SOL-USD", price=sol[0], best_bid=sol[0], best_ask=sol[1]),
        },
    )


# -- export files ---------------------------------------------------------------------------------


def test_report_of_an_export_ranks_agents_and_marks_the_baseline(capsys, export_file):
    code, out, _ = run(capsys, str(export_file), "--width", "160")
    assert code == 0
    lines = out.splitlines()
    row = {name: next(i for i, line in enumerate(lines) if name in line) for name in ("alice", "bob", BASELINE_NAME)}
    assert row["alice"] < row[BASELINE_NAME] < row["bob"]  # best value first
    assert "$101,234.56" in lines[row["alice"]] and "+1.23%" in lines[row["alice"]]
    assert lines[row["alice"]].split()[0] == "1" and lines[row["bob"]].split()[0] == "2"
    assert lines[row[BASELINE_NAME]].split()[0] == "base"  # not ranked
    assert "-3.21%" in lines[row["alice"]] and "1.50" in lines[row["alice"]] and "67% of 3" in lines[row["alice"]]
    assert "4 (2 rej)" in lines[row["bob"]]
    assert "—" in lines[row["bob"]]  # bob's export row has no drawdown: shown as not available
    assert "generated at 2026-01-01T13:00:00+00:00" in out


def test_report_json_of_an_export_round_trips(capsys, export_file, tmp_path):
    code, out, _ = run(capsys, str(export_file), "--json")
    assert code == 0
    data = json.loads(out)
    assert [a["name"] for a in data["agents"]] == [a["name"] for a in EXPORT["agents"]]
    assert data["agents"][2]["baseline"] is True
    again = tmp_path / "again.json"
    again.write_text(out)
    assert run(capsys, str(again), "--json")[1] == out  # its own --json output is a valid input


def test_print_export_used_by_the_demo(export_file):
    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    print_export(json.loads(export_file.read_text()), console=console)
    text = console.export_text()
    assert "alice" in text and "$99,500.00" in text and "base" in text


# -- ledger files ---------------------------------------------------------------------------------


def test_report_of_a_ledger_values_positions_at_the_last_fill(capsys, ledger_file):
    code, out, _ = run(capsys, str(ledger_file), "--json")
    assert code == 0
    data = json.loads(out)
    rows = {a["name"]: a for a in data["agents"]}
    assert [a["name"] for a in data["agents"]] == ["alice", "carol", "bob"]
    assert BASELINE_NAME not in rows  # no price history, no baseline
    alice = rows["alice"]
    # cash 100,000 - 47,547.50 + 19,180.80; 0.3 BTC left at avg cost 95,095, valued at the last fill 96,000
    assert alice["cash"] == pytest.approx(71_633.30)
    assert alice["total_value"] == pytest.approx(71_633.30 + 0.3 * 96_000)
    assert alice["realized_pnl"] == pytest.approx(161.80)  # 19,180.80 - 0.2 x 95,095
    assert alice["unrealized_pnl"] == pytest.approx(271.50)  # 0.3 x (96,000 - 95,095)
    assert alice["fees"] == pytest.approx(66.70)
    assert alice["win_rate"] == 100.0 and alice["round_trips"] == 1
    assert alice["max_drawdown_pct"] is None and alice["sharpe"] is None
    bob = rows["bob"]
    # cash 100,000 - 18,018 + 8,891.10; 50 SOL at avg 180.18 valued at 178
    assert bob["total_value"] == pytest.approx(90_873.10 + 50 * 178)
    assert bob["realized_pnl"] == pytest.approx(8_891.10 - 50 * 180.18)
    assert bob["trades"] == 2 and bob["rejected"] == 1 and bob["win_rate"] == 0.0
    assert rows["carol"]["total_value"] == 100_000 and rows["carol"]["trades"] == 0
    assert data["marks"]["BTC-USD"]["price"] == 96_000 and "last fill" in data["marks"]["BTC-USD"]["from"]
    assert data["marks"]["SOL-USD"]["price"] == 178


def test_report_of_a_ledger_shows_the_marks_it_used(capsys, ledger_file):
    code, out, _ = run(capsys, str(ledger_file), "--width", "160")
    assert code == 0
    assert "$100,433.30" in out and "$99,773.10" in out and "$100,000.00" in out
    assert "BTC-USD 96,000.00 (last fill: a sell at 2026-01-01 12:00:05)" in out
    assert "--market" in out  # says how to get drawdown, Sharpe and the baseline


def test_prices_override_the_last_fill(capsys, ledger_file):
    code, out, _ = run(capsys, str(ledger_file), "--json", "--prices", "BTC-USD=100000, sol-usd=200")
    rows = {a["name"]: a for a in json.loads(out)["agents"]}
    assert rows["alice"]["total_value"] == pytest.approx(71_633.30 + 0.3 * 100_000)
    assert rows["bob"]["total_value"] == pytest.approx(90_873.10 + 50 * 200)
    assert json.loads(out)["marks"]["SOL-USD"] == {"price": 200.0, "from": "--prices", "notional": False}


def test_market_recording_gives_drawdown_and_the_baseline(capsys, caplog, ledger_file, tmp_path):
    rec = tmp_path / "market.jsonl"
    lines = [
        snap(0, (94_990, 95_000), (179.9, 180.0)).model_dump_json(),
        '{"seq": 1, "quotes": "garbage"}',  # malformed lines are skipped with a warning
        snap(1, (96_000, 96_010), (178.0, 178.1)).model_dump_json(),
    ]
    rec.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, str(ledger_file), "--json", "--market", str(rec))
    assert code == 0
    assert "market.jsonl:2: skipped a malformed snapshot line" in caplog.text
    rows = {a["name"]: a for a in json.loads(out)["agents"]}
    base = rows[BASELINE_NAME]
    assert base["baseline"] is True
    # fee rate from the ledger's first fill: 47.50 / 47,500 = 10 bps; 50,000 per product at the ask, fee included
    assert base["fees"] == pytest.approx(2 * 50_000 * 0.001 / 1.001)
    assert base["total_value"] == pytest.approx(50_000 / 1.001 * (96_000 / 95_000 + 178 / 180))
    assert base["max_drawdown_pct"] == pytest.approx(
        (1 - 50_000 / 1.001 * (96_000 / 95_000 + 178 / 180) / 100_000) * 100
    )
    # bob starts at the first snapshot (100,000) and is worth 90,873.10 + 50 x 178 at the second
    assert rows["bob"]["max_drawdown_pct"] == pytest.approx((100_000 - 99_773.10) / 100_000 * 100)
    assert rows["alice"]["max_drawdown_pct"] == 0.0 and rows["alice"]["samples"] == 2
    assert rows["alice"]["time_in_market_pct"] == 50.0


def test_report_reads_without_changing_the_ledger_even_while_it_is_open(capsys, ledger_file):
    digest = hashlib.sha256(ledger_file.read_bytes()).hexdigest()
    run(capsys, str(ledger_file), "--json")
    assert hashlib.sha256(ledger_file.read_bytes()).hexdigest() == digest
    with Ledger(ledger_file) as live:  # a running arena holds it open and keeps writing
        live.record(
            "dave:run:c1",
            Fill(trade_id="c1", agent="dave", product_id="BTC-USD", side="buy", quantity=0.01, price=95_000.0),
            {"ok": True},
        )
        code, out, _ = run(capsys, str(ledger_file), "--json")
        assert code == 0 and "dave" in {a["name"] for a in json.loads(out)["agents"]}


def test_several_runs_compared_in_one_table(capsys, ledger_file, export_file):
    code, out, _ = run(capsys, str(ledger_file), str(export_file), "--width", "160")
    assert code == 0
    assert "runs compared" in out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["arena_ledger", "1", "alice"] for line in lines if line.strip())
    assert any(line.split()[:3] == ["leaderboard", "1", "alice"] for line in lines if line.strip())
    assert f"arena_ledger: {ledger_file}" in out and f"leaderboard: {export_file}" in out
    code, out, _ = run(capsys, str(ledger_file), str(export_file), "--json")
    runs = json.loads(out)["runs"]
    assert [r["source"] for r in runs] == [str(ledger_file), str(export_file)]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "invalid JSON"),
        (b'{"agents": "nope"}', 'expected a JSON object with an "agents" list'),
        (b'{"agents": [{"name": "x"}]}', 'agent #1 needs a "name" and a numeric "total_value"'),
        (b"\xff\xfe binary", "cannot read"),
    ],
)
def test_bad_files_get_a_clear_error(capsys, tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    code, out, err = run(capsys, str(p))
    assert code == 1 and out == ""
    assert message in err and str(p) in err


def test_missing_file_and_sqlite_that_is_not_a_ledger(capsys, tmp_path):
    code, _, err = run(capsys, str(tmp_path / "nope.db"))
    assert code == 1 and "no such file" in err
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    code, _, err = run(capsys, str(other))
    assert code == 1 and "not an arena ledger" in err


def test_bad_flags_are_refused_by_argparse(capsys, ledger_file):
    for argv in (["--prices", "BTC-USD=-5"], ["--prices", "BTC-USD"], ["--interval", "0"], ["--fee-bps", "nan"]):
        with pytest.raises(SystemExit) as exc:
            main([str(ledger_file), *argv])
        assert exc.value.code == 2
    assert "PRODUCT=PRICE" in capsys.readouterr().err


# -- the table ------------------------------------------------------------------------------------


def test_leaderboard_table_fits_narrow_widths_and_keeps_the_essentials():
    rows = [AgentMetrics.model_validate(a | {"cash": 0}) for a in EXPORT["agents"]]
    text = render(leaderboard_table(rows, width=80), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for must in ("alice", "$101,234.56", "+1.23%", "base", "bob"):
        assert must in text
    wide = render(leaderboard_table(rows), width=200)
    assert "unrealized" in wide and "exposure" in wide
    assert "no agents yet" in render(leaderboard_table([]))


@pytest.mark.processes
def test_the_arena_command_runs_report(ledger_file):
    proc = subprocess.run(
        [sys.executable, "-m", "arena.cli", "report", str(ledger_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "alice" in proc.stdout and "Leaderboard" in proc.stdout
    help_ = subprocess.run(
        [sys.executable, "-m", "arena.cli", "report", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert help_.returncode == 0 and "--prices" in help_.stdout and "--market" in help_.stdout


def test_report_of_a_ledger_and_its_market_equals_the_live_tracker(tmp_path):
    """The same run, live and afterwards: a desk fills into its ledger while a live tracker follows the
    calls, fills and snapshots; `arena report` of that ledger and the recorded snapshots gives every
    number the live tracker gave. carol's first call (get_portfolio) comes two snapshots before her
    first trade: her series starts at the snapshot that call reacted to, in both."""
    from arena.desk import Desk
    from arena.market import utcnow
    from arena.metrics import MetricsTracker
    from arena.report import ledger_leaderboard, read_ledger

    live = MetricsTracker(fee_bps=10)
    desk = Desk(Ledger(tmp_path / "ledger.db"), fee_bps=10)
    desk.on_call = lambda agent, tool, reacted_to: live.on_agent(agent, reacted_to)
    desk.on_trade = live.on_trade
    recorded: list[MarketSnapshot] = []

    def publish(i: int, btc: float) -> MarketSnapshot:
        s = MarketSnapshot(
            seq=i,
            published_at=utcnow(),
            quotes={"BTC-USD": Quote(product_id="BTC-USD", price=btc, best_bid=btc, best_ask=btc + 10)},
        )
        recorded.append(s)
        desk.quotes.update(s)
        live.on_snapshot(s)
        return s

    s0 = publish(0, 50_000)
    desk.note_call("carol", "get_portfolio", reacted_to=s0.published_at)
    publish(1, 50_100)
    s2 = publish(2, 49_900)
    desk.note_call("carol", "execute_trade", reacted_to=s2.published_at)
    assert desk.execute_trade("carol", "BTC-USD", "buy", 0.5, call_key="c1")["status"] == "filled"
    desk.note_call("dan", "execute_trade", reacted_to=s2.published_at)
    assert desk.execute_trade("dan", "BTC-USD", "buy", 1.0, call_key="d1")["status"] == "filled"
    for i, btc in enumerate((50_300, 50_050, 50_400), start=3):
        s = publish(i, btc)
    desk.note_call("dan", "execute_trade", reacted_to=s.published_at)
    assert desk.execute_trade("dan", "BTC-USD", "sell", 0.4, call_key="d2")["status"] == "filled"
    publish(6, 50_500)
    desk.ledger.close()

    trades, agents = read_ledger(tmp_path / "ledger.db")
    assert agents == {"carol": s0.published_at, "dan": s2.published_at}
    board = ledger_leaderboard(
        trades, agents=agents, source="test", fee_bps=10, market=[(s.published_at, s.quotes) for s in recorded]
    )
    reported = {a["name"]: a for a in board["agents"]}
    expected = {name: m.model_dump(mode="json") for name, m in live.metrics().items()}
    assert live.metrics()["carol"].samples == 7  # from s0, where her first call reacted
    assert set(reported) == set(expected)
    for name, row in expected.items():
        for key, value in row.items():
            assert reported[name][key] == (pytest.approx(value) if isinstance(value, float) else value), (name, key)


def test_report_shows_tokens_and_dollars_from_an_export_and_says_a_ledger_has_none(capsys, tmp_path, ledger_file):
    rows = [dict(a) for a in EXPORT["agents"]]
    rows[0].update(tokens=3_150, model_cost_usd=None, return_per_dollar=None)  # bob: unpriced model
    rows[1].update(tokens=12_345, model_cost_usd=0.0042, return_per_dollar=1_234.56 / 0.0042)  # alice
    rows[2].update(tokens=None, model_cost_usd=None, return_per_dollar=None)  # the baseline thinks for free
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({**EXPORT, "agents": rows}))
    code, out, _ = run(capsys, str(path), "--width", "200")
    assert code == 0
    assert "tokens" in out and "model $" in out and "P&L/$" in out
    alice = next(line for line in out.splitlines() if "alice" in line)
    assert "12,345" in alice and "$0.0042" in alice and "+293,943" in alice
    bob = next(line for line in out.splitlines() if "bob" in line)
    assert "3,150" in bob and bob.rstrip().endswith("—") and "$0.0" not in bob  # unknown cost: "—", never $0
    code, out, _ = run(capsys, str(ledger_file), "--width", "200")
    assert code == 0 and "model $" not in out and "a ledger has no tokens" in out
