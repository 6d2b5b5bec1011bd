"""aiokafka producers/consumers with the arena's latency tuning and JSON (pydantic) payloads."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel, TypeAdapter, ValidationError

from arena import auth, polling
from arena.compat import tansu, tracked_topics
from arena.compat.started_consumers import consumers_started  # noqa: F401 - re-exported: the call sites' name
from arena.compat.table_barrier import watch_barriers
from arena.config import CONSUMER_TUNING, MARKET_TOPIC, KafkaSettings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

MAX_MESSAGE_BYTES = 5 * 1024 * 1024  # matches calfkit's default

polling.install()  # every consumer of the process, calfkit's too, polls by arena.polling's policy
tracked_topics.install()  # every producer of the process keeps the topics it writes to in its metadata


def producer(settings: KafkaSettings, **kw) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **settings.aiokafka_kwargs(),
        linger_ms=0,
        max_request_size=MAX_MESSAGE_BYTES,
        **{**tansu.PRODUCER_OPTIONS, **kw},
    )


def consumer(
    settings: KafkaSettings, *topics: str, group_id: str | None, latest: bool = True, **kw
) -> AIOKafkaConsumer:
    """A consumer tuned for latency. `group_id=None` reads without a group (no join wait).

    Its fetch wait (fetch_max_wait_ms: --fetch-wait-ms unless given) is the short one of arena.polling's
    policy: a consumer of the market topic marks when snapshots are due."""
    tuning = dict(CONSUMER_TUNING)
    if group_id is None:
        tuning.pop("session_timeout_ms")
        tuning.pop("heartbeat_interval_ms")
    c = AIOKafkaConsumer(
        *topics,
        **settings.aiokafka_kwargs(),
        group_id=group_id,
        auto_offset_reset="latest" if latest else "earliest",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        **{**tuning, **kw},
    )
    polling.PACER.add(c, short_ms=c._fetch_max_wait_ms, clock=MARKET_TOPIC in topics)
    return c


async def positioned(consumers: list[AIOKafkaConsumer], timeout_s: float = 30.0) -> None:
    """Wait until every consumer has its partitions and a fetch position on each.

    aiokafka joins a group and resolves the committed offset (or "latest") in the background after
    start() returns; a record published before that resolves is skipped by "latest". calfkit's Worker
    starts its subscribers that way, so a process that says READY before this would lose the first
    request sent to it."""

    async def one(c: AIOKafkaConsumer) -> None:
        while not c.assignment():
            await asyncio.sleep(0.01)
        for tp in c.assignment():
            await c.position(tp)

    try:
        await asyncio.wait_for(asyncio.gather(*(one(c) for c in consumers)), timeout_s)
    except asyncio.TimeoutError:
        waiting = sorted(t for c in consumers if not c.assignment() for t in c.subscription())
        raise TimeoutError(
            f"consumers not positioned within {timeout_s:g}s (unassigned: {', '.join(waiting) or 'none'})"
        ) from None


class Dozing:
    """Consumers read only while a reply is due on them: paused (no fetches at all) otherwise.

    Tansu answers a fetch only when its max wait runs out — it has no wake-up on produce — so every
    running consumer costs a fetch per wait, on both sides (bench/README.md, "Findings"), and a fetch in
    flight cannot be cut short. Pausing is aiokafka's own: a paused partition is not fetched, keeps its
    position (nothing is skipped), and resume() wakes the fetcher at once, so a consumer resumed after
    its record was produced takes it in one round trip. `expect(c)` says a reply is due on `c` (resumed,
    its fetches short: arena.polling's `due`, set before resume() so the first fetch is already short),
    `settle(c)` that one less is (paused again when none is). `wake()` starts a turn: until `doze()`
    (every count cleared, all paused), a consumer on which nothing is expected is resumed for one short
    fetch every long wait (arena.polling's idle wait), so a reply nobody predicted waits at most that.
    A rebalance hands a consumer new partitions unpaused: they fetch by the policy's wait until the next
    settle or doze pauses them (nothing is lost either way)."""

    # consumer -> its Dozing, weakly both ways (a Dozing holds its consumers)
    _owners: weakref.WeakKeyDictionary[AIOKafkaConsumer, weakref.ref[Dozing]] = weakref.WeakKeyDictionary()

    def __init__(self, consumers: list[AIOKafkaConsumer], pacer: polling.Pacer | None = None):
        self.consumers = list(consumers)
        self.pacer = pacer or polling.PACER
        self.awake = False
        self._expected: dict[AIOKafkaConsumer, int] = {}
        self._peeks: asyncio.Task | None = None
        for c in self.consumers:
            Dozing._owners[c] = weakref.ref(self)
            self.pacer.follow(c, polling.REPLIES)

    @classmethod
    def owner(cls, consumer: AIOKafkaConsumer) -> Dozing | None:
        ref = cls._owners.get(consumer)
        return ref() if ref is not None else None

    def expecting(self, consumer: AIOKafkaConsumer) -> bool:
        return self._expected.get(consumer, 0) > 0

    def expect(self, *consumers: AIOKafkaConsumer) -> None:
        for c in consumers:
            n = self._expected.get(c, 0) + 1
            self._expected[c] = n
            if n == 1:
                self.pacer.due(c)
                _resume(c)

    def settle(self, *consumers: AIOKafkaConsumer) -> None:
        for c in consumers:
            n = self._expected.get(c, 0) - 1
            if n > 0:
                self._expected[c] = n
            elif c in self._expected:
                del self._expected[c]
                _pause(c)
                self.pacer.undue(c)

    def wake(self) -> None:
        if self.awake:
            return
        self.awake = True
        if self.pacer.idle_ms > 0:
            self._peeks = asyncio.get_running_loop().create_task(self._peek())
        else:  # the policy off (ARENA_IDLE_WAIT_MS=0): every consumer reads, short, until it dozes
            self.expect(*self.consumers)

    def doze(self) -> None:
        if self._peeks is not None:
            self._peeks.cancel()
            self._peeks = None
        for c in self.consumers:
            _pause(c)
        for c in self._expected:
            self.pacer.undue(c)
        self._expected.clear()
        self.awake = False

    async def _peek(self) -> None:
        """While awake: a short fetch every long wait on each consumer nothing is expected on."""
        while True:
            await asyncio.sleep(self.pacer.idle_ms / 1000)
            quiet = [c for c in self.consumers if not self.expecting(c)]
            self.expect(*quiet)
            # the fetch a resume sends ends within its short wait (aiokafka resumes it at once)
            await asyncio.sleep(max(self.pacer.wait_ms(c) for c in quiet) / 1000 + 0.01 if quiet else 0)
            self.settle(*quiet)


def _resume(c: AIOKafkaConsumer) -> None:
    try:
        paused = c.paused()
        if paused:
            c.resume(*paused)
    except Exception:  # stopped, or unassigned by a rebalance in between: nothing to resume
        pass


def _pause(c: AIOKafkaConsumer) -> None:
    for tp in c.assignment():
        try:
            c.pause(tp)
        except Exception:  # unassigned by a rebalance in between: nothing to pause
            pass


def expect(consumer: AIOKafkaConsumer) -> None:
    """A reply is due on `consumer` (its Dozing's expect; without one, just its fetch wait)."""
    owner = Dozing.owner(consumer)
    if owner is not None:
        owner.expect(consumer)
    else:
        polling.PACER.due(consumer)


def settle(consumer: AIOKafkaConsumer) -> None:
    owner = Dozing.owner(consumer)
    if owner is not None:
        owner.settle(consumer)
    else:
        polling.PACER.undue(consumer)


class BriefFormatter(logging.Formatter):
    """Library errors as one line each; tracebacks only when debugging. A tool call or turn that fails
    is reported by our own code; calfkit and faststream log the same failure again with a traceback
    (e.g. a result that cannot be published while the broker restarts)."""

    def __init__(self, debug: bool = False):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if not self.debug and record.exc_info:
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


class BriefRecordErrors(logging.Filter):
    """Keeps a library's complaint about one bad record to one short line.

    faststream logs a record no handler can take (garbage on a calfkit inbox) at ERROR with a traceback
    and the whole record, payload included (up to 5 MiB): hostile input would flood the log. Attach to
    the logger handed to calfkit's Client."""

    MAX_CHARS = 400

    def __init__(self, tracebacks: bool = False):
        super().__init__()
        self.tracebacks = tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.tracebacks:
            record.exc_info, record.exc_text = None, None
        message = record.getMessage()
        if len(message) > self.MAX_CHARS:
            record.msg, record.args = f"{message[: self.MAX_CHARS]}... ({len(message)} chars)", ()
        return True


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def rejection_reason(exc: BaseException) -> str:
    """Why a record was rejected, in one short line, without echoing the record itself."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ())) or "record"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{where}: {first.get('msg', '')}"[:300] + more
    return f"{type(exc).__name__}: {exc}"[:300]


class _Rejections:
    """One warning per rejected record, but at most BURST per topic a minute: a client flooding a topic
    with garbage must not flood the log too (the suppressed count is told on the next line)."""

    BURST = 20

    def __init__(self) -> None:
        self._window: dict[str, tuple[float, int, int]] = {}  # topic -> (window start, logged, suppressed)

    def warn(self, topic: str, partition: int | str, offset: int | str, model: str, reason: str) -> None:
        now = time.monotonic()
        start, logged, suppressed = self._window.get(topic, (now, 0, 0))
        if now - start >= 60:
            start, logged = now, 0
        if logged >= self.BURST:
            self._window[topic] = (start, logged, suppressed + 1)
            return
        extra = f" (+{suppressed} more rejected on {topic} since, not logged)" if suppressed else ""
        self._window[topic] = (start, logged + 1, 0)
        log.warning(
            "skipping malformed %s record on %s partition %s offset %s: %s%s",
            model,
            topic,
            partition,
            offset,
            reason,
            extra,
        )


_rejections = _Rejections()


def parse(model_type: type[M], raw: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES) -> M:
    """The record as `model_type` (a model, or a named union of models such as arena.portfolio.TradeOutcome);
    raises ValueError with the reason when it is not one."""
    if not raw:
        raise ValueError("empty record")
    if len(raw) > max_bytes:
        raise ValueError(f"{len(raw)} bytes, over the {max_bytes}-byte bound")
    if isinstance(model_type, type) and issubclass(model_type, BaseModel):
        return model_type.model_validate_json(raw)
    return _adapter(model_type).validate_json(raw)


@functools.cache
def _adapter(alias) -> TypeAdapter:
    return TypeAdapter(alias)


def decode_record(model_type: type[M], record, *, max_bytes: int = MAX_MESSAGE_BYTES) -> M | None:
    """Parse an aiokafka record; one that is malformed or means nothing valid (see arena.wire) is
    skipped with one log line naming its topic, partition, offset and why (returns None), never raised.
    With ARENA_FEED_KEY set, a market record must be signed with it (arena.auth)."""
    try:
        if record.topic == MARKET_TOPIC and (key := auth.feed_key()) is not None:
            if why := auth.signature_problem(key, record.value, getattr(record, "headers", None)):
                raise ValueError(why)
        return parse(model_type, record.value, max_bytes=max_bytes)
    except Exception as exc:  # ValidationError, a validator's ValueError, RecursionError on deep nesting, ...
        _rejections.warn(record.topic, record.partition, record.offset, model_type.__name__, rejection_reason(exc))
        return None


def decode(model_type: type[M], raw: bytes | None, topic: str = "?") -> M | None:
    """Parse raw bytes (no record at hand: a recording's line, a test); like decode_record otherwise."""
    try:
        return parse(model_type, raw)
    except Exception as exc:
        _rejections.warn(topic, "-", "-", model_type.__name__, rejection_reason(exc))
        return None


class TaskFailed(RuntimeError):
    """A supervised task that kept failing."""


async def supervised(
    name: str, run: Callable[[], Awaitable[None]], *, restarts: int = 5, window_s: float = 60.0, pause_s: float = 0.5
) -> None:
    """Run `run()` until it returns or is cancelled; each time it raises, log the cause and start it again.

    More than `restarts` failures within `window_s` raise TaskFailed (with the last cause): the process
    cannot recover, and its owner exits non-zero instead of running on without the task."""
    failures: list[float] = []
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            now = time.monotonic()
            failures = [t for t in failures if now - t < window_s] + [now]
            if len(failures) > restarts:
                log.error(
                    "%s failed %d times within %gs, giving up: %s", name, len(failures), window_s, rejection_reason(exc)
                )
                raise TaskFailed(f"{name} keeps failing: {rejection_reason(exc)}") from exc
            log.error(
                "%s failed (%s); restarting it", name, rejection_reason(exc), exc_info=log.isEnabledFor(logging.DEBUG)
            )
            await asyncio.sleep(pause_s)


async def ensure_compacted_topic(kafka: KafkaSettings, topic: str) -> None:
    """Create `topic` compacted (4 partitions) if it is not there yet. Best effort: a broker that
    auto-creates topics takes the records anyway."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())
    try:
        await admin.start()
        await admin.create_topics([NewTopic(topic, 4, 1, topic_configs={"cleanup.policy": "compact"})])
    except Exception as exc:  # TopicAlreadyExistsError, or a broker without the admin API
        log.debug("creating %s: %r", topic, exc)
    finally:
        await admin.close()


# A fan-out table's read-your-writes barrier is a reply due on its reader (a router's turn).
watch_barriers(expect, settle)
