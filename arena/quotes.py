"""QuoteBook: the latest quote per product, kept by the connector (arena.feed, from a venue's streamed
and polled quotes) and by the desk (arena.desk, from the market snapshots the connector publishes).
Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from arena.market import MarketSnapshot, Quote, utcnow


class QuoteBook:
    """The latest quote per product. A quote is fresh while it has a two-sided book younger than max_age."""

    def __init__(self) -> None:
        self._quotes: dict[str, Quote] = {}
        self._seq: dict[str, int] = {}  # the snapshot seq each quote came with (snapshots only)

    def get(self, product_id: str) -> Quote | None:
        return self._quotes.get(product_id)

    def seq(self, product_id: str) -> int | None:
        return self._seq.get(product_id)

    def quotes(self) -> dict[str, Quote]:
        return dict(self._quotes)

    def update(self, item: Quote | MarketSnapshot) -> None:
        """A streamed quote (the connector), or every quote of a market snapshot (the desk).

        A streamed quote without bid/ask (e.g. Coinbase's older ticker) only moves the last price: the
        book (and its sizes) it keeps is as old as it was. A snapshot's quotes are the connector's view,
        stale marks included: each is taken as it is, unless it is older than the one held (snapshots
        may arrive in any order)."""
        if isinstance(item, MarketSnapshot):
            for pid, q in item.quotes.items():
                cur = self._quotes.get(pid)
                if cur is None or q.received_at >= cur.received_at:
                    self._quotes[pid] = q
                    self._seq[pid] = item.seq
            return
        old = self._quotes.get(item.product_id)
        if item.best_bid is None and old is not None and old.best_bid is not None:
            item = old.model_copy(
                update={"price": item.price, "exchange_time": item.exchange_time or old.exchange_time}
            )
        self._quotes[item.product_id] = item

    def fill(self, q: Quote, asked_at: datetime) -> bool:
        """A polled top-of-book, applied unless a newer book arrived while the request was in flight."""
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
