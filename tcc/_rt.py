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


def fd_check(loss, inputs, grads, scale, h=1e-6, tol=1e-6):
    """Central finite differences of ``loss`` against ``grads``, per tensor.

    Positions where the one-sided differences disagree crossed a kink and are
    skipped. Returns rows (name, shape, worst error, skipped, ok, note).
    """
    rows = []
    with _np_rt.errstate(all="ignore"):
        base = loss(inputs)
        for t, g in grads.items():
            x = inputs[t]
            if g is None:
                rows.append((t, x.shape, float("nan"), 0, False, "not computed"))
                continue
            g = _np_rt.asarray(g, dtype=_np_rt.float64)
            if g.shape != x.shape:
                rows.append((t, x.shape, float("nan"), 0, False,
                             f"has shape {g.shape}, expected {x.shape}"))
                continue
            fd = _np_rt.zeros(x.shape)
            kink = _np_rt.zeros(x.shape, dtype=bool)
            for pos in _np_rt.ndindex(*x.shape):
                plus, minus = x.copy(), x.copy()
                plus[pos] += h
                minus[pos] -= h
                lp, lm = loss({**inputs, t: plus}), loss({**inputs, t: minus})
                fd[pos] = (lp - lm) / (2 * h) * scale.get(t, 1.0)
                right, left = (lp - base) / h, (base - lm) / h
                if abs(right - left) > 1e-3 * max(1.0, abs(right), abs(left)):
                    kink[pos] = True
            keep = ~kink
            denom = max(1.0, float(_np_rt.max(_np_rt.abs(fd[keep]), initial=0.0)))
            diff = _np_rt.where(keep, _np_rt.abs(g - fd), 0.0) / denom
            err = float(_np_rt.max(diff, initial=0.0))
            if not (_np_rt.all(_np_rt.isfinite(g[keep])) and
                    _np_rt.all(_np_rt.isfinite(fd[keep]))):
                err = float("nan")
            ok = err <= tol
            note = ""
            if not ok:
                bad = _np_rt.argwhere(~(diff <= tol) & keep)
                if len(bad):
                    p = tuple(int(i) for i in bad[0])
                    note = (f"first at {list(p)}: backward gives {g[p]:.6g}, "
                            f"finite differences {fd[p]:.6g}")
            rows.append((t, x.shape, err, int(kink.sum()), ok, note))
    return rows
