"""The ``opt_einsum`` backend: contractions of shared indices and of three or
more operands go through ``oe.contract_expression``, built once per shape
signature; two-operand matrix products stay direct BLAS calls."""

from .lower import Operand, einsum_spec

NAME = "opt_einsum"
IMPORTS = ["import numpy as np", "import opt_einsum as oe"]


def contract_batched(ctx, ops, res):
    ctx.helpers.add("_contract")
    return Operand(f"_contract('{einsum_spec(ops, res)}', "
                   f"{', '.join(o.code for o in ops)})", tuple(res), True)


def contract_many(ctx, ops, res):
    ctx.helpers.add("_contract")
    return Operand(f"_contract('{einsum_spec(ops, res)}', {', '.join(o.code for o in ops)})",
                   tuple(res), True)
