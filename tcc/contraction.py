"""Contraction order, chosen once: opt_einsum's optimizer on index sets and
sizes known or assumed at generation time.

The optimizer's ``binarize`` pass (pairwise temporaries the backward reuses)
and the lowering (products it contracts whole) both ask here, so one product
is never ordered two ways. Sizes that are dims take ``NOMINAL_SIZE``: at
generation time only literal sizes are known.
"""

from __future__ import annotations

import opt_einsum as oe

NOMINAL_SIZE = 64
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def nominal(size) -> int:
    """A range's size for choosing an order: itself if a literal, else nominal."""
    return size if isinstance(size, int) else NOMINAL_SIZE


def spec(operands, output, order=None) -> str:
    """The einsum spec of index tuples, one letter per index (in ``order``, or
    in order of first appearance)."""
    order = list(order or [])
    for vs in [*operands, output]:
        order += [v for v in vs if v not in order]
    letter = {v: LETTERS[n] for n, v in enumerate(order)}
    return ",".join("".join(letter[v] for v in vs) for vs in operands) + "->" + \
        "".join(letter[v] for v in output)


def path(operands, output, sizes) -> list[tuple[int, ...]]:
    """opt_einsum's optimal pairwise order for contracting ``operands`` (index
    tuples) into ``output``; ``sizes`` maps each index to its range."""
    if len(operands) < 2:
        return [tuple(range(len(operands)))]
    shapes = [tuple(nominal(sizes[v]) for v in vs) for vs in operands]
    found, _ = oe.contract_path(spec(operands, output), *shapes, shapes=True,
                                optimize="optimal" if len(operands) <= 6 else "greedy")
    return [tuple(p) for p in found]


def blas_free(spec: str, path=None) -> bool:
    """Whether no pairwise step of ``spec`` along ``path`` (None: left to
    right) is one numpy or opt_einsum would hand to BLAS: each step keeps
    some index that both of its operands have (a product then a sum, as
    ``ab,a,ab->b``)."""
    ins, out = spec.split("->")
    ops = ins.split(",")
    for pair in path or [(0, 1)] * (len(ops) - 1):
        i, j = sorted(pair, reverse=True)
        a, b = ops[i], ops[j]
        rest = [o for k, o in enumerate(ops) if k not in (i, j)]
        keep = set(out).union(*rest) if rest else set(out)
        removed = (set(a) | set(b)) - keep
        if removed and not (set(a) & set(b) & keep):
            return False            # a true contraction: BLAS would take it
        res = "".join(c for c in dict.fromkeys(a + b) if c in keep)
        ops = rest + [res]
    return True


def one_loop(spec: str, path) -> bool:
    """Whether einsum's single C loop beats the pairwise path: a BLAS-free
    product of at most three operands. The pairwise path then only adds
    temporaries, and numpy may lay one out transposed: at 1024 x 1024,
    ``ab,a,ab->b`` took 5.7 ms along its path and 0.6 ms in one loop. With
    four or more operands the single loop is the slow one (2.9 ms against
    0.8 for ``ab,a,b,ab->a``)."""
    return spec.count(",") <= 2 and blas_free(spec, path)


__all__ = ["NOMINAL_SIZE", "nominal", "spec", "path", "blas_free", "one_loop"]
