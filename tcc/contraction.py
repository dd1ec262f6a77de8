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


__all__ = ["NOMINAL_SIZE", "nominal", "spec", "path"]
