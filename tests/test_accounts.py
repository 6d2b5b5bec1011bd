"""The account a turn prompt carries (arena.accounts): its wire record, how the prompt shows it, how the
offline policies read it, and how a router keeps its own. In-process; the broker tests are in
tests/test_account_turns.py."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from types import SimpleNamespace

import pytest

from arena import kafka as k
from arena.accounts import (
    ACCOUNT_HEADER,
    ACCOUNTS_TOPIC,
    AccountPublisher,
    AccountRecord,
    OwnAccount,
    portfolio_json,
)
from arena.desk import Desk
from arena.ledger import Ledger
from arena.market import utcnow
from arena.policies import ACCOUNT_HEADER as POLICY_ACCOUNT_HEADER
from arena.policies import parse_prompt_account
from arena.router import build_prompt
from arena.sim.policy import Turn, plan
from tests.support import snapshot

TOOLS = {"get_portfolio": {}, "execute_trade": {"properties": {"product_id": {}, "side": {}, "quantity": {}}}}


@pytest.fixture
def desk(tmp_path) -> Desk:
    d = Desk(Ledger(tmp_path / "ledger.db"))
    d.quotes.update(snapshot(1))
    return d


def holding(desk: Desk, agent: str = "alice") -> Desk:
    desk.note_call(agent, "execute_trade")
    assert desk.execute_trade(agent, "BTC-USD", "buy", 0.01, call_key=f"{agent}|1")["status"] == "filled"
    return desk


def publisher(desk: Desk, *agents: str, strategy: str = "momentum") -> AccountPublisher:
    pub = AccountPublisher(None, desk)  # record() builds without sending
    for a in agents:
        pub.on_turn(a, strategy)
    return pub


def test_the_record_is_the_desks_portfolio_unchanged_through_the_wire(desk):
    holding(desk)
    snap = snapshot(2, jump=1.01)
    desk.quotes.update(snap)
    pub = publisher(desk, "alice")
    pub.on_snapshot(snap.seq, snap.published_at)
    rec = pub.record("alice", "snapshot")
    back = k.decode(AccountRecord, k.encode(rec))
    assert back is not None and back.portfolio == desk.portfolio("alice", "momentum")
    assert (back.snapshot_seq, back.snapshot_at, back.strategy) == (2, snap.published_at, "momentum")
    assert back.portfolio["limits"]["strategy"] == "momentum"  # valued under the turn's strategy's limits
    assert back.covers(snap.published_at) and not back.covers(snap.published_at + timedelta(seconds=1))


def test_reading_an_agent_without_an_account_does_not_open_one(desk):
    pub = publisher(desk, "newcomer")
    rec = pub.record("newcomer", "turn")
    assert rec.portfolio is None and desk.ledger.account("newcomer") is None
    assert rec.covers(utcnow())  # no account at any snapshot: nothing to wait for


def test_marks_due_after_a_snapshot_a_trade_a_first_call_and_a_new_strategy(desk):
    holding(desk)
    pub = AccountPublisher(None, desk)
    pub.on_snapshot(1, utcnow())
    assert pub._due == {}  # no turn seen yet: the strategy (its limits) is unknown
    pub.on_turn("alice", "momentum")
    pub.on_turn("ghost", "momentum")  # no account: published as none yet
    assert pub._due == {"alice": "turn", "ghost": "turn"}
    pub._due.clear()
    pub._opened.add("alice")
    pub.on_turn("alice", "momentum")
    assert pub._due == {}  # nothing new: the snapshots value it
    pub.on_turn("alice", "brainrot")
    assert pub._due == {"alice": "turn"}
    pub._due.clear()
    pub.on_snapshot(2, utcnow())
    assert pub._due == {"alice": "snapshot"}  # ghost has no account to mark
    pub._due.clear()
    pub.on_snapshot(1, utcnow() - timedelta(minutes=1))  # older than the one taken: its quotes changed nothing
    pub.on_trade("alice")
    pub.on_call("ghost")  # its first call opened it: publish before the next snapshot
    pub.on_call("alice")  # already published with an account
    assert pub._due == {"alice": "trade", "ghost": "call"}


def test_forged_turns_cannot_grow_the_strategy_table_without_bound(desk):
    pub = AccountPublisher(None, desk, max_agents=3)
    for i in range(10):
        pub.on_turn(f"forged{i}", "")
    assert list(pub.strategies) == ["forged7", "forged8", "forged9"]


def good_record(**kw) -> dict:
    portfolio = {
        "agent": "alice",
        "cash": 100.0,
        "positions": [{"product_id": "BTC-USD", "quantity": 0.1}],
        "total_value": 110.0,
    }
    portfolio.update(kw.pop("portfolio", {}))
    return {"agent": "alice", "valued_at": utcnow().isoformat(), "portfolio": portfolio, **kw}


@pytest.mark.parametrize(
    "bad",
    [
        {"portfolio": {"agent": "mallory"}},  # someone else's account under this name
        {"portfolio": {"cash": "lots"}},
        {"portfolio": {"positions": {"BTC-USD": 1}}},
        {"portfolio": {"positions": [{"product_id": "BTC USD", "quantity": 1}]}},
        {"portfolio": {"positions": [{"product_id": "BTC-USD", "quantity": -1}]}},
        {"portfolio": {"note": "x" * 20_000}},
        {"portfolio": {"deep": [[[[[[[[1]]]]]]]]}},
        {"portfolio": {"many": list(range(60_000))}},
        {"valued_at": (utcnow() + timedelta(hours=1)).isoformat()},
        {"agent": "../etc"},
    ],
)
def test_a_record_that_means_nothing_valid_is_skipped(bad):
    assert k.decode(AccountRecord, json.dumps(good_record(**bad)).encode(), ACCOUNTS_TOPIC) is None
    assert k.decode(AccountRecord, json.dumps(good_record()).encode()) is not None
    assert k.decode(AccountRecord, b'{"agent": "alice", "valued_at": "2026-01-01T00:00:00Z", "portfolio": '
                    b'{"agent": "alice", "cash": NaN, "positions": [], "total_value": 1}}') is None  # fmt: skip


def test_the_prompt_shows_the_account_and_the_policies_read_it(desk):
    holding(desk)
    snap = snapshot(2)
    desk.quotes.update(snap)
    pub = publisher(desk, "alice")
    pub.on_snapshot(snap.seq, snap.published_at)
    rec = pub.record("alice")
    prompt = build_prompt(snap, account=rec)
    assert POLICY_ACCOUNT_HEADER == ACCOUNT_HEADER
    assert f"{ACCOUNT_HEADER} (what get_portfolio returns now, valued at snapshot #2):" in prompt
    shown = prompt.split(ACCOUNT_HEADER)[1].splitlines()[1]
    assert shown == portfolio_json(desk.portfolio("alice", "momentum"))  # the text get_portfolio's result reads
    held = parse_prompt_account(prompt)
    assert held is not None and held.positions == {"BTC-USD": 0.01} and held.cash == rec.portfolio["cash"]
    assert "call get_portfolio only if it is not shown" in prompt
    # Older than the turn's snapshot (the tools had not valued it yet): shown with its age, still read.
    later = snapshot(3)
    stale = build_prompt(later, account=rec)
    assert "as get_portfolio returned it" in stale and "valued at snapshot #2, not yet at this one" in stale
    assert parse_prompt_account(stale) is not None
    for missing, says in ((None, "not yet known"), (pub.record("ghost"), "none yet")):
        text = build_prompt(snap, account=missing)
        assert f"{ACCOUNT_HEADER}: {says}" in text and parse_prompt_account(text) is None


def conversation(prompt: str, *, system: str = "momentum") -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def test_a_policy_with_the_account_in_its_prompt_trades_at_once_and_without_it_asks_first(desk):
    pub = publisher(desk, "alice")
    jump = snapshot(2, jump=1.02)
    desk.quotes.update(jump)
    desk.note_call("alice", "get_portfolio")
    pub.on_snapshot(jump.seq, jump.published_at)
    with_account = plan("momentum", Turn(conversation(build_prompt(jump, account=pub.record("alice")))), TOOLS, 0)
    assert {name for name, _ in with_account.calls} == {"execute_trade"} and len(with_account.calls) == 3
    hold = plan("hold", Turn(conversation(build_prompt(jump, account=pub.record("alice")))), TOOLS, 0)
    assert not hold.calls and hold.text.startswith("hold: no trade")
    unknown = plan("momentum", Turn(conversation(build_prompt(jump))), TOOLS, 0)
    assert [name for name, _ in unknown.calls] == ["get_portfolio"]


def record_on_the_wire(rec: AccountRecord | bytes, key: str, offset: int = 0) -> SimpleNamespace:
    value = rec if isinstance(rec, bytes) else k.encode(rec)
    return SimpleNamespace(topic=ACCOUNTS_TOPIC, partition=0, offset=offset, key=key.encode(), value=value)


async def test_a_router_keeps_its_own_newest_account_and_waits_for_its_snapshot(desk):
    holding(desk)
    pub = publisher(desk, "alice", "bob")
    holding(desk, "bob")
    snap1, snap2 = snapshot(1), snapshot(2)
    pub.on_snapshot(snap1.seq, snap1.published_at)
    at1 = pub.record("alice")
    pub.on_snapshot(snap2.seq, snap2.published_at)
    at2 = pub.record("alice")
    mine = OwnAccount("alice", "momentum")
    mine.offer_record(record_on_the_wire(pub.record("bob"), "bob"))  # another agent's key
    mine.offer_record(record_on_the_wire(pub.record("bob"), "alice"))  # another agent's account under mine
    mine.offer_record(record_on_the_wire(b"garbage", "alice"))
    mine.offer_record(record_on_the_wire(b"", "alice"))
    mine.offer(at1.model_copy(update={"strategy": "brainrot"}))  # valued under other limits
    assert mine.latest is None
    assert await mine.wait_for(snap1.published_at, 0.05) is None  # nothing at all: not yet known
    mine.offer_record(record_on_the_wire(at1, "alice"))
    assert mine.latest == at1
    # Waiting for the valuation at #2: it arrives while waiting.
    waiter = asyncio.create_task(mine.wait_for(snap2.published_at, 5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    mine.offer_record(record_on_the_wire(at2, "alice"))
    assert await asyncio.wait_for(waiter, 1) == at2
    mine.offer(at1)  # an older valuation never replaces a newer one
    assert mine.latest == at2
    # Not valued at a newer snapshot within the bound: the newest one known, after the bound.
    t0 = asyncio.get_running_loop().time()
    assert await mine.wait_for(snapshot(3).published_at, 0.2) == at2
    assert asyncio.get_running_loop().time() - t0 >= 0.2
