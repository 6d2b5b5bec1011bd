"""The trading tools end to end: the tools process as a real subprocess on the real broker, calfkit
agents driven by a deterministic model calling them, market snapshots published by the test."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
import uuid
from datetime import timedelta

import pytest
import pytest_asyncio

from arena import kafka as k
from arena.config import CONSUMER_TUNING, HEALTH_TOPIC, MARKET_TOPIC, TRADES_TOPIC, KafkaSettings
from arena.market import MarketSnapshot, Quote, utcnow
from arena.metrics import BASELINE_NAME
from arena.portfolio import Fill, Rejection, TradeOutcome, parse_outcome
from arena.supervisor import ProcessStatus
from tests.support.procs import Proc

pytestmark = pytest.mark.asyncio(loop_scope="module")

FEE_BPS = 10.0
BTC = {"bid": 50_000.0, "ask": 50_010.0}
FART = {"bid": 1.19, "ask": 1.21}
RUN = uuid.uuid4().hex[:6]  # agent names unique to this test run: the broker is shared
ALICE, BOB, MALLORY = f"alice_{RUN}", f"bob_{RUN}", f"mallory_{RUN}"


class ToolsProcess:
    def __init__(self, tmp):
        self.ledger = tmp / "ledger.db"
        self.export = tmp / "leaderboard.json"
        self.proc: Proc | None = None
        self.ready_s: float | None = None

    def launch(self) -> ToolsProcess:
        self._t0 = time.monotonic()
        self.proc = Proc(
            "tools_and_dashboard.py",
            "--no-dashboard",
            "--ledger",
            str(self.ledger),
            "--export",
            str(self.export),
            "--fee-bps",
            str(FEE_BPS),
            "--status-every",
            "3600",
        )
        return self

    def wait_ready(self) -> ToolsProcess:
        self.proc.wait_ready(60)
        self.ready_s = time.monotonic() - self._t0
        return self

    def start(self) -> ToolsProcess:
        return self.launch().wait_ready()

    def stop(self, sig=signal.SIGINT) -> int:
        return self.proc.stop(sig)

    def kill(self) -> None:
        self.proc.proc.kill()
        self.proc.proc.wait()


class Arena:
    """Agents (each with its own Worker) plus a client to run them, all in this test process."""

    def __init__(self, kafka):
        self.kafka = kafka
        self.workers = []
        self.client = None
        self.market = None

    async def start(self, names: list[str]) -> None:
        from calfkit import Agent, Client, Worker
        from calfkit.tuning import FanoutConfig, KTableReaderTuning

        import trading_tools
        from tests.scripted_model import ScriptedModel

        for name in names:
            agent = Agent(name, system_prompt="test agent", model_client=ScriptedModel(), tools=trading_tools.TOOLS)
            self.workers.append(
                Worker(
                    Client.connect(self.kafka.bootstrap_servers),
                    nodes=[agent],
                    extra_subscribe_kwargs=dict(CONSUMER_TUNING),
                    fanout=FanoutConfig(reader_tuning=KTableReaderTuning(poll_timeout_ms=10, fetch_max_wait_ms=10)),
                )
            )
        self.client = Client.connect(self.kafka.bootstrap_servers)
        self.market = k.producer(self.kafka)
        await asyncio.gather(*(w.start() for w in self.workers), self.market.start())

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        await self.client.aclose()
        await self.market.stop()

    async def call(self, agent: str, *calls: dict, deps: dict | None = None) -> dict:
        """Run one agent turn making `calls` (with the run's `deps`, as a router sends them); returns {call id: result}."""
        result = await self.client.agent(agent).execute(json.dumps(list(calls)), timeout=30, deps=deps)
        return json.loads(result.output)

    async def one(self, agent: str, tool: str, args=None, *, deps: dict | None = None) -> object:
        return (await self.call(agent, {"tool": tool, "args": args or {}, "id": "call_1"}, deps=deps))["call_1"]

    async def publish(self, btc=BTC, fart=FART, *, age_s: float = 0.0, stale: bool = False, seq: int = 1) -> None:
        at = utcnow() - timedelta(seconds=age_s)
        quotes = {
            "BTC-USD": Quote(
                product_id="BTC-USD",
                price=btc["bid"],
                best_bid=btc["bid"],
                best_ask=btc["ask"],
                received_at=at,
                stale=stale,
            ),
            "FARTCOIN-USD": Quote(
                product_id="FARTCOIN-USD",
                price=fart["bid"],
                best_bid=fart["bid"],
                best_ask=fart["ask"],
                received_at=at,
                stale=stale,
            ),
        }
        await self.market.send_and_wait(MARKET_TOPIC, k.encode(MarketSnapshot(seq=seq, quotes=quotes)))
        await asyncio.sleep(0.5)  # the tools process reads the feed with a 10 ms fetch wait


def trade(product_id, side, quantity, id="call_1"):
    return {"tool": "execute_trade", "args": {"product_id": product_id, "side": side, "quantity": quantity}, "id": id}


@pytest.fixture(scope="module")
def tools(broker, tmp_path_factory):
    t = ToolsProcess(tmp_path_factory.mktemp("tools")).launch()  # READY is awaited beside the agents' start
    yield t
    t.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arena(broker, tools):
    a = Arena(KafkaSettings(bootstrap_servers=broker.bootstrap))
    await a.start([ALICE, BOB, MALLORY])
    await asyncio.to_thread(tools.wait_ready)
    await a.publish()
    yield a
    await a.stop()


def stable(positions: list[dict]) -> list[dict]:
    """Positions without the time held (it grows while the test runs)."""
    return [{k: v for k, v in p.items() if not k.startswith("avg_time_held")} for p in positions]


def ledger_rows(tools: ToolsProcess) -> list[Fill | Rejection]:
    db = sqlite3.connect(f"file:{tools.ledger}?mode=ro", uri=True)
    try:
        return [parse_outcome(t) for (t,) in db.execute("SELECT trade FROM trades ORDER BY seq")]
    finally:
        db.close()


async def test_agents_trade_their_own_accounts(arena, tools):
    print(f"tools process READY after {tools.ready_s:.2f}s (incl. interpreter + imports)")
    t0 = time.monotonic()
    r = await arena.call(
        ALICE,
        trade("BTC-USD", "buy", 0.5, "call_1"),
        {"tool": "calculator", "args": {"expression": "0.5*50010"}, "id": "call_2"},
    )
    print(f"agent turn with 2 parallel tool calls: {time.monotonic() - t0:.3f}s")
    fill = r["call_1"]
    assert fill["status"] == "filled", fill
    assert fill["price"] == BTC["ask"] and fill["quantity"] == 0.5 and fill["unit"] == "BTC"
    assert fill["notional"] == 25_005.0 and fill["fee"] == pytest.approx(25.005)
    assert fill["cash_after"] == pytest.approx(100_000 - 25_005 - 25.005, abs=0.01)
    assert fill["position_after"]["quantity"] == 0.5
    assert 0 <= fill["quote_age_s"] < 30
    assert r["call_2"] == "25005.0"

    # Bob trades the same tools; he sees only his own account, which starts fresh.
    r = await arena.call(BOB, trade("FARTCOIN-USD", "buy", 1000.5), {"tool": "get_portfolio", "id": "call_2"})
    assert r["call_1"]["status"] == "filled" and r["call_1"]["price"] == FART["ask"]
    bob = await arena.one(BOB, "get_portfolio")
    assert bob["agent"] == BOB
    assert [p["product_id"] for p in bob["positions"]] == ["FARTCOIN-USD"]
    assert bob["cash"] == pytest.approx(100_000 - 1000.5 * 1.21 * (1 + FEE_BPS / 10_000), abs=0.01)

    alice = await arena.one(ALICE, "get_portfolio")
    assert alice["agent"] == ALICE
    [pos] = alice["positions"]
    assert pos["product_id"] == "BTC-USD" and pos["quantity"] == 0.5 and pos["unit"] == "BTC"
    assert pos["mark_price"] == BTC["bid"] and pos["market_value"] == 25_000.0
    assert pos["avg_cost"] == pytest.approx(50_010 * (1 + FEE_BPS / 10_000))
    assert pos["unrealized_pnl"] == pytest.approx(25_000 - 25_030.005, abs=0.01)
    assert pos["avg_time_held_s"] >= 0
    assert alice["total_value"] == pytest.approx(alice["cash"] + 25_000, abs=0.01)
    assert alice["fills"] == 1

    # Sell half back at the bid: realized P&L counts both legs' fees.
    r = await arena.one(ALICE, "execute_trade", {"product_id": "BTC-USD", "side": "sell", "quantity": 0.25})
    assert r["status"] == "filled" and r["price"] == BTC["bid"]
    alice = await arena.one(ALICE, "get_portfolio")
    assert alice["realized_pnl"] == pytest.approx(
        0.25 * 50_000 * (1 - FEE_BPS / 10_000) - 0.25 * 50_010 * (1 + FEE_BPS / 10_000), abs=0.01
    )


async def test_a_second_tools_process_on_the_same_ledger_exits_at_once_naming_the_holder(arena, tools):
    """Two desks over one ledger would each spend the same cash: the second tools process refuses to start."""
    t0 = time.monotonic()
    second = Proc("tools_and_dashboard.py", "--no-dashboard", "--ledger", str(tools.ledger), "--status-every", "3600")
    try:
        code = await asyncio.to_thread(second.proc.wait, 30)
    finally:
        second.stop()
    took = time.monotonic() - t0
    print(f"second tools process refused in {took:.2f}s (incl. interpreter start)")
    assert code != 0, second.output
    [error] = [line for line in second.lines if line.startswith("error:")]
    assert str(tools.ledger) in error and f"pid {tools.proc.proc.pid} on host" in error, second.output
    assert "READY" not in second.output and "Traceback" not in second.output
    assert took < 15  # before any Kafka work: no connect timeout, no broker wait
    # The first one keeps serving.
    r = await arena.one(BOB, "execute_trade", {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 1})
    assert r["status"] == "filled", r
    assert tools.proc.proc.poll() is None


async def test_no_agent_can_reach_another_account(arena):
    before = await arena.one(ALICE, "get_portfolio")
    # An `agent` argument does not exist: calfkit refuses the call before it reaches the tool.
    r = await arena.call(
        MALLORY,
        {"tool": "get_portfolio", "args": {"agent": ALICE}, "id": "c1"},
        {
            "tool": "execute_trade",
            "args": {"product_id": "BTC-USD", "side": "sell", "quantity": 0.1, "agent": ALICE},
            "id": "c2",
        },
    )
    for cid in ("c1", "c2"):
        assert "retry" in r[cid] and "agent" in r[cid]["retry"], r
    # Mallory's own sell finds nothing to sell: she has her own, empty account.
    r = await arena.one(MALLORY, "execute_trade", {"product_id": "BTC-USD", "side": "sell", "quantity": 0.1})
    assert r["status"] == "rejected" and "you hold 0 BTC" in r["error"]
    assert stable((await arena.one(ALICE, "get_portfolio"))["positions"]) == stable(before["positions"])
    mallory = await arena.one(MALLORY, "get_portfolio")
    assert mallory["cash"] == 100_000 and mallory["positions"] == []


HOSTILE = [
    ({"product_id": "BTC-USD", "side": "buy", "quantity": "NaN-raw"}, "finite number"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": "Infinity-raw"}, "finite number"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": -1}, "must be positive"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": 0}, "must be positive"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": 1e308}, "absurdly large"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": "1e3"}, "must be a number"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": "x" * 100_000}, "must be a number"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": 1e-9}, "below the minimum"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": 0.123456789}, "not a multiple"),
    ({"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 0.15}, "not a multiple"),
    ({"product_id": "DOGE-TO-THE-MOON", "side": "buy", "quantity": 1}, "unknown product"),
    ({"product_id": "Z" * 100_000, "side": "buy", "quantity": 1}, "unknown product"),
    ({"product_id": "BTC-USD", "side": "buy", "quantity": 2}, "insufficient cash"),
    ({"product_id": "BTC-USD", "side": "sell", "quantity": 0.3}, "no short selling"),
    # XRP-USD: tradable, but no test or simulator ever quotes it (the market topic is shared by the session).
    ({"product_id": "XRP-USD", "side": "buy", "quantity": 1}, "no quote for XRP-USD"),
]


async def test_hostile_orders_are_rejected_and_change_nothing(arena, tools):
    before = await arena.one(ALICE, "get_portfolio")
    n_before = len(ledger_rows(tools))
    calls = []
    for i, (args, _) in enumerate(HOSTILE):
        q = args["quantity"]
        if isinstance(q, str) and q.endswith("-raw"):  # a literal NaN/Infinity, as a sloppy model would write it
            raw = json.dumps({**args, "quantity": 0}).replace('"quantity": 0', f'"quantity": {q[:-4]}')
            calls.append({"tool": "execute_trade", "args": raw, "id": f"h{i}"})
        else:
            calls.append({"tool": "execute_trade", "args": args, "id": f"h{i}"})
    # Schema-level refusals: they never reach the tool, the model is told why.
    calls.append(
        {"tool": "execute_trade", "args": {"product_id": "BTC-USD", "side": "hold", "quantity": 1}, "id": "s1"}
    )
    calls.append({"tool": "execute_trade", "args": {"product_id": "BTC-USD", "side": "buy"}, "id": "s2"})
    r = await arena.call(ALICE, *calls)
    for i, (args, why) in enumerate(HOSTILE):
        res = r[f"h{i}"]
        assert res["status"] == "rejected" and why in res["error"] and "Nothing was traded" in res["error"], (args, res)
        assert len(res["error"]) < 400  # a hostile argument is not echoed back in full
    assert "buy" in r["s1"]["retry"] and "sell" in r["s1"]["retry"]
    assert "quantity" in r["s2"]["retry"]
    after = await arena.one(ALICE, "get_portfolio")
    for key in ("cash", "realized_pnl", "fees_paid", "fills"):
        assert after[key] == before[key], key
    assert stable(after["positions"]) == stable(before["positions"])
    assert after["rejected_orders"] == before["rejected_orders"] + len(HOSTILE)
    rows = ledger_rows(tools)[n_before:]
    assert len(rows) == len(HOSTILE) and all(isinstance(t, Rejection) and t.reason for t in rows)


async def test_stale_old_and_malformed_market_data(arena):
    await arena.publish(stale=True, seq=2)
    r = await arena.one(BOB, "execute_trade", {"product_id": "BTC-USD", "side": "buy", "quantity": 0.01})
    assert r["status"] == "rejected" and "stale" in r["error"]
    await arena.publish(age_s=120, seq=3)  # older than the quote the desk has: ignored
    await arena.publish(seq=4)
    r = await arena.one(BOB, "execute_trade", {"product_id": "BTC-USD", "side": "buy", "quantity": 0.01})
    assert r["status"] == "filled", r
    # A malformed record is skipped; a quote older than --max-quote-age (30 s) is refused.
    await arena.market.send_and_wait(MARKET_TOPIC, b"{not json")
    old = Quote(
        product_id="ETH-USD", price=3000, best_bid=3000, best_ask=3001, received_at=utcnow() - timedelta(seconds=60)
    )
    await arena.market.send_and_wait(MARKET_TOPIC, k.encode(MarketSnapshot(seq=5, quotes={"ETH-USD": old})))
    await asyncio.sleep(0.5)
    r = await arena.one(BOB, "execute_trade", {"product_id": "ETH-USD", "side": "buy", "quantity": 0.01})
    assert r["status"] == "rejected" and "old (limit 30s)" in r["error"], r
    r = await arena.one(BOB, "execute_trade", {"product_id": "BTC-USD", "side": "buy", "quantity": 0.01})
    assert r["status"] == "filled", r


async def test_a_call_after_its_turn_deadline_is_refused_and_changes_nothing(arena, tools):
    """The router gave up on the turn (its deadline, in the run's deps, has passed): a late or redelivered
    call must not trade for an agent that no longer waits for the answer."""
    before = await arena.one(BOB, "get_portfolio")
    n_before = len(ledger_rows(tools))
    order = {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 5}
    late = await arena.one(BOB, "execute_trade", order, deps={"deadline": time.time() - 3, "tick_seq": 1})
    assert late["status"] == "rejected" and "turn deadline passed 3." in late["error"], late
    assert "the router gave up on this turn" in late["error"] and late["error"].endswith("Nothing was traded.")
    after = await arena.one(BOB, "get_portfolio")
    for key in ("cash", "fills", "fees_paid"):
        assert after[key] == before[key], key
    assert stable(after["positions"]) == stable(before["positions"])
    [row] = ledger_rows(tools)[n_before:]  # recorded like any rejection
    assert isinstance(row, Rejection) and row.agent == BOB and "turn deadline passed" in row.reason

    on_time = await arena.one(BOB, "execute_trade", order, deps={"deadline": time.time() + 30, "tick_seq": 1})
    assert on_time["status"] == "filled", on_time
    for garbage in ("soon", None, [1], float("nan"), 10**400, True):  # not a deadline: traded as today
        r = await arena.one(BOB, "execute_trade", order, deps={"deadline": garbage})
        assert r["status"] == "filled", (garbage, r)


async def test_the_strategy_the_router_names_sets_the_limits_in_force(arena):
    """deps["strategy"] (as a router sends it): get_portfolio shows that strategy's limits and the desk
    enforces them; a turn without one trades as before (no arena-wide limits in this module's tools)."""
    scalper = {"strategy": "scalper", "deadline": time.time() + 30}
    p = await arena.one(BOB, "get_portfolio", deps=scalper)
    assert p["limits"]["strategy"] == "scalper" and p["limits"]["max_order_pct"] == 5
    assert "One buy order is at most 5% of total account value." in p["limits"]["rules"]
    dollars = p["total_value"] * 0.06  # 6% of total value in one order
    order = {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": round(dollars / FART["ask"], 1)}
    r = await arena.one(BOB, "execute_trade", order, deps=scalper)
    assert (
        r["status"] == "rejected"
        and "limit 'largest order' (scalper strategy)" in r["error"]
        and "the most is 5%" in r["error"]
    ), r
    most = float(r["error"].split("the most you can buy now is ")[1].split()[0])
    assert (await arena.one(BOB, "execute_trade", {**order, "quantity": most}, deps=scalper))["status"] == "filled"
    assert (await arena.one(BOB, "get_portfolio"))["limits"] == {"strategy": None, "rules": []}


async def test_calculator_refuses_hostile_expressions_quickly(arena):
    exprs = {
        "c1": "9**9**9",
        "c2": "1" * 1_000_000,
        "c3": "__import__('os').system('echo hi')",
        "c4": "(1).real",
        "c5": "x + 1",
        "c6": "-" * 1500 + "1",
        "c7": "2 * (3 + 4)",
    }
    t0 = time.monotonic()
    r = await arena.call(
        ALICE, *({"tool": "calculator", "args": {"expression": e}, "id": cid} for cid, e in exprs.items())
    )
    assert time.monotonic() - t0 < 10
    for cid in ("c1", "c2", "c3", "c4", "c5", "c6"):
        assert r[cid].startswith("error:"), (exprs[cid][:30], r[cid])
    assert "too large" in r["c1"] and "too long" in r["c2"] and "unknown name 'x'" in r["c5"]
    assert r["c7"] == "14"


async def test_redelivered_call_trades_once(arena, tools, kafka):
    """A tool call delivered twice (same agent, run, turn and call id) executes once."""
    before = await arena.one(BOB, "get_portfolio")
    # Capture the tool-call record as the broker holds it, then deliver it again.
    tap = k.consumer(kafka, "tool.execute_trade.input", group_id=None, latest=False)
    await tap.start()
    r = await arena.one(BOB, "execute_trade", {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 10})
    assert r["status"] == "filled"
    mine = None
    deadline = time.monotonic() + 10
    while mine is None and time.monotonic() < deadline:
        for records in (await tap.getmany(timeout_ms=200)).values():
            for rec in records:
                if (
                    BOB.encode() in rec.value
                    and b"FARTCOIN-USD" in rec.value
                    and b'"quantity":10' in rec.value.replace(b" ", b"")
                ):
                    mine = rec
    await tap.stop()
    assert mine is not None, "tool call record not found on tool.execute_trade.input"
    n_rows = len(ledger_rows(tools))
    await arena.market.send_and_wait(mine.topic, mine.value, key=mine.key, headers=list(mine.headers))
    await asyncio.sleep(1.0)
    assert len(ledger_rows(tools)) == n_rows  # answered from the log: no new row, no second fill
    after = await arena.one(BOB, "get_portfolio")
    [fart] = [p for p in after["positions"] if p["product_id"] == "FARTCOIN-USD"]
    [fart0] = [p for p in before["positions"] if p["product_id"] == "FARTCOIN-USD"]
    assert fart["quantity"] == pytest.approx(fart0["quantity"] + 10)
    assert after["fills"] == before["fills"] + 1
    assert any("duplicate call" in line for line in tools.proc.lines)

    # Ids that repeat across runs (a deterministic model always says "call_1") are separate calls.
    r1 = await arena.one(BOB, "execute_trade", {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 1})
    r2 = await arena.one(BOB, "execute_trade", {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 1})
    assert r1["status"] == r2["status"] == "filled" and r1["trade_id"] != r2["trade_id"]


async def test_trades_are_published(arena, kafka):
    tap = k.consumer(kafka, TRADES_TOPIC, group_id=None, latest=False)
    await tap.start()
    seen: list[Fill | Rejection] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(t.agent == ALICE and isinstance(t, Rejection) for t in seen):
        for records in (await tap.getmany(timeout_ms=200)).values():
            seen += [t for t in (k.decode(TradeOutcome, r.value) for r in records) if t is not None]
    await tap.stop()
    mine = [t for t in seen if t.agent in (ALICE, BOB)]
    assert any(isinstance(t, Fill) and t.agent == ALICE and t.side == "buy" for t in mine)
    assert any(isinstance(t, Rejection) and t.reason for t in mine)


async def test_restart_after_kill_restores_identical_accounts(arena, tools):
    before = {a: await arena.one(a, "get_portfolio") for a in (ALICE, BOB, MALLORY)}
    tools.kill()  # SIGKILL: no shutdown code runs
    tools.start()
    print(f"tools process READY after restart in {tools.ready_s:.2f}s")
    await arena.publish(seq=5)  # same prices as before
    after = {a: await arena.one(a, "get_portfolio") for a in (ALICE, BOB, MALLORY)}
    for a in before:
        for key in ("cash", "realized_pnl", "fees_paid", "fills", "rejected_orders", "total_value"):
            assert after[a][key] == before[a][key], (a, key)
        assert stable(after[a]["positions"]) == stable(before[a]["positions"])
    # And it keeps trading after the restart.
    r = await arena.one(ALICE, "execute_trade", {"product_id": "BTC-USD", "side": "sell", "quantity": 0.25})
    assert r["status"] == "filled" and r["position_after"]["quantity"] == 0


async def test_process_health_reaches_the_tools_process(arena, tools):
    """A supervisor's reports on arena.health (as `arena demo` publishes them): the tools process reads
    them from the beginning, keeps each process's last state and reports an unexpected exit."""
    reports = [
        ProcessStatus(name=f"router {ALICE}", status="starting", detail="runs/x/router-alice.log"),
        ProcessStatus(name=f"router {ALICE}", status="ready"),
        ProcessStatus(name=f"router {BOB}", status="ready"),
        ProcessStatus(name=f"router {BOB}", status="exited", detail="code 1, log runs/x/router-bob.log"),
    ]
    for r in reports:
        await arena.market.send_and_wait(HEALTH_TOPIC, k.encode(r))
    await arena.market.send_and_wait(HEALTH_TOPIC, b"{not a status")  # skipped, not fatal
    await asyncio.to_thread(tools.proc.wait_for, f"router {BOB} exited unexpectedly (code 1", 15)


async def test_tools_are_advertised_only_once_a_call_cannot_be_missed(tmp_path, monkeypatch):
    """An agent calls a tool the moment it sees the tool's capability advert, so by then every consumer
    of the tools process must have its fetch position: a call sent before "latest" is resolved is
    skipped, and the agent's turn waits out its whole timeout. (Before the fix 21-36 of the 36
    partitions were unpositioned when the adverts went out.) Its own broker: the tools' consumer
    groups must not meet the module's tools process."""
    from calfkit.controlplane.publisher import ControlPlanePublisher

    from arena.broker import EmbeddedBroker, free_port
    from arena.desk import Desk
    from arena.ledger import Ledger
    from arena.tools_service import ToolsService

    def unpositioned(consumers) -> list[str]:  # aiokafka's own record of whether a fetch position is known
        return [
            f"{c._group_id}:{tp.topic}[{tp.partition}]"
            for c in consumers
            for tp in c.assignment()
            if not c._subscription.subscription.assignment.state_value(tp).has_valid_position
        ]

    seen: list[list[str]] = []
    original = ControlPlanePublisher.start

    async def start(self, *args, **kw):
        seen.append(unpositioned(consumers))
        return await original(self, *args, **kw)

    monkeypatch.setattr(ControlPlanePublisher, "start", start)
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    service = ToolsService(KafkaSettings(bootstrap_servers=broker.bootstrap), Desk(Ledger(str(tmp_path / "ledger.db"))))
    try:
        await broker.wait_ready()
        with k.consumers_started() as consumers:
            await service.start()
        assert len(seen) == 3, seen  # one advert publisher per tool node
        assert seen == [[], [], []], (
            f"tools advertised with {[len(s) for s in seen]} partitions unpositioned, e.g. {seen[0][:3]}"
        )
    finally:
        await service.stop()
        broker.stop()


async def test_sigterm_writes_the_export(arena, tools):  # last: it leaves the tools process stopped
    assert tools.stop(signal.SIGTERM) == 0
    assert "Traceback" not in tools.proc.output
    data = json.loads(tools.export.read_text())
    rows = {a["name"]: a for a in data["agents"]}
    assert {ALICE, BOB, MALLORY} <= set(rows)
    assert rows[MALLORY]["cash"] == 100_000 and rows[ALICE]["trades"] == 3
    # metrics from the whole ledger (alice's first sell was before the restart): both sells below cost
    assert rows[ALICE]["metrics"]["round_trips"] == 2 and rows[ALICE]["metrics"]["win_rate"] == 0.0
    assert rows[MALLORY]["metrics"]["exposure_pct"] == 0.0
    [base] = [a for a in data["agents"] if a["baseline"]]  # the buy-and-hold benchmark, unranked
    assert base["rank"] is None and base["name"] == BASELINE_NAME and base["trades"] == 2  # BTC and FARTCOIN
    assert sorted(a["rank"] for a in data["agents"] if not a["baseline"]) == list(range(1, len(rows)))
    # process health: the last report of each process, the dead one among the problems
    procs = {p["name"]: p["status"] for p in data["processes"]}
    assert procs[f"router {ALICE}"] == "ready" and procs[f"router {BOB}"] == "exited"
    assert f"router {BOB} exited (code 1)" in data["feed"]["problems"]


async def test_a_tool_error_says_nothing_changed_only_when_true(arena, tools, tmp_path):
    """After the tools process stopped: an in-process one over a ledger that fails on purpose. The model is
    told "Nothing was changed" when the log shows it, the logged fill when the failure came after it, and
    no such claim when the desk cannot tell."""
    from arena.desk import Desk
    from arena.tools_service import ToolsService
    from tests.test_ledger import FaultyLedger

    assert tools.proc.proc.poll() is not None  # the module's tools process no longer serves these topics
    ledger = FaultyLedger(tmp_path / "faulty.db")
    service = ToolsService(arena.kafka, Desk(ledger))
    await service.start()
    try:
        await arena.publish(seq=6)
        order = {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 2}
        ledger.mode = "before"
        r = await arena.one(MALLORY, "execute_trade", order)
        assert r["status"] == "error" and r["error"].endswith("Nothing was changed."), r
        assert ledger.account(MALLORY).trades == 0
        ledger.mode = "after"
        r = await arena.one(MALLORY, "execute_trade", order)
        assert r["status"] == "filled" and "fold failed" in r["warning"] and "Nothing" not in json.dumps(r), r
        ledger.mode = "blind"
        r = await arena.one(MALLORY, "execute_trade", order)
        assert r["status"] == "error" and "is unknown" in r["error"] and "Nothing was changed" not in r["error"], r
    finally:
        ledger.mode = None
        await service.stop()
        ledger.close()
