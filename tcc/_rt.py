# Run-time size checks shared by the reference interpreter and every
# generated module (the code generators copy this file's text into the
# module, so generated code never imports tcc).
#
# A "plan" is a list of steps computed at compile time by tcc.check:
#   ("shape", tensor, entries, integer)  bind or check each axis of an array;
#                                        entries are dim names or int literals
#   ("valid", sym, var, constraints)     the largest in-bounds range of an index
#   ("equal", sym, value, what)          a dim name against a literal
#   ("alias", sym, other, what)          an output dim named by inference
#   ("bounds", tensor, axis, size, terms, const)  an affine access stays in bounds
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
            best = None
            for tensor, axis, size, coef, terms, const in constraints:
                span = _rt_span(sizes, terms, const)
                if span is None:
                    best = 0
                    continue
                lo, hi = span
                s = _rt_size(sizes, size)
                n = (s - 1 - hi) // coef + 1 if coef > 0 else lo // (-coef) + 1
                n = max(n, 0)
                if best is None or n < best:
                    best, limit = n, (tensor, axis, s)
            if best is None or best <= 0:
                tensor, axis, s = limit if best is not None else ("?", 0, 0)
                raise ValueError(f"the range of index '{var}' is empty: tensor '{tensor}' "
                                 f"axis {axis} has size {s}, too small for the accesses to it")
            if sym in sizes and sizes[sym] != best:
                raise ValueError(f"index '{var}' ranges over {best} positions, but {sym} = "
                                 f"{sizes[sym]} from {where.get(sym, 'before')}")
            sizes[sym] = best
            where.setdefault(sym, f"the range of '{var}'")
        elif kind == "equal":
            _, sym, value, what = step
            if sizes[sym] != value:
                raise ValueError(f"{what}: {sym} = {sizes[sym]} from "
                                 f"{where.get(sym, 'the arrays')}, but must be {value}")
        elif kind == "alias":
            _, sym, other, what = step
            n = _rt_size(sizes, other)
            if sym in sizes and sizes[sym] != n:
                raise ValueError(f"{what}: {sym} = {sizes[sym]} from "
                                 f"{where.get(sym, 'the arrays')}, but the loops give {n}")
            sizes[sym] = n
        elif kind == "bounds":
            _, tensor, axis, size, terms, const = step
            span = _rt_span(sizes, terms, const)
            s = _rt_size(sizes, size)
            if span is not None and (span[0] < 0 or span[1] >= s):
                raise ValueError(f"tensor '{tensor}' axis {axis} has size {s}, but the index "
                                 f"ranges over {span[0]}..{span[1]}")
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
