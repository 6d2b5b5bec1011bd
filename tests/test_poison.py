"""Poison on the bus: records that parse but mean nothing valid (zone-less or far-future times, a crossed
book, a reply topic that is no reply topic, made-up names), each produced with a plain Kafka producer to
the topic that carries it, against real processes on the real broker. No reader may stop, fill at a
forged price or count a forged sample; each rejection is one log line naming topic, partition, offset and
reason. First the wire models' rules at their boundaries (no broker)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from arena import kafka as k
from arena.broker import free_port
from arena.chat import ChatReply, ChatRequest, _ReplyAddress, forwarded_settings, redact_url, redactor
from arena.compat.vendored_pydantic_ai import ModelRequest, ModelRequestParameters, UserPromptPart
from arena.config import (
    ACTIVITY_TOPIC,
    DECISIONS_TOPIC,
    HEALTH_TOPIC,
    LEADERBOARD_TOPIC,
    MARKET_TOPIC,
    TRADES_TOPIC,
    KafkaSettings,
    chat_request_topic,
)
from arena.decisions import Decision
from arena.feed import MARKET_KEY
from arena.market import Candle, MarketSnapshot, Quote, utcnow
from arena.metrics import BASELINE_NAME
from arena.portfolio import Fill, Rejection, TradeOutcome
from arena.supervisor import ProcessStatus
from arena.wire import MAX_CANDLES, MAX_FUTURE_SKEW_S, MAX_PRODUCTS, MAX_TEXT
from tests.support.procs import Proc
from tests.test_router import BASE, Watcher, router, snapshot, stop_cleanly


def ON_MODULE_LOOP(test):  # noqa: N802 - a marker, like test_router's
    """On the module's event loop (the arena's), with time to start six processes on a busy machine."""
    return pytest.mark.timeout(600)(pytest.mark.asyncio(loop_scope="module")(test))


RUN = uuid.uuid4().hex[:5]
CHAT = f"poison-{RUN}"
TRADERS = [f"pa_{RUN}", f"pb_{RUN}"]
FORGED = 900_000  # forged snapshots' seqs start here: a router or the tools taking one would show it


def wire(model, **fields):
    """`model` read from the wire (JSON), as every reader reads it."""
    return k.parse(model, json.dumps(fields, default=str).encode())


def naive(t: datetime) -> str:
    return t.replace(tzinfo=None).isoformat()


QUOTE = dict(product_id="BTC-USD", price=100.0, best_bid=99.0, best_ask=101.0)
CANDLE = dict(start=1_700_000_000, open=10.0, high=12.0, low=9.0, close=11.0, volume=0.0)


# ---------------------------------------------------------------------------- the rules, at their edges


def test_times_carry_a_zone_and_are_not_ahead_of_the_reader():
    now = utcnow()
    wire(Quote, **QUOTE, received_at=now + timedelta(seconds=MAX_FUTURE_SKEW_S - 1))
    wire(Quote, **QUOTE, received_at=now - timedelta(days=400))  # a replayed recording is all past
    for bad in (naive(now), now + timedelta(seconds=MAX_FUTURE_SKEW_S + 2)):
        with pytest.raises(ValidationError):
            wire(Quote, **QUOTE, received_at=bad)
        with pytest.raises(ValidationError):
            wire(MarketSnapshot, seq=1, published_at=bad, quotes={})
        with pytest.raises(ValidationError):
            wire(ProcessStatus, name="tools", status="ready", at=bad)
    decision = dict(agent="alice", run_id="r", tick_seq=1, tick_published_at=now, status="done")
    wire(Decision, **decision)
    with pytest.raises(ValidationError):
        wire(Decision, **{**decision, "started_at": naive(now)})
    with pytest.raises(ValidationError):
        wire(
            TradeOutcome,
            trade_id="t",
            agent="alice",
            product_id="BTC-USD",
            side="buy",
            quantity=1,
            price=1,
            executed_at=naive(now),
        )


def test_prices_are_finite_positive_and_the_book_uncrossed():
    wire(Quote, **{**QUOTE, "best_bid": 101.0})  # bid == ask: locked, not crossed
    wire(Quote, **{**QUOTE, "best_bid": None, "best_ask": None})
    wire(Quote, **{**QUOTE, "price": 1e-12})
    for change in ({"price": 0}, {"price": -1}, {"best_bid": 101.5}, {"best_ask": 0}):
        with pytest.raises(ValidationError):
            wire(Quote, **{**QUOTE, **change})
    for text in ('"price": NaN', '"price": Infinity', '"price": 1e400'):
        with pytest.raises(ValidationError):
            Quote.model_validate_json(json.dumps(QUOTE).replace('"price": 100.0', text))
    wire(Candle, **CANDLE)
    wire(Candle, **{**CANDLE, "open": 9.0, "close": 12.0})  # at the low and the high
    for change in ({"high": 8.0}, {"open": 12.5}, {"close": 8.9}, {"volume": -1}, {"low": 0}):
        with pytest.raises(ValidationError):
            wire(Candle, **{**CANDLE, **change})


def test_ids_and_names_have_their_patterns():
    for pid in ("BTC-USD", "FARTCOIN-USD", "1INCH-USDC", "A" * 20 + "-USD"):
        wire(Quote, **{**QUOTE, "product_id": pid})
    for pid in ("btc-usd", "BTC", "BTC_USD", "A" * 21 + "-USD", "BTC-USD\n", ""):
        with pytest.raises(ValidationError):
            wire(Quote, **{**QUOTE, "product_id": pid})
    with pytest.raises(ValidationError):  # a quote filed under another product
        wire(MarketSnapshot, seq=1, quotes={"SOL-USD": QUOTE})
    decision = dict(run_id="r", tick_seq=1, tick_published_at=utcnow(), status="done")
    wire(Decision, agent="a" * 64, **decision)
    for name in ("a" * 65, "a b", "-a", "x\x1b[2J", BASELINE_NAME, ""):
        with pytest.raises(ValidationError):
            wire(Decision, agent=name, **decision)
    fill = dict(trade_id="t", agent="alice", side="buy", quantity=1.0, price=10.0)
    assert isinstance(wire(TradeOutcome, product_id="BTC-USD", **fill), Fill)
    rejected = wire(  # as a rejection was logged before the split: with a price of 0
        TradeOutcome,
        product_id="'doge??'",
        status="rejected",
        reason="unknown product",
        **{**fill, "price": 0.0, "quantity": -5.0},
    )
    assert isinstance(rejected, Rejection) and "price" not in rejected.model_dump()
    for change in ({"product_id": "doge"}, {"price": 0.0}, {"quantity": 0.0}, {"agent": BASELINE_NAME}):
        with pytest.raises(ValidationError):
            wire(TradeOutcome, **{"product_id": "BTC-USD", **fill, **change})


def test_counts_and_sizes_are_bounded():
    quote = lambda i: {**QUOTE, "product_id": f"P{i}-USD"}  # noqa: E731
    wire(MarketSnapshot, seq=1, quotes={f"P{i}-USD": quote(i) for i in range(MAX_PRODUCTS)})
    with pytest.raises(ValidationError):
        wire(MarketSnapshot, seq=1, quotes={f"P{i}-USD": quote(i) for i in range(MAX_PRODUCTS + 1)})
    wire(MarketSnapshot, seq=1, quotes={}, candles={"BTC-USD": {"ONE_MINUTE": [CANDLE] * MAX_CANDLES}})
    with pytest.raises(ValidationError):
        wire(MarketSnapshot, seq=1, quotes={}, candles={"BTC-USD": {"ONE_MINUTE": [CANDLE] * (MAX_CANDLES + 1)}})
    with pytest.raises(ValidationError):
        wire(MarketSnapshot, seq=-1, quotes={})
    decision = dict(agent="alice", run_id="r", tick_seq=1, tick_published_at=utcnow(), status="done")
    wire(Decision, output="x" * MAX_TEXT, **decision)
    with pytest.raises(ValidationError):
        wire(Decision, output="x" * (MAX_TEXT + 1), **decision)


def test_a_chat_request_names_a_reply_topic_and_carries_a_zoned_time():
    req = ChatRequest(
        request_id="r1",
        chat_node="gpt",
        reply_to="arena.chat.replies.host-1-abc",
        sender="s",
        timeout_s=30,
        messages=[ModelRequest(parts=[UserPromptPart("hi")])],
        parameters=ModelRequestParameters(),
    )
    raw = json.loads(k.encode(req))
    ChatRequest.model_validate_json(json.dumps(raw))
    for change in (
        {"reply_to": "arena.trades"},
        {"reply_to": "arena.chat.replies."},
        {"reply_to": "arena.chat.replies.a/b"},
        {"sent_at": naive(utcnow())},
        {"timeout_s": 0},
        {"chat_node": "a b"},
    ):
        with pytest.raises(ValidationError):
            ChatRequest.model_validate_json(json.dumps({**raw, **change}))
    with pytest.raises(ValidationError):  # nor is an unreadable request answered anywhere else
        _ReplyAddress.model_validate_json(json.dumps({"request_id": "r", "reply_to": "market_data.prices"}))
    with pytest.raises(ValidationError):
        wire(ChatReply, request_id="r", chat_node="gpt", replica="h:1", kind="error", status_code=1000)


def test_snapshot_times_are_capped_at_the_readers_clock():
    now = utcnow()
    ahead = now + timedelta(seconds=3)
    snap = wire(MarketSnapshot, seq=1, published_at=ahead, quotes={"BTC-USD": {**QUOTE, "received_at": ahead}})
    capped = snap.not_after(now)
    assert capped.published_at == now and capped.quotes["BTC-USD"].received_at == now
    assert snap.published_at == ahead  # a copy: the record as received is unchanged
    past = snapshot(1)
    assert past.not_after(utcnow()) is past


def test_only_allowed_model_settings_are_forwarded():
    kept, dropped = forwarded_settings(
        {
            "max_tokens": 100,
            "temperature": 0.2,
            "extra_body": {"model": "o1-pro"},
            "extra_headers": {"Authorization": "x"},
            "temperature_": 1,
            "top_p": 7,
            "timeout": 1,
        }
    )
    assert kept == {"max_tokens": 100, "temperature": 0.2}
    assert sorted(dropped) == ["extra_body", "extra_headers", "temperature_", "timeout", "top_p"]
    assert forwarded_settings(None) == ({}, [])


def test_keys_in_a_url_query_string_are_redacted():
    url = "https://user:pw@example.openai.azure.com/v1?api-version=2024&api-key=abc123secret&x=1"
    assert redact_url(url) == "https://example.openai.azure.com/v1?api-version=2024&api-key=***&x=1"
    text = redactor()(f"cannot reach the provider at {url.replace('user:pw@', '')}: refused; also ?token=t0k3n&sig=s1g")
    assert "abc123secret" not in text and "t0k3n" not in text and "s1g" not in text and "&x=1: refused" in text


Record = namedtuple("Record", "topic partition offset value")


def test_a_rejected_record_is_one_line_naming_topic_partition_offset_and_reason(caplog):
    good = snapshot(1)
    caplog.set_level(logging.WARNING, logger="arena.kafka")
    assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 2, 41, k.encode(good))) == good
    assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 2, 42, k.encode(good)), max_bytes=100) is None
    raw = json.loads(k.encode(good))
    raw["published_at"] = naive(utcnow())
    assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 3, 7, json.dumps(raw).encode())) is None
    assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 3, 8, b"[" * 100_000)) is None  # deep nesting
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert f"on {MARKET_TOPIC} partition 2 offset 42: " in lines[0] and "bytes, over the 100-byte bound" in lines[0]
    assert f"on {MARKET_TOPIC} partition 3 offset 7: published_at: Input should have timezone info" in lines[1]
    assert "partition 3 offset 8" in lines[2]


async def test_a_task_that_keeps_failing_is_restarted_then_given_up_on(caplog):
    runs = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"failure {len(runs)}")

    await k.supervised("flaky", flaky, pause_s=0)
    assert len(runs) == 3 and sum("flaky failed (RuntimeError: failure" in r.getMessage() for r in caplog.records) == 2

    async def broken() -> None:
        raise ValueError("always")

    with pytest.raises(k.TaskFailed, match="broken keeps failing: ValueError: always"):
        await k.supervised("broken", broken, restarts=2, pause_s=0)


# -------------------------------------------------------------------------------------------- the arena


@dataclass
class Arena:
    kafka: KafkaSettings
    watcher: Watcher
    export: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    seq: int = 0
    published: list[int] = field(default_factory=list)  # every real snapshot this module published, in order
    valid_forged: int = 0  # forged snapshots that are valid all the same (they are samples like any other)
    forged: int = FORGED
    producer: AIOKafkaProducer | None = None

    async def real(self) -> int:
        """Publish the next real snapshot (the base prices) as the connector does, in order on its one
        partition (unkeyed, two may reach a reader in either order); returns its seq."""
        self.seq += 1
        await self.watcher.publish(snapshot(self.seq), key=MARKET_KEY)
        self.published.append(self.seq)
        return self.seq

    async def produce(self, topic: str, value: bytes | dict, **kw):
        """A record as any client on the broker could write it; returns where it landed."""
        if isinstance(value, dict):
            value = json.dumps(value, default=str).encode()
        return await self.producer.send_and_wait(topic, value, **kw)

    def forge(self, **changes) -> tuple[int, dict]:
        """A snapshot's JSON at the base prices, for a forger to change."""
        self.forged += 1
        return self.forged, {**json.loads(k.encode(snapshot(self.forged))), **changes}

    async def until(self, predicate, what: str, timeout: float = 120) -> None:
        """Wait for `predicate()`, publishing a real snapshot every 2 s meanwhile (the market goes on)."""
        deadline = time.monotonic() + timeout
        next_tick = 0.0
        while not predicate():
            if time.monotonic() > deadline:
                tail = "; ".join(
                    f"{d.agent} #{d.tick_seq} {d.status} {d.reason[:60]}" for d in self.watcher.decisions[-12:]
                )
                trades = "; ".join(
                    f"{t.agent} {t.status} {t.side} {t.product_id} #{t.tick_seq} {getattr(t, 'reason', '')[:80]}"
                    for t in self.watcher.trades[-8:]
                )
                raise AssertionError(
                    f"timed out waiting for {what}; last decisions: {tail}; last trades: {trades}; dead: {self.dead()}"
                )
            if time.monotonic() >= next_tick:
                await self.real()
                next_tick = time.monotonic() + 2.0
            await asyncio.sleep(0.1)

    def trading_after(self, seq: int) -> bool:
        """Every router finished a turn on a real snapshot after `seq`, and the desk filled an order at the
        quotes of one (the fill's tick_seq: the snapshot its quote came with)."""
        later = {s for s in self.published if s > seq}
        w = self.watcher
        return all(w.of(a, "done", seqs=later) for a in TRADERS) and any(
            isinstance(t, Fill) and t.tick_seq in later for t in w.trades
        )

    def dead(self) -> list[str]:
        return [f"{n} (exit {p.proc.returncode})" for n, p in self.procs.items() if p.proc.poll() is not None]

    def rejected(self, who: str, model: str, md) -> str:
        """The log line `who` wrote about the record at `md` (topic, partition, offset), or ""."""
        needle = f"skipping malformed {model} record on {md.topic} partition {md.partition} offset {md.offset}: "
        return next((line for line in self.procs[who].lines if needle in line), "")

    async def logged(self, who: str, model: str, md, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not (line := self.rejected(who, model, md)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{who} logged no rejection of the {model} at {md.topic}:{md.partition}@{md.offset}:\n"
                    + "\n".join(self.procs[who].lines[-30:])
                )
            await asyncio.sleep(0.1)
        return line


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arena(broker, tmp_path_factory):
    """The policy server, one chat node (random-walk: an order most turns), the tools process (with an
    export), the viewer and two routers. The test is the market connector: it publishes the snapshots."""
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    tmp = tmp_path_factory.mktemp("poison")
    port = free_port()
    a = Arena(kafka, Watcher(kafka), tmp / "export.json")
    a.procs["policy"] = Proc("-m", "arena.cli", "policy-server", "--port", str(port))
    a.procs["chat"] = Proc(
        "deploy_chat_node.py",
        "--name",
        CHAT,
        "--model-id",
        "random-walk",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--max-retries",
        "0",
        env={"OPENAI_API_KEY": "test"},
    )
    a.procs["tools"] = Proc(
        "tools_and_dashboard.py",
        "--no-dashboard",
        "--ledger",
        str(tmp / "ledger.db"),
        "--export",
        str(a.export),
        "--status-every",
        "3600",
        "--connect-timeout",
        "120",
        "--fee-bps",
        "0",  # the baseline's drawdown below is the spread alone
    )
    a.procs["viewer"] = Proc("response_viewer.py")
    a.producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, enable_idempotence=False)
    try:
        for p in list(a.procs.values()):
            p.wait_ready(120)
        for name in TRADERS:
            a.procs[name] = router(name, CHAT)
        for name in TRADERS:
            a.procs[name].wait_ready(120)
        await asyncio.gather(a.watcher.start(), a.producer.start())
        await a.until(lambda: a.trading_after(0), "the first turns and fills")
        yield a
    finally:
        await a.watcher.stop()
        await a.producer.stop()
        try:
            stop_cleanly(*(a.procs[n] for n in TRADERS if n in a.procs))
        finally:
            for name in ("viewer", "tools", "chat", "policy"):
                a.procs[name].stop()
            (tmp / "outputs.txt").write_text("\n\n".join(f"== {n}\n{p.output}" for n, p in a.procs.items()))
            print(f"outputs of every process: {tmp / 'outputs.txt'}")


@ON_MODULE_LOOP
async def test_zoneless_times_on_the_market_are_skipped_and_trading_goes_on(arena):
    seq, raw = arena.forge()
    raw["published_at"] = naive(utcnow())
    for q in raw["quotes"].values():
        q["received_at"] = naive(utcnow())
    start = arena.seq
    md = await arena.produce(MARKET_TOPIC, raw)
    await arena.until(lambda: arena.trading_after(start), "turns and a fill on the snapshots after the zone-less one")
    for who in (*TRADERS, "tools"):
        assert "published_at: Input should have timezone info" in await arena.logged(who, "MarketSnapshot", md)
    assert not arena.watcher.of(TRADERS[0], seqs={seq}) and not arena.watcher.of(TRADERS[1], seqs={seq})
    assert not arena.dead(), arena.dead()


@ON_MODULE_LOOP
async def test_a_forged_crossed_or_future_snapshot_moves_nothing(arena):
    w = arena.watcher
    crossed, raw = arena.forge()  # dated now, a book no exchange shows: bid far above ask
    for pid, q in raw["quotes"].items():
        q.update(price=BASE[pid] * 1.7, best_bid=BASE[pid] * 1.7, best_ask=BASE[pid] * 1.3)
    md_crossed = await arena.produce(MARKET_TOPIC, raw)
    future, raw = arena.forge()  # a plausible-looking book at wild prices, dated an hour ahead
    ahead = (utcnow() + timedelta(hours=1)).isoformat()
    raw["published_at"] = ahead
    for pid, q in raw["quotes"].items():
        q.update(price=BASE[pid] * 1.5, best_bid=BASE[pid] * 1.5, best_ask=BASE[pid] * 1.5001, received_at=ahead)
    md_future = await arena.produce(MARKET_TOPIC, raw)
    start = arena.seq
    # The routers go on with the real snapshots after them (not "not newer than #forged"), and the desk
    # fills at their quotes.
    await arena.until(
        lambda: arena.trading_after(start), "turns and a fill on the real snapshots after the forged ones"
    )
    for who in (*TRADERS, "tools"):
        assert "crossed book" in await arena.logged(who, "MarketSnapshot", md_crossed)
        assert "in the future" in await arena.logged(who, "MarketSnapshot", md_future)
    assert not [
        d
        for d in w.decisions
        if d.tick_seq in (crossed, future) or f"#{crossed}" in d.reason or f"#{future}" in d.reason
    ]
    for t in w.trades:  # every fill at a real price: the base bid or ask
        if isinstance(t, Fill):
            real = BASE[t.product_id] * (1.0001 if t.side == "buy" else 0.9999)
            assert abs(t.price / real - 1) < 1e-9 and t.tick_seq < FORGED, t
    assert not arena.dead(), arena.dead()


@ON_MODULE_LOOP
async def test_a_snapshot_dated_just_ahead_does_not_outrank_the_ones_after_it(arena):
    """Within the skew a time passes the model; the readers cap it at arrival, so the real snapshots
    published after it (but before its date) are still newer."""
    w = arena.watcher
    seq, raw = arena.forge(published_at=(utcnow() + timedelta(seconds=MAX_FUTURE_SKEW_S - 0.5)).isoformat())
    await arena.produce(MARKET_TOPIC, raw)
    arena.valid_forged += 1  # valid: a snapshot like any other, at real prices
    after = []
    for _ in range(3):  # all before the forged snapshot's date
        await asyncio.sleep(1.0)
        after.append(await arena.real())

    def reported() -> bool:
        return all({d.tick_seq for d in w.of(a, "started", "skipped", seqs=set(after))} == set(after) for a in TRADERS)

    await arena.until(reported, "every router's report on the snapshots after the one dated ahead")
    for a in TRADERS:
        outranked = [d for d in w.of(a, "skipped", seqs=set(after[1:])) if f"not newer than #{seq}" in d.reason]
        assert not outranked, outranked
    await arena.until(lambda: arena.trading_after(after[-1]), "turns and a fill after it")


def chat_request(reply_to: str, **changes) -> dict:
    """A request's JSON as a client would write it (any reply topic: the JSON is not checked here)."""
    req = ChatRequest(
        request_id=uuid.uuid4().hex,
        chat_node=CHAT,
        reply_to="arena.chat.replies.x",
        sender=f"test-{RUN}",
        timeout_s=60,
        messages=[ModelRequest(parts=[UserPromptPart("Say hello.")])],
        parameters=ModelRequestParameters(),
    )
    return {**json.loads(k.encode(req)), "reply_to": reply_to, **changes}


@ON_MODULE_LOOP
async def test_a_chat_node_answers_only_on_reply_topics_and_serves_on_after_a_zoneless_request(arena):
    mine, victim = f"arena.chat.replies.poison-test-{RUN}", f"arena.victim-{RUN}"
    for topic in (mine, victim):  # both exist, so anything written to them can be read back
        await arena.produce(topic, b"")
    reader = AIOKafkaConsumer(
        bootstrap_servers=arena.kafka.bootstrap_servers, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await reader.start()
    try:
        parts = [TopicPartition(t, p) for t in (mine, victim) for p in await arena.producer.partitions_for(t)]
        reader.assign(parts)
        await reader.seek_to_beginning(*parts)
        request_topic = chat_request_topic(CHAT)
        key = f"poison-{RUN}".encode()  # one partition: the node takes these in order
        elsewhere = await arena.produce(request_topic, chat_request(victim), key=key)
        bad = chat_request(mine, sent_at=naive(utcnow()))
        zoneless = await arena.produce(request_topic, bad, key=key)
        good = chat_request(mine)
        await arena.produce(request_topic, good, key=key)
        replies: dict[str, list] = {mine: [], victim: []}
        deadline = time.monotonic() + 60
        while not any(r.request_id == good["request_id"] and r.kind != "accepted" for r in replies[mine]):
            assert time.monotonic() < deadline, (
                f"no answer to the request after the poisoned ones; chat node: {arena.procs['chat'].output[-2000:]}"
            )
            for tp, records in (await reader.getmany(timeout_ms=200)).items():
                replies[tp.topic] += [ChatReply.model_validate_json(r.value) for r in records if r.value]
        # It served the next request, never wrote to the topic a request named, and said why for each.
        assert replies[victim] == []
        # the zone-less one is told at once that it could not be read (it had a valid address)
        assert [(r.kind, r.error_type) for r in replies[mine] if r.request_id == bad["request_id"]] == [
            ("error", "malformed")
        ]
        assert {r.request_id for r in replies[mine]} == {good["request_id"], bad["request_id"]}
        assert "reply_to: String should match pattern" in await arena.logged("chat", "ChatRequest", elsewhere)
        assert "sent_at: Input should have timezone info" in await arena.logged("chat", "ChatRequest", zoneless)
    finally:
        await reader.stop()
    start = arena.seq
    await arena.until(lambda: arena.trading_after(start), "turns through the chat node after it")
    assert not arena.dead(), arena.dead()


@ON_MODULE_LOOP
async def test_poison_on_decisions_trades_health_and_activity_stops_no_reader(arena):
    w, now = arena.watcher, utcnow()
    ghost, dead = f"router ghost-{RUN}", f"router dead-{RUN}"
    decision = dict(
        agent=TRADERS[0],
        run_id="forged",
        tick_seq=1,
        tick_published_at=now.isoformat(),
        status="done",
        started_at=now.isoformat(),
        finished_at=now.isoformat(),
        output="forged",
    )
    sent = {
        # a turn whose start has no zone (its latency cannot be computed), and one from the future
        "zoneless decision": (DECISIONS_TOPIC, "Decision", {**decision, "started_at": naive(now)}),
        "future decision": (
            DECISIONS_TOPIC,
            "Decision",
            {**decision, "finished_at": (now + timedelta(days=1)).isoformat()},
        ),
        "unnamed decision": (DECISIONS_TOPIC, "Decision", {**decision, "agent": "x\x1b[2Jy"}),
        "zoneless trade": (
            TRADES_TOPIC,
            None,
            dict(
                trade_id="t",
                agent=TRADERS[0],
                product_id="BTC-USD",
                side="buy",
                quantity=1,
                price=1,
                executed_at=naive(now),
            ),
        ),
        "nan trade": (
            TRADES_TOPIC,
            None,
            b'{"trade_id": "t", "agent": "a", "product_id": "BTC-USD", "side": "buy", "quantity": NaN}',
        ),
        # a report with a zone, then one without for the same process (they are compared), then a future one
        "health": (HEALTH_TOPIC, None, dict(name=ghost, status="ready", at=now.isoformat())),
        "zoneless health": (HEALTH_TOPIC, "ProcessStatus", dict(name=ghost, status="starting", at=naive(now))),
        "future health": (
            HEALTH_TOPIC,
            "ProcessStatus",
            dict(name=ghost, status="ready", at=(now + timedelta(days=1)).isoformat()),
        ),
    }
    where = {}
    for label, (topic, _, value) in sent.items():
        where[label] = await arena.produce(topic, value)
    # an agent step from an agent named like no agent, and one that is not an envelope
    await arena.produce(ACTIVITY_TOPIC, b"{}", headers=[("x-calf-emitter", b"x\x1b[2Jy"), ("correlation_id", b"c")])
    await arena.produce(
        ACTIVITY_TOPIC, b'{"context": 1}', headers=[("x-calf-emitter", TRADERS[0].encode()), ("correlation_id", b"c")]
    )
    # Then a real report: the tools still read the health topic ...
    await arena.produce(
        HEALTH_TOPIC, ProcessStatus(name=dead, status="exited", detail="exit 3").model_dump_json().encode()
    )
    tools = arena.procs["tools"]
    await arena.until(
        lambda: f"{dead} exited unexpectedly (exit 3)" in tools.output, "the tools' report of the real exit"
    )
    # ... and the decisions topic, and the viewer shows the turns after the poison.
    start = arena.seq
    await arena.until(lambda: arena.trading_after(start), "turns after the poison")
    viewer = arena.procs["viewer"]
    later = {d.tick_seq for d in w.decisions if d.status == "done" and d.tick_seq > start}
    await arena.until(lambda: any(f"#{s} done in" in viewer.output for s in later), "the viewer's line of a later turn")
    for label, (topic, model, _) in sent.items():
        if model is not None:
            readers = ["viewer", "tools"] if topic == DECISIONS_TOPIC else ["tools"]
            for who in readers:
                await arena.logged(who, model, where[label])
    assert "emitter 'x\\x1b[2Jy' is not an agent name" in viewer.output
    assert "\x1b[2J" not in viewer.output and "forged" not in viewer.output
    assert not arena.dead(), arena.dead()
    assert not [n for n, p in arena.procs.items() if "Traceback" in p.output]


@ON_MODULE_LOOP
async def test_the_leaderboard_never_saw_a_forged_snapshot(arena):
    """Last: the routers, then the tools stop, and the export tells what the tools' state and metrics took."""
    w = arena.watcher
    last = await arena.real()
    await arena.until(
        lambda: all(w.of(a, "done", "skipped", seqs={last}) for a in TRADERS), "the turns on the last snapshot"
    )
    stop_cleanly(*(arena.procs[n] for n in TRADERS))
    # The tools have taken the last snapshot and every turn when their published leaderboard says so.
    # The watcher may still be reading decisions the routers sent as they stopped: compare with its
    # count as it is on each look.
    board = k.consumer(arena.kafka, LEADERBOARD_TOPIC, group_id=None, latest=False)
    await board.start()
    try:
        # The session's broker keeps every board each earlier tools process published: read only the
        # newest (each partition's last records; a board shares its partition with some samples).
        await k.positioned([board])
        parts = sorted(board.assignment())
        for tp, end in (await board.end_offsets(parts)).items():
            board.seek(tp, max(0, end - 200))
        deadline = time.monotonic() + 60
        latest = None
        while True:
            assert time.monotonic() < deadline, (
                "\n".join(  # a str: pytest would clip a tuple's repr
                    (
                        "the tools never published a leaderboard with the last snapshot and turns",
                        f"feed: {latest and latest['feed']}",
                        f"turns: {latest and {a['name']: a['turns'] for a in latest['agents']}}",
                        f"done: { {a: len(w.of(a, 'done')) for a in TRADERS} }",
                        f"published {arena.published[-5:]}",
                        arena.procs["tools"].output[-4000:],
                    )
                )
            )
            records = [
                r for rs in (await board.getmany(timeout_ms=500)).values() for r in rs if r.key == b"leaderboard"
            ]
            latest = json.loads(records[-1].value) if records else latest
            if (
                latest
                and latest["feed"]["snapshot_seq"] == arena.published[-1]
                and all(
                    next((a["turns"] for a in latest["agents"] if a["name"] == n), None) == len(w.of(n, "done"))
                    for n in TRADERS
                )
            ):
                break
    finally:
        await board.stop()
    assert arena.procs["tools"].stop(signal.SIGINT) == 0, arena.procs["tools"].output[-3000:]
    export = json.loads(arena.export.read_text())
    assert export["feed"]["snapshot_seq"] == arena.published[-1]  # the last real one (until() may publish after `last`)
    for pid, p in export["products"].items():
        assert (p["bid"], p["ask"]) == pytest.approx((BASE[pid] * 0.9999, BASE[pid] * 1.0001)), pid
    agents = {a["name"]: a for a in export["agents"]}
    # Every valid snapshot this module published is one sample; no forged one is.
    assert agents[BASELINE_NAME]["metrics"]["samples"] == len(arena.published) + arena.valid_forged
    assert agents[BASELINE_NAME]["metrics"]["max_drawdown_pct"] < 0.05  # flat prices: only the spread
    for a in TRADERS:  # every turn counted: the decisions feed never stopped
        assert agents[a]["turns"] == len(w.of(a, "done")), a
    processes = {p["name"]: p for p in export["processes"]}
    assert processes[f"router dead-{RUN}"]["status"] == "exited"
    assert processes[f"router ghost-{RUN}"]["status"] == "ready"  # the first report: the other two were rejected
