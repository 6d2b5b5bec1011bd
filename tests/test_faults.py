"""Faults across processes, on real processes and a real broker: parts killed with SIGKILL and started
again, the broker restarted empty, models that fail or hang, hostile bytes on every topic, and secrets
kept out of every log. Nothing a router saw acknowledged may be lost or doubled.

One arena for the whole module (starting processes is most of the cost): its own embedded broker on a
fixed port (the broker restart must not disturb the session's broker), the market simulator, the
connector, the policy server, a chat node per model (random-walk for the traders, one per fault model),
the tools process, the viewer, two trading routers and one router per fault. Tests run in file order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from arena import kafka as k
from arena.broker import EmbeddedBroker, free_port
from arena.config import (
    ACTIVITY_TOPIC,
    DECISIONS_TOPIC,
    HEALTH_TOPIC,
    MARKET_TOPIC,
    TRADES_TOPIC,
    KafkaSettings,
    chat_request_topic,
)
from arena.decisions import Decision
from arena.market import MarketSnapshot
from arena.portfolio import Fill, Rejection, parse_outcome, replay
from tests.support import Proc, Stack, TopicReader
from tests.support.commands import run_script

# Generous bounds: on an idle 2-core machine the module takes ~2-3 minutes, most of it process start-up.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

RUN = uuid.uuid4().hex[:8]
API_KEY = f"sk-test-SECRET-{RUN}"  # every process gets it in its environment; none may print it
SASL_PASSWORD = f"pw-SECRET-{RUN}"
SECRETS = (API_KEY, SASL_PASSWORD)
INTERVAL = 2.0  # seconds between market snapshots

TRADERS = ["ra", "rb"]  # random-walk: an order on most turns
FAULTY = "fx"  # a router whose chat node's provider fails every other turn, a different way each time
TURN_TIMEOUT = 8.0  # the faulty router's --turn-timeout (its chat node must acknowledge within half of it)
ROTATION = ["random-walk", "error-429", "random-walk", "slow", "random-walk", "bad-args", "random-walk", "unknown-tool"]
SCRIPTS = [
    "coinbase_connector.py",
    "tools_and_dashboard.py",
    "deploy_chat_node.py",
    "deploy_router_node.py",
    "response_viewer.py",
]


# ------------------------------------------------------------------------------------ observing


@dataclass
class Seen:
    topic: str
    value: bytes
    headers: tuple
    at: float  # time.time() when the test received it
    ts: float  # the record's timestamp: when its producer sent it (epoch seconds)

    def header(self, name: str) -> str:
        return next((v.decode(errors="replace") for key, v in self.headers if key == name and v), "")

    @property
    def run(self) -> str:
        """The calfkit run (correlation id) a record belongs to: a router's turn."""
        return self.header("correlation_id")


TOOL_CALLS = "tool.execute_trade.input"  # every execute_trade call, as sent to the tools process
TOOL_RESULTS = "tool.execute_trade.output"  # every result the tools process sent back (calfkit's mirror)


@dataclass(frozen=True)
class Order:
    """One execute_trade call as the tools process receives it (its record on TOOL_CALLS)."""

    key: str  # the idempotency key the tools derive from it (trading_tools.call_key)
    agent: str
    run: str
    call_id: str
    product_id: str
    side: str
    quantity: float
    response: str  # the model response that placed it
    position: int  # messages in the run before it
    at: float  # when it was sent

    @property
    def content(self) -> tuple:
        return (self.agent, self.run, self.product_id, self.side, self.quantity)


def trade_content(key: str, t: Fill | Rejection) -> tuple:
    """A ledger row as an order's content; its run is the one its key names (the ledger keeps no other)."""
    parts = key.split("|")
    return (t.agent, parts[1] if len(parts) == 4 else "?", t.product_id, t.side, t.quantity)


def main_thread_state(pid: int) -> str:
    """Where a process's main thread waits in the kernel: do_epoll_wait for an idle event loop,
    hrtimer_nanosleep for SQLite's busy handler waiting for a write lock."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip() or "?"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


class Tap(TopicReader):
    """Everything on the market, decisions, trades and activity topics, and execute_trade's calls and
    results, from now on (no group)."""

    TOPICS = (MARKET_TOPIC, DECISIONS_TOPIC, TRADES_TOPIC, ACTIVITY_TOPIC, TOOL_CALLS, TOOL_RESULTS)

    def __init__(self) -> None:
        super().__init__(None)
        self.records: list[Seen] = []

    async def start(self, kafka: KafkaSettings, *, tools: bool = True) -> None:
        """tools=False: not execute_trade's topics (on a new, empty broker a subscription's metadata
        request would create them before the tools process provisions them)."""
        self.kafka, self.topics = kafka, self.TOPICS if tools else self.TOPICS[:4]
        await super().start()

    def take(self, r) -> None:
        self.records.append(Seen(r.topic, r.value or b"", tuple(r.headers or ()), time.time(), r.timestamp / 1000))

    def _models(self, topic, parse, since):
        out = []
        for r in self.records:
            if r.topic == topic and r.at >= since:
                try:
                    out.append(parse(r.value))
                except ValueError:
                    pass  # the garbage this module publishes itself
        return out

    def decisions(self, agent: str | None = None, *statuses: str, since: float = 0) -> list[Decision]:
        return [
            d
            for d in self._models(DECISIONS_TOPIC, Decision.model_validate_json, since)
            if (agent is None or d.agent == agent) and (not statuses or d.status in statuses)
        ]

    def trades(self, since: float = 0) -> list[Fill | Rejection]:
        return self._models(TRADES_TOPIC, parse_outcome, since)

    def fills(self, agent: str, since: float = 0) -> list[Fill]:
        return [t for t in self.trades(since) if t.agent == agent and isinstance(t, Fill)]

    def published(self) -> dict[int, float]:
        """snapshot seq -> when the connector published it (epoch seconds)."""
        return {
            s.seq: s.published_at.timestamp() for s in self._models(MARKET_TOPIC, MarketSnapshot.model_validate_json, 0)
        }

    def _envelopes(self, since: float = 0):
        """(record, calfkit Envelope) for every mirrored agent step received since `since`."""
        from calfkit.models.envelope import Envelope

        for r in self.records:
            if r.topic == ACTIVITY_TOPIC and r.at >= since:
                try:
                    yield r, Envelope.model_validate_json(r.value)
                except ValueError:
                    continue

    def acknowledged_fills(self) -> dict[str, tuple[Seen, dict]]:
        """trade_id -> (the mirrored agent step, the filled execute_trade result the agent received)."""
        out: dict[str, tuple[Seen, dict]] = {}
        for r, env in self._envelopes():
            for message in env.context.state.message_history:
                for part in message.parts:
                    c = getattr(part, "content", None)
                    if (
                        getattr(part, "part_kind", "") == "tool-return"
                        and part.tool_name == "execute_trade"
                        and isinstance(c, dict)
                        and c.get("status") == "filled"
                    ):
                        out.setdefault(c["trade_id"], (r, c))
        return out

    def orders(self, since: float = 0, before: float = float("inf")) -> list[Order]:
        """Every execute_trade call sent to the tools process (in [since, before))."""
        from types import SimpleNamespace

        from calfkit.models.envelope import Envelope

        from trading_tools import call_key

        out = []
        for r in self.records:
            if r.topic != TOOL_CALLS or not since <= r.ts < before:
                continue
            try:
                env = Envelope.model_validate_json(r.value)
                frame = env.internal_workflow_state.current_frame_or_none
                call, history = frame.payload, env.context.state.message_history
                args = call["args"]
                agent = r.header("x-calf-emitter") or frame.caller_node_id
                ctx = SimpleNamespace(
                    agent_name=agent, correlation_id=r.run, messages=history, tool_call_id=call["tool_call_id"]
                )
                out.append(Order(call_key(ctx), agent, r.run, call["tool_call_id"], str(args["product_id"]).strip().upper(),
                                 str(args["side"]).strip().lower(), float(args["quantity"]),
                                 getattr(history[-1], "provider_response_id", None) or "?", len(history), r.ts))  # fmt: skip
            except (ValueError, TypeError, KeyError, AttributeError, IndexError):
                continue  # the garbage this module publishes itself
        return out

    def answered(self, before: float = float("inf")) -> set[tuple[str, str]]:
        """(run, tool call id) of every execute_trade result the tools process sent before `before`."""
        from calfkit.models.envelope import Envelope

        out = set()
        for r in self.records:
            if r.topic == TOOL_RESULTS and r.ts < before:
                try:
                    out.add((r.run, Envelope.model_validate_json(r.value).reply.tag))
                except (ValueError, AttributeError):
                    continue
        return out

    def runs(self) -> set[str]:
        """The runs (turns) whose start the tap saw: all of their calls and steps came after it started."""
        return {d.run_id for d in self.decisions(None, "started")}

    def steps(self, since: float) -> dict[str, list[str]]:
        """agent -> what each of its mirrored steps since `since` ended with (e.g. a tool call or a tool
        result): where its turns stopped."""
        out: dict[str, list[str]] = {}
        for r, env in self._envelopes(since):
            history = env.context.state.message_history
            last = (
                [f"{getattr(p, 'part_kind', '?')}:{getattr(p, 'tool_name', '') or ''}" for p in history[-1].parts]
                if history
                else []
            )
            agent = next((v.decode() for key, v in r.headers if key == "x-calf-emitter"), "?")
            out.setdefault(agent, []).append(f"{time.strftime('%H:%M:%S', time.localtime(r.at))} {','.join(last)}")
        return out

    def describe(self) -> str:
        return "last decisions: " + "; ".join(
            f"{d.agent} #{d.tick_seq} {d.status} {d.reason[:60]}" for d in self.decisions()[-12:]
        )


# --------------------------------------------------------------------- a provider that misbehaves


class FaultyProvider:
    """An OpenAI-compatible chat completions endpoint that takes turns: an ordinary random-walk turn, then
    HTTP 429, then a model slower than the router's turn timeout, then invalid execute_trade arguments,
    then a call to a tool that does not exist (ROTATION). A turn is one market snapshot: every request of
    a turn gets the same behaviour. The answers themselves come from the policy server's code.
    """

    def __init__(self) -> None:
        self.by_seq: dict[int, str] = {}  # snapshot seq -> what that turn got
        self.authorizations: set[str] = set()
        self.port = free_port()
        self.server = None
        self._task: asyncio.Task | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def model_for(self, body: dict) -> str:
        import re

        from arena.sim.policy import Turn

        m = re.search(r"\(snapshot #(\d+)\)", Turn(body.get("messages") or []).prompt)
        seq = int(m[1]) if m else -1
        if seq not in self.by_seq:
            self.by_seq[seq] = ROTATION[len(self.by_seq) % len(ROTATION)]
        return self.by_seq[seq]

    async def start(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from arena.sim.policy import ApiError, completion

        async def chat(request):
            self.authorizations.add(request.headers.get("authorization", ""))
            body = json.loads(await request.body())
            model = self.model_for(body)
            if model == "slow":
                await asyncio.sleep(TURN_TIMEOUT + 3)
                model = "hold"
            try:
                return JSONResponse(completion({**body, "model": model}))
            except ApiError as exc:
                return JSONResponse(exc.body, status_code=exc.status)

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            await asyncio.wait({self._task}, timeout=5)


# ------------------------------------------------------------------------------------ the arena


class Arena(Stack):
    """The stack, a tap on its topics and the misbehaving provider; every process gets the secrets."""

    def __init__(self, tmp: Path):
        super().__init__(tmp, {"OPENAI_API_KEY": API_KEY, "KAFKA_SASL_PASSWORD": SASL_PASSWORD})
        self.ledger, self.export = str(tmp / "ledger.db"), str(tmp / "leaderboard.json")
        self.tap = Tap()
        self.provider = FaultyProvider()

    def ledger_agents(self) -> set[str]:
        db = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)
        try:
            return {name for (name,) in db.execute("SELECT name FROM agents")}
        finally:
            db.close()

    def ledger_trades(self) -> list[tuple[str, Fill | Rejection]]:
        """(call key, trade) for every row, in log order."""
        db = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)
        try:
            return [(key, parse_outcome(t)) for key, t in db.execute("SELECT call_key, trade FROM trades ORDER BY seq")]
        finally:
            db.close()


def complaints_since_ready(lines: list[str], limit: int = 30) -> list[str]:
    """A part's warnings and errors after its last READY, each message once (timestamps aside): what
    went wrong once it was back, without the connection errors of the outage itself."""
    ready = max((i for i, line in enumerate(lines) if "READY" in line), default=0)
    seen: dict[str, str] = {}
    for line in lines[ready:]:
        if any(w in line for w in ("WARNING", "ERROR", "could not", "error", "restart", "timeout")):
            seen.setdefault(line.split(" ", 1)[-1][:160], line)
    found = list(seen.values())
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])


def router_argv(name: str, chat: str, *extra: str) -> list[str]:
    return [
        "deploy_router_node.py",
        "--name",
        name,
        "--chat-node-name",
        chat,
        "--strategy",
        "scalper",
        "--connect-timeout",
        "120",
        *extra,
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arena(tmp_path_factory):
    a = Arena(tmp_path_factory.mktemp("faults"))
    await a.start_broker()
    t0 = time.monotonic()
    try:
        sim_port, policy_port = free_port(), free_port()
        base_url = f"http://127.0.0.1:{policy_port}/v1"
        a.start("sim", "-m", "arena.cli", "market-sim", "--port", str(sim_port), "--tick-rate", "3")
        a.start("policy", "-m", "arena.cli", "policy-server", "--port", str(policy_port))
        a.start(
            "connector",
            "coinbase_connector.py",
            "--ws-url",
            f"ws://127.0.0.1:{sim_port}",
            "--rest-url",
            f"http://127.0.0.1:{sim_port}",
            "--interval",
            str(INTERVAL),
        )
        a.start(
            "tools",
            "tools_and_dashboard.py",
            "--no-dashboard",
            "--ledger",
            a.ledger,
            "--export",
            a.export,
            "--status-every",
            "3600",
            "--connect-timeout",
            "180",
        )
        a.start("viewer", "response_viewer.py", "--connect-timeout", "120")
        a.start("chat rw", "deploy_chat_node.py", "--name", "rw", "--model-id", "random-walk", "--base-url", base_url)
        await a.provider.start()
        # Its key comes on the command line: that still works (the provider sees it), with a warning.
        a.start(
            f"chat {FAULTY}",
            "deploy_chat_node.py",
            "--name",
            FAULTY,
            "--model-id",
            "faulty",
            "--base-url",
            a.provider.base_url,
            "--max-retries",
            "0",
            "--api-key",
            API_KEY,
        )
        for name in TRADERS:
            a.start(name, *router_argv(name, "rw", "--turn-timeout", "10"))
        a.start(FAULTY, *router_argv(FAULTY, FAULTY, "--turn-timeout", str(TURN_TIMEOUT)))
        ready = {}
        for name, p in a.procs.items():
            p.wait_ready(400)
            ready[name] = time.monotonic() - t0
        await a.tap.start(a.kafka)
        print(
            f"\narena of {len(a.procs)} processes READY in {time.monotonic() - t0:.1f}s: "
            + ", ".join(f"{n} {s:.0f}s" for n, s in ready.items())
        )
        yield a
    finally:
        await a.tap.stop()
        a.stop_processes(15)
        await a.provider.stop()
        a.broker.stop()
        print(f"outputs of every process: {a.write_logs()}")


# ------------------------------------------------------------------------------------ the tests


@pytest.mark.processes
async def test_every_script_offers_the_kafka_security_flags():
    flags = ("--bootstrap-servers", "--security-protocol", "--sasl-mechanism", "--sasl-username", "--ssl-cafile")
    for script in SCRIPTS:
        out = await asyncio.to_thread(run_script, script, "--help")
        assert out.returncode == 0, out.stderr
        for flag in flags:
            assert flag in out.stdout, f"{script} --help lacks {flag}"
        assert "KAFKA_SASL_PASSWORD" in out.stdout, f"{script} --help does not say where the password comes from"


async def test_a_turn_takes_each_step_once_and_only_while_it_runs():
    """The router's agent seam (arena.router.TurnSteps): a tool answer delivered again (a restarted tools
    process answers the calls it had not committed) carries the run's state as of its call; taking it
    again would replay the turn into new orders. Without it, test_killed_tools_lose_and_double_nothing
    sees turns decide twice."""
    from types import SimpleNamespace

    from arena.router import TurnSteps

    steps = TurnSteps()
    far = time.time() + 60

    def step(run: str, messages: int, deadline: float = far) -> str | None:
        return steps(SimpleNamespace(correlation_id=run, state=SimpleNamespace(message_history=[None] * messages),
                                     deps={"deadline": deadline}))  # fmt: skip

    steps.begin("r1")
    assert step("r1", 0) is None and step("r1", 2) is None  # the prompt, then get_portfolio's answer
    assert "delivered again" in step("r1", 2)  # get_portfolio answered again: refused
    assert step("r1", 4) is None  # the orders' answers still go on
    assert "delivered again" in step("r1", 2)
    assert "not running" in step("r2", 0)  # a run this router never started (or an earlier process did)
    steps.end("r1")
    assert "not running" in step("r1", 6)  # a finished turn takes no step
    steps.begin("r3")
    assert "deadline" in step("r3", 0, deadline=time.time() - 1)


@pytest.mark.processes
async def test_broker_watch_tells_a_broker_gone_from_a_stall(tmp_path):
    """A broker that stalls and comes back is the same broker: nothing happens. One that goes away is
    reported at once, while no broker is there (its clients must not write into the next one: see
    arena/reconnect.py). A part that renews its clients (on_lost) is not told again once the new broker
    answers; a part already asked to stop is told nothing (it ends). Without the connection watch (a
    cluster of brokers), a broker restarted on the same address is recognised by its new cluster id."""
    from arena.reconnect import BrokerWatch

    port = free_port()
    broker = EmbeddedBroker("127.0.0.1", port).start()
    await broker.wait_ready()
    told: dict[str, list[str]] = {"restart": [], "lost": [], "replaced": [], "cluster": [], "stopping": []}
    stopping = asyncio.Event()
    stopping.set()  # a part already asked to stop (everything stopped at once): it ends, never restarts

    async def renew(why: str) -> None:  # as the connector does: wait for a broker, then carry on
        told["lost"].append(why)
        while broker.proc.poll() is not None or not told["restart"]:
            await asyncio.sleep(0.05)
        await broker.wait_ready()

    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    watches = [
        BrokerWatch(kafka, told["restart"].append, interval_s=0.2),
        BrokerWatch(kafka, told["replaced"].append, on_lost=renew, interval_s=0.2),
        BrokerWatch(
            KafkaSettings(bootstrap_servers=f"{broker.bootstrap},{broker.bootstrap}"),
            told["cluster"].append,
            interval_s=0.2,
        ),
        BrokerWatch(kafka, told["stopping"].append, stop=stopping, interval_s=0.2),
    ]
    try:
        for w in watches:
            await w.start()
        assert all(w.cluster_id == broker.cluster_id for w in watches)
        broker.proc.send_signal(signal.SIGSTOP)  # a stall, as a network outage looks to a client
        await asyncio.sleep(2)
        broker.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(2)
        assert not any(told.values()) and not any(w.replaced for w in watches), told
        first = broker.cluster_id
        broker.proc.kill()
        broker.proc.wait()
        t0 = time.monotonic()
        while not (told["restart"] and told["lost"]) and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        noticed = time.monotonic() - t0
        assert len(told["restart"]) == 1 and "went away" in told["restart"][0] and watches[0].gone, told
        assert len(told["lost"]) == 1 and told["cluster"] == [], told  # the cluster watch waits to see who answers
        broker = EmbeddedBroker("127.0.0.1", port).start()  # only now: nobody was told too late
        await broker.wait_ready()
        t0 = time.monotonic()
        while not told["cluster"] and time.monotonic() - t0 < 15:
            await asyncio.sleep(0.05)
        assert len(told["cluster"]) == 1 and first in told["cluster"][0] and broker.cluster_id in told["cluster"][0], (
            told
        )
        await asyncio.sleep(1)
        assert told["replaced"] == [] and watches[1].cluster_id == broker.cluster_id, (
            told
        )  # renewed: nothing more to say
        assert len(told["restart"]) == 1 and told["stopping"] == [] and watches[3].replaced is None, told
        print(
            f"\nbroker gone noticed in {noticed:.3f}s; a new one by its cluster id {time.monotonic() - t0:.2f}s after it answered"
        )
    finally:
        for w in watches:
            await w.stop()
        broker.proc.send_signal(signal.SIGCONT)
        broker.stop()


@pytest.mark.processes
async def test_model_faults_cost_only_that_agents_turn(arena):
    tap, provider = arena.tap, arena.provider
    since = time.time()

    def outcomes() -> dict[int, Decision]:
        return {d.tick_seq: d for d in tap.decisions(FAULTY, "done", "error", "timeout", since=since)}

    def faults_done() -> set[str]:
        return {provider.by_seq.get(seq) for seq in outcomes()}

    # The faulty agent meets every fault, each followed by an ordinary turn; the traders trade on meanwhile.
    await tap.until(
        lambda: set(ROTATION) <= faults_done() and len(outcomes()) > len(ROTATION), 180, "a full rotation of faults"
    )
    await tap.until(lambda: all(tap.fills(n, since) for n in TRADERS), 60, "fills of both traders")
    turns = sorted(outcomes().items())
    print(f"\n{FAULTY}: " + ", ".join(f"#{seq} {provider.by_seq.get(seq)}->{d.status}" for seq, d in turns))
    for i, (seq, d) in enumerate(turns):
        kind = provider.by_seq.get(seq)
        if kind == "error-429":  # rate limited: an error naming the cause
            assert d.status == "error" and "429" in d.reason and "rate limit" in d.reason.lower(), d
        elif kind == "slow":  # the model never answers within the turn: abandoned at --turn-timeout
            assert d.status in ("timeout", "error") and f"within {TURN_TIMEOUT:g}s" in d.reason, d
            assert d.latency_s < TURN_TIMEOUT + 3, d
        elif kind in ("bad-args", "unknown-tool"):
            # Refused before reaching any tool; the model is told so and the turn ends without a trade.
            assert d.status == "done" and "failed as intended" in d.output, d
        else:  # an ordinary turn (one may run past the timeout on a starved machine, never fail otherwise)
            assert d.status in ("done", "timeout"), d
        if kind != "random-walk":  # the agent goes on: a later turn is a normal one again
            assert any(later.status == "done" for _, later in turns[i + 1 :]) or i == len(turns) - 1, turns[i:]
    ordinary = [d for seq, d in turns if provider.by_seq.get(seq) == "random-walk"]
    assert sum(d.status == "done" for d in ordinary) > len(ordinary) / 2, ordinary
    assert tap.fills(FAULTY, since), "the faulty agent never traded on its ordinary turns"
    refused = [line for line in arena.procs["viewer"].lines if "refused" in line]
    assert any(FAULTY in line and "execute_trade refused" in line for line in refused), "\n".join(refused[-20:])
    assert any(FAULTY in line and "launch_rocket" in line for line in refused), "\n".join(refused[-20:])
    # Each failed turn is a logged line of its router, and nothing crashed.
    out = arena.procs[FAULTY].lines
    assert any(f"{FAULTY} #" in line and "error after" in line and "429" in line for line in out)
    assert any(
        f"{FAULTY} #" in line and ("timeout after" in line or "error after" in line) and "within" in line
        for line in out
    )
    assert not arena.dead()


@pytest.mark.processes
async def test_malformed_records_on_every_topic_are_skipped(arena):
    tap, kafka = arena.tap, arena.kafka
    # Real chat requests tell where the routers' replies go (the sender id carries the router's pid).
    spy = k.consumer(kafka, chat_request_topic("rw"), group_id=None, latest=False)
    await spy.start()
    reply_topics: dict[str, str] = {}  # router -> its reply topic
    pids = {str(arena.procs[n].proc.pid): n for n in TRADERS}
    deadline = time.monotonic() + 30
    while len(reply_topics) < len(TRADERS) and time.monotonic() < deadline:
        for records in (await spy.getmany(timeout_ms=500)).values():
            for r in records:
                if r.value:
                    req = json.loads(r.value)
                    owner = next((n for pid, n in pids.items() if f"-{pid}-" in req["sender"]), None)
                    if owner:
                        reply_topics[owner] = req["reply_to"]
    await spy.stop()
    assert set(reply_topics) == set(TRADERS), reply_topics

    hostile = [
        b"\x00\xff garbage \xfe",
        b"",
        b"{",
        b"[1, 2, 3]",
        b'{"seq": "not a number", "quotes": 7}',
        b"null",
        json.dumps({"agent": 1, "status": "exploded"}).encode(),
        b"9" * 100_000,
    ]
    topics = [
        MARKET_TOPIC,
        TRADES_TOPIC,
        DECISIONS_TOPIC,
        HEALTH_TOPIC,
        ACTIVITY_TOPIC,
        chat_request_topic("rw"),
        *reply_topics.values(),
        "tool.execute_trade.input",
        "agent.ra.private.input",
    ]
    producer = k.producer(kafka)
    await producer.start()
    sent = 0
    try:
        for topic in topics:
            for value in hostile:
                await producer.send_and_wait(topic, value)
                sent += 1
            # The same, shaped like a calfkit agent step (the viewer parses those).
            await producer.send_and_wait(
                topic, b"{not json", headers=[("x-calf-emitter", b"ra"), ("correlation_id", b"x")]
            )
            sent += 1
    finally:
        await producer.stop()
    print(f"\n{sent} hostile records on {len(topics)} topics")
    since = time.time()
    # Every reader logs what it skipped ...
    expect = {
        "ra": ["skipping malformed MarketSnapshot", "skipping malformed ChatReply"],
        "rb": ["skipping malformed MarketSnapshot", "skipping malformed ChatReply"],
        "tools": [
            "skipping malformed MarketSnapshot",
            "skipping malformed Decision",
            "skipping malformed ProcessStatus",
        ],
        "chat rw": ["skipping malformed ChatRequest"],
        "viewer": ["skipping malformed Decision", "skipping malformed activity record"],
    }
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        needle in arena.procs[name].output for name, needles in expect.items() for needle in needles
    ):
        await asyncio.sleep(0.1)
    assert not arena.dead(), arena.dead()
    for name, needles in expect.items():
        out = arena.procs[name].output
        for needle in needles:
            assert needle in out, f"{name} did not log {needle!r}"
    # ... and still works: new turns, new fills, the viewer still shows them.
    await tap.until(lambda: all(tap.fills(n, since) for n in TRADERS), 60, "fills after the hostile records")
    await tap.until(
        lambda: tap.decisions(FAULTY, "done", "error", "timeout", since=since), 60, "turns of the faulty agent"
    )
    assert not arena.dead(), arena.dead()
    noisy = [n for n, p in arena.procs.items() if "Traceback" in p.output]
    assert not noisy, f"tracebacks in the output of {noisy}"


@pytest.mark.processes
async def test_killed_router_resumes_at_the_newest_tick(arena):
    tap = arena.tap
    arena.kill("rb")
    killed_at = time.time()

    def ticks_since_kill() -> int:  # parses only what came since (published() parses the whole topic)
        snaps = [r.value for r in tap.records if r.topic == MARKET_TOPIC and r.at >= killed_at]
        return sum(MarketSnapshot.model_validate_json(v).published_at.timestamp() > killed_at for v in snaps)

    # ticks it misses while it is gone: the backlog it must never replay
    await tap.until(lambda: ticks_since_kill() >= 2, 60, "two ticks published while the router is gone")
    t0 = time.monotonic()
    restarted_at = time.time()
    proc = arena.restart("rb")
    await asyncio.to_thread(proc.wait_ready, 180)
    await tap.until(lambda: tap.decisions("rb", "started", since=restarted_at), 60, "the restarted router's first turn")
    first = tap.decisions("rb", "started", since=restarted_at)[0]
    published = tap.published()
    backlog = {seq for seq, at in published.items() if at < restarted_at}  # before the new process even existed
    missed = {seq for seq in backlog if published[seq] > killed_at}
    print(
        f"\nrouter killed -9, restarted {restarted_at - killed_at:.1f}s later, READY in {time.monotonic() - t0:.1f}s; "
        f"{len(missed)} ticks published while it was gone; first turn on #{first.tick_seq} (newest before restart #{max(backlog)})"
    )
    assert len(missed) >= 2, "too few ticks published while the router was gone: nothing tested"
    assert first.tick_seq > max(backlog)
    replayed = {d.tick_seq for d in tap.decisions("rb", since=restarted_at)} & backlog
    assert not replayed, f"replayed old ticks: {sorted(replayed)}"
    await tap.until(lambda: tap.fills("rb", restarted_at), 90, "a fill of the restarted router")


async def _kill_tools_inside_a_ledger_write(arena: Arena) -> tuple[float, float, list[str]]:
    """kill -9 the tools process while it is inside an execute_trade call, for certain.

    The test holds the ledger's write lock (as a stalled disk would) until the kill, so an order that
    arrives meanwhile cannot be committed: the tools process waits in SQLite's busy handler (its
    busy_timeout is 5 s), which shows as its main thread sleeping in the kernel instead of waiting in
    its event loop's epoll. Only execute_trade writes to the ledger (once every account is open).
    Returns (locked_at, killed_at, the main thread's states sampled before the kill)."""
    tap, pid = arena.tap, arena.procs["tools"].proc.pid
    # Every agent's account open first: opening one is a ledger write too (the lock would fail that call).
    await tap.until(
        lambda: {*TRADERS, FAULTY} <= arena.ledger_agents() and all(tap.fills(n) for n in TRADERS),
        120,
        "every agent's account open and both traders filling",
    )
    for attempt in range(3):
        lock = sqlite3.connect(arena.ledger, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        locked_at = time.time()
        samples: list[str] = []
        try:
            await tap.until(
                lambda: tap.orders(since=locked_at), 60, "an execute_trade call sent while the ledger is locked"
            )
            deadline = time.monotonic() + 3  # well within the busy timeout: the call must still be waiting
            while time.monotonic() < deadline and sum("nanosleep" in s for s in samples[-4:]) < 4:
                samples.append(main_thread_state(pid))
                await asyncio.sleep(0.02)
            if sum("nanosleep" in s for s in samples[-4:]) == 4:
                arena.kill("tools")
                return locked_at, time.time(), samples
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        print(
            f"attempt {attempt + 1}: the tools process was not seen waiting in a ledger write ({samples[-8:]}); again"
        )
        await asyncio.sleep(2 * INTERVAL)
    raise AssertionError(f"the tools process never waited inside a ledger write: main thread {samples[-20:]}")


@pytest.mark.processes
async def test_killed_tools_lose_and_double_nothing(arena):
    tap = arena.tap
    locked_at, killed_at, samples = await _kill_tools_inside_a_ledger_write(arena)
    rows_at_kill = {key for key, _ in arena.ledger_trades()}
    answered = tap.answered(before=killed_at)
    in_flight = [
        o for o in tap.orders(before=killed_at) if (o.run, o.call_id) not in answered and o.key not in rows_at_kill
    ]
    print(
        f"\ntools killed -9 inside a ledger write (main thread: {', '.join(samples[-4:])}); "
        f"{len(in_flight)} orders in flight: "
        + "; ".join(f"{o.agent} {o.side} {o.quantity:g} {o.product_id}" for o in in_flight)
    )
    assert any(o.at >= locked_at for o in in_flight), "no order in flight at the kill"
    t0 = time.monotonic()
    proc = arena.restart("tools")
    await asyncio.to_thread(proc.wait_ready, 180)
    print(f"tools READY again in {time.monotonic() - t0:.1f}s (ledger had {len(rows_at_kill)} rows)")
    assert "trades restored" in proc.output
    # Trading resumes ...
    waited = await tap.until(lambda: all(tap.fills(n, killed_at) for n in TRADERS), 90, "fills after the restart")
    print(f"both traders filled again {waited:.1f}s after READY")
    await asyncio.sleep(2)  # let the last results reach the activity topic

    # ... and nothing a router saw acknowledged is lost, nothing is filled that no router ordered, and no
    # order is filled twice, under its own key or another: ledger rows are matched to the orders sent
    # (TOOL_CALLS) and to the results the agents received by what they say, not only by key.
    rows = arena.ledger_trades()
    by_key = {key: t for key, t in rows}
    orders = tap.orders()
    by_order_key = {o.key: o for o in orders}
    observed = tap.runs()
    problems: list[str] = []

    acked = tap.acknowledged_fills()
    assert acked, "no acknowledged fill seen"
    for tid, (r, result) in acked.items():
        t = by_key.get(tid)
        said = (r.header("x-calf-emitter"), r.run, result["product_id"], result["side"], result["quantity"])
        if not isinstance(t, Fill):
            problems.append(f"acknowledged fill not in the ledger: {said}")
        elif trade_content(tid, t) != said:
            problems.append(f"acknowledged {said}, the ledger says {trade_content(tid, t)}")

    # Every fill of a turn the tap saw whole (or made once the tap was surely watching) is one order sent.
    fills = [
        (key, t)
        for key, t in rows
        if isinstance(t, Fill)
        and (trade_content(key, t)[1] in observed or t.executed_at.timestamp() > tap.started_at + 15)
    ]
    for key, t in fills:
        o = by_order_key.get(key)
        if o is None:
            problems.append(f"a fill under a key no call was sent with: {key} {trade_content(key, t)}")
        elif o.content != trade_content(key, t):
            problems.append(f"a fill unlike its order: ordered {o.content}, filled {trade_content(key, t)}")
    ordered = collections.Counter(o.content for o in orders)
    for content, n in collections.Counter(trade_content(key, t) for key, t in fills).items():
        if n > ordered[content]:
            problems.append(f"filled {n} times, ordered {ordered[content]}: {content}")
    # One decision per step of a turn: a tool result delivered again must not make the agent decide anew.
    decided: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    for o in orders:
        decided[(o.run, o.position)].add(o.response)
    for (run, position), responses in decided.items():
        if len(responses) > 1:
            again = sorted(
                (o.agent, o.side, o.quantity, o.product_id) for o in orders if o.run == run and o.position == position
            )
            problems.append(f"turn {run[:8]} decided {len(responses)} times at step {position}: {again}")
    assert not problems, "\n".join(problems)

    position = {key: i for i, (key, _) in enumerate(rows)}
    trades = [t for _, t in rows]
    for tid, (_, result) in acked.items():  # the cash each agent was told equals a recomputation from the log
        agent = trades[position[tid]].agent
        cash = replay(trades[: position[tid] + 1])[agent].cash
        assert result["cash_after"] == pytest.approx(cash, abs=0.011), (tid, result["cash_after"], cash)
    published = [t.trade_id for t in tap.trades() if isinstance(t, Fill)]
    assert len(published) == len(set(published)), "a fill published twice on the trades topic"
    assert set(published) <= set(by_key), "a published fill is not in the ledger"
    fate = {o.key: (by_key[o.key].status + (f" ({t.reason})" if isinstance(t := by_key[o.key], Rejection) and t.reason else "")
                    if o.key in by_key else "never executed") for o in in_flight}  # fmt: skip
    redelivered = sum("duplicate call" in line for line in proc.lines)
    print(
        f"{len(acked)} acknowledged fills and {len(fills)} ledger fills matched to {len(orders)} orders sent, by content; "
        f"lost 0, doubled 0. After the restart: {redelivered} calls delivered again and answered from the ledger; "
        f"the orders in flight at the kill: " + "; ".join(fate.values())
    )


@pytest.mark.processes
async def test_broker_restart_every_part_reconnects_and_trading_resumes(arena):
    tap = arena.tap
    marks = {n: len(p.lines) for n, p in arena.procs.items()}
    await tap.stop()
    arena.kill_broker()
    await asyncio.sleep(1)
    await arena.start_broker()  # empty, on the same address
    back = time.monotonic()
    back_at = time.time()
    tap.records.clear()
    await tap.start(arena.kafka, tools=False)

    def again(name: str, text: str) -> bool:
        return any(text in line for line in arena.procs[name].lines[marks[name] :])

    def publishing_again() -> bool:  # the connector's first snapshot through its new producer
        lines = arena.procs["connector"].lines[marks["connector"] :]
        renewed = next((i for i, line in enumerate(lines) if "reconnecting the publisher" in line), None)
        return renewed is not None and any("published snapshot" in line for line in lines[renewed:])

    waits = {n: (lambda n=n: again(n, "READY")) for n in arena.procs if n not in ("sim", "policy", "connector")}
    waits["connector"] = publishing_again
    took: dict[str, float] = {}
    deadline = back + 300
    while len(took) < len(waits) and time.monotonic() < deadline:
        for name, done in waits.items():
            if name not in took and done():
                took[name] = time.monotonic() - back
        await asyncio.sleep(0.1)
    print(
        "\nreconnected after the broker restart (s): "
        + ", ".join(f"{n} {s:.1f}" for n, s in sorted(took.items(), key=lambda x: x[1]))
    )
    missing = sorted(set(waits) - set(took))
    assert not missing, f"not back: {missing}\n" + "\n".join(
        f"--- {n}:\n" + "\n".join(arena.procs[n].lines[marks[n] :][-40:]) for n in missing
    )
    for name in waits:
        if name != "connector":
            assert again(name, "went away") or again(name, "restarted without its data"), (
                f"{name} did not notice the new broker"
            )
    assert again("connector", "reconnecting the publisher")
    # Trading resumes on the new broker: fills for both traders, turns for every agent, shown by the viewer.
    try:
        waited = await tap.until(
            lambda: all(tap.fills(n, back_at) for n in TRADERS), 90, "fills after the broker restart"
        )
    except AssertionError as exc:
        tails = "\n".join(
            f"--- {n}:\n" + "\n".join(arena.procs[n].lines[marks[n] :][-25:]) for n in (*TRADERS, "tools", "chat rw")
        )
        steps = tap.steps(back_at)
        tails += "".join(
            f"\n--- {n}, its last steps seen: " + " | ".join(steps.get(n, [])[-10:]) for n in (*TRADERS, FAULTY)
        )
        tails += "".join(f"\n--- {n}, complaints since it came back:\n" + "\n".join(complaints_since_ready(p.lines[marks[n]:]))
                         for n, p in arena.procs.items())  # fmt: skip
        raise AssertionError(f"{exc}\n{tails}") from None
    await tap.until(
        lambda: tap.decisions(FAULTY, "done", "error", "timeout", since=back_at),
        60,
        "the faulty agent's turns after the broker restart",
    )
    print(f"first fills of both traders {waited:.1f}s after every part was back")
    await tap.until(lambda: again("viewer", "← execute_trade: filled"), 30, "the viewer showing fills again")
    assert not arena.dead(), arena.dead()


@pytest.mark.processes
async def test_secrets_are_never_printed(arena):
    """SASL settings with the password in the environment, the API key in every environment: neither
    appears in any output, at any log level."""
    sasl = ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN", "--sasl-username", "arena"]
    give_up = "4"  # seconds of failed connection attempts (one a second), each logged at DEBUG
    env = {**arena.env(), "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    runs = [
        Proc(
            "coinbase_connector.py",
            *sasl,
            "--log-level",
            "DEBUG",
            "--ws-url",
            "ws://127.0.0.1:9",
            "--rest-url",
            "http://127.0.0.1:9",
            env=env,
        ),
        Proc(
            "tools_and_dashboard.py",
            *sasl,
            "--no-dashboard",
            "--ledger",
            arena.ledger + ".sasl",
            "--connect-timeout",
            give_up,
            env=env,
        ),
        Proc(
            "deploy_chat_node.py",
            *sasl,
            "--log-level",
            "DEBUG",
            "--name",
            "sasl",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--connect-timeout",
            give_up,
            env=env,
        ),
        Proc(
            "deploy_router_node.py",
            *sasl,
            "--log-level",
            "DEBUG",
            "--name",
            "sasl",
            "--connect-timeout",
            give_up,
            env=env,
        ),
        Proc("response_viewer.py", *sasl, "--log-level", "DEBUG", "--connect-timeout", give_up, env=env),
    ]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(p.proc.poll() is None for p in runs[1:]):
        await asyncio.sleep(0.5)
    for p in runs:
        p.stop()
    for p in runs:
        assert p.output.strip(), p.args
        for secret in SECRETS:
            assert secret not in p.output, f"{p.args[1]} printed a secret:\n{p.output[-2000:]}"
    # The whole arena, every process that ever ran in it (killed ones too):
    for p in arena.all():
        for secret in SECRETS:
            assert secret not in p.output, f"{p.args[1:3]} printed a secret"
    chat = arena.procs[f"chat {FAULTY}"]  # its key came on the command line: it works, with a warning
    assert "warning: --api-key on the command line is visible" in chat.output
    assert f"Bearer {API_KEY}" in arena.provider.authorizations


@pytest.mark.processes
async def test_everything_stops_cleanly_after_all_that(arena):
    procs = dict(arena.procs)
    for p in procs.values():
        p.proc.send_signal(signal.SIGINT)
    for name, p in procs.items():
        try:
            code = p.proc.wait(60)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            code = "hung"
        assert code == 0, f"{name} exited {code}:\n{p.output[-1500:]}"
        assert "Traceback" not in p.output, f"{name}:\n{p.output[-3000:]}"
    # The books balance: the accounts the tools process ends with (its export, written on Ctrl-C after a
    # kill -9 and a broker restart) are exactly a replay of the whole log.
    accounts = replay([t for _, t in arena.ledger_trades()])
    exported = {
        row["name"]: row for row in json.loads(Path(arena.export).read_text())["agents"] if not row.get("baseline")
    }
    assert set(TRADERS) <= set(exported)
    for name, row in exported.items():
        acct = accounts[name]
        assert row["cash"] == pytest.approx(acct.cash, abs=1e-6) and row["trades"] == acct.trades, name
        assert {p["product_id"]: p["quantity"] for p in row["positions"]} == pytest.approx(
            {pid: pos.quantity for pid, pos in acct.positions.items() if pos.quantity}
        ), name
