"""Canaries for arena/compat: each fails when the upstream behaviour a workaround relies on changes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from tests.conftest import ROOT


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lazy_providers_keep_the_provider_sdks_out_of_an_agent_process():
    seen = _python(
        "import json, sys, arena, calfkit.nodes, calfkit.worker\n"
        "loaded = {m: m in sys.modules for m in ('anthropic', 'openai')}\n"
        "from calfkit.providers import OpenAIModelClient, AnthropicModelClient\n"
        "import calfkit\n"
        "print(json.dumps({**loaded, 'lazy': [OpenAIModelClient.__name__, calfkit.AnthropicModelClient.__name__]}))"
    )
    assert seen == {"anthropic": False, "openai": False, "lazy": ["OpenAIModelClient", "AnthropicModelClient"]}


def test_canary_calfkit_nodes_still_imports_every_provider_without_the_workaround():
    # When this fails, calfkit imports its providers lazily itself: delete arena/compat/lazy_providers.py.
    seen = _python("import json, sys, calfkit.nodes\nprint(json.dumps({m: m in sys.modules for m in ('anthropic', 'openai')}))")
    assert seen == {"anthropic": True, "openai": True}


def test_canary_the_provider_packages_export_what_the_workaround_mirrors():
    import importlib.util
    from pathlib import Path

    from arena.compat.lazy_providers import _PACKAGES

    root = Path(importlib.util.find_spec("calfkit").submodule_search_locations[0])
    for name, exports in _PACKAGES.items():
        tree = ast.parse(root.joinpath(*name.split(".")[1:], "__init__.py").read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert names == set(exports), f"{name} now exports {sorted(names)}: update arena/compat/lazy_providers.py"
    sources = {
        alias.name: node.module
        for node in ast.walk(ast.parse((root / "providers" / "pydantic_ai" / "__init__.py").read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert sources == _PACKAGES["calfkit.providers.pydantic_ai"]
