"""Choose each fetch's wait when the fetch is sent, and see every consumer start and read.

Symptom: aiokafka 0.14 takes `fetch_max_wait_ms` once, at construction. The embedded broker (Tansu 0.6)
answers a fetch only when that wait runs out, so one fixed wait is either slow (long) or a fetch every
few milliseconds per consumer on both sides (short; bench/README.md, "Findings"). The arena's polling
policy (arena/polling.py) picks each fetch's wait from what is due: long while nothing is, shrinking
so that the last fetch before a due message ends just before it, short around it.
Fix: the Fetcher builds each FetchRequest from its private `_fetch_max_wait_ms`
(`Fetcher._get_actions_per_node`, once per fetch), and `AIOKafkaConsumer.start()` hands the consumer's
own `_fetch_max_wait_ms` to a new Fetcher. `follow_fetch_wait` turns the started Fetcher's attribute
into a property that asks a function (its class is swapped for a subclass; no other behaviour
changes). `AIOKafkaConsumer.start/getmany/getone` are wrapped once per process (public methods, the
same seam as started_consumers.py) so consumers the arena does not build, calfkit's and faststream's,
are seen too. A fetch already in flight runs out the wait it was sent with.
Can go when aiokafka takes a fetch wait at run time and the broker answers a waiting fetch when a
record lands (a real Kafka does; then every consumer keeps a long wait and this module is not needed).

Second symptom: aiokafka's fetcher task wakes every `consumer_timeout_ms` (200 ms) even when it has
nothing to send, as a paused consumer has (a router's turn-only consumers are paused between turns,
arena.kafka.Dozing): five idle wake-ups a second per consumer, a third of an idle router's CPU.
Every event the fetcher acts on has its own wake-up (a fetch done, records consumed, a resume, an
assignment change, a metadata update; a backoff is its own timeout), so the timer is only a safety
net. Fix: each started consumer's Fetcher gets FETCHER_TIMER_S (`Fetcher._fetcher_timeout`, read
by `_get_actions_per_node` on every loop). Can go with the first fix.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

_followers: dict[type, type] = {}

FETCHER_TIMER_S = 2.0  # aiokafka's 0.2 s; see the module docstring


def slow_fetcher_timer(consumer: AIOKafkaConsumer, seconds: float = FETCHER_TIMER_S) -> None:
    """The started `consumer`'s fetcher wakes with nothing to do at most every `seconds`."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetcher_timeout = seconds


def set_fetch_wait(consumer: AIOKafkaConsumer, ms: int) -> None:
    """A fixed wait for this consumer's next fetch and every one after it (until followed)."""
    consumer._fetch_max_wait_ms = ms
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = ms


def fetch_wait(consumer: AIOKafkaConsumer) -> int:
    """The wait the consumer's next fetch would be sent with."""
    fetcher = getattr(consumer, "_fetcher", None)
    return (fetcher if fetcher is not None else consumer)._fetch_max_wait_ms


def follow_fetch_wait(consumer: AIOKafkaConsumer, wait_ms: Callable[[], int]) -> bool:
    """From now on every fetch of the started `consumer` waits `wait_ms()`, asked as it is sent.
    False when the consumer has no fetcher (not started)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return False
    cls = type(fetcher)
    if cls not in _followers.values():
        follower = _followers.get(cls)
        if follower is None:

            def get(self) -> int:
                ask = self.__dict__.get("_arena_wait_ms")
                return ask() if ask is not None else self.__dict__["_arena_fixed_wait_ms"]

            def set_(self, ms: int) -> None:
                self.__dict__["_arena_fixed_wait_ms"] = ms

            follower = _followers[cls] = type(cls.__name__, (cls,), {"_fetch_max_wait_ms": property(get, set_)})
        fixed = fetcher.__dict__.pop("_fetch_max_wait_ms")
        fetcher.__class__ = follower
        fetcher.__dict__["_arena_fixed_wait_ms"] = fixed
    fetcher.__dict__["_arena_wait_ms"] = wait_ms
    return True


_installed: list[tuple[str, Callable]] = []


def watch_consumers(
    on_start: Callable[[AIOKafkaConsumer], None],
    on_started: Callable[[AIOKafkaConsumer], None],
    on_records: Callable[[AIOKafkaConsumer], None],
) -> None:
    """Call `on_start(c)` just before any consumer starts, `on_started(c)` once it has, and
    `on_records(c)` whenever its getmany/getone hands out records; every consumer's fetcher timer
    is slowed (slow_fetcher_timer). Installed once per process."""
    if _installed:
        return
    start, getmany, getone = AIOKafkaConsumer.start, AIOKafkaConsumer.getmany, AIOKafkaConsumer.getone

    async def start_(self: AIOKafkaConsumer) -> None:
        on_start(self)
        await start(self)
        slow_fetcher_timer(self)
        on_started(self)

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
