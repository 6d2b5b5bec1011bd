"""Signed market data and agent keys (arena.auth) against a forger on the real broker: a tools process
started with ARENA_FEED_KEY and --agent-keys, the test as the connector (through the connector's own
SnapshotSink) and as the forger (a plain producer, and calfkit agents that call the tools under another
agent's name). Then the same without keys: only the names are checked."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import namedtuple

import pytest
import pytest_asyncio

from arena import auth
from arena import kafka as k
from arena.config import MARKET_TOPIC, KafkaSettings
from arena.feed import SnapshotSink
from arena.market import MarketSnapshot, Quote
from arena.metrics import BASELINE_NAME
from tests.support.procs import Proc
from tests.test_tools import Arena as Agents

RUN = uuid.uuid4().hex[:6]
ALICE, BOB, MALLORY, CAROL = f"alice_{RUN}", f"bob_{RUN}", f"mallory_{RUN}", f"carol_{RUN}"  # carol: a real router
FEED_KEY = f"feed-key-{RUN}-0123456789"
KEYS = {ALICE: f"alice-key-{RUN}-0123456789", BOB: f"bob-key-{RUN}-0123456789", CAROL: f"carol-key-{RUN}-0123456789"}
REAL = {"bid": 50_000.0, "ask": 50_010.0}
FORGED = {"bid": 90_000.0, "ask": 90_010.0}
Record = namedtuple("Record", "topic partition offset value headers")


def btc(book: dict, seq: int) -> MarketSnapshot:
    q = Quote(product_id="BTC-USD", price=book["bid"], best_bid=book["bid"], best_ask=book["ask"])
    return MarketSnapshot(seq=seq, quotes={"BTC-USD": q}, source="test")


# ------------------------------------------------------------------------------------------ no broker


def test_a_market_record_must_be_signed_with_the_feed_key(monkeypatch, caplog):
    value = k.encode(btc(REAL, 1))
    good = [(auth.SIGNATURE_HEADER, auth.sign(FEED_KEY.encode(), value))]
    assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 0, 1, value, ())) is not None  # no key: none needed
    monkeypatch.setenv(auth.FEED_KEY_ENV, FEED_KEY)
    assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 0, 2, value, good)) is not None
    other = [(auth.SIGNATURE_HEADER, auth.sign(b"another key entirely", value))]
    for offset, headers in ((3, ()), (4, other), (5, good + good), (6, [(auth.SIGNATURE_HEADER, good[0][1][:-1])])):
        assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 0, offset, value, headers)) is None
    tampered = value.replace(b"50010.0", b"50011.0")
    assert k.decode_record(MarketSnapshot, Record(MARKET_TOPIC, 0, 7, tampered, good)) is None
    lines = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(lines) == 5 and "offset 3: ValueError: unsigned" in lines[0] and "bad arena-sig signature" in lines[1], (
        lines
    )


def test_a_proof_is_for_one_agent_one_run_one_deadline():
    keys = auth.AgentKeys({n: v.encode() for n, v in KEYS.items()})
    deadline = time.time() + 60
    proof = auth.agent_proof(KEYS[ALICE].encode(), ALICE, "run1", deadline)
    deps = {"deadline": deadline, auth.PROOF: proof}
    assert keys.refusal(ALICE, "run1", deps) is None
    assert keys.refusal(ALICE, "run1", json.loads(json.dumps(deps))) is None  # as it travels
    assert "not " + BOB + "'s" in keys.refusal(BOB, "run1", deps)  # replayed for another agent
    assert "not" in keys.refusal(ALICE, "run2", deps)  # ... another run
    assert "not" in keys.refusal(ALICE, "run1", {**deps, "deadline": deadline + 60})  # ... a later deadline
    assert "no proof" in keys.refusal(ALICE, "run1", {"deadline": deadline})
    assert "no agent key" in keys.refusal(MALLORY, "run1", deps)
    no_keys = auth.AgentKeys()
    assert no_keys.refusal(MALLORY, "run1", {}) is None
    for name in (BASELINE_NAME, "a b", "", None, "x" * 65):
        assert no_keys.refusal(name, "run1", {}) is not None


def test_agent_key_files(tmp_path):
    toml = tmp_path / "keys.toml"
    toml.write_text(f'{ALICE} = "{KEYS[ALICE]}"\n{BOB} = "{KEYS[BOB]}"\n')
    assert auth.load_agent_keys(toml) == {n: v.encode() for n, v in KEYS.items() if n in (ALICE, BOB)}
    js = tmp_path / "keys.json"
    js.write_text(json.dumps({ALICE: KEYS[ALICE], BOB: KEYS[BOB]}))
    assert auth.load_agent_keys(js) == auth.load_agent_keys(toml)
    for bad, why in (
        ({"a b": "x" * 20}, "not an agent name"),
        ({ALICE: "short"}, "at least"),
        ({}, "no agent keys"),
        ({BASELINE_NAME: "x" * 20}, "not an agent name"),
    ):
        js.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=why):
            auth.load_agent_keys(js)
    js.write_text("{not json")
    with pytest.raises(ValueError, match="neither"):
        auth.load_agent_keys(js)


# ---------------------------------------------------------------------------------- the forger, live


@pytest.fixture(scope="module")
def keyed_tools(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    keys = tmp / "agent-keys.json"
    keys.write_text(json.dumps(KEYS))
    proc = Proc(
        "tools_and_dashboard.py",
        "--no-dashboard",
        "--ledger",
        str(tmp / "ledger.db"),
        "--agent-keys",
        str(keys),
        "--status-every",
        "3600",
        "--connect-timeout",
        "120",
        env={auth.FEED_KEY_ENV: FEED_KEY},
    )
    yield proc
    proc.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents(broker, keyed_tools):
    """In-process calfkit agents named alice, bob and mallory: whoever runs them is the forger."""
    a = Agents(KafkaSettings(bootstrap_servers=broker.bootstrap))
    await a.start([ALICE, BOB, MALLORY])
    await asyncio.to_thread(keyed_tools.wait_ready, 120)
    yield a
    await a.stop()


async def turn(
    agents: Agents, agent: str, calls: list[dict], *, key: str | None = None, proof_for: str | None = None
) -> dict:
    """One turn of `agent` making `calls`, with the deps a router with `key` would send (as `proof_for`)."""
    run_id, deadline = uuid.uuid4().hex, time.time() + 30
    deps: dict = {"deadline": deadline}
    if key is not None:
        deps[auth.PROOF] = auth.agent_proof(key.encode(), proof_for or agent, run_id, deadline)
    handle = await agents.client.agent(agent).start(json.dumps(calls), correlation_id=run_id, deps=deps)
    return json.loads((await handle.result(timeout=30)).output)


BUY = [{"tool": "execute_trade", "args": {"product_id": "BTC-USD", "side": "buy", "quantity": 0.01}, "id": "c1"}]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(600)
async def test_with_keys_a_forger_moves_no_price_and_trades_for_no_agent(agents, keyed_tools, kafka):
    sink = SnapshotSink(agents.market, key=FEED_KEY.encode())  # the connector's own signing
    assert await sink.publish(btc(REAL, 1))
    await asyncio.sleep(0.5)
    # The forger: newer snapshots at another price, unsigned and signed with a guessed key.
    unsigned = await agents.market.send_and_wait(MARKET_TOPIC, k.encode(btc(FORGED, 2)))
    value = k.encode(btc(FORGED, 3))
    guessed = await agents.market.send_and_wait(
        MARKET_TOPIC, value, headers=[(auth.SIGNATURE_HEADER, auth.sign(b"guess", value))]
    )
    for md, why in ((unsigned, "unsigned"), (guessed, "bad arena-sig signature")):
        needle = f"on {MARKET_TOPIC} partition {md.partition} offset {md.offset}: ValueError: {why}"
        deadline = time.monotonic() + 30
        while needle not in keyed_tools.output:
            assert time.monotonic() < deadline, keyed_tools.output[-3000:]
            await asyncio.sleep(0.1)

    # Alice's router (her key) trades, at the signed price.
    r = (await turn(agents, ALICE, BUY, key=KEYS[ALICE]))["c1"]
    assert r["status"] == "filled" and r["price"] == REAL["ask"], r
    # The forger calls as alice: no proof, bob's key, alice's proof replayed for bob, an agent with no key.
    refused = {
        "no proof": await turn(agents, ALICE, BUY),
        "bob's key": await turn(agents, ALICE, BUY, key=KEYS[BOB]),
        "replayed": await turn(agents, BOB, BUY, key=KEYS[ALICE], proof_for=ALICE),
        "no key": await turn(agents, MALLORY, BUY, key="made-up-key-0123456789"),
        "portfolio": await turn(agents, ALICE, [{"tool": "get_portfolio", "id": "c1"}]),
    }
    for why, result in refused.items():
        text = json.dumps(result["c1"])
        assert "call refused" in text, (why, result)
    assert "no agent key" in json.dumps(refused["no key"]) and "no proof" in json.dumps(refused["no proof"])
    r = (await turn(agents, ALICE, [{"tool": "get_portfolio", "id": "c1"}], key=KEYS[ALICE]))["c1"]
    assert r["fills"] == 1 and r["agent"] == ALICE, r  # only her own order moved her account


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(600)
async def test_a_router_proves_its_turns_with_its_key(agents, keyed_tools, kafka, monkeypatch):
    """deploy_router_node.py's Router with ARENA_AGENT_KEY: its key trades, another key is refused."""
    from arena.compat.vendored_pydantic_ai import ModelResponse, TextPart, ToolCallPart, ToolReturnPart, function_model

    FunctionModel, _ = function_model()
    from calfkit.providers.pydantic_ai.model_client import PydanticModelClient

    from arena.router import Router

    def think(messages, info) -> ModelResponse:
        results = [p.content for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        if results:
            return ModelResponse(parts=[TextPart(json.dumps(results, default=str))])
        return ModelResponse(
            parts=[
                ToolCallPart(
                    "execute_trade", {"product_id": "BTC-USD", "side": "buy", "quantity": 0.01}, tool_call_id="c1"
                )
            ]
        )

    class Instant(FunctionModel, PydanticModelClient):
        pass

    sink = SnapshotSink(agents.market, key=FEED_KEY.encode())
    for seq, (key, expect) in enumerate(((KEYS[CAROL], '"status": "filled"'), (KEYS[BOB], "call refused")), start=10):
        monkeypatch.setenv(auth.AGENT_KEY_ENV, key)
        # account_wait_s: the turn need not wait (2 s by default) for a valuation of her account at its snapshot
        router = Router(name=CAROL, system_prompt="buy", model_client=Instant(think, model_name="instant"), kafka=kafka,
                        account_wait_s=0.2)  # fmt: skip
        await router.start()
        try:
            assert await sink.publish(btc(REAL, seq))  # a fresh quote for the desk
            await asyncio.sleep(0.5)
            assert await router.missing_tools(60) == ()  # its view lists the tools (they advertised long ago)
            d = await asyncio.wait_for(router.run_turn(btc(REAL, seq)), 60)
        finally:
            await router.stop()
        assert d.status == "done" and expect in d.output, d
