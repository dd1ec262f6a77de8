# The run-time checks of generated torch modules (tcc/compiler.py copies this
# file's text into a module of the torch backend, after tcc/_rt.py's _rt_size,
# _rt_span, bind_sizes (as _bind_sizes), seed_names and need_saved, so the NumPy
# and torch modules raise the same errors). Tensors stay where
# they are: the checks read shapes and dtypes, never data, except for the
# range of gather positions (the NumPy module's check, two syncs per tensor).
# The finite differences of `--check` run on the CPU in float64.

import itertools

import torch

_bind_sizes = None  # replaced by tcc/_rt.py's bind_sizes in the module


class _Kind:
    # a torch dtype with NumPy's one-letter kind, for bind_sizes' messages
    def __init__(self, dtype):
        self.dtype = dtype
        self.kind = ("c" if dtype.is_complex else "f" if dtype.is_floating_point else
                     "b" if dtype == torch.bool else "u" if dtype == torch.uint8 else "i")

    def __str__(self):
        return str(self.dtype).replace("torch.", "")


class _Meta:
    # what bind_sizes reads of a tensor: rank, shape, dtype kind, and the extremes
    # of gather positions (0-d tensors; bind_sizes turns them into ints)
    def __init__(self, t):
        self.t, self.ndim, self.shape = t, t.ndim, tuple(t.shape)
        self.size, self.dtype = t.numel(), _Kind(t.dtype)

    def min(self):
        return self.t.min()

    def max(self):
        return self.t.max()


def bind_sizes(plan, arrays, sizes=None):
    """Check the tensors' shapes against the plan; return {dim name: size}."""
    return _bind_sizes(plan, {t: _Meta(a) for t, a in arrays.items()}, sizes)


def computation_dtype(arrays):
    """The promoted dtype of the floating tensors passed in (float64 if none)."""
    dt = None
    for name, a in arrays.items():
        if a.is_complex():
            raise ValueError(f"tensor '{name}' is complex ({_Kind(a.dtype)}); tcc computes in "
                             "real floating point: pass its real part")
        if a.is_floating_point():
            dt = a.dtype if dt is None else torch.promote_types(dt, a.dtype)
    return torch.float64 if dt is None else dt


def take(tensors, kinds, what, optional=()):
    """Check the keyword tensors of forward() or backward() and convert them.

    kinds: {name: "float" | "gather"}; names in ``optional`` may be passed and
    are converted but not required. Returns (tensors, dt): dt is an empty
    tensor of the computation dtype on the tensors' device, which every new
    tensor is made from (dt.new_zeros, x.to(dt)).
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
    raw = {t: a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
           for t, a in tensors.items()}
    devices = {}
    for t, a in raw.items():
        devices.setdefault(a.device, t)
    if len(devices) > 1:
        raise ValueError(f"{what}() got tensors on different devices: "
                         + ", ".join(f"'{t}' on {d}" for d, t in devices.items()))
    device = next(iter(devices), torch.device("cpu"))
    dtype = computation_dtype({t: a for t, a in raw.items() if kinds[t] != "gather"})
    arrays = {}
    for t, a in raw.items():
        if kinds[t] == "gather":
            if a.is_floating_point() or a.is_complex() or a.dtype == torch.bool:
                raise ValueError(f"tensor '{t}' holds gather positions and must be an "
                                 f"integer tensor, not {_Kind(a.dtype)}")
            arrays[t] = a
        else:
            arrays[t] = a.to(dtype)
    return arrays, torch.empty(0, dtype=dtype, device=device)


def seed(grads, name, shape, dt, what="seed"):
    g = grads.get(name)
    if g is None:
        return dt.new_zeros(shape)
    g = g if isinstance(g, torch.Tensor) else torch.as_tensor(g)
    if g.is_complex():
        raise ValueError(f"the {what} for '{name}' is complex ({_Kind(g.dtype)})")
    if tuple(g.shape) != tuple(shape):
        raise ValueError(f"the {what} for '{name}' has shape {tuple(g.shape)}, but '{name}' "
                         f"has shape {tuple(shape)}")
    return g.to(dt)


# Rounding in a central difference is about eps * |loss terms| / h; a
# difference below FD_NOISE * (the loss's size) is not evidence either way.
FD_NOISE = 3e-8
# Rounding in the backward itself: about 1000 ulps of (largest seed) x (largest
# input, at least 1), for references that are exactly 0.
FD_ROUNDING = 1024 * 2.0 ** -52


def loss_scale(outputs, seeds):
    """The size of the checked scalar's terms: sum |seed * output|."""
    total = sum(float((seeds[o] * outputs[o]).abs().sum()) for o in seeds)
    return total if abs(total) < float("inf") else 0.0


def _top(a):
    """The largest finite |element| of ``a`` (0 for none)."""
    a = a.to(torch.float64).abs()
    a = a[torch.isfinite(a)]
    return float(a.max()) if a.numel() else 0.0


def fd_noise(outputs, seeds, inputs):
    """The absolute difference below which a gradient and its finite
    difference cannot be told apart: the loss's rounding or the backward's."""
    seed = max((_top(a) for a in seeds.values()), default=0.0)
    big = max((_top(a) for a in inputs.values()), default=0.0)
    return max(FD_NOISE * loss_scale(outputs, seeds), FD_ROUNDING * seed * max(big, 1.0))


def finite_differences(loss, inputs, t, scale=1.0, h=1e-6):
    """(fd, kink): central differences of ``loss`` in every position of ``t``;
    kink marks positions where the one-sided differences disagree."""
    x = inputs[t].to(torch.float64)
    base = loss(inputs)
    fd = torch.zeros(x.shape, dtype=torch.float64)
    kink = torch.zeros(x.shape, dtype=torch.bool)
    for pos in itertools.product(*(range(n) for n in x.shape)):
        plus, minus = x.clone(), x.clone()
        plus[pos] += h
        minus[pos] -= h
        lp, lm = loss({**inputs, t: plus}), loss({**inputs, t: minus})
        fd[pos] = (lp - lm) / (2 * h) * scale
        right, left = (lp - base) / h, (base - lm) / h
        if abs(right - left) > 1e-3 * max(1.0, abs(right), abs(left)):
            kink[pos] = True
    return fd, kink


def compare(got, want, keep, noise, tol=1e-6):
    """(error, first): the worst |got - want| on ``keep`` over max(largest
    |want|, noise / tol), and the first position beyond ``tol``."""
    got, want = got.to(torch.float64).cpu(), want.to(torch.float64)
    kept = want[keep].abs()
    size = float(kept.max()) if kept.numel() else 0.0
    denom = max(size, noise / tol, 1e-300)
    diff = torch.where(keep, (got - want).abs(), torch.zeros(())) / denom
    finite = bool(torch.isfinite(got[keep]).all() and torch.isfinite(want[keep]).all())
    err = (float(diff.max()) if diff.numel() else 0.0) if finite else float("nan")
    first = None
    if not err <= tol:
        bad = torch.nonzero(~(diff <= tol) & keep)
        if len(bad):
            first = tuple(int(i) for i in bad[0])
    return err, first


def fd_check(loss, inputs, grads, scale, noise=0.0, h=1e-6, tol=1e-6):
    """Central finite differences of ``loss`` against ``grads``, per tensor,
    each error relative to that gradient's own size. Positions where the
    one-sided differences disagree crossed a kink and are skipped. Returns
    rows (name, shape, worst error, skipped, ok, note)."""
    rows = []
    for t, g in grads.items():
        x = inputs[t]
        if tuple(g.shape) != tuple(x.shape):
            rows.append((t, tuple(x.shape), float("nan"), 0, False,
                         f"has shape {tuple(g.shape)}, expected {tuple(x.shape)}"))
            continue
        s = scale.get(t, 1.0)
        fd, kink = finite_differences(loss, inputs, t, s, h)
        err, first = compare(g, fd, ~kink, noise * s, tol)
        note = ""
        if first is not None:
            note = (f"first at {list(first)}: backward gives {float(g[first]):.6g}, "
                    f"finite differences {float(fd[first]):.6g}")
        rows.append((t, tuple(x.shape), err, int(kink.sum()), err <= tol, note))
    return rows
