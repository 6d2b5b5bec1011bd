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
import sys
from datetime import datetime, timezone

from arena import service
from arena.config import ACTIVITY_TOPIC, DECISIONS_TOPIC, add_kafka_args, kafka_settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="response_viewer.py",
        description="Show every agent's text responses, tool calls and tool results live, with each turn's "
        "market snapshot, outcome and latency. Starts at the newest events; agents started later appear "
        "on their own.",
    )
    p.add_argument(
        "--agent", action="append", metavar="NAME", help="show only this agent (repeatable; default: all agents)"
    )
    service.add_service_args(p)
    add_kafka_args(p)
    return p.parse_args(argv)


class Viewer(service.Service):
    """The viewer, run by arena.service: one group-less consumer on the activity and decisions topics."""

    what = "the viewer"
    log = logging.getLogger("arena.viewer")

    def __init__(self, args: argparse.Namespace):
        from rich.console import Console

        from arena.viewer import ActivityFeed

        super().__init__(kafka_settings(args), args.connect_timeout)
        self.console = Console(highlight=False)
        self.agents = set(args.agent or ())
        self.feed = ActivityFeed(self.agents or None, agent_width=max([10, *map(len, self.agents)]))
        self.consumer = None

    async def start(self) -> None:
        from arena import kafka as k

        # No group: nothing to join or commit, every viewer sees everything, and "latest" means now.
        # A person reads this: a 100 ms long-poll is instant enough and idles far cheaper than 10 ms.
        self.consumer = k.consumer(
            self.kafka, ACTIVITY_TOPIC, DECISIONS_TOPIC, group_id=None, latest=True, fetch_max_wait_ms=100
        )
        await self.consumer.start()
        await k.positioned([self.consumer])  # pin "newest" now: events from here on are shown

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    def ready(self, elapsed_s: float) -> str:
        who = ", ".join(sorted(self.agents)) if self.agents else "all agents"
        return f"READY watching {who} on {ACTIVITY_TOPIC} + {DECISIONS_TOPIC} (Ctrl-C to stop)"

    def startup_failed(self, exc) -> None:
        service.error(f"cannot read {ACTIVITY_TOPIC} from {self.kafka.bootstrap_servers}: {exc}")

    def show(self, r) -> None:
        from arena import kafka as k
        from arena.decisions import Decision

        now = datetime.now(timezone.utc)
        try:  # the record's own time, unless the writer set an impossible one
            at = min(datetime.fromtimestamp(r.timestamp / 1000, timezone.utc), now)
        except (OverflowError, OSError, ValueError, TypeError):
            at = now
        if r.topic == DECISIONS_TOPIC:
            decision = k.decode_record(Decision, r)
            rows = self.feed.on_decision(decision) if decision is not None else []
        else:
            rows = self.feed.on_activity(r.value, r.headers, at)
        for row in rows:
            self.console.print(row)

    async def pump(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=500)
            records = sorted(
                (r for rs in batches.values() for r in rs),
                key=lambda r: r.timestamp if isinstance(r.timestamp, int) else 0,
            )
            for r in records:
                try:
                    self.show(r)
                except Exception as exc:  # one record: the viewer goes on with the next
                    self.log.error(
                        "could not show the record on %s partition %s offset %s: %r",
                        r.topic,
                        r.partition,
                        r.offset,
                        exc,
                    )

    async def serve(self, stop: asyncio.Event) -> int:
        from arena import kafka as k

        task = asyncio.ensure_future(
            k.supervised("the viewer's feed", self.pump)
        )  # restarted if it fails; exit 1 if it keeps failing
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        waiter.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            service.error(f"lost the connection to {self.kafka.bootstrap_servers}: {exc}")
            return 1
        return 0


def build(argv: list[str] | None) -> Viewer:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    service.quiet_libraries(args.log_level)
    return Viewer(args)


def main(argv: list[str] | None = None) -> int:
    return service.main(lambda: build(argv))


if __name__ == "__main__":
    sys.exit(main())
