"""A router turn needs the trading tools on the bus: without them it is skipped with the reason, before
any model call; once a tools process advertises them, the router's view lists them. Own broker, so no
other test's tools advert (live for 90 s after a kill) can stand in."""

from __future__ import annotations

import asyncio
import time

import pytest

from arena.config import KafkaSettings
from arena.tool_names import TOOL_NAMES
from tests.support.market import snapshot

pytestmark = [pytest.mark.processes, pytest.mark.asyncio]


@pytest.mark.timeout(300)
async def test_a_turn_without_the_tools_is_skipped_before_any_model_call(tmp_path, monkeypatch):
    from calfkit._vendor.pydantic_ai.messages import ModelResponse, TextPart
    from calfkit._vendor.pydantic_ai.models.function import FunctionModel
    from calfkit.providers.pydantic_ai.model_client import PydanticModelClient

    from arena import router as router_module
    from arena.broker import EmbeddedBroker, free_port
    from arena.desk import Desk
    from arena.ledger import Ledger
    from arena.router import Router, TurnSteps
    from arena.tools_service import ToolsService

    calls = []

    def think(messages, info) -> ModelResponse:
        calls.append(messages)
        return ModelResponse(parts=[TextPart("hold")])

    class Instant(FunctionModel, PydanticModelClient):
        pass

    monkeypatch.setattr(router_module, "TOOLS_WAIT_S", 0.5)
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    router = Router(name="lonely", system_prompt="hold", model_client=Instant(think, model_name="instant"), kafka=kafka)
    deadlines = []  # (the run's deadline, when its step ran)

    class Seen(TurnSteps):
        def __call__(self, ctx):
            deadlines.append(((ctx.deps or {}).get("deadline"), time.time()))
            return super().__call__(ctx)

    router._steps = Seen()  # the agent's before_node seam, as the router builds it at start
    intake = None
    service = ToolsService(kafka, Desk(Ledger(str(tmp_path / "ledger.db"))))
    try:
        await broker.wait_ready()
        await router.start()
        d = await router.run_turn(snapshot(1))
        assert d.status == "skipped" and "execute_trade, get_portfolio, calculator not advertised" in d.reason, d
        assert calls == []  # no tokens spent on a turn that could not trade

        # The tools come up while a turn waits for them: the turn says it started only once they are
        # there, so they read it and value the agent's account in time for its prompt.
        monkeypatch.setattr(router_module, "TOOLS_WAIT_S", 60)
        intake = asyncio.create_task(router._read_market())  # the account arrives on the market consumer
        d, _ = await asyncio.gather(router.run_turn(snapshot(2)), service.start())
        assert d.status == "done" and len(calls) == 1, d
        prompt = calls[0][0].parts[0].content
        assert "Your account: none yet; your first tool call opens it" in prompt, prompt

        async def slow_check(wait_s: float) -> tuple[str, ...]:  # the tools' advert takes its time to show
            await asyncio.sleep(2.0)
            return ()

        router.missing_tools = slow_check
        d = await router.run_turn(snapshot(3))
        deadline, first_step_at = deadlines[-1]
        # The turn's time starts with its run, not before the waits that precede it.
        assert d.status == "done" and deadline - first_step_at > router.turn_timeout_s - 1.0, (deadline, first_step_at)
        assert set(TOOL_NAMES) == {"execute_trade", "get_portfolio", "calculator"}
    finally:
        if intake is not None:
            intake.cancel()
        await router.stop()
        await service.stop()
        broker.stop()
