"""startup: seconds from launch to READY for each of the arena's scripts, how much of it is imports;
memory (VmRSS) per process kind and in total with N agents running, and their idle CPU; the CPU share
of the tools process with the live dashboard on (in a pseudo-terminal) and off, under the same load.

Launch -> READY: the median of --repeat launches, each as a user starts it (`python <script> ...`
against a broker that is already up), with fresh names (a first-time consumer group join).
The router is launched twice: before any tools process has run on the bench's broker (as `arena up`
starts it: calf.capabilities still empty) and, when the tools are launched too, once more after them.
Imports: the same launch once more under `python -X importtime` lists every module it imported
before READY (lazy ones included); importing that list in a fresh interpreter, untraced, is the
import time.
"After imports" = launch->READY - imports - a bare interpreter start: the script's own start-up
work (connecting, joining groups, warming up).
Memory: a bare `import calfkit` (calfkit, calfkit.nodes, calfkit.worker) is the reference for routers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid

from bench.harness import (
    ROOT,
    Arena,
    Recorder,
    Report,
    Service,
    free_port,
    start_stack,
    target,
)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repeat", type=int, default=3, help="launches per script; the median is reported (default %(default)s)"
    )
    p.add_argument(
        "--agents", type=int, default=10, help="routers running for the memory and CPU figures (default %(default)s)"
    )
    p.add_argument(
        "--load-seconds",
        type=float,
        default=30.0,
        help="seconds of trading (1 tick/s) per dashboard mode (default %(default)s)",
    )
    p.add_argument("--scripts", default="", help="only these scripts, comma separated (default: all)")


def imported_modules(lines: list[str]) -> list[str]:
    """Top-level modules a run imported (lazy ones too), in order, from `python -X importtime` output."""
    names = []
    for line in lines:
        parts = line.split("|")
        if not line.startswith("import time:") or "cumulative" in line or len(parts) < 3:
            continue
        name = parts[2]
        if len(name) - len(name.lstrip(" ")) == 1:  # top level: one space; nested imports are indented further
            names.append(name.strip())
    return names


def import_seconds(modules: list[str], repeat: int = 3) -> float:
    """Wall time to import `modules` in a fresh interpreter (without tracing), minus a bare start."""
    code = ("import importlib, warnings\nwarnings.simplefilter('ignore')\n"
            f"for m in {modules!r}:\n    try:\n        importlib.import_module(m)\n    except Exception:\n        pass\n")  # fmt: skip
    times = []
    for _ in range(repeat):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
        times.append(time.monotonic() - t0)
    return max(0.0, statistics.median(times) - bare_python_s())


def bare_importtime() -> list[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True
    ).stderr.splitlines()


def bare_python_s() -> float:
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - t0)
    return min(times)


def bare_calfkit_rss_mb() -> float:
    code = ("import calfkit, calfkit.nodes, calfkit.worker\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


ROUTER_AFTER_TOOLS = "deploy_router_node.py (tools ran)"


def scripts(arena: Arena, sim_port: int) -> dict[str, callable]:
    """Script name -> a function (unique suffix, extra interpreter flags) -> launch args."""
    b = arena.broker.bootstrap

    def router(u, x):
        return [*x, "deploy_router_node.py", "--name", f"su{u}", "--chat-node-name", "nobody"]

    return {
        "arena broker": lambda u, x: [*x, "-m", "arena.cli", "broker", "--port", str(free_port())],
        "arena market-sim": lambda u, x: [*x, "-m", "arena.cli", "market-sim", "--port", "0"],
        "arena policy-server": lambda u, x: [*x, "-m", "arena.cli", "policy-server", "--port", "0"],
        "coinbase_connector.py": lambda u, x: [*x, "coinbase_connector.py", "--bootstrap-servers", b, "--interval", "1",
                                               "--ws-url", f"ws://127.0.0.1:{sim_port}", "--rest-url", f"http://127.0.0.1:{sim_port}"],
        "deploy_chat_node.py": lambda u, x: [*x, "deploy_chat_node.py", "--name", f"su{u}", "--model-id", "hold", "--base-url", arena.policy_url],
        # First on a broker where no tools process has advertised yet (`arena up` starts routers first) ...
        "deploy_router_node.py": router,
        "tools_and_dashboard.py": lambda u, x: [*x, "tools_and_dashboard.py", "--no-dashboard", "--ledger", str(arena.tmp / f"su{u}.db"),
                                                "--log-file", str(arena.tmp / "su.log")],
        # ... and again once one has (its calf.capabilities is no longer empty)
        ROUTER_AFTER_TOOLS: router,
        "response_viewer.py": lambda u, x: [*x, "response_viewer.py"],
    }  # fmt: skip


async def launch_once(arena: Arena, name: str, argv: list[str]) -> Service:
    svc = arena.launch(name, *argv)
    try:
        await svc.ready(120)
    finally:
        svc.signal()
        await asyncio.to_thread(svc.wait_exit, 20)
    return svc


async def startup_times(args: argparse.Namespace, report: Report, arena: Arena) -> dict:
    sim = await arena.launch("market-sim", "-m", "arena.cli", "market-sim", "--port", "0").ready(60)
    sim_port = int(sim.ready_line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
    await arena.policy_server()
    wanted = {s.strip() for s in args.scripts.split(",") if s.strip()}
    bare = await asyncio.to_thread(bare_python_s)
    baseline = set(imported_modules(await asyncio.to_thread(bare_importtime)))
    out: dict = {"bare_python_s": round(bare, 3), "scripts": {}}
    for name, argv in scripts(arena, sim_port).items():
        if (
            wanted
            and name not in wanted
            and not (name == ROUTER_AFTER_TOOLS and {"deploy_router_node.py", "tools_and_dashboard.py"} <= wanted)
        ):
            continue
        times = []
        for _ in range(args.repeat):
            svc = await launch_once(arena, name, argv(uuid.uuid4().hex[:6], []))
            times.append(svc.startup_s)
        traced = await launch_once(arena, name, argv(uuid.uuid4().hex[:6], ["-X", "importtime"]))
        before_ready = traced.lines[
            : next((i for i, ln in enumerate(traced.lines) if "READY" in ln), len(traced.lines))
        ]
        imports = await asyncio.to_thread(
            import_seconds, [m for m in imported_modules(before_ready) if m not in baseline]
        )
        ready = statistics.median(times)
        row = {"ready_s": round(ready, 2), "ready_all_s": [round(t, 2) for t in times], "imports_s": round(imports, 2),
               "after_imports_s": round(max(0.0, ready - imports - bare), 2)}  # fmt: skip
        out["scripts"][name] = row
        report.line(
            f"{name:<34} launch -> READY {ready:5.2f} s  (imports {imports:4.2f} s, after imports {row['after_imports_s']:4.2f} s)"
        )
    return out


async def memory_and_cpu(args: argparse.Namespace, report: Report, arena: Arena) -> dict:
    chat = await start_stack(arena, "momentum")
    names = [f"mem{i:03d}_{arena.run}" for i in range(args.agents)]
    await arena.routers(names, chat)
    await asyncio.sleep(3)
    mem = arena.memory()
    c0, t0 = arena.cpu(), time.monotonic()
    await asyncio.sleep(10)
    c1, t1 = arena.cpu(), time.monotonic()
    idle = {kind: round((c1[kind] - c0.get(kind, 0.0)) / (t1 - t0), 3) for kind in c1}
    ref = await asyncio.to_thread(bare_calfkit_rss_mb)
    report.line(f"memory with {args.agents} agents (MB): " + ", ".join(
        f"{kind} {v['mean_mb']:.0f}" + (f" x{v['count']}" if v["count"] > 1 else "") for kind, v in mem.items() if isinstance(v, dict)
    ) + f"; total {mem['total_mb']:.0f}")  # fmt: skip
    report.line(f"bare `import calfkit` RSS: {ref:.0f} MB; router/bare = {mem['router']['mean_mb'] / ref:.2f}")
    report.line(
        "idle CPU (share of one core): "
        + ", ".join(f"{k} {v:.2f}" for k, v in idle.items())
        + f"; total {sum(idle.values()):.2f}"
    )
    return {"agents": args.agents, "rss": mem, "bare_calfkit_rss_mb": round(ref, 1), "router_vs_bare": round(mem["router"]["mean_mb"] / ref, 2),
            "idle_cpu_share": idle, "idle_cpu_total": round(sum(idle.values()), 2), "routers": names}  # fmt: skip


async def dashboard_cpu(args: argparse.Namespace, report: Report, arena: Arena, agents: list[str]) -> dict:
    """Trade at one tick per second; measure the tools process with the dashboard off, then on."""
    rec = await Recorder(arena.kafka).start()
    out = {}
    seq = 0
    try:
        for mode in ("headless", "dashboard"):
            current = next(s for s in arena.services if s.kind.startswith("tools") and s.proc.poll() is None)
            if mode == "dashboard":
                current.signal()
                await asyncio.to_thread(current.wait_exit, 30)
                current = await arena.tools(dashboard=True).ready(120)
            trades0 = len(rec.trades)
            await asyncio.sleep(2)
            c0, t0 = current.cpu_s(), time.monotonic()
            while time.monotonic() - t0 < args.load_seconds:
                seq += 1
                await rec.publish(seq, 1.02 if seq % 2 else 0.98)
                await asyncio.sleep(1.0)
            share = (current.cpu_s() - c0) / (time.monotonic() - t0)
            out[mode] = {"cpu_share": round(share, 3), "fills": len(rec.trades) - trades0}
            report.line(
                f"tools process, {mode:<9}: {share * 100:5.1f} % of a core ({out[mode]['fills']} trades in {args.load_seconds:.0f} s)"
            )
    finally:
        await rec.stop()
    out["dashboard_share"] = round(out["dashboard"]["cpu_share"] - out["headless"]["cpu_share"], 3)
    return out


async def run(args: argparse.Namespace, report: Report) -> int:
    results: dict = {}
    async with Arena(report) as arena:
        results["startup"] = await startup_times(args, report, arena)
    if not args.scripts:
        async with Arena(report) as arena:
            mem = await memory_and_cpu(args, report, arena)
            results["dashboard"] = await dashboard_cpu(args, report, arena, mem.pop("routers"))
            results["memory"] = mem
    after = [r["after_imports_s"] for r in results["startup"]["scripts"].values()]
    targets = {"slowest_after_imports_s": target(max(after) if after else None, 2.0)}
    for name, key in (("deploy_router_node.py", "router_ready_s"), (ROUTER_AFTER_TOOLS, "router_ready_after_tools_s")):
        if name in results["startup"]["scripts"]:  # #20: a router READY <= 2.5 s after launch
            targets[key] = target(results["startup"]["scripts"][name]["ready_s"], 2.5)
    if "memory" in results:
        targets["router_rss_vs_bare_calfkit"] = target(results["memory"]["router_vs_bare"], 1.2)
        targets["dashboard_cpu_share"] = target(results["dashboard"]["dashboard"]["cpu_share"], 0.10)
    report.emit(results, targets)
    return 0
