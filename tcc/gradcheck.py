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
from .ir import Affine, Bin, Call, Gather, Program, grad_name, index_cmps, py_name, walk

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
    # a constant index needs its axis that long: W3[1, 22, 0, 1] makes B at
    # least 23, and only B (growing every dim until B got there made a param
    # of 300,000 elements, and finite differences that never ended)
    for step in info.plan:
        if step[0] == "bounds" and isinstance(step[3], str) and step[3] in sizes and \
                step[3] not in given and not step[4] and not step[5][1]:
            sizes[step[3]] = max(sizes[step[3]], step[5][0] + 1)
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


# ------------------------------------------------------------------ data

# How ``--data NAME=KIND`` draws a data tensor; the last axis is the row.
DATA_KINDS = {
    "onehot": "each row (along the last axis) all 0 but for a single 1",
    "probabilities": "positive rows (along the last axis) that sum to 1",
    "positive": "uniform in [0.5, 1.5]",
    "int:K": "integers 0 .. K-1",
}


def parse_data_kind(name: str, kind: str) -> str:
    """Check one ``--data`` kind; return it normalized."""
    kind = kind.strip()
    if kind in ("onehot", "one-hot"):
        return "onehot"
    if kind in ("probabilities", "positive"):
        return kind
    if kind.startswith("int:"):
        try:
            k = int(kind[4:])
        except ValueError:
            k = 0
        if k >= 1:
            return f"int:{k}"
    raise ValueError(f"--data {name}={kind}: unknown kind; the kinds are "
                     f"{', '.join(DATA_KINDS)}")


def check_data_kinds(info: Info, kinds: dict[str, str]) -> dict[str, str]:
    """The ``--data`` kinds, each naming a data tensor of the program."""
    data = [t for t in info.inputs if info.roles[t] == "data"]
    out = {}
    for name, kind in kinds.items():
        if name not in data:
            raise ValueError(f"--data names '{name}', which is not a data tensor of the "
                             f"program (its data tensors: {', '.join(data) or 'none'})")
        kind = parse_data_kind(name, kind)
        if name in info.gather_data and not kind.startswith("int:"):
            raise ValueError(f"--data {name}={kind}: '{name}' holds gather positions; only "
                             f"int:K applies to it")
        out[name] = kind
    return out


def _draw(rng, kind: str, shape: tuple, integer: bool):
    if kind == "onehot":
        out = np.zeros(shape)
        if not shape:
            return np.ones(())
        hot = rng.integers(0, shape[-1], size=shape[:-1])
        np.put_along_axis(out, hot[..., None], 1.0, axis=-1)
        return out
    if kind == "probabilities":
        raw = rng.uniform(0.1, 1.0, size=shape)
        return raw / raw.sum(axis=-1, keepdims=True) if shape else np.ones(())
    if kind == "positive":
        return rng.uniform(0.5, 1.5, size=shape)
    k = int(kind[4:])
    values = rng.integers(0, k, size=shape)
    return values if integer else values.astype(np.float64)


def random_inputs(info: Info, sizes: dict[str, int], seed: int = 0,
                  data: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Random float64 arrays for the program's inputs; valid positions for gather
    data; ``data`` ({name: kind}) says how some data tensors are drawn instead."""
    rng = np.random.default_rng(seed)
    data = data or {}
    positive = _positive_only(info.program)
    limits: dict[str, int] = {}
    full = _rt.bind_sizes(info.plan, _fake_arrays(info, sizes), dict(sizes))
    for step in info.plan:
        if step[0] == "gather":
            _, name, _tensor, _axis, size = step
            n = size if isinstance(size, int) else full[size]
            limits[name] = min(limits.get(name, n), n)
    for name, size in comparison_limits(info):
        n = size if isinstance(size, int) else full[size]
        limits[name] = min(limits.get(name, n), n)
    out = {}
    for t in info.inputs:
        shape = tuple(e if isinstance(e, int) else full[e] for e in info.shapes[t])
        if t in data:
            out[t] = _draw(rng, data[t], shape, t in info.gather_data)
        elif t in info.gather_data:
            out[t] = rng.integers(0, max(limits.get(t, 1), 1), size=shape)
        elif positive:
            out[t] = rng.uniform(0.5, 1.5, size=shape)
        else:
            out[t] = rng.standard_normal(shape)
    return out


def comparison_limits(info: Info) -> list[tuple[str, object]]:
    """(data, size) for gathered positions that an index comparison compares
    with a loop index, ``(k == y[b])``: drawn in k's range, so the comparison is
    sometimes true (its values are not range-checked, unlike a gather's)."""
    out = []
    for si in info.stmts:
        for c in index_cmps(si.stmt.expr):
            for side, other in ((c.lhs, c.rhs), (c.rhs, c.lhs)):
                if isinstance(other, Gather) and isinstance(side, Affine) and side.plain:
                    out.append((other.tensor, si.ranges[side.plain]))
    return out


def random_seeds(info: Info, outputs: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    return {o: rng.standard_normal(np.shape(outputs[o])) for o in info.outputs}


# ------------------------------------------------------- finite differences

# The finite differences and the comparison live in _rt.py, which every
# generated module copies for its own --check: one definition for both.
Compared = _rt.Compared


def finite_differences(loss, inputs: dict, t: str, scale: float = 1.0):
    """(fd, kink): central differences of ``loss`` in every position of ``t``."""
    return _rt.finite_differences(loss, inputs, t, scale, H)


def compare(got, want, keep, noise: float, tol: float = TOLERANCE) -> Compared:
    """Relative error of ``got`` against ``want``, scaled to ``want``'s own size."""
    return _rt.compare(got, want, keep, noise, tol)


def check_gradients(info: Info, forward, grads: dict, inputs: dict, seeds: dict) -> dict:
    """Each gradient against finite differences at one draw.

    forward(tensors) -> {output: array}; grads: {input or param: array or None}.
    Returns {name: (Compared or None, positions skipped at kinks, note)}.
    """
    def loss(tensors):
        outs = forward(tensors)
        return sum(float(np.sum(seeds[o] * outs[o])) for o in seeds)

    with np.errstate(all="ignore"):
        noise = _rt.fd_noise(forward(inputs), seeds, inputs)
    full = _rt.bind_sizes(info.plan, inputs, {})
    results = {}
    with np.errstate(all="ignore"):
        for t in info.differentiable:
            g, x = grads.get(t), inputs[t]
            if g is None:
                results[t] = (None, 0, "not computed")
                continue
            if np.shape(g) != np.shape(x):
                results[t] = (None, 0, f"has shape {tuple(np.shape(g))}, expected "
                                       f"{tuple(np.shape(x))}")
                continue
            b = info.batch
            scale = 1.0 / full[b] if info.roles[t] == "param" and b is not None else 1.0
            fd, kink = finite_differences(loss, inputs, t, scale)
            c = compare(g, fd, ~kink, noise * scale)
            note = ""
            if c.first is not None:
                p = c.first
                note = (f"first at {list(p)}: backward gives {np.asarray(g)[p]:.6g}, "
                        f"finite differences {fd[p]:.6g}")
            results[t] = (c, int(kink.sum()), note)
    return results


# ----------------------------------------------------------------- report

def shape_text(shape: tuple) -> str:
    """One spelling for shapes: ``[3, 4]``, and ``scalar`` for 0-d."""
    return "[" + ", ".join(map(str, shape)) + "]" if shape else "scalar"


def _num(v) -> str:
    return f"{v:.6g}"


@dataclass
class Row:
    tensor: str
    shape: tuple
    error: float
    skipped: int
    ok: bool
    note: str = ""
    live: int = 0           # draws at which the gradient was not all zero
    seed: int | None = None  # the draw of the first failure

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAIL"
        return "ok" if self.live else "not exercised"


@dataclass
class Blame:
    """The first statement of a hand-written backward whose result is wrong."""
    tensor: str
    text: str               # the statement's line(s), as written
    filename: str | None
    line: int
    col: int
    first: tuple
    got: float
    want: float
    seed: int
    also: tuple = ()        # other lines that update the same tensor
    missing: bool = False   # each update adds a right term, but a term is missing

    def format(self) -> str:
        where = f"{self.filename or '<backward>'}:{self.line}:{self.col}"
        what = "first wrong statement" if not self.missing else "first wrong gradient"
        pos = shape_text(self.first) if self.first else "scalar"
        pos = "" if not self.first else f" at {pos}"
        lines = [f"{where}: {what}: it computes {self.tensor}",
                 f"    {self.text}", "    " + " " * (self.col - 1) + "^",
                 f"{self.tensor}{pos}: your backward gives {_num(self.got)}, "
                 f"the derivative is {_num(self.want)} (seed {self.seed})"]
        if self.missing:
            lines.append(f"each statement that updates {self.tensor} adds a right term, but "
                         "a term is missing")
        elif self.also:
            lines.append(f"({self.tensor} is also updated on line"
                         f"{'s' if len(self.also) > 1 else ''} "
                         f"{', '.join(map(str, self.also))})")
        return "\n".join(lines)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    sizes: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    strict: bool = False
    blame: Blame | None = None
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if self.blame is not None:
            return False
        return all(r.ok and (r.live or not self.strict) for r in self.rows)

    @property
    def unexercised(self) -> list[Row]:
        return [r for r in self.rows if r.ok and not r.live]

    def format(self) -> str:
        lines = [f"{'gradient':<16} {'shape':<16} {'rel. error':>10}  {'skipped':>7}  status"]
        for r in self.rows:
            err = f"{r.error:.2e}" if r.error == r.error else "nan"
            lines.append(f"{r.tensor:<16} {shape_text(r.shape):<16} {err:>10}  {r.skipped:>7}  "
                         f"{r.status}{'  ' + r.note if r.note else ''}")
        if self.blame is not None:
            lines.append(self.blame.format())
        for r in self.unexercised:
            lines.append(f"warning: {r.tensor} was all zero at every draw (a branch no draw "
                         "took?): its answer is not tested"
                         f"{'' if self.strict else ' (--strict makes this a failure)'}")
        lines += self.hints
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        verdict = "all gradients agree" if self.ok else "some gradients disagree"
        n = len(self.seeds)
        draws = (f"{n} draw{'s' if n != 1 else ''}, seed{'s' if n != 1 else ''} "
                 + (f"{self.seeds[0]}-{self.seeds[-1]}" if n > 1 else f"{self.seeds[0]}")
                 if n else "no draws")
        lines.append(f"{verdict} with central finite differences ({draws}; h={H:g}, float64"
                     f"{', ' + sizes if sizes else ''})")
        lines.append("rel. error: the worst |backward - finite difference| over the largest "
                     "|finite difference| of that gradient")
        return "\n".join(lines)


def finite_difference_check(info: Info, forward, grads: dict, inputs: dict, seeds: dict,
                            sizes: dict, seed: int = 0) -> Report:
    """One draw's report: ``grads`` ({input or param: array or None}) against
    finite differences of forward(tensors) -> {output: array}."""
    report = Report(sizes=dict(sizes), seeds=[seed])
    for t, (c, skipped, note) in check_gradients(info, forward, grads, inputs, seeds).items():
        shape = tuple(np.shape(inputs[t]))
        if c is None:
            report.rows.append(Row(grad_name(t), shape, float("nan"), 0, False, note))
        else:
            report.rows.append(Row(grad_name(t), shape, c.error, skipped,
                                   c.error <= TOLERANCE, note, int(c.live)))
    return report


__all__ = ["choose_sizes", "check_gradients", "finite_difference_check", "random_inputs",
           "random_seeds", "finite_differences", "compare",
           "Report", "Row", "Blame", "DATA_KINDS", "py_name", "grad_name"]
