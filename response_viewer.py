#!/usr/bin/env python
"""Watch every agent think and trade, live: each model text, tool call (with its arguments) and tool
result as it happens, each turn's market and outcome, model errors, timeouts and rejected orders.

    uv run response_viewer.py                    # every agent, including ones started later
    uv run response_viewer.py --agent alice      # only alice (repeatable)

Reads the shared activity and decisions topics without a consumer group, from their newest records.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import datetime, timezone

from arena.config import ACTIVITY_TOPIC, DECISIONS_TOPIC, add_kafka_args, kafka_settings
from arena.reconnect import BrokerWatch, restart_in_place
from arena.startup import StartupFailed, start_patiently


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="response_viewer.py",
        description="Show every agent's text responses, tool calls and tool results live, with each turn's "
        "market snapshot, outcome and latency. Starts at the newest events; agents started later appear "
        "on their own.",
    )
    p.add_argument("--agent", action="append", metavar="NAME", help="show only this agent (repeatable; default: all agents)")
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS", help="seconds to keep trying to reach the broker (not there yet, or just restarted) before giving up; once running, a broker that goes away is waited for without limit (default %(default)s)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level on stderr (default %(default)s)")
    add_kafka_args(p)
    return p.parse_args(argv)


def status(msg: str) -> None:
    print(msg, flush=True)


async def view(args: argparse.Namespace) -> int:
    from rich.console import Console

    from arena import kafka as k
    from arena.decisions import Decision
    from arena.viewer import ActivityFeed

    kafka = kafka_settings(args)
    console = Console(highlight=False)
    agents = set(args.agent or ())
    feed = ActivityFeed(agents or None, agent_width=max([10, *map(len, agents)]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    status(f"Connecting to Kafka at {kafka.bootstrap_servers} ...")
    # A broker that goes away or comes back empty (in-memory) is met by restarting this process in place.
    watch = BrokerWatch(kafka, lambda why: (status(f"{why}: restarting the viewer in place"), stop.set()), stop=stop)
    consumer = None

    async def attempt() -> None:
        nonlocal consumer
        # No group: nothing to join or commit, every viewer sees everything, and "latest" means now.
        # A person reads this: a 100 ms long-poll is instant enough and idles far cheaper than 10 ms.
        consumer = k.consumer(kafka, ACTIVITY_TOPIC, DECISIONS_TOPIC, group_id=None, latest=True, fetch_max_wait_ms=100)
        await consumer.start()
        await k.positioned([consumer])  # pin "newest" now: events from here on are shown
        await watch.start()

    async def undo() -> None:
        await watch.stop()
        if consumer is not None:
            await consumer.stop()

    try:
        if not await start_patiently(attempt, undo, stop=stop, timeout_s=args.connect_timeout, what="the viewer", status=status):
            return 0
    except StartupFailed as exc:
        print(f"error: cannot read {ACTIVITY_TOPIC} from {kafka.bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    who = ", ".join(sorted(agents)) if agents else "all agents"
    status(f"READY watching {who} on {ACTIVITY_TOPIC} + {DECISIONS_TOPIC} (Ctrl-C to stop)")

    def show(r) -> None:
        now = datetime.now(timezone.utc)
        try:  # the record's own time, unless the writer set an impossible one
            at = min(datetime.fromtimestamp(r.timestamp / 1000, timezone.utc), now)
        except (OverflowError, OSError, ValueError, TypeError):
            at = now
        if r.topic == DECISIONS_TOPIC:
            decision = k.decode_record(Decision, r)
            rows = feed.on_decision(decision) if decision is not None else []
        else:
            rows = feed.on_activity(r.value, r.headers, at)
        for row in rows:
            console.print(row)

    async def pump() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            records = sorted((r for rs in batches.values() for r in rs), key=lambda r: r.timestamp if isinstance(r.timestamp, int) else 0)
            for r in records:
                try:
                    show(r)
                except Exception as exc:  # one record: the viewer goes on with the next
                    logging.getLogger("arena.viewer").error("could not show the record on %s partition %s offset %s: %r", r.topic, r.partition, r.offset, exc)

    task = asyncio.ensure_future(k.supervised("the viewer's feed", pump))  # restarted if it fails; exit 1 if it keeps failing
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    waiter.cancel()
    code = 0
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        print(f"error: lost the connection to {kafka.bootstrap_servers}: {exc}", file=sys.stderr)
        code = 1
    await watch.stop()
    if watch.replaced:  # its consumer reads a broker that is gone: nothing to stop gracefully
        restart_in_place(watch)
    await consumer.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(view(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
