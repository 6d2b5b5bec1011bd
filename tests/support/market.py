"""Synthetic market snapshots that a momentum policy reacts to predictably."""

from __future__ import annotations

from arena.market import Candle, MarketSnapshot, Quote, utcnow

BASE = {"BTC-USD": 97_000.0, "SOL-USD": 145.0, "FARTCOIN-USD": 0.81}


def snapshot(seq: int, jump: float = 1.0, source: str = "test") -> MarketSnapshot:
    """Quotes at base * jump over flat 1-minute candles at base: the momentum policy buys every product on
    a jump up (jump > 1.0005) and sells what it holds on a drop; `jump=1.0` leaves it holding still."""
    now = utcnow()
    minute = int(now.timestamp()) // 60 * 60
    quotes, candles = {}, {}
    for pid, base in BASE.items():
        px = base * jump
        quotes[pid] = Quote(product_id=pid, price=px, best_bid=px * 0.9999, best_ask=px * 1.0001, received_at=now)
        flat = [
            Candle(start=minute - 60 * (20 - i), open=base, high=base, low=base, close=base, volume=5.0)
            for i in range(20)
        ]
        candles[pid] = {"ONE_MINUTE": flat}
    return MarketSnapshot(seq=seq, quotes=quotes, candles=candles, source=source)
