"""feed: the market feed's start-up and cadence: `arena market-sim` (the Coinbase-compatible simulator)
launch -> READY, coinbase_connector.py launch -> first snapshot, and how evenly snapshots come
(--interval apart) and how fast they reach a reader of the market topic.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

from arena import kafka as k
from arena.config import MARKET_TOPIC
from arena.market import MarketSnapshot
from bench.harness import Arena, Report, dist_ms, fmt_dist


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=1.0, help="connector --interval (default %(default)s)")
    p.add_argument("--count", type=int, default=30, help="snapshots to measure the cadence on (default %(default)s)")


async def run(args: argparse.Namespace, report: Report) -> int:
    async with Arena(report) as arena:
        t_sim = time.time()
        sim = await arena.launch("market-sim", "-m", "arena.cli", "market-sim", "--port", "0").ready(60)
        port = sim.ready_line.split(" on ")[1].split()[0].rsplit(":", 1)[1]
        consumer = k.consumer(arena.kafka, MARKET_TOPIC, group_id=None, latest=False)
        await consumer.start()
        t_conn = time.time()
        conn = arena.launch("connector", "coinbase_connector.py", "--interval", str(args.interval),
                            "--ws-url", f"ws://127.0.0.1:{port}", "--rest-url", f"http://127.0.0.1:{port}")  # fmt: skip
        snaps: list[tuple[MarketSnapshot, float]] = []
        try:
            deadline = time.monotonic() + 60 + args.count * args.interval * 2
            while len(snaps) < args.count + 1 and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        if (s := k.decode(MarketSnapshot, r.value)) is not None:
                            snaps.append((s, time.time()))
        finally:
            await consumer.stop()
    if len(snaps) < 3:
        raise RuntimeError(f"only {len(snaps)} snapshots arrived:\n" + "\n".join(conn.lines[-20:]))
    first = snaps[0][0].published_at.timestamp()
    pubs = [s.published_at.timestamp() for s, _ in snaps[1:]]
    deltas = [b - a for a, b in itertools.pairwise(pubs)]
    results = {
        "sim_ready_s": round(sim.startup_s, 2),
        "connector_first_snapshot_s": round(first - t_conn, 2),
        "connector_ready_s": round(conn.startup_s or 0, 2),
        "interval_s": args.interval,
        "cadence_mean_s": round(statistics.mean(deltas), 4),
        "cadence_stdev_ms": round(statistics.pstdev(deltas) * 1000, 1),
        "cadence_max_error_ms": round(max(abs(d - args.interval) for d in deltas) * 1000, 1),
        "drift_ms": round((pubs[-1] - pubs[0] - (len(pubs) - 1) * args.interval) * 1000, 1),
        "publish_to_reader_ms": dist_ms([rcv - s.published_at.timestamp() for s, rcv in snaps]),
        "sim_start_to_first_snapshot_s": round(first - t_sim, 2),
    }
    report.line(f"simulator launch -> READY            {results['sim_ready_s']:6.2f} s")
    report.line(f"connector launch -> snapshot #1       {results['connector_first_snapshot_s']:6.2f} s")
    report.line(f"cadence over {len(deltas)} intervals of {args.interval:g} s: mean {results['cadence_mean_s']:.4f} s, "
                f"stdev {results['cadence_stdev_ms']} ms, max |error| {results['cadence_max_error_ms']} ms, drift {results['drift_ms']:+} ms")  # fmt: skip
    report.line(f"publish -> reader: {fmt_dist(results['publish_to_reader_ms'])}")
    report.emit(results)
    return 0
