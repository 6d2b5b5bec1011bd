"""The simulator speaks Coinbase's protocol: WebSocket (subscribe rules, envelopes, heartbeats, errors) and REST."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from arena.broker import free_port
from arena.exchanges.coinbase import protocol as cb
from arena.market import DEFAULT_PRODUCTS
from arena.sim.coinbase import MarketSim
from tests.support import Proc


@pytest.fixture
async def sim():
    s = await MarketSim(seed=5, tick_rate=3.0).start()
    yield s
    await s.stop()


async def recv_json(ws, timeout=3.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, pred, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if pred(msg):
            return msg


async def test_subscribe_confirm_snapshot_updates_heartbeats(sim):
    async with connect(sim.ws_url) as ws:
        for m in cb.subscribe_messages(["BTC-USD", "SOL-USD"]):
            await ws.send(json.dumps(m))
        seen: list[dict] = []
        while not (
            any(m["channel"] == "heartbeats" for m in seen) and sum(m["channel"] == "ticker" for m in seen) >= 3
        ):
            seen.append(await recv_json(ws))
    # every message is an envelope with consecutive sequence numbers on this connection
    assert [m["sequence_num"] for m in seen] == list(range(len(seen)))
    assert all(cb.parse_time(m["timestamp"]) for m in seen)
    subs = [m for m in seen if m["channel"] == "subscriptions"]
    assert subs[-1]["events"][0]["subscriptions"] == {"heartbeats": ["heartbeats"], "ticker": ["BTC-USD", "SOL-USD"]}
    tickers = [m for m in seen if m["channel"] == "ticker"]
    assert tickers[0]["events"][0]["type"] == "snapshot"
    assert {t["product_id"] for t in tickers[0]["events"][0]["tickers"]} == {"BTC-USD", "SOL-USD"}
    assert all(m["events"][0]["type"] == "update" for m in tickers[1:])
    for m in tickers:
        for t in m["events"][0]["tickers"]:
            assert all(
                isinstance(t[k], str) for k in ("price", "best_bid", "best_ask", "volume_24_h", "best_bid_quantity")
            )
            assert float(t["best_bid"]) < float(t["best_ask"])
    beat = next(m for m in seen if m["channel"] == "heartbeats")
    assert isinstance(beat["events"][0]["heartbeat_counter"], int) and "UTC" in beat["events"][0]["current_time"]


async def test_bad_requests_get_error_frames(sim):
    async with connect(sim.ws_url) as ws:
        for req, reason in [
            ("not json", None),
            (
                {"type": "subscribe", "channels": ["ticker"], "product_ids": ["BTC-USD"]},
                "one subscribe message per channel",
            ),
            (
                {"type": "subscribe", "channel": "ticker", "product_ids": ["NOPE-USD"]},
                "NOPE-USD is not a valid product",
            ),
            ({"type": "subscribe", "channel": "ticker"}, "product_ids"),
            ({"type": "hello"}, "subscribe or unsubscribe"),
        ]:
            await ws.send(req if isinstance(req, str) else json.dumps(req))
            err = await recv_json(ws)
            assert err["type"] == "error" and "channel" not in err
            if reason:
                assert reason in err.get("reason", ""), err


async def test_unsubscribe_and_subscribe_deadline():
    async with MarketSim(seed=1) as s:
        s.subscribe_deadline = 0.3
        async with connect(s.ws_url) as ws:  # never subscribes
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 3)
            assert info.value.rcvd.code == 1008
        async with connect(s.ws_url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD", "SOL-USD"]}))
            await ws.send(json.dumps({"type": "unsubscribe", "channel": "ticker", "product_ids": ["SOL-USD"]}))
            m = await recv_until(
                ws,
                lambda m: (
                    m["channel"] == "subscriptions" and m["events"][0]["subscriptions"].get("ticker") == ["BTC-USD"]
                ),
            )
            assert m
            await asyncio.sleep(0.8)  # past the deadline: subscribed connections stay open and served
            mark = time.time()
            fresh = await recv_until(ws, lambda m: cb.parse_time(m["timestamp"]).timestamp() > mark)
            assert fresh["channel"] == "ticker" and fresh["events"][0]["tickers"][0]["product_id"] == "BTC-USD"


async def test_rest_endpoints(sim):
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        t = (await http.get("/api/v3/brokerage/time")).json()
        assert abs(int(t["epochSeconds"]) - time.time()) < 5 and t["iso"].endswith("Z")

        p = await http.get(cb.product_path("BTC-USD"))
        assert p.status_code == 200 and p.json()["status"] == "online" and p.json()["trading_disabled"] is False
        missing = await http.get(cb.product_path("NOPE-USD"))
        assert missing.status_code == 404 and missing.json()["error"] == "NOT_FOUND"

        tk = await http.get(cb.ticker_path("SOL-USD"), params={"limit": "3"})
        q = cb.parse_rest_ticker("SOL-USD", tk.json())
        assert 1 <= len(tk.json()["trades"]) <= 3 and q.best_bid < q.best_ask
        assert (await http.get(cb.ticker_path("SOL-USD"))).status_code == 400  # limit is required

        now = time.time()
        for gran, (secs, count) in {
            "FIFTEEN_MINUTE": (900, 12),
            "ONE_MINUTE": (60, 20),
            "ONE_HOUR": (3600, 24),
        }.items():
            r = await http.get(cb.candle_path("BTC-USD"), params=cb.candle_params(gran, count, now))
            raw = r.json()["candles"]
            starts = [int(c["start"]) for c in raw]
            assert starts == sorted(starts, reverse=True), "newest first"
            assert all(isinstance(c["open"], str) for c in raw)
            cs = cb.parse_candles(r.json())
            assert len(cs) == count and all(c.start % secs == 0 for c in cs)
            assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in cs)
            assert cs[-1].start == int(now) // secs * secs

        bad = [
            {"start": "1", "granularity": "ONE_MINUTE"},
            {"start": "10", "end": "5", "granularity": "ONE_MINUTE"},
            {"start": "0", "end": "100", "granularity": "SEVEN_MINUTE"},
            {"start": str(int(now) - 400 * 60), "end": str(int(now)), "granularity": "ONE_MINUTE"},
            {"start": "0", "end": "100", "granularity": "ONE_MINUTE", "limit": "999"},
        ]
        for params in bad:
            r = await http.get(cb.candle_path("BTC-USD"), params=params)
            assert r.status_code == 400 and r.json()["error"] == "INVALID_ARGUMENT", params
        assert (await http.get("/nowhere")).status_code == 404


async def test_rest_answers_a_get_with_a_body_however_it_arrives(sim):
    # Coinbase's own SDK sends `{}` with every GET; the body may come in the same packet as the head or later.
    # The answer waits for the whole body: closing a socket with unread bytes in it resets the connection,
    # and the client may then lose the answer.
    req = (
        f"GET {cb.product_path('SOL-USD')} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}"
    ).encode()
    for cuts in ([], [20], [len(req) - 1], [len(req) - 2, len(req) - 1], list(range(1, len(req)))):
        reader, writer = await asyncio.open_connection(sim.host, sim.port)
        for a, b in zip([0, *cuts], [*cuts, len(req)]):
            if a == len(req) - 2:  # the head is in, the body not yet: no answer
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(1), 0.3)
            writer.write(req[a:b])
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)  # the simulator closes after answering
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (cuts, raw[:200])
        assert json.loads(body)["product_id"] == "SOL-USD"


async def test_rest_failure_injection_and_outage(sim):
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        sim.fail_rest(429, 2)
        sim.fail_rest(500, 1)
        codes = [(await http.get("/api/v3/brokerage/time")).status_code for _ in range(4)]
        assert codes == [429, 429, 500, 200]
        sim.set_outage(True)
        assert (await http.get("/api/v3/brokerage/time")).status_code == 503
        with pytest.raises(websockets.InvalidStatus):
            async with connect(sim.ws_url):
                pass
        sim.set_outage(False)
        assert (await http.get("/api/v3/brokerage/time")).status_code == 200


async def test_same_seed_same_prices():
    a, b = MarketSim(seed=9, products=["BTC-USD", "ZZZ-USD"]), MarketSim(seed=9, products=["BTC-USD", "ZZZ-USD"])
    for pid in ("BTC-USD", "ZZZ-USD"):
        ma, mb = a.markets[pid], b.markets[pid]
        for _ in range(50):
            ma.step(0.2, time.time())
            mb.step(0.2, time.time())
        assert (ma.bid, ma.ask, ma.price) == (mb.bid, mb.ask, mb.price)
        assert ma.bid < ma.ask
    assert MarketSim(seed=10, products=["BTC-USD"]).markets["BTC-USD"].minutes != a.markets["BTC-USD"].minutes
    # realistic levels; an unknown id gets a stable made-up market
    starts = {pid: MarketSim(seed=1).markets[pid].p.price for pid in DEFAULT_PRODUCTS}
    assert starts == {"BTC-USD": 95_000.0, "SOL-USD": 180.0, "FARTCOIN-USD": 1.2}
    assert a.markets["ZZZ-USD"].p == b.markets["ZZZ-USD"].p


@pytest.mark.processes
def test_market_sim_command_prints_urls_and_stops_cleanly():
    port = free_port()
    proc = Proc("-m", "arena.cli", "market-sim", "--port", str(port), "--seed", "3").wait_ready(20)
    try:
        assert f"--ws-url ws://127.0.0.1:{port} --rest-url http://127.0.0.1:{port}" in proc.output
        assert httpx.get(f"http://127.0.0.1:{port}/api/v3/brokerage/time", timeout=5).status_code == 200
    finally:
        rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.output, proc.output
