"""Optional keys that tell a record or a tool call from a forgery (docs/RELIABILITY.md, "Trust boundary").

Without keys any client on the broker can publish market data and call the tools as any agent. With them:

- ARENA_FEED_KEY (env, the connector and every market reader): the connector signs each snapshot, an
  HMAC-SHA256 over the record's exact value bytes in the `arena-sig` header; with the key set, a reader
  drops a snapshot that is unsigned or signed with another key (arena.kafka.decode_record does it).
- Agent keys: a router with ARENA_AGENT_KEY (env) puts a proof in each turn's deps, an HMAC over the
  agent's name, the run id and the turn deadline (so it proves nothing for another agent, run or
  turn); the tools with `--agent-keys FILE` (agent name -> key) refuse a call without a valid proof
  from the named agent. An agent not in the file cannot trade.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import tomllib

from arena.wire import AGENT_NAME_RE

FEED_KEY_ENV = "ARENA_FEED_KEY"
AGENT_KEY_ENV = "ARENA_AGENT_KEY"
SIGNATURE_HEADER = "arena-sig"
PROOF = "proof"  # the deps key of a turn's proof
MIN_KEY_CHARS = 16


def _key(text: str | None) -> bytes | None:
    return text.encode() if text else None


def feed_key() -> bytes | None:
    """The market feed's key, if this process has one (env ARENA_FEED_KEY)."""
    return _key(os.environ.get(FEED_KEY_ENV))


def agent_key() -> bytes | None:
    """This router's agent key, if it has one (env ARENA_AGENT_KEY)."""
    return _key(os.environ.get(AGENT_KEY_ENV))


def sign(key: bytes, value: bytes) -> bytes:
    return hmac.new(key, value, hashlib.sha256).hexdigest().encode()


def signature_problem(key: bytes, value: bytes | None, headers) -> str | None:
    """Why a record is not signed with `key` (None when it is)."""
    sigs = [v for k, v in headers or () if k == SIGNATURE_HEADER]
    if not sigs:
        return f"unsigned (no {SIGNATURE_HEADER} header) while {FEED_KEY_ENV} is set"
    if (
        len(sigs) > 1
        or not isinstance(sigs[0], (bytes, bytearray))
        or not hmac.compare_digest(bytes(sigs[0]), sign(key, value or b""))
    ):
        return f"bad {SIGNATURE_HEADER} signature (not signed with this {FEED_KEY_ENV})"
    return None


def check_agent_name(name: object) -> str | None:
    """Why `name` cannot be an agent's (None when it can): the rules of deploy_router_node.py --name."""
    if not isinstance(name, str) or not AGENT_NAME_RE.match(name):
        return f"{str(name)[:40]!r} is not an agent name (1-64 letters, digits, '-' or '_')"
    from arena.metrics import BASELINE_NAME

    if name == BASELINE_NAME:  # not an agent name anyway: said for its own sake
        return f"{name!r} is reserved for the leaderboard's baseline"
    return None


def _message(agent: str, run_id: str, deadline: float) -> bytes:
    return f"{agent}\n{run_id}\n{float(deadline)!r}".encode()


def agent_proof(key: bytes, agent: str, run_id: str, deadline: float) -> str:
    """What a router puts in a turn's deps (under PROOF) to show the turn is the named agent's."""
    return hmac.new(key, _message(agent, run_id, deadline), hashlib.sha256).hexdigest()


def load_agent_keys(path: str | os.PathLike) -> dict[str, bytes]:
    """Agent name -> key from a JSON object or a TOML table (`alice = "..."`). Raises ValueError."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: neither a JSON object nor TOML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: no agent keys in it")
    keys: dict[str, bytes] = {}
    for name, key in data.items():
        if why := check_agent_name(name):
            raise ValueError(f"{path}: {why}")
        if not isinstance(key, str) or len(key) < MIN_KEY_CHARS:
            raise ValueError(f"{path}: the key of {name} must be a string of at least {MIN_KEY_CHARS} characters")
        keys[name] = key.encode()
    return keys


class AgentKeys:
    """The tools' side: which agents exist and the key each proves its calls with. Empty = no keys
    (then only the name is checked)."""

    def __init__(self, keys: dict[str, bytes] | None = None):
        self.keys = dict(keys or {})

    def refusal(self, agent: object, run_id: object, deps: Any) -> str | None:
        """Why a call from `agent` in run `run_id` with `deps` is refused (None: allowed)."""
        if why := check_agent_name(agent):
            return why
        if not self.keys:
            return None
        key = self.keys.get(agent)
        if key is None:
            return f"{agent} has no agent key on this tools process"
        deps = deps if isinstance(deps, dict) else {}
        proof, deadline = deps.get(PROOF), deps.get("deadline")
        if not isinstance(proof, str) or not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
            return f"the call carries no proof that it comes from {agent} (is its router's {AGENT_KEY_ENV} set?)"
        if not hmac.compare_digest(proof, agent_proof(key, agent, str(run_id), deadline)):
            return f"the call's proof is not {agent}'s (a forged call, or the router has another {AGENT_KEY_ENV})"
        return None


AGENT_KEYS = AgentKeys()  # the tools process's, set once at start (tools_and_dashboard.py --agent-keys)
