"""The read loop both sides of a chat run: a router over its reply topic, a chat node over its requests."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable

log = logging.getLogger("arena.chat")


async def consume(consumer, take: Callable[[object], object], *, reading: str, item: str) -> None:
    """Hand every record of `consumer` to `take` (a function or a coroutine function) until cancelled.
    A failed fetch is retried (a transient broker error must not end the reader); a record `take` fails
    on is logged and skipped (the others, and the reader, go on). `reading`/`item` name them in the log."""
    while True:
        try:
            batches = await consumer.getmany(timeout_ms=1000)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed (%s); retrying", reading, exc)
            await asyncio.sleep(0.5)
            continue
        for records in batches.values():
            for record in records:
                try:
                    result = take(record)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error(
                        "could not take %s on %s partition %s offset %s: %r",
                        item,
                        record.topic,
                        record.partition,
                        record.offset,
                        exc,
                    )
