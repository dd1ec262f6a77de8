"""Compiled by tcc 0.1.0 from ugrnn_cell.loop (backend: numpy, optimized).

Generated code: regenerate it with `tcc compile` rather than editing it.
It needs NumPy only, never tcc.

The program:
    param WhR[J, J]
    param WxR[J, K]
    param BR[J]
    param WhG[J, J]
    param WxG[J, K]
    param BG[J]
    input h[B, J]
    data x[B, K]
    output hn[B, J]
    for b, j, i: Rp[b, j] += WhR[j, i] * h[b, i]
    for b, j, k: Rp[b, j] += WxR[j, k] * x[b, k]
    for b, j: Rp[b, j] -= BR[j]
    for b, j: R[b, j] = tanh(Rp[b, j])
    for b, j, i: Gp[b, j] += WhG[j, i] * h[b, i]
    for b, j, k: Gp[b, j] += WxG[j, k] * x[b, k]
    for b, j: Gp[b, j] -= BG[j]
    for b, j: G[b, j] = sigmoid(Gp[b, j])
    for b, j: hn[b, j] = G[b, j] * h[b, j] + (1 - G[b, j]) * R[b, j]

Its backward (the gradients):
    for b, j: h.grad[b, j] += hn.grad[b, j] * G[b, j]
    for b, j: Gp.grad[b, j] += (hn.grad[b, j] * h[b, j] - hn.grad[b, j] * R[b, j]) * G[b, j] * (1 - G[b, j])
    for b, j: BG.grad[j] -= 1 / B * Gp.grad[b, j]
    for b, j, k: WxG.grad[j, k] += 1 / B * Gp.grad[b, j] * x[b, k]
    for b, j, i: WhG.grad[j, i] += 1 / B * Gp.grad[b, j] * h[b, i]
    for b, j: Rp.grad[b, j] += hn.grad[b, j] * (1 - G[b, j]) * (1 - R[b, j] ** 2)
    for b, j: BR.grad[j] -= 1 / B * Rp.grad[b, j]
    for b, j, k: WxR.grad[j, k] += 1 / B * Rp.grad[b, j] * x[b, k]
    for b, j, i: WhR.grad[j, i] += 1 / B * Rp.grad[b, j] * h[b, i]
    for b, j, i: h.grad[b, i] += Gp.grad[b, j] * WhG[j, i] + Rp.grad[b, j] * WhR[j, i]

Usage:
    fwd = forward(WhR=WhR, WxR=WxR, BR=BR, WhG=WhG, WxG=WxG, BG=BG, h=h, x=x)
    grads = backward({"hn": dhn}, WhR=WhR, WxR=WxR, BR=BR, WhG=WhG, WxG=WxG, BG=BG, h=h, x=x, **fwd)

Run `python ugrnn_cell.py --check` to check the
gradients against finite differences on random inputs.
"""

# ruff: noqa: E501  (each statement is one line, quoted above the code for it)

import numpy as np
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# ---- run-time checks, shared with tcc's reference interpreter (tcc/_rt.py)

import numpy as _np_rt


def _rt_size(sizes, entry):
    return entry if isinstance(entry, int) else sizes[entry]


def _rt_span(sizes, terms, const):
    """(lowest, highest) of c0 + sum(k * dim) + sum(c * i) over each index's range.

    terms: ((c, size of i's range), ...); const: (c0, ((k, dim), ...)).
    None when some range is empty (there is no access at all).
    """
    c0, dims = const
    base = c0 + sum(k * sizes[d] for k, d in dims)
    lo = hi = base
    for c, entry in terms:
        n = _rt_size(sizes, entry)
        if n <= 0:
            return None
        if c > 0:
            hi += c * (n - 1)
        else:
            lo += c * (n - 1)
    return lo, hi


def bind_sizes(plan, arrays, sizes=None):
    """Check the arrays' shapes against the plan; return {dim name: size}."""
    sizes = {} if sizes is None else sizes
    where = {}
    for step in plan:
        kind = step[0]
        if kind == "shape":
            _, name, entries, integer = step
            a = arrays[name]
            if a.ndim != len(entries):
                want = f"[{', '.join(map(str, entries))}]" if entries else "a scalar (0-d)"
                raise ValueError(f"tensor '{name}' must have rank {len(entries)} ({want}), "
                                 f"but has shape {tuple(a.shape)}")
            if integer and a.dtype.kind not in "iu":
                raise ValueError(f"tensor '{name}' holds gather positions and must be an "
                                 f"integer array, not {a.dtype}")
            for axis, entry in enumerate(entries):
                n = int(a.shape[axis])
                if isinstance(entry, int):
                    if n != entry:
                        raise ValueError(f"tensor '{name}' axis {axis} must have size {entry}, "
                                         f"but has {n}")
                elif entry in sizes and sizes[entry] != n:
                    raise ValueError(f"tensor '{name}' axis {axis} ({entry}) has size {n}, but "
                                     f"{entry} = {sizes[entry]} from {where.get(entry, 'before')}")
                else:
                    sizes[entry] = n
                    where.setdefault(entry, f"'{name}' axis {axis}")
        elif kind == "valid":
            _, sym, var, constraints = step
            best, limit = None, ("?", 0, 0)
            for tensor, axis, size, coef, terms, const in constraints:
                span = _rt_span(sizes, terms, const)
                if span is None:   # another index has an empty range: so has this one
                    best, limit = 0, (tensor, axis, _rt_size(sizes, size))
                    continue
                lo, hi = span
                s = _rt_size(sizes, size)
                n = (s - 1 - hi) // coef + 1 if coef > 0 else lo // (-coef) + 1
                n = max(n, 0)
                if best is None or n < best:
                    best, limit = n, (tensor, axis, s)
            if best is None or best <= 0:
                tensor, axis, s = limit
                raise ValueError(f"the range of index '{var}' is empty: tensor '{tensor}' "
                                 f"axis {axis} has size {s}, too small for the accesses to it")
            if sym in sizes and sizes[sym] != best:
                raise ValueError(f"index '{var}' ranges over {best} positions, but {sym} = "
                                 f"{sizes[sym]} from {where.get(sym, 'before')}")
            sizes[sym] = best
            where.setdefault(sym, f"the range of '{var}'")
        elif kind == "equal":
            _, sym, value, what = step
            value = _rt_size(sizes, value)
            if _rt_size(sizes, sym) != value:
                raise ValueError(f"{what}: {sym} = {_rt_size(sizes, sym)} from "
                                 f"{where.get(sym, 'the arrays')}, but must be {value}")
        elif kind == "alias":
            _, sym, other, what = step
            n = _rt_size(sizes, other)
            if sym in sizes and sizes[sym] != n:
                raise ValueError(f"{what}: {sym} = {sizes[sym]} from "
                                 f"{where.get(sym, 'the arrays')}, but the loops give {n}")
            sizes[sym] = n
        elif kind == "bounds":
            _, tensor, axis, size, terms, const = step[:6]
            span = _rt_span(sizes, terms, const)
            s = _rt_size(sizes, size)
            if span is not None and (span[0] < 0 or span[1] >= s):
                where = f" (in the statement at {step[6]})" if len(step) > 6 else ""
                raise ValueError(f"tensor '{tensor}' axis {axis} has size {s}, but the index "
                                 f"ranges over {span[0]}..{span[1]}{where}")
        elif kind == "gather":
            _, data, tensor, axis, size = step
            y = arrays[data]
            s = _rt_size(sizes, size)
            if y.size:
                lo, hi = int(y.min()), int(y.max())
                if lo < 0 or hi >= s:
                    bad = lo if lo < 0 else hi
                    raise ValueError(f"gather '{data}' holds {bad}, out of range for tensor "
                                     f"'{tensor}' axis {axis} of size {s}")
        else:  # pragma: no cover
            raise AssertionError(step)
    return sizes


def computation_dtype(arrays):
    """The result type of the floating arrays passed in (float64 if none).

    arrays: {name: array} of the tensors that are not gather data.
    """
    floats = []
    for name, a in arrays.items():
        if a.dtype.kind == "c":
            raise ValueError(f"tensor '{name}' is complex ({a.dtype}); tcc computes in real "
                             "floating point: pass its real part")
        if a.dtype.kind not in "fiub":
            raise ValueError(f"tensor '{name}' has dtype {a.dtype}; tcc takes numeric arrays")
        if a.dtype.kind == "f":
            floats.append(a.dtype)
    return _np_rt.result_type(*floats) if floats else _np_rt.dtype(_np_rt.float64)


def take(tensors, kinds, what, optional=()):
    """Check the keyword tensors of forward() or backward() and convert them.

    kinds: {name: "float" | "gather"}; names in ``optional`` may be passed and
    are converted but not required. Returns (arrays, dtype).
    """
    missing = [t for t in kinds if t not in tensors and t not in optional]
    if missing:
        raise ValueError(f"{what}() is missing tensor{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(t) for t in missing)}")
    unknown = [t for t in tensors if t not in kinds]
    if unknown:
        raise ValueError(f"{what}() got unknown tensor{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(t) for t in unknown)}; it takes "
                         f"{', '.join(kinds) or 'none'}")
    raw = {t: _np_rt.asarray(a) for t, a in tensors.items()}
    dt = computation_dtype({t: a for t, a in raw.items() if kinds[t] != "gather"})
    arrays = {}
    for t, a in raw.items():
        if kinds[t] == "gather":
            if a.dtype.kind not in "iu":
                raise ValueError(f"tensor '{t}' holds gather positions and must be an "
                                 f"integer array, not {a.dtype}")
            arrays[t] = a
        else:
            arrays[t] = a.astype(dt, copy=False)
    return arrays, dt


def seed_names(grads, outputs):
    # backward()'s seeds name outputs only (numpy and torch modules alike)
    unknown = [k for k in grads if k not in outputs]
    if unknown:
        raise ValueError(f"backward() got a seed for {', '.join(map(repr, unknown))}, which is "
                         f"not an output; the outputs are {', '.join(outputs)}")


def need_saved(*names, arrays):
    missing = [t for t in names if t not in arrays]
    if missing:
        raise ValueError(f"backward() needs {', '.join(map(repr, missing))}, which forward() "
                         "returns: call backward(grads, **inputs, **forward(**inputs))")


FD_NOISE = 3e-8


FD_ROUNDING = 1024 * 2.0 ** -52


def loss_scale(outputs, seeds):
    """The size of the checked scalar's terms: sum |seed * output|."""
    with _np_rt.errstate(all="ignore"):
        total = sum(float(_np_rt.sum(_np_rt.abs(seeds[o] * outputs[o]))) for o in seeds)
    return total if _np_rt.isfinite(total) else 0.0


def _top(a):
    """The largest finite |element| of ``a`` (0 for none)."""
    a = _np_rt.abs(_np_rt.asarray(a, dtype=_np_rt.float64))
    return float(_np_rt.max(a, initial=0.0, where=_np_rt.isfinite(a)))


def fd_noise(outputs, seeds, inputs):
    """The absolute difference below which a gradient and its finite
    difference cannot be told apart: the loss's rounding (FD_NOISE) or the
    backward's (FD_ROUNDING), whichever is larger."""
    with _np_rt.errstate(all="ignore"):
        seed = max((_top(a) for a in seeds.values()), default=0.0)
        big = max((_top(a) for a in inputs.values()), default=0.0)
    return max(FD_NOISE * loss_scale(outputs, seeds), FD_ROUNDING * seed * max(big, 1.0))


def finite_differences(loss, inputs, t, scale=1.0, h=1e-6):
    """(fd, kink): central differences of ``loss`` in every position of ``t``;
    kink marks positions where the one-sided differences disagree."""
    x = _np_rt.asarray(inputs[t], dtype=_np_rt.float64)
    base = loss(inputs)
    fd = _np_rt.zeros(x.shape)
    kink = _np_rt.zeros(x.shape, dtype=bool)
    for pos in _np_rt.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[pos] += h
        minus[pos] -= h
        lp, lm = loss({**inputs, t: plus}), loss({**inputs, t: minus})
        fd[pos] = (lp - lm) / (2 * h) * scale
        right, left = (lp - base) / h, (base - lm) / h
        if abs(right - left) > 1e-3 * max(1.0, abs(right), abs(left)):
            kink[pos] = True
    return fd, kink


class Compared:
    """One gradient against its reference: the worst |got - want| over
    max(largest |want|, floor), the first position beyond the tolerance, and
    whether the reference is not all (nearly) zero."""

    def __init__(self, error, first, live):
        self.error, self.first, self.live = error, first, live

    def __repr__(self):
        return f"Compared(error={self.error!r}, first={self.first!r}, live={self.live!r})"


def compare(got, want, keep, noise, tol=1e-6):
    """Relative error of ``got`` against ``want`` on the positions ``keep``,
    scaled to ``want``'s own size; a difference below ``noise`` (absolute)
    passes whatever the size."""
    got = _np_rt.asarray(got, dtype=_np_rt.float64)
    want = _np_rt.asarray(want, dtype=_np_rt.float64)
    keep = _np_rt.asarray(keep, dtype=bool)
    size = float(_np_rt.max(_np_rt.abs(want[keep]), initial=0.0))
    denom = max(size, noise / tol, 1e-300)
    diff = _np_rt.where(keep, _np_rt.abs(got - want), 0.0) / denom
    finite = _np_rt.all(_np_rt.isfinite(got[keep])) and _np_rt.all(_np_rt.isfinite(want[keep]))
    err = float(_np_rt.max(diff, initial=0.0)) if finite else float("nan")
    first = None
    if not err <= tol:
        bad = _np_rt.argwhere(~(diff <= tol) & keep)
        if len(bad):
            first = tuple(int(i) for i in bad[0])
    return Compared(err, first, size > 10 * noise)


def fd_check(loss, inputs, grads, scale, noise=0.0, h=1e-6, tol=1e-6):
    """Central finite differences of ``loss`` against ``grads``, per tensor,
    each error relative to that gradient's own size (``compare``).

    Positions where the one-sided differences disagree crossed a kink and are
    skipped. Returns rows (name, shape, worst error, skipped, ok, note).
    """
    rows = []
    with _np_rt.errstate(all="ignore"):
        for t, g in grads.items():
            x = inputs[t]
            if g is None:
                rows.append((t, x.shape, float("nan"), 0, False, "not computed"))
                continue
            if _np_rt.shape(g) != x.shape:
                rows.append((t, x.shape, float("nan"), 0, False,
                             f"has shape {_np_rt.shape(g)}, expected {x.shape}"))
                continue
            s = scale.get(t, 1.0)
            fd, kink = finite_differences(loss, inputs, t, s, h)
            c = compare(g, fd, ~kink, noise * s, tol)
            note = ""
            if c.first is not None:
                p = c.first
                note = (f"first at {list(p)}: backward gives {_np_rt.asarray(g)[p]:.6g}, "
                        f"finite differences {fd[p]:.6g}")
            rows.append((t, x.shape, c.error, int(kink.sum()), c.error <= tol, note))
    return rows

def seed(grads, name, shape, dt, what="seed"):
    g = grads.get(name)
    if g is None:
        return np.zeros(shape, dtype=dt)
    g = np.asarray(g)
    if g.dtype.kind == "c":
        raise ValueError(f"the {what} for '{name}' is complex ({g.dtype})")
    if g.shape != tuple(shape):
        raise ValueError(f"the {what} for '{name}' has shape {g.shape}, but '{name}' has "
                         f"shape {tuple(shape)}")
    return g.astype(dt, copy=False)

# ---- helpers

def _sigmoid(x):
    # 1 / (1 + exp(-x)); exp overflows to inf for very negative x, giving 0 exactly
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


# Measured choices (TCC_TUNE). Where a statement can be computed in several correct
# ways and the machine decides which is fastest (a convolution on flattened rows, tap
# by tap, or as one im2col product; a row-block group on the thread pool or on one
# thread), the module times the ways at the first call with a new size signature and
# keeps the fastest for that signature, as FFTW's plans do. A first way that takes
# under _TUNE_FLOOR seconds is kept without trying the others. TCC_TUNE=0 keeps the
# static choice (the first way); TCC_TUNE=<label> takes the way of that label
# wherever it is a candidate (to compare them, and in tests).
_TUNE_FLOOR = 2e-3
_TUNE_BUDGET = 2.0
_TUNE_CHOICES = {}


def _tune_mode():
    return os.environ.get("TCC_TUNE", "1").strip()


# Row blocks. A group of elementwise and row-reduction statements runs on blocks of
# rows (about _BLOCK_BYTES of its arrays each) while they are in cache, on a thread
# pool when the arrays are large: NumPy releases the GIL in ufuncs and reductions,
# and no BLAS call runs inside a group, so the pool never competes with BLAS's threads.
# Blocks split rows only, never a reduction: any thread count gives the same bits.
_BLOCK_BYTES = 1 << 21
_SMALL_BYTES = 1 << 18
_POOLS = {}
_POOL_LOCK = threading.Lock()


def _threads():
    # TCC_NUM_THREADS, by default (and at most) the cores this process may run on
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    want = os.environ.get("TCC_NUM_THREADS", "").strip()
    return max(1, min(cores or 1, int(want) if want.isdigit() else cores or 1))


def _row_blocks(fn, n, arrays):
    # fn(*rows) on the same rows lo:hi of every array (each has n rows), block by block
    row = sum(a.itemsize * (a.size // n) for a in arrays) if n else 0
    if n * row < _SMALL_BYTES:
        fn(*arrays)
        return
    step = max(1, _BLOCK_BYTES // max(row, 1))
    blocks = [tuple(a[lo:lo + step] for a in arrays) for lo in range(0, n, step)]
    threads = min(_threads(), len(blocks))
    mode = _tune_mode()
    key = ("rows", fn.__code__, n, row, threads)
    pooled = 0 if mode == "one-thread" else 1 if mode in ("0", "threads") else \
        _TUNE_CHOICES.get(key)
    if threads <= 1 or pooled == 0:
        for block in blocks:
            fn(*block)
        return
    with _POOL_LOCK:                    # one pool per size, made at first use
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="tcc")
    if pooled is None and len(blocks) >= 4 * threads:
        # measured: half the blocks on the pool, the other half on this thread
        half = len(blocks) // 2
        t0 = time.perf_counter()
        for done in [pool.submit(fn, *block) for block in blocks[:half]]:
            done.result()
        t1 = time.perf_counter()
        for block in blocks[half:]:
            fn(*block)
        t2 = time.perf_counter()
        _TUNE_CHOICES[key] = int((t1 - t0) / half < (t2 - t1) / (len(blocks) - half))
        return
    for done in [pool.submit(fn, *block) for block in blocks]:
        done.result()

# ---- the program's tensors, sizes and checks

_FORWARD_KINDS = {'WhR': 'float', 'WxR': 'float', 'BR': 'float', 'WhG': 'float', 'WxG': 'float', 'BG': 'float', 'h': 'float', 'x': 'float'}
_BACKWARD_KINDS = {'WhR': 'float', 'WxR': 'float', 'BR': 'float', 'WhG': 'float', 'WxG': 'float', 'BG': 'float', 'h': 'float', 'x': 'float', 'Rp': 'float', 'R': 'float', 'Gp': 'float', 'G': 'float', 'hn': 'float'}
_SAVED_OPTIONAL = ('Rp', 'R', 'Gp', 'G', 'hn')
_OUTPUTS = ('hn',)
_DIFFERENTIABLE = {'WhR': 'param', 'WxR': 'param', 'BR': 'param', 'WhG': 'param', 'WxG': 'param', 'BG': 'param', 'h': 'input'}
_BATCH = 'B'
_DEFAULT_SIZES = {'J': 3, 'K': 4, 'B': 5}
_RANDOM = {'WhR': (('J', 'J'), 'normal'), 'WxR': (('J', 'K'), 'normal'), 'BR': (('J',), 'normal'), 'WhG': (('J', 'J'), 'normal'), 'WxG': (('J', 'K'), 'normal'), 'BG': (('J',), 'normal'), 'h': (('B', 'J'), 'normal'), 'x': (('B', 'K'), 'normal')}
_GATHER_LIMITS = {}
_FORWARD_PLAN = [('shape', 'WhR', ('J', 'J'), False), ('shape', 'WxR', ('J', 'K'), False),
 ('shape', 'BR', ('J',), False), ('shape', 'WhG', ('J', 'J'), False),
 ('shape', 'WxG', ('J', 'K'), False), ('shape', 'BG', ('J',), False),
 ('shape', 'h', ('B', 'J'), False), ('shape', 'x', ('B', 'K'), False)]
_BACKWARD_PLAN = [('shape', 'WhR', ('J', 'J'), False), ('shape', 'WhG', ('J', 'J'), False),
 ('shape', 'h', ('B', 'J'), False), ('shape', 'x', ('B', 'K'), False),
 ('shape', 'R', ('B', 'J'), False), ('shape', 'G', ('B', 'J'), False),
 ('shape', 'hn_grad', ('B', 'J'), False)]

def forward(**tensors):
    """Run the program. Takes WhR[J, J], WxR[J, K], BR[J], WhG[J, J], WxG[J, K], BG[J], h[B, J], x[B, K].

    Returns the outputs (hn) and the values the backward reads (R, G).
    """
    arrays, dt = take(tensors, _FORWARD_KINDS, "forward")
    sizes = bind_sizes(_FORWARD_PLAN, arrays)
    WhR = arrays["WhR"]
    WxR = arrays["WxR"]
    BR = arrays["BR"]
    WhG = arrays["WhG"]
    WxG = arrays["WxG"]
    BG = arrays["BG"]
    h = arrays["h"]
    x = arrays["x"]
    B, J = sizes["B"], sizes["J"]
    # for b, j, i: Rp[b, j] += WhR[j, i] * h[b, i]
    Rp = h @ WhR.T
    # for b, j, k: Rp[b, j] += WxR[j, k] * x[b, k]
    Rp += x @ WxR.T
    # rows of B in blocks, on threads when large: 2 statements in one pass
    # (R takes the memory of Rp, which is not read after the rows that write it)
    if Rp.base is None and Rp.dtype == dt and Rp.shape == (B, J):
        R = Rp
    else:
        R = np.empty((B, J), dtype=dt)
    def _rows_1(Rp, R):
        # for b, j: Rp[b, j] -= BR[j]
        Rp -= BR
        # for b, j: R[b, j] = tanh(Rp[b, j])
        np.tanh(Rp, out=R)
    _row_blocks(_rows_1, B, (Rp, R))
    # for b, j, i: Gp[b, j] += WhG[j, i] * h[b, i]
    Gp = h @ WhG.T
    # for b, j, k: Gp[b, j] += WxG[j, k] * x[b, k]
    Gp += x @ WxG.T
    # rows of B in blocks, on threads when large: 3 statements in one pass
    G = np.empty((B, J), dtype=dt)
    # (hn takes the memory of Gp, which is not read after the rows that write it)
    if Gp.base is None and Gp.dtype == dt and Gp.shape == (B, J):
        hn = Gp
    else:
        hn = np.empty((B, J), dtype=dt)
    def _rows_2(Gp, h, R, G, hn):
        # for b, j: Gp[b, j] -= BG[j]
        Gp -= BG
        # for b, j: G[b, j] = sigmoid(Gp[b, j])
        G[...] = _sigmoid(Gp)
        # for b, j: hn[b, j] = G[b, j] * h[b, j] + (1 - G[b, j]) * R[b, j]
        np.multiply(G, h, out=hn)
        _tmp1 = 1 - G
        np.multiply(_tmp1, R, out=_tmp1)
        np.add(hn, _tmp1, out=hn)
    _row_blocks(_rows_2, B, (Gp, h, R, G, hn))
    return {"hn": hn, "R": R, "G": G}

def backward(grads, /, **tensors):
    """Gradients. grads: {output name: its .grad} (a missing one counts as
    zero); tensors: the forward's inputs and the dict forward() returned.
    Returns {name: gradient} for WhR, WxR, BR, WhG, WxG, BG, h (params averaged over the batch).
    """
    arrays, dt = take(tensors, _BACKWARD_KINDS, "backward", _SAVED_OPTIONAL)
    sizes = bind_sizes(_FORWARD_PLAN, {t: arrays[t] for t in _FORWARD_KINDS})
    need_saved('R', 'G', arrays=arrays)
    seed_names(grads, _OUTPUTS)
    arrays["hn_grad"] = seed(grads, "hn", (sizes["B"], sizes["J"]), dt)
    sizes = bind_sizes(_BACKWARD_PLAN, arrays, sizes)
    WhR = arrays["WhR"]
    WhG = arrays["WhG"]
    h = arrays["h"]
    x = arrays["x"]
    R = arrays["R"]
    G = arrays["G"]
    hn_grad = arrays["hn_grad"]
    B, J = sizes["B"], sizes["J"]
    # rows of B in blocks, on threads when large: 2 statements in one pass
    h_grad = np.empty((B, J), dtype=dt)
    Gp_grad = np.empty((B, J), dtype=dt)
    def _rows_1(hn_grad, G, h, R, h_grad, Gp_grad):
        # for b, j: h.grad[b, j] += hn.grad[b, j] * G[b, j]
        np.multiply(hn_grad, G, out=h_grad)
        # for b, j: Gp.grad[b, j] += (hn.grad[b, j] * h[b, j] - hn.grad[b, j] * R[b, j]) * G[b, j] * (1 - G[b, j])
        np.multiply(hn_grad, h, out=Gp_grad)
        _tmp1 = hn_grad * R
        np.subtract(Gp_grad, _tmp1, out=Gp_grad)
        np.multiply(Gp_grad, G, out=Gp_grad)
        _tmp2 = 1 - G
        np.multiply(Gp_grad, _tmp2, out=Gp_grad)
    _row_blocks(_rows_1, B, (hn_grad, G, h, R, h_grad, Gp_grad))
    # for b, j: BG.grad[j] -= 1 / B * Gp.grad[b, j]
    BG_grad = -((1 / dt.type(B) if B else 0.0) * Gp_grad.sum(axis=0))
    # for b, j, k: WxG.grad[j, k] += 1 / B * Gp.grad[b, j] * x[b, k]
    WxG_grad = Gp_grad.T @ x
    np.multiply((1 / dt.type(B) if B else 0.0), WxG_grad, out=WxG_grad)
    # for b, j, i: WhG.grad[j, i] += 1 / B * Gp.grad[b, j] * h[b, i]
    WhG_grad = (Gp_grad / dt.type(B)).T @ h
    # rows of B in blocks, on threads when large: 1 statement in one pass
    Rp_grad = np.empty((B, J), dtype=dt)
    def _rows_2(hn_grad, G, R, Rp_grad):
        # for b, j: Rp.grad[b, j] += hn.grad[b, j] * (1 - G[b, j]) * (1 - R[b, j] ** 2)
        np.subtract(1, G, out=Rp_grad)
        np.multiply(hn_grad, Rp_grad, out=Rp_grad)
        _tmp1 = 1 - R ** 2
        np.multiply(Rp_grad, _tmp1, out=Rp_grad)
    _row_blocks(_rows_2, B, (hn_grad, G, R, Rp_grad))
    # for b, j: BR.grad[j] -= 1 / B * Rp.grad[b, j]
    BR_grad = -((1 / dt.type(B) if B else 0.0) * Rp_grad.sum(axis=0))
    # for b, j, k: WxR.grad[j, k] += 1 / B * Rp.grad[b, j] * x[b, k]
    WxR_grad = Rp_grad.T @ x
    np.multiply((1 / dt.type(B) if B else 0.0), WxR_grad, out=WxR_grad)
    # for b, j, i: WhR.grad[j, i] += 1 / B * Rp.grad[b, j] * h[b, i]
    WhR_grad = (Rp_grad / dt.type(B)).T @ h
    # for b, j, i: h.grad[b, i] += Gp.grad[b, j] * WhG[j, i] + Rp.grad[b, j] * WhR[j, i]
    h_grad += Gp_grad @ WhG + Rp_grad @ WhR
    return {"WhR": WhR_grad, "WxR": WxR_grad, "BR": BR_grad, "WhG": WhG_grad, "WxG": WxG_grad, "BG": BG_grad, "h": h_grad}

def random_inputs(seed=0, **sizes):
    """Valid random inputs: float64 values, integers in range for gather data.
    Sizes default to small ones; pass e.g. B=8 to change one."""
    unknown = [d for d in sizes if d not in _DEFAULT_SIZES]
    if unknown:
        raise ValueError(f"unknown size {', '.join(unknown)}; the sizes are "
                         f"{', '.join(_DEFAULT_SIZES) or 'none'}")
    dims = {**_DEFAULT_SIZES, **sizes}
    rng = np.random.default_rng(seed)
    out = {}
    for name, (entries, kind) in _RANDOM.items():
        shape = tuple(e if isinstance(e, int) else dims[e] for e in entries)
        if kind == "gather":
            out[name] = np.zeros(shape, dtype=np.int64)
        elif kind == "positive":
            out[name] = rng.uniform(0.5, 1.5, size=shape)
        else:
            out[name] = rng.standard_normal(shape)
    full = bind_sizes(_FORWARD_PLAN, out)
    for name, syms in _GATHER_LIMITS.items():
        high = min(s if isinstance(s, int) else full[s] for s in syms)
        out[name] = rng.integers(0, max(high, 1), size=out[name].shape)
    return out


def _self_check(seed=0):
    """Check backward() against central finite differences of forward()."""
    inputs = random_inputs(seed)
    fwd = forward(**inputs)
    rng = np.random.default_rng(seed + 1)
    seeds = {o: rng.standard_normal(np.shape(fwd[o.replace(".", "_")]))
             for o in _OUTPUTS}
    grads = backward(seeds, **inputs, **fwd)

    def loss(tensors):
        out = forward(**tensors)
        return sum(float((seeds[o] * out[o.replace(".", "_")]).sum())
                   for o in _OUTPUTS)

    sizes = bind_sizes(_FORWARD_PLAN, inputs)
    scale = {t: 1.0 / sizes[_BATCH] for t, role in _DIFFERENTIABLE.items()
             if role == "param" and _BATCH}
    noise = fd_noise({o: fwd[o.replace(".", "_")] for o in _OUTPUTS}, seeds, inputs)
    rows = fd_check(loss, inputs, {t: grads[t] for t in _DIFFERENTIABLE}, scale, noise)
    print(f"{'gradient':<16} {'shape':<16} {'rel. error':>16}  status")
    for name, shape, err, _skipped, ok, note in rows:
        shown = str(list(shape)) if shape else "scalar"
        print(f"{name + '.grad':<16} {shown:<16} {err:>16.2e}  "
              f"{'ok' if ok else 'FAIL'}{'  ' + note if note else ''}")
    return all(row[4] for row in rows)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if _self_check() else 1)
    print(__doc__)
    print("Run with --check to check the gradients against finite differences.")
