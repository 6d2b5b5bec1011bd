"""The web process: reads the arena's topics into a WebState and serves the page, its pushes and the JSON API.

It only reads: no ledger, no tool calls, no consumer group (every page of every `arena web` sees the
whole run: the run's topics are read from their earliest record, the market from its newest snapshot).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from arena import kafka as k
from arena.config import (
    ACTIVITY_TOPIC,
    DECISIONS_TOPIC,
    HEALTH_TOPIC,
    LEADERBOARD_TOPIC,
    MARKET_TOPIC,
    TRADES_TOPIC,
    KafkaSettings,
)
from arena.decisions import Decision
from arena.market import MarketSnapshot
from arena.portfolio import TradeOutcome
from arena.publish import BOARD_KEY, SAMPLE_PREFIX, LeaderboardRecord, ValueSample, ensure_topic
from arena.supervisor import ProcessStatus
from arena.turn_window import OpenTurns
from arena.web.html import page_html
from arena.web.state import WebState, utcnow

log = logging.getLogger("arena.web")

STATIC = Path(__file__).resolve().parent / "static"
PUSH_MIN_GAP_S = 0.25  # at most 4 pushes a second per page: fast enough to look live, cheap with many pages
HEARTBEAT_S = 1.0  # a push at least this often: the ages on the page move, and a dead server shows
RUN_TOPICS = (TRADES_TOPIC, DECISIONS_TOPIC, ACTIVITY_TOPIC, HEALTH_TOPIC, LEADERBOARD_TOPIC)


# -- reading the topics ----------------------------------------------------------------------------


class Reader:
    """Follows the topics into `state`. Every record is validated; a bad one is counted and skipped."""

    def __init__(self, kafka: KafkaSettings, state: WebState, *, fetch_wait_ms: int = 100):
        self.kafka = kafka
        self.state = state
        self.fetch_wait_ms = fetch_wait_ms
        self.run_consumer = None
        self.market_consumer = None
        self.connected = asyncio.Event()
        self.open_turns = OpenTurns()

    async def start(self) -> None:
        await asyncio.wait_for(ensure_topic(self.kafka), 10)  # compacted, whoever comes first
        # A person reads this: a 100 ms long-poll is live enough and idles far cheaper than 10 ms.
        self.run_consumer = k.consumer(
            self.kafka, *RUN_TOPICS, group_id=None, latest=False, fetch_max_wait_ms=self.fetch_wait_ms
        )
        self.market_consumer = k.consumer(
            self.kafka, MARKET_TOPIC, group_id=None, latest=True, fetch_max_wait_ms=self.fetch_wait_ms
        )
        await asyncio.gather(self.run_consumer.start(), self.market_consumer.start())
        await k.positioned([self.run_consumer, self.market_consumer])
        parts = sorted(self.market_consumer.assignment())
        if parts:  # the newest snapshot already there: prices at once, not one interval later
            ends = await self.market_consumer.end_offsets(parts)
            for tp in parts:
                self.market_consumer.seek(tp, max(0, ends[tp] - 1))
        self.connected.set()

    async def stop(self) -> None:
        for c in (self.run_consumer, self.market_consumer):
            if c is not None:
                try:
                    await asyncio.wait_for(c.stop(), 5)
                except (Exception, asyncio.CancelledError) as exc:  # shutting down anyway (aiokafka's fetcher may
                    log.debug("closing a consumer: %r", exc)  # end in a CancelledError when the broker is gone)
        self.run_consumer = self.market_consumer = None
        self.connected.clear()
        self.open_turns.close()

    async def follow(self) -> None:
        await asyncio.gather(self._follow(self.run_consumer), self._follow(self.market_consumer))

    async def _follow(self, consumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            self.open_turns.check()
            records = sorted((r for rs in batches.values() for r in rs), key=lambda r: r.timestamp)
            self.take(records)

    def take(self, records) -> None:
        """One batch of records, in order. Of several leaderboard records only the last is read."""
        s = self.state
        board_raw = None
        for r in records:
            s.records += 1
            at = datetime.fromtimestamp(r.timestamp / 1000, utcnow().tzinfo) if r.timestamp else None
            try:
                if r.topic == LEADERBOARD_TOPIC:
                    if r.key == BOARD_KEY:
                        board_raw = r.value
                    elif (r.key or b"").startswith(SAMPLE_PREFIX.encode()):
                        sample = self._decode(ValueSample, r)
                        if sample is not None:
                            s.on_sample(sample.t, sample.values)
                elif r.topic == TRADES_TOPIC:
                    if (trade := self._decode(TradeOutcome, r)) is not None:
                        s.on_trade(trade)
                elif r.topic == DECISIONS_TOPIC:
                    if (decision := self._decode(Decision, r)) is not None:
                        s.on_decision(decision, now=at)
                        self.open_turns.on_decision(decision)
                elif r.topic == ACTIVITY_TOPIC:
                    s.on_activity(r.value, r.headers, now=at)
                elif r.topic == HEALTH_TOPIC:
                    if (st := self._decode(ProcessStatus, r)) is not None:
                        s.on_process(st)
                elif r.topic == MARKET_TOPIC:
                    if (snap := self._decode(MarketSnapshot, r)) is not None:
                        s.on_snapshot(snap)
            except Exception as exc:  # never let one record stop the page
                s.skipped_records += 1
                log.warning("skipping a %s record: %r", r.topic, exc)
        if board_raw is not None:
            if self._decode(LeaderboardRecord, _Raw(LEADERBOARD_TOPIC, board_raw)) is not None:
                s.on_board(json.loads(board_raw))

    def _decode(self, model, r):
        item = k.decode(model, r.value, r.topic)
        if item is None:
            self.state.skipped_records += 1
        return item


class _Raw:
    def __init__(self, topic: str, value: bytes):
        self.topic, self.value = topic, value


# -- the HTTP side ---------------------------------------------------------------------------------


class Pushes:
    """Wakes every page's push loop when the state changes; caches the push body so that pages at the
    same point of the journal share one serialisation."""

    def __init__(self, state: WebState):
        self.state = state
        self.event = asyncio.Event()
        self.closing = False
        self.server = None  # the uvicorn server, when there is one: its exit ends every page's stream
        self.pages = 0
        self._cache: tuple[tuple[int, int, int], bytes] | None = None
        state.listeners.append(self.wake)

    def is_closing(self) -> bool:
        return self.closing or bool(self.server is not None and self.server.should_exit)

    def wake(self) -> None:
        self.event.set()
        self.event = asyncio.Event()

    def delta_bytes(self, since: int) -> bytes:
        tick = int(asyncio.get_running_loop().time() / PUSH_MIN_GAP_S)
        key = (since, len(self.state.journal), tick)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, _sse("delta", self.state.delta(since)))
        return self._cache[1]


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def _int(request: Request, name: str) -> int | None:
    v = request.query_params.get(name)
    if v is None or v == "":
        return None
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {v!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be at least 1")
    return n


def build_app(state: WebState, *, title: str = "The Agents Trading Arena") -> Starlette:
    pushes = Pushes(state)

    async def index(_: Request) -> Response:
        return HTMLResponse(page_html(title), headers={"Cache-Control": "no-cache"})

    async def api_leaderboard(_: Request) -> Response:
        board = state.leaderboard()
        if board is None:
            return JSONResponse(
                {"error": "no leaderboard yet: the tools process has not published one"}, status_code=503
            )
        return JSONResponse(board)

    async def api_trades(request: Request) -> Response:
        try:
            limit = _int(request, "limit")
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        status = request.query_params.get("status") or None
        if status not in (None, "filled", "rejected"):
            return JSONResponse({"error": "status must be filled or rejected"}, status_code=400)
        trades = state.trades_json(agent=request.query_params.get("agent") or None, status=status, limit=limit)
        return JSONResponse({"count": len(trades), "trades": trades})

    async def api_positions(_: Request) -> Response:
        return JSONResponse({"generated_at": (state.board or {}).get("generated_at"), "positions": state.positions()})

    async def api_decisions(request: Request) -> Response:
        try:
            limit = _int(request, "limit")
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        agent = request.query_params.get("agent") or None
        turns = state.decisions(agent, limit=limit, before=request.query_params.get("before") or None)
        return JSONResponse({"agent": agent, "count": len(turns), "turns": turns})

    async def api_equity(_: Request) -> Response:
        return JSONResponse(state.equity())

    async def api_market(_: Request) -> Response:
        return JSONResponse(state.market())

    async def api_health(_: Request) -> Response:
        return JSONResponse(state.health())

    async def api_state(_: Request) -> Response:
        return JSONResponse(state.snapshot_json())

    async def events(request: Request) -> Response:
        async def stream():
            pushes.pages += 1
            try:
                yield _sse("full", state.snapshot_json())
                version = len(state.journal)
                loop = asyncio.get_running_loop()
                last = loop.time()
                while not pushes.is_closing():
                    if len(state.journal) == version:
                        try:
                            await asyncio.wait_for(pushes.event.wait(), max(0.0, HEARTBEAT_S - (loop.time() - last)))
                        except asyncio.TimeoutError:
                            pass
                    if pushes.is_closing():
                        break
                    body = pushes.delta_bytes(version)
                    version = len(state.journal)
                    yield body
                    last = loop.time()
                    await asyncio.sleep(PUSH_MIN_GAP_S)
            finally:
                pushes.pages -= 1

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/events", events),
            Route("/api/leaderboard", api_leaderboard),
            Route("/api/trades", api_trades),
            Route("/api/positions", api_positions),
            Route("/api/decisions", api_decisions),
            Route("/api/equity", api_equity),
            Route("/api/market", api_market),
            Route("/api/health", api_health),
            Route("/api/state", api_state),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    app.state.pushes = pushes
    return app
