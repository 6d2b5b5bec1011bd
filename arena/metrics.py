"""Leaderboard metrics from the trade log and the price history, plus a buy-and-hold baseline.

Every definition lives in docs/METRICS.md; the docstrings here repeat the essentials. There is one
code path: `MetricsTracker` folds trades and price samples incrementally (O(new data) per event,
O(agents) per `metrics()` call), and the batch functions `compute()` / `value_series()` merely feed it
a recorded history in time order — so the live dashboard and `arena report` cannot disagree.

Money moves only through arena.portfolio.Account.apply (the tracker keeps its own fold of the log);
positions are marked at the best bid (arena.portfolio.mark_price), like Position.market_value.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Union

from pydantic import BaseModel

from arena.market import MarketSnapshot, Quote
from arena.portfolio import INITIAL_CASH, Account, Fill, Rejection, mark_price

BASELINE_NAME = "buy-and-hold (baseline)"
SECONDS_PER_YEAR = 365 * 24 * 3600  # crypto trades around the clock: no trading-day calendar
# Sharpe is shown from this many per-interval returns on; fewer say nothing (docs/METRICS.md).
MIN_SHARPE_RETURNS = 30

Mark = Union[Quote, float]
PriceSample = tuple[datetime, Mapping[str, Mark]]  # (time, product -> Quote or mark price)


class AgentMetrics(BaseModel):
    """One leaderboard row. Field names match the tools process's --export rows.

    None means "not defined (yet)": no samples for drawdown, fewer than 2 returns or zero variance for
    Sharpe, no closed round trip for win rate.
    """

    name: str
    baseline: bool = False  # True for the buy-and-hold benchmark row
    total_value: float  # cash + positions marked at the best bid
    return_pct: float  # (total_value / initial cash - 1) * 100
    cash: float
    realized_pnl: float  # closed quantity: net proceeds - average cost (fees on both legs included)
    unrealized_pnl: float  # open quantity: mark value - average cost (buy fees included)
    max_drawdown_pct: float | None = None  # largest peak-to-trough fall of the sampled value, % of the peak
    sharpe: float | None = None  # annualized, per-interval returns, risk-free rate 0
    win_rate: float | None = None  # % of round trips (sell fills) with realized P&L > 0
    round_trips: int = 0  # sell fills (each sell closes a round trip for the quantity it sells)
    wins: int = 0
    trades: int = 0  # fills
    rejected: int = 0
    fees: float = 0.0
    slippage: float = 0.0  # paid beyond the top of book by the impact model (inside cash and the P&Ls, like fees)
    exposure_pct: float | None = None  # positions' value / total value, now
    time_in_market_pct: float | None = None  # % of the agent's samples at which it held a position
    samples: int = 0  # value samples behind drawdown / Sharpe / time in market
    # Open positions valued at a notional price, product -> why: the quote it was marked at is stale, or
    # no price was ever seen (valued at its average cost). Empty: every mark is a live quote's bid.
    notional_marks: dict[str, str] = {}


def mark_of(m: Mark | None) -> float | None:
    """A sample's mark for one product: the best bid of a Quote (last price if no bid), or the number."""
    if m is None:
        return None
    if isinstance(m, Quote):
        return mark_price(m)
    return float(m)


def ask_of(m: Mark | None) -> float | None:
    """What a buy would pay: the best ask of a Quote (None for a stale one: the desk would refuse the
    trade); a bare number is taken as the price."""
    if m is None:
        return None
    if isinstance(m, Quote):
        return None if m.stale else m.best_ask
    return float(m)


class _Agent:
    """Running state for one agent: its account fold and O(1) summaries of its value series."""

    __slots__ = (
        "account",
        "round_trips",
        "wins",
        "samples",
        "first_t",
        "last_t",
        "last_value",
        "peak",
        "max_dd",
        "n_ret",
        "mean_ret",
        "m2_ret",
        "in_market",
        "series",
        "since",
        "pending",
    )

    def __init__(self, name: str, initial_cash: float, keep_series: bool):
        self.account = Account(agent=name, cash=initial_cash)
        self.round_trips = 0
        self.wins = 0
        self.samples = 0
        self.first_t: datetime | None = None
        self.last_t: datetime | None = None
        self.last_value = initial_cash
        self.peak = 0.0
        self.max_dd = 0.0
        self.n_ret = 0  # Welford running mean / M2 of per-interval returns
        self.mean_ret = 0.0
        self.m2_ret = 0.0
        self.in_market = 0
        self.series: list[tuple[datetime, float]] | None = [] if keep_series else None
        self.since: datetime | None = None  # samples of snapshots older than this are not its own
        self.pending: list[Fill | Rejection] = []  # outcomes stamped after the latest sample: they count from the next

    def settle(self, t: datetime | None) -> None:
        """Fold the pending trades stamped at or before `t` (all of them when t is None)."""
        if not self.pending:
            return
        due = [p for p in self.pending if t is None or p.executed_at <= t]
        self.pending = [p for p in self.pending if t is not None and p.executed_at > t]
        for trade in due:
            self.apply(trade)

    def now(self) -> _Agent:
        """This agent with its pending trades folded: the values of "now" (a copy when any are pending)."""
        if not self.pending:
            return self
        copy = _Agent(self.account.agent, 0.0, keep_series=False)
        copy.account = self.account.model_copy(deep=True)
        for name in set(self.__slots__) - {"account", "series", "pending"}:  # the running summaries
            setattr(copy, name, getattr(self, name))
        copy.pending = list(self.pending)
        copy.settle(None)
        return copy

    def apply(self, trade: Fill | Rejection) -> None:
        before = self.account.realized_pnl
        self.account.fold(trade)
        if isinstance(trade, Fill) and trade.side == "sell":
            self.round_trips += 1
            if self.account.realized_pnl - before > 0:
                self.wins += 1

    def positions_value(self, marks: Mapping[str, float]) -> float:
        return sum(p.quantity * marks.get(pid, p.avg_cost) for pid, p in self.account.positions.items())

    def sample(self, t: datetime, value: float, holding: bool) -> None:
        if self.samples:
            r = value / self.last_value - 1.0 if self.last_value > 0 else 0.0
            self.n_ret += 1
            delta = r - self.mean_ret
            self.mean_ret += delta / self.n_ret
            self.m2_ret += delta * (r - self.mean_ret)
        else:
            self.first_t = t
        self.samples += 1
        self.last_t, self.last_value = t, value
        self.peak = max(self.peak, value)
        if self.peak > 0:
            self.max_dd = max(self.max_dd, (self.peak - value) / self.peak)
        self.in_market += holding
        if self.series is not None:
            self.series.append((t, value))

    def sharpe(self, interval_s: float | None, min_returns: int) -> float | None:
        if self.n_ret < min_returns:
            return None
        std = math.sqrt(self.m2_ret / (self.n_ret - 1))  # sample standard deviation
        if std <= 1e-15 * max(1.0, abs(self.mean_ret)):
            return None  # zero variance: the ratio is undefined, not infinite
        if interval_s is None:  # mean spacing of this agent's samples
            interval_s = (self.last_t - self.first_t).total_seconds() / self.n_ret
        if interval_s <= 0:
            return None
        return self.mean_ret / std * math.sqrt(SECONDS_PER_YEAR / interval_s)


class MetricsTracker:
    """Incremental leaderboard metrics: feed it trades and market snapshots as they happen.

    - `on_trade(trade)`: every fill and rejection, in ledger order (at start-up, replay the ledger's
      log into it); a trade_id it has already seen is ignored.
    - `on_snapshot(snapshot)` / `on_prices(t, prices)`: updates the marks (best bid per product; a
      product missing from a sample keeps its last mark) and records one value sample per agent.
    - `metrics()`: one AgentMetrics per agent (plus the baseline), sorted best first.

    Each call costs O(agents x open positions), independent of history length (the series is not
    kept unless keep_series=True). Not thread-safe: call it under its owner's lock. An agent's series starts at the last sample before its first
    trade (worth the initial cash), i.e. at the snapshot it reacted to; trades between two samples
    show in the value series from the next sample on.

    The baseline (`baseline=True`) buys equal weights of every product with a fresh ask in the first
    sample that has any, at the ask, paying `fee_bps` like the agents, then holds.
    """

    def __init__(
        self,
        *,
        initial_cash: float = INITIAL_CASH,
        interval_s: float | None = None,
        fee_bps: float = 0.0,
        baseline: bool = True,
        keep_series: bool = False,
        min_sharpe_returns: int = MIN_SHARPE_RETURNS,
    ):
        if not (initial_cash > 0 and math.isfinite(initial_cash)):
            raise ValueError(f"initial_cash must be a positive number, got {initial_cash!r}")
        if interval_s is not None and not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
        if not (fee_bps >= 0 and math.isfinite(fee_bps)):
            raise ValueError(f"fee_bps must be >= 0, got {fee_bps!r}")
        self.initial_cash = initial_cash
        self.interval_s = interval_s
        self.fee_bps = fee_bps
        self.keep_series = keep_series
        self.min_sharpe_returns = max(2, min_sharpe_returns)
        self.marks: dict[str, float] = {}
        self.stale: set[str] = set()  # products whose latest mark came from a quote marked stale
        self._agents: dict[str, _Agent] = {}
        self._seen: set[tuple[str, str]] = set()  # (agent, trade_id) folded so far
        self._baseline_pending = baseline
        # The latest sample times, newest last: an agent whose first call reacted to a snapshot sampled
        # before the call arrived starts from that sample (calls arrive within seconds; 256 is plenty).
        self._sample_times: deque[datetime] = deque(maxlen=256)

    # -- events ---------------------------------------------------------------------------------

    def on_agent(self, name: str, reacted_to: datetime | None = None) -> None:
        """An account opened without a trade yet (e.g. its first call was get_portfolio).

        reacted_to: the publication time of the snapshot the agent was deciding on when it called.
        Its series then starts exactly at that snapshot's sample, whether this tracker has taken it
        yet or not (the call and the snapshot reach the tools process by different paths, in either
        order). Without it, the agent is taken to have reacted to the latest sample."""
        if name in self._agents:
            return
        agent = self._agents[name] = _Agent(name, self.initial_cash, self.keep_series)
        if reacted_to is None:
            if self._sample_times:
                agent.sample(self._sample_times[-1], self.initial_cash, False)
            return
        agent.since = reacted_to
        for t in self._sample_times:  # taken already: still all cash then, having traded nothing
            if t >= reacted_to:
                agent.sample(t, self.initial_cash, False)

    def on_trade(self, trade: Fill | Rejection) -> None:
        """One logged trade (fill or rejection). An (agent, trade_id) seen before (trade_id is the ledger's
        idempotency key: a redelivery, or a replay overlapping the live feed) is ignored."""
        key = (trade.agent, trade.trade_id)
        if key in self._seen:
            return
        self._seen.add(key)
        self.on_agent(trade.agent)
        agent = self._agents[trade.agent]
        if self._sample_times and trade.executed_at > self._sample_times[-1]:
            agent.pending.append(trade)  # one rule, live or replayed: a trade counts from the next sample
        else:
            agent.apply(trade)

    def on_snapshot(self, snapshot: MarketSnapshot, *, sample: bool = True) -> None:
        self.on_prices(snapshot.published_at, snapshot.quotes, sample=sample)

    def on_prices(self, t: datetime, prices: Mapping[str, Mark], *, sample: bool = True) -> None:
        """A price sample. sample=False only updates the marks: for prices from before this tracker's
        time (e.g. the last snapshot left on the topic by an earlier run), which value positions but
        are neither a value sample nor the baseline's entry."""
        for pid, m in prices.items():
            mark = mark_of(m)
            if mark is not None and math.isfinite(mark) and mark > 0:
                self.marks[pid] = mark
                if isinstance(m, Quote) and m.stale:
                    self.stale.add(pid)
                else:
                    self.stale.discard(pid)
        if not sample:
            return
        self._sample_times.append(t)
        for agent in self._agents.values():
            if agent.since is not None and t < agent.since:
                continue  # a snapshot from before the one it first reacted to
            agent.settle(t)
            held = agent.positions_value(self.marks)
            agent.sample(t, agent.account.cash + held, held > 0)
        if self._baseline_pending:
            self._start_baseline(t, prices)

    def _start_baseline(self, t: datetime, prices: Mapping[str, Mark]) -> None:
        asks = {
            pid: a for pid, m in sorted(prices.items()) if (a := ask_of(m)) is not None and math.isfinite(a) and a > 0
        }
        if not asks:
            return  # no quotes yet: the arena has not started
        self._baseline_pending = False
        agent = self._agents[BASELINE_NAME] = _Agent(BASELINE_NAME, self.initial_cash, self.keep_series)
        agent.sample(t, self.initial_cash, False)  # it buys in reaction to this snapshot, like an agent
        fee_rate = self.fee_bps / 10_000
        budget = self.initial_cash / len(asks)
        for pid, ask in asks.items():
            qty = budget / (ask * (1 + fee_rate))  # spends exactly the budget, fee included
            # Not validated: its name is no agent name on purpose (no agent can trade as the baseline).
            agent.apply(
                Fill.model_construct(
                    trade_id=f"baseline:{pid}",
                    agent=BASELINE_NAME,
                    product_id=pid,
                    side="buy",
                    quantity=qty,
                    price=ask,
                    fee=qty * ask * fee_rate,
                    executed_at=t,
                )
            )

    # -- results --------------------------------------------------------------------------------

    def accounts(self) -> dict[str, Account]:
        """The tracker's own fold of the log (identical to arena.portfolio.replay), baseline included."""
        return {name: a.now().account for name, a in self._agents.items()}

    def series(self) -> dict[str, list[tuple[datetime, float]]]:
        """Each agent's sampled value series (needs keep_series=True)."""
        if not self.keep_series:
            raise RuntimeError("MetricsTracker(keep_series=True) is needed to keep value series")
        return {name: list(a.series or []) for name, a in self._agents.items()}

    def metrics(self, marks: Mapping[str, float] | None = None) -> dict[str, AgentMetrics]:
        """Every agent's metrics now, best total value first (the baseline among them, flagged).

        `marks` overrides the latest sample's marks for valuing positions now (e.g. a report's
        --prices); drawdown, Sharpe and time in market stay on the sampled series.
        """
        now = {**self.marks, **(marks or {})}
        rows = sorted(
            (self._row(a, now, set(marks or ())) for a in self._agents.values()),
            key=lambda m: m.total_value,
            reverse=True,
        )
        return {m.name: m for m in rows}

    def metrics_for(self, name: str) -> AgentMetrics | None:
        """One agent's metrics now (None if it has no account yet)."""
        agent = self._agents.get(name)
        return self._row(agent, self.marks) if agent else None

    def _row(self, a: _Agent, marks: Mapping[str, float], given: set[str] = frozenset()) -> AgentMetrics:
        """given: products whose mark the caller chose (metrics(marks=...)): not flagged stale here."""
        a = a.now()
        acc = a.account
        notional = {}
        for pid in sorted(acc.positions):
            if pid not in marks:
                notional[pid] = "no price seen: valued at its average cost"
            elif pid in self.stale and pid not in given:
                notional[pid] = "marked at a stale quote's bid"
        held = a.positions_value(marks)
        total = acc.cash + held
        cost = sum(p.quantity * p.avg_cost for p in acc.positions.values())
        return AgentMetrics(
            name=acc.agent,
            baseline=acc.agent == BASELINE_NAME,
            total_value=total,
            return_pct=(total / self.initial_cash - 1.0) * 100.0,
            cash=acc.cash,
            realized_pnl=acc.realized_pnl,
            unrealized_pnl=held - cost,
            max_drawdown_pct=a.max_dd * 100.0 if a.samples else None,
            sharpe=a.sharpe(self.interval_s, self.min_sharpe_returns),
            win_rate=a.wins / a.round_trips * 100.0 if a.round_trips else None,
            round_trips=a.round_trips,
            wins=a.wins,
            trades=acc.trades,
            rejected=acc.rejected,
            fees=acc.fees_paid,
            slippage=acc.slippage_paid,
            exposure_pct=held / total * 100.0 if total > 0 else None,
            time_in_market_pct=a.in_market / a.samples * 100.0 if a.samples else None,
            samples=a.samples,
            notional_marks=notional,
        )


def _replay(
    tracker: MetricsTracker, trades: Iterable[Fill | Rejection], price_history: Iterable[PriceSample | MarketSnapshot]
) -> MetricsTracker:
    """Feed a recorded history in time order: trades stamped at or before a sample count in it."""
    samples = sorted((_as_sample(s) for s in price_history), key=lambda s: s[0])
    pending = list(trades)  # ledger order is authoritative; executed_at only places trades between samples
    i = 0
    for t, prices in samples:
        while i < len(pending) and pending[i].executed_at <= t:
            tracker.on_trade(pending[i])
            i += 1
        tracker.on_prices(t, prices)
    for trade in pending[i:]:
        tracker.on_trade(trade)
    return tracker


def _as_sample(s: PriceSample | MarketSnapshot) -> PriceSample:
    return (s.published_at, s.quotes) if isinstance(s, MarketSnapshot) else s


def compute(
    trades: Sequence[Fill | Rejection],
    price_history: Iterable[PriceSample | MarketSnapshot],
    *,
    initial_cash: float = INITIAL_CASH,
    interval_s: float | None = None,
    fee_bps: float = 0.0,
    baseline: bool = True,
    marks: Mapping[str, float] | None = None,
    agents: Iterable[str] | Mapping[str, datetime | None] = (),
    min_sharpe_returns: int = MIN_SHARPE_RETURNS,
) -> dict[str, AgentMetrics]:
    """Metrics of every agent (and the baseline) from a trade log and a price history.

    price_history: (time, {product: Quote or mark price}) samples or MarketSnapshots. interval_s:
    the sampling interval for annualizing Sharpe; None = the mean spacing of each agent's samples.
    marks: prices that value open positions now, overriding the last sample's (see MetricsTracker).
    agents: accounts to list even without a trade, or a mapping name -> the publication time of the
    snapshot its first call reacted to (its series starts there, as the live tracker's does; None:
    from the sample before its first trade, or the first sample).
    """
    tracker = MetricsTracker(
        initial_cash=initial_cash,
        interval_s=interval_s,
        fee_bps=fee_bps,
        baseline=baseline,
        min_sharpe_returns=min_sharpe_returns,
    )
    traded = {t.agent for t in trades}
    reacted = agents if isinstance(agents, Mapping) else dict.fromkeys(agents)
    for name, reacted_to in reacted.items():
        if reacted_to is not None:
            tracker.on_agent(name, reacted_to)
        elif name not in traded:  # the others start at the sample before their first trade
            tracker.on_agent(name)
    return _replay(tracker, trades, price_history).metrics(marks)


def value_series(
    trades: Sequence[Fill | Rejection],
    price_history: Iterable[PriceSample | MarketSnapshot],
    initial_cash: float = INITIAL_CASH,
    *,
    fee_bps: float = 0.0,
    baseline: bool = True,
) -> dict[str, list[tuple[datetime, float]]]:
    """Each agent's total value at every price sample from the one before its first trade on."""
    tracker = MetricsTracker(initial_cash=initial_cash, fee_bps=fee_bps, baseline=baseline, keep_series=True)
    return _replay(tracker, trades, price_history).series()
