"""Silence the deprecation warnings calfkit's vendored pydantic-ai raises on import.

Symptom: importing calfkit 0.13 (its vendored pydantic-ai) warns about deprecated pydantic_graph names;
nothing an arena user can act on, and it clutters every process's start-up.
Fix: one warnings filter, installed by `import arena` (so every script and bench has it).
Can go when importing calfkit raises no pydantic_graph warning (tests/test_compat.py says when).
"""

from __future__ import annotations

import warnings

MESSAGE = r".*pydantic_graph.*"


def install() -> None:
    warnings.filterwarnings("ignore", message=MESSAGE)
