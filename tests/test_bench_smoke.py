"""The benchmarks stay runnable: `python -m bench floor --json` with tiny sizes prints one JSON object
(the benchmarks themselves are not part of the test suite; see bench/README.md)."""

from __future__ import annotations

import json

import pytest

from tests.support.commands import run_script


@pytest.mark.processes
def test_floor_bench_prints_its_json_result():
    out = run_script("-m", "bench", "floor", "--json", "--messages", "20", "--throughput", "200", "--long-poll", "5")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout  # --json: the JSON object only
    result = json.loads(lines[0])
    assert result["bench"] == "floor"
    assert {"cpus", "cpu_model", "python", "date"} <= result["machine"].keys()
    r = result["results"]
    assert r["latency_ms"]["n"] == 20 and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert r["latency_fetch_wait_500_ms"]["n"] == 5
    assert r["produced_per_s"] > 0 and r["consumed_per_s"] > 0
    assert r["payload_bytes"] > 1000  # a market snapshot, not a toy record


def test_backlog_measures_staleness_at_the_fill_not_at_the_turn_start():
    """bench backlog's figures from records: a turn decided on tick 1 whose order fills after ticks 2 and
    3 were published (and 3 reached the router) is a fill on an older tick, although the turn started on
    the newest one; the desk's price is judged by the quote it used (Fill.tick_seq)."""
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    from arena.decisions import Decision
    from arena.market import MarketSnapshot
    from arena.portfolio import Fill
    from bench.backlog import Newest, fill_checks, turn_checks

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    published = {
        seq: MarketSnapshot(seq=seq, published_at=at(seq - 1), quotes={}) for seq in range(1, 6)
    }  # #n at n-1 s

    def turn(run: str, seq: int, s: float, status: str = "started", reason: str = "") -> Decision:
        return Decision(agent="a", run_id=run, tick_seq=seq, tick_published_at=published[seq].published_at, status=status,
                        reason=reason, started_at=at(s))  # fmt: skip

    def fill(run: str, s: float, quote_seq: int) -> Fill:
        return Fill(trade_id=f"a|{run}|4|call_{s}", agent="a", product_id="BTC-USD", side="buy", quantity=1.0, price=1.0,
                     tick_seq=quote_seq, executed_at=at(s))  # fmt: skip

    rec = SimpleNamespace(
        published=published,
        decisions=[turn("r1", 1, 0.1), turn("", 2, 2.2, "skipped", "superseded by #3 while a turn was running"),
                   turn("r2", 4, 3.1), turn("r3", 5, 4.1), turn("r4", 2, 4.2)],  # fmt: skip
        trades=[fill("r1", 2.5, 3), fill("r2", 3.3, 4), fill("r3", 4.3, 4), fill("r3", 4.5, 3), Fill(trade_id="k", agent="a", product_id="BTC-USD",
                                                                                  side="buy", quantity=1.0, price=1.0, executed_at=at(4.4))],
    )  # fmt: skip
    newest = Newest(rec)
    rows = [
        (r["seq"], r["newer_received"], r["newer_published"], r["newer_delivered"])
        for r in turn_checks(rec, newest, "a")
    ]
    assert rows == [(1, 0, 0, 0), (4, 0, 0, 0), (5, 0, 0, 0), (2, 3, 3, 2)]  # r4: a backlog tick, #4 out for 1.2 s
    f = fill_checks(rec, newest, "a")
    assert f["count"] == 4 and f["unmatched"] == 1
    assert (
        f["decided_on_older_than_newest_published"] == 1 and f["max_ticks_behind_published"] == 2
    )  # r1: #1 when #3 was out
    assert f["decided_on_older_than_newest_received"] == 1  # #3 reached the router at 2.2 s, before the fill at 2.5 s
    assert (
        f["priced_on_older_than_newest_published"] == 2 and f["max_price_ticks_behind_published"] == 2
    )  # r3: quotes #4, #3; #5 out
    assert (
        f["priced_on_older_than_a_tick_published_1s_before"] == 1
    )  # quote #3 at 4.5 s, #4 out since 3 s; #5 may be in flight
    assert f["decided_tick_age_at_fill_ms"]["max"] == 2500.0


def test_the_one_trade_turn_is_model_then_one_trade_then_model():
    """bench decision --turn one-trade: the side-by-side comparison's turn, buy on an odd snapshot and
    sell on an even one, no get_portfolio; a text once the trade's result is in."""
    from arena.router import build_prompt
    from arena.sim import policy
    from bench import one_trade
    from tests.support import snapshot

    tools = {"execute_trade": {"properties": {"product_id": {}, "side": {"enum": ["buy", "sell"]}, "quantity": {}}},
             "get_portfolio": {}}  # fmt: skip
    for seq, side in ((3, "buy"), (4, "sell")):
        turn = policy.Turn(
            [{"role": "system", "content": "x"}, {"role": "user", "content": build_prompt(snapshot(seq))}]
        )
        reply = one_trade.plan_one_trade(turn, tools)
        assert [(name, args["side"], args["product_id"]) for name, args in reply.calls] == [
            ("execute_trade", side, "BTC-USD")
        ]
        assert 0 < reply.calls[0][1]["quantity"] * turn.market.quotes["BTC-USD"].ask <= one_trade.NOTIONAL
    done = policy.Turn([{"role": "user", "content": build_prompt(snapshot(3))},
                        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "execute_trade", "arguments": "{}"}}]},
                        {"role": "tool", "tool_call_id": "c1", "content": "filled"}])  # fmt: skip
    assert one_trade.plan_one_trade(done, tools).calls == []


def test_a_p99_from_fewer_than_200_samples_is_labelled_a_max():
    from bench.harness import dist_ms, honest

    assert honest(dist_ms([0.01] * 199))["p99_is_max_of_few"] is True
    assert "p99_is_max_of_few" not in honest(dist_ms([0.01] * 200))
