"""Lowering issue 12's forms: equalities that remove a summed index, written
ranges with zero padding, and seeds a backward adds to.

- An equality ``(k == y[b])`` or ``(i == j)`` that multiplies a term summed
  over ``k`` (or ``j``) leaves one point of that sum: the index is replaced by
  the other side everywhere in the term, so ``sum_k (k == y[b]) * log(p[b, k])``
  is the gather ``log(p[b, y[b]])`` and ``sum_j A[i, j] * (i == j)`` the
  diagonal ``A[i, i]``, with no mask. Only where the other side is sure to be
  a position in the index's range: for a gather, where a gather elsewhere in
  the program has its values checked against that range (a comparison's own
  values are not checked, and an out-of-range one makes the term 0).
- A statement with written ranges reads 0 outside a tensor and drops updates
  outside it. Each tensor it reads out of range is padded once (``pad``, a
  zero-bordered copy made once per function for an argument), and a target it
  writes out of range is computed in a padded buffer whose window is the
  tensor: the backward's scatter into a padded buffer mirrors the forward's
  read of a padded copy. The statement is then lowered as any other, on
  views of the padded arrays (tap by tap for a convolution).

Every comparison this leaves is lowered by ``operands``: a boolean array over
``arange`` views, selecting (``where``) the factors it multiplies.
"""

from __future__ import annotations

from dataclasses import replace

from tcc import algebra
from tcc.check import StmtInfo
from tcc.errors import TccError
from tcc.ir import Affine, Ref, map_refs, reads

from .operands import Context, ap, is_guard, mul
from .target import Assign, Comment, Index, Lit, Name, Op, Slice, Tup

# ------------------------------------------------------------ linear sizes
# A size expression c0 + sum c * symbol, as {symbol: c} with the constant under 1.
# Sizes are never negative, so a form whose coefficients and constant are all
# >= 0 is >= 0 whatever the sizes (and all <= 0: <= 0).


def _lin(entry) -> dict:
    return {1: entry} if isinstance(entry, int) else {entry: 1}


def _add(*forms, scale=None) -> dict:
    out: dict = {}
    for k, f in enumerate(forms):
        c = 1 if scale is None else scale[k]
        for s, v in f.items():
            out[s] = out.get(s, 0) + c * v
    return {s: v for s, v in out.items() if v}


def _sign(f: dict) -> int | None:
    """1 if f >= 0 for all sizes, -1 if f <= 0, else None (0 counts as both)."""
    if all(v >= 0 for v in f.values()):
        return 1
    if all(v <= 0 for v in f.values()):
        return -1
    return None


def _span(ix: Affine, ranges) -> tuple[dict, dict]:
    """(lowest, highest) position an affine index names over its loop ranges."""
    base = _add({1: ix.const}, *({d: c} for d, c in ix.dims))
    lo, hi = dict(base), dict(base)
    for v, c in ix.terms:
        reach = _add(_lin(ranges[v]), {1: -1}, scale=[c, c])     # c * (n - 1)
        if c > 0:
            hi = _add(hi, reach)
        else:
            lo = _add(lo, reach)
    return lo, hi


def _value(ctx: Context, f: dict):
    """A linear size form as a target IR value."""
    node = None
    for s, c in f.items():
        if s == 1:
            continue
        term = ctx.size(s) if abs(c) == 1 else mul(Lit(abs(c)), ctx.size(s))
        if node is None:
            node = term if c > 0 else Op("neg", (term,))
        else:
            node = Op("+" if c > 0 else "-", (node, term))
    const = f.get(1, 0)
    if node is None:
        return Lit(const)
    if const:
        node = Op("+" if const > 0 else "-", (node, Lit(abs(const))))
    return node


class Pad:
    """How far outside an axis the accesses reach: a linear form, or a value
    computed at run time (``max(0, ...)``), on each side."""

    def __init__(self):
        self.need: list[list[dict]] = [[], []]      # candidate reaches before, after

    def add(self, before: dict, after: dict):
        for side, f in enumerate((before, after)):
            if _sign(f) != -1 and f not in self.need[side]:
                self.need[side].append(f)

    @property
    def empty(self) -> bool:
        return not self.need[0] and not self.need[1]

    def side(self, k: int) -> list[dict]:
        """The candidates no other one is known to exceed."""
        fs = self.need[k]
        return [f for f in fs if not any(g != f and _sign(_add(g, f, scale=[1, -1])) == 1
                                         for g in fs)]


def _width(ctx: Context, forms: list[dict]):
    """(static form or None, value) of max(0, forms...)."""
    if not forms:
        return {}, Lit(0)
    if len(forms) == 1 and _sign(forms[0]) == 1:
        return forms[0], _value(ctx, forms[0])
    node = Lit(0)
    for f in forms:
        node = ap("imax", node, _value(ctx, f))
    return None, node


# ------------------------------------------------------------ padding

def lower_padded(ctx: Context, si: StmtInfo, lower) -> list:
    """A statement with written ranges, on zero-padded copies: its reads of a
    tensor outside its axes read 0 and its updates outside are dropped."""
    s, ranges = si.stmt, si.ranges
    pads: dict[str, dict[int, Pad]] = {}
    for r in [s.target, *reads(s.expr)]:
        shape = ctx.shape_of(r.tensor)
        for axis, ix in enumerate(r.index):
            if not isinstance(ix, Affine) or (ix.plain and ctx.whole_axis(r.tensor, axis)):
                continue            # a gather is never padded; a plain index is in range
            lo, hi = _span(ix, ranges)
            before = _add(lo, scale=[-1])
            after = _add(hi, _lin(shape[axis]), {1: -1}, scale=[1, -1, -1])
            pads.setdefault(r.tensor, {}).setdefault(axis, Pad()).add(before, after)
    pads = {t: {a: p for a, p in axes.items() if not p.empty} for t, axes in pads.items()}
    pads = {t: axes for t, axes in pads.items() if axes}
    out: list = []
    done: list = []
    renamed: dict[str, tuple[str, dict]] = {}
    target = s.target.tensor
    for t, axes in pads.items():
        local, shifts, pre, post = _padded(ctx, t, axes, t == target)
        out += pre
        done += post
        renamed[t] = (local, shifts)

    windows: dict = {}

    def shifted(r: Ref) -> Ref:
        if r.tensor not in renamed:
            return r
        local, shifts = renamed[r.tensor]
        moved = [axis for axis, f in shifts.items() if f]
        gathered = [axis for axis in moved if not isinstance(r.index[axis], Affine)]
        if gathered:
            # a gather is never padded: on an axis padded for another read, this
            # read takes the tensor itself, if it needs no padding of its own
            if not any(isinstance(r.index[axis], Affine) for axis in moved):
                return r
            if r.tensor == target:
                raise TccError(f"a read of {r.tensor} that gathers on an axis padded for "
                               "another read and is padded on another axis is not lowered "
                               "by the compiled backends yet", r.pos or s.pos)
            # else it reads a view of the padded copy that is the tensor's own
            # window on the gathered axes (pad once, then gather)
            key = (local, tuple(gathered))
            if key not in windows:
                windows[key] = _window(ctx, r.tensor, local, shifts, gathered, out)
            local = windows[key]
        index = tuple(_shift(ix, shifts[axis]) if axis in moved and isinstance(ix, Affine)
                      else ix for axis, ix in enumerate(r.index))
        return Ref(local, index, r.pos)

    inner = replace(s, target=shifted(s.target), expr=map_refs(s.expr, shifted), written=())
    body = lower(ctx, StmtInfo(inner, ranges))
    # quote the statement as written (the lowered one reads the padded copies)
    if body and isinstance(body[0], Comment):
        body = [Comment(str(s)), *out, *body[1:]]
    else:
        body = [Comment(str(s)), *out, *body]
    if target in renamed:
        ctx.defined.add(target)
    return body + done


def _window(ctx: Context, t: str, local: str, shifts: dict, gathered: list[int], out: list):
    """A view of t's padded copy ``local`` that is t's own extent on the
    ``gathered`` axes (where a gather reads it, unpadded) and padded on the
    others; its statement is appended to ``out``. Returns its local name."""
    shape, padded_shape = ctx.shape_of(t), ctx.shape_of(local)
    parts, new_shape = [], []
    for axis, entry in enumerate(padded_shape):
        if axis in gathered:
            start = _value(ctx, shifts[axis])
            parts.append(Slice(start, Op("+", (start, ctx.size(shape[axis])))))
            new_shape.append(shape[axis])
        else:
            parts.append(Slice())
            new_shape.append(entry)
    while parts and parts[-1] == Slice():
        parts.pop()
    n, key = 1, f"{t}__win"
    while key in ctx.extra_shapes:
        n += 1
        key = f"{t}__win{n}"
    ctx.extra_shapes[key] = tuple(new_shape)
    ctx.padded[key] = set(ctx.padded.get(local, ())) - set(gathered)
    out.append(Assign(ctx.local(key), Index(ctx.local(local), tuple(parts))))
    return key


def _shift(ix: Affine, shift) -> Affine:
    """ix + shift (a linear size form)."""
    dims = dict(ix.dims)
    const = ix.const
    for sym, c in shift.items():
        if sym == 1:
            const += c
        else:
            dims[sym] = dims.get(sym, 0) + c
    return Affine(ix.terms, const, tuple((d, c) for d, c in dims.items() if c), ix.pos)


def _padded(ctx: Context, t: str, axes: dict[int, Pad], is_target: bool):
    """(local name, index shift per axis, statements before, statements after) for
    tensor t padded on ``axes``."""
    shape = ctx.shape_of(t)
    name = ctx.local(t)
    if not is_target and t in ctx.value_casts:      # integer data read as numbers
        name = Name(ctx.value_casts[t])
    widths, shifts, sizes = [], {}, []
    pre: list = []
    key_parts = []
    for axis in range(len(shape)):
        if axis not in axes:
            widths.append(Tup((Lit(0), Lit(0))))
            sizes.append(None)
            continue
        pad = axes[axis]
        bf, bv = _width(ctx, pad.side(0))
        af, av = _width(ctx, pad.side(1))
        key_parts.append((axis, str(bv), str(av)))
        if bf is None:          # known at run time only: bind it once
            bname = ctx.local(f"{t}__before{axis}")
            pre.append(Assign(bname, bv))
            ctx.loop_names.add(bname.name)
            sym = f"{t}__before{axis}"
            ctx.size_values[sym] = bname
            bf, bv = {sym: 1}, bname
        shifts[axis] = bf
        widths.append(Tup((bv, av)))
        sizes.append((bf, af, av))
    key = ("pad", t, tuple(key_parts))
    local_key = f"{t}__pad"
    if not is_target and key in ctx.copies:
        local = ctx.copies[key]
        return local, shifts, pre, []
    n = 1
    while local_key in ctx.extra_shapes and ctx.copies.get(key) != local_key:
        n += 1
        local_key = f"{t}__pad{n}"
    local = ctx.local(local_key)
    new_shape = []
    for axis, entry in enumerate(shape):
        if sizes[axis] is None:
            new_shape.append(entry)
            continue
        bf, af, av = sizes[axis]
        sym = f"{local_key}:{axis}"
        base = _value(ctx, _lin(entry)) if isinstance(entry, int) else ctx.size(entry)
        total = Op("+", (base, _value(ctx, bf))) if bf else base
        if af is not None:
            total = Op("+", (total, _value(ctx, af))) if af else total
        else:
            total = Op("+", (total, av))
        ctx.size_values[sym] = total
        new_shape.append(sym)
    ctx.extra_shapes[local_key] = tuple(new_shape)
    ctx.padded[local_key] = set(shifts)
    post: list = []
    if is_target:
        if t in ctx.defined:
            pre.append(Assign(local, ap("pad", name, Tup(tuple(widths)))))
            ctx.defined.add(local_key)
        else:
            ctx.defined.discard(local_key)
        window = []
        for axis, entry in enumerate(shape):
            if axis not in shifts:
                window.append(Slice())
                continue
            start = _value(ctx, shifts[axis])
            stop = ctx.size(entry)
            if start == Lit(0):
                window.append(Slice(None, stop))
            else:
                window.append(Slice(start, Op("+", (start, stop))))
        while window and window[-1] == Slice():
            window.pop()
        post.append(Assign(name, Index(local, tuple(window))))
    else:
        pre.append(Assign(local, ap("pad", name, Tup(tuple(widths)))))
        if t in ctx.info.inputs and t not in ctx.info.computed:
            ctx.copies[key] = local_key   # an argument: one padded copy serves every read
    return local_key, shifts, pre, post


# ------------------------------------------------------------ equalities

def eliminate(ctx: Context, factors, summed, ranges):
    """Remove summed indices that an equality among a term's factors fixes:
    ``sum_k (k == e) * f(k)`` is ``f(e)``. Returns (factors, removed indices)."""
    factors = list(factors)
    gone: list[str] = []
    while True:
        found = None
        for n, (up, f) in enumerate(factors):
            if not (is_guard(up, f) and f.op == "=="):
                continue
            for side, other in ((f.lhs, f.rhs), (f.rhs, f.lhs)):
                v = side.plain if isinstance(side, Affine) else None
                if v is None or v not in summed or v in gone or v in other.vars:
                    continue
                found = _substitute(ctx, factors, n, v, other, ranges)
                if found is not None:
                    break
            if found is not None:
                break
        if found is None:
            return factors, set(gone)
        factors, v = found
        gone.append(v)


def _substitute(ctx: Context, factors, n, v, rep, ranges):
    """factors[n] is ``(v == rep)``: the other factors with v replaced by rep,
    where that is sound (rep always names a position in v's range); else None."""
    size = ranges[v]
    if isinstance(rep, Affine):
        lo, hi = _span(rep, ranges)
        # rep must lie in v's range wherever the term is read (else it would
        # read outside a tensor): keep the mask then
        if _sign(lo) != 1 or _sign(_add(_lin(size), hi, {1: -1}, scale=[1, -1, 1])) != 1:
            return None
    elif not any(step[0] == "gather" and step[1] == rep.tensor and step[4] == size
                 for step in ctx.info.plan):
        # the values of a gather in a comparison are not range-checked (a label
        # out of range makes the term 0): unless a gather elsewhere checks them
        # against v's range, keep the mask
        return None
    out = []
    for k, (up, f) in enumerate(factors):
        if k == n:
            continue
        g = algebra.subst(f, {v: rep})
        if g is None:
            return None         # a gather inside a gather's index, which cannot be
        out.append((up, g))
    return out, v


def copy_seed(ctx: Context, t: str) -> list:
    """A data seed the backward adds to starts from the given values, in a copy
    (the caller's array is not modified)."""
    ctx.defined.add(t)
    return [Assign(ctx.local(t), ap("array", ctx.local(t)))]


__all__ = ["lower_padded", "eliminate", "copy_seed"]
