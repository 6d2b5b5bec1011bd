"""Decision: one router turn's outcome, broadcast so the dashboard, viewer and benchmarks see it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from arena.market import utcnow


class Decision(BaseModel):
    agent: str
    run_id: str  # calfkit correlation id of the turn ("" when the turn never started)
    tick_seq: int  # snapshot seq the turn was based on
    tick_published_at: datetime
    status: Literal["started", "done", "error", "timeout", "skipped"]
    reason: str = ""  # error text or why it was skipped
    summary: str = ""  # one line: what the market looked like (prices) for the viewer
    output: str = ""  # the agent's final text, on "done"
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    chat_node: str = ""
    strategy: str = ""

    @property
    def latency_s(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None
