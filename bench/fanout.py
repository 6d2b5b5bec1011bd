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

from bench.harness import Report, dist_ms, fmt_dist, honest, target
from bench.sweep import Step, Sweep, add_sweep_args, sweep


def add_args(p: argparse.ArgumentParser) -> None:
    add_sweep_args(p, "deliveries (router x tick)")


def measure(step: Step) -> dict:
    per_router, last_router = [], []
    for s in step.done:
        pub = step.rec.published[s].published_at
        lat = [
            (d.started_at - pub).total_seconds()
            for d in step.rec.decisions
            if d.status == "started" and d.tick_seq == s and d.agent in step.agents
        ]
        per_router += lat
        if len(lat) == len(step.agents):
            last_router.append(max(lat))
    row = {"per_router_ms": honest(dist_ms(per_router)), "all_routers_ms": honest(dist_ms(last_router))}
    if step.floor.get("p50") and per_router:
        row["p50_vs_floor"] = round(row["per_router_ms"]["p50"] / step.floor["p50"], 1)
        row["p99_vs_floor"] = round(row["per_router_ms"]["p99"] / step.floor["p99"], 1)
    return row


def say(report: Report, step: Step, row: dict) -> None:
    n = step.n
    report.line(f"N={n:>3} tick -> router received: {fmt_dist(row['per_router_ms'])}")
    report.line(f"       tick -> all {n} received:  {fmt_dist(row['all_routers_ms'])}")
    report.line(f"       per turn: {row['model_calls_per_turn']} model calls, {row['tool_calls_per_turn']} tool calls, "
                f"prompt {row['prompt_chars_per_turn']} chars; CPU per decision {row.get('cpu_ms_per_decision')} ms")  # fmt: skip
    report.line(f"       idle CPU share: {row['idle_cpu_share_by_kind']}")


async def run(args: argparse.Namespace, report: Report) -> int:
    results: dict = {
        "method": "Decision 'started'.started_at - snapshot.published_at, routers idle at each tick",
        "by_agents": {},
    }
    how = Sweep(prefix="fan", model="hold", measure=measure, say=lambda step, row: say(report, step, row))
    await sweep(args, report, how, results)
    top = results["by_agents"].get("50")
    targets = {"fanout_p99_ms_at_50": target(top["per_router_ms"].get("p99") if top else None, 25.0)} if top else None
    report.emit(results, targets)
    return 0
