"""Helper functions that generated torch modules carry (copied in as text, only
the ones a module uses, so a module never imports tcc). Each is the torch
counterpart of the NumPy helper of the same name in ``helpers.py``: it runs on
the device of its tensors and never reads data back to the host.
"""

import itertools

import torch


def _tensor(x, dt):
    # a number as a 0-d tensor of dt's dtype and device; a tensor as it is
    return x if isinstance(x, torch.Tensor) else dt.new_full((), x)


def _asarray(x, dt):
    # as a tensor of dt's dtype and device, a copy only if needed
    return x.to(dt) if isinstance(x, torch.Tensor) else dt.new_full((), x)


def _array(x, dt):
    # a new tensor of dt's dtype and device (never a view of x)
    return x.to(dt, copy=True) if isinstance(x, torch.Tensor) else dt.new_full((), x)


def _amax(x, axis):
    # the maximum over axis, -inf where the axis is empty (as NumPy's initial=-inf)
    dims = axis if isinstance(axis, tuple) else (axis,)
    if any(x.shape[d] == 0 for d in dims):
        return x.new_full([n for d, n in enumerate(x.shape) if d not in dims], -torch.inf)
    return x.amax(dim=dims)


def _amin(x, axis):
    # the minimum over axis, +inf where the axis is empty
    dims = axis if isinstance(axis, tuple) else (axis,)
    if any(x.shape[d] == 0 for d in dims):
        return x.new_full([n for d, n in enumerate(x.shape) if d not in dims], torch.inf)
    return x.amin(dim=dims)


def _ix(n, axis, ndim, device):
    # arange(n) shaped to broadcast along one of ndim axes (for advanced indexing)
    shape = [1] * ndim
    shape[axis] = n
    return torch.arange(n, device=device).reshape(shape)


def _view(a, offsets, shape, coefs):
    # A strided view v with v[i, j, ...] = a[offsets + i*coefs[0] + j*coefs[1] ...]:
    # the im2col of a convolution without a copy. Bounds were checked before.
    # (an axis of length 1 takes stride 0: its coefficient, however large, never moves)
    strides = [0 if n <= 1 else sum(c * s for c, s in zip(cs, a.stride(), strict=True))
               for cs, n in zip(coefs, shape, strict=True)]
    start = a.storage_offset() + sum(o * s for o, s in zip(offsets, a.stride(), strict=True))
    # torch has no negative strides: an index that walks backwards (h[t - 1 - i]) is
    # viewed forwards from its far end, then flipped (a copy)
    back = [k for k, st in enumerate(strides) if st < 0]
    for k in back:
        start += strides[k] * (shape[k] - 1)
        strides[k] = -strides[k]
    v = torch.as_strided(a, tuple(shape), tuple(strides), start)
    return v.flip(back) if back else v


def _indices(base, index):
    # advanced-index parts as int64 tensors on base's device (sizes become 0-d tensors,
    # filled on the device: no copy from the host)
    return tuple(i.long() if isinstance(i, torch.Tensor) else
                 base.new_full((), i, dtype=torch.long) for i in index)


def _add_at(base, index, value):
    # unbuffered base[index] += value: positions that repeat add up
    base.index_put_(_indices(base, index), _tensor(value, base), accumulate=True)


def _max_at(base, index, value, how="amax"):
    # unbuffered base[index] = max(base[index], value), through flat positions
    index = torch.broadcast_tensors(*_indices(base, index))
    flat = torch.zeros_like(index[0])
    for i, n in zip(index, base.shape, strict=True):
        flat = flat * n + i
    value = torch.broadcast_to(_tensor(value, base), flat.shape)
    base.view(-1).scatter_reduce_(0, flat.reshape(-1), value.reshape(-1), how)


def _min_at(base, index, value):
    # unbuffered base[index] = min(base[index], value)
    _max_at(base, index, value, "amin")


def _pad(x, widths):
    # a copy with zeros before and after each axis: widths ((before, after), ...)
    return torch.nn.functional.pad(x, [w for pair in reversed(widths) for w in pair])


def _add_affine(dst, val, offsets, coefs):
    # dst[offsets + sum_k coefs[k] * i_k] += val[i_0, i_1, ...], where positions repeat
    # (a convolution's input gradient). Slices over the longest index of each axis and
    # loops in Python only over the others: the small window (or stride phase) indices.
    nvar, ndim = len(coefs), dst.ndim
    sliced = {}
    for k in sorted(range(nvar), key=lambda k: -val.shape[k]):
        axes = [a for a in range(ndim) if coefs[k][a]]
        if len(axes) == 1 and axes[0] not in sliced and coefs[k][axes[0]] > 0:
            sliced[axes[0]] = k
    looped = [k for k in range(nvar) if k not in sliced.values()]
    kept = [k for k in range(nvar) if k in sliced.values()]
    perm = [kept.index(sliced[a]) for a in sorted(sliced)]
    for point in itertools.product(*(range(val.shape[k]) for k in looped)):
        at = dict(zip(looped, point, strict=True))
        index = []
        for a in range(ndim):
            start = offsets[a] + sum(coefs[k][a] * i for k, i in at.items())
            if a in sliced:
                k = sliced[a]
                c = coefs[k][a]
                index.append(slice(start, start + c * (val.shape[k] - 1) + 1, c))
            else:
                index.append(start)
        block = val[tuple(at.get(k, slice(None)) for k in range(nvar))]
        dst[tuple(index)] += block.permute(perm)


def _einsum(spec, path, *operands):
    # einsum contracted pairwise along the path chosen at generation time (pairs
    # of positions in the list of operands; each result goes to the end of it)
    inputs, output = spec.split("->")
    terms = inputs.split(",")
    ops = list(operands)
    for pair in path:
        picked = [terms[i] for i in pair]
        args = [ops[i] for i in pair]
        for i in sorted(pair, reverse=True):
            del terms[i], ops[i]
        rest = "".join(terms) + output
        seen = "".join(picked)
        kept = "".join(dict.fromkeys(c for c in seen if c in rest))
        ops.append(torch.einsum(",".join(picked) + "->" + kept, *args))
        terms.append(kept)
    (last,) = terms
    return ops[0] if last == output else torch.einsum(f"{last}->{output}", ops[0])


def _masked_product(spec, keep, s, o):
    # einsum(spec, s, o) where s is selected (exactly 0 wherever keep is False) and a term
    # the selection removes is exactly 0 even where o is inf or nan (a select, not a
    # product), on the device with no read back to the host. In the product o's
    # infinities count as +-1 and its nans as 0, so the masked terms are 0. The kept terms
    # o's non-finite entries make are classed by two contractions of the same form over
    # small integers: kept = the count of them, signed = (those going to +inf) - (those
    # going to -inf). kept + signed > 0 where one goes up or is nan (0 * inf, nan),
    # kept - signed > 0 where one goes down or is nan: +inf, -inf, or nan where both.
    inf = torch.isinf(o)
    out = torch.einsum(spec, s, torch.nan_to_num(o, nan=0.0, posinf=1.0, neginf=-1.0))
    # (float32 counts are exact up to 2**24 terms a sum)
    keep = torch.as_tensor(keep, device=s.device)
    kept = torch.einsum(spec, torch.broadcast_to(keep, s.shape).to(torch.float32),
                        (~torch.isfinite(o)).to(torch.float32))
    signed = torch.einsum(spec, torch.nan_to_num(torch.sign(s)).to(torch.float32),
                          torch.where(inf, torch.sign(o), 0.0).to(torch.float32))
    up, down = kept + signed > 0, kept - signed > 0
    out = torch.where(up & ~down, out + torch.inf, out)  # (keeps what s's own inf made)
    out = torch.where(down & ~up, out - torch.inf, out)
    return torch.where(up & down, torch.nan, out)


def _layer_norm(x, weight, bias, eps):
    # torch's layer norm over the last axis: (y, mean, 1 / sqrt(variance + eps)),
    # the two statistics over the leading axes
    y, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], weight, bias, eps)
    return y, mean.reshape(x.shape[:-1]), rstd.reshape(x.shape[:-1])


def _layer_norm_backward(dy, x, mean, rstd, weight, mask):
    # torch's layer norm backward over the last axis: (x.grad, weight.grad, bias.grad),
    # None where mask is False; mean None: x is centred already (its mean is 0)
    bias = dy.new_empty(dy.shape[-1:]) if mask[2] else None    # (only its shape is read)
    mean = rstd.new_zeros(rstd.shape) if mean is None else mean
    return torch.ops.aten.native_layer_norm_backward(
        dy, x, x.shape[-1:], mean, rstd, weight, bias, list(mask))


def _fit(x, shape):
    # x in the leading corner of a zero tensor of the given shape; x itself (no
    # copy) when it has that shape already
    if tuple(x.shape) == tuple(shape):
        return x
    out = x.new_zeros(shape)
    out[tuple(slice(0, n) for n in x.shape)] = x
    return out


def _extent(n, reach, stride):
    # the extent of an axis a strided convolution reads: all n of it when the
    # positions past reach are fewer than the stride (the outputs are the same),
    # so the kernels take the tensor whole; else the first reach positions
    return n if n - reach < stride else reach


def _conv_backward(x, w, g, stride):
    # both gradients of a valid convolution in one call, as autograd makes it (the
    # operands are made contiguous once): (x.grad, w.grad)
    n = len(stride)
    dx, dw, _ = torch.ops.aten.convolution_backward(
        g, x, w, None, list(stride), [0] * n, [1] * n, False, [0] * n, 1, [True, True, False])
    return dx, dw
