"""Expressions read as polynomials, to compare two statements' values up to
the order and grouping of their terms and factors (``layernorm.py`` checks a
backward against layer norm's gradient with them; ``reuse.py`` finds a sum
that repeats a product).

A polynomial is ``{monomial: coefficient}``; a monomial ``((atom, power),
...)``, sorted by the atoms' text; an atom ``(text, the loop indices it
depends on)``: a tensor read, a size, a function call (its arguments'
polynomials in its text) or a sum over an index (``sum_over``). Powers are
integers, negative ones only of a monomial.
"""

from __future__ import annotations

import math

from tcc.ir import Affine, Bin, Call, DimVal, Neg, Num, Ref

class NotPoly(Exception):
    pass


def atom(text, vs=()):
    return (text, frozenset(vs))


def const(c) -> dict:
    return {(): float(c)} if c else {}


def one(atom, k=1) -> dict:
    return {((atom, k),): 1.0}


def add(a, b, sign=1.0) -> dict:
    out = dict(a)
    for m, c in b.items():
        v = out.get(m, 0.0) + sign * c
        if abs(v) <= 1e-13 * max(abs(out.get(m, 0.0)), abs(c)):
            out.pop(m, None)
        else:
            out[m] = v
    return out


def _mono_mul(m1, m2):
    d = dict(m1)
    for a, k in m2:
        d[a] = d.get(a, 0) + k
    return tuple(sorted(((a, k) for a, k in d.items() if k), key=lambda t: t[0][0]))


def mul(a, b) -> dict:
    out = {}
    for m1, c1 in a.items():
        for m2, c2 in b.items():
            out = add(out, {_mono_mul(m1, m2): c1 * c2})
    return out


def power(a, n) -> dict:
    if n >= 0:
        out = {(): 1.0}
        for _ in range(n):
            out = mul(out, a)
        return out
    if len(a) != 1:
        raise NotPoly
    ((m, c),) = a.items()
    if c == 0:
        raise NotPoly
    return {tuple((at, k * n) for at, k in m): c ** n}


def text(p) -> str:
    terms = sorted(f"{c!r}" + "".join(f"*{a[0]}^{k}" for a, k in m) for m, c in p.items())
    return " + ".join(terms) or "0"


def _vars(p):
    return frozenset(v for m in p for a, _ in m for v in a[1])


def poly(e, subst=None) -> dict:
    """The expression as a polynomial; ``subst``: {read's text: polynomial}.
    Raises NotPoly for what it does not read (comparisons, gathers, powers
    that are not integers, division by a sum)."""
    subst = subst or {}
    if isinstance(e, Num):
        return const(e.value)
    if isinstance(e, DimVal):
        return one(atom(e.name))
    if isinstance(e, Ref):
        if not all(isinstance(ix, Affine) for ix in e.index):
            raise NotPoly
        if str(e) in subst:
            return subst[str(e)]
        return one(atom(str(e), {v for ix in e.index for v in ix.vars}))
    if isinstance(e, Neg):
        return add({}, poly(e.arg, subst), -1.0)
    if isinstance(e, Bin):
        a = poly(e.lhs, subst)
        if e.op == "**":
            if not isinstance(e.rhs, Num) or float(e.rhs.value) != int(e.rhs.value) or \
                    abs(e.rhs.value) > 8:
                raise NotPoly
            return power(a, int(e.rhs.value))
        b = poly(e.rhs, subst)
        if e.op == "+":
            return add(a, b)
        if e.op == "-":
            return add(a, b, -1.0)
        if e.op == "*":
            return mul(a, b)
        if e.op == "/":
            return mul(a, power(b, -1))
        raise NotPoly
    if isinstance(e, Call):
        args = [poly(x, subst) for x in e.args]
        return one(atom(f"{e.fn}({', '.join(map(text, args))})",
                          frozenset().union(*map(_vars, args))))
    raise NotPoly


def try_poly(e, subst=None):
    try:
        return poly(e, subst)
    except (NotPoly, ZeroDivisionError, OverflowError):
        return None


def sum_over(p, var, n) -> dict:
    """The polynomial summed over index ``var`` (range ``n``, a polynomial):
    factors without ``var`` come out; the rest is one atom."""
    out = {}
    for m, c in p.items():
        dep = tuple((a, k) for a, k in m if var in a[1])
        ind = tuple((a, k) for a, k in m if var not in a[1])
        s = one(atom(f"sum[{var}]({text({dep: 1.0})})",
                       frozenset().union(*(a[1] for a, _ in dep)) - {var})) if dep else n
        out = add(out, mul({ind: c}, s))
    return out


def same(p, q) -> bool:
    return p is not None and q is not None and set(p) == set(q) and \
        all(math.isclose(p[m], q[m], rel_tol=1e-9, abs_tol=0.0) for m in p)
