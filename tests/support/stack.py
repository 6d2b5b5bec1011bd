"""An arena stack: a broker of its own and the arena's scripts started on it as real processes, by name."""

from __future__ import annotations

import asyncio
from pathlib import Path

from arena.broker import EmbeddedBroker, free_port
from arena.config import KafkaSettings
from tests.support.procs import Proc, stop_all


class Stack:
    """A fresh embedded broker (its log in `tmp`) and processes started on it; every process gets this
    broker's KAFKA_BOOTSTRAP_SERVERS and `env`. A name names the running process; one killed or
    restarted is kept in `retired` (its output still counts). `close()` stops them all, then the broker."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, *, new_session: bool = False):
        self.tmp = Path(tmp)
        self.extra_env = dict(env or {})
        self.new_session = new_session
        self.broker_log = (self.tmp / "broker.log").open("ab")  # closed in close()
        self.broker = EmbeddedBroker("127.0.0.1", free_port(), log=self.broker_log)
        self.procs: dict[str, Proc] = {}
        self.retired: list[Proc] = []
        self.argv: dict[str, list[str]] = {}

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.broker.bootstrap)

    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap, **self.extra_env}

    async def start_broker(self) -> Stack:
        """The broker; after kill_broker(), a new empty one on the same address."""
        if self.broker.proc is not None:
            self.broker = EmbeddedBroker("127.0.0.1", self.broker.port, log=self.broker_log)
        self.broker.start()
        await self.broker.wait_ready()
        return self

    def kill_broker(self) -> None:
        """A crash: SIGKILL, no goodbye to anyone."""
        self.broker.proc.kill()
        self.broker.proc.wait()

    def start(self, name: str, *argv: str, proc_type: type[Proc] = Proc, env: dict | None = None, **kw) -> Proc:
        if name in self.procs:
            self.retired.append(self.procs[name])
        self.argv[name] = list(argv)
        self.procs[name] = proc_type(*argv, env={**self.env(), **(env or {})}, new_session=self.new_session, **kw)
        return self.procs[name]

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown code runs."""
        p = self.procs[name]
        p.proc.kill()
        p.proc.wait()

    def restart(self, name: str) -> Proc:
        """The same command line again."""
        return self.start(name, *self.argv[name])

    def all(self) -> list[Proc]:
        return [*self.retired, *self.procs.values()]

    def dead(self) -> list[str]:
        return [f"{n} (exit {p.proc.returncode})" for n, p in self.procs.items() if p.proc.poll() is not None]

    def stop_processes(self, timeout: float = 20.0) -> None:
        """Ctrl-C to every running one at once, the last started first; the slow ones are killed."""
        stop_all(list(reversed(self.procs.values())), timeout)

    async def close(self, timeout: float = 20.0) -> None:
        await asyncio.to_thread(self.stop_processes, timeout)
        self.broker.stop()
        self.broker_log.close()

    def write_logs(self) -> Path:
        """Every process's output beside the broker's log, to read after a failed run."""
        for i, p in enumerate(self.retired):
            (self.tmp / f"retired-{i}.log").write_text(p.output)
        for name, p in self.procs.items():
            (self.tmp / f"{name.replace(' ', '-')}.log").write_text(p.output)
        return self.tmp
