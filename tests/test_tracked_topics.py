"""arena/compat/tracked_topics.py on the real broker: a topic a young producer knew from its start, but
had not written to yet, stays deliverable once it writes to a topic it did not know."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient

from arena.compat import tracked_topics


async def _answer_after_a_new_topic(kafka) -> dict:
    """The tools process's first answers, reduced: `known` exists before the producer starts (an agent's
    return topic), `new` after (the tool's output topic). The producer sends to `known` (the batch
    lingers), then to `new`; how did the batch for `known` fare, and how often was metadata asked?"""
    known, new = f"tracked.known.{uuid.uuid4().hex}", f"tracked.new.{uuid.uuid4().hex}"
    setup = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    # The batch for `known` lingers long enough for the metadata of `new` to come back first, even on a
    # busy machine; a batch that finds no leader fails after the request timeout (aiokafka's 40 s,
    # shortened here).
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=2000, request_timeout_ms=6000)
    updates = []
    update = AIOKafkaClient._metadata_update

    async def counting(self, cluster, topics):
        if self is producer.client:
            updates.append(sorted(topics or ()))
        return await update(self, cluster, topics)

    AIOKafkaClient._metadata_update = counting
    await setup.start()
    try:
        await setup.send_and_wait(known, b"created")
        await producer.start()
        client = producer.client
        # Its start-up metadata holds every topic of the broker; it tracks none yet.
        assert client.cluster.partitions_for_topic(known) and not client._topics
        await setup.send_and_wait(new, b"created")  # after the producer started: unknown to it
        answer = await producer.send(known, b"answer", key=b"run")  # accepted, lingers 2 s
        await producer.send_and_wait(new, b"other")
        try:
            await answer
            outcome = "delivered"
        except Exception as exc:
            outcome = type(exc).__name__
        return {
            "outcome": outcome,
            "tracked": known in client._topics,
            "updates without it": sum(known not in u for u in updates),
        }
    finally:
        AIOKafkaClient._metadata_update = update
        await asyncio.gather(producer.stop(), setup.stop(), return_exceptions=True)


async def test_a_known_topic_written_after_a_new_one_is_delivered(kafka):
    import arena.kafka  # noqa: F401 - every part that talks to Kafka imports it: the fix is in from then on

    assert AIOKafkaClient._wait_on_metadata is tracked_topics._wait_on_metadata
    seen = await _answer_after_a_new_topic(kafka)
    assert seen["outcome"] == "delivered" and seen["tracked"], seen


async def test_canary_aiokafka_loses_a_known_untracked_topic_once_it_tracks_another(kafka):
    # When this fails, aiokafka tracks every topic it sends to: arena/compat/tracked_topics.py can go.
    tracked_topics.uninstall()
    try:
        seen = await _answer_after_a_new_topic(kafka)
    finally:
        tracked_topics.install()
    # The answer never left: the sender asked for metadata again and again, never for its topic, until
    # the batch expired.
    assert seen["outcome"] == "NotLeaderForPartitionError" and not seen["tracked"], seen
    assert seen["updates without it"] > 20, seen
