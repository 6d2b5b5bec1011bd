"""Choose each loop's poll timeout of calfkit's fan-out and directory tables when the loop polls.

Symptom: ktables 0.x (calfkit 0.13's `KafkaTable`) waits `poll_timeout_ms` in every `getmany` of its
reader loop, fixed at construction; a router sets it to the short wait so that a read-your-writes
barrier resolves quickly. Between turns those readers are paused, and each still wakes every short wait
(25 times a second at 40 ms) to find nothing: most of an idle router's CPU (bench/README.md).
Fix: the reader loop reads the instance's `_poll_timeout_ms` on every iteration; `follow_poll_timeout`
puts a property on the class that asks a function (the arena's polling policy) and keeps the
configured value as the short one.
Can go when ktables takes a poll timeout at run time (or its readers block while paused).
"""

from __future__ import annotations

from collections.abc import Callable

_installed: list[tuple[type, object]] = []


def follow_poll_timeout(wait_ms: Callable[[int], int]) -> bool:
    """From now on every KafkaTable reader loop waits `wait_ms(configured_ms)` per poll. False when
    ktables is not importable or no longer has the attribute the loop reads."""
    try:
        from ktables.kafka_table import KafkaTable
    except ImportError:  # pragma: no cover - calfkit always brings it
        return False
    if _installed:
        return True

    def get(self) -> int:
        fixed = self.__dict__.get("_arena_poll_timeout_ms", 500)
        return wait_ms(fixed)

    def set_(self, ms: int) -> None:
        self.__dict__["_arena_poll_timeout_ms"] = ms

    _installed.append((KafkaTable, KafkaTable.__dict__.get("_poll_timeout_ms")))
    KafkaTable._poll_timeout_ms = property(get, set_)
    return True


def unfollow_poll_timeout() -> None:
    """Undo follow_poll_timeout (tests)."""
    while _installed:
        cls, old = _installed.pop()
        if old is None:
            delattr(cls, "_poll_timeout_ms")
        else:
            cls._poll_timeout_ms = old
