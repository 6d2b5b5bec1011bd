"""Decision: one router turn's outcome, broadcast so the dashboard, viewer and benchmarks see it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from arena.wire import CHAT_NODE_RE, AgentName, AwareTime, Seq, Short, Text, utcnow

MAX_TOKENS = 10**12  # per call or per turn: far beyond any context window, small enough to sum safely
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
TURN_KEY = "turn"  # the deps key under which a router names the turn each model call belongs to
CostUSD = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class Decision(BaseModel):
    agent: AgentName
    run_id: Short  # calfkit correlation id of the turn ("" when the turn never started)
    tick_seq: Seq  # snapshot seq the turn was based on
    tick_published_at: AwareTime
    status: Literal["started", "done", "error", "timeout", "skipped"]
    reason: Text = ""  # error text or why it was skipped
    summary: Text = ""  # one line: what the market looked like (prices) for the viewer
    output: Text = ""  # the agent's final text, on "done"
    started_at: AwareTime = Field(default_factory=utcnow)
    finished_at: AwareTime | None = None
    chat_node: Annotated[str, StringConstraints(pattern=f"^$|{CHAT_NODE_RE.pattern}")] = ""
    strategy: Short = ""
    # What the turn's model calls used and cost (summed over the calls answered so far, also on "error"
    # and "timeout"); cost_usd None: no price known.
    model_calls: Tokens = 0
    tokens_in: Tokens = 0  # includes tokens_cached
    tokens_out: Tokens = 0  # includes tokens_reasoning
    tokens_reasoning: Tokens = 0
    tokens_cached: Tokens = 0
    cost_usd: CostUSD | None = None

    @property
    def latency_s(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None
