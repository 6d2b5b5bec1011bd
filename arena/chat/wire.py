"""What travels between routers and chat nodes: requests, replies (with token usage), names and topics."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints

from arena.compat.vendored_pydantic_ai import (
    ModelMessage,
    ModelRequestParameters,
    ModelResponse,
)
from arena.decisions import MAX_TOKENS, CostUSD, Tokens
from arena.market import utcnow
from arena.pricing import Pricer
from arena.wire import CHAT_NODE_RE, Amount, AwareTime, ChatNodeName, Short, Text

NAME_RE = CHAT_NODE_RE  # a chat node name becomes part of Kafka topic names
# Where a chat node may answer: a router's reply topic (config.chat_reply_topic), nothing else.
REPLY_TOPIC_RE = re.compile(r"^arena\.chat\.replies\.[A-Za-z0-9._-]{1,180}$")
ReplyTopic = Annotated[str, StringConstraints(pattern=REPLY_TOPIC_RE.pattern)]
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=100)]
MAX_MESSAGES = 10_000  # per conversation
MAX_TIMEOUT_S = 86_400.0


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
