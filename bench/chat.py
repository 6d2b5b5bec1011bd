"""chat: a chat node's start-up (deploy_chat_node.py launch -> READY) and the round trip of one model
request from a router's RemoteChatModel through it to the offline policy server (an instant model) and
back, beside the policy server answering HTTP directly and the chat node's own provider time.

The request is a market turn (the rendered snapshot and the trading tools); --concurrency requests are
in flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.harness import Arena, Report, dist_ms, fmt_dist


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=100, help="round trips to time (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default %(default)s)")


async def run(args: argparse.Namespace, report: Report) -> int:
    import httpx

    from arena.chat import RemoteChatModel
    from arena.market import render_snapshot
    from tests.test_chat import PARAMS, first_turn
    from tests.test_policy_server import TOOLS, snapshot

    results: dict = {}
    async with Arena(report) as arena:
        await arena.policy_server()
        name = f"bench_{arena.run}"
        chat = await arena.chat_node(name, "momentum", "--log-level", "INFO").ready(120)
        results["chat_node_ready_s"] = round(chat.startup_s, 2)
        report.line(f"chat node launch -> READY: {chat.startup_s:.2f} s")

        async with httpx.AsyncClient() as h:
            body = {
                "model": "momentum",
                "messages": [{"role": "user", "content": render_snapshot(snapshot())}],
                "tools": TOOLS,
            }
            direct = []
            for _ in range(args.requests):
                t = time.perf_counter()
                (await h.post(arena.policy_url + "/chat/completions", json=body)).raise_for_status()
                direct.append(time.perf_counter() - t)
        results["policy_server_http_ms"] = dist_ms(direct)
        report.line(f"policy server, HTTP direct:           {fmt_dist(results['policy_server_http_ms'])}")

        model = RemoteChatModel(name, arena.kafka, timeout_s=30)
        try:
            t = time.perf_counter()
            await model.start()
            results["remote_model_start_ms"] = round((time.perf_counter() - t) * 1000, 1)
            t = time.perf_counter()
            await model.request(first_turn(), None, PARAMS)
            results["first_request_ms"] = round((time.perf_counter() - t) * 1000, 1)
            report.line(
                f"RemoteChatModel.start() {results['remote_model_start_ms']} ms; first request {results['first_request_ms']} ms"
            )
            sem = asyncio.Semaphore(args.concurrency)
            times: list[float] = []

            async def one() -> None:
                async with sem:
                    t = time.perf_counter()
                    await model.request(first_turn(), None, PARAMS)
                    times.append(time.perf_counter() - t)

            began = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(args.requests)))
            wall = time.perf_counter() - began
        finally:
            await model.stop()
        await asyncio.sleep(0.3)  # the node's last log lines
        node_s = [float(ln.split(" in ")[-1].split(" ms")[0]) / 1000 for ln in chat.lines if "served request" in ln][1:]
        results["round_trip_ms"] = dist_ms(times)
        results["provider_ms"] = dist_ms(node_s[-len(times) :])
        results["requests_per_s"] = round(args.requests / wall, 1)
        report.line(f"RemoteChatModel round trip (x{args.concurrency}):    {fmt_dist(results['round_trip_ms'])}")
        report.line(f"  of which the chat node's provider call: {fmt_dist(results['provider_ms'])}")
        report.line(f"throughput: {results['requests_per_s']:.0f} requests/s")
    report.emit(results)
    return 0
