"""The Agents Trading Arena: what more than one entry script shares."""

import warnings

# calfkit 0.13's vendored pydantic-ai imports deprecated pydantic_graph names; the warnings say nothing
# actionable to an arena user and would clutter every process's start-up.
warnings.filterwarnings("ignore", message=r".*pydantic_graph.*")

from arena.compat import lazy_providers  # noqa: E402

# Before anything imports calfkit.nodes: a router or tools process never loads the provider SDKs.
lazy_providers.install()
