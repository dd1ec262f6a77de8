"""Stride-1 convolutions on flattened rows: one matrix product per tap, no copies.

For ``Y[b, o, r, c] += H[o, i, fr, fc] * X[b, i, r + fr, c + fc]`` the window
axes of X are flattened into one (position ``r * Lc + c``): tap (fr, fc) is then
the contiguous slice starting at ``fr * Lc + fc``, and each tap is one BLAS
product on a view. Y is computed over rows of length Lc (the positions past a
row's valid end are computed and dropped, (Fc - 1) / Lc of the work) and the
gradients read Y.grad padded to that row length. The same layout serves the
three statements of a convolution: the forward, the filter gradient and the
input gradient (a scatter-add of each tap's block).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tcc.check import StmtInfo
from tcc.ir import Affine, Gather, Ref, map_refs, reads

from .lower import fix_indices, lower_update, tap_value
from .operands import Context, ap, mul, shape_tuple
from .target import ALL, Assign, Attr, Comment, For, If, Index, Lit, Name, Op, Slice, Tup, Update


@dataclass
class FlatPlan:
    a: Ref                      # the windowed access X[..., u + w, ...]
    p: Ref                      # the position access Y[..., u, ...]
    us: tuple[str, ...]         # position indices, one per window axis
    ws: tuple[str, ...]         # window indices
    k: int                      # how many trailing axes are windowed


def flat_plan(s) -> FlatPlan | None:
    """The flattening plan for a stride-1 convolution statement, or None."""
    if s.op not in ("+=", "-=", "="):
        return None
    accesses = [s.target, *reads(s.expr)]
    if any(isinstance(ix, Gather) for r in accesses for ix in r.index):
        return None
    multi = [r for r in accesses
             if any(isinstance(ix, Affine) and len(ix.terms) > 1 for ix in r.index)]
    if len(multi) != 1:
        return None
    a = multi[0]
    k = 0
    for ix in reversed(a.index):
        if isinstance(ix, Affine) and len(ix.terms) == 2:
            k += 1
        else:
            break
    if k == 0 or any(len(ix.terms) > 1 for ix in a.index[:-k]):
        return None
    us, ws = [], []
    for ix in a.index[-k:]:
        if ix.const or ix.dims or any(c != 1 for _, c in ix.terms):
            return None
        (v1, _), (v2, _) = ix.terms
        u, w = (v1, v2) if s.loops.index(v1) < s.loops.index(v2) else (v2, v1)
        us.append(u)
        ws.append(w)
    lead = [ix.plain for ix in a.index[:-k]]
    if not all(lead) or set(lead) & set(us + ws) or len(set(us + ws)) != 2 * k:
        return None
    positions = [r for r in accesses if r is not a and any(
        isinstance(ix, Affine) and ix.plain in us for ix in r.index)]
    if len(positions) != 1:
        return None
    p = positions[0]
    if p.tensor == a.tensor or [ix.plain for ix in p.index[-k:]] != us or \
            len(p.index) < k or not all(isinstance(ix, Affine) and ix.plain and
                                        ix.plain not in us + ws for ix in p.index[:-k]):
        return None
    for r in accesses:
        if r is a or r is p:
            continue
        if not all(isinstance(ix, Affine) and (ix.plain or not ix.terms) for ix in r.index):
            return None
    if sum(r.tensor in (a.tensor, p.tensor) for r in accesses) != 2:
        return None         # the flat views replace every access of a tensor by name
    read_vars = {v for r in reads(s.expr) for ix in r.index for v in ix.vars}
    if not {v for ix in s.target.index for v in ix.vars} <= read_vars:
        return None         # the value is broadcast over a target axis: not a tap product
    if s.target is not a and s.target is not p and \
            any(v in us for ix in s.target.index for v in ix.vars):
        return None
    return FlatPlan(a, p, tuple(us), tuple(ws), k)


def _shape_head(x: Name, lead: int, attr: str = "shape"):
    """``x.shape[:lead]`` (or ``.strides``)."""
    return Index(Attr(x, attr), (Slice(None, Lit(lead)),))


def _sum(nodes):
    out = None
    for n in nodes:
        out = n if out is None else Op("+", (out, n))
    return out


def lower_flat(ctx: Context, si: StmtInfo, plan: FlatPlan) -> list:
    """The statements for a convolution lowered on flattened rows."""
    s, ranges = si.stmt, si.ranges
    a, p, k = plan.a, plan.p, plan.k
    ashape = ctx.shape_of(a.tensor)
    lens = [ctx.size(d) for d in ashape[-k:]]                     # Lr, Lc
    counts = [ctx.var_size(ranges, u) for u in plan.us]          # R, C
    strides = []
    for j in range(k):
        st = None
        for n_ in lens[j + 1:]:
            st = n_ if st is None else mul(st, n_)
        strides.append(st)                                       # None: 1
    fresh = {n: ctx.local(f"{a.tensor}__{n}") for n in ("flat", "n", "d", "part")}
    pfresh = ctx.local(f"{p.tensor}__flat")
    ctx.loop_names.update([f"{a.tensor}__n", f"{a.tensor}__d", *plan.ws])
    out: list = [Comment(str(s)),
                 Comment(f"(tap by tap over {', '.join(plan.ws)}, on {a.tensor}'s rows flattened "
                         f"over {', '.join(plan.us)}: one matrix product per tap, on views; "
                         "positions past a row's end are computed and dropped)")]
    n = fresh["n"]
    out.append(Assign(n, Op("+", (_sum(mul(Op("-", (c, Lit(1))), st) if st is not None
                                       else Op("-", (c, Lit(1)))
                                       for c, st in zip(counts, strides)), Lit(1)))))
    lead_a = len(a.index) - k
    lead_p = len(p.index) - k
    aname, pname = ctx.local(a.tensor), ctx.local(p.tensor)
    flat = fresh["flat"]
    # the windowed tensor, flattened over its window axes
    a_fresh = s.target is a and a.tensor not in ctx.defined
    row_shape = Op("+", (_shape_head(aname, lead_a), Tup((Lit(-1),))))
    if s.target is a:
        if a_fresh:
            # the first tap (offset 0) writes; the rest starts at zero after it
            a_shape = shape_tuple(ctx, ashape)
            taps = None
            for w in plan.ws:
                test = Op(">", (ctx.var_size(ranges, w), Lit(0)))
                taps = test if taps is None else Op("and", (taps, test))
            out.append(If(taps, (Assign(aname, ap("empty", a_shape)),),
                          (Assign(aname, ap("zeros", a_shape)),)))
            ctx.defined.add(a.tensor)
        out.append(Assign(flat, ap("reshape", aname, row_shape)))
    else:
        out.append(Assign(flat, ap("reshape", ap("contiguous", aname), row_shape)))
    # the position tensor, its rows padded to the windowed tensor's row length
    pshape = ctx.shape_of(p.tensor)
    padded = Tup(tuple(ctx.size(d) for d in pshape[:lead_p]) + (counts[0], *lens[1:]))
    # a padded copy of a tensor nothing writes serves every statement that reads it so
    layout = (p.tensor, tuple(counts), tuple(lens), lead_p)
    if s.target is p:
        out.append(Comment("the sum of the taps, over flat positions"))
        out.append(Assign(pfresh, Lit(None)))
    elif k == 1:
        out.append(Assign(pfresh, pname))
    elif ctx.flat_layouts.get(pfresh.name) != layout:
        out.append(Assign(pfresh, ap("zeros", padded)))
        cut = (Slice(),) * (lead_p + 1) + tuple(Slice(None, c) for c in counts[1:])
        out.append(Assign(Index(pfresh, cut), pname))
        out.append(Assign(pfresh, Index(ap("reshape", pfresh, Op("+", (
            _shape_head(pfresh, lead_p), Tup((Lit(-1),))))), (ALL, Slice(None, n)))))
        if p.tensor in ctx.info.inputs:
            ctx.flat_layouts[pfresh.name] = layout
    if s.target is not a and s.target is not p and s.target.tensor not in ctx.defined:
        out.append(Assign(ctx.local(s.target.tensor),
                          ap("zeros", shape_tuple(ctx, ctx.shape_of(s.target.tensor)))))
        ctx.defined.add(s.target.tensor)

    # the statement over one flat position index, windows held fixed
    flat_var = _fresh_var(s, "p")
    n_sym = f"{a.tensor}__n"
    d_sym = f"{a.tensor}__d"
    fixed = fix_indices(s, plan.ws)
    a_flat = Ref(f"{a.tensor}__flat", tuple(_lead(fixed, a, lead_a))
                 + (Affine(((flat_var, 1),), 0, ((d_sym, 1),)),))
    p_flat = Ref(f"{p.tensor}__flat", tuple(p.index[:lead_p]) + (Affine(((flat_var, 1),)),))
    ranges2 = dict(ranges)
    ranges2[flat_var] = n_sym
    loops = tuple(v for v in fixed.loops if v not in plan.us) + (flat_var,)
    part = None
    if s.target is a or s.target is p:
        part = Ref(f"{a.tensor}__part", (a_flat if s.target is a else p_flat).index[:-1]
                   + (Affine(((flat_var, 1),)),))
    inner = _swap_refs(fixed, a, a_flat, p, p_flat, part, loops)
    # The flat views' last axis: n positions (a Python local, like the tap
    # offset). The windowed tensor's whole flat axis is longer, but only ever
    # sliced, so its length is never needed ("?" would fail loudly if it were).
    views = {a_flat.tensor: tuple(ashape[:lead_a]) + ("?",),
             p_flat.tensor: tuple(pshape[:lead_p]) + (n_sym,)}
    if part is not None:
        lead_shape_ = ashape[:lead_a] if s.target is a else pshape[:lead_p]
        views[part.tensor] = tuple(lead_shape_) + (n_sym,)
    saved_views, saved_defined = dict(ctx.extra_shapes), set(ctx.defined)
    ctx.extra_shapes.update(views)
    ctx.defined.discard(f"{a.tensor}__part")
    try:
        body = lower_update(ctx, StmtInfo(inner, ranges2))[1:]
    finally:
        ctx.extra_shapes = saved_views
        ctx.defined = saved_defined | {s.target.tensor}
    op = "-=" if s.op == "-=" else "+="
    part_ = fresh["part"]
    reused = False
    if len(body) == 1 and isinstance(body[0], Assign) and body[0].target == part_:
        stmt, reused = tap_value(body[0].value, part_)
        if reused:
            out.append(Assign(part_, Lit(None)))
            body = [stmt]
    d = fresh["d"]
    if s.target is a:
        cut = Index(flat, (ALL, Slice(d, Op("+", (d, n)))))
        if a_fresh:
            body.append(If(Op("==", (d, Lit(0))),
                           (Comment("the first tap"),
                            Assign(Index(flat, (ALL, Slice(None, n))),
                                   Op("neg", (part_,)) if op == "-=" else part_),
                            Assign(Index(flat, (ALL, Slice(n))), Lit(0))),
                           (Update(cut, op, part_),)))
        else:
            body.append(Update(cut, op, part_))
    elif s.target is p:
        # the first tap is the sum so far (a copy only if it is a view of an
        # argument); the others add to it in place, contiguously
        first = Op("neg", (part_,)) if op == "-=" else ap("own", part_)
        keep = (Assign(pfresh, first),)
        if reused and op == "+=":
            keep += (Comment("(the sum keeps that buffer)"), Assign(part_, Lit(None)))
        body.append(If(Op("is", (pfresh, Lit(None))), keep, (Update(pfresh, op, part_),)))
    d_expr = _sum(mul(ctx.local(w), st) if st is not None else ctx.local(w)
                  for w, st in zip(plan.ws, strides))
    loop_body: list = [Assign(d, d_expr), *body]
    for w in reversed(plan.ws):
        loop_body = [For(ctx.names(w), ctx.var_size(ranges, w), tuple(loop_body))]
    out += loop_body
    if s.target is p:
        empty = Tup(tuple(ctx.size(d_) for d_ in pshape[:lead_p]) + (ap("imax", n, Lit(0)),))
        out.append(If(Op("is", (pfresh, Lit(None))), (Comment("no taps: an empty window"),
                                                      Assign(pfresh, ap("zeros", empty)))))
        # position (u0, u1, ...) of the result is flat position u0 * L1 * ... + u1 * ...
        item = Attr(pfresh, "itemsize")
        steps = Tup(tuple(mul(st, item) if st is not None else item for st in strides))
        view = ap("as_strided", pfresh,
                  shape=Op("+", (_shape_head(pfresh, lead_p), Tup(tuple(counts)))),
                  strides=Op("+", (_shape_head(pfresh, lead_p, "strides"), steps)))
        if p.tensor in saved_defined:
            out.append(Update(pname, "+=", view))
        else:
            out.append(Assign(pname, view))
    return out

def _fresh_var(s, base):
    taken = set(s.loops)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def _lead(fixed, a, lead):
    for r in [fixed.target, *reads(fixed.expr)]:
        if r.tensor == a.tensor:
            return r.index[:lead]
    raise AssertionError(a)


def _swap_refs(fixed, a, a_flat, p, p_flat, part, loops):
    """The fixed statement with A and P read through their flat views."""
    def ref(r):
        return a_flat if r.tensor == a.tensor else p_flat if r.tensor == p.tensor else r
    target = part if part is not None else fixed.target
    op = "=" if part is not None else fixed.op
    return replace(fixed, loops=loops, target=target, expr=map_refs(fixed.expr, ref), op=op)
