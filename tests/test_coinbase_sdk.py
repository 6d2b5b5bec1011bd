"""`arena market-sim` is Coinbase to Coinbase's own Python SDK (coinbase-advanced-py): its REST client as shipped
(every GET carries a `{}` body) gets an answer from every public endpoint that parses into the SDK's response
types, with filters, limits and market-trades windows honoured; its WebSocket client parses every message."""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from types import SimpleNamespace

import pytest
import requests
import websockets
from coinbase.rest import RESTClient
from coinbase.rest.types.product_types import (
    GetMarketTradesResponse,
    GetProductBookResponse,
    GetProductCandlesResponse,
    GetProductResponse,
    ListProductsResponse,
)
from coinbase.rest.types.public_types import GetServerTimeResponse
from coinbase.websocket import WebsocketResponse, WSClient, websocket_base
from requests.adapters import HTTPAdapter

from arena.broker import free_port
from arena.exchanges.coinbase.protocol import parse_time
from tests.support.procs import Proc

PRODUCTS = ["BTC-USD", "SOL-USD", "FARTCOIN-USD"]


class _PlainHTTP(HTTPAdapter):
    """The SDK always builds `https://{base_url}`; the simulator speaks plain HTTP. Only the scheme changes:
    method, path, query, headers and body go out exactly as the SDK made them."""

    def send(self, request, **kwargs):
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, **kwargs)


@pytest.fixture(scope="module")
def sim():
    port = free_port()
    proc = Proc(
        "-m", "arena.cli", "market-sim", "--port", str(port), "--seed", "4", "--tick-rate", "3", "--products", *PRODUCTS
    ).wait_ready(30)
    try:
        yield SimpleNamespace(port=port, ws_url=f"ws://127.0.0.1:{port}", proc=proc)
    finally:
        rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.output, proc.output


@pytest.fixture
def rest(sim):
    client = RESTClient(api_key=None, api_secret=None, base_url=f"127.0.0.1:{sim.port}", timeout=10)
    assert not client.is_authenticated  # public endpoints need no key
    client.session.mount(f"https://127.0.0.1:{sim.port}", _PlainHTTP())
    client.sent = []
    client.session.hooks["response"].append(lambda r, *a, **k: client.sent.append(r.request))
    return client


def _t(rfc3339: str) -> float:
    return parse_time(rfc3339).timestamp()


def test_every_public_endpoint_answers_the_sdk(rest):
    t = rest.get_unix_time()
    assert isinstance(t, GetServerTimeResponse) and abs(int(t.epoch_seconds) - time.time()) < 5
    assert abs(int(t.epoch_millis) / 1000 - int(t.epoch_seconds)) < 1 and t.iso.endswith("Z")

    products = rest.get_public_products()
    assert isinstance(products, ListProductsResponse)
    assert [p.product_id for p in products.products] == PRODUCTS and products.num_products == 3
    assert all(p.status == "online" and not p.trading_disabled and p.product_type == "SPOT" for p in products.products)

    sol = rest.get_public_product("SOL-USD")
    assert isinstance(sol, GetProductResponse) and sol.product_id == "SOL-USD" and float(sol.price) > 0
    assert sol.quote_increment == "0.01" and sol.base_increment

    book = rest.get_public_product_book("BTC-USD")
    assert isinstance(book, GetProductBookResponse) and book.pricebook.product_id == "BTC-USD"
    bids = [float(b.price) for b in book.pricebook.bids]
    asks = [float(a.price) for a in book.pricebook.asks]
    assert len(bids) >= 50 and len(asks) >= 50
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0], "best first, not crossed"
    assert all(float(level.size) > 0 for level in book.pricebook.bids + book.pricebook.asks)
    assert abs(_t(book.pricebook.time) - time.time()) < 5
    assert float(book.spread_absolute) == pytest.approx(asks[0] - bids[0]) and float(book.last) > 0
    assert float(book.mid_market) == pytest.approx((bids[0] + asks[0]) / 2)

    now = int(time.time())
    start = now // 300 * 300 - 3600  # twelve whole buckets and the forming one
    candles = rest.get_public_candles("BTC-USD", start=str(start), end=str(now), granularity="FIVE_MINUTE")
    assert isinstance(candles, GetProductCandlesResponse) and len(candles.candles) == 13
    starts = [int(c.start) for c in candles.candles]
    assert starts == sorted(starts, reverse=True) and all(s % 300 == 0 for s in starts)
    assert all(float(c.low) <= float(c.open) <= float(c.high) and float(c.volume) >= 0 for c in candles.candles)

    trades = rest.get_public_market_trades("SOL-USD", limit=5)
    assert isinstance(trades, GetMarketTradesResponse) and 1 <= len(trades.trades) <= 5
    assert all(tr.product_id == "SOL-USD" and tr.side in ("BUY", "SELL") and float(tr.size) > 0 for tr in trades.trades)
    assert float(trades.best_bid) < float(trades.best_ask)

    # every one of those was a GET carrying the SDK's JSON body, answered without hanging up
    assert len(rest.sent) == 6 and all(r.method == "GET" and r.body == b"{}" for r in rest.sent)


def test_errors_reach_the_sdk_as_http_errors(rest):
    with pytest.raises(requests.HTTPError) as info:
        rest.get_public_product("NOPE-USD")
    assert info.value.response.status_code == 404 and info.value.response.json()["error"] == "NOT_FOUND"
    with pytest.raises(requests.HTTPError) as info:
        rest.get_public_product_book("NOPE-USD")
    assert info.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as info:
        rest.get_public_candles("BTC-USD", start="100", end="50", granularity="ONE_MINUTE")
    assert info.value.response.status_code == 400


def test_product_filters_and_pages(rest):
    chosen = rest.get_public_products(product_ids=["SOL-USD", "FARTCOIN-USD"])
    assert [p.product_id for p in chosen.products] == ["SOL-USD", "FARTCOIN-USD"] and chosen.num_products == 2
    assert [p.product_id for p in rest.get_public_products(limit=2).products] == PRODUCTS[:2]
    assert [p.product_id for p in rest.get_public_products(limit=1, offset=1).products] == ["SOL-USD"]
    assert rest.get_public_products(product_ids=["NOPE-USD"]).products == []
    assert rest.get_public_products(product_type="FUTURE").products == []
    assert len(rest.get_public_products(product_type="SPOT").products) == 3


def test_product_book_limit_and_aggregation(rest):
    for limit in (1, 3, 10):
        book = rest.get_public_product_book("SOL-USD", limit=limit).pricebook
        assert len(book.bids) == len(book.asks) == limit
    # aggregated: every price is a multiple of the increment, bids rounded down, asks up, still not crossed
    fine = rest.get_public_product_book("BTC-USD", limit=100).pricebook
    agg = rest.get_public_product_book("BTC-USD", limit=5, aggregation_price_increment="1").pricebook
    prices = [float(x.price) for x in agg.bids + agg.asks]
    assert all(p == math.floor(p) for p in prices)
    assert len(agg.bids) == len(agg.asks) == 5 and float(agg.bids[0].price) < float(agg.asks[0].price)
    assert float(agg.bids[0].price) >= math.floor(float(fine.bids[0].price)) - 1
    assert sum(float(b.size) for b in agg.bids) > sum(float(b.size) for b in fine.bids[:5])  # levels folded together


def test_candle_limit(rest):
    now = int(time.time())
    got = rest.get_public_candles("BTC-USD", start=str(now - 3600), end=str(now), granularity="ONE_MINUTE", limit=7)
    starts = [int(c.start) for c in got.candles]
    assert len(starts) == 7 and starts[0] == now // 60 * 60, "the newest seven"


def _legacy_websockets():
    """coinbase-advanced-py 1.8 calls `websockets.connect(..., extra_headers=...)` and reads `.open`: the legacy
    client, which is what `websockets.connect` was in the websockets (<14) it pins. Give it that client."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # websockets.legacy is deprecated since websockets 14
        from websockets.legacy.client import connect as legacy_connect

    return SimpleNamespace(connect=legacy_connect, exceptions=websockets.exceptions)


def test_ws_client_subscribes_and_parses_every_message(sim, monkeypatch):
    monkeypatch.setattr(websocket_base, "websockets", _legacy_websockets())
    parsed: list[WebsocketResponse] = []
    failures: list[str] = []
    want = {"subscriptions", "heartbeats", "ticker", "candles", "market_trades", "l2_data"}
    done = threading.Event()

    def on_message(raw: str) -> None:
        try:
            msg = WebsocketResponse(json.loads(raw))
        except Exception as exc:  # the SDK's parser refused it
            failures.append(f"{exc!r}: {raw[:300]}")
            done.set()
            return
        parsed.append(msg)
        seen = {m.channel for m in parsed}
        if (
            want <= seen
            and sum(m.channel == "ticker" for m in parsed) >= 3
            and sum(m.channel == "heartbeats" for m in parsed) >= 2
        ):
            done.set()

    client = WSClient(base_url=sim.ws_url, on_message=on_message, retry=False, timeout=10)
    client.open()
    try:
        client.subscribe(["BTC-USD", "SOL-USD"], ["ticker", "candles", "market_trades", "level2"])
        client.heartbeats()
        assert done.wait(20), f"channels seen: {sorted({m.channel for m in parsed})}"
    finally:
        client.close()
    assert not failures, failures

    assert [m.sequence_num for m in parsed] == list(range(len(parsed))), "one counter per connection, no gaps"
    assert all(abs(_t(m.timestamp) - time.time()) < 30 for m in parsed)
    last_subs = [m for m in parsed if m.channel == "subscriptions"][-1].events[0].subscriptions
    assert last_subs == {
        "ticker": ["BTC-USD", "SOL-USD"],
        "candles": ["BTC-USD", "SOL-USD"],
        "heartbeats": ["heartbeats"],
        "market_trades": ["BTC-USD", "SOL-USD"],
        "level2": ["BTC-USD", "SOL-USD"],
    }

    def by(channel: str) -> list:
        return [e for m in parsed if m.channel == channel for e in m.events]

    tickers = by("ticker")
    assert tickers[0].type == "snapshot" and {t.product_id for t in tickers[0].tickers} == {"BTC-USD", "SOL-USD"}
    assert all(e.type == "update" for e in tickers[1:])
    assert all(float(t.best_bid) < float(t.best_ask) and float(t.price) > 0 for e in tickers for t in e.tickers)
    beats = by("heartbeats")
    assert [b.heartbeat_counter for b in beats] == list(range(1, len(beats) + 1)) and "UTC" in beats[0].current_time
    candles = by("candles")
    assert candles[0].type == "snapshot" and {c.product_id for c in candles[0].candles} == {"BTC-USD", "SOL-USD"}
    for e in candles:
        for c in e.candles:
            assert int(c.start) % 300 == 0 and float(c.low) <= float(c.close) <= float(c.high)
    trades = by("market_trades")
    assert trades[0].type == "snapshot" and len(trades[0].trades) >= 2
    assert all(t.side in ("BUY", "SELL") and t.trade_id and float(t.size) > 0 for e in trades for t in e.trades)

    # level2: a snapshot, then new totals per level ("0" removes one); the book kept from them never crosses
    books: dict[str, dict[str, dict[float, float]]] = {}
    l2 = by("l2_data")
    assert {e.product_id for e in l2 if e.type == "snapshot"} == {"BTC-USD", "SOL-USD"}
    for e in l2:
        book = books.setdefault(e.product_id, {"bid": {}, "offer": {}})
        assert e.type == ("update" if book["bid"] else "snapshot")
        for u in e.updates:
            assert u.side in ("bid", "offer") and _t(u.event_time)
            qty = float(u.new_quantity)
            if qty:
                book[u.side][float(u.price_level)] = qty
            else:
                assert float(u.price_level) in book[u.side], "removes only a level it had sent"
                del book[u.side][float(u.price_level)]
        assert max(book["bid"]) < min(book["offer"]), "the kept book is not crossed"


def test_market_trades_limit_and_window(rest):
    deadline = time.monotonic() + 10
    while True:  # a tape at least 4 s long
        tape = rest.get_public_market_trades("BTC-USD", limit=1000).trades
        if _t(tape[0].time) - _t(tape[-1].time) > 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    times = [_t(tr.time) for tr in tape]
    assert times == sorted(times, reverse=True), "newest first"
    assert len(rest.get_public_market_trades("BTC-USD", limit=4).trades) == 4

    start, end = math.ceil(times[-1]) + 1, math.floor(times[0])  # whole seconds inside what the tape covers
    inside = [tr.trade_id for tr, at in zip(tape, times) if start <= at <= end]
    assert inside, "the window holds trades"
    window = rest.get_public_market_trades("BTC-USD", limit=1000, start=str(start), end=str(end)).trades
    assert [tr.trade_id for tr in window] == inside
    newest = rest.get_public_market_trades("BTC-USD", limit=2, start=str(start), end=str(end)).trades
    assert [tr.trade_id for tr in newest] == inside[:2]
    since = rest.get_public_market_trades("BTC-USD", limit=1000, start=str(end)).trades
    assert since and all(_t(tr.time) >= end for tr in since)
    future = str(int(time.time()) + 3600)
    assert rest.get_public_market_trades("BTC-USD", limit=10, start=future).trades == []
