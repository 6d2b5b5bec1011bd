"""requirements.txt (for `pip install -r requirements.txt`) is uv.lock's runtime set, exported: the same pins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPORT = ["export", "--no-dev", "--no-hashes", "--frozen", "--no-emit-project", "--format", "requirements-txt"]
COMMAND = "uv " + " ".join(EXPORT) + " > requirements.txt"


def test_requirements_txt_is_exported_from_uv_lock():
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    assert uv, "uv is needed to check requirements.txt"
    fresh = subprocess.run([uv, *EXPORT], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    written = (ROOT / "requirements.txt").read_text()
    assert written == fresh, f"requirements.txt is out of step with uv.lock: run `{COMMAND}`"
    assert "coinbase-advanced-py" not in written and "pytest" not in written, "test-only packages stay out"
    assert "\ncalfkit==" in written and "\nwebsockets==" in written
