"""Chat nodes as real processes on the real broker, backed by the policy server; RemoteChatModel in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid

import pytest
from aiokafka import TopicPartition

from arena import kafka as k
from arena.broker import free_port
from arena.chat import (
    ChatNode,
    ChatNodeError,
    ChatReply,
    RemoteChatModel,
    provider_model,
    redactor,
)
from arena.compat.vendored_pydantic_ai import (
    ModelRequest,
    ModelRequestParameters,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolReturnPart,
    UserPromptPart,
)
from arena.config import chat_request_topic
from arena.market import render_snapshot
from tests.support.procs import Proc
from tests.test_policy_server import DESK_PORTFOLIO, snapshot

SECRET = "sk-test-SECRET-0123456789"
RUN = uuid.uuid4().hex[:6]  # chat node names unique to this session's broker
ALPHA, BROKEN, LEAKY, GHOST, SLEEPY, NOWHERE = (
    f"{n}-{RUN}" for n in ("alpha", "broken", "leaky", "ghost", "sleepy", "nowhere")
)

PARAMS = ModelRequestParameters(
    function_tools=[
        ToolDefinition(
            name="get_portfolio",
            description="your account",
            parameters_json_schema={"type": "object", "properties": {}},
        ),
        ToolDefinition(
            name="execute_trade",
            description="trade",
            parameters_json_schema={
                "type": "object",
                "properties": {
                    "product_id": {"type": "string"},
                    "side": {"type": "string", "enum": ["buy", "sell"]},
                    "quantity": {"type": "number"},
                },
                "required": ["product_id", "side", "quantity"],
            },
        ),
    ],
    output_mode="text",
    allow_text_output=True,
)


def first_turn() -> list:
    return [
        ModelRequest(
            parts=[UserPromptPart(render_snapshot(snapshot()))], instructions="You are alice.\n\nTrade the momentum."
        )
    ]


@pytest.fixture(scope="module")
def nodes(broker):
    """The policy server and every chat node the tests use, started together (start-up dominates)."""
    port = free_port()
    policy = Proc("-m", "arena.cli", "policy-server", "--port", str(port)).wait_ready(30)
    url = f"http://127.0.0.1:{port}/v1"

    def chat(name: str, model: str, *extra: str, env=None) -> Proc:
        return Proc("deploy_chat_node.py", "--name", name, "--model-id", model, "--base-url", url, *extra, env=env)

    key_env = {"OPENAI_API_KEY": SECRET}
    procs = {
        "alpha1": chat(ALPHA, "momentum", env=key_env),
        "alpha2": chat(ALPHA, "momentum", env=key_env),
        "broken": chat(BROKEN, "error-500", "--max-retries", "0", env=key_env),
        "leaky": chat(LEAKY, "error-401", "--max-retries", "0", "--api-key", SECRET, env={"OPENAI_API_KEY": ""}),
    }
    try:
        for p in procs.values():
            p.wait_ready(60)
        yield procs, url
    finally:
        for p in procs.values():  # all at once: each takes a moment to leave its group
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGINT)
        for p in procs.values():
            p.stop()
        policy.stop()


@pytest.fixture
async def remote(kafka):
    models: list[RemoteChatModel] = []

    def make(name: str, **kw) -> RemoteChatModel:
        models.append(RemoteChatModel(name, kafka, **kw))
        return models[-1]

    yield make
    for m in models:
        await m.stop()


async def test_a_full_market_turn_through_a_chat_node(nodes, remote):
    model = remote(ALPHA, timeout_s=20)
    messages = first_turn()

    r1 = await model.request(messages, None, PARAMS)
    assert [(p.tool_name, p.args) for p in r1.parts if isinstance(p, ToolCallPart)] == [("get_portfolio", "{}")]
    assert r1.model_name == "momentum" and model.model_name == "momentum"

    call = r1.parts[-1]
    messages += [
        r1,
        ModelRequest(parts=[ToolReturnPart("get_portfolio", DESK_PORTFOLIO, tool_call_id=call.tool_call_id)]),
    ]
    r2 = await model.request(messages, None, PARAMS)
    trades = [p for p in r2.parts if isinstance(p, ToolCallPart)]
    assert {(t.tool_name, t.args_as_dict()["product_id"], t.args_as_dict()["side"]) for t in trades} == {
        ("execute_trade", "BTC-USD", "buy"),
        ("execute_trade", "FARTCOIN-USD", "sell"),
    }
    assert any(isinstance(p, TextPart) and "momentum" in p.content for p in r2.parts)  # says why

    messages += [
        r2,
        ModelRequest(
            parts=[ToolReturnPart("execute_trade", {"status": "filled"}, tool_call_id=t.tool_call_id) for t in trades]
        ),
    ]
    r3 = await model.request(messages, None, PARAMS)
    assert [type(p) for p in r3.parts] == [TextPart] and "placed 2 order(s)" in r3.parts[0].content

    # Identical conversations give identical decisions, through Kafka too.
    again = await model.request(messages[:3], None, PARAMS)
    assert [(p.tool_name, p.args, p.tool_call_id) for p in again.parts if isinstance(p, ToolCallPart)] == [
        (t.tool_name, t.args, t.tool_call_id) for t in trades
    ]


async def test_replicas_with_one_name_share_the_requests(nodes, remote):
    model = remote(ALPHA, timeout_s=30)
    procs, _ = nodes
    before = {n: procs[n].output.count("served request") for n in ("alpha1", "alpha2")}
    replies = await asyncio.gather(*(model.request(first_turn(), None, PARAMS) for _ in range(24)))
    assert all(isinstance(r.parts[-1], ToolCallPart) for r in replies)
    await asyncio.sleep(0.3)  # the log lines follow the replies
    served = {n: procs[n].output.count("served request") - before[n] for n in ("alpha1", "alpha2")}
    assert sum(served.values()) == 24
    assert all(v > 0 for v in served.values()), served


async def test_a_provider_error_comes_back_quickly_and_clearly(nodes, remote):
    t0 = time.monotonic()
    with pytest.raises(ChatNodeError) as err:
        await remote(BROKEN, timeout_s=30).request(first_turn(), None, PARAMS)
    assert time.monotonic() - t0 < 10
    assert f"chat node '{BROKEN}' (error-500): provider returned HTTP 500" in str(err.value)
    assert err.value.status_code == 500 and err.value.kind == "http" and err.value.retryable


@contextlib.asynccontextmanager
async def in_process_node(name: str, kafka, base_url: str, model_id: str = "momentum", **kw):
    """A ChatNode served from the test process (same code as deploy_chat_node.py, without a new interpreter)."""
    node = ChatNode(name, provider_model(model_id, base_url=base_url, **kw), kafka, base_url=base_url)
    await node.start()
    serving = asyncio.create_task(node.serve())
    try:
        yield node
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await node.stop()


async def test_an_unreachable_provider_comes_back_quickly_and_clearly(broker, kafka, remote):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with in_process_node(NOWHERE, kafka, dead, max_retries=1):
        t0 = time.monotonic()
        with pytest.raises(
            ChatNodeError,
            match=rf"chat node '{NOWHERE}' \(momentum\): cannot reach the provider at http://127.0.0.1:\d+/v1",
        ):
            await remote(NOWHERE, timeout_s=30).request(first_turn(), None, PARAMS)
        assert time.monotonic() - t0 < 15


async def test_a_slow_provider_times_out_at_the_router(nodes, kafka, remote):
    async with in_process_node(SLEEPY, kafka, nodes[1], model_id="slow-5", max_retries=0) as node:
        t0 = time.monotonic()
        with pytest.raises(ChatNodeError) as err:
            await remote(SLEEPY, timeout_s=1.0).request(first_turn(), None, PARAMS)
        assert 1.0 <= time.monotonic() - t0 < 3
        assert (
            str(err.value)
            == f"chat node '{SLEEPY}' took the request but sent no answer within 1s (provider too slow, or the node stopped)"
        )
        assert err.value.kind == "timeout"
        await asyncio.sleep(1.5)  # the node gives up on the provider too, at the router's deadline
        assert node.failed == 1


async def test_a_missing_chat_node_times_out_with_a_clear_message(broker, remote):
    t0 = time.monotonic()
    with pytest.raises(ChatNodeError) as err:
        await remote(GHOST, ack_timeout_s=1.5).request(first_turn(), None, PARAMS)
    assert (
        str(err.value)
        == f"no reply from chat node '{GHOST}' within 1.5s — is deploy_chat_node.py --name {GHOST} running?"
    )
    assert err.value.kind == "unavailable"
    assert time.monotonic() - t0 < 6


async def test_the_api_key_never_leaves_the_chat_node(nodes, remote):
    # error-401 echoes the caller's key in its error body, as a careless provider would.
    with pytest.raises(ChatNodeError) as err:
        await remote(LEAKY, timeout_s=30).request(first_turn(), None, PARAMS)
    assert "HTTP 401" in str(err.value) and "check the API key" in str(err.value)
    assert "SECRET" not in str(err.value)
    procs, _ = nodes
    assert "visible to other users" in procs["leaky"].output  # --api-key on argv is warned about
    await remote(ALPHA).request(first_turn(), None, PARAMS)  # make sure the others logged something too
    for name, proc in procs.items():
        assert "SECRET" not in proc.output, name


def test_redactor_removes_keys():
    redact = redactor("my-secret-value")
    assert redact("key my-secret-value and sk-proj-abcdef123456 and Bearer sk-x") == "key *** and *** and Bearer sk-x"


async def test_malformed_requests_are_skipped_and_the_node_serves_on(nodes, remote, kafka):
    producer = k.producer(kafka)
    await producer.start()
    reply_topic = f"arena.chat.replies.test-{uuid.uuid4().hex[:8]}"
    await producer.send_and_wait(reply_topic, b"")
    consumer = k.consumer(kafka, group_id=None, latest=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(reply_topic, p) for p in await producer.partitions_for(reply_topic)])
        topic = chat_request_topic(ALPHA)
        await producer.send_and_wait(topic, b"\xff not json")
        await producer.send_and_wait(
            topic, json.dumps({"request_id": "r-bad", "reply_to": reply_topic, "messages": 5}).encode()
        )
        # The node tells the sender it could not read the request (it had a reply address)...
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for rec in records:
                    if rec.value:
                        reply = k.decode(ChatReply, rec.value)
        assert (
            reply is not None
            and reply.request_id == "r-bad"
            and reply.kind == "error"
            and reply.error_type == "malformed"
        )
        # ... and serves on.
        r = await remote(ALPHA).request(first_turn(), None, PARAMS)
        assert isinstance(r.parts[-1], ToolCallPart)
        assert any("skipping malformed ChatRequest" in p.output for p in (nodes[0]["alpha1"], nodes[0]["alpha2"]))
    finally:
        await consumer.stop()
        await producer.stop()


async def test_a_calfkit_agent_thinks_through_a_chat_node_and_fails_clearly(nodes, kafka):
    """The seam C2's routers use: calfkit Agent(model_client=RemoteChatModel(...))."""
    from calfkit import (
        Agent,
        Client,
        FanoutConfig,
        KTableReaderTuning,
        NodeFaultError,
        Worker,
    )

    from arena.config import CONSUMER_TUNING

    models = [RemoteChatModel(ALPHA, kafka, timeout_s=20), RemoteChatModel(BROKEN, kafka, timeout_s=20)]
    agents = [
        Agent(f"chat-test-ok-{RUN}", system_prompt="Trade the momentum.", model_client=models[0]),
        Agent(f"chat-test-broken-{RUN}", system_prompt="Trade the momentum.", model_client=models[1]),
    ]
    tuning = FanoutConfig(reader_tuning=KTableReaderTuning(poll_timeout_ms=10, fetch_max_wait_ms=10))
    workers = [
        Worker(
            Client.connect(kafka.bootstrap_servers),
            nodes=[a],
            extra_subscribe_kwargs=dict(CONSUMER_TUNING),
            fanout=tuning,
        )
        for a in agents
    ]
    client = Client.connect(kafka.bootstrap_servers)
    await asyncio.gather(*(w.start() for w in workers))  # group joins in parallel
    try:
        prompt = render_snapshot(snapshot())
        result = await client.agent(f"chat-test-ok-{RUN}").execute(prompt, timeout=30)
        assert result.output.startswith("momentum: no trade.")  # no tools offered: it can only talk
        with pytest.raises(NodeFaultError) as err:
            await client.agent(f"chat-test-broken-{RUN}").execute(prompt, timeout=30)
        report = err.value.report
        assert any(r.exception and r.exception.type == "ChatNodeError" for r in report.walk())
        assert any("provider returned HTTP 500" in (r.message or "") for r in report.walk())
    finally:
        await asyncio.gather(*(w.stop() for w in workers))
        await client.aclose()
        for m in models:
            await m.stop()


def test_chat_nodes_stop_cleanly_on_ctrl_c_and_sigterm(nodes):
    procs, _ = nodes
    assert procs["broken"].stop(signal.SIGINT) == 0
    assert procs["leaky"].stop(signal.SIGTERM) == 0
    for key, name in (("broken", BROKEN), ("leaky", LEAKY)):
        out = procs[key].output
        assert "Traceback" not in out, out
        assert f"chat node '{name}' stopped" in out


def test_chat_node_without_a_key_for_openai_says_so():
    p = Proc("deploy_chat_node.py", "--name", "x", env={"OPENAI_API_KEY": ""})
    assert p.proc.wait(30) == 2
    time.sleep(0.1)
    assert "no API key" in p.output and "OPENAI_API_KEY" in p.output


async def test_a_node_forwards_only_allowed_settings_and_answers_busy_beyond_its_cap(kafka, remote):
    """In-process ChatNode: one provider call at a time and one request in hand at most; the next one is
    told "busy" at once rather than queued. The provider sees only allow-listed model settings."""
    from arena.compat.vendored_pydantic_ai import ModelResponse, function_model

    FunctionModel, _ = function_model()

    gate, seen = asyncio.Event(), []

    async def provider(messages, info) -> ModelResponse:
        seen.append(dict(info.model_settings or {}))
        await gate.wait()
        return ModelResponse(parts=[TextPart("done")])

    name = f"capped-{RUN}"
    node = ChatNode(name, FunctionModel(provider, model_name="gated"), kafka, max_workers=1, max_pending=1)
    await node.start()
    serving = asyncio.create_task(node.serve())
    try:
        model = remote(name, timeout_s=30)
        settings = {
            "temperature": 0.25,
            "extra_body": {"model": "something-expensive"},
            "extra_headers": {"Authorization": "x"},
        }
        first = asyncio.create_task(model.request(first_turn(), settings, PARAMS))
        deadline = time.monotonic() + 20
        while not seen:
            assert time.monotonic() < deadline and not first.done(), "the first request never reached the provider"
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(ChatNodeError) as err:
            await model.request(first_turn(), None, PARAMS)
        assert err.value.kind == "busy" and err.value.retryable and "busy" in str(err.value)
        assert time.monotonic() - t0 < 5  # told at once, not after its timeout
        gate.set()
        assert (await first).parts[0].content == "done"
        assert seen[0]["temperature"] == 0.25 and "extra_body" not in seen[0] and "extra_headers" not in seen[0]
    finally:
        gate.set()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await node.stop()


async def test_a_request_sent_before_its_chat_node_joined_is_served(kafka, remote):
    """Every part of an arena starts at once: a router's first request can reach the topic before the
    chat node's group has joined. The node's first start reads from the earliest request."""
    from arena.compat.vendored_pydantic_ai import ModelResponse, function_model

    FunctionModel, _ = function_model()

    async def provider(messages, info) -> ModelResponse:
        return ModelResponse(parts=[TextPart("late, but served")])

    name = f"late-{RUN}"
    pending = asyncio.create_task(remote(name, timeout_s=40, ack_timeout_s=40).request(first_turn(), None, PARAMS))
    reader = k.consumer(kafka, chat_request_topic(name), group_id=None, latest=False)
    await reader.start()
    try:  # the request is on the topic before any node of that name exists
        deadline = time.monotonic() + 20
        while not any(r.value for rs in (await reader.getmany(timeout_ms=200)).values() for r in rs):
            assert time.monotonic() < deadline and not pending.done(), "the request never reached its topic"
    finally:
        await reader.stop()
    node = ChatNode(name, FunctionModel(provider, model_name="late"), kafka)
    await node.start()
    serving = asyncio.create_task(node.serve())
    try:
        reply = await asyncio.wait_for(pending, 30)
        assert reply.parts[0].content == "late, but served"
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await node.stop()


async def test_a_chat_node_polls_short_while_its_provider_thinks_and_just_after(kafka, remote, monkeypatch):
    """A real model takes seconds; the turn's next request follows the reply, past the quiet window after
    the request: the node stays short from the request until the quiet window after its reply."""
    from arena import polling
    from arena.compat.vendored_pydantic_ai import ModelResponse, function_model

    FunctionModel, _ = function_model()
    clock = [0.0]
    pacer = polling.Pacer(idle_ms=1000, quiet_s=1.0, startup_s=0.0, clock=lambda: clock[0])
    monkeypatch.setattr(polling, "PACER", pacer)
    gate, thinking = asyncio.Event(), asyncio.Event()

    async def provider(messages, info) -> ModelResponse:
        thinking.set()
        await gate.wait()
        return ModelResponse(parts=[TextPart("thought")])

    name = f"thinker-{RUN}"
    node = ChatNode(name, FunctionModel(provider, model_name="slow"), kafka)
    await node.start()
    serving = asyncio.create_task(node.serve())
    try:
        answer = asyncio.create_task(remote(name, timeout_s=30).request(first_turn(), None, PARAMS))
        await asyncio.wait_for(thinking.wait(), 20)
        clock[0] += 30  # the provider thinks for 30 s
        assert pacer.wait_with(10) == 10
        gate.set()
        assert (await answer).parts[0].content == "thought"
        clock[0] += 0.5  # the router's tool calls, then its next request
        assert pacer.wait_with(10) == 10
        clock[0] += 1.0
        assert pacer.wait_with(10) == 1000  # nothing more came: long again
    finally:
        gate.set()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await node.stop()
