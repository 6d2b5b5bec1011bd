"""idle: CPU of a whole `arena demo --agents N --interval S` between snapshots, per process kind (the
broker, every router, the tools, chat nodes, connector, market simulator, policy server, web page and
the demo's supervisor), read from /proc/<pid>/stat of every process the demo started.

The demo runs as a user starts it (its own broker, headless). Snapshots are published every --interval
seconds from the feed's "first snapshot published" line; each window starts --settle seconds after a
snapshot (its turns are over) and ends --before seconds ahead of the next one. Also the whole cycle's
average (turns included) and the demo's start-up time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, Report, cpu_share, proc_cpu_s, target

KINDS = (  # first match of the command line wins
    ("tansu", "broker"),
    ("deploy_router_node.py", "router"),
    ("tools_and_dashboard.py", "tools"),
    ("deploy_chat_node.py", "chat-node"),
    ("coinbase_connector.py", "connector"),
    ("response_viewer.py", "viewer"),
    ("market-sim", "market-sim"),
    ("policy-server", "policy-server"),
    ("arena.sim.policy", "policy-server"),
    (" web", "web"),
    ("demo", "supervisor"),
)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, default=10, help="arena demo --agents (default %(default)s)")
    p.add_argument("--interval", type=float, default=60.0, help="arena demo --interval (default %(default)s)")
    p.add_argument(
        "--windows", type=int, default=1, help="idle windows measured, one per snapshot (default %(default)s)"
    )
    p.add_argument(
        "--settle", type=float, default=20.0, help="seconds after a snapshot before a window (default %(default)s)"
    )
    p.add_argument(
        "--before", type=float, default=5.0, help="seconds a window ends before the next snapshot (default %(default)s)"
    )
    p.add_argument("--no-web", action="store_true", help="arena demo --no-web")
    p.add_argument(
        "--demo-args", default="", help="more arena demo options, space separated (e.g. '--fetch-wait-ms 10')"
    )


def kind_of(cmdline: str) -> str:
    return next((kind for needle, kind in KINDS if needle in cmdline), "other")


def descendants(root: int) -> dict[int, str]:
    """pid -> kind of `root` and every process below it."""
    parent: dict[int, int] = {}
    cmd: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    out, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        out[pid] = kind_of(cmd.get(pid, ""))
        frontier += [c for c, p in parent.items() if p == pid]
    return out


def cpu_by_kind(pids: dict[int, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid, kind in pids.items():
        if (c := proc_cpu_s(pid)) is not None:
            out[kind] = out.get(kind, 0.0) + c
    return out


async def run(args: argparse.Namespace, report: Report) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="arena-idle-"))
    argv = [sys.executable, "-m", "arena.cli", "demo", "--agents", str(args.agents), "--interval", str(args.interval),
            "--no-dashboard", "--run-dir", str(run_dir), *(["--no-web"] if args.no_web else []), *args.demo_args.split()]  # fmt: skip
    report.log(" ".join(argv[2:]))
    t_launch = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    seen: dict[str, float] = {}
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip())
            for key in ("first snapshot published", "tools ready; trading"):
                if key in line and key not in seen:
                    seen[key] = time.monotonic()

    reader = asyncio.get_running_loop().run_in_executor(None, pump)
    results: dict = {"agents": args.agents, "interval_s": args.interval, "windows": []}
    try:
        while "tools ready; trading" not in seen:
            if proc.poll() is not None:
                raise RuntimeError("arena demo exited:\n" + "\n".join(lines[-30:]))
            if time.monotonic() - t_launch > 600:
                raise TimeoutError("arena demo not trading within 600 s:\n" + "\n".join(lines[-30:]))
            await asyncio.sleep(0.2)
        results["start_up_s"] = round(seen["tools ready; trading"] - t_launch, 1)
        report.log(f"trading {results['start_up_s']} s after launch")
        first = seen["first snapshot published"]
        pids = descendants(proc.pid)
        results["processes"] = {k: sum(1 for v in pids.values() if v == k) for k in sorted(set(pids.values()))}
        cycle_c0 = cycle_t0 = None
        for _ in range(args.windows):
            now = time.monotonic()
            k = int((now - first - args.settle) // args.interval) + 1  # the next snapshot whose settle is ahead
            start, end = first + k * args.interval + args.settle, first + (k + 1) * args.interval - args.before
            await asyncio.sleep(start - now)
            c0, t0 = cpu_by_kind(pids), time.monotonic()
            if cycle_c0 is None:
                cycle_c0, cycle_t0 = c0, t0
            await asyncio.sleep(end - t0)
            share = cpu_share(c0, cpu_by_kind(pids), time.monotonic() - t0)
            per_router = round(share.get("router", 0.0) / max(1, results["processes"].get("router", 1)), 4)
            load = Path("/proc/loadavg").read_text().split()[0]
            results["windows"].append({"seconds": round(end - start, 1), "cpu_share_by_kind": share,
                                       "router_each": per_router, "loadavg_1m_at_end": float(load)})  # fmt: skip
            report.line(f"idle {end - start:.0f} s between snapshots: total {share['total']} of a core; {share}; "
                        f"each router {per_router}; load {load}")  # fmt: skip
        if args.windows and cycle_c0 is not None:
            await asyncio.sleep(max(0.0, cycle_t0 + args.interval * args.windows - time.monotonic()))
            whole = cpu_share(cycle_c0, cpu_by_kind(pids), time.monotonic() - cycle_t0)
            results["whole_cycles"] = whole
            report.line(f"whole cycle (turns included): total {whole['total']} of a core")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 2)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        await asyncio.wait_for(reader, 10)
    totals = [w["cpu_share_by_kind"]["total"] for w in results["windows"]]
    targets = {"idle_cpu_share": target(max(totals), 0.15)} if totals and args.agents == 10 else None
    report.emit(results, targets)
    return 0
