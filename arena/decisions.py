"""Decision: one router turn's outcome, broadcast so the dashboard, viewer and benchmarks see it."""

from __future__ import annotations

from dataclasses import dataclass, fields
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


@dataclass
class Usage:
    """Model usage summed over finished turns' Decisions (docs/METRICS.md "Tokens and dollars"): the
    dashboard's per-agent totals and the ledger's durable copy of them."""

    model_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_reasoning: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0  # of the priced calls
    unpriced_calls: int = 0  # calls whose price was unknown: the cost is then unknown

    def add(self, d: Decision) -> None:
        """A turn's calls (an error's or a timeout's too: they were paid for)."""
        if not d.model_calls:
            return
        self.model_calls += d.model_calls
        self.tokens_in += d.tokens_in
        self.tokens_out += d.tokens_out
        self.tokens_reasoning += d.tokens_reasoning
        self.tokens_cached += d.tokens_cached
        if d.cost_usd is None:
            self.unpriced_calls += d.model_calls
        else:
            self.cost_usd += d.cost_usd

    def add_to(self, target: Usage) -> None:
        """Add these totals to `target` (e.g. an agent's dashboard activity, restored from the ledger)."""
        for f in fields(Usage):
            setattr(target, f.name, getattr(target, f.name) + getattr(self, f.name))

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    @property
    def model_cost_usd(self) -> float | None:
        """What the model calls cost; None when any was unpriced (unknown, never shown as 0)."""
        return None if self.unpriced_calls or not self.model_calls else self.cost_usd
