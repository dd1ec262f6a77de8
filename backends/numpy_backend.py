"""The ``numpy`` backend: matrix products, tensordot, and np.einsum with a
contraction path chosen once per shape signature."""

from .lower import Operand, einsum_spec

NAME = "numpy"
IMPORTS = ["import numpy as np"]


def contract_batched(ctx, ops, res):
    """Two operands sharing a kept (batch) index: one einsum loop, no BLAS."""
    return Operand(f"np.einsum('{einsum_spec(ops, res)}', "
                   f"{', '.join(o.code for o in ops)})", tuple(res), True)


def contract_many(ctx, ops, res):
    """Three or more operands: pairwise BLAS contractions along a cached path."""
    ctx.helpers.add("_einsum")
    return Operand(f"_einsum('{einsum_spec(ops, res)}', {', '.join(o.code for o in ops)})",
                   tuple(res), True)
