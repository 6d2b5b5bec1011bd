"""Chat node side: ChatNode serves one name's request topic with a provider model."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaConnectionError

from arena import kafka as k
from arena import polling
from arena.chat.consume import consume
from arena.chat.provider import describe_failure, forwarded_settings, redact_url, redactor
from arena.chat.wire import REPLY_TOPIC_RE, ChatReply, ChatRequest, _ReplyAddress, chat_group_id, check_name, usage_of
from arena.compat.vendored_pydantic_ai import (
    Model,
)
from arena.config import KafkaSettings, chat_request_topic
from arena.market import utcnow
from arena.pricing import Pricer

log = logging.getLogger("arena.chat")  # one logger for the package


NEXT_REQUEST_S = 1.0  # short this long after a reply: the turn's next request follows it (the router's tool calls)


class ChatNode:
    """Serves one chat node name: consumes its request topic and answers with `model` (any pydantic-ai Model).

    Replicas (same name, same group) split the topic's partitions. Every request is acknowledged as soon
    as it is taken; at most `max_workers` provider calls run at once; each request gets a response or a
    clear error, and one that waited past its router's timeout is answered "expired" rather than served.
    At most `max_pending` requests are taken at once (running or waiting for a worker); one beyond that
    is answered at once with a retryable "busy" error instead of queueing without bound: its router
    hears it in milliseconds rather than waiting out its timeout behind a flood.
    Replies go only to router reply topics (arena.chat.replies.*): a request naming any other topic is
    not served. Only FORWARDED_SETTINGS reach the provider.
    Secrets in `secrets` (and anything shaped like an API key) never leave the node.
    """

    def __init__(
        self,
        name: str,
        model: Model,
        kafka: KafkaSettings,
        *,
        max_workers: int = 8,
        max_pending: int | None = None,
        timeout_s: float = 90.0,
        base_url: str = "",
        secrets: tuple[str | None, ...] = (),
        pricer: Pricer | None = None,
    ):
        check_name(name)
        if max_workers < 1 or timeout_s <= 0:
            raise ValueError("max_workers must be >= 1 and timeout_s positive")
        self.max_pending = max_pending if max_pending is not None else 4 * max_workers
        if self.max_pending < max_workers:
            raise ValueError("max_pending must be at least max_workers")
        self.name = name
        self.model = model
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.base_url = redact_url(base_url)
        self.pricer = pricer or Pricer(model.model_name, base_url=base_url or None)
        self.redact = redactor(*secrets)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.topic = chat_request_topic(name)
        self.group_id = chat_group_id(name)
        self.served = 0
        self.failed = 0
        self._workers = asyncio.Semaphore(max_workers)
        self._requests: set[asyncio.Task] = set()  # taken and not yet answered (at most max_pending)
        self._tasks: set[asyncio.Task] = set()
        self._dropped_settings: set[str] = set()
        self._producer = None
        self._consumer = None

    async def start(self, status: Callable[[str], None] = lambda s: None, join_timeout_s: float = 60.0) -> None:
        """Connect, create the request topic, join the group and resolve positions; then it is safe to say READY."""
        status(f"connecting to Kafka at {self.kafka.bootstrap_servers} ...")
        self._producer = k.producer(self.kafka)
        try:
            await self._producer.start()
        except KafkaConnectionError:
            raise ConnectionError(
                f"cannot reach Kafka at {self.kafka.bootstrap_servers}: is the broker running? (uv run arena broker)"
            ) from None
        # The topic must exist before subscribing, or the group would only notice it minutes later.
        await self._producer.send_and_wait(self.topic, b"")
        status(f"joining consumer group {self.group_id} on {self.topic} ...")
        assigned = asyncio.Event()

        class _Joined(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                pass

            async def on_partitions_assigned(self, partitions):
                assigned.set()

        # A group's first start reads from the earliest request: a router may send before this node has
        # joined (every part starts at once), and a request too old to serve is answered "expired".
        # Later starts resume at the group's committed offsets. Auto-commit also commits before every
        # rebalance, so a partition moving to another replica resumes where this one stopped.
        self._consumer = k.consumer(self.kafka, group_id=self.group_id, latest=False)
        self._consumer.subscribe([self.topic], listener=_Joined())
        await self._consumer.start()
        await asyncio.wait_for(assigned.wait(), join_timeout_s)
        partitions = self._consumer.assignment()
        positions = {tp: await self._consumer.position(tp) for tp in partitions}  # resolved now
        if positions:  # committed at once: a member evicted before its first auto-commit rejoins here
            await self._consumer.commit(positions)
        if not partitions:
            log.warning("no partitions assigned (more replicas than partitions?): this replica stands by")

    async def serve(self) -> None:
        """Take requests until cancelled."""
        await consume(self._consumer, self._take, reading="fetching requests", item="the request")

    async def _take(self, record) -> None:
        if not record.value:
            return  # a topic warm-up record
        req = k.decode_record(ChatRequest, record)
        if req is None:
            self._tell_malformed(record.value)
            return
        age = (utcnow() - req.sent_at).total_seconds()
        if age > req.timeout_s:
            log.info(
                "dropping request %s from %s: %.0fs old, its router stopped waiting",
                req.request_id[:8],
                req.sender,
                age,
            )
            return
        if len(self._requests) >= self.max_pending:
            log.warning(
                "busy: answering request %s from %s with an error (%d requests taken already)",
                req.request_id[:8],
                req.sender,
                len(self._requests),
            )
            reply = self._error(
                req, f"the chat node is busy ({self.max_pending} requests in hand); try again", "busy", retryable=True
            )
            await self._deliver(req.reply_to, reply)  # inline: a flood is read no faster than it is answered
            return
        self._send(
            req.reply_to,
            self._reply(req.request_id, "accepted"),
        )
        task = self._spawn(self._serve_one(req))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _tell_malformed(self, raw: bytes) -> None:
        try:
            addr = _ReplyAddress.model_validate_json(raw)
        except ValueError:
            return  # not even a valid address (or one outside arena.chat.replies.*): logged already, nothing more to do
        self._send(
            addr.reply_to,
            self._reply(
                addr.request_id,
                "error",
                error_type="malformed",
                error="the chat node could not read the request (router and chat node versions differ?)",
            ),
        )

    async def _serve_one(self, req: ChatRequest) -> None:
        # Short fetches while a provider call runs and for NEXT_REQUEST_S after its reply: the turn's
        # next request follows that reply, however long the provider took (arena.polling).
        pacer = polling.PACER
        pacer.busy()
        try:
            await self._serve(req)
        finally:
            pacer.idle(follow_s=NEXT_REQUEST_S)

    async def _serve(self, req: ChatRequest) -> None:
        try:
            async with self._workers:
                remaining = req.timeout_s - (utcnow() - req.sent_at).total_seconds()
                if remaining <= 0.5:
                    reply = self._error(
                        req,
                        "the chat node was too busy to start before the router's timeout",
                        "expired",
                        retryable=True,
                    )
                else:
                    reply = await self._call_provider(req, min(self.timeout_s, remaining))
        except asyncio.CancelledError:
            self._send(
                req.reply_to,
                self._error(req, "the chat node stopped while serving the request", "stopped", retryable=True),
            )
            raise
        self._send(req.reply_to, reply)

    async def _call_provider(self, req: ChatRequest, timeout_s: float) -> ChatReply:
        settings, dropped = forwarded_settings(req.model_settings)
        if new := set(dropped) - self._dropped_settings:  # once per key: a router may send the same every time
            self._dropped_settings |= new
            log.warning(
                "not forwarding model setting(s) %s from %s to the provider (not allowed, or out of range)",
                ", ".join(sorted(new)),
                req.sender,
            )
        settings["timeout"] = timeout_s
        t0 = time.monotonic()
        try:
            response = await asyncio.wait_for(
                self.model.request(req.messages, settings, req.parameters), timeout_s + 1.0
            )
        except Exception as exc:
            msg, error_type, status_code, retryable = describe_failure(exc, base_url=self.base_url, timeout_s=timeout_s)
            self.failed += 1
            reply = self._error(req, msg, error_type, status_code=status_code, retryable=retryable)
            reply.elapsed_ms = (time.monotonic() - t0) * 1000
            log.warning(
                "request %s from %s failed after %.0f ms: %s",
                req.request_id[:8],
                req.sender,
                reply.elapsed_ms,
                reply.error,
            )
            return reply
        self.served += 1
        elapsed = (time.monotonic() - t0) * 1000
        calls = sum(1 for p in response.parts if getattr(p, "part_kind", "") == "tool-call")
        usage = usage_of(response, self.pricer)
        log.info(
            "served request %s from %s in %.0f ms (%d tool calls, %d+%d tokens)",
            req.request_id[:8],
            req.sender,
            elapsed,
            calls,
            usage.input_tokens,
            usage.output_tokens,
        )
        return self._reply(
            req.request_id,
            "response",
            response=response,
            model=response.model_name or self.model.model_name,
            elapsed_ms=elapsed,
            usage=usage,
        )

    def _error(
        self,
        req: ChatRequest,
        message: str,
        error_type: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
    ) -> ChatReply:
        return self._reply(
            req.request_id,
            "error",
            error=self.redact(message),
            error_type=error_type,
            status_code=status_code,
            retryable=retryable,
        )

    def _reply(self, request_id: str, kind: str, **fields) -> ChatReply:
        """A reply from this replica; `model` is the node's unless `fields` name the one that served."""
        fields.setdefault("model", self.model.model_name)
        return ChatReply(request_id=request_id, chat_node=self.name, replica=self.replica, kind=kind, **fields)

    async def _deliver(self, topic: str, reply: ChatReply) -> None:
        if not REPLY_TOPIC_RE.match(topic):  # the models check it already; a reply never goes anywhere else
            log.error(
                "not sending the %s reply for %s to %r: not a reply topic", reply.kind, reply.request_id[:8], topic[:80]
            )
            return
        try:
            await self._producer.send_and_wait(topic, k.encode(reply), key=reply.request_id.encode())
        except Exception as exc:
            log.error(
                "could not send the %s reply for %s to %s: %s",
                reply.kind,
                reply.request_id[:8],
                topic,
                self.redact(str(exc)),
            )
            if reply.kind == "response":  # e.g. too large: tell the router instead of letting it time out
                failed = reply.model_copy(
                    update={
                        "kind": "error",
                        "response": None,
                        "error_type": "internal",
                        "error": self.redact(f"the chat node could not deliver the response: {exc}"),
                    }
                )
                self._send(topic, failed)

    def _send(self, topic: str, reply: ChatReply) -> None:
        self._spawn(self._deliver(topic, reply))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self, grace_s: float = 5.0) -> None:
        """Leave the group, let in-flight requests finish for up to `grace_s`, tell the others' routers."""
        if self._consumer is not None:
            await self._consumer.stop()  # commits and leaves: the other replicas take over its partitions
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            if self._tasks:  # the "stopped" replies just queued
                await asyncio.wait(set(self._tasks), timeout=2.0)
        if self._producer is not None:
            await self._producer.stop()
        self._consumer = self._producer = None  # stopping twice is harmless
