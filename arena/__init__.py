"""The Agents Trading Arena: what more than one entry script shares."""

from arena.compat import lazy_providers, quiet_pydantic_graph

quiet_pydantic_graph.install()

# Before anything imports calfkit.nodes: a router or tools process never loads the provider SDKs.
lazy_providers.install()
