"""Backward programs as normalized sums of products, for golden-file tests.

``normal_form(program)`` turns the statements of a program (a ``Program``,
its text, or a path to a ``.loop`` file) into a canonical, sorted tuple of
``Term``s, one per distinct product, so that two programs that differ only in
statement order, spacing, factor order, loop-variable names, the names of
temporaries, ``^`` versus ``**``, ``a / c ** 2`` versus ``a / c / c`` or how
constants are written compare equal -- but a changed sign, number, factor or
index does not.

How a statement ``for I: T[o] op expr`` becomes terms:

* ``=`` counts as ``+=`` (every computed tensor starts at zero); ``-=`` negates.
* ``expr`` is expanded into a sum of products (``*`` and ``+`` distribute,
  integer powers of a product become repeated factors, ``/`` by a product
  moves its factors to the denominator, ``/`` by a sum keeps the sum as one
  denominator factor). Numbers fold into the term's coefficient; a dim used
  as a number (``1/B``) is a factor ``B``. Factors common to the numerator
  and the denominator cancel.
* Function calls, comparisons, non-integer powers and sums in a denominator
  are single factors, whose arguments are themselves normalized (``(a > b)``
  and ``(b < a)`` are the same factor).
* The loop variables are renamed ``v0, v1, ...`` by the permutation that
  gives the smallest rendering, so their names do not matter.
* A temporary -- a computed tensor whose name is not ``X.grad`` -- is renamed
  after its own normalized definition, so temporaries match up to renaming.
  Its defining statements do not appear as terms themselves.
* Terms with the same target and factors are summed (``x.grad += a`` twice is
  ``x.grad += 2 * a``); terms whose coefficient is zero are dropped.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from tcc.ir import Affine, Bin, Call, DimVal, Gather, IndexCmp, Neg, Num, Program, Ref, Stmt

MAX_PERMUTED_LOOPS = 7        # more loop variables than this: named by first appearance
SIG_DIGITS = 10               # coefficients compare to this many significant digits
_FLIP = {"<": ">", "<=": ">=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}


@dataclass(frozen=True, order=True)
class Term:
    """One product: ``target op coef * num... / den...``, with ``op`` ``+=``
    (``max=`` is kept apart), ``nloops`` the number of loop variables."""
    target: str
    op: str
    nloops: int
    num: tuple[str, ...]
    den: tuple[str, ...]
    coef: float

    @property
    def sign(self) -> int:
        return -1 if self.coef < 0 else 1

    def __str__(self) -> str:
        loops = ", ".join(f"v{k}" for k in range(self.nloops))
        body = " * ".join([_fmt(abs(self.coef)), *self.num])
        if self.den:
            body += " / " + " / ".join(self.den)
        op = self.op if self.op != "+=" else ("-=" if self.coef < 0 else "+=")
        return (f"for {loops}: " if loops else "") + f"{self.target} {op} {body}"


def _fmt(c: float) -> str:
    return f"{c:.{SIG_DIGITS}g}"


def _scaled(c, text: str) -> str:
    """``c*text``, written ``text`` and ``-text`` for c = 1 and -1."""
    if c == 1:
        return text
    if c == -1:
        return "-" + text
    return f"{_fmt(c) if isinstance(c, float) else c}*{text}"


def _round(c: float) -> float:
    return float(_fmt(c))


# ------------------------------------------------------------------ expansion
# A product is (coef, num, den) with num/den lists of IR atoms.

@dataclass(frozen=True)
class _SumAtom:
    """A sum kept whole (in a denominator): its products."""
    prods: tuple


@dataclass(frozen=True)
class _PowAtom:
    base: object
    exp: object


def _expand(e) -> list[tuple[float, list, list]]:
    if isinstance(e, Num):
        return [(float(e.value), [], [])]
    if isinstance(e, (Ref, DimVal, IndexCmp)):
        return [(1.0, [e], [])]
    if isinstance(e, Neg):
        return [(-c, n, d) for c, n, d in _expand(e.arg)]
    if isinstance(e, Call):
        return [(1.0, [e], [])]
    if isinstance(e, Bin):
        if e.op == "+":
            return _expand(e.lhs) + _expand(e.rhs)
        if e.op == "-":
            return _expand(e.lhs) + [(-c, n, d) for c, n, d in _expand(e.rhs)]
        if e.op == "*":
            return _times(_expand(e.lhs), _expand(e.rhs))
        if e.op == "/":
            return _times(_expand(e.lhs), _reciprocal(_expand(e.rhs)))
        if e.op == "**":
            return _power(e)
        return [(1.0, [e], [])]                      # a comparison
    raise TypeError(f"cannot normalize {type(e).__name__}: {e}")


def _times(a, b):
    return [(ca * cb, na + nb, da + db) for ca, na, da in a for cb, nb, db in b]


def _reciprocal(prods):
    if len(prods) == 1:
        c, n, d = prods[0]
        return [(1.0 / c, list(d), list(n))]
    return [(1.0, [], [_SumAtom(tuple(_freeze(prods)))])]


def _freeze(prods):
    return [(c, tuple(n), tuple(d)) for c, n, d in prods]


def _constant(prods):
    if len(prods) == 1 and not prods[0][1] and not prods[0][2]:
        return prods[0][0]
    if not prods:
        return 0.0
    return None


def _power(e: Bin):
    base = _expand(e.lhs)
    k = _constant(_expand(e.rhs))
    if k is not None and float(k).is_integer() and abs(k) <= 8:
        k = int(k)
        if k == 0:
            return [(1.0, [], [])]
        if len(base) == 1:
            c, n, d = base[0]
            if k < 0:
                c, n, d, k = 1.0 / c, d, n, -k
            return [(c ** k, list(n) * k, list(d) * k)]
        if k > 0:
            out = [(1.0, [], [])]
            for _ in range(k):
                out = _times(out, base)
            return out
        return [(1.0, [], [_SumAtom(tuple(_freeze(base)))] * (-k))]
    return [(1.0, [_PowAtom(e.lhs, e.rhs)], [])]


def _cancel(num: list, den: list):
    num, den = list(num), list(den)
    for f in list(den):
        if f in num:
            num.remove(f)
            den.remove(f)
    return num, den


# ------------------------------------------------------------------ rendering

class _Renderer:
    def __init__(self, temp_names: dict[str, str]):
        self.temps = temp_names

    def name(self, t: str) -> str:
        return self.temps.get(t, t)

    def affine(self, a: Affine, m: dict) -> str:
        parts = sorted(_scaled(c, m.get(v, v)) for v, c in a.terms)
        parts += sorted(_scaled(c, d) for d, c in a.dims)
        if a.const or not parts:
            parts.append(str(a.const))
        return "+".join(parts)

    def index(self, ix, m: dict) -> str:
        if isinstance(ix, Gather):
            return f"{self.name(ix.tensor)}[{','.join(self.affine(a, m) for a in ix.index)}]"
        return self.affine(ix, m)

    def ref(self, r: Ref, m: dict) -> str:
        if not r.index:
            return self.name(r.tensor)
        return f"{self.name(r.tensor)}[{','.join(self.index(i, m) for i in r.index)}]"

    def atom(self, f, m: dict) -> str:
        if isinstance(f, Ref):
            return self.ref(f, m)
        if isinstance(f, DimVal):
            return f.name
        if isinstance(f, Call):
            return f"{f.fn}({', '.join(self.expr(a, m) for a in f.args)})"
        if isinstance(f, _SumAtom):
            return f"({self.sum(f.prods, m)})"
        if isinstance(f, _PowAtom):
            return f"pow({self.expr(f.base, m)}, {self.expr(f.exp, m)})"
        if isinstance(f, (Bin, IndexCmp)):                       # a comparison
            if isinstance(f, IndexCmp):                         # of positions
                a, b = self.index(f.lhs, m), self.index(f.rhs, m)
            else:
                a, b = self.expr(f.lhs, m), self.expr(f.rhs, m)
            op = f.op
            if op in ("<", "<="):
                a, b, op = b, a, _FLIP[op]
            elif op in ("==", "!=") and b < a:
                a, b = b, a
            return f"({a} {op} {b})"
        raise TypeError(f"unexpected factor {f!r}")

    def product(self, coef, num, den, m) -> tuple[str, tuple, tuple]:
        n = tuple(sorted(self.atom(f, m) for f in num))
        d = tuple(sorted(self.atom(f, m) for f in den))
        return n, d

    def sum(self, prods, m: dict) -> str:
        merged: dict = {}
        for c, num, den in prods:
            num, den = _cancel(num, den)
            key = self.product(c, num, den, m)
            merged[key] = merged.get(key, 0.0) + c
        items = sorted((k, _round(c)) for k, c in merged.items() if _round(c) != 0)
        if not items:
            return "0"
        return " + ".join(_scaled(c, "*".join(n) + "".join(f"/{x}" for x in d))
                          if n else _fmt(c) + "".join(f"/{x}" for x in d)
                          for (n, d), c in items)

    def expr(self, e, m: dict) -> str:
        return self.sum(_expand(e), m)


# ------------------------------------------------------------------ programs

def _load(program) -> Program:
    if isinstance(program, Program):
        return program
    import tcc
    if isinstance(program, os.PathLike) or (isinstance(program, str) and "\n" not in program
                                            and program.endswith(".loop")):
        with open(program, encoding="utf-8") as f:
            return tcc.parse(f.read())
    return tcc.parse(program)


def _stmt_terms(s: Stmt, r: _Renderer, target_name: str | None = None) -> list[Term]:
    """The terms of one statement, each with its own canonical loop names."""
    sign = -1.0 if s.op == "-=" else 1.0
    op = s.op if s.op in ("max=", "min=") else "+="
    loops = list(s.loops)
    out = []
    for c, num, den in _expand(s.expr):
        num, den = _cancel(num, den)
        best = None
        if len(loops) <= MAX_PERMUTED_LOOPS:
            perms = itertools.permutations(range(len(loops)))
        else:
            perms = [tuple(range(len(loops)))]
        for perm in perms:
            m = {v: f"v{perm[k]}" for k, v in enumerate(loops)}
            tgt = r.ref(s.target, m)
            if target_name is not None:
                tgt = target_name + tgt[len(r.name(s.target.tensor)):]
            n, d = r.product(c, num, den, m)
            key = (tgt, n, d)
            if best is None or key < best:
                best = key
        tgt, n, d = best
        out.append(Term(tgt, op, len(loops), n, d, sign * c))
    return out


def _merge(terms: list[Term]) -> tuple[Term, ...]:
    acc: dict = {}
    for t in terms:
        key = (t.target, t.op, t.nloops, t.num, t.den)
        acc[key] = acc.get(key, 0.0) + t.coef
    out = []
    for (target, op, nloops, num, den), c in acc.items():
        c = _round(c)
        if c != 0:
            out.append(Term(target, op, nloops, num, den, c))
    return tuple(sorted(out))


def normal_form(program) -> tuple[Term, ...]:
    """The canonical multiset of terms of a (backward) program's statements."""
    prog = _load(program)
    targets: dict[str, list[Stmt]] = {}
    for s in prog.stmts:
        targets.setdefault(s.target.tensor, []).append(s)
    temps = [t for t in targets if not t.endswith(".grad")]
    names: dict[str, str] = {}
    renderer = _Renderer(names)

    def canonical(t: str, busy=()) -> str:
        if t in names:
            return names[t]
        if t in busy:
            raise ValueError(f"temporary '{t}' is defined in terms of itself")
        for s in targets[t]:                   # name the temporaries it reads first
            for node in _refs(s):
                if node in targets and node in temps and node != t:
                    canonical(node, busy + (t,))
        terms = []
        for s in targets[t]:
            terms += _stmt_terms(s, renderer, target_name="@")
        names[t] = "tmp<" + "; ".join(map(str, _merge(terms))) + ">"
        return names[t]

    for t in temps:
        canonical(t)
    terms = []
    for s in prog.stmts:
        if s.target.tensor in temps:
            continue
        terms += _stmt_terms(s, renderer)
    return _merge(terms)


def _refs(s: Stmt):
    from tcc.ir import reads
    for r in reads(s.expr):
        yield r.tensor
        for ix in r.index:
            if isinstance(ix, Gather):
                yield ix.tensor
    for ix in s.target.index:
        if isinstance(ix, Gather):
            yield ix.tensor


def render(terms) -> str:
    """A readable listing of a normal form, one term a line."""
    return "\n".join(map(str, terms))


def same(a, b) -> bool:
    return normal_form(a) == normal_form(b)


def assert_same(actual, expected):
    """Assert two programs have the same normal form, with a readable diff."""
    na, nb = normal_form(actual), normal_form(expected)
    if na != nb:
        only_a = [t for t in na if t not in nb]
        only_b = [t for t in nb if t not in na]
        raise AssertionError(
            "backward programs differ as sums of products\n"
            "only in actual:\n  " + "\n  ".join(map(str, only_a)) +
            "\nonly in expected:\n  " + "\n  ".join(map(str, only_b)))


__all__ = ["Term", "normal_form", "render", "same", "assert_same"]
