"""A script run to its end, as a user runs it from the project's root (for --help, one-shot commands)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.procs import ROOT


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python ARGS...`: its exit code and its output as text (stdout and stderr apart)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip
