"""What the tools process must not forget when it is killed and started again, on the real broker: the
orders-per-turn count of a turn still running, an agent's cooldown, and every agent's model tokens and
dollars; and a fill that walked the book carries its slippage to the caller, the trades topic and the
export."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
import uuid

import pytest
import pytest_asyncio

from arena import kafka as k
from arena.config import CONSUMER_TUNING, DECISIONS_TOPIC, MARKET_TOPIC, TRADES_TOPIC, KafkaSettings
from arena.decisions import Decision
from arena.market import MarketSnapshot, Quote, utcnow
from arena.portfolio import Fill, TradeOutcome
from tests.support import Proc

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUN = uuid.uuid4().hex[:6]  # names unique to this run: the broker is shared by the session
ANN, BOB = f"ann_{RUN}", f"bob_{RUN}"
TURN = uuid.uuid4().hex  # one agent turn (calfkit correlation id) that spans the restart


class Tools:
    def __init__(self, tmp):
        self.ledger, self.export = tmp / "ledger.db", tmp / "leaderboard.json"
        self.proc: Proc | None = None

    def start(self) -> Tools:
        self.proc = Proc(
            "tools_and_dashboard.py", "--no-dashboard", "--ledger", str(self.ledger), "--export", str(self.export),
            "--fee-bps", "0", "--max-orders-per-turn", "1", "--cooldown", "600", "--status-every", "3600",
        )  # fmt: skip
        self.proc.wait_ready(60)
        return self

    def kill(self) -> None:
        self.proc.proc.kill()  # SIGKILL: no shutdown code runs
        self.proc.proc.wait()


class Agents:
    def __init__(self, kafka: KafkaSettings):
        self.kafka, self.workers, self.client, self.producer = kafka, [], None, None

    async def start(self, names: list[str]) -> None:
        from calfkit import Agent, Client, Worker

        import trading_tools
        from tests.scripted_model import ScriptedModel

        for name in names:
            agent = Agent(name, system_prompt="test agent", model_client=ScriptedModel(), tools=trading_tools.TOOLS)
            client = Client.connect(self.kafka.bootstrap_servers)
            self.workers.append(Worker(client, nodes=[agent], extra_subscribe_kwargs=dict(CONSUMER_TUNING)))
        self.client = Client.connect(self.kafka.bootstrap_servers)
        self.producer = k.producer(self.kafka)
        await asyncio.gather(*(w.start() for w in self.workers), self.producer.start())

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        await self.client.aclose()
        await self.producer.stop()

    async def buy(self, agent: str, quantity: float, *, turn: str | None = None, call_id: str = "c1") -> dict:
        call = {"tool": "execute_trade", "id": call_id,
                "args": {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": quantity}}  # fmt: skip
        result = await self.client.agent(agent).execute(json.dumps([call]), timeout=30, correlation_id=turn)
        out = json.loads(result.output)
        # Reusing a turn's correlation id (to continue that turn) may pick up the answer to its earlier call,
        # delivered again by the restarted tools process (its offset was not committed before the kill).
        return out.get(call_id) or {"error": f"redelivered answer to another call: {result.output[:200]}"}

    async def publish_market(self, seq: int) -> None:
        quote = Quote(product_id="FARTCOIN-USD", price=1.0, best_bid=0.99, best_ask=1.0, bid_size=100, ask_size=100)
        await self.producer.send_and_wait(
            MARKET_TOPIC, k.encode(MarketSnapshot(seq=seq, quotes={quote.product_id: quote}))
        )


@pytest.fixture(scope="module")
def tools(broker, tmp_path_factory):
    t = Tools(tmp_path_factory.mktemp("durable"))
    yield t
    if t.proc is not None and t.proc.proc.poll() is None:
        t.proc.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents(broker):
    a = Agents(KafkaSettings(bootstrap_servers=broker.bootstrap))
    await a.start([ANN, BOB])
    yield a
    await a.stop()


async def until_filled(agents: Agents, agent: str, quantity: float, **kw) -> dict:
    """The first order after a start waits for the desk to have the quote (published just before), and
    past an answer to an earlier call of the same turn delivered again."""
    deadline = time.monotonic() + 20
    while True:
        r = await agents.buy(agent, quantity, **kw)
        if (
            not any(why in r.get("error", "") for why in ("no quote", "redelivered answer"))
            or time.monotonic() > deadline
        ):
            return r
        await asyncio.sleep(0.2)


def kept_usage(ledger) -> list[tuple]:
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        return db.execute("SELECT agent, model_calls, tokens_in, tokens_out, cost_usd FROM usage").fetchall()
    finally:
        db.close()


async def test_limits_and_tokens_survive_a_kill_and_a_fill_carries_its_slippage(tools, agents, kafka):
    await asyncio.to_thread(tools.start)
    tap = k.consumer(kafka, TRADES_TOPIC, group_id=None)
    await tap.start()
    await agents.publish_market(1)

    # 300 units against 100 at the ask, 1 bp (the default) per further 100: 1.0 x 0.0001 x 200^2 / 200 = $0.02
    r = await until_filled(agents, ANN, 300, turn=TURN, call_id="c1")
    assert r["status"] == "filled" and r["slippage"] == pytest.approx(0.02) and r["fee"] == 0, r
    assert r["price"] == pytest.approx(1.0 + 0.02 / 300) and r["top_of_book"] == 1.0 and r["top_size"] == 100
    assert (await agents.buy(BOB, 10))["status"] == "filled"
    published = None
    deadline = time.monotonic() + 15
    while published is None and time.monotonic() < deadline:
        for records in (await tap.getmany(timeout_ms=200)).values():
            for rec in records:
                t = k.decode(TradeOutcome, rec.value)
                if isinstance(t, Fill) and t.agent == ANN:
                    published = json.loads(rec.value)
    await tap.stop()
    assert published is not None, "ANN's fill never reached the trades topic"
    assert published["slippage"] == pytest.approx(0.02) and published["top_price"] == 1.0
    assert published["slippage_bps"] == pytest.approx(0.02 / 300 * 10_000)

    # A finished turn's model usage, as a router reports it: kept in the ledger once the tools take it.
    turn = Decision(agent=ANN, run_id=TURN, tick_seq=1, tick_published_at=utcnow(), status="done",
                    finished_at=utcnow(), model_calls=2, tokens_in=1234, tokens_out=56, cost_usd=0.5)  # fmt: skip
    await agents.producer.send_and_wait(DECISIONS_TOPIC, k.encode(turn))
    deadline = time.monotonic() + 15
    while not kept_usage(tools.ledger) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert kept_usage(tools.ledger) == [(ANN, 2, 1234, 56, 0.5)]

    tools.kill()
    await asyncio.to_thread(tools.start)
    await agents.publish_market(2)
    # The same turn goes on after the restart: its one allowed fill is used up.
    r = await until_filled(agents, ANN, 1, turn=TURN, call_id="c2")
    assert r["status"] == "rejected" and "limit 'orders per turn'" in r["error"], r
    # A new turn for bob: his last fill was moments ago, before the restart.
    r = await agents.buy(BOB, 1)
    assert r["status"] == "rejected" and "limit 'cooldown'" in r["error"], r

    assert tools.proc.stop(signal.SIGTERM) == 0
    rows = {a["name"]: a for a in json.loads(tools.export.read_text())["agents"]}
    ann = rows[ANN]
    assert (ann["model_calls"], ann["tokens"], ann["model_cost_usd"]) == (2, 1290, 0.5)
    assert ann["metrics"]["slippage"] == pytest.approx(0.02) and ann["fees"] == 0
