"""Products as (coefficient, factors with integer powers), matching with index
substitution, and algebraic simplification: the machinery of the optimizer.

Also the one constant fold (``fold``) and the one product flattening
(``flatten``; ``split_product`` is its form without powers) that the
differentiator and the lowering share.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import functions
from .ir import Affine, Bin, Call, DimVal, Expr, Gather, IndexCmp, Neg, Num, Ref, children, reads, \
    rebuild as rebuild_node

Factors = list[tuple[Expr, int]]


# ------------------------------------------------------------- products

def flatten(e: Expr, powers: bool = True) -> tuple[float, Factors]:
    """e as coef * prod(f ** k); numbers fold into coef. With ``powers``, equal
    factors merge and ``f ** n`` (n a positive integer) counts as n factors f;
    without, every factor is kept as written, with power 1 or -1."""
    coef = 1
    out: Factors = []

    def visit(f: Expr, k: int):
        nonlocal coef
        if isinstance(f, Num) and k < 0 and f.value == 0:
            out.append((f, k))          # x / 0 is IEEE's inf or nan, at run time
        elif isinstance(f, Num):
            coef = coef * (f.value ** k) if k > 0 else coef / (f.value ** -k)
        elif isinstance(f, Neg):
            coef = -coef if k % 2 else coef
            visit(f.arg, k)
        elif isinstance(f, Bin) and f.op == "*":
            visit(f.lhs, k)
            visit(f.rhs, k)
        elif isinstance(f, Bin) and f.op == "/":
            visit(f.lhs, k)
            visit(f.rhs, -k)
        elif powers and isinstance(f, Bin) and f.op == "**" and isinstance(f.rhs, Num) and \
                isinstance(f.rhs.value, int) and f.rhs.value > 0:
            visit(f.lhs, k * f.rhs.value)
        else:
            out.append((f, k))

    visit(e, 1)
    return _int(coef), merge(out) if powers else out


def split_product(factors: list[Expr]) -> tuple[float, list[Expr], list[Expr]]:
    """A product of ``factors`` as (coefficient, numerators, denominators),
    each factor kept as written (no powers merged)."""
    e = factors[0] if factors else Num(1)
    for f in factors[1:]:
        e = Bin("*", e, f)
    coef, fs = flatten(e, powers=False)
    return coef, [f for f, k in fs if k > 0], [f for f, k in fs if k < 0]


def _int(c):
    if isinstance(c, float) and c.is_integer() and abs(c) < 1e15:
        return int(c)
    return c


def merge(factors: Factors) -> Factors:
    """Add the powers of equal factors; drop those that cancel."""
    out: Factors = []
    for f, k in factors:
        for n, (g, j) in enumerate(out):
            if g == f:
                out[n] = (g, j + k)
                break
        else:
            out.append((f, k))
    return [(f, k) for f, k in out if k != 0]


def is_product(e: Expr) -> bool:
    return isinstance(e, Neg) or (isinstance(e, Bin) and e.op in ("*", "/"))


def rebuild(coef, factors: Factors) -> Expr:
    """coef * nums / dens, the constant first, powers written ``f ** k``."""
    if coef == 0:
        return Num(0)
    nums = [_power(f, k) for f, k in factors if k > 0]
    dens = [_power(f, -k) for f, k in factors if k < 0 and not isinstance(f, DimVal)]
    scale = [_power(f, -k) for f, k in factors if k < 0 and isinstance(f, DimVal)]
    neg = coef < 0
    c = abs(coef)
    lead = []
    if scale:  # 1/B first, as the TTIC answers write a batch average
        s = Bin("/", Num(_int(c)), scale[0])
        for d in scale[1:]:
            s = Bin("/", s, d)
        lead, c = [s], 1
    parts = lead + ([Num(_int(c))] if c != 1 or not (nums or lead) else []) + nums
    e = parts[0]
    for p in parts[1:]:
        e = Bin("*", e, p)
    for d in dens:
        e = Bin("/", e, d)
    return Neg(e) if neg else e


def _power(f: Expr, k: int) -> Expr:
    return f if k == 1 else Bin("**", f, Num(k))


# ------------------------------------------------------------ constants

_BIN_VALUES = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
               "/": lambda a, b: a / b, "**": lambda a, b: a ** b,
               "<": lambda a, b: float(a < b), ">": lambda a, b: float(a > b),
               "<=": lambda a, b: float(a <= b), ">=": lambda a, b: float(a >= b),
               "==": lambda a, b: float(a == b), "!=": lambda a, b: float(a != b)}


def fold(e: Expr):
    """The value of an expression of numbers only (no reads, no dims), or None
    (also where Python cannot compute it: 1 / 0, an overflow)."""
    if isinstance(e, Num):
        return e.value
    if isinstance(e, (Ref, DimVal, IndexCmp)):
        return None
    args = [fold(c) for c in children(e)]
    if any(a is None for a in args):
        return None
    try:
        if isinstance(e, Neg):
            return -args[0]
        if isinstance(e, Bin):
            return _BIN_VALUES[e.op](*args)
        return functions.fold(e.fn, args)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


# ------------------------------------------------------------ substitution

def subst_affine(a: Affine, sigma: dict) -> Affine | Gather | None:
    """Replace loop variables by index expressions; None if not expressible."""
    terms: dict[str, int] = {}
    const, dims = a.const, dict(a.dims)
    for v, c in a.terms:
        rep = sigma.get(v, v)
        if isinstance(rep, str):
            terms[rep] = terms.get(rep, 0) + c
        elif isinstance(rep, Affine):
            for u, k in rep.terms:
                terms[u] = terms.get(u, 0) + c * k
            const += c * rep.const
            for d, k in rep.dims:
                dims[d] = dims.get(d, 0) + c * k
        elif isinstance(rep, Gather):
            if a.plain == v:
                return rep
            return None
    return Affine(tuple((v, c) for v, c in terms.items() if c), const,
                  tuple((d, c) for d, c in dims.items() if c), a.pos)


def subst(e: Expr, sigma: dict) -> Expr | None:
    """e with loop variables replaced per sigma (var -> var, Affine or Gather)."""
    if isinstance(e, Ref):
        index = _subst_index(e.index, sigma)
        return None if index is None else Ref(e.tensor, index, e.pos)
    if isinstance(e, IndexCmp):          # (i == j): both sides are index forms
        sides = _subst_index(e.sides, sigma)
        return None if sides is None else IndexCmp(e.op, *sides, e.pos)
    kids = [subst(c, sigma) for c in children(e)]
    return None if any(k is None for k in kids) else rebuild_node(e, kids)


def _subst_index(index, sigma: dict) -> tuple | None:
    out = []
    for ix in index:
        if isinstance(ix, Gather):
            inner = [subst_affine(a, sigma) for a in ix.index]
            if any(not isinstance(a, Affine) for a in inner):
                return None         # gathers do not nest
            out.append(Gather(ix.tensor, tuple(inner), ix.pos))
        else:
            r = subst_affine(ix, sigma)
            if r is None:
                return None
            out.append(r)
    return tuple(out)


# ------------------------------------------------------------- matching

@dataclass(frozen=True)
class Hole:
    """A pattern variable of a rewrite rule: it matches any expression, or
    with ``ref=True`` only a tensor read, and binds it under ``?name``."""
    name: str
    ref: bool = False

    @property
    def key(self) -> str:
        return "?" + self.name

    def __str__(self) -> str:
        return self.key


def match(pattern: Expr, e: Expr, vars_: frozenset, sigma: dict) -> dict | None:
    """Bind the pattern's loop variables (plain uses only) and holes so it
    equals e."""
    if isinstance(pattern, Hole):
        if pattern.ref and not isinstance(e, Ref):
            return None
        if pattern.key in sigma:
            return sigma if sigma[pattern.key] == e else None
        return {**sigma, pattern.key: e}
    if type(pattern) is not type(e):
        return None
    if isinstance(pattern, Ref):
        if pattern.tensor != e.tensor or len(pattern.index) != len(e.index):
            return None
        return _match_all(_match_index, pattern.index, e.index, vars_, dict(sigma))
    if isinstance(pattern, Num):
        return sigma if pattern.value == e.value else None
    if isinstance(pattern, DimVal):
        return sigma if pattern.name == e.name else None
    if isinstance(pattern, Neg):
        return match(pattern.arg, e.arg, vars_, sigma)
    if isinstance(pattern, Bin):
        if pattern.op != e.op:
            return None
        s = match(pattern.lhs, e.lhs, vars_, sigma)
        return None if s is None else match(pattern.rhs, e.rhs, vars_, s)
    if isinstance(pattern, Call):
        if pattern.fn != e.fn or len(pattern.args) != len(e.args):
            return None
        return _match_all(match, pattern.args, e.args, vars_, sigma)
    return None


def _match_all(fn, patterns, targets, vars_, sigma):
    """``fn`` on each pair in turn, each binding extending the last; None if one fails."""
    for a, b in zip(patterns, targets):
        sigma = fn(a, b, vars_, sigma)
        if sigma is None:
            return None
    return sigma


def _match_index(p, x, vars_, sigma):
    if isinstance(p, Affine) and p.plain in vars_:
        v = p.plain
        rep = x.plain if isinstance(x, Affine) and x.plain else x
        if v in sigma:
            return sigma if sigma[v] == rep else None
        return {**sigma, v: rep}
    if isinstance(p, Affine):
        if any(v in vars_ for v in p.vars):
            return None            # only plain uses of pattern variables bind
        return sigma if isinstance(x, Affine) and x == p else None
    if isinstance(p, Gather) and isinstance(x, Gather) and p.tensor == x.tensor:
        return _match_all(_match_index, p.index, x.index, vars_, sigma)
    return None


def match_factors(pattern: Factors, target: Factors, vars_: frozenset,
                  sigma: dict | None = None, exact: bool = False):
    """A binding under which every pattern factor's power fits inside target's
    (``exact``: equals it, each pattern factor a different target factor)."""
    sigma = {} if sigma is None else sigma
    if not pattern:
        return sigma
    (pf, pk), rest = pattern[0], pattern[1:]
    for n, (tf, tk) in enumerate(target):
        if (exact and tk != pk) or (pk > 0 and tk < pk) or (pk < 0 and tk > pk):
            continue
        s = match(pf, tf, vars_, sigma)
        if s is not None:
            r = match_factors(rest, target[:n] + target[n + 1:] if exact else target, vars_, s,
                              exact)
            if r is not None:
                return r
    return None


def match_whole(pattern: Expr, e: Expr, vars_: frozenset = frozenset(),
                sigma: dict | None = None) -> dict | None:
    """``match``, with products compared as products: ``exp(E) / Z`` matches
    ``1 / Z * exp(s[b, j])``, the same factors in any order and grouping."""
    sigma = {} if sigma is None else sigma
    if not is_product(pattern):
        return match(pattern, e, vars_, sigma)
    pcoef, pfs = flatten(pattern)
    coef, fs = flatten(e)
    if coef != pcoef or len(fs) != len(pfs):
        return None
    return match_factors(pfs, fs, vars_, sigma, exact=True)


# ------------------------------------------------------------ simplification

def simplify(e: Expr) -> Expr:
    """Fold constants, merge equal factors, drop ones and zeros."""
    if isinstance(e, (Num, Ref, DimVal)):
        return e
    if isinstance(e, Call):
        return rebuild_node(e, [simplify(a) for a in e.args])
    if isinstance(e, Bin) and e.op in ("+", "-"):
        return _simplify_sum(e)
    if isinstance(e, Bin) and e.op in ("*", "/", "**") or isinstance(e, Neg):
        if isinstance(e, Bin) and e.op == "**":
            a, b = simplify(e.lhs), simplify(e.rhs)
            if isinstance(b, Num) and b.value == 1:
                return a
            if isinstance(b, Num) and b.value == 0 and not reads(a):
                return Num(1)           # (a read ** 0 keeps its indices' ranges)
            e = Bin("**", a, b, e.pos)
            if not (isinstance(b, Num) and isinstance(b.value, int) and b.value > 0):
                return e
        elif isinstance(e, Neg):
            inner = simplify(e.arg)
            if isinstance(inner, Neg):
                return inner.arg
            if isinstance(inner, Num):
                return Num(-inner.value) if inner.value == 0 else Neg(inner)
            e = Neg(inner, e.pos)
        else:
            e = Bin(e.op, simplify(e.lhs), simplify(e.rhs), e.pos)
        coef, factors = flatten(e)
        return rebuild(coef, factors)
    return e


def _terms(e: Expr, sign: int, out: list[tuple[float, Factors]]) -> None:
    """The signed terms of a sum, each simplified and flattened."""
    if isinstance(e, Bin) and e.op in ("+", "-"):
        _terms(e.lhs, sign, out)
        _terms(e.rhs, sign if e.op == "+" else -sign, out)
    elif isinstance(e, Neg) and isinstance(e.arg, Bin) and e.arg.op in ("+", "-"):
        _terms(e.arg, -sign, out)
    else:
        t = simplify(e)
        if isinstance(t, Bin) and t.op in ("+", "-") or \
                isinstance(t, Neg) and isinstance(t.arg, Bin) and t.arg.op in ("+", "-"):
            _terms(t, sign, out)
            return
        coef, factors = flatten(t)
        out.append((sign * coef, factors))


def _simplify_sum(e: Bin) -> Expr:
    """A sum with equal terms added (``a + a`` is ``2 * a``, ``a - a`` drops),
    zeros dropped, the positive terms first, and a sum of negative terms
    written as the negation of a sum (so that an update prints ``-=``)."""
    terms: list[tuple[float, Factors]] = []
    _terms(e, 1, terms)
    merged: list[tuple[float, Factors]] = []
    for coef, factors in terms:
        key = sorted(map(str, factors))
        for n, (c, fs) in enumerate(merged):
            if sorted(map(str, fs)) == key and fs and factors:
                merged[n] = (_int(c + coef), fs)
                break
            if not fs and not factors:
                merged[n] = (_int(c + coef), fs)
                break
        else:
            merged.append((coef, factors))
    merged = [(c, fs) for c, fs in merged if c != 0 or any(isinstance(f, Num) for f, _ in fs)]
    if not merged:
        return Num(0)
    pos = [(c, fs) for c, fs in merged if c > 0]
    neg = [(-c, fs) for c, fs in merged if c < 0]
    if not pos:
        return Neg(_sum([rebuild(c, fs) for c, fs in neg], []))
    return _sum([rebuild(c, fs) for c, fs in pos], [rebuild(c, fs) for c, fs in neg])


def _sum(plus: list[Expr], minus: list[Expr]) -> Expr:
    e = plus[0]
    for t in plus[1:]:
        e = Bin("+", e, t)
    for t in minus:
        e = Bin("-", e, t)
    return e


def _is_zero(e: Expr) -> bool:
    return isinstance(e, Num) and e.value == 0
