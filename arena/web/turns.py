"""One router turn as the web page shows it, rebuilt from the calfkit envelopes a router mirrors on the
activity topic: the model's texts and tool calls with their results, in conversation order."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from arena import conversation
from arena.wire import clip

MAX_TEXT = 4000  # characters of a model text or a tool result kept per step


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _pretty(value: Any) -> str:
    """A tool argument or result as readable JSON (a string that holds JSON is parsed first)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            return clip(value, MAX_TEXT)
    return clip(json.dumps(value, indent=1, ensure_ascii=False, default=str), MAX_TEXT)


class Turn:
    """One router turn: the market it saw, the model's texts and tool calls with their results, the outcome."""

    __slots__ = (
        "agent",
        "run_id",
        "tick_seq",
        "summary",
        "status",
        "reason",
        "output",
        "started_at",
        "finished_at",
        "strategy",
        "chat_node",
        "skipped_before",
        "steps",
        "_parts",
        "_calls",
        "first_seen",
    )

    def __init__(self, agent: str, run_id: str, first_seen: datetime):
        self.agent, self.run_id, self.first_seen = agent, run_id, first_seen
        self.tick_seq: int | None = None
        self.summary = ""
        self.status = "running"  # until its Decision says otherwise
        self.reason = self.output = self.strategy = self.chat_node = ""
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.skipped_before = 0
        self.steps: list[dict] = []
        self._parts: set[tuple[int, int]] = set()  # (message index, part index) already taken
        self._calls: dict[str, dict] = {}  # tool_call_id -> its step, for the result

    def to_json(self) -> dict:
        latency = (self.finished_at - self.started_at).total_seconds() if self.finished_at and self.started_at else None
        return {
            "agent": self.agent,
            "run_id": self.run_id,
            "tick_seq": self.tick_seq,
            "summary": self.summary,
            "status": self.status,
            "reason": self.reason,
            "output": self.output,
            "strategy": self.strategy,
            "chat_node": self.chat_node,
            "started_at": _iso(self.started_at or self.first_seen),
            "finished_at": _iso(self.finished_at),
            "latency_s": latency,
            "skipped_before": self.skipped_before,
            "steps": self.steps,
        }

    def take_envelope(self, envelope: Any) -> bool:
        """The steps in one mirrored calfkit envelope not taken before (each envelope repeats the whole
        conversation so far; envelopes of a run may come out of order). True if anything was new."""
        from arena.viewer import _retry_text, describe_result, format_args

        new = False
        for key, kind, part in conversation.parts(envelope):
            if key in self._parts:
                continue
            step: dict | None = None
            if kind in ("text", "thinking"):
                step = {"kind": kind, "text": clip(str(part.content), MAX_TEXT)}
            elif kind == "call":
                step = {
                    "kind": "call",
                    "tool": part.tool_name,
                    "call_id": part.tool_call_id,
                    "summary": format_args(part.args),
                    "args": _pretty(part.args),
                    "result": None,
                }
                pending = self._calls.get(part.tool_call_id)
                if pending is not None and pending.get("kind") == "orphan-result":  # its result came first
                    step.update(
                        result=pending["result"], result_summary=pending["result_summary"], failed=pending["failed"]
                    )
                    self.steps.remove(pending)
                self._calls[part.tool_call_id] = step
            elif kind == "refused":
                step = {
                    "kind": "refused",
                    "tool": getattr(part, "tool_name", "") or "",
                    "text": _retry_text(part.content),
                    "failed": True,
                }
            elif kind == "result":
                summary, failed = describe_result(part.content)
                call = self._calls.get(part.tool_call_id)
                if call is not None and call.get("kind") == "call":
                    call.update(result=_pretty(part.content), result_summary=summary, failed=failed)
                    self._parts.add(key)
                    new = True
                    continue
                step = {
                    "kind": "orphan-result",
                    "tool": part.tool_name,
                    "result": _pretty(part.content),
                    "result_summary": summary,
                    "failed": failed,
                }
                self._calls[part.tool_call_id] = step
            if step is not None:
                step["key"] = list(key)
                self.steps.append(step)
                new = True
            self._parts.add(key)
        if new:
            self.steps.sort(key=lambda s: s["key"])
        return new
