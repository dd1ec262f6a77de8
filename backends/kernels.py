"""Library kernels: groups of statements that compute what one call of a
backend's library computes (torch's softmax, log-softmax, log-sum-exp and the
softmax backward), recognized by structure on the checked, optimized program.

A backend whose table has the kernel's operation (``softmax``,
``log_softmax``, ``logsumexp``, ``softmax_backward``: see ``target.OPS``) gets
the group lowered as that one call; any other backend lowers the statements
one by one, as before. A group is taken only where its intermediate tensors
(the maximum, the exponentials, their sum) are read by no other statement and
not returned, so nothing else needs them. The statements must be consecutive
and use the same index names; the reduced axis may be any axis of the input.

Patterns (x read with plain, distinct indices; m, Z, E, e over x's indices
less the reduced one j, in order):

    softmax      m max= x;  E = exp(x - m);  Z += E;  p = E / Z
    log-softmax  m max= x;  E = exp(x - m);  Z += E;  q = x - m - log(Z)
    log-sum-exp  m max= x;  Z += exp(x - m);  L = log(Z) + m   (or with E = exp(x - m))
    softmax bwd  e += g * p;  s.grad += p * (g - e)             (e dead elsewhere)
    var-mean     mu += x / N;  xc = x - mu;  var += xc ** 2 / N   (N the reduced range;
                 layer norm's statistics: mu and var from one pass, xc as written)
"""

from __future__ import annotations

from dataclasses import dataclass

from tcc.ir import Affine, Bin, Call, DimVal, Num, Ref, reads

KERNEL_OPS = ("softmax", "log_softmax", "logsumexp", "softmax_backward", "var_mean",
              "conv", "conv_weight", "conv_input", "conv_backward", "layer_norm",
              "layer_norm_backward")


@dataclass
class Group:
    kind: str               # one of KERNEL_OPS
    first: int              # index of its first statement
    count: int              # how many consecutive statements
    target: str             # the tensor it defines
    args: tuple[str, ...]   # the tensors it reads (x; or g, p for the backward)
    dim: int                # the reduced axis of x
    index: tuple            # x's (and the target's) index
    also: tuple[str, ...] = ()    # var-mean: the mean (the target is the variance)
    members: tuple[int, ...] = ()  # the statements it replaces (default: all of them)

    def describe(self) -> str:
        call = {"softmax": "torch.softmax", "log_softmax": "torch.log_softmax",
                "logsumexp": "torch.logsumexp",
                "softmax_backward": "torch's softmax backward",
                "var_mean": "torch.var_mean"}[self.kind]
        if self.also:
            return (f"{call} over axis {self.dim} of {', '.join(self.args)} computes "
                    f"{self.target} and {', '.join(self.also)}")
        return f"{call} over axis {self.dim} of {', '.join(self.args)} computes {self.target}"


def _plain(index) -> tuple[str, ...] | None:
    vs = [ix.plain if isinstance(ix, Affine) else None for ix in index]
    return tuple(vs) if all(vs) and len(set(vs)) == len(vs) else None


def _ref(t, index) -> Ref:
    return Ref(t, tuple(index))


def _max_head(s):
    """(x ref, m ref, reduced var, dim) for ``m[...] max= x[...]``, else None."""
    if s.op != "max=" or not isinstance(s.expr, Ref):
        return None
    xv, mv = _plain(s.expr.index), _plain(s.target.index)
    if xv is None or mv is None or set(s.loops) != set(xv):
        return None
    rest = [v for v in xv if v not in mv]
    if len(rest) != 1 or tuple(v for v in xv if v != rest[0]) != mv:
        return None
    return s.expr, s.target, rest[0], xv.index(rest[0])


def _new(s, op=("=", "+=")):
    return s.op in op


def _lse(m, Z):
    """The log-sum-exp from the maximum and the shifted sum, as it may be written."""
    return (Bin("+", Call("log", (Z,)), m), Bin("+", m, Call("log", (Z,))))


def _log_softmax(x, m, Z):
    return (Bin("-", Bin("-", x, m), Call("log", (Z,))),
            *(Bin("-", x, lse) for lse in _lse(m, Z)))


def _tail(i, count, x, m, Z, dim, last, dead):
    """The group ending in ``last``: a log-sum-exp or a log-softmax, or None."""
    if not _new(last):
        return None
    if _plain(last.target.index) == _plain(m.index) and last.expr in _lse(m, Z):
        return Group("logsumexp", i, count, last.target.tensor, (x.tensor,), dim,
                     x.index), dead
    if _plain(last.target.index) == _plain(x.index) and last.expr in _log_softmax(x, m, Z):
        return Group("log_softmax", i, count, last.target.tensor, (x.tensor,), dim,
                     x.index), dead
    return None


def _var_mean(stmts, ranges, i):
    """mu += x / N; xc = x - mu; var += xc ** 2 / N, N the range of the summed index."""
    if i + 2 >= len(stmts):
        return None
    a, b, c = stmts[i:i + 3]
    if a.op != "+=" or not isinstance(a.expr, Bin) or a.expr.op != "/" or \
            not isinstance(a.expr.lhs, Ref):
        return None
    x, mu = a.expr.lhs, a.target
    xv, mv = _plain(x.index), _plain(mu.index)
    if xv is None or mv is None or set(a.loops) != set(xv):
        return None
    rest = [v for v in xv if v not in mv]
    if len(rest) != 1 or tuple(v for v in xv if v != rest[0]) != mv:
        return None
    n = DimVal(ranges[i][rest[0]]) if isinstance(ranges[i][rest[0]], str) else \
        Num(ranges[i][rest[0]])
    if a.expr.rhs != n or b.op != "=" or b.expr != Bin("-", x, mu) or \
            _plain(b.target.index) != xv:
        return None
    if b.target.tensor in (x.tensor, mu.tensor):
        return None
    xc = _ref(b.target.tensor, x.index)
    if c.op != "+=" or c.expr != Bin("/", Bin("**", xc, Num(2)), n) or \
            _plain(c.target.index) != mv or c.target.tensor in (mu.tensor, xc.tensor):
        return None
    return Group("var_mean", i, 3, c.target.tensor, (x.tensor,), xv.index(rest[0]), x.index,
                 (mu.tensor,), (i, i + 2)), set()


def _match_at(stmts, i, ranges=None):
    n = len(stmts)
    if ranges is not None:
        found = _var_mean(stmts, ranges, i)
        if found is not None:
            return found
    head = _max_head(stmts[i]) if i < n else None
    if head is not None:
        x, m, j, dim = head
        shifted = Call("exp", (Bin("-", x, m),))
        rest = stmts[i + 1:i + 4]
        # m max= x; Z += exp(x - m); L = log(Z) + m  (or q = x - m - log(Z))
        if len(rest) >= 2 and rest[0].op == "+=" and rest[0].expr == shifted and \
                _plain(rest[0].target.index) == _plain(m.index):
            Z = _ref(rest[0].target.tensor, m.index)
            found = _tail(i, 3, x, m, Z, dim, rest[1], {m.tensor, Z.tensor})
            if found is not None:
                return found
        if len(rest) >= 3 and rest[0].op == "=" and rest[0].expr == shifted and \
                _plain(rest[0].target.index) == _plain(x.index):
            E = _ref(rest[0].target.tensor, x.index)
            zs = rest[1]
            if zs.op == "+=" and zs.expr == E and _plain(zs.target.index) == _plain(m.index):
                Z = _ref(zs.target.tensor, m.index)
                last = rest[2]
                dead = {m.tensor, E.tensor, Z.tensor}
                if _new(last) and _plain(last.target.index) == _plain(x.index):
                    if last.expr == Bin("/", E, Z):
                        return Group("softmax", i, 4, last.target.tensor, (x.tensor,), dim,
                                     x.index), dead
                found = _tail(i, 4, x, m, Z, dim, last, dead)
                if found is not None:
                    return found
    # e += g * p; s.grad += p * (g - e)
    if i + 1 < n:
        a, b = stmts[i], stmts[i + 1]
        if a.op == "+=" and isinstance(a.expr, Bin) and a.expr.op == "*" and \
                isinstance(a.expr.lhs, Ref) and isinstance(a.expr.rhs, Ref) and \
                _plain(a.expr.lhs.index) is not None and \
                a.expr.lhs.index == a.expr.rhs.index and _plain(a.target.index) is not None:
            xv = _plain(a.expr.lhs.index)
            ev = _plain(a.target.index)
            rest = [v for v in xv if v not in ev]
            if len(rest) == 1 and tuple(v for v in xv if v != rest[0]) == ev and \
                    set(a.loops) == set(xv):
                e = a.target
                for g, p in ((a.expr.lhs, a.expr.rhs), (a.expr.rhs, a.expr.lhs)):
                    want = (Bin("*", p, Bin("-", g, e)), Bin("*", Bin("-", g, e), p))
                    if b.op in ("+=", "=") and b.expr in want and \
                            _plain(b.target.index) == xv and set(b.loops) == set(xv):
                        return Group("softmax_backward", i, 2, b.target.tensor,
                                     (g.tensor, p.tensor), xv.index(rest[0]), g.index), \
                            {e.tensor}
    return None


def _candidates(stmts, ranges, i, ops, forward, info):
    """The groups that may start at statement i, the largest first: (group, the
    tensors that must be dead elsewhere), or None."""
    from . import layernorm
    if set(ops) & set(layernorm.LAYER_NORM_OPS):
        yield layernorm.match(stmts, ranges, i, forward, info.outputs, info.inputs)
    if ops:
        yield _match_at(stmts, i, ranges)
    if set(ops) & set(CONV_OPS):
        conv = _conv(stmts[i], i)
        yield None if conv is None else (conv, set())


def find(info, keep, ops, forward=None) -> list[Group]:
    """The kernel groups of a checked program whose operations are in ``ops``;
    ``keep``: the tensors the function returns; ``forward``: for a backward
    program, the forward's Info (layer norm's backward needs its forward)."""
    stmts = [si.stmt for si in info.stmts]
    ranges = [si.ranges for si in info.stmts]
    found, i = [], 0
    while i < len(stmts):
        for m in _candidates(stmts, ranges, i, ops, forward, info):
            if m is None or m[0].kind not in ops:
                continue
            group, dead = m
            inside = range(group.first, group.first + group.count)
            outside = [s for k, s in enumerate(stmts) if k not in inside]
            used = {r.tensor for s in outside for r in reads(s.expr)} | \
                {s.target.tensor for s in outside} | \
                {g.tensor for s in outside for r in [s.target, *reads(s.expr)]
                 for g in r.index if not isinstance(g, Affine)}
            targets = [stmts[k].target.tensor for k in inside]
            defined = {group.target, *group.also}
            later = {s.target.tensor for s in stmts[:i]} | \
                {s.target.tensor for s in stmts[group.first + group.count:]}
            if not (dead & (used | set(keep))) and group.target not in targets[:-1] and \
                    not (defined & {s.target.tensor for s in stmts[:i]}) and \
                    not (group.also and defined & later):
                found.append(group)
                i += group.count
                break
        else:
            i += 1
    return found


def plan(info, keep, ops, forward=None) -> dict[int, Group]:
    """{id of the group's StmtInfo: group} for the lowering's hook, every member."""
    out = {}
    found = find(info, keep, ops, forward)
    if "conv_backward" in ops:
        _pair_gradients(found)
    for g in found:
        for k in g.members or range(g.first, g.first + g.count):
            out[id(info.stmts[k])] = g
    return out


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


def lower_group(ctx, si, group: Group) -> list:
    """The group's statements, at its first member (its others lower to nothing)."""
    from .operands import ap, read_operand
    from .target import Assign, Comment, Tup
    info = ctx.info
    if id(si) != id(info.stmts[group.first]):
        return []
    if isinstance(group, Conv):
        return lower_conv(ctx, si, group)
    from .layernorm import LayerNorm, lower
    if isinstance(group, LayerNorm):
        return lower(ctx, si, group)
    from .reuse import Reuse
    if isinstance(group, Reuse):
        from .lower import lower_statement
        out = [Comment(str(si.stmt)), Comment(f"(the sum above, reusing the product "
                                              f"before it: {group.describe()})")]
        for part in group.si:
            t = part.stmt.target.tensor
            if t not in ctx.info.shapes and t not in ctx.extra_shapes:     # target__sum
                ctx.extra_shapes[t] = ctx.shape_of(group.target)
            out += lower_statement(ctx, part)[1:]
        return out
    members = [info.stmts[k] for k in group.members or
               range(group.first, group.first + group.count)]
    out = [Comment(str(m.stmt)) for m in members]
    out.append(Comment(f"(one library kernel: {group.describe()}, the {len(members)} "
                       "statements above)"))
    ranges = members[0].ranges
    args = [read_operand(ctx, Ref(t, group.index), ranges).node for t in group.args]
    ctx.defined.update([group.target, *group.also])
    target = ctx.local(group.target)
    if group.also:
        target = Tup((target, *map(ctx.local, group.also)))
    return out + [Assign(target, ap(group.kind, *args, dim=group.dim))]


# ------------------------------------------------------------------ convolutions

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
