"""Agents end to end, started as a user would: the policy server, chat nodes, the tools process, routers
(deploy_router_node.py) and the response viewer as real processes on the real broker; the test
publishes market snapshots and reads decisions and trades from their topics."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
import pytest_asyncio

from arena import kafka as k
from arena.broker import free_port
from arena.config import MARKET_TOPIC, KafkaSettings
from arena.decisions import Decision
from arena.market import utcnow
from arena.router import LatestSlot, Router, build_prompt, summarize_snapshot
from tests.support import BASE, ROOT, Proc, Watcher, snapshot, stop_all
from tests.support.agents import function_router

ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # async tests only: sync ones would warn

RUN = uuid.uuid4().hex[:5]  # names unique to this run: the broker is shared by every test module
GOOD, FAILING, SLOW, MISSING = (f"{n}_{RUN}" for n in ("good", "failing", "slow", "nowhere"))
TRIO = [f"{n}_{RUN}" for n in ("alice", "bob", "carol")]
LOST, FAILED, SLOTH = f"dora_{RUN}", f"eve_{RUN}", f"sloth_{RUN}"  # no chat node, a failing provider, a slow model


def router(name: str, chat_node: str, *extra: str) -> Proc:
    return Proc(
        "deploy_router_node.py", "--name", name, "--chat-node-name", chat_node, "--strategy", "momentum", *extra
    )


def stop_cleanly(*procs: Proc) -> None:
    """Ctrl-C every one at once, then check each exited 0 with its goodbye and no traceback."""
    stop_all(list(procs), 30)
    for p in procs:
        said_goodbye = "Stopped." in p.output or "READY" not in p.output  # Ctrl-C during start-up: no goodbye
        assert p.proc.returncode == 0 and said_goodbye and "Traceback" not in p.output, p.output


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arena(broker, tmp_path_factory):
    """Policy server, the chat nodes (momentum / error-500 / slow-3), the tools process, the viewer, three
    routers sharing one chat node, and one router each on a missing chat node, the failing one and the
    slow one. Starting processes is most of this module's time, so they are shared by its tests."""
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    policy = Proc("-m", "arena.cli", "policy-server", "--port", str(port))
    chats = {
        name: Proc(
            "deploy_chat_node.py",
            "--name",
            name,
            "--model-id",
            model,
            "--base-url",
            base_url,
            "--max-retries",
            "0",
            env={"OPENAI_API_KEY": "test"},
        )
        for name, model in ((GOOD, "momentum"), (FAILING, "error-500"), (SLOW, "slow-3"))
    }
    tools = Proc(
        "tools_and_dashboard.py",
        "--no-dashboard",
        "--ledger",
        str(tmp_path_factory.mktemp("router") / "ledger.db"),
        "--status-every",
        "3600",
        "--connect-timeout",
        "120",
    )
    viewer = Proc("response_viewer.py")
    routers: dict[str, Proc] = {}
    watcher = Watcher(kafka)
    try:
        # Two waves, so a dozen processes importing calfkit at once on a small machine do not starve each other.
        for p in [policy, *chats.values(), tools, viewer]:
            p.wait_ready(120)
        routers.update({name: router(name, GOOD) for name in TRIO})
        # a missing chat node is reported after half the turn timeout: 2.5 s per tick the test waits on
        routers[LOST] = router(LOST, MISSING, "--turn-timeout", "5")
        routers[FAILED] = router(FAILED, FAILING, "--turn-timeout", "8")
        routers[SLOTH] = router(SLOTH, SLOW, "--turn-timeout", "30")
        for p in routers.values():
            p.wait_ready(120)
        await watcher.start()
        yield {"watcher": watcher, "routers": routers, "viewer": viewer, "chats": chats}
    finally:
        await watcher.stop()
        try:
            stop_cleanly(*routers.values())
        finally:
            for p in [viewer, tools, *chats.values(), policy]:
                p.stop()
        assert viewer.proc.returncode == 0, viewer.output


@ON_MODULE_LOOP
async def test_each_router_takes_every_tick_and_trades_its_own_account(arena):
    w, viewer = arena["watcher"], arena["viewer"]
    seqs = [1, 2, 3, 4]
    for seq in seqs:  # flat, a 2% jump (momentum buys), then two more ticks
        await w.publish(snapshot(seq, jump=1.02 if seq >= 2 else 1.0))
        await asyncio.sleep(1.0)
    await w.until(
        lambda: all(w.of(a, "done", "error", "timeout", seqs={4}) for a in TRIO), 60, "every router's turn on #4"
    )
    for a in TRIO:  # (the routers on a missing / failing / slow model take these ticks too; see below)
        # Every router received every tick: it took a turn on it or reports it skipped (newer one waiting).
        assert {d.tick_seq for d in w.of(a, "started", "skipped", seqs=set(seqs))} == set(seqs), a
        done = w.of(a, "done", seqs=set(seqs))
        assert done and all(d.chat_node == GOOD and d.strategy == "momentum" and d.output for d in done)
        assert not w.of(a, "error", "timeout")
    # The turn on the jump bought, for each agent, into its own account.
    await w.until(lambda: all(any(t.agent == a and t.status == "filled" for t in w.trades) for a in TRIO), 30, "fills")
    assert {t.agent for t in w.trades if t.status == "filled"} == set(TRIO)
    for a in TRIO:
        assert {t.product_id for t in w.trades if t.agent == a and t.side == "buy"} == set(BASE), a
    # The viewer (started before the routers) showed each agent's calls, results and turns.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        viewer.output.count("← execute_trade: filled buy") < 9 or viewer.output.count("✓ #4 done in") < 3
    ):
        await asyncio.sleep(0.2)
    out = viewer.output
    assert out.count("← execute_trade: filled buy") == 9, out  # 3 agents x 3 products, each once
    for a in TRIO:
        mine = [line for line in out.splitlines() if line[9:].startswith(a[:9])]
        text = "\n".join(mine)
        assert "→ get_portfolio()" in text and "← get_portfolio: value $" in text, text
        assert "→ execute_trade(product_id=BTC-USD, side=buy," in text, text
        assert "▶ turn on #" in text and "✓ #4 done in" in text, text


@ON_MODULE_LOOP
async def test_a_restarted_router_starts_at_the_newest_tick(arena):
    w, routers = arena["watcher"], arena["routers"]
    name = TRIO[0]
    stop_cleanly(routers[name])
    for seq in (20, 21, 22):  # a backlog while it is down
        await w.publish(snapshot(seq, jump=1.02))
    await asyncio.sleep(0.5)
    routers[name] = router(name, GOOD)  # in the fixture's care before it can fail
    routers[name].wait_ready(120)
    await w.publish(snapshot(23, jump=1.02))
    await w.until(lambda: w.of(name, "done", seqs={23}), 60, "the restarted router's turn on #23")
    assert not w.of(name, seqs={20, 21, 22}), "the restarted router replayed its backlog"
    assert "#23 done in" in routers[name].output


@ON_MODULE_LOOP
async def test_missing_chat_node_and_failing_provider_are_clear_errors_while_others_trade(arena):
    w, routers = arena["watcher"], arena["routers"]
    for seq in (30, 31):
        await w.publish(snapshot(seq))
        await w.until(
            lambda: all(w.of(a, "done", "error", "timeout", seqs={seq}) for a in [*TRIO, LOST, FAILED]),
            30,
            f"every turn on #{seq}",
        )
    for seq in (30, 31):  # both failing agents keep going, tick after tick, and the others trade on
        [miss] = w.of(LOST, "done", "error", "timeout", seqs={seq})
        assert miss.status == "error" and MISSING in miss.reason and "running" in miss.reason, miss
        [fail] = w.of(FAILED, "done", "error", "timeout", seqs={seq})
        assert fail.status == "error" and "500" in fail.reason, fail
        assert all(w.of(a, "done", seqs={seq}) for a in TRIO)
    assert f"{LOST} #31 error after" in routers[LOST].output and f"{FAILED} #31 error after" in routers[FAILED].output
    assert "Traceback" not in routers[LOST].output + routers[FAILED].output
    viewer = " ".join(arena["viewer"].output.split())  # the viewer wraps long reasons at 80 columns
    assert "✗ #31 model error after" in viewer and "is deploy_chat_node.py --name" in viewer, viewer


@ON_MODULE_LOOP
async def test_slow_model_never_builds_a_backlog(arena):
    w, name = arena["watcher"], SLOTH
    seqs = list(range(100, 112))
    for seq in seqs:  # a tick every 0.5 s; one turn (two model calls of 3 s) takes ~6 s
        await w.publish(snapshot(seq))
        await asyncio.sleep(0.5)
    await w.until(lambda: w.of(name, "done", seqs={seqs[-1]}), 40, "the slow router's turn on the last tick")
    started = w.of(name, "started", seqs=set(seqs))
    assert {d.tick_seq for d in started} | {d.tick_seq for d in w.of(name, "skipped", seqs=set(seqs))} == set(seqs)
    assert [d.tick_seq for d in started] == sorted(d.tick_seq for d in started)
    assert len(started) <= 3 and len(w.of(name, "skipped", seqs=set(seqs))) >= 8
    for d in started:  # each turn took the newest tick there was, not the next in line
        newer = [s for s in seqs if s > d.tick_seq and w.sent_at[s] < d.started_at.timestamp() - 0.5]
        assert not newer, f"turn on #{d.tick_seq} started while #{newer} had long been published"
    assert not w.of(name, "error", "timeout")


# --- the pure parts --------------------------------------------------------------------------------


@ON_MODULE_LOOP
async def test_latest_slot_keeps_only_the_newest():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert await slot.take() == 2
    waiter = asyncio.create_task(slot.take())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    slot.put(3)
    assert await asyncio.wait_for(waiter, 1) == 3


def _unconnected(seen: list[Decision]) -> Router:
    """A router never started (no broker there): its offers and decisions only."""
    return Router(name="x", system_prompt="", model_client=None, kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
                  on_decision=seen.append)  # fmt: skip


@ON_MODULE_LOOP
async def test_offer_reports_displaced_and_late_ticks_as_skipped():
    seen: list[Decision] = []
    r = _unconnected(seen)
    s1, s2, s3 = snapshot(1), snapshot(2), snapshot(3)
    s2.published_at = s1.published_at + timedelta(seconds=1)
    s3.published_at = s1.published_at + timedelta(seconds=2)
    r.offer(s1)
    r.offer(s3)  # displaces #1 while no turn took it
    r.offer(s2)  # arrives after #3
    await asyncio.sleep(0)
    assert [(d.tick_seq, d.status) for d in seen] == [(1, "skipped"), (2, "skipped")]
    assert "superseded by #3" in seen[0].reason and "not newer than #3" in seen[1].reason
    assert (await r.slot.take()).seq == 3
    await asyncio.sleep(0.05)  # the decisions' sends fail (no broker here) without raising


@ON_MODULE_LOOP
async def test_poison_is_skipped_and_a_time_ahead_is_capped_at_arrival():
    from collections import namedtuple

    Record = namedtuple("Record", "topic partition offset value")
    seen: list[Decision] = []
    r = _unconnected(seen)
    ahead = snapshot(1)
    ahead.published_at = utcnow() + timedelta(seconds=4)  # within the skew: a valid record
    zoneless = json.loads(k.encode(snapshot(9)))
    zoneless["published_at"] = utcnow().replace(tzinfo=None).isoformat()
    r._offer_records(
        {
            "p0": [
                Record(MARKET_TOPIC, 0, 1, k.encode(ahead)),
                Record(MARKET_TOPIC, 0, 2, json.dumps(zoneless).encode()),
                Record(MARKET_TOPIC, 0, 3, b"garbage"),
            ]
        }
    )
    assert r.newest_seen.seq == 1 and r.newest_seen.published_at <= utcnow()
    await asyncio.sleep(0.01)
    r._offer_records({"p0": [Record(MARKET_TOPIC, 0, 4, k.encode(snapshot(2)))]})  # published after #1 arrived
    assert r.newest_seen.seq == 2
    await asyncio.sleep(0)
    assert [(d.tick_seq, d.status) for d in seen] == [(1, "skipped")] and "superseded by #2" in seen[0].reason
    assert (await r.slot.take()).seq == 2
    await asyncio.sleep(0.05)  # the decisions' sends fail (no broker here) without raising


def test_prompt_and_summary():
    snap = snapshot(7)
    snap.quotes["FARTCOIN-USD"].stale = True
    prev = Decision(
        agent="a", run_id="r", tick_seq=6, tick_published_at=utcnow(), status="done", output="Bought BTC.\nTrend up."
    )
    prompt = build_prompt(snap, prev)
    assert "snapshot #7" in prompt and "BTC-USD | 97,000.00" in prompt and "STALE - do not trade" in prompt
    assert "Your previous turn (snapshot #6) concluded: Bought BTC. Trend up." in prompt
    assert "call get_portfolio only if it is not shown" in prompt and "one short sentence" in prompt
    assert "Your account: not yet known. Call get_portfolio to see it." in prompt  # no record of it yet
    assert summarize_snapshot(snap) == "#7 BTC 97,000.00 · FARTCOIN 0.810000 STALE · SOL 145.0000"


@pytest.mark.processes
def test_cli_help_and_bad_arguments():
    def run(*a):
        return subprocess.run(
            [sys.executable, "deploy_router_node.py", *a], cwd=ROOT, capture_output=True, text=True, timeout=30
        )

    help_ = run("--help")
    assert help_.returncode == 0
    for flag in (
        "--name",
        "--chat-node-name",
        "--strategy",
        "--turn-timeout",
        "--bootstrap-servers",
        "(default default)",
    ):
        assert flag in " ".join(help_.stdout.split())  # argparse wraps lines at the terminal's width
    for strategy in ("default", "momentum", "brainrot", "scalper"):
        assert strategy in help_.stdout
    bad = run("--name", "a b/c")
    assert bad.returncode == 2 and "letters, digits" in bad.stderr
    assert run("--name", "ok", "--strategy", "yolo").returncode == 2
    assert run("--name", "ok", "--turn-timeout", "0").returncode == 2
    viewer = subprocess.run(
        [sys.executable, "response_viewer.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert viewer.returncode == 0 and "--agent" in viewer.stdout


@ON_MODULE_LOOP
async def test_between_turns_only_the_market_consumer_fetches(kafka):
    """An idle router polls the broker on one consumer, not six (Tansu answers a fetch only when its
    wait runs out, so each running consumer is a fetch per 10 ms on both sides): calfkit's inbox,
    node subscriber and fan-out tables and the chat replies are paused between turns, and during one
    only where a reply is due: none of them while the model (here in-process) thinks."""
    from arena.compat.vendored_pydantic_ai import ModelResponse, TextPart

    router_box: list[Router] = []
    awake_in_turn: list[bool] = []

    def asleep(c) -> bool:
        return bool(c.assignment()) and c.paused() == c.assignment()

    def positioned(c) -> bool:  # aiokafka has no public non-waiting check
        a = c._subscription.subscription.assignment
        return all(a.state_value(tp).has_valid_position for tp in c.assignment())

    def think(messages, info) -> ModelResponse:
        awake_in_turn.append(any(not c.paused() for c in router_box[0]._turn_consumers.consumers))
        return ModelResponse(parts=[TextPart("holding")])

    # account_wait_s: no tools process here to value the account
    r = function_router(think, name=f"doze_{uuid.uuid4().hex[:6]}", kafka=kafka, model_name="instant",
                        system_prompt="hold", account_wait_s=0.1)  # fmt: skip
    router_box.append(r)

    async def no_tools_needed(wait_s: float) -> tuple[str, ...]:  # the turn only holds: no tools process here
        return ()

    r.missing_tools = no_tools_needed
    await r.start()
    try:
        turn_consumers = r._turn_consumers.consumers
        topics = {t for c in turn_consumers for t in c.subscription()}
        assert len(turn_consumers) >= 4 and f"agent.{r.name}.private.input" in topics, topics
        assert MARKET_TOPIC not in topics and not r._market.paused()
        # calfkit's capability directory stays live: a tools process may (re)advertise between turns
        assert "calf.capabilities" not in topics and not any(
            t.startswith("calf.") and "fanout" not in t for t in topics
        )
        assert all(asleep(c) for c in turn_consumers)
        # READY means positioned: a group's "latest" resolved after the first request would skip it
        assert all(positioned(c) for c in turn_consumers), [
            c.subscription() for c in turn_consumers if not positioned(c)
        ]
        for seq in (1, 2):  # woken for each turn, dozing again after it
            d = await asyncio.wait_for(r.run_turn(snapshot(seq)), 60)
            assert d.status == "done" and d.output == "holding", d
            assert awake_in_turn[-1] is False
            assert all(asleep(c) for c in turn_consumers)
        assert not r._market.paused()
    finally:
        await r.stop()


@ON_MODULE_LOOP
async def test_a_timed_out_turn_says_where_its_consumers_stand(kafka, caplog):
    """A turn that times out logs one line on its consumers (paused or behind), to tell a slow model from a
    reply that never arrived (docs/RELIABILITY.md "Known issues")."""
    from arena.compat.vendored_pydantic_ai import ModelResponse, TextPart

    async def slow(messages, info) -> ModelResponse:
        await asyncio.sleep(3)
        return ModelResponse(parts=[TextPart("too late")])

    r = function_router(slow, name=f"slow_{uuid.uuid4().hex[:6]}", kafka=kafka, system_prompt="hold",
                        turn_timeout_s=1.0, account_wait_s=0.1)  # fmt: skip

    async def no_tools_needed(wait_s: float) -> tuple[str, ...]:  # the turn only holds: no tools process here
        return ()

    r.missing_tools = no_tools_needed
    await r.start()
    try:
        caplog.set_level(logging.WARNING, logger="arena.router")
        d = await asyncio.wait_for(r.run_turn(snapshot(1)), 60)
        assert d.status == "timeout", d
        [line] = [m.getMessage() for m in caplog.records if "timed out; its consumers:" in m.getMessage()]
        assert line.startswith("turn on #1 timed out; its consumers: "), line
        assert line.endswith("; it was waiting for a model's answer"), line  # a slow model, not a lost reply
    finally:
        await r.stop()


async def test_a_timed_out_turns_step_that_never_ends_does_not_hold_up_the_next_turn(kafka, monkeypatch):
    """The agent node serves its runs in key-ordered lanes (4 here); a turn whose model call never returns
    keeps its lane busy after the timeout. The next turn's run id hashes to that same lane: it must still
    run (arena/compat/key_lanes.py), not wait behind the stuck step until its own timeout."""
    import types
    import zlib

    from arena import router as router_module
    from arena.compat.vendored_pydantic_ai import ModelResponse, TextPart

    lanes = 4  # Router's max_workers
    first = uuid.uuid4().hex
    lane = zlib.crc32(first.encode()) % lanes
    second = next(h for h in (uuid.uuid4().hex for _ in range(1000)) if zlib.crc32(h.encode()) % lanes == lane)
    ids = iter([first, second])
    monkeypatch.setattr(
        router_module, "uuid", types.SimpleNamespace(uuid4=lambda: types.SimpleNamespace(hex=next(ids)))
    )
    never = asyncio.Event()
    calls = 0

    async def think(messages, info) -> ModelResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            await never.wait()  # the first turn's model call never returns
        return ModelResponse(parts=[TextPart("hold")])

    r = function_router(think, name=f"lanes_{uuid.uuid4().hex[:6]}", kafka=kafka, system_prompt="hold",
                        turn_timeout_s=2.0, account_wait_s=0.1)  # fmt: skip

    async def no_tools_needed(wait_s: float) -> tuple[str, ...]:
        return ()

    r.missing_tools = no_tools_needed
    await r.start()
    try:
        d1 = await asyncio.wait_for(r.run_turn(snapshot(1)), 60)
        assert d1.status == "timeout" and d1.run_id == first, d1
        d2 = await asyncio.wait_for(r.run_turn(snapshot(2)), 60)
        assert d2.status == "done" and d2.run_id == second, d2
    finally:
        never.set()
        await r.stop()
