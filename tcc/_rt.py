# Run-time size checks shared by the reference interpreter and every
# generated module (the code generators copy this file's text into the
# module, so generated code never imports tcc).
#
# A "plan" is a list of steps computed at compile time by tcc.check:
#   ("shape", tensor, entries, integer)  bind or check each axis of an array;
#                                        entries are dim names or int literals
#   ("valid", sym, var, constraints)     the largest in-bounds range of an index
#   ("equal", sym, value, what)          a dim name against a literal (or a written range)
#   ("alias", sym, other, what)          an output dim named by inference
#   ("bounds", tensor, axis, size, terms, const[, statement])  an affine access stays
#                                        in bounds (the statement's text, for the message)
#   ("gather", data, tensor, axis, size) gather values are positions on that axis
# Each failure raises ValueError naming the tensor, the axis and the sizes.

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


# Rounding in a central difference is about eps * |loss terms| / h; a
# difference below FD_NOISE * (the loss's size) is not evidence either way.
FD_NOISE = 3e-8
# Rounding in the backward itself: about 1000 ulps of (largest seed) x (largest
# input, at least 1). It matters where the references are exactly 0, as when
# every output is 0, and a backward sum of terms that cancel leaves 1e-16.
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
