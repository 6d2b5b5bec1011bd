"""floor: raw aiokafka publish -> consume latency and throughput on a fresh embedded broker, with the
arena's own consumer tuning (arena.kafka). Every other figure is reported against this one.

Latency: one record at a time (send, wait until the consumer has it, pause --pause, repeat), a
market-snapshot-sized payload, the consumer in its own group and reading in a loop of its own, as
every arena process does (so its fetch is already waiting at the broker when the record arrives).
Throughput: a burst of records produced without waiting, then consumed. The long-poll check repeats
the latency with Kafka's default fetch wait (500 ms): a broker that answers a waiting fetch as soon
as a record arrives shows the same latency; one that only re-checks on a timer shows its timer.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from arena import kafka as k
from arena.broker import EmbeddedBroker, free_port
from arena.config import CONSUMER_TUNING, KafkaSettings
from bench.harness import Report, dist_ms, fmt_dist, snapshot


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=1000, help="records timed one at a time (default %(default)s)")
    p.add_argument(
        "--throughput", type=int, default=20000, help="records in the throughput burst (default %(default)s)"
    )
    p.add_argument(
        "--long-poll",
        type=int,
        default=40,
        help="records timed with fetch_max_wait_ms=500; 0 skips (default %(default)s)",
    )
    p.add_argument("--pause", type=float, default=0.02, help="seconds between timed records (default %(default)s)")


async def _consumer_on(kafka: KafkaSettings, topic: str, group: bool, **kw):
    c = k.consumer(kafka, topic, group_id=f"floor-{uuid.uuid4().hex[:6]}" if group else None, **kw)
    await c.start()
    while not c.assignment():
        await c.getmany(timeout_ms=20)
    await c.seek_to_end()
    for tp in c.assignment():
        await c.position(tp)
    return c


async def latency(kafka: KafkaSettings, n: int, payload: bytes, pause: float = 0.02, **consumer_kw) -> list[float]:
    """Publish -> consume times (seconds) of `n` records sent one at a time to a topic read in a loop."""
    topic = f"floor.latency.{uuid.uuid4().hex[:6]}"
    prod = k.producer(kafka)
    await prod.start()
    await prod.send_and_wait(topic, b"warm-up")  # create the topic
    cons = await _consumer_on(kafka, topic, True, **consumer_kw)
    arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def read() -> None:  # like every arena consumer: always a fetch waiting at the broker
        while True:
            for records in (await cons.getmany(timeout_ms=1000)).values():
                for _ in records:
                    arrivals.put_nowait(time.perf_counter())

    reader = asyncio.create_task(read())
    times: list[float] = []
    try:
        for i in range(n + 5):
            t0 = time.perf_counter()
            await prod.send_and_wait(topic, payload, key=str(i).encode())
            got = await asyncio.wait_for(arrivals.get(), 30)
            if i >= 5:  # the first few include connection set-up
                times.append(got - t0)
            await asyncio.sleep(pause)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.gather(cons.stop(), prod.stop())
    return times


async def throughput(kafka: KafkaSettings, n: int, payload: bytes) -> tuple[float, float]:
    topic = f"floor.burst.{uuid.uuid4().hex[:6]}"
    prod = k.producer(kafka)
    await prod.start()
    await prod.send_and_wait(topic, b"warm-up")
    cons = await _consumer_on(kafka, topic, False)
    try:
        t0 = time.perf_counter()
        futures = [await prod.send(topic, payload) for _ in range(n)]
        await prod.flush()
        await asyncio.gather(*futures)
        produced = n / (time.perf_counter() - t0)
        got = 0
        while got < n:
            for records in (await cons.getmany(timeout_ms=1000, max_records=5000)).values():
                got += len(records)
        consumed = n / (time.perf_counter() - t0)
    finally:
        await asyncio.gather(cons.stop(), prod.stop())
    return produced, consumed


async def run(args: argparse.Namespace, report: Report) -> int:
    payload = k.encode(snapshot(1))
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    try:
        await broker.wait_ready()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        report.log(f"broker on {broker.bootstrap}; payload {len(payload)} bytes (one market snapshot)")
        lat = dist_ms(await latency(kafka, args.messages, payload, args.pause))
        report.line(f"publish -> consume, fetch_max_wait_ms={CONSUMER_TUNING['fetch_max_wait_ms']}: {fmt_dist(lat)}")
        small = dist_ms(await latency(kafka, max(1, args.messages // 4), b"x" * 100, args.pause))
        report.line(f"publish -> consume, 100-byte records:     {fmt_dist(small)}")
        produced, consumed = await throughput(kafka, args.throughput, payload)
        report.line(
            f"throughput ({args.throughput} x {len(payload)} B): produced {produced:,.0f}/s, produced+consumed {consumed:,.0f}/s"
        )
        results = {
            "payload_bytes": len(payload),
            "latency_ms": lat,
            "latency_100b_ms": small,
            "produced_per_s": round(produced),
            "consumed_per_s": round(consumed),
        }
        if args.long_poll:
            lp = dist_ms(await latency(kafka, args.long_poll, payload, args.pause, fetch_max_wait_ms=500))
            report.line(f"publish -> consume, fetch_max_wait_ms=500 (Kafka default): {fmt_dist(lp)}")
            results["latency_fetch_wait_500_ms"] = lp
    finally:
        broker.stop()
    report.emit(results)
    return 0
