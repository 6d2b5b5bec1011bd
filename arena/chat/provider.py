"""Chat node side, towards the provider: the OpenAI-compatible model, which settings reach it, and
failures described without secrets.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from arena.compat.vendored_pydantic_ai import (
    Model,
    ModelAPIError,
    ModelHTTPError,
    RequestUsage,
    UnexpectedModelBehavior,
)

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
