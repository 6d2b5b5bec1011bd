"""dashboard: the live dashboard's rendering cost, milliseconds per frame (layout + drawing) for a long
run's state. (Wall times suffer when the machine is busy; the CPU time per frame is the steadier figure.)

    uv run python -m bench dashboard [--agents 10] [--minutes 40] [--frames 40] [--svg assets/dashboard.svg]

Builds a synthetic but realistic state (random-walk prices, agents trading, a few rejections and model
timeouts, one product gone stale, a full chart history) and draws it at 80x24, 160x50 and 240x70 the
way the live view does, into a rich console writing terminal escapes. --svg also saves a 160x50
screenshot of that state (the README picture until a real demo run replaces it).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
from datetime import datetime, timedelta, timezone

from rich.console import Console

from arena.dashboard import ArenaState, leaderboard, render, save_screenshot
from arena.decisions import Decision
from arena.market import MarketSnapshot, Quote
from arena.metrics import MetricsTracker
from arena.portfolio import Account, Fill, Rejection
from bench.harness import Report, dist_ms

NAMES = [
    "momentum-gpt",
    "scalper-llama",
    "brainrot-qwen",
    "default-gpt",
    "contrarian",
    "breakout",
    "vwap",
    "pairs",
    "news",
    "random-walk",
]


def synthetic_arena(
    n_agents: int, minutes: int, seed: int = 7, metrics: bool = True
) -> tuple[ArenaState, dict[str, Account], datetime]:
    rnd = random.Random(seed)
    start = datetime(2026, 11, 25, 14, 0, 0, tzinfo=timezone.utc)
    st = ArenaState(max_quote_age_s=30, fee_bps=10, log_path="runs/tools.log", export_path="runs/standings.json",
                    metrics=MetricsTracker(fee_bps=10) if metrics else None)  # fmt: skip
    st.started_at = start
    names = (NAMES + [f"agent-{i}" for i in range(len(NAMES), n_agents)])[:n_agents]
    prices = {"BTC-USD": 97_000.0, "SOL-USD": 236.0, "FARTCOIN-USD": 1.42}
    accounts: dict[str, Account] = {}
    now = start
    for step in range(minutes * 12):  # a snapshot every 5 s
        now = start + timedelta(seconds=5 * step)
        quotes = {}
        for p, last in prices.items():
            px = prices[p] = last * (1 + rnd.gauss(0, 0.0012))
            half = px * (0.00004 if p == "BTC-USD" else 0.0004)
            quotes[p] = Quote(product_id=p, price=px, best_bid=px - half, best_ask=px + half,
                              received_at=now - timedelta(seconds=rnd.random() * 2))  # fmt: skip
        st.on_snapshot(MarketSnapshot(seq=step + 1, published_at=now, quotes=quotes), now=now)
        for n in names:
            if rnd.random() < 0.05:
                st.on_decision(Decision(agent=n, run_id=f"r{step}", tick_seq=step + 1, tick_published_at=now, status="done",
                                        started_at=now, finished_at=now + timedelta(seconds=2)), now=now)  # fmt: skip
                st.on_tool_call(n, "get_portfolio", now=now)
            if rnd.random() < 0.03:
                p = rnd.choice(list(prices))
                q = quotes[p]
                acc = accounts.setdefault(n, Account(agent=n))
                held = acc.positions[p].quantity if p in acc.positions else 0.0
                side = "sell" if held and rnd.random() < 0.5 else "buy"
                qty = (
                    round(rnd.choice([2000, 5000, 10000]) / q.price, 6)
                    if side == "buy"
                    else held * rnd.choice([0.5, 1.0])
                )
                px = q.best_ask if side == "buy" else q.best_bid
                t = Fill(trade_id=f"t{step}-{n}", agent=n, product_id=p, side=side, quantity=qty, price=px, fee=qty * px * 0.001,
                          executed_at=now, latency_ms=rnd.uniform(3, 40), quote_age_s=rnd.uniform(0.1, 2))  # fmt: skip
                acc.apply(t)
                st.on_trade(t)
                st.on_tool_call(n, "execute_trade", now=now)
            if rnd.random() < 0.004:
                no = Rejection(trade_id=f"r{step}-{n}", agent=n, product_id="BTC-USD", side="buy", quantity=5.0, status="rejected",
                               reason="insufficient cash: need $485,120.00, have $61,204.18", executed_at=now)  # fmt: skip
                accounts.setdefault(n, Account(agent=n)).fold(no)
                st.on_trade(no)
            if rnd.random() < 0.002:
                st.on_decision(Decision(agent=n, run_id=f"x{step}", tick_seq=step + 1, tick_published_at=now, status="timeout",
                                        reason="model did not answer within 60s", started_at=now,
                                        finished_at=now + timedelta(seconds=60)), now=now)  # fmt: skip
        st.sample(accounts, now=now)
    # the feed stopped updating one product 95 s ago: the screen must say so
    st.quotes["FARTCOIN-USD"] = st.quotes["FARTCOIN-USD"].model_copy(
        update={"received_at": now - timedelta(seconds=95)}
    )
    return st, accounts, now


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, default=10, help="agents in the arena (default %(default)s)")
    p.add_argument(
        "--minutes", type=int, default=40, help="minutes of history, one snapshot per 5 s (default %(default)s)"
    )
    p.add_argument("--frames", type=int, default=40, help="frames drawn per size (default %(default)s)")
    p.add_argument("--svg", default=None, help="also save a 160x50 screenshot (4 agents) as SVG here")
    p.add_argument("--seed", type=int, default=6, help="random seed of the synthetic market (default %(default)s)")
    p.add_argument(
        "--no-metrics", action="store_true", help="without the metrics tracker (leaderboard metrics and baseline)"
    )


async def run(args: argparse.Namespace, report: Report) -> int:
    st, accounts, now = synthetic_arena(args.agents, args.minutes, args.seed, metrics=not args.no_metrics)
    report.line(f"{len(accounts)} agents, {len(st.fills)} recent fills, {len(st.history.points)} chart samples")
    results: dict = {"sizes": {}}
    for width, height in [(80, 24), (160, 50), (240, 70)]:
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor")
        build, draw = [], []
        cpu0 = time.process_time()
        for _ in range(args.frames):
            t0 = time.perf_counter()
            frame = render(st, accounts, width, height, now=now)
            t1 = time.perf_counter()
            console.print(frame)
            build.append(t1 - t0)
            draw.append(time.perf_counter() - t1)
            console.file = io.StringIO()
        cpu = (time.process_time() - cpu0) / args.frames
        total = [b + d for b, d in zip(build, draw)]
        results["sizes"][f"{width}x{height}"] = {"frame_ms": dist_ms(total), "cpu_ms_per_frame": round(cpu * 1e3, 2),
                                                 "layout_ms_p50": round(statistics.median(build) * 1e3, 2),
                                                 "draw_ms_p50": round(statistics.median(draw) * 1e3, 2)}  # fmt: skip
        report.line(f"{width:>3}x{height:<3} render {statistics.median(total) * 1e3:5.1f} ms/frame median "
                    f"(layout {statistics.median(build) * 1e3:.1f} + draw {statistics.median(draw) * 1e3:.1f}), "
                    f"p95 {sorted(total)[int(0.95 * len(total)) - 1] * 1e3:.1f} ms; CPU {cpu * 1e3:.1f} ms/frame")  # fmt: skip
    t0 = time.perf_counter()
    for _ in range(args.frames):
        leaderboard(st, accounts, now=now)
    results["leaderboard_export_ms"] = round((time.perf_counter() - t0) / args.frames * 1e3, 2)
    report.line(f"leaderboard() export {results['leaderboard_export_ms']:.1f} ms")
    if args.svg:
        st4, acc4, now4 = synthetic_arena(4, args.minutes, args.seed)
        save_screenshot(st4, acc4, args.svg, width=160, height=50, now=now4, title="python tools_and_dashboard.py")
        report.line(f"screenshot saved to {args.svg}")
    report.emit(results)
    return 0
