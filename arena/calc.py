"""The agents' calculator: arithmetic only, with every cost bounded before it is paid.

simpleeval does the evaluation; on top of it this module refuses, quickly and with a clear message:
long expressions (checked before parsing), deep nesting, anything that is not a number (strings,
collections, attributes, subscripts), names and functions outside a small whitelist, huge powers
and integers, and evaluations running past a deadline."""

from __future__ import annotations

import ast
import math
import operator as op
import time

import simpleeval

MAX_EXPRESSION_CHARS = 2_000
MAX_DEPTH = 40  # AST nesting; also keeps the recursive evaluator far from Python's recursion limit
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4_096  # ~1.3e1233: far beyond any price arithmetic, still cheap to multiply
TIME_LIMIT_S = 0.25


class CalcError(Exception):
    """A refused or failed expression; the message is meant for the model."""


def _check_int(x, what: str = "result"):
    if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > MAX_INT_BITS:
        raise CalcError(f"{what} too large (more than {MAX_INT_BITS} bits)")
    return x


def _checked(fn):
    return lambda *a: _check_int(fn(*a))


def _power(a, b):
    if isinstance(b, (int, float)) and abs(b) > MAX_EXPONENT:
        raise CalcError(f"exponent {b:g} is too large (limit {MAX_EXPONENT})")
    # Refuse before computing: an integer result would have about b*log2|a| bits.
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 and b * math.log2(abs(a)) > MAX_INT_BITS:
        raise CalcError(f"result too large (about {b * math.log10(abs(a)):,.0f} digits; limit {MAX_INT_BITS} bits)")
    return _check_int(a**b)


def _round(x, ndigits=None):
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > 30):
        raise CalcError("round(x, n) needs an integer n between -30 and 30")
    return round(x) if ndigits is None else round(x, ndigits)


def _fn(f, arity=None):
    def call(*args):
        if arity is not None and len(args) not in arity:
            raise CalcError(f"wrong number of arguments ({len(args)})")
        if len(args) > 100:
            raise CalcError("too many arguments")
        return f(*args)

    return call


OPERATORS = {
    ast.Add: _checked(op.add),
    ast.Sub: _checked(op.sub),
    ast.Mult: _checked(op.mul),
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: op.mod,
    ast.Pow: _power,
    ast.USub: op.neg,
    ast.UAdd: op.pos,
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Gt: op.gt,
    ast.Lt: op.lt,
    ast.GtE: op.ge,
    ast.LtE: op.le,
}

FUNCTIONS = {
    "abs": _fn(abs, {1}),
    "round": _fn(_round, {1, 2}),
    "min": _fn(min),
    "max": _fn(max),
    "sqrt": _fn(math.sqrt, {1}),
    "log": _fn(math.log, {1, 2}),
    "log10": _fn(math.log10, {1}),
    "exp": _fn(math.exp, {1}),
    "floor": _fn(math.floor, {1}),
    "ceil": _fn(math.ceil, {1}),
    "pow": _fn(_power, {2}),
}

NAMES = {"pi": math.pi, "e": math.e}
ALLOWED = (
    "use numbers, + - * / // % **, comparisons, parentheses, "
    f"the names {', '.join(NAMES)} and the functions {', '.join(FUNCTIONS)}"
)


def _depth(node: ast.AST) -> int:
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))
    return deepest


class _Evaluator(simpleeval.SimpleEval):
    """simpleeval restricted to numbers, with a deadline checked at every node."""

    def __init__(self, deadline: float):
        super().__init__(operators=dict(OPERATORS), functions=dict(FUNCTIONS), names=dict(NAMES))
        self.deadline = deadline
        allowed = (ast.Expr, ast.Name, ast.UnaryOp, ast.BinOp, ast.Compare, ast.Call, ast.Constant)
        self.nodes = {k: v for k, v in self.nodes.items() if k in allowed}

    def _eval(self, node):
        if time.monotonic() > self.deadline:
            raise CalcError(f"evaluation took longer than {TIME_LIMIT_S}s")
        return super()._eval(node)

    def _eval_constant(self, node):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalcError(f"only numbers are allowed, not {type(node.value).__name__} {str(node.value)[:20]!r}")
        return _check_int(node.value, "number")

    def _eval_call(self, node):
        if not isinstance(node.func, ast.Name):
            raise CalcError("only calls of the listed functions are allowed")
        if node.keywords:
            raise CalcError("keyword arguments are not allowed")
        return super()._eval_call(node)


def evaluate(expression: str):
    """The value of an arithmetic expression, or CalcError saying why it was refused."""
    if not isinstance(expression, str):
        raise CalcError("the expression must be a string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalcError(f"expression too long ({len(expression):,} characters; limit {MAX_EXPRESSION_CHARS:,})")
    if not expression.strip():
        raise CalcError("empty expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise CalcError(f"not a valid expression: {getattr(exc, 'msg', None) or exc}") from None
    if _depth(tree) > MAX_DEPTH:
        raise CalcError(f"expression nested too deeply (limit {MAX_DEPTH} levels)")
    evaluator = _Evaluator(time.monotonic() + TIME_LIMIT_S)
    try:
        return evaluator._eval(tree.body)
    except CalcError:
        raise
    except simpleeval.FeatureNotAvailable as exc:
        raise CalcError(f"not allowed: {str(exc).replace('Sorry, ', '')}; {ALLOWED}") from None
    except simpleeval.NameNotDefined as exc:
        raise CalcError(
            f"unknown name {exc.name!r}; names: {', '.join(NAMES)}; functions: {', '.join(FUNCTIONS)}"
        ) from None
    except simpleeval.FunctionNotDefined as exc:
        raise CalcError(f"unknown function {exc.func_name!r}; functions: {', '.join(FUNCTIONS)}") from None
    except simpleeval.InvalidExpression as exc:
        raise CalcError(str(exc)) from None
    except ZeroDivisionError:
        raise CalcError("division by zero") from None
    except OverflowError:
        raise CalcError("result too large (overflow)") from None
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise CalcError(f"{type(exc).__name__}: {exc}") from None
    except RecursionError:
        raise CalcError("expression nested too deeply") from None


def calculate(expression: str) -> str:
    """Evaluate and format for the model: the result as text, or a line starting with 'error:'."""
    try:
        value = evaluate(expression)
    except CalcError as exc:
        return f"error: {exc}"
    if isinstance(value, complex):  # e.g. (-8) ** 0.5
        return "error: the result is not a real number"
    if isinstance(value, float):
        if math.isnan(value):
            return "error: the result is not a number"
        return repr(value) if math.isfinite(value) else "error: result too large (infinite)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        try:
            return f"{float(value):.12e}"
        except OverflowError:  # beyond a float (~1.8e308) but within MAX_INT_BITS
            return "error: result too large (beyond 1.8e308)"
    return str(value)
