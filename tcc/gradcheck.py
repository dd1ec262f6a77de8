"""``tcc check``: gradients against central finite differences.

The scalar checked is ``sum over outputs of sum(seed * output)`` with random
seeds, so every output and every gradient path counts. Each position of each
input and param is perturbed by +h and -h. Where the one-sided differences
disagree, the perturbation crossed a kink (relu, max, a comparison): that
position is skipped and counted, never compared. Param gradients are
compared with the finite differences divided by the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _rt, functions
from .check import Info
from .ir import Call, Bin, Program, grad_name, py_name, walk

SIZE_POOL = (3, 4, 5, 2, 6, 7, 3, 4, 5, 6)
H = 1e-6
TOLERANCE = 1e-6


def _positive_only(program: Program) -> bool:
    """Whether inputs should be kept positive (log, sqrt, fractional powers)."""
    for s in program.stmts:
        for e in walk(s.expr):
            if isinstance(e, Call) and functions.lookup(e.fn, e.pos).domain == "positive":
                return True
            if isinstance(e, Bin) and e.op == "**" and not (
                    hasattr(e.rhs, "value") and float(e.rhs.value).is_integer()):
                return True
    return False


def choose_sizes(info: Info, given: dict[str, int] | None = None) -> dict[str, int]:
    """Small, distinct sizes for every dim the arrays bind; valid ranges non-empty."""
    given = dict(given or {})
    bound = []
    for step in info.plan:
        if step[0] == "shape":
            for e in step[2]:
                if isinstance(e, str) and e not in bound:
                    bound.append(e)
    unknown = [d for d in given if d not in bound]
    if unknown:
        raise ValueError(f"--sizes names {', '.join(unknown)}, which no input, param or data "
                         f"shape uses (they use {', '.join(bound) or 'no dims'})")
    sizes = {}
    for k, d in enumerate(bound):
        sizes[d] = given.get(d, SIZE_POOL[k % len(SIZE_POOL)])
    window = {c[2] for step in info.plan if step[0] == "valid" for c in step[3]}
    window |= {step[3] for step in info.plan if step[0] == "bounds"}
    derived = [step[1] for step in info.plan if step[0] == "valid"]

    def short_of(candidate) -> tuple[int, int]:
        """(ranges below 2, how far below 2 they are in all); (len(derived) + 1, 0)
        for sizes that leave some access out of bounds."""
        try:
            full = _rt.bind_sizes(info.plan, _fake_arrays(info, candidate))
        except ValueError:
            return (len(derived) + 1, 0)
        lows = [max(0, 2 - full[d]) for d in derived]
        return (sum(1 for n in lows if n), sum(lows))

    best = short_of(sizes)
    for _ in range(8):
        if best == (0, 0):
            break
        # grow the dims of the windows' axes; an axis of a computed tensor has an
        # inferred size, which grows with every dim. Stop where growing does not
        # help (a range of 1 whatever the sizes): larger arrays only cost time.
        grow = {d for d in window if isinstance(d, str) and d in sizes}
        if any(isinstance(d, str) and d not in sizes for d in window):
            grow = set(sizes)
        grown = {d: n + 3 if d in grow and d not in given else n for d, n in sizes.items()}
        score = short_of(grown)
        if score >= best and best[0] <= len(derived):   # valid, and growing does not help
            break
        sizes, best = grown, score
    return sizes


class _Fake:
    def __init__(self, shape):
        self.shape = shape
        self.ndim = len(shape)
        self.size = int(np.prod(shape)) if shape else 1
        self.dtype = np.dtype(np.int64)

    def min(self):
        return 0

    def max(self):
        return 0


def _fake_arrays(info, sizes):
    return {t: _Fake(tuple(e if isinstance(e, int) else sizes[e] for e in info.shapes[t]))
            for t in info.inputs}


def random_inputs(info: Info, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float64 arrays for the program's inputs; valid positions for gather data."""
    rng = np.random.default_rng(seed)
    positive = _positive_only(info.program)
    limits: dict[str, int] = {}
    full = _rt.bind_sizes(info.plan, _fake_arrays(info, sizes), dict(sizes))
    for step in info.plan:
        if step[0] == "gather":
            _, data, _tensor, _axis, size = step
            n = size if isinstance(size, int) else full[size]
            limits[data] = min(limits.get(data, n), n)
    out = {}
    for t in info.inputs:
        shape = tuple(e if isinstance(e, int) else full[e] for e in info.shapes[t])
        if t in info.gather_data:
            out[t] = rng.integers(0, max(limits.get(t, 1), 1), size=shape)
        elif positive:
            out[t] = rng.uniform(0.5, 1.5, size=shape)
        else:
            out[t] = rng.standard_normal(shape)
    return out


@dataclass
class Row:
    tensor: str
    shape: tuple
    error: float
    skipped: int
    ok: bool
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    sizes: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def format(self) -> str:
        lines = [f"{'gradient':<16} {'shape':<16} {'worst rel. error':>16}  {'skipped':>7}  status"]
        for r in self.rows:
            shape = "[" + ", ".join(map(str, r.shape)) + "]" if r.shape else "scalar"
            err = f"{r.error:.2e}" if r.error == r.error else "nan"
            lines.append(f"{r.tensor:<16} {shape:<16} {err:>16}  {r.skipped:>7}  "
                         f"{'ok' if r.ok else 'FAIL'}{'  ' + r.note if r.note else ''}")
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        verdict = "all gradients agree" if self.ok else "some gradients disagree"
        lines.append(f"{verdict} with central finite differences (h={H:g}, float64"
                     f"{', ' + sizes if sizes else ''})")
        return "\n".join(lines)


def finite_difference_check(info: Info, forward, grads: dict, inputs: dict, seeds: dict,
                            sizes: dict) -> Report:
    """Compare ``grads`` ({input or param: array or None}) with finite differences.

    forward(tensors) -> {output: array}.
    """
    def loss(tensors):
        outs = forward(tensors)
        return sum(float(np.sum(seeds[o] * outs[o])) for o in seeds)

    full = _rt.bind_sizes(info.plan, inputs, {})
    scale = {}
    for t in info.differentiable:
        b = info.batch
        scale[t] = 1.0 / full[b] if info.roles[t] == "param" and b is not None else 1.0
    rows = _rt.fd_check(loss, inputs, {t: grads.get(t) for t in info.differentiable}, scale,
                        h=H, tol=TOLERANCE)
    report = Report(sizes=dict(sizes))
    for name, shape, err, skipped, ok, note in rows:
        report.rows.append(Row(grad_name(name), shape, err, skipped, ok, note))
    return report


def random_seeds(info: Info, outputs: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    return {o: rng.standard_normal(np.shape(outputs[o])) for o in info.outputs}


__all__ = ["choose_sizes", "random_inputs", "finite_difference_check", "random_seeds",
           "py_name"]
