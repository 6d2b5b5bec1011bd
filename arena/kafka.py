"""aiokafka producers/consumers with the arena's latency tuning and JSON (pydantic) payloads."""

from __future__ import annotations

import logging
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
