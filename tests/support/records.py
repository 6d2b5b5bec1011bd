"""Records as the arena's processes publish them (snapshots, fills and rejections, decisions with token usage) and the
tools process's dashboard state built from them, for the dashboard, token and web tests."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pytest

from arena.dashboard import ArenaState
from arena.decisions import Decision
from arena.market import MarketSnapshot, Quote
from arena.metrics import MetricsTracker
from arena.portfolio import Fill, Rejection, replay

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)


def quote(pid: str, bid: float, ask: float, *, price: float | None = None, at: datetime | None = None, **kw) -> Quote:
    """A quote at (bid, ask); its last price the bid unless `price`, received `at` (now unless given)."""
    at = at or datetime.now(timezone.utc)
    return Quote(
        product_id=pid, price=bid if price is None else price, best_bid=bid, best_ask=ask, received_at=at, **kw
    )


def snap(
    seq: int, btc: float = 95_000.0, sol: float = 180.0, at: datetime | None = None, stale: bool = False
) -> MarketSnapshot:
    at = at or T0 + timedelta(seconds=10 * seq)
    return MarketSnapshot(
        seq=seq,
        published_at=at,
        quotes={
            "BTC-USD": quote("BTC-USD", btc - 5, btc + 5, price=btc, at=at),
            "SOL-USD": quote("SOL-USD", sol - 0.05, sol + 0.05, price=sol, at=at, stale=stale),
        },
    )


def fill(
    n: int,
    agent: str,
    side: str = "buy",
    qty: float = 0.1,
    price: float = 95_005.0,
    *,
    fee: float | None = None,
    at: datetime | None = None,
    trade_id: str | None = None,
    product_id: str = "BTC-USD",
    **kw,
) -> Fill:
    """A fill 1 s after snapshot n (unless `at`), its fee 0.1 % of the notional (unless `fee`)."""
    return Fill(
        trade_id=trade_id or f"{agent}|run|{n}",
        agent=agent,
        product_id=product_id,
        side=side,
        quantity=qty,
        price=price,
        fee=round(qty * price * 0.001, 2) if fee is None else fee,
        executed_at=at or T0 + timedelta(seconds=10 * n + 1),
        **{"latency_ms": 1.5, **kw},
    )


def rejection(
    n: int, agent: str, reason: str = "insufficient cash", qty: float = 5.0, *, at: datetime | None = None, **kw
) -> Rejection:
    """A refused order (a buy of BTC-USD unless `side`/`product_id` say otherwise) 1 s after snapshot n."""
    return Rejection(
        **{"trade_id": f"{agent}|run|{n}", "product_id": "BTC-USD", "side": "buy", "latency_ms": 1.5, **kw},
        agent=agent,
        quantity=qty,
        status="rejected",
        reason=reason,
        executed_at=at or T0 + timedelta(seconds=10 * n + 1),
    )


def tools_state() -> tuple[ArenaState, dict]:
    """The tools process's dashboard state after two snapshots and three trades (one rejected)."""
    st = ArenaState(max_quote_age_s=30, fee_bps=10, metrics=MetricsTracker(fee_bps=10))
    trades = [
        fill(1, "alice"),
        fill(2, "bob", qty=0.2),
        rejection(3, "bob", qty=0.1),
    ]
    st.on_snapshot(snap(1), now=T0 + timedelta(seconds=10))
    for t in trades:
        st.on_trade(t)
    st.on_snapshot(snap(2, btc=96_000.0), now=T0 + timedelta(seconds=20))
    accounts = replay(trades)
    st.sample(accounts, now=T0 + timedelta(seconds=20))
    st.on_snapshot(snap(3, btc=96_500.0), now=T0 + timedelta(seconds=30))  # the values moved since the sample
    return st, accounts


def turn(
    agent: str,
    status: str,
    calls: int,
    tokens_in: int,
    tokens_out: int,
    cost_usd: float | None,
    *,
    at: datetime,
    tick_seq: int = 1,
    **kw,
) -> Decision:
    """A router's finished turn (or its start) with the usage of its model calls."""
    usage = {"model_calls": calls, "tokens_in": tokens_in, "tokens_out": tokens_out, "cost_usd": cost_usd}
    times = {"tick_published_at": at, "finished_at": at}
    return Decision(agent=agent, run_id=f"u{tokens_in}", tick_seq=tick_seq, status=status, **times, **usage, **kw)


def chromium(p):
    """Debian's chromium through playwright (`p`: sync_playwright()); a failure, not a skip, without it."""
    try:
        return p.chromium.launch(executable_path=CHROMIUM)
    except Exception as exc:  # CI installs it (.ci/run); say so rather than skip
        pytest.fail(f"cannot start Debian's chromium at {CHROMIUM} (apt-get install chromium): {exc}")
