"""Keep calfkit's provider SDKs (Anthropic, OpenAI) out of processes that never call a provider.

Symptom: `calfkit.nodes.agent` (calfkit 0.13) imports `calfkit.providers.pydantic_ai.model_client`, whose
package `__init__`s import every provider client and with them the Anthropic and OpenAI SDKs: ~1.3 s of
a router's start-up, for SDKs a router never uses (its model is the remote chat node).
Fix: register the two provider packages as empty packages over their real folders before calfkit loads
them, so a submodule import (model_client) loads only that file; the provider classes stay reachable on
the package, imported on first use.
Can go when calfkit imports providers lazily (check `python -X importtime -c "import calfkit.nodes"`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

# package -> {public name: submodule that defines it}; mirrors calfkit 0.13's providers __init__ files
_PACKAGES = {
    "calfkit.providers": {
        "AnthropicModelClient": "calfkit.providers.pydantic_ai.anthropic",
        "OpenAIModelClient": "calfkit.providers.pydantic_ai.openai",
        "OpenAIResponsesModelClient": "calfkit.providers.pydantic_ai.openai",
    },
    "calfkit.providers.pydantic_ai": {
        "AnthropicModelClient": "calfkit.providers.pydantic_ai.anthropic",
        "OpenAIModelClient": "calfkit.providers.pydantic_ai.openai",
        "OpenAIResponsesModelClient": "calfkit.providers.pydantic_ai.openai",
    },
}


def _lazy_package(name: str, folder: Path, exports: dict[str, str]) -> types.ModuleType | None:
    init = folder / "__init__.py"
    if not init.is_file():
        return None
    module = types.ModuleType(name, f"{name} (arena.compat.lazy_providers: provider clients load on first use)")
    module.__path__ = [str(folder)]
    module.__package__ = name
    module.__spec__ = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    module.__all__ = list(exports)

    def __getattr__(attr: str):
        if attr in exports:
            value = getattr(importlib.import_module(exports[attr]), attr)
            setattr(module, attr, value)
            return value
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def install() -> bool:
    """Register the lazy packages unless calfkit's providers are already loaded. True if installed."""
    if any(name in sys.modules for name in _PACKAGES):
        return False
    # Found, not imported: importing calfkit costs ~0.5 s, too much for every --help.
    spec = importlib.util.find_spec("calfkit")
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(list(spec.submodule_search_locations)[0])
    modules = {}
    for name, exports in _PACKAGES.items():
        module = _lazy_package(name, root.joinpath(*name.split(".")[1:]), exports)
        if module is None:
            return False
        modules[name] = module
    sys.modules.update(modules)
    # calfkit's own lazy __getattr__ finds "providers" in sys.modules; the sub-package needs the attribute
    modules["calfkit.providers"].pydantic_ai = modules["calfkit.providers.pydantic_ai"]
    return True
