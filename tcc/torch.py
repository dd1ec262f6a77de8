"""tcc layers in PyTorch: autograd adapters over the torch backend.

``function(text_or_path)`` is a callable taking tensors by name and returning
``{output: tensor}`` tracked by autograd; ``Module(text_or_path)`` is an
``nn.Module`` whose parameters are the program's ``param`` tensors. Both run
the generated torch module (``tcc.compile(..., backend="torch")``): its
forward in the ``torch.autograd.Function``'s forward, its backward (tcc's
derived and optimized backward, not the autograd tape) in the backward.

Gradient convention. A tcc program's param gradients are averaged over the
batch (LANGUAGE.md section 2: ``1/B`` times the summed gradient, the TTIC
convention). PyTorch's autograd gives the true derivative of whatever the
loss is, and leaves averaging to the loss (``.mean()``). So by default the
adapters compile the program with averaging off (``batch 1``): gradients are
exactly what torch would compute for the same loss, and a tcc layer mixes
with torch layers, optimizers and ``DistributedDataParallel`` (which itself
averages over processes) with no hidden factor. ``average=True`` keeps the
program's ``1/B`` on params (inputs' gradients are never averaged), for a loss
written as a sum over the batch that should train like a mean.

Only the tensors the backward reads are saved for it. torch is imported when
this module is, and only the adapters import this module: the rest of tcc
never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from . import compiler
from .ir import Decl, Program, is_grad, py_name
from .parse import parse as _parse_text
from .parse import read_source
from .pipeline import Pipeline

__all__ = ["function", "Module", "Function"]


def _without_averaging(program: Program) -> str:
    """The program's text with ``batch 1`` (a declared batch dim stays a dim)."""
    decls = []
    for d in program.decls:
        if d.role == "batch":
            if d.name != "1":
                decls.append(Decl("dim", d.name, None, d.pos))
            continue
        decls.append(d)
    decls.append(Decl("batch", "1", None, None))
    return str(replace(program, decls=tuple(decls)))


class _Spec:
    """One compiled program, with what the adapters need to know of it."""

    def __init__(self, text_or_path, average: bool, optimize: bool):
        text, filename = read_source(text_or_path)
        program = _parse_text(text, filename)         # errors point at the original
        if not average:
            text, filename = _without_averaging(program), None
        self.kernel = compiler.compile(text if filename is None else filename,
                                       backend="torch", optimize=optimize)
        p = Pipeline(text, filename, optimize)
        info = p.info
        self.info = info
        self.inputs = [py_name(t) for t in info.inputs]
        self.outputs = [py_name(o) for o in info.outputs]
        self.output_names = list(info.outputs)
        self.differentiable = [py_name(t) for t in info.differentiable]
        self.roles = {py_name(t): info.roles[t] for t in info.inputs}
        self.shapes = {py_name(t): tuple(info.shapes[t]) for t in info.inputs}
        # what the backward's code reads: forward inputs and saved values (not seeds)
        saved, reads, _ = compiler.backward_reads(p, "torch")
        self.reads = {py_name(t) for t in reads if not is_grad(t)}
        self.saved = [py_name(t) for t in saved]


class _Apply(torch.autograd.Function):
    """forward: the module's forward; backward: the module's backward."""

    @staticmethod
    def forward(ctx, spec: _Spec, names: tuple, *tensors):
        kw = dict(zip(names, tensors))
        fwd = spec.kernel.forward(**kw)
        outs = tuple(fwd[o] for o in spec.outputs)
        ctx.spec, ctx.names = spec, names
        # the backward needs every input's shape (its size checks), but reads the
        # values of only some: the others are kept as zero-stride stand-ins
        ctx.meta = {n: (t.dtype, t.device, t.shape) for n, t in kw.items()
                    if n not in spec.reads}
        kept = [n for n in names if n in spec.reads]
        ctx.kept = kept
        ctx.saved_names = [s for s in spec.saved if s not in spec.outputs]
        ctx.saved_outputs = [s for s in spec.saved if s in spec.outputs]
        ctx.save_for_backward(*(kw[n] for n in kept), *(fwd[s] for s in ctx.saved_names),
                              *(fwd[s] for s in ctx.saved_outputs))
        ctx.set_materialize_grads(False)
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_outputs):
        spec = ctx.spec
        values = ctx.saved_tensors
        n1, n2 = len(ctx.kept), len(ctx.kept) + len(ctx.saved_names)
        kw = dict(zip(ctx.kept, values[:n1]))
        kw.update(zip(ctx.saved_names, values[n1:n2]))
        kw.update(zip(ctx.saved_outputs, values[n2:]))
        for n, (dtype, device, shape) in ctx.meta.items():
            kw[n] = torch.zeros((), dtype=dtype, device=device).expand(shape)
        seeds = {o: g for o, g in zip(spec.output_names, grad_outputs) if g is not None}
        grads = spec.kernel.backward(seeds, **kw)
        out = [None, None]
        for n in ctx.names:
            if n in spec.differentiable and ctx.needs_input_grad[len(out)]:
                dtype = ctx.meta[n][0] if n in ctx.meta else kw[n].dtype
                out.append(grads[n].to(dtype))
            else:
                out.append(None)
        return tuple(out)


class Function:
    """A compiled program as an autograd-tracked callable:
    ``f(**tensors) -> {output: tensor}``."""

    def __init__(self, text_or_path, average: bool = False, optimize: bool = True):
        self.spec = _Spec(text_or_path, average, optimize)
        self.average = average

    @property
    def source(self) -> str:
        """The generated torch module's text."""
        return self.spec.kernel.source

    def __call__(self, **tensors) -> dict:
        spec = self.spec
        missing = [t for t in spec.inputs if t not in tensors]
        unknown = [t for t in tensors if t not in spec.inputs]
        if missing or unknown:
            raise ValueError(
                (f"missing tensor{'s' if len(missing) > 1 else ''} "
                 f"{', '.join(map(repr, missing))}" if missing else
                 f"unknown tensor{'s' if len(unknown) > 1 else ''} "
                 f"{', '.join(map(repr, unknown))}") + f"; it takes {', '.join(spec.inputs)}")
        names = tuple(spec.inputs)
        args = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
                for t in (tensors[n] for n in names)]
        outs = _Apply.apply(spec, names, *args)
        return dict(zip(spec.outputs, outs))

    def __repr__(self) -> str:
        return f"<tcc.torch.Function {', '.join(self.spec.inputs)} -> " \
               f"{', '.join(self.spec.outputs)}>"


def function(text_or_path, average: bool = False, optimize: bool = True) -> Function:
    """The program as a callable taking tensors by name and returning
    ``{output: tensor}``, differentiable by torch's autograd through tcc's
    backward. ``average=True`` keeps the program's batch averaging of param
    gradients (see the module's docstring)."""
    return Function(text_or_path, average, optimize)


def default_init(name: str, p: torch.Tensor) -> None:
    """Uniform in +-1/sqrt(fan_in), fan_in the product of every axis but the
    first (nn.Linear's bound); a vector or scalar param starts at zero."""
    if p.ndim < 2:
        torch.nn.init.zeros_(p)
        return
    fan_in = math.prod(p.shape[1:])
    bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    torch.nn.init.uniform_(p, -bound, bound)


class Module(torch.nn.Module):
    """A program as an ``nn.Module``: its ``param`` tensors are ``nn.Parameter``s
    (shapes from the declarations, sizes from ``sizes`` or, at the first call,
    from the tensors passed), and ``forward(**inputs_and_data)`` returns the
    outputs dict.

    ``init(name, parameter)`` fills a new parameter in place (default:
    ``default_init``); ``dtype`` and ``device`` are the parameters'.
    """

    def __init__(self, text_or_path, average: bool = False, optimize: bool = True,
                 init=default_init, dtype=None, device=None, **sizes):
        super().__init__()
        self.fn = Function(text_or_path, average, optimize)
        spec = self.fn.spec
        self.param_names = [t for t in spec.inputs if spec.roles[t] == "param"]
        self._init = init
        self._sizes = dict(sizes)
        for name in self.param_names:
            self.register_parameter(name, torch.nn.parameter.UninitializedParameter(
                device=device, dtype=dtype))
        if all(self._shape(n, {}) is not None for n in self.param_names):
            self._materialize({})

    def _shape(self, name, bound):
        out = []
        for entry in self.fn.spec.shapes[name]:
            if isinstance(entry, int):
                out.append(entry)
            elif entry in self._sizes:
                out.append(self._sizes[entry])
            elif entry in bound:
                out.append(bound[entry])
            else:
                return None
        return tuple(out)

    def _materialize(self, tensors):
        spec = self.fn.spec
        bound = {}
        for t, a in tensors.items():
            for entry, n in zip(spec.shapes.get(t, ()), getattr(a, "shape", ())):
                if isinstance(entry, str):
                    bound.setdefault(entry, int(n))
        for name in self.param_names:
            p = getattr(self, name)
            if not isinstance(p, torch.nn.parameter.UninitializedParameter):
                continue
            shape = self._shape(name, bound)
            if shape is None:
                free = [e for e in spec.shapes[name] if isinstance(e, str)
                        and e not in self._sizes and e not in bound]
                raise ValueError(f"param '{name}' has axis size {', '.join(free)} that no "
                                 f"tensor passed gives: pass {free[0]}=... to tcc.torch.Module")
            p.materialize(shape)
            with torch.no_grad():
                self._init(name, p)

    def forward(self, **tensors) -> dict:
        given = [n for n in self.param_names if n in tensors]
        if given:
            raise ValueError(f"{', '.join(map(repr, given))} is a parameter of the module, "
                             "not an argument")
        if any(isinstance(getattr(self, n), torch.nn.parameter.UninitializedParameter)
               for n in self.param_names):
            self._materialize(tensors)
        return self.fn(**tensors, **{n: getattr(self, n) for n in self.param_names})

    def extra_repr(self) -> str:
        spec = self.fn.spec
        return f"{', '.join(spec.inputs)} -> {', '.join(spec.outputs)}" + \
            (", average=True" if self.fn.average else "")
