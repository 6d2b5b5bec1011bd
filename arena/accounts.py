"""Each agent's account on the bus, so a turn's prompt can carry it: ACCOUNTS_TOPIC, key = the agent.

One source: the tools process publishes `Desk.portfolio(agent, strategy)`, the very dict get_portfolio
returns, after every outcome of that agent's orders (fills and rejections), after each market snapshot
it takes (marks change) and when a turn starts under a strategy it has not valued the agent for yet.
Each record says which snapshot the desk's quotes were at, so a router can tell whether the account is
valued at the snapshot of its turn (`AccountRecord.covers`).

A router reads its own key on its market consumer (no poller of its own) and, when a turn starts,
waits a bounded time for the valuation at that snapshot; then the prompt shows the newest record it
has, saying how old it is if it is not that one (`render_account`). An agent that has no account yet
(no tool call ever) gets a record without a portfolio when its first turn starts, so its router need
not wait for a valuation that cannot come.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime
from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, model_validator

from arena import kafka as k
from arena.wire import MAX_PRODUCTS, MAX_TEXT, PRODUCT_ID_RE, AgentName, AwareTime, Seq, Short, utcnow

log = logging.getLogger(__name__)

ACCOUNTS_TOPIC = "arena.accounts"
ACCOUNT_HEADER = "Your account"  # the prompt line the account's JSON follows (arena.policies reads it)
MAX_DEPTH = 6  # nesting of a portfolio: the desk's is 4 deep (limits.rules)
MAX_NODES = 50_000  # values in one portfolio: ~10 per position, MAX_PRODUCTS positions, with room


def _json_means_little(value: Any, depth: int = 0, budget: list[int] | None = None) -> None:
    """A portfolio is plain JSON of bounded size: finite numbers, bounded strings, shallow nesting."""
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"more than {MAX_NODES} values")
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a number that is not finite")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError(f"a string over {MAX_TEXT} characters")
    if isinstance(value, dict):
        for key, v in value.items():
            _json_means_little(key, depth + 1, budget)
            _json_means_little(v, depth + 1, budget)
    elif isinstance(value, list):
        for v in value:
            _json_means_little(v, depth + 1, budget)


def _number(portfolio: dict, key: str, *, required: bool = True) -> None:
    v = portfolio.get(key)
    if v is None and not required:
        return
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise ValueError(f"portfolio.{key} is not a number")


class AccountRecord(BaseModel):
    """One agent's account as get_portfolio would have returned it when `valued_at`."""

    model_config = ConfigDict(extra="forbid")

    agent: AgentName
    strategy: Short = Field(
        "", description="The strategy whose risk limits `portfolio.limits` shows (the router's --strategy)."
    )
    valued_at: AwareTime = Field(description="When the tools process read the account.")
    snapshot_seq: Seq | None = Field(
        None, description="`seq` of the newest market snapshot in the desk's quotes then (null: none yet)."
    )
    snapshot_at: AwareTime | None = Field(None, description="`published_at` of that snapshot.")
    cause: Short = Field("", description="What prompted this record: snapshot, trade, call or turn.")
    portfolio: dict[str, Any] | None = Field(
        description="What get_portfolio returns (the desk's dict: agent, cash, positions[] with product_id and "
        "quantity, total_value, ... and limits), unchanged. null: the agent has no account yet (it opens at "
        "its first tool call)."
    )

    @model_validator(mode="after")
    def _a_portfolio_of_this_agent(self) -> AccountRecord:
        p = self.portfolio
        if p is None:
            return self
        _json_means_little(p)
        if p.get("agent") != self.agent:
            raise ValueError("portfolio.agent is not the record's agent")
        _number(p, "cash")
        _number(p, "total_value")
        positions = p.get("positions")
        if not isinstance(positions, list) or len(positions) > MAX_PRODUCTS:
            raise ValueError(f"portfolio.positions is not a list of at most {MAX_PRODUCTS}")
        for pos in positions:
            if not isinstance(pos, dict) or not PRODUCT_ID_RE.match(str(pos.get("product_id", ""))):
                raise ValueError("a position without a product id")
            _number(pos, "quantity")
            if pos["quantity"] < 0:
                raise ValueError("a position with a negative quantity")
        return self

    def covers(self, snapshot_at: datetime) -> bool:
        """Valued at the snapshot published at `snapshot_at` or a newer one (an agent without an account
        has none at any snapshot)."""
        if self.portfolio is None:
            return True
        return self.snapshot_at is not None and self.snapshot_at >= snapshot_at


def portfolio_json(portfolio: dict) -> str:
    """The portfolio as the model reads get_portfolio's result (calfkit dumps tool results with pydantic)."""
    return pydantic_core.to_json(portfolio).decode()


def render_account(record: AccountRecord | None, snapshot_seq: int, snapshot_at: datetime) -> str:
    """The prompt's account section for a turn on snapshot `snapshot_seq`."""
    if record is None:
        return f"{ACCOUNT_HEADER}: not yet known. Call get_portfolio to see it."
    if record.portfolio is None:
        return f"{ACCOUNT_HEADER}: none yet; your first tool call opens it. Call get_portfolio to see it."
    if record.covers(snapshot_at):
        head = f"{ACCOUNT_HEADER} (what get_portfolio returns now, valued at snapshot #{snapshot_seq}):"
    else:
        what = f"snapshot #{record.snapshot_seq}" if record.snapshot_seq is not None else "no snapshot"
        age = max(0.0, (snapshot_at - record.valued_at).total_seconds())
        head = (
            f"{ACCOUNT_HEADER} as get_portfolio returned it {age:.0f}s before this snapshot (valued at {what}, "
            "not yet at this one; call get_portfolio for current marks):"
        )
    return f"{head}\n{portfolio_json(record.portfolio)}"


# ------------------------------------------------------------------------------------ the tools side


class AccountPublisher:
    """The tools process's side: which agents' accounts are due, and a task that publishes them.

    Marks are coalesced per agent and the portfolio is read when the record is built, so a burst of
    fills or a snapshot costs one record per agent, valued at that moment."""

    def __init__(self, producer, desk, *, max_agents: int = 10_000):
        self.producer = producer
        self.desk = desk
        self.max_agents = max_agents
        self.strategies: dict[str, str] = {}  # agent -> the strategy its latest turn started under
        self.published = 0
        self._opened: set[str] = set()  # agents published with an account
        self._due: dict[str, str] = {}  # agent -> cause
        self._wake = asyncio.Event()
        self._snapshot: tuple[int, datetime] | None = None  # newest snapshot the desk took: (seq, published_at)

    def _mark(self, agent: str, cause: str) -> None:
        self._due.setdefault(agent, cause)
        self._wake.set()

    def on_snapshot(self, seq: int, published_at: datetime) -> None:
        """The desk took a snapshot: every agent it knows the strategy of is valued again."""
        if self._snapshot is not None and published_at < self._snapshot[1]:
            return  # an older one: the quotes it carried did not replace newer ones
        self._snapshot = (seq, published_at)
        accounts = self.desk.ledger.accounts()
        for agent in self.strategies:
            if agent in accounts:
                self._mark(agent, "snapshot")

    def on_trade(self, agent: str) -> None:
        if agent in self.strategies:
            self._mark(agent, "trade")

    def on_call(self, agent: str) -> None:
        """A tool call: the first one opens the account, which its router has not seen yet."""
        if agent in self.strategies and agent not in self._opened:
            self._mark(agent, "call")

    def on_turn(self, agent: str, strategy: str) -> None:
        """A turn started (its Decision): value the agent now if this strategy is news, or it has no account."""
        if self.strategies.get(agent) == strategy and agent in self._opened:
            return
        if agent not in self.strategies and len(self.strategies) >= self.max_agents:
            self.strategies.pop(next(iter(self.strategies)))  # forged names must not grow this without bound
        self.strategies[agent] = strategy
        self._mark(agent, "turn")

    def record(self, agent: str, cause: str = "") -> AccountRecord:
        strategy = self.strategies.get(agent, "")
        portfolio = None
        if self.desk.ledger.account(agent) is not None:  # reading it must not open it: only the agent's call does
            portfolio = self.desk.portfolio(agent, strategy or None)
        seq, at = self._snapshot if self._snapshot is not None else (None, None)
        return AccountRecord(
            agent=agent,
            strategy=strategy,
            valued_at=utcnow(),
            snapshot_seq=seq,
            snapshot_at=at,
            cause=cause,
            portfolio=portfolio,
        )

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            due, self._due = self._due, {}
            for agent, cause in due.items():
                rec = self.record(agent, cause)
                try:
                    await self.producer.send(ACCOUNTS_TOPIC, k.encode(rec), key=agent.encode())
                except Exception as exc:  # the next snapshot values it again
                    log.warning("could not publish %s's account to %s: %r", agent, ACCOUNTS_TOPIC, exc)
                    continue
                self.published += 1
                if rec.portfolio is not None:
                    self._opened.add(agent)


async def ensure_topic(kafka, timeout_s: float = 10.0) -> None:
    """Create ACCOUNTS_TOPIC compacted if it is not there yet (best effort: a broker that auto-creates
    topics takes the records anyway, and Tansu's memory storage keeps every record either way)."""
    try:
        await asyncio.wait_for(k.ensure_compacted_topic(kafka, ACCOUNTS_TOPIC), timeout_s)
    except asyncio.TimeoutError:
        log.warning("could not create %s within %gs; publishing anyway", ACCOUNTS_TOPIC, timeout_s)


# ----------------------------------------------------------------------------------- the router side


class OwnAccount:
    """A router's newest record of its own account, and a bounded wait for the one valued at its turn's snapshot."""

    def __init__(self, agent: str, strategy: str) -> None:
        self.agent = agent
        self.strategy = strategy
        self.key = agent.encode()
        self.latest: AccountRecord | None = None
        self._changed = asyncio.Event()

    def offer_record(self, record) -> None:
        """A record off ACCOUNTS_TOPIC: another agent's is dropped before it is even parsed."""
        if record.key != self.key or not record.value:
            return
        rec = k.decode_record(AccountRecord, record)
        if rec is not None:
            self.offer(rec)

    def offer(self, rec: AccountRecord) -> None:
        if rec.agent != self.agent or rec.strategy != self.strategy:
            return  # valued under other limits than this router's (a turn of another run, or forged)
        if self.latest is not None and rec.valued_at < self.latest.valued_at:
            return
        self.latest = rec
        self._changed.set()

    async def wait_for(self, snapshot_at: datetime, timeout_s: float) -> AccountRecord | None:
        """The newest record, once it covers the snapshot published at `snapshot_at` or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while self.latest is None or not self.latest.covers(snapshot_at):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return self.latest
