"""When a process's consumers poll the broker: a long fetch wait while nothing is due, a short one only
around a message it expects.

The embedded broker answers a waiting fetch only when the wait runs out, so a consumer's fetch wait is
both its latency and its polling rate (bench/README.md, "Findings"). Messages in the arena are
predictable: a market snapshot every --interval seconds, then a burst of turns, model calls and tool
calls, then quiet. So every consumer of a process (the arena's, calfkit's and faststream's alike, see
arena/compat/fetch_wait.py) waits

- short (the consumer's own wait: --fetch-wait-ms) while the process is busy (a router's turn: a
  reply it waits for), for QUIET_S after the last record it received (the rest of a burst), in the
  first STARTUP_S after its first consumer starts (joins, tests and the first tick), and from LEAD_MS
  before each due snapshot until it comes (or LATE_S after it was due);
- long (IDLE_WAIT_MS) otherwise.

A switch to short takes effect when the fetch in flight returns, up to one long wait later: hence the
lead. When the next snapshot is due is learned, not configured: the process's market consumer (or,
in a process without one, the first record of each burst) marks the schedule, the period is the
shortest gap between marks (a skipped snapshot leaves a multiple of it), and every multiple of it
after the last mark is a due time. A message nobody predicted (the first snapshot, a tick off the
schedule, the first request of a turn in a process that learned nothing yet) waits at most one long
wait. Environment: ARENA_IDLE_WAIT_MS (default 500; 0 turns the policy off: every consumer keeps its
short wait, as before).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import weakref
from collections import deque
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from arena.compat.fetch_wait import set_fetch_wait, watch_consumers
from arena.config import CONSUMER_TUNING

log = logging.getLogger(__name__)

IDLE_WAIT_MS = 500  # Kafka's own default; ~2 fetches/s per idle consumer
LEAD_MS = IDLE_WAIT_MS + 150  # the fetch in flight may run out its long wait before the short one applies
LATE_S = 1.0  # a due snapshot not here this long after its time: long again until the next one
QUIET_S = 2.0  # short this long after the last record: the rest of a turn's burst
STARTUP_S = 5.0
MIN_PERIOD_S = 0.2  # marks closer than this are one burst, not a schedule
MARKS = 8  # schedule marks remembered (the period is the shortest gap between them)


def idle_wait_ms() -> int:
    try:
        return int(os.environ.get("ARENA_IDLE_WAIT_MS", IDLE_WAIT_MS))
    except ValueError:
        return IDLE_WAIT_MS


class Pacer:
    """The fetch wait of every consumer of one process, from what it expects next (pure timing logic in
    `wanted`; `apply` sets it on the consumers and re-checks when the answer would change)."""

    def __init__(
        self,
        *,
        idle_ms: int | None = None,
        lead_ms: int | None = None,
        quiet_s: float = QUIET_S,
        late_s: float = LATE_S,
        startup_s: float = STARTUP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_ms = idle_wait_ms() if idle_ms is None else idle_ms
        self.lead_s = (lead_ms if lead_ms is not None else self.idle_ms + LEAD_MS - IDLE_WAIT_MS) / 1000
        self.quiet_s, self.late_s, self.startup_s = quiet_s, late_s, startup_s
        self.clock = clock
        # consumer -> (its own short wait or None for CONSUMER_TUNING's, whether its records mark the schedule)
        self._consumers: weakref.WeakKeyDictionary[AIOKafkaConsumer, tuple[int | None, bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._busy = 0
        self._started_at: float | None = None
        self._last_record = -math.inf
        self._marks: deque[float] = deque(maxlen=MARKS)
        self._has_clock = False
        self._short: bool | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.switches = 0  # long <-> short changes applied (for tests and benchmarks)

    # ----------------------------------------------------------------- what the process tells it

    def add(self, consumer: AIOKafkaConsumer, *, short_ms: int | None = None, clock: bool = False) -> None:
        """Manage `consumer`: `short_ms` is its own short wait (default: CONSUMER_TUNING's); `clock`: its
        records are the schedule (the market)."""
        self._consumers[consumer] = (short_ms, clock)
        self._has_clock = self._has_clock or clock

    def started(self, consumer: AIOKafkaConsumer) -> None:
        if (
            consumer not in self._consumers
        ):  # built elsewhere (calfkit, faststream): its builder's wait is its short one
            self.add(consumer, short_ms=consumer._fetch_max_wait_ms)
        if self._started_at is None:
            self._started_at = self.clock()
        set_fetch_wait(consumer, self._wait_of(consumer, self._short_now()))
        self.apply()

    def records(self, consumer: AIOKafkaConsumer) -> None:
        now = self.clock()
        _, clock = self._consumers.get(consumer, (None, False))
        if clock or (not self._has_clock and now - self._last_record >= self.quiet_s):
            if not self._marks or now - self._marks[-1] >= MIN_PERIOD_S:
                self._marks.append(now)
        was_quiet = now - self._last_record >= self.quiet_s
        self._last_record = now
        if was_quiet or self._short is False:
            self.apply()
        else:
            self._arm(now)

    def busy(self) -> None:
        """Something is under way that will bring replies soon (a turn): short until `idle()`."""
        self._busy += 1
        self.apply()

    def idle(self) -> None:
        self._busy = max(0, self._busy - 1)
        self._last_record = max(self._last_record, self.clock())  # its last replies may still be on the way
        self.apply()

    # ----------------------------------------------------------------- the policy

    def period(self) -> float | None:
        gaps = [b - a for a, b in zip(self._marks, list(self._marks)[1:]) if b - a >= MIN_PERIOD_S]
        return min(gaps) if gaps else None

    def next_due(self, now: float) -> float | None:
        """The first due time that is not yet LATE_S past (a multiple of the period after the last mark)."""
        period = self.period()
        if period is None:
            return None
        k = max(1, math.floor((now - self.late_s - self._marks[-1]) / period) + 1)
        return self._marks[-1] + k * period

    def wanted(self, now: float) -> tuple[bool, float | None]:
        """(short?, when that may change: None = only on an event)."""
        if self.idle_ms <= 0 or self._busy:
            return True, None
        until = [
            t for t in (self._last_record + self.quiet_s, (self._started_at or -math.inf) + self.startup_s) if t > now
        ]
        if until:
            return True, max(until)
        due = self.next_due(now)
        if due is None:
            return False, None
        if now >= due - self.lead_s:
            return True, due + self.late_s
        return False, due - self.lead_s

    def _short_now(self) -> bool:
        return self.wanted(self.clock())[0]

    def _wait_of(self, consumer: AIOKafkaConsumer, short: bool) -> int:
        own = self._consumers.get(consumer, (None, False))[0]
        short_ms = own if own is not None else CONSUMER_TUNING["fetch_max_wait_ms"]
        return short_ms if short or self.idle_ms <= 0 else max(self.idle_ms, short_ms)

    def apply(self) -> None:
        now = self.clock()
        short, until = self.wanted(now)
        if short != self._short:
            self._short = short
            self.switches += 1
            for consumer in list(self._consumers):
                set_fetch_wait(consumer, self._wait_of(consumer, short))
            log.debug("fetch wait now %s", "short" if short else "long")
        self._schedule(until, now)

    def _arm(self, now: float) -> None:
        """A record inside a burst: the re-check at the end of QUIET_S moves with it (lazily)."""
        if self._timer is None:
            self._schedule(self._last_record + self.quiet_s, now)

    def _schedule(self, at: float | None, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if at is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(max(0.0, at - now) + 0.001, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.apply()


PACER = Pacer()


def install() -> None:
    """Route every consumer of this process through PACER (looked up at each call, so a test may swap
    it): once per process, at import of arena.kafka."""
    watch_consumers(lambda c: PACER.started(c), lambda c: PACER.records(c))
