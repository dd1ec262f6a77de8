"""A product's factors as the operands of its contraction, and where its
scalar and its factors over the result's indices are applied.

Each factor that is not a plain read is folded into another factor whose
indices contain its own (computed once, elementwise, over that one's
indices); two plain reads stay separate operands, which the contraction
multiplies and sums without building their product (``contractions.py``).
``product_parts`` also places the factors where they cost least
(``elements``): attention's ``0.125`` scales Q (N x D) before ``Q @ K^T``,
not the N x N scores, and its ``1 / Z`` the N x E result of ``P @ V``, not
the N x N weights P.
"""

from __future__ import annotations

from tcc import algebra
from tcc.contraction import nominal
from tcc.ir import Ref

from .operands import (Operand, elementwise, expr_vars, factor_value, is_guard, mul, ordered,
                       read_operand)
from .target import Op


def _is_plain_read(fs) -> bool:
    """One tensor read, with (or without) index comparisons selecting it."""
    fs = [(up, f) for up, f in fs if not is_guard(up, f)]
    return len(fs) == 1 and fs[0][0] and isinstance(fs[0][1], Ref)


def product_operands(ctx, factors, loops, ranges) -> tuple[object, list[Operand]]:
    """(scalar value or None, operands) for one product's factors."""
    scalar, operands, _ = product_parts(ctx, factors, loops, ranges)
    return scalar, operands


def elements(vs, ranges, loops) -> int:
    """An estimate of the size of an array over the indices ``vs``, to place a
    factor on the smallest array that carries it: literal ranges as they are,
    a dim at ``contraction.NOMINAL_SIZE``, and twice that for a dim two or more
    of the statement's indices range over. Sizes are unknown at generation; a
    dim the statement pairs with itself (attention's N x N scores against their
    N x 64 operands) is taken as the long one."""
    syms = [ranges[v] for v in loops if not isinstance(ranges[v], int)]
    out = 1
    for v in vs:
        r = ranges[v]
        out *= nominal(r) * (2 if syms.count(r) > 1 else 1)
    return out


def _empty_means_empty(out, loops, ranges) -> bool:
    """Whether an empty sum leaves nothing to compute: every summed index
    ranges over a positive literal or a dim some kept index ranges over too.
    (A factor moved past the sum multiplies its zeros: inf * 0 would be nan
    where the program's update never runs.)"""
    kept = {ranges[v] for v in out}
    return all(ranges[v] in kept or (isinstance(ranges[v], int) and ranges[v] > 0)
               for v in loops if v not in out)


def product_parts(ctx, factors, loops, ranges, out=None):
    """(scalar value or None, operands, post) for one product's factors.

    With ``out`` (the result's indices) given, factors go where they cost
    least: the scalar multiplies the smallest operand when one is smaller than
    the result (``0.125 * Q`` before ``Q @ K^T``, not the N x N product), and a
    factor over the result's indices that would be folded into a larger
    operand is left in ``post``, (up, factor) pairs the caller applies to the
    contraction's result (``(P @ V) / Z``, not ``P / Z @ V``). Never in a
    product with a selecting index comparison (the select must see every
    factor), nor where an empty sum would meet a moved factor."""
    scalars, groups = [], []       # groups: [vars, factors]
    for up, f in factors:
        vs = expr_vars(f)
        if not vs:
            scalars.append((up, f))
            continue
        groups.append([ordered(vs, loops), [(up, f)]])
    present = set().union(*(vs for vs, _ in groups))
    res = ordered(set(out) & present, loops) if out is not None else None
    movable = res is not None and not any(is_guard(up, f) for up, f in factors) and \
        _empty_means_empty(out, loops, ranges)
    post = []
    # Fold each factor into another whose indices contain its own.
    merged = True
    while merged:
        merged = False
        for i, (vi, fi) in enumerate(groups):
            hosts = [j for j, (vj, _) in enumerate(groups) if j != i and set(vi) <= set(vj)]
            if not hosts:
                continue
            # prefer a host that is already computed (not a bare read), then the smallest
            hosts.sort(key=lambda j: (_is_plain_read(groups[j][1]), len(groups[j][0])))
            j = hosts[0]
            # two plain reads stay separate operands: a contraction (BLAS or
            # einsum) multiplies and sums them without building their product
            if _is_plain_read(fi) and _is_plain_read(groups[j][1]):
                continue
            if movable and set(vi) <= set(res) and \
                    elements(res, ranges, loops) < elements(groups[j][0], ranges, loops):
                post += fi          # the result is smaller than its host: scale that
            else:
                groups[j][1] = groups[j][1] + fi
            groups.pop(i)
            merged = True
            break
    if scalars and out is not None and groups and all(v in present for v in loops):
        # the scalar on the smallest operand, where one is smaller than the result
        # (not where the caller multiplies by the count of a summed index no
        # factor reads: with that count 0, 1 / B on an operand would be inf * 0)
        k = min(range(len(groups)), key=lambda k: elements(groups[k][0], ranges, loops))
        if elements(groups[k][0], ranges, loops) < elements(res, ranges, loops):
            groups[k][1] = [(up, f) for up, f in scalars if not (up and algebra.fold(f) == 1)] \
                + groups[k][1]
            scalars = []
    operands = []
    for vs, fs in groups:
        if _is_plain_read(fs) and len(fs) == 1:
            operands.append(read_operand(ctx, fs[0][1], ranges))
        else:
            guards = tuple(f for up, f in fs if is_guard(up, f))
            operands.append(Operand(factor_value(ctx, fs, vs, ranges), vs, True, guards))
    scalar = factor_value(ctx, scalars, (), ranges) if scalars else None
    return scalar, operands, post


def scaled(ctx, node, post, order, ranges):
    """``node`` (over ``order``) times and divided by the factors ``post``."""
    for up, f in post:
        val = elementwise(ctx, f, order, ranges)
        node = mul(node, val) if up else Op("/", (node, val))
    return node


__all__ = ["product_operands", "product_parts", "scaled", "elements"]
