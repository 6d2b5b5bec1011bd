"""decision: tick -> fill for N routers (deploy_router_node.py) that think through a real chat node
(deploy_chat_node.py) backed by the offline policy server's `momentum` model (an instant model), and
trade through the real tools process; for every N in --agents.

Ticks alternate a 2 % jump up and down over flat candles, so every router's momentum turn buys all
three products on one tick and sells them on the next: with its account in the prompt, three parallel
execute_trade calls, then a closing text (2 model calls). `--turn one-trade` plays the side-by-side
comparison's turn instead (model -> one execute_trade -> model; bench/one_trade.py). Ticks are published
closed-loop on a grid: the next on the first --interval slot after every router finished its turn,
plus --gap (as a connector publishes them, so arena.polling can expect them). Per agent count, enough
ticks for --samples fills; a p99 from fewer is flagged `p99_is_max_of_few`.
Per turn: model calls, tool calls, characters of the prompt and of all text sent to the model; CPU per
decision (every process, the broker included, from /proc/<pid>/stat: gross, and net of the idle rate);
idle CPU per process kind once no tick is expected.

Fill time: Fill.executed_at (arena.trades) - published_at of the tick with seq Fill.tick_seq.
Where the time goes, per fill, from the records themselves:
  delivery  = the turn's Decision "started".started_at - tick published_at (market topic hop);
  model     = sum of the chat node's provider time (ChatReply.elapsed_ms) of the turn's model calls
              made before the fill (1 call);
  tool      = Fill.latency_ms (tool call received -> filled, inside the tools process);
  framework = the rest: broker hops inside the turn (router -> agent, agent <-> chat node,
              agent -> execute_trade: 4 hops) plus calfkit's and our code's
              CPU time. `hops x floor p50` estimates its broker-wait share.
Also the router -> chat node hop under load (ChatRequest.sent_at -> the node's "accepted" record), and
the turn's timeline up to the fill in three stages (five when a model call came before the one that
traded), from the records' own timestamps (the requests' sent_at, the chat node's response records, the fill).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from datetime import datetime

from arena.chat import ChatRequest
from bench.harness import ChatLog, Recorder, Report, dist_ms, fmt_dist, honest, target
from bench.sweep import Step, Sweep, add_sweep_args, sweep

# The turns --turn picks: the policy server's model, fills per router per tick, broker hops before a fill.
TURNS = {
    "momentum": ("momentum", 3, 4),  # account in the prompt: 3 parallel execute_trade, then text: 2 model calls
    "one-trade": ("one-trade", 1, 4),  # the side-by-side turn: model -> one execute_trade -> model
}
TARGET_P50_MS = {1: 60.0, 10: 250.0, 50: 2000.0}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--turn",
        choices=sorted(TURNS),
        default="momentum",
        help="the turn every router plays: momentum (3 trades, text: 2 model calls, 3 fills) or "
        "one-trade (model -> one execute_trade -> model, the side-by-side comparison's; default %(default)s)",
    )
    p.add_argument(
        "--chat-nodes", type=int, default=1, help="chat nodes the routers share round-robin (default %(default)s)"
    )
    p.add_argument(
        "--chat-max-workers", type=int, default=8, help="deploy_chat_node.py --max-workers (default %(default)s)"
    )
    add_sweep_args(p, "fills")


def _ts(x: datetime) -> float:
    return x.timestamp()


def analyse(
    rec: Recorder,
    chat: ChatLog,
    agents: set[str],
    seqs: set[int],
    sender_of: dict[str, str],
    floor_p50_ms: float,
    hops: int = 4,
) -> dict:
    started = {(d.agent, d.tick_seq): d for d in rec.decisions if d.status == "started"}
    finished = {(d.agent, d.tick_seq): d for d in rec.decisions if d.status in ("done", "error", "timeout")}
    by_sender: dict[str, list[ChatRequest]] = defaultdict(list, chat.by_sender())
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
        if len(calls) == 1 and calls[0].request_id in chat.response_ms:
            # the turn's timeline up to the fill (its first model call ordered it)
            r1 = calls[0]
            done1 = chat.response_ms[r1.request_id] / 1000
            stages["1 turn start -> model call 1 sent (prompt hop + agent step)"].append(
                _ts(r1.sent_at) - _ts(turn.started_at)
            )
            stages["2 model call 1 -> its answer sent (hop + provider)"].append(done1 - _ts(r1.sent_at))
            stages["3 answer 1 -> fill (hop + trade dispatch hop + desk)"].append(_ts(t.executed_at) - done1)
        elif len(calls) >= 2 and all(r.request_id in chat.response_ms for r in calls[:2]):
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
        "tick_to_fill_ms": honest(dist_ms(total)),
        "tick_to_turn_done_ms": honest(dist_ms(done_lat)),
        "breakdown_ms": {
            "delivery": dist_ms(delivery),
            "model": dist_ms(model),
            "tool": dist_ms(tool),
            "framework_and_broker": fw,
            "broker_floor_estimate_p50": round(hops * floor_p50_ms, 1),
        },
        "router_to_chat_node_hop_ms": dist_ms(hop),
        "timeline_ms": {name: dist_ms(xs) for name, xs in sorted(stages.items())},
    }


def say(report: Report, step: Step, row: dict, hops: int) -> None:
    b = row["breakdown_ms"]
    few = " (p99 is a max: fewer than 200 fills)" if row["tick_to_fill_ms"].get("p99_is_max_of_few") else ""
    report.line(
        f"N={step.n:>3} tick -> fill:        {fmt_dist(row['tick_to_fill_ms'])}  ({row['fills']} fills, {row['rejected']} rejected){few}"
    )
    report.line(f"      tick -> turn done:   {fmt_dist(row['tick_to_turn_done_ms'])}")
    report.line(
        f"      p50 split: delivery {b['delivery'].get('p50')} + model {b['model'].get('p50')} + tool {b['tool'].get('p50')} "
        f"+ framework/broker {b['framework_and_broker'].get('p50')} ms ({hops} hops x floor = {b['broker_floor_estimate_p50']} ms)"
    )
    report.line(
        f"      per turn: {row['model_calls_per_turn']} model calls, {row['tool_calls_per_turn']} tool calls, "
        f"prompt {row['prompt_chars_per_turn']} chars, {row['input_chars_per_turn']} chars sent to the model"
    )
    report.line(
        f"      CPU per decision: {row.get('cpu_ms_per_decision')} ms; CPU share while ticking "
        f"{row['cpu_share_by_kind']}; idle {row['idle_cpu_share_by_kind']}"
    )
    report.line(f"      router -> chat node hop: {fmt_dist(row['router_to_chat_node_hop_ms'])}")
    for stage, d in row["timeline_ms"].items():
        report.line(f"      {stage:<66} p50 {d.get('p50')} ms")


async def run(args: argparse.Namespace, report: Report) -> int:
    model, fills_per_turn, hops = TURNS[args.turn]
    results: dict = {"turn": args.turn, "by_agents": {}}

    def measure(step: Step) -> dict:
        row = analyse(step.rec, step.chat, set(step.agents), set(step.done), step.senders, step.floor.get("p50", 0.0),
                      hops)  # fmt: skip
        if step.floor.get("p50") and row["tick_to_fill_ms"].get("n"):
            row["fill_p50_vs_floor"] = round(row["tick_to_fill_ms"]["p50"] / step.floor["p50"], 1)
        return row

    how = Sweep(
        prefix="dec",
        model=model,
        measure=measure,
        say=lambda step, row: say(report, step, row, hops),
        jump_of=lambda s: 1.02 if s % 2 else 0.98,  # odd ticks buy, even ones sell
        fills_per_turn=fills_per_turn,
        timeout_s=180,
        pairs=True,
        stack={"chat_nodes": args.chat_nodes, "chat_args": ("--max-workers", str(args.chat_max_workers))},
    )
    await sweep(args, report, how, results)
    targets = {}
    for n, limit in TARGET_P50_MS.items():
        if (row := results["by_agents"].get(str(n))) is not None:
            targets[f"fill_p50_ms_at_{n}"] = target(row["tick_to_fill_ms"].get("p50"), limit)
    if (row := results["by_agents"].get("10")) is not None:
        targets["idle_cpu_share_at_10"] = target(row["idle_cpu_share_by_kind"].get("total"), 0.15)
    if (row := results["by_agents"].get("1")) is not None and args.turn == "momentum":
        targets["model_calls_per_trading_turn"] = target(row["model_calls_per_turn"], 2.0)
    report.emit(results, targets or None)
    return 0
