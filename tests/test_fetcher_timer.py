"""arena/compat/fetch_wait.py's second fix: a consumer's idle fetcher wakes every FETCHER_TIMER_S, not
every 0.2 s, and still acts at once on what it waits for (a resume, a fetch done)."""

from __future__ import annotations

import asyncio
import inspect
import time

from arena import kafka as k
from arena.compat.fetch_wait import FETCHER_TIMER_S


def test_canary_aiokafka_wakes_an_idle_fetcher_on_the_fetchers_private_timer():
    # When this fails, aiokafka no longer hands consumer_timeout_ms to the Fetcher as `_fetcher_timeout`,
    # or no longer uses it as the idle loop's timeout: slow_fetcher_timer changes nothing.
    from aiokafka import AIOKafkaConsumer
    from aiokafka.consumer.fetcher import Fetcher

    assert "fetcher_timeout=self._consumer_timeout" in inspect.getsource(AIOKafkaConsumer.start)
    assert "backoff = self._fetcher_timeout" in inspect.getsource(Fetcher._get_actions_per_node)


async def test_a_paused_consumers_fetcher_sleeps_until_resumed_and_then_reads_at_once(kafka):
    topic = "compat.fetcher_timer"
    producer = k.producer(kafka)
    await producer.start()
    await producer.send_and_wait(topic, b"first", partition=0)
    consumer = k.consumer(kafka, topic, group_id=None, latest=False)  # arena.kafka: the watch is on
    await consumer.start()
    try:
        assert consumer._fetcher._fetcher_timeout == FETCHER_TIMER_S
        while not await consumer.getmany(timeout_ms=1000):  # positioned and fetching
            pass
        consumer.pause(*consumer.assignment())
        loops = 0
        plan = consumer._fetcher._get_actions_per_node

        def counting(assignment):
            nonlocal loops
            loops += 1
            return plan(assignment)

        consumer._fetcher._get_actions_per_node = counting
        await asyncio.sleep(0.1)  # a fetch in flight when paused returns within its short wait
        loops = 0
        await asyncio.sleep(1.0)
        assert loops <= 1, f"an idle, paused fetcher woke {loops} times in 1 s"  # aiokafka's own: 5

        # Nothing is lost to the slow timer: a resume wakes the fetcher, and the record comes at once.
        await producer.send_and_wait(topic, b"second", partition=0)
        consumer.resume(*consumer.assignment())
        start = time.monotonic()
        got: list[bytes] = []
        while not got:
            for records in (await consumer.getmany(timeout_ms=5000)).values():
                got += [r.value for r in records]
        assert got == [b"second"]
        assert time.monotonic() - start < FETCHER_TIMER_S / 2
    finally:
        await consumer.stop()
        await producer.stop()
