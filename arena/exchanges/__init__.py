"""Venue adapters. Adding a venue: a package under arena/exchanges/ with an Exchange subclass, and one
line in EXCHANGES (or `register()` at run time). The connector's `--exchange` picks one by name.

Product records without I/O, for code that must not wait on a venue (the desk, the offline policies):
`product(product_id)` / `base_increment(product_id)`. The venue's own records: `await load_products(...)`.
"""

from __future__ import annotations

import importlib

from arena.exchanges.base import Exchange, Product, VenueOptions

DEFAULT_EXCHANGE = "coinbase"

# name -> adapter class, or "module:Class" imported on first use (keeps `import arena.exchanges` light)
EXCHANGES: dict[str, type[Exchange] | str] = {
    "coinbase": "arena.exchanges.coinbase.adapter:CoinbaseExchange",
}


def register(name: str, adapter: type[Exchange] | str) -> None:
    EXCHANGES[name] = adapter


def names() -> list[str]:
    return list(EXCHANGES)


def get(name: str = DEFAULT_EXCHANGE) -> type[Exchange]:
    """The adapter class registered as `name` (KeyError naming the known ones otherwise)."""
    try:
        adapter = EXCHANGES[name]
    except KeyError:
        raise KeyError(f"unknown exchange {name!r}; known: {', '.join(EXCHANGES)}") from None
    if isinstance(adapter, str):
        module, _, cls = adapter.partition(":")
        adapter = EXCHANGES[name] = getattr(importlib.import_module(module), cls)
    return adapter


def create(name: str = DEFAULT_EXCHANGE, options: VenueOptions | None = None) -> Exchange:
    return get(name)(options)


def product(product_id: str, exchange: str = DEFAULT_EXCHANGE) -> Product:
    """The venue's record for `product_id` from its defaults, without I/O."""
    return get(exchange).default_product(product_id)


def base_increment(product_id: str, exchange: str = DEFAULT_EXCHANGE) -> float:
    """The smallest quantity step of `product_id` (in its base currency), from the venue's defaults."""
    return product(product_id, exchange).base_increment


async def load_products(
    product_ids: list[str], exchange: str = DEFAULT_EXCHANGE, options: VenueOptions | None = None
) -> dict[str, Product]:
    """The venue's own records for `product_ids`: unknown products left out, defaults where it cannot tell."""
    async with create(exchange, options) as venue:
        return await venue.load_products(list(product_ids))


__all__ = [
    "EXCHANGES",
    "DEFAULT_EXCHANGE",
    "Exchange",
    "Product",
    "VenueOptions",
    "register",
    "names",
    "get",
    "create",
    "product",
    "base_increment",
    "load_products",
]
