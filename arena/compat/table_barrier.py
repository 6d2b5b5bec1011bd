"""See when a calfkit fan-out table waits to read its own writes.

Symptom: calfkit 0.13 keeps a parallel tool batch in two ktables tables per agent, and before each read
of them waits on `KafkaTable.barrier()` (read-your-writes: until the table's reader has fetched every
record published before the call). Nothing else says when that reader has something to fetch, so a
router had to keep both readers fetching with the short wait through every turn (bench/README.md).
Fix: wrap the public `KafkaTable.barrier` once per process: `on_enter(consumer)` before the barrier
and `on_exit(consumer)` after it, with the table's reader consumer (ktables' private `_consumer`, the
one the reader loop fetches with; None before start or after stop: no call). A router resumes the
reader for the barrier (its records are already on the broker: one fetch takes them) and pauses it after.
Can go when the broker answers a waiting fetch when a record lands (then readers may always wait long),
or calfkit says when a batch is open.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_installed: list[tuple[type, Any]] = []


def watch_barriers(on_enter: Callable[[Any], None], on_exit: Callable[[Any], None]) -> bool:
    """From now on every KafkaTable.barrier() calls `on_enter(consumer)` before it waits and
    `on_exit(consumer)` once it returns or raises. False when ktables is not importable or its table
    no longer keeps its reader consumer in `_consumer`."""
    try:
        from ktables.kafka_table import KafkaTable
    except ImportError:  # pragma: no cover - calfkit always brings it
        return False
    if _installed:
        return True
    barrier = KafkaTable.barrier

    @functools.wraps(barrier)
    async def watched(self, timeout: float | None = None) -> bool:
        consumer = getattr(self, "_consumer", None)
        if consumer is None:
            return await barrier(self, timeout=timeout)
        on_enter(consumer)
        try:
            return await barrier(self, timeout=timeout)
        finally:
            on_exit(consumer)

    _installed.append((KafkaTable, barrier))
    KafkaTable.barrier = watched  # type: ignore[method-assign]
    return True


def unwatch_barriers() -> None:
    """Undo watch_barriers (tests)."""
    while _installed:
        cls, barrier = _installed.pop()
        cls.barrier = barrier
