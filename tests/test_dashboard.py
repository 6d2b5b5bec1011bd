"""The dashboard drawn with rich from fixed states, as a user would see it at 80x24 and 160x50."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from arena.dashboard import (
    ArenaState,
    LiveDashboard,
    ValueHistory,
    final_standings_table,
    leaderboard,
    render,
    value_chart,
)
from arena.decisions import Decision
from arena.market import MarketSnapshot, Quote
from arena.portfolio import INITIAL_CASH, Account, Fill, Rejection, replay
from arena.supervisor import ProcessStatus
from arena.ui import AGENT_PALETTE, AgentColors, Column, agent_color, ago, fit_table, hms, money, pct, qty
from tests.support.records import quote, turn

NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)
START = NOW - timedelta(minutes=20)
REASON = "insufficient cash: need $485,120.00, have $61,204.18"


def quotes(now: datetime) -> dict[str, Quote]:
    return {
        "BTC-USD": quote("BTC-USD", 96_999.0, 97_001.0, price=97_000.5, at=now - timedelta(seconds=2)),
        "SOL-USD": quote("SOL-USD", 236.10, 236.15, price=236.1234, at=now - timedelta(seconds=1)),
        # the feed stopped updating this one 95 s ago
        "FARTCOIN-USD": quote("FARTCOIN-USD", 1.4207, 1.4219, price=1.4213, at=now - timedelta(seconds=95)),
    }


def fill(i: int, agent: str, product: str, side: str, quantity: float, price: float, at: datetime) -> Fill:
    return Fill(
        trade_id=f"t{i}", agent=agent, product_id=product, side=side, quantity=quantity, price=price,
        fee=quantity * price * 0.001, executed_at=at, latency_ms=12.0 + i, quote_age_s=0.4,
    )  # fmt: skip


def arena(log_path: str = "/var/log/arena/tools.log", export_path: str | None = "standings.json"):
    """Four agents: alice holds BTC, bob sold SOL at a gain, carol had a trade rejected and a model
    timeout, dave only ever decided (no trade). Feed alive, one product stale."""
    st = ArenaState(max_quote_age_s=30, fee_bps=10, log_path=log_path, export_path=export_path)
    st.started_at = START
    trades = [
        fill(1, "alice", "BTC-USD", "buy", 0.0123, 96_500.0, START + timedelta(minutes=1)),
        fill(2, "bob", "SOL-USD", "buy", 40.0, 230.0, START + timedelta(minutes=2)),
        fill(3, "bob", "SOL-USD", "sell", 15.0, 236.0, START + timedelta(minutes=15)),
        fill(4, "carol", "SOL-USD", "buy", 10.0, 240.0, START + timedelta(minutes=16)),
        Rejection(trade_id="t5", agent="carol", product_id="BTC-USD", side="buy", quantity=5.0, status="rejected",
                  reason=REASON, executed_at=NOW - timedelta(seconds=20)),
    ]  # fmt: skip
    st.on_snapshot(MarketSnapshot(seq=1, published_at=START, quotes=quotes(START)), now=START)
    for t in trades:
        st.on_trade(t)
    for agent in ("alice", "bob", "carol", "dave"):
        st.on_decision(Decision(agent=agent, run_id="r", tick_seq=239, tick_published_at=NOW, status="done",
                                started_at=NOW - timedelta(seconds=12), finished_at=NOW - timedelta(seconds=10)), now=NOW)  # fmt: skip
        st.on_tool_call(agent, "get_portfolio", now=NOW - timedelta(seconds=11))
    st.on_decision(Decision(agent="carol", run_id="r2", tick_seq=240, tick_published_at=NOW, status="timeout",
                            reason="model did not answer within 60s", finished_at=NOW - timedelta(seconds=30)), now=NOW)  # fmt: skip
    accounts = replay(trades)
    # the chart's history: one sample every 5 s of wall-clock time over 20 minutes
    for k in range(0, 20 * 60, 5):
        st.sample(accounts, now=START + timedelta(seconds=k))
    st.on_snapshot(MarketSnapshot(seq=240, published_at=NOW, quotes=quotes(NOW)), now=NOW - timedelta(seconds=1))
    return st, accounts


def screen(st: ArenaState, accounts: dict[str, Account], width: int, height: int, now: datetime = NOW) -> str:
    console = Console(width=width, height=height, record=True, file=io.StringIO(), color_system="truecolor")
    console.print(render(st, accounts, width, height, now=now))
    return console.export_text()


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_screen_shows_prices_money_rejections_chart_and_log_file(size):
    width, height = size
    st, accounts = arena()
    text = screen(st, accounts, width, height)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == height and all(len(line) <= width for line in lines), (
        "the screen must fit the terminal exactly"
    )

    # market: last, bid, ask, spread, quote age; the silent product is marked STALE
    assert "97,000.50" in text and "96,999.00" in text and "97,001.00" in text
    assert "236.1000" in text and "236.1500" in text
    assert re.search(r"BTC-USD .*2s", text)
    assert re.search(r"FARTCOIN-USD .*1m35s STALE", text)
    assert "Spread" in text
    # money that explains itself
    assert "$100,000" in text and "marked at best bid" in text
    q = st.quotes
    for name in ("alice", "bob", "carol", "dave"):
        acc = accounts.get(name) or Account(agent=name)
        value, ret = acc.total_value(q), acc.return_pct(q)
        row = next(line for line in lines if re.search(rf"(^|│)\s*\d+\s+{name}\s+\$", line))  # its leaderboard row
        assert money(value) in row or money(value, cents=False) in row, (name, row)
        assert pct(ret) in row, (name, row)
    # a rejection shows with its reason, apart from fills
    assert "REJECTED" in text and "insufficient cash" in text
    # the chart is drawn against time: HH:MM:SS labels from the first sample to now
    assert hms(START) in text and hms(NOW) in text
    assert re.search(r"[\u2801-\u28ff]", text), "braille chart strokes"
    # where the logs are going
    assert "logs → /var/log/arena/tools.log" in text
    # header: the feed is alive but one product is stale
    assert "DEGRADED" in text and "stale FARTCOIN-USD" in text


def test_wide_screen_has_every_money_column_and_the_rejection_reason_in_full():
    st, accounts = arena()
    text = screen(st, accounts, 160, 50)
    for header in ("Value", "Return", "Cash", "Realized", "Unrealized", "Fees", "Fills", "Rejected", "Model err"):
        assert header in text
    assert REASON[:36] in text
    bob = accounts["bob"]
    assert "+$" + f"{bob.realized_pnl:,.2f}" in text  # realized gain written with its sign
    assert "0.0123 BTC" in text  # quantities carry their unit
    assert "TIMEOUT" in text and "model did not answer" in text
    assert "standings → standings.json" in text


def test_agents_ranked_by_total_value_and_agents_without_trades_appear():
    st, accounts = arena()
    board = leaderboard(st, accounts, now=NOW)
    names = [a["name"] for a in board["agents"]]
    assert set(names) == {"alice", "bob", "carol", "dave"}
    values = [a["total_value"] for a in board["agents"]]
    assert values == sorted(values, reverse=True)
    assert [a["rank"] for a in board["agents"]] == [1, 2, 3, 4]
    dave = next(a for a in board["agents"] if a["name"] == "dave")
    assert dave["total_value"] == INITIAL_CASH and dave["trades"] == 0


def test_leaderboard_json_shape_and_numbers():
    st, accounts = arena()
    board = leaderboard(st, accounts, now=NOW)
    json.dumps(board)  # plain JSON
    assert board["generated_at"] == NOW.isoformat()
    assert board["starting_cash"] == INITIAL_CASH and board["positions_marked_at"] == "best bid"
    keys = {
        "name",
        "total_value",
        "return_pct",
        "cash",
        "realized_pnl",
        "unrealized_pnl",
        "fees",
        "trades",
        "rejected",
        "model_errors",
        "metrics",
    }
    for a in board["agents"]:
        assert keys <= set(a)
    by_name = {a["name"]: a for a in board["agents"]}
    q = st.quotes
    for name, acc in accounts.items():
        a = by_name[name]
        assert a["total_value"] == pytest.approx(acc.total_value(q))
        assert a["return_pct"] == pytest.approx(acc.return_pct(q))
        assert a["cash"] == pytest.approx(acc.cash)
        assert a["realized_pnl"] == pytest.approx(acc.realized_pnl)
        assert a["unrealized_pnl"] == pytest.approx(acc.unrealized_pnl(q))
        assert a["fees"] == pytest.approx(acc.fees_paid)
    assert by_name["carol"]["rejected"] == 1 and by_name["carol"]["model_errors"] == 1
    assert by_name["alice"]["positions"][0]["mark"] == 96_999.0  # marked at the best bid
    assert board["products"]["FARTCOIN-USD"]["stale"] is True and board["products"]["BTC-USD"]["stale"] is False
    assert board["products"]["BTC-USD"]["spread"] == pytest.approx(2.0)
    assert board["feed"]["status"] == "degraded"
    assert len(board["value_history"]["samples"]) == 240 and board["value_history"]["interval_s"] == 5


def test_metrics_plug_into_the_export():
    st, accounts = arena()
    seen = {}

    def metrics(name, account, history):
        seen[name] = history
        return {"last_value": history[-1][1]}

    st.metrics = metrics
    board = leaderboard(st, accounts, now=NOW)
    alice = next(a for a in board["agents"] if a["name"] == "alice")
    assert alice["metrics"] == {"last_value": pytest.approx(accounts["alice"].total_value(quotes(START)))}
    assert len(seen["alice"]) == 240 and seen["alice"][0][0] == START  # (time, value) on the wall-clock cadence


def test_live_marker_says_what_is_wrong():
    st, accounts = arena()
    # everything fresh, every model answering
    st.on_decision(
        Decision(agent="carol", run_id="r3", tick_seq=241, tick_published_at=NOW, status="done", finished_at=NOW),
        now=NOW,
    )
    for pid, q in quotes(NOW).items():
        st.quotes[pid] = q.model_copy(update={"received_at": NOW})
    assert "LIVE" in screen(st, accounts, 80, 24)
    # feed silent: never LIVE
    later = NOW + timedelta(seconds=95)
    text = screen(st, accounts, 80, 24, now=later)
    assert "FEED DOWN" in text and "feed silent 1m36s" in text and "LIVE" not in text
    # models silent while the feed is fine
    much_later = NOW + timedelta(minutes=3)
    st.on_snapshot(MarketSnapshot(seq=241, published_at=much_later, quotes={p: q.model_copy(update={"received_at": much_later}) for p, q in st.quotes.items()}), now=much_later)  # fmt: skip
    text = screen(st, accounts, 160, 50, now=much_later)
    assert "DEGRADED" in text and "no model reply for 3m00s" in text
    # no data at all yet
    empty = ArenaState(max_quote_age_s=30, fee_bps=10)
    text = screen(empty, {}, 80, 24)
    assert "WAITING" in text and "no market data yet" in text and "waiting for the first market snapshot" in text


def test_chart_samples_on_wall_clock_slots():
    h = ValueHistory(interval_s=5)
    t0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)
    kept = [h.offer(t0 + timedelta(seconds=0.25 * k), {"a": 100.0 + k}) for k in range(80)]  # 4 refreshes/s for 20 s
    assert sum(kept) == 4
    assert [t for t, _ in h.points] == [t0 + timedelta(seconds=s) for s in (0, 5, 10, 15)]
    assert not h.offer(t0 + timedelta(seconds=19.9), {"a": 1.0})
    # a pause in refreshes leaves a gap in time, not a squeezed chart: the next sample is at its own time
    assert h.offer(t0 + timedelta(minutes=10), {"a": 1.0})
    assert h.points[-1][0] - h.points[-2][0] == timedelta(minutes=10) - timedelta(seconds=15)


def test_chart_history_is_bounded_and_keeps_the_newest():
    h = ValueHistory(interval_s=1, max_points=8)
    t0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)
    for k in range(100):
        h.offer(t0 + timedelta(seconds=k), {"a": float(k)})
    assert len(h.points) <= 8
    assert h.points[-1][1]["a"] >= 96  # the newest survive thinning
    assert h.interval_s > 1  # the cadence doubled to span the whole run
    assert h.points[0][0] - t0 < timedelta(seconds=40)  # ...which still reaches back near the start


def test_chart_x_axis_is_wall_clock_time():
    t0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)
    e = t0.timestamp()
    # many samples early, few late: a step up exactly half way through the time span
    early = [(e + s, 100_000.0) for s in range(0, 60, 1)]
    series = {"a": early + [(e + 300, 100_000.0), (e + 300.001, 101_000.0), (e + 600, 101_000.0)]}
    text = value_chart(series, 80, 10, start=t0, end=t0 + timedelta(seconds=600)).plain
    lines = text.split("\n")
    axis = lines[-1]
    assert "12:00:00" in axis and "12:10:00" in axis and "12:02:00" in axis  # evenly spaced times
    top = lines[0]
    plot_start = top.index("┤") + 1
    first = next(i for i, ch in enumerate(top) if i >= plot_start and "\u2800" < ch <= "\u28ff")
    plot_w = len(top) - plot_start
    assert abs((first - plot_start) / plot_w - 0.5) < 0.03, "the step is drawn at the middle of the time axis"
    # y axis: round dollar ticks on the rows where those values are drawn
    labelled = {line.split("┤")[0].strip(): line for line in lines[:-1] if "┤" in line}
    assert {"$100,000", "$100,500", "$101,000"} <= set(labelled)
    assert re.search(r"[\u2801-\u28ff]", labelled["$100,000"].split("┤")[1][:10]), (
        "the early $100,000 stretch is on the $100,000 row"
    )
    assert re.search(r"[\u2801-\u28ff]", labelled["$101,000"].split("┤")[1][-10:]), (
        "the late $101,000 stretch is on the $101,000 row"
    )


@pytest.mark.parametrize("size", [(60, 20), (80, 24), (100, 30), (120, 40), (160, 50), (220, 60)])
def test_layouts_hold_with_many_agents(size):
    width, height = size
    st, accounts = arena()
    extra = [
        fill(10 + i, f"agent_{i:02d}_with_a_long_name", "SOL-USD", "buy", 1.0 + i, 236.0, NOW - timedelta(minutes=5))
        for i in range(8)
    ]
    for t in extra:  # 12 agents in all
        st.on_trade(t)
    accounts = {**accounts, **replay(extra)}
    text = screen(st, accounts, width, height)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == height and all(len(line) <= width for line in lines)
    assert "Leaderboard" in text and "Market" in text and "logs →" in text
    leader = leaderboard(st, accounts, now=NOW)["agents"][0]["name"]
    assert re.search(rf"\b1\s+{leader}", text), "the leader is on screen"
    if "more agent" not in text:
        assert all(f"agent_{i:02d}" in text for i in range(8))


def test_live_dashboard_sends_logs_to_file_and_leaves_standings(tmp_path, capsys):
    st, accounts = arena(log_path=str(tmp_path / "logs" / "tools.log"), export_path=str(tmp_path / "standings.json"))
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, height=40, color_system="truecolor")
    noisy = logging.getLogger("arena.test.noisy")
    stderr_handler = logging.StreamHandler()  # a library logging straight to the terminal
    noisy.addHandler(stderr_handler)
    noisy.setLevel(logging.INFO)
    dash = LiveDashboard(st, lambda: accounts, console=console, refresh_per_second=4, export_every_s=0.1)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(dash.run(stop))
        await asyncio.sleep(0.3)
        noisy.info("while live this goes to the file")
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 5)

    try:
        asyncio.run(main())
        assert noisy.handlers == [stderr_handler]  # restored after the live view
    finally:
        noisy.removeHandler(stderr_handler)
    assert "while live this goes to the file" in (tmp_path / "logs" / "tools.log").read_text()
    assert "while live" not in capsys.readouterr().err
    screen_out = out.getvalue()
    assert "\x1b[?1049h" in screen_out and "\x1b[?1049l" in screen_out  # entered and left the alternate screen
    after = screen_out.rsplit("\x1b[?1049l", 1)[1]
    assert "Final standings" in after and "standings.json" in after and "tools.log" in after
    assert 1 <= dash.frames <= 4  # fixed cadence: at most 4 per second (0.6 s here)
    board = json.loads((tmp_path / "standings.json").read_text())
    assert [a["name"] for a in board["agents"]] == [a["name"] for a in leaderboard(st, accounts)["agents"]]


def test_live_dashboard_cancelled_like_ctrl_c_still_leaves_the_screen(tmp_path):
    st, accounts = arena(log_path=str(tmp_path / "tools.log"), export_path=None)
    out = io.StringIO()
    dash = LiveDashboard(st, lambda: accounts, console=Console(file=out, force_terminal=True, width=80, height=24))

    async def main():
        task = asyncio.create_task(dash.run(asyncio.Event()))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    after = out.getvalue().rsplit("\x1b[?1049l", 1)[1]
    assert "Final standings" in after and "alice" in after


def test_money_quantities_and_ages_read_naturally():
    assert money(-1.6, signed=True) == "-$1.60" and money(2.1, signed=True) == "+$2.10"
    assert money(0.0, signed=True) == "$0.00" and money(-0.001, signed=True) == "$0.00"
    assert money(100_000) == "$100,000.00" and money(99_407.6, cents=False) == "$99,408"
    assert qty(0.0123, "BTC-USD") == "0.0123 BTC" and qty(12.5, "SOL-USD") == "12.5 SOL"
    assert qty(0.00001234, "BTC-USD") == "0.00001234 BTC" and qty(7133.2699, "FARTCOIN-USD") == "7,133.27 FARTCOIN"
    assert pct(1.234) == "+1.23%" and pct(-0.5) == "-0.50%" and pct(0) == "0.00%"
    assert ago(4) == "4s" and ago(95) == "1m35s" and ago(7380) == "2h03m"


def test_agent_colour_is_stable_distinct_and_used_on_screen():
    assert agent_color("alice") == agent_color("alice") and agent_color("alice") in AGENT_PALETTE
    colors = AgentColors()
    names = [f"agent-{i}" for i in range(len(AGENT_PALETTE))]
    assert len({colors(n) for n in names}) == len(AGENT_PALETTE)  # no two share a colour while the palette lasts
    assert [colors(n) for n in names] == [colors(n) for n in names]  # sticky
    other_process = AgentColors()
    assert [other_process(n) for n in names] == [colors(n) for n in names]  # the viewer agrees with the dashboard
    st, accounts = arena()
    console = Console(width=160, height=50, record=True, file=io.StringIO(), color_system="truecolor")
    console.print(render(st, accounts, 160, 50, now=NOW))
    r, g, b = (int(agent_color("alice")[i : i + 2], 16) for i in (1, 3, 5))
    ansi = console.export_text(styles=True)
    assert re.search(rf"38;2;{r};{g};{b}m[^\x1b]*alice", ansi)


def test_tables_drop_least_important_columns_to_fit():
    cols = [
        Column("Agent", ["alice"], justify="left"),
        Column("Value", ["$100,000.00"], short=["$100,000"]),
        Column("Fees", ["-$1.60"], priority=5),
        Column("Fills", ["3"], priority=1),
    ]
    assert fit_table(cols, 80).plain.split("\n")[0].split() == ["Agent", "Value", "Fees", "Fills"]
    narrow = fit_table(cols, 22).plain
    assert "Fees" not in narrow and "Fills" in narrow and "$100,000" in narrow


# ------------------------------------------------------------------------- metrics, baseline, health


def tracked_arena():
    """Like arena(), with an arena.metrics.MetricsTracker fed through the state (as the tools process
    does): a snapshot every minute with the bid wobbling, trades between them, every agent's first
    tool call; then supervisor reports, router bob dead."""
    from arena.metrics import MetricsTracker

    st = ArenaState(max_quote_age_s=30, fee_bps=10, log_path="/var/log/arena/tools.log", export_path="standings.json",
                    metrics=MetricsTracker(fee_bps=10, min_sharpe_returns=2))  # fmt: skip
    st.started_at = START
    trades = [
        fill(1, "alice", "BTC-USD", "buy", 0.0123, 96_500.0, START + timedelta(minutes=1, seconds=30)),
        fill(2, "bob", "SOL-USD", "buy", 40.0, 230.0, START + timedelta(minutes=2, seconds=30)),
        fill(3, "bob", "SOL-USD", "sell", 15.0, 236.0, START + timedelta(minutes=15, seconds=30)),
        fill(4, "carol", "SOL-USD", "buy", 10.0, 240.0, START + timedelta(minutes=16, seconds=30)),
    ]
    for minute in range(20):
        t = START + timedelta(minutes=minute)
        wobble = 1 + 0.001 * (minute % 5 - 2)
        qs = {
            p: q.model_copy(
                update={
                    "best_bid": q.best_bid * wobble,
                    "best_ask": max(q.best_ask, q.best_bid * wobble),
                    "received_at": t,
                }
            )
            for p, q in quotes(START).items()
        }  # a bid never above the ask
        st.on_snapshot(MarketSnapshot(seq=minute + 1, published_at=t, quotes=qs), now=t)
        for trade in trades:
            if t < trade.executed_at <= t + timedelta(minutes=1):
                st.on_tool_call(trade.agent, "execute_trade", now=trade.executed_at)
                st.on_trade(trade)
    st.on_tool_call("dave", "get_portfolio", now=NOW - timedelta(seconds=11))
    st.on_snapshot(MarketSnapshot(seq=21, published_at=NOW, quotes=quotes(NOW)), now=NOW)
    for name in ("connector", "tools", "router alice", "router bob"):
        st.on_process(ProcessStatus(name=name, status="ready", at=START))
    st.on_process(ProcessStatus(name="router bob", status="exited", detail="code 1, log runs/x/router-bob.log", at=NOW))
    return st, replay(trades)


def test_metrics_and_the_baseline_on_screen_in_the_export_and_the_final_standings():
    from arena.metrics import BASELINE_NAME

    st, accounts = tracked_arena()
    tracker = st.metrics
    board = leaderboard(st, accounts, now=NOW)
    rows = {a["name"]: a for a in board["agents"]}
    # the baseline is a row, flagged and unranked; agents are ranked 1..n around it by value
    assert rows[BASELINE_NAME]["baseline"] is True and rows[BASELINE_NAME]["rank"] is None
    agents = [a for a in board["agents"] if not a["baseline"]]
    assert [a["rank"] for a in agents] == [1, 2, 3, 4]
    values = [a["total_value"] for a in board["agents"]]
    assert values == sorted(values, reverse=True)
    # every row carries the tracker's metrics, and the tracker agrees with the ledger's accounts
    live = tracker.metrics()
    for name, row in rows.items():
        m = live[name]
        assert row["total_value"] == pytest.approx(m.total_value)
        for key in (
            "max_drawdown_pct",
            "sharpe",
            "win_rate",
            "round_trips",
            "exposure_pct",
            "time_in_market_pct",
            "samples",
        ):
            assert row["metrics"][key] == (pytest.approx(getattr(m, key)) if getattr(m, key) is not None else None), (
                name,
                key,
            )
    assert rows["bob"]["metrics"]["round_trips"] == 1 and rows["bob"]["metrics"]["win_rate"] == 100.0  # sold above cost
    assert rows["alice"]["metrics"]["win_rate"] is None  # no round trip yet: undefined, not 0
    assert rows["dave"]["metrics"]["samples"] == 2  # from the snapshot before his first tool call
    assert rows[BASELINE_NAME]["trades"] == 3 and rows[BASELINE_NAME]["metrics"]["exposure_pct"] == pytest.approx(100)

    wide = screen(st, accounts, 160, 50)
    for header in ("Max DD", "Win rate", "Sharpe", "Exposure", "Fees"):
        assert header in wide, header
    base_line = next(line for line in wide.split("\n") if "buy-and-hold" in line)
    assert re.search(r"│\s+base\s+buy-and-hold\s+\$", base_line)
    assert money(rows[BASELINE_NAME]["total_value"]) in base_line
    bob_line = next(line for line in wide.split("\n") if re.search(r"│\s+\d\s+bob\s", line))
    assert "100% of 1" in bob_line and pct(-rows["bob"]["metrics"]["max_drawdown_pct"]) in bob_line
    # dimmed on screen: a reference, not a contender
    console = Console(width=160, height=50, record=True, file=io.StringIO(), color_system="truecolor")
    console.print(render(st, accounts, 160, 50, now=NOW))
    assert re.search(r"\x1b\[(?:[0-9;]*;)?2(?:;[0-9;]*)?m[^\x1b]*base", console.export_text(styles=True))

    for width, height in ((80, 24), (100, 30)):  # small screens still fit, baseline row included
        text = screen(st, accounts, width, height)
        lines = text.rstrip("\n").split("\n")
        assert len(lines) == height and all(len(line) <= width for line in lines)
        assert re.search(r"base\s+buy-and-hold", text)

    console = Console(width=140, record=True, file=io.StringIO())
    console.print(final_standings_table(st, accounts, now=NOW))
    final = console.export_text()
    assert "Final standings" in final and "max DD" in final and "Sharpe" in final
    assert re.search(r"^\s*base\s+buy-and-hold \(baseline\)", final, re.M)
    assert "Exited during the run: router bob (code 1)" in final


def test_the_last_snapshot_from_before_the_process_only_marks():
    """The snapshot left on the topic at start-up (maybe from an earlier run) is shown aged by its
    publication time and values positions, but is not a metrics sample nor the baseline's entry."""
    from arena.metrics import BASELINE_NAME, MetricsTracker

    st = ArenaState(max_quote_age_s=30, fee_bps=0, metrics=MetricsTracker())
    old = START - timedelta(hours=9)
    st.on_snapshot(MarketSnapshot(seq=99, published_at=old, quotes=quotes(old)), now=NOW, catch_up=True)
    assert st.metrics.metrics() == {} and st.metrics.marks["BTC-USD"] == 96_999.0
    assert "feed silent 9h20m" in st.health(NOW).problems  # not "fresh": it was published hours ago
    st.on_snapshot(MarketSnapshot(seq=1, published_at=NOW, quotes=quotes(NOW)), now=NOW)
    base = st.metrics.metrics()[BASELINE_NAME]
    assert base.samples == 1 and base.total_value < INITIAL_CASH  # bought at the ask of the live one
    stale_only = ArenaState(max_quote_age_s=30, fee_bps=0, metrics=MetricsTracker())
    stale = {p: q.model_copy(update={"stale": True}) for p, q in quotes(NOW).items()}
    stale_only.on_snapshot(MarketSnapshot(seq=1, published_at=NOW, quotes=stale), now=NOW)
    assert BASELINE_NAME not in stale_only.metrics.metrics()  # nobody could buy at a stale quote


def test_a_snapshot_reordered_behind_a_newer_one_moves_neither_the_feeds_seq_nor_its_quotes():
    """Partitions may deliver an older snapshot after a newer one (the connector keys its own onto one
    partition; anyone else may not): it still counts as a snapshot and shows the feed is alive."""
    st = ArenaState(max_quote_age_s=30, fee_bps=0)
    newer, older = quotes(NOW), quotes(NOW - timedelta(seconds=2))
    older["BTC-USD"] = older["BTC-USD"].model_copy(update={"best_bid": 90_000.0})
    st.on_snapshot(MarketSnapshot(seq=12, published_at=NOW, quotes=newer), now=NOW)
    st.on_snapshot(MarketSnapshot(seq=11, published_at=NOW - timedelta(seconds=2), quotes=older), now=NOW)
    assert st.snapshot_seq == 12 and st.quotes["BTC-USD"].best_bid == 96_999.0 and st.snapshots == 2
    assert leaderboard(st, {}, now=NOW)["feed"]["snapshot_seq"] == 12


def test_process_health_in_the_header_and_the_export():
    st, accounts = tracked_arena()
    small = screen(st, accounts, 80, 24)
    assert "router bob exited (code 1)" in small and "DEGRADED" in small
    wide = screen(st, accounts, 160, 50)
    assert "processes: 3 up, 1 down" in wide
    board = leaderboard(st, accounts, now=NOW)
    assert "router bob exited (code 1)" in board["feed"]["problems"]
    procs = {p["name"]: p for p in board["processes"]}
    assert procs["router bob"]["status"] == "exited" and procs["router alice"]["status"] == "ready"
    # a later report wins: bob restarted
    st.on_process(ProcessStatus(name="router bob", status="ready", at=NOW + timedelta(seconds=5)))
    assert "exited" not in " ".join(st.health(NOW).problems)
    assert (
        "processes: 4 up" in screen(st, accounts, 160, 50)
        and "down" not in screen(st, accounts, 160, 50).split("processes")[1][:20]
    )


def test_forged_names_do_not_grow_the_state_without_bound():
    """Anyone on the broker can publish decisions and health reports under new names: the per-name maps
    stay bounded, forgetting the least recently heard-of names, and memory stops growing."""
    import tracemalloc

    from arena.dashboard import MAX_AGENTS, MAX_PROCESSES

    st = ArenaState(max_quote_age_s=30, fee_bps=10)

    def forge(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            st.on_decision(Decision(agent=f"forged{i}", run_id="r", tick_seq=i, tick_published_at=NOW, status="error",
                                    reason="x" * 5000, finished_at=NOW))  # fmt: skip
            st.on_process(ProcessStatus(name=f"router forged{i}", status="exited", detail="y" * 5000, at=NOW))
            st.on_tool_call(f"caller{i}", "get_portfolio", now=NOW)
            if i % 100 == 0:  # a real agent that keeps acting is never the one forgotten
                st.on_tool_call("alice", "execute_trade", now=NOW)

    tracemalloc.start()
    try:
        forge(0, 2_000)  # past every bound (and the colour table's)
        before = tracemalloc.get_traced_memory()[0]
        forge(2_000, 12_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"10,000 more forged names: memory grew by {grown / 1024:.0f} KiB")
    assert len(st.activity) == MAX_AGENTS and len(st.processes) == MAX_PROCESSES
    assert "alice" in st.activity and st.activity["alice"].tool_calls["execute_trade"] == 120
    assert "forged11999" in st.activity and "forged0" not in st.activity and "router forged0" not in st.processes
    assert max(len(p.detail) for p in st.processes.values()) <= 300 and len(st.problems[-1].reason) <= 300
    assert grown < 256 * 1024, grown  # unbounded, the same 10,000 names cost ~22 MiB
    assert len(agent_color._colors) <= agent_color.max_names  # unbounded, each new name costs O(names met)
    render(st, {}, 160, 50, now=NOW)  # and the screen still draws


def test_tokens_and_dollars_per_agent_on_screen_and_in_the_export():
    """Each finished turn's usage (done, error and timeout alike: those calls were paid for) adds up per
    agent; a cost is unknown ("—", None) once any call was unpriced, never 0; P&L per dollar needs a cost."""
    st, accounts = arena()

    def add(agent: str, status: str, calls: int, t_in: int, t_out: int, cost: float | None, **kw) -> None:
        st.on_decision(turn(agent, status, calls, t_in, t_out, cost, at=NOW, tick_seq=241, **kw), now=NOW)

    add("alice", "done", 3, 4_000, 300, 0.0012, tokens_reasoning=120, tokens_cached=1_000)
    add("alice", "timeout", 1, 1_500, 0, 0.0003)
    add("alice", "started", 0, 0, 0, None)  # a start carries nothing
    add("bob", "done", 2, 2_000, 100, None)  # unpriced: bob's cost is unknown
    add("bob", "done", 1, 1_000, 50, 0.0002)
    add("carol", "error", 0, 0, 0, None)  # no call answered: nothing to count
    board = leaderboard(st, accounts, now=NOW)
    rows = {a["name"]: a for a in board["agents"]}
    alice, bob, carol = rows["alice"], rows["bob"], rows["carol"]
    assert (alice["model_calls"], alice["tokens_in"], alice["tokens_out"], alice["tokens"]) == (4, 5_500, 300, 5_800)
    assert (alice["tokens_reasoning"], alice["tokens_cached"]) == (120, 1_000)
    assert alice["model_cost_usd"] == pytest.approx(0.0015)
    assert alice["return_per_dollar"] == pytest.approx((alice["total_value"] - INITIAL_CASH) / 0.0015)
    assert (
        (bob["model_calls"], bob["tokens"]) == (3, 3_150)
        and bob["model_cost_usd"] is None
        and bob["return_per_dollar"] is None
    )
    assert (carol["model_calls"], carol["tokens"]) == (0, 0) and carol["model_cost_usd"] is None
    json.dumps(board)

    wide = screen(st, accounts, 200, 50)
    for header in ("Tokens", "Model $", "P&L/$"):
        assert header in wide
    alice_line = next(line for line in wide.splitlines() if " alice " in line and "$0.0015" in line)
    assert "5,800" in alice_line
    bob_line = next(line for line in wide.splitlines() if " bob " in line and "3,150" in line)
    assert "$0.0" not in bob_line.split("3,150", 1)[1]  # bob's unknown cost is "—", not $0
    # they go first on a smaller screen: before any dollar column loses its cents
    for width, height in ((120, 40), (80, 24)):
        text = screen(st, accounts, width, height)
        assert "Tokens" not in text and "Model $" not in text and "Value" in text
    assert money(alice["total_value"]) in screen(st, accounts, 120, 40)


def test_the_header_shows_the_risk_limits_in_force():
    from arena.strategies import STRATEGY_LIMITS, Limits, limits_line

    line = limits_line(Limits(max_order_pct=12, max_orders_per_turn=3))
    st = ArenaState(max_quote_age_s=30, fee_bps=0, limits=line)
    header = "".join(screen(st, {}, 800, 50).split("\n")[:3])
    assert "risk limits" in header and "any other strategy: buy ≤12% · ≤3 orders/turn" in header
    for name, own in STRATEGY_LIMITS.items():  # each strategy's own numbers, the arena-wide ones where it has none
        assert f"{name}: {own.over(Limits(max_order_pct=12, max_orders_per_turn=3)).short()}" in header
    assert "risk limits" not in screen(ArenaState(max_quote_age_s=30, fee_bps=0), {}, 400, 50)


def test_one_price_formatter_for_the_screen_the_prompt_the_summary_and_the_report():
    from arena import fmt, ui
    from arena.market import render_snapshot
    from arena.report import _notes
    from arena.router import summarize_snapshot

    snap = MarketSnapshot(seq=3, quotes=quotes(NOW))
    shown = {pid: fmt.price(q.price) for pid, q in snap.quotes.items()}
    assert shown == {"BTC-USD": "97,000.50", "SOL-USD": "236.1234", "FARTCOIN-USD": "1.4213"}
    assert ui.price is fmt.price
    prompt, summary = render_snapshot(snap, NOW), summarize_snapshot(snap)
    board = {"marks": {pid: {"price": q.price, "from": "feed"} for pid, q in snap.quotes.items()}}
    report = " ".join(t.plain for t in _notes(board))
    st, accounts = arena()
    screen_text = screen(st, accounts, 160, 50)
    for text in (prompt, summary, report, screen_text):
        assert all(s in text for s in shown.values()), text


def test_slippage_and_the_impact_rate_on_screen_and_in_the_export():
    """A fill that walked the book: its slippage in the fills table (bps), the agent's total in the
    standings and the export, the impact rate in the header."""
    from arena.metrics import MetricsTracker
    from tests.support.records import snap

    st = ArenaState(max_quote_age_s=30, fee_bps=120, impact_bps=2.5, metrics=MetricsTracker(fee_bps=120))
    st.started_at = START
    walked = Fill(trade_id="w1", agent="alice", product_id="BTC-USD", side="buy", quantity=1.5, price=96_533.33,
                  top_price=96_500.0, top_size=0.5, slippage=50.0, fee=1_737.6, executed_at=NOW - timedelta(seconds=5))  # fmt: skip
    st.on_snapshot(snap(1, btc=96_500.0), now=NOW - timedelta(seconds=1))
    st.on_trade(walked)
    accounts = replay([walked])
    assert accounts["alice"].slippage_paid == 50.0
    text = screen(st, accounts, 200, 50)
    assert f"{walked.slippage_bps:.1f}bp" in text and "3.5bp" in text  # 50 / (1.5 * 96,500) = 3.45 bps
    assert "Slippage" in text and "-$50.00" in text
    assert "impact 2.5 bps per top size" in text
    board = leaderboard(st, accounts, now=NOW)
    alice = next(a for a in board["agents"] if a["name"] == "alice")
    assert alice["slippage"] == 50.0 and board["impact_bps_per_top_size"] == 2.5
