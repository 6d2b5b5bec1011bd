"""Market data messages (one concept, one type) and how a snapshot reads in an agent's prompt."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from arena.fmt import price
from arena.wire import (
    MAX_CANDLES,
    MAX_GRANULARITIES,
    MAX_PRODUCTS,
    Amount,
    AwareTime,
    Granularity,
    Price,
    ProductId,
    Seq,
    Short,
    utcnow,
)

DEFAULT_PRODUCTS = ("BTC-USD", "SOL-USD", "FARTCOIN-USD")

# Candle sets each snapshot carries: granularity name -> (seconds per candle, how many).
# ~3 h of 15-min, ~90 min of 5-min, ~20 min of 1-min.
CANDLE_WINDOWS: dict[str, tuple[int, int]] = {
    "FIFTEEN_MINUTE": (900, 12),
    "FIVE_MINUTE": (300, 18),
    "ONE_MINUTE": (60, 20),
}


def split_product(product_id: str) -> tuple[str, str]:
    """(base, quote) currencies of a product id: ('BTC', 'USD') for BTC-USD."""
    base, _, quote = product_id.partition("-")
    return base, quote


def base_currency(product_id: str) -> str:
    """The currency a product's quantities are in: 'BTC' for BTC-USD."""
    return split_product(product_id)[0]


def quote_currency(product_id: str) -> str:
    """The currency a product's prices are in: 'USD' for BTC-USD."""
    return split_product(product_id)[1]


class Quote(BaseModel):
    """Latest ticker for one product: last trade price and top of book."""

    product_id: ProductId
    price: Price
    best_bid: Price | None = None
    best_ask: Price | None = None
    bid_size: Amount | None = Field(
        None, description="Resting size at the best bid, when the venue tells (null: unknown)."
    )
    ask_size: Amount | None = Field(
        None, description="Resting size at the best ask, when the venue tells (null: unknown)."
    )
    # The feed's own timestamp, shown only: not held to the future limit, so a connector whose clock is
    # behind the exchange's still publishes.
    exchange_time: AwareDatetime | None = None
    received_at: AwareTime = Field(default_factory=utcnow)  # when the connector got it
    stale: bool = False  # set by the connector when no fresh quote arrived in time

    @model_validator(mode="after")
    def _uncrossed(self) -> Quote:
        if self.best_bid is not None and self.best_ask is not None and self.best_bid > self.best_ask:
            raise ValueError(f"crossed book: bid {self.best_bid} above ask {self.best_ask}")
        return self

    def age_s(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or utcnow()) - self.received_at).total_seconds())

    @property
    def spread(self) -> float | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return self.best_ask - self.best_bid


class Candle(BaseModel):
    start: Seq  # UNIX seconds, aligned to the granularity
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Amount

    @model_validator(mode="after")
    def _consistent(self) -> Candle:
        if not self.low <= min(self.open, self.close) <= max(self.open, self.close) <= self.high:
            raise ValueError(f"impossible candle: open {self.open} high {self.high} low {self.low} close {self.close}")
        return self


class MarketSnapshot(BaseModel):
    """What every router receives once per interval."""

    seq: Seq  # increases by one per published snapshot, per connector run
    published_at: AwareTime = Field(default_factory=utcnow)
    quotes: Annotated[dict[ProductId, Quote], Field(max_length=MAX_PRODUCTS)]  # product_id -> latest quote
    # product -> granularity -> oldest first
    candles: Annotated[
        dict[
            ProductId,
            Annotated[
                dict[Granularity, Annotated[list[Candle], Field(max_length=MAX_CANDLES)]],
                Field(max_length=MAX_GRANULARITIES),
            ],
        ],
        Field(max_length=MAX_PRODUCTS),
    ] = Field(default_factory=dict)
    source: Short = "coinbase"

    @model_validator(mode="after")
    def _keys_name_their_quotes(self) -> MarketSnapshot:
        for pid, q in self.quotes.items():
            if q.product_id != pid:
                raise ValueError(f"quote for {q.product_id} filed under {pid}")
        return self

    def not_after(self, now: datetime) -> MarketSnapshot:
        """This snapshot with no time later than `now` (the reader's clock when it arrived).

        A reader orders snapshots and ages quotes by these times; capped at arrival, a time set ahead by
        a forger (or a fast clock) cannot outrank the snapshots after it or keep its quotes young."""
        if self.published_at <= now and all(q.received_at <= now for q in self.quotes.values()):
            return self
        quotes = {
            pid: q if q.received_at <= now else q.model_copy(update={"received_at": now})
            for pid, q in self.quotes.items()
        }
        return self.model_copy(update={"published_at": min(self.published_at, now), "quotes": quotes})

    def age_s(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or utcnow()) - self.published_at).total_seconds())


def stale_status(quotes: dict[str, Quote], now: datetime, max_age_s: float) -> tuple[str, str] | None:
    """What stale quotes say about a feed that still publishes: ("down", "all quotes stale"),
    ("degraded", "stale A, B"), or None when every quote is fresh (flagged stale by the feed, or older
    than `max_age_s`)."""
    stale = sorted(pid for pid, q in quotes.items() if q.stale or q.age_s(now) > max_age_s)
    if stale and len(stale) == len(quotes):
        return "down", "all quotes stale"
    return ("degraded", "stale " + ", ".join(stale)) if stale else None


def _fmt_size(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def render_snapshot(snapshot: MarketSnapshot, now: datetime | None = None) -> str:
    """A compact, model-friendly text table of the snapshot."""
    now = now or utcnow()
    lines = [f"Time: {now.strftime('%Y-%m-%d %H:%M:%S')} UTC (snapshot #{snapshot.seq})", "", "Quotes:"]
    lines.append("product | last | bid | ask | spread | quote age")
    for pid, q in sorted(snapshot.quotes.items()):
        age = f"{q.age_s(now):.0f}s" + (" STALE - do not trade on it" if q.stale else "")
        lines.append(
            f"{pid} | {price(q.price)} | {price(q.best_bid)} | {price(q.best_ask)} | {price(q.spread)} | {age}"
        )
    # Sizes as a table of their own, only when the feed sent any: the quote table above keeps its columns.
    sized = [(pid, q) for pid, q in sorted(snapshot.quotes.items()) if q.bid_size is not None or q.ask_size is not None]
    if sized:
        lines += ["", "Top of book size (units of the base currency):", "product | bid size | ask size"]
        lines += [f"{pid} | {_fmt_size(q.bid_size)} | {_fmt_size(q.ask_size)}" for pid, q in sized]
    for pid, by_gran in sorted(snapshot.candles.items()):
        for gran, (_, _) in CANDLE_WINDOWS.items():
            cs = by_gran.get(gran) or []
            if not cs:
                continue
            lines.append("")
            lines.append(f"{pid} {gran} candles (oldest first): time open high low close volume")
            for c in cs:
                t = datetime.fromtimestamp(c.start, timezone.utc).strftime("%H:%M")
                lines.append(f"{t} {price(c.open)} {price(c.high)} {price(c.low)} {price(c.close)} {c.volume:.4g}")
    return "\n".join(lines)
