"""How long each fetch of a process's consumers waits at the broker: long while nothing is due, short
only around a message the process expects.

The embedded broker answers a waiting fetch only when the wait runs out, so a consumer's fetch wait is
both its latency and its polling rate (bench/README.md, "Findings"). Messages in the arena are
predictable: a market snapshot every --interval seconds, then a burst of turns, model calls and tool
calls, then quiet. Every consumer of a process, calfkit's and faststream's included (see
arena/compat/fetch_wait.py), has each fetch's wait chosen as the fetch is sent (and calfkit's table
readers each poll's timeout, arena/compat/table_poll.py):

- its short wait (its builder's: --fetch-wait-ms) while the process waits for replies (`busy`; `due`
  for one consumer, below), for QUIET_S after the last record it received (the rest of a burst: a
  turn's hops come closer than that, its model calls do not, and a record after a longer gap waits up
  to one long wait),
  in the first STARTUP_S after its first consumer started (joins, the first tick), and from MARGIN_MS
  before a due snapshot until it came (or LATE_S after it was due);
- before a due snapshot, the time left until MARGIN_MS before it (capped at the long wait): the last
  fetch before it ends just ahead of it, so no fetch in flight holds the snapshot back;
- the long wait (IDLE_WAIT_MS) otherwise.

When the next snapshot is due is learned, not configured: the process's market consumer (or, in a
process without one, the first record of each burst) marks the schedule; the period is the shortest
gap between marks (a skipped snapshot leaves a multiple of it), and the next MISSES multiples of it
after the last mark are due (after that the schedule has stopped: nothing is expected until a
snapshot comes). A message nobody predicted (the first snapshot, a tick off the schedule, the first
request of a turn in a process that learned nothing yet) waits at most one long wait.

A process that knows which reply it waits for says so per consumer (`due`/`undue`: a router's turn,
arena.kafka.Dozing): a due consumer fetches with its short wait (or its `pace`: a model call's answer)
whatever the rest of the policy says.
Such a process also follows bursts only where no reply tells it more: a consumer set to SCHEDULE (a
router's market consumer) ignores turns, and the quiet window once the schedule is known; a consumer
set to REPLIES (a router's turn and directory consumers) waits long unless it is due.
Environment: ARENA_IDLE_WAIT_MS (default 1000; 0 turns the policy off: every consumer keeps its short
wait, as before it existed).
"""

from __future__ import annotations

import math
import os
import time
import weakref
from collections import deque
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from arena.compat.fetch_wait import follow_fetch_wait, set_fetch_wait, watch_consumers
from arena.compat.table_poll import follow_poll_timeout

IDLE_WAIT_MS = 1000  # one fetch a second per idle consumer (bench/README.md: 500 ms idles ~0.03 of a core higher)
MARGIN_MS = 50  # short this long before a due snapshot: the schedule's jitter as the process saw it
LATE_S = 0.5  # a due snapshot not here this long after its time: not expected again until the next one
QUIET_S = 0.25  # short this long after the last record: the rest of a turn's burst (its hops come closer than this)
STARTUP_S = 5.0
MIN_PERIOD_S = 0.2  # marks closer than this are one burst, not a schedule
MARKS = 8  # schedule marks remembered (the period is the shortest gap between them)
MISSES = 3  # due snapshots that never came: the schedule stopped (connector paused)

# What a consumer's wait follows when no reply is due on it (Pacer.follow):
BURSTS = "bursts"  # the whole policy: start-up, turns, the quiet window after records, due snapshots
SCHEDULE = "schedule"  # start-up and due snapshots (and the quiet window while no schedule is known)
REPLIES = "replies"  # nothing: the long wait


def idle_wait_ms() -> int:
    try:
        return int(os.environ.get("ARENA_IDLE_WAIT_MS", IDLE_WAIT_MS))
    except ValueError:
        return IDLE_WAIT_MS


class Pacer:
    """The fetch waits of every consumer of one process, from what it expects next."""

    def __init__(
        self,
        *,
        idle_ms: int | None = None,
        margin_ms: int = MARGIN_MS,
        quiet_s: float = QUIET_S,
        late_s: float = LATE_S,
        startup_s: float = STARTUP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_ms = idle_wait_ms() if idle_ms is None else idle_ms
        self.margin_s = margin_ms / 1000
        self.quiet_s, self.late_s, self.startup_s = quiet_s, late_s, startup_s
        self.clock = clock
        # consumer -> (its short wait, whether its records mark the schedule)
        self._consumers: weakref.WeakKeyDictionary[AIOKafkaConsumer, tuple[int, bool]] = weakref.WeakKeyDictionary()
        self._follows: weakref.WeakKeyDictionary[AIOKafkaConsumer, str] = weakref.WeakKeyDictionary()
        self._due: weakref.WeakKeyDictionary[AIOKafkaConsumer, int] = weakref.WeakKeyDictionary()
        # consumer -> its wait while due, from its short one (default: the short one itself)
        self._paces: weakref.WeakKeyDictionary[AIOKafkaConsumer, Callable[[int], int]] = weakref.WeakKeyDictionary()
        self._busy = 0
        self._follow_until = -math.inf
        self._started_at: float | None = None
        self._last_record = -math.inf
        self._marks: deque[float] = deque(maxlen=MARKS)
        self._has_clock = False

    # ----------------------------------------------------------------- what the process tells it

    def add(self, consumer: AIOKafkaConsumer, *, short_ms: int, clock: bool = False) -> None:
        """Manage `consumer`, whose short wait is `short_ms`; `clock`: its records mark the schedule."""
        self._consumers[consumer] = (short_ms, clock)
        self._has_clock = self._has_clock or clock

    def starting(self, consumer: AIOKafkaConsumer) -> None:
        if (
            consumer not in self._consumers
        ):  # built elsewhere (calfkit, faststream): its builder's wait is the short one
            self.add(consumer, short_ms=consumer._fetch_max_wait_ms)
        if self._started_at is None:
            self._started_at = self.clock()
        set_fetch_wait(consumer, self.wait_ms(consumer))  # its first fetches, before it is followed

    def started(self, consumer: AIOKafkaConsumer) -> None:
        ref = weakref.ref(consumer)
        follow_fetch_wait(consumer, lambda: self.wait_ms(ref()))

    def records(self, consumer: AIOKafkaConsumer) -> None:
        now = self.clock()
        _, clock = self._consumers.get(consumer, (0, False))
        if clock or (not self._has_clock and now - self._last_record >= self.quiet_s):
            if not self._marks or now - self._marks[-1] >= MIN_PERIOD_S:
                self._marks.append(now)
        self._last_record = now

    def follow(self, consumer: AIOKafkaConsumer, what: str) -> None:
        """What `consumer`'s wait follows while no reply is due on it: BURSTS (the default), SCHEDULE, REPLIES."""
        if what not in (BURSTS, SCHEDULE, REPLIES):
            raise ValueError(f"unknown policy {what!r}")
        self._follows[consumer] = what

    def due(self, consumer: AIOKafkaConsumer) -> None:
        """A reply is due on `consumer`: its fetches wait short until as many `undue` calls."""
        self._due[consumer] = self._due.get(consumer, 0) + 1

    def undue(self, consumer: AIOKafkaConsumer) -> None:
        n = self._due.get(consumer, 0) - 1
        if n > 0:
            self._due[consumer] = n
        else:
            self._due.pop(consumer, None)

    def pace(self, consumer: AIOKafkaConsumer, wait_ms: Callable[[int], int]) -> None:
        """While a reply is due on `consumer`, its fetches wait `wait_ms(short)` (capped at the long wait)
        rather than the short wait: for a reply whose time is unknown but not near (a model call's)."""
        self._paces[consumer] = wait_ms

    def is_due(self, consumer: AIOKafkaConsumer) -> bool:
        return consumer in self._due

    def busy(self) -> None:
        """Something is under way that brings replies soon (a turn): short until `idle()`."""
        self._busy += 1

    def idle(self, follow_s: float = 0.0) -> None:
        """One thing less under way; its last replies may still be on the way (the quiet window), and
        what follows it comes within `follow_s` (short until then: e.g. a turn's next model request)."""
        self._busy = max(0, self._busy - 1)
        now = self.clock()
        self._last_record = max(self._last_record, now)
        self._follow_until = max(self._follow_until, now + follow_s)

    # ----------------------------------------------------------------- the policy

    def period(self) -> float | None:
        marks = list(self._marks)
        gaps = [b - a for a, b in zip(marks, marks[1:]) if b - a >= MIN_PERIOD_S]
        return min(gaps) if gaps else None

    def next_due(self, now: float) -> float | None:
        """The first due time not yet LATE_S past (a multiple of the period after the last mark); None
        with no period learned, or once MISSES due times passed without a mark."""
        period = self.period()
        if period is None:
            return None
        k = max(1, math.floor((now - self.late_s - self._marks[-1]) / period) + 1)
        return self._marks[-1] + k * period if k <= MISSES else None

    def wait_ms(self, consumer: AIOKafkaConsumer | None) -> int:
        """The wait of a fetch `consumer` sends now."""
        short = self._consumers.get(consumer, (None, False))[0] if consumer is not None else None
        if short is None:
            short = self.idle_ms if self.idle_ms > 0 else 500
        long = max(self.idle_ms, short)
        if consumer is None:
            return self.wait_between(self.clock(), short, long)
        if self.idle_ms <= 0:
            return short
        if consumer in self._due:
            pace = self._paces.get(consumer)
            return short if pace is None else min(long, max(short, pace(short)))
        follows = self._follows.get(consumer, BURSTS)
        if follows == REPLIES:
            return long
        return self.wait_between(self.clock(), short, long, bursts=follows == BURSTS)

    def wait_with(self, short: int) -> int:
        """The wait of a fetch (or a calfkit table reader's poll, arena/compat/table_poll.py) sent now by
        something whose short wait is `short`: short while anything is due (a reply on any consumer
        of the process included), the long wait otherwise."""
        if self._due:
            return short
        return self.wait_between(self.clock(), short, max(self.idle_ms, short))

    def wait_between(self, now: float, short: int, long: int, *, bursts: bool = True) -> int:
        """`bursts`: a turn under way (busy) and the quiet window after records count as due; without,
        the quiet window counts only while no schedule is known (so the second snapshot is not missed)."""
        if self.idle_ms <= 0 or (bursts and (self._busy or now < self._follow_until)):
            return short
        if now < (self._started_at or -math.inf) + self.startup_s:
            return short
        due = self.next_due(now)
        if now < self._last_record + self.quiet_s and (bursts or due is None):
            return short
        if due is None:
            return long
        ahead_ms = (due - self.margin_s - now) * 1000
        return short if ahead_ms <= 0 else int(min(long, max(short, ahead_ms)))


PACER = Pacer()


def install() -> None:
    """Route every consumer of this process through PACER (looked up at each call, so a test may swap
    it): once per process, at import of arena.kafka."""
    watch_consumers(lambda c: PACER.starting(c), lambda c: PACER.started(c), lambda c: PACER.records(c))
    follow_poll_timeout(lambda short: PACER.wait_with(short))
