"""The account in the turn prompt, end to end on the real broker: the tools process (tools_and_dashboard.py)
publishes it, routers (in this process) prompt with it, and the offline policies (the policy server behind
a chat node) trade on it, so a trading turn is two model calls and a hold one."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import pytest_asyncio

from arena import kafka as k
from arena.accounts import ACCOUNT_HEADER
from arena.config import MARKET_TOPIC, KafkaSettings
from arena.decisions import Decision
from arena.router import Router
from tests.support import snapshot
from tests.support.agents import function_router, model_stack

ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
RUN = uuid.uuid4().hex[:5]
NODE = f"acct-{RUN}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(broker, tmp_path_factory):
    """The policy server, one chat node on its `auto` model (the system prompt picks the policy) and the
    tools process; a producer for snapshots."""
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    ledger = tmp_path_factory.mktemp("accounts") / "ledger.db"
    policy, chat, tools = model_stack(NODE, "auto", ledger, chat_args=("--max-retries", "0"))
    producer = k.producer(kafka)
    try:
        for p in (policy, chat, tools):
            await asyncio.to_thread(p.wait_ready, 120)
        await producer.start()
        yield {"kafka": kafka, "producer": producer, "tools": tools}
    finally:
        await producer.stop()
        for p in (tools, chat, policy):
            p.stop()


class Running:
    """Routers run in this process, their decisions collected."""

    def __init__(self, stack, *routers: Router):
        self.stack = stack
        self.routers = routers
        self.decisions: list[Decision] = []
        for r in routers:
            r.on_decision = self.decisions.append
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Running:
        for r in self.routers:  # one at a time: k.consumers_started() sees every consumer the process starts
            await r.start()
        self.tasks = [asyncio.create_task(r.run(self.stop)) for r in self.routers]
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(r.stop() for r in self.routers), return_exceptions=True)

    async def turn(self, seq: int, jump: float = 1.0, timeout: float = 90) -> dict[str, Decision]:
        """Publish snapshot `seq`; every router's finished turn on it."""
        await self.stack["producer"].send_and_wait(MARKET_TOPIC, k.encode(snapshot(seq, jump=jump)))

        def ended() -> dict[str, Decision]:
            return {d.agent: d for d in self.decisions if d.tick_seq == seq and d.status != "started"}

        try:
            async with asyncio.timeout(timeout):
                while len(ended()) < len(self.routers):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            seen = [(d.agent, d.tick_seq, d.status, d.reason[:80]) for d in self.decisions]
            raise AssertionError(f"no end of every turn on #{seq} within {timeout:g}s; decisions: {seen}") from None
        return ended()


def remote(stack, name: str, system_prompt: str, strategy: str) -> Router:
    from arena.chat import RemoteChatModel

    model = RemoteChatModel(NODE, stack["kafka"], timeout_s=30, instance_id=f"{name}-router")
    return Router(
        name=name,
        system_prompt=system_prompt,
        model_client=model,
        kafka=stack["kafka"],
        chat_node=NODE,
        strategy=strategy,
        turn_timeout_s=60,
        account_wait_s=20,  # what is tested is which account the prompt shows, not how fast under load
    )


@ON_MODULE_LOOP
async def test_a_trading_turn_is_two_model_calls_and_a_hold_one(stack):
    trader = remote(stack, f"mom_{RUN}", "You are a momentum trader.", "momentum")
    holder = remote(stack, f"hodl_{RUN}", "You hodl and never trade.", "default")
    async with Running(stack, trader, holder) as arena:
        # First turn of a new agent: no account yet, so the policy asks get_portfolio (which opens it).
        first = await arena.turn(1)
        assert all(d.status == "done" for d in first.values()), first
        assert first[trader.name].model_calls == first[holder.name].model_calls == 2, first
        # From then on the prompt carries the account: a trade turn is trades + the answer, a hold one call.
        jump = await arena.turn(2, jump=1.02)
        assert jump[trader.name].status == "done" and "placed 3 order(s)" in jump[trader.name].output, jump
        assert jump[trader.name].model_calls == 2, jump[trader.name]
        assert jump[holder.name].model_calls == 1, jump[holder.name]
        again = await arena.turn(3, jump=1.02)  # holds what it bought: the account showed the positions
        assert "no trade" in again[trader.name].output, again[trader.name]
        assert again[trader.name].model_calls == again[holder.name].model_calls == 1, again
    assert trader.account.latest is not None and trader.account.latest.snapshot_seq == 3


def _last_prompt(messages) -> str:
    from calfkit._vendor.pydantic_ai.messages import ModelRequest, UserPromptPart

    parts = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)]
    return str(parts[-1].content)


def _returns(messages) -> list:
    from calfkit._vendor.pydantic_ai.messages import ModelRequest, ToolReturnPart

    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]


@ON_MODULE_LOOP
async def test_the_prompts_account_is_what_get_portfolio_returns_at_that_moment(stack):
    """A scripted model buys on the first turn; on the second it reads the account in its prompt and
    calls get_portfolio at once: the two agree (the time held ticks with the clock, by a second at most)."""
    from calfkit._vendor.pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart

    seen: dict[int, str] = {}  # turn -> the prompt
    answers: list = []  # get_portfolio's results

    def think(messages, info) -> ModelResponse:
        prompt = _last_prompt(messages)
        turn = 2 if "(snapshot #2)" in prompt else 1
        seen[turn] = prompt
        returns = _returns(messages[-1:])
        if turn == 1 and not returns:
            return ModelResponse(parts=[ToolCallPart("execute_trade", {"product_id": "BTC-USD", "side": "buy",
                                                                       "quantity": 0.01})])  # fmt: skip
        if turn == 2 and not returns:
            return ModelResponse(parts=[ToolCallPart("get_portfolio", {})])
        answers.extend(r.content for r in returns if r.tool_name == "get_portfolio")
        return ModelResponse(parts=[TextPart("done")])

    r = function_router(think, name=f"same_{RUN}", kafka=stack["kafka"], strategy="momentum", turn_timeout_s=60,
                        account_wait_s=20)  # fmt: skip
    async with Running(stack, r) as arena:
        assert (await arena.turn(1))[r.name].status == "done"
        assert f"{ACCOUNT_HEADER}: none yet" in seen[1]  # its router did not wait out the bound for it
        await asyncio.sleep(1.5)  # held for a while: the time held shows
        assert (await arena.turn(2, jump=1.01))[r.name].status == "done"
    header = f"{ACCOUNT_HEADER} (what get_portfolio returns now, valued at snapshot #2):"
    assert header in seen[2], seen[2]
    shown = json.loads(seen[2].split(header)[1].splitlines()[1])
    (answer,) = answers
    answer = json.loads(answer) if isinstance(answer, str) else answer
    assert shown["positions"] and shown["positions"][0]["product_id"] == "BTC-USD"
    assert shown["positions"][0]["mark_price"] == pytest.approx(97_000 * 1.01 * 0.9999)  # marked at #2's bid

    def timeless(p: dict) -> dict:
        return {**p, "positions": [{k_: v for k_, v in q.items() if not k_.startswith("avg_time_held")}
                                   for q in p["positions"]]}  # fmt: skip

    assert timeless(shown) == timeless(answer)
    held = [(a["avg_time_held_s"], b["avg_time_held_s"]) for a, b in zip(shown["positions"], answer["positions"])]
    assert all(0 <= b - a <= 1 and a >= 1 for a, b in held), held
