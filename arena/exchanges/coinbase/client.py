"""Coinbase Advanced Trade clients: the WebSocket `ticker` stream and the public REST poller.

- WsFeed: reconnects with exponential backoff + jitter on *every* close, re-subscribes (one message per
  channel, paced), watchdog on silence, sequence gap logging;
- RestPoller: candles every candle_refresh and REST top-of-book (with sizes, from the product book) for
  products the WebSocket left quiet, through a token bucket, backing off on 429/5xx and keeping the
  last good data; product records (increments) when the feed starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import connect as ws_connect

from arena.exchanges.base import Backoff, CandleSink, LimitedLog, Product, QuoteSink, SequenceTracker, TokenBucket
from arena.exchanges.coinbase import protocol as cb
from arena.exchanges.coinbase.products import default_product
from arena.market import CANDLE_WINDOWS, utcnow

log = logging.getLogger("arena.feed")

SUBSCRIBE_GAP_S = 0.15  # Coinbase allows 8 unauthenticated messages/s per IP
WS_MAX_SIZE = 10 * 1024 * 1024
REST_RATE = 8.0  # requests/s; Coinbase allows 10/s per IP on public endpoints
FILL_START_DELAY_S = 2.0  # REST top-of-book starts after the WebSocket had a chance to deliver
HEALTHY_CONNECTION_S = 10.0  # a connection that lived this long resets the reconnect backoff


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

    def __init__(
        self,
        url: str,
        products: list[str],
        book: QuoteSink,
        *,
        watchdog: float = 10.0,
        rng: random.Random | None = None,
    ):
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
                reason = (
                    f"closed (code {rcvd.code}{' ' + rcvd.reason if rcvd and rcvd.reason else ''})"
                    if rcvd
                    else "closed abnormally (1006)"
                )
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
            subscribe.add_done_callback(
                lambda t: t.cancelled() or t.exception()
            )  # a close mid-subscribe is handled below
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
            self._warn.warning(
                "seq", "sequence gap: %d message(s) lost before sequence_num %s", gap, frame.sequence_num
            )
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
        book: QuoteSink,
        candles: CandleSink,
        *,
        candle_refresh: float = 60.0,
        max_quote_age: float = 30.0,
        rate: float = REST_RATE,
        rng: random.Random | None = None,
        candles_ready: asyncio.Event | None = None,
    ):
        self.client, self.products, self.book, self.candles = client, products, book, candles
        self.candle_refresh, self.max_quote_age = candle_refresh, max_quote_age
        self.bucket = TokenBucket(rate)
        self.backoff = Backoff(base=1.0, rng=rng)
        self.candles_ready = candles_ready or asyncio.Event()  # every candle set attempted once
        self.use_book = True
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

    async def load_products(self, products: list[str]) -> dict[str, Product]:
        """Product records for `products` (checked concurrently): one Coinbase says is unknown is left out;
        one it cannot tell about (unreachable, 5xx, junk) is kept with the defaults."""

        async def record(pid: str) -> Product | None:
            try:
                body = await self.get(cb.product_path(pid))
            except RestError as exc:
                if exc.status in (400, 404):
                    log.error("product %s is unknown (%s): leaving it out", pid, exc)
                    return None
                log.warning("could not check product %s (%s); keeping it with default increments", pid, exc)
                return default_product(pid)
            if why := cb.product_unavailable(body):
                log.warning("product %s is not trading now (%s); its quotes may go stale", pid, why)
            return cb.parse_product(pid, body, default_product(pid))

        records = await asyncio.gather(*(record(pid) for pid in products))
        return {pid: r for pid, r in zip(products, records) if r is not None}

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
                    self._warn.warning(
                        f"rest{exc.status}",
                        "REST %s failed (%s); backing off %.1fs, keeping the last data",
                        what,
                        exc,
                        delay,
                    )
                else:
                    if not isinstance(job, str):
                        due[job] = loop.time() + self.candle_refresh
                    self._warn.warning(f"rest{exc.status}", "REST %s rejected (%s)", what, exc)
            if not isinstance(job, str):
                attempted.add(job)
                if len(attempted) == len(jobs):
                    self.candles_ready.set()

    async def _candles(self, pid: str, gran: str) -> None:
        secs, count = CANDLE_WINDOWS[gran]
        body = await self.get(
            cb.candle_path(pid), cb.candle_params(cb.GRANULARITY_BY_SECONDS[secs], count, time.time())
        )
        try:
            self.candles.put(pid, gran, cb.parse_candles(body))
        except ValueError as exc:
            raise RestError(502, f"bad candles response: {exc}") from None

    async def _fill(self, pid: str) -> None:
        asked_at = utcnow()
        if self.use_book:  # the product book has the sizes; the REST ticker only prices
            try:
                q = cb.parse_product_book(pid, await self.get(cb.book_path(), cb.book_params(pid)))
            except RestError as exc:
                if exc.status != 404:
                    raise
                log.warning("no product book at this venue (%s); topping up from the REST ticker, without sizes", exc)
                self.use_book = False
        if not self.use_book:
            q = cb.parse_rest_ticker(pid, await self.get(cb.ticker_path(pid), {"limit": "1"}))
        if q is not None and self.book.fill(q, asked_at):
            log.debug("top of book for %s from REST: %s/%s", pid, q.best_bid, q.best_ask)
