"""arena/compat/table_barrier.py: a calfkit fan-out table's read-your-writes barrier resumes its paused reader."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid

import pytest

from arena import kafka as k


def test_canary_ktables_barrier_waits_on_the_reader_consumer_the_table_keeps_in_consumer():
    # When this fails, ktables' KafkaTable no longer keeps its reader consumer in `_consumer` or no longer
    # barriers through it: arena/compat/table_barrier.py sees no consumer, and a router's paused table
    # readers would leave every fan-out barrier waiting (each parallel tool batch would time out).
    from ktables.kafka_table import KafkaTable

    barrier = inspect.getsource(inspect.unwrap(KafkaTable.barrier))
    assert "consumer = self._consumer" in barrier and "self._barriers.append" in barrier
    assert "self._consumer: AIOKafkaConsumer | None = None" in inspect.getsource(KafkaTable.__init__)
    assert inspect.iscoroutinefunction(KafkaTable.barrier)


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_barrier_on_a_paused_table_reader_resumes_it_for_the_barrier_and_pauses_it_after(kafka):
    from ktables import KafkaTable, KafkaTableWriter

    topic = f"compat.barrier.{uuid.uuid4().hex[:8]}"
    table = KafkaTable(connection=kafka.bootstrap_servers, topic=topic, value_decoder=bytes, poll_timeout_ms=20)
    writer = KafkaTableWriter(connection=kafka.bootstrap_servers, topic=topic, value_encoder=lambda v: v)
    await asyncio.gather(table.start(), writer.start())
    dozing = k.Dozing([table._consumer])  # as a router keeps its fan-out tables between replies
    dozing.doze()
    try:
        await writer.set("batch", b"open")
        t0 = time.monotonic()
        assert await table.barrier(timeout=10)  # resumed for it: its own write is on the broker already
        assert time.monotonic() - t0 < 5 and table.get("batch") == b"open"
        assert table._consumer.paused() == table._consumer.assignment()  # paused again after it
    finally:
        dozing.doze()
        await asyncio.gather(table.stop(), writer.stop())
