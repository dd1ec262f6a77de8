"""The ``numpy`` backend: matrix products on views, tensordot, and np.einsum
along the contraction path chosen at generation time."""

from .base import NUMPY_CODE, NUMPY_HELPERS, Backend

BACKEND = Backend("numpy", ["import numpy as np"], dict(NUMPY_CODE), "np", dict(NUMPY_HELPERS))
