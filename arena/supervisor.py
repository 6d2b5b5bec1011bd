"""Run the arena's processes as real children: logs to a run folder, readiness, ordered shutdown,
and a report of every start and death on the health topic so the dashboard can show it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from arena import lifeline
from arena.market import utcnow
from arena.wire import AwareTime

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


class ProcessStatus(BaseModel):
    """One child's state change, published to HEALTH_TOPIC."""

    name: str  # e.g. "router alice"
    status: Literal["starting", "ready", "exited", "stopped"]
    detail: str = ""  # exit code, log path
    at: AwareTime = Field(default_factory=utcnow)  # ordered by it: zoned, and not ahead of the reader


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    foreground: bool = False  # inherits the terminal (the dashboard)
    proc: subprocess.Popen | None = None
    ready: bool = False
    stopping: bool = False
    _lines_seen: int = field(default=0, repr=False)

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Supervisor:
    def __init__(self, run_dir: Path, env: dict[str, str] | None = None):
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Every child ends with this process, however it ends (arena/lifeline.py).
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), lifeline.PARENT_ENV: lifeline.identity()}
        self.children: list[Child] = []
        self.on_status = lambda status: None  # set by the owner to publish health

    def start(
        self, name: str, script_args: list[str], *, foreground: bool = False, env: dict[str, str] | None = None
    ) -> Child:
        """Start `python SCRIPT_ARGS...`; `env`: variables for this child only (e.g. its API key)."""
        child = Child(name, lifeline.command(script_args), self.run_dir / f"{name.replace(' ', '-')}.log", foreground)
        out = None if foreground else open(child.log_path, "ab")
        child.proc = subprocess.Popen(
            child.argv,
            cwd=ROOT,
            stdout=out,
            stderr=open(child.log_path, "ab") if foreground else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**self.env, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )
        self.children.append(child)
        self.on_status(ProcessStatus(name=name, status="starting", detail=str(child.log_path)))
        return child

    async def wait_ready(self, child: Child, timeout: float = 60.0, marker: str = "READY") -> None:
        """Wait for the child's READY line in its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in child.log_tail(200):
                child.ready = True
                self.on_status(ProcessStatus(name=child.name, status="ready"))
                return
            if child.proc.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with code {child.proc.returncode}; last log lines:\n{child.log_tail()}"
                )
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{child.name} not ready after {timeout:.0f}s; log: {child.log_path}\n{child.log_tail()}")

    def dead(self) -> list[Child]:
        """Children that exited without being asked to (reported once each)."""
        out = []
        for c in self.children:
            if not c.stopping and c.proc.poll() is not None:
                c.stopping = True
                self.on_status(
                    ProcessStatus(name=c.name, status="exited", detail=f"code {c.proc.returncode}, log {c.log_path}")
                )
                out.append(c)
        return out

    def stop(self, child: Child, timeout: float = 15.0) -> int | None:
        child.stopping = True
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGINT)
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing it", child.name, timeout)
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
        return child.proc.returncode

    def stop_all(self, order: list[str] | None = None) -> None:
        """Stop children: the given name prefixes first (in order), then the rest, last-started first."""
        remaining = list(reversed(self.children))
        for prefix in order or []:
            group = [c for c in remaining if c.name.startswith(prefix)]
            for c in group:  # signal the whole group at once, then wait
                c.stopping = True
                if c.proc.poll() is None:
                    c.proc.send_signal(signal.SIGINT)
            for c in group:
                self.stop(c)
                remaining.remove(c)
        for c in remaining:
            self.stop(c)
