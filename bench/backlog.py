"""backlog: ticks faster than turns, and a router restarted after missing ticks. Shows that every
decision (and so every fill) is based on the newest tick its router had received, never a backlog.

Two routers read one tick stream (--interval apart, --seconds long):
  slow: thinks through a chat node serving the policy server's `slow-<s>` model (each model call
        sleeps --model-seconds, then holds), so most ticks arrive while a turn runs;
  fast: thinks through a chat node serving `momentum` (instant; it trades on every tick's jump).
Then the fast router is stopped, ticks go on for --down seconds, and it is started again.

Per turn (Decision "started"): its tick's age at the start (started_at - published_at); how many newer
ticks the router had received by then (from its own records: a "started" or a "skipped ... superseded
by #N" record marks when a tick arrived); how many newer ticks had been published by then (some are
still in flight). Per fill: the tick its turn was based on and that tick's age at the fill.
After the restart: which ticks were missed, and the first tick the restarted router decided on.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from bisect import bisect_right

from bench.harness import Arena, Recorder, Report, dist_ms, fmt_dist, target

SUPERSEDED = re.compile(r"superseded by #(\d+)")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=0.25, help="seconds between ticks (default %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of ticks before the restart (default %(default)s)")
    p.add_argument("--model-seconds", type=float, default=1.0, help="the slow model's time per call (default %(default)s)")
    p.add_argument("--down", type=float, default=5.0, help="seconds the fast router is down (default %(default)s)")
    p.add_argument("--after", type=float, default=5.0, help="seconds of ticks after its restart (default %(default)s)")


def turn_checks(rec: Recorder, agent: str) -> tuple[list[dict], dict[float, int]]:
    """For each turn of `agent`: tick age at start, newer ticks received / published before the start."""
    mine = sorted((d for d in rec.decisions if d.agent == agent), key=lambda d: d.started_at)
    arrivals: list[tuple[float, int]] = []  # (time the router had it by, seq)
    for d in mine:
        if d.status == "started":
            arrivals.append((d.started_at.timestamp(), d.tick_seq))
        elif d.status == "skipped" and (m := SUPERSEDED.search(d.reason)):
            arrivals.append((d.started_at.timestamp(), int(m[1])))
    arrivals.sort()
    times = [t for t, _ in arrivals]
    newest_by: list[int] = []
    best = 0
    for _, s in arrivals:
        best = max(best, s)
        newest_by.append(best)
    published = sorted((s.published_at.timestamp(), seq) for seq, s in rec.published.items())
    pub_times = [t for t, _ in published]
    rows = []
    for d in mine:
        if d.status != "started":
            continue
        t = d.started_at.timestamp()
        i = bisect_right(times, t) - 1
        received_newest = newest_by[i] if i >= 0 else d.tick_seq
        j = bisect_right(pub_times, t)
        published_newest = max((seq for _, seq in published[:j]), default=d.tick_seq)
        rows.append({
            "seq": d.tick_seq,
            "started": t,
            "age_s": t - d.tick_published_at.timestamp(),
            "newer_received": max(0, received_newest - d.tick_seq),
            "newer_published": max(0, published_newest - d.tick_seq),
            "finished": None,
        })  # fmt: skip
    for d in mine:
        if d.finished_at is not None:
            for r in rows:
                if r["seq"] == d.tick_seq:
                    r["finished"] = d.finished_at.timestamp()
    return rows, {}


def summarize(rows: list[dict]) -> dict:
    return {
        "turns": len(rows),
        "tick_age_at_start_ms": dist_ms([r["age_s"] for r in rows]),
        "turns_with_newer_tick_received": sum(1 for r in rows if r["newer_received"] > 0),
        "turns_with_newer_tick_published": sum(1 for r in rows if r["newer_published"] > 0),
        "max_newer_published": max((r["newer_published"] for r in rows), default=0),
    }


async def run(args: argparse.Namespace, report: Report) -> int:
    results: dict = {}
    async with Arena(report) as arena:
        await arena.policy_server()
        slow_model = f"slow-{args.model_seconds:g}"
        chats = [arena.chat_node(f"slow_{arena.run}", slow_model), arena.chat_node(f"fast_{arena.run}", "momentum"), arena.tools()]
        await asyncio.gather(*(c.wait_ready(120) for c in chats))
        slow, fast = f"slow_{arena.run}", f"fast_{arena.run}"
        routers = [arena.router(slow, f"slow_{arena.run}", "default", "--turn-timeout", str(max(30.0, 6 * args.model_seconds))),
                   arena.router(fast, f"fast_{arena.run}", "momentum")]  # fmt: skip
        await asyncio.gather(*(r.wait_ready(180) for r in routers))
        rec = await Recorder(arena.kafka).start()
        seq = 0

        async def ticks(seconds: float) -> tuple[int, int]:
            nonlocal seq
            first = seq + 1
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                seq += 1
                await rec.publish(seq, 1.02 if seq % 2 else 0.98)
                await asyncio.sleep(args.interval)
            return first, seq

        try:
            report.log(f"{args.seconds:g}s of ticks every {args.interval:g}s; slow model {slow_model}")
            await ticks(args.seconds)
            await asyncio.sleep(max(3.0, 3 * args.model_seconds))  # the last turns finish
            # restart the fast router after it missed ticks
            old = routers[1]
            old.signal()
            await asyncio.to_thread(old.wait_exit, 30)
            report.log(f"fast router stopped; ticks go on for {args.down:g}s")
            missed = await ticks(args.down)
            t_launch = time.monotonic()
            new = arena.router(fast, f"fast_{arena.run}", "momentum")
            launch_seq = seq
            pub_during_start = asyncio.create_task(ticks(3600))  # the stream does not pause for it
            await new.wait_ready(180)
            ready_seq = seq
            restart_ready_s = time.monotonic() - t_launch
            report.log(f"fast router restarted, READY in {restart_ready_s:.1f}s; ticks go on for {args.after:g}s")
            await asyncio.sleep(args.after)
            pub_during_start.cancel()
            await asyncio.gather(pub_during_start, return_exceptions=True)
            await asyncio.sleep(max(3.0, 3 * args.model_seconds))
        finally:
            await rec.stop()

        for name, label in ((slow, "slow"), (fast, "fast")):
            rows, _ = turn_checks(rec, name)
            results[label] = summarize(rows)
            results[label]["ticks_published"] = len(rec.published)
            results[label]["skipped_records"] = len(rec.of("skipped", name))
            s = results[label]
            report.line(f"{label} router: {s['turns']} turns on {len(rec.published)} ticks; tick age at turn start {fmt_dist(s['tick_age_at_start_ms'])}")
            report.line(f"    turns started on an older tick than the newest received: {s['turns_with_newer_tick_received']}; "
                        f"newer one already published (in flight): {s['turns_with_newer_tick_published']} (max {s['max_newer_published']} ticks)")

        # fills: the tick each was based on (its turn's tick) and that tick's age at the fill
        fast_turns = sorted((d for d in rec.decisions if d.agent == fast and d.status in ("done", "error", "timeout")), key=lambda d: d.started_at)
        rows, _ = turn_checks(rec, fast)
        newer_received = {r["seq"]: r["newer_received"] for r in rows}
        ages, stale_fills, unmatched = [], 0, 0
        for t in (t for t in rec.trades if t.agent == fast and t.status == "filled"):
            turn = next((d for d in fast_turns if d.started_at <= t.executed_at <= d.finished_at), None)
            if turn is None:
                unmatched += 1
                continue
            ages.append((t.executed_at - turn.tick_published_at).total_seconds())
            stale_fills += newer_received.get(turn.tick_seq, 0) > 0
        results["fills"] = {"count": len(ages), "based_on_tick_age_ms": dist_ms(ages), "based_on_older_than_newest_received": stale_fills,
                            "unmatched": unmatched}  # fmt: skip
        report.line(f"fast router fills: {len(ages)}; age of the tick each was based on, at the fill: {fmt_dist(results['fills']['based_on_tick_age_ms'])}; "
                    f"based on an older tick than the newest received: {stale_fills}")

        after = sorted((d for d in rec.decisions if d.agent == fast and d.status == "started" and d.started_at.timestamp() > 0
                        and d.tick_seq > missed[0] - 1), key=lambda d: d.started_at)  # fmt: skip
        decided_missed = [d.tick_seq for d in after if missed[0] <= d.tick_seq <= missed[1]]
        first = after[0] if after else None
        results["restart"] = {
            "missed_ticks": [missed[0], missed[1]],
            "ticks_published_while_starting": [launch_seq + 1, ready_seq],
            "restart_ready_s": round(restart_ready_s, 2),
            "restart_router_line": new.ready_line,  # its own "serving in N s" (after its imports)
            "first_tick_decided_after_restart": first.tick_seq if first else None,
            "missed_ticks_decided": decided_missed,
        }
        report.line(f"restart: ticks #{missed[0]}-#{missed[1]} published while down, #{launch_seq + 1}-#{ready_seq} while it started "
                    f"(READY in {restart_ready_s:.1f}s; {new.ready_line.split(':')[0].split(' in ')[-1]} after its imports); first decision after the restart on #{first.tick_seq if first else None}; "
                    f"missed ticks decided: {decided_missed or 'none'}")
    targets = {
        "turns_on_older_than_newest_received": target(results["slow"]["turns_with_newer_tick_received"] + results["fast"]["turns_with_newer_tick_received"], 0),
        "fills_on_older_than_newest_received": target(results["fills"]["based_on_older_than_newest_received"], 0),
        "missed_ticks_decided_after_restart": target(len(results["restart"]["missed_ticks_decided"]), 0),
    }
    report.emit(results, targets)
    return 0
