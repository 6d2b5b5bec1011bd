"""The arena's three shared tools (execute_trade, get_portfolio, calculator) and INITIAL_CASH.

They live in arena/tools.py, inside the package (the wheel ships only `arena`); this file keeps the
names where users and examples import them from.
"""

from arena.tools import (  # noqa: F401 - re-exported
    DESK,
    INITIAL_CASH,
    TOOLS,
    _fault_to_result,
    calculator,
    call_key,
    execute_trade,
    get_portfolio,
    provide_desk,
    reacted_to,
)

__all__ = ["INITIAL_CASH", "TOOLS", "calculator", "execute_trade", "get_portfolio", "provide_desk"]
