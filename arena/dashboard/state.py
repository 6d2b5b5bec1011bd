"""What the dashboard knows besides the ledger: quotes, fills and rejections, model outcomes, tool calls,
supervised processes and the value history, fed from any thread.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from arena.decisions import Decision, Usage
from arena.market import MarketSnapshot, Quote, stale_status, utcnow
from arena.metrics import MetricsTracker
from arena.portfolio import Account, Fill, Rejection
from arena.supervisor import ProcessStatus
from arena.ui import (
    agent_color,
    ago,
    qty,
)

RECENT_FILLS = 200  # bounded lists: the screen's cost never grows with the length of the run
RECENT_PROBLEMS = 200
# Per-name maps are bounded too: any client on the broker can publish decisions and health reports
# under names of its choosing. Past the bound the least recently heard-of name is forgotten (an agent
# with an account still shows, from the ledger, without its activity counts).
MAX_AGENTS = 256
MAX_PROCESSES = 256
MAX_TEXT = 300  # characters of a reason or status kept (a screen line or two)
HISTORY_POINTS = 480  # chart samples kept; when full, every other one goes and the cadence doubles

# Per-agent performance metrics: ArenaState(metrics=...) takes an arena.metrics.MetricsTracker (the
# tools process: it is fed every trade, snapshot and account opening under the state's lock, and adds
# the buy-and-hold baseline row), or a plain function (agent name, account, value history
# [(time, value)]) -> {metric name: number}. Either way the metrics appear under "metrics" in
# leaderboard() and, for the keys below, as leaderboard columns.
MetricsFn = Callable[[str, Account, list[tuple[datetime, float]]], dict[str, float]]


@dataclass(kw_only=True)
class AgentActivity(Usage):
    """What the dashboard knows about an agent apart from its money: its turns, tool calls and (as a
    Usage) its model calls, tokens and dollars."""

    first_seen: datetime
    turns: int = 0  # finished model turns ("done")
    model_errors: int = 0  # turns that ended in an error or a timeout
    timeouts: int = 0
    skipped: int = 0
    last_status: str = ""
    last_reply_at: datetime | None = None
    last_error: str = ""
    last_tool_call_at: datetime | None = None
    tool_calls: dict[str, int] = field(default_factory=dict)


def return_per_dollar(pnl: float, cost_usd: float | None) -> float | None:
    """P&L earned per dollar of inference; None without a (positive) cost."""
    return pnl / cost_usd if cost_usd else None


@dataclass(frozen=True)
class Problem:
    """A rejected trade or a failed model turn, shown apart from fills."""

    at: datetime
    agent: str
    kind: str  # "rejected" | "model error" | "timeout"
    what: str  # e.g. "BUY 0.5 BTC" or the tick
    reason: str


@dataclass(frozen=True)
class Health:
    level: str  # "ok" | "degraded" | "down" | "waiting"
    problems: list[str]
    feed_age_s: float | None


class ValueHistory:
    """Each agent's total value sampled on a fixed wall-clock cadence (one sample per `interval_s` slot
    of the clock, however often it is offered). Bounded: when full, every other sample goes and the
    cadence doubles, so the chart always spans the whole run."""

    def __init__(self, interval_s: float = 5.0, max_points: int = HISTORY_POINTS):
        self.interval_s = interval_s
        self.max_points = max(4, max_points)
        self.points: list[tuple[datetime, dict[str, float]]] = []
        self._by_agent: dict[str, list[tuple[float, float]]] = {}  # agent -> [(epoch s, value)], for drawing
        self._last_slot: int | None = None

    def offer(self, now: datetime, values: dict[str, float]) -> bool:
        t = now.timestamp()
        slot = math.floor(t / self.interval_s)
        if self._last_slot is not None and slot <= self._last_slot:
            return False
        self.points.append((now, dict(values)))
        for name, v in values.items():
            self._by_agent.setdefault(name, []).append((t, v))
        self._last_slot = slot
        if len(self.points) > self.max_points:
            self.points = self.points[::-1][::2][::-1]  # thin out, always keeping the newest
            self.interval_s *= 2
            self._last_slot = math.floor(t / self.interval_s)
            self._by_agent = {}
            for when, vals in self.points:
                for name, v in vals.items():
                    self._by_agent.setdefault(name, []).append((when.timestamp(), v))
        return True

    def series(self, agent: str) -> list[tuple[datetime, float]]:
        return [(t, v[agent]) for t, v in self.points if agent in v]

    def epoch_series(self, agent: str) -> list[tuple[float, float]]:
        return self._by_agent.get(agent, [])


class ArenaState:
    """Everything the screen shows besides the ledger. Safe to feed from any thread."""

    def __init__(
        self,
        *,
        max_quote_age_s: float,
        fee_bps: float,
        impact_bps: float = 0.0,
        log_path: str | None = None,
        export_path: str | None = None,
        reply_timeout_s: float = 120.0,
        sample_interval_s: float = 5.0,
        metrics: MetricsTracker | MetricsFn | None = None,
        limits: str = "",
    ):
        self.limits = limits  # the risk limits in force, one line (the header shows them)
        self.max_quote_age_s = max_quote_age_s
        self.fee_bps = fee_bps
        self.impact_bps = impact_bps
        self.log_path = log_path
        self.export_path = export_path
        self.reply_timeout_s = reply_timeout_s  # no model reply for longer than this is reported
        self.metrics = metrics
        self.started_at = utcnow()
        self.quotes: dict[str, Quote] = {}
        self.snapshot_seq: int | None = None
        self._newest_at: datetime | None = None  # the newest snapshot's published_at
        self.snapshots = 0
        self.last_snapshot_at: datetime | None = None  # when we received it (our clock)
        self.fills: deque[Fill] = deque(maxlen=RECENT_FILLS)
        self.problems: deque[Problem] = deque(maxlen=RECENT_PROBLEMS)
        self.activity: OrderedDict[str, AgentActivity] = OrderedDict()  # least recently active first
        self.first_decision_at: datetime | None = None
        self.last_reply_at: datetime | None = None
        self.last_tool_call_at: datetime | None = None
        self.history = ValueHistory(sample_interval_s)
        self.processes: OrderedDict[str, ProcessStatus] = OrderedDict()  # the last report of each supervised process
        self._lock = threading.Lock()

    @property
    def tracker(self) -> MetricsTracker | None:
        return self.metrics if isinstance(self.metrics, MetricsTracker) else None

    # -- feeding

    def on_snapshot(self, snapshot: MarketSnapshot, *, now: datetime | None = None, catch_up: bool = False) -> None:
        """A market snapshot. catch_up: the last one already on the topic when this process started (it
        may be from an earlier run): its quotes show, aged by its publication time, and value positions,
        but it is not a metrics sample and does not start the baseline."""
        now = now or utcnow()
        with self._lock:
            # Partitions may reorder snapshots: the feed shows the newest one's quotes and seq.
            if self._newest_at is None or snapshot.published_at >= self._newest_at:
                self.quotes.update(snapshot.quotes)
                self.snapshot_seq, self._newest_at = snapshot.seq, snapshot.published_at
            self.snapshots += 1
            self.last_snapshot_at = min(now, snapshot.published_at) if catch_up else now
            if self.tracker is not None:
                self.tracker.on_snapshot(snapshot, sample=not catch_up)

    def on_trade(self, trade: Fill | Rejection) -> None:
        with self._lock:
            if self.tracker is not None:
                self.tracker.on_trade(trade)
            self._agent(trade.agent, trade.executed_at)
            if isinstance(trade, Fill):
                self.fills.append(trade)
            else:
                what = f"{trade.side.upper()} {qty(trade.quantity, trade.product_id)}"
                self.problems.append(
                    Problem(trade.executed_at, trade.agent, "rejected", what, _clip(trade.reason or "no reason given"))
                )

    def on_decision(self, decision: Decision, *, now: datetime | None = None) -> None:
        now = now or utcnow()
        at = decision.finished_at or now
        with self._lock:
            a = self._agent(decision.agent, now)
            self.first_decision_at = self.first_decision_at or now
            if decision.status == "started":
                return
            a.last_status = decision.status
            a.add(decision)  # also an error's or timeout's calls: they were paid for
            if decision.status == "done":
                a.turns += 1
                a.last_reply_at = at
                self.last_reply_at = max(self.last_reply_at or at, at)
            elif decision.status in ("error", "timeout"):
                a.model_errors += 1
                a.timeouts += decision.status == "timeout"
                a.last_error = _clip(decision.reason or decision.status)
                kind = "timeout" if decision.status == "timeout" else "model error"
                self.problems.append(Problem(at, decision.agent, kind, f"tick #{decision.tick_seq}", a.last_error))
            elif decision.status == "skipped":
                a.skipped += 1

    def on_tool_call(
        self, agent: str, tool: str, *, now: datetime | None = None, reacted_to: datetime | None = None
    ) -> None:
        """A tool call; reacted_to: when the snapshot the agent is deciding on was published."""
        now = now or utcnow()
        with self._lock:
            if self.tracker is not None:  # the account opens on its first tool call: its series starts there
                self.tracker.on_agent(agent, reacted_to)
            a = self._agent(agent, now)
            a.last_tool_call_at = now
            a.tool_calls[tool] = a.tool_calls.get(tool, 0) + 1
            self.last_tool_call_at = now

    def on_process(self, status: ProcessStatus) -> None:
        """A supervisor's report about one of the arena's processes (HEALTH_TOPIC); the last one counts."""
        with self._lock:
            known = self.processes.get(status.name)
            if known is None or status.at >= known.at:
                self.processes[status.name] = status.model_copy(update={"detail": _clip(status.detail)})
                self.processes.move_to_end(status.name)
                while len(self.processes) > MAX_PROCESSES:
                    self.processes.popitem(last=False)

    def sample(self, accounts: dict[str, Account], *, now: datetime | None = None) -> bool:
        """Offer the current values to the chart history (kept only on a new wall-clock slot)."""
        now = now or utcnow()
        with self._lock:
            values = {name: acc.total_value(self.quotes) for name, acc in self._accounts(accounts).items()}
            return self.history.offer(now, values) if values else False

    # -- reading

    def _agent(self, name: str, now: datetime) -> AgentActivity:
        a = self.activity.get(name)
        if a is None:
            a = self.activity[name] = AgentActivity(first_seen=now)
            agent_color(name)  # colours are handed out in order of first appearance
            while len(self.activity) > MAX_AGENTS:
                self.activity.popitem(last=False)
        else:
            self.activity.move_to_end(name)
        return a

    def _accounts(self, accounts: dict[str, Account]) -> dict[str, Account]:
        """Every agent seen (first trade, decision or tool call), with a fresh account if it has no trades."""
        out = dict(accounts)
        for name in self.activity:
            out.setdefault(name, Account(agent=name))
        return out

    def quote_is_stale(self, q: Quote, now: datetime) -> bool:
        return q.stale or q.age_s(now) > self.max_quote_age_s

    def feed_age_s(self, now: datetime) -> float | None:
        return None if self.last_snapshot_at is None else max(0.0, (now - self.last_snapshot_at).total_seconds())

    def health(self, now: datetime | None = None) -> Health:
        """Is the arena live? Says what is wrong when it is not."""
        now = now or utcnow()
        problems: list[str] = []
        level = "ok"
        feed_age = self.feed_age_s(now)
        if feed_age is None:
            level, problems = "waiting", ["no market data yet"]
        elif feed_age > self.max_quote_age_s:
            level = "down"
            problems.append(f"feed silent {ago(feed_age)}")
        elif stale := stale_status(self.quotes, now, self.max_quote_age_s):
            level = stale[0]
            problems.append(stale[1])
        if self.first_decision_at is not None:
            since = self.last_reply_at or self.first_decision_at
            silent = (now - since).total_seconds()
            if silent > self.reply_timeout_s:
                problems.append(
                    f"no model reply for {ago(silent)}" if self.last_reply_at else f"no model reply yet ({ago(silent)})"
                )
            failing = sorted(n for n, a in self.activity.items() if a.last_status in ("error", "timeout"))
            if failing:
                problems.append("model failing: " + ", ".join(failing))
            if self.last_reply_at is not None:
                tool_since = self.last_tool_call_at or self.first_decision_at
                if (self.last_reply_at - tool_since).total_seconds() > self.reply_timeout_s:
                    problems.append(f"no tool calls for {ago((now - tool_since).total_seconds())}")
        problems += [f"{p.name} exited ({exit_code(p)})" for p in self.processes_down()]
        if problems and level == "ok":
            level = "degraded"
        return Health(level, problems, feed_age)

    def processes_down(self) -> list[ProcessStatus]:
        """Processes whose last report is an unexpected exit, in name order."""
        return [p for _, p in sorted(self.processes.items()) if p.status == "exited"]

    def processes_up(self) -> list[ProcessStatus]:
        return [p for _, p in sorted(self.processes.items()) if p.status in ("starting", "ready")]


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exit_code(status: ProcessStatus) -> str:
    """`code 1` from the supervisor's detail ("code 1, log runs/x/router-bob.log"), else the detail."""
    m = re.match(r"\s*(code -?\d+)", status.detail)
    return m[1] if m else (status.detail.split(",")[0].strip() or "no exit code")
