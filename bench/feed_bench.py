"""Market feed timings: simulator start -> first snapshot, and snapshot cadence accuracy.

    uv run python bench/feed_bench.py [--interval 1.0] [--count 30]

Starts a fresh embedded broker, `arena market-sim` and `coinbase_connector.py` as real processes
(as `arena demo` does), and reads the market topic.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena import kafka as k  # noqa: E402
from arena.broker import EmbeddedBroker, free_port  # noqa: E402
from arena.config import MARKET_TOPIC, KafkaSettings  # noqa: E402
from arena.market import MarketSnapshot  # noqa: E402
from tests.procs import Proc  # noqa: E402


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=1.0, help="connector --interval (default %(default)s)")
    p.add_argument("--count", type=int, default=30, help="snapshots to measure cadence on (default %(default)s)")
    args = p.parse_args()

    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    await broker.wait_ready()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    port = free_port()
    sim = conn = None
    try:
        t_sim = time.time()
        sim = Proc("-m", "arena.cli", "market-sim", "--port", str(port))
        await asyncio.to_thread(sim.wait_ready, 30)
        t_sim_ready = time.time()
        t_conn = time.time()
        conn = Proc(
            "coinbase_connector.py", "--bootstrap-servers", broker.bootstrap, "--interval", str(args.interval),
            "--ws-url", f"ws://127.0.0.1:{port}", "--rest-url", f"http://127.0.0.1:{port}",
        )
        await asyncio.to_thread(conn.wait_ready, 30)
        consumer = k.consumer(kafka, MARKET_TOPIC, group_id=None, latest=False)
        await consumer.start()
        snaps: list[tuple[MarketSnapshot, float]] = []
        while len(snaps) < args.count + 1:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if (s := k.decode(MarketSnapshot, r.value)) is not None:
                        snaps.append((s, time.time()))
        await consumer.stop()
    finally:
        for proc in (conn, sim):
            if proc:
                await asyncio.to_thread(proc.stop)
        broker.stop()

    first = snaps[0][0].published_at.timestamp()
    print(f"simulator process start -> READY      {t_sim_ready - t_sim:6.2f} s")
    print(f"connector process start -> snapshot #1 {first - t_conn:6.2f} s")
    print(f"simulator start -> first snapshot      {first - t_sim:6.2f} s")
    pubs = [s.published_at.timestamp() for s, _ in snaps[1:]]
    deltas = [b - a for a, b in zip(pubs, pubs[1:])]
    errors_ms = [abs(d - args.interval) * 1000 for d in deltas]
    drift_ms = (pubs[-1] - pubs[0] - (len(pubs) - 1) * args.interval) * 1000
    lat_ms = sorted((rcv - s.published_at.timestamp()) * 1000 for s, rcv in snaps)
    print(f"cadence over {len(deltas)} intervals of {args.interval:g} s: mean {statistics.mean(deltas):.4f} s, "
          f"stdev {statistics.pstdev(deltas) * 1000:.1f} ms, max |error| {max(errors_ms):.1f} ms, total drift {drift_ms:+.1f} ms")
    print(f"publish -> consumer receipt: p50 {lat_ms[len(lat_ms) // 2]:.1f} ms, max {lat_ms[-1]:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
