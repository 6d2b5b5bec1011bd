"""A deterministic, offline model for calfkit agents in tests: it makes exactly the tool calls the
prompt lists, then answers with the tool results as JSON.

Prompt: a JSON list of calls, e.g. `[{"tool": "execute_trade", "args": {...}, "id": "call_1"}]`.
`args` may be a dict, or a raw JSON string (to send what a dict cannot hold, e.g. `NaN`).
Answer: a JSON object {tool_call_id: result}, where a result is the tool's return value, or
{"retry": text} when calfkit refused the call before it reached the tool (bad arguments; calfkit
hands the refusal back as a tool return holding a retry-prompt part).
"""

from __future__ import annotations

import json

from calfkit.providers.pydantic_ai.model_client import PydanticModelClient

from arena.compat.vendored_pydantic_ai import (
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
    function_model,
)

FunctionModel, AgentInfo = function_model()


def _script(messages) -> list[dict]:
    for m in messages:
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart) and isinstance(p.content, str):
                    return json.loads(p.content)
    return []


def _respond(messages, info: AgentInfo) -> ModelResponse:
    last = messages[-1]
    results = {}
    for p in getattr(last, "parts", []):
        if isinstance(p, ToolReturnPart):
            c = p.content
            if isinstance(c, dict) and c.get("part_kind") == "retry-prompt":  # calfkit's refusal of the arguments
                c = {"retry": json.dumps(c.get("content"), default=str)}
            results[p.tool_call_id] = c
        elif isinstance(p, RetryPromptPart) and p.tool_call_id:
            results[p.tool_call_id] = {"retry": p.model_response()}
    if results:
        return ModelResponse(parts=[TextPart(json.dumps(results, default=str))])
    calls = _script(messages)
    if not calls:
        return ModelResponse(parts=[TextPart("{}")])
    return ModelResponse(
        parts=[
            ToolCallPart(tool_name=c["tool"], args=c.get("args", {}), tool_call_id=c.get("id", f"call_{i + 1}"))
            for i, c in enumerate(calls)
        ]
    )


class ScriptedModel(FunctionModel, PydanticModelClient):
    def __init__(self) -> None:
        super().__init__(_respond, model_name="scripted")
