"""Router timings: deploy_router_node.py start-up to READY, and tick -> decision latency with an
instant model (the offline policy server behind a chat node), with and without trades.

    uv run python bench/router_bench.py [--ticks 30] [--interval 1.0] [--model momentum]

Starts a fresh embedded broker, `arena policy-server`, `deploy_chat_node.py`, `tools_and_dashboard.py`
and one router as real processes, publishes market snapshots and reads the router's decisions.
Latency = decision finished_at - snapshot published_at (one clock: everything runs on this machine).
A turn of the momentum policy is 2 model calls + get_portfolio, or 3 model calls + the trades.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.broker import EmbeddedBroker, free_port  # noqa: E402
from arena.config import KafkaSettings  # noqa: E402
from tests.procs import Proc  # noqa: E402
from tests.test_router import Watcher, snapshot  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ticks", type=int, default=30, help="snapshots to publish (default %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots (default %(default)s)")
    p.add_argument("--model", default="momentum", help="policy server model behind the chat node (default %(default)s)")
    args = p.parse_args()

    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    await broker.wait_ready()
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "OPENAI_API_KEY": "bench"}
    port = free_port()
    run = uuid.uuid4().hex[:5]
    procs = [
        Proc("-m", "arena.cli", "policy-server", "--port", str(port), env=env),
        Proc("deploy_chat_node.py", "--name", f"bench_{run}", "--model-id", args.model, "--base-url", f"http://127.0.0.1:{port}/v1", env=env),
        Proc("tools_and_dashboard.py", "--no-dashboard", "--ledger", f"/tmp/router_bench_{run}.db", "--status-every", "3600", env=env),
    ]
    watcher = Watcher(KafkaSettings(bootstrap_servers=broker.bootstrap))
    try:
        for proc in procs:
            proc.wait_ready(120)
        name = f"bench_{run}"
        t0 = time.monotonic()
        router = Proc("deploy_router_node.py", "--name", name, "--chat-node-name", f"bench_{run}", "--strategy", "momentum", env=env)
        procs.append(router)
        router.wait_ready(120)
        ready_s = time.monotonic() - t0
        connect_line = next(line for line in router.lines if "READY" in line)
        await watcher.start()
        for i in range(args.ticks):  # a jump every 5th tick: momentum buys, then sells on the way back
            await watcher.publish(snapshot(i, jump=1.02 if i % 10 in (5, 6, 7, 8, 9) else 1.0))
            await asyncio.sleep(args.interval)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not watcher.of(name, "done", "error", "timeout", seqs={args.ticks - 1}):
            await asyncio.sleep(0.1)
        done = watcher.of(name, "done")
        failed = watcher.of(name, "error", "timeout")
        skipped = watcher.of(name, "skipped")
        fills = [t.executed_at for t in watcher.trades if t.agent == name and t.status == "filled"]
        traded = [d for d in done if any(d.started_at <= at <= d.finished_at for at in fills)]
        quiet = [d for d in done if d not in traded]
        lat = lambda ds: [(d.finished_at - d.tick_published_at).total_seconds() for d in ds]  # noqa: E731
        print(f"router start-up to READY: {ready_s:.2f}s (process launch incl. imports); router's own line: {connect_line}")
        print(f"turns: {len(done)} done, {len(failed)} failed, {len(skipped)} skipped of {args.ticks} ticks")
        for label, ds in (("all turns", done), ("turns with trades", traded), ("turns without trades", quiet)):
            xs = lat(ds)
            if xs:
                print(f"tick -> decision done, {label} (n={len(xs)}): p50 {statistics.median(xs) * 1000:.0f} ms, "
                      f"p90 {pct(xs, 0.9) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms")
        return 0 if done and not failed else 1
    finally:
        await watcher.stop()
        for proc in reversed(procs):
            proc.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
