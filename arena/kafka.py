"""aiokafka producers/consumers with the arena's latency tuning and JSON (pydantic) payloads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel, ValidationError

from arena.config import CONSUMER_TUNING, KafkaSettings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

MAX_MESSAGE_BYTES = 5 * 1024 * 1024  # matches calfkit's default


def producer(settings: KafkaSettings, **kw) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **settings.aiokafka_kwargs(),
        linger_ms=0,
        max_request_size=MAX_MESSAGE_BYTES,
        enable_idempotence=False,  # Tansu has no producer ids
        **kw,
    )


def consumer(settings: KafkaSettings, *topics: str, group_id: str | None, latest: bool = True, **kw) -> AIOKafkaConsumer:
    """A consumer tuned for latency. `group_id=None` reads without a group (no join wait)."""
    tuning = dict(CONSUMER_TUNING)
    if group_id is None:
        tuning.pop("session_timeout_ms")
        tuning.pop("heartbeat_interval_ms")
    return AIOKafkaConsumer(
        *topics,
        **settings.aiokafka_kwargs(),
        group_id=group_id,
        auto_offset_reset="latest" if latest else "earliest",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        **{**tuning, **kw},
    )


@contextmanager
def consumers_started() -> Iterator[list[AIOKafkaConsumer]]:
    """Every aiokafka consumer started in this process inside the block, calfkit's included.

    calfkit 0.13 gives no handle on the consumers behind its client inbox, node subscribers and
    fan-out tables; recording their start is the one seam that finds them all."""
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


async def positioned(consumers: list[AIOKafkaConsumer], timeout_s: float = 30.0) -> None:
    """Wait until every consumer has its partitions and a fetch position on each.

    aiokafka joins a group and resolves the committed offset (or "latest") in the background after
    start() returns; a record published before that resolves is skipped by "latest". calfkit's Worker
    starts its subscribers that way, so a process that says READY before this would lose the first
    request sent to it (seen: a router's first turn waiting out its whole timeout)."""

    async def one(c: AIOKafkaConsumer) -> None:
        while not c.assignment():
            await asyncio.sleep(0.01)
        for tp in c.assignment():
            await c.position(tp)

    try:
        await asyncio.wait_for(asyncio.gather(*(one(c) for c in consumers)), timeout_s)
    except asyncio.TimeoutError:
        waiting = sorted(t for c in consumers if not c.assignment() for t in c.subscription())
        raise TimeoutError(f"consumers not positioned within {timeout_s:g}s (unassigned: {', '.join(waiting) or 'none'})") from None


def advertise_when_positioned(worker, consumers: list[AIOKafkaConsumer]) -> None:
    """Hold back a calfkit Worker's capability adverts until `consumers` are positioned.

    calfkit publishes a tool's advert as soon as its consumers have started, before they resolve
    "latest" (measured: 21-36 of a tools process's 36 partitions unpositioned at that moment), and an
    agent calls a tool the moment it sees the advert: that call would be skipped and its turn would
    wait out its whole timeout. Worker hooks run in the order registered, and the worker registers its
    advert publisher only when it starts, so a hook registered before `start()` runs first."""

    async def hold(_ctx) -> None:
        await positioned(list(consumers))

    worker.after_startup(hold)


class Dozing:
    """Consumers that only matter at times: paused (no fetches at all) until woken.

    Tansu answers a fetch only when its max wait runs out — it has no wake-up on produce — so every
    running consumer costs a fetch per 10 ms, ~0.4 ms of broker CPU and as much of ours each time:
    an idle router with six of them took ~20 % of a core, and the broker another ~20 %, for it.
    Pausing is aiokafka's own: a paused partition is not fetched, keeps its position (nothing is
    skipped), and resume() wakes the fetcher at once."""

    def __init__(self, consumers: list[AIOKafkaConsumer]):
        self.consumers = consumers

    def wake(self) -> None:
        for c in self.consumers:
            paused = c.paused()
            if paused:
                c.resume(*paused)

    def doze(self) -> None:
        for c in self.consumers:
            for tp in c.assignment():
                try:
                    c.pause(tp)
                except Exception:  # unassigned by a rebalance in between: nothing to pause
                    pass


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


def decode(model_type: type[M], raw: bytes | None, topic: str = "?") -> M | None:
    """Parse a record; a malformed one is logged and skipped (returns None), never raised."""
    try:
        return model_type.model_validate_json(raw or b"")
    except ValidationError as exc:
        log.warning("skipping malformed %s record on %s: %s", model_type.__name__, topic, str(exc).splitlines()[0])
        return None
