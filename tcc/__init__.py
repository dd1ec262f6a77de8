"""tcc: a tensor-contraction compiler for einsum-style loop programs.

    import tcc
    k = tcc.compile("softmax.loop")          # or the program text
    fwd = k.forward(s=s)
    g = k.backward({"p": dp}, s=s, **fwd)

The stages are exposed one by one: parse, analyze, differentiate, optimize,
lower.
"""

from __future__ import annotations

import os as _os

# In a source checkout (tests run without installing), grammar/ and backends/
# sit beside tcc/ rather than inside it: let the package find them there.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "grammar")) and \
        _os.path.isfile(_os.path.join(_root, "grammar", "loop.lark")):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821

__version__ = "0.1.0"

# Importing a submodule for the first time binds it as an attribute of the
# package: ``tcc/parse.py`` and ``tcc/optimize.py`` would then shadow the
# functions ``tcc.parse`` and ``tcc.optimize`` below. Load them here, before
# those functions are defined, so no later import rebinds the names.
from . import optimize as _optimize_module  # noqa: E402,F401
from . import parse as _parse_module  # noqa: E402,F401
from .errors import TccError  # noqa: E402
from .ir import Program  # noqa: E402
from .parse import parse as _parse_text  # noqa: E402
from .parse import read_source  # noqa: E402


def parse(text_or_path, filename: str | None = None) -> Program:
    """Parse a .loop program (text, or a path to a .loop file) into the IR."""
    text, fname = read_source(text_or_path)
    return _parse_text(text, filename or fname)


from .api import (check, differentiate, grad_text, hessian_text, hvp_text,  # noqa: E402
                  jvp_text, optimize)
from .check import analyze  # noqa: E402
from .compiler import Kernel, compile, compile_source  # noqa: E402,A004


def lower(program, backend: str = "numpy", optimize: bool = True) -> str:
    """The generated module's source for a program (IR, text or path)."""
    if isinstance(program, Program):
        program = str(program)
    return compile_source(program, backend=backend, optimize=optimize)


__all__ = ["TccError", "Program", "Kernel", "parse", "analyze", "differentiate", "optimize",
           "lower", "compile", "compile_source", "grad_text", "jvp_text", "hvp_text",
           "hessian_text", "check", "__version__"]
