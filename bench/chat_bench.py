"""Chat node timings: deploy_chat_node.py start-up to READY, and RemoteChatModel round trips through it.

    uv run python bench/chat_bench.py [--requests 100] [--concurrency 1]

Starts a fresh embedded broker, `arena policy-server` and `deploy_chat_node.py` as real processes,
then sends a market-turn request (the rendered snapshot, two tools) from this process over Kafka.
The policy server's own time per request is reported beside it.
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

import httpx  # noqa: E402

from arena.broker import EmbeddedBroker, free_port  # noqa: E402
from arena.chat import RemoteChatModel  # noqa: E402
from arena.config import KafkaSettings  # noqa: E402
from arena.market import render_snapshot  # noqa: E402
from tests.procs import Proc  # noqa: E402
from tests.test_chat import PARAMS, first_turn  # noqa: E402
from tests.test_policy_server import TOOLS, snapshot  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def line(label: str, xs: list[float]) -> str:
    return f"{label:<34} p50 {pct(xs, 0.5):7.2f} ms   p99 {pct(xs, 0.99):7.2f} ms   mean {statistics.fmean(xs):7.2f} ms   (n={len(xs)})"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100, help="round trips to time (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default %(default)s)")
    args = p.parse_args()

    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    await broker.wait_ready()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    policy = chat = None
    model = RemoteChatModel("bench", kafka, timeout_s=30)
    try:
        policy = Proc("-m", "arena.cli", "policy-server", "--port", str(port), env=env).wait_ready(30)
        t0 = time.monotonic()
        chat = Proc("deploy_chat_node.py", "--name", "bench", "--model-id", "momentum", "--base-url", url, "--log-level", "INFO", env=env)
        chat.wait_ready(60)
        print(f"chat node start-up to READY: {time.monotonic() - t0:.2f} s")

        async with httpx.AsyncClient() as h:
            body = {"model": "momentum", "messages": [{"role": "user", "content": render_snapshot(snapshot())}], "tools": TOOLS}
            direct = []
            for _ in range(args.requests):
                t = time.perf_counter()
                (await h.post(url + "/chat/completions", json=body)).raise_for_status()
                direct.append((time.perf_counter() - t) * 1000)
        print(line("policy server (HTTP, direct)", direct))

        t = time.perf_counter()
        await model.start()
        print(f"RemoteChatModel.start(): {(time.perf_counter() - t) * 1000:.1f} ms")
        t = time.perf_counter()
        await model.request(first_turn(), None, PARAMS)
        await asyncio.sleep(0.2)
        served = next((ln for ln in chat.lines if "served request" in ln), "")
        print(f"first request: {(time.perf_counter() - t) * 1000 - 200:.1f} ms (chat node: {served.split(' in ')[-1]})")
        sem = asyncio.Semaphore(args.concurrency)
        times: list[float] = []

        async def one() -> None:
            async with sem:
                t = time.perf_counter()
                await model.request(first_turn(), None, PARAMS)
                times.append((time.perf_counter() - t) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(args.requests)))
        wall = time.perf_counter() - began
        print(line(f"RemoteChatModel round trip (x{args.concurrency})", times))
        await asyncio.sleep(0.3)
        node_ms = [float(ln.split(" in ")[-1].split(" ms")[0]) for ln in chat.lines if "served request" in ln][1:]
        print(line("  of which the provider call", node_ms[-len(times):]))
        print(f"throughput: {args.requests / wall:.0f} requests/s")
    finally:
        await model.stop()
        for proc in (chat, policy):
            if proc:
                proc.stop()
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
