"""The arena's benchmarks: `uv run python -m bench <name> [--json]` (see bench/README.md).

Each benchmark starts what it needs (a fresh embedded broker, the arena's scripts as real processes),
prints progress on stderr, a human summary on stdout (unless --json) and one JSON object last.
"""
