"""Start the arena's scripts as real subprocesses, as a user would, and wait for them to be ready."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """A script running in its own process; its combined output is collected in `lines`.

    Every long-running arena script prints a line containing `READY` on stdout once it serves.
    """

    def __init__(self, *args: str, env: dict | None = None, cwd: Path = ROOT):
        self.args = [sys.executable, *args]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            self.args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"{self.args} exited ({self.proc.returncode}) before {text!r}:\n{self.output}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.args}: no {text!r} within {timeout}s:\n{self.output}")

    def wait_ready(self, timeout: float = 30.0) -> "Proc":
        self.wait_for("READY", timeout)
        return self

    def stop(self, sig=subprocess.signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
