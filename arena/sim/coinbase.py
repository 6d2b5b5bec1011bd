"""A Coinbase-compatible market simulator: Advanced Trade WebSocket and public REST on one port.

Speaks the real protocol so neither the connector nor Coinbase's own SDK (coinbase-advanced-py) can
tell: flat subscribe messages (one channel each, within 5 s of connecting), `subscriptions`
confirmations, envelopes with channel/timestamp/sequence_num/events, `ticker` snapshot+updates with
best bid/ask, `heartbeats` every second, five-minute `candles` every second, `market_trades`, `level2`
(as `l2_data`: a snapshot, then new totals per changed level), `error` frames; public REST: time,
products (product_ids/product_type/limit/offset), product, product book (limit, aggregation), market
trades (limit, start/end window, best bid/ask) and candles (newest first, strings, 350 cap, missing
buckets). REST rides on the WebSocket server's `process_request` hook; a GET may carry a body.

Prices: seeded geometric Brownian motion per product with realistic level, volatility, tick size,
spread and trade rate. 24 h of history is generated backwards from the start price, so full
candle windows exist at once and join the live path seamlessly. Given the seed, the sequence of
prices is the same on every run (only wall-clock times differ).

Fault hooks for tests: drop_connections(), go_silent(), inject()/send_garbage()/
send_broken_ticker(), skip_sequence(), fail_rest(), set_outage().
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http
import json
import logging
import math
import random
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from arena.compat.websockets_get_body import body_tolerant_connection
from arena.exchanges.coinbase.protocol import API_PREFIX, GRANULARITY_SECONDS, MAX_CANDLES_PER_REQUEST, product_list
from arena.market import DEFAULT_PRODUCTS

log = logging.getLogger("arena.sim")

SECONDS_PER_YEAR = 365 * 86400
HISTORY_S = 24 * 3600
HISTORY_STEP_S = 10
SUBSCRIBE_DEADLINE_S = 5.0
HEARTBEAT_S = 1.0
MAX_QUEUE = 10_000  # a client this far behind is dropped (Coinbase drops slow readers too)
CHANNELS = ("ticker", "heartbeats", "candles", "market_trades", "level2")
TRADE_TAPE = 1000  # trades kept per product for REST market-trades windows and WS snapshots
MAX_TRADES_LIMIT = 1000  # largest `limit` the public market-trades endpoint takes
BOOK_LEVELS = 100  # price levels per side in the product book (REST); level2 streams the top L2_LEVELS
L2_LEVELS = 50
MAX_AGGREGATED_TICKS = 20_000  # an aggregated book covers at most this many ticks per side
WS_TRADES_SNAPSHOT = 50  # trades per product in a market_trades snapshot
WS_CANDLE_S = 300  # the candles channel has only five-minute buckets
MAX_REQUEST_BODY = 64 * 1024


Level = tuple[float, float]  # (price, size) in a book


@dataclass(frozen=True)
class Profile:
    price: float  # start price
    vol: float  # annualised volatility
    tick: float  # price increment
    spread: tuple[float, float]  # typical (tightest, widest) spread in quote currency
    rate: float  # ticker updates (trades) per second
    size: float  # mean trade size in base units


PROFILES = {
    "BTC-USD": Profile(95_000.0, 0.55, 0.01, (0.01, 1.0), 6.0, 0.02),
    "ETH-USD": Profile(3_400.0, 0.70, 0.01, (0.01, 0.30), 4.0, 0.3),
    "SOL-USD": Profile(180.0, 0.85, 0.01, (0.01, 0.05), 3.0, 5.0),
    "FARTCOIN-USD": Profile(1.2, 2.0, 0.0001, (0.0001, 0.003), 1.5, 800.0),
}


def profile_for(product_id: str) -> Profile:
    """Known products get realistic numbers; any other id a deterministic made-up market."""
    if product_id in PROFILES:
        return PROFILES[product_id]
    h = int.from_bytes(hashlib.sha256(product_id.encode()).digest()[:8], "big")
    price = 10 ** (-2 + 6 * (h % 10_000) / 10_000)  # 0.01 .. 10,000
    tick = max(1e-8, 10 ** (math.floor(math.log10(price)) - 4))
    return Profile(price, 1.0, tick, (tick, max(tick * 2, price * 0.002)), 1.0, 1000 / price)


def _decimals(tick: float) -> int:
    return max(0, -math.floor(math.log10(tick) + 1e-9))


def _rfc3339(t: float, digits: int = 9) -> str:
    """Coinbase's timestamps: nanoseconds in envelopes, microseconds on trades."""
    ns = int(t * 1e9)
    base = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns % 1_000_000_000:09d}"[: len(base) + 1 + digits] + "Z"


class Market:
    """One product's price path, book, trades and one-minute candles. Pure: time is passed in."""

    def __init__(self, product_id: str, rng: random.Random, now: float):
        self.product_id = product_id
        self.p = profile_for(product_id)
        self.rng = rng
        self.dec = _decimals(self.p.tick)
        self.sigma = self.p.vol / math.sqrt(SECONDS_PER_YEAR)  # per sqrt(second)
        self.minutes: dict[int, list[float]] = {}  # start -> [open, high, low, close, volume]
        self.trades: deque[tuple[float, dict]] = deque(maxlen=TRADE_TAPE)  # (unix time, REST trade), newest first
        self.history: deque[tuple[float, float, float, float]] = deque(maxlen=20_000)  # (time, bid, ask, price)
        self._stats: tuple[float, dict] | None = None
        self._trade_id = rng.randrange(10**8, 10**9)
        self._seed_history(now)
        self.mid = self.p.price
        self.bid = self.ask = self.price = 0.0
        self._quote(now)
        self._trade(now)

    # -- path --------------------------------------------------------------------------------------

    def _seed_history(self, now: float) -> None:
        # Walk backwards from the start price, then lay the points out oldest first as candles.
        n = HISTORY_S // HISTORY_STEP_S
        step_sd = self.sigma * math.sqrt(HISTORY_STEP_S)
        logp = math.log(self.p.price)
        points = [logp]
        for _ in range(n):
            logp -= self.rng.gauss(0.0, step_sd)
            points.append(logp)
        p_trade = 1 - math.exp(-self.p.rate * HISTORY_STEP_S)
        mean_vol = self.p.rate * HISTORY_STEP_S * self.p.size
        for i, lp in enumerate(reversed(points)):
            t = now - (n - i) * HISTORY_STEP_S
            if i < n and self.rng.random() >= p_trade:
                continue  # no trade in this step: quiet buckets stay missing, as on Coinbase
            self._add_to_candle(t, self._round(math.exp(lp)), self.rng.expovariate(1 / mean_vol) if i < n else 0.0)

    def _round(self, x: float) -> float:
        return round(round(x / self.p.tick) * self.p.tick, self.dec)

    def _add_to_candle(self, t: float, price: float, volume: float) -> None:
        start = int(t) // 60 * 60
        c = self.minutes.get(start)
        if c is None:
            self.minutes[start] = [price, price, price, price, volume]
        else:
            c[1], c[2], c[3] = max(c[1], price), min(c[2], price), price
            c[4] += volume

    def _quote(self, now: float) -> None:
        lo, hi = self.p.spread
        spread = lo if self.rng.random() < 0.5 else math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
        ticks = max(1, round(spread / self.p.tick))
        bid = math.floor((self.mid - ticks * self.p.tick / 2) / self.p.tick) * self.p.tick
        self.bid = round(max(self.p.tick, bid), self.dec)
        self.ask = round(self.bid + ticks * self.p.tick, self.dec)

    def _trade(self, now: float) -> dict:
        side = "BUY" if self.rng.random() < 0.5 else "SELL"
        self.price = self.ask if side == "BUY" else self.bid
        size = round(max(self.rng.expovariate(1 / self.p.size), 1e-8), 8)
        self._trade_id += 1
        trade = {
            "trade_id": str(self._trade_id),
            "product_id": self.product_id,
            "price": self.fmt(self.price),
            "size": f"{size:.8f}",
            "time": _rfc3339(now, 6),
            "side": side,
            "bid": "",
            "ask": "",
            "exchange": "coinbase",
        }
        self.trades.appendleft((now, trade))
        self._add_to_candle(now, self.price, size)
        self.history.append((now, self.bid, self.ask, self.price))
        return trade

    def step(self, dt: float, now: float) -> None:
        """One ticker update `dt` seconds after the previous one: move the mid, requote, trade."""
        z = self.rng.gauss(0.0, 1.0)
        self.mid *= math.exp(self.sigma * math.sqrt(dt) * z - 0.5 * self.sigma**2 * dt)
        self._quote(now)
        self._trade(now)

    # -- views -------------------------------------------------------------------------------------

    def fmt(self, x: float) -> str:
        return f"{x:.{self.dec}f}"

    def stats_24h(self, now: float) -> dict:
        if self._stats and now - self._stats[0] < 5:
            return self._stats[1]
        cutoff = now - HISTORY_S
        for start in [s for s in self.minutes if s < cutoff - 3600]:
            del self.minutes[start]  # keep memory bounded on long runs
        day = [c for s, c in sorted(self.minutes.items()) if s >= cutoff]
        first = day[0][0] if day else self.price
        stats = {
            "low": min((c[2] for c in day), default=self.price),
            "high": max((c[1] for c in day), default=self.price),
            "volume": sum(c[4] for c in day),
            "chg": (self.price / first - 1) * 100 if first else 0.0,
        }
        self._stats = (now, stats)
        return stats

    def ticker(self, now: float) -> dict:
        s = self.stats_24h(now)
        return {
            "type": "ticker",
            "product_id": self.product_id,
            "price": self.fmt(self.price),
            "volume_24_h": f"{s['volume']:.8f}",
            "low_24_h": self.fmt(s["low"]),
            "high_24_h": self.fmt(s["high"]),
            "low_52_w": self.fmt(min(s["low"], self._round(self.p.price * 0.45))),
            "high_52_w": self.fmt(max(s["high"], self._round(self.p.price * 1.35))),
            "price_percent_chg_24_h": f"{s['chg']:.8f}",
            "best_bid": self.fmt(self.bid),
            "best_bid_quantity": f"{self.rng.uniform(0.5, 4) * self.p.size:.8f}",
            "best_ask": self.fmt(self.ask),
            "best_ask_quantity": f"{self.rng.uniform(0.5, 4) * self.p.size:.8f}",
        }

    def candles(self, granularity_s: int, start: int, end: int, limit: int) -> list[dict]:
        """Buckets with trades whose start is in [start, end], newest first, at most `limit`."""
        out = []
        first = -(-start // granularity_s) * granularity_s
        for b in range(end // granularity_s * granularity_s, first - 1, -granularity_s):
            ms = [self.minutes[m] for m in range(b, b + granularity_s, 60) if m in self.minutes]
            if ms:
                out.append(
                    {
                        "start": str(b),
                        "low": self.fmt(min(m[2] for m in ms)),
                        "high": self.fmt(max(m[1] for m in ms)),
                        "open": self.fmt(ms[0][0]),
                        "close": self.fmt(ms[-1][3]),
                        "volume": f"{sum(m[4] for m in ms):.8f}",
                    }
                )
                if len(out) >= limit:
                    break
        return out

    def trades_between(self, start: float | None, end: float | None, limit: int) -> list[dict]:
        """Trades whose time is in [start, end] (either bound optional), newest first, at most `limit`."""
        out = []
        for at, t in self.trades:
            if end is not None and at > end:
                continue
            if start is not None and at < start:
                break
            out.append(t)
            if len(out) >= limit:
                break
        return out

    def ws_trade(self, trade: dict) -> dict:
        return {k: trade[k] for k in ("trade_id", "product_id", "price", "size", "side", "time")}

    def ws_candle(self, now: float) -> dict | None:
        """The forming five-minute candle, as the candles channel sends it (None before its first trade)."""
        start = int(now) // WS_CANDLE_S * WS_CANDLE_S
        c = self.candles(WS_CANDLE_S, start, start, 1)
        return {**c[0], "product_id": self.product_id} if c else None

    def _level_size(self, side: str, ticks: int) -> float:
        """Resting size at a price level: a function of the level alone, so the book only changes where
        the quote moves (level2 sends small updates, not the whole book every trade). 0 = no orders."""
        h = int.from_bytes(hashlib.blake2b(f"{self.product_id}/{side}/{ticks}".encode(), digest_size=8).digest(), "big")
        u = (h + 1) / 2**64
        if u < 0.35:
            return 0.0  # a gap in the book
        return round(self.p.size * (0.1 - 2 * math.log((u - 0.35) / 0.65)), 8)

    def book(self, levels: int = BOOK_LEVELS, span: int | None = None) -> tuple[list[Level], list[Level]]:
        """(bids best first, asks best first) as (price, size): up to `levels` levels per side within `span`
        ticks of the touch; the best levels are the current quote."""
        tick = self.p.tick
        span = span or levels * 20
        sides = []
        for side, best, step in (("bid", self.bid, -1), ("offer", self.ask, 1)):
            base = round(best / tick)
            out: list[Level] = []
            i = 0
            while len(out) < levels and i < span:
                ticks = base + step * i
                if ticks <= 0:
                    break
                size = self._level_size(side, ticks) or (self.p.size * 0.5 if i == 0 else 0.0)
                if size:
                    out.append((round(ticks * tick, self.dec), size))
                i += 1
            sides.append(out)
        return sides[0], sides[1]

    def product(self, now: float) -> dict:
        s = self.stats_24h(now)
        base, _, quote = self.product_id.partition("-")
        inc = self.fmt(self.p.tick)
        return {
            "product_id": self.product_id,
            "price": self.fmt(self.price),
            "price_percentage_change_24h": f"{s['chg']:.8f}",
            "volume_24h": f"{s['volume']:.8f}",
            "volume_percentage_change_24h": "0",
            "base_increment": "0.00000001",
            "quote_increment": inc,
            "price_increment": inc,
            "quote_min_size": "1",
            "quote_max_size": "150000000",
            "base_min_size": "0.00000001",
            "base_max_size": "3400",
            "base_name": base,
            "quote_name": quote,
            "base_currency_id": base,
            "quote_currency_id": quote,
            "base_display_symbol": base,
            "quote_display_symbol": quote,
            "status": "online",
            "is_disabled": False,
            "trading_disabled": False,
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "auction_mode": False,
            "view_only": False,
            "new": False,
            "watched": False,
            "product_type": "SPOT",
            "alias": "",
            "alias_to": [],
            "mid_market_price": "",
        }


def _aggregate(levels: list[Level], step: float, side_round) -> list[Level]:
    out: dict[float, float] = {}
    for price, size in levels:
        bucket = round(side_round(round(price / step, 9)) * step, 12)
        out[bucket] = out.get(bucket, 0.0) + size
    return list(out.items())  # insertion order keeps best first


class _Client:
    """One WebSocket connection: its subscriptions, its own sequence numbers, an outgoing queue."""

    def __init__(self, ws: ServerConnection):
        self.ws = ws
        self.subs: dict[str, set[str]] = {}
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seq = 0
        self.silent = False
        self.skip = 0
        self.beats: asyncio.Task | None = None
        self.candles: asyncio.Task | None = None
        self.l2: dict[str, dict[tuple[str, str], str]] = {}  # product -> the book this client holds

    def stop_tasks(self) -> None:
        for t in (self.beats, self.candles):
            if t:
                t.cancel()
        self.beats = self.candles = None


def _grpc_error(status: int, message: str) -> dict:
    codes = {
        400: ("INVALID_ARGUMENT", 3),
        404: ("NOT_FOUND", 5),
        429: ("RESOURCE_EXHAUSTED", 8),
        500: ("INTERNAL", 13),
        503: ("UNAVAILABLE", 14),
    }
    name, code = codes.get(status, ("UNKNOWN", 2))
    return {"error": name, "code": code, "message": message, "details": []}


class MarketSim:
    """The simulator. `await start(host, port)` (port 0 = any free one), then `ws_url`/`rest_url`."""

    def __init__(
        self,
        seed: int = 0,
        products: Iterable[str] = DEFAULT_PRODUCTS,
        *,
        tick_rate: float = 1.0,
        subscribe_deadline: float = SUBSCRIBE_DEADLINE_S,
    ):
        now = time.time()
        self.seed, self.tick_rate, self.subscribe_deadline = seed, tick_rate, subscribe_deadline
        self.markets = {pid: Market(pid, random.Random(f"{seed}/{pid}"), now) for pid in products}
        self.clients: set[_Client] = set()
        self.outage = False
        self._rest_failures: list[int] = []  # statuses to answer the next REST requests with
        self._server = None
        self._tasks: list[asyncio.Task] = []
        self.host, self.port = "127.0.0.1", 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "MarketSim":
        self._server = await serve(
            self._handle_ws,
            host,
            port,
            process_request=self._process_request,
            logger=logging.getLogger("arena.sim.ws"),
            max_size=1024 * 1024,
            create_connection=body_tolerant_connection(MAX_REQUEST_BODY),
        )
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self._tick(m), name=f"tick {m.product_id}") for m in self.markets.values()]
        return self

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Run until cancelled."""
        await self.start(host, port)
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def __aenter__(self) -> "MarketSim":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- state for tests ---------------------------------------------------------------------------

    def book(self, product_id: str) -> tuple[float, float]:
        m = self.markets[product_id]
        return m.bid, m.ask

    def history(self, product_id: str) -> list[tuple[float, float, float, float]]:
        """Recent book states: (unix time, bid, ask, last price)."""
        return list(self.markets[product_id].history)

    # -- fault hooks -------------------------------------------------------------------------------

    async def drop_connections(self, code: int | None = None, reason: str = "") -> int:
        """Close every WebSocket: abruptly (the client sees 1006) or with a close `code` (1000, 1001, 1011...)."""
        clients = list(self.clients)
        if code is None:
            for c in clients:
                c.ws.transport.abort()
        else:
            await asyncio.gather(*(c.ws.close(code, reason) for c in clients))
        return len(clients)

    def go_silent(self) -> int:
        """Connections open now stay open but send nothing more (heartbeats included); new ones are normal."""
        for c in self.clients:
            c.silent = True
        return len(self.clients)

    def inject(self, frame: str | dict) -> None:
        """Send a raw frame to every subscribed connection (a dict gets this connection's envelope fields)."""
        for c in self.clients:
            if c.subs:
                c.queue.put_nowait(frame if isinstance(frame, str) else ("env", frame))

    def send_garbage(self) -> None:
        self.inject('{"channel": "ticker", "events": [{"type": "update", "tick')  # cut mid-message

    def send_broken_ticker(self, product_id: str) -> None:
        """A ticker missing price and best bid/ask; the connector must skip it, not crash or zero a quote."""
        self.inject(
            {
                "channel": "ticker",
                "events": [{"type": "update", "tickers": [{"type": "ticker", "product_id": product_id}]}],
            }
        )

    def skip_sequence(self, n: int) -> None:
        """Lose the next `n` messages on every connection (their sequence numbers are used up)."""
        for c in self.clients:
            c.skip += n

    def fail_rest(self, status: int = 429, count: int = 1) -> None:
        """Answer the next `count` REST requests with `status` (429, 500, 503...)."""
        self._rest_failures += [status] * count

    def clear_rest_failures(self) -> None:
        self._rest_failures.clear()

    def set_outage(self, on: bool = True) -> None:
        """A full outage: connections dropped, new ones and every REST request get 503."""
        self.outage = on
        if on:
            for c in list(self.clients):
                c.ws.transport.abort()

    # -- price ticks -------------------------------------------------------------------------------

    async def _tick(self, m: Market) -> None:
        # dt comes from the drawn schedule, not from the clock: a seed gives the same prices every run.
        rng = random.Random(f"{self.seed}/{m.product_id}/clock")
        while True:
            dt = rng.expovariate(m.p.rate * self.tick_rate)
            await asyncio.sleep(dt)
            now = time.time()
            m.step(dt, now)
            ticker = trades = book = None
            for c in self.clients:
                if m.product_id in c.subs.get("ticker", ()):
                    ticker = ticker or self._envelope("ticker", [{"type": "update", "tickers": [m.ticker(now)]}], now)
                    self._send(c, ticker)
                if m.product_id in c.subs.get("market_trades", ()):
                    trade = m.ws_trade(m.trades[0][1])
                    trades = trades or self._envelope("market_trades", [{"type": "update", "trades": [trade]}], now)
                    self._send(c, trades)
                if m.product_id in c.subs.get("level2", ()):
                    book = book or self._l2_levels(m)
                    self._send_l2(c, m, book, now)

    # -- WebSocket ---------------------------------------------------------------------------------

    @staticmethod
    def _envelope(channel: str, events: list, now: float | None = None) -> dict:
        return {
            "channel": channel,
            "client_id": "",
            "timestamp": _rfc3339(now or time.time()),
            "sequence_num": 0,
            "events": events,
        }

    def _send(self, c: _Client, msg: dict | str) -> None:
        if c.queue.qsize() >= MAX_QUEUE:
            log.warning("dropping a slow client")
            c.ws.transport.abort()
            return
        c.queue.put_nowait(("env", msg) if isinstance(msg, dict) else msg)

    async def _writer(self, c: _Client) -> None:
        try:
            await self._write_loop(c)
        except websockets.ConnectionClosed:
            pass  # the handler notices too and cleans up

    async def _write_loop(self, c: _Client) -> None:
        while True:
            item = await c.queue.get()
            if isinstance(item, tuple):
                msg = {**item[1], "sequence_num": c.seq}
                msg.setdefault("timestamp", _rfc3339(time.time()))
                c.seq += 1
                if c.skip:
                    c.skip -= 1
                    continue
                data = json.dumps(msg)
            else:
                data = item
            if c.silent:
                continue
            await c.ws.send(data)

    async def _heartbeats(self, c: _Client) -> None:
        counter = 0
        started = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            counter += 1
            now = time.time()
            uptime = time.monotonic() - started
            current = (
                datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
                + f"000 +0000 UTC m=+{uptime:.9f}"
            )
            self._send(c, self._envelope("heartbeats", [{"current_time": current, "heartbeat_counter": counter}], now))

    async def _candles(self, c: _Client) -> None:
        # The forming five-minute candle of every subscribed product, once a second.
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            candles = [x for p in sorted(c.subs.get("candles", ())) if (x := self.markets[p].ws_candle(now))]
            if candles:
                self._send(c, self._envelope("candles", [{"type": "update", "candles": candles}], now))

    @staticmethod
    def _l2_levels(m: Market) -> dict[tuple[str, str], str]:
        bids, asks = m.book(L2_LEVELS)
        return {
            **{("bid", m.fmt(p)): f"{q:.8f}" for p, q in bids},
            **{("offer", m.fmt(p)): f"{q:.8f}" for p, q in asks},
        }

    def _send_l2(
        self, c: _Client, m: Market, levels: dict[tuple[str, str], str], now: float, snapshot: bool = False
    ) -> None:
        """level2 sends the new total size at each changed level ("0" removes it); the first message is the whole book."""
        held = {} if snapshot else c.l2.get(m.product_id, {})
        changed = [(k, q) for k, q in levels.items() if held.get(k) != q] + [(k, "0") for k in held if k not in levels]
        c.l2[m.product_id] = levels
        if not changed:
            return
        at = _rfc3339(now, 6)
        updates = [
            {"side": side, "event_time": at, "price_level": price, "new_quantity": q} for (side, price), q in changed
        ]
        event = {"type": "snapshot" if snapshot else "update", "product_id": m.product_id, "updates": updates}
        self._send(c, self._envelope("l2_data", [event], now))

    async def _handle_ws(self, ws: ServerConnection) -> None:
        c = _Client(ws)
        self.clients.add(c)
        peer = ws.remote_address
        log.info("client connected from %s:%s", *(peer or ("?", "?"))[:2])
        writer = asyncio.create_task(self._writer(c))
        deadline = asyncio.get_running_loop().call_later(self.subscribe_deadline, self._check_subscribed, c)
        try:
            async for raw in ws:
                self._on_request(c, raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            deadline.cancel()
            self.clients.discard(c)
            writer.cancel()
            c.stop_tasks()
            log.info("client disconnected (%s)", ws.close_code if ws.close_code is not None else "abnormal")

    def _check_subscribed(self, c: _Client) -> None:
        if not c.subs:
            asyncio.ensure_future(c.ws.close(1008, "no subscribe within 5 s"))

    def _error(self, c: _Client, message: str, reason: str | None = None) -> None:
        err = {"type": "error", "message": message}
        if reason:
            err["reason"] = reason
        c.queue.put_nowait(json.dumps(err))

    def _on_request(self, c: _Client, raw: str | bytes) -> None:
        try:
            req = json.loads(raw)
        except ValueError:
            return self._error(c, "failed to parse message")
        if not isinstance(req, dict) or req.get("type") not in ("subscribe", "unsubscribe"):
            return self._error(c, "unknown message type", "type must be subscribe or unsubscribe")
        channel = req.get("channel")
        if not isinstance(channel, str):
            return self._error(c, "channel is required", "send one subscribe message per channel")
        if channel not in CHANNELS:
            return self._error(c, "Failed to subscribe", f"{channel} is not a supported channel")
        products: list[str] = []
        if channel != "heartbeats":
            products = req.get("product_ids")
            if not isinstance(products, list) or not products or not all(isinstance(p, str) for p in products):
                return self._error(c, "Failed to subscribe", "product_ids must be a non-empty list of strings")
            unknown = [p for p in products if p not in self.markets]
            if unknown:
                return self._error(c, "Failed to subscribe", f"{unknown[0]} is not a valid product")
        now = time.time()
        if req["type"] == "subscribe":
            added = [p for p in products if p not in c.subs.get(channel, set())]
            c.subs.setdefault(channel, set()).update(products or ["heartbeats"])
            if channel == "heartbeats" and c.beats is None:
                c.beats = asyncio.create_task(self._heartbeats(c))
            if channel == "candles" and c.candles is None:
                c.candles = asyncio.create_task(self._candles(c))
        else:
            subs = c.subs.get(channel, set())
            subs.difference_update(products or ["heartbeats"])
            if not subs:
                c.subs.pop(channel, None)
                if channel == "heartbeats" and c.beats:
                    c.beats.cancel()
                    c.beats = None
                if channel == "candles" and c.candles:
                    c.candles.cancel()
                    c.candles = None
            if channel == "level2":
                for p in products:
                    c.l2.pop(p, None)
            added = []
        self._send(
            c, self._envelope("subscriptions", [{"subscriptions": {ch: sorted(ps) for ch, ps in c.subs.items()}}], now)
        )
        if added:
            self._snapshot(c, channel, [self.markets[p] for p in added], now)

    def _snapshot(self, c: _Client, channel: str, markets: list[Market], now: float) -> None:
        """What a channel sends first for newly subscribed products."""
        if channel == "ticker":
            self._send(
                c, self._envelope("ticker", [{"type": "snapshot", "tickers": [m.ticker(now) for m in markets]}], now)
            )
        elif channel == "market_trades":
            trades = [m.ws_trade(t) for m in markets for _, t in list(m.trades)[:WS_TRADES_SNAPSHOT]]
            self._send(c, self._envelope("market_trades", [{"type": "snapshot", "trades": trades}], now))
        elif channel == "candles":
            candles = [x for m in markets if (x := m.ws_candle(now))]
            self._send(c, self._envelope("candles", [{"type": "snapshot", "candles": candles}], now))
        elif channel == "level2":
            for m in markets:
                self._send_l2(c, m, self._l2_levels(m), now, snapshot=True)

    # -- REST --------------------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self.outage:
                return self._json(conn, 503, _grpc_error(503, "service unavailable"))
            return None  # go on with the WebSocket handshake
        status, body = self._rest(request.path)
        return self._json(conn, status, body)

    @staticmethod
    def _json(conn: ServerConnection, status: int, body: Any) -> Response:
        resp = conn.respond(http.HTTPStatus(status), json.dumps(body))
        resp.headers["Content-Type"] = "application/json"
        return resp

    def _rest(self, target: str) -> tuple[int, Any]:
        if self.outage:
            return 503, _grpc_error(503, "service unavailable")
        if self._rest_failures:
            status = self._rest_failures.pop(0)
            return status, _grpc_error(status, "Too many requests" if status == 429 else "internal error")
        url = urlsplit(target)
        multi = parse_qs(url.query, keep_blank_values=True)
        q = {k: v[-1] for k, v in multi.items()}
        parts = url.path.rstrip("/").split("/")
        prefix = API_PREFIX.split("/")
        if parts[: len(prefix)] != prefix:
            return 404, _grpc_error(404, "Not Found")
        rest = parts[len(prefix) :]
        now = time.time()
        if rest == ["time"]:
            return 200, {"iso": _rfc3339(now), "epochSeconds": str(int(now)), "epochMillis": str(int(now * 1000))}
        if rest == ["market", "products"]:
            return self._rest_products(q, multi.get("product_ids", []), now)
        if rest == ["market", "product_book"]:
            pid = q.get("product_id", "")
            if not pid:
                return 400, _grpc_error(400, "product_id is required")
            if pid not in self.markets:
                return 404, _grpc_error(404, f"product {pid} not found")
            return self._rest_book(self.markets[pid], q, now)
        if len(rest) in (3, 4) and rest[:2] == ["market", "products"]:
            m = self.markets.get(rest[2])
            if m is None:
                return 404, _grpc_error(404, f"product {rest[2]} not found")
            if len(rest) == 3:
                return 200, m.product(now)
            if rest[3] == "ticker":
                return self._rest_ticker(m, q)
            if rest[3] == "candles":
                return self._rest_candles(m, q, now)
        return 404, _grpc_error(404, "Not Found")

    def _rest_products(self, q: dict, ids: list[str], now: float) -> tuple[int, Any]:
        kind = q.get("product_type", "")
        if kind not in ("", "SPOT", "FUTURE"):
            return 400, _grpc_error(400, "product_type must be SPOT or FUTURE")
        limit, offset = q.get("limit", ""), q.get("offset", "0")
        if (limit and not limit.isdigit()) or not offset.isdigit():
            return 400, _grpc_error(400, "limit and offset must be non-negative integers")
        markets = [m for pid, m in self.markets.items() if (not ids or pid in ids) and kind != "FUTURE"]
        markets = markets[int(offset) :][: int(limit) if limit and int(limit) > 0 else None]  # limit 0 = no limit
        return 200, {"products": [m.product(now) for m in markets], "num_products": len(markets)}

    @staticmethod
    def _rest_book(m: Market, q: dict, now: float) -> tuple[int, Any]:
        limit, inc = q.get("limit", ""), q.get("aggregation_price_increment", "")
        if limit and not limit.isdigit():
            return 400, _grpc_error(400, "limit must be a non-negative integer")
        try:
            step = float(inc) if inc else 0.0
        except ValueError:
            step = -1.0
        if step < 0 or not math.isfinite(step):
            return 400, _grpc_error(400, "aggregation_price_increment must be a positive decimal")
        n = int(limit) if limit and int(limit) > 0 else BOOK_LEVELS
        if step > m.p.tick:
            # Levels fold into buckets of `step`: bids down, asks up, so a bucket never crosses the spread.
            span = min((n + 1) * math.ceil(step / m.p.tick), MAX_AGGREGATED_TICKS)
            bids, asks = m.book(span, span)
            bids, asks = (_aggregate(bids, step, math.floor), _aggregate(asks, step, math.ceil))
            dec = max(m.dec, _decimals(step))
        else:
            bids, asks = m.book(BOOK_LEVELS)
            dec = m.dec

        def level(price: float, size: float) -> dict:
            return {"price": f"{price:.{dec}f}", "size": f"{size:.8f}"}

        mid = (m.bid + m.ask) / 2
        return 200, {
            "pricebook": {
                "product_id": m.product_id,
                "bids": [level(p, s) for p, s in bids[:n]],
                "asks": [level(p, s) for p, s in asks[:n]],
                "time": _rfc3339(now, 6),
            },
            "last": m.fmt(m.price),
            "mid_market": f"{mid:.{m.dec + 1}f}",
            "spread_bps": f"{(m.ask - m.bid) / mid * 1e4:.8f}",
            "spread_absolute": m.fmt(m.ask - m.bid),
        }

    @staticmethod
    def _rest_ticker(m: Market, q: dict) -> tuple[int, Any]:
        limit = q.get("limit", "")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_TRADES_LIMIT:
            return 400, _grpc_error(400, f"limit is required and must be between 1 and {MAX_TRADES_LIMIT}")
        try:
            start, end = (float(q[k]) if q.get(k) else None for k in ("start", "end"))
        except ValueError:
            return 400, _grpc_error(400, "start and end are UNIX seconds")
        if start is not None and end is not None and end < start:
            return 400, _grpc_error(400, "end must not be before start")
        trades = m.trades_between(start, end, int(limit))
        return 200, {"trades": trades, "best_bid": m.fmt(m.bid), "best_ask": m.fmt(m.ask)}

    @staticmethod
    def _rest_candles(m: Market, q: dict, now: float) -> tuple[int, Any]:
        start, end, gran = q.get("start", ""), q.get("end", ""), q.get("granularity", "")
        if not start.isdigit() or not end.isdigit():
            return 400, _grpc_error(400, "start and end are required, in UNIX seconds")
        if gran not in GRANULARITY_SECONDS:
            return 400, _grpc_error(400, f"granularity must be one of {', '.join(GRANULARITY_SECONDS)}")
        limit = q.get("limit", str(MAX_CANDLES_PER_REQUEST))
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_CANDLES_PER_REQUEST:
            return 400, _grpc_error(400, f"limit must be between 1 and {MAX_CANDLES_PER_REQUEST}")
        s, e, g = int(start), int(end), GRANULARITY_SECONDS[gran]
        if e < s:
            return 400, _grpc_error(400, "end must not be before start")
        if (e - s) // g + 1 > MAX_CANDLES_PER_REQUEST:
            return 400, _grpc_error(
                400,
                f"start and end argument is invalid - number of candles requested should be less than {MAX_CANDLES_PER_REQUEST}",
            )
        return 200, {"candles": m.candles(g, s, min(e, int(now)), int(limit))}


# --- command line -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arena market-sim",
        description="Coinbase-compatible market simulator: Advanced Trade WebSocket (ticker, heartbeats, candles, "
        "market_trades, level2) and public REST (time, products, product book, market trades, candles) on one port, "
        "with seeded realistic prices.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port for WebSocket and REST, 0 = any free port (default %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: the same seed gives the same price paths (default %(default)s)",
    )
    parser.add_argument(
        "--products",
        nargs="+",
        default=list(DEFAULT_PRODUCTS),
        metavar="ID",
        help=f"product ids to list, space or comma separated; ids it does not know get a made-up market (default {' '.join(DEFAULT_PRODUCTS)})",
    )
    parser.add_argument(
        "--tick-rate",
        type=float,
        default=1.0,
        help="multiplier on each product's ticker update rate (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.tick_rate <= 0:
        parser.error("--tick-rate must be > 0")
    logging.basicConfig(
        stream=sys.stdout,
        level=args.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("arena.sim.ws").setLevel(logging.WARNING)  # handshake chatter from every REST call
    products = product_list(args.products)
    if not products:
        parser.error("--products needs at least one product id")

    async def run() -> int:
        sim = MarketSim(args.seed, products, tick_rate=args.tick_rate)
        try:
            await sim.start(args.host, args.port)
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        prices = ", ".join(f"{pid} {m.fmt(m.bid)}/{m.fmt(m.ask)}" for pid, m in sim.markets.items())
        print(f"market sim (seed {args.seed}): {prices}", flush=True)
        print(f"connect with: --ws-url {sim.ws_url} --rest-url {sim.rest_url}", flush=True)
        print(f"READY: market simulator on {args.host}:{sim.port} (Ctrl-C to stop)", flush=True)
        await stop.wait()
        print("stopping market simulator ...", flush=True)
        await sim.stop()
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
