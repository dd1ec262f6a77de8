"""Lowering recurrences (LANGUAGE.md "Recurrences"): only what must be sequential is.

A program with recurrences runs unit by unit in ``info.schedule``. A statement
off every cycle runs over all steps at once, as any statement does (``W x[t]``
for every t is one contraction; parameter gradients sum over t and b in one).
A recurrence's statements run in one Python ``for`` over the step index, in
its direction, each step one update vectorized over the other indices (the
step index held fixed, as a tap loop holds its window index).

Steps outside 0..T-1: a tensor a recurrence updates is allocated once with
zero rows before and after its steps on the step axis (as many as its reads
and updates reach), and the tensor itself is the view of its steps. A read
at ``t - 1`` at t = 0 reads a zero row; an update there writes a pad row,
which is zeroed again right after the update (so it is dropped). A ``data``
seed the program updates (``h.grad`` in a backward) is copied into its
buffer first. A statement with written ranges whose only reads outside a
tensor are offsets along one axis (``h[t - 1]`` in ``U.grad += a.grad[t] *
h[t - 1]``, ``h`` data of the backward) reads a zero-padded copy.

It is one module a little over 500 lines on purpose: the schedule walk, the
padded buffers and the step loop share one state (``_State``: which buffer
holds which tensor, which rows are padding); the live-slot restriction is the
part that stands alone, in ``recurrence_slots.py``.
"""

from __future__ import annotations

import math
from dataclasses import replace

from tcc.check import StmtInfo
from tcc.errors import TccError
from tcc import algebra
from tcc.ir import Affine, Bin, Gather, IndexCmp, Num, Ref, children, index_cmps, map_refs, \
    reads, rebuild

from .breadth import _add, _lin, _shift, _value
from .operands import Context, ap, shape_tuple, split_factors, split_terms
from .recurrence_slots import live_slots, restrict
from .target import ALL, Assign, Comment, For, If, Index, Lit, Name, Op, Slice, Tup, Update, walk


def lower_program(ctx: Context, lower_statement) -> list:
    """Every unit of ``ctx.info.schedule``, in order."""
    info = ctx.info
    pads = _pads(info)
    state = _State(ctx, pads)
    out: list = []
    for unit in info.schedule:
        rec = info.recurrence_of(unit[0])
        if rec is None:
            si = info.stmts[unit[0]]
            out += state.allocate(_touched(si.stmt), whole_unit=False)
            out += state.statement(si, lower_statement)
        else:
            out += state.allocate({t for k in unit for t in _touched(info.stmts[k].stmt)},
                                  whole_unit=True)
            out += state.recurrence(rec, lower_statement)
    return _unused_sizes(out, state.sizes)


def _fix_comparisons(s, v: str):
    """The statement with the step index v held fixed in its index comparisons
    too (``(i < t)`` at step t compares i with the Python variable t), as
    ``lower.fix_indices`` does in its reads."""
    def fix(ix):
        if isinstance(ix, Gather):
            return Gather(ix.tensor, tuple(fix(a) for a in ix.index))
        if v not in ix.vars:
            return ix
        return Affine(tuple((u, c) for u, c in ix.terms if u != v), ix.const,
                      ix.dims + tuple((u, c) for u, c in ix.terms if u == v), ix.pos)

    def walk_expr(e):
        if isinstance(e, IndexCmp):
            return IndexCmp(e.op, fix(e.lhs), fix(e.rhs), e.pos)
        return rebuild(e, [walk_expr(c) for c in children(e)])
    return replace(s, expr=walk_expr(s.expr))


def _unused_sizes(stmts: list, sizes: set[str]) -> list:
    """The statements without the padded sizes no code reads."""
    seen = [n.name for s in stmts for n in walk(s) if isinstance(n, Name)]
    return [s for s in stmts if not (isinstance(s, Assign) and isinstance(s.target, Name)
                                     and s.target.name in sizes and seen.count(s.target.name) == 1)]



def _touched(s) -> set[str]:
    return {s.target.tensor, *(r.tensor for r in reads(s.expr))}


def _power_of(f, r: Ref) -> bool:
    """Whether the factor ``f`` is the read ``r`` or ``r ** n`` with n > 0 (0 where r is)."""
    return f is r or (isinstance(f, Bin) and f.op == "**" and f.lhs is r and
                      isinstance(f.rhs, Num) and f.rhs.value > 0)


def _offset(ix) -> int | None:
    """c for an index ``v + c`` (one loop index, coefficient 1); else None."""
    if isinstance(ix, Affine) and len(ix.terms) == 1 and ix.terms[0][1] == 1 and not ix.dims:
        return ix.const
    return None


def _pads(info) -> dict[str, tuple[dict, dict]]:
    """(rows before, rows after) of zeros on each recurrence tensor's step axis,
    as linear size forms ({1: literal, dim: coefficient}, ``breadth``'s): a
    literal for ``h[t - 1]``, and T for a step shifted by a loop index over T
    (``h[t - 1 - i]``, i in T, reaches i + 1 steps back)."""
    steps = info.step_axes
    need: dict[str, tuple[list, list]] = {t: ([], []) for t in steps}
    for k, si in enumerate(info.stmts):
        s = si.stmt
        # a cycle statement's update at an offset step is guarded by the step
        # (State.inside_steps): only its reads, and other updates, need zero rows
        guarded = info.recurrence_of(k) is not None
        for r in ([] if guarded else [s.target]) + reads(s.expr):
            axis = steps.get(r.tensor)
            if axis is None:
                continue
            ix = r.index[axis]
            reach = _reach(ix, si.ranges, info.shapes[r.tensor][axis])
            if reach is None:
                if isinstance(ix, Affine) and not ix.terms and (
                        (not ix.dims and ix.const >= 0) or
                        (len(ix.dims) == 1 and ix.dims[0][1] == 1 and ix.const < 0 and
                         ix.dims[0][0] == info.shapes[r.tensor][axis])):
                    continue          # a constant step (0, T - 1): a starting state
                raise TccError(f"the compiled backends lower a recurrence's steps only as "
                               f"the step index plus a literal, or plus or minus one more "
                               f"loop index (h[t - 1 - i]), not {ix} (the reference "
                               "interpreter runs it: tcc.api.check(..., engine='interp'))",
                               ix.pos or r.pos or s.pos)
            need[r.tensor][0].append(reach[0])
            need[r.tensor][1].append(reach[1])
    return {t: (_bound(b), _bound(a)) for t, (b, a) in need.items()}


def _reach(ix, ranges, size) -> tuple[dict, dict] | None:
    """(steps before 0, steps after the last) that an access ``t + c`` or
    ``t + c +- i`` reaches over its loop ranges, as size forms (``size``: the
    step axis's length); None for another form."""
    c = _offset(ix)
    if c is not None:
        return {1: max(0, -c)}, {1: max(0, c)}
    if not (isinstance(ix, Affine) and len(ix.terms) == 2 and not ix.dims and
            sorted(e for _, e in ix.terms) in ([-1, 1], [1, 1])):
        return None
    # lowest and highest step: c plus e * (n - 1) for each index on its side
    lo, hi = {1: ix.const}, {1: ix.const}
    for v, e in ix.terms:
        reach = _add(_lin(ranges[v]), {1: -1}, scale=[e, e])
        lo, hi = (_add(lo, reach), hi) if e < 0 else (lo, _add(hi, reach))
    return _add(lo, scale=[-1]), _add(hi, _lin(size), {1: -1}, scale=[1, -1, 1])


def _bound(forms: list[dict]) -> dict:
    """A form at least max(0, each form) for all sizes: the largest coefficient
    of each symbol (sizes are >= 0), e.g. T + 1 for the reaches 1 and T."""
    out: dict = {}
    for f in forms:
        for sym, c in f.items():
            out[sym] = max(out.get(sym, 0), c)
    return {sym: c for sym, c in out.items() if c > 0}


def _form_text(f: dict) -> str:
    parts = [str(c) if s == 1 else (s if c == 1 else f"{c}*{s}") for s, c in f.items()]
    return " + ".join(parts) or "0"


class _State:
    def __init__(self, ctx: Context, pads):
        self.ctx = ctx
        self.info = ctx.info
        self.pads = pads
        self.buffers: dict[str, str] = {}     # tensor -> its padded buffer's name
        self.copies: dict[tuple, str] = {}    # (tensor, axis) -> zero-padded copy
        self.sizes: set[str] = set()          # the padded sizes' names
        self.views: set[str] = set()          # views of buffers at a step offset
        self.copied: set[str] = set()         # seeds copied once (they are added to)

    # ------------------------------------------------------------ buffers
    def allocate(self, tensors, whole_unit: bool) -> list:
        """Buffers for the recurrence tensors a unit touches and nothing has
        defined yet: padded ones, and every one a recurrence writes step by step."""
        ctx, info, out = self.ctx, self.info, []
        for t in sorted(tensors):
            if t not in self.pads or t in self.buffers:
                continue
            seed = t in info.inputs
            lo, hi = self.pads[t]
            if t in ctx.defined and (not seed or t in self.copied):
                continue
            if not (lo or hi or seed or whole_unit):
                continue          # its first update defines it, over all steps at once
            axis = info.step_axes[t]
            shape = list(ctx.shape_of(t))
            steps = shape[axis]
            name = ctx.local(t)
            if lo or hi:
                buf = f"{t}__pad"
                bname = ctx.local(buf)
                size = ctx.size(steps)
                extra = _value(ctx, _add(lo, hi))
                padded = tuple(Op("+", (size, extra)) if k == axis else ctx.size(e)
                               for k, e in enumerate(shape))
                out.append(Comment(f"'{t}' with {_form_text(lo)} zero step(s) before and "
                                   f"{_form_text(hi)} after"))
                out.append(Assign(bname, ap("zeros", Tup(padded))))
                start = _value(ctx, lo)
                view = Index(bname, (Slice(),) * axis + (Slice(start, Op("+", (start, size))),))
                if seed:
                    out.append(Assign(view, name))
                out.append(Assign(name, view))
                self.buffers[t] = buf
                ctx.defined.add(buf)
                padded_shape = list(shape)
                padded_shape[axis] = self._size_symbol(f"{t}__steps", Op("+", (size, extra)),
                                                       out)
                ctx.extra_shapes[buf] = tuple(padded_shape)
            elif seed:
                out.append(Assign(name, ap("array", name)))     # a copy: the seed is added to
                self.copied.add(t)
            else:
                out.append(Assign(name, ap("zeros", shape_tuple(ctx, shape))))
            start = self.reduction_start(t)
            if start is not None:       # max= / min= start at -inf / +inf, inside the steps
                out.append(Assign(Index(name, (ALL,)), Lit(start)))
            ctx.defined.add(t)
        return out

    def _size_symbol(self, sym: str, value, out: list) -> str:
        self.ctx.loop_names.add(sym)
        self.sizes.add(self.ctx.names(sym))
        out.append(Assign(Name(self.ctx.names(sym)), value))
        return sym

    def rewrite(self, s, fixed_step: bool, out: list):
        """The statement reading and writing the padded buffers: with the step
        index held fixed, the buffer at the shifted step; over all steps at
        once, a view of the buffer shifted by the offset (``out`` gets it)."""
        steps = self.info.step_axes
        ctx = self.ctx

        def fix(r: Ref) -> Ref:
            buf = self.buffers.get(r.tensor)
            if buf is None:
                return r
            axis = steps[r.tensor]
            lo = self.pads[r.tensor][0]
            index = list(r.index)
            ix = index[axis]
            c = _offset(ix)
            if fixed_step or c is None:
                # the buffer at the shifted step; a step that moves with another
                # loop index (h[t - 1 - i]) is a strided view of the buffer
                index[axis] = _shift(ix, lo)
                return Ref(buf, tuple(index), r.pos)
            if not c:
                return r
            view = f"{r.tensor}__at{c:+d}".replace("+", "p").replace("-", "m")
            if view not in self.views:
                n = ctx.size(ctx.shape_of(r.tensor)[axis])
                start = _value(ctx, _add(lo, {1: c}))
                out.append(Assign(ctx.local(view), Index(ctx.local(buf), (Slice(),) * axis + (
                    Slice(start, Op("+", (start, n))),))))
                ctx.extra_shapes[view] = ctx.shape_of(r.tensor)
                ctx.defined.add(view)
                self.views.add(view)
            index[axis] = replace(ix, const=0)
            return Ref(view, tuple(index), r.pos)
        return replace(s, target=fix(s.target), expr=map_refs(s.expr, fix))

    def drop_outside(self, s) -> list:
        """Zero the pad rows an update at an offset step may have written."""
        t = s.target.tensor
        buf = self.buffers.get(t)
        if buf is None or _offset(s.target.index[self.info.step_axes[t]]) == 0:
            return []
        axis = self.info.step_axes[t]
        lo, hi = self.pads[t]
        bname = self.ctx.local(buf)
        out: list = [Comment("(updates outside the steps are dropped)")]
        if lo:
            before = Slice(None, _value(self.ctx, lo))
            out.append(Assign(Index(bname, (Slice(),) * axis + (before,)), Lit(0)))
        if hi:
            after = Lit(-hi[1]) if set(hi) == {1} else Op("+", (
                _value(self.ctx, lo), self.ctx.size(self.ctx.shape_of(t)[axis])))
            out.append(Assign(Index(bname, (Slice(),) * axis + (Slice(after),)), Lit(0)))
        return out

    # ------------------------------------------------------------ statements
    def statement(self, si: StmtInfo, lower_statement) -> list:
        """An off-cycle statement, over all steps at once."""
        pre: list = []
        s = self.rewrite(si.stmt, False, pre)
        ranges = si.ranges
        if s.padded:
            done = self.restricted(si, s)
            if done is not None:
                s, ranges, more = done
            else:
                # a form padded_reads does not take (h[t - i - 1] over i in T,
                # h data) goes to the general zero padding (breadth.lower_padded)
                s, more = self.padded_reads(si, s, refuse=False) or (s, [])
            pre += more
        body = lower_statement(self.ctx, StmtInfo(s, ranges))
        if body and isinstance(body[0], Comment):
            body[0] = Comment(str(si.stmt))
        return pre + body + self.drop_outside(si.stmt)

    def restricted(self, si: StmtInfo, s):
        """A product with written ranges whose accesses step outside a tensor
        only by offsets ``t + c`` along axes of t's length (``U.grad += a.grad[t]
        * h[t - 1]``): a point outside makes a factor 0, so the product runs over
        the steps where every access is inside, on views (``a.grad[1:]``,
        ``h[:-1]``), with no copy. (statement, ranges, statements before), or None."""
        ctx = self.ctx
        terms = split_terms(s.expr)
        if len(terms) != 1 or s.op not in ("+=", "-=") or len(s.written) != 1:
            return None
        v, size = s.written[0]
        factors = [f for up, f in split_factors(terms[0][1]) if up]
        accesses = [s.target, *reads(s.expr)]
        offsets = []
        for r in accesses:
            for axis, ix in enumerate(r.index):
                if not isinstance(ix, Affine) or v not in ix.vars:
                    continue
                c = _offset(ix)
                if c is None or ctx.shape_of(r.tensor)[axis] != size or \
                        r.tensor in self.buffers.values():
                    return None
                if c and r is not s.target and not any(_power_of(f, r) for f in factors):
                    return None       # outside, this read is 0 but the product need not be
                offsets.append(c)
        if not any(offsets):
            return None
        lo, hi = max(0, -min(offsets)), max(0, max(offsets))
        out: list = []
        n = ctx.size(size)
        inside = self._size_symbol(f"{size}__in{len(self.sizes)}",
                                   Op("-", (n, Lit(lo + hi))), out)
        name = Name(ctx.names(inside))
        out.append(If(Op("<", (name, Lit(0))), (Assign(name, Lit(0)),), ()))

        def view(r: Ref) -> Ref:
            index = list(r.index)
            axes = [a for a, ix in enumerate(index) if isinstance(ix, Affine) and v in ix.vars]
            if not axes:
                return r
            name = r.tensor
            node = ctx.local(r.tensor)
            shape = list(ctx.shape_of(r.tensor))
            for a in axes:
                start = Lit(index[a].const + lo)
                node = Index(node, (Slice(),) * a + (Slice(start, Op("+", (start,
                                                                         Name(ctx.names(inside))))),))
                shape[a] = inside
                index[a] = replace(index[a], const=0)
            key = (r.tensor, tuple(index[a].const for a in axes), str(node))
            if key not in self.copies:
                vname = f"{name}__in{len(self.copies)}"
                out.append(Assign(ctx.local(vname), node))
                ctx.extra_shapes[vname] = tuple(shape)
                ctx.defined.add(vname)
                self.copies[key] = vname
            return Ref(self.copies[key], tuple(index), r.pos)
        if view(s.target) is not s.target:
            return None         # a target at an offset: left to the padded copies
        ranges = {**si.ranges, v: inside}
        expr = map_refs(s.expr, view)
        if lo and any(v in c.vars for c in index_cmps(expr)):
            # the views start at step lo: a comparison over v compares v + lo
            expr = _shift_cmps(expr, v, lo)
            if expr is None:
                return None
        return replace(s, expr=expr, written=()), ranges, out

    def padded_reads(self, si: StmtInfo, s, refuse: bool = True):
        """A statement with written ranges whose reads step outside a tensor only
        by offsets: the same statement on zero-padded copies, without the ranges.
        Another form is a positioned error, or with ``refuse=False`` None."""
        ctx, out = self.ctx, []

        def other(r):
            if refuse:
                raise TccError("a written range over this access is not lowered by the "
                               "compiled backends yet", r.pos or s.pos)
        for r in [s.target, *reads(s.expr)]:
            if r.tensor in self.buffers.values():
                continue
            shape = ctx.shape_of(r.tensor)
            for axis, ix in enumerate(r.index):
                c = _offset(ix)
                if c is None:
                    if isinstance(ix, Affine) and ix.plain is None and ix.vars:
                        return other(r)
                    continue
                if c == 0:
                    continue
                v = ix.terms[0][0]
                if r is s.target or si.ranges.get(v) != shape[axis]:
                    return other(r)
        fixed = s
        for r in reads(s.expr):
            shape = ctx.shape_of(r.tensor)
            for axis, ix in enumerate(r.index):
                c = _offset(ix)
                if not c or r.tensor in self.buffers.values() or r.tensor in self.views:
                    continue
                key = (r.tensor, axis, c)
                if key not in self.copies:
                    name = f"{r.tensor}__shift{len(self.copies)}"
                    n = ctx.size(shape[axis])
                    a, b = max(0, -c), max(0, c)
                    bname = ctx.local(name)
                    out.append(Comment(f"'{r.tensor}' shifted by {c} on axis {axis}, zeros "
                                       "outside it"))
                    out.append(Assign(bname, ap("zeros", shape_tuple(ctx, shape))))
                    inside = Name(ctx.names(self._size_symbol(
                        f"{name}__n", Op("-", (n, Lit(a + b))), out)))
                    out.append(If(Op("<", (inside, Lit(0))), (Assign(inside, Lit(0)),), ()))
                    rows = (Slice(),) * axis
                    out.append(Assign(
                        Index(bname, rows + (Slice(Lit(a), Op("+", (Lit(a), inside))),)),
                        Index(ctx.local(r.tensor), rows + (
                            Slice(Lit(b), Op("+", (Lit(b), inside))),))))
                    ctx.extra_shapes[name] = shape
                    self.copies[key] = name
                    ctx.defined.add(name)
                name = self.copies[key]

                def swap(ref, r=r, axis=axis, name=name):
                    if ref is not r:
                        return ref
                    index = list(ref.index)
                    index[axis] = replace(index[axis], const=0)
                    return Ref(name, tuple(index), ref.pos)
                fixed = replace(fixed, expr=map_refs(fixed.expr, swap))
        return replace(fixed, written=()), out

    def inside_steps(self, s, v: str, lowered: list) -> list:
        """A cycle statement updating at an offset step (``h.grad[t - 1]``) runs
        only at the steps where that is inside: at the others it is dropped."""
        t = s.target.tensor
        axis = self.info.step_axes.get(t)
        c = _offset(s.target.index[axis]) if axis is not None else None
        if not c:
            return lowered
        ctx = self.ctx
        n = ctx.size(ctx.shape_of(t)[axis])
        cond = Op(">=", (ctx.local(v), Lit(-c))) if c < 0 else \
            Op("<", (ctx.local(v), Op("-", (n, Lit(c)))))
        head = [x for x in lowered if isinstance(x, Comment)][:1]
        rest = [x for x in lowered if x not in head]
        return head + [If(cond, tuple(rest), ())]

    def reduction_start(self, t: str) -> float | None:
        ops = {si.stmt.op for si in self.info.stmts if si.stmt.target.tensor == t}
        return -math.inf if "max=" in ops else math.inf if "min=" in ops else None

    def written_once(self, k: int) -> bool:
        """Whether statement k is its target's only update, sums over no index and
        writes at the plain step (so each position gets exactly one value, on zeros)."""
        info = self.info
        s = info.stmts[k].stmt
        t = s.target.tensor
        if t in info.inputs or s.op not in ("=", "+=") or \
                sum(x.stmt.target.tensor == t for x in info.stmts) != 1:
            return False
        plain = [ix.plain for ix in s.target.index if isinstance(ix, Affine)]
        return all(v in plain for v in s.loops) and len(plain) == len(s.target.index) and \
            len(set(plain)) == len(plain)

    def recurrence(self, rec, lower_statement) -> list:
        """The cycle's statements in one loop over the steps."""
        from .lower import fix_indices
        ctx, info = self.ctx, self.info
        first = rec.stmts[0]
        var = rec.step_of(first)
        count = ctx.var_size(info.stmts[first].ranges, var)
        way = "upwards" if rec.ascending else "downwards"
        out: list = [Comment(f"{rec.describe()}: one step at a time, {way}")]
        step = ctx.names(f"{var}__step" if not rec.ascending else var)
        names = list(dict.fromkeys(rec.step_of(k) for k in rec.stmts))
        ctx.loop_names.update(names)
        body: list = []
        if not rec.ascending:
            body.append(Assign(ctx.local(var), Op("-", (Op("-", (count, Lit(1))), Name(step)))))
        for v in names:
            if ctx.local(v) != ctx.local(var):
                body.append(Assign(ctx.local(v), ctx.local(var)))
        counts: dict = {}       # live positions and their views, per step
        for k in rec.stmts:
            si = info.stmts[k]
            v = rec.step_of(k)
            s = self.rewrite(si.stmt, True, out)
            if s.padded:        # its shifted copies are made once, before the loop
                s, pre = self.padded_reads(si, s)
                out += pre
            ranges, live = si.ranges, []
            found = live_slots(info, si.stmt, v)
            if found is not None:     # h[t - 1 - i]: only the i whose step is inside
                s, ranges, live = restrict(self, s, ranges, v, found, counts)
            s = fix_indices(_fix_comparisons(s, v), [v])
            lowered = lower_statement(ctx, StmtInfo(s, ranges))
            head = 1 if lowered and isinstance(lowered[0], Comment) else 0
            if head:
                lowered[0] = Comment(str(si.stmt))
            lowered[head:head] = live
            if si.stmt.op in ("max=", "min="):     # allocated once, before the loop
                lowered = [x for x in lowered if not (isinstance(x, Assign) and
                                                      x.target == ctx.local(si.stmt.target.tensor))]
            if self.written_once(k):      # each position of the step written once: assign
                lowered = [Assign(x.target, x.value) if isinstance(x, Update) and x.op == "+="
                           and isinstance(x.target, Index) else x for x in lowered]
            body += self.inside_steps(si.stmt, v, lowered)
        out.append(For(step, count, tuple(body)))
        return out


def _shift_cmps(e, v: str, lo: int):
    """e with v replaced by v + lo in its index comparisons (not in its reads);
    None if a comparison cannot say it."""
    if isinstance(e, IndexCmp):
        return algebra.subst(e, {v: Affine(((v, 1),), lo)})
    if isinstance(e, Ref):
        return e
    kids = [_shift_cmps(c, v, lo) for c in children(e)]
    return None if any(k is None for k in kids) else rebuild(e, kids)


__all__ = ["lower_program"]
