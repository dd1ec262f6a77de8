"""The ``numpy`` backend: matrix products on views, tensordot, and np.einsum
along the contraction path chosen at generation time."""

from .base import NUMPY_CODE, NUMPY_HELPERS, NUMPY_OP_IMPORTS, Backend

BACKEND = Backend("numpy", ["import numpy as np"], dict(NUMPY_CODE), "np", dict(NUMPY_HELPERS),
                  op_imports=dict(NUMPY_OP_IMPORTS), row_blocks=True)
