"""The arena's terminal dashboard: what the tools process knows, drawn so a user trusts it at a glance.

ArenaState (state.py) collects everything besides the ledger (quotes, fills and rejections, model
outcomes, tool calls, the value history); render() (layout.py) lays the sections (sections.py, the chart
in chart.py) out for any terminal size; LiveDashboard (live.py) runs it full screen at a fixed cadence
with logs sent to a file; leaderboard() (export.py) is the same picture as JSON.

Rendering only: money arithmetic lives in arena.portfolio, the accounts come from the ledger.
"""

from arena.dashboard.chart import value_chart
from arena.dashboard.export import leaderboard, write_export
from arena.dashboard.layout import final_standings_table, render, save_screenshot
from arena.dashboard.live import LiveDashboard, logs_to_file
from arena.dashboard.state import (
    MAX_AGENTS,
    MAX_PROCESSES,
    AgentActivity,
    ArenaState,
    Health,
    MetricsFn,
    Problem,
    ValueHistory,
    exit_code,
    return_per_dollar,
)

__all__ = [
    "MAX_AGENTS",
    "MAX_PROCESSES",
    "AgentActivity",
    "ArenaState",
    "Health",
    "LiveDashboard",
    "MetricsFn",
    "Problem",
    "ValueHistory",
    "exit_code",
    "final_standings_table",
    "leaderboard",
    "logs_to_file",
    "render",
    "return_per_dollar",
    "save_screenshot",
    "value_chart",
    "write_export",
]
