"""The Python API: the stages one by one, and the conveniences built on them."""

from __future__ import annotations

import numpy as np

from . import _rt, gradcheck, interp
from .autodiff import differentiate as _differentiate
from .check import Info, analyze
from .errors import TccError
from .ir import base_name, is_grad, Decl, Program, grad_name, reads
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


# ----------------------------------------------------------- hand-written

def complete_backward(forward: Info, text: str, filename: str | None) -> Program:
    """A hand-written backward whose declarations may be omitted: resolve its
    names against the forward program (forward tensors and seeds as data, the
    inputs' and params' gradients as outputs)."""
    user = _parse_text(text, filename, known_dims=forward.dims)
    declared = {d.name for d in user.decls}
    computed = {s.target.tensor for s in user.stmts}
    decls = list(user.decls)
    if not any(d.role == "dim" for d in decls):
        decls = [Decl("dim", d) for d in forward.dims] + decls
    seen = set()
    for s in user.stmts:
        names = [r.tensor for r in reads(s.expr)]
        names += [ix.tensor for r in [s.target, *reads(s.expr)] for ix in r.index
                  if hasattr(ix, "tensor")]
        for t in names:
            if t in declared or t in computed or t in seen:
                continue
            base = base_name(t)
            if base in forward.roles and (t == base or base in forward.outputs):
                shape = forward.shapes.get(base, ())
                decls.append(Decl("data", t, tuple(shape) or None))
                seen.add(t)
    for t in forward.differentiable:
        g = grad_name(t)
        if g in computed and g not in declared:
            shape = forward.shapes.get(t, ())
            decls.append(Decl("output", g, tuple(shape) or None))
    return Program(tuple(decls), user.stmts)


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


def check(text_or_path, sizes: dict | None = None, seed: int = 0,
          backward: str | None = None, engine: str = "compiled") -> gradcheck.Report:
    """``tcc check``: the backward's gradients against finite differences.

    The gradients come from the compiled (optimized) module, or from a
    hand-written ``backward`` program; the finite differences from the
    forward as written (compiled without optimization; ``engine="interp"``
    uses the reference interpreter for both).
    """
    from .compiler import Kernel, compile as compile_kernel
    from .ir import py_name

    prog, text, filename = load(text_or_path)
    info = _checked(prog, text, filename)
    chosen = gradcheck.choose_sizes(info, sizes)
    inputs = gradcheck.random_inputs(info, chosen, seed)
    kw = {py_name(t): a for t, a in inputs.items()}
    plain = compile_kernel(text, optimize=False) if engine == "compiled" else None

    def forward_all(tensors):
        if plain is None:
            return interp.run(info, tensors)
        out = plain.forward(**{py_name(t): a for t, a in tensors.items()})
        return {t: out[py_name(t)] for t in info.computed}

    saved = forward_all(inputs)
    seeds = gradcheck.random_seeds(info, saved, seed)
    if backward is not None:
        btext, bname = read_source(backward)
        bprog = complete_backward(info, btext, bname)
        try:
            binfo = analyze(bprog)
        except TccError as err:
            raise err.attach(bname, btext) from None
        data = {}
        for t in binfo.inputs:
            if is_grad(t) and base_name(t) in seeds:
                data[t] = seeds[base_name(t)]
            else:
                data[t] = inputs[t] if t in inputs else saved[t]
        if engine == "compiled":
            bk = Kernel(generate_plain(bprog), "backward")
            out = bk.forward(**{py_name(t): a for t, a in data.items()})
            grads = {t: out.get(py_name(grad_name(t))) for t in info.differentiable}
        else:
            out = interp.run(binfo, data)
            grads = {t: out.get(grad_name(t)) for t in info.differentiable}
    elif engine == "compiled":
        k = compile_kernel(text, optimize=True)
        fwd = k.forward(**kw)
        grads = k.backward(seeds, **kw, **fwd)
    else:
        grads = InterpEngine(info, _differentiate(info)).backward(seeds, inputs, saved)

    def forward_outputs(tensors):
        out = forward_all(tensors)
        return {o: out[o] for o in info.outputs}

    return gradcheck.finite_difference_check(info, forward_outputs, grads, inputs, seeds,
                                             chosen)


def generate_plain(program: Program) -> str:
    """Module source for an already-parsed program (no optimization)."""
    from .compiler import generate
    from .pipeline import Pipeline
    return generate(Pipeline(str(program), None, optimize=False), "numpy")


__all__ = ["differentiate", "optimize", "grad_text", "check", "load", "np"]
