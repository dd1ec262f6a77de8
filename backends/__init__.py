"""Code generators, one per target: each prints the target IR (``target.py``)
that the lowering (``lower.py``) makes of a checked program, from its table
(``base.Backend``). Installed as ``tcc.backends``.

``REGISTRY`` is the one list of backends, for the compiler and the CLI.
"""

from __future__ import annotations

import importlib

# name -> the module that defines its BACKEND (imported when first used, so an
# optional backend's library is imported only by those who ask for it)
REGISTRY = {"numpy": "numpy_backend", "opt_einsum": "opt_einsum_backend",
            "torch": "torch_backend"}


def get(name: str):
    """The backend called ``name``; a ValueError listing the choices otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(REGISTRY)}")
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}").BACKEND


__all__ = ["REGISTRY", "get"]
