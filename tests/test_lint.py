"""The code passes the project's own ruff configuration (pyproject.toml [tool.ruff]): lint and format."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.processes


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_passes(command):
    out = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, (
        f"uv run ruff {' '.join(command)} fails (fix with: uv run ruff check --fix . && uv run ruff format .):\n{out.stdout}{out.stderr}"
    )
