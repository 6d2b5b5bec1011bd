"""Tools timings: ledger throughput with durability on, tools process start-up to READY, and the
round trip of execute_trade from a calfkit agent.

    uv run python bench/tools_bench.py [--trades 5000] [--turns 20]

Starts a fresh embedded broker and tools_and_dashboard.py as a real process; the agent runs here,
driven by the tests' scripted (instant, offline) model, so the times are the arena's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena import kafka as k  # noqa: E402
from arena.broker import EmbeddedBroker, free_port  # noqa: E402
from arena.config import CONSUMER_TUNING, MARKET_TOPIC, KafkaSettings  # noqa: E402
from arena.desk import Desk  # noqa: E402
from arena.ledger import Ledger  # noqa: E402
from arena.market import MarketSnapshot, Quote  # noqa: E402
from tests.procs import Proc  # noqa: E402


def snapshot() -> MarketSnapshot:
    return MarketSnapshot(seq=1, quotes={
        "BTC-USD": Quote(product_id="BTC-USD", price=50_000, best_bid=50_000, best_ask=50_010),
        "FARTCOIN-USD": Quote(product_id="FARTCOIN-USD", price=1.2, best_bid=1.19, best_ask=1.21),
    })


def ledger_throughput(n: int, tmp: Path, synchronous: str) -> float:
    """Fills per second through Desk.execute_trade: idempotency lookup, validation, one commit each."""
    desk = Desk(Ledger(tmp / f"bench-{synchronous}.db", synchronous=synchronous))
    desk.quotes.update(snapshot())
    t0 = time.perf_counter()
    for i in range(n):
        side = "buy" if (i // 10) % 2 == 0 else "sell"  # each agent alternates buy, sell
        r = desk.execute_trade(f"agent{i % 10}", "FARTCOIN-USD", side, 10, call_key=f"k{i}")
        assert r["status"] == "filled", r
    rate = n / (time.perf_counter() - t0)
    desk.ledger.close()
    return rate


async def agent_round_trips(kafka: KafkaSettings, turns: int) -> tuple[list[float], float]:
    from calfkit import Agent, Client, Worker
    from calfkit.tuning import FanoutConfig, KTableReaderTuning

    import trading_tools
    from tests.scripted_model import ScriptedModel

    agent = Agent("bench_agent", system_prompt="bench", model_client=ScriptedModel(), tools=trading_tools.TOOLS)
    worker = Worker(Client.connect(kafka.bootstrap_servers), nodes=[agent], extra_subscribe_kwargs=dict(CONSUMER_TUNING),
                    fanout=FanoutConfig(reader_tuning=KTableReaderTuning(poll_timeout_ms=10, fetch_max_wait_ms=10)))
    client = Client.connect(kafka.bootstrap_servers)
    await worker.start()
    try:
        call = json.dumps([{"tool": "execute_trade", "args": {"product_id": "FARTCOIN-USD", "side": "buy", "quantity": 1}}])
        await client.agent("bench_agent").execute(call, timeout=30)  # warm-up
        times = []
        for _ in range(turns):
            t0 = time.perf_counter()
            out = json.loads((await client.agent("bench_agent").execute(call, timeout=30)).output)
            times.append(time.perf_counter() - t0)
            assert out["call_1"]["status"] == "filled", out
        t0 = time.perf_counter()
        await asyncio.gather(*(client.agent("bench_agent").execute(call, timeout=60) for _ in range(10)))
        return times, time.perf_counter() - t0
    finally:
        await worker.stop()
        await client.aclose()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trades", type=int, default=5000, help="fills for the ledger throughput (default %(default)s)")
    p.add_argument("--turns", type=int, default=20, help="agent turns for the round trip (default %(default)s)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("NORMAL", "FULL"):
            rate = ledger_throughput(args.trades, Path(tmp), sync)
            print(f"ledger: {rate:,.0f} fills/s (WAL, synchronous={sync}, one commit per fill, {args.trades} fills)")

        broker = EmbeddedBroker("127.0.0.1", free_port()).start()
        await broker.wait_ready()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        tools = None
        try:
            t0 = time.perf_counter()
            tools = Proc("tools_and_dashboard.py", "--no-dashboard", "--bootstrap-servers", broker.bootstrap,
                         "--ledger", str(Path(tmp) / "tools.db"))
            line = await asyncio.to_thread(tools.wait_for, "READY", 60)
            print(f"tools process: READY {time.perf_counter() - t0:.2f}s after launch (process start, imports, "
                  f"ledger, Kafka); {line.split('served in ')[1].split('s ')[0]}s of it serving the three tools")
            prod = k.producer(kafka)
            await prod.start()
            await prod.send_and_wait(MARKET_TOPIC, k.encode(snapshot()))
            await prod.stop()
            times, ten = await agent_round_trips(kafka, args.turns)
            print(f"agent turn with one execute_trade (2 model steps + the tool over Kafka): "
                  f"p50 {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over {len(times)} turns; "
                  f"10 concurrent turns: {ten:.2f}s")
        finally:
            if tools:
                tools.stop()
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
