"""The offline policy server: pure policy logic, then the real server through the OpenAI SDK."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import openai
import pytest

from arena.broker import free_port
from arena.market import Candle, MarketSnapshot, Quote, render_snapshot
from arena.policies import (
    Holdings,
    decide,
    increment,
    parse_market,
    parse_portfolio,
    round_down,
)
from arena.sim.policy import choose_auto
from tests.support import Proc

NOW = 1_764_100_800  # a minute boundary


def _candles(start_price: float, step: float, n: int, seconds: int = 60) -> list[Candle]:
    out = []
    for i in range(n):
        o, c = start_price + step * i, start_price + step * (i + 1)
        out.append(
            Candle(
                start=NOW - (n - i) * seconds,
                open=o,
                high=max(o, c) * 1.001,
                low=min(o, c) * 0.999,
                close=c,
                volume=12.5,
            )
        )
    return out


def snapshot(btc_step: float = 100.0, fart_step: float = -0.005, sol_stale: bool = True) -> MarketSnapshot:
    """BTC trending up, FARTCOIN trending down, SOL stale (and trending up, to tempt a policy)."""
    btc_last = 99_000 + btc_step * 20
    fart_last = 0.9 + fart_step * 20
    return MarketSnapshot(
        seq=42,
        quotes={
            "BTC-USD": Quote(product_id="BTC-USD", price=btc_last, best_bid=btc_last - 0.5, best_ask=btc_last + 0.5),
            "SOL-USD": Quote(product_id="SOL-USD", price=160.0, best_bid=159.9, best_ask=160.1, stale=sol_stale),
            "FARTCOIN-USD": Quote(
                product_id="FARTCOIN-USD", price=fart_last, best_bid=fart_last - 0.001, best_ask=fart_last + 0.001
            ),
        },
        candles={
            "BTC-USD": {
                "ONE_MINUTE": _candles(99_000, btc_step, 20),
                "FIVE_MINUTE": _candles(99_000, btc_step * 5, 18, 300),
            },
            "SOL-USD": {"ONE_MINUTE": _candles(140, 1.0, 20)},
            "FARTCOIN-USD": {"ONE_MINUTE": _candles(0.9, fart_step, 20)},
        },
    )


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_portfolio",
            "description": "your account",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "execute_trade",
            "description": "trade",
            "parameters": {
                "type": "object",
                "properties": {
                    "product_id": {"type": "string"},
                    "side": {"enum": ["buy", "sell"], "type": "string"},
                    "quantity": {"type": "number"},
                },
                "required": ["product_id", "side", "quantity"],
            },
        },
    },
]

DESK_PORTFOLIO = {
    "agent": "alice",
    "cash": 90_000.0,
    "positions": [{"product_id": "FARTCOIN-USD", "quantity": 1000.0, "avg_cost": 0.85}],
    "total_value": 90_800.0,
}


# ------------------------------------------------------------------------------------ pure logic


def test_parse_market_reads_the_rendered_snapshot():
    market = parse_market("Market update, act now.\n\n" + render_snapshot(snapshot()) + "\n\nRemember the rules.")
    assert market is not None
    assert set(market.quotes) == {"BTC-USD", "SOL-USD", "FARTCOIN-USD"}
    btc = market.quotes["BTC-USD"]
    assert (btc.last, btc.bid, btc.ask, btc.stale) == (101_000.0, 100_999.5, 101_000.5, False)
    assert market.quotes["SOL-USD"].stale
    assert len(market.closes["BTC-USD"]["ONE_MINUTE"]) == 20
    assert len(market.closes["BTC-USD"]["FIVE_MINUTE"]) == 18
    assert market.closes["FARTCOIN-USD"]["ONE_MINUTE"][-1] == pytest.approx(0.8)
    assert [q.product_id for q in market.tradable()] == ["BTC-USD", "FARTCOIN-USD"]
    assert parse_market("no table here") is None


def test_parse_portfolio_json_and_text():
    h = parse_portfolio(json.dumps(DESK_PORTFOLIO))
    assert (h.cash, h.positions, h.known) == (90_000.0, {"FARTCOIN-USD": 1000.0}, True)
    h = parse_portfolio("Cash: $12,345.67\nBTC-USD quantity 0.5 avg cost 90000")
    assert (h.cash, h.positions) == (12_345.67, {"BTC-USD": 0.5})
    h = parse_portfolio("the tool failed")
    assert not h.known and h.positions == {}


def test_quantities_round_down_to_the_increment():
    assert increment("BTC-USD", 100_000) == Decimal("0.00000001")
    assert increment("FARTCOIN-USD", 0.8) == Decimal("0.1")
    assert round_down(0.0792075249, Decimal("0.00000001")) == 0.07920752
    assert round_down(6242.19, Decimal("0.1")) == 6242.1
    assert round_down(0.05, Decimal("0.1")) == 0.0


def _is_multiple(q: float, step: Decimal) -> bool:
    return (Decimal(repr(q)) % step) == 0


@pytest.mark.parametrize("policy", ["momentum", "mean-revert", "random-walk", "hold"])
def test_no_policy_trades_a_stale_product(policy):
    market = parse_market(render_snapshot(snapshot(sol_stale=True)))
    for seed in range(20):
        orders, notes = decide(policy, market, Holdings(100_000.0, {"SOL-USD": 10.0}), f"seed{seed}".encode())
        assert all(o.product_id != "SOL-USD" for o in orders)
        assert any("SOL-USD skipped (stale quote)" in n for n in notes)


def test_momentum_buys_the_uptrend_and_exits_the_downtrend():
    market = parse_market(render_snapshot(snapshot()))
    orders, _ = decide("momentum", market, Holdings(100_000.0, {"FARTCOIN-USD": 1000.0}))
    by_product = {o.product_id: o for o in orders}
    assert by_product["BTC-USD"].side == "buy"
    assert by_product["BTC-USD"].quantity * 101_000.5 == pytest.approx(8_000, rel=1e-3)  # 8% of cash
    assert _is_multiple(by_product["BTC-USD"].quantity, Decimal("0.00000001"))
    assert by_product["FARTCOIN-USD"].side == "sell" and by_product["FARTCOIN-USD"].quantity == 1000.0


def test_mean_revert_buys_a_dip_and_hold_never_trades():
    market = parse_market(render_snapshot(snapshot(btc_step=-100.0)))
    market.quotes["BTC-USD"].bid, market.quotes["BTC-USD"].ask = 85_000.0, 85_001.0  # far below the 5-min mean
    orders, _ = decide("mean-revert", market, Holdings(50_000.0, {}))
    assert [(o.product_id, o.side) for o in orders if o.product_id == "BTC-USD"] == [("BTC-USD", "buy")]
    assert decide("hold", market, Holdings(50_000.0, {"BTC-USD": 1.0}))[0] == []


def test_random_walk_is_seeded():
    market = parse_market(render_snapshot(snapshot()))
    h = Holdings(100_000.0, {"BTC-USD": 0.1, "FARTCOIN-USD": 100.0})
    a = decide("random-walk", market, h, b"7|alice")
    assert a == decide("random-walk", market, h, b"7|alice")
    assert {str(decide("random-walk", market, h, f"7|agent{i}".encode())[1]) for i in range(10)} != {str(a[1])}


def test_auto_takes_the_first_strategy_keyword_of_the_system_prompt():
    assert choose_auto("You are bob.\n\nYou are a scalper. Shared rules: mind the trend.") == "mean-revert"
    assert choose_auto("You are dave.\n\nRide the trend. Never be a degen.") == "momentum"
    assert choose_auto("You are erin.\n\nBe nice.") == "momentum"  # no keyword: the default


def test_buys_never_spend_more_than_the_cash():
    market = parse_market(render_snapshot(snapshot()))
    orders, _ = decide("momentum", market, Holdings(0.5, {}))
    assert orders == []  # 8% of $0.50 is below the minimum order


def test_offline_models_keep_their_prompts_largest_order_rule():
    """The desk refuses a buy over the strategy's largest-order limit; a policy reading its prompt (as a
    model would) sizes its buys under it instead of being refused every turn."""
    from arena.policies import Order
    from arena.sim.policy import CAP_MARGIN, cap_orders
    from arena.strategies import strategy_prompt

    market = parse_market(render_snapshot(snapshot()))
    holdings = Holdings(90_000.0, {"FARTCOIN-USD": 10_000.0})  # worth 90,000 + 10,000 x 0.799 at the bid
    orders = [
        Order("BTC-USD", "buy", 0.1, "dip"),
        Order("FARTCOIN-USD", "sell", 10_000.0, "exit"),
        Order("BTC-USD", "buy", 0.00001, "tiny"),
    ]
    capped = cap_orders(orders, strategy_prompt("scalper", "You are a scalper."), market, holdings)
    value = 90_000 + 10_000 * market.quotes["FARTCOIN-USD"].bid
    btc_ask = market.quotes["BTC-USD"].ask
    cap = 0.05 * value * (1 - CAP_MARGIN)  # just under, for the impact the desk adds to the ask
    assert capped[0].quantity * btc_ask <= cap < (capped[0].quantity + 1e-8) * btc_ask
    assert _is_multiple(capped[0].quantity, Decimal("0.00000001"))
    assert capped[1] == orders[1]  # sells are not limited
    assert capped[2] == orders[2]  # already under the limit
    assert cap_orders(orders, "You are a scalper. No rules stated.", market, holdings) == orders


# ---------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = Proc("-m", "arena.cli", "policy-server", "--port", str(port), "--seed", "7").wait_ready(30)
    yield proc, f"http://127.0.0.1:{port}/v1"
    assert proc.stop() == 0
    assert "Traceback" not in proc.output


@pytest.fixture
async def client(server):
    c = openai.AsyncOpenAI(base_url=server[1], api_key="sk-test", max_retries=0, timeout=10)
    yield c
    await c.close()


PROMPT = render_snapshot(snapshot())  # rendered once: the prompt carries the time, replays must be identical


def conversation(system: str = "You are alice.\n\nTrade the momentum.") -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": PROMPT}]


async def play(client, model: str, system: str | None = None) -> tuple[list, list[dict]]:
    """Run one market turn to the end, answering tool calls like the tools process would."""
    messages = conversation(system) if system else conversation()
    answers = []
    for _ in range(5):
        r = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
        msg = r.choices[0].message
        answers.append(msg)
        if not msg.tool_calls:
            return answers, messages
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            if call.function.name == "get_portfolio":
                result = DESK_PORTFOLIO
            else:
                args = json.loads(call.function.arguments)
                result = {"status": "filled", "product_id": args["product_id"], "quantity": args["quantity"]}
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    raise AssertionError("the policy never finished its turn")


@pytest.mark.processes
async def test_models_are_listed(server):
    async with httpx.AsyncClient() as h:
        data = (await h.get(server[1] + "/models")).json()
    ids = {m["id"] for m in data["data"]}
    assert {
        "momentum",
        "mean-revert",
        "random-walk",
        "hold",
        "auto",
        "error-500",
        "error-429",
        "bad-args",
        "unknown-tool",
    } <= ids


@pytest.mark.processes
async def test_momentum_turn_portfolio_then_trades_then_text(client):
    answers, _ = await play(client, "momentum")
    assert [a.tool_calls[0].function.name if a.tool_calls else "text" for a in answers] == [
        "get_portfolio",
        "execute_trade",
        "text",
    ]
    trades = [json.loads(c.function.arguments) for c in answers[1].tool_calls]
    assert {(t["product_id"], t["side"]) for t in trades} == {("BTC-USD", "buy"), ("FARTCOIN-USD", "sell")}
    for t in trades:
        assert _is_multiple(t["quantity"], increment(t["product_id"], 1.0 if "FART" in t["product_id"] else 1e5))
    ids = [c.id for a in answers if a.tool_calls for c in a.tool_calls]
    assert len(ids) == len(set(ids)) == 3
    assert answers[1].content and "momentum" in answers[1].content  # says why it trades
    assert "placed 2 order(s)" in answers[2].content
    assert answers[2].content and answers[-1].tool_calls is None


@pytest.mark.processes
@pytest.mark.parametrize("model", ["momentum", "mean-revert", "random-walk", "hold", "auto"])
async def test_every_policy_is_deterministic_and_never_trades_stale(client, model):
    first, _ = await play(client, model)
    second, _ = await play(client, model)
    assert [a.model_dump() for a in first] == [a.model_dump() for a in second]
    assert first[0].tool_calls[0].function.name == "get_portfolio"
    assert first[-1].content
    for a in first:
        for c in a.tool_calls or []:
            if c.function.name == "execute_trade":
                assert json.loads(c.function.arguments)["product_id"] != "SOL-USD"


@pytest.mark.processes
async def test_hold_never_trades_and_auto_follows_the_system_prompt(client):
    answers, _ = await play(client, "hold")
    assert [a.tool_calls[0].function.name if a.tool_calls else "text" for a in answers] == ["get_portfolio", "text"]
    auto, _ = await play(client, "auto", "You are bob.\n\nYou are a brainrot degen.")
    assert auto[-1].content.startswith("random-walk")
    auto, _ = await play(client, "auto", "You are carol.\n\nScalp small moves back to the mean.")
    assert auto[-1].content.startswith("mean-revert")


@pytest.mark.processes
async def test_fault_models(client):
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="error-500", messages=conversation())
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="error-429", messages=conversation())
    with pytest.raises(openai.AuthenticationError, match="sk-test"):  # echoes the key, as a careless provider might
        await client.chat.completions.create(model="error-401", messages=conversation())

    r = await client.chat.completions.create(model="bad-args", messages=conversation(), tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "execute_trade" and json.loads(call.function.arguments)["side"] == "hodl"
    r = await client.chat.completions.create(model="unknown-tool", messages=conversation(), tools=TOOLS)
    msg = r.choices[0].message
    assert msg.tool_calls[0].function.name == "launch_rocket"
    follow = [
        *conversation(),
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "Unknown tool name"},
    ]
    r = await client.chat.completions.create(model="unknown-tool", messages=follow, tools=TOOLS)
    assert r.choices[0].message.tool_calls is None and "stopping" in r.choices[0].message.content

    t0 = time.monotonic()
    r = await client.chat.completions.create(model="slow-0.3", messages=conversation(), tools=TOOLS)
    assert time.monotonic() - t0 >= 0.3
    assert r.choices[0].message.tool_calls[0].function.name == "get_portfolio"


@pytest.mark.processes
async def test_bad_requests_get_clear_errors(client, server):
    with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
        await client.chat.completions.create(model="momentum", messages=conversation(), stream=True)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.chat.completions.create(model="gpt-9", messages=conversation())
    with pytest.raises(openai.BadRequestError, match="messages"):
        await client.chat.completions.create(model="momentum", messages=[])
    async with httpx.AsyncClient() as h:
        r = await h.post(server[1] + "/chat/completions", content=b"{not json")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = await client.chat.completions.create(
        model="momentum", messages=[{"role": "user", "content": "hello"}], tools=TOOLS
    )
    assert "no market data" in r.choices[0].message.content


@pytest.mark.processes
async def test_request_bodies_over_the_limit_are_refused_with_413(server, client):
    from arena.sim.policy import MAX_BODY_BYTES

    url = server[1] + "/chat/completions"
    async with httpx.AsyncClient(timeout=30) as h:
        r = await h.post(url, content=b"x" * (MAX_BODY_BYTES + 1))  # declared by Content-Length
        assert r.status_code == 413 and "too large" in r.json()["error"]["message"], r.text

        async def chunks():  # no Content-Length: counted as it streams, refused past the limit
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536

        r = await h.post(url, content=chunks())
        assert r.status_code == 413 and "too large" in r.json()["error"]["message"], r.text
        r = await h.post(url, content=b"[" * 100_000)  # small but nested past the parser: a clear 400
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"], r.text
        body = json.dumps({"model": "momentum", "messages": [{"role": "user", "content": ""}]}).encode()
        fits = body.replace(b'"content": ""', b'"content": "' + b"y" * (MAX_BODY_BYTES - len(body)) + b'"')
        assert len(fits) == MAX_BODY_BYTES
        r = await h.post(url, content=fits)
        assert r.status_code == 200, r.text
    r = await client.chat.completions.create(model="momentum", messages=conversation(), tools=TOOLS)  # still serving
    assert r.choices[0].message.tool_calls[0].function.name == "get_portfolio"
