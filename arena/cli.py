"""The `arena` command: helper sub-commands (each lives in its own module, imported on demand)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "broker": ("arena.broker", "run the embedded Kafka-protocol broker"),
    "market-sim": ("arena.sim.coinbase", "run the Coinbase-compatible market simulator (WebSocket + REST)"),
    "policy-server": ("arena.sim.policy", "run the offline OpenAI-compatible policy server"),
    "demo": ("arena.demo", "run a whole arena offline with one command"),
    "up": ("arena.up", "run a whole arena described by one TOML file (arena.toml)"),
    "recording": ("arena.recording", "cut, join or make market recordings (for replays and tournaments)"),
    "tournament": (
        "arena.tournament",
        "every agent of an arena file on one recording, K runs, compared with confidence intervals",
    ),
    "report": ("arena.report", "print a leaderboard from an export or a ledger file"),
    "web": ("arena.web", "serve the live arena as a web page and a JSON API"),
}


def usage() -> str:
    lines = ["usage: arena <command> [options]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `arena <command> --help` for that command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"arena: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
