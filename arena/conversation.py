"""A router turn's conversation read out of the calfkit envelopes the router mirrors on the activity
topic: one reading for the response viewer (arena/viewer.py) and the web page (arena/web/turns.py),
which show it each their own way. Pure: no Kafka, no calfkit import.

Every mirrored envelope carries the run's whole conversation so far, so a part is known by its key
(message index, part index): its position in that run's conversation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

# text / thinking: the model's words; call: a tool call; result: a tool's return; refused: a call
# calfkit turned away (a retry prompt, as such or as a tool return); None: not a step (a prompt, or
# the final answer, which the router's "done" Decision shows with the turn's latency).
PartKind = Literal["text", "thinking", "call", "result", "refused"]


def parts(envelope: Any) -> Iterator[tuple[tuple[int, int], PartKind | None, Any]]:
    """(key, kind, part) for every part of the conversation in one mirrored envelope, in order."""
    state = envelope.context.state
    messages = list(state.message_history)
    if state.uncommitted_message is not None:
        messages.append(state.uncommitted_message)
    reply = envelope.reply
    finished = reply is not None and getattr(reply, "kind", "") == "return"
    for i, message in enumerate(messages):
        final = finished and i == len(messages) - 1 and getattr(message, "kind", "") == "response"
        for j, part in enumerate(message.parts):
            yield (i, j), _kind(getattr(part, "part_kind", ""), part, final), part


def _kind(kind: str, part: Any, final: bool) -> PartKind | None:
    if kind in ("text", "thinking"):
        return kind if not final and str(part.content).strip() else None
    if kind == "tool-call":
        return "call"
    if kind == "retry-prompt":
        return "refused"
    if kind == "tool-return":
        content = part.content
        return "refused" if isinstance(content, dict) and content.get("part_kind") == "retry-prompt" else "result"
    return None


def header(headers: Any, name: str) -> str:
    """A Kafka record header's value as text ("" when the record has none of that name)."""
    for k, v in headers or ():
        if k == name:
            return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)
    return ""
