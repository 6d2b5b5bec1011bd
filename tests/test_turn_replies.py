"""A router's turn fetches only where a reply is due: the agent's inbox while a request or tool results are
on their way, the chat replies while a model call is, calfkit's client inbox for the answer, a fan-out
table at its barrier; every other consumer of the turn stays paused, and a reply nobody predicted is
still taken within one long wait. On the real broker, everything in this process: the router, a chat
node answering with a Python function, the tools."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from arena import kafka as k
from arena import polling
from tests.support import snapshot

pytestmark = pytest.mark.asyncio

RUN = uuid.uuid4().hex[:5]
LONG_MS = 20_000  # the long wait here: no safety-net fetch (one per long wait) falls inside the turn


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def record_fetches(consumer, label: str, log: list) -> None:
    """Every fetch `consumer` sends from now on, as (time, label, its wait)."""
    send = consumer._client.send

    async def recording(node_id, request, *a, **kw):
        if type(request).__name__ == "FetchRequest":
            log.append((time.monotonic(), label, request._max_wait_ms))
        return await send(node_id, request, *a, **kw)

    consumer._client.send = recording


@pytest.mark.timeout(240)
async def test_a_turn_fetches_only_on_the_consumer_a_reply_is_due_on(kafka, tmp_path, monkeypatch):
    from arena.chat import ChatNode, RemoteChatModel
    from arena.compat.vendored_pydantic_ai import ModelResponse, TextPart, ToolCallPart, ToolReturnPart, function_model
    from arena.desk import Desk
    from arena.ledger import Ledger
    from arena.router import Router
    from arena.tools_service import ToolsService

    # Start-up never ends here: the chat node and the tools, in this process too, keep their short waits
    # (a consumer told to follow replies only, as the router's turn consumers are, is not affected).
    pacer = polling.Pacer(idle_ms=LONG_MS, startup_s=3600.0)
    monkeypatch.setattr(polling, "PACER", pacer)
    FunctionModel, _ = function_model()
    calls: list[tuple[float, float]] = []  # each model call's time inside the chat node
    returns: list[list[str]] = []

    async def think(messages, info) -> ModelResponse:
        t0 = time.monotonic()
        await asyncio.sleep(0.4)  # a model call long enough to see who polls during it
        calls.append((t0, time.monotonic()))
        returns.append([str(p.content) for m in messages for p in m.parts if isinstance(p, ToolReturnPart)])
        if len(calls) == 1:  # two calls at once: calfkit's fan-out tables and their barriers
            return ModelResponse(
                parts=[
                    ToolCallPart("calculator", json.dumps({"expression": "1 + 1"}), tool_call_id="c1"),
                    ToolCallPart("calculator", json.dumps({"expression": "2 * 3"}), tool_call_id="c2"),
                ]
            )
        if len(calls) == 2:  # one call: a plain call and its return
            return ModelResponse(parts=[ToolCallPart("calculator", json.dumps({"expression": "7 - 2"}), "c3")])
        return ModelResponse(parts=[TextPart("holding")])

    node_name = f"replies-{RUN}"
    node = ChatNode(node_name, FunctionModel(think, model_name="thinker"), kafka)
    model = RemoteChatModel(node_name, kafka, timeout_s=60, instance_id=f"replies-router-{RUN}")
    router = Router(name=f"replies_{RUN}", system_prompt="hold", model_client=model, kafka=kafka, account_wait_s=0.1)
    service = ToolsService(kafka, Desk(Ledger(str(tmp_path / "ledger.db"))))
    serving = None
    try:
        await asyncio.gather(node.start(), service.start())
        serving = asyncio.create_task(node.serve())
        await router.start()
        turn = router._turn_consumers.consumers
        tables = [c for c in turn if c not in router._inbox + router._reply_inbox + router._whole_turn]
        assert router._inbox and router._reply_inbox and len(tables) == 2, [c.subscription() for c in turn]
        assert router._whole_turn == []  # every turn consumer has a known purpose
        fetches: list[tuple[float, str, int]] = []
        for label, cs in (("inbox", router._inbox), ("reply inbox", router._reply_inbox), ("table", tables)):
            for c in cs:
                record_fetches(c, label, fetches)
        record_fetches(model._consumer, "chat replies", fetches)
        assert all(c.paused() == c.assignment() for c in [*turn, model._consumer])  # between turns: no fetches

        d = await asyncio.wait_for(router.run_turn(snapshot(1)), 120)
        assert d.status == "done" and d.output == "holding", d
        assert len(calls) == 3 and sorted(returns[1]) == ["2", "6"] and returns[2][-1] == "5", returns
        assert all(c.paused() == c.assignment() for c in [*turn, model._consumer])  # dozing again

        # While a model call runs (a fetch sent just before it ends within its short wait) only the chat
        # replies are read: its answer is what comes next.
        short = 0.1
        during = [(t, who) for t, who, _ in fetches for t0, t1 in calls if t0 + short < t < t1]
        assert during and {who for _, who in during} == {"chat replies"}, during
        # Every consumer of the turn fetched (each had a reply due at some point) with the short wait (the
        # chat replies a tenth of the model call's age once that is longer).
        assert {who for _, who, _ in fetches} == {"inbox", "reply inbox", "table", "chat replies"}, fetches
        assert {ms for _, who, ms in fetches if who != "chat replies"} == {10}, fetches
        assert max(ms for _, who, ms in fetches if who == "chat replies") <= 10 + 0.1 * 400 + 10, fetches  # paced
    finally:
        if serving is not None:
            serving.cancel()
        await router.stop()
        await asyncio.gather(node.stop(), service.stop(), return_exceptions=True)


@pytest.mark.timeout(120)
async def test_a_reply_nobody_predicted_is_taken_within_one_long_wait_while_awake(kafka, monkeypatch):
    """A dozing consumer of a turn is resumed for one short fetch every long wait: a record that no phase of
    the turn expected still arrives within about that; dozing, it waits for the next turn."""
    pacer = polling.Pacer(idle_ms=400, quiet_s=0.0, startup_s=0.0)
    monkeypatch.setattr(polling, "PACER", pacer)
    topic = f"replies.{RUN}.{uuid.uuid4().hex[:6]}"
    producer = k.producer(kafka)
    consumer = k.consumer(kafka, topic, group_id=None, latest=True)
    await producer.start()
    await producer.send_and_wait(topic, b"")  # the topic exists before the consumer looks
    await consumer.start()
    await k.positioned([consumer])
    dozing = k.Dozing([consumer])
    dozing.doze()
    got: list[tuple[float, bytes]] = []

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                got.extend((time.monotonic(), r.value) for r in records)

    reader = asyncio.create_task(read())
    try:
        await producer.send_and_wait(topic, b"between turns")
        await asyncio.sleep(1.0)  # nothing reads it while dozing (asserting an absence: a wait is the point)
        assert got == []
        dozing.wake()  # a turn: it is still nobody's expected reply, but the safety net takes it
        woke = time.monotonic()
        await asyncio.wait_for(until(lambda: got), 5)
        assert got[0][1] == b"between turns" and got[0][0] - woke < 0.4 + 0.3, got
        await asyncio.wait_for(until(lambda: consumer.paused() == consumer.assignment()), 5)  # that fetch is over
        sent = time.monotonic()
        await producer.send_and_wait(topic, b"during the turn")
        await asyncio.wait_for(until(lambda: len(got) == 2), 5)
        assert got[1][0] - sent < 0.4 + 0.3, got
        dozing.expect(consumer)  # expected: resumed at once, read with the short wait
        assert not consumer.paused()
        dozing.doze()
        assert consumer.paused() == consumer.assignment() and not pacer.is_due(consumer)
        off = k.Dozing([consumer], polling.Pacer(idle_ms=0))  # the policy off: a turn reads all, as before it
        off.wake()
        assert not consumer.paused()
        off.doze()
        assert consumer.paused() == consumer.assignment()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.gather(consumer.stop(), producer.stop())


@pytest.mark.timeout(120)
async def test_a_model_call_of_seconds_is_polled_less_the_longer_it_runs(kafka, monkeypatch):
    """The chat replies fetch with the short wait at first (an instant model answers within it), then with a
    tenth of the call's age: a call of seconds costs a few dozen fetches, not one per 10 ms."""
    from arena.chat import ChatNode, RemoteChatModel
    from arena.compat.vendored_pydantic_ai import (
        ModelRequest,
        ModelRequestParameters,
        ModelResponse,
        TextPart,
        function_model,
    )

    pacer = polling.Pacer(idle_ms=500, startup_s=3600.0)  # the node's consumer keeps its short wait
    monkeypatch.setattr(polling, "PACER", pacer)
    FunctionModel, _ = function_model()

    async def slow(messages, info) -> ModelResponse:
        await asyncio.sleep(3.0)
        return ModelResponse(parts=[TextPart("done thinking")])

    name = f"paced-{RUN}"
    node = ChatNode(name, FunctionModel(slow, model_name="slow"), kafka)
    model = RemoteChatModel(name, kafka, timeout_s=60, instance_id=f"paced-router-{RUN}")
    serving = None
    try:
        await node.start()
        serving = asyncio.create_task(node.serve())
        await model.start()
        fetches: list[tuple[float, str, int]] = []
        record_fetches(model._consumer, "chat replies", fetches)
        sent = time.monotonic()
        response = await model.request([ModelRequest.user_text_prompt("think")], None, ModelRequestParameters())
        answered = time.monotonic()
        assert response.parts[0].content == "done thinking"
        waits = [(t - sent, ms) for t, _, ms in fetches]
        assert waits[0][1] == 10 and max(ms for _, ms in waits) >= 200, waits  # short at first, longer later
        assert all(ms <= max(10, 0.1 * 1000 * at) + 10 for at, ms in waits), waits  # a tenth of the call's age
        assert len(waits) < 60, waits  # at a fixed 10 ms: about 300
        assert answered - sent < 3.0 + 0.1 * 3.0 + 0.5, waits  # its answer waited at most about a tenth more
        assert model._consumer.paused() == model._consumer.assignment()  # nothing in flight: paused
    finally:
        if serving is not None:
            serving.cancel()
        await model.stop()
        await node.stop()
