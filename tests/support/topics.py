"""Readers of the arena's topics, as a test or a benchmark sees them (no consumer group)."""

from __future__ import annotations

import asyncio
import time

from arena import kafka as k
from arena.config import DECISIONS_TOPIC, MARKET_TOPIC, TRADES_TOPIC, KafkaSettings
from arena.decisions import Decision
from arena.market import MarketSnapshot
from arena.portfolio import Fill, Rejection, TradeOutcome


class TopicReader:
    """Every record on `topics` from the moment start() returns (or, with `from_start`, all of them), each
    handed to `take()` by a background task; a producer for publishing alongside.

    `create_topics`: publish an empty record to each topic first, so a topic nobody has written yet
    exists and has partitions to read (subclasses skip empty values)."""

    def __init__(
        self, kafka: KafkaSettings | None, *topics: str, from_start: bool = False, create_topics: bool = False
    ):
        self.kafka = kafka
        self.topics = topics
        self.from_start = from_start
        self.create_topics = create_topics
        self.consumer = None
        self.producer = None
        self.started_at = 0.0
        self._task: asyncio.Task | None = None

    def take(self, record) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """What a timeout message shows of what was read."""
        return ""

    async def start(self):
        self.consumer = k.consumer(self.kafka, *self.topics, group_id=None, latest=not self.from_start)
        self.producer = k.producer(self.kafka)
        await asyncio.gather(self.consumer.start(), self.producer.start())
        if self.create_topics:
            for topic in self.topics:
                await self.producer.send_and_wait(topic, b"")
        if not self.from_start:
            await k.positioned([self.consumer])  # from now on
        self.started_at = time.time()
        self._task = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    self.take(r)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(
            *(c.stop() for c in (self.consumer, self.producer) if c is not None), return_exceptions=True
        )

    async def wait_for(self, predicate, timeout: float) -> bool:
        """Wait up to `timeout` for `predicate()`; whether it holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return predicate()
            await asyncio.sleep(0.05)
        return True

    async def until(self, predicate, timeout: float, what: str) -> float:
        """Wait for `predicate()`, failing the test after `timeout`; returns the seconds it took."""
        t0 = time.monotonic()
        if not await self.wait_for(predicate, timeout):
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; {self.describe()}")
        return time.monotonic() - t0


class Watcher(TopicReader):
    """Decisions and trades (and any `extra` topics, kept raw) as they are published; publishes market
    snapshots, remembering each one."""

    def __init__(self, kafka: KafkaSettings, *extra: str, topics=(DECISIONS_TOPIC, TRADES_TOPIC), **kw):
        super().__init__(kafka, *topics, *extra, **kw)
        self.decisions: list[Decision] = []
        self.trades: list[Fill | Rejection] = []
        self.extra: list[tuple[str, bytes, int]] = []  # (topic, value, record timestamp ms)
        self.published: dict[int, MarketSnapshot] = {}
        self.sent_at: dict[int, float] = {}  # seq -> time.time() when sent

    def take(self, r) -> None:
        if not r.value:
            return
        if r.topic == DECISIONS_TOPIC:  # what is not a valid record (a test's own poison) is skipped
            if (d := k.decode_record(Decision, r)) is not None:
                self.decisions.append(d)
        elif r.topic == TRADES_TOPIC:
            if (t := k.decode_record(TradeOutcome, r)) is not None:
                self.trades.append(t)
        else:
            self.extra.append((r.topic, r.value, r.timestamp))

    async def publish(self, snap: MarketSnapshot, key: bytes | None = None) -> MarketSnapshot:
        """`key`: the connector's (arena.feed.MARKET_KEY) puts every snapshot on one partition, in order."""
        self.published[snap.seq] = snap
        self.sent_at[snap.seq] = time.time()
        await self.producer.send_and_wait(MARKET_TOPIC, k.encode(snap), key=key)
        return snap

    def of(self, agent: str | None, *statuses: str, seqs=None) -> list[Decision]:
        return [d for d in self.decisions if (agent is None or d.agent == agent) and (not statuses or d.status in statuses)
                and (seqs is None or d.tick_seq in seqs)]  # fmt: skip

    def describe(self) -> str:
        return "decisions: " + "; ".join(
            f"{d.agent} #{d.tick_seq} {d.status} {d.reason[:60]}" for d in self.decisions[-40:]
        )
