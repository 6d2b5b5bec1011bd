"""arena/compat/key_lanes.py: a run whose lane is held by another run's stuck step gets an idle lane."""

from __future__ import annotations

import asyncio
import zlib
from collections import namedtuple

import pytest
from calfkit import ToolContext, agent_tool

from arena.compat.key_lanes import pick_lane, release, spread_key_lanes, unspread_key_lanes

Record = namedtuple("Record", "topic partition offset key value")
LANES = 8  # the tools process's --max-workers


def colliding_run_ids(n: int = 2) -> list[bytes]:
    """Run ids (hex, as calfkit keys a run's messages) that calfkit's crc32 puts in the same lane."""
    by_lane: dict[int, list[bytes]] = {}
    i = 0
    while True:
        key = f"{i:032x}".encode()
        same = by_lane.setdefault(zlib.crc32(key) % LANES, [])
        same.append(key)
        if len(same) == n:
            return same
        i += 1


def subscriber():
    """calfkit's key-ordered subscriber with its dispatch state and no broker (its own test seams)."""
    from calfkit._faststream_ext._subscriber import KeyOrderedSubscriber

    sub = object.__new__(KeyOrderedSubscriber)
    sub.max_workers, sub._bound, sub._lanes = LANES, 2 * LANES, []
    sub._allocate_dispatch_state()
    return sub


def lane_of(sub, record) -> int:
    """Which lane `consume_one` put the record in (it is the only item waiting there)."""
    for i, lane in enumerate(sub._lanes):
        try:
            got = lane.receive.receive_nowait()
        except Exception:  # anyio.WouldBlock: nothing in this lane
            continue
        assert got is record
        return i
    raise AssertionError("the record was not dispatched to any lane")


@pytest.fixture
def spread():
    assert spread_key_lanes()
    yield
    unspread_key_lanes()


def test_a_run_sharing_a_hashed_lane_with_a_stuck_step_gets_another_lane(spread):
    stuck, other = colliding_run_ids()
    sub = subscriber()

    async def dispatch():
        a = Record("tool.execute_trade.input", 2, 0, stuck, b"")
        await sub.consume_one(a)  # its step never ends: never consumed, its lane stays busy
        b = Record("tool.execute_trade.input", 3, 0, other, b"")
        await sub.consume_one(b)
        return lane_of(sub, a), lane_of(sub, b)

    lane_a, lane_b = asyncio.run(dispatch())
    assert lane_a == zlib.crc32(stuck) % LANES  # calfkit's choice while the subscriber is idle
    assert lane_b != lane_a  # without the fix both wait in one lane: the second run stalls behind the first


def test_messages_of_one_run_keep_their_lane_while_any_is_in_flight(spread):
    run, other = colliding_run_ids()
    sub = subscriber()

    async def dispatch():
        first = Record("agent.a.private.input", 0, 0, run, b"")
        await sub.consume_one(first)
        lanes = [lane_of(sub, first)]
        await sub.consume_one(blocker := Record("x", 0, 0, other, b""))
        lanes.append(lane_of(sub, blocker))
        second = Record("a.private.return", 1, 0, run, b"")
        await sub.consume_one(second)  # the first is not consumed yet: same lane, so it runs after it
        lanes.append(lane_of(sub, second))
        return lanes

    first, blocker, second = asyncio.run(dispatch())
    assert second == first and blocker != first


def test_a_key_leaves_its_lane_once_its_messages_are_consumed():
    state: dict[bytes, list[int]] = {}
    a, b = colliding_run_ids()
    lane = pick_lane(state, a, LANES)
    assert pick_lane(state, a, LANES) == lane  # two of a's messages in flight
    release(state, a)
    assert pick_lane(state, b, LANES) != lane  # a still holds it
    release(state, a)
    release(state, b)
    assert state == {}  # nothing in flight: nothing remembered
    assert pick_lane(state, b, LANES) == lane  # idle again: the hashed lane, as calfkit picks it


_released: asyncio.Event | None = None


@agent_tool
async def hold(ctx: ToolContext, stuck: bool) -> str:
    """Answer at once, or (stuck) only once the test releases it."""
    if stuck:
        await _released.wait()
    return "held" if stuck else "answered"


async def test_on_the_broker_a_stuck_call_does_not_hold_up_another_runs_call_in_its_hashed_lane(kafka, spread):
    """Two agents' runs whose ids calfkit hashes to the same lane of a tool (8 lanes, as the tools process
    serves them): the first run's call never ends until released; the second run's call is answered."""
    global _released
    import json

    from calfkit import Agent, Client, Worker

    from arena import kafka as k
    from arena.config import CONSUMER_TUNING
    from tests.scripted_model import ScriptedModel

    stuck_run, other_run = (key.decode() for key in colliding_run_ids())
    _released = asyncio.Event()
    tools = Worker(Client.connect(kafka.bootstrap_servers), nodes=[hold], max_workers=LANES,
                   extra_subscribe_kwargs=dict(CONSUMER_TUNING))  # fmt: skip
    agents = [
        Agent(name, system_prompt="test", model_client=ScriptedModel(), tools=[hold]) for name in ("kl_a", "kl_b")
    ]
    workers = [Worker(Client.connect(kafka.bootstrap_servers), nodes=[a], extra_subscribe_kwargs=dict(CONSUMER_TUNING))
               for a in agents]  # fmt: skip
    client = Client.connect(kafka.bootstrap_servers)
    with k.consumers_started() as started:
        await asyncio.gather(tools.start(), *(w.start() for w in workers))
    await k.positioned(started)  # a call sent now is not skipped by "latest"
    try:
        call = [{"tool": "hold", "args": {"stuck": True}, "id": "c1"}]
        stuck = await client.agent("kl_a").start(json.dumps(call), correlation_id=stuck_run)
        await asyncio.sleep(1.0)  # its call is in its lane and waits there
        call[0]["args"]["stuck"] = False
        other = await client.agent("kl_b").start(json.dumps(call), correlation_id=other_run)
        result = await other.result(timeout=10)  # without the fix: queued behind the stuck call, a timeout
        assert json.loads(result.output) == {"c1": "answered"}
        _released.set()
        assert json.loads((await stuck.result(timeout=10)).output) == {"c1": "held"}
    finally:
        _released.set()
        await asyncio.gather(tools.stop(), *(w.stop() for w in workers), return_exceptions=True)
        await client.aclose()


def test_canary_calfkit_still_hashes_every_key_to_a_fixed_lane():
    # When this fails, calfkit no longer shares a lane between keys in flight: delete arena/compat/key_lanes.py.
    a, b = colliding_run_ids()
    sub = subscriber()
    assert sub._lane_for(a) == sub._lane_for(b) == zlib.crc32(a) % LANES
