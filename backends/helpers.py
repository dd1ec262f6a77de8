"""Helper functions that generated modules carry (copied in as text, only the
ones a module uses, so a module never imports tcc)."""

import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tcc.functions import _sigmoid  # noqa: F401  (copied into modules from there)


def _ix(n, axis, ndim):
    # arange(n) shaped to broadcast along one of ndim axes (for advanced indexing)
    shape = [1] * ndim
    shape[axis] = n
    return np.arange(n).reshape(shape)


def _view(a, offsets, shape, coefs):
    # A read-only strided view v with v[i, j, ...] = a[offsets + i*coefs[0] + j*coefs[1] ...]:
    # the im2col of a convolution without a copy. Bounds were checked before.
    base = a[tuple(slice(o, None) for o in offsets)]
    # (an axis of length 1 takes stride 0: its coefficient, however large, never moves)
    strides = tuple(0 if n <= 1 else sum(c * s for c, s in zip(cs, a.strides, strict=True))
                    for cs, n in zip(coefs, shape, strict=True))
    return np.lib.stride_tricks.as_strided(base, shape=shape, strides=strides,
                                           writeable=False)


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
        dst[tuple(index)] += block.transpose(perm)


def _masked_product(spec, keep, s, o):
    # einsum(spec, s, o) where s is selected (exactly 0 wherever keep is False) and a term
    # the selection removes is exactly 0 even where o is inf or nan (a select, not a
    # product). The module calls this only when o has a non-finite entry; else its plain
    # product (np.tril(a) @ v) is exact as it is. In the product o's infinities count as
    # +-1 and its nans as 0, so the masked terms are 0. The kept terms o's non-finite
    # entries make are classed by two contractions of the same form over small integers:
    # kept = the count of them, signed = (those going to +inf) - (those going to -inf).
    # kept + signed > 0 where one goes up or is nan (0 * inf, nan), kept - signed > 0
    # where one goes down or is nan: +inf, -inf, or nan where both.
    inf = np.isinf(o)
    out = np.einsum(spec, s, np.nan_to_num(o, nan=0.0, posinf=1.0, neginf=-1.0),
                    optimize=True)
    # (float32 counts are exact up to 2**24 terms a sum)
    kept = np.einsum(spec, np.broadcast_to(keep, s.shape).astype(np.float32),
                     (~np.isfinite(o)).astype(np.float32), optimize=True)
    signed = np.einsum(spec, np.nan_to_num(np.sign(s)).astype(np.float32),
                       np.where(inf, np.sign(o), 0).astype(np.float32), optimize=True)
    up, down = kept + signed > 0, kept - signed > 0
    with np.errstate(invalid="ignore"):                # (inf - inf: nan, as it should)
        out = np.where(up & ~down, out + np.inf, out)  # (keeps what s's own inf made there)
        out = np.where(down & ~up, out - np.inf, out)
    return np.where(up & down, np.nan, out)


_EXPRESSIONS = {}


def _contract(spec, path, *operands):
    # an opt_einsum contract_expression along the path chosen at generation time
    # (None: opt_einsum's choice), built once per shape signature, then reused
    key = (spec,) + tuple(op.shape for op in operands)
    expr = _EXPRESSIONS.get(key)
    if expr is None:
        expr = _EXPRESSIONS[key] = oe.contract_expression(
            spec, *(op.shape for op in operands), optimize=path or "auto-hq")
    return expr(*operands)


oe = None  # replaced by `import opt_einsum as oe` in modules of that backend


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


def _tuned(site, cands, key, args):
    # cands: ((label, function), ...) computing the same value; args: the arrays a
    # function updates in place, copied for each candidate timed
    mode = _tune_mode()
    labels = [label for label, _ in cands]
    if mode in labels:
        return cands[labels.index(mode)][1](*args)
    choice = 0 if mode == "0" else _TUNE_CHOICES.get((site, key))
    if choice is not None:
        return cands[choice][1](*args)
    # two rounds over the candidates (the second only within _TUNE_BUDGET seconds);
    # each candidate's best time counts, and the fastest one's result is returned
    best, start = None, time.perf_counter()
    for rnd in range(2):
        for k, (_, fn) in enumerate(cands):
            if (k or rnd) and time.perf_counter() - start > _TUNE_BUDGET / (2 - rnd):
                break
            mine = tuple(a.copy() for a in args)
            t0 = time.perf_counter()
            out = fn(*mine)
            took = time.perf_counter() - t0
            if best is None or took < best[0]:
                best = (took, k, out)
            if k == 0 and took < _TUNE_FLOOR:
                _TUNE_CHOICES[(site, key)] = 0
                return out
    _TUNE_CHOICES[(site, key)] = best[1]
    return best[2]


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
