"""The pydantic-ai types the arena uses, from the copy calfkit vendors.

Symptom: calfkit 0.13 runs on its own vendored pydantic-ai (`calfkit._vendor.pydantic_ai`), a private
package: a chat node's model, its messages and errors must be those classes, not an installed
pydantic-ai's, or calfkit does not recognise them.
Fix: import them here, once; arena code, its tests and its benchmarks import from this module.
Can go when calfkit exposes these types publicly (or depends on pydantic-ai proper): then import from
there and delete this module.
"""

from __future__ import annotations

from calfkit._vendor.pydantic_ai._run_context import get_current_run_context
from calfkit._vendor.pydantic_ai.exceptions import ModelAPIError, ModelHTTPError, UnexpectedModelBehavior
from calfkit._vendor.pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from calfkit._vendor.pydantic_ai.models import Model, ModelRequestParameters
from calfkit._vendor.pydantic_ai.settings import ModelSettings
from calfkit._vendor.pydantic_ai.tools import ToolDefinition
from calfkit._vendor.pydantic_ai.usage import RequestUsage

__all__ = [
    "Model",
    "ModelAPIError",
    "ModelHTTPError",
    "ModelMessage",
    "ModelRequest",
    "ModelRequestParameters",
    "ModelResponse",
    "ModelSettings",
    "RequestUsage",
    "RetryPromptPart",
    "TextPart",
    "ToolCallPart",
    "ToolDefinition",
    "ToolReturnPart",
    "UnexpectedModelBehavior",
    "UserPromptPart",
    "function_model",
    "get_current_run_context",
    "openai_chat",
    "wrapper_model",
]


def openai_chat():
    """(OpenAIChatModel, OpenAIChatModelSettings, OpenAIProvider), imported on first use (the OpenAI SDK
    is slow to import and only a chat node needs it)."""
    from calfkit._vendor.pydantic_ai.models.openai import OpenAIChatModel, OpenAIChatModelSettings
    from calfkit._vendor.pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel, OpenAIChatModelSettings, OpenAIProvider


def function_model():
    """(FunctionModel, AgentInfo): a model answered by a Python function (tests and benchmarks script
    their agents with it), imported on first use."""
    from calfkit._vendor.pydantic_ai.models.function import AgentInfo, FunctionModel

    return FunctionModel, AgentInfo


def wrapper_model():
    """WrapperModel: a model that forwards every call to another one (a router watches its model calls)."""
    from calfkit._vendor.pydantic_ai.models.wrapper import WrapperModel

    return WrapperModel
