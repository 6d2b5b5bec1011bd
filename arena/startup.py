"""Starting a part patiently: every script waits for its broker the same way.

People launch the parts from their own terminals in any order, and a broker that was just restarted
may refuse the first requests for a moment. Both are passing faults: a part tries again each second
until --connect-timeout, saying so, instead of exiting on the first error. A part restarted in place
because its broker went away waits for it without limit (arena/reconnect.py). While it starts, its
consumers poll at their short wait (`catching_up`), so READY waits for the broker, not for a fetch wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from arena.reconnect import awaiting_lost_broker

RETRY_S = 1.0


class StartupFailed(Exception):
    """The part did not start within its --connect-timeout; the message says what went wrong last."""


async def start_patiently(
    attempt: Callable[[], Awaitable[object]],
    undo: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
    timeout_s: float,
    what: str,
    status: Callable[[str], None],
) -> bool:
    """Run `attempt()` until it succeeds (True), `stop` is set (False, e.g. Ctrl-C) or `timeout_s` has
    passed (StartupFailed). After each failed or abandoned attempt `undo()` closes what it opened, so
    the next one starts clean."""
    if awaiting_lost_broker():  # restarted because the broker went away: it comes back when it does
        timeout_s = math.inf
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    stopping = asyncio.ensure_future(stop.wait())
    last: BaseException | None = None
    try:
        with _quiet("aiokafka"):
            while True:
                task = asyncio.ensure_future(attempt())
                left = deadline - loop.time()
                done, _ = await asyncio.wait({task, stopping}, timeout=max(0.0, left) if left != math.inf else None,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if task in done and not task.cancelled() and task.exception() is None:
                    return True
                if task in done:
                    last = asyncio.CancelledError() if task.cancelled() else task.exception()
                else:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                await undo()
                if stop.is_set():
                    return False
                if task not in done or loop.time() + RETRY_S >= deadline:
                    reason = f": {_describe(last)}" if last is not None else " (no answer)"
                    raise StartupFailed(f"{what} did not start within {timeout_s:g}s{reason}")
                status(f"could not start {what} ({_describe(last)}); trying again in {RETRY_S:g}s")
                await asyncio.wait({stopping}, timeout=RETRY_S)
                if stop.is_set():
                    return False
    finally:
        stopping.cancel()


@contextmanager
def catching_up(short_ms: int) -> Iterator[None]:
    """While a part starts: every fetch of the process at its short wait (arena.polling: a start-up
    expects its replies), and calfkit's tables caught up at `short_ms` (arena/compat/table_catchup.py),
    their consumers then handed back to the policy at their own waits."""
    from arena import polling
    from arena.compat.table_catchup import tables_catch_up_at

    pacer = polling.PACER
    pacer.busy()
    try:
        with tables_catch_up_at(short_ms, lambda consumer, ms: polling.PACER.add(consumer, short_ms=ms)):
            yield
    finally:
        pacer.idle()


def _describe(exc: BaseException | None) -> str:
    text, kind = str(exc), type(exc).__name__
    if not text:
        return kind
    return text if text.startswith(kind) else f"{kind}: {text}"  # Kafka errors name themselves


@contextmanager
def _quiet(logger_name: str):
    """The library's own connection errors, while our status line reports each failed attempt (all
    of them still at DEBUG)."""
    logger = logging.getLogger(logger_name)
    before = logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)
