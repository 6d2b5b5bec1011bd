"""Coinbase product records to use when Coinbase cannot be asked (the feed asks it at start-up).

Increments as Coinbase lists them (GET /api/v3/brokerage/market/products/{id}: base_increment,
quote_increment). A product not listed gets the finest base step in the arena and a cent.
"""

from __future__ import annotations

from arena.exchanges.base import Product

KNOWN: dict[str, Product] = {
    p.product_id: p
    for p in (
        Product("BTC-USD", base_increment=1e-8, quote_increment=0.01),
        Product("ETH-USD", base_increment=1e-8, quote_increment=0.01),
        Product("SOL-USD", base_increment=1e-8, quote_increment=0.01),
        Product("DOGE-USD", base_increment=0.1, quote_increment=0.00001),
        Product("XRP-USD", base_increment=1e-6, quote_increment=0.0001),
        Product("FARTCOIN-USD", base_increment=0.1, quote_increment=0.0001),
    )
}


def default_product(product_id: str) -> Product:
    """The record to use for `product_id` without asking Coinbase."""
    return KNOWN.get(product_id) or Product(product_id)
