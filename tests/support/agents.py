"""Agents for tests: a router that thinks with a Python function in the test's own process, and the
processes a real model turn needs (the offline policy server, a chat node on it, the tools process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from arena.broker import free_port
from arena.config import KafkaSettings
from arena.router import Router
from tests.support.procs import Proc


def function_router(think: Callable, *, name: str, kafka: KafkaSettings, model_name: str = "scripted",
                    system_prompt: str = "scripted", **router_args) -> Router:  # fmt: skip
    """A Router whose model is `think(messages, info) -> ModelResponse` (pydantic-ai's FunctionModel)."""
    from calfkit.providers.pydantic_ai.model_client import PydanticModelClient

    from arena.compat.vendored_pydantic_ai import function_model

    FunctionModel, _ = function_model()

    class Client(FunctionModel, PydanticModelClient):
        pass

    return Router(name=name, system_prompt=system_prompt, model_client=Client(think, model_name=model_name),
                  kafka=kafka, **router_args)  # fmt: skip


def model_stack(node: str, model: str, ledger: Path, *, chat_args: tuple[str, ...] = (),
                tools_args: tuple[str, ...] = ()) -> list[Proc]:  # fmt: skip
    """The policy server, chat node `node` serving its `model`, and the tools process on `ledger`, started
    on the broker in KAFKA_BOOTSTRAP_SERVERS (not waited for): [policy, chat, tools]."""
    port = free_port()
    policy = Proc("-m", "arena.cli", "policy-server", "--port", str(port))
    chat = Proc("deploy_chat_node.py", "--name", node, "--model-id", model, "--base-url", f"http://127.0.0.1:{port}/v1",
                *chat_args, env={"OPENAI_API_KEY": "test"})  # fmt: skip
    tools = Proc("tools_and_dashboard.py", "--no-dashboard", "--ledger", str(ledger), "--status-every", "3600",
                 "--connect-timeout", "120", *tools_args)  # fmt: skip
    return [policy, chat, tools]
