"""Market data messages (one concept, one type) and how a snapshot reads in an agent's prompt."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

DEFAULT_PRODUCTS = ("BTC-USD", "SOL-USD", "FARTCOIN-USD")

# Candle sets each snapshot carries: granularity name -> (seconds per candle, how many).
# ~3 h of 15-min, ~90 min of 5-min, ~20 min of 1-min.
CANDLE_WINDOWS: dict[str, tuple[int, int]] = {
    "FIFTEEN_MINUTE": (900, 12),
    "FIVE_MINUTE": (300, 18),
    "ONE_MINUTE": (60, 20),
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Quote(BaseModel):
    """Latest ticker for one product: last trade price and top of book."""

    product_id: str
    price: float
    best_bid: float | None = None
    best_ask: float | None = None
    exchange_time: datetime | None = None  # the feed's own timestamp
    received_at: datetime = Field(default_factory=utcnow)  # when the connector got it
    stale: bool = False  # set by the connector when no fresh quote arrived in time

    def age_s(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or utcnow()) - self.received_at).total_seconds())

    @property
    def spread(self) -> float | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return self.best_ask - self.best_bid


class Candle(BaseModel):
    start: int  # UNIX seconds, aligned to the granularity
    open: float
    high: float
    low: float
    close: float
    volume: float


class MarketSnapshot(BaseModel):
    """What every router receives once per interval."""

    seq: int  # increases by one per published snapshot, per connector run
    published_at: datetime = Field(default_factory=utcnow)
    quotes: dict[str, Quote]  # product_id -> latest quote
    candles: dict[str, dict[str, list[Candle]]] = Field(default_factory=dict)  # product -> granularity -> oldest first
    source: str = "coinbase"

    def age_s(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or utcnow()) - self.published_at).total_seconds())


def _fmt_price(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 1000:
        return f"{x:,.2f}"
    if x >= 1:
        return f"{x:.4f}"
    return f"{x:.6f}"


def render_snapshot(snapshot: MarketSnapshot, now: datetime | None = None) -> str:
    """A compact, model-friendly text table of the snapshot."""
    now = now or utcnow()
    lines = [f"Time: {now.strftime('%Y-%m-%d %H:%M:%S')} UTC (snapshot #{snapshot.seq})", "", "Quotes:"]
    lines.append("product | last | bid | ask | spread | quote age")
    for pid, q in sorted(snapshot.quotes.items()):
        age = f"{q.age_s(now):.0f}s" + (" STALE - do not trade on it" if q.stale else "")
        lines.append(f"{pid} | {_fmt_price(q.price)} | {_fmt_price(q.best_bid)} | {_fmt_price(q.best_ask)} | {_fmt_price(q.spread)} | {age}")
    for pid, by_gran in sorted(snapshot.candles.items()):
        for gran, (_, _) in CANDLE_WINDOWS.items():
            cs = by_gran.get(gran) or []
            if not cs:
                continue
            lines.append("")
            lines.append(f"{pid} {gran} candles (oldest first): time open high low close volume")
            for c in cs:
                t = datetime.fromtimestamp(c.start, timezone.utc).strftime("%H:%M")
                lines.append(f"{t} {_fmt_price(c.open)} {_fmt_price(c.high)} {_fmt_price(c.low)} {_fmt_price(c.close)} {c.volume:.4g}")
    return "\n".join(lines)
