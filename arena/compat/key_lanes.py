"""Give a calfkit run an idle lane, so one stuck step does not hold up other agents' calls.

Symptom: calfkit 0.13 serves a node with `KeyOrderedSubscriber`: `max_workers` lanes, each running one
message at a time, and a message's lane is `crc32(key) % max_workers` (the key is the run id). Runs
that hash to the same lane wait for each other, though only a run's own steps need an order. In the
tools process (8 lanes per tool) one tool step that never ends held up every other agent's call in
its lane: two agents' first turns timed out together (docs/RELIABILITY.md, "Known issues").
Fix: `_lane_for(key)` keeps a key on the lane its earlier messages went to while any of them is queued
or running (the per-key order calfkit promises), and otherwise picks the lane with the fewest such
keys, starting from the hashed one. The count is kept by wrapping `consume` (what a lane calls for each
message). Keyless messages keep calfkit's round-robin.
Can go when calfkit's key-ordered subscriber stops sharing a lane between keys that are both in flight.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

_installed: list[tuple[type, dict[str, Any]]] = []


def _state(sub: Any) -> dict[bytes, list[int]]:
    """key -> [lane, messages of that key dispatched and not yet consumed]; one map per subscriber."""
    state = sub.__dict__.get("_arena_key_lanes")
    if state is None:
        state = sub.__dict__["_arena_key_lanes"] = {}
    return state


def pick_lane(state: dict[bytes, list[int]], key: bytes, lanes: int) -> int:
    """The lane for a message with `key`: its key's lane while the key is in flight, else the least busy
    lane, ties going to the first from the hashed one onwards (calfkit's choice on an idle subscriber)."""
    held = state.get(key)
    if held is not None:
        held[1] += 1
        return held[0]
    busy = [0] * lanes
    for lane, _ in state.values():
        busy[lane] += 1
    start = zlib.crc32(key) % lanes
    lane = min(range(lanes), key=lambda i: (busy[(start + i) % lanes], i))
    lane = (start + lane) % lanes
    state[key] = [lane, 1]
    return lane


def release(state: dict[bytes, list[int]], key: bytes) -> None:
    held = state.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del state[key]


def spread_key_lanes() -> bool:
    """Install once per process. False when calfkit no longer has the subscriber or the methods used."""
    try:
        from calfkit._faststream_ext._subscriber import KeyOrderedSubscriber
    except ImportError:
        return False
    if _installed:
        return True
    if not all(callable(getattr(KeyOrderedSubscriber, name, None)) for name in ("_lane_for", "consume")):
        return False
    lane_for, consume = KeyOrderedSubscriber._lane_for, KeyOrderedSubscriber.consume

    @functools.wraps(lane_for)
    def _lane_for(self, key: bytes | None) -> int:
        if key is None:
            return lane_for(self, key)
        return pick_lane(_state(self), key, self.max_workers)

    @functools.wraps(consume)
    async def _consume(self, msg: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await consume(self, msg, *args, **kwargs)
        finally:
            key = getattr(msg, "key", None)
            if key is not None:
                release(_state(self), key)

    _installed.append(
        (KeyOrderedSubscriber, {n: KeyOrderedSubscriber.__dict__.get(n) for n in ("_lane_for", "consume")})
    )
    KeyOrderedSubscriber._lane_for = _lane_for  # type: ignore[method-assign]
    KeyOrderedSubscriber.consume = _consume  # type: ignore[method-assign]
    return True


def unspread_key_lanes() -> None:
    """Undo spread_key_lanes (tests)."""
    while _installed:
        cls, originals = _installed.pop()
        for name, fn in originals.items():
            if fn is None:  # inherited: drop the override
                delattr(cls, name)
            else:
                setattr(cls, name, fn)
