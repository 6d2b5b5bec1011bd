"""The connector's venue-neutral runtime: a venue adapter in, one MarketSnapshot per interval out.

Pieces, each small and testable on its own:
- QuoteBook (arena/quotes.py): the latest quote per product (streamed quotes conflated) and its freshness;
- CandleStore: the last good candles per product and granularity;
- SnapshotSink: publishes to MARKET_TOPIC and appends to a recording;
- LiveFeed (drives an arena.exchanges adapter, publishes on a fixed schedule) and replay() (publish a
  recording instead).

First snapshot: as soon as every product has a fresh quote and the first candle pass is done, or
after STARTUP_GRACE_S once at least one quote exists (products without any quote yet are left
out; products whose quote is older than --max-quote-age are sent with stale=True).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

from arena import auth
from arena import kafka as k
from arena.config import MARKET_TOPIC, KafkaSettings
from arena.exchanges.base import Backoff, Exchange
from arena.market import CANDLE_WINDOWS, Candle, MarketSnapshot, utcnow
from arena.quotes import QuoteBook  # noqa: F401 - the connector's book (arena.feed.QuoteBook)
from arena.reconnect import BrokerWatch

log = logging.getLogger("arena.feed")

MARKET_KEY = b"market"  # one constant key: every snapshot lands on one partition, in order
STARTUP_GRACE_S = 10.0


class FeedError(Exception):
    """A reason the connector cannot run at all (bad products, empty recording)."""


class CandleStore:
    """The last good candles per product and granularity (oldest first, at most the window's count)."""

    def __init__(self) -> None:
        self._candles: dict[str, dict[str, list[Candle]]] = {}

    def put(self, product_id: str, granularity: str, candles: list[Candle]) -> None:
        count = CANDLE_WINDOWS[granularity][1]
        self._candles.setdefault(product_id, {})[granularity] = candles[-count:]

    def get(self, product_id: str, granularity: str) -> list[Candle]:
        return self._candles.get(product_id, {}).get(granularity, [])

    def view(self, products: Iterable[str]) -> dict[str, dict[str, list[Candle]]]:
        return {pid: dict(self._candles[pid]) for pid in products if self._candles.get(pid)}


# --- publishing -------------------------------------------------------------------------------------


class SnapshotSink:
    """Publishes snapshots to MARKET_TOPIC and, with `record`, appends each published one as a JSON line."""

    def __init__(
        self,
        producer,
        record: Path | None = None,
        topic: str = MARKET_TOPIC,
        timeout: float = 10.0,
        key: bytes | None = None,
    ):
        self.producer, self.topic, self.timeout = producer, topic, timeout
        self.key = key if key is not None else auth.feed_key()  # ARENA_FEED_KEY: sign every snapshot
        self._record = open(record, "a", encoding="utf-8") if record else None
        self.published = 0

    async def publish(self, snap: MarketSnapshot) -> bool:
        data = k.encode(snap)
        if self.producer is None:  # between brokers (see renew_producer)
            log.error("could not publish snapshot #%d: no broker to publish to yet", snap.seq)
            return False
        try:
            headers = [(auth.SIGNATURE_HEADER, auth.sign(self.key, data))] if self.key else None
            await asyncio.wait_for(
                self.producer.send_and_wait(self.topic, data, key=MARKET_KEY, headers=headers), self.timeout
            )
        except Exception as exc:  # broker gone: this snapshot is lost, the next one may make it
            log.error("could not publish snapshot #%d: %s", snap.seq, exc or type(exc).__name__)
            return False
        self.published += 1
        if self._record:
            self._record.write(data.decode() + "\n")
            self._record.flush()
        return True

    def close(self) -> None:
        if self._record:
            self._record.close()


def describe(snap: MarketSnapshot) -> str:
    """One status line: bid/ask per product, stale marks, candle counts."""
    parts = []
    for pid, q in snap.quotes.items():
        book = (
            f"{q.best_bid:.10g}/{q.best_ask:.10g}"
            if q.best_bid is not None and q.best_ask is not None
            else f"last {q.price:.10g}"
        )
        parts.append(f"{pid} {book}" + (" STALE" if q.stale else ""))
    n_candles = sum(len(cs) for by in snap.candles.values() for cs in by.values())
    return f"published snapshot #{snap.seq}: {'  '.join(parts) or 'no quotes'}  ({n_candles} candles)"


async def start_producer(settings: KafkaSettings):
    """Start a producer, retrying with status lines until the broker answers."""
    backoff = Backoff(base=1.0, cap=10.0)
    log.info("connecting to Kafka at %s ...", settings.bootstrap_servers)
    while True:
        producer = k.producer(settings)
        try:
            await producer.start()
            log.info("Kafka connected")
            return producer
        except Exception as exc:
            await producer.stop()
            delay = backoff.next()
            log.warning("Kafka at %s not reachable (%s); retrying in %.1fs", settings.bootstrap_servers, exc, delay)
            await asyncio.sleep(delay)


async def renew_producer(sink: SnapshotSink, settings: KafkaSettings, why: str) -> None:
    """The broker went away or came back empty: the old producer is closed first (it would write on into
    the next broker with partition metadata from the old one, which Tansu mishandles; see
    arena/reconnect.py), then a new one, started once a broker answers, looks the topic up afresh."""
    log.warning("%s: reconnecting the publisher", why)
    old, sink.producer = sink.producer, None
    if old is not None:
        try:
            await asyncio.wait_for(old.stop(), 5)
        except Exception as exc:  # it talked to a broker that is gone
            log.debug("closing the old producer: %r", exc)
    sink.producer = await start_producer(settings)


@dataclass
class FeedConfig:
    products: list[str] = field(default_factory=list)
    interval: float = 60.0
    max_quote_age: float = 30.0
    startup_grace: float = STARTUP_GRACE_S


class LiveFeed:
    """A venue adapter keeps the book and the candles; one snapshot per interval out (on a fixed schedule,
    no drift). `on_first` runs once the first snapshot is published."""

    def __init__(self, cfg: FeedConfig, exchange: Exchange, on_first: Callable[[], None] | None = None):
        self.cfg, self.exchange = cfg, exchange
        self.on_first = on_first or (lambda: None)
        self.book = QuoteBook()
        self.candles = CandleStore()
        self.source = exchange.source

    def snapshot(self, seq: int, products: list[str]) -> MarketSnapshot:
        now = utcnow()
        return MarketSnapshot(
            seq=seq,
            published_at=now,
            quotes=self.book.view(products, self.cfg.max_quote_age, now),
            candles=self.candles.view(products),
            source=self.source,
        )

    async def run(self, sink: SnapshotSink) -> None:
        cfg, venue = self.cfg, self.exchange
        async with venue:
            known = await venue.load_products(list(cfg.products))
            if not known:
                raise FeedError(f"none of the products {', '.join(cfg.products)} is known to {venue.source}")
            products = list(known)
            task = asyncio.create_task(venue.run(products, self.book, self.candles), name=venue.name)
            try:
                await self._wait_first(products, task)
                await self._publish_loop(sink, products, task)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if totals := venue.totals():
                    log.info("feed totals: %s", totals)

    async def _wait_first(self, products: list[str], venue: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        start = last_note = loop.time()
        while True:
            fresh = [p for p in products if self.book.is_fresh(p, self.cfg.max_quote_age)]
            waited = loop.time() - start
            if venue.done():
                venue.result()  # an adapter must not stop: raise what it died of
                raise FeedError(f"{self.exchange.name} stopped before the first snapshot")
            if len(fresh) == len(products) and self.exchange.candles_ready.is_set():
                return
            if waited >= self.cfg.startup_grace and any(self.book.get(p) for p in products):
                missing = sorted(set(products) - set(fresh))
                log.warning("publishing without a fresh quote for %s after %.0fs", ", ".join(missing) or "-", waited)
                return
            if loop.time() - last_note >= 5:
                last_note = loop.time()
                log.info("waiting for quotes (%d/%d fresh) and candles ...", len(fresh), len(products))
            await asyncio.sleep(0.02)

    async def _publish_loop(self, sink: SnapshotSink, products: list[str], venue: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.interval
        t0, n, seq = loop.time(), 0, 0
        while True:
            if venue.done():
                venue.result()
                raise FeedError(f"{self.exchange.name} stopped")
            seq += 1
            snap = self.snapshot(seq, products)
            if await sink.publish(snap):
                log.info("%s", describe(snap))
                if sink.published == 1:
                    self.on_first()
            # Next slot on the fixed grid; slots missed while blocked are skipped, not bunched.
            n = max(n + 1, int((loop.time() - t0) / interval) + 1)
            await asyncio.sleep(max(0.0, t0 + n * interval - loop.time()))


# --- record / replay --------------------------------------------------------------------------------


def load_recording(path: Path) -> list[MarketSnapshot]:
    """Snapshots from a JSON-lines recording; malformed lines are logged and skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            snap = k.decode(MarketSnapshot, line.encode(), f"{path}:{i}")
            if snap is not None:
                out.append(snap)
    return out


def retime(snap: MarketSnapshot, now: datetime, candle_shift: int, speed: float = 1.0) -> MarketSnapshot:
    """The snapshot as if published `now`, candle starts moved by `candle_shift` s.

    Quote ages shrink with the replay's `speed` like the gaps between snapshots do: kept whole, a quote
    that was old when a snapshot was recorded could look older than the previous snapshot's quote of the
    same product, and the tools' quote book (newest received_at wins) would keep filling at that one."""
    scale = 1 / speed if speed > 0 else 1.0

    def shifted(t: datetime) -> datetime:
        return now - (snap.published_at - t) * scale

    quotes = {
        pid: q.model_copy(
            update={
                "received_at": shifted(q.received_at),
                "exchange_time": shifted(q.exchange_time) if q.exchange_time else None,
            }
        )
        for pid, q in snap.quotes.items()
    }
    candles = {
        pid: {g: [c.model_copy(update={"start": c.start + candle_shift}) for c in cs] for g, cs in by.items()}
        for pid, by in snap.candles.items()
    }
    return snap.model_copy(update={"published_at": now, "quotes": quotes, "candles": candles})


async def replay(path: Path, sink: SnapshotSink, speed: float = 1.0, on_first: Callable[[], None] | None = None) -> int:
    """Publish a recording in its order, at its own pace divided by `speed` (0 = no waiting).

    Times are rewritten to now (quote ages scaled by the speed, see retime); candle starts move by a whole number of the largest candle period so
    every granularity stays aligned. Returns how many snapshots were published."""
    snaps = load_recording(path)
    if not snaps:
        raise FeedError(f"no snapshots in {path}")
    loop = asyncio.get_running_loop()
    step = max(secs for secs, _ in CANDLE_WINDOWS.values())
    first = snaps[0].published_at
    shift = int((utcnow() - first).total_seconds()) // step * step
    log.info("replaying %d snapshots from %s at %s", len(snaps), path, f"{speed:g}x" if speed else "full speed")
    t0 = loop.time()
    for snap in snaps:
        if speed > 0:
            due = t0 + (snap.published_at - first).total_seconds() / speed
            await asyncio.sleep(max(0.0, due - loop.time()))
        out = retime(snap, utcnow(), shift, speed)
        if await sink.publish(out):
            log.info("%s", describe(out))
            if sink.published == 1 and on_first:
                on_first()
    return sink.published


# --- the whole connector ----------------------------------------------------------------------------


async def run(
    settings: KafkaSettings,
    cfg: FeedConfig,
    exchange: Exchange | None = None,
    *,
    stop: asyncio.Event,
    on_first: Callable[[], None] | None = None,
    record: Path | None = None,
    replay_path: Path | None = None,
    speed: float = 1.0,
) -> int:
    """The connector: live feed from `exchange` (or a replay) to Kafka until `stop` is set. `on_first` runs
    once the first snapshot is out. Returns the exit code; raises FeedError when the connector cannot run."""

    async def serve() -> None:
        producer = await start_producer(settings)
        sink = SnapshotSink(producer, record)
        renew = lambda why: renew_producer(sink, settings, why)  # noqa: E731
        watch = BrokerWatch(settings, renew, on_lost=renew)
        try:
            await watch.start()
            if replay_path:
                n = await replay(replay_path, sink, speed, on_first)
                log.info("replay finished: %d snapshots published", n)
            elif exchange is None:
                raise FeedError("no exchange to read from")
            else:
                await LiveFeed(cfg, exchange, on_first).run(sink)
        finally:
            await watch.stop()
            sink.close()
            if sink.producer is not None:
                await sink.producer.stop()

    main = asyncio.create_task(serve())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not main.done():
        log.info("stopping connector ...")
        main.cancel()
    stopper.cancel()
    try:
        await main
    except asyncio.CancelledError:
        return 0
    return 0
