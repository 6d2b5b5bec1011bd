"""fanout: a market snapshot published -> received by each of N router processes (deploy_router_node.py,
each in its own consumer group on the market topic), for every N in --agents.

Routers expose no receive timestamp, so receipt is read from each router's Decision "started" record:
started_at - the snapshot's published_at. A router that is idle when the tick arrives starts its turn
on it at once, so this is delivery + decode + turn start; ticks are therefore published closed-loop
(the next one only after every router finished its turn on the previous one, plus --gap), so no turn
is ever waiting behind another. The routers think with the policy server's `hold` model (two instant
model calls and a get_portfolio per turn) through one chat node. Routers are added, not restarted,
as N grows. The floor (raw aiokafka publish -> consume on the same broker, measured just before)
is reported beside it. Ticks go out on an --interval grid (as a connector publishes them), enough for
--samples deliveries per N (a p99 from fewer is flagged `p99_is_max_of_few`); per turn, model calls,
tool calls and prompt characters; CPU per decision; idle CPU per process kind, the broker included.
"""

from __future__ import annotations

import argparse

from arena import kafka as k
from bench.floor import latency
from bench.harness import (
    Arena,
    ChatLog,
    Recorder,
    Report,
    add_sampling_args,
    add_tuning_args,
    agent_counts,
    closed_loop_ticks,
    cpu_share,
    dist_ms,
    fmt_dist,
    follow_chat,
    honest,
    sender_of,
    snapshot,
    start_stack,
    target,
    ticks_for,
    tuning_of,
    turn_stats,
)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agents",
        type=agent_counts,
        default=[1, 10, 50],
        help="router counts to measure, comma separated (default 1,10,50)",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=0.3,
        help="seconds between one tick's last turn and the next tick (default %(default)s)",
    )
    p.add_argument("--start-concurrency", type=int, default=4, help="routers starting at once (default %(default)s)")
    add_sampling_args(p, "deliveries (router x tick)")
    add_tuning_args(p)


async def run(args: argparse.Namespace, report: Report) -> int:
    import asyncio

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
        log = ChatLog()
        stop = asyncio.Event()
        follower = asyncio.create_task(follow_chat(arena.kafka, chat, log, stop))
        agents: list[str] = []
        senders: dict[str, str] = {}
        seq = 0
        loop = asyncio.get_running_loop()

        def ticks(seqs: range):
            return closed_loop_ticks(rec, agents, seqs, jump_of=lambda s: 1.0, gap_s=args.gap, timeout_s=120,
                                     report=report, interval_s=args.interval)  # fmt: skip

        try:
            for n in sorted(set(args.agents)):
                new = [f"fan{i:03d}_{arena.run}" for i in range(len(agents), n)]
                started = await arena.routers(new, chat, concurrency=args.start_concurrency)
                agents += new
                await ticks(range(seq + 1, seq + 3))  # warm-up: every router's first turn loads lazily imported parts
                seq += 2
                senders.update(sender_of(log, new, started))
                count = ticks_for(args, n, 1)
                measured = range(seq + 1, seq + 1 + count)
                c0, t0 = arena.cpu(), loop.time()
                done = await ticks(measured)
                c1, t1 = arena.cpu(), loop.time()
                seq += count
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
                row = {
                    "per_router_ms": honest(dist_ms(per_router)),
                    "all_routers_ms": honest(dist_ms(last_router)),
                    "ticks": len(done),
                }
                if floor.get("p50") and per_router:
                    row["p50_vs_floor"] = round(row["per_router_ms"]["p50"] / floor["p50"], 1)
                    row["p99_vs_floor"] = round(row["per_router_ms"]["p99"] / floor["p99"], 1)
                await asyncio.sleep(0.5)
                row.update(turn_stats(rec, log, set(agents), set(done), senders))
                busy = cpu_share(c0, c1, t1 - t0)
                row["cpu_share_by_kind"] = busy
                await asyncio.sleep(4 * args.interval + 3.0)  # the routers stopped expecting a tick
                idle = await arena.idle_cpu(args.idle_s)
                row["idle_cpu_share_by_kind"] = idle
                if decisions := len(done) * n:
                    row["cpu_ms_per_decision"] = {
                        "gross": round((sum(c1.values()) - sum(c0.values())) * 1000 / decisions, 1),
                        "net_of_idle": round((busy["total"] - idle["total"]) * (t1 - t0) * 1000 / decisions, 1),
                    }
                row["memory"] = arena.memory()
                results["by_agents"][str(n)] = row
                report.line(f"N={n:>3} tick -> router received: {fmt_dist(row['per_router_ms'])}")
                report.line(f"       tick -> all {n} received:  {fmt_dist(row['all_routers_ms'])}")
                report.line(f"       per turn: {row['model_calls_per_turn']} model calls, {row['tool_calls_per_turn']} tool calls, "
                            f"prompt {row['prompt_chars_per_turn']} chars; CPU per decision {row.get('cpu_ms_per_decision')} ms")  # fmt: skip
                report.line(f"       idle CPU share: {idle}")
        finally:
            stop.set()
            await asyncio.gather(follower, return_exceptions=True)
            await rec.stop()
    top = results["by_agents"].get("50")
    targets = {"fanout_p99_ms_at_50": target(top["per_router_ms"].get("p99") if top else None, 25.0)} if top else None
    report.emit(results, targets)
    return 0
