"""Read every command's argparse definition (without running the command) and render it as the
Markdown tables of CLI_REFERENCE.md. `python tests/cli_flags.py --write` refreshes the file;
tests/test_cli_reference.py fails when the file and the code disagree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "CLI_REFERENCE.md"

# (section name, argv that reaches the command's parse_args)
COMMANDS = [
    ("coinbase_connector.py", ["coinbase_connector.py"]),
    ("tools_and_dashboard.py", ["tools_and_dashboard.py"]),
    ("deploy_chat_node.py", ["deploy_chat_node.py"]),
    ("deploy_router_node.py", ["deploy_router_node.py"]),
    ("response_viewer.py", ["response_viewer.py"]),
    ("arena demo", ["-m", "arena.cli", "demo"]),
    ("arena up", ["-m", "arena.cli", "up"]),
    ("arena tournament", ["-m", "arena.cli", "tournament"]),
    ("arena broker", ["-m", "arena.cli", "broker"]),
    ("arena market-sim", ["-m", "arena.cli", "market-sim"]),
    ("arena policy-server", ["-m", "arena.cli", "policy-server"]),
    ("arena report", ["-m", "arena.cli", "report"]),
    ("arena web", ["-m", "arena.cli", "web"]),
]

# Runs the command with parse_args patched to dump the parser's actions as JSON and exit.
_CAPTURE = r"""
import argparse, json, runpy, sys
def capture(self, args=None, namespace=None):
    out = []
    for a in self._actions:
        if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
            continue
        out.append({"flags": a.option_strings or [a.dest], "default": a.default if isinstance(a.default, (str, int, float, bool, type(None), list)) else str(a.default),
                    "help": (a.help or "") % {**vars(a), "default": a.default, "prog": self.prog} if a.help else "",
                    "choices": list(a.choices) if a.choices else None, "required": bool(a.required),
                    "metavar": a.metavar if isinstance(a.metavar, str) else None, "nargs": a.nargs if isinstance(a.nargs, (str, int)) else None,
                    "takes_value": a.nargs != 0})
    print("@@FLAGS@@" + json.dumps(out))
    sys.exit(0)
argparse.ArgumentParser.parse_args = capture
argv = sys.argv[1:]
if argv[0] == "-m":
    sys.argv = [argv[1]] + argv[2:]
    runpy.run_module(argv[1], run_name="__main__")
else:
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")
"""


def read_flags(argv: list[str]) -> list[dict]:
    # Defaults read from the environment must show their documented fallback, not this shell's values.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OPENAI_", "CALFKIT_"))}
    out = subprocess.run(
        [sys.executable, "-c", _CAPTURE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    for line in out.stdout.splitlines():
        if line.startswith("@@FLAGS@@"):
            return json.loads(line[len("@@FLAGS@@") :])
    raise RuntimeError(f"could not read flags of {argv}: {out.stdout}\n{out.stderr}")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(flags: list[dict]) -> str:
    rows = ["| flag | default | description |", "|---|---|---|"]
    for f in flags:
        name = ", ".join(f"`{x}`" for x in f["flags"])
        if f["takes_value"] and f["flags"][0].startswith("-"):
            name += f" `{f['metavar'] or f['flags'][-1].lstrip('-').upper().replace('-', '_')}`"
        if f["choices"]:
            name += " (" + " \\| ".join(f"`{c}`" for c in f["choices"]) + ")"
        if f["required"]:
            default = "required"
        elif not f["takes_value"]:
            default = "off"
        elif f["default"] in (None, "", []):
            default = "—"
        else:
            default = f"`{f['default'] if not isinstance(f['default'], list) else ' '.join(map(str, f['default']))}`"
        rows.append(f"| {name} | {_cell(default)} | {_cell(f['help'])} |")
    return "\n".join(rows) + "\n"


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- flags: {re.escape(name)} -->\n)(.*?)(<!-- /flags -->)", re.S)


def documented(name: str, doc: str) -> str | None:
    m = _block(name).search(doc)
    return m.group(2) if m else None


def write() -> None:
    doc = DOC.read_text()
    for name, argv in COMMANDS:
        pattern = _block(name)
        if not pattern.search(doc):
            raise SystemExit(
                f"CLI_REFERENCE.md has no block for {name!r}: add <!-- flags: {name} --> ... <!-- /flags -->"
            )
        new = table(read_flags(argv))
        doc = pattern.sub(lambda m: m.group(1) + new + m.group(3), doc)
    DOC.write_text(doc)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        for name, argv in COMMANDS:
            print(f"## {name}\n{table(read_flags(argv))}\n")
