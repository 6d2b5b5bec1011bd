"""Surviving a broker that comes back empty.

aiokafka reconnects to a broker that went away by itself, and with a durable broker that is all it
takes. The embedded broker keeps everything in memory, though: after a restart every topic, committed
offset, consumer group and calfkit control-plane record is gone, and clients that carry on from their
old positions, group generations and capability views stall for minutes (measured: no agent turn
finished within 100 s). So each long-running process watches the broker's *cluster id* — the embedded
broker takes a fresh one at every start, as a new, empty cluster should — and when it changes, the
process restarts itself in place: it stops as on Ctrl-C, then `exec`s its own command line (same pid,
same output, same flags) and starts exactly as it did the first time. Money is safe across this
(the ledger is on disk and every call is idempotent); a turn in flight at that moment is lost, like a
turn in flight when a router is killed.

A broker whose cluster id stays the same kept its state (a real Kafka cluster, or Tansu on durable
storage), and nothing is restarted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from collections.abc import Callable

from arena.config import KafkaSettings

log = logging.getLogger(__name__)
WATCH_TOPIC = "arena.broker-watch"  # asked about, never created: see BrokerWatch._read_id


class BrokerWatch:
    """Polls the broker's cluster id and calls `on_replaced(reason)` whenever a different broker answers.

    `on_replaced` may be a coroutine function: the watch awaits it before it looks again. `await start()`
    reads the id it starts with (the process is connected by then, so this is quick); the watch then
    runs in the background until `stop()`. An unreachable broker is simply waited for, polled faster
    so that a process reacts before its old clients have written much into the new broker.
    """

    def __init__(self, kafka: KafkaSettings, on_replaced: Callable[[str], object], *, interval_s: float = 1.0):
        self.kafka = kafka
        self.on_replaced = on_replaced
        self.interval_s = interval_s
        self.cluster_id: str | None = None
        self.replaced: str | None = None  # the reason, once it happened
        self._client = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaClient

        self._client = AIOKafkaClient(**self.kafka.aiokafka_kwargs(), request_timeout_ms=5000)
        await self._client.bootstrap()
        self.cluster_id = await self._read_id()
        self._task = asyncio.create_task(self._watch(), name="broker-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _read_id(self) -> str:
        from aiokafka.protocol.metadata import MetadataRequest

        node = self._client.get_random_node()
        if node is None:
            raise ConnectionError("no broker known")
        # One topic that never exists, not created: Tansu answers an empty topic list with every topic
        # (hundreds with many agents, decoded every second by every process); the cluster id comes either way.
        response = await self._client.send(node, MetadataRequest([WATCH_TOPIC], allow_auto_topic_creation=False))
        return response.cluster_id

    async def _watch(self) -> None:
        down_since = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s if down_since is None else min(self.interval_s, 0.2))
            try:
                current = await self._read_id()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # down, or coming back: keep asking
                if down_since is None:
                    down_since = loop.time()
                    log.warning("broker at %s not answering (%s); waiting for it", self.kafka.bootstrap_servers, exc)
                continue
            if down_since is not None:
                log.warning("broker at %s answers again after %.1fs", self.kafka.bootstrap_servers, loop.time() - down_since)
                down_since = None
            if current != self.cluster_id:
                self.replaced = (
                    f"the Kafka broker at {self.kafka.bootstrap_servers} was restarted without its data "
                    f"(cluster id {self.cluster_id} -> {current})"
                )
                self.cluster_id = current
                result = self.on_replaced(self.replaced)
                if inspect.isawaitable(result):
                    await result


def restart_in_place() -> None:
    """Replace this process with a fresh run of its own command line (same pid, output and environment)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
