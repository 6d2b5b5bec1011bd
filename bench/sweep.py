"""The router sweep `bench decision` and `bench fanout` share: one arena, the broker floor measured first,
then for every N in --agents routers added (not restarted) up to N, warm-up ticks, the measured ticks
published closed-loop, and per N the same facts beside the bench's own: turns (model and tool calls,
prompt characters), CPU share while ticking, idle CPU per process kind once no tick is expected, CPU per
decision (gross, and net of the idle rate) and memory.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

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
    sender_of,
    snapshot,
    start_stack,
    ticks_for,
    tuning_of,
    turn_stats,
)


def add_sweep_args(p: argparse.ArgumentParser, sampled: str) -> None:
    """--agents, --gap and --start-concurrency, then the sampling and tuning flags (`sampled`: what is counted)."""
    p.add_argument(
        "--agents",
        type=agent_counts,
        default=[1, 10, 50],
        help="router counts to measure, comma separated (default 1,10,50)",
    )
    p.add_argument(
        "--gap", type=float, default=0.3, help="seconds from a tick's last turn to the next (default %(default)s)"
    )
    p.add_argument("--start-concurrency", type=int, default=4, help="routers starting at once (default %(default)s)")
    add_sampling_args(p, sampled)
    add_tuning_args(p)


@dataclass
class Step:
    """One N measured: what the bench's own `measure` reads."""

    n: int
    agents: list[str]
    done: list[int]  # the measured ticks every router finished
    rec: Recorder
    chat: ChatLog
    senders: dict[str, str]
    floor: dict = field(default_factory=dict)


@dataclass
class Sweep:
    prefix: str  # router names: f"{prefix}{i:03d}_{run}"
    model: str  # the policy server's model every router thinks with
    measure: Callable[[Step], dict]  # the bench's row for one N
    say: Callable[[Step, dict], None]  # its report lines for one N
    jump_of: Callable[[int], float] = lambda seq: 1.0  # each tick's price move
    fills_per_turn: int = 1  # samples per router and tick, for --samples
    timeout_s: float = 120.0  # for one tick's turns
    pairs: bool = False  # ticks in buy/sell pairs: warm-up starts on an odd seq, whole pairs measured
    stack: dict = field(default_factory=dict)  # start_stack's keywords (chat nodes and their flags)


async def sweep(args: argparse.Namespace, report: Report, how: Sweep, results: dict) -> dict:
    """Run the sweep; `results` gets floor_ms and by_agents[N] (the bench's row plus the common facts)."""
    results.setdefault("by_agents", {})
    async with Arena(report, tuning_of(args)) as arena:
        floor = dist_ms(await latency(arena.kafka, 200, k.encode(snapshot(1))))
        results["floor_ms"] = floor
        report.line(f"floor (raw publish -> consume, same broker): {fmt_dist(floor)}")
        chat_nodes = await start_stack(arena, how.model, **how.stack)
        rec = await Recorder(arena.kafka).start()
        chat = ChatLog()
        stop = asyncio.Event()
        follower = asyncio.create_task(follow_chat(arena.kafka, chat_nodes, chat, stop))
        agents: list[str] = []
        senders: dict[str, str] = {}
        seq = 0
        loop = asyncio.get_running_loop()

        def ticks(seqs: range):
            return closed_loop_ticks(rec, agents, seqs, jump_of=how.jump_of, gap_s=args.gap, timeout_s=how.timeout_s,
                                     report=report, interval_s=args.interval)  # fmt: skip

        try:
            for n in sorted(set(args.agents)):
                new = [f"{how.prefix}{i:03d}_{arena.run}" for i in range(len(agents), n)]
                started = await arena.routers(new, chat_nodes, concurrency=args.start_concurrency)
                agents += new
                if how.pairs and seq % 2 == 1:
                    seq += 1  # the warm-up starts a pair
                await ticks(range(seq + 1, seq + 3))  # warm-up: every router's first turns load lazy imports
                seq += 2
                senders.update(sender_of(chat, new, started))
                count = ticks_for(args, n, how.fills_per_turn)
                if how.pairs:
                    count += count % 2
                c0, t0 = arena.cpu(), loop.time()
                done = await ticks(range(seq + 1, seq + 1 + count))
                c1, t1 = arena.cpu(), loop.time()
                seq += count
                await asyncio.sleep(0.5)  # the last replies
                step = Step(n, list(agents), done, rec, chat, senders, floor)
                row = how.measure(step)
                row["ticks"] = len(done)
                row.update(turn_stats(rec, chat, set(agents), set(done), senders))
                busy = cpu_share(c0, c1, t1 - t0)
                row["cpu_share_by_kind"] = busy
                # Idle: once the routers stopped expecting a tick (arena.polling gives up after 3 missed slots).
                await asyncio.sleep(4 * args.interval + 3.0)
                idle = await arena.idle_cpu(args.idle_s)
                row["idle_cpu_share_by_kind"] = idle
                if decisions := len(done) * n:
                    row["cpu_ms_per_decision"] = {
                        "gross": round((sum(c1.values()) - sum(c0.values())) * 1000 / decisions, 1),
                        "net_of_idle": round((busy["total"] - idle["total"]) * (t1 - t0) * 1000 / decisions, 1),
                    }
                row["memory"] = arena.memory()
                results["by_agents"][str(n)] = row
                how.say(step, row)
        finally:
            stop.set()
            await asyncio.gather(follower, return_exceptions=True)
            await rec.stop()
    return results
