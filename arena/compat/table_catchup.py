"""Catch calfkit's tables up at a short wait, then give them back their own.

Symptom: a ktables 0.x `KafkaTable` (calfkit 0.13's capability view over calf.capabilities runs at
ktables' defaults: fetch wait 500 ms, poll 200 ms) snapshots its topic's end offsets after its consumer
has started, with the consumer's first fetch already in flight, and the broker answers one connection's
requests in order. On an empty topic (no tools process has advertised on this broker yet) that fetch
runs out its whole wait before the snapshot is answered, and the gate is checked only after the next
poll: 0.7 s of a router's start (bench/README.md). With records on the topic the fetch returns at once.
Fix: inside `tables_catch_up_at(short_ms, ...)`, `KafkaTable.start` builds its consumer with the short
wait and polls at it until caught up; then the table gets its own poll timeout back and
`caught_up(consumer, fetch_ms)` hands its consumer back its own fetch wait (arena.startup gives it to the
polling policy). Tables started outside a block, or already as short, are untouched.
Can go when ktables snapshots the end offsets before its first fetch and checks the gate without
waiting for a poll (or calfkit lets a caller tune a view's catch-up alone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from aiokafka import AIOKafkaConsumer

CaughtUp = Callable[[AIOKafkaConsumer, int], None]

# Set by the block; asyncio tasks created inside it (calfkit's start-up) inherit it.
_active: ContextVar[tuple[int, CaughtUp] | None] = ContextVar("arena_table_catchup", default=None)
_installed: list[object] = []


def _configured_poll_ms(table) -> int:
    """The table's own poll timeout: a plain attribute, or the one arena/compat/table_poll.py keeps."""
    own = vars(table)
    return own.get("_poll_timeout_ms", own.get("_arena_poll_timeout_ms", 200))


def install() -> bool:
    """Wrap `KafkaTable.start` once per process (inert outside a block). False without ktables."""
    try:
        from ktables.kafka_table import KafkaTable
    except ImportError:  # pragma: no cover - calfkit always brings it
        return False
    if _installed:
        return True
    original = KafkaTable.start

    async def start(self) -> None:
        active = _active.get()
        fetch_ms, poll_ms = self._fetch_max_wait_ms, _configured_poll_ms(self)
        if active is None or (fetch_ms <= active[0] and poll_ms <= active[0]):
            return await original(self)
        short, caught_up = active
        self._fetch_max_wait_ms = self._poll_timeout_ms = short
        try:
            await original(self)
        finally:
            self._fetch_max_wait_ms, self._poll_timeout_ms = fetch_ms, poll_ms
            consumer = self._consumer
            if consumer is not None:
                from arena.compat.fetch_wait import set_fetch_wait

                set_fetch_wait(consumer, fetch_ms)
                caught_up(consumer, fetch_ms)

    start.__wrapped__ = original  # type: ignore[attr-defined]
    _installed.append(original)
    KafkaTable.start = start  # type: ignore[method-assign]
    return True


@contextmanager
def tables_catch_up_at(short_ms: int, caught_up: CaughtUp = lambda consumer, ms: None) -> Iterator[None]:
    """Every KafkaTable started in this block (and in tasks it creates) catches up at `short_ms`."""
    install()
    token = _active.set((short_ms, caught_up))
    try:
        yield
    finally:
        _active.reset(token)
