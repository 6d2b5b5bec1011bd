"""The names of the arena's shared tools, in one place that imports nothing heavy (--help texts, READY
lines, the router's tool list). arena/tools.py defines the tools and checks it serves exactly these."""

TOOL_NAMES = ("execute_trade", "get_portfolio", "calculator")
