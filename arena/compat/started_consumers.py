"""Find every aiokafka consumer a calfkit Worker or Client starts.

Symptom: calfkit 0.13 gives no handle on the consumers behind its client inbox, node subscribers and
fan-out tables, so a process cannot wait until they are positioned (arena.kafka.positioned) before it
says READY, and the first request sent to it is skipped by "latest".
Fix: record `AIOKafkaConsumer.start` while a block runs: the one seam that finds them all (aiokafka
0.14, faststream 0.7: both call `start()` on plain AIOKafkaConsumer instances).
Can go when calfkit exposes its consumers, or a "ready when positioned" start of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka import AIOKafkaConsumer


@contextmanager
def consumers_started() -> Iterator[list[AIOKafkaConsumer]]:
    """Every aiokafka consumer started in this process inside the block, calfkit's included."""
    started: list[AIOKafkaConsumer] = []
    original = AIOKafkaConsumer.start

    async def start(self: AIOKafkaConsumer) -> None:
        started.append(self)
        await original(self)

    AIOKafkaConsumer.start = start  # type: ignore[method-assign]
    try:
        yield started
    finally:
        AIOKafkaConsumer.start = original  # type: ignore[method-assign]
