"""The Python API: the stages one by one, and the conveniences built on them."""

from __future__ import annotations

import numpy as np

from . import _rt, interp
from .autodiff import differentiate as _differentiate
from .check import Info, analyze
from .errors import TccError
from .ir import base_name, is_grad, Program, grad_name
from .parse import parse as _parse_text
from .parse import read_source


def load(text_or_path) -> tuple[Program, str, str | None]:
    text, filename = read_source(text_or_path)
    return _parse_text(text, filename), text, filename


def _checked(program: Program, text: str, filename: str | None) -> Info:
    try:
        return analyze(program)
    except TccError as err:
        raise err.attach(filename, text) from None


def differentiate(program: Program | str) -> Program:
    """The backward program of a forward program (IR or text or path)."""
    if not isinstance(program, Program):
        prog, text, filename = load(program)
        return _differentiate(_checked(prog, text, filename))
    return _differentiate(analyze(program))


def optimize(program: Program) -> Program:
    """The optimized forward program: what the compiled forward computes."""
    from .optimize import optimize as optimize_forward_program
    return optimize_forward_program(program)


def grad_text(text_or_path, optimize: bool = True) -> str:
    """What ``tcc grad`` prints: the backward as a complete, runnable program,
    the one the compiled module runs (it reads what ``forward()`` returns)."""
    from .pipeline import Pipeline
    text, filename = read_source(text_or_path)
    return str(Pipeline(text, filename, optimize).backward)


def _derived(kind: str, text_or_path, optimize: bool):
    from . import forward
    text, filename = read_source(text_or_path)
    program = _parse_text(text, filename)
    try:
        build = {"jvp": forward.jvp, "hvp": forward.hvp,
                 "hessian": forward.hessian_diagonal}[kind]
        return build(analyze(program), optimize=optimize)
    except TccError as err:
        raise err.attach(filename, text) from None


_ZERO = {
    "jvp": "# every output's tangent is 0: no output depends on an input or param",
    "hvp": "# every H v is 0: the outputs are linear (or piecewise linear) in the inputs "
           "and params",
    "hessian": "# the diagonal Hessian is 0: the outputs are linear (or piecewise linear) in "
               "the inputs and params",
}


def _text_of(kind: str, text_or_path, optimize: bool) -> str:
    derived = _derived(kind, text_or_path, optimize)
    out = str(derived.program)
    if not derived.results:
        out += _ZERO[kind] + "\n"
    return out


def jvp_text(text_or_path, optimize: bool = True) -> str:
    """What ``tcc jvp`` prints: the tangent program, ``Y.dot`` for every output
    from ``X.dot`` for every input and param, reading the forward's values."""
    return _text_of("jvp", text_or_path, optimize)


def hvp_text(text_or_path, optimize: bool = True) -> str:
    """What ``tcc hvp`` prints: ``X.grad.dot`` (H v, with the gradient's 1/B for
    params) for every input and param, by forward mode over the backward."""
    return _text_of("hvp", text_or_path, optimize)


def hessian_text(text_or_path, optimize: bool = True, diagonal: bool = True) -> str:
    """What ``tcc hessian --diagonal`` prints: ``X.hess``, the diagonal of the
    second derivative by the Becker-LeCun recursion (off-diagonal terms
    neglected), for every input and param."""
    if not diagonal:
        raise ValueError("only the diagonal Hessian is printed (diagonal=True); for "
                         "products with the full Hessian use hvp_text")
    return _text_of("hessian", text_or_path, optimize)


# ------------------------------------------------------------- engines

def backward_data(binfo: Info, seeds: dict, tensors: dict, saved: dict) -> dict:
    """What a backward program takes: each ``X.grad`` of an output X from the
    seeds, every other input from the forward's ``tensors`` or, failing that,
    from the values it computed (``saved``)."""
    def value(t):
        if is_grad(t) and base_name(t) in seeds:
            return seeds[base_name(t)]
        for source in (tensors, saved):
            if t in source:
                return source[t]
        raise ValueError(f"the backward reads '{t}', which is neither an input nor a "
                         "value the forward computes")
    return {t: value(t) for t in binfo.inputs}


class InterpEngine:
    """Forward and backward by the reference interpreter."""

    def __init__(self, info: Info, backward: Program):
        self.info = info
        self.backward_program = backward
        self.binfo = analyze(backward)

    def forward(self, tensors: dict) -> dict:
        return interp.run(self.info, tensors)

    def backward(self, seeds: dict, tensors: dict, saved: dict) -> dict:
        out = interp.run(self.binfo, backward_data(self.binfo, seeds, tensors, saved))
        dtype = _rt.computation_dtype({t: np.asarray(tensors[t]) for t in self.info.differentiable})
        # zeros where no output depends on a tensor, as the compiled backward gives
        return {t: out[grad_name(t)] if grad_name(t) in out
                else np.zeros(np.shape(tensors[t]), dtype=dtype)
                for t in self.info.differentiable}


def generate_plain(program: Program) -> str:
    """Module source for an already-parsed program (no optimization)."""
    from .compiler import generate
    from .pipeline import Pipeline
    return generate(Pipeline(str(program), None, optimize=False), "numpy")


from .grader import check, complete_backward  # noqa: E402

__all__ = ["differentiate", "optimize", "grad_text", "jvp_text", "hvp_text", "hessian_text",
           "check", "load", "complete_backward", "np"]
