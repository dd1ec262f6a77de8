"""Checking forward mode and Hessian-vector products against central finite
differences, on random directions: the JVP against differences of the
forward, the HVP against differences of the compiled backward.

``run_jvp`` and ``run_hvp`` run the printed programs (``tcc jvp``, ``tcc hvp``)
with the reference interpreter on the forward's values, exactly as a user
would run them; ``check`` is ``tcc check --second-order``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _rt, gradcheck, interp
from .check import Info, analyze
from .forward import Derived
from .ir import grad_name, is_grad, shape_owner, tangent_name

H = 1e-5            # step of the central differences (errors O(h^2) and eps / h)
TOLERANCE = 1e-6


def program_data(derived: Derived, inputs: dict, values: dict, dirs: dict,
                 seeds: dict | None = None) -> dict:
    """What a printed derived program takes: directions ``X.dot``, seeds
    ``Y.grad``, the forward's inputs and its computed values."""
    pinfo = analyze(derived.program)
    data = {}
    for t in pinfo.inputs:
        if t.endswith(".dot") and shape_owner(t) in dirs:
            data[t] = dirs[shape_owner(t)]
        elif is_grad(t) and seeds is not None and shape_owner(t) in seeds:
            data[t] = seeds[shape_owner(t)]
        elif t in inputs:
            data[t] = inputs[t]
        elif t in values:
            data[t] = values[t]
        else:
            raise ValueError(f"the derived program reads '{t}', which is neither an input, a "
                             "direction, a seed nor a value the forward computes")
    return data


def _results(derived: Derived, out: dict, shapes: dict) -> dict:
    return {plain: out[name] if name in out else np.zeros(shapes[plain])
            for name, plain in derived.results.items()}


def run_jvp(derived: Derived, inputs: dict, dirs: dict) -> dict:
    """{output: its tangent} by the printed tangent program."""
    info = derived.forward
    values = interp.run(info, inputs)
    out = interp.run(analyze(derived.program), program_data(derived, inputs, values, dirs))
    res = _results(derived, out, {o: np.shape(values[o]) for o in info.outputs})
    return {o: res.get(o, np.zeros(np.shape(values[o]))) for o in info.outputs}


def run_hvp(derived: Derived, inputs: dict, seeds: dict, dirs: dict) -> dict:
    """{input or param: H v} by the printed HVP program."""
    info = derived.forward
    values = interp.run(info, inputs)
    out = interp.run(analyze(derived.program),
                     program_data(derived, inputs, values, dirs, seeds))
    res = {shape_owner(n): out[n] for n in derived.results if n in out}
    return {t: res.get(t, np.zeros(np.shape(inputs[t]))) for t in info.differentiable}


def run_hessian(derived: Derived, inputs: dict, seeds: dict) -> dict:
    """{input or param: its diagonal Hessian (the recursion's)}."""
    info = derived.forward
    values = interp.run(info, inputs)
    out = interp.run(analyze(derived.program),
                     program_data(derived, inputs, values, {}, seeds))
    res = {shape_owner(n): out[n] for n in derived.results if n in out}
    return {t: res.get(t, np.zeros(np.shape(inputs[t]))) for t in info.differentiable}


def directions(info: Info, inputs: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed + 2)
    return {t: rng.standard_normal(np.shape(inputs[t])) for t in info.differentiable}


def along(inputs: dict, dirs: dict, eps: float) -> dict:
    return {t: (a + eps * dirs[t] if t in dirs else a) for t, a in inputs.items()}


def fd_jvp(forward, inputs: dict, dirs: dict, h: float = H) -> dict:
    """Central differences of ``forward(tensors) -> {output: array}`` along dirs."""
    with np.errstate(all="ignore"):
        up, down = forward(along(inputs, dirs, h)), forward(along(inputs, dirs, -h))
    return {o: (np.asarray(up[o]) - np.asarray(down[o])) / (2 * h) for o in up}


def fd_hvp(gradient, inputs: dict, dirs: dict, h: float = H) -> dict:
    """Central differences of ``gradient(tensors) -> {input/param: array}``."""
    with np.errstate(all="ignore"):
        up, down = gradient(along(inputs, dirs, h)), gradient(along(inputs, dirs, -h))
    return {t: (np.asarray(up[t]) - np.asarray(down[t])) / (2 * h) for t in up}


def rel_error(got, want) -> float:
    """Worst |got - want| over the largest |want| (1 where want is all zero)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return float("inf")
    if not want.size:
        return 0.0
    scale = max(float(np.max(np.abs(want))), 1e-8)
    with np.errstate(invalid="ignore"):
        err = float(np.max(np.abs(got - want))) / scale
    return err if err == err else float("inf")


@dataclass
class Row:
    kind: str           # "jvp" or "hvp"
    name: str           # the output (jvp) or input/param (hvp)
    shape: tuple
    error: float

    @property
    def ok(self) -> bool:
        return self.error < TOLERANCE


def check(text_or_path, sizes=None, seed: int = 0, seeds: int = 3, backend="numpy",
          data=None) -> list[Row]:
    """``tcc check --second-order``: the printed JVP against central differences
    of the forward, the printed HVP against central differences of the compiled
    backward, at ``seeds`` draws of inputs, seeds and directions. Returns the
    worst error per tensor."""
    from . import api
    from .compiler import compile as compile_kernel
    from .forward import hvp, jvp
    from .ir import py_name
    from .parse import read_source
    text, filename = read_source(text_or_path)
    prog, _, _ = api.load(text_or_path)
    info = api._checked(prog, text, filename)
    kernel = compile_kernel(text_or_path, backend=backend)
    dj, dh = jvp(info), hvp(info)
    chosen = gradcheck.choose_sizes(info, sizes)
    worst: dict = {}

    def forward(tensors):
        out = kernel.forward(**{py_name(t): a for t, a in tensors.items()})
        return {o: out[py_name(o)] for o in info.outputs}

    for n in range(seed, seed + seeds):
        inputs = gradcheck.random_inputs(info, chosen, n, data)
        outs = forward(inputs)
        grad_seeds = gradcheck.random_seeds(info, outs, n)
        dirs = directions(info, inputs, n)

        def gradient(tensors, grad_seeds=grad_seeds):
            fwd = kernel.forward(**{py_name(t): a for t, a in tensors.items()})
            return kernel.backward(grad_seeds, **{py_name(t): a for t, a in tensors.items()},
                                   **fwd)

        got = run_jvp(dj, inputs, dirs)
        want = fd_jvp(forward, inputs, dirs)
        for o in info.outputs:
            key = ("jvp", o)
            worst[key] = max(worst.get(key, 0.0), rel_error(got[o], want[o]))
        got = run_hvp(dh, inputs, grad_seeds, dirs)
        want = fd_hvp(gradient, inputs, dirs)
        for t in info.differentiable:
            key = ("hvp", t)
            worst[key] = max(worst.get(key, 0.0), rel_error(got[t], want[t]))
    shapes = {**{o: np.shape(outs[o]) for o in info.outputs},
              **{t: np.shape(inputs[t]) for t in info.differentiable}}
    return [Row(k, t, shapes[t], e) for (k, t), e in worst.items()]


def format_rows(rows: list[Row], sizes: dict, draws: int = 1) -> str:
    lines = [f"{'result':<18} {'shape':<14} {'rel. error':>12}  status"]
    for r in rows:
        name = tangent_name(r.name) if r.kind == "jvp" else tangent_name(grad_name(r.name))
        lines.append(f"{name:<18} {gradcheck.shape_text(r.shape):<14} {r.error:>12.2e}  "
                     f"{'ok' if r.ok else 'FAIL'}")
    verdict = "all agree" if all(r.ok for r in rows) else "some disagree"
    lines.append(f"{verdict} with central finite differences on random directions ({draws} "
                 f"draw{'s' if draws != 1 else ''}; JVP: of the forward, HVP: of the compiled "
                 f"backward; h={H:g}, float64"
                 + (", " + ", ".join(f"{k}={v}" for k, v in sizes.items()) if sizes else "")
                 + ")")
    return "\n".join(lines)


__all__ = ["check", "run_jvp", "run_hvp", "run_hessian", "fd_jvp", "fd_hvp", "rel_error",
           "directions", "program_data", "format_rows", "_rt"]
