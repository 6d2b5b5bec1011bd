"""Surviving a broker that comes back empty (docs/RELIABILITY.md, "The broker").

aiokafka reconnects to a broker that went away by itself, and with a durable broker that is all it
takes. The embedded broker keeps everything in memory, though: after a restart every topic, committed
offset, consumer group and calfkit control-plane record is gone, and clients that carry on from their
old positions, group generations and capability views stall. So each long-running process watches the
broker's *cluster id* — the embedded broker takes a fresh one at every start, as a new, empty cluster
should — and when it changes, the process restarts itself in place: it stops as on Ctrl-C, then
`exec`s its own command line (same pid, same output, same flags) and starts exactly as it did the first
time. Money is safe across this (the ledger is on disk and every call is idempotent); a turn in flight
at that moment is lost, like a turn in flight when a router is killed.

A broker whose cluster id stays the same kept its state (a real Kafka cluster, or Tansu on durable
storage), and nothing is restarted.

Waiting for the new broker to answer is too late, though: old clients reconnect to it at once and write
on with the partitions they knew, which the embedded broker mishandles (arena/compat/tansu.py). So with
one PLAINTEXT broker (the embedded broker's set-up) the watch also holds an idle TCP connection to it:
a broker process that dies closes it, and if the address then refuses connections the broker is gone.
The process is told at once, before any broker is back, and restarts in place; the fresh process waits
for the broker however long it takes (`awaiting_lost_broker`) and creates its topics the ordinary way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from collections.abc import Callable

from arena.compat import tansu
from arena.config import KafkaSettings

log = logging.getLogger(__name__)
WATCH_TOPIC = "arena.broker-watch"  # asked about, never created: see BrokerWatch._read_id
AWAIT_ENV = "ARENA_AWAITING_LOST_BROKER"  # set across restart_in_place after the broker went away


class BrokerWatch:
    """Polls the broker's cluster id and calls `on_replaced(reason)` whenever a different broker answers,
    and (one PLAINTEXT broker) the moment the broker process goes away.

    `on_lost(reason)`, if given, is called instead when the broker goes away: for a part that renews its
    clients in place (waiting for a broker to answer); the watch then compares with whichever broker
    answers. Both may be coroutine functions: the watch awaits them before it looks again. `await start()` reads the id it
    starts with (the process is connected by then, so this is quick); the watch then runs in the
    background until `stop()`. A broker that does not answer but still holds its connections (a stall,
    a network outage) is simply waited for. `stop`: the process's stop event; once it is set nothing
    more is reported (a broker stopped together with its parts is no reason to restart them).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        on_replaced: Callable[[str], object],
        *,
        on_lost: Callable[[str], object] | None = None,
        stop: asyncio.Event | None = None,
        interval_s: float = 1.0,
    ):
        self.kafka = kafka
        self.on_replaced = on_replaced
        self.on_lost = on_lost
        self.stop_requested = stop  # once set (Ctrl-C, SIGTERM) nothing more is reported: the process ends
        self.interval_s = interval_s
        self.cluster_id: str | None = None
        self.replaced: str | None = None  # the reason, once it happened
        self.gone = False  # the broker process went away (not merely replaced, as seen once it answered)
        self._client = None
        self._tasks: list[asyncio.Task] = []
        self._telling = asyncio.Lock()  # one callback at a time: the two watchers may both notice

    async def start(self) -> None:
        from aiokafka import AIOKafkaClient

        self._client = AIOKafkaClient(**self.kafka.aiokafka_kwargs(), request_timeout_ms=5000)
        await self._client.bootstrap()
        self.cluster_id = await self._read_id()
        self._tasks = [asyncio.create_task(self._watch(), name="broker-watch")]
        address = self._single_plaintext_broker()
        if address is not None:
            self._tasks.append(asyncio.create_task(self._watch_connection(*address), name="broker-connection"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        tasks = [t for t in tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _read_id(self) -> str:
        node = self._client.get_random_node()
        if node is None:
            raise ConnectionError("no broker known")
        response = await self._client.send(node, tansu.metadata_probe(WATCH_TOPIC))  # every second: kept small
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
                log.warning(
                    "broker at %s answers again after %.1fs", self.kafka.bootstrap_servers, loop.time() - down_since
                )
                down_since = None
            if current != self.cluster_id:
                await self._tell(
                    self.on_replaced,
                    f"the Kafka broker at {self.kafka.bootstrap_servers} was restarted without its data "
                    f"(cluster id {self.cluster_id} -> {current})",
                    current,
                )

    def _single_plaintext_broker(self) -> tuple[str, int] | None:
        servers = [s.strip() for s in self.kafka.bootstrap_servers.split(",") if s.strip()]
        if len(servers) != 1 or self.kafka.security_protocol != "PLAINTEXT":
            return None  # a cluster outlives one broker; a TLS/SASL listener may drop idle connections
        host, _, port = servers[0].rpartition(":")
        return (host.strip("[]") or "localhost", int(port)) if port.isdigit() else None

    async def _watch_connection(self, host: str, port: int) -> None:
        """Hold an idle connection to the broker; when it closes and the address refuses a new one, the
        broker process is gone (a stalled one keeps both)."""
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                gone = True
            else:
                try:
                    await reader.read()  # a Kafka broker never speaks first: this returns when it closes
                except OSError:
                    pass
                finally:
                    writer.close()
                try:  # closed; gone, or only this idle connection dropped?
                    _, probe = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                    probe.close()
                    gone = False
                except (OSError, asyncio.TimeoutError):
                    gone = True
            if not gone:
                await asyncio.sleep(self.interval_s)  # a broker that drops idle connections is not hammered
                continue
            reason = (
                f"the Kafka broker at {self.kafka.bootstrap_servers} went away (it closed its connections "
                f"and refuses new ones; an in-memory broker comes back empty)"
            )
            self.gone = True
            if self.on_lost is None:
                await self._tell(self.on_replaced, reason)
                return
            await self._tell(self.on_lost, reason, renewed=True)

    async def _tell(
        self, callback: Callable[[str], object], reason: str, cluster_id: str | None = None, renewed: bool = False
    ) -> None:
        """Call `callback(reason)`. cluster_id: the new broker's (skip if already reported). renewed: the
        callback renewed the clients, so whatever broker answers now is the one to compare with."""
        async with self._telling:
            if self.replaced is not None and self.on_lost is None:
                return  # the process is restarting already
            if self.stop_requested is not None and self.stop_requested.is_set():
                return  # everything is being stopped at once (the broker too): exit, do not restart
            if cluster_id is not None:
                if cluster_id == self.cluster_id:
                    return  # the other watcher reported it and renewed
                self.cluster_id = cluster_id
            self.replaced = reason
            result = callback(reason)
            if inspect.isawaitable(result):
                await result
            while renewed:
                try:
                    self.cluster_id = await self._read_id()
                    break
                except Exception:  # answering, but perhaps not to this request yet
                    await asyncio.sleep(0.2)


def awaiting_lost_broker() -> bool:
    """Whether this process was restarted in place because its broker went away (asked once: the answer
    is for this start-up only). Such a start waits for the broker however long it takes."""
    return os.environ.pop(AWAIT_ENV, None) == "1"


def restart_in_place(watch: BrokerWatch | None = None) -> None:
    """Replace this process with a fresh run of its own command line (same pid, output and environment).
    After `watch` saw the broker go away, the fresh process waits for it without a time limit."""
    if watch is not None and watch.gone:
        os.environ[AWAIT_ENV] = "1"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
