"""The embedded broker behaves as Kafka for the arena's fan-out needs."""

from __future__ import annotations

import asyncio
import sys
import uuid

import pytest

from arena import kafka as k
from arena.broker import free_port
from arena.market import MarketSnapshot, Quote
from tests.support import Proc


async def _drain(consumer, n_expected: int | None, timeout: float = 10.0) -> list:
    """Records until `n_expected` came (None: all that come within `timeout`)."""
    got = []
    deadline = asyncio.get_running_loop().time() + timeout
    while (n_expected is None or len(got) < n_expected) and asyncio.get_running_loop().time() < deadline:
        batch = await consumer.getmany(timeout_ms=100)
        for records in batch.values():
            got.extend(records)
    return got


async def _drain_shared(s1, s2, n_expected: int, timeout: float = 10.0) -> dict[str, list]:
    """The records two members of one group read, until they have `n_expected` between them."""
    got: dict[str, list] = {"s1": [], "s2": []}
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(map(len, got.values())) < n_expected and asyncio.get_running_loop().time() < deadline:
        for name, batch in zip(got, await asyncio.gather(s1.getmany(timeout_ms=100), s2.getmany(timeout_ms=100))):
            for records in batch.values():
                got[name].extend(records)
    return got


async def test_groups_fan_out_and_share(kafka):
    topic = f"fanout-{uuid.uuid4().hex[:8]}"
    prod = k.producer(kafka)
    await prod.start()
    # Create the topic before consumers subscribe so "latest" starts at the beginning of our records.
    await prod.send_and_wait(topic, b"warmup")
    consumers = {
        "a": k.consumer(kafka, topic, group_id=f"{topic}-a"),
        "b": k.consumer(kafka, topic, group_id=f"{topic}-b"),
        "c": k.consumer(kafka, topic, group_id=f"{topic}-c"),
        "s1": k.consumer(kafka, topic, group_id=f"{topic}-shared"),
        "s2": k.consumer(kafka, topic, group_id=f"{topic}-shared"),
    }
    await asyncio.gather(*(c.start() for c in consumers.values()))
    # wait until every consumer has its partitions assigned
    for _ in range(100):
        if (
            all(c.assignment() for c in consumers.values())
            and sum(len(consumers[s].assignment()) for s in ("s1", "s2")) == 4
        ):
            break
        await asyncio.gather(*(c.getmany(timeout_ms=50) for c in consumers.values()))
    # All at once: a seek waits for the consumer's fetch in flight, up to a long fetch wait (arena.polling) each.
    await asyncio.gather(*(c.seek_to_end(*c.assignment()) for c in consumers.values()))
    n = 40
    snaps = [
        MarketSnapshot(
            seq=i, quotes={"BTC-USD": Quote(product_id="BTC-USD", price=100.0 + i, best_bid=99.0, best_ask=101.0)}
        )
        for i in range(n)
    ]
    for i, s in enumerate(snaps):
        await prod.send_and_wait(topic, k.encode(s), key=str(i).encode())
    solo = ("a", "b", "c")
    drained = await asyncio.gather(
        *(_drain(consumers[c], n) for c in solo), _drain_shared(consumers["s1"], consumers["s2"], n)
    )
    results = dict(zip(solo, drained[:3])) | drained[3]
    for name in ("a", "b", "c"):
        seqs = sorted(k.decode(MarketSnapshot, r.value).seq for r in results[name])
        assert seqs == list(range(n)), name
    shared = [k.decode(MarketSnapshot, r.value).seq for r in results["s1"] + results["s2"]]
    # anything more the shared group reads (a record read twice) within half a second
    extra = await asyncio.gather(_drain(consumers["s1"], None, 0.5), _drain(consumers["s2"], None, 0.5))
    shared += [k.decode(MarketSnapshot, r.value).seq for batch in extra for r in batch]
    assert sorted(shared) == list(range(n)), "one group shares the records, each exactly once"
    assert results["s1"] and results["s2"], "both members of the shared group got some records"
    await asyncio.gather(*(c.stop() for c in consumers.values()))
    await prod.stop()


def test_malformed_record_is_skipped():
    assert k.decode(MarketSnapshot, b"{not json", "t") is None
    assert k.decode(MarketSnapshot, b'{"seq": "x"}', "t") is None


@pytest.mark.processes
def test_arena_broker_command_starts_and_stops_cleanly():
    port = free_port()
    proc = Proc("-m", "arena.cli", "broker", "--port", str(port))
    proc.wait_for("Broker ready", 60)
    assert f"127.0.0.1:{port}" in proc.output
    assert proc.stop(timeout=10) == 0, proc.output
    assert "Stopping broker" in proc.output


async def test_broker_watch_reads_the_cluster_id_without_listing_every_topic(kafka):
    """Every process polls the cluster id each second; with many agents the broker holds hundreds of
    topics, and an all-topics metadata answer cost every process a decode of all of them each time."""
    from aiokafka.protocol.metadata import MetadataRequest

    from arena.reconnect import WATCH_TOPIC, BrokerWatch

    producer = k.producer(kafka)
    await producer.start()
    try:
        for i in range(5):  # a few topics of its own, whatever else the session made
            await producer.send_and_wait(f"watch-test-{uuid.uuid4().hex[:6]}-{i}", b"x")
    finally:
        await producer.stop()
    watch = BrokerWatch(kafka, lambda why: None)
    await watch.start()
    try:
        answers = []
        send = watch._client.send

        async def spy(node, request):
            answers.append(await send(node, request))
            return answers[-1]

        watch._client.send = spy
        assert await watch._read_id() == watch.cluster_id
        assert [t[1] for t in answers[0].topics] == [WATCH_TOPIC]
        everything = await send(watch._client.get_random_node(), MetadataRequest([]))
        names = {t[1] for t in everything.topics}
        assert len(names) >= 5 and WATCH_TOPIC not in names  # asked about, never created
    finally:
        await watch.stop()


async def test_positioned_consumers_miss_nothing_sent_right_after(kafka):
    """A group consumer on "latest" resolves its position in the background after start(); k.positioned
    waits for it, so a record sent the moment after is read, not skipped."""
    topic = f"positioned-{uuid.uuid4().hex[:8]}"
    prod = k.producer(kafka)
    await prod.start()
    await prod.send_and_wait(topic, b"before")  # the topic exists; this record is history
    consumer = k.consumer(kafka, topic, group_id=f"{topic}-g", latest=True)
    await consumer.start()
    try:
        await k.positioned([consumer], timeout_s=30)
        a = consumer._subscription.subscription.assignment  # no public non-waiting check in aiokafka
        assert consumer.assignment() and all(a.state_value(tp).has_valid_position for tp in consumer.assignment())
        await prod.send_and_wait(topic, b"after", key=b"x")
        assert [r.value for r in await _drain(consumer, 1)] == [b"after"]
    finally:
        await consumer.stop()
        await prod.stop()
    lonely = k.consumer(kafka, group_id=None)  # subscribed to nothing: never assigned
    await lonely.start()
    try:
        with pytest.raises(TimeoutError, match="not positioned within 0.3s"):
            await k.positioned([lonely], timeout_s=0.3)
    finally:
        await lonely.stop()


def test_library_errors_print_one_line_unless_debugging():
    """calfkit logs a tool result it could not publish (broker restarting) with a traceback, after our
    own code has reported the failure: the scripts' log format keeps it to its one line."""
    import logging

    try:
        raise RuntimeError("[Error 0] UnknownError")
    except RuntimeError:
        record = logging.LogRecord(
            "calfkit.nodes.base", logging.ERROR, __file__, 1, "publish failed", (), sys.exc_info()
        )
    brief, full = k.BriefFormatter().format(record), k.BriefFormatter(debug=True).format(record)
    assert "publish failed" in brief and "Traceback" not in brief and "\n" not in brief
    assert "Traceback" in full and "UnknownError" in full
