"""Coinbase Advanced Trade public market data: request shapes and lenient parsing. Pure, no I/O.

Protocol notes live in the shared brief (coinbase-protocol.md); the rules applied here:
- one subscribe message per channel (flat format), product ids chunked;
- route a frame on `channel`, else on a top-level `type` (error frames carry only `type`);
- prices are decimal strings, `heartbeat_counter` may be an int or a string, `best_bid`/`best_ask`
  may be missing from a ticker; unknown channels are reported, not rejected;
- REST candles come newest first with missing buckets; we return them oldest first;
- top-of-book sizes come with the WebSocket ticker (`best_bid_quantity`/`best_ask_quantity`) and the
  product book, not with the REST ticker.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from arena.exchanges.base import Product
from arena.market import Candle, Quote

COINBASE_WS_URL = "wss://advanced-trade-ws.coinbase.com"
COINBASE_REST_URL = "https://api.coinbase.com"
API_PREFIX = "/api/v3/brokerage"

GRANULARITY_SECONDS = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "FOUR_HOUR": 14400,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
# The arena's candle sets by length (arena.market.CANDLE_WINDOWS) -> Coinbase's granularity names.
GRANULARITY_BY_SECONDS = {secs: name for name, secs in GRANULARITY_SECONDS.items()}
MAX_CANDLES_PER_REQUEST = 350
PRODUCTS_PER_SUBSCRIBE = 50  # a subscribe naming ~900 products gets closed; chunk them


class FrameError(ValueError):
    """A frame that cannot be understood at all (not JSON, not an object, no channel or type)."""


def product_list(values: Iterable[str]) -> list[str]:
    """Product ids from the command line: `--products A B` and `--products A,B` both work."""
    out = [p.strip().upper() for v in values for p in v.split(",") if p.strip()]
    return list(dict.fromkeys(out))


# --- requests ---------------------------------------------------------------------------------------


def subscribe_messages(
    products: Iterable[str], channels: Iterable[str] = ("heartbeats", "ticker"), unsubscribe: bool = False
) -> list[dict]:
    """The messages to send, in order: one per channel (and per chunk of products)."""
    products = list(products)
    kind = "unsubscribe" if unsubscribe else "subscribe"
    out: list[dict] = []
    for channel in channels:
        if channel == "heartbeats":
            out.append({"type": kind, "channel": channel})
            continue
        for i in range(0, len(products), PRODUCTS_PER_SUBSCRIBE):
            out.append({"type": kind, "channel": channel, "product_ids": products[i : i + PRODUCTS_PER_SUBSCRIBE]})
    return out


def candle_path(product_id: str) -> str:
    return f"{API_PREFIX}/market/products/{product_id}/candles"


def ticker_path(product_id: str) -> str:
    return f"{API_PREFIX}/market/products/{product_id}/ticker"


def product_path(product_id: str) -> str:
    return f"{API_PREFIX}/market/products/{product_id}"


def book_path() -> str:
    return f"{API_PREFIX}/market/product_book"


def book_params(product_id: str) -> dict[str, str]:
    """Query for the top level of one product's book."""
    return {"product_id": product_id, "limit": "1"}


def candle_params(granularity: str, count: int, now: float) -> dict[str, str]:
    """Query for the latest `count` buckets (the forming one included) of one granularity."""
    secs = GRANULARITY_SECONDS[granularity]
    if not 1 <= count <= MAX_CANDLES_PER_REQUEST:
        raise ValueError(f"count must be 1..{MAX_CANDLES_PER_REQUEST}, got {count}")
    current = int(now) // secs * secs
    return {"start": str(current - (count - 1) * secs), "end": str(int(now)), "granularity": granularity}


# --- values -----------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")


def parse_time(value: Any) -> datetime | None:
    """RFC3339 with up to nanosecond precision (Python's fromisoformat stops at microseconds)."""
    if not isinstance(value, str):
        return None
    m = _RFC3339.match(value.strip())
    if not m:
        return None
    day, clock, frac, tz = m.groups()
    try:
        dt = datetime.fromisoformat(f"{day}T{clock}")
    except ValueError:
        return None
    if frac:
        dt = dt.replace(microsecond=int(frac[:6].ljust(6, "0")))
    if tz in (None, "Z"):
        return dt.replace(tzinfo=timezone.utc)
    sign = 1 if tz[0] == "+" else -1
    hh, mm = int(tz[1:3]), int(tz[-2:])
    return dt.replace(tzinfo=timezone(sign * timedelta(hours=hh, minutes=mm))).astimezone(timezone.utc)


def _num(value: Any) -> float | None:
    """A finite number from a decimal string or a number; None for missing, empty or junk."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _size(value: Any) -> float | None:
    """A resting size: a finite number >= 0, else unknown (None). A bad size costs the size, not the quote."""
    x = _num(value)
    return x if x is not None and x >= 0 else None


def _positive(value: Any) -> float | None:
    x = _num(value)
    return x if x is not None and x > 0 else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


# --- WebSocket frames -------------------------------------------------------------------------------


@dataclass
class Frame:
    """One server message, reduced to what the connector uses."""

    channel: str  # "ticker", "heartbeats", "subscriptions", "error", or anything new (ignored)
    sequence_num: int | None = None
    timestamp: datetime | None = None
    quotes: list[Quote] = field(default_factory=list)  # ticker: the well-formed entries
    skipped: list[str] = field(default_factory=list)  # ticker entries dropped, and why
    heartbeat_counter: int | None = None
    subscriptions: dict[str, list[str]] | None = None
    error: str | None = None  # error frames: message (and reason)


def parse_frame(raw: str | bytes, received_at: datetime | None = None) -> Frame:
    """Parse one WebSocket message. Raises FrameError only when nothing usable is in it."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise FrameError(f"expected a JSON object, got {type(msg).__name__}")
    channel = msg.get("channel") or msg.get("type")
    if not isinstance(channel, str) or not channel:
        raise FrameError("no channel or type")
    frame = Frame(
        channel=channel, sequence_num=_int(msg.get("sequence_num")), timestamp=parse_time(msg.get("timestamp"))
    )
    if channel == "error":
        parts = [str(msg[k]) for k in ("message", "reason") if msg.get(k)]
        frame.error = ": ".join(parts) or "unspecified error"
        return frame
    events = msg.get("events")
    if events is None:
        events = []
    if not isinstance(events, list):
        raise FrameError(f"{channel}: events is not a list")
    if channel == "ticker":
        for event in events:
            tickers = event.get("tickers") if isinstance(event, dict) else None
            if not isinstance(tickers, list):
                frame.skipped.append("event without a tickers list")
                continue
            for t in tickers:
                q, why = _ticker_quote(t, frame.timestamp, received_at)
                if q is None:
                    frame.skipped.append(why)
                else:
                    frame.quotes.append(q)
    elif channel == "heartbeats":
        for event in events:
            if isinstance(event, dict) and _int(event.get("heartbeat_counter")) is not None:
                frame.heartbeat_counter = _int(event.get("heartbeat_counter"))
    elif channel == "subscriptions":
        for event in events:
            subs = event.get("subscriptions") if isinstance(event, dict) else None
            if isinstance(subs, dict):
                frame.subscriptions = {
                    str(k): [str(p) for p in v] if isinstance(v, list) else [] for k, v in subs.items()
                }
    return frame


def _ticker_quote(t: Any, exchange_time: datetime | None, received_at: datetime | None) -> tuple[Quote | None, str]:
    if not isinstance(t, dict):
        return None, "ticker entry is not an object"
    pid = t.get("product_id")
    if not isinstance(pid, str) or not pid:
        return None, "ticker without product_id"
    price = _num(t.get("price"))
    if price is None or price <= 0:
        return None, f"{pid}: ticker without a valid price"
    bid, ask = _num(t.get("best_bid")), _num(t.get("best_ask"))
    if bid is not None and ask is not None and (bid <= 0 or ask <= 0 or bid > ask):
        return None, f"{pid}: ticker with an impossible book bid={bid} ask={ask}"
    if bid is None or ask is None or bid <= 0 or ask <= 0:
        bid = ask = None  # a one-sided or empty book is no book
    sizes = (_size(t.get("best_bid_quantity")), _size(t.get("best_ask_quantity"))) if bid is not None else (None, None)
    kw = {"received_at": received_at} if received_at else {}
    try:
        quote = Quote(
            product_id=pid,
            price=price,
            best_bid=bid,
            best_ask=ask,
            bid_size=sizes[0],
            ask_size=sizes[1],
            exchange_time=exchange_time,
            **kw,
        )
        return quote, ""
    except ValueError as exc:  # what no reader would take (arena.wire): e.g. a product id of another shape
        return None, f"{pid[:40]}: ticker the arena cannot carry: {str(exc).splitlines()[-1][:120]}"


# --- REST -------------------------------------------------------------------------------------------


def parse_candles(body: Any) -> list[Candle]:
    """`{"candles": [...]}` (newest first, string values) -> candles oldest first, one per start.

    Malformed entries are dropped; a body that is not a candles object raises ValueError."""
    if not isinstance(body, dict) or not isinstance(body.get("candles"), list):
        raise ValueError("response has no candles list")
    by_start: dict[int, Candle] = {}
    for c in body["candles"]:
        if not isinstance(c, dict):
            continue
        start = _int(c.get("start"))
        vals = {k: _num(c.get(k)) for k in ("open", "high", "low", "close", "volume")}
        if start is None or any(v is None for v in vals.values()):
            continue
        try:
            by_start[start] = Candle(start=start, **vals)
        except ValueError:  # e.g. high below low: dropped like any malformed entry
            continue
    return [by_start[s] for s in sorted(by_start)]


def parse_rest_ticker(product_id: str, body: Any, received_at: datetime | None = None) -> Quote | None:
    """Top of book from `market/products/{id}/ticker`: best_bid/best_ask plus the last trade price.

    None when the book is missing or empty (a quiet or halted product)."""
    if not isinstance(body, dict):
        return None
    bid, ask = _num(body.get("best_bid")), _num(body.get("best_ask"))
    if bid is None or ask is None or bid <= 0 or ask <= 0 or bid > ask:
        return None
    trades = body.get("trades") if isinstance(body.get("trades"), list) else []
    last = trades[0] if trades and isinstance(trades[0], dict) else {}
    price = _num(last.get("price"))
    kw = {"received_at": received_at} if received_at else {}
    try:
        return Quote(
            product_id=product_id,
            price=price if price and price > 0 else (bid + ask) / 2,
            best_bid=bid,
            best_ask=ask,
            exchange_time=parse_time(last.get("time")),
            **kw,
        )
    except ValueError:  # what no reader would take (arena.wire)
        return None


def parse_product_book(product_id: str, body: Any, received_at: datetime | None = None) -> Quote | None:
    """Top of book with its sizes from `market/product_book?limit=1`: the best bid and ask levels, the last
    trade price (`last`, else the mid) and the book's time. None when a side is empty or the body is junk."""
    book = body.get("pricebook") if isinstance(body, dict) else None
    if not isinstance(book, dict) or not isinstance(book.get("bids"), list) or not isinstance(book.get("asks"), list):
        return None
    if (
        not book["bids"]
        or not book["asks"]
        or not isinstance(book["bids"][0], dict)
        or not isinstance(book["asks"][0], dict)
    ):
        return None
    best_bid, best_ask = book["bids"][0], book["asks"][0]
    bid, ask = _positive(best_bid.get("price")), _positive(best_ask.get("price"))
    if bid is None or ask is None or bid > ask:
        return None
    last = _positive(body.get("last"))
    kw = {"received_at": received_at} if received_at else {}
    try:
        return Quote(
            product_id=product_id,
            price=last or (bid + ask) / 2,
            best_bid=bid,
            best_ask=ask,
            bid_size=_size(best_bid.get("size")),
            ask_size=_size(best_ask.get("size")),
            exchange_time=parse_time(book.get("time")),
            **kw,
        )
    except ValueError:  # what no reader would take (arena.wire)
        return None


def product_unavailable(body: Any) -> str | None:
    """Why a product record says the product does not trade now, or None when it does."""
    if isinstance(body, dict) and (
        body.get("trading_disabled") or body.get("is_disabled") or body.get("status", "online") != "online"
    ):
        return f"status={body.get('status')}"
    return None


def parse_product(product_id: str, body: Any, defaults: Product) -> Product:
    """The record from `market/products/{id}`: its base and quote increments; what is missing or not a
    positive number comes from `defaults`."""
    if not isinstance(body, dict):
        return defaults
    base, quote = _positive(body.get("base_increment")), _positive(body.get("quote_increment"))
    if base is None and quote is None:
        return defaults
    return Product(product_id, base or defaults.base_increment, quote or defaults.quote_increment, from_venue=True)


def rest_error(body: Any) -> str:
    """A readable message from a grpc-gateway error body (`{"error", "code", "message"}`)."""
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        if parts:
            return ": ".join(parts)
    return str(body)[:200]
