"""Router side: RemoteChatModel, a pydantic-ai model that thinks through a named chat node over Kafka."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from aiokafka import TopicPartition

from arena import kafka as k
from arena import polling
from arena.chat.consume import consume
from arena.chat.wire import ChatReply, ChatRequest, TokenUsage, check_name, usage_of
from arena.compat.vendored_pydantic_ai import (
    Model,
    ModelAPIError,
    ModelMessage,
    ModelRequestParameters,
    ModelResponse,
    ModelSettings,
    get_current_run_context,
)
from arena.config import KafkaSettings, chat_reply_topic, chat_request_topic
from arena.decisions import TURN_KEY

log = logging.getLogger("arena.chat")  # one logger for the package

DEFAULT_ACK_TIMEOUT_S = 30.0
DEFAULT_TIMEOUT_S = 120.0
MAX_OPEN_TURNS = 1024  # turns whose usage is kept until their router takes it


class ChatNodeError(ModelAPIError):
    """A model request through a chat node failed; `str(exc)` says why (never a secret).

    A ModelAPIError (pydantic-ai's "provider request failed"), so a calfkit Agent run fails with it
    as a fault (`NodeFaultError`, report.exception.type == "ChatNodeError") instead of hanging.
    `kind`: "unavailable" (no node took the request), "timeout", "kafka", or the node's error_type.
    """

    def __init__(
        self,
        chat_node: str,
        message: str,
        *,
        kind: str = "error",
        status_code: int | None = None,
        retryable: bool = False,
    ):
        super().__init__(model_name=f"chat-node:{chat_node}", message=message)
        self.chat_node = chat_node
        self.kind = kind
        self.status_code = status_code
        self.retryable = retryable


# ------------------------------------------------------------------------------------ router side


@dataclass
class _Pending:
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    sent_at: float = field(default_factory=time.monotonic)


REPLY_PACE = 0.1  # a model's answer T seconds into its call may wait up to T * this more (within the long wait)


def _sanitize_topic_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:180] or "router"


def _jsonable_settings(settings: ModelSettings | None) -> dict[str, Any] | None:
    """Model settings as JSON; values that cannot travel (e.g. an httpx.Timeout) are dropped with a warning."""
    if not settings:
        return None
    out: dict[str, Any] = {}
    for key, value in dict(settings).items():
        try:
            out[key] = pydantic_core.to_jsonable_python(value)
        except Exception:
            log.warning("model setting %r cannot be sent to a chat node; ignored", key)
    return out


def _reply_wait_of(ref: weakref.ref) -> Callable[[int], int]:
    def wait(short: int) -> int:
        model = ref()  # weak: the pacer's entry must not keep a stopped client alive
        return model._reply_wait(short) if model is not None else short

    return wait


class RemoteChatModel(Model):
    """A calfkit model client that thinks through a named chat node (deploy_chat_node.py --name NAME).

    Derives from the vendored pydantic-ai Model, as calfkit's PydanticModelClient (an empty marker
    subclass of it) does; importing that marker would load calfkit.providers and the Anthropic SDK
    into every chat node (+2.5 s start-up) for nothing. calfkit's Agent accepts any such Model.

    Pass it as `Agent(model_client=RemoteChatModel("gpt", kafka))`. Start-up is lazy: the first
    `request()` connects (producer, reply topic created and positioned before the request is sent, no
    consumer-group join), so nothing needs calling before the agent runs; `await start()` does it
    earlier (e.g. to fail fast when the broker is unreachable). `await stop()` on shutdown.
    Must be used from one event loop (the one the calfkit Worker runs in).

    Failures raise `ChatNodeError` (a pydantic-ai ModelAPIError) with a clear message:
      - no chat node took the request within `ack_timeout_s` ("is deploy_chat_node.py --name X running?"),
      - no answer within `timeout_s` of sending,
      - the provider failed (HTTP 429/500, timeout, connection refused, bad key) -> the node's message.
    Replies come on `chat_reply_topic(instance_id)`; instance_id defaults to a fresh unique id.
    Each answered call's usage is added to its turn's total when the agent run's deps name the turn
    (deps[TURN_KEY], as Router puts it); `take_turn_usage(turn)` hands the total over once.
    """

    def __init__(
        self,
        chat_node: str,
        kafka: KafkaSettings | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        instance_id: str | None = None,
    ):
        super().__init__()
        check_name(chat_node)
        if timeout_s <= 0 or ack_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self.chat_node = chat_node
        self.kafka = kafka or KafkaSettings()
        self.timeout_s = timeout_s
        self.ack_timeout_s = min(ack_timeout_s, timeout_s)
        self.instance_id = _sanitize_topic_part(
            instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        self.request_topic = chat_request_topic(chat_node)
        self.reply_topic = chat_reply_topic(self.instance_id)
        self._pending: dict[str, _Pending] = {}
        self._producer = None
        self._consumer = None
        self._replies: k.Dozing | None = None
        self._reader: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None
        self._served_by = ""  # last model id the node reported, for model_name
        self._turn_usage: OrderedDict[str, TokenUsage] = OrderedDict()  # turn id -> its calls' usage so far

    # pydantic-ai Model interface --------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._served_by or f"chat-node:{self.chat_node}"

    @property
    def system(self) -> str:
        return "arena-chat-node"

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        await self.start()
        request_id = uuid.uuid4().hex
        req = ChatRequest(
            request_id=request_id,
            chat_node=self.chat_node,
            reply_to=self.reply_topic,
            sender=self.instance_id,
            timeout_s=self.timeout_s,
            messages=messages,
            model_settings=_jsonable_settings(model_settings),
            parameters=model_request_parameters,
        )
        pending = self._pending[request_id] = _Pending()
        started = time.monotonic()
        replies, consumer = self._replies, self._consumer
        replies.expect(consumer)  # resumed before the request goes out: its fetches are short until the answer
        try:
            try:
                await self._producer.send_and_wait(self.request_topic, k.encode(req), key=request_id.encode())
            except Exception as exc:
                raise ChatNodeError(
                    self.chat_node, f"could not send the request to chat node '{self.chat_node}': {exc}", kind="kafka"
                ) from exc
            try:
                await asyncio.wait_for(pending.accepted.wait(), self.ack_timeout_s)
            except asyncio.TimeoutError:
                raise ChatNodeError(
                    self.chat_node,
                    f"no reply from chat node '{self.chat_node}' within {self.ack_timeout_s:g}s"
                    f" — is deploy_chat_node.py --name {self.chat_node} running?",
                    kind="unavailable",
                    retryable=True,
                ) from None
            remaining = self.timeout_s - (time.monotonic() - started)
            try:
                reply: ChatReply = await asyncio.wait_for(asyncio.shield(pending.done), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise ChatNodeError(
                    self.chat_node,
                    f"chat node '{self.chat_node}' took the request but sent no answer within {self.timeout_s:g}s"
                    " (provider too slow, or the node stopped)",
                    kind="timeout",
                    retryable=True,
                ) from None
        finally:
            self._pending.pop(request_id, None)
            replies.settle(consumer)
        if reply.kind == "error" or reply.response is None:
            raise ChatNodeError(
                self.chat_node,
                f"chat node '{self.chat_node}'"
                + (f" ({reply.model})" if reply.model else "")
                + f": {reply.error or 'no response'}",
                kind=reply.error_type or "error",
                status_code=reply.status_code,
                retryable=reply.retryable,
            )
        self._served_by = reply.model or self._served_by
        self._count(reply.usage or usage_of(reply.response))  # a node without `usage`: tokens, cost unknown
        return reply.response

    def _count(self, usage: TokenUsage) -> None:
        ctx = get_current_run_context()  # set by pydantic-ai around each model request of an agent run
        deps = ctx.deps if ctx is not None else None
        turn = deps.get(TURN_KEY) if isinstance(deps, dict) else None
        if not isinstance(turn, str) or not turn:
            return
        known = self._turn_usage.get(turn)
        self._turn_usage[turn] = usage if known is None else known + usage
        while len(self._turn_usage) > MAX_OPEN_TURNS:  # turns whose router never took their usage
            self._turn_usage.popitem(last=False)

    def take_turn_usage(self, turn: str) -> TokenUsage | None:
        """The summed usage of the calls made so far for `turn` (None: none answered), once."""
        return self._turn_usage.pop(turn, None)

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and position the reply topic (idempotent; request() calls it)."""
        if self._reader is not None:
            return
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._reader is not None:
                return
            producer = k.producer(self.kafka)
            consumer = k.consumer(self.kafka, group_id=None)
            try:
                await producer.start()
                # Create the reply topic (auto-created on produce) so it can be positioned before any
                # request goes out; the empty warm-up record is skipped by readers.
                await producer.send_and_wait(self.reply_topic, b"")
                partitions = await producer.partitions_for(self.reply_topic)
                await consumer.start()
                tps = [TopicPartition(self.reply_topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)  # resolve now, so no reply can slip past
                # Replies are due only while a request is in flight: paused otherwise (no polling).
                replies = k.Dozing([consumer])
                replies.doze()
                polling.PACER.pace(consumer, _reply_wait_of(weakref.ref(self)))
            except Exception as exc:
                await consumer.stop()
                await producer.stop()
                raise ChatNodeError(
                    self.chat_node, f"cannot reach Kafka at {self.kafka.bootstrap_servers}: {exc}", kind="kafka"
                ) from exc
            self._producer, self._consumer, self._replies = producer, consumer, replies
            self._reader = asyncio.create_task(self._read_replies(), name=f"chat-replies-{self.chat_node}")

    def _reply_wait(self, short: int) -> int:
        """The wait of a reply fetch while requests are in flight: short at first (an instant model
        answers within it), then a tenth of the newest request's age (a call of seconds is not polled
        every few milliseconds; its answer waits at most that much more)."""
        newest = max((p.sent_at for p in self._pending.values()), default=None)
        if newest is None:
            return short
        return int((time.monotonic() - newest) * 1000 * REPLY_PACE)

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for pending in self._pending.values():  # their request() calls fail now rather than time out
            pending.accepted.set()
            if not pending.done.done():
                pending.done.set_exception(ChatNodeError(self.chat_node, "the chat client was stopped", kind="stopped"))
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._consumer = self._producer = None

    async def _read_replies(self) -> None:
        await consume(self._consumer, self._take_reply, reading="reading chat replies", item="the chat reply")

    def _take_reply(self, record) -> None:
        if not record.value:
            return  # a topic warm-up record
        reply = k.decode_record(ChatReply, record)
        if reply is None:
            return
        pending = self._pending.get(reply.request_id)
        if pending is None:
            log.debug("ignoring a reply to %s (not waiting for it any more)", reply.request_id)
            return
        pending.accepted.set()  # any reply means a node took it
        if reply.kind != "accepted" and not pending.done.done():
            pending.done.set_result(reply)
