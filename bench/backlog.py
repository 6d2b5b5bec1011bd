"""backlog: ticks faster than turns, and a router restarted after missing ticks. Every turn starts on the
newest tick its router has received, never a backlog; this measures how old that tick is by the time the
turn's orders fill.

Two routers read one tick stream (--interval apart, --seconds long), both trading with the momentum policy:
  slow: thinks through a chat node serving the policy server's `slow-<s>-momentum` model (each model call
        sleeps --model-seconds, then trades like momentum), so most ticks arrive while a turn runs;
  fast: thinks through a chat node serving `momentum` (instant; it trades on every tick's jump).
Then the fast router is stopped, ticks go on for --down seconds, and it is started again.

Per turn (Decision "started"): its tick's age at the start (started_at - published_at); how many newer
ticks the router had received by then (from its own records: a "started" or a "skipped ... superseded
by #N" record marks when a tick arrived) and how many had been published by then (some still in flight).
Per fill, at the moment it filled (Fill.executed_at): its turn (by the run id in its trade id) and so the
tick it was decided on; how many newer ticks had been published, and received by its router (a lower
bound: a tick waiting in the router's slot leaves a record only once it starts a turn or is displaced);
the age of the decided-on tick; and whether the desk's price came from an older quote than the newest
tick published (Fill.tick_seq: the snapshot of the quote the desk filled at).
After the restart: which ticks were missed, and the first tick the restarted router decided on.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from bisect import bisect_right

from arena.portfolio import Fill
from bench.harness import Arena, Recorder, Report, dist_ms, fmt_dist, target

SUPERSEDED = re.compile(r"superseded by #(\d+)")
# A tick published this long before a moment has surely been delivered by then (delivery takes
# milliseconds): a newer one by then is a tick missed or queued, not one still in flight.
DELIVERED_S = 1.0


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=0.25, help="seconds between ticks (default %(default)s)")
    p.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of ticks before the restart (default %(default)s)"
    )
    p.add_argument(
        "--model-seconds", type=float, default=1.0, help="the slow model's time per call (default %(default)s)"
    )
    p.add_argument("--down", type=float, default=5.0, help="seconds the fast router is down (default %(default)s)")
    p.add_argument("--after", type=float, default=5.0, help="seconds of ticks after its restart (default %(default)s)")


class Newest:
    """The newest tick at any moment: published (by the benchmark's own clock) and received by a router
    (from its records: a "started" or a "skipped ... superseded by #N" record marks when a tick arrived)."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        published = sorted((s.published_at.timestamp(), seq) for seq, s in rec.published.items())
        self._pub_times, self._pub_best = self._running_max(published)
        self._received: dict[str, tuple[list[float], list[int]]] = {}

    @staticmethod
    def _running_max(events: list[tuple[float, int]]) -> tuple[list[float], list[int]]:
        times, best, top = [], [], 0
        for t, seq in sorted(events):
            top = max(top, seq)
            times.append(t)
            best.append(top)
        return times, best

    def published(self, t: float) -> int:
        i = bisect_right(self._pub_times, t) - 1
        return self._pub_best[i] if i >= 0 else 0

    def received(self, agent: str, t: float) -> int:
        if agent not in self._received:
            events = []
            for d in self.rec.decisions:
                if d.agent != agent:
                    continue
                if d.status == "started":
                    events.append((d.started_at.timestamp(), d.tick_seq))
                elif d.status == "skipped" and (m := SUPERSEDED.search(d.reason)):
                    events.append((d.started_at.timestamp(), int(m[1])))
            self._received[agent] = self._running_max(events)
        times, best = self._received[agent]
        i = bisect_right(times, t) - 1
        return best[i] if i >= 0 else 0


def turn_checks(rec: Recorder, newest: Newest, agent: str) -> list[dict]:
    """For each turn of `agent`: tick age at start, newer ticks received / published before the start."""
    rows = []
    for d in sorted(
        (d for d in rec.decisions if d.agent == agent and d.status == "started"), key=lambda d: d.started_at
    ):
        t = d.started_at.timestamp()
        rows.append({
            "seq": d.tick_seq,
            "age_s": t - d.tick_published_at.timestamp(),
            "newer_received": max(0, newest.received(agent, t) - d.tick_seq),
            "newer_published": max(0, newest.published(t) - d.tick_seq),
            "newer_delivered": max(0, newest.published(t - DELIVERED_S) - d.tick_seq),
        })  # fmt: skip
    return rows


def summarize(rows: list[dict]) -> dict:
    return {
        "turns": len(rows),
        "tick_age_at_start_ms": dist_ms([r["age_s"] for r in rows]),
        "turns_with_newer_tick_received": sum(1 for r in rows if r["newer_received"] > 0),
        "turns_with_newer_tick_published": sum(1 for r in rows if r["newer_published"] > 0),
        "max_newer_published": max((r["newer_published"] for r in rows), default=0),
        "turns_with_newer_tick_published_1s_before": sum(1 for r in rows if r["newer_delivered"] > 0),
    }


def fill_checks(rec: Recorder, newest: Newest, agent: str) -> dict:
    """Each fill of `agent`, at the moment it filled: the tick its turn was decided on against the newest
    tick published and received by then, and the quote the desk priced it at."""
    turns = {d.run_id: d for d in rec.decisions if d.agent == agent and d.status == "started"}
    ages, behind_pub, behind_recv, price_behind, price_missed, unmatched = [], [], [], [], [], 0
    for t in (t for t in rec.trades if t.agent == agent and isinstance(t, Fill)):
        parts = t.trade_id.split("|")  # agent|run|messages|tool call id (trading_tools.call_key)
        turn = turns.get(parts[1]) if len(parts) == 4 else None
        if turn is None:
            unmatched += 1
            continue
        at = t.executed_at.timestamp()
        ages.append(at - turn.tick_published_at.timestamp())
        behind_pub.append(max(0, newest.published(at) - turn.tick_seq))
        behind_recv.append(max(0, newest.received(agent, at) - turn.tick_seq))
        if t.tick_seq is not None:
            price_behind.append(max(0, newest.published(at) - t.tick_seq))
            price_missed.append(max(0, newest.published(at - DELIVERED_S) - t.tick_seq))
    return {
        "count": len(ages),
        "decided_tick_age_at_fill_ms": dist_ms(ages),
        "decided_on_older_than_newest_published": sum(1 for n in behind_pub if n > 0),
        "decided_on_older_than_newest_received": sum(1 for n in behind_recv if n > 0),
        "max_ticks_behind_published": max(behind_pub, default=0),
        "priced_on_older_than_newest_published": sum(1 for n in price_behind if n > 0),
        "max_price_ticks_behind_published": max(price_behind, default=0),
        "priced_on_older_than_a_tick_published_1s_before": sum(1 for n in price_missed if n > 0),
        "unmatched": unmatched,
    }


async def run(args: argparse.Namespace, report: Report) -> int:
    results: dict = {}
    async with Arena(report) as arena:
        await arena.policy_server()
        slow_model = f"slow-{args.model_seconds:g}-momentum"  # sleeps, then trades like momentum
        chats = [
            arena.chat_node(f"slow_{arena.run}", slow_model),
            arena.chat_node(f"fast_{arena.run}", "momentum"),
            arena.tools(),
        ]
        await asyncio.gather(*(c.ready(120) for c in chats))
        slow, fast = f"slow_{arena.run}", f"fast_{arena.run}"
        routers = [arena.router(slow, f"slow_{arena.run}", "momentum", "--turn-timeout", str(max(30.0, 6 * args.model_seconds))),
                   arena.router(fast, f"fast_{arena.run}", "momentum")]  # fmt: skip
        await asyncio.gather(*(r.ready(180) for r in routers))
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
            await new.ready(180)
            ready_seq = seq
            restart_ready_s = time.monotonic() - t_launch
            report.log(f"fast router restarted, READY in {restart_ready_s:.1f}s; ticks go on for {args.after:g}s")
            await asyncio.sleep(args.after)
            pub_during_start.cancel()
            await asyncio.gather(pub_during_start, return_exceptions=True)
            await asyncio.sleep(max(3.0, 3 * args.model_seconds))
        finally:
            await rec.stop()

        newest = Newest(rec)
        for name, label in ((slow, "slow"), (fast, "fast")):
            s = results[label] = summarize(turn_checks(rec, newest, name))
            s["ticks_published"] = len(rec.published)
            s["skipped_records"] = len(rec.of("skipped", name))
            f = s["fills"] = fill_checks(rec, newest, name)
            report.line(
                f"{label} router: {s['turns']} turns on {len(rec.published)} ticks; tick age at turn start {fmt_dist(s['tick_age_at_start_ms'])}"
            )
            report.line(
                f"    turns started on an older tick than the newest received: {s['turns_with_newer_tick_received']}; "
                f"newer one already published (in flight): {s['turns_with_newer_tick_published']} (max {s['max_newer_published']} ticks); "
                f"published {DELIVERED_S:g}s before the start: {s['turns_with_newer_tick_published_1s_before']}"
            )
            report.line(
                f"    fills: {f['count']}; age of the decided-on tick at the fill {fmt_dist(f['decided_tick_age_at_fill_ms'])}"
            )
            report.line(
                f"    at the fill, a newer tick than the decided-on one was published: {f['decided_on_older_than_newest_published']} "
                f"(max {f['max_ticks_behind_published']} ticks); received by the router (lower bound): {f['decided_on_older_than_newest_received']}; "
                f"priced on an older quote than the newest published: {f['priced_on_older_than_newest_published']} "
                f"(max {f['max_price_ticks_behind_published']} ticks), than one published {DELIVERED_S:g}s before: "
                f"{f['priced_on_older_than_a_tick_published_1s_before']}; fills without their turn: {f['unmatched']}"
            )

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
        report.line(
            f"restart: ticks #{missed[0]}-#{missed[1]} published while down, #{launch_seq + 1}-#{ready_seq} while it started "
            f"(READY in {restart_ready_s:.1f}s; {new.ready_line.split(':')[0].split(' in ')[-1]} after its imports); first decision after the restart on #{first.tick_seq if first else None}; "
            f"missed ticks decided: {decided_missed or 'none'}"
        )
    # A turn must start on the newest tick delivered, and the desk must price at the newest tick delivered.
    # (The newest *received* is read off the router's own records, which a router that queued ticks would
    # not write: not a target.) A fill comes a model's think after its turn started, so a slow model's are
    # decided on older ticks by construction: reported above, not a target.
    both = (results["slow"], results["fast"])
    targets = {
        "turns_started_with_a_tick_published_1s_before_newer": target(
            sum(r["turns_with_newer_tick_published_1s_before"] for r in both), 0
        ),
        "fills_priced_older_than_a_tick_published_1s_before": target(
            sum(r["fills"]["priced_on_older_than_a_tick_published_1s_before"] for r in both), 0
        ),
        "slow_router_fills": target(
            results["slow"]["fills"]["count"], 1, at_most=False
        ),  # the slow router must trade, or nothing was measured
        "missed_ticks_decided_after_restart": target(len(results["restart"]["missed_ticks_decided"]), 0),
    }
    report.emit(results, targets)
    return 0
