"""Causal sums as running sums: a term summed over ``j`` whose only index
comparison is ``(j <= t)``, ``(j < t)``, ``(j >= t)`` or ``(j > t)``, with
``t`` a target index of the same range that the rest of the term does not
use, is a cumulative sum over ``j``, read at ``t``:

    for t, j, d: y[t, d] += x[j, d] * (j <= t)      y = np.cumsum(x, axis=0)
    for t, j, d: y[t, d] += x[j, d] * (j < t)       the same over x shifted down a step
    for t, j: g[j] += y.grad[t] * (j <= t)          a cumulative sum from the end (np.flip)

This does O(T) work where the select over a T x T mask times the rest is
O(T^2), and never meets the masked terms at all (an inf or nan at a masked
position cannot reach the sum, as the contract asks). The rest of the term is
contracted first over its other summed indices.
"""

from __future__ import annotations

from tcc.ir import Affine, IndexCmp

from .contractions import contract
from .operands import Context, Operand, ap, expr_vars, is_guard, mul
from .products import product_operands
from .target import Index, Lit, Slice, Tup
from .triangular import exact, triangle

# triangle(c, rows=t, cols=j) -> (running sum from the end?, shifted by a step?)
_FORMS = {("tril", 0): (False, False),      # j <= t
          ("tril", -1): (False, True),      # j < t
          ("triu", 0): (True, False),       # j >= t
          ("triu", 1): (True, True)}        # j > t


def _along(axis: int, part) -> tuple:
    return (Slice(),) * axis + (part,)


def prefix_sum(ctx: Context, factors, tvars_order, summed, loops, ranges):
    """(scalar, operand over the target's indices, the indices it covers) for
    one term's factors when it is a causal sum (see the module); else None."""
    guards = [f for up, f in factors if is_guard(up, f)]
    if len(guards) != 1 or not isinstance(guards[0], IndexCmp) or len(guards[0].vars) != 2:
        return None
    g = guards[0]
    rest = [(up, f) for up, f in factors if f is not g]
    for t, j in (g.vars, g.vars[::-1]):     # j summed out into a running sum over t
        form = _FORMS.get(triangle(g, t, j))
        if form is None or j not in summed or ranges.get(t) != ranges.get(j):
            continue
        group = [(up, f) for up, f in rest if j in expr_vars(f)]
        others = [(up, f) for up, f in rest if j not in expr_vars(f)]
        if not group or any(t in expr_vars(f) for _, f in group):
            continue
        return _running(ctx, t, j, form, group, others, tvars_order, loops, ranges)
    return None


def _running(ctx: Context, t, j, form, group, others, tvars_order, loops, ranges):
    backwards, shifted = form
    wanted = set(tvars_order).union(*(expr_vars(f) for _, f in others))
    # the group's result over j where t will be (no transpose when t is a target index)
    order = tuple(j if v == t else v for v in tvars_order)
    order += tuple(v for v in loops if v not in order and v != t)
    scalar, operands = product_operands(ctx, group, loops, ranges)
    res = contract(ctx, operands, tuple(v for v in order if v in wanted or v == j), ranges)
    axis = res.vars.index(j)
    node = res.node
    if shifted:         # the term at j - 1 (j + 1 from the end), 0 past the edge
        widths = tuple(Tup((Lit(0), Lit(0))) if a != axis else
                       Tup((Lit(0), Lit(1)) if backwards else (Lit(1), Lit(0)))
                       for a in range(len(res.vars)))
        part = Slice(Lit(1), None) if backwards else Slice(None, ctx.var_size(ranges, j))
        node = Index(ap("pad", node, Tup(widths)), _along(axis, part))
    if backwards:
        node = ap("flip", ap("cumsum", ap("flip", node, axis=axis), axis=axis), axis=axis)
    else:
        node = ap("cumsum", node, axis=axis)
    # shifted, the first step (from the end, the last) sums no term: 0 there even
    # where what multiplies it is inf or nan (exact, below)
    running = Operand(node, tuple(t if v == j else v for v in res.vars), True,
                      (_first_term(t, backwards, ranges),) if shifted else ())
    more, rest_ops = product_operands(ctx, others, loops, ranges) if others else (None, [])
    if more is not None:
        scalar = more if scalar is None else mul(scalar, more)
    res = contract(ctx, rest_ops + [running], tvars_order, ranges)
    res = exact(ctx, rest_ops + [running], res, ranges)
    present = {j}.union(*(o.vars for o in operands + rest_ops + [running]))
    return scalar, res, present


def _first_term(t: str, backwards: bool, ranges) -> IndexCmp:
    """Where a shifted running sum over t has a term: ``t >= 1`` (from the end,
    ``t + 1 < T``)."""
    if not backwards:
        return IndexCmp(">=", Affine(((t, 1),)), Affine((), 1))
    n = ranges[t]
    size = Affine((), n) if isinstance(n, int) else Affine((), 0, ((n, 1),))
    return IndexCmp("<", Affine(((t, 1),), 1), size)


__all__ = ["prefix_sum"]
