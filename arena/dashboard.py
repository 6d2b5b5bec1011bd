"""The arena's terminal dashboard: what the tools process knows, drawn so a user trusts it at a glance.

ArenaState collects everything besides the ledger (quotes, fills and rejections, model outcomes, tool
calls, the value history); render() lays it out for any terminal size; LiveDashboard runs it full screen
at a fixed cadence with logs sent to a file; leaderboard() is the same picture as JSON.

Rendering only: money arithmetic lives in arena.portfolio, the accounts come from the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from arena.decisions import Decision
from arena.leaderboard import leaderboard_table
from arena.market import MarketSnapshot, Quote, utcnow
from arena.metrics import BASELINE_NAME, AgentMetrics, MetricsTracker
from arena.portfolio import INITIAL_CASH, Account, Trade, mark_price
from arena.supervisor import ProcessStatus
from arena.ui import (
    FLAT,
    Column,
    Fixed,
    agent_color,
    agent_text,
    ago,
    fit_table,
    hms,
    money,
    pct,
    price,
    qty,
    signed_money,
    signed_pct,
    table_width,
)

log = logging.getLogger(__name__)

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


def _win_rate(m: dict) -> Text:
    if m.get("win_rate") is None:
        return Text("—", style=FLAT)
    return Text(f"{m['win_rate']:.0f}% of {m.get('round_trips', 0)}")


def _drawdown(m: dict) -> Text:
    dd = m.get("max_drawdown_pct")
    if dd is None:
        return Text("—", style=FLAT)
    return Text(pct(-dd), style="red" if round(dd, 2) > 0 else FLAT)


def _number(key: str, fmt: str) -> Callable[[dict], Text]:
    return lambda m: Text("—", style=FLAT) if m.get(key) is None else Text(fmt.format(m[key]))


# (metric key, column header, cell from the agent's metrics dict, priority): lower priority numbers stay
# longer on a narrow screen (the money columns are 0-6, see _leaderboard_body).
METRIC_COLUMNS: list[tuple[str, str, Callable[[dict], Text | str], int]] = [
    ("max_drawdown_pct", "Max DD", _drawdown, 2),
    ("win_rate", "Win rate", _win_rate, 3),
    ("sharpe", "Sharpe", _number("sharpe", "{:.2f}"), 4),
    ("exposure_pct", "Exposure", _number("exposure_pct", "{:.0f}%"), 5),
]


def tokens_text(n: int | None) -> str:
    """12 / 4.5k / 1.2M tokens; "—" unknown."""
    if n is None:
        return "—"
    if n < 10_000:
        return f"{n:,}"
    return f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1_000_000:.2f}M"


def usd_cost(x: float | None) -> str:
    """A model cost: cents are too coarse for one agent's calls ($0.0027); "—" unknown."""
    if x is None:
        return "—"
    return f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def per_dollar(x: float | None) -> Text:
    """P&L per dollar of inference, e.g. "+412" (dollars earned per dollar spent); "—" without a cost."""
    if x is None:
        return Text("—", style=FLAT)
    return Text(f"{x:+,.0f}" if abs(x) >= 10 else f"{x:+.2f}", style="green" if x > 0 else "red" if x < 0 else FLAT)


# ---------------------------------------------------------------------------------------------- state


@dataclass
class AgentActivity:
    """What the dashboard knows about an agent apart from its money."""

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
    # Inference, summed over the finished turns' Decisions (docs/METRICS.md "Tokens and dollars").
    model_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_reasoning: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0  # of the priced calls
    unpriced_calls: int = 0  # calls whose price was unknown: the agent's cost is then unknown

    def add_usage(self, d: Decision) -> None:
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

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    @property
    def model_cost_usd(self) -> float | None:
        """What its model calls cost; None when any was unpriced (unknown, never shown as 0)."""
        return None if self.unpriced_calls or not self.model_calls else self.cost_usd


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
        self.log_path = log_path
        self.export_path = export_path
        self.reply_timeout_s = reply_timeout_s  # no model reply for longer than this is reported
        self.metrics = metrics
        self.started_at = utcnow()
        self.quotes: dict[str, Quote] = {}
        self.snapshot_seq: int | None = None
        self.snapshots = 0
        self.last_snapshot_at: datetime | None = None  # when we received it (our clock)
        self.fills: deque[Trade] = deque(maxlen=RECENT_FILLS)
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
            self.quotes.update(snapshot.quotes)
            self.snapshot_seq = snapshot.seq
            self.snapshots += 1
            self.last_snapshot_at = min(now, snapshot.published_at) if catch_up else now
            if self.tracker is not None:
                self.tracker.on_snapshot(snapshot, sample=not catch_up)

    def on_trade(self, trade: Trade) -> None:
        with self._lock:
            if self.tracker is not None:
                self.tracker.on_trade(trade)
            self._agent(trade.agent, trade.executed_at)
            if trade.status == "filled":
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
            a.add_usage(decision)  # also an error's or timeout's calls: they were paid for
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
        else:
            stale = sorted(pid for pid, q in self.quotes.items() if self.quote_is_stale(q, now))
            if stale and len(stale) == len(self.quotes):
                level = "down"
                problems.append("all quotes stale")
            elif stale:
                level = "degraded"
                problems.append("stale " + ", ".join(stale))
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


# --------------------------------------------------------------------------------------------- export


@dataclass
class _Standing:
    name: str
    account: Account
    value: float
    ret: float
    unrealized: float
    activity: AgentActivity | None
    metrics: dict = field(default_factory=dict)
    baseline: bool = False  # the buy-and-hold benchmark: shown, never ranked
    rank: int | None = None


def _standings(state: ArenaState, accounts: dict[str, Account]) -> list[_Standing]:
    """Agents (and the baseline, if the metrics tracker has one) by total value, best first; agents are
    ranked 1..n, the baseline is not. Every value is marked at the best bid of the state's quotes."""
    everyone = state._accounts(accounts)
    base = state.tracker.accounts().get(BASELINE_NAME) if state.tracker is not None else None
    if base is not None:  # (no agent can have its name: agent names have no spaces)
        everyone[BASELINE_NAME] = base
    q = state.quotes
    rows = []
    for name, acc in everyone.items():
        rows.append(_Standing(name, acc, acc.total_value(q), acc.return_pct(q), acc.unrealized_pnl(q), state.activity.get(name),
                              _metrics_of(state, name, acc), baseline=acc is base))  # fmt: skip
    rows.sort(key=lambda s: (-s.value, s.name))
    rank = 0
    for r in rows:
        if not r.baseline:
            rank += 1
            r.rank = rank
    return rows


def _metrics_of(state: ArenaState, name: str, account: Account) -> dict:
    """One agent's metrics as a dict (empty without metrics)."""
    if state.tracker is not None:
        m: AgentMetrics | None = state.tracker.metrics_for(name)
        return m.model_dump() if m is not None else {}
    if state.metrics is not None:
        return dict(state.metrics(name, account, state.history.series(name)))
    return {}


_ROW_KEYS = {
    "name",
    "baseline",
    "total_value",
    "return_pct",
    "cash",
    "realized_pnl",
    "unrealized_pnl",
    "fees",
    "trades",
    "rejected",
}


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def leaderboard(state: ArenaState, accounts: dict[str, Account], *, now: datetime | None = None) -> dict:
    """The standings as JSON-ready data (the dashboard's export and final record)."""
    now = now or utcnow()
    with state._lock:
        standings = _standings(state, accounts)
        health = state.health(now)
        agents = []
        for s in standings:
            a = s.activity
            agents.append(
                {
                    "rank": s.rank,  # None for the baseline
                    "name": s.name,
                    "baseline": s.baseline,
                    "total_value": s.value,
                    "return_pct": s.ret,
                    "cash": s.account.cash,
                    "realized_pnl": s.account.realized_pnl,
                    "unrealized_pnl": s.unrealized,
                    "fees": s.account.fees_paid,
                    "trades": s.account.trades,
                    "rejected": s.account.rejected,
                    "model_errors": a.model_errors if a else 0,
                    "model_timeouts": a.timeouts if a else 0,
                    "turns": a.turns if a else 0,
                    "skipped_turns": a.skipped if a else 0,
                    "last_reply_at": _iso(a.last_reply_at if a else None),
                    # tokens and dollars of its model calls (None: the baseline, or an agent not heard from)
                    "model_calls": a.model_calls if a else None,
                    "tokens": a.tokens if a else None,
                    "tokens_in": a.tokens_in if a else None,
                    "tokens_out": a.tokens_out if a else None,
                    "tokens_reasoning": a.tokens_reasoning if a else None,
                    "tokens_cached": a.tokens_cached if a else None,
                    "model_cost_usd": a.model_cost_usd if a else None,
                    "return_per_dollar": return_per_dollar(s.value - INITIAL_CASH, a.model_cost_usd) if a else None,
                    "first_trade_at": _iso(s.account.first_trade_at),
                    "positions": [
                        {
                            "product_id": pid,
                            "quantity": p.quantity,
                            "avg_cost": p.avg_cost,
                            "mark": mark_price(state.quotes.get(pid)),
                            "market_value": p.market_value(state.quotes.get(pid)),
                            "unrealized_pnl": p.unrealized_pnl(state.quotes.get(pid)),
                            "opened_at": _iso(p.opened_at),
                        }
                        for pid, p in sorted(s.account.positions.items())
                    ],
                    # drawdown, Sharpe, win rate, exposure, ... (docs/METRICS.md): what the row above does not say
                    "metrics": {k: v for k, v in s.metrics.items() if k not in _ROW_KEYS},
                }
            )
        products = {
            pid: {
                "price": q.price,
                "bid": q.best_bid,
                "ask": q.best_ask,
                "spread": q.spread,
                "age_s": q.age_s(now),
                "stale": state.quote_is_stale(q, now),
            }
            for pid, q in sorted(state.quotes.items())
        }
        return {
            "generated_at": now.isoformat(),
            "started_at": state.started_at.isoformat(),
            "starting_cash": INITIAL_CASH,
            "positions_marked_at": "best bid",
            "fee_bps": state.fee_bps,
            "feed": {
                "status": health.level,
                "problems": health.problems,
                "age_s": health.feed_age_s,
                "snapshot_seq": state.snapshot_seq,
            },
            "processes": [p.model_dump(mode="json") for _, p in sorted(state.processes.items())],
            "agents": agents,
            "products": products,
            "value_history": {
                "interval_s": state.history.interval_s,
                "samples": [{"t": t.isoformat(), "values": v} for t, v in state.history.points],
            },
        }


def save_screenshot(
    state: ArenaState,
    accounts: dict[str, Account],
    path: str | os.PathLike,
    *,
    width: int = 160,
    height: int = 50,
    now: datetime | None = None,
    title: str = "The Agents Trading Arena",
) -> None:
    """The dashboard as it would look in a width x height terminal, saved as SVG (e.g. for the README)."""
    console = Console(
        width=width, height=height, record=True, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(render(state, accounts, width, height, now=now))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    console.save_svg(str(path), title=title)


def write_export(path: str | os.PathLike, data: dict) -> None:
    """Atomically replace `path` with `data` as JSON (a reader never sees half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, p)


# ---------------------------------------------------------------------------------------------- chart

# Braille cell: 2 dots wide, 4 high; bit for (column, row) within the cell.
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def _nice_bounds(lo: float, hi: float) -> tuple[float, float]:
    """Auto-range with padding; a flat line gets a visible band around it."""
    mid = (lo + hi) / 2
    half = max((hi - lo) / 2 * 1.15, abs(mid) * 0.0001, 1.0)
    return mid - half, mid + half


def _nice_step(span: float, ticks: int) -> float:
    """A round step (1, 2, 2.5 or 5 x 10^k) giving about `ticks` intervals over `span`."""
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag)


def value_chart(
    series: dict[str, list[tuple[float, float]]],
    width: int,
    height: int,
    *,
    start: datetime,
    end: datetime,
    baseline: float | None = INITIAL_CASH,
) -> Text:
    """Each agent's value (series of (UNIX seconds, value)) as a braille line against wall-clock time:
    y labels on the left, HH:MM:SS labels below. Exactly `height` lines of `width` cells. Later series
    draw over earlier ones."""
    values = [v for pts in series.values() for _, v in pts]
    lo, hi = _nice_bounds(min(values), max(values)) if values else _nice_bounds(INITIAL_CASH, INITIAL_CASH)
    plot_h = max(1, height - 1)
    dots_h = plot_h * 4
    y_scale = (dots_h - 1) / (hi - lo)
    # round-number ticks (1, 2, 2.5 or 5 x 10^k apart), each on the text row it falls in, none adjacent
    step = _nice_step(hi - lo, max(2, plot_h // 2))
    cents = step % 1 != 0
    labels: dict[int, str] = {}
    v = math.ceil(lo / step) * step
    while v <= hi:
        r = min(plot_h - 1, max(0, round((hi - v) * y_scale) // 4))
        if r not in labels and r - 1 not in labels and r + 1 not in labels:
            labels[r] = money(v, cents=cents)
        v += step
    if len(labels) < 2 and plot_h >= 3:  # a short chart: also label the edge row farthest from the tick
        r = plot_h - 1 if labels and min(labels) < plot_h / 2 else 0
        labels[r] = money(hi - (4 * r + 1.5) / (dots_h - 1) * (hi - lo), cents=hi - lo < 20)
    if not labels:
        labels[0] = money(hi, cents=True)
    label_w = max(len(s) for s in labels.values())
    plot_w = max(1, width - label_w - 2)
    dots_w = plot_w * 2
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + 1)
    x_scale = (dots_w - 1) / (t1 - t0)

    bits = [[0] * plot_w for _ in range(plot_h)]
    owner: list[list[str]] = [[""] * plot_w for _ in range(plot_h)]

    def plot(x: int, y: int, who: str) -> None:
        cx, cy = x >> 1, y >> 2
        bits[cy][cx] |= _BRAILLE_BITS[y & 3][x & 1]
        owner[cy][cx] = who

    for name, pts in series.items():
        # Samples that land in the same dot column become one vertical stroke (first, last, min, max),
        # so drawing costs the chart's width, not the run's length.
        columns: dict[int, list[int]] = {}
        x_max, y_max = dots_w - 1, dots_h - 1
        for t, v in pts:
            x = int((t - t0) * x_scale + 0.5)
            x = 0 if x < 0 else min(x, x_max)
            y = int((hi - v) * y_scale + 0.5)
            y = 0 if y < 0 else min(y, y_max)
            c = columns.get(x)
            if c is None:
                columns[x] = [y, y, y, y]
            else:
                c[1] = y
                if y < c[2]:
                    c[2] = y
                elif y > c[3]:
                    c[3] = y
        prev: tuple[int, int] | None = None
        for x in sorted(columns):
            first, last, top, bottom = columns[x]
            if prev is not None:  # join the samples: a line through time, not a scatter
                px, py = prev
                steps = max(x - px, abs(first - py), 1)
                for i in range(1, steps):
                    plot(round(px + (x - px) * i / steps), round(py + (first - py) * i / steps), name)
            for y in range(top, bottom + 1):
                plot(x, y, name)
            prev = (x, last)

    base_row = None
    if baseline is not None and lo <= baseline <= hi:
        base_row = min(dots_h - 1, max(0, round((hi - baseline) * y_scale))) // 4

    out = Text(no_wrap=True, overflow="crop")
    for r in range(plot_h):
        label = labels.get(r)
        out.append(label.rjust(label_w) + " ┤" if label else " " * label_w + " │", style="grey50")
        run, run_style = [], ""
        for c in range(plot_w):  # consecutive cells of one colour become one span
            b = bits[r][c]
            ch, st = (
                (chr(0x2800 + b), agent_color(owner[r][c])) if b else ("┈", "grey35") if r == base_row else (" ", "")
            )
            if st != run_style and run:
                out.append("".join(run), style=run_style)
                run = []
            run.append(ch)
            run_style = st
        out.append("".join(run), style=run_style)
        out.append("\n")
    # time axis: HH:MM:SS under the start, the end, and evenly in between where there is room
    axis = [" "] * (label_w + 2 + plot_w)
    n_labels = max(2, min(6, plot_w // 14 + 1))
    for i in range(n_labels):
        frac = i / (n_labels - 1)
        t = datetime.fromtimestamp(t0 + (t1 - t0) * frac, timezone.utc)
        s = hms(t)
        pos = label_w + 2 + round(frac * (plot_w - 1)) - len(s) // 2
        pos = min(max(pos, label_w + 2), len(axis) - len(s))
        if all(ch == " " for ch in axis[max(0, pos - 1) : pos + len(s) + 1]):
            axis[pos : pos + len(s)] = list(s)
    out.append("".join(axis), style="grey50")
    return out


# --------------------------------------------------------------------------------------------- screen


@dataclass
class _Frame:
    """One refresh's consistent view of the state."""

    state: ArenaState
    now: datetime
    standings: list[_Standing]  # agents and the baseline, best first
    health: Health
    compact: bool

    @property
    def agents(self) -> list[_Standing]:
        """The standings without the baseline: the contenders."""
        return [s for s in self.standings if not s.baseline]


def _title(text: str, note: str = "") -> Text:
    t = Text(text, style="bold bright_white")
    if note:
        t.append(f"  {note}", style="grey62")
    return t


def _section(
    f: _Frame, title: Text, body: Callable[[int, int], RenderableType], width: int, height: int
) -> RenderableType:
    """A titled box of exactly width x height; its body is built for the inner size. In compact mode
    the frame is a single title line (more rows for data on small terminals)."""
    if f.compact:
        line = Text(" ", style="on grey19") + title
        line.stylize("on grey19")
        line.truncate(width, overflow="ellipsis", pad=True)
        return Group(line, Fixed(body(width, height - 1), height - 1))
    inner_w, inner_h = width - 4, height - 2
    return Panel(
        body(inner_w, inner_h),  # a Panel of fixed height already cuts or pads its content
        title=title,
        title_align="left",
        box=box.ROUNDED,
        border_style="grey37",
        padding=(0, 1),
        width=width,
        height=height,
    )


def _empty(message: str) -> Text:
    return Text(message, style="grey50 italic")


def _market_columns(f: _Frame, rows: int) -> list[Column]:
    quotes = sorted(f.state.quotes.items())[: max(1, rows - 1)]
    ages, spreads_bps = [], []
    for _, q in quotes:
        age = q.age_s(f.now)
        if f.state.quote_is_stale(q, f.now):
            ages.append(Text(f"{ago(age)} STALE", style="bold red"))
        else:
            ages.append(Text(ago(age), style="green"))
        mid = (q.best_bid + q.best_ask) / 2 if q.spread is not None else None
        spreads_bps.append(f"{q.spread / mid * 1e4:.1f}bp" if mid else "n/a")
    return [
        Column("Product", [Text(pid, style="bold") for pid, _ in quotes], justify="left"),
        Column("Last", [price(q.price) for _, q in quotes], priority=2),
        Column("Bid", [price(q.best_bid) for _, q in quotes]),
        Column("Ask", [price(q.best_ask) for _, q in quotes]),
        Column("Spread", [price(q.spread) for _, q in quotes], priority=3),
        Column("bps", spreads_bps, priority=5),
        Column("Quote age", ages),
    ]


def _market_body(f: _Frame, width: int, rows: int) -> RenderableType:
    if not f.state.quotes:
        return _empty("waiting for the first market snapshot…")
    return fit_table(_market_columns(f, rows), width)


def _leaderboard_body(f: _Frame, width: int, rows: int) -> RenderableType:
    if not f.standings:
        return _empty(
            f"no agents yet: each appears with {money(INITIAL_CASH, cents=False)} on its first trade or decision"
        )
    shown = f.standings[: max(1, rows - 1)]
    more = len(f.standings) - len(shown)
    if more:
        shown = f.standings[: max(1, rows - 2)]
        more = len(f.standings) - len(shown)
    acts = [s.activity for s in shown]
    errors = []
    for s, a in zip(shown, acts):
        n = a.model_errors if a else 0
        errors.append(Text("" if s.baseline else str(n), style="bold magenta" if n else FLAT))
    names = [Text("buy-and-hold", style="italic") if s.baseline else agent_text(s.name) for s in shown]  # "#" says base
    cols = [
        Column("#", ["base" if s.baseline else str(s.rank) for s in shown], priority=0),
        Column("Agent", names, justify="left", flex=True, min_width=14),
        Column(
            "Value", [money(s.value) for s in shown], priority=0, short=[money(s.value, cents=False) for s in shown]
        ),
        Column("Return", [signed_pct(s.ret) for s in shown], priority=0),
        Column(
            "Cash",
            [money(s.account.cash) for s in shown],
            priority=4,
            short=[money(s.account.cash, cents=False) for s in shown],
        ),
        Column(
            "Realized",
            [signed_money(s.account.realized_pnl) for s in shown],
            priority=3,
            short=[signed_money(s.account.realized_pnl, cents=False) for s in shown],
        ),
        Column(
            "Unrealized",
            [signed_money(s.unrealized) for s in shown],
            priority=2,
            short=[signed_money(s.unrealized, cents=False) for s in shown],
        ),
        Column(
            "Fees",
            [money(-s.account.fees_paid) for s in shown],
            priority=5,
            short=[money(-s.account.fees_paid, cents=False) for s in shown],
        ),
        Column("Fills", [str(s.account.trades) for s in shown], priority=1),
        Column(
            "Rejected",
            [Text(str(s.account.rejected), style="bold red" if s.account.rejected else FLAT) for s in shown],
            priority=1,
        ),
        Column("Model err", errors, priority=1),
        Column(
            "Last reply",
            [ago((f.now - a.last_reply_at).total_seconds()) if a and a.last_reply_at else "—" for a in acts],
            priority=6,
        ),
    ]
    if f.state.metrics is not None:
        cols += [
            Column(header, [cell(s.metrics) for s in shown], priority=prio) for _, header, cell, prio in METRIC_COLUMNS
        ]
    if any(a.model_calls for a in f.state.activity.values()):
        inference = [
            Column(
                "Tokens",
                ["" if s.baseline else tokens_text(a.tokens if a else None) for s, a in zip(shown, acts)],
                priority=7,
            ),
            Column(
                "Model $",
                ["" if s.baseline else usd_cost(a.model_cost_usd if a else None) for s, a in zip(shown, acts)],
                priority=7,
            ),
            Column(
                "P&L/$",
                [
                    ""
                    if s.baseline
                    else per_dollar(return_per_dollar(s.value - INITIAL_CASH, a.model_cost_usd) if a else None)
                    for s, a in zip(shown, acts)
                ],
                priority=8,
            ),
        ]
        # Shown only where the rest fits uncondensed: dollars never lose their cents to make room for them.
        if table_width(cols + inference) <= width:
            cols += inference
    table = fit_table(cols, width)
    if any(s.baseline for s in shown):  # the benchmark row reads dim: a reference, not a contender
        lines = table.split("\n", allow_blank=True)
        for i, s in enumerate(shown, 1):
            if s.baseline:
                lines[i].stylize("dim")
        table = Text("\n", no_wrap=True, overflow="ellipsis").join(lines)
    if more:
        return Group(table, _empty(f"… {more} more agent{'s' * (more > 1)} (see the export)"))
    return table


def _positions_body(f: _Frame, width: int, rows: int) -> RenderableType:
    items = [(s.name, pid, p) for s in f.agents for pid, p in sorted(s.account.positions.items())]
    if not items:
        return _empty("no open positions (all cash)")
    shown = items[: max(1, rows - 1)]
    if len(shown) < len(items):
        shown = items[: max(1, rows - 2)]
    quotes = f.state.quotes
    held = [ago((f.now - p.opened_at).total_seconds()) if p.opened_at else "—" for _, _, p in shown]
    cols = [
        Column("Agent", [agent_text(n) for n, _, _ in shown], justify="left", flex=True, min_width=12),
        Column("Quantity", [qty(p.quantity, pid) for _, pid, p in shown], priority=0),
        Column("Avg cost", [price(p.avg_cost) for _, _, p in shown], priority=3),
        Column("Bid (mark)", [price(mark_price(quotes.get(pid))) for _, pid, _ in shown], priority=2),
        Column(
            "Value",
            [money(p.market_value(quotes.get(pid))) for _, pid, p in shown],
            priority=1,
            short=[money(p.market_value(quotes.get(pid)), cents=False) for _, pid, p in shown],
        ),
        Column("Unrealized", [signed_money(p.unrealized_pnl(quotes.get(pid))) for _, pid, p in shown], priority=0),
        Column("Held", held, priority=4),
    ]
    table = fit_table(cols, width)
    if len(shown) < len(items):
        return Group(table, _empty(f"… {len(items) - len(shown)} more"))
    return table


def _side(side: str) -> Text:
    return Text(side.upper(), style="bold green" if side == "buy" else "bold red")


def _fills_body(f: _Frame, width: int, rows: int) -> RenderableType:
    fills = list(f.state.fills)[-max(1, rows - 1) :][::-1]  # newest first
    if not fills:
        return _empty("no fills yet")
    cols = [
        Column("Time", [hms(t.executed_at) for t in fills], justify="left", priority=1),
        Column("Agent", [agent_text(t.agent) for t in fills], justify="left", flex=True, min_width=10),
        Column("Side", [_side(t.side) for t in fills], justify="left"),
        Column("Quantity", [qty(t.quantity, t.product_id) for t in fills]),
        Column("Price", [price(t.price) for t in fills], priority=0),
        Column("Notional", [money(t.notional) for t in fills], priority=4),
        Column("Fee", [money(t.fee) for t in fills], priority=3),
        Column("Latency", [f"{t.latency_ms:.0f}ms" if t.latency_ms is not None else "—" for t in fills], priority=2),
        Column("Quote age", [f"{t.quote_age_s:.1f}s" if t.quote_age_s is not None else "—" for t in fills], priority=5),
    ]
    return fit_table(cols, width)


_PROBLEM_STYLE = {"rejected": "bold red", "model error": "bold magenta", "timeout": "bold magenta"}


def _problems_body(f: _Frame, width: int, rows: int) -> RenderableType:
    probs = sorted(list(f.state.problems)[-max(1, rows - 1) :], key=lambda p: p.at, reverse=True)
    if not probs:
        return _empty("none so far")
    cols = [
        Column("Time", [hms(p.at) for p in probs], justify="left", priority=2),
        Column("Agent", [agent_text(p.agent) for p in probs], justify="left", priority=0),
        Column("What", [Text(p.kind.upper(), style=_PROBLEM_STYLE.get(p.kind, "bold")) for p in probs], justify="left"),
        Column("Order", [p.what for p in probs], justify="left", priority=1),
        Column("Reason", [Text(p.reason, style="red") for p in probs], justify="left", flex=True, min_width=12),
    ]
    return fit_table(cols, width)


def _activity_body(f: _Frame, width: int, rows: int) -> RenderableType:
    """Fills, rejections and model errors in one newest-first list (narrow screens)."""
    n = max(1, rows - 1)
    events: list[tuple[datetime, object]] = [(t.executed_at, t) for t in list(f.state.fills)[-n:]]
    events += [(p.at, p) for p in list(f.state.problems)[-n:]]
    events.sort(key=lambda e: e[0])
    events = events[-n:][::-1]
    if not events:
        return _empty("no trades yet")
    times, agents, whats, details, lat = [], [], [], [], []
    for at, e in events:
        times.append(hms(at))
        if isinstance(e, Trade):
            agents.append(agent_text(e.agent))
            whats.append(_side(e.side) + Text(f" {qty(e.quantity, e.product_id)}"))
            details.append(Text(f"@ {price(e.price)}  fee {money(e.fee)}"))
            lat.append(f"{e.latency_ms:.0f}ms" if e.latency_ms is not None else "—")
        else:
            assert isinstance(e, Problem)
            agents.append(agent_text(e.agent))
            whats.append(Text(e.kind.upper(), style=_PROBLEM_STYLE.get(e.kind, "bold")) + Text(f" {e.what}"))
            details.append(Text(e.reason, style="red"))
            lat.append("")
    cols = [
        Column("Time", times, justify="left", priority=3),
        Column("Agent", agents, justify="left"),
        Column("Trade", whats, justify="left"),
        Column("Price / reason", details, justify="left", flex=True, min_width=14),
        Column("Latency", lat, priority=2),
    ]
    return fit_table(cols, width)


def _chart_body(f: _Frame, width: int, rows: int) -> RenderableType:
    if not f.agents:
        return _empty("the chart starts with the first agent")
    now = f.now.timestamp()
    series = {s.name: f.state.history.epoch_series(s.name) + [(now, s.value)] for s in f.agents}  # right edge: now
    start = min(pts[0][0] for pts in series.values())
    end = max(now, start + 60)
    draw_order = dict(reversed([(s.name, series[s.name]) for s in f.agents]))  # leader drawn last, on top
    legend_rows = 1 if rows >= 8 else 0
    chart = value_chart(
        draw_order,
        width,
        rows - legend_rows,
        start=datetime.fromtimestamp(start, timezone.utc),
        end=datetime.fromtimestamp(end, timezone.utc),
    )
    if not legend_rows:
        return chart
    legend = Text(no_wrap=True, overflow="ellipsis")
    for with_return in (True, False):  # names only if the returns do not fit
        legend = Text(no_wrap=True, overflow="ellipsis")
        for s in f.agents:
            legend.append("━ ", style=agent_color(s.name))
            legend.append(f"{s.name} {pct(s.ret)}  " if with_return else f"{s.name}  ", style=agent_color(s.name))
        if legend.cell_len <= width:
            break
    return Group(chart, legend)


def _header(f: _Frame, width: int, lines: int) -> list[Text]:
    h = f.health
    marker = {
        "ok": ("● LIVE", "bold green"),
        "degraded": ("● DEGRADED", "bold black on yellow"),
        "down": ("● FEED DOWN", "bold white on red"),
        "waiting": ("○ WAITING", "bold yellow"),
    }[h.level]
    first = Text(no_wrap=True, overflow="ellipsis")
    first.append(f" {marker[0]} ", style=marker[1])
    if h.problems:
        first.append(
            "  " + " · ".join(h.problems), style="bold red" if h.level in ("down", "waiting") else "bold yellow"
        )
    state = f.state
    facts = [f"{f.now.strftime('%H:%M:%S')} UTC"]
    if h.feed_age_s is not None:
        facts.append(f"feed {ago(h.feed_age_s)} ago #{state.snapshot_seq}")
    facts.append(
        f"reply {ago((f.now - state.last_reply_at).total_seconds())} ago" if state.last_reply_at else "no reply yet"
    )
    facts.append(
        f"tool call {ago((f.now - state.last_tool_call_at).total_seconds())} ago"
        if state.last_tool_call_at
        else "no tool call yet"
    )
    facts.append(f"up {ago((f.now - state.started_at).total_seconds())}")
    first.append("   " + " · ".join(facts), style="grey70")
    first.truncate(width, overflow="ellipsis")
    out = [Text("The Agents Trading Arena  ", style="bold") + first] if width >= 120 else [first]
    out[0].truncate(width, overflow="ellipsis")
    if lines >= 2:
        fills = sum(s.account.trades for s in f.agents)
        rejected = sum(s.account.rejected for s in f.agents)
        errors = sum(s.activity.model_errors for s in f.agents if s.activity)
        second = Text(no_wrap=True, overflow="ellipsis")
        # what changes first (it must survive a narrow terminal), then the rules of the game
        second.append(f" {len(f.agents)} agents · {fills} fills · ", style="grey70")
        second.append(f"{rejected} rejected", style="bold red" if rejected else "grey70")
        second.append(" · ", style="grey70")
        second.append(f"{errors} model errors", style="bold magenta" if errors else "grey70")
        if state.processes:  # reported by a supervisor (arena demo)
            down = len(state.processes_down())
            second.append(f" · processes: {len(state.processes_up())} up", style="grey70")
            second.append(f", {down} down" if down else "", style="bold red")
        second.append(f" · Start {money(INITIAL_CASH, cents=False)} per agent", style="bold")
        second.append(" · positions marked at best bid · ", style="grey70")
        second.append(f"fee {state.fee_bps:g} bps", style="grey70")
        second.append(f" · quotes stale after {ago(state.max_quote_age_s)}", style="grey70")
        second.truncate(width, overflow="ellipsis")
        out.append(second)
    if lines >= 3 and state.limits:
        third = Text(no_wrap=True, overflow="ellipsis")
        third.append(" risk limits (the desk refuses an order past one): ", style="bold")
        third.append(state.limits, style="grey70")
        third.truncate(width, overflow="ellipsis")
        out.append(third)
    return out


def _footer(state: ArenaState, width: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis", style="grey62")
    t.append(" logs → ", style="grey50")
    t.append(state.log_path or "stderr (not redirected)", style="bold grey70")
    if state.export_path:
        t.append("   standings → ", style="grey50")
        t.append(state.export_path, style="bold grey70")
    t.append("   Ctrl-C quits", style="grey50")
    t.truncate(width, overflow="ellipsis")
    return t


@dataclass
class _Block:
    """A horizontal band of the screen: the allocator decides its height, then it is built."""

    name: str
    build: Callable[[int], RenderableType]
    h: int = 0


def _allocate(blocks: list[_Block], budget: int, plan: list[tuple[str, int]]) -> list[_Block]:
    """Walk the plan in order: a step (block, height) puts the block on screen at that height if it is
    not there yet and fits, or grows it towards that height with what is left. Blocks keep their screen
    order; a block that never fits is dropped whole (never squeezed into an empty frame)."""
    left = budget
    by_name = {b.name: b for b in blocks}
    for name, target in plan:
        b = by_name[name]
        if b.h == 0:
            if 0 < target <= left:
                b.h, left = target, left - target
        else:
            extra = min(left, max(0, target - b.h))
            b.h, left = b.h + extra, left - extra
    return [b for b in blocks if b.h > 0]


def _side_by_side(left: RenderableType, right: RenderableType, left_w: int, right_w: int) -> Table:
    grid = Table.grid(padding=0)
    grid.add_column(width=left_w, no_wrap=True)
    grid.add_column(width=right_w, no_wrap=True)
    grid.add_row(left, right)
    return grid


UNBOUNDED = 10**6


def render(
    state: ArenaState, accounts: dict[str, Account], width: int, height: int, *, now: datetime | None = None
) -> RenderableType:
    """The whole screen for a `width` x `height` terminal, exactly `height` lines. Small screens get
    compact sections and fewer columns; what does not fit is dropped by priority, never squeezed empty."""
    now = now or utcnow()
    width, height = max(40, width), max(10, height)
    with state._lock:
        f = _Frame(state, now, _standings(state, accounts), state.health(now), compact=height < 40)
        head = _header(f, width, 3 if height >= 40 else 2 if height >= 30 else 1)
        foot = _footer(state, width)
        budget = height - len(head) - 1
        frame_h = 1 if f.compact else 2  # rows a section spends on its frame
        n_quotes = max(1, len(state.quotes))
        n_agents = max(1, len(f.standings))
        n_positions = max(1, sum(len(s.account.positions) for s in f.agents))

        def sec(title: Text, body: Callable[[int, int], RenderableType], w: int) -> Callable[[int], RenderableType]:
            return lambda h: _section(f, title, body, w, h)

        market_title = _title("Market", f"quotes STALE after {ago(state.max_quote_age_s)}")
        board_title = _title(
            "Leaderboard",
            f"start {money(INITIAL_CASH, cents=False)} each · positions marked at best bid · fee {state.fee_bps:g} bps",
        )
        chart_title = _title(
            "Portfolio value", f"UTC · sampled every {ago(state.history.interval_s)} · marked at best bid"
        )
        market_h = frame_h + 1 + n_quotes
        board_min = frame_h + 1 + min(n_agents, 3)
        board_want = frame_h + 1 + n_agents
        chart_min = frame_h + 4  # three plot rows and the time axis

        if width >= 140:
            left_w = min(width - 64, max(84, round(width * 0.52)))
            right_w = width - left_w
            problems_title = _title("Rejections & model errors", "newest first")
            fills_title = _title("Recent fills", "newest first · latency = tool call → fill")
            pos_title = _title("Open positions", "marked at best bid")

            def market_row(h: int) -> RenderableType:
                # the market table is narrow: the rejections beside it get the rest (long reasons)
                market_w = min(left_w, max(table_width(_market_columns(f, h)), 48) + 4)
                return _side_by_side(
                    _section(f, market_title, lambda w, r: _market_body(f, w, r), market_w, h),
                    _section(f, problems_title, lambda w, r: _problems_body(f, w, r), width - market_w, h),
                    market_w,
                    width - market_w,
                )

            def lower_row(h: int) -> RenderableType:
                pos_want = frame_h + 1 + n_positions
                fills_min = frame_h + 3
                pos_h = min(pos_want, max(frame_h + 2, h // 2)) if h - fills_min >= frame_h + 2 else 0
                right = [_section(f, fills_title, lambda w, r: _fills_body(f, w, r), right_w, h - pos_h)]
                if pos_h:
                    right.append(_section(f, pos_title, lambda w, r: _positions_body(f, w, r), right_w, pos_h))
                return _side_by_side(
                    _section(f, chart_title, lambda w, r: _chart_body(f, w, r), left_w, h),
                    Group(*right),
                    left_w,
                    right_w,
                )

            blocks = [
                _Block("market", market_row),
                _Block("board", sec(board_title, lambda w, r: _leaderboard_body(f, w, r), width)),
                _Block("lower", lower_row),
            ]
            plan = [
                ("market", max(market_h, frame_h + 3)),
                ("board", board_min),
                ("lower", chart_min),
                ("board", board_want),
                ("market", max(market_h, frame_h + 5)),  # room for a few rejections beside the prices
                ("lower", UNBOUNDED),
            ]
        else:
            activity_title = _title("Recent trades", "fills, rejections (with reason), model errors · newest first")
            pos_title = _title("Open positions", "marked at best bid")
            blocks = [
                _Block("market", sec(market_title, lambda w, r: _market_body(f, w, r), width)),
                _Block("board", sec(board_title, lambda w, r: _leaderboard_body(f, w, r), width)),
                _Block("chart", sec(chart_title, lambda w, r: _chart_body(f, w, r), width)),
                _Block("activity", sec(activity_title, lambda w, r: _activity_body(f, w, r), width)),
                _Block("positions", sec(pos_title, lambda w, r: _positions_body(f, w, r), width)),
            ]
            activity_min = frame_h + 1 + 2
            plan = [
                ("market", market_h),
                ("board", board_min),
                ("activity", activity_min),
                ("chart", chart_min),
                ("board", board_want),
                ("activity", activity_min + 2),
                ("chart", max(chart_min, round(budget * 0.35))),
                ("positions", frame_h + 2),
                ("positions", frame_h + 1 + min(n_positions, 8)),
                ("activity", UNBOUNDED),
            ]
        chosen = _allocate(blocks, budget, plan)
        used = sum(b.h for b in chosen)
        parts: list[RenderableType] = [*head, *(b.build(b.h) for b in chosen)]
        if used < budget:
            parts.append(Fixed(Text(""), budget - used))
        parts.append(foot)
        return Fixed(Group(*parts), height)


def final_standings_table(
    state: ArenaState, accounts: dict[str, Account], *, now: datetime | None = None
) -> RenderableType:
    """The standings printed into the scrollback after the live screen closes: every agent and the
    baseline with their metrics, drawn like `arena report` draws the export (one leaderboard table), as
    many columns as the terminal width allows; then any process that died during the run."""
    now = now or utcnow()
    board = leaderboard(state, accounts, now=now)
    if not board["agents"]:
        return Text("No agent traded in this run.")
    title = Text.assemble(
        ("Final standings", "bold"),
        (
            f"  {now.strftime('%Y-%m-%d %H:%M:%S')} UTC · start {money(INITIAL_CASH, cents=False)} each · positions marked at best bid",
            "grey62",
        ),
    )
    parts: list[RenderableType] = [title, leaderboard_table([{**a["metrics"], **a} for a in board["agents"]])]
    with state._lock:
        down = state.processes_down()
    if down:
        parts.append(
            Text("Exited during the run: " + ", ".join(f"{p.name} ({exit_code(p)})" for p in down), style="bold red")
        )
    return Group(*parts)


# ----------------------------------------------------------------------------------------------- live


@contextlib.contextmanager
def logs_to_file(path: str) -> Iterator[None]:
    """While active, every log record and stray stderr write goes to `path` instead of the terminal;
    the original handlers come back afterwards."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    terminal_streams = {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    swapped: list[tuple[logging.Logger, logging.Handler, int]] = []
    for lg in loggers:
        for i, h in enumerate(list(lg.handlers)):
            if type(h) is logging.StreamHandler or (
                isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)
                and getattr(h, "stream", None) in terminal_streams
            ):
                swapped.append((lg, h, i))
                lg.handlers[i] = handler
    root = logging.getLogger()
    added_root = handler not in root.handlers
    if added_root:  # records reaching the root with no handler would go to stderr via lastResort
        root.addHandler(handler)
    try:
        with open(path, "a", encoding="utf-8", buffering=1) as stream, contextlib.redirect_stderr(stream):
            yield
    finally:
        for lg, h, i in swapped:
            if i < len(lg.handlers) and lg.handlers[i] is handler:
                lg.handlers[i] = h
            else:
                lg.addHandler(h)
        if added_root and handler in root.handlers:
            root.removeHandler(handler)
        handler.close()


class LiveDashboard:
    """The dashboard in the terminal's alternate screen, redrawn at a fixed cadence from the terminal's
    current size (so a resize re-lays out on the next frame). While it is up, logs go to the state's
    log file. On a non-terminal stdout nothing is drawn; the history and export still run."""

    def __init__(
        self,
        state: ArenaState,
        accounts: Callable[[], dict[str, Account]],
        *,
        console: Console | None = None,
        refresh_per_second: float = 2.0,  # capped at 4; the data changes every few seconds, so 2 looks live and costs half
        export_every_s: float = 5.0,
        print_final: bool = True,
    ):
        self.state = state
        self.accounts = accounts
        # Pin the real stdout: stderr/log redirection while live must not capture the screen itself.
        self.console = console or Console(file=sys.stdout)
        self.period = 1.0 / min(4.0, max(0.2, refresh_per_second))
        self.export_every_s = export_every_s
        self.print_final = print_final
        if state.log_path is None:
            state.log_path = os.path.join(tempfile.gettempdir(), f"arena-dashboard-{os.getpid()}.log")
        self.frames = 0
        self.tick_s = 0.0  # time spent sampling + rendering + drawing; tick_s / frames is the cost per frame

    def frame(self) -> RenderableType:
        """Sample the history and build one screen for the console's current size."""
        accounts = self.accounts()
        self.state.sample(accounts)
        size = self.console.size
        return render(self.state, accounts, size.width, size.height)

    def export(self) -> None:
        if self.state.export_path:
            try:
                write_export(self.state.export_path, leaderboard(self.state, self.accounts()))
            except OSError as e:
                log.warning("could not write the standings export %s: %s", self.state.export_path, e)

    async def run(self, stop: asyncio.Event) -> None:
        """Show the dashboard until `stop` is set (or the task is cancelled); then leave the alternate
        screen, restore logging, write the export and print the final standings."""
        loop = asyncio.get_running_loop()
        live_screen = self.console.is_terminal and not self.console.is_dumb_terminal
        next_export = loop.time() + self.export_every_s
        try:
            if live_screen:
                from rich.live import Live

                with (
                    logs_to_file(self.state.log_path),
                    Live(
                        console=self.console,
                        screen=True,
                        auto_refresh=False,
                        redirect_stdout=False,
                        redirect_stderr=False,
                    ) as live,
                    self._redraw_on_resize(lambda: live.update(self.frame(), refresh=True)),
                ):
                    await self._loop(stop, lambda: live.update(self.frame(), refresh=True), next_export)
            else:
                await self._loop(stop, lambda: self.state.sample(self.accounts()), next_export)
        finally:
            self.export()
            if self.print_final:
                self.console.print(self.final_standings())

    @contextlib.contextmanager
    def _redraw_on_resize(self, redraw: Callable[[], object]) -> Iterator[None]:
        """Redraw as soon as the terminal is resized (SIGWINCH) instead of at the next tick."""
        loop = asyncio.get_running_loop()
        sig = getattr(signal, "SIGWINCH", None)
        try:
            if sig is not None:
                loop.add_signal_handler(sig, redraw)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not Unix
            sig = None
        try:
            yield
        finally:
            if sig is not None:
                loop.remove_signal_handler(sig)

    async def _loop(self, stop: asyncio.Event, tick: Callable[[], object], next_export: float) -> None:
        loop = asyncio.get_running_loop()
        next_frame = loop.time()
        while not stop.is_set():
            started = time.perf_counter()
            tick()
            self.tick_s += time.perf_counter() - started
            self.frames += 1
            if loop.time() >= next_export:
                self.export()
                next_export = loop.time() + self.export_every_s
            next_frame += self.period
            if next_frame < loop.time():  # fell behind (slow render): keep the cadence, skip frames
                next_frame = loop.time() + self.period
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=next_frame - loop.time())

    def final_standings(self) -> RenderableType:
        parts: list[RenderableType] = [final_standings_table(self.state, self.accounts())]
        notes = Text(style="grey62")
        if self.state.export_path:
            notes.append("Standings exported to ")
            notes.append(str(self.state.export_path), style="bold")
            notes.append("\n")
        notes.append("Logs of this run: ")
        notes.append(str(self.state.log_path), style="bold")
        parts.append(notes)
        return Group(*parts)
