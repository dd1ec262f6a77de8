"""Causal masks as triangles: an index comparison between two loop indices,
``(j <= t)``, ``(j < t)``, ``(t >= j + 2)``, that selects a value whose last
two axes are those indices is ``tril`` or ``triu`` of that value, with the
diagonal offset the comparison's constants give, not a select over a mask
built from ``arange`` views.

``s[t, j] += q[t, e] * k[j, e] * (j <= t)`` is ``np.tril(q @ k.T)``: the
contraction, then the triangle. Like the select it replaces, ``tril`` writes
exact zeros (it selects, it does not multiply), so the masked scores are 0
even where the product is inf or nan, as the contract has it. A comparison
over a summed index selects the operand it multiplies before the product
(``np.tril(a) @ v``), and every other comparison stays a select
(``operands.select``).

A selected operand's zeros still meet the other operand inside the product:
an inf or nan in ``v[j, d]`` at a masked pair (``j > t``) would make nan
where the contract has 0. ``exact`` keeps the product for the common case and
passes both operands and the selection to ``masked_product``, which the
NumPy module runs only when ``v`` has a non-finite entry (a check of ``v``,
never of the mask) and the torch module always, with no read back to the
host (helpers.py, torch_helpers.py: ``_masked_product``).
"""

from __future__ import annotations

from tcc import contraction
from tcc.ir import Affine, IndexCmp

from .operands import Context, Operand, ap, condition, select
from .target import Apply, Index, Lit, Name, Op, Tup


def triangle(c: IndexCmp, rows: str, cols: str) -> tuple[str, int] | None:
    """``("tril", k)`` when ``c`` holds exactly where ``col - row <= k``,
    ``("triu", k)`` where ``col - row >= k``; None for any other comparison.

    ``c`` must be ``<``, ``<=``, ``>`` or ``>=`` between affine forms whose
    loop indices are ``rows`` and ``cols``, with coefficients 1 and -1 once
    moved to one side, plus literal constants (no dims, no gathers)."""
    if c.op not in ("<", "<=", ">", ">=") or rows == cols:
        return None
    if not (isinstance(c.lhs, Affine) and isinstance(c.rhs, Affine)) or c.lhs.dims or \
            c.rhs.dims:
        return None
    coef: dict[str, int] = {}
    for v, k in c.lhs.terms:
        coef[v] = coef.get(v, 0) + k
    for v, k in c.rhs.terms:
        coef[v] = coef.get(v, 0) - k
    coef = {v: k for v, k in coef.items() if k}
    const = c.lhs.const - c.rhs.const
    # c is: sum coef[v] * v + const  OP  0
    if set(coef) != {rows, cols} or abs(coef[rows]) != 1 or coef[cols] != -coef[rows]:
        return None
    op = c.op
    if op in (">", ">="):           # negate both sides: -D <= 0 (or < 0)
        coef = {v: -k for v, k in coef.items()}
        const = -const
        op = "<" if op == ">" else "<="
    # p - q <= m, with m = -const (one less for a strict comparison of integers)
    m = -const - (1 if op == "<" else 0)
    if coef[cols] == 1:             # col - row <= m
        return "tril", m
    return "triu", -m               # row - col <= m, i.e. col - row >= -m


def guarded(ctx: Context, cmps, order: tuple[str, ...], ranges, value, value_vars) -> object:
    """``value`` (over ``order``, depending on the indices ``value_vars``)
    where every comparison of ``cmps`` holds, else exactly 0. A comparison
    between the last two indices of ``order`` is a triangle of the value when
    the value spans both (so the triangle's shape is the select's); the others
    select over their ``arange`` views."""
    rest = list(cmps)
    if len(order) >= 2 and {order[-2], order[-1]} <= set(value_vars) and \
            not isinstance(value, Lit):
        for c in cmps:
            tri = triangle(c, order[-2], order[-1])
            if tri is not None:
                value = ap(tri[0], value, k=tri[1])
                rest.remove(c)
    return select(condition(ctx, rest, order, ranges), value) if rest else value


def exact(ctx: Context, operands: list[Operand], res: Operand, ranges) -> Operand:
    """The contraction ``res`` of two operands, one of them selected by index
    comparisons, as ``masked_product``: exact where the other operand is inf or
    nan at a pair the selection removes. Any other contraction is as it was
    (one operand: the selected terms are summed, never multiplied)."""
    picked = [o for o in operands if o.guards]
    if len(operands) != 2 or len(picked) != 1:
        return res
    (s,) = picked
    (o,) = [x for x in operands if x is not s]
    spec = contraction.spec([s.vars, o.vars], res.vars)
    keep = condition(ctx, s.guards, s.vars, ranges)
    product, kw = res.node, {}
    if o.fresh:     # computed, not a view: once, named where it is checked
        ctx.masked += 1
        name = Name(f"_other_{ctx.masked}")
        product, kw = _replace(product, o.node, name), {"bind": o.node}
        o = Operand(name, o.vars, True)
    return Operand(ap("masked_product", product, Lit(spec), keep, s.node, o.node, **kw),
                   res.vars, True)


def _replace(node, old, new):
    """``node`` with every subtree equal to ``old`` replaced by ``new``."""
    if node == old:
        return new
    if isinstance(node, Op):
        return Op(node.op, tuple(_replace(a, old, new) for a in node.args))
    if isinstance(node, Apply):
        return Apply(node.op, tuple(_replace(a, old, new) for a in node.args),
                     tuple((k, _replace(v, old, new)) for k, v in node.kw))
    if isinstance(node, Index):
        return Index(_replace(node.base, old, new),
                     tuple(_replace(p, old, new) if isinstance(p, (Op, Apply, Index, Name))
                           else p for p in node.parts))
    if isinstance(node, Tup):
        return Tup(tuple(_replace(a, old, new) for a in node.items))
    return node


__all__ = ["triangle", "guarded", "exact"]
