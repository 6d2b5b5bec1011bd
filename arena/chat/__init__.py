"""Remote inference over Kafka: named chat nodes serve model requests for any number of routers.

Router side (client.py): `RemoteChatModel`, a calfkit/pydantic-ai model client whose `request()`
publishes the conversation to the chat node's request topic and awaits the answer on this process's
reply topic. Chat node side (node.py): `ChatNode`, which consumes one name's request topic in a shared
consumer group (replicas split the load), calls the real provider (provider.py) and replies to the topic
named in each request.

Wire protocol (wire.py; JSON, the vendored pydantic-ai types serialized exactly as
`ModelMessagesTypeAdapter`, `TypeAdapter(ModelRequestParameters)` and `TypeAdapter(ModelResponse)` do):
  router -> `chat_request_topic(name)`: ChatRequest, key = request id
  chat node -> `request.reply_to`: ChatReply kind "accepted" as soon as a replica takes the request,
  then one ChatReply kind "response" (a ModelResponse) or "error" (a clear, secret-free message).
The early "accepted" lets a router tell "no chat node running" (seconds) from "provider is slow"
(its full timeout). A "response" carries the provider's token usage and its estimated cost (`usage`);
RemoteChatModel sums them per router turn (`take_turn_usage`).
"""

from arena.chat.client import ChatNodeError, RemoteChatModel
from arena.chat.node import ChatNode
from arena.chat.provider import forwarded_settings, provider_model, redact_url, redactor, warm_up
from arena.chat.wire import NAME_RE, ChatReply, ChatRequest, TokenUsage, _ReplyAddress, check_name, usage_of

__all__ = [
    "NAME_RE",
    "ChatNode",
    "ChatNodeError",
    "ChatReply",
    "ChatRequest",
    "RemoteChatModel",
    "TokenUsage",
    "_ReplyAddress",
    "check_name",
    "forwarded_settings",
    "provider_model",
    "redact_url",
    "redactor",
    "usage_of",
    "warm_up",
]
