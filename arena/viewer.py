"""What the response viewer shows: every agent's steps (text, tool calls, tool results) and turn outcomes.

Pure logic, no Kafka: `ActivityFeed` turns activity-topic envelopes (calfkit publish_topic mirrors of
each agent hop) and Decision records into rich renderables, each step shown exactly once.

Every mirrored envelope carries the run's whole conversation so far, and a run's envelopes may arrive
out of order (they are keyless, spread over partitions) or repeat the same state. A step is therefore
identified by (agent, run id, message index, part index) — its position in that run's conversation —
and shown the first time any envelope contains it. Keys are per run, so agents that act on the same
tick never hide each other's steps.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from calfkit.models.envelope import Envelope
from rich.table import Table
from rich.text import Text

from arena import conversation
from arena.decisions import Decision
from arena.kafka import rejection_reason
from arena.ui import agent_color, hms, money, price, qty
from arena.wire import AGENT_NAME_RE

log = logging.getLogger(__name__)

StepKind = Literal["text", "call", "result", "rejected"]

MAX_BODY = 400  # characters of a tool result / text shown; the viewer is a log, not a debugger
MAX_RUNS = 2000  # runs remembered for de-duplication (oldest forgotten first)


@dataclass(frozen=True)
class Step:
    """One thing an agent did inside a run, as the viewer shows it."""

    agent: str
    run_id: str
    key: tuple[int, int]  # (message index, part index) in the run's conversation
    kind: StepKind
    tool: str = ""
    body: str = ""
    failed: bool = False  # a tool result reporting an error or a rejected order


# ------------------------------------------------------------------------------------------ parsing


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


def _clip(s: str, n: int = MAX_BODY) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def format_args(args: Any) -> str:
    """`product_id=BTC-USD, side=buy, quantity=0.01` from a dict or the model's raw JSON string."""
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return _clip(args)
    if isinstance(args, dict):
        return _clip(", ".join(f"{k}={v if isinstance(v, (str, int, float)) else _json(v)}" for k, v in args.items()))
    return _clip(_json(args)) if args is not None else ""


def _retry_text(content: Any) -> str:
    """The reason in a retry prompt: a message, or a list of validation errors."""
    if isinstance(content, dict) and "content" in content:
        content = content["content"]
    if isinstance(content, list):
        msgs = [str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in content]
        loc = [".".join(map(str, e.get("loc") or ())) if isinstance(e, dict) else "" for e in content]
        return _clip("; ".join(f"{where}: {m}" if where else m for where, m in zip(loc, msgs)))
    return _clip(str(content))


def describe_result(content: Any) -> tuple[str, bool]:
    """A tool result as one readable line, and whether it reports a failure (rejection / error)."""
    if isinstance(content, dict):
        status = str(content.get("status", "")).lower()
        if "error" in content or status in ("rejected", "error"):
            return _clip(str(content.get("error") or content.get("reason") or _json(content))), True
        if status == "filled" and {"side", "quantity", "product_id", "price"} <= content.keys():
            pid = str(content["product_id"])
            parts = [
                f"filled {content['side']} {qty(float(content['quantity']), pid)} @ {price(float(content['price']))}"
            ]
            if "fee" in content:
                parts.append(f"fee {money(float(content['fee']))}")
            if "cash_after" in content:
                parts.append(f"cash {money(float(content['cash_after']))}")
            return ", ".join(parts), False
        if "total_value" in content and "cash" in content:
            positions = content.get("positions") or []
            held = ", ".join(
                qty(float(p.get("quantity", 0)), str(p.get("product_id", ""))) for p in positions if isinstance(p, dict)
            )
            line = f"value {money(float(content['total_value']))}, cash {money(float(content['cash']))}"
            if "return_pct" in content:
                line += f", return {float(content['return_pct']):+.2f}%"
            return _clip(line + (f", holding {held}" if held else ", no positions")), False
        return _clip(_json(content)), False
    text = content if isinstance(content, str) else _json(content)
    return _clip(text), text.strip().lower().startswith(("error", "order rejected"))


def steps_from_envelope(agent: str, run_id: str, envelope: Any) -> list[Step]:
    """Every step in one mirrored envelope (calfkit `Envelope`), in conversation order.

    The final answer (the text of the last response of a finished run) is not a step here: the
    router's "done" Decision shows it together with the turn's latency.
    """
    steps: list[Step] = []
    for key, kind, part in conversation.parts(envelope):
        if kind == "text":
            steps.append(Step(agent, run_id, key, "text", body=_clip(part.content)))
        elif kind == "call":
            steps.append(Step(agent, run_id, key, "call", tool=part.tool_name, body=format_args(part.args)))
        elif kind == "refused":
            tool = getattr(part, "tool_name", "") or ""
            steps.append(Step(agent, run_id, key, "rejected", tool=tool, body=_retry_text(part.content), failed=True))
        elif kind == "result":
            body, failed = describe_result(part.content)
            steps.append(Step(agent, run_id, key, "result", tool=part.tool_name, body=body, failed=failed))
    return steps


# ---------------------------------------------------------------------------------------- rendering


def _row(at: datetime, agent: str, icon: Text | str, body: Text | str, *, agent_width: int) -> Table:
    """One event line: time, agent (in its colour), icon, then the body wrapping under itself."""
    grid = Table.grid(padding=(0, 1), expand=False)
    grid.add_column(no_wrap=True, style="grey50")
    grid.add_column(no_wrap=True, width=agent_width, overflow="ellipsis")
    grid.add_column(no_wrap=True, width=1)
    grid.add_column(overflow="fold")
    grid.add_row(hms(at), Text(agent, style=f"bold {agent_color(agent)}"), icon, body)
    return grid


def render_step(step: Step, at: datetime, *, agent_width: int = 10) -> Table:
    if step.kind == "text":
        return _row(at, step.agent, Text("»", style="grey70"), Text(step.body, style="italic"), agent_width=agent_width)
    if step.kind == "call":
        body = Text.assemble((step.tool, "bold"), f"({step.body})")
        return _row(at, step.agent, Text("→", style="cyan"), body, agent_width=agent_width)
    if step.kind == "rejected":
        body = Text.assemble((f"{step.tool or 'call'} refused: ", "bold red"), (step.body, "red"))
        return _row(at, step.agent, Text("✗", style="bold red"), body, agent_width=agent_width)
    style = "red" if step.failed else ""
    body = Text.assemble((f"{step.tool}: ", "bold red" if step.failed else "bold"), (step.body, style))
    return _row(
        at,
        step.agent,
        Text("✗" if step.failed else "←", style="bold red" if step.failed else "green"),
        body,
        agent_width=agent_width,
    )


def render_decision(d: Decision, *, skipped: int = 0, agent_width: int = 10) -> Table | None:
    """A turn's start (with the market it saw) or its outcome; None for statuses shown otherwise."""
    at = d.finished_at or d.started_at
    if d.status == "started":
        extra = f"  ({skipped} older tick{'s' if skipped != 1 else ''} skipped)" if skipped else ""
        body = Text.assemble(("turn on ", "grey62"), (d.summary or f"#{d.tick_seq}", "bold"), (extra, "grey62"))
        return _row(at, d.agent, Text("▶", style="bold"), body, agent_width=agent_width)
    latency = f" in {d.latency_s:.2f}s" if d.latency_s is not None else ""
    if d.status == "done":
        body = Text.assemble(
            (f"#{d.tick_seq} done{latency}", "bold green"), (": " if d.output else "", ""), (_clip(d.output), "")
        )
        return _row(at, d.agent, Text("✓", style="bold green"), body, agent_width=agent_width)
    if d.status in ("error", "timeout"):
        label = "model error" if d.status == "error" else "timed out"
        body = Text.assemble(
            (f"#{d.tick_seq} {label}{latency.replace(' in ', ' after ')}: ", "bold red"), (_clip(d.reason), "red")
        )
        return _row(at, d.agent, Text("✗", style="bold red"), body, agent_width=agent_width)
    return None  # "skipped": counted and mentioned on the agent's next turn


class ActivityFeed:
    """The viewer's state: what was shown already, per run; skipped ticks per agent; the agent filter."""

    def __init__(self, agents: set[str] | None = None, *, agent_width: int = 10):
        self.agents = set(agents) if agents else None
        self.agent_width = agent_width
        self._seen: OrderedDict[str, set[tuple[int, int]]] = OrderedDict()  # run id -> shown step keys
        self._skipped: dict[str, int] = {}

    def wants(self, agent: str) -> bool:
        return self.agents is None or agent in self.agents

    def new_steps(self, steps: list[Step]) -> list[Step]:
        """The steps not shown before, remembering them."""
        fresh = []
        for step in steps:
            run_key = f"{step.agent}\x00{step.run_id}"
            seen = self._seen.get(run_key)
            if seen is None:
                seen = self._seen[run_key] = set()
                while len(self._seen) > MAX_RUNS:
                    self._seen.popitem(last=False)
            if step.key not in seen:
                seen.add(step.key)
                fresh.append(step)
        return fresh

    def on_activity(self, raw: bytes | None, headers: Any = (), at: datetime | None = None) -> list[Table]:
        """Renderables for the new steps in one activity-topic record; malformed records are skipped."""
        if conversation.header(headers, "x-calf-wire") not in ("", "envelope"):
            return []  # another calfkit wire type (e.g. step notifications): not a conversation mirror
        agent = conversation.header(headers, "x-calf-emitter")
        if not agent or not self.wants(agent):
            return []
        if not AGENT_NAME_RE.match(agent):  # shown in the terminal: no control characters, no made-up names
            log.warning("skipping malformed activity record: emitter %r is not an agent name", agent[:40])
            return []
        try:
            envelope = Envelope.model_validate_json(raw or b"")
        except ValueError as exc:  # a ValidationError, or a validator's own ValueError
            log.warning("skipping malformed activity record from %s: %s", agent, rejection_reason(exc))
            return []
        run_id = conversation.header(headers, "correlation_id")
        at = at or datetime.now(timezone.utc)
        return [
            render_step(s, at, agent_width=self.agent_width)
            for s in self.new_steps(steps_from_envelope(agent, run_id, envelope))
        ]

    def on_decision(self, d: Decision) -> list[Table]:
        if not self.wants(d.agent):
            return []
        if d.status == "skipped":
            self._skipped[d.agent] = self._skipped.get(d.agent, 0) + 1
            return []
        skipped = self._skipped.pop(d.agent, 0) if d.status == "started" else 0
        row = render_decision(d, skipped=skipped, agent_width=self.agent_width)
        return [row] if row is not None else []
