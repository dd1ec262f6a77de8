"""Rewrite rules as data: (name, pattern, replacement, reason) entries, one
matcher (``algebra.match_whole``, products compared as products) and one
rewriter that applies a table of them to an expression, bottom up.

A pattern is an expression with holes (``E``, ``Z``...). A replacement is a
function of the holes' bindings and of what the pass knows (its ``env``: the
saved definitions, the maximum of a sum...), returning the new expression or
None where the rule does not apply after all.

Nothing is rewritten inside an equality test (``==``, ``!=``): it compares
the very values the forward computed (a ``max=``'s tie test), and any
algebraically equal form may round differently and break the tie.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import algebra
from .algebra import Hole
from .ir import Affine, Bin, Call, Expr, Num, Ref, children, rebuild

E = Hole("E")               # any expression
U = Hole("U")
Z = Hole("Z", ref=True)     # a tensor read

# ---------------------------------------------------------------- forms
# The definitions the fusions and the stable forms recognise, whatever the names.

SOFTMAX = Bin("/", Call("exp", (E,)), Z)        # P = exp(E) / Z, Z += exp(E): a softmax
EXP_SUM = Call("exp", (E,))                     # Z += exp(E): a softmax's normalizer
RELUS = (Call("relu", (U,)), Call("max", (U, Num(0))))    # T = relu(U) = max(U, 0)
POSITIVE = Bin(">", U, Num(0))                  # the mask (U > 0)
LOG_OF = Call("log", (Z,))                      # log(X) of a tensor read

EXACT = ("==", "!=")


def match(pattern: Expr, e: Expr, vars_: frozenset = frozenset(),
          sigma: dict | None = None) -> dict | None:
    """The bindings under which ``pattern`` is ``e`` (holes and the loop
    variables ``vars_``), or None."""
    return algebra.match_whole(pattern, e, vars_, sigma)


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Expr
    replacement: Callable[[Expr, dict, object], Expr | None]    # (node, bindings, env)
    reason: str


def rewrite(e: Expr, rules: list[Rule], env) -> tuple[Expr, list[Rule]]:
    """e with every node that a rule matches replaced (children first, the
    first rule that applies); and the rules that fired. Equality tests are
    left as they are (see the module's docstring)."""
    fired: list[Rule] = []

    def visit(x: Expr) -> Expr:
        if isinstance(x, Bin) and x.op in EXACT:
            return x
        x = rebuild(x, [visit(c) for c in children(x)])
        for rule in rules:
            sigma = match(rule.pattern, x)
            if sigma is None:
                continue
            new = rule.replacement(x, sigma, env)
            if new is not None:
                fired.append(rule)
                return new
        return x

    return visit(e), fired


# ------------------------------------------------------------------ reuse

@dataclass
class Definition:
    """A tensor that one elementwise update defines: ``T[vars] = expr``."""
    tensor: str
    vars: tuple[str, ...]            # the target's index variables, in order
    expr: Expr                       # the defining expression (sign applied)
    coef: float
    factors: list
    where: int                       # statement number it is defined at (-1: forward)

    def read(self, sigma: dict) -> Ref:
        """T read where its variables are bound as in sigma."""
        return Ref(self.tensor, tuple(as_index(sigma[v]) for v in self.vars))


def as_index(rep):
    return Affine(((rep, 1),)) if isinstance(rep, str) else rep


def _bound(sigma: dict | None, d: Definition) -> bool:
    return sigma is not None and set(sigma) >= set(d.vars)


def _relu_mask(e: Expr, sigma: dict, defs: list[Definition]) -> Expr | None:
    for d in defs:
        for relu in RELUS:
            inner = match(relu, d.expr)
            if inner is None:
                continue
            s = algebra.match(inner["?U"], sigma["?U"], frozenset(d.vars), {})
            if _bound(s, d):
                return Bin(">", d.read(s), Num(0))
    return None


def _saved_value(e: Expr, sigma: dict, defs: list[Definition]) -> Expr | None:
    """The whole expression is a definition's, at some binding: read it."""
    for d in defs:
        if len(d.factors) == 1 and d.factors[0][1] == 1 and d.coef == 1:
            s = algebra.match(d.factors[0][0], e, frozenset(d.vars), {})
            if _bound(s, d):
                return d.read(s)
    return None


def _contains(factors: list, wanted: list) -> bool:
    """Whether the product ``factors`` has every factor of ``wanted`` to at
    least its power. Two of a definition's factors may match one factor of the
    product (h8[i, j] = h7[i] * h7[j] at i = j is h7[j] ** 2): reading h8 for
    a lone h7[j] would leave h8[j, j] / h7[j], an inverse that is nan at 0."""
    for f, k in algebra.merge(list(wanted)):
        have = [kk for ff, kk in factors if ff == f]
        if not have or (have[0] < k if k > 0 else have[0] > k):
            return False
    return True


def _saved_factors(e: Expr, sigma: dict, defs: list[Definition]) -> Expr | None:
    """Some factors of a product are a definition's: read it instead of them.
    Only a recomputation is replaced: a definition that is a bare read times a
    number (h = 3 * W) would read W back as h / 3, an inverse that rounds."""
    if not algebra.is_product(e):
        return None
    coef, factors = algebra.flatten(e)
    for d in defs:
        if len(d.factors) == 1 and d.factors[0][1] == 1 and isinstance(d.factors[0][0], Ref):
            continue
        if d.coef != 1 and not float(coef / d.coef).is_integer():
            continue
        s = algebra.match_factors(d.factors, factors, frozenset(d.vars))
        if not _bound(s, d) or not _contains(factors, [(algebra.subst(f, s), k)
                                                      for f, k in d.factors]):
            continue
        rest = list(factors)
        for f, k in d.factors:
            rest = algebra.merge(rest + [(algebra.subst(f, s), -k)])
        rest = algebra.merge(rest + [(d.read(s), 1)])
        return algebra.rebuild(algebra._int(coef / d.coef), rest)
    return None


# Reuse: each entry replaces a recomputation by a read of a saved tensor.
# env: the definitions usable at the statement being rewritten.
REUSE = [
    Rule("relu-mask", POSITIVE, lambda e, s, defs: _relu_mask(e, s, defs),
         "relu(u) > 0 exactly where u > 0: the mask reads the saved output"),
    Rule("saved", E, lambda e, s, defs: _saved_value(e, s, defs),
         "the tensor holds exactly this value at every position"),
    Rule("saved-factors", E, lambda e, s, defs: _saved_factors(e, s, defs),
         "the tensor holds exactly these factors' product at every position"),
]


__all__ = ["E", "U", "Z", "SOFTMAX", "EXP_SUM", "RELUS", "POSITIVE", "LOG_OF", "EXACT",
           "Rule", "Definition", "REUSE", "match", "rewrite", "as_index"]
