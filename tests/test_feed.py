"""The connector: its pure building blocks, and the real process against the simulator on the real broker."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from arena import kafka as k
from arena.config import MARKET_TOPIC
from arena.exchanges.base import Backoff, SequenceTracker, TokenBucket
from arena.feed import CandleStore, QuoteBook, describe, load_recording, retime
from arena.market import CANDLE_WINDOWS, DEFAULT_PRODUCTS, Candle, MarketSnapshot, Quote
from arena.sim.coinbase import MarketSim
from tests.support.procs import ROOT, Proc

SAMPLE = ROOT / "assets" / "sample_recording.jsonl"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


# --- pure pieces ------------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets():
    b = Backoff(base=0.5, cap=4.0, rng=random.Random(1))
    delays = [b.next() for _ in range(6)]
    for d, full in zip(delays, [0.5, 1, 2, 4, 4, 4]):
        assert full / 2 <= d <= full
    assert len(set(delays)) == len(delays), "jittered"
    b.reset()
    assert b.next() <= 0.5


def test_token_bucket_allows_a_burst_then_paces():
    now = [0.0]
    tb = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    for _ in range(3):
        assert tb.wait_time() == 0
        tb._tokens -= 1
    assert tb.wait_time() == pytest.approx(0.1)
    now[0] += 0.1
    assert tb.wait_time() == 0


def test_sequence_tracker_counts_lost_messages():
    s = SequenceTracker()
    assert [s.see(n) for n in (0, 1, 2, 5, 4, 5, None, 6)] == [0, 0, 0, 2, 0, 0, 0, 0]
    assert s.lost == 2


def q(pid="BTC-USD", price=100.0, bid=99.0, ask=101.0, at=T0) -> Quote:
    return Quote(product_id=pid, price=price, best_bid=bid, best_ask=ask, received_at=at)


def test_quote_book_freshness_and_stale_marks():
    book = QuoteBook()
    book.update(q())
    book.update(q("SOL-USD", 10, 9.9, 10.1, T0 - timedelta(seconds=40)))
    view = book.view(["BTC-USD", "SOL-USD", "NEVER-USD"], max_age=30, now=T0 + timedelta(seconds=5))
    assert set(view) == {"BTC-USD", "SOL-USD"}, "a product never quoted is left out, not invented"
    assert view["BTC-USD"].stale is False and view["SOL-USD"].stale is True
    assert book.get("SOL-USD").stale is False, "view() marks copies, the book is untouched"


def test_ticker_without_book_moves_the_price_but_not_the_books_age():
    book = QuoteBook()
    book.update(q(at=T0))
    book.update(Quote(product_id="BTC-USD", price=105.0, received_at=T0 + timedelta(seconds=20)))
    got = book.get("BTC-USD")
    assert (got.price, got.best_bid, got.best_ask, got.received_at) == (105.0, 99.0, 101.0, T0)
    assert not book.is_fresh("BTC-USD", 10, T0 + timedelta(seconds=20))
    book.update(Quote(product_id="NEW-USD", price=1.0))
    assert not book.is_fresh("NEW-USD", 10), "no book yet: not tradeable, not fresh"


def test_rest_fill_never_overwrites_a_newer_websocket_quote():
    book = QuoteBook()
    asked = T0
    book.update(q(bid=99.5, ask=100.5, at=T0 + timedelta(milliseconds=10)))  # arrived while REST was in flight
    assert not book.fill(q(bid=98, ask=102, at=T0 + timedelta(milliseconds=20)), asked)
    assert book.get("BTC-USD").best_bid == 99.5
    assert book.fill(q(bid=98, ask=102, at=T0 + timedelta(seconds=1)), T0 + timedelta(milliseconds=500))
    assert book.get("BTC-USD").best_bid == 98


def test_candle_store_keeps_the_window():
    store = CandleStore()
    cs = [Candle(start=60 * i, open=1, high=1, low=1, close=1, volume=1) for i in range(30)]
    store.put("BTC-USD", "ONE_MINUTE", cs)
    assert store.get("BTC-USD", "ONE_MINUTE") == cs[-CANDLE_WINDOWS["ONE_MINUTE"][1] :]
    assert store.view(["BTC-USD", "SOL-USD"]).keys() == {"BTC-USD"}


def test_retime_keeps_quote_ages_and_candle_alignment():
    snap = MarketSnapshot(
        seq=3,
        published_at=T0,
        quotes={
            "BTC-USD": Quote(
                product_id="BTC-USD",
                price=1,
                best_bid=1,
                best_ask=2,
                received_at=T0 - timedelta(seconds=4),
                exchange_time=T0 - timedelta(seconds=5),
                stale=True,
            )
        },
        candles={"BTC-USD": {"ONE_MINUTE": [Candle(start=900, open=1, high=1, low=1, close=1, volume=1)]}},
    )
    now = T0 + timedelta(days=3, seconds=7)
    out = retime(snap, now, 1800)
    bq = out.quotes["BTC-USD"]
    assert out.published_at == now and out.seq == 3
    assert out.published_at - bq.received_at == timedelta(seconds=4) and bq.exchange_time == now - timedelta(seconds=5)
    assert bq.stale is True and out.candles["BTC-USD"]["ONE_MINUTE"][0].start == 2700
    assert snap.published_at == T0, "the original is not modified"
    assert "STALE" in describe(out)


def test_a_sped_up_replay_keeps_every_products_quotes_in_order():
    """At 2x the gaps between snapshots halve; quote ages must too, or a quote that was 1.8 s old in
    snapshot 6 looks older than snapshot 5's and the tools' quote book keeps filling at snapshot 5."""
    snaps = load_recording(SAMPLE)
    for speed in (0.5, 1.0, 2.0, 4.0):
        first = snaps[0].published_at
        out = [retime(s, T0 + (s.published_at - first) / speed, 0, speed) for s in snaps]
        for pid in out[0].quotes:
            received = [s.quotes[pid].received_at for s in out if pid in s.quotes]
            assert received == sorted(received), (speed, pid)
        age = lambda s: s.published_at - s.quotes["SOL-USD"].received_at  # noqa: E731
        assert age(out[5]) == age(snaps[5]) / speed


def test_load_recording_skips_malformed_lines(tmp_path: Path):
    good = MarketSnapshot(seq=1, quotes={"BTC-USD": q()})
    path = tmp_path / "rec.jsonl"
    path.write_text(
        "\n".join(
            [
                k.encode(good).decode(),
                "{broken",
                '{"seq": "x"}',
                "",
                k.encode(good.model_copy(update={"seq": 2})).decode(),
            ]
        )
        + "\n"
    )
    assert [s.seq for s in load_recording(path)] == [1, 2]


def test_sample_recording_is_small_and_complete():
    assert SAMPLE.stat().st_size < 300_000
    snaps = load_recording(SAMPLE)
    assert len(snaps) == len(SAMPLE.read_text().splitlines()) >= 10
    assert [s.seq for s in snaps] == list(range(snaps[0].seq, snaps[0].seq + len(snaps)))
    for s in snaps:
        assert set(s.quotes) == set(DEFAULT_PRODUCTS)
        assert all(qq.best_bid < qq.best_ask and not qq.stale for qq in s.quotes.values())
        assert all(set(s.candles[p]) == set(CANDLE_WINDOWS) for p in DEFAULT_PRODUCTS)


# --- the connector process on the real broker ------------------------------------------------------


class Snapshots:
    """Collects the snapshots on MARKET_TOPIC that pass `keep` (the topic is shared by the test session)."""

    def __init__(self, kafka, keep):
        self.kafka, self.keep = kafka, keep
        self.items: list[MarketSnapshot] = []

    async def __aenter__(self) -> "Snapshots":
        self.consumer = k.consumer(self.kafka, MARKET_TOPIC, group_id=None, latest=False)
        await self.consumer.start()
        self.task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()

    async def _pump(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    snap = k.decode(MarketSnapshot, r.value, MARKET_TOPIC)
                    if snap is not None and self.keep(snap):
                        self.items.append(snap)

    async def wait(self, pred, timeout: float = 20.0, what: str = "") -> MarketSnapshot:
        """The first snapshot collected from now on (index `start`) that satisfies `pred`."""
        start = len(self.items)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in self.items[start:]:
                if pred(s):
                    return s
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"no snapshot {what} within {timeout}s; last: {self.items[-1:] and describe(self.items[-1])}"
        )

    async def more(self, n: int, timeout: float = 20.0) -> list[MarketSnapshot]:
        start = len(self.items)
        await until(lambda: len(self.items) >= start + n, timeout, f"{n} more snapshots")
        return self.items[start : start + n]


async def until(cond, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def count(proc: Proc, text: str) -> int:
    return sum(text in line for line in list(proc.lines))


async def start_connector(sim: MarketSim, kafka, *args: str) -> Proc:
    proc = Proc(
        "coinbase_connector.py",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--ws-url",
        sim.ws_url,
        "--rest-url",
        sim.rest_url,
        *args,
    )
    await asyncio.to_thread(proc.wait_ready, 30)
    return proc


async def stop(proc: Proc) -> None:
    rc = await asyncio.to_thread(proc.stop)
    assert rc == 0 and "Traceback" not in proc.output, proc.output


def sim_books(sim: MarketSim, pid: str, t_from: float, t_to: float) -> set[tuple[float, float]]:
    """Every (bid, ask) the simulator showed for `pid` at some time in [t_from, t_to]."""
    states, before = set(), None
    for t, bid, ask, _ in sim.history(pid):
        if t <= t_from:
            before = (bid, ask)
        elif t <= t_to:
            states.add((bid, ask))
    return states | ({before} if before else set())


def source_of(sim: MarketSim):
    return lambda s: s.source == f"coinbase-protocol {sim.ws_url}"


async def test_connector_publishes_the_sims_book_and_candles(kafka):
    interval = 0.5
    async with MarketSim(seed=11) as sim:
        proc = await start_connector(sim, kafka, "--interval", str(interval))
        try:
            assert "feed connected" in proc.output
            async with Snapshots(kafka, source_of(sim)) as snaps:
                got = await snaps.more(5)
            assert [s.seq for s in got] == list(range(got[0].seq, got[0].seq + 5))
            assert got[0].seq >= 1
            for s in got:
                t = s.published_at.timestamp()
                assert set(s.quotes) == set(DEFAULT_PRODUCTS)
                for pid, quote in s.quotes.items():
                    assert quote.best_bid < quote.best_ask and not quote.stale
                    assert quote.bid_size > 0 and quote.ask_size > 0, "top-of-book sizes travel in the snapshot"
                    # the simulator's book at publish time, or a state it had within the last two intervals
                    assert (quote.best_bid, quote.best_ask) in sim_books(sim, pid, t - 2 * interval, t), (pid, quote)
                    assert quote.received_at <= s.published_at
                for pid in DEFAULT_PRODUCTS:
                    for gran, (secs, n) in CANDLE_WINDOWS.items():
                        cs = s.candles[pid][gran]
                        # the forming bucket may have no trade yet when fetched: Coinbase then leaves it out
                        assert n - 1 <= len(cs) <= n and all(c.start % secs == 0 for c in cs)
                        assert [c.start for c in cs] == sorted({c.start for c in cs}), "oldest first, no duplicates"
                        assert cs[-1].start >= int(t) // secs * secs - secs
            # finished one-minute candles are the simulator's own
            last = got[-1]
            for pid in DEFAULT_PRODUCTS:
                for c in last.candles[pid]["ONE_MINUTE"][:-2]:
                    o, h, lo, cl, v = sim.markets[pid].minutes[c.start]
                    assert (c.open, c.high, c.low, c.close) == (o, h, lo, cl) and c.volume == pytest.approx(v, rel=1e-6)
        finally:
            await stop(proc)


async def test_connector_survives_garbage_broken_tickers_gaps_and_bad_products(kafka):
    async with MarketSim(seed=12) as sim:
        proc = await start_connector(sim, kafka, "--interval", "0.3", "--products", *DEFAULT_PRODUCTS, "NOPE-USD")
        try:
            assert "product NOPE-USD is unknown" in proc.output
            async with Snapshots(kafka, source_of(sim)) as snaps:
                before = await snaps.more(1)
                sim.send_garbage()
                sim.send_broken_ticker("BTC-USD")
                sim.inject('{"type": "error", "message": "Failed to subscribe", "reason": "simulated"}')
                sim.inject(
                    {"channel": "l2_data", "events": [{"type": "update", "product_id": "BTC-USD", "updates": []}]}
                )
                await until(
                    lambda: count(proc, "skipping malformed frame") and count(proc, "skipping ticker entry"),
                    10,
                    "skip logs",
                )
                sim.skip_sequence(3)
                await until(lambda: count(proc, "sequence gap: 3 message(s) lost"), 10, "gap log")
                after = await snaps.more(3)
            assert count(proc, "feed error: Failed to subscribe: simulated") == 1
            assert count(proc, "feed connected") == 1, "bad frames do not cost the connection"
            seqs = [s.seq for s in before + after]
            assert seqs == sorted(seqs)
            for s in after:
                assert set(s.quotes) == set(DEFAULT_PRODUCTS), "NOPE-USD is left out"
                assert all(qq.best_bid < qq.best_ask and qq.price > 0 and not qq.stale for qq in s.quotes.values())
        finally:
            await stop(proc)


async def test_connector_reconnects_after_drops_and_silence(kafka):
    interval = 0.3
    async with MarketSim(seed=13) as sim:
        proc = await start_connector(sim, kafka, "--interval", str(interval), "--watchdog", "1.5")
        try:
            async with Snapshots(kafka, source_of(sim)) as snaps:

                async def silence():
                    sim.go_silent()

                for fault, reason in [
                    (sim.drop_connections, "closed abnormally (1006)"),  # TCP gone
                    (
                        lambda: sim.drop_connections(1001, "going away"),
                        "closed (code 1001 going away)",
                    ),  # a clean close too
                    (silence, "silent for 1.5s (watchdog)"),  # open, but nothing arrives, not even heartbeats
                ]:
                    connects = count(proc, "feed connected")
                    await fault()
                    await until(lambda: count(proc, "feed connected") > connects and count(proc, reason), 15, reason)
                mark = time.time()
                fresh = await snaps.wait(
                    lambda s: s.published_at.timestamp() > mark + interval, what="after reconnecting"
                )
            seqs = [s.seq for s in snaps.items]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "publishing never stopped"
            t = fresh.published_at.timestamp()
            for pid, quote in fresh.quotes.items():
                assert (quote.best_bid, quote.best_ask) in sim_books(sim, pid, t - interval, t)
            assert len(sim.clients) == 1
        finally:
            await stop(proc)


async def test_connector_backs_off_on_rest_errors_and_marks_stale_quotes_in_an_outage(kafka):
    async with MarketSim(seed=14) as sim:
        proc = await start_connector(
            sim, kafka, "--interval", "0.3", "--max-quote-age", "1.5", "--candle-refresh", "1.5", "--watchdog", "2"
        )
        try:
            async with Snapshots(kafka, source_of(sim)) as snaps:
                sim.fail_rest(429, 2)
                sim.fail_rest(500, 2)
                await until(
                    lambda: count(proc, "failed (HTTP 429") and count(proc, "failed (HTTP 500"),
                    15,
                    "REST errors logged",
                )
                kept = await snaps.more(2)
                assert all(
                    len(s.candles[p][g]) >= n - 1
                    for s in kept
                    for p in DEFAULT_PRODUCTS
                    for g, (_, n) in CANDLE_WINDOWS.items()
                )

                sim.set_outage(True)  # WebSocket and REST both down
                stale = await snaps.wait(
                    lambda s: all(qq.stale for qq in s.quotes.values()), what="with every quote stale"
                )
                assert set(stale.quotes) == set(DEFAULT_PRODUCTS), "stale quotes are still sent, marked"
                assert all(stale.candles[p] for p in DEFAULT_PRODUCTS), "last candles kept"
                during = await snaps.more(2)
                assert all(qq.stale for s in during for qq in s.quotes.values())

                sim.set_outage(False)
                back = await snaps.wait(
                    lambda s: not any(qq.stale for qq in s.quotes.values()), timeout=30, what="fresh again"
                )
                assert all(qq.best_bid < qq.best_ask for qq in back.quotes.values())
            seqs = [s.seq for s in snaps.items]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "publishing never stopped"
        finally:
            await stop(proc)


def content(s: MarketSnapshot, speed: float | None = None) -> dict:
    """A snapshot without the times a replay rewrites. Quote ages stay: a replay's (`speed` given) is
    scaled back by a speed > 0 and compared to the microsecond rounding of the rewrite."""
    d = s.model_dump(mode="json", exclude={"published_at"})
    for pid, qd in d["quotes"].items():
        age = (s.published_at - s.quotes[pid].received_at).total_seconds()
        qd["age"] = age if speed is None else pytest.approx(age * (speed or 1), abs=1e-4)
        del qd["received_at"], qd["exchange_time"]
    for by in d["candles"].values():
        for cs in by.values():
            for c in cs:
                del c["start"]
    return d


async def test_replay_publishes_the_recording_identically_every_time(kafka):
    recorded = load_recording(SAMPLE)
    keep = lambda s: s.source == recorded[0].source and s.published_at.timestamp() > started  # noqa: E731
    started = time.time()
    async with Snapshots(kafka, keep) as snaps:
        runs = []
        for speed in ("0", "20"):
            before = len(snaps.items)
            proc = Proc(
                "coinbase_connector.py",
                "--bootstrap-servers",
                kafka.bootstrap_servers,
                "--replay",
                str(SAMPLE),
                "--speed",
                speed,
            )
            rc = await asyncio.to_thread(proc.proc.wait, 60)
            assert (
                rc == 0 and "READY" in proc.output and f"replay finished: {len(recorded)} snapshots" in proc.output
            ), proc.output
            await until(lambda: len(snaps.items) >= before + len(recorded), 10, "replayed snapshots")
            runs.append(snaps.items[before:])
    for speed, run in zip((0, 20), runs):
        assert [s.seq for s in run] == [s.seq for s in recorded]
        assert [content(s, speed) for s in run] == [content(s) for s in recorded]
        assert all(abs(s.published_at.timestamp() - time.time()) < 120 for s in run), "times rewritten to now"
        for s in run:
            for by in s.candles.values():
                for gran, cs in by.items():
                    assert all(c.start % CANDLE_WINDOWS[gran][0] == 0 for c in cs)
    span = recorded[-1].published_at - recorded[0].published_at
    fast, paced = (r[-1].published_at - r[0].published_at for r in runs)
    assert fast < span / 20 + timedelta(seconds=1)
    assert paced >= span / 20 * 0.8, "--speed 20 keeps the recording's pace, 20x faster"


async def test_stopping_while_the_server_closes_still_stops():
    """Ctrl-C at the moment the server closes: a close() on the way out raises ConnectionClosed in place
    of the cancel. The feed must stop, not treat it as a dropped connection and reconnect for ever."""
    import websockets
    from websockets.frames import Close

    from arena.exchanges.coinbase.client import WsFeed

    feed = WsFeed("ws://127.0.0.1:9", ["BTC-USD"], QuoteBook())
    entered = asyncio.Event()

    async def connection() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise websockets.ConnectionClosed(Close(1001, "going away"), None) from None

    feed._connection = connection
    task = asyncio.create_task(feed.run())
    await entered.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled(), "the feed went on reconnecting after it was told to stop"
