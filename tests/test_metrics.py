"""Metrics on hand-computed examples: every expected number below was worked out by hand."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from arena.market import MarketSnapshot, Quote
from arena.metrics import BASELINE_NAME, MetricsTracker, compute, value_series
from arena.portfolio import Fill
from tests.support import records
from tests.support.records import rejection

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fill(agent: str, side: str, qty: float, price: float, fee: float = 0.0, t: float = 1.0, pid: str = "X-USD") -> Fill:
    return records.fill(
        0, agent, side, qty, price, fee=fee, at=at(t), trade_id=f"{agent}-{side}-{t}-{qty}", product_id=pid
    )


def q(pid: str, bid: float | None, ask: float | None, price: float | None = None) -> Quote:
    return Quote(product_id=pid, price=price if price is not None else (bid or ask), best_bid=bid, best_ask=ask)


# An all-in agent: 1,000 X at 100 after the first sample; marks 100, 110, 99, 108.9 one minute apart
# -> values 100,000 / 110,000 / 99,000 / 108,900: returns +10%, -10%, +10%.
ALL_IN = [fill("alice", "buy", 1000, 100.0, t=1)]
MARKS = [(at(0), {"X-USD": 100.0}), (at(60), {"X-USD": 110.0}), (at(120), {"X-USD": 99.0}), (at(180), {"X-USD": 108.9})]


def test_value_series_drawdown_and_sharpe_by_hand():
    series = value_series(ALL_IN, MARKS, baseline=False)
    assert [v for _, v in series["alice"]] == pytest.approx([100_000, 110_000, 99_000, 108_900])
    assert [t for t, _ in series["alice"]] == [at(0), at(60), at(120), at(180)]

    m = compute(ALL_IN, MARKS, baseline=False, min_sharpe_returns=2)["alice"]
    assert m.total_value == pytest.approx(108_900)
    assert m.return_pct == pytest.approx(8.9)
    assert m.cash == pytest.approx(0.0)
    assert m.unrealized_pnl == pytest.approx(8_900)  # 1000 x (108.9 - 100)
    assert m.realized_pnl == 0.0
    # peak 110,000 -> trough 99,000
    assert m.max_drawdown_pct == pytest.approx(10.0)
    # mean 1/30, sample variance ((2/30)^2 + (4/30)^2 + (2/30)^2) / 2 = 1/75: mean/std = sqrt(1/12);
    # one minute apart -> 525,600 periods a year: sqrt(525600 / 12) = sqrt(43800)
    assert m.sharpe == pytest.approx(209.28449536, rel=1e-9)
    assert m.samples == 4
    assert m.time_in_market_pct == pytest.approx(75.0)  # out at the first sample, in at the other three
    assert m.exposure_pct == pytest.approx(100.0)
    assert m.win_rate is None and m.round_trips == 0
    assert m.trades == 1


def test_sharpe_annualization_follows_the_given_interval():
    m = compute(ALL_IN, MARKS, baseline=False, interval_s=3600, min_sharpe_returns=2)["alice"]
    assert m.sharpe == pytest.approx(27.01851217, rel=1e-9)  # sqrt(8760 / 12)


def test_sharpe_is_none_with_fewer_than_two_returns_or_zero_variance():
    two_samples = MARKS[:2]  # one return only
    assert compute(ALL_IN, two_samples, baseline=False, min_sharpe_returns=2)["alice"].sharpe is None
    # a cash-only agent (it only has a rejection): every return is 0 -> zero variance
    rejected = [rejection(1, "bob", qty=1e9, trade_id="r1", product_id="X-USD", at=at(1))]
    m = compute(rejected, MARKS, baseline=False, min_sharpe_returns=2)["bob"]
    assert m.sharpe is None
    assert m.max_drawdown_pct == 0.0
    assert m.total_value == 100_000 and m.trades == 0 and m.rejected == 1
    assert m.exposure_pct == 0.0 and m.time_in_market_pct == 0.0


def test_win_rate_counts_each_sell_as_a_round_trip_fees_included():
    trades = [
        fill("carol", "buy", 10, 100.0, fee=10.0, t=1),  # cost 1,010 -> average cost 101 per unit
        fill("carol", "sell", 4, 105.0, fee=4.2, t=2),  # 420 - 4.2 - 404 = +11.80  win
        fill("carol", "sell", 3, 101.0, fee=3.03, t=3),  # 303 - 3.03 - 303 = -3.03  loss (the fee)
        fill("carol", "sell", 2, 101.0, t=4),  # 202 - 202 = 0             not a win
        fill("carol", "sell", 1, 110.0, t=5),  # 110 - 101 = +9            win
        rejection(6, "carol", "selling more than held", 5, trade_id="rej", product_id="X-USD", side="sell", at=at(6)),
    ]
    m = compute(trades, [], baseline=False)["carol"]
    assert m.round_trips == 4 and m.wins == 2
    assert m.win_rate == pytest.approx(50.0)
    assert m.realized_pnl == pytest.approx(17.77)
    assert m.fees == pytest.approx(17.23)
    assert m.cash == pytest.approx(100_017.77)
    assert m.total_value == pytest.approx(100_017.77)  # flat again
    assert m.unrealized_pnl == pytest.approx(0.0)
    assert m.trades == 5 and m.rejected == 1
    assert m.exposure_pct == pytest.approx(0.0)
    # no price samples: nothing to compute drawdown or Sharpe on
    assert m.max_drawdown_pct is None and m.sharpe is None and m.time_in_market_pct is None and m.samples == 0


def test_marks_at_the_bid_unrealized_exposure_and_time_in_market():
    history = [
        (at(0), {"X-USD": q("X-USD", 99, 101)}),
        (at(60), {"X-USD": q("X-USD", 110, 112)}),
        (at(120), {"X-USD": q("X-USD", 120, 122)}),
    ]
    buy = [fill("dave", "buy", 100, 101.0, t=1)]  # cash 89,900
    m = compute(buy, history[:2], baseline=False)["dave"]
    assert m.total_value == pytest.approx(100_900)  # 89,900 + 100 x 110 (the bid, not the ask 112)
    assert m.unrealized_pnl == pytest.approx(900)
    assert m.exposure_pct == pytest.approx(11_000 / 100_900 * 100)  # 10.9019%
    assert m.exposure_pct == pytest.approx(10.90188305)
    assert m.time_in_market_pct == pytest.approx(50.0)

    round_trip = buy + [fill("dave", "sell", 100, 110.0, t=61)]  # sold at the bid after the 2nd sample
    m = compute(round_trip, history, baseline=False)["dave"]
    assert m.realized_pnl == pytest.approx(900) and m.unrealized_pnl == pytest.approx(0)
    assert m.total_value == pytest.approx(100_900)
    assert m.time_in_market_pct == pytest.approx(100 / 3)  # held at the 2nd sample only
    assert m.win_rate == 100.0


def test_quote_without_bid_marks_at_last_price_and_missing_products_keep_their_mark():
    history = [
        (at(0), {"X-USD": q("X-USD", None, None, price=50.0), "Y-USD": 5.0}),
        (at(60), {"X-USD": 60.0}),  # Y-USD missing: keeps 5.0
    ]
    trades = [fill("erin", "buy", 100, 50.0, t=1), fill("erin", "buy", 1000, 5.0, t=2, pid="Y-USD")]
    m = compute(trades, history, baseline=False)["erin"]
    assert m.total_value == pytest.approx(90_000 + 6_000 + 5_000)
    assert m.unrealized_pnl == pytest.approx(1_000)


def test_buy_and_hold_baseline_by_hand():
    history = [
        (at(0), {}),  # no quotes yet: the arena has not started
        (at(60), {"X-USD": q("X-USD", 99, 100), "Y-USD": q("Y-USD", 9, 10)}),
        (at(120), {"X-USD": q("X-USD", 110, 111), "Y-USD": q("Y-USD", 8, 9)}),
        (at(180), {"X-USD": q("X-USD", 120, 121)}),  # Y-USD not quoted: keeps its mark 8
    ]
    # 10 bps fee: 50,000 per product buys 50,000 / (ask x 1.001) units, fee included
    # X: 499.5004995 units, Y: 4,995.004995 units; fee 49.95004995 each
    m = compute([], history[:3], fee_bps=10)[BASELINE_NAME]
    assert m.baseline is True
    assert m.cash == pytest.approx(0.0, abs=1e-6)
    assert m.fees == pytest.approx(99.9000999)
    assert m.trades == 2
    # marked at the bid: 499.5004995 x 110 + 4,995.004995 x 8 = 54,945.05494505 + 39,960.03996004
    assert m.total_value == pytest.approx(94_905.09490509)
    assert m.return_pct == pytest.approx(-5.09490509)
    assert m.unrealized_pnl == pytest.approx(-5_094.90509491)
    assert m.max_drawdown_pct == pytest.approx(5.09490509)  # from 100,000 at its first sample
    assert m.samples == 2  # starts at the first snapshot with quotes

    series = value_series([], history, fee_bps=10)[BASELINE_NAME]
    assert series[0] == (at(60), 100_000.0)  # it buys in reaction to that snapshot, like an agent
    assert [v for _, v in series] == pytest.approx(
        [100_000, 94_905.09490509, 99_900.0999001]
    )  # 499.5005 x 120 + 39,960.04


def test_baseline_is_a_row_among_agents_and_rows_are_sorted_by_value():
    history = [(at(0), {"X-USD": q("X-USD", 99, 100)}), (at(60), {"X-USD": q("X-USD", 90, 91)})]
    trades = [fill("alice", "buy", 10, 100.0, t=1)]  # a small position: loses little when X falls
    rows = list(compute(trades, history).values())
    assert [r.name for r in rows] == ["alice", BASELINE_NAME]
    assert [r.baseline for r in rows] == [False, True]
    assert rows[0].total_value == pytest.approx(99_000 + 900)  # cash 99,000 + 10 x 90
    assert rows[1].total_value == pytest.approx(90_000)  # 1,000 x 90
    assert compute(trades, history, baseline=False).keys() == {"alice"}


def test_pnl_identity_total_minus_initial_is_realized_plus_unrealized():
    history = [(at(0), {"X-USD": q("X-USD", 99, 100)}), (at(60), {"X-USD": q("X-USD", 103, 104)})]
    trades = [
        fill("f", "buy", 7, 100.0, fee=0.7, t=1),
        fill("f", "sell", 3, 99.0, fee=0.3, t=2),
        fill("f", "buy", 2, 104.0, fee=0.2, t=61),
    ]
    m = compute(trades, history, baseline=False)["f"]
    assert m.total_value - 100_000 == pytest.approx(m.realized_pnl + m.unrealized_pnl)


def test_agent_series_starts_at_the_sample_it_reacted_to():
    # bob's first trade comes after the 3rd sample: his series starts there, worth the initial cash
    trades = ALL_IN + [fill("bob", "buy", 100, 99.0, t=121)]
    series = value_series(trades, MARKS, baseline=False)
    assert series["bob"] == [(at(120), 100_000.0), (at(180), pytest.approx(100_000 - 9_900 + 10_890))]
    # a trade before every sample: the series starts at the first sample, trade included
    early = [fill("carl", "buy", 1000, 100.0, t=-5)]
    assert [v for _, v in value_series(early, MARKS, baseline=False)["carl"]] == pytest.approx(
        [100_000, 110_000, 99_000, 108_900]
    )


def test_live_series_starts_at_the_snapshot_the_first_call_reacted_to_whichever_arrives_first():
    """The first call and the snapshot it reacted to reach the tools process by different paths, in
    either order; the agent's series must not depend on which came first (it made a replayed
    leaderboard differ by one sample)."""
    snaps = [
        MarketSnapshot(seq=i, published_at=t, quotes={"X-USD": q("X-USD", m["X-USD"], m["X-USD"] + 1)})
        for i, (t, m) in enumerate(MARKS)
    ]
    buy = fill("bob", "buy", 100, 100.0, t=61)  # bob reacted to snapshot 1 (t=60)

    def run(events) -> tuple:
        tracker = MetricsTracker(baseline=False, keep_series=True)
        for e in events:
            e(tracker)
        return tracker.series()["bob"], tracker.metrics()

    call = lambda tr: tr.on_agent("bob", reacted_to=snaps[1].published_at)  # noqa: E731
    snap = lambda i: lambda tr: tr.on_snapshot(snaps[i])  # noqa: E731
    trade = lambda tr: tr.on_trade(buy)  # noqa: E731
    in_order = run([snap(0), snap(1), call, trade, snap(2), snap(3)])
    call_first = run([snap(0), call, snap(1), trade, snap(2), snap(3)])
    snapshot_2_first = run([snap(0), snap(1), snap(2), call, trade, snap(3)])  # the call came late
    assert in_order == call_first
    assert in_order[0] == [
        (at(60), 100_000.0),
        (at(120), pytest.approx(100_000 - 10_000 + 9_900)),
        (at(180), pytest.approx(100_000 - 10_000 + 10_890)),
    ]
    # a call that arrives after a later snapshot: that sample is backfilled at the initial cash (bob had
    # traded nothing yet), and the trade shows from the next sample on
    assert snapshot_2_first[0][:2] == [(at(60), 100_000.0), (at(120), 100_000.0)]
    assert snapshot_2_first[1]["bob"].samples == 3
    # a snapshot older than the one it reacted to, arriving late (partitions may reorder): not its sample
    late = run([snap(0), call, snap(1), trade, snap(2), lambda tr: tr.on_snapshot(snaps[0]), snap(3)])
    assert late[0] == in_order[0]


def test_tracker_fed_live_matches_the_batch_computation():
    snapshots = [
        MarketSnapshot(seq=i, published_at=t, quotes={"X-USD": q("X-USD", m["X-USD"], m["X-USD"] + 1)})
        for i, (t, m) in enumerate(MARKS)
    ]
    trades = [
        fill("alice", "buy", 500, 101.0, t=1),
        fill("alice", "sell", 200, 109.0, t=61),
        fill("bob", "buy", 10, 111.0, t=62),
    ]
    tracker = MetricsTracker(fee_bps=0)
    tracker.on_snapshot(snapshots[0])
    tracker.on_trade(trades[0])
    tracker.on_snapshot(snapshots[1])
    tracker.on_trade(trades[1])
    tracker.on_trade(trades[2])
    tracker.on_snapshot(snapshots[2])
    tracker.on_snapshot(snapshots[3])
    live = tracker.metrics()
    assert live == compute(trades, snapshots)
    # and by hand: alice holds 300 X (avg 101) + 100,000 - 50,500 + 21,800 cash; X bid 108.9 at the end
    assert live["alice"].total_value == pytest.approx(71_300 + 300 * 108.9)
    assert live["alice"].realized_pnl == pytest.approx(1_600)  # 200 x (109 - 101)
    assert live["alice"].win_rate == 100.0


def test_marks_override_values_positions_now():
    trades = [fill("gus", "buy", 2, 100.0, t=1)]
    m = compute(trades, [], baseline=False, marks={"X-USD": 150.0})["gus"]
    assert m.total_value == pytest.approx(99_800 + 300)
    # without any mark a position is valued at its cost (as Position.market_value does)
    assert compute(trades, [], baseline=False)["gus"].total_value == pytest.approx(100_000)


def test_empty_inputs_and_bad_parameters():
    assert compute([], []) == {}
    assert compute([], [(at(0), {})]) == {}  # no quotes, no baseline
    for bad in (dict(initial_cash=0), dict(initial_cash=math.nan), dict(interval_s=0), dict(fee_bps=-1)):
        with pytest.raises(ValueError):
            MetricsTracker(**bad)
    with pytest.raises(RuntimeError):
        MetricsTracker().series()


def test_metrics_for_one_agent():
    tracker = MetricsTracker(baseline=False)
    for t, prices in MARKS[:2]:
        tracker.on_prices(t, prices)
        if t == at(0):
            tracker.on_trade(ALL_IN[0])
    assert tracker.metrics_for("alice").total_value == pytest.approx(110_000)
    assert tracker.metrics_for("alice").max_drawdown_pct == 0.0
    assert tracker.metrics_for("nobody") is None


def test_a_trade_seen_twice_counts_once():
    tracker = MetricsTracker(baseline=False)
    trade = fill("hal", "buy", 10, 100.0, fee=1.0)
    tracker.on_trade(trade)
    tracker.on_trade(trade.model_copy())  # redelivered: same idempotency key
    m = tracker.metrics()["hal"]
    assert m.trades == 1 and m.cash == pytest.approx(98_999.0) and m.fees == pytest.approx(1.0)


def test_sharpe_is_shown_from_the_documented_number_of_returns_on():
    from arena.metrics import MIN_SHARPE_RETURNS

    # alternating +1% / -0.5% marks: a nonzero variance at every length
    marks = [
        (at(60 * k), {"X-USD": 100.0 * (1.01 if k % 2 else 1.0) * (1 + k / 1000)})
        for k in range(MIN_SHARPE_RETURNS + 2)
    ]
    trades = [fill("alice", "buy", 500, 100.0, t=1)]
    below = compute(trades, marks[:MIN_SHARPE_RETURNS], baseline=False)["alice"]  # series starts at 0: 29 returns
    assert below.samples == MIN_SHARPE_RETURNS and below.sharpe is None
    at_min = compute(trades, marks[: MIN_SHARPE_RETURNS + 1], baseline=False)["alice"]
    assert at_min.samples == MIN_SHARPE_RETURNS + 1 and at_min.sharpe is not None and math.isfinite(at_min.sharpe)


def test_live_arrival_order_gives_the_replayed_numbers():
    """Live, a fill stamped just after a snapshot's time can reach the tracker before that snapshot
    does; the report replays by time. One rule for both: a trade stamped after a sample's time
    counts from the next sample on."""
    snaps = [
        MarketSnapshot(seq=k, published_at=at(10 * k), quotes={"X-USD": q("X-USD", 100 + k, 100.5 + k)})
        for k in range(6)
    ]
    trades = [
        fill("alice", "buy", 10, 101.5, t=12),
        fill("bob", "buy", 1, 102.5, t=25),
        fill("alice", "sell", 4, 104.0, fee=0.5, t=40.5),
    ]
    replayed = compute(trades, snaps, min_sharpe_returns=2)
    series = value_series(trades, snaps)

    live = MetricsTracker(keep_series=True, min_sharpe_returns=2)
    for snap in snaps[:2]:
        live.on_snapshot(snap)
    live.on_trade(trades[0])
    live.on_snapshot(snaps[2])
    live.on_trade(trades[1])
    live.on_snapshot(snaps[3])
    live.on_trade(trades[2])  # stamped 40.5, arrives before the snapshot of 40 is seen
    assert live.metrics()["alice"].trades == 2  # "now" includes it at once
    for snap in snaps[4:]:
        live.on_snapshot(snap)
    assert live.series() == series
    assert {n: m.model_dump() for n, m in live.metrics().items()} == {n: m.model_dump() for n, m in replayed.items()}
