"""Realistic fills without a broker: the impact model beyond the top-of-book size, the taker fee, both
inside the cash and limit checks; slippage in the trade record, the ledger, get_portfolio and the
leaderboard; the ledger's migration of older files and what it keeps across a restart."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from rich.console import Console

from arena.desk import DEFAULT_FEE_BPS, MAX_WALK_PCT, Desk, walk
from arena.leaderboard import leaderboard_table
from arena.ledger import Ledger
from arena.market import utcnow
from arena.metrics import MetricsTracker
from arena.portfolio import INITIAL_CASH, Fill
from arena.strategies import Limits
from tests.support.desks import book, buy


def most_in(r: dict) -> float:
    assert r["status"] == "rejected", r
    return float(re.search(r"the most (?:you can buy now is|it takes within that is) (\S+)", r["error"])[1])


# -- the impact model -------------------------------------------------------------------------------


def test_within_the_top_size_an_order_fills_at_the_top_and_one_unit_more_slips(make):
    d = make(book(fart=(0.99, 1.0), fart_sizes=(50.0, 100.0)))
    r = buy(d, "FARTCOIN-USD", 100)  # exactly the size at the best ask
    assert r["price"] == 1.0 and r["slippage"] == 0 and r["top_of_book"] == 1.0 and r["top_size"] == 100
    r = buy(d, "FARTCOIN-USD", 100.1)  # one increment beyond it: 0.1 x 0.1 / 200 of 10 bps of $1
    t = d.ledger.trades("ann")[-1]
    assert t.slippage == pytest.approx(1.0 * 0.001 * 0.01 / 200, rel=1e-9) and t.price > 1.0 == t.top_price


def test_impact_and_fee_arithmetic_exactly(make):
    # ask 50,000 with 0.5 BTC behind it, 10 bps of impact per further 0.5 BTC, a 1.2% taker fee.
    d = make(book(btc=(49_990.0, 50_000.0), btc_sizes=(0.25, 0.5)), fee_bps=120)
    r = buy(d, "BTC-USD", 1.5)
    # 1 BTC beyond the top: the walk costs 50,000 x 0.001 x 1^2 / (2 x 0.5) = $50
    assert r["slippage"] == pytest.approx(50.0, rel=1e-12)
    assert r["notional"] == 75_050.0 and r["price"] == pytest.approx(75_050 / 1.5, rel=1e-12)
    assert r["slippage_bps"] == pytest.approx(50 / 75_000 * 10_000, abs=1e-3)  # 6.667 bps of the top-of-book value
    assert r["fee"] == pytest.approx(900.6, rel=1e-12)  # 1.2% of 75,050: the fee is on the impacted notional
    assert r["cash_after"] == pytest.approx(INITIAL_CASH - 75_050 - 900.6, abs=0.005)
    # A sell walks down from the bid: 0.75 BTC, 0.5 beyond 0.25: 49,990 x 0.001 x 0.25 / 0.5 = $24.995
    r = d.execute_trade("ann", "BTC-USD", "sell", 0.75)
    assert r["slippage"] == pytest.approx(24.995, rel=1e-12) and r["top_of_book"] == 49_990.0
    assert r["notional"] == pytest.approx(0.75 * 49_990 - 24.995, abs=0.005)
    assert r["fee"] == pytest.approx((0.75 * 49_990 - 24.995) * 0.012, abs=5e-5)  # the result rounds to 4 places
    p = d.portfolio("ann")
    assert p["slippage_paid"] == pytest.approx(74.995, rel=1e-12)
    assert p["fees_paid"] == pytest.approx(900.6 + (0.75 * 49_990 - 24.995) * 0.012, abs=5e-5)
    assert p["fee_bps"] == 120 and p["impact_bps_per_top_size"] == 10
    # the trade record and the ledger's columns say the same
    [t1, t2] = d.ledger.trades("ann")
    assert (t1.top_price, t1.top_size, t1.slippage) == (50_000.0, 0.5, pytest.approx(50.0, rel=1e-12))
    db = sqlite3.connect(d.ledger.path)
    rows = db.execute("SELECT price, top_price, fee, slippage, slippage_bps FROM trades ORDER BY seq").fetchall()
    db.close()
    assert rows[0] == pytest.approx((t1.price, 50_000.0, t1.fee, t1.slippage, t1.slippage_bps))
    assert rows[1] == pytest.approx((t2.price, 49_990.0, t2.fee, t2.slippage, t2.slippage_bps))


def test_the_walk_formula():
    assert walk(100.0, 2.0, 2.0, 50) == 0  # within the top
    assert walk(100.0, 2.0, 6.0, 50) == pytest.approx(100 * 0.005 * 16 / 4)  # 4 beyond 2: $2
    assert walk(100.0, None, 1e6, 50) == 0 and walk(100.0, 0.0, 5.0, 50) == 0  # size unknown: no impact
    assert walk(100.0, 2.0, 6.0, 0) == 0  # --impact-bps 0


def test_a_quote_without_sizes_fills_in_full_at_the_top(make):
    d = make(book(fart=(0.99, 1.0)))
    r = buy(d, "FARTCOIN-USD", 50_000)
    assert r["price"] == 1.0 and r["slippage"] == 0 and r["top_size"] is None
    assert d.ledger.trades("ann")[0].top_size is None


def test_an_order_beyond_the_books_depth_is_refused_at_its_boundary(make):
    # 100 units at the ask, 100 bps per further 100: the last unit reaches 10% away at 100 + 1,000 units.
    d = make(book(fart=(0.99, 1.0), fart_sizes=(100.0, 100.0)), impact_bps=100)
    r = buy(d, "FARTCOIN-USD", 1_100.1)
    assert "the FARTCOIN-USD book is not that deep" in r["error"] and f"(at most {MAX_WALK_PCT:g}%)" in r["error"]
    assert most_in(r) == 1_100
    r = buy(d, "FARTCOIN-USD", 1_100)
    assert r["status"] == "filled" and r["slippage"] == pytest.approx(1.0 * 0.01 * 1_000**2 / 200, rel=1e-12)


def test_the_cash_check_uses_the_impacted_cost_and_suggests_exactly_the_most(make):
    snap = book(fart=(0.99, 1.0), fart_sizes=(10_000.0, 10_000.0))
    d = make(snap, fee_bps=120, impact_bps=50)
    r = buy(d, "FARTCOIN-USD", 99_000)  # $99,000 at the top; the walk and the fee take it past $100,000
    assert "insufficient cash" in r["error"] and "on average" in r["error"], r
    most = most_in(r)
    assert most < INITIAL_CASH / 1.012  # less than the top of book alone would allow
    over = make(snap, fee_bps=120, impact_bps=50)
    assert "insufficient cash" in buy(over, "FARTCOIN-USD", round(most + 0.1, 1))["error"]
    r = buy(d, "FARTCOIN-USD", most)
    assert r["status"] == "filled" and 0 <= r["cash_after"] < 1


def test_messages_show_prices_and_money_the_arena_way(make):
    """The desk's refusals and the tools' log lines format through arena.fmt, as the screens do."""
    from arena import fmt
    from arena.tools_service import _describe, standings_line

    d = make(book(btc=(49_990.0, 50_000.123456)), fee_bps=120, impact_bps=0)
    r = buy(d, "BTC-USD", 3)
    cost = 3 * 50_000.123456 * 1.012
    assert f"at {fmt.price(50_000.123456)} costs {fmt.money(cost)}" in r["error"], r  # 50,000.12, $151,800.37
    assert "at 50,000.12 costs $151,800.37 (incl. fee $1,800.00)" in r["error"], r
    buy(d, "BTC-USD", 0.01)
    [fill] = [t for t in d.ledger.trades("ann") if isinstance(t, Fill)]
    assert _describe(fill) == "ann buy 0.01 BTC-USD @ 50,000.12 (fee $6.00)"
    assert standings_line(d.ledger.accounts(), d.quotes.quotes()) == "standings: ann $99,993.90 (-0.006%)"


@pytest.mark.parametrize(
    "rule,limits",
    [
        ("largest order", {"max_order_pct": 20}),
        ("largest position", {"max_position_pct": 20}),
        ("most invested", {"max_invested_pct": 20}),
        ("least cash", {"min_cash_pct": 80}),
    ],
)
def test_limits_judge_the_impacted_cost(make, rule, limits):
    """With the walk: the suggested quantity fills, one increment more is refused, and both lie below
    the boundary the top of book alone would give (0.4 BTC = 20% of $100,000 at 50,000)."""
    snap = book(btc_sizes=(0.05, 0.05))
    d = make(snap, fee_bps=120, impact_bps=50, **limits)
    r = buy(d, "BTC-USD", 0.4)
    assert f"limit '{rule}' (t strategy)" in r["error"], r
    most = most_in(r)
    assert 0 < most < 0.4
    over = make(snap, fee_bps=120, impact_bps=50, **limits)
    assert f"limit '{rule}'" in buy(over, "BTC-USD", round(most + 1e-8, 8))["error"]
    assert buy(d, "BTC-USD", most)["status"] == "filled"


def test_largest_order_counts_the_walk_in_the_orders_value(make):
    # 0.2 BTC would be exactly 10% at the top; 0.1 BTC beyond a 0.1 BTC top at 100 bps per 0.1 BTC adds
    # 50,000 x 0.01 x 0.1^2 / 0.2 = $25.
    d = make(book(btc_sizes=(0.1, 0.1)), impact_bps=100, max_order_pct=10)
    r = buy(d, "BTC-USD", 0.2)
    assert "this buy is $10,025.00, 10.03% of your total value" in r["error"], r


def test_the_default_fee_is_the_cited_taker_fee_and_zero_turns_it_off(tmp_path):
    assert DEFAULT_FEE_BPS == 120.0  # Coinbase Advanced Trade, lowest tier taker: 1.20% (docs/METRICS.md)
    with Ledger(tmp_path / "a.db") as ledger:
        d = Desk(ledger)
        d.quotes.update(book())
        assert d.execute_trade("ann", "BTC-USD", "buy", 0.2)["fee"] == pytest.approx(10_000 * 0.012)
    with Ledger(tmp_path / "b.db") as ledger:
        d = Desk(ledger, fee_bps=0)
        d.quotes.update(book())
        assert d.execute_trade("ann", "BTC-USD", "buy", 0.2)["fee"] == 0


# -- slippage and notional marks on the leaderboard -------------------------------------------------


def test_metrics_and_the_table_show_slippage_and_flag_notional_marks(make):
    d = make(book(btc_sizes=(0.1, 0.1), fart_sizes=(10.0, 10.0)), impact_bps=100)
    buy(d, "BTC-USD", 0.3)
    buy(d, "FARTCOIN-USD", 30)
    tracker = MetricsTracker()
    for t in d.ledger.trades():
        tracker.on_trade(t)
    slip = sum(t.slippage for t in d.ledger.trades())
    assert slip == pytest.approx(50_000 * 0.01 * 0.04 / 0.2 + 1.0 * 0.01 * 400 / 20)
    assert tracker.metrics()["ann"].slippage == pytest.approx(slip)
    # never marked: both positions at cost, flagged
    assert set(tracker.metrics()["ann"].notional_marks) == {"BTC-USD", "FARTCOIN-USD"}
    tracker.on_snapshot(book(stale=True).model_copy(update={"quotes": {"BTC-USD": book(stale=True).quotes["BTC-USD"]}}))
    marks = tracker.metrics()["ann"].notional_marks
    assert marks["BTC-USD"] == "marked at a stale quote's bid" and "average cost" in marks["FARTCOIN-USD"]
    tracker.on_snapshot(book())
    assert tracker.metrics()["ann"].notional_marks == {}
    console = Console(width=200, record=True)
    console.print(leaderboard_table([{**tracker.metrics()["ann"].model_dump(), "notional_marks": marks}]))
    text = console.export_text()
    assert "slippage" in text and f"${slip:,.2f}" in text
    assert "*" in text and "valued partly at a notional price, not a live bid: BTC-USD, FARTCOIN-USD" in text


# -- the ledger: migration, old rows, what survives a restart ---------------------------------------

OLD_SCHEMA = """
CREATE TABLE agents (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE trades (seq INTEGER PRIMARY KEY AUTOINCREMENT, call_key TEXT NOT NULL UNIQUE, agent TEXT NOT NULL,
    status TEXT NOT NULL, trade TEXT NOT NULL, result TEXT NOT NULL);
"""


def old_ledger(path, rows: list[dict]) -> None:
    """A ledger as written before the impact model: trade JSON without top price, size or slippage."""
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for i, r in enumerate(rows):
        trade = {"trade_id": f"k{i}", "quantity": 1.0, "status": "filled", "executed_at": "2026-01-01T00:00:00+00:00"}
        trade.update(r)
        db.execute(
            "INSERT INTO trades(call_key, agent, status, trade, result) VALUES (?, ?, ?, ?, ?)",
            (f"k{i}", trade["agent"], trade["status"], json.dumps(trade), "{}"),
        )
    db.commit()
    db.close()


def test_an_old_ledger_gains_the_columns_and_loads_with_its_fills_at_the_top(tmp_path):
    path = tmp_path / "old.db"
    old_ledger(path, [{"agent": "ann", "product_id": "BTC-USD", "side": "buy", "price": 50_000.0, "fee": 60.0}])
    with Ledger(path) as ledger:
        acct = ledger.account("ann")
        assert acct.cash == INITIAL_CASH - 50_060 and acct.slippage_paid == 0
        [t] = ledger.trades()
        assert t.slippage == 0 and t.top_price is None and t.slippage_bps == 0
    db = sqlite3.connect(path)
    row = db.execute("SELECT turn, price, top_price, fee, slippage, slippage_bps FROM trades").fetchone()
    db.close()
    assert row == (None, 50_000.0, 50_000.0, 60.0, 0.0, 0.0)
    with Ledger(path) as again:  # a second open finds the columns there
        assert again.account("ann").cash == INITIAL_CASH - 50_060


def test_a_row_whose_agent_name_is_now_invalid_is_skipped_with_one_line(tmp_path, caplog):
    path = tmp_path / "old.db"
    fill = {"product_id": "BTC-USD", "side": "buy", "price": 50_000.0}
    old_ledger(path, [{"agent": "ann", **fill}, {"agent": "bad name!", **fill}, {"agent": "bob", **fill}])
    with caplog.at_level(logging.WARNING, logger="arena.ledger"):
        with Ledger(path) as ledger:
            assert set(ledger.accounts()) == {"ann", "bob"}
            assert [t.agent for t in ledger.trades()] == ["ann", "bob"]  # read again: no second line
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and "trade row 2 (call k1)" in lines[0] and "agent" in lines[0], lines


def test_limit_state_and_model_usage_survive_reopening_the_ledger(tmp_path, monkeypatch):
    import arena.desk
    from arena.decisions import Decision

    clock = SimpleNamespace(now=1_000.0)  # the desk's clock (fill times and the cooldown read it)
    monkeypatch.setattr(arena.desk, "time", SimpleNamespace(time=lambda: clock.now))
    path = tmp_path / "l.db"
    limits = {"t": Limits(max_orders_per_turn=1, cooldown_s=60)}
    d = Desk(Ledger(path), fee_bps=0, strategy_limits=limits)
    d.quotes.update(book())
    assert buy(d, "FARTCOIN-USD", 10, turn="run1")["status"] == "filled"
    assert d.execute_trade("bob", "FARTCOIN-USD", "buy", 10, turn="run9")["status"] == "filled"  # no strategy
    decision = Decision(agent="ann", run_id="run1", tick_seq=1, tick_published_at=utcnow(), status="done",
                        model_calls=2, tokens_in=300, tokens_out=40, tokens_reasoning=5, tokens_cached=100,
                        cost_usd=0.25)  # fmt: skip
    assert d.ledger.record_usage(decision) and not d.ledger.record_usage(decision)  # a redelivery counts once
    unpriced = decision.model_copy(update={"run_id": "run2", "cost_usd": None, "model_calls": 1})
    assert d.ledger.record_usage(unpriced)
    d.ledger.close()

    d = Desk(Ledger(path), fee_bps=0, strategy_limits=limits)
    d.quotes.update(book())
    assert d.ledger.fills_in_turn("ann", "run1") == 1 and d.ledger.fills_in_turn("bob", "run9") == 1
    clock.now += 60  # the cooldown is over; the turn is not
    assert "limit 'orders per turn'" in buy(d, "FARTCOIN-USD", 10, turn="run1")["error"]
    clock.now -= 0.1
    assert "limit 'cooldown'" in buy(d, "FARTCOIN-USD", 10, turn="run2")["error"]
    clock.now += 0.1
    assert buy(d, "FARTCOIN-USD", 10, turn="run2")["status"] == "filled"
    u = d.ledger.usage()["ann"]
    assert (u.model_calls, u.tokens_in, u.tokens_out, u.cost_usd, u.unpriced_calls) == (3, 600, 80, 0.25, 1)
    d.ledger.close()


def test_fill_json_carries_slippage_bps_and_reads_back():
    t = Fill(trade_id="k", agent="ann", product_id="BTC-USD", side="buy", quantity=2.0, price=100.5, top_price=100.0,
              slippage=1.0, executed_at=datetime(2026, 1, 1, tzinfo=timezone.utc))  # fmt: skip
    data = json.loads(t.model_dump_json())
    assert data["slippage_bps"] == pytest.approx(50.0)  # $1 of $200 at the top
    assert Fill.model_validate_json(t.model_dump_json()) == t


def test_one_quote_book_and_one_side_type():
    import arena.desk
    import arena.feed
    import arena.tools
    from arena import portfolio

    assert arena.desk.QuoteBook is arena.feed.QuoteBook
    assert arena.tools.Side is portfolio.Side
    assert Fill(trade_id="k", agent="ann", product_id="BTC-USD", side=" Sell ", quantity=1, price=1).side == "sell"
