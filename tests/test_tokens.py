"""Tokens and dollars: usage read from provider responses, priced, carried by the chat node's reply,
summed per router turn onto the Decision, and totalled per agent by the tools process's export."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from arena import fmt
from arena import kafka as k
from arena.chat import ChatReply, RemoteChatModel, TokenUsage, provider_model, usage_of
from arena.compat.vendored_pydantic_ai import ModelResponse, RequestUsage, TextPart
from arena.config import MARKET_TOPIC, KafkaSettings
from arena.decisions import Decision
from arena.portfolio import INITIAL_CASH
from arena.pricing import NOTIONAL_PRICE, Pricer
from arena.router import Router
from tests.support.agents import model_stack
from tests.support.records import chromium, tools_state, turn
from tests.test_chat import PARAMS, first_turn, in_process_node
from tests.test_router import snapshot

RUN = uuid.uuid4().hex[:6]

# gpt-4o-mini's published price, USD per million tokens (openai.com/api/pricing): input, cached input, output
GPT_4O_MINI = (0.15, 0.075, 0.60)


def response(model: str, usage: RequestUsage) -> ModelResponse:
    return ModelResponse(parts=[TextPart("ok")], usage=usage, model_name=model)


# ------------------------------------------------------------------------------------------- unit


def test_usage_is_read_from_the_response_with_reasoning_and_cached_tokens():
    r = response(
        "x",
        RequestUsage(input_tokens=1_200, output_tokens=340, cache_read_tokens=1_000, details={"reasoning_tokens": 200}),
    )
    u = usage_of(r)
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cached_tokens, u.calls) == (
        1_200,
        340,
        200,
        1_000,
        1,
    )
    assert u.cost_usd is None and u.price == ""  # no pricer: unknown, not 0
    assert usage_of(response("x", RequestUsage())).input_tokens == 0  # a provider that reports nothing


def test_an_openai_response_reporting_zero_reasoning_tokens_keeps_its_usage():
    """OpenAI reports completion_tokens_details on every response; the vendored pydantic-ai with the
    installed genai-prices then loses the whole usage, which the chat node's model reads back."""
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
    })  # fmt: skip
    u = provider_model("gpt-4o-mini", api_key="k")._map_usage(completion)
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.details.get("reasoning_tokens")) == (900, 40, 0, 0)


def test_cost_of_a_known_model_an_unknown_one_flags_and_the_offline_models():
    usage = RequestUsage(input_tokens=1_200, output_tokens=340, cache_read_tokens=1_000)
    known = usage_of(
        response("gpt-4o-mini-2024-07-18", usage), Pricer("gpt-4o-mini", base_url="https://api.openai.com/v1")
    )
    p_in, p_cached, p_out = GPT_4O_MINI
    assert (
        known.cost_usd == pytest.approx((200 * p_in + 1_000 * p_cached + 340 * p_out) / 1e6) and known.price == "table"
    )
    unknown = usage_of(response("my-local-llama", usage), Pricer("my-local-llama", base_url="http://127.0.0.1:8000/v1"))
    assert unknown.cost_usd is None and unknown.price == ""
    flags = Pricer("gpt-4o-mini", price_in=2.0, price_out=8.0)  # flags win over the table, cached input at full price
    assert usage_of(response("gpt-4o-mini", usage), flags).cost_usd == pytest.approx((1_200 * 2 + 340 * 8) / 1e6)
    assert (
        usage_of(response("my-local-llama", usage), Pricer("m", price_in=0, price_out=0)).cost_usd == 0.0
    )  # free, said so
    offline = usage_of(response("momentum", usage), Pricer("momentum"))
    assert (
        offline.cost_usd == pytest.approx((1_200 * NOTIONAL_PRICE[0] + 340 * NOTIONAL_PRICE[1]) / 1e6)
        and offline.price == "notional"
    )
    assert "notional" in Pricer("slow-2-momentum").describe() and "unknown" in Pricer("my-local-llama").describe()
    with pytest.raises(ValueError, match="both"):
        Pricer("m", price_in=1.0)


def test_usage_sums_and_an_unpriced_call_makes_the_sum_unknown():
    a = TokenUsage(
        input_tokens=100, output_tokens=10, reasoning_tokens=4, cached_tokens=50, cost_usd=0.5, price="flags"
    )
    b = TokenUsage(input_tokens=200, output_tokens=20, cost_usd=0.25, price="flags")
    s = a + b
    assert (s.input_tokens, s.output_tokens, s.reasoning_tokens, s.cached_tokens, s.calls, s.cost_usd) == (
        300,
        30,
        4,
        50,
        2,
        0.75,
    )
    assert (s + TokenUsage(input_tokens=1)).cost_usd is None


@pytest.mark.parametrize(
    "bad", [{"input_tokens": -1}, {"output_tokens": 10**13}, {"cost_usd": -0.01}, {"cost_usd": "NaN"}]
)
def test_reply_usage_is_validated(bad):
    reply = {"request_id": "r", "chat_node": "n", "replica": "h:1", "kind": "response"}
    ChatReply.model_validate_json(json.dumps({**reply, "usage": {"input_tokens": 5, "cost_usd": 0.1}}))
    with pytest.raises(ValidationError):
        ChatReply.model_validate_json(json.dumps({**reply, "usage": bad}))


@pytest.mark.parametrize("bad", [{"tokens_in": -1}, {"tokens_out": 10**13}, {"model_calls": -1}, {"cost_usd": -1.0}])
def test_decision_usage_is_validated(bad):
    turn = {"agent": "a", "run_id": "r", "tick_seq": 1, "tick_published_at": "2026-01-01T00:00:00Z", "status": "done"}
    assert Decision.model_validate(turn).cost_usd is None  # no calls: no cost, and not 0
    with pytest.raises(ValidationError):
        Decision.model_validate({**turn, **bad})


# -------------------------------------------------------------------- through a real chat node


class _Provider(BaseHTTPRequestHandler):
    """An OpenAI-compatible provider that bills fixed, known usage (with cached and reasoning tokens)."""

    USAGE = {
        "prompt_tokens": 1_234,
        "completion_tokens": 321,
        "total_tokens": 1_555,
        "prompt_tokens_details": {"cached_tokens": 1_000},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "holding"}, "finish_reason": "stop"}
                ],
                "usage": self.USAGE,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


async def replies_on(kafka: KafkaSettings, model: RemoteChatModel):
    """A reader of `model`'s reply topic from now on: what the chat node sent, as the wire carried it."""
    await model.start()  # creates the topic
    consumer = k.consumer(kafka, group_id=None)
    await consumer.start()
    tps = [TopicPartition(model.reply_topic, p) for p in await model._producer.partitions_for(model.reply_topic)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return consumer


async def read_responses(consumer, timeout: float = 20.0) -> list[ChatReply]:
    """Every "response" reply on the topic up to its current end (the model read them all already)."""
    end = await consumer.end_offsets(list(consumer.assignment()))
    got: list[ChatReply] = []
    async with asyncio.timeout(timeout):
        while [tp for tp, offset in end.items() if await consumer.position(tp) < offset]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got += [
                    r
                    for rec in records
                    if rec.value and (r := k.decode_record(ChatReply, rec)) and r.kind == "response"
                ]
    return got


async def one_reply(kafka, provider, node: str, model_id: str) -> ChatReply:
    """The one response of a chat node serving `model_id` to a first turn."""
    model = RemoteChatModel(node, kafka, timeout_s=20)
    async with in_process_node(node, kafka, provider, model_id=model_id, max_retries=0):
        consumer = await replies_on(kafka, model)
        try:
            await model.request(first_turn(), None, PARAMS)
            (reply,) = await read_responses(consumer)
        finally:
            await consumer.stop()
            await model.stop()
    return reply


async def test_a_reply_carries_the_providers_usage_and_its_published_price(broker, kafka, provider):
    reply = await one_reply(kafka, provider, f"tok-known-{RUN}", "gpt-4o-mini")
    u = reply.usage
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == (1_234, 321, 1_000, 200)
    p_in, p_cached, p_out = GPT_4O_MINI
    assert u.cost_usd == pytest.approx((234 * p_in + 1_000 * p_cached + 321 * p_out) / 1e6) and u.price == "table"


async def test_an_unknown_models_cost_is_unknown_not_zero(broker, kafka, provider):
    reply = await one_reply(kafka, provider, f"tok-unknown-{RUN}", "my-local-llama")
    assert reply.usage.input_tokens == 1_234 and reply.usage.cost_usd is None


async def test_a_router_turn_sums_its_model_calls_and_the_export_totals_them(broker, kafka, tmp_path):
    """The policy server (plausible usage), a chat node priced by --price-in/--price-out, the tools process
    and a router: one momentum turn (portfolio, trades, answer: several model calls) puts the sum of its
    replies' usage on its Decision, and the tools process's export carries that agent's totals."""
    node, agent = f"tok-{RUN}", f"tok_{RUN}"
    export = tmp_path / "export.json"
    prices = ("--price-in", "2", "--price-out", "8")
    policy, chat, tools = model_stack(
        node, "momentum", tmp_path / "ledger.db", chat_args=prices, tools_args=("--export", str(export))
    )
    model = RemoteChatModel(node, kafka, timeout_s=30, instance_id=f"tok-router-{RUN}")
    decisions: list[Decision] = []
    router = Router(
        name=agent,
        system_prompt="Trade the momentum.",
        model_client=model,
        kafka=kafka,
        chat_node=node,
        strategy="momentum",
        turn_timeout_s=60,
        on_decision=decisions.append,
    )
    producer = k.producer(kafka)
    consumer = None
    stop = asyncio.Event()
    running = None
    try:
        for p in (policy, chat, tools):
            await asyncio.to_thread(p.wait_ready, 120)
        assert "token prices: $2 in / $8 out per million tokens" in chat.output
        consumer = await replies_on(kafka, model)
        await asyncio.gather(router.start(), producer.start())
        running = asyncio.create_task(router.run(stop))
        await producer.send_and_wait(MARKET_TOPIC, k.encode(snapshot(1, jump=1.02)))  # momentum buys on a 2% jump
        async with asyncio.timeout(90):
            while not any(d.status != "started" for d in decisions):
                await asyncio.sleep(0.1)
        (turn,) = [d for d in decisions if d.status != "started"]
        assert turn.status == "done", turn
        replies = await read_responses(consumer)  # every answer of the turn's calls, as the chat node sent it
        assert turn.model_calls == len(replies) >= 3  # portfolio, trades, the answer
        assert turn.tokens_in == sum(r.usage.input_tokens for r in replies) > 0
        assert turn.tokens_out == sum(r.usage.output_tokens for r in replies) > 0
        assert turn.cost_usd == pytest.approx((turn.tokens_in * 2 + turn.tokens_out * 8) / 1e6)
        assert all(r.usage.price == "flags" for r in replies)
    finally:
        stop.set()
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)
        await router.stop()
        await producer.stop()
        if consumer is not None:
            await consumer.stop()
        tools.stop(signal.SIGINT, timeout=30)  # writes the export on its way out
        chat.stop()
        policy.stop()
    row = next(a for a in json.loads(export.read_text())["agents"] if a["name"] == agent)
    assert (row["model_calls"], row["tokens_in"], row["tokens_out"]) == (
        turn.model_calls,
        turn.tokens_in,
        turn.tokens_out,
    )
    assert row["tokens"] == turn.tokens_in + turn.tokens_out
    assert row["model_cost_usd"] == pytest.approx(turn.cost_usd)
    assert row["return_per_dollar"] == pytest.approx((row["total_value"] - INITIAL_CASH) / turn.cost_usd)


def test_the_web_page_shows_tokens_dollars_and_pnl_per_dollar(tmp_path):
    from playwright.sync_api import sync_playwright

    from arena.dashboard import leaderboard, write_export
    from arena.web.report import write

    st, accounts = tools_state()
    for name, cost in (("alice", 0.0042), ("bob", None)):
        st.on_decision(turn(name, "done", 2, 12_000, 345, cost, at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    board = leaderboard(st, accounts)
    export = tmp_path / "leaderboard.json"
    write_export(export, board)
    out = write(tmp_path / "run.html", [export])
    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_context(viewport={"width": 1800, "height": 900}, offline=True).new_page()
        page.goto(out.as_uri())
        page.wait_for_selector("body[data-rendered]")
        heads = page.eval_on_selector_all("#board th", "ths => ths.map(t => t.textContent)")
        assert {"Tokens", "Model $", "P&L/$"} <= set(heads)
        cell = lambda agent, key: page.inner_text(f'#board tr[data-agent="{agent}"] td[data-k="{key}"]')  # noqa: E731
        alice = next(a for a in board["agents"] if a["name"] == "alice")
        assert cell("alice", "tokens") == "12,345" and cell("alice", "model_cost_usd") == "$0.0042"
        per = alice["return_per_dollar"]
        assert cell("alice", "return_per_dollar") == fmt.per_dollar(per)
        assert (
            cell("bob", "tokens") == "12,345"
            and cell("bob", "model_cost_usd") == "—"
            and cell("bob", "return_per_dollar") == "—"
        )
        browser.close()
