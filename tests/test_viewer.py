"""The response viewer's rendering: calfkit activity envelopes (wire JSON, as routers publish them) and
Decision records in, rich lines out. No Kafka here; tests/test_router.py runs the viewer process."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from rich.console import Console

from arena.decisions import Decision
from arena.viewer import ActivityFeed, describe_result, format_args

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)


# --- wire fixtures: the JSON shapes a calfkit 0.13 agent mirrors on its publish_topic -------------


def prompt(seq: int) -> dict:
    return {
        "kind": "request",
        "parts": [{"part_kind": "user-prompt", "content": f"Time: ... (snapshot #{seq})", "timestamp": T0.isoformat()}],
    }


def response(*parts: dict) -> dict:
    return {"kind": "response", "parts": list(parts), "timestamp": T0.isoformat()}


def text(s: str) -> dict:
    return {"part_kind": "text", "content": s}


def call(tool: str, args, call_id: str) -> dict:
    return {"part_kind": "tool-call", "tool_name": tool, "args": args, "tool_call_id": call_id}


def returns(*parts: dict) -> dict:
    return {"kind": "request", "parts": list(parts)}


def result(tool: str, content, call_id: str) -> dict:
    return {
        "part_kind": "tool-return",
        "tool_name": tool,
        "content": content,
        "tool_call_id": call_id,
        "timestamp": T0.isoformat(),
    }


def envelope(history: list[dict], reply: dict | None = None) -> bytes:
    return json.dumps(
        {
            "context": {"state": {"message_history": history, "uncommitted_message": None}, "deps": {}},
            "internal_workflow_state": {"call_stack": {"_internal_list": []}},
            "reply": reply,
        }
    ).encode()


def final(s: str) -> dict:
    return {"kind": "return", "in_reply_to": "f1", "tag": None, "marker": None, "parts": [{"kind": "text", "text": s}]}


def headers(agent: str, run_id: str, kind: str = "call") -> list[tuple[str, bytes]]:
    return [
        ("correlation_id", run_id.encode()),
        ("x-calf-emitter", agent.encode()),
        ("x-calf-emitter-kind", b"agent"),
        ("x-calf-kind", kind.encode()),
        ("x-calf-wire", b"envelope"),
    ]


PORTFOLIO = {"cash": 100000.0, "positions": [], "total_value": 100000.0, "return_pct": 0.0}
FILL = {
    "status": "filled",
    "product_id": "BTC-USD",
    "side": "buy",
    "quantity": 0.0822,
    "unit": "BTC",
    "price": 97323.7,
    "notional": 8000.0,
    "fee": 0.0,
    "cash_after": 92000.0,
}
REJECTED = {"status": "rejected", "error": "order rejected: insufficient cash for 9 BTC-USD. Nothing was traded."}


def run_records(agent: str, run_id: str, seq: int, trade_result=FILL) -> list[tuple[bytes, list]]:
    """The records one run mirrors: dispatch of get_portfolio, dispatch of execute_trade, the return."""
    h1 = [prompt(seq), response(call("get_portfolio", "{}", "call_1"))]
    h2 = h1 + [
        returns(result("get_portfolio", PORTFOLIO, "call_1")),
        response(
            text(f"{agent} buys BTC"),
            call("execute_trade", {"product_id": "BTC-USD", "side": "buy", "quantity": 0.0822}, "call_2"),
        ),
    ]
    h3 = h2 + [
        returns(result("execute_trade", trade_result, "call_2")),
        response(text(f"{agent}: bought BTC on the uptrend.")),
    ]
    return [
        (envelope(h1), headers(agent, run_id)),
        (envelope(h2), headers(agent, run_id)),
        (envelope(h2), headers(agent, run_id)),  # a parked hop repeats the same state
        (envelope(h3, final(f"{agent}: bought BTC on the uptrend.")), headers(agent, run_id, "return")),
    ]


def render(rows, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    for row in rows:
        console.print(row)
    return console.export_text()


def decision(agent: str, status: str, seq: int, **kw) -> Decision:
    started = T0 + timedelta(seconds=seq)
    fields = dict(
        agent=agent,
        run_id=f"{agent}-{seq}",
        tick_seq=seq,
        tick_published_at=started,
        status=status,
        summary=f"#{seq} BTC 97,000.00 · SOL 145.0000",
        started_at=started,
    )
    if status != "started":
        fields["finished_at"] = started + timedelta(seconds=0.84)
    fields.update(kw)
    return Decision(**fields)


# --- tests -----------------------------------------------------------------------------------------


def test_three_agents_on_the_same_tick_are_all_shown_once_each():
    feed = ActivityFeed()
    agents = ["alice", "bob", "carol"]
    # The three runs share a tick and even tool call ids ("call_1"): interleave their records.
    per_agent = [run_records(a, f"run-{a}", seq=7) for a in agents]
    rows = []
    for i in range(4):
        for records in per_agent:
            raw, hdrs = records[i]
            rows += feed.on_activity(raw, hdrs, T0)
    out = render(rows)
    for a in agents:
        assert out.count(f"{a} ") >= 5, out  # name column on each of its lines
    assert out.count("→ get_portfolio()") == 3, out
    assert out.count("← get_portfolio: value $100,000.00") == 3, out
    assert out.count("→ execute_trade(product_id=BTC-USD, side=buy, quantity=0.0822)") == 3, out
    assert out.count("← execute_trade: filled buy 0.0822 BTC @ 97,323.70") == 3, out
    for a in agents:
        assert f"» {a} buys BTC" in out
    # The final answer is left to the "done" decision (with its latency): not printed from the mirror.
    assert "bought BTC on the uptrend" not in out
    assert len(rows) == 3 * 5


def test_records_out_of_order_and_repeated_show_each_step_once_in_conversation_order():
    feed = ActivityFeed()
    records = run_records("alice", "r1", seq=3)
    rows = []
    for raw, hdrs in reversed(records + records):  # the return first, then older states, twice
        rows += feed.on_activity(raw, hdrs, T0)
    out = render(rows)
    icons = [line[20] for line in out.splitlines()]  # after "HH:MM:SS " and the 10-wide name column
    assert icons == ["→", "←", "»", "→", "←"], out


def test_two_runs_of_one_agent_are_separate():
    feed = ActivityFeed()
    rows = []
    for run_id in ("r1", "r2"):
        raw, hdrs = run_records("alice", run_id, seq=1)[-1]
        rows += feed.on_activity(raw, hdrs, T0)
    assert render(rows).count("→ get_portfolio()") == 2


def refused_call() -> bytes:
    """calfkit refusing a call whose arguments fail the schema: a tool-return carrying a retry prompt."""
    refused = {
        "part_kind": "retry-prompt",
        "tool_name": "execute_trade",
        "tool_call_id": "c3",
        "content": [{"type": "json_schema_violation", "loc": [], "msg": "'quantity' is a required property"}],
    }
    history = [
        prompt(2),
        response(call("execute_trade", {"product_id": "BTC-USD", "side": "buy"}, "c3")),
        returns(result("execute_trade", refused, "c3")),
    ]
    return envelope(history)


def test_rejected_trade_and_refused_call_are_shown_with_their_reason():
    feed = ActivityFeed()
    raw, hdrs = run_records("bob", "r9", seq=2, trade_result=REJECTED)[-1]
    rows = feed.on_activity(raw, hdrs, T0)
    rows += feed.on_activity(refused_call(), headers("bob", "r10"), T0)
    out = render(rows)
    assert "✗ execute_trade: order rejected: insufficient cash for 9 BTC-USD" in out, out
    assert "✗ execute_trade refused: 'quantity' is a required property" in out, out


def test_decisions_show_the_market_the_outcome_and_skipped_ticks():
    feed = ActivityFeed()
    rows = []
    rows += feed.on_decision(decision("alice", "started", 4))
    rows += feed.on_decision(decision("alice", "done", 4, output="Bought 0.08 BTC: the trend is up."))
    rows += feed.on_decision(decision("alice", "skipped", 5, reason="superseded by #6"))
    rows += feed.on_decision(decision("bob", "started", 6))  # bob's skips are his own
    rows += feed.on_decision(decision("alice", "started", 6))
    rows += feed.on_decision(
        decision("alice", "error", 6, reason="ChatNodeError: no reply from chat node 'gpt' — is it running?")
    )
    rows += feed.on_decision(decision("bob", "timeout", 6, reason="no result within 60s"))
    out = render(rows)
    assert "▶ turn on #4 BTC 97,000.00 · SOL 145.0000" in out
    assert "✓ #4 done in 0.84s: Bought 0.08 BTC: the trend is up." in out
    assert "#5" not in out  # a skipped tick is only counted ...
    assert "turn on #6 BTC 97,000.00 · SOL 145.0000  (1 older tick skipped)" in out  # ... on alice's next turn
    assert out.count("skipped") == 1
    assert "✗ #6 model error after 0.84s: ChatNodeError: no reply from chat node 'gpt'" in out
    assert "✗ #6 timed out after 0.84s: no result within 60s" in out


def test_agent_filter_and_malformed_records():
    feed = ActivityFeed({"alice"})
    raw, hdrs = run_records("bob", "r1", seq=1)[-1]
    assert feed.on_activity(raw, hdrs, T0) == []
    assert feed.on_decision(decision("bob", "started", 1)) == []
    assert feed.on_activity(b"{not json", headers("alice", "r2"), T0) == []
    assert feed.on_activity(b'{"context": 5}', headers("alice", "r3"), T0) == []
    assert feed.on_activity(raw, [("x-calf-wire", b"step"), ("x-calf-emitter", b"alice")], T0) == []
    raw, hdrs = run_records("alice", "r4", seq=1)[-1]
    assert len(feed.on_activity(raw, hdrs, T0)) == 5


def test_lines_fit_80_columns_and_long_bodies_wrap_under_themselves():
    feed = ActivityFeed()
    long = "x" * 300
    history = [
        prompt(1),
        response(
            text("I think " + " ".join(["BTC looks strong"] * 20)), call("calculator", {"expression": long}, "c1")
        ),
    ]
    out = render(feed.on_activity(envelope(history), headers("a-very-long-agent-name", "r1"), T0), width=80)
    lines = out.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert lines[0].startswith("12:00:00 a-very-lo…")
    assert sum(line.startswith("12:00:00 a-very-lo…") for line in lines) == 2
    continued = [line for line in lines if not line.startswith("12:00:00")]
    assert len(continued) > 5 and all(line.startswith(" " * 22) and line[22] != " " for line in continued), out


def test_result_and_argument_formatting():
    assert (
        format_args('{"product_id": "SOL-USD", "side": "sell", "quantity": 1.5}')
        == "product_id=SOL-USD, side=sell, quantity=1.5"
    )
    assert format_args("{}") == "" and format_args({}) == ""
    assert format_args("not json") == "not json"
    assert describe_result("error: unknown name 'x'") == ("error: unknown name 'x'", True)
    assert describe_result("42.5") == ("42.5", False)
    assert describe_result({"status": "error", "error": "the tool failed: boom"}) == ("the tool failed: boom", True)
    held = {
        **PORTFOLIO,
        "cash": 92000.0,
        "total_value": 99990.0,
        "return_pct": -0.01,
        "positions": [{"product_id": "BTC-USD", "quantity": 0.0822}],
    }
    assert describe_result(held) == ("value $99,990.00, cash $92,000.00, return -0.01%, holding 0.0822 BTC", False)
