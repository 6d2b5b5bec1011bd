"""The tools process at run time: the three trading tools served over calfkit, the market, decision and
process-health feeds that keep the desk and the dashboard current, every trade published to TRADES_TOPIC,
and every agent's account (what get_portfolio returns) to ACCOUNTS_TOPIC for its turn prompts (arena.accounts).

Start-up is one calfkit Worker (and Client) per tool node, all started together: each node joins its
own consumer group and Tansu holds a join ~1 s, so in parallel the three take ~1 s instead of ~3-15 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from arena import fmt
from arena import kafka as k
from arena.accounts import AccountPublisher
from arena.accounts import ensure_topic as ensure_accounts_topic
from arena.compat.key_lanes import spread_key_lanes
from arena.compat.worker_adverts import advertise_when_positioned
from arena.config import CONSUMER_TUNING, DECISIONS_TOPIC, HEALTH_TOPIC, MARKET_TOPIC, TRADES_TOPIC, KafkaSettings
from arena.decisions import Decision
from arena.desk import Desk
from arena.market import MarketSnapshot, utcnow
from arena.portfolio import Fill, Rejection
from arena.supervisor import ProcessStatus
from arena.tool_names import TOOL_NAMES
from arena.turn_window import OpenTurns

log = logging.getLogger("arena.tools")
SERVED = "tools served"  # logged once the tools answer


def _describe(t: Fill | Rejection) -> str:
    if isinstance(t, Fill):
        return f"{t.agent} {t.side} {t.quantity:g} {t.product_id} @ {fmt.price(t.price)} (fee {fmt.money(t.fee)})"
    return f"{t.agent} REJECTED {t.side} {t.quantity:g} {t.product_id[:40]}: {t.reason}"


class ToolsService:
    """Serves the desk to every agent; `start()` returns once the tools answer, `stop()` drains."""

    def __init__(
        self,
        kafka: KafkaSettings,
        desk: Desk,
        *,
        max_workers: int = 8,
        state=None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ):
        self.kafka = kafka
        # A feed task that keeps failing is fatal: the process must not serve on without it.
        self.on_fatal = on_fatal or (lambda exc: log.critical("%s", exc))
        self.desk = desk
        self.max_workers = max_workers
        self.state = state  # the dashboard's ArenaState, or None
        self._trades: asyncio.Queue[Fill | Rejection | None] = asyncio.Queue()
        self._workers: list = []
        self._tasks: list[asyncio.Task] = []
        self._market = None
        self._decisions = None
        self._health = None
        self._live_from: dict[tuple[str, int], int] = {}  # market partition -> first offset published after our start
        self.open_turns = OpenTurns()
        self._producer = None
        self.accounts: AccountPublisher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        desk.on_trade = self._on_trade
        desk.on_call = self._on_call

    # -- callbacks from the desk (run inside the tool call) -----------------------------------------

    def _on_trade(self, trade: Fill | Rejection) -> None:
        log.info("%s", _describe(trade))
        if self.state is not None:
            self.state.on_trade(trade)
        if self._loop is not None:  # thread-safe: a sync tool could run in an executor thread
            self._loop.call_soon_threadsafe(self._trades.put_nowait, trade)
            if self.accounts is not None:
                self._loop.call_soon_threadsafe(self.accounts.on_trade, trade.agent)

    def _on_call(self, agent: str, tool: str, reacted_to: datetime | None) -> None:
        if reacted_to is not None:  # said by the caller: never later than now, or its series would wait for it
            reacted_to = min(reacted_to, utcnow())
        if self.state is not None:
            self.state.on_tool_call(agent, tool, reacted_to=reacted_to)
        if self._loop is not None and self.accounts is not None:
            self._loop.call_soon_threadsafe(self.accounts.on_call, agent)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the tools and open the feeds."""
        from calfkit import Client, Worker  # ~3 s import: keep it off the --help path

        from arena import tools as trading_tools

        self._loop = asyncio.get_running_loop()
        # Fresh parts each time: a failed start is stopped and tried again
        self._trades, self._workers, self._tasks, self._live_from = asyncio.Queue(), [], [], {}
        security = self.kafka.faststream_security()
        servers = [s.strip() for s in self.kafka.bootstrap_servers.split(",") if s.strip()]
        spread_key_lanes()  # one stuck tool call must not hold up other agents' calls (docs/RELIABILITY.md)
        for tool in trading_tools.TOOLS:
            client = Client.connect(
                servers,
                # FastStream logs every message at INFO to stdout; ours keeps stdout for status lines.
                logger=logging.getLogger("arena.tools.faststream"),
                **({"security": security} if security else {}),
            )
            worker = Worker(
                client,
                nodes=[tool],
                max_workers=self.max_workers,
                extra_subscribe_kwargs=dict(CONSUMER_TUNING),
                name=f"tools:{tool.name}",
            )
            trading_tools.provide_desk(worker, self.desk)
            self._workers.append(worker)
        self._producer = k.producer(self.kafka)
        self.accounts = AccountPublisher(self._producer, self.desk)
        self._market = k.consumer(self.kafka, MARKET_TOPIC, group_id=None)
        self._decisions = k.consumer(self.kafka, DECISIONS_TOPIC, group_id=None)
        # From the beginning: a supervisor reports its children's start before this process exists, and
        # the last report per process is its state. (A few records per process: cheap to read.)
        self._health = k.consumer(self.kafka, HEALTH_TOPIC, group_id=None, latest=False)
        with k.consumers_started() as started:
            for w in self._workers:
                advertise_when_positioned(w, started)
            await asyncio.gather(
                *(w.start() for w in self._workers),
                self._producer.start(),
                self._start_market(),
                self._decisions.start(),
                self._health.start(),
                ensure_accounts_topic(self.kafka),
            )
        await k.positioned(started)  # a call, snapshot or decision sent right after READY is not skipped
        self._tasks = [
            self._supervise("market", "the market feed", self._follow_market),
            self._supervise("decisions", "the decisions feed", self._follow_decisions),
            self._supervise("health", "the process-health feed", self._follow_health),
            self._supervise("trades", "the trades publisher", self._publish_trades),
            self._supervise("accounts", "the accounts publisher", self.accounts.run),
        ]
        if self.state is not None:  # the leaderboard for the web page (arena web), on LEADERBOARD_TOPIC
            from arena.publish import LeaderboardPublisher

            board = LeaderboardPublisher(self._producer, self.state, self.desk.ledger.accounts, kafka=self.kafka)
            self._tasks.append(asyncio.create_task(board.run(), name="leaderboard"))
        # Also on stderr (the log), which a supervisor can watch when stdout is the dashboard's terminal.
        log.info("%s: %s", SERVED, ", ".join(TOOL_NAMES))

    async def _start_market(self) -> None:
        """Open the market feed positioned at the latest snapshot of each partition, so prices are
        known right after a restart instead of one interval later.

        No consumer group: the tools only ever need the newest quotes, and a group would add a
        join wait (and a stale member after a crash) to every start."""
        await self._market.start()
        await k.positioned([self._market])  # assigned now: a snapshot sent right after READY is not missed
        parts = sorted(self._market.assignment())
        if not parts:
            return
        ends = await self._market.end_offsets(parts)
        for tp in parts:
            self._market.seek(tp, max(0, ends[tp] - 1))
            self._live_from[(tp.topic, tp.partition)] = ends[tp]

    def _supervise(self, name: str, what: str, run) -> asyncio.Task:
        task = asyncio.create_task(k.supervised(what, run), name=name)

        def ended(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.on_fatal(t.exception())

        task.add_done_callback(ended)
        return task

    async def stop(self) -> None:
        """Stop serving (in-flight calls finish), then flush the trades topic and close the feeds."""
        results = await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.warning("worker stop failed: %s", r)
        self._trades.put_nowait(None)  # publisher: flush what is queued, then end
        publisher = next((t for t in self._tasks if t.get_name() == "trades"), None)
        if publisher is not None:
            try:
                await asyncio.wait_for(publisher, 5)
            except (asyncio.TimeoutError, Exception) as exc:
                log.warning("trades topic not fully flushed: %r", exc)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.open_turns.close()  # the feed is stopped: no turn opens again
        feeds = (self._market, self._decisions, self._health, self._producer)
        self._market = self._decisions = self._health = self._producer = None
        self._workers, self._tasks = [], []
        for c in feeds:
            if c is not None:
                try:
                    await c.stop()
                except Exception as exc:  # shutting down anyway
                    log.debug("closing %s: %r", c, exc)

    # -- feeds -----------------------------------------------------------------------------------

    async def _follow_market(self) -> None:
        def take(r, snapshot: MarketSnapshot) -> None:
            # Times capped at our clock: a snapshot dated ahead cannot keep its quotes young or its sample last.
            snapshot = snapshot.not_after(utcnow())
            self.desk.quotes.update(snapshot)
            self.accounts.on_snapshot(snapshot.seq, snapshot.published_at)  # marks changed: value every account
            if self.state is not None:
                # the snapshot(s) already on the topic at start-up are from before us, maybe from an earlier run
                catch_up = r.offset < self._live_from.get((r.topic, r.partition), 0)
                self.state.on_snapshot(snapshot, catch_up=catch_up)

        await self._consume(self._market, MarketSnapshot, take)

    async def _follow_decisions(self) -> None:
        def take(_, decision: Decision) -> None:
            self.open_turns.on_decision(decision)
            if decision.status == "started":
                self.accounts.on_turn(decision.agent, decision.strategy)
            if self.state is not None:
                self.state.on_decision(decision)

        await self._consume(self._decisions, Decision, take, every_poll=self.open_turns.check)

    async def _follow_health(self) -> None:
        def take(_, st: ProcessStatus) -> None:
            if st.status == "exited":
                log.warning("%s exited unexpectedly (%s)", st.name, st.detail)
            if self.state is not None:
                self.state.on_process(st)

        await self._consume(self._health, ProcessStatus, take)

    @staticmethod
    async def _consume(consumer, model, take: Callable, every_poll: Callable[[], None] = lambda: None) -> None:
        """`take(record, item)` for every valid record, forever, each on its own: a record that is
        rejected, or that `take` fails on, is logged and the next one is taken. `every_poll()` after
        each poll (at least once a second)."""
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            every_poll()
            for records in batches.values():
                for r in records:
                    item = k.decode_record(model, r)
                    if item is None:
                        continue
                    try:
                        take(r, item)
                    except Exception as exc:
                        log.error(
                            "could not apply the %s record on %s partition %s offset %s: %r",
                            model.__name__,
                            r.topic,
                            r.partition,
                            r.offset,
                            exc,
                        )

    async def _publish_trades(self) -> None:
        while True:
            trade = await self._trades.get()
            if trade is None:
                return
            try:
                await self._producer.send(TRADES_TOPIC, k.encode(trade), key=trade.agent.encode())
            except Exception as exc:  # the ledger has it; the topic is for observers
                log.warning("could not publish trade %s to %s: %r", trade.trade_id, TRADES_TOPIC, exc)


def standings_line(accounts: dict, quotes: dict, top: int = 8) -> str:
    """One headless status line: agents by total value."""
    rows = sorted(accounts.values(), key=lambda a: a.total_value(quotes), reverse=True)
    parts = [f"{a.agent} {fmt.money(a.total_value(quotes))} ({a.return_pct(quotes):+.3f}%)" for a in rows[:top]]
    return "standings: " + (" | ".join(parts) if parts else "no agents yet")


async def headless(
    stop: asyncio.Event, tick: Callable[[], None], status: Callable[[], str], every_s: float = 30.0
) -> None:
    """Without the dashboard: `tick` every second (the value history), a status line every `every_s`."""
    loop = asyncio.get_running_loop()
    next_status = loop.time() + every_s
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            tick()
            if loop.time() >= next_status:
                print(status(), flush=True)
                next_status = loop.time() + every_s
