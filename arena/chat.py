"""Remote inference over Kafka: named chat nodes serve model requests for any number of routers.

Router side: `RemoteChatModel`, a calfkit/pydantic-ai model client whose `request()` publishes the
conversation to the chat node's request topic and awaits the answer on this process's reply topic.
Chat node side: `ChatNode`, which consumes one name's request topic in a shared consumer group (replicas
split the load), calls the real provider and replies to the topic named in each request.

Wire protocol (JSON, the vendored pydantic-ai types serialized exactly as `ModelMessagesTypeAdapter`,
`TypeAdapter(ModelRequestParameters)` and `TypeAdapter(ModelResponse)` do):
  router -> `chat_request_topic(name)`: ChatRequest, key = request id
  chat node -> `request.reply_to`: ChatReply kind "accepted" as soon as a replica takes the request,
  then one ChatReply kind "response" (a ModelResponse) or "error" (a clear, secret-free message).
The early "accepted" lets a router tell "no chat node running" (seconds) from "provider is slow"
(its full timeout). A "response" carries the provider's token usage and its estimated cost (`usage`);
RemoteChatModel sums them per router turn (`take_turn_usage`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pydantic_core
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaConnectionError
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, ValidationError

from arena import kafka as k
from arena.compat.vendored_pydantic_ai import (
    Model,
    ModelAPIError,
    ModelHTTPError,
    ModelMessage,
    ModelRequestParameters,
    ModelResponse,
    ModelSettings,
    RequestUsage,
    UnexpectedModelBehavior,
    get_current_run_context,
)
from arena.config import KafkaSettings, chat_reply_topic, chat_request_topic
from arena.decisions import MAX_TOKENS, TURN_KEY, CostUSD, Tokens
from arena.market import utcnow
from arena.pricing import Pricer
from arena.wire import CHAT_NODE_RE, Amount, AwareTime, ChatNodeName, Short, Text

log = logging.getLogger(__name__)

DEFAULT_ACK_TIMEOUT_S = 30.0
DEFAULT_TIMEOUT_S = 120.0


NAME_RE = CHAT_NODE_RE  # a chat node name becomes part of Kafka topic names
# Where a chat node may answer: a router's reply topic (config.chat_reply_topic), nothing else.
REPLY_TOPIC_RE = re.compile(r"^arena\.chat\.replies\.[A-Za-z0-9._-]{1,180}$")
ReplyTopic = Annotated[str, StringConstraints(pattern=REPLY_TOPIC_RE.pattern)]
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=100)]
MAX_MESSAGES = 10_000  # per conversation
MAX_TIMEOUT_S = 86_400.0
MAX_OPEN_TURNS = 1024


def check_name(chat_node: str) -> str:
    if not NAME_RE.fullmatch(chat_node or ""):
        raise ValueError(f"invalid chat node name {chat_node!r}: use 1-100 letters, digits, '.', '_' or '-'")
    return chat_node


def chat_group_id(chat_node: str) -> str:
    """One consumer group per chat node name: replicas with one name share its requests."""
    return f"chatnode.{chat_node}"


# ----------------------------------------------------------------------------------------------- wire


class _Wire(BaseModel):
    # Same bytes encoding as the vendored ModelMessagesTypeAdapter (BinaryContent travels as base64).
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


class ChatRequest(_Wire):
    """One model request from a router to a named chat node."""

    request_id: RequestId
    chat_node: ChatNodeName
    reply_to: ReplyTopic  # the router's reply topic
    sender: Short  # the router's instance id (for logs)
    sent_at: AwareTime = Field(default_factory=utcnow)
    # the router stops waiting after this; a node drops work older than it
    timeout_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)]
    messages: Annotated[list[Annotated[ModelMessage, Discriminator("kind")]], Field(max_length=MAX_MESSAGES)]
    model_settings: Annotated[dict[str, Any], Field(max_length=64)] | None = (
        None  # the node forwards only FORWARDED_SETTINGS
    )
    parameters: ModelRequestParameters


class TokenUsage(BaseModel):
    """Tokens of one model call (or a sum of calls), as the provider reported them, and their cost.

    input_tokens includes cached_tokens and output_tokens includes reasoning_tokens, as OpenAI reports
    them; cost_usd is None when no price is known (never 0 for "unknown")."""

    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    cached_tokens: Tokens = 0
    cost_usd: CostUSD | None = None
    price: Short = ""  # where the price came from: "flags", "table", "notional" or "" (unknown)
    calls: Tokens = 1  # model calls summed

    def __add__(self, other: TokenUsage) -> TokenUsage:
        cost = None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd
        return TokenUsage(
            input_tokens=min(self.input_tokens + other.input_tokens, MAX_TOKENS),
            output_tokens=min(self.output_tokens + other.output_tokens, MAX_TOKENS),
            reasoning_tokens=min(self.reasoning_tokens + other.reasoning_tokens, MAX_TOKENS),
            cached_tokens=min(self.cached_tokens + other.cached_tokens, MAX_TOKENS),
            cost_usd=cost,
            price=self.price if self.price == other.price else "mixed",
            calls=self.calls + other.calls,
        )


def usage_of(response: ModelResponse, pricer: Pricer | None = None) -> TokenUsage:
    """A provider response's usage (pydantic-ai's RequestUsage), priced by `pricer` (None: unknown)."""
    u = response.usage
    details = u.details or {}
    reasoning = details.get("reasoning_tokens", 0)
    usage = TokenUsage(
        input_tokens=min(max(int(u.input_tokens or 0), 0), MAX_TOKENS),
        output_tokens=min(max(int(u.output_tokens or 0), 0), MAX_TOKENS),
        reasoning_tokens=min(max(int(reasoning), 0), MAX_TOKENS) if isinstance(reasoning, int) else 0,
        cached_tokens=min(max(int(u.cache_read_tokens or 0), 0), MAX_TOKENS),
    )
    if pricer is not None:
        cost = pricer.cost(response.model_name or "", usage.input_tokens, usage.output_tokens, usage.cached_tokens)
        usage.cost_usd, usage.price = cost.usd, cost.source
    return usage


class ChatReply(_Wire):
    """A chat node's answer: "accepted" first, then exactly one "response" or "error"."""

    request_id: RequestId
    chat_node: ChatNodeName
    replica: Short  # host:pid of the replica that served it
    kind: Literal["accepted", "response", "error"]
    response: ModelResponse | None = None
    error: Text = ""  # a clear message, never a secret
    # "http", "timeout", "connection", "expired", "malformed", "stopped", "busy", "internal"
    error_type: Short = ""
    status_code: Annotated[int, Field(ge=100, le=599)] | None = None  # the provider's HTTP status, for "http" errors
    retryable: bool = False
    model: Short = ""  # the provider model id that served (or failed) it
    elapsed_ms: Amount | None = None  # provider call time on the node
    usage: TokenUsage | None = None  # on "response": the provider's token counts and their estimated cost


class _ReplyAddress(BaseModel):
    """What a node can still read from a request it cannot parse, to tell the sender at once."""

    request_id: RequestId
    reply_to: ReplyTopic


# ------------------------------------------------------------------------------------------- errors


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
            except Exception as exc:
                await consumer.stop()
                await producer.stop()
                raise ChatNodeError(
                    self.chat_node, f"cannot reach Kafka at {self.kafka.bootstrap_servers}: {exc}", kind="kafka"
                ) from exc
            self._producer, self._consumer = producer, consumer
            self._reader = asyncio.create_task(self._read_replies(), name=f"chat-replies-{self.chat_node}")

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
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transient broker error must not end the reader
                log.warning("reading chat replies failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    try:
                        self._take_reply(record)
                    except Exception as exc:  # one record: the others, and the reader, go on
                        log.error(
                            "could not take the chat reply on %s partition %s offset %s: %r",
                            record.topic,
                            record.partition,
                            record.offset,
                            exc,
                        )

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


# ------------------------------------------------------------------------------- chat node side


# A URL query parameter that carries a credential (Azure's ?api-key=, ?key=, ?token=, ?sig=, ...): its value.
_QUERY_SECRET = re.compile(
    r"([?&][^=&\s#]*(?:key|token|secret|sig|password|passwd|auth|credential)[^=&\s#]*=)[^&\s#\"']+", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """A URL fit for a log line: no user:password part, no credential in its query string."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return _QUERY_SECRET.sub(r"\1***", urlunsplit(parts))


def redactor(*secrets: str | None) -> Callable[[str], str]:
    """A function that removes the given secrets, anything shaped like an API key, and credentials in a
    URL's query string, from text."""
    literal = [s for s in secrets if s]
    key_shape = re.compile(r"\b(sk|key|api)[-_][A-Za-z0-9_\-*]{6,}", re.IGNORECASE)

    def redact(text: str) -> str:
        for s in literal:
            text = text.replace(s, "***")
        return _QUERY_SECRET.sub(r"\1***", key_shape.sub("***", text))

    return redact


class _ForwardedSettings(BaseModel):
    """The model settings a chat node passes on to its provider, each checked; any other key a request
    carries (extra_body, extra_headers: a way to change the model or the headers the node's key goes
    out with) is dropped. timeout is the node's own."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    parallel_tool_calls: bool | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)] | None = None
    stop_sequences: Annotated[list[Annotated[str, StringConstraints(max_length=200)]], Field(max_length=16)] | None = (
        None
    )


FORWARDED_SETTINGS = tuple(_ForwardedSettings.model_fields)


def forwarded_settings(settings: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """(the settings a node passes on, the keys it dropped: unknown, or a value out of range)."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in (settings or {}).items():
        try:
            kept.update(_ForwardedSettings.model_validate({key: value}).model_dump(exclude_unset=True))
        except ValidationError:
            dropped.append(str(key)[:40])
    return kept, dropped


def _short(text: Any, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _http_detail(body: object) -> str:
    """The provider's own error message out of an OpenAI-style error body."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return "" if body is None else str(body)


def describe_failure(exc: BaseException, *, base_url: str, timeout_s: float) -> tuple[str, str, int | None, bool]:
    """(message, error_type, status_code, retryable) for a failed provider call — not yet redacted."""
    if isinstance(exc, ModelHTTPError):
        code = exc.status_code
        detail = _http_detail(exc.body)
        hint = {
            401: " (check the API key)",
            403: " (key not allowed to use this model)",
            404: " (unknown model id or base URL)",
            429: " (rate limited)",
        }.get(code, "")
        msg = f"provider returned HTTP {code}{hint}" + (f": {_short(detail)}" if detail else "")
        return msg, "http", code, code in (408, 409, 429) or code >= 500
    if isinstance(exc, asyncio.TimeoutError) or "timed out" in str(exc).lower():
        return f"provider did not answer within {timeout_s:g}s", "timeout", None, True
    if isinstance(exc, ModelAPIError):
        return f"cannot reach the provider at {base_url}: {_short(exc.message)}", "connection", None, True
    if isinstance(exc, UnexpectedModelBehavior):
        return f"provider returned an unusable response: {_short(exc.message)}", "invalid_response", None, False
    return f"chat node failed: {type(exc).__name__}: {_short(exc)}", "internal", None, False


def provider_model(
    model_id: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    reasoning_effort: str | None = None,
    timeout_s: float = 90.0,
    max_retries: int = 2,
) -> Model:
    """The OpenAI-compatible provider model a chat node calls: the same vendored OpenAIChatModel that
    calfkit's OpenAIModelClient is, built directly so the retry count can be set and the chat node
    does not import calfkit.providers (Anthropic SDK, ~2.5 s)."""
    from openai import AsyncOpenAI

    from arena.compat.vendored_pydantic_ai import openai_chat

    OpenAIChatModel, OpenAIChatModelSettings, OpenAIProvider = openai_chat()

    if api_key is None and base_url is not None:
        api_key = "api-key-not-set"  # local OpenAI-compatible servers need none, the SDK needs one
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s)
    settings = OpenAIChatModelSettings(timeout=timeout_s)
    if reasoning_effort:
        settings["openai_reasoning_effort"] = reasoning_effort

    class _Model(OpenAIChatModel):
        def _map_usage(self, response):
            return counted_usage(response, super()._map_usage(response))

    return _Model(model_id, provider=OpenAIProvider(openai_client=client), settings=settings)


def counted_usage(response: Any, mapped: RequestUsage) -> RequestUsage:
    """The usage of an OpenAI chat completion. calfkit's vendored pydantic-ai reads it through the
    installed genai-prices, whose newer Usage has a field (output_reasoning_tokens) its RequestUsage
    lacks: for any response reporting reasoning tokens (OpenAI always does, 0 or not) it silently
    returns empty usage. Read the counts from the response itself then."""
    raw = getattr(response, "usage", None)
    if raw is None or mapped.input_tokens or mapped.output_tokens:
        return mapped
    cached = getattr(getattr(raw, "prompt_tokens_details", None), "cached_tokens", None) or 0
    reasoning = getattr(getattr(raw, "completion_tokens_details", None), "reasoning_tokens", None)
    details = dict(mapped.details or {})
    if isinstance(reasoning, int):
        details["reasoning_tokens"] = reasoning
    return RequestUsage(
        input_tokens=raw.prompt_tokens or 0,
        output_tokens=raw.completion_tokens or 0,
        cache_read_tokens=cached,
        details=details,
    )


def warm_up(model: Model) -> None:
    """Load what an OpenAI-compatible model loads lazily on its first request (the token price table,
    the SDK's chat resources: ~0.7 s), so the first agent turn does not pay for it. Blocking: run it
    in a thread beside the group join."""
    from genai_prices.data_snapshot import (
        get_snapshot,  # pydantic-ai's usage accounting
    )

    get_snapshot()
    client = getattr(model, "client", None)
    if client is not None and hasattr(client, "chat"):
        client.chat.completions  # noqa: B018 - a lazy import on first access


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
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transient broker error must not end the node
                log.warning("fetching requests failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    try:
                        await self._take(record)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # one request: the others, and the node, go on
                        log.error(
                            "could not take the request on %s partition %s offset %s: %r",
                            record.topic,
                            record.partition,
                            record.offset,
                            exc,
                        )

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
            ChatReply(
                request_id=req.request_id,
                chat_node=self.name,
                replica=self.replica,
                kind="accepted",
                model=self.model.model_name,
            ),
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
            ChatReply(
                request_id=addr.request_id,
                chat_node=self.name,
                replica=self.replica,
                kind="error",
                error_type="malformed",
                error="the chat node could not read the request (router and chat node versions differ?)",
                model=self.model.model_name,
            ),
        )

    async def _serve_one(self, req: ChatRequest) -> None:
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
        return ChatReply(
            request_id=req.request_id,
            chat_node=self.name,
            replica=self.replica,
            kind="response",
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
        return ChatReply(
            request_id=req.request_id,
            chat_node=self.name,
            replica=self.replica,
            kind="error",
            error=self.redact(message),
            error_type=error_type,
            status_code=status_code,
            retryable=retryable,
            model=self.model.model_name,
        )

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
