"""Desks without a broker, for the tests of limits and fills: a two-product book and a factory of desks
whose strategy "t" has the limits asked for."""

from __future__ import annotations

import pytest

from arena.desk import Desk
from arena.ledger import Ledger
from arena.market import MarketSnapshot, Quote
from arena.strategies import Limits


def book(*, btc=(50_000.0, 50_000.0), btc_sizes=(None, None), fart=(1.0, 1.0), fart_sizes=(None, None), stale=False):
    """BTC-USD and FARTCOIN-USD at (bid, ask), with top-of-book sizes (bid_size, ask_size) if given."""

    def q(pid, prices, sizes):
        (b, a), (bs, as_) = prices, sizes
        return Quote(product_id=pid, price=b, best_bid=b, best_ask=a, bid_size=bs, ask_size=as_, stale=stale)

    return MarketSnapshot(
        seq=1, quotes={"BTC-USD": q("BTC-USD", btc, btc_sizes), "FARTCOIN-USD": q("FARTCOIN-USD", fart, fart_sizes)}
    )


@pytest.fixture
def make(tmp_path):
    """make(snapshot, fee_bps=, impact_bps=, arena=, **limits): a desk on a ledger of its own whose
    strategy "t" has `limits` (arena: the arena-wide ones); no fee unless asked, so every boundary falls
    on an exact quantity."""
    made = []

    def _make(snapshot=None, *, fee_bps=0.0, impact_bps=10.0, arena=None, **limits) -> Desk:
        d = Desk(
            Ledger(tmp_path / f"l{len(made)}.db"),
            fee_bps=fee_bps,
            impact_bps=impact_bps,
            limits=arena,
            strategy_limits={"t": Limits(**limits)},
        )
        d.quotes.update(snapshot or book())
        made.append(d)
        return d

    yield _make
    for d in made:
        d.ledger.close()


def buy(d: Desk, pid: str, q: float, **kw) -> dict:
    """Agent ann, on strategy "t", buys `q` of `pid`."""
    return d.execute_trade("ann", pid, "buy", q, strategy="t", **kw)
