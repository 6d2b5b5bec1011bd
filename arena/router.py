"""One trading agent per process: a calfkit Agent hosted in-process, driven by the newest market snapshot.

The turn loop never queues. Snapshots land in a one-item slot that always holds the newest unseen
one; while a turn runs, a newer snapshot replaces the waiting one (the replaced tick is reported as
"skipped"). Each turn is one calfkit run of the agent; its outcome is broadcast as a Decision.

The prompt carries the agent's own account as get_portfolio would return it, valued at the turn's
snapshot (arena.accounts): the market consumer also reads ACCOUNTS_TOPIC, keeping this agent's records,
and a turn waits up to `account_wait_s` for the valuation at its snapshot before it prompts with the
newest one it has (saying how old it is). A usual turn is then model -> trades -> model.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from arena import auth, fmt, polling
from arena import kafka as k
from arena.accounts import ACCOUNTS_TOPIC, AccountRecord, OwnAccount, render_account
from arena.compat.client_inbox import tune_client_inbox
from arena.compat.key_lanes import spread_key_lanes
from arena.config import ACTIVITY_TOPIC, CONSUMER_TUNING, DECISIONS_TOPIC, MARKET_TOPIC, KafkaSettings
from arena.decisions import TURN_KEY, Decision
from arena.market import MarketSnapshot, render_snapshot, utcnow
from arena.startup import catching_up
from arena.tool_names import TOOL_NAMES
from arena.wire import AGENT_NAME_RE, clip

log = logging.getLogger(__name__)


T = TypeVar("T")

TOOLS_WAIT_S = 5.0  # how long a turn waits for the trading tools to be advertised before it is skipped


def preload_calfkit() -> None:
    """Import the calfkit parts a router uses (several seconds) ahead of connecting."""
    import calfkit.nodes  # noqa: F401
    import calfkit.worker  # noqa: F401


def market_group(agent: str) -> str:
    """Each router's own consumer group on the market topic, so every router gets every snapshot."""
    return f"router.{agent}"


class LatestSlot(Generic[T]):
    """A mailbox of capacity one that keeps the newest item: `put` replaces whatever still waits."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._ready = asyncio.Event()

    def put(self, item: T) -> T | None:
        """Store `item`; return the item it displaced (never taken), if any."""
        displaced, self._item = self._item, item
        self._ready.set()
        return displaced

    async def take(self) -> T:
        await self._ready.wait()
        self._ready.clear()
        item, self._item = self._item, None
        assert item is not None
        return item


def summarize_snapshot(snapshot: MarketSnapshot) -> str:
    """One line of what the market looked like, for Decision.summary and the viewer."""
    parts = []
    for pid, q in sorted(snapshot.quotes.items()):
        parts.append(f"{pid.split('-')[0]} {fmt.price(q.price)}" + (" STALE" if q.stale else ""))
    return f"#{snapshot.seq} " + (" · ".join(parts) if parts else "no quotes")


TURN_INSTRUCTION = (
    "Decide what to do now: trade or hold. Your account above is what get_portfolio returns; call "
    "get_portfolio only if it is not shown or not valued at this snapshot. "
    "Tool calls you emit together run in parallel and in no particular order. "
    "End with one short sentence of reasoning."
)
ACCOUNT_WAIT_S = 2.0  # how long a turn waits for its account valued at its snapshot (arena.accounts)


def build_prompt(
    snapshot: MarketSnapshot,
    previous: Decision | None = None,
    now: datetime | None = None,
    account: AccountRecord | None = None,
) -> str:
    """The per-turn user prompt: the market table, the agent's account, its last conclusion, and the instruction."""
    lines = [render_snapshot(snapshot, now=now), "", render_account(account, snapshot.seq, snapshot.published_at), ""]
    if previous is not None and previous.output:
        last = " ".join(previous.output.split())[:300]
        lines += [f"Your previous turn (snapshot #{previous.tick_seq}) concluded: {last}", ""]
    lines.append(TURN_INSTRUCTION)
    return "\n".join(lines)


def fault_reason(exc: BaseException) -> str:
    """A short, human reason for a failed run (the deepest message in calfkit's fault report)."""
    from calfkit import NodeFaultError

    if isinstance(exc, NodeFaultError):
        messages = [r.message for r in exc.report.walk() if r.message]
        types = [r.exception.type for r in exc.report.walk() if r.exception is not None]
        msg = messages[-1] if messages else exc.report.error_type
        return f"{types[-1]}: {msg}" if types and not msg.startswith(types[-1]) else msg
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _control_plane(topic: str) -> bool:
    """calfkit's shared directory topics (calf.capabilities, calf.agents), not an agent's own fan-out tables."""
    return topic.startswith("calf.") and not topic.startswith("calf.fanout.")


def _deadline_guard(ctx: Any) -> str | None:
    """Agent before_node seam: refuse to continue a turn whose router has given up on it.

    A timed-out run (or a prompt redelivered to a restarted agent) would otherwise keep calling
    the model and trading on an old snapshot after the router moved on to newer ones.
    """
    deadline = (ctx.deps or {}).get("deadline")
    if deadline is not None and time.time() > float(deadline):
        log.warning("dropping a hop of run %s: its turn deadline passed", str(ctx.correlation_id)[:8])
        return "Turn abandoned: its deadline passed before this step."
    return None


class TurnSteps:
    """Agent before_node seam: each step of a turn is taken once, and only while its router runs the turn.

    Tool calls are delivered at least once: a tools process restarted after a crash answers again the
    calls whose offsets it had not yet committed (aiokafka commits every 5 s), and each answer carries
    the run's state as of its call. Taking such a step again replays the turn from there: a new model
    call and new orders under new tool-call ids, which the ledger's idempotency key cannot recognise
    (tests/test_faults.py saw a finished turn sell a second time). A run's steps only lengthen its
    history, so a step no longer than one already taken is a replay. A step of a run this router is
    not running (finished, timed out, or started by an earlier process) is refused too.
    """

    def __init__(self) -> None:
        self._taken: dict[str, int] = {}  # run id -> history length of the furthest step taken

    def begin(self, run_id: str) -> None:
        self._taken[run_id] = -1

    def end(self, run_id: str) -> None:
        self._taken.pop(run_id, None)

    def __call__(self, ctx: Any) -> str | None:
        run = str(ctx.correlation_id)
        length = len(getattr(ctx.state, "message_history", None) or ())
        taken = self._taken.get(run)
        if taken is None:
            log.warning("dropping a step of run %s: not a turn this router is running", run[:8])
            return "Turn over: its router is not running it."
        if length <= taken:
            log.warning("dropping a step of run %s: taken already (delivered again)", run[:8])
            return "Turn ended: one of its steps was delivered again."
        self._taken[run] = length
        return _deadline_guard(ctx)


def watched_model(model: Any, asked: Callable[[str | None], None], answered: Callable[[str | None, Any], None]):
    """`model` (a pydantic-ai Model) telling `asked(turn)` as each request goes out and `answered(turn,
    response)` as it returns (response None when it failed); `turn` is the run's deps[TURN_KEY]."""
    from arena.compat.vendored_pydantic_ai import get_current_run_context, wrapper_model

    def turn() -> str | None:
        ctx = get_current_run_context()  # set by pydantic-ai around each model request of an agent run
        deps = ctx.deps if ctx is not None else None
        return deps.get(TURN_KEY) if isinstance(deps, dict) else None

    class Watched(wrapper_model()):
        async def request(self, *args, **kwargs):
            run = turn()
            asked(run)
            response = None
            try:
                response = await self.wrapped.request(*args, **kwargs)
                return response
            finally:
                answered(run, response)

    return Watched(model)


class Router:
    """One agent: the calfkit Agent + Worker, the market consumer, and the latest-only turn loop.

    Usage: `await router.start()` (connects; READY after it returns), `await router.run(stop)`
    until the event is set, then `await router.stop()`.
    """

    def __init__(
        self,
        *,
        name: str,
        system_prompt: str,
        model_client: Any,
        kafka: KafkaSettings,
        chat_node: str = "",
        strategy: str = "",
        turn_timeout_s: float = 60.0,
        on_decision: Callable[[Decision], None] | None = None,
        account_wait_s: float = ACCOUNT_WAIT_S,
    ) -> None:
        if not AGENT_NAME_RE.match(name):
            raise ValueError(f"invalid agent name {name!r}: use 1-64 letters, digits, '-' or '_'")
        if not turn_timeout_s > 0:
            raise ValueError("turn timeout must be positive")
        self.name = name
        self.system_prompt = system_prompt
        self.model_client = model_client
        self.kafka = kafka
        self.chat_node = chat_node
        self.strategy = strategy
        self.turn_timeout_s = turn_timeout_s
        self.account_wait_s = min(account_wait_s, turn_timeout_s / 4)
        self.account = OwnAccount(name, strategy)
        self.on_decision = on_decision or (lambda d: None)
        self.agent_key = auth.agent_key()  # env ARENA_AGENT_KEY, or None
        self.slot: LatestSlot[MarketSnapshot] = LatestSlot()
        self.newest_seen: MarketSnapshot | None = None
        self.previous: Decision | None = None
        self._client = None
        self._worker = None
        self._market = None
        self._turn_consumers = k.Dozing([])
        # The turn's consumers by what arrives on them (Router.start), and those its phase expects now.
        self._inbox: list = []  # the agent's inbox: the request, tool results, its own re-entries
        self._reply_inbox: list = []  # calfkit's client inbox: the run's answer (or fault)
        self._whole_turn: list = []  # turn consumers of unknown purpose: expected for the whole turn
        self._directory: list = []  # calfkit's capability and agent directories
        self._phase: set = set()
        self._awaiting = ""  # what the turn's phase waits for, for a timed-out turn's log line
        self._run_id: str | None = None
        self._phased = False  # the model's requests are watched (arena.router.watched_model)
        self._account_due: asyncio.TimerHandle | None = None
        self._producer = None
        self._pending: set[asyncio.Task] = set()
        self._steps = TurnSteps()

    # ----------------------------------------------------------------- start / stop

    def _build_agent(self):
        from calfkit import Agent, Tools, surface_to_model

        self._tools = Tools(*TOOL_NAMES)
        return Agent(
            self.name,
            system_prompt=self.system_prompt,
            description=f"arena trading agent (strategy {self.strategy or 'custom'})",
            model_client=self._watched_model(),
            tools=[self._tools],
            publish_topic=ACTIVITY_TOPIC,  # every step of every agent on one topic, for observers
            before_node=self._steps,
            on_tool_error=[
                surface_to_model()
            ],  # a failing tool call becomes an error the model reads; the turn goes on
        )

    def _watched_model(self):
        if self.model_client is None:
            return None
        self._phased = True
        return watched_model(self.model_client, self._model_asked, self._model_answered)

    async def start(self) -> None:
        from calfkit import Client, FanoutConfig, KTableReaderTuning, Worker

        security = self.kafka.faststream_security()
        self._client = Client.connect(
            self.kafka.bootstrap_servers,
            # FastStream's own logger writes every message to stdout; route it through ours (INFO, so
            # only shown at --log-level INFO/DEBUG) so stdout stays the router's status lines.
            logger=logging.getLogger("arena.router.faststream"),
            **({"security": security} if security else {}),
        )
        wait = CONSUMER_TUNING["fetch_max_wait_ms"]
        tune_client_inbox(self._client, wait)
        spread_key_lanes()  # a timed-out turn's step still running must not hold up the next turn's run
        self._worker = Worker(
            self._client,
            nodes=[self._build_agent()],
            # A timed-out turn may still be finishing its current step; let the next one start beside it.
            max_workers=4,
            extra_subscribe_kwargs=dict(CONSUMER_TUNING),
            fanout=FanoutConfig(reader_tuning=KTableReaderTuning(poll_timeout_ms=wait, fetch_max_wait_ms=wait)),
        )
        model_start = getattr(self.model_client, "start", None)
        self._producer = k.producer(self.kafka)
        # No offsets are committed: a restarted router starts at the newest tick, never a backlog. The
        # accounts ride on the same fetches (no poller of their own); from "latest" too: the tools value
        # every account again at each snapshot, and a turn waits for that valuation.
        self._market = k.consumer(
            self.kafka,
            MARKET_TOPIC,
            ACCOUNTS_TOPIC,
            group_id=market_group(self.name),
            latest=True,
            enable_auto_commit=False,
        )
        try:
            # calfkit's capability view catches up at the short wait, not its 500 ms (arena.startup.catching_up).
            with k.consumers_started() as started, catching_up(wait):
                await asyncio.gather(
                    self._worker.start(),
                    self._producer.start(),
                    self._join_market(),
                    *([model_start()] if callable(model_start) else []),
                )
            await k.positioned(started)
        except BaseException:
            await self.stop()
            raise

        # Between turns only the market needs reading: the rest (the agent's inbox, calfkit's reply
        # inbox and fan-out tables, the chat replies) doze, so N idle routers cost the broker N
        # fetchers, not 6N. A turn wakes them before it sends anything. calfkit's control plane
        # (calf.capabilities: the agent resolves its tools against it every turn, and a restarted tools
        # process re-advertises there at any time) stays live; it polls twice a second.
        # During a turn a consumer fetches only while a reply is due on it (Router._expect_only): the
        # request and tool results on the agent's inbox, the answer on calfkit's client inbox, a fan-out
        # table's own writes at its barrier (arena.kafka), a model's answer on the chat replies (whose
        # client pauses them itself). The market consumer follows the snapshot schedule, and is short
        # from a snapshot until its account valuation came; the directories wait long unless a turn
        # waits for its tools to be advertised.
        def turn_only(c) -> bool:
            return (
                c is not self._market
                and not any(_control_plane(t) for t in c.subscription())
                and k.Dozing.owner(c) is None  # paused and woken by its own client (the chat replies)
            )

        turn = [c for c in started if turn_only(c)]
        self._turn_consumers = k.Dozing(turn)
        self._turn_consumers.doze()
        inbox_topic, reply_topic = f"agent.{self.name}.private.input", self._client.inbox_topic
        self._inbox = [c for c in turn if inbox_topic in c.subscription()]
        self._reply_inbox = [c for c in turn if reply_topic in c.subscription()]
        tables = [c for c in turn if all(t.startswith("calf.fanout.") for t in c.subscription())]
        self._whole_turn = [c for c in turn if c not in self._inbox + self._reply_inbox + tables]
        self._directory = [c for c in started if c is not self._market and c not in turn and k.Dozing.owner(c) is None]
        for c in self._directory:
            polling.PACER.follow(c, polling.REPLIES)
        polling.PACER.follow(self._market, polling.SCHEDULE)

    async def _join_market(self) -> None:
        """Subscribe and wait for the partition assignment, so a tick published after READY is seen."""
        await self._market.start()
        while not self._market.assignment():
            self._offer_records(await self._market.getmany(timeout_ms=50))
        for tp in self._market.assignment():
            await self._market.position(tp)  # pin "latest" now, not at the first fetch

    async def stop(self) -> None:
        if self._pending:  # decisions still being sent
            await asyncio.wait(self._pending, timeout=5)
        # The model client first: it fails a model call still in flight at once, so the worker's
        # drain does not wait for it.
        closers = (
            self._market.stop if self._market else None,
            getattr(self.model_client, "stop", None),
            self._worker.stop if self._worker else None,
            self._producer.stop if self._producer else None,
        )
        self._market = self._worker = self._producer = None  # stopping twice is harmless
        for closer in closers:
            if closer is None:
                continue
            try:
                await closer()
            except Exception as exc:  # shutting down: report, keep closing the rest
                log.warning("error while stopping: %s", exc)

    # ----------------------------------------------------------------- market intake

    def _offer_records(self, batches: dict) -> None:
        """Each record on its own: one that is malformed, means nothing valid, or fails to be offered is
        logged and skipped, and the rest are offered. Times are capped at arrival (see not_after)."""
        now = utcnow()
        snapshots = []
        for records in batches.values():
            for r in records:
                if r.topic == ACCOUNTS_TOPIC:
                    self.account.offer_record(r)
                    continue
                snapshot = k.decode_record(MarketSnapshot, r)
                if snapshot is not None:
                    snapshots.append((snapshot.not_after(now), r))
        for snapshot, r in sorted(snapshots, key=lambda sr: sr[0].published_at):
            try:
                self.offer(snapshot)
            except Exception as exc:
                log.error(
                    "could not take snapshot #%s (%s partition %s offset %s): %r",
                    snapshot.seq,
                    r.topic,
                    r.partition,
                    r.offset,
                    exc,
                )
        self._watch_account()

    def _watch_account(self) -> None:
        """From a snapshot until the account valued at it came (at most account_wait_s), a reply is due on
        the market consumer (it reads ACCOUNTS_TOPIC too): set before its next fetch goes out."""
        newest, latest = self.newest_seen, self.account.latest
        due = newest is not None and (latest is None or not latest.covers(newest.published_at))
        if due and self._account_due is None and self._market is not None:
            k.expect(self._market)
            self._account_due = asyncio.get_running_loop().call_later(self.account_wait_s, self._account_came)
        elif not due and self._account_due is not None:
            self._account_came()

    def _account_came(self) -> None:
        if self._account_due is not None:
            self._account_due.cancel()
            self._account_due = None
            if self._market is not None:
                k.settle(self._market)

    def offer(self, snapshot: MarketSnapshot) -> None:
        """Hand a snapshot to the turn loop if it is the newest one seen; every other one is reported
        as skipped (a newer one displaced it, or it arrived late: partitions may reorder)."""
        newest = self.newest_seen
        if newest is not None and snapshot.published_at <= newest.published_at:
            self._publish_nowait(self._decision(snapshot, "skipped", reason=f"not newer than #{newest.seq}"))
            return
        self.newest_seen = snapshot
        displaced = self.slot.put(snapshot)
        if displaced is not None:
            self._publish_nowait(
                self._decision(displaced, "skipped", reason=f"superseded by #{snapshot.seq} while a turn was running")
            )

    async def _read_market(self) -> None:
        while True:
            self._offer_records(await self._market.getmany(timeout_ms=1000))

    async def _turns(self) -> None:
        while True:
            await self.run_turn(await self.slot.take())

    # ----------------------------------------------------------------- turns

    def _decision(self, snapshot: MarketSnapshot, status: str, **kw) -> Decision:
        return Decision(
            agent=self.name,
            run_id=kw.pop("run_id", ""),
            tick_seq=snapshot.seq,
            tick_published_at=snapshot.published_at,
            status=status,
            summary=clip(summarize_snapshot(snapshot)),  # a Decision is bounded (arena.wire)
            chat_node=self.chat_node,
            strategy=self.strategy,
            **kw,
        )

    async def _publish(self, decision: Decision) -> None:
        self.on_decision(decision)
        try:
            await self._producer.send_and_wait(DECISIONS_TOPIC, k.encode(decision), key=self.name.encode())
        except Exception as exc:  # observers miss one record; the agent keeps trading
            log.warning("could not publish decision: %s", exc)

    def _publish_nowait(self, decision: Decision) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(decision))
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)

    async def run_turn(self, snapshot: MarketSnapshot) -> Decision:
        """One calfkit run of the agent on `snapshot`; returns (and publishes) its outcome."""
        run_id = uuid.uuid4().hex
        self._steps.begin(run_id)
        self._run_id = run_id
        # Awake from here: until it dozes, a consumer nothing is expected on still fetches once per long wait.
        self._turn_consumers.wake()
        self._turn_consumers.expect(*self._whole_turn)
        try:
            missing = await self.missing_tools(min(TOOLS_WAIT_S, self.turn_timeout_s))
            started = self._decision(snapshot, "started", run_id=run_id)
            if missing:  # a turn without them would spend model calls on tools it cannot reach
                outcome = dict(
                    status="skipped",
                    reason=f"the trading tools are not on the bus ({', '.join(missing)} not advertised): "
                    "is tools_and_dashboard.py running?",
                )
            else:
                # Only now: a tools process that just came up reads it, and values the account for it.
                await self._publish(started)
                outcome = await self._think(snapshot, run_id)
        finally:
            # A timed-out run's late steps wait for the next turn's wake, where TurnSteps drops them.
            self._run_id = None
            self._phase, self._awaiting = set(), ""
            self._turn_consumers.doze()
        decision = started.model_copy(update=dict(finished_at=utcnow(), **outcome, **self._turn_usage(run_id)))
        self._steps.end(run_id)  # its late steps are refused from now on
        if decision.status == "done":
            self.previous = decision
        await self._publish(decision)
        return decision

    async def _think(self, snapshot: MarketSnapshot, run_id: str) -> dict:
        """The turn's outcome fields: the account awaited, then the agent run."""
        from calfkit import ClientTimeoutError

        account = await self.account.wait_for(snapshot.published_at, self.account_wait_s)
        if account is None or not account.covers(snapshot.published_at):
            log.info(
                "account not valued at #%s within %gs; prompting with the newest", snapshot.seq, self.account_wait_s
            )
        prompt = build_prompt(snapshot, self.previous, account=account)
        # The turn's time starts with its run: the deadline every step and tool call is held to (the
        # desk refuses a trade after it) is the one the router waits for.
        deps = {
            "deadline": time.time() + self.turn_timeout_s,
            "tick_seq": snapshot.seq,
            "reacted_to": snapshot.published_at.isoformat(),  # the tools start the agent's metrics series here
            TURN_KEY: run_id,  # the model client sums the turn's token usage under it
            "strategy": self.strategy,  # the desk enforces this strategy's limits (arena.strategies)
        }
        if self.agent_key:  # ARENA_AGENT_KEY: the tools refuse a call of this turn without it
            deps[auth.PROOF] = auth.agent_proof(self.agent_key, self.name, run_id, deps["deadline"])
        try:
            handle = await self._client.agent(self.name).start(prompt, correlation_id=run_id, deps=deps)
            # The request is on the broker now: the inbox, resumed, takes it with its first fetch.
            if self._phased:
                self._expect_only(*self._inbox)
                self._awaiting = "its request on the agent's inbox"
            else:  # no model calls to follow the run by: every reply is due until it ends
                self._expect_only(*self._inbox, *self._reply_inbox)
            result = await handle.result(timeout=self.turn_timeout_s)
            return dict(status="done", output=clip(str(result.output or "").strip()))
        except ClientTimeoutError:
            log.warning(
                "turn on #%s timed out; its consumers: %s%s",
                snapshot.seq,
                await self._consumers_report(),
                f"; it was waiting for {self._awaiting}" if self._awaiting else "",
            )
            return dict(status="timeout", reason=f"no result within {self.turn_timeout_s:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return dict(status="error", reason=clip(fault_reason(exc)))

    def _expect_only(self, *consumers) -> None:
        """The turn's phase expects a reply on `consumers` (and no longer on the others it did)."""
        new = set(consumers)
        self._turn_consumers.settle(*(self._phase - new))
        self._turn_consumers.expect(*(new - self._phase))
        self._phase = new

    def _model_asked(self, turn: str | None) -> None:
        """A model request of the current turn goes out: its answer comes on the chat replies, nothing
        on the inbox until the agent acts on it (one step at a time per run)."""
        if turn is not None and turn == self._run_id:
            self._expect_only()
            self._awaiting = "a model's answer"

    def _model_answered(self, turn: str | None, response: Any) -> None:
        """Tool calls: their results come on the agent's inbox. Otherwise (an answer, or a failed
        request): the run's reply (or its fault) comes on calfkit's client inbox."""
        from arena.compat.vendored_pydantic_ai import ToolCallPart

        if turn is None or turn != self._run_id:
            return
        if response is not None and any(isinstance(p, ToolCallPart) for p in response.parts):
            self._expect_only(*self._inbox)
            self._awaiting = "tool results on the agent's inbox"
        else:
            self._expect_only(*self._reply_inbox)
            self._awaiting = "the run's answer on calfkit's client inbox"

    async def _consumers_report(self) -> str:
        """Where each of the turn's consumers stands, for a timed-out turn's log line: the partitions it has
        paused, and those whose fetch position is behind the last end offset the broker told it of (a
        reply on its way, or stuck: docs/RELIABILITY.md "Known issues"). "all caught up" when none is."""
        notes = []
        for c in self._turn_consumers.consumers:
            paused = c.paused()
            for tp in sorted(c.assignment()):
                try:
                    at = await asyncio.wait_for(c.position(tp), 0.5)
                except Exception:  # no position yet, or unassigned meanwhile
                    at = None
                end = c.highwater(tp)
                if tp in paused or (at is not None and end is not None and at < end):
                    where = f"at {at} of {end}" if at is not None else "no position"
                    notes.append(f"{tp.topic}[{tp.partition}] {where}" + (" (paused)" if tp in paused else ""))
        return "; ".join(notes) or "all caught up"

    async def missing_tools(self, wait_s: float) -> tuple[str, ...]:
        """The trading tools this agent's capability view does not list, after waiting up to `wait_s` for
        them (a tools process that just started, or one whose advert the view has not read yet)."""
        from calfkit.models.capability import CAPABILITY_VIEW_RESOURCE_KEY

        view = self._worker.resources.get(CAPABILITY_VIEW_RESOURCE_KEY) if self._worker else None
        if view is None:  # no view to ask: let the turn find out
            return ()
        deadline = time.monotonic() + wait_s
        missing = self._tools.resolve_tools(view).missing_targets
        if not missing:
            return missing
        for c in self._directory:  # an advert is due: read the directories with the short wait meanwhile
            k.expect(c)
        try:
            while (missing := self._tools.resolve_tools(view).missing_targets) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            for c in self._directory:
                k.settle(c)
        return missing

    def _turn_usage(self, run_id: str) -> dict:
        """The Decision fields for the tokens and cost of the turn's answered model calls."""
        take = getattr(self.model_client, "take_turn_usage", None)
        usage = take(run_id) if callable(take) else None
        if usage is None:
            return {}
        return dict(
            model_calls=usage.calls,
            tokens_in=usage.input_tokens,
            tokens_out=usage.output_tokens,
            tokens_reasoning=usage.reasoning_tokens,
            tokens_cached=usage.cached_tokens,
            cost_usd=usage.cost_usd,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set: read the market, run one turn per newest snapshot."""

        tasks = [
            asyncio.create_task(k.supervised(f"{self.name}: market intake", self._read_market)),
            asyncio.create_task(k.supervised(f"{self.name}: turn loop", self._turns)),
            asyncio.create_task(stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
