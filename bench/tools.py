"""tools: the round trip router -> tool -> result through the real tools process (tools_and_dashboard.py,
with the dashboard off, then on in a pseudo-terminal), and the ledger's sustained trades/s.

Round trip: a Router (arena.router, the code deploy_router_node.py runs, here in the benchmark process)
whose model is an instant in-process script: get_portfolio, then execute_trade (buying, then selling,
one FARTCOIN), then a closing text. The model notes when it hands a tool call to calfkit and when the
result comes back as its next input: that difference is the tool round trip (router -> tools process
-> router, two broker hops plus calfkit's dispatch and the tool itself). Turns run one at a time.

Ledger: Desk.execute_trade (quote lookup, validation, idempotency check, one SQLite commit per fill)
in a loop, WAL with synchronous=NORMAL (the default: survives the process being killed) and FULL
(an fsync per trade: survives power loss).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from arena.config import MARKET_TOPIC
from bench.harness import Arena, Report, add_tuning_args, dist_ms, fmt_dist, snapshot, target, tuning_of
from bench.tuned import apply_tuning


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--turns",
        type=int,
        default=100,
        help="turns timed per mode, each one get_portfolio and one execute_trade (default %(default)s)",
    )
    p.add_argument("--trades", type=int, default=5000, help="fills for the ledger throughput (default %(default)s)")
    p.add_argument("--modes", default="headless,dashboard", help="tools process modes to measure (default %(default)s)")
    add_tuning_args(p)


def timing_model(marks: dict[str, list[float]], step: list[int]):
    """An instant model that records each tool call's hand-off and the arrival of its result."""
    from calfkit.providers.pydantic_ai.model_client import PydanticModelClient

    from arena.compat.vendored_pydantic_ai import ModelResponse, TextPart, ToolCallPart, ToolReturnPart, function_model

    FunctionModel, _ = function_model()

    sent: dict[str, tuple[str, float]] = {}

    def respond(messages, info) -> ModelResponse:
        now = time.perf_counter()
        returns = [p for p in getattr(messages[-1], "parts", []) if isinstance(p, ToolReturnPart)]
        for p in returns:
            if p.tool_call_id in sent:
                tool, t0 = sent.pop(p.tool_call_id)
                marks.setdefault(tool, []).append(now - t0)
        names = {p.tool_name for p in returns}
        if not returns:
            call = ToolCallPart(tool_name="get_portfolio", args={}, tool_call_id=f"p{step[0]}")
        elif "get_portfolio" in names:
            side = "buy" if step[0] % 2 == 0 else "sell"
            call = ToolCallPart(tool_name="execute_trade", args={"product_id": "FARTCOIN-USD", "side": side, "quantity": 1},
                                tool_call_id=f"t{step[0]}")  # fmt: skip
        else:
            return ModelResponse(parts=[TextPart("done")])
        sent[call.tool_call_id] = (call.tool_name, time.perf_counter())
        return ModelResponse(parts=[call])

    class TimingModel(FunctionModel, PydanticModelClient):
        def __init__(self) -> None:
            super().__init__(respond, model_name="timing")

    return TimingModel()


async def round_trips(arena: Arena, report: Report, turns: int) -> dict:
    from arena import kafka as k
    from arena.router import Router

    marks: dict[str, list[float]] = {}
    step = [0]
    done = asyncio.Event()

    def on_decision(d) -> None:
        if d.status in ("done", "error", "timeout"):
            if d.status != "done":
                report.log(f"turn {d.tick_seq}: {d.status} {d.reason}")
            done.set()

    router = Router(name=f"rt_{arena.run}", system_prompt="bench", model_client=timing_model(marks, step), kafka=arena.kafka,
                    on_decision=on_decision)  # fmt: skip
    await router.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(router.run(stop))
    prod = k.producer(arena.kafka)
    await prod.start()
    try:
        for i in range(turns + 3):
            if i == 3:  # the first turns warm up lazy imports and create the account
                marks.clear()
            step[0] = i
            done.clear()
            await prod.send_and_wait(MARKET_TOPIC, k.encode(snapshot(i + 1)))
            await asyncio.wait_for(done.wait(), 60)
    finally:
        stop.set()
        await asyncio.gather(runner, return_exceptions=True)
        await router.stop()
        await prod.stop()
    return {tool: dist_ms(xs) for tool, xs in marks.items()}


def ledger_rate(path: Path, n: int, synchronous: str) -> float:
    from arena.desk import Desk
    from arena.ledger import Ledger

    desk = Desk(Ledger(path, synchronous=synchronous))
    desk.quotes.update(snapshot(1))
    t0 = time.perf_counter()
    for i in range(n):
        side = "buy" if (i // 10) % 2 == 0 else "sell"  # each agent alternates ten buys, ten sells
        r = desk.execute_trade(f"agent{i % 10}", "FARTCOIN-USD", side, 10, call_key=f"k{i}")
        if r.get("status") != "filled":
            raise RuntimeError(f"ledger bench trade refused: {r}")
    rate = n / (time.perf_counter() - t0)
    desk.ledger.close()
    return rate


async def run(args: argparse.Namespace, report: Report) -> int:
    results: dict = {"round_trip_ms": {}}
    tuning = tuning_of(args)
    # the timing router runs in this process: the same what-if tuning as the tools process gets
    os.environ.update({name: str(v) for name, v in tuning.items() if v is not None})
    apply_tuning()
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        async with Arena(report, tuning) as arena:
            tools = arena.tools(dashboard=(mode == "dashboard"))
            await tools.ready(120)
            report.log(f"tools process ({mode}) READY in {tools.startup_s:.2f}s")
            c0, t0 = tools.cpu_s(), time.monotonic()
            rt = await round_trips(arena, report, args.turns)
            results["round_trip_ms"][mode] = rt
            results.setdefault("tools_cpu_share", {})[mode] = round((tools.cpu_s() - c0) / (time.monotonic() - t0), 3)
            for tool, d in rt.items():
                report.line(f"{mode:>9}: {tool:<14} round trip {fmt_dist(d)}")

    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("NORMAL", "FULL"):
            rate = ledger_rate(Path(tmp) / f"ledger-{sync}.db", args.trades, sync)
            results[f"ledger_trades_per_s_{sync.lower()}"] = round(rate)
            report.line(
                f"ledger: {rate:,.0f} fills/s (WAL, synchronous={sync}, one commit per fill, {args.trades} fills)"
            )
    worst = max((d.get("p99", 0) for rt in results["round_trip_ms"].values() for d in rt.values()), default=None)
    trade_p99 = [
        rt["execute_trade"]["p99"] for rt in results["round_trip_ms"].values() if rt.get("execute_trade", {}).get("n")
    ]
    targets = {
        "execute_trade_round_trip_p99_ms": target(max(trade_p99) if trade_p99 else None, 15.0),
        "any_tool_round_trip_p99_ms": target(worst, 15.0),
        "ledger_trades_per_s": target(results["ledger_trades_per_s_normal"], 2000, at_most=False),
    }
    report.emit(results, targets)
    return 0
