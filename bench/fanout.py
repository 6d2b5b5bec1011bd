"""fanout: a market snapshot published -> received by each of N router processes (deploy_router_node.py,
each in its own consumer group on the market topic), for every N in --agents.

Routers expose no receive timestamp, so receipt is read from each router's Decision "started" record:
started_at - the snapshot's published_at. A router that is idle when the tick arrives starts its turn
on it at once, so this is delivery + decode + turn start; ticks are therefore published closed-loop
(the next one only after every router finished its turn on the previous one, plus --gap), so no turn
is ever waiting behind another. The routers think with the policy server's `hold` model (two instant
model calls and a get_portfolio per turn) through one chat node. Routers are added, not restarted,
as N grows. The floor (raw aiokafka publish -> consume on the same broker, measured just before)
is reported beside it.
"""

from __future__ import annotations

import argparse

from arena import kafka as k
from bench.floor import latency
from bench.harness import (
    Arena,
    Recorder,
    Report,
    add_tuning_args,
    agent_counts,
    closed_loop_ticks,
    dist_ms,
    fmt_dist,
    snapshot,
    start_stack,
    target,
    tuning_of,
)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agents",
        type=agent_counts,
        default=[1, 10, 50],
        help="router counts to measure, comma separated (default 1,10,50)",
    )
    p.add_argument("--ticks", type=int, default=20, help="ticks measured per agent count (default %(default)s)")
    p.add_argument(
        "--gap",
        type=float,
        default=0.3,
        help="seconds between one tick's last turn and the next tick (default %(default)s)",
    )
    p.add_argument("--start-concurrency", type=int, default=4, help="routers starting at once (default %(default)s)")
    add_tuning_args(p)


async def run(args: argparse.Namespace, report: Report) -> int:
    results: dict = {
        "method": "Decision 'started'.started_at - snapshot.published_at, routers idle at each tick",
        "by_agents": {},
    }
    async with Arena(report, tuning_of(args)) as arena:
        floor = dist_ms(await latency(arena.kafka, 200, k.encode(snapshot(1))))
        results["floor_ms"] = floor
        report.line(f"floor (raw publish -> consume, same broker): {fmt_dist(floor)}")
        chat = await start_stack(arena, "hold")
        rec = await Recorder(arena.kafka).start()
        agents: list[str] = []
        seq = 0
        try:
            for n in sorted(set(args.agents)):
                new = [f"fan{i:03d}_{arena.run}" for i in range(len(agents), n)]
                await arena.routers(new, chat, concurrency=args.start_concurrency)
                agents += new
                # warm-up: every router's first turn loads lazily imported parts
                await closed_loop_ticks(
                    rec,
                    agents,
                    range(seq + 1, seq + 3),
                    jump_of=lambda s: 1.0,
                    gap_s=args.gap,
                    timeout_s=120,
                    report=report,
                )
                seq += 2
                measured = range(seq + 1, seq + 1 + args.ticks)
                done = await closed_loop_ticks(
                    rec, agents, measured, jump_of=lambda s: 1.0, gap_s=args.gap, timeout_s=120, report=report
                )
                seq += args.ticks
                per_router, last_router = [], []
                for s in done:
                    pub = rec.published[s].published_at
                    lat = [
                        (d.started_at - pub).total_seconds()
                        for d in rec.decisions
                        if d.status == "started" and d.tick_seq == s and d.agent in agents
                    ]
                    per_router += lat
                    if len(lat) == len(agents):
                        last_router.append(max(lat))
                row = {"per_router_ms": dist_ms(per_router), "all_routers_ms": dist_ms(last_router), "ticks": len(done)}
                if floor.get("p50") and per_router:
                    row["p50_vs_floor"] = round(row["per_router_ms"]["p50"] / floor["p50"], 1)
                    row["p99_vs_floor"] = round(row["per_router_ms"]["p99"] / floor["p99"], 1)
                row["memory"] = arena.memory()
                results["by_agents"][str(n)] = row
                report.line(f"N={n:>3} tick -> router received: {fmt_dist(row['per_router_ms'])}")
                report.line(f"       tick -> all {n} received:  {fmt_dist(row['all_routers_ms'])}")
        finally:
            await rec.stop()
    top = results["by_agents"].get("50")
    targets = {"fanout_p99_ms_at_50": target(top["per_router_ms"].get("p99") if top else None, 25.0)} if top else None
    report.emit(results, targets)
    return 0
