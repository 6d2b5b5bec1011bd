"""Kept for the modules that import it from here: the process wrapper lives in tests/support."""

from tests.support.procs import ROOT, Proc, stop_all

__all__ = ["ROOT", "Proc", "stop_all"]
