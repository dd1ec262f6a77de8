"""Contractions: the product of a statement's operands summed over the
indices the result does not keep, as BLAS calls where one fits.

Two operands are a matrix product on views where their indices allow it
(``matmul``, a stacked ``matmul`` per batch position, or one GEMM over a
summed batch), else ``tensordot``; a product whose every step keeps an index
both sides share is one ``einsum`` loop; three or more operands are
``einsum`` along the path chosen once (``tcc.contraction``), or one einsum
loop where no step would reach BLAS.
"""

from __future__ import annotations

from tcc import contraction

from .operands import Operand, align, ap, has_index, mul
from .target import NEW, Index, Lit, Slice


def _sum_axes(op: Operand, lone) -> Operand:
    axes = tuple(op.vars.index(v) for v in lone)
    rest = tuple(v for v in op.vars if v not in lone)
    return Operand(ap("sum", op.node, axis=axes[0] if len(axes) == 1 else axes), rest, True)


def contract(ctx, operands: list[Operand], out: tuple[str, ...], ranges) -> Operand:
    """Contract operands, summing every index not in ``out``; result over out∩vars."""
    keep_all = set(out)
    ops = []
    for k, op in enumerate(operands):   # sum indices only one operand has inside it
        others = set().union(*(o.vars for j, o in enumerate(operands) if j != k)) \
            if len(operands) > 1 else set()
        lone = [v for v in op.vars if v not in keep_all and v not in others]
        ops.append(_sum_axes(op, lone) if lone and len(operands) > 1 else op)
    present = set().union(*(o.vars for o in ops)) if ops else set()
    res = tuple(v for v in out if v in present)
    if len(ops) == 1:
        op = ops[0]
        lone = [v for v in op.vars if v not in keep_all]
        if lone:
            op = _sum_axes(op, lone)
        return Operand(align(op.node, op.vars, res) if op.vars != res else op.node, res,
                       op.fresh)
    if len(ops) == 2:
        return _contract2(ops[0], ops[1], res)
    path = contraction.path([o.vars for o in ops], res, ranges)
    spec = contraction.spec([o.vars for o in ops], res)
    if contraction.one_loop(spec, path):
        path = None
    return Operand(ap("einsum", Lit(spec), *(o.node for o in ops), path=path), res, True)


def _t(node):
    return ap("transpose", node, perm=None)


def _contract2(a: Operand, b: Operand, res) -> Operand:
    shared = [v for v in a.vars if v in b.vars]
    summed = [v for v in shared if v not in res]
    batch = [v for v in shared if v in res]
    if not summed:
        prod = mul(align(a.node, a.vars, res), align(b.node, b.vars, res))
        return Operand(prod, res, True)
    if batch:
        stacked = _stacked_matmul(a, b, batch, summed, res)
        if stacked is not None:
            return stacked
        # a kept (batch) index shared and no matrix per batch: one einsum loop
        return Operand(ap("einsum", Lit(contraction.spec([a.vars, b.vars], res)), a.node,
                          b.node, path=None), tuple(res), True)
    af = tuple(v for v in a.vars if v not in summed)
    bf = tuple(v for v in b.vars if v not in summed)
    if len(summed) == 1 and len(a.vars) <= 2 and len(b.vars) <= 2:
        c = summed[0]
        # A as (free, c), B as (c, free): the result is over af + bf.
        if res == bf + af and af and bf:
            a, b, af, bf = b, a, bf, af
        left = a.node if a.vars[-1] == c else _t(a.node)
        right = b.node if b.vars[0] == c else _t(b.node)
        return Operand(ap("matmul", left, right), af + bf, True).aligned(res)
    # tensordot's result is over af + bf: put first the operand that keeps the
    # result's innermost index innermost, so what follows reads memory in order.
    if res and res[-1] in af and af and bf:
        a, b, af, bf = b, a, bf, af
    mm = _matmul_forms(a, b, summed, res)
    if mm is not None:
        return mm
    ia = tuple(a.vars.index(v) for v in summed)
    ib = tuple(b.vars.index(v) for v in summed)
    return Operand(ap("tensordot", a.node, b.node, axes=(ia, ib)), af + bf, True).aligned(res)


def _stacked_matmul(a: Operand, b: Operand, batch, summed, res) -> Operand | None:
    """A matrix product per position of the shared kept indices, as one
    stacked matmul (BLAS per matrix): both operands lead with the batch
    indices in one order and end in a free index and the summed one. Q[i, s, r]
    h[i, b, r] summed over r is matmul(Q, h^T) over i. Anything else (a dot
    product per row, as ab,ab->a) stays one einsum loop."""
    nb = len(batch)
    if len(summed) != 1 or a.vars[:nb] != tuple(batch) or b.vars[:nb] != tuple(batch) or \
            len(a.vars) != nb + 2 or len(b.vars) != nb + 2:
        return None
    c = summed[0]
    fa = next(v for v in a.vars[nb:] if v != c)
    fb = next(v for v in b.vars[nb:] if v != c)
    if fa == fb:
        return None
    left = a.node if a.vars[-1] == c else _swap_last(a.node, len(a.vars))
    right = b.node if b.vars[-2] == c else _swap_last(b.node, len(b.vars))
    return Operand(ap("matmul", left, right), tuple(batch) + (fa, fb), True).aligned(res)


def _matmul_forms(a: Operand, b: Operand, summed, res) -> Operand | None:
    """Contractions that matmul does on strided views without copying them
    (tensordot would reshape, and copy, a view that does not flatten):
    - a stack of matrices times one matrix: (..., n, c) @ (c, o);
    - a batch summed afterwards: (b, o, n) @ (b, n, c), then summed over b."""
    if len(summed) == 1:
        c = summed[0]
        for x, y in ((a, b), (b, a)):
            if len(x.vars) >= 3 and len(y.vars) == 2 and x.vars[-2] == c and \
                    x.vars[-1] not in y.vars:
                o = tuple(v for v in y.vars if v != c)
                left = y.node if y.vars[-1] == c else _t(y.node)
                if has_index(y.node):   # a strided slice: BLAS wants the small matrix contiguous
                    left = ap("contiguous", left)
                res_vars = x.vars[:-2] + o + (x.vars[-1],)
                return Operand(ap("matmul", left, x.node), res_vars, True).aligned(res)
            if x.vars[-1] == c and len(x.vars) >= 3 and len(y.vars) in (1, 2):
                o = tuple(v for v in y.vars if v != c)
                right = y.node if (y.vars[0] == c) else _t(y.node)
                if has_index(y.node):
                    right = ap("contiguous", right)
                return Operand(ap("matmul", x.node, right), x.vars[:-1] + o,
                               True).aligned(res)
    if a.vars[:2] == b.vars[:2] and set(a.vars[:2]) == set(summed) and \
            not has_index(a.node) and not has_index(b.node):
        return None     # whole arrays summed over their two leading axes: one GEMM
    if len(summed) == 2 and a.vars[0] == b.vars[0] and a.vars[0] in summed:
        bt = a.vars[0]
        c = next(v for v in summed if v != bt)
        ar, br = a.vars[1:], b.vars[1:]
        if c in ar and c in br and len(ar) <= 2 and len(br) <= 2:
            af = tuple(v for v in ar if v != c)
            bf = tuple(v for v in br if v != c)
            left = a.node if ar[-1] == c else _swap_last(a.node, len(a.vars))
            right = b.node if br[0] == c else _swap_last(b.node, len(b.vars))
            if not af:
                left = Index(left, (Slice(), NEW, Slice()))
            if not bf:
                right = Index(right, (Slice(), Slice(), NEW))
            node = ap("sum", ap("matmul", left, right), axis=0)
            if not af and not bf:
                node = Index(node, (Lit(0), Lit(0)))
            elif not af:
                node = Index(node, (Lit(0),))
            elif not bf:
                node = Index(node, (Slice(), Lit(0)))
            return Operand(node, af + bf, True).aligned(res)
    return None


def _swap_last(node, ndim: int):
    """Swap the last two axes (a view)."""
    return ap("transpose", node, perm=tuple(range(ndim - 2)) + (ndim - 1, ndim - 2))


__all__ = ["contract"]
