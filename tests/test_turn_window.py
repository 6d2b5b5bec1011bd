"""The tools process polls short while an agent's turn is under way (arena.tools_service.OpenTurns): a real
model's tool calls come seconds apart, past the quiet window after a record."""

from __future__ import annotations

import asyncio

import pytest

from arena import kafka as k
from arena import polling
from arena.config import DECISIONS_TOPIC, KafkaSettings
from arena.market import utcnow
from arena.tools_service import OpenTurns
from tests.support.records import turn

SHORT, LONG = 10, 1000


@pytest.fixture
def pacer(monkeypatch):
    """The process's pacer with no quiet or start-up window: short only while something is under way."""
    clock = [0.0]
    p = polling.Pacer(idle_ms=LONG, quiet_s=0.0, startup_s=0.0, clock=lambda: clock[0])
    monkeypatch.setattr(polling, "PACER", p)
    return p, clock


def test_a_turn_keeps_the_tools_short_from_its_start_to_its_end(pacer):
    p, clock = pacer
    turns = OpenTurns(max_turn_s=120, clock=lambda: clock[0])
    now = utcnow()
    assert p.wait_with(SHORT) == LONG
    turns.on_decision(turn("alice", "started", 0, 0, 0, None, at=now))
    turns.on_decision(turn("bob", "started", 0, 0, 0, None, at=now))
    clock[0] = 30.0  # a slow model: well past the quiet window
    assert p.wait_with(SHORT) == SHORT
    turns.on_decision(turn("alice", "skipped", 0, 0, 0, None, at=now))  # a tick displaced: alice still turning
    assert turns.agents == ["alice", "bob"]
    turns.on_decision(turn("alice", "done", 1, 5, 5, None, at=now))
    assert turns.agents == ["bob"] and p.wait_with(SHORT) == SHORT
    turns.on_decision(turn("bob", "timeout", 1, 5, 5, None, at=now))
    assert turns.agents == [] and p.wait_with(SHORT) == LONG


def test_a_turn_whose_end_never_comes_closes_after_the_longest_turn(pacer):
    p, clock = pacer
    turns = OpenTurns(max_turn_s=120, clock=lambda: clock[0])
    turns.on_decision(turn("alice", "started", 0, 0, 0, None, at=utcnow()))  # then its router dies
    clock[0] = 119.0
    turns.check()
    assert p.wait_with(SHORT) == SHORT
    clock[0] = 121.0
    turns.check()
    assert turns.agents == [] and p.wait_with(SHORT) == LONG
    turns.close()
    assert p.wait_with(SHORT) == LONG  # closing twice does not unbalance the pacer


@pytest.mark.processes
async def test_the_tools_process_polls_short_while_a_turn_it_reads_is_under_way(tmp_path, monkeypatch):
    """In-process tools on their own broker (their consumer groups must not meet another tools process):
    the decisions feed opens and closes the window."""
    from arena.broker import EmbeddedBroker, free_port
    from arena.desk import Desk
    from arena.ledger import Ledger
    from arena.tools_service import ToolsService

    p = polling.Pacer(idle_ms=LONG, quiet_s=0.0, startup_s=0.0)
    monkeypatch.setattr(polling, "PACER", p)
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    service = ToolsService(settings, Desk(Ledger(str(tmp_path / "ledger.db"))))
    producer = k.producer(settings)

    async def until(wait: int) -> None:
        while p.wait_with(SHORT) != wait:
            await asyncio.sleep(0.02)

    try:
        await broker.wait_ready()
        await service.start()
        await producer.start()
        assert p.wait_with(SHORT) == LONG
        now = utcnow()
        for status in ("started", "done"):
            record = turn("alice", status, 0, 0, 0, None, at=now)
            await producer.send_and_wait(DECISIONS_TOPIC, record.model_dump_json().encode(), key=b"alice")
            await asyncio.wait_for(until(SHORT if status == "started" else LONG), 10)
    finally:
        await producer.stop()
        await service.stop()
        broker.stop()
