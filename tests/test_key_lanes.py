"""arena/compat/key_lanes.py: a run whose lane is held by another run's stuck step gets an idle lane."""

from __future__ import annotations

import asyncio
import zlib
from collections import namedtuple

import pytest

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


def test_canary_calfkit_still_hashes_every_key_to_a_fixed_lane():
    # When this fails, calfkit no longer shares a lane between keys in flight: delete arena/compat/key_lanes.py.
    a, b = colliding_run_ids()
    sub = subscriber()
    assert sub._lane_for(a) == sub._lane_for(b) == zlib.crc32(a) % LANES
