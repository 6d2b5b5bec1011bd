"""Change a running aiokafka consumer's fetch wait, and see every consumer start and read.

Symptom: aiokafka 0.14 takes `fetch_max_wait_ms` once, at construction. The embedded broker (Tansu 0.6)
answers a fetch only when that wait runs out, so one fixed wait is either slow (long) or a fetch every
few milliseconds per consumer on both sides (short; bench/README.md, "Findings"). The arena's polling
policy (arena/polling.py) moves every consumer of a process, calfkit's and faststream's included,
between a long wait while nothing is due and a short one around an expected message.
Fix: the Fetcher builds each FetchRequest from its private `_fetch_max_wait_ms`
(`Fetcher._get_actions_per_node`), and `AIOKafkaConsumer.start()` hands the consumer's own
`_fetch_max_wait_ms` to a new Fetcher: set both. A change applies from the next fetch; one in flight
runs out its old wait. `AIOKafkaConsumer.start/getmany/getone` are wrapped once per process (public
methods, the same seam as started_consumers.py) so consumers the arena does not build are seen too.
Can go when aiokafka takes a fetch wait at run time, or the broker answers a waiting fetch when a
record lands (a real Kafka does; then every consumer can keep a long wait and nothing else is needed).
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer


def set_fetch_wait(consumer: AIOKafkaConsumer, ms: int) -> None:
    """The wait of this consumer's next fetch (and of every one after it)."""
    consumer._fetch_max_wait_ms = ms
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = ms


def fetch_wait(consumer: AIOKafkaConsumer) -> int:
    fetcher = getattr(consumer, "_fetcher", None)
    return (fetcher if fetcher is not None else consumer)._fetch_max_wait_ms


_installed: list[tuple[str, Callable]] = []


def watch_consumers(
    on_start: Callable[[AIOKafkaConsumer], None], on_records: Callable[[AIOKafkaConsumer], None]
) -> None:
    """Call `on_start(c)` just before any consumer starts (its first fetch takes the wait set then) and
    `on_records(c)` whenever its getmany/getone hands out records. Installed once per process."""
    if _installed:
        return
    start, getmany, getone = AIOKafkaConsumer.start, AIOKafkaConsumer.getmany, AIOKafkaConsumer.getone

    async def start_(self: AIOKafkaConsumer) -> None:
        on_start(self)
        await start(self)

    async def getmany_(self: AIOKafkaConsumer, *partitions, timeout_ms=0, max_records=None):
        out = await getmany(self, *partitions, timeout_ms=timeout_ms, max_records=max_records)
        if out:
            on_records(self)
        return out

    async def getone_(self: AIOKafkaConsumer, *partitions):
        out = await getone(self, *partitions)
        on_records(self)
        return out

    for name, fn in (("start", start_), ("getmany", getmany_), ("getone", getone_)):
        _installed.append((name, getattr(AIOKafkaConsumer, name)))
        fn.__wrapped__ = getattr(AIOKafkaConsumer, name)  # type: ignore[attr-defined]
        setattr(AIOKafkaConsumer, name, fn)


def unwatch_consumers() -> None:
    """Undo watch_consumers (tests)."""
    while _installed:
        name, fn = _installed.pop()
        setattr(AIOKafkaConsumer, name, fn)
