"""decision: tick -> fill for N routers (deploy_router_node.py) that think through a real chat node
(deploy_chat_node.py) backed by the offline policy server's `momentum` model (an instant model), and
trade through the real tools process; for every N in --agents.

Ticks alternate a 2 % jump up and down over flat candles, so every router's momentum turn buys all
three products on one tick and sells them on the next: get_portfolio, then three parallel
execute_trade calls, then a closing text (3 model calls). Ticks are published closed-loop (the next
after every router finished its turn, plus --gap).

Fill time: Trade.executed_at (arena.trades) - published_at of the tick with seq Trade.tick_seq.
Where the time goes, per fill, from the records themselves:
  delivery  = the turn's Decision "started".started_at - tick published_at (market topic hop);
  model     = sum of the chat node's provider time (ChatReply.elapsed_ms) of the turn's model calls
              made before the fill (2 calls);
  tool      = Trade.latency_ms (tool call received -> filled, inside the tools process);
  framework = the rest: broker hops inside the turn (router -> agent, agent <-> chat node twice,
              agent <-> get_portfolio, agent -> execute_trade: 8 hops) plus calfkit's and our code's
              CPU time. `hops x floor p50` estimates its broker-wait share.
Also the router -> chat node hop under load (ChatRequest.sent_at -> the node's "accepted" record), and
the turn's timeline up to the fill in five stages, from the records' own timestamps (the requests'
sent_at, the chat node's response records, the fill).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime

from arena import kafka as k
from arena.chat import ChatReply, ChatRequest
from arena.config import chat_request_topic
from bench.floor import latency
from bench.harness import (
    Arena,
    Recorder,
    Report,
    add_tuning_args,
    agent_counts,
    closed_loop_ticks,
    dist_ms,
    fmt_dist,
    snapshot,
    start_stack,
    target,
    tuning_of,
)

HOPS_BEFORE_FILL = 8


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agents",
        type=agent_counts,
        default=[1, 10, 50],
        help="router counts to measure, comma separated (default 1,10,50)",
    )
    p.add_argument(
        "--ticks",
        type=int,
        default=10,
        help="ticks measured per agent count; each gives 3 fills per router (default %(default)s)",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=0.3,
        help="seconds between one tick's last turn and the next tick (default %(default)s)",
    )
    p.add_argument(
        "--chat-nodes", type=int, default=1, help="chat nodes the routers share round-robin (default %(default)s)"
    )
    p.add_argument(
        "--chat-max-workers", type=int, default=8, help="deploy_chat_node.py --max-workers (default %(default)s)"
    )
    p.add_argument("--start-concurrency", type=int, default=4, help="routers starting at once (default %(default)s)")
    add_tuning_args(p)


class ChatLog:
    """Chat requests and replies read from their topics (requests: per chat node; replies: every router's
    reply topic, by pattern, from the beginning: the broker is fresh)."""

    def __init__(self) -> None:
        self.requests: dict[str, ChatRequest] = {}
        self.accepted_ms: dict[str, int] = {}  # request id -> record timestamp of "accepted"
        self.responses: dict[str, ChatReply] = {}
        self.response_ms: dict[str, int] = {}  # request id -> record timestamp of the response
        self.seen: set[tuple[str, int, int]] = set()

    def take(self, topic: str, partition: int, offset: int, value: bytes, ts_ms: int) -> None:
        if (topic, partition, offset) in self.seen or not value:
            return
        self.seen.add((topic, partition, offset))
        if topic.endswith(".requests"):
            # The messages are large; only the envelope matters here.
            data = json.loads(value)
            data["messages"] = []
            req = ChatRequest.model_validate(data)
            self.requests[req.request_id] = req
        elif (reply := k.decode(ChatReply, value, topic)) is not None:
            if reply.kind == "accepted":
                self.accepted_ms[reply.request_id] = ts_ms
            else:
                self.responses[reply.request_id] = reply
                self.response_ms[reply.request_id] = ts_ms


async def _follow_chat(kafka, chat_nodes: list[str], log: ChatLog, stop) -> None:
    import asyncio

    req_consumer = k.consumer(
        kafka, *(chat_request_topic(n) for n in chat_nodes), group_id=None, latest=False, metadata_max_age_ms=1000
    )
    rep_consumer = k.consumer(kafka, group_id=None, latest=False, metadata_max_age_ms=1000)
    rep_consumer.subscribe(pattern=r"^arena\.chat\.replies\..*")
    await asyncio.gather(req_consumer.start(), rep_consumer.start())
    try:
        while not stop.is_set():
            for c in (req_consumer, rep_consumer):
                for tp, records in (await c.getmany(timeout_ms=20, max_records=2000)).items():
                    for r in records:
                        log.take(tp.topic, tp.partition, r.offset, r.value, r.timestamp)
    finally:
        await asyncio.gather(req_consumer.stop(), rep_consumer.stop(), return_exceptions=True)


def _ts(x: datetime) -> float:
    return x.timestamp()


def analyse(
    rec: Recorder, chat: ChatLog, agents: set[str], seqs: set[int], sender_of: dict[str, str], floor_p50_ms: float
) -> dict:
    started = {(d.agent, d.tick_seq): d for d in rec.decisions if d.status == "started"}
    finished = {(d.agent, d.tick_seq): d for d in rec.decisions if d.status in ("done", "error", "timeout")}
    by_sender: dict[str, list[ChatRequest]] = defaultdict(list)
    for req in chat.requests.values():
        by_sender[req.sender].append(req)
    total, delivery, model, tool, framework, done_lat = [], [], [], [], [], []
    stages: dict[str, list[float]] = defaultdict(list)
    fills = [t for t in rec.trades if t.status == "filled" and t.agent in agents and t.tick_seq in seqs]
    rejected = [t for t in rec.trades if t.status != "filled" and t.agent in agents and t.tick_seq in seqs]
    for t in fills:
        tick = rec.published[t.tick_seq]
        turn = started.get((t.agent, t.tick_seq))
        tot = _ts(t.executed_at) - _ts(tick.published_at)
        total.append(tot)
        if turn is None:
            continue
        dl = _ts(turn.started_at) - _ts(tick.published_at)
        calls = [
            r
            for r in by_sender.get(sender_of.get(t.agent, "?"), [])
            if _ts(turn.started_at) <= _ts(r.sent_at) <= _ts(t.executed_at)
        ]
        m = sum((chat.responses[r.request_id].elapsed_ms or 0) / 1000 for r in calls if r.request_id in chat.responses)
        tl = (t.latency_ms or 0) / 1000
        calls.sort(key=lambda r: r.sent_at)
        if len(calls) >= 2 and all(r.request_id in chat.response_ms for r in calls[:2]):
            # the turn's timeline up to the fill, from the records' own timestamps
            r1, r2 = calls[0], calls[1]
            done1, done2 = chat.response_ms[r1.request_id] / 1000, chat.response_ms[r2.request_id] / 1000
            stages["1 turn start -> model call 1 sent (prompt hop + agent step)"].append(
                _ts(r1.sent_at) - _ts(turn.started_at)
            )
            stages["2 model call 1 -> its answer sent (hop + provider)"].append(done1 - _ts(r1.sent_at))
            stages["3 answer 1 -> model call 2 sent (hop + get_portfolio round trip)"].append(_ts(r2.sent_at) - done1)
            stages["4 model call 2 -> its answer sent (hop + provider)"].append(done2 - _ts(r2.sent_at))
            stages["5 answer 2 -> fill (hop + trade dispatch hop + desk)"].append(_ts(t.executed_at) - done2)
        delivery.append(dl)
        model.append(m)
        tool.append(tl)
        framework.append(tot - dl - m - tl)
    for key, d in finished.items():
        if key[0] in agents and key[1] in seqs and d.finished_at:
            done_lat.append(_ts(d.finished_at) - _ts(rec.published[key[1]].published_at))
    hop = [(chat.accepted_ms[r.request_id] / 1000 - _ts(r.sent_at)) for s in (sender_of.get(a) for a in agents)
           for r in by_sender.get(s, []) if r.request_id in chat.accepted_ms]  # fmt: skip
    fw = dist_ms(framework)
    return {
        "fills": len(fills),
        "rejected": len(rejected),
        "tick_to_fill_ms": dist_ms(total),
        "tick_to_turn_done_ms": dist_ms(done_lat),
        "breakdown_ms": {
            "delivery": dist_ms(delivery),
            "model": dist_ms(model),
            "tool": dist_ms(tool),
            "framework_and_broker": fw,
            "broker_floor_estimate_p50": round(HOPS_BEFORE_FILL * floor_p50_ms, 1),
        },
        "router_to_chat_node_hop_ms": dist_ms(hop),
        "timeline_ms": {name: dist_ms(xs) for name, xs in sorted(stages.items())},
    }


async def run(args: argparse.Namespace, report: Report) -> int:
    import asyncio

    results: dict = {"by_agents": {}}
    async with Arena(report, tuning_of(args)) as arena:
        floor = dist_ms(await latency(arena.kafka, 200, k.encode(snapshot(1))))
        results["floor_ms"] = floor
        report.line(f"floor (raw publish -> consume, same broker): {fmt_dist(floor)}")
        chat_nodes = await start_stack(
            arena, "momentum", chat_nodes=args.chat_nodes, chat_args=("--max-workers", str(args.chat_max_workers))
        )
        rec = await Recorder(arena.kafka).start()
        chat = ChatLog()
        stop = asyncio.Event()
        follower = asyncio.create_task(_follow_chat(arena.kafka, chat_nodes, chat, stop))
        agents: list[str] = []
        sender_of: dict[str, str] = {}  # agent -> its RemoteChatModel instance id (contains the router's pid)
        seq = 0

        def jump(s):
            return 1.02 if s % 2 else 0.98

        try:
            for n in sorted(set(args.agents)):
                new = [f"dec{i:03d}_{arena.run}" for i in range(len(agents), n)]
                started = await arena.routers(new, chat_nodes, concurrency=args.start_concurrency)
                agents += new
                # warm-up: a buy and a sell turn each (lazy imports, first ledger rows)
                if seq % 2 == 1:
                    seq += 1  # the next tick must be a buy
                await closed_loop_ticks(
                    rec, agents, range(seq + 1, seq + 3), jump_of=jump, gap_s=args.gap, timeout_s=180, report=report
                )
                seq += 2
                for name, svc in zip(new, started):
                    sender_of[name] = next(
                        (r.sender for r in chat.requests.values() if f"-{svc.pid}-" in r.sender), "?"
                    )
                measured = range(seq + 1, seq + 1 + args.ticks)
                c0, t0 = arena.cpu(), asyncio.get_running_loop().time()
                done = await closed_loop_ticks(
                    rec, agents, measured, jump_of=jump, gap_s=args.gap, timeout_s=180, report=report
                )
                c1, t1 = arena.cpu(), asyncio.get_running_loop().time()
                seq += args.ticks
                await asyncio.sleep(0.5)  # the last replies
                row = analyse(rec, chat, set(agents), set(done), sender_of, floor.get("p50", 0.0))
                row["ticks"] = len(done)
                row["cpu_share_by_kind"] = {kind: round((c1[kind] - c0.get(kind, 0.0)) / (t1 - t0), 3) for kind in c1}
                row["memory"] = arena.memory()
                if floor.get("p50") and row["tick_to_fill_ms"].get("n"):
                    row["fill_p50_vs_floor"] = round(row["tick_to_fill_ms"]["p50"] / floor["p50"], 1)
                results["by_agents"][str(n)] = row
                b = row["breakdown_ms"]
                report.line(
                    f"N={n:>3} tick -> fill:        {fmt_dist(row['tick_to_fill_ms'])}  ({row['fills']} fills, {row['rejected']} rejected)"
                )
                report.line(f"      tick -> turn done:   {fmt_dist(row['tick_to_turn_done_ms'])}")
                report.line(
                    f"      p50 split: delivery {b['delivery'].get('p50')} + model {b['model'].get('p50')} + tool {b['tool'].get('p50')} "
                    f"+ framework/broker {b['framework_and_broker'].get('p50')} ms (8 hops x floor = {b['broker_floor_estimate_p50']} ms)"
                )
                report.line(f"      router -> chat node hop: {fmt_dist(row['router_to_chat_node_hop_ms'])}")
                for stage, d in row["timeline_ms"].items():
                    report.line(f"      {stage:<66} p50 {d.get('p50')} ms")
        finally:
            stop.set()
            await asyncio.gather(follower, return_exceptions=True)
            await rec.stop()
    top = results["by_agents"].get("50")
    targets = None
    if top:
        targets = {
            "fill_p50_ms_at_50": target(top["tick_to_fill_ms"].get("p50"), 50.0),
            "fill_p99_ms_at_50": target(top["tick_to_fill_ms"].get("p99"), 150.0),
        }
    report.emit(results, targets)
    return 0
