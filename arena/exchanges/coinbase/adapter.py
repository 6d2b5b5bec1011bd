"""Coinbase Advanced Trade as an arena venue: WebSocket ticker for quotes, public REST for products,
candles and top-of-book of quiet products (any Coinbase-protocol server, e.g. `arena market-sim`, works)."""

from __future__ import annotations

import asyncio
import logging

import httpx

from arena.exchanges.base import CandleSink, Exchange, Product, QuoteSink, VenueOptions
from arena.exchanges.coinbase import protocol as cb
from arena.exchanges.coinbase.client import RestPoller, WsFeed
from arena.exchanges.coinbase.products import default_product

log = logging.getLogger("arena.feed")

HEADERS = {"User-Agent": "agents-trading-arena/0.1", "Accept": "application/json"}


class CoinbaseExchange(Exchange):
    name = "coinbase"
    ws_url_default = cb.COINBASE_WS_URL
    rest_url_default = cb.COINBASE_REST_URL

    def __init__(self, options: VenueOptions | None = None):
        super().__init__(options)
        self.ws_url = self.options.ws_url or cb.COINBASE_WS_URL
        self.rest_url = (self.options.rest_url or cb.COINBASE_REST_URL).rstrip("/")
        self._client: httpx.AsyncClient | None = None
        self.ws: WsFeed | None = None

    @property
    def source(self) -> str:
        return "coinbase" if self.ws_url == cb.COINBASE_WS_URL else f"coinbase-protocol {self.ws_url}"

    @staticmethod
    def default_product(product_id: str) -> Product:
        return default_product(product_id)

    async def __aenter__(self) -> CoinbaseExchange:
        # Plain http (the simulator) needs no TLS context; building one costs ~0.1-0.3 s at start-up.
        tls = self.rest_url.startswith("https://")
        self._client = httpx.AsyncClient(base_url=self.rest_url, timeout=10.0, headers=HEADERS, verify=tls)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _rest(
        self, products: list[str], book: QuoteSink | None = None, candles: CandleSink | None = None
    ) -> RestPoller:
        if self._client is None:
            raise RuntimeError("use the exchange as `async with exchange:`")
        o = self.options
        return RestPoller(self._client, products, book, candles, candle_refresh=o.candle_refresh,  # type: ignore[arg-type]
                          max_quote_age=o.max_quote_age, candles_ready=self.candles_ready)  # fmt: skip

    async def load_products(self, product_ids: list[str]) -> dict[str, Product]:
        return await self._rest([]).load_products(list(product_ids))

    async def run(self, products: list[str], book: QuoteSink, candles: CandleSink) -> None:
        rest = self._rest(products, book, candles)
        self.ws = WsFeed(self.ws_url, products, book, watchdog=self.options.watchdog)
        tasks = [asyncio.create_task(self.ws.run(), name="ws"), asyncio.create_task(rest.run(), name="rest")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def totals(self) -> str:
        if self.ws is None:
            return ""
        st = self.ws.stats
        return (f"{st.connects} connection(s), {st.frames} frames, {st.quotes} quotes, {st.skipped} skipped, "
                f"{st.errors} error frame(s), {st.lost} lost by sequence")  # fmt: skip
