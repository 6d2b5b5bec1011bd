"""The exchange adapter boundary: the registry, a second venue driven by the unchanged feed, Coinbase
product records from the venue (defaults when it cannot tell) and top-of-book sizes end to end."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import coinbase_connector
from arena import exchanges
from arena import feed as feed_mod
from arena import kafka as k
from arena.broker import free_port
from arena.exchanges import Exchange, Product, VenueOptions
from arena.exchanges.coinbase.adapter import CoinbaseExchange
from arena.feed import CandleStore, FeedConfig, QuoteBook
from arena.market import Candle, MarketSnapshot, Quote, render_snapshot
from arena.policies import parse_market
from arena.sim.coinbase import MarketSim
from tests.test_feed import Snapshots, sim_books, until


class ToyExchange(Exchange):
    """A venue in a few lines: every product but GONE-USD exists; quotes tick up every 50 ms."""

    name = "toy"

    def __init__(self, options: VenueOptions | None = None):
        super().__init__(options)
        self.tag = uuid.uuid4().hex[:8]
        self.opened = self.closed = False

    @property
    def source(self) -> str:
        return f"toy {self.tag}"

    async def __aenter__(self) -> ToyExchange:
        self.opened = True
        return self

    async def __aexit__(self, *exc) -> None:
        self.closed = True

    async def load_products(self, product_ids: list[str]) -> dict[str, Product]:
        return {
            p: Product(p, base_increment=0.5, quote_increment=0.25, from_venue=True)
            for p in product_ids
            if p != "GONE-USD"
        }

    async def run(self, products, book, candles) -> None:
        for p in products:
            candles.put(
                p, "ONE_MINUTE", [Candle(start=60 * i, open=10, high=12, low=9, close=11, volume=1) for i in range(3)]
            )
        self.candles_ready.set()
        n = 0
        while True:
            n += 1
            for p in products:
                book.update(
                    Quote(product_id=p, price=10 + n, best_bid=9 + n, best_ask=11 + n, bid_size=2.0, ask_size=3.5)
                )
            await asyncio.sleep(0.05)

    def totals(self) -> str:
        return "toy totals"


@pytest.fixture
def toy():
    exchanges.register("toy", ToyExchange)
    yield
    exchanges.EXCHANGES.pop("toy", None)


# --- registry -----------------------------------------------------------------------------------------


def test_registry_resolves_names_and_names_the_known_ones_on_a_typo():
    assert exchanges.get() is CoinbaseExchange and exchanges.get("coinbase") is CoinbaseExchange
    assert isinstance(exchanges.create("coinbase", VenueOptions(rest_url="http://x")), CoinbaseExchange)
    with pytest.raises(KeyError, match="coinbase"):
        exchanges.get("nasdaq")


def test_a_registered_venue_is_a_connector_choice(toy):
    assert "toy" in exchanges.names()
    args = coinbase_connector.build_parser().parse_args(["--exchange", "toy"])
    assert args.exchange == "toy"
    assert coinbase_connector.build_parser().parse_args([]).exchange == "coinbase"


def test_default_product_records_without_io():
    assert exchanges.base_increment("BTC-USD") == 1e-8
    assert exchanges.product("FARTCOIN-USD") == Product("FARTCOIN-USD", 0.1, 0.0001)
    new = exchanges.product("NEWCOIN-EUR")
    assert (new.base_increment, new.quote_increment, new.from_venue) == (1e-8, 0.01, False)
    assert (new.base, new.quote) == ("NEWCOIN", "EUR")


# --- a second venue through the unchanged feed ------------------------------------------------------


async def test_a_toy_venue_is_driven_by_the_feed_onto_the_market_topic(kafka, toy):
    venue = exchanges.create("toy")
    stop, ready = asyncio.Event(), []
    cfg = FeedConfig(products=["AAA-USD", "GONE-USD", "BBB-USD"], interval=0.2, max_quote_age=5)
    async with Snapshots(kafka, lambda s: s.source == venue.source) as snaps:
        task = asyncio.create_task(feed_mod.run(kafka, cfg, venue, stop=stop, on_first=lambda: ready.append(1)))
        got = await snaps.more(3)
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0
    assert venue.opened and venue.closed and ready == [1]
    for s in got:
        assert set(s.quotes) == {"AAA-USD", "BBB-USD"}, "the product the venue does not know is left out"
        for q in s.quotes.values():
            assert (q.bid_size, q.ask_size) == (2.0, 3.5) and not q.stale
        assert [c.close for c in s.candles["AAA-USD"]["ONE_MINUTE"]] == [11, 11, 11]
    assert got[-1].quotes["AAA-USD"].price > got[0].quotes["AAA-USD"].price


async def test_the_feed_refuses_when_the_venue_knows_no_product(kafka, toy):
    cfg = FeedConfig(products=["GONE-USD"], interval=0.2)
    with pytest.raises(feed_mod.FeedError, match="none of the products GONE-USD"):
        await asyncio.wait_for(feed_mod.run(kafka, cfg, exchanges.create("toy"), stop=asyncio.Event()), 15)


# --- Coinbase product records ---------------------------------------------------------------------------


async def test_product_records_come_from_the_venues_products_endpoint():
    async with MarketSim(seed=3) as sim:
        opts = VenueOptions(ws_url=sim.ws_url, rest_url=sim.rest_url)
        got = await exchanges.load_products(["FARTCOIN-USD", "NOPE-USD", "BTC-USD"], options=opts)
    assert list(got) == ["FARTCOIN-USD", "BTC-USD"], "unknown left out, order kept"
    # the simulator lists FARTCOIN-USD at 1e-8 (Coinbase: 0.1): the venue's word wins over the defaults
    assert got["FARTCOIN-USD"] == Product("FARTCOIN-USD", base_increment=1e-8, quote_increment=0.0001, from_venue=True)
    assert got["BTC-USD"] == Product("BTC-USD", base_increment=1e-8, quote_increment=0.01, from_venue=True)


async def test_product_records_fall_back_to_defaults_when_the_venue_cannot_tell():
    dead = VenueOptions(rest_url=f"http://127.0.0.1:{free_port()}")
    got = await asyncio.wait_for(exchanges.load_products(["FARTCOIN-USD", "NEWCOIN-USD"], options=dead), 10)
    assert got == {"FARTCOIN-USD": Product("FARTCOIN-USD", 0.1, 0.0001), "NEWCOIN-USD": Product("NEWCOIN-USD")}
    async with MarketSim(seed=3) as sim:
        sim.fail_rest(503, 1)
        got = await exchanges.load_products(["FARTCOIN-USD"], options=VenueOptions(rest_url=sim.rest_url))
    assert got == {"FARTCOIN-USD": Product("FARTCOIN-USD", 0.1, 0.0001)}, "a 5xx is no answer: defaults"


# --- top-of-book sizes ------------------------------------------------------------------------------------


async def test_rest_top_of_book_comes_with_sizes_from_the_product_book():
    """The WebSocket unreachable: every quote is the REST product book's, sizes included."""
    async with MarketSim(seed=4) as sim:
        venue = CoinbaseExchange(
            VenueOptions(ws_url=f"ws://127.0.0.1:{free_port()}", rest_url=sim.rest_url, max_quote_age=4)
        )
        book, candles = QuoteBook(), CandleStore()
        products = ["BTC-USD", "SOL-USD"]
        async with venue:
            task = asyncio.create_task(venue.run(products, book, candles))
            try:
                await until(
                    lambda: all(book.is_fresh(p, 4) for p in products) and venue.candles_ready.is_set(),
                    20,
                    "REST quotes",
                )
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for p in products:
            q = book.get(p)
            assert q.bid_size and q.ask_size and q.bid_size > 0 and q.ask_size > 0
            t = q.received_at.timestamp()
            assert (q.best_bid, q.best_ask) in sim_books(sim, p, t - 2, t)
            assert candles.get(p, "ONE_MINUTE")


def test_sizes_survive_the_book_the_wire_and_show_in_the_prompt_apart_from_the_quote_table():
    book = QuoteBook()
    book.update(Quote(product_id="BTC-USD", price=100, best_bid=99, best_ask=101, bid_size=1.5, ask_size=0.25))
    book.update(Quote(product_id="BTC-USD", price=100.5))  # a ticker without a book keeps the old one, sizes too
    book.update(Quote(product_id="SOL-USD", price=10, best_bid=9.9, best_ask=10.1))
    snap = MarketSnapshot(seq=1, quotes=book.view(["BTC-USD", "SOL-USD"], max_age=30))
    back = k.decode(MarketSnapshot, k.encode(snap))
    assert (back.quotes["BTC-USD"].bid_size, back.quotes["BTC-USD"].ask_size) == (1.5, 0.25)
    assert back.quotes["BTC-USD"].price == 100.5 and back.quotes["SOL-USD"].bid_size is None
    text = render_snapshot(back)
    assert "product | bid size | ask size\nBTC-USD | 1.5 | 0.25" in text and "SOL-USD | n/a" not in text
    market = parse_market(text)
    assert set(market.quotes) == {"BTC-USD", "SOL-USD"} and market.quotes["BTC-USD"].ask == 101
    unsized = MarketSnapshot(seq=1, quotes={"SOL-USD": back.quotes["SOL-USD"]})
    assert "size" not in render_snapshot(unsized), "without sizes the prompt is as before"


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_size_no_reader_would_take_is_refused(bad):
    with pytest.raises(ValueError):
        Quote(product_id="BTC-USD", price=1, best_bid=1, best_ask=1, bid_size=bad)
    with pytest.raises(ValueError):
        Quote(product_id="BTC-USD", price=1, best_bid=1, best_ask=1, ask_size=bad)


def test_a_negative_size_on_the_wire_drops_the_snapshot():
    good = MarketSnapshot(seq=1, quotes={"BTC-USD": Quote(product_id="BTC-USD", price=1, bid_size=1)})
    raw = k.encode(good).replace(b'"bid_size":1.0', b'"bid_size":-1.0')
    assert b'"bid_size":-1.0' in raw and k.decode(MarketSnapshot, raw) is None
