"""The connector's runtime: Coinbase WebSocket + REST in, one MarketSnapshot per interval out.

Pieces, each small and testable on its own:
- QuoteBook: the latest quote per product (the `ticker` channel conflated) and its freshness;
- WsFeed: WebSocket client; reconnects with exponential backoff + jitter on *every* close,
  re-subscribes (one message per channel, paced), watchdog on silence, sequence gap logging;
- RestPoller: candles every --candle-refresh and REST top-of-book for products the WebSocket
  left quiet, through a token bucket, backing off on 429/5xx and keeping the last good data;
- SnapshotSink: publishes to MARKET_TOPIC and appends to a recording;
- LiveFeed (live publishing loop) and replay() (publish a recording instead).

First snapshot: as soon as every product has a fresh quote and the first candle pass is done, or
after STARTUP_GRACE_S once at least one quote exists (products without any quote yet are left
out; products whose quote is older than --max-quote-age are sent with stale=True).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import httpx
import websockets
from websockets.asyncio.client import connect as ws_connect

from arena import auth
from arena import coinbase as cb
from arena import kafka as k
from arena.config import MARKET_TOPIC, KafkaSettings
from arena.market import CANDLE_WINDOWS, Candle, MarketSnapshot, Quote, utcnow
from arena.reconnect import BrokerWatch

log = logging.getLogger("arena.feed")

MARKET_KEY = b"market"  # one constant key: every snapshot lands on one partition, in order
STARTUP_GRACE_S = 10.0
SUBSCRIBE_GAP_S = 0.15  # Coinbase allows 8 unauthenticated messages/s per IP
WS_MAX_SIZE = 10 * 1024 * 1024
REST_RATE = 8.0  # requests/s; Coinbase allows 10/s per IP on public endpoints
FILL_START_DELAY_S = 2.0  # REST top-of-book starts after the WebSocket had a chance to deliver
HEALTHY_CONNECTION_S = 10.0  # a connection that lived this long resets the reconnect backoff


class FeedError(Exception):
    """A reason the connector cannot run at all (bad products, empty recording)."""


class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random."""

    def __init__(self, base: float = 0.5, factor: float = 2.0, cap: float = 30.0, rng: random.Random | None = None):
        self.base, self.factor, self.cap = base, factor, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self.cap, self.base * self.factor**self.attempt)
        self.attempt += 1
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def reset(self) -> None:
        self.attempt = 0


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, burst or rate, clock
        self._tokens, self._at = self.burst, clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        while (wait := self.wait_time()) > 0:
            await asyncio.sleep(wait)
        self._tokens -= 1


class SequenceTracker:
    """Counts lost messages from a per-connection counter (sequence_num, heartbeat_counter)."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.lost = 0

    def see(self, n: int | None) -> int:
        """Record `n`; returns how many numbers were skipped since the previous one (0 if none)."""
        if n is None:
            return 0
        gap = 0
        if self.last is not None and n > self.last + 1:
            gap = n - self.last - 1
            self.lost += gap
        if self.last is None or n > self.last:
            self.last = n
        return gap


class LimitedLog:
    """Logs a repeated warning at most once per `every` seconds per key, with a count of the rest."""

    def __init__(self, logger: logging.Logger, every: float = 10.0):
        self.logger, self.every = logger, every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
        self.logger.warning(msg + (f" (+{n} similar suppressed)" if n else ""), *args)


class QuoteBook:
    """The latest quote per product. A quote is fresh while it has a two-sided book younger than max_age."""

    def __init__(self) -> None:
        self._quotes: dict[str, Quote] = {}

    def get(self, product_id: str) -> Quote | None:
        return self._quotes.get(product_id)

    def update(self, q: Quote) -> None:
        """A WebSocket ticker. One without bid/ask (older feed format) only moves the last price:
        the book it keeps is as old as it was."""
        old = self._quotes.get(q.product_id)
        if q.best_bid is None and old is not None and old.best_bid is not None:
            q = old.model_copy(update={"price": q.price, "exchange_time": q.exchange_time or old.exchange_time})
        self._quotes[q.product_id] = q

    def fill(self, q: Quote, asked_at: datetime) -> bool:
        """A REST top-of-book, applied unless a newer book arrived while the request was in flight."""
        old = self._quotes.get(q.product_id)
        if old is not None and old.best_bid is not None and old.received_at >= asked_at:
            return False
        self._quotes[q.product_id] = q
        return True

    def is_fresh(self, product_id: str, max_age: float, now: datetime | None = None) -> bool:
        q = self._quotes.get(product_id)
        return q is not None and q.best_bid is not None and q.best_ask is not None and q.age_s(now) <= max_age

    def view(self, products: Iterable[str], max_age: float, now: datetime | None = None) -> dict[str, Quote]:
        """Copies of the quotes for `products`, each marked stale unless fresh; unquoted products left out."""
        now = now or utcnow()
        return {
            pid: q.model_copy(update={"stale": not self.is_fresh(pid, max_age, now)})
            for pid in products
            if (q := self._quotes.get(pid)) is not None
        }


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


# --- WebSocket --------------------------------------------------------------------------------------


@dataclass
class FeedStats:
    connects: int = 0
    frames: int = 0
    quotes: int = 0
    skipped: int = 0
    errors: int = 0
    lost: int = 0


class FeedSilent(Exception):
    """Nothing arrived within the watchdog time, not even a heartbeat: the connection is stalled."""


class WsFeed:
    """Keeps `book` up to date from the `ticker` channel; never gives up while running."""

    def __init__(self, url: str, products: list[str], book: QuoteBook, *, watchdog: float = 10.0, rng: random.Random | None = None):
        self.url, self.products, self.book, self.watchdog = url, products, book, watchdog
        self.backoff = Backoff(rng=rng)
        self.stats = FeedStats()
        self.connected = asyncio.Event()
        self._warn = LimitedLog(log)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self._connection()
                reason = "closed"
            except websockets.ConnectionClosed as exc:
                rcvd = exc.rcvd
                reason = f"closed (code {rcvd.code}{' ' + rcvd.reason if rcvd and rcvd.reason else ''})" if rcvd else "closed abnormally (1006)"
            except FeedSilent:
                reason = f"silent for {self.watchdog:g}s (watchdog)"
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
                reason = f"unreachable ({type(exc).__name__}: {exc})"
            except Exception as exc:  # whatever else: the feed must outlive it
                log.exception("feed failed unexpectedly")
                reason = f"failed ({type(exc).__name__})"
            # We were told to stop while the server was closing too: a close() on the way out (ours, or
            # the connection context's) raised ConnectionClosed in place of the cancel. Stop anyway.
            task = asyncio.current_task()
            if task is not None and getattr(task, "cancelling", lambda: 0)():  # Python 3.11+
                raise asyncio.CancelledError
            self.connected.clear()
            if time.monotonic() - started >= HEALTHY_CONNECTION_S:
                self.backoff.reset()
            delay = self.backoff.next()
            log.warning("feed %s; reconnecting in %.1fs", reason, delay)
            await asyncio.sleep(delay)

    async def _connection(self) -> None:
        log.info("connecting to %s ...", self.url)
        async with ws_connect(self.url, max_size=WS_MAX_SIZE, open_timeout=10, close_timeout=1) as ws:
            self.stats.connects += 1
            seq, beats = SequenceTracker(), SequenceTracker()  # fresh state per connection
            subscribe = asyncio.create_task(self._subscribe(ws))
            subscribe.add_done_callback(lambda t: t.cancelled() or t.exception())  # a close mid-subscribe is handled below
            try:
                while True:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=self.watchdog)
                    except asyncio.TimeoutError:
                        raise FeedSilent from None
                    self._handle(raw, seq, beats)
            except asyncio.CancelledError:
                # We are shutting down: a normal close (1000), not 1011. If the server is closing at the same
                # moment, close() raises ConnectionClosed, which must not replace (and so swallow) the cancel.
                with contextlib.suppress(Exception):
                    await ws.close()
                raise
            finally:
                subscribe.cancel()

    async def _subscribe(self, ws) -> None:
        # Must happen within 5 s of connecting; one message per channel, paced under the rate limit.
        for i, msg in enumerate(cb.subscribe_messages(self.products)):
            if i:
                await asyncio.sleep(SUBSCRIBE_GAP_S)
            await ws.send(json.dumps(msg))

    def _handle(self, raw: str | bytes, seq: SequenceTracker, beats: SequenceTracker) -> None:
        self.stats.frames += 1
        now = utcnow()
        try:
            frame = cb.parse_frame(raw, received_at=now)
        except cb.FrameError as exc:
            self.stats.skipped += 1
            self._warn.warning("frame", "skipping malformed frame: %s: %.120r", exc, raw)
            return
        if gap := seq.see(frame.sequence_num):
            self.stats.lost += gap
            self._warn.warning("seq", "sequence gap: %d message(s) lost before sequence_num %s", gap, frame.sequence_num)
        if frame.channel == "ticker":
            for q in frame.quotes:
                self.book.update(q)
            self.stats.quotes += len(frame.quotes)
            for why in frame.skipped:
                self.stats.skipped += 1
                self._warn.warning("ticker", "skipping ticker entry: %s", why)
        elif frame.channel == "heartbeats":
            if gap := beats.see(frame.heartbeat_counter):
                self._warn.warning("beat", "heartbeat gap: %d heartbeat(s) missed", gap)
        elif frame.channel == "subscriptions" and frame.subscriptions and "ticker" in frame.subscriptions:
            # Coinbase confirms each subscribe with the whole current set; judge once ticker is in it.
            missing = sorted(set(self.products) - set(frame.subscriptions["ticker"]))
            if missing:
                self._warn.warning("subs", "not subscribed to ticker for %s", ", ".join(missing))
            if not self.connected.is_set():
                log.info("feed connected: ticker %s + heartbeats", ", ".join(frame.subscriptions["ticker"]))
                self.connected.set()
        elif frame.channel == "error":
            self.stats.errors += 1
            self._warn.warning("error", "feed error: %s", frame.error)
        # other channels: Coinbase may add message types at any time; ignore them


# --- REST -------------------------------------------------------------------------------------------


class RestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


class RestPoller:
    """Candles for every product and window, and REST top-of-book for products the WebSocket left quiet."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        products: list[str],
        book: QuoteBook,
        candles: CandleStore,
        *,
        candle_refresh: float = 60.0,
        max_quote_age: float = 30.0,
        rate: float = REST_RATE,
        rng: random.Random | None = None,
    ):
        self.client, self.products, self.book, self.candles = client, products, book, candles
        self.candle_refresh, self.max_quote_age = candle_refresh, max_quote_age
        self.bucket = TokenBucket(rate)
        self.backoff = Backoff(base=1.0, rng=rng)
        self.candles_ready = asyncio.Event()  # every candle set attempted once
        self._warn = LimitedLog(log)

    async def get(self, path: str, params: dict | None = None) -> Any:
        await self.bucket.acquire()
        try:
            resp = await self.client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise RestError(599, f"{type(exc).__name__}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code != 200:
            raise RestError(resp.status_code, cb.rest_error(body))
        return body

    async def validate(self, products: list[str]) -> list[str]:
        """Drop products Coinbase says are unknown; keep all when it cannot tell (checked concurrently)."""

        async def known(pid: str) -> bool:
            try:
                body = await self.get(cb.product_path(pid))
            except RestError as exc:
                if exc.status in (400, 404):
                    log.error("product %s is unknown (%s): leaving it out", pid, exc)
                    return False
                log.warning("could not check product %s (%s); keeping it", pid, exc)
                return True
            if isinstance(body, dict) and (body.get("trading_disabled") or body.get("is_disabled") or body.get("status", "online") != "online"):
                log.warning("product %s is not trading now (status=%s); its quotes may go stale", pid, body.get("status"))
            return True

        checks = await asyncio.gather(*(known(pid) for pid in products))
        return [pid for pid, ok in zip(products, checks) if ok]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        jobs = [(pid, gran) for pid in self.products for gran in CANDLE_WINDOWS]
        due = {job: 0.0 for job in jobs}
        attempted: set = set()
        last_fill: dict[str, float] = {}
        fill_every = max(1.0, self.max_quote_age / 4)
        fills_from = loop.time() + FILL_START_DELAY_S  # the WebSocket snapshot usually makes them unneeded
        pause_until = 0.0
        while True:
            now = loop.time()
            if now < pause_until:
                await asyncio.sleep(pause_until - now)
                continue
            # Quiet products first (trading needs a book), then whatever candle set is due.
            job: Any = next(
                (
                    pid
                    for pid in self.products
                    if now >= fills_from
                    and not self.book.is_fresh(pid, self.max_quote_age / 2)
                    and now - last_fill.get(pid, -1e9) >= fill_every
                ),
                None,
            )
            if job is None:
                nxt = min(jobs, key=due.__getitem__)
                if due[nxt] > now:
                    await asyncio.sleep(min(0.25, due[nxt] - now))
                    continue
                job = nxt
            try:
                if isinstance(job, str):
                    last_fill[job] = now
                    await self._fill(job)
                else:
                    await self._candles(*job)
                    due[job] = loop.time() + self.candle_refresh
                self.backoff.reset()
            except RestError as exc:
                what = f"ticker {job}" if isinstance(job, str) else f"candles {job[0]} {job[1]}"
                if exc.retryable:
                    delay = self.backoff.next()
                    pause_until = loop.time() + delay
                    if not isinstance(job, str):
                        due[job] = pause_until
                    self._warn.warning(f"rest{exc.status}", "REST %s failed (%s); backing off %.1fs, keeping the last data", what, exc, delay)
                else:
                    if not isinstance(job, str):
                        due[job] = loop.time() + self.candle_refresh
                    self._warn.warning(f"rest{exc.status}", "REST %s rejected (%s)", what, exc)
            if not isinstance(job, str):
                attempted.add(job)
                if len(attempted) == len(jobs):
                    self.candles_ready.set()

    async def _candles(self, pid: str, gran: str) -> None:
        count = CANDLE_WINDOWS[gran][1]
        body = await self.get(cb.candle_path(pid), cb.candle_params(gran, count, time.time()))
        try:
            self.candles.put(pid, gran, cb.parse_candles(body))
        except ValueError as exc:
            raise RestError(502, f"bad candles response: {exc}") from None

    async def _fill(self, pid: str) -> None:
        asked_at = utcnow()
        body = await self.get(cb.ticker_path(pid), {"limit": "1"})
        q = cb.parse_rest_ticker(pid, body)
        if q is not None and self.book.fill(q, asked_at):
            log.debug("top of book for %s from REST: %s/%s", pid, q.best_bid, q.best_ask)


# --- publishing -------------------------------------------------------------------------------------


class SnapshotSink:
    """Publishes snapshots to MARKET_TOPIC and, with `record`, appends each published one as a JSON line."""

    def __init__(self, producer, record: Path | None = None, topic: str = MARKET_TOPIC, timeout: float = 10.0,
                 key: bytes | None = None):
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
            await asyncio.wait_for(self.producer.send_and_wait(self.topic, data, key=MARKET_KEY, headers=headers), self.timeout)
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
        book = f"{q.best_bid:.10g}/{q.best_ask:.10g}" if q.best_bid is not None and q.best_ask is not None else f"last {q.price:.10g}"
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


def announce_ready(interval: float | None) -> None:
    every = f"every {interval:g}s" if interval else "from a recording"
    print(f"READY: publishing market snapshots to {MARKET_TOPIC} {every}", flush=True)


@dataclass
class FeedConfig:
    ws_url: str = cb.COINBASE_WS_URL
    rest_url: str = cb.COINBASE_REST_URL
    products: list[str] = field(default_factory=list)
    interval: float = 60.0
    max_quote_age: float = 30.0
    candle_refresh: float = 60.0
    watchdog: float = 10.0
    startup_grace: float = STARTUP_GRACE_S


class LiveFeed:
    """WebSocket + REST in, one snapshot per interval out (on a fixed schedule, no drift)."""

    def __init__(self, cfg: FeedConfig):
        self.cfg = cfg
        self.book = QuoteBook()
        self.candles = CandleStore()
        self.source = "coinbase" if cfg.ws_url == cb.COINBASE_WS_URL else f"coinbase-protocol {cfg.ws_url}"

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
        cfg = self.cfg
        headers = {"User-Agent": "agents-trading-arena/0.1", "Accept": "application/json"}
        # Plain http (the simulator) needs no TLS context; building one costs ~0.1-0.3 s at start-up.
        tls = cfg.rest_url.startswith("https://")
        async with httpx.AsyncClient(base_url=cfg.rest_url, timeout=10.0, headers=headers, verify=tls) as client:
            rest = RestPoller(client, [], self.book, self.candles, candle_refresh=cfg.candle_refresh, max_quote_age=cfg.max_quote_age)
            products = await rest.validate(list(cfg.products))
            if not products:
                raise FeedError(f"none of the products {', '.join(cfg.products)} is known to {cfg.rest_url}")
            rest.products = products
            ws = WsFeed(cfg.ws_url, products, self.book, watchdog=cfg.watchdog)
            tasks = [asyncio.create_task(ws.run(), name="ws"), asyncio.create_task(rest.run(), name="rest")]
            try:
                await self._wait_first(products, rest)
                await self._publish_loop(sink, products)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                st = ws.stats
                log.info(
                    "feed totals: %d connection(s), %d frames, %d quotes, %d skipped, %d error frame(s), %d lost by sequence",
                    st.connects, st.frames, st.quotes, st.skipped, st.errors, st.lost,
                )

    async def _wait_first(self, products: list[str], rest: RestPoller) -> None:
        loop = asyncio.get_running_loop()
        start = last_note = loop.time()
        while True:
            fresh = [p for p in products if self.book.is_fresh(p, self.cfg.max_quote_age)]
            waited = loop.time() - start
            if len(fresh) == len(products) and rest.candles_ready.is_set():
                return
            if waited >= self.cfg.startup_grace and any(self.book.get(p) for p in products):
                missing = sorted(set(products) - set(fresh))
                log.warning("publishing without a fresh quote for %s after %.0fs", ", ".join(missing) or "-", waited)
                return
            if loop.time() - last_note >= 5:
                last_note = loop.time()
                log.info("waiting for quotes (%d/%d fresh) and candles ...", len(fresh), len(products))
            await asyncio.sleep(0.02)

    async def _publish_loop(self, sink: SnapshotSink, products: list[str]) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.interval
        t0, n, seq = loop.time(), 0, 0
        while True:
            seq += 1
            snap = self.snapshot(seq, products)
            if await sink.publish(snap):
                log.info("%s", describe(snap))
                if sink.published == 1:
                    announce_ready(interval)
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


async def replay(path: Path, sink: SnapshotSink, speed: float = 1.0) -> int:
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
            if sink.published == 1:
                announce_ready(None)
    return sink.published



# --- the whole connector ----------------------------------------------------------------------------


async def run(settings: KafkaSettings, cfg: FeedConfig, *, record: Path | None = None, replay_path: Path | None = None, speed: float = 1.0) -> int:
    """The connector process: live feed (or a replay) to Kafka until SIGINT/SIGTERM. Returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def serve() -> None:
        producer = await start_producer(settings)
        sink = SnapshotSink(producer, record)
        renew = lambda why: renew_producer(sink, settings, why)  # noqa: E731
        watch = BrokerWatch(settings, renew, on_lost=renew)
        try:
            await watch.start()
            if replay_path:
                n = await replay(replay_path, sink, speed)
                log.info("replay finished: %d snapshots published", n)
            else:
                await LiveFeed(cfg).run(sink)
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
    except FeedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
