"""What every venue adapter provides, and the small pieces adapters share. Venue-neutral.

An adapter (a subclass of Exchange) knows one venue's protocol. The feed (arena.feed) drives it:
`async with exchange:` opens its connections, `load_products(ids)` says which products the venue knows
and their increments, `run(products, book, candles)` keeps the quote book and the candle store up to
date until cancelled. The feed turns book and candles into snapshots; it never sees a venue's messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol

from arena.market import Candle, Quote, base_currency, quote_currency

DEFAULT_BASE_INCREMENT = 1e-8  # the finest step any product in the arena trades in
DEFAULT_QUOTE_INCREMENT = 0.01


@dataclass(frozen=True)
class Product:
    """A venue's product record: the smallest steps its size (base) and price (quote) move in."""

    product_id: str
    base_increment: float = DEFAULT_BASE_INCREMENT
    quote_increment: float = DEFAULT_QUOTE_INCREMENT
    from_venue: bool = False  # False: the adapter's defaults (the venue did not answer)

    @property
    def base(self) -> str:
        return base_currency(self.product_id)

    @property
    def quote(self) -> str:
        return quote_currency(self.product_id)


@dataclass
class VenueOptions:
    """Connection settings the connector's flags give an adapter; None means the venue's own URL."""

    ws_url: str | None = None
    rest_url: str | None = None
    max_quote_age: float = 30.0  # a quote older than this is stale; adapters top up quiet products before
    candle_refresh: float = 60.0
    watchdog: float = 10.0  # reconnect a stream silent this long


class QuoteSink(Protocol):
    """The feed's quote book as an adapter sees it (arena.feed.QuoteBook)."""

    def update(self, q: Quote) -> None: ...  # a streamed quote
    def fill(self, q: Quote, asked_at: datetime) -> bool: ...  # a polled quote, asked for at `asked_at`
    def is_fresh(self, product_id: str, max_age: float, now: datetime | None = None) -> bool: ...


class CandleSink(Protocol):
    """The feed's candle store as an adapter sees it (arena.feed.CandleStore)."""

    def put(self, product_id: str, granularity: str, candles: list[Candle]) -> None: ...


class Exchange(ABC):
    """One venue's market data. Granularities are the arena's names in arena.market.CANDLE_WINDOWS."""

    name: ClassVar[str]
    ws_url_default: ClassVar[str | None] = None  # shown in the connector's --help
    rest_url_default: ClassVar[str | None] = None

    def __init__(self, options: VenueOptions | None = None):
        self.options = options or VenueOptions()
        self.candles_ready = asyncio.Event()  # set once every candle set was attempted

    @property
    def source(self) -> str:
        """The label snapshots carry (MarketSnapshot.source)."""
        return self.name

    @staticmethod
    def default_product(product_id: str) -> Product:
        """The record to use for `product_id` without asking the venue."""
        return Product(product_id)

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    @abstractmethod
    async def load_products(self, product_ids: list[str]) -> dict[str, Product]:
        """The products the venue knows among `product_ids`, in their order, with their records.
        A product the venue says is unknown is left out; one it cannot tell about is kept with defaults."""

    @abstractmethod
    async def run(self, products: list[str], book: QuoteSink, candles: CandleSink) -> None:
        """Keep `book` and `candles` up to date for `products` until cancelled; never give up."""

    def totals(self) -> str:
        """One line of counters for the log when the feed stops."""
        return ""


# --- shared by adapters -------------------------------------------------------------------------------


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
    """Counts lost messages from a per-connection counter (e.g. a sequence number)."""

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
