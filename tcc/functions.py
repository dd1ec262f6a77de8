"""The language's functions, one row each.

A row says everything every stage needs to know about a function: its name
and arity (the parser), its value on NumPy arrays (the reference interpreter,
finite differences), its value on Python floats (constant folding), the NumPy
source the generated module calls, its derivative rule (autodiff), and the
domain ``tcc check`` draws inputs from. Adding a function is adding a row
(``register``), plus an entry in a backend's table where that backend needs
code of its own for it. A stage that finds a piece missing raises a
``TccError`` naming the function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .errors import TccError
from .ir import Bin, Call, Expr, Neg, Num

# The derivative of argument k of a call, given the call's arguments and the
# call node itself (so that d exp(u) can reuse exp(u)); None where it is 0.
Rule = Callable[[tuple[Expr, ...], Call], "Expr | None"]


@dataclass(frozen=True)
class Function:
    name: str
    arity: int
    numpy: Callable                 # value on arrays: the interpreter, finite differences
    scalar: Callable                # value on Python floats: constant folding (may raise)
    code: str                       # NumPy source, ``{0}``, ``{1}`` for the arguments
    derivative: tuple[Rule, ...] | None = None   # one rule per argument
    domain: str = "real"            # "positive": tcc check draws positive inputs
    helpers: tuple[str, ...] = ()   # runtime helpers ``code`` calls (copied into modules)
    out_code: str | None = None     # NumPy source writing into ``{out}`` (None: no such form)

    def partial(self, k: int, call: Call) -> Expr | None:
        """d call / d (argument k), from the row's rule."""
        if self.derivative is None:
            raise TccError(f"function '{self.name}' has no derivative rule: give its row in "
                           "tcc.functions a derivative to differentiate it", call.pos)
        return self.derivative[k](call.args, call)


_ONE = Num(1)


def _mul(a: Expr, b: Expr) -> Expr:
    return Bin("*", a, b)


def _sub(a: Expr, b: Expr) -> Expr:
    return Bin("-", a, b)


def _sigmoid(x):
    # 1 / (1 + exp(-x)); exp overflows to inf for very negative x, giving 0 exactly
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _sigmoid_scalar(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x > -700 else 0.0


TABLE: dict[str, Function] = {}


def register(fn: Function) -> Function:
    """Add (or replace) a function row; the parser accepts its name from then on."""
    TABLE[fn.name] = fn
    return fn


def lookup(name: str, pos=None) -> Function:
    try:
        return TABLE[name]
    except KeyError:
        raise TccError(f"unknown function '{name}'; the functions are "
                       f"{', '.join(sorted(TABLE))}", pos) from None


for _row in [
    # d exp(u) = exp(u) du
    Function("exp", 1, np.exp, math.exp, "np.exp({0})", (lambda a, f: f,)),
    # d log(u) = du / u
    Function("log", 1, np.log, math.log, "np.log({0})",
             (lambda a, f: Bin("/", _ONE, a[0]),), domain="positive"),
    # d sqrt(u) = du / (2 sqrt(u))
    Function("sqrt", 1, np.sqrt, math.sqrt, "np.sqrt({0})",
             (lambda a, f: Bin("/", Num(0.5), f),), domain="positive"),
    # d tanh(u) = (1 - tanh(u)**2) du
    Function("tanh", 1, np.tanh, math.tanh, "np.tanh({0})",
             (lambda a, f: _sub(_ONE, Bin("**", f, Num(2))),)),
    # d s(u) = s(u) (1 - s(u)) du
    Function("sigmoid", 1, _sigmoid, _sigmoid_scalar, "_sigmoid({0})",
             (lambda a, f: _mul(f, _sub(_ONE, f)),), helpers=("_sigmoid",)),
    # d relu(u) = (u > 0) du
    Function("relu", 1, lambda x: np.maximum(x, 0), lambda x: max(x, 0), "np.maximum({0}, 0)",
             (lambda a, f: Bin(">", a[0], Num(0)),)),
    # d abs(u) = sign(u) du = ((u > 0) - (u < 0)) du
    Function("abs", 1, np.abs, abs, "np.abs({0})",
             (lambda a, f: _sub(Bin(">", a[0], Num(0)), Bin("<", a[0], Num(0))),)),
    # d sin(u) = cos(u) du
    Function("sin", 1, np.sin, math.sin, "np.sin({0})", (lambda a, f: Call("cos", a),)),
    # d cos(u) = -sin(u) du
    Function("cos", 1, np.cos, math.cos, "np.cos({0})", (lambda a, f: Neg(Call("sin", a)),)),
    # d max(a, b) = (a > b) da + (a <= b) db: a tie goes to b
    Function("max", 2, np.maximum, max, "np.maximum({0}, {1})",
             (lambda a, f: Bin(">", a[0], a[1]), lambda a, f: Bin("<=", a[0], a[1]))),
    # d min(a, b) = (a < b) da + (a >= b) db: a tie goes to b
    Function("min", 2, np.minimum, min, "np.minimum({0}, {1})",
             (lambda a, f: Bin("<", a[0], a[1]), lambda a, f: Bin(">=", a[0], a[1]))),
]:
    register(_row)

# The rows whose code is one NumPy ufunc call also write into an existing
# array (``out=``), which backends/inplace.py uses to avoid temporaries.
for _name in ("exp", "log", "sqrt", "tanh", "relu", "abs", "sin", "cos", "max", "min"):
    _row = TABLE[_name]
    register(replace(_row, out_code=_row.code[:-1] + ", out={out})"))


def fold(fn: str, args: list[float]):
    """A call's value on numbers, or None where the scalar form fails (the
    generated code then computes it, with IEEE results)."""
    try:
        return TABLE[fn].scalar(*args)
    except (OverflowError, ValueError, ZeroDivisionError, KeyError):
        return None


__all__ = ["Function", "TABLE", "register", "lookup", "fold"]
