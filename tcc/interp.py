"""The reference interpreter: runs a program by its definition.

For every point of the product of a statement's loop ranges, apply the
update, one scalar at a time; NumPy arrays are only storage. It is slow on
purpose and obviously right: every backend, optimized or not, is tested
against it. Every access is bounds-checked as it happens.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import _rt, functions
from .check import Info, analyze
from .ir import Affine, Bin, Call, DimVal, Expr, Gather, IndexCmp, Neg, Num, Program, Ref

_BINOPS = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "**": lambda a, b: a ** b,
    "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def prepare(info: Info, tensors: dict) -> tuple[dict, dict, np.dtype]:
    """Check names, convert arrays, bind sizes: (arrays, sizes, dtype)."""
    needed = list(info.inputs)
    missing = [t for t in needed if t not in tensors]
    if missing:
        raise ValueError(f"missing tensor{'s' if len(missing) > 1 else ''}: "
                         f"{', '.join(missing)}")
    extra = [t for t in tensors if t not in needed]
    if extra:
        raise ValueError(f"unknown tensor{'s' if len(extra) > 1 else ''}: {', '.join(extra)} "
                         f"(this program takes {', '.join(needed) or 'nothing'})")
    raw = {t: np.asarray(tensors[t]) for t in needed}
    dtype = _rt.computation_dtype({t: a for t, a in raw.items()
                                   if t not in info.gather_data})
    arrays = {}
    for t, a in raw.items():
        if t in info.gather_data or (info.roles[t] == "data" and a.dtype.kind in "iub"):
            arrays[t] = a
        else:
            arrays[t] = a.astype(dtype)
    sizes = _rt.bind_sizes(info.plan, arrays)
    return arrays, sizes, dtype


def run(program: Program | Info, tensors: dict) -> dict[str, np.ndarray]:
    """Execute ``program`` on ``tensors`` (by name); return every computed tensor."""
    info = program if isinstance(program, Info) else analyze(program)
    arrays, sizes, dtype = prepare(info, tensors)
    env = dict(arrays)
    for t in info.computed:
        shape = tuple(_size(sizes, e) for e in info.shapes[t])
        if t in arrays:       # a backward's data seed that it adds to: a copy of it
            env[t] = np.array(arrays[t], dtype=dtype, copy=True)
        else:
            env[t] = np.zeros(shape, dtype=dtype)
    for si in info.stmts:     # max= starts at -inf, min= at +inf, where it can write
        start = {"max=": -np.inf, "min=": np.inf}.get(si.stmt.op)
        if start is not None:
            env[si.stmt.target.tensor][_reachable(si.stmt.target)] = start
    steps = info.step_axes
    with np.errstate(all="ignore"):
        for k, fixed in run_order(info, sizes):
            _run_one(info.stmts[k], env, sizes, dtype, steps, fixed)
    return {t: env[t] for t in info.computed}


def run_order(info: Info, sizes):
    """(statement number, {step index: step} or None) in the order they run:
    units by ``info.schedule``; a recurrence one step at a time, in its
    direction, its statements in program order at each step over all their
    other indices."""
    for unit in info.schedule or [(k,) for k in range(len(info.stmts))]:
        rec = info.recurrence_of(unit[0])
        if rec is None:
            yield unit[0], None
            continue
        lengths = [_size(sizes, info.stmts[k].ranges[rec.step_of(k)]) for k in rec.stmts]
        order = range(max(lengths, default=0))
        for step in order if rec.ascending else reversed(order):
            for k, n in zip(rec.stmts, lengths):
                if step < n:
                    yield k, {rec.step_of(k): step}


def _run_one(si, env, sizes, dtype, steps, fixed=None):
    try:
        _run_stmt(si.stmt, si.ranges, env, sizes, dtype, steps, fixed)
    except ValueError as err:
        where = f"line {si.stmt.pos.line}: " if si.stmt.pos else ""
        raise ValueError(f"{err} (in the statement at {where}{si.stmt})") from None


def _reachable(target: Ref) -> tuple:
    """The positions an update can write: a constant axis (a stacked one) only at
    its constant, so that the positions no update writes hold 0."""
    return tuple(ix.const if isinstance(ix, Affine) and not ix.terms and not ix.dims
                 else slice(None) for ix in target.index)


def _size(sizes, entry) -> int:
    return entry if isinstance(entry, int) else sizes[entry]


def _run_stmt(s, ranges, env, sizes, dtype, steps=None, fixed=None):
    """steps: {tensor: step axis} of the tensors recurrences update (outside the
    steps they read 0, updates are dropped); fixed: {loop index: value}."""
    loops = s.loops
    fixed = fixed or {}
    extents = [range(fixed[v], fixed[v] + 1) if v in fixed else range(_size(sizes, ranges[v]))
               for v in loops]
    steps = steps or {}
    value = _compile(s.expr, env, sizes, dtype, s.padded, steps)
    where = _compile_index(s.target, env, sizes, s.padded, steps.get(s.target.tensor))
    target = env[s.target.tensor]
    op = s.op
    for point in itertools.product(*extents):
        at = dict(zip(loops, point))
        pos = where(at)
        if pos is None:      # outside the target, in a padded statement: dropped
            continue
        v = value(at)
        if op == "+=" or op == "=":
            target[pos] += v
        elif op == "-=":
            target[pos] -= v
        elif op == "max=":
            target[pos] = np.maximum(target[pos], v)
        else:  # min=
            target[pos] = np.minimum(target[pos], v)


def _compile_index(ref: Ref, env, sizes, padded=False, step_axis=None):
    """A function from loop values to the checked position tuple of ``ref``.

    padded: a position outside the tensor on an affine axis gives None (the
    statement reads 0 there, or drops the update); gathered positions are
    always checked.
    """
    array = env[ref.tensor]
    parts = [_compile_position(ix, env, sizes) for ix in ref.index]
    gathered = [isinstance(ix, Gather) for ix in ref.index]
    shape = array.shape
    name = ref.tensor

    def position(at):
        pos = tuple(p(at) for p in parts)
        outside = False
        for axis, (i, n) in enumerate(zip(pos, shape)):
            if not 0 <= i < n:
                if (padded and not gathered[axis]) or axis == step_axis:
                    outside = True
                    continue
                raise ValueError(f"tensor '{name}' axis {axis} has size {n}, but the "
                                 f"program accesses position {i}")
        return None if outside else pos
    return position


def _padded_ref(e: Ref, padded: bool, steps) -> tuple[bool, int | None]:
    """Whether a read can fall outside its tensor and read 0."""
    axis = steps.get(e.tensor)
    return padded or axis is not None, axis


def _compile_position(ix, env, sizes):
    """A function from loop values to the integer position an index form names."""
    if isinstance(ix, Gather):
        inner = _compile_index(Ref(ix.tensor, ix.index), env, sizes)
        data = env[ix.tensor]
        return lambda at: int(data[inner(at)])
    const = ix.const + sum(c * sizes[d] for d, c in ix.dims)
    return lambda at, terms=ix.terms: const + sum(c * at[v] for v, c in terms)


def _guards(e: Expr) -> list[IndexCmp]:
    """The index comparisons that are factors of the product e: where one is
    false, e is exactly 0 (a select: inf or nan in the other factors do not matter)."""
    if isinstance(e, IndexCmp):
        return [e]
    if isinstance(e, Neg):
        return _guards(e.arg)
    if isinstance(e, Bin) and e.op == "*":
        return _guards(e.lhs) + _guards(e.rhs)
    if isinstance(e, Bin) and e.op == "/":
        return _guards(e.lhs)
    return []


def _compile(e: Expr, env, sizes, dtype, padded=False, steps=None):
    """A function from loop values to the expression's value (a NumPy scalar).

    padded: reads outside a tensor (on affine axes) read 0."""
    scalar = dtype.type
    guards = _guards(e) if isinstance(e, Bin) and e.op in "*/" else []
    if guards:
        tests = [_compile(g, env, sizes, dtype) for g in guards]
        body = _compile_unguarded(e, env, sizes, dtype, padded, steps)
        zero = scalar(0)
        return lambda at: body(at) if all(t(at) for t in tests) else zero
    return _compile_unguarded(e, env, sizes, dtype, padded, steps)


def _compile_unguarded(e: Expr, env, sizes, dtype, padded, steps=None):
    steps = steps or {}
    scalar = dtype.type
    if isinstance(e, IndexCmp):
        lhs, rhs = (_compile_position(ix, env, sizes) for ix in e.sides)
        op = _BINOPS[e.op]
        one, zero = scalar(1), scalar(0)
        return lambda at: one if op(lhs(at), rhs(at)) else zero
    if isinstance(e, Num):
        c = scalar(e.value)
        return lambda at: c
    if isinstance(e, DimVal):
        c = scalar(sizes[e.name])
        return lambda at: c
    if isinstance(e, Ref):
        array = env[e.tensor]
        zero_outside, axis = _padded_ref(e, padded, steps)
        where = _compile_index(e, env, sizes, padded, axis)
        if zero_outside:
            zero = scalar(0)
            return lambda at: zero if (p := where(at)) is None else scalar(array[p])
        if array.dtype != dtype:  # integer data read as a number
            return lambda at: scalar(array[where(at)])
        return lambda at: array[where(at)]
    if isinstance(e, Neg):
        f = _compile(e.arg, env, sizes, dtype, padded, steps)
        return lambda at: -f(at)
    if isinstance(e, Bin):
        f, g = (_compile(a, env, sizes, dtype, padded, steps) for a in (e.lhs, e.rhs))
        op = _BINOPS[e.op]
        if e.op in ("<", ">", "<=", ">=", "==", "!="):
            return lambda at: scalar(op(f(at), g(at)))
        return lambda at: op(f(at), g(at))
    if isinstance(e, Call):
        fn = functions.lookup(e.fn, e.pos).numpy
        args = [_compile(a, env, sizes, dtype, padded, steps) for a in e.args]
        if len(args) == 1:
            a0 = args[0]
            return lambda at: scalar(fn(a0(at)))
        a0, a1 = args
        return lambda at: scalar(fn(a0(at), a1(at)))
    raise AssertionError(e)


__all__ = ["run", "run_order", "prepare", "math"]
