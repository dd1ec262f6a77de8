"""The ``opt_einsum`` backend: contractions of shared indices and of three or
more operands go through opt_einsum's ``contract_expression`` (built once
per shape signature, along the path chosen at generation time); matrix
products stay direct BLAS calls, as in the numpy backend."""

from .base import literal
from .numpy_backend import BACKEND as NUMPY


def _contract(p, spec, *args, path=None):
    if path is None:        # one loop, no BLAS: einsum's own C loop
        return f"np.einsum({p.expr(spec)}, {', '.join(p.expr(a) for a in args)})"
    p.used.add("contract")
    return (f"_contract({p.expr(spec)}, {literal(path)}, "
            f"{', '.join(p.expr(a) for a in args)})")


BACKEND = NUMPY.extend("opt_einsum", code={"einsum": (_contract, 9)},
                       helpers={"contract": ("_contract",)},
                       op_imports={"contract": ("import opt_einsum as oe",)},
                       requires="NumPy and opt_einsum", row_blocks=True)
