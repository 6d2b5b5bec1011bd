"""What every benchmark shares: a fresh broker, the arena's scripts started as real processes (as a user
starts them), their memory and CPU from /proc, a recorder of the decisions/trades topics, synthetic
market snapshots, percentiles, and the report (human lines on stderr, one JSON object last on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from arena.broker import free_port
from arena.config import KafkaSettings
from arena.decisions import Decision
from arena.market import MarketSnapshot
from tests.support import Proc, Stack, Watcher
from tests.support import snapshot as market_snapshot

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------ numbers


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))]


def dist_ms(xs_s: list[float]) -> dict[str, Any]:
    """Distribution of durations given in seconds, reported in milliseconds."""
    if not xs_s:
        return {"n": 0}
    ms = [x * 1000 for x in xs_s]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 0.50), 2),
        "p90": round(pct(ms, 0.90), 2),
        "p99": round(pct(ms, 0.99), 2),
        "max": round(max(ms), 2),
        "mean": round(sum(ms) / len(ms), 2),
    }


def fmt_dist(d: dict) -> str:
    if not d.get("n"):
        return "no samples"
    return f"p50 {d['p50']:8.1f} ms  p99 {d['p99']:8.1f} ms  max {d['max']:8.1f} ms  (n={d['n']})"


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 1),  # other work on the machine while it ran
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ------------------------------------------------------------------------------------------ reporting


class Report:
    """Progress and human-readable lines go to stderr; the JSON result is the last thing on stdout."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.as_json = getattr(args, "json", False)
        self.params = {k: v for k, v in vars(args).items() if k not in ("json", "func")}
        self.t0 = time.monotonic()
        self.machine = machine()  # at the start: the load other work put on the machine before this run's own

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def line(self, msg: str = "") -> None:
        """A line of the human summary (stdout, unless --json asks for JSON only)."""
        print(msg, file=sys.stderr if self.as_json else sys.stdout, flush=True)

    def emit(self, results: dict[str, Any], targets: dict[str, Any] | None = None) -> None:
        end = {"loadavg_1m_at_end": round(os.getloadavg()[0], 1)}
        out = {"bench": self.name, "machine": {**self.machine, **end}, "params": self.params, "results": results}
        if targets:
            out["targets"] = targets
        out["wall_s"] = round(time.monotonic() - self.t0, 1)
        print(json.dumps(out, default=str), flush=True)


def target(value: float | None, limit: float, *, at_most: bool = True) -> dict[str, Any]:
    ok = value is not None and (value <= limit if at_most else value >= limit)
    return {"value": value, ("max" if at_most else "min"): limit, "met": ok}


# ------------------------------------------------------------------------------------------ processes


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (children not included)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


class Service(Proc):
    """One arena script as a real subprocess (tests/support's Proc), of a kind (chat-node, router, ...)."""

    def __init__(self, *args: str, kind: str, **kw):
        super().__init__(*args, **kw)
        self.kind = kind

    def rss_mb(self) -> float | None:
        return proc_rss_mb(self.pid)

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.pid)


class Arena(Stack):
    """A fresh broker and the arena's processes, started like a user would; `close()` stops them all.

    Names are unique per run (the broker is fresh anyway). Every process gets
    KAFKA_BOOTSTRAP_SERVERS of this broker; ledgers and logs go to a temporary directory.
    """

    def __init__(self, report: Report, tuning: dict[str, int] | None = None):
        # Each process in a session of its own: a Ctrl-C in the terminal reaches the benchmark alone,
        # which stops its processes in order.
        super().__init__(
            Path(tempfile.mkdtemp(prefix="arena-bench-")), {"OPENAI_API_KEY": "bench-not-a-key"}, new_session=True
        )
        self.report = report
        # What-if consumer tuning for the arena's scripts (see bench/tuned.py): env name -> value.
        self.tuning = {k: str(v) for k, v in (tuning or {}).items() if v is not None}
        self.run = uuid.uuid4().hex[:5]
        self.policy_url = ""

    @property
    def services(self) -> list[Service]:
        return self.all()

    async def __aenter__(self) -> Arena:  # noqa: PYI034
        await self.start_broker()
        self.report.log(f"broker on {self.broker.bootstrap} (pid {self.broker.proc.pid}); run id {self.run}")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def launch(self, kind: str, *args: str, tty: bool = False) -> Service:
        env = dict(self.tuning)  # ARENA_* settings reach every process; BENCH_* need bench.tuned
        if any(k.startswith("BENCH_") for k in env) and args and args[0].endswith(".py"):
            args = ("-m", "bench.tuned", *args)
        return self.start(f"{kind} {len(self.procs) + 1}", *args, proc_type=Service, kind=kind, tty=tty, env=env)

    async def policy_server(self) -> Service:
        """The offline policy server, with the one-trade turn's model too (bench/one_trade.py)."""
        port = free_port()
        self.policy_url = f"http://127.0.0.1:{port}/v1"
        return await self.launch("policy-server", "-m", "bench.one_trade", "--port", str(port)).ready(60)

    def chat_node(self, name: str, model: str, *extra: str) -> Service:
        return self.launch("chat-node", "deploy_chat_node.py", "--name", name, "--model-id", model, "--base-url", self.policy_url,
                           "--log-level", "WARNING", *extra)  # fmt: skip

    def tools(self, *, dashboard: bool = False, extra: tuple[str, ...] = ()) -> Service:
        args = ["tools_and_dashboard.py", "--ledger", str(self.tmp / f"ledger-{uuid.uuid4().hex[:6]}.db"),
                "--log-file", str(self.tmp / "tools.log"), "--status-every", "3600", *extra]  # fmt: skip
        if not dashboard:
            args.append("--no-dashboard")
        return self.launch("tools+dashboard" if dashboard else "tools", *args, tty=dashboard)

    def router(self, name: str, chat_node: str, strategy: str = "momentum", *extra: str) -> Service:
        # The default 30 s connect timeout is not enough for the 40th router on a busy 2-core machine.
        return self.launch("router", "deploy_router_node.py", "--name", name, "--chat-node-name", chat_node, "--strategy", strategy,
                           "--connect-timeout", "300", *extra)  # fmt: skip

    async def routers(self, names: list[str], chat_nodes: list[str], *, concurrency: int = 4, timeout: float = 900,
                      strategy: str = "momentum") -> list[Service]:  # fmt: skip
        """Start routers `concurrency` at a time (each start is ~3 s of CPU: 2 cores gain nothing from more)."""
        started: list[Service] = []
        pending = list(enumerate(names))
        running: list[Service] = []
        reported = 0
        deadline = time.monotonic() + timeout
        while pending or running:
            while pending and len(running) < concurrency:
                i, name = pending.pop(0)
                svc = self.router(name, chat_nodes[i % len(chat_nodes)], strategy)
                running.append(svc)
                started.append(svc)
            await asyncio.sleep(0.05)
            for svc in list(running):
                if svc.ready_at is not None:
                    running.remove(svc)
                elif svc.proc.poll() is not None:
                    raise RuntimeError(f"router exited with {svc.proc.returncode}:\n" + "\n".join(svc.lines[-30:]))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(running) + len(pending)} routers not ready within {timeout:.0f}s")
            ready = len(started) - len(running)
            if ready // 10 > reported // 10:
                self.report.log(f"{ready}/{len(names)} routers ready")
            reported = ready
        self.report.log(f"{len(names)} new routers ready")
        return started

    def memory(self) -> dict[str, Any]:
        """RSS per process kind (MB): count, mean, max, total; plus the broker's and the grand total."""
        by_kind: dict[str, list[float]] = {}
        for svc in self.services:
            if svc.proc.poll() is None and (rss := svc.rss_mb()) is not None:
                by_kind.setdefault(svc.kind, []).append(rss)
        if self.broker.proc and (rss := proc_rss_mb(self.broker.proc.pid)) is not None:
            by_kind["broker"] = [rss]
        out: dict[str, Any] = {
            kind: {
                "count": len(xs),
                "mean_mb": round(sum(xs) / len(xs), 1),
                "max_mb": round(max(xs), 1),
                "total_mb": round(sum(xs), 1),
            }
            for kind, xs in by_kind.items()
        }
        out["total_mb"] = round(sum(sum(xs) for xs in by_kind.values()), 1)
        return out

    async def idle_cpu(self, seconds: float) -> dict[str, float]:
        """CPU share (CPU seconds per wall second) per process kind, the broker included, over `seconds`
        with nothing sent; "total" sums them."""
        c0, t0 = self.cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        return cpu_share(c0, self.cpu(), time.monotonic() - t0)

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far per process kind (plus the broker), from /proc/<pid>/stat."""
        out: dict[str, float] = {}
        for svc in self.services:
            if (c := svc.cpu_s()) is not None:
                out[svc.kind] = out.get(svc.kind, 0.0) + c
        if self.broker.proc and (c := proc_cpu_s(self.broker.proc.pid)) is not None:
            out["broker"] = c
        return out


def cpu_share(c0: dict[str, float], c1: dict[str, float], wall_s: float) -> dict[str, float]:
    """CPU seconds per wall second per kind between two Arena.cpu() readings, and their "total"."""
    out = {kind: round((c1[kind] - c0.get(kind, 0.0)) / wall_s, 3) for kind in c1}
    out["total"] = round(sum(out.values()), 3)
    return out


# ------------------------------------------------------------------------------------------ market + records


def snapshot(seq: int, jump: float = 1.0) -> MarketSnapshot:
    return market_snapshot(seq, jump, source="bench")


class Recorder(Watcher):
    """Publishes snapshots and records everything on the decisions and trades topics (and any extra topics)
    from now on, with this process's receipt time."""

    def __init__(self, kafka: KafkaSettings, *extra_topics: str):
        super().__init__(kafka, *extra_topics, create_topics=True)

    async def publish(self, seq: int, jump: float = 1.0) -> MarketSnapshot:
        return await super().publish(snapshot(seq, jump))

    def of(self, status: str, agent: str | None = None) -> list[Decision]:
        return super().of(agent, status)


def agent_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated agent counts, got {text!r}") from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("agent counts must be positive")
    return counts


# ------------------------------------------------------------------------------------------ a trading arena


async def start_stack(arena: Arena, model: str, *, chat_nodes: int = 1, chat_args: tuple[str, ...] = (),
                      tools_args: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """The shared parts, started together: policy server (the instant model), chat nodes, the tools
    process (headless). Returns the chat node names."""
    await arena.policy_server()
    names = [f"bench{i}_{arena.run}" for i in range(chat_nodes)]
    parts = [arena.chat_node(n, model, *chat_args) for n in names] + [arena.tools(extra=tools_args)]
    await asyncio.gather(*(p.ready(120) for p in parts))
    return names


class ChatLog:
    """Chat requests and replies read from their topics (requests: per chat node; replies: every router's
    reply topic, by pattern, from the beginning: the broker is fresh). Keeps each request's envelope and
    how much text it carried, each reply's tool calls."""

    def __init__(self) -> None:
        self.requests: dict[str, Any] = {}  # request id -> ChatRequest (messages dropped)
        self.prompt_chars: dict[str, int] = {}  # request id -> characters of the newest user prompt in it
        self.input_chars: dict[str, int] = {}  # request id -> characters of every text sent (what a provider reads)
        self.accepted_ms: dict[str, int] = {}  # request id -> record timestamp of "accepted"
        self.responses: dict[str, Any] = {}  # request id -> ChatReply
        self.response_ms: dict[str, int] = {}  # request id -> record timestamp of the response
        self.seen: set[tuple[str, int, int]] = set()

    def take(self, topic: str, partition: int, offset: int, value: bytes, ts_ms: int) -> None:
        from arena import kafka as k
        from arena.chat import ChatReply, ChatRequest

        if (topic, partition, offset) in self.seen or not value:
            return
        self.seen.add((topic, partition, offset))
        if topic.endswith(".requests"):
            data = json.loads(value)
            texts, prompt = _texts(data.get("messages") or [])
            data["messages"] = []  # large; only the envelope is kept
            req = ChatRequest.model_validate(data)
            self.requests[req.request_id] = req
            self.input_chars[req.request_id] = sum(len(t) for t in texts)
            self.prompt_chars[req.request_id] = len(prompt)
        elif (reply := k.decode(ChatReply, value, topic)) is not None:
            if reply.kind == "accepted":
                self.accepted_ms[reply.request_id] = ts_ms
            else:
                self.responses[reply.request_id] = reply
                self.response_ms[reply.request_id] = ts_ms

    def tool_calls(self, request_id: str) -> int:
        reply = self.responses.get(request_id)
        parts = reply.response.parts if reply is not None and reply.response is not None else []
        return sum(1 for p in parts if getattr(p, "part_kind", "") == "tool-call")

    def by_sender(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for req in self.requests.values():
            out.setdefault(req.sender, []).append(req)
        return out


def _texts(messages: list[dict]) -> tuple[list[str], str]:
    """Every text in a request's messages (prompts, tool results and arguments, earlier answers), and the
    newest user prompt."""
    texts, prompt = [], ""
    for m in messages:
        for part in m.get("parts") or []:
            for key in ("content", "args"):
                v = part.get(key)
                if v is None:
                    continue
                text = v if isinstance(v, str) else json.dumps(v)
                texts.append(text)
                if part.get("part_kind") == "user-prompt" and key == "content":
                    prompt = text
    return texts, prompt


async def follow_chat(kafka: KafkaSettings, chat_nodes: list[str], log: ChatLog, stop: asyncio.Event) -> None:
    from arena import kafka as k
    from arena.config import chat_request_topic

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


def turn_stats(rec: Recorder, chat: ChatLog, agents: set[str], seqs: set[int], sender_of: dict[str, str]) -> dict:
    """Per finished turn: model calls, tool calls the model made, characters of the turn's prompt and of
    all the text its model calls sent (a provider bills that as input)."""
    started = {(d.agent, d.tick_seq): d for d in rec.decisions if d.status == "started"}
    by_sender = chat.by_sender()
    calls, tools, prompt, sent, statuses = [], [], [], [], {}
    for d in rec.decisions:
        if d.agent not in agents or d.tick_seq not in seqs or d.status not in ("done", "error", "timeout"):
            continue
        statuses[d.status] = statuses.get(d.status, 0) + 1
        s = started.get((d.agent, d.tick_seq))
        if s is None or d.finished_at is None:
            continue
        lo, hi = s.started_at.timestamp(), d.finished_at.timestamp()
        mine = [r for r in by_sender.get(sender_of.get(d.agent, "?"), []) if lo <= r.sent_at.timestamp() <= hi]
        mine.sort(key=lambda r: r.sent_at)
        calls.append(len(mine))
        tools.append(sum(chat.tool_calls(r.request_id) for r in mine))
        prompt.append(chat.prompt_chars.get(mine[0].request_id, 0) if mine else 0)
        sent.append(sum(chat.input_chars.get(r.request_id, 0) for r in mine))

    def mean(xs: list[int]) -> float | None:
        return round(sum(xs) / len(xs), 2) if xs else None

    return {
        "turns": statuses,
        "model_calls_per_turn": mean(calls),
        "model_calls_per_turn_max": max(calls, default=None),
        "tool_calls_per_turn": mean(tools),
        "prompt_chars_per_turn": mean(prompt),
        "input_chars_per_turn": mean(sent),
    }


def sender_of(chat: ChatLog, names: list[str], services: list[Service]) -> dict[str, str]:
    """Each router's RemoteChatModel instance id (it contains the router's pid)."""
    return {
        name: next((r.sender for r in chat.requests.values() if f"-{svc.pid}-" in r.sender), "?")
        for name, svc in zip(names, services)
    }


def ticks_for(args: argparse.Namespace, n: int, fills_per_turn: int) -> int:
    """--ticks, or enough ticks for --samples samples at n agents (at least --min-ticks)."""
    if args.ticks:
        return args.ticks
    return max(args.min_ticks, -(-args.samples // (n * fills_per_turn)))


def add_sampling_args(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--samples",
        type=int,
        default=200,
        help=f"{what} measured per agent count (at least; percentiles from fewer are labelled maxima; default %(default)s)",
    )
    g.add_argument(
        "--min-ticks", type=int, default=5, help="ticks measured per agent count, at least (default %(default)s)"
    )
    g.add_argument("--ticks", type=int, default=None, help="ticks per agent count, instead of --samples")
    g.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="ticks are due on this grid (seconds), like the connector's --interval; a tick waits for the "
        "first slot after every turn on the previous one ended and --gap passed (default %(default)s)",
    )
    g.add_argument(
        "--idle-s",
        type=float,
        default=8.0,
        help="seconds of idle CPU measured per agent count, once no tick is expected (default %(default)s)",
    )


def honest(d: dict[str, Any], minimum: int = 200) -> dict[str, Any]:
    """A distribution whose p99 rests on fewer than `minimum` samples says so (`p99_is_max_of_few`)."""
    if d.get("n") and d["n"] < minimum:
        d = {**d, "p99_is_max_of_few": True}
    return d


def turn_over(rec: Recorder, agents: list[str], seq: int) -> bool:
    """Every agent has finished (done, error or timeout) its turn on tick `seq`."""
    finished = {d.agent for d in rec.decisions if d.tick_seq == seq and d.status in ("done", "error", "timeout")}
    return finished.issuperset(agents)


async def closed_loop_ticks(rec: Recorder, agents: list[str], seqs: range, *, jump_of, gap_s: float, timeout_s: float,
                            report: Report | None = None, interval_s: float = 0.0) -> list[int]:  # fmt: skip
    """Publish one tick, wait until every agent has finished its turn on it, pause `gap_s`, repeat: each
    tick reaches idle routers, so its delivery is not delayed by an earlier turn. With `interval_s`, ticks
    go out only on that grid (the next free slot), as a connector publishes them: arena.polling expects
    them then. Returns the seqs whose turns all finished in time."""
    complete = []
    loop = asyncio.get_running_loop()
    grid = loop.time()
    for seq in seqs:
        if interval_s > 0:
            now = loop.time()
            slot = grid + max(0, -(-(now - grid) // interval_s)) * interval_s
            await asyncio.sleep(slot - now)
        await rec.publish(seq, jump_of(seq))
        if await rec.wait_for(lambda s=seq: turn_over(rec, agents, s), timeout_s):
            complete.append(seq)
        elif report:
            missing = set(agents) - {d.agent for d in rec.decisions if d.tick_seq == seq and d.status != "started"}
            report.log(f"tick {seq}: {len(missing)} agents did not finish within {timeout_s:.0f}s")
        await asyncio.sleep(gap_s)
    return complete


def add_tuning_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what-if tuning (default: the arena's own settings)")
    g.add_argument(
        "--idle-wait-ms",
        type=int,
        default=None,
        help="arena.polling's long fetch wait (env ARENA_IDLE_WAIT_MS) in every process; 0 turns the policy off",
    )
    g.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=None,
        help="fetch_max_wait_ms for every arena consumer and calfkit node subscriber (arena.config.CONSUMER_TUNING)",
    )
    g.add_argument(
        "--reader-ms",
        type=int,
        default=None,
        help="poll and fetch cadence of calfkit's fan-out table readers in the routers (KTableReaderTuning)",
    )


def tuning_of(args: argparse.Namespace) -> dict[str, int]:
    return {
        "ARENA_IDLE_WAIT_MS": getattr(args, "idle_wait_ms", None),
        "BENCH_FETCH_WAIT_MS": args.fetch_wait_ms,
        "BENCH_READER_POLL_MS": args.reader_ms,
        "BENCH_READER_FETCH_MS": args.reader_ms,
    }
