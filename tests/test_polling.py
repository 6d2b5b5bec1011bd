"""arena.polling: a long fetch wait while nothing is due, the short one around an expected message."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from arena import kafka as k
from arena import polling
from arena.compat.fetch_wait import fetch_wait


class Stub:
    """Stands in for a consumer in the pure tests (the pacer keeps weak references)."""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _pacer(clock: Clock) -> polling.Pacer:
    return polling.Pacer(idle_ms=500, margin_ms=50, quiet_s=1.0, late_s=0.5, startup_s=5.0, clock=clock)


def _wait(p: polling.Pacer, clock: Clock) -> int:
    return p.wait_between(clock.t, 10, 500)


def test_long_while_nothing_is_due_shrinking_to_end_just_before_a_due_snapshot_then_short_until_it_comes():
    clock, tick = Clock(), Stub()
    p = _pacer(clock)
    p.add(tick, short_ms=10, clock=True)  # type: ignore[arg-type]
    p._started_at = clock.t - 60  # start-up is over
    assert _wait(p, clock) == 500  # no schedule learned, no records
    p.records(tick)  # type: ignore[arg-type]
    assert _wait(p, clock) == 10  # the rest of the burst
    clock.t += 10
    p.records(tick)  # type: ignore[arg-type]
    clock.t += 3  # the burst is over; the next snapshot is due at +7 s
    due = clock.t + 7
    assert p.period() == 10 and p.next_due(clock.t) == due
    assert _wait(p, clock) == 500
    clock.t = due - 0.3  # a fetch sent now ends 50 ms before the snapshot is due
    assert _wait(p, clock) == 250
    clock.t = due - 0.04
    assert _wait(p, clock) == 10
    clock.t = due + 0.49
    assert _wait(p, clock) == 10
    clock.t = due + 0.51  # it never came: long until the approach of the one after
    assert _wait(p, clock) == 500 and p.next_due(clock.t) == due + 10
    clock.t = due + 20 + 0.51  # three never came: the schedule stopped, nothing is expected
    assert p.next_due(clock.t) is None and _wait(p, clock) == 500


def test_a_skipped_snapshot_keeps_the_period_and_a_turn_keeps_every_wait_short():
    clock, tick = Clock(), Stub()
    p = _pacer(clock)
    p.add(tick, short_ms=10, clock=True)  # type: ignore[arg-type]
    p._started_at = clock.t - 60
    for gap in (0, 10, 20, 10):  # marks at 0, 10, 30, 40: one snapshot (20) never came
        clock.t += gap
        p.records(tick)  # type: ignore[arg-type]
    assert p.period() == 10
    clock.t += 5
    assert _wait(p, clock) == 500
    p.busy()
    assert _wait(p, clock) == 10
    p.idle()  # its last replies may still come: short for the quiet time
    assert _wait(p, clock) == 10
    clock.t += 1.1
    assert _wait(p, clock) == 500
    p.busy()
    p.idle(follow_s=3.0)  # what follows it (a turn's next model request) comes within 3 s
    clock.t += 2.9
    assert _wait(p, clock) == 10
    clock.t += 0.2
    assert _wait(p, clock) == 500


def test_without_a_market_consumer_the_first_record_of_each_burst_marks_the_schedule():
    clock, requests = Clock(), Stub()
    p = _pacer(clock)
    p.add(requests, short_ms=10)  # type: ignore[arg-type]
    p._started_at = clock.t - 60
    for _ in range(3):
        for _ in range(5):  # a burst of requests, 0.1 s apart
            p.records(requests)  # type: ignore[arg-type]
            clock.t += 0.1
        clock.t += 9.5
    assert p.period() == pytest.approx(10.0)


def test_a_table_reader_polls_long_only_while_nothing_is_due():
    clock = Clock()
    p = _pacer(clock)
    clock.t += 10  # past start-up, nothing received: nothing due
    assert p.wait_with(20) == 500
    p.busy()  # a turn: its barriers resolve on the reader's next poll
    assert p.wait_with(20) == 20
    p.idle()
    assert p.wait_with(20) == 20  # the turn's last replies may still be on the way
    clock.t += 2
    assert p.wait_with(20) == 500
    off = polling.Pacer(idle_ms=0, clock=clock)
    assert off.wait_with(20) == 20


def test_a_due_reply_is_short_whatever_else_and_what_a_consumer_follows_when_none_is():
    clock, tick, turn, directory = Clock(), Stub(), Stub(), Stub()
    p = _pacer(clock)
    for c in (tick, turn, directory):
        p.add(c, short_ms=10, clock=c is tick)  # type: ignore[arg-type]
    p.follow(tick, polling.SCHEDULE)  # type: ignore[arg-type]
    p.follow(turn, polling.REPLIES)  # type: ignore[arg-type]
    p._started_at = clock.t - 60
    p.records(tick)  # type: ignore[arg-type]
    clock.t += 0.2  # no schedule known yet: the quiet window counts for the schedule follower too
    assert p.wait_ms(tick) == 10 and p.wait_ms(turn) == 500
    clock.t += 9.8
    p.records(tick)  # type: ignore[arg-type]
    clock.t += 0.2  # the rest of a burst: the quiet window
    assert p.wait_ms(directory) == 10  # follows bursts (the default)
    assert p.wait_ms(tick) == 500 and p.wait_ms(turn) == 500  # the schedule: nothing due for 9.8 s; replies: none
    p.busy()
    assert p.wait_ms(directory) == 10 and p.wait_ms(tick) == 500  # a turn makes only burst followers short
    p.idle()
    p.due(turn)  # type: ignore[arg-type]
    p.due(turn)  # type: ignore[arg-type]
    p.undue(turn)  # type: ignore[arg-type]
    assert p.wait_ms(turn) == 10 and p.wait_ms(tick) == 500
    clock.t += 5  # the quiet window over: table readers poll short while any reply is due in the process
    assert p.wait_with(20) == 20
    p.undue(turn)  # type: ignore[arg-type]
    assert not p.is_due(turn) and p.wait_ms(turn) == 500 and p.wait_with(20) == 500  # type: ignore[arg-type]
    clock.t += 4.79  # 10 ms before the next snapshot is due: its consumer is short, a replies one is not
    assert p.wait_ms(tick) == 10 and p.wait_ms(turn) == 500 and p.wait_ms(directory) == 10
    with pytest.raises(ValueError):
        p.follow(turn, "sometimes")  # type: ignore[arg-type]
    ask = [300]
    p.pace(turn, lambda short: ask[0])  # type: ignore[arg-type]  # e.g. a model call's answer: not soon
    assert p.wait_ms(turn) == 500  # type: ignore[arg-type]  # paced only while due
    p.due(turn)  # type: ignore[arg-type]
    assert p.wait_ms(turn) == 300  # type: ignore[arg-type]
    ask[0] = 5000
    assert p.wait_ms(turn) == 500  # type: ignore[arg-type]  # at most the long wait
    ask[0] = 1
    assert p.wait_ms(turn) == 10  # type: ignore[arg-type]  # at least the short one


def test_start_up_is_short_and_the_policy_off_keeps_every_wait_short():
    clock = Clock()
    p = _pacer(clock)
    p._started_at = clock.t
    assert _wait(p, clock) == 10
    clock.t += 5.1
    assert _wait(p, clock) == 500
    assert polling.Pacer(idle_ms=0, clock=clock).wait_between(clock.t, 10, 500) == 10


async def test_idle_polls_long_and_a_snapshot_published_when_due_is_fetched_with_the_short_wait(kafka, monkeypatch):
    # A consumer of a schedule-marking topic: two records teach it the period; between them and the
    # third (published when due) it fetches with the long wait, then shorter ones that end ahead of
    # the due time, so the third is taken by a short fetch. Every fetch it sends is recorded.
    pacer = polling.Pacer(idle_ms=800, margin_ms=300, quiet_s=0.3, late_s=1.0, startup_s=0)
    monkeypatch.setattr(polling, "PACER", pacer)
    topic = f"poll.{uuid.uuid4().hex[:8]}"
    producer = k.producer(kafka)
    consumer = k.consumer(kafka, topic, group_id=None, latest=True, fetch_max_wait_ms=10)
    pacer.add(consumer, short_ms=10, clock=True)  # what arena.kafka does for a market consumer
    await producer.start()
    await producer.send_and_wait(topic, b"0")  # the topic exists before the consumer looks
    await consumer.start()
    await k.positioned([consumer])
    loop = asyncio.get_running_loop()
    fetches: list[tuple[float, int]] = []
    send = consumer._client.send

    async def recording_send(node_id, request, *a, **kw):
        if type(request).__name__ == "FetchRequest":
            fetches.append((loop.time(), request._max_wait_ms))
        return await send(node_id, request, *a, **kw)

    consumer._client.send = recording_send
    received: list[tuple[float, bytes]] = []

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                received.extend((loop.time(), r.value) for r in records)

    async def taken(value: bytes) -> float:
        while not any(v == value for _, v in received):
            await asyncio.sleep(0.005)
        return next(t for t, v in received if v == value)

    reader = asyncio.create_task(read())
    try:
        period = 4.0
        first = loop.time()
        await producer.send_and_wait(topic, b"1")
        await asyncio.wait_for(taken(b"1"), 10)
        await asyncio.sleep(first + period - loop.time())  # the schedule itself, not a synchronisation
        await producer.send_and_wait(topic, b"2")
        second = await asyncio.wait_for(taken(b"2"), 10)
        assert pacer.period() is not None
        due = second + pacer.period()
        await asyncio.sleep(max(0.0, due - loop.time()))
        published = loop.time()
        await producer.send_and_wait(topic, b"3")
        third = await asyncio.wait_for(taken(b"3"), 10)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.gather(consumer.stop(), producer.stop())
    between = [ms for t, ms in fetches if second + 0.4 < t < due - 1.5]
    assert between and set(between) == {800}, fetches  # nothing due: long fetches only
    # no long fetch is in flight at the due time: each one sent before it ends ahead of it
    assert all(t + ms / 1000 <= due - 0.3 + 0.05 for t, ms in fetches if second < t < due and ms > 10), fetches
    last_before = [ms for t, ms in fetches if t <= published][-1]
    assert last_before == 10, fetches  # the snapshot found a short fetch waiting for it
    assert fetch_wait(consumer) == 10 and third >= published
