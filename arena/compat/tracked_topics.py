"""Keep every topic a producer writes to in its client's metadata.

Symptom: aiokafka 0.14's `AIOKafkaClient._wait_on_metadata(topic)` (every `send` calls it) returns at
once when the client's cluster view already has the topic's partitions, without adding the topic to
the topics the client tracks (`_topics`). While that set is empty, each metadata update asks for every
topic, so a young producer knows every topic of the broker without tracking any. The first send to a
topic it did not know adds that one; from then on an update asks for the tracked topics only and
replaces the whole view, so the others drop out of it. A batch already accepted for one of them has
no leader any more: the sender asks for metadata again and again (a busy loop on both sides) without
that topic, until a later send to the same topic adds it or the batch expires after
`request_timeout_ms` (40 s) with NotLeaderForPartitionError.
In the arena: the tools process answers a tool call on the calling agent's return topic. Its tool's
producer knew that topic from its first, all-topics update and did not track it; when another agent's
call added a topic, the answer hung until the agent's turn timed out and its next turn (a new send to
the topic) released it (docs/RELIABILITY.md, "A turn that stalls").
Fix: `_wait_on_metadata` tracks the topic before anything else. The tracked set is replaced, not
changed in place, so an update already in flight without it sees the change and is followed at once
by one with it.
Can go when aiokafka tracks a topic on every send (the canary in tests/test_tracked_topics.py then fails).
"""

from __future__ import annotations

from aiokafka.client import AIOKafkaClient

_original = AIOKafkaClient._wait_on_metadata


async def _wait_on_metadata(self: AIOKafkaClient, topic: str):
    if topic not in self._topics:
        self._topics = {*self._topics, topic}
    return await _original(self, topic)


_wait_on_metadata.__wrapped__ = _original  # type: ignore[attr-defined]


def install() -> None:
    """Once per process (idempotent)."""
    AIOKafkaClient._wait_on_metadata = _wait_on_metadata  # type: ignore[method-assign]


def uninstall() -> None:
    """aiokafka's own behaviour again (the canary test shows what it does)."""
    AIOKafkaClient._wait_on_metadata = _original  # type: ignore[method-assign]
