"""Convolutions as torch's kernels (``kernels.py`` finds them with the other
library kernels): ``Y[b, o, u...] += W[o, c, w...] * X[b, c, s*u + w ...]``
(any axis order, b and o optional) is ``torch.nn.functional.conv*d``; its two
gradients are ``torch.nn.grad.conv*d_weight`` and ``conv*d_input``, or one
``convolution_backward`` where both come in consecutive statements.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcc.ir import Affine, Ref

from .kernels import _plain


CONV_OPS = ("conv", "conv_weight", "conv_input")


@dataclass
class Conv:
    """``Y[b, o, u...] += W[o, c, w...] * X[b, c, s*u + w ...]`` (any axis order,
    b and o optional) and its two gradients, as torch's convolution calls."""
    kind: str               # conv (target Y), conv_weight (target W), conv_input (target X)
    first: int
    target: str
    x: object               # the Ref of each role
    w: object
    y: object
    b: str | None
    c: str
    o: str | None
    spatial: tuple          # ((x axis, u, w, stride), ...) in X's axis order
    count: int = 1
    members: tuple = ()
    also: tuple = ()
    scalars: tuple = ()     # factors without indices (a 1/B), multiplied in after
    partner: object = None  # the other gradient, computed in the same call

    def describe(self) -> str:
        if self.partner is not None:
            return (f"torch's convolution backward computes {self.target} (in one call "
                    f"with {self.partner.target})")
        n = len(self.spatial)
        call = {"conv": f"torch.nn.functional.conv{n}d",
                "conv_weight": f"torch.nn.grad.conv{n}d_weight",
                "conv_input": f"torch.nn.grad.conv{n}d_input"}[self.kind]
        return f"{call} computes {self.target}"


def _conv(s, i):
    from .operands import expr_vars, split_factors
    if s.op != "+=":
        return None
    factors = split_factors(s.expr)
    two = [f for up, f in factors if isinstance(f, Ref)]
    scalars = tuple((up, f) for up, f in factors if not isinstance(f, Ref))
    if len(two) != 2 or not all(up for up, f in factors if isinstance(f, Ref)) or \
            any(expr_vars(f) for _, f in scalars):
        return None
    refs = [s.target, *two]
    if len({r.tensor for r in refs}) != 3:
        return None
    multi = [r for r in refs if any(isinstance(ix, Affine) and len(ix.terms) > 1
                                    for ix in r.index)]
    if len(multi) != 1 or any(not isinstance(ix, Affine) for r in refs for ix in r.index):
        return None
    x = multi[0]
    spatial, xplain = [], []
    for axis, ix in enumerate(x.index):
        if ix.const or ix.dims:
            return None
        if len(ix.terms) == 1 and ix.terms[0][1] == 1:
            xplain.append(ix.terms[0][0])
        elif len(ix.terms) == 2:
            spatial.append((axis, dict(ix.terms)))
        else:
            return None
    others = [r for r in refs if r is not x]
    plain = {}
    for r in others:
        vs = _plain(r.index)
        if vs is None:
            return None
        plain[id(r)] = vs
    # the window index of the first windowed axis, as the tap-by-tap lowering reads
    # it (``tap_windows``): the smaller coefficient, or the index the loops list later
    terms = sorted(spatial[0][1].items(), key=lambda t: (-abs(t[1]), s.loops.index(t[0])))
    window = terms[1][0]
    if window not in plain[id(others[0])]:
        others = others[::-1]
    for w, y in (others, others[::-1]):
        found = _conv_roles(s, i, x, w, y, spatial, xplain, plain[id(w)], plain[id(y)])
        if found is not None:
            found.scalars = scalars
            return found
    return None


def _conv_roles(s, i, x, w, y, spatial, xplain, wv, yv):
    """The convolution with w as the filter and y as the output, if the indices fit."""
    sp = []
    for axis, terms in spatial:
        ws = [v for v, c in terms.items() if c == 1 and v in wv and v not in yv]
        us = [v for v, c in terms.items() if c >= 1 and v in yv and v not in wv]
        if len(ws) != 1 or len(us) != 1 or ws[0] == us[0]:
            return None
        sp.append((axis, us[0], ws[0], terms[us[0]]))
    if not 1 <= len(sp) <= 3:
        return None
    us, ws = {f[1] for f in sp}, {f[2] for f in sp}
    bs = [v for v in xplain if v in yv and v not in wv]
    cs = [v for v in xplain if v in wv and v not in yv]
    os_ = [v for v in wv if v in yv and v not in xplain]
    if len(cs) != 1 or len(bs) > 1 or len(os_) > 1 or len(us) != len(sp) or \
            len(ws) != len(sp) or len(set(xplain)) != len(xplain):
        return None
    if set(xplain) != set(bs + cs) or set(wv) != set(os_ + cs) | ws or \
            set(yv) != set(bs + os_) | us or set(s.loops) != set(bs + cs + os_) | us | ws:
        return None
    kind = "conv" if s.target is y else "conv_weight" if s.target is w else "conv_input"
    return Conv(kind, i, s.target.tensor, x, w, y, bs[0] if bs else None, cs[0],
                os_[0] if os_ else None, tuple(sp))


def _canon(node, order, want):
    """``node`` over ``order`` permuted to ``want`` (a name None: a new axis)."""
    from .operands import ap
    from .target import NEW, Index, Slice
    present = [v for v in want if v is not None]
    if list(order) != present:
        node = ap("transpose", node, perm=tuple(order.index(v) for v in present))
    for k, v in enumerate(want):
        if v is None:
            node = Index(node, (Slice(),) * k + (NEW,))
    return node


def _uncanon(node, canon, want):
    """A result over ``canon`` (None: an axis of length 1 to drop) as ``want``."""
    from .operands import ap
    from .target import Index, Lit, Slice
    for k in reversed(range(len(canon))):
        if canon[k] is None:
            node = Index(node, (Slice(),) * k + (Lit(0),))
    kept = [v for v in canon if v is not None]
    if kept != list(want):
        node = ap("transpose", node, perm=tuple(kept.index(v) for v in want))
    return node


def lower_conv(ctx, si, g: Conv) -> list:
    from .operands import ap, factor_value, mul, read_operand, shape_tuple
    from .target import Assign, Comment, Index, Lit, Name, Op, Slice, Tup
    ranges = si.ranges
    size = lambda v: ctx.var_size(ranges, v)    # noqa: E731
    sp_x = [a for a, _, _, _ in g.spatial]
    us = [u for _, u, _, _ in g.spatial]
    ws = [w for _, _, w, _ in g.spatial]
    stride = tuple(s for _, _, _, s in g.spatial)
    # the input's extent that the outputs reach: s * (R - 1) + F on each spatial axis
    reach = [Op("+", (Op("-", (size(u), Lit(1))) if s == 1 else
                      mul(Lit(s), Op("-", (size(u), Lit(1)))), size(w)))
             for _, u, w, s in g.spatial]
    # with a stride, the whole axis where the outputs are all it holds (its tail
    # shorter than the stride): the kernels then take the tensor as it is
    x_shape = ctx.shape_of(g.x.tensor)
    reach = [r if s == 1 else ap("conv_extent", ctx.size(x_shape[a]), r, Lit(s))
             for r, (a, _, _, s) in zip(reach, g.spatial)]
    x_order = [ix.terms[0][0] if len(ix.terms) == 1 else f"#{a}"
               for a, ix in enumerate(g.x.index)]
    x_canon = [g.b, g.c] + [f"#{a}" for a in sp_x]
    w_canon = [g.o, g.c] + ws
    y_canon = [g.b, g.o] + us
    narrow = Tup((Slice(), Slice()) + tuple(Slice(None, r) for r in reach))
    out = [Comment(str(si.stmt)), Comment(f"(one library kernel: {g.describe()})")]
    n = len(g.spatial)
    kw = dict(n=n, stride=stride)
    ctx.defined.add(g.target)
    name = ctx.local(g.target)

    def scaled(val, g=g, stmt=si.stmt):
        if not g.scalars:
            return val
        scalar = factor_value(ctx, list(g.scalars), (), ranges)
        # a 1/B over an empty sum is 0, as the statement by statement lowering has it
        summed = [v for v in stmt.loops if v not in
                  {u for ix in stmt.target.index for u, _ in ix.terms}]
        count = None
        for v in summed:
            count = size(v) if count is None else mul(count, size(v))
        if count is not None:
            scalar = ap("if_nonzero", scalar, count)
        return mul(scalar, val)

    def operand(ref):
        return read_operand(ctx, Ref(ref.tensor, ref.index) if ref is not g.x else ref,
                            ranges).node

    if g.kind == "conv":
        xc = Index(_canon(ctx.local(g.x.tensor), x_order, x_canon), narrow.items)
        wc = _canon(operand(g.w), list(_plain(g.w.index)), w_canon)
        val = _uncanon(ap("conv", xc, wc, **kw), y_canon, list(_plain(g.y.index)))
        return out + [Assign(name, scaled(val))]
    gc = _canon(operand(g.y), list(_plain(g.y.index)), y_canon)
    if g.partner is not None:
        if g.partner.first < g.first:       # computed with the statement before
            return out[:1] + [Comment(f"(computed with {g.partner.target}, above)")]
        wg, xg = (g, g.partner) if g.kind == "conv_weight" else (g.partner, g)
        xc = Index(_canon(ctx.local(wg.x.tensor), x_order, x_canon), narrow.items)
        wc = _canon(operand(xg.w), list(_plain(g.w.index)), w_canon)
        dx, dw = (Name(ctx.names(t + "__conv")) for t in (xg.target, wg.target))
        ctx.defined.add(g.partner.target)
        out = [Comment(str(si.stmt)), Comment(str(ctx.info.stmts[g.partner.first].stmt)),
               Comment(f"(one library kernel: torch's convolution backward computes "
                       f"{xg.target} and {wg.target})"),
               Assign(Tup((dx, dw)), ap("conv_backward", xc, wc, gc, **kw))]
        stmts = ctx.info.stmts
        val_w = scaled(_uncanon(dw, w_canon, list(_plain(g.w.index))), wg,
                       stmts[wg.first].stmt)
        val_x = scaled(_uncanon(dx, x_canon, x_order), xg, stmts[xg.first].stmt)
        return out + [Assign(ctx.local(wg.target), val_w),
                      Assign(ctx.local(xg.target),
                             ap("fit", val_x, shape_tuple(ctx, ctx.shape_of(xg.target))))]
    if g.kind == "conv_weight":
        xc = Index(_canon(ctx.local(g.x.tensor), x_order, x_canon), narrow.items)
        wshape = Tup(tuple(Lit(1) if v is None else size(v) for v in w_canon))
        val = _uncanon(ap("conv_weight", xc, wshape, gc, **kw), w_canon,
                       list(_plain(g.w.index)))
        return out + [Assign(name, scaled(val))]
    wc = _canon(operand(g.w), list(_plain(g.w.index)), w_canon)
    xshape = Tup(tuple(Lit(1) if v is None else size(v) for v in (g.b, g.c)) + tuple(reach))
    val = _uncanon(ap("conv_input", xshape, wc, gc, **kw), x_canon, x_order)
    # (the input's extent the outputs reach is most often all of it: then no copy)
    return out + [Assign(name, ap("fit", scaled(val),
                                  shape_tuple(ctx, ctx.shape_of(g.target))))]


def _pair_gradients(groups) -> None:
    """A convolution's two gradients in consecutive statements, over the same
    operands, are one call that computes both (torch's convolution backward, as
    autograd calls it: the operands are made contiguous once)."""
    from tcc.ir import grad_name
    convs = {g.first: g for g in groups if isinstance(g, Conv)}
    for g in convs.values():
        h = convs.get(g.first + 1)
        if h is None or {g.kind, h.kind} != {"conv_weight", "conv_input"} or \
                g.partner or h.partner:
            continue
        # (the weight gradient's x is the input gradient's target's tensor, and
        # the other way round for w)
        wg, xg = (g, h) if g.kind == "conv_weight" else (h, g)
        if (wg.y, wg.spatial, wg.b, wg.c, wg.o) == (xg.y, xg.spatial, xg.b, xg.c, xg.o) and \
                xg.x == Ref(grad_name(wg.x.tensor), wg.x.index) and \
                wg.w == Ref(grad_name(xg.w.tensor), xg.w.index):
            g.partner, h.partner = h, g
