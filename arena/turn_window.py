"""Turns under way, as a process that reads the decisions feed sees them: its fetches stay short while
any is (the tools process, the web page)."""

from __future__ import annotations

import time
from collections.abc import Callable

from arena import polling
from arena.decisions import Decision


class OpenTurns:
    """The agents whose turn is under way, from the decisions feed: while any is, every consumer of the
    process polls with its short wait (arena.polling). A real model's steps come seconds apart, past
    the quiet window after a record: the tools process would make each tool call wait out a long fetch
    wait, and the web page would show each fill that much later.

    A turn opens with its "started" decision and closes with its end (done, error or timeout; a
    "skipped" tick leaves it open), or MAX_TURN_S after it opened when no end comes (its router died)."""

    MAX_TURN_S = 120.0  # past any turn timeout a router takes by default (60 s)

    def __init__(self, *, max_turn_s: float = MAX_TURN_S, clock: Callable[[], float] = time.monotonic):
        self.max_turn_s, self.clock = max_turn_s, clock
        self._opened: dict[str, float] = {}  # agent -> when its turn opened
        self._busy = False

    def on_decision(self, decision: Decision) -> None:
        if decision.status == "started":
            self._opened[decision.agent] = self.clock()
        elif decision.status != "skipped":
            self._opened.pop(decision.agent, None)
        self.check()

    def check(self) -> None:
        """Close turns past MAX_TURN_S and tell the pacer whether any is open."""
        now = self.clock()
        self._opened = {a: t for a, t in self._opened.items() if now - t < self.max_turn_s}
        if bool(self._opened) != self._busy:
            self._busy = not self._busy
            polling.PACER.busy() if self._busy else polling.PACER.idle()

    def close(self) -> None:
        self._opened.clear()
        self.check()

    @property
    def agents(self) -> list[str]:
        return sorted(self._opened)
