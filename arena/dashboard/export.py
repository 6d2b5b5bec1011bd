"""The standings as JSON-ready data: the dashboard's export file and final record."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from arena.dashboard.state import AgentActivity, ArenaState, return_per_dollar
from arena.leaderboard import ROW_KEYS
from arena.market import utcnow
from arena.metrics import BASELINE_NAME, AgentMetrics
from arena.portfolio import INITIAL_CASH, Account, mark_price


@dataclass
class Standing:
    name: str
    account: Account
    value: float
    ret: float
    unrealized: float
    activity: AgentActivity | None
    metrics: dict = field(default_factory=dict)
    baseline: bool = False  # the buy-and-hold benchmark: shown, never ranked
    rank: int | None = None


def standings(state: ArenaState, accounts: dict[str, Account]) -> list[Standing]:
    """Agents (and the baseline, if the metrics tracker has one) by total value, best first; agents are
    ranked 1..n, the baseline is not. Every value is marked at the best bid of the state's quotes."""
    everyone = state._accounts(accounts)
    base = state.tracker.accounts().get(BASELINE_NAME) if state.tracker is not None else None
    if base is not None:  # (no agent can have its name: agent names have no spaces)
        everyone[BASELINE_NAME] = base
    q = state.quotes
    rows = []
    for name, acc in everyone.items():
        rows.append(Standing(name, acc, acc.total_value(q), acc.return_pct(q), acc.unrealized_pnl(q), state.activity.get(name),
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


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def leaderboard(state: ArenaState, accounts: dict[str, Account], *, now: datetime | None = None) -> dict:
    """The standings as JSON-ready data (the dashboard's export and final record)."""
    now = now or utcnow()
    with state._lock:
        rows = standings(state, accounts)
        health = state.health(now)
        agents = []
        for s in rows:
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
                    "slippage": s.account.slippage_paid,
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
                    "metrics": {k: v for k, v in s.metrics.items() if k not in ROW_KEYS},
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
            "impact_bps_per_top_size": state.impact_bps,
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


def write_export(path: str | os.PathLike, data: dict) -> None:
    """Atomically replace `path` with `data` as JSON (a reader never sees half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, p)
