"""Pure parsing of Coinbase Advanced Trade frames and REST bodies (shapes from the protocol brief)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from arena.exchanges.coinbase import protocol as cb

TICKER = {
    "channel": "ticker",
    "client_id": "",
    "timestamp": "2023-02-09T20:30:37.167359596Z",
    "sequence_num": 12,
    "events": [
        {
            "type": "snapshot",
            "tickers": [
                {
                    "type": "ticker",
                    "product_id": "BTC-USD",
                    "price": "68900.50",
                    "volume_24_h": "15328.12",
                    "low_24_h": "67500.00",
                    "high_24_h": "69200.00",
                    "low_52_w": "25000.00",
                    "high_52_w": "73800.00",
                    "price_percent_chg_24_h": "1.85",
                    "best_bid": "68900.00",
                    "best_bid_quantity": "1.5",
                    "best_ask": "68901.00",
                    "best_ask_quantity": "0.5",
                }
            ],
        }
    ],
}


def test_subscribe_one_message_per_channel_flat_format():
    msgs = cb.subscribe_messages(["BTC-USD", "SOL-USD"])
    assert msgs == [
        {"type": "subscribe", "channel": "heartbeats"},
        {"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD", "SOL-USD"]},
    ]
    assert all("channels" not in m for m in msgs)


def test_subscribe_chunks_many_products():
    products = [f"P{i}-USD" for i in range(120)]
    msgs = cb.subscribe_messages(products, channels=("ticker",))
    assert [len(m["product_ids"]) for m in msgs] == [50, 50, 20]
    assert sum((m["product_ids"] for m in msgs), []) == products
    assert cb.subscribe_messages(["X-USD"], unsubscribe=True)[1]["type"] == "unsubscribe"


def test_ticker_frame_gives_quotes_with_book_and_exchange_time():
    f = cb.parse_frame(json.dumps(TICKER))
    assert f.channel == "ticker" and f.sequence_num == 12 and not f.skipped
    (q,) = f.quotes
    assert (q.product_id, q.price, q.best_bid, q.best_ask) == ("BTC-USD", 68900.5, 68900.0, 68901.0)
    assert (q.bid_size, q.ask_size) == (1.5, 0.5), "best_bid_quantity / best_ask_quantity"
    assert q.exchange_time == datetime(2023, 2, 9, 20, 30, 37, 167359, tzinfo=timezone.utc)


@pytest.mark.parametrize("bad", [None, "", "abc", "-1", "NaN", "inf", True])
def test_a_bad_size_costs_the_size_not_the_quote(bad):
    t = dict(TICKER["events"][0]["tickers"][0], best_bid_quantity=bad)
    if bad is None:
        del t["best_bid_quantity"]
    f = cb.parse_frame(json.dumps({**TICKER, "events": [{"type": "update", "tickers": [t]}]}))
    (q,) = f.quotes
    assert (q.best_bid, q.bid_size, q.ask_size) == (68900.0, None, 0.5) and not f.skipped
    zero = dict(t, best_bid_quantity="0")
    assert (
        cb.parse_frame(json.dumps({**TICKER, "events": [{"type": "update", "tickers": [zero]}]})).quotes[0].bid_size
        == 0.0
    )


def test_ticker_without_best_bid_ask_is_a_quote_without_book():
    t = dict(TICKER["events"][0]["tickers"][0])
    del t["best_bid"], t["best_ask"]
    f = cb.parse_frame(json.dumps({**TICKER, "events": [{"type": "update", "tickers": [t]}]}))
    (q,) = f.quotes
    assert q.price == 68900.5 and q.best_bid is None and q.best_ask is None


@pytest.mark.parametrize(
    "entry, why",
    [
        ({"type": "ticker", "product_id": "BTC-USD"}, "valid price"),
        ({"type": "ticker", "product_id": "BTC-USD", "price": "abc"}, "valid price"),
        ({"type": "ticker", "product_id": "BTC-USD", "price": "NaN"}, "valid price"),
        ({"type": "ticker", "price": "1.0"}, "product_id"),
        (
            {"type": "ticker", "product_id": "BTC-USD", "price": "10", "best_bid": "11", "best_ask": "10"},
            "impossible book",
        ),
        ("junk", "not an object"),
    ],
)
def test_broken_ticker_entries_are_skipped_with_a_reason_and_good_ones_kept(entry, why):
    good = TICKER["events"][0]["tickers"][0]
    f = cb.parse_frame(json.dumps({**TICKER, "events": [{"type": "update", "tickers": [entry, good]}]}))
    assert [q.product_id for q in f.quotes] == ["BTC-USD"] and f.quotes[0].price == 68900.5
    assert len(f.skipped) == 1 and why in f.skipped[0]


def test_ticker_event_without_tickers_list_is_skipped():
    f = cb.parse_frame(json.dumps({**TICKER, "events": [{"type": "update"}]}))
    assert f.quotes == [] and f.skipped


def test_one_sided_book_counts_as_no_book():
    t = {"type": "ticker", "product_id": "X-USD", "price": "2", "best_bid": "1.9", "best_ask": ""}
    (q,) = cb.parse_frame(json.dumps({**TICKER, "events": [{"type": "update", "tickers": [t]}]})).quotes
    assert q.best_bid is None and q.best_ask is None
    sized = dict(t, best_bid_quantity="3", best_ask_quantity="4")
    (q,) = cb.parse_frame(json.dumps({**TICKER, "events": [{"type": "update", "tickers": [sized]}]})).quotes
    assert q.bid_size is None and q.ask_size is None, "no book, no sizes"


@pytest.mark.parametrize("counter", [3049, "3049"])
def test_heartbeat_counter_int_or_string(counter):
    raw = {
        "channel": "heartbeats",
        "timestamp": "2023-06-23T20:31:56.121961769Z",
        "sequence_num": 1,
        "events": [
            {"current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.5", "heartbeat_counter": counter}
        ],
    }
    f = cb.parse_frame(json.dumps(raw))
    assert f.channel == "heartbeats" and f.heartbeat_counter == 3049


def test_error_frames_route_on_top_level_type():
    f = cb.parse_frame('{"type":"error","message":"Failed to subscribe","reason":"NOPE-USD is not a valid product"}')
    assert f.channel == "error" and f.error == "Failed to subscribe: NOPE-USD is not a valid product"
    assert cb.parse_frame('{"type":"error","message":"authentication failure"}').error == "authentication failure"
    assert cb.parse_frame('{"type":"error"}').error == "unspecified error"


def test_subscriptions_confirmation():
    raw = '{"channel":"subscriptions","timestamp":"2023-02-09T20:32:54.5Z","sequence_num":0,"events":[{"subscriptions":{"ticker":["BTC-USD"],"heartbeats":["heartbeats"]}}]}'
    assert cb.parse_frame(raw).subscriptions == {"ticker": ["BTC-USD"], "heartbeats": ["heartbeats"]}


@pytest.mark.parametrize("channel", ["l2_data", "status", "market_trades", "something_new"])
def test_unknown_channels_parse_without_data(channel):
    f = cb.parse_frame(json.dumps({"channel": channel, "sequence_num": 5, "events": [{"type": "update", "x": 1}]}))
    assert f.channel == channel and f.sequence_num == 5 and f.quotes == [] and f.error is None


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[1, 2]",
        "42",
        '{"events": []}',
        '{"channel": ""}',
        '{"channel": "ticker", "events": {}}',
        b"\xff\xfe",
    ],
)
def test_garbage_frames_raise_frame_error(raw):
    with pytest.raises(cb.FrameError):
        cb.parse_frame(raw)


def test_client_id_absent_and_sequence_as_string_are_fine():
    raw = {k: v for k, v in TICKER.items() if k != "client_id"} | {"sequence_num": "77"}
    assert cb.parse_frame(json.dumps(raw)).sequence_num == 77


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2023-02-09T20:30:37.167359596Z", datetime(2023, 2, 9, 20, 30, 37, 167359, tzinfo=timezone.utc)),
        ("2023-02-09T20:30:37Z", datetime(2023, 2, 9, 20, 30, 37, tzinfo=timezone.utc)),
        ("2023-02-09T20:30:37.5+02:00", datetime(2023, 2, 9, 18, 30, 37, 500000, tzinfo=timezone.utc)),
        ("2023-02-09 20:30:37.1", datetime(2023, 2, 9, 20, 30, 37, 100000, tzinfo=timezone.utc)),
        ("yesterday", None),
        ("2023-13-45T99:00:00Z", None),
        (12345, None),
    ],
)
def test_parse_time(text, expected):
    assert cb.parse_time(text) == expected


def test_candles_sorted_oldest_first_with_gaps_kept_and_junk_dropped():
    body = {
        "candles": [
            {"start": "1712192700", "low": "1", "high": "3", "open": "2", "close": "2.5", "volume": "10"},
            {
                "start": "1712192580",
                "low": "1",
                "high": "2",
                "open": "1.5",
                "close": "1.8",
                "volume": "3",
            },  # 1712192640 missing
            {"start": "1712192520", "low": "x", "high": "2", "open": "1.5", "close": "1.8", "volume": "3"},
            {"start": "1712192460", "low": "1", "high": "2", "open": "1", "close": "1.5", "volume": "1"},
            "junk",
        ]
    }
    cs = cb.parse_candles(body)
    assert [c.start for c in cs] == [1712192460, 1712192580, 1712192700]
    assert (cs[-1].open, cs[-1].high, cs[-1].low, cs[-1].close, cs[-1].volume) == (2, 3, 1, 2.5, 10)
    assert cb.parse_candles({"candles": []}) == []


@pytest.mark.parametrize("body", [None, [], {"error": "x"}, {"candles": "no"}])
def test_candles_bad_body_raises(body):
    with pytest.raises(ValueError):
        cb.parse_candles(body)


def test_candle_params_cover_the_window_aligned():
    now = 1_700_000_123.7
    p = cb.candle_params("FIVE_MINUTE", 18, now)
    assert p["granularity"] == "FIVE_MINUTE" and p["end"] == "1700000123"
    start = int(p["start"])
    assert start % 300 == 0 and (int(now) // 300 * 300 - start) // 300 == 17
    with pytest.raises(ValueError):
        cb.candle_params("ONE_MINUTE", 351, now)
    with pytest.raises(KeyError):
        cb.candle_params("SEVEN_MINUTE", 1, now)


def test_rest_ticker_top_of_book():
    body = {
        "trades": [
            {
                "trade_id": "995098663",
                "product_id": "BTC-USD",
                "price": "68923.67",
                "size": "0.00064",
                "time": "2026-04-07T00:28:58.544778Z",
                "side": "SELL",
                "bid": "",
                "ask": "",
                "exchange": "coinbase",
            }
        ],
        "best_bid": "68923.66",
        "best_ask": "68923.67",
    }
    q = cb.parse_rest_ticker("BTC-USD", body)
    assert (q.price, q.best_bid, q.best_ask) == (68923.67, 68923.66, 68923.67)
    assert q.bid_size is None and q.ask_size is None, "the REST ticker has no sizes"
    assert q.exchange_time == datetime(2026, 4, 7, 0, 28, 58, 544778, tzinfo=timezone.utc)
    no_trades = cb.parse_rest_ticker("BTC-USD", {"trades": [], "best_bid": "10", "best_ask": "12"})
    assert no_trades.price == 11.0
    assert cb.parse_rest_ticker("BTC-USD", {"trades": [], "best_bid": "", "best_ask": ""}) is None
    assert cb.parse_rest_ticker("BTC-USD", "oops") is None


def test_rest_error_message_and_product_list():
    assert (
        cb.rest_error({"error": "NOT_FOUND", "code": 5, "message": "product not found"})
        == "NOT_FOUND: product not found"
    )
    assert cb.rest_error("<html>bad gateway</html>") == "<html>bad gateway</html>"
    assert cb.product_list(["btc-usd,SOL-USD", "FARTCOIN-USD", "BTC-USD", " "]) == [
        "BTC-USD",
        "SOL-USD",
        "FARTCOIN-USD",
    ]


BOOK = {
    "pricebook": {
        "product_id": "BTC-USD",
        "bids": [{"price": "68923.66", "size": "0.25"}],
        "asks": [{"price": "68923.67", "size": "1.75"}],
        "time": "2026-04-07T00:28:58.544778Z",
    },
    "last": "68923.67",
    "mid_market": "68923.665",
    "spread_bps": "0.0014",
    "spread_absolute": "0.01",
}


def test_product_book_top_of_book_with_sizes():
    q = cb.parse_product_book("BTC-USD", BOOK)
    assert (q.price, q.best_bid, q.best_ask, q.bid_size, q.ask_size) == (68923.67, 68923.66, 68923.67, 0.25, 1.75)
    assert q.exchange_time == datetime(2026, 4, 7, 0, 28, 58, 544778, tzinfo=timezone.utc)
    no_last = cb.parse_product_book("BTC-USD", {"pricebook": BOOK["pricebook"]})
    assert no_last.price == pytest.approx(68923.665)
    junk_size = {"pricebook": {**BOOK["pricebook"], "bids": [{"price": "68923.66", "size": "x"}]}}
    assert cb.parse_product_book("BTC-USD", junk_size).bid_size is None


@pytest.mark.parametrize(
    "body",
    [
        None,
        "oops",
        {"pricebook": {"bids": [], "asks": [{"price": "1", "size": "1"}]}},
        {"pricebook": {"bids": [{"price": "2", "size": "1"}], "asks": [{"price": "1", "size": "1"}]}},
        {"pricebook": {"bids": [{"price": "0", "size": "1"}], "asks": [{"price": "1", "size": "1"}]}},
        {"pricebook": {"bids": ["x"], "asks": [{"price": "1", "size": "1"}]}},
    ],
)
def test_product_book_without_a_two_sided_book_is_no_quote(body):
    assert cb.parse_product_book("BTC-USD", body) is None


def test_product_record_increments_with_defaults_for_what_is_missing():
    from arena.exchanges.base import Product

    defaults = Product("FARTCOIN-USD", 0.1, 0.0001)
    body = {"product_id": "FARTCOIN-USD", "base_increment": "0.01", "quote_increment": "0.00001", "status": "online"}
    assert cb.parse_product("FARTCOIN-USD", body, defaults) == Product("FARTCOIN-USD", 0.01, 0.00001, from_venue=True)
    assert cb.parse_product("FARTCOIN-USD", {"base_increment": "0.01"}, defaults).quote_increment == 0.0001
    for junk in (None, "x", {}, {"base_increment": "-1", "quote_increment": "abc"}):
        assert cb.parse_product("FARTCOIN-USD", junk, defaults) is defaults
    assert cb.product_unavailable(body) is None
    assert cb.product_unavailable({**body, "trading_disabled": True}) == "status=online"
    assert cb.product_unavailable({**body, "status": "delisted"}) == "status=delisted"
