"""Layer norm as torch's two kernels, recognized by structure (after
``kernels.py``'s softmax groups): the forward statements

    mu[b] += x[b, d] / D                       (d: x's last axis, D its range)
    xc[b, d] = x[b, d] - mu[b]
    var[b] += xc[b, d] ** 2 / D                (or xc * xc / D: biased, over D)
    rs[b] = 1 / sqrt(var[b] + eps)             (optional)
    y[b, d] = g[d] * xc[b, d] / sqrt(var[b] + eps) + be[d]   (or * rs[b]; g, be optional)

are one ``torch.native_layer_norm(x, (D,), g, be, eps)``, which also gives mu
and ``rs``; ``xc`` and ``var`` are computed from them only where something
reads them: ``var`` where it is saved for the backward (from rs, along the
leading axes only), ``xc`` where some statement other than the backward
kernel reads it (``saved_changes``). Any number of leading axes b; ``eps`` a
number. Not where the variance is an output (it would be rebuilt from rs).

The backward group is the statements defining ``x.grad``, ``g.grad`` and
``be.grad`` and the gradients of the intermediates (``mu.grad``, ``xc.grad``,
``var.grad``, ``rs.grad``), consecutive, in whatever form the optimizer left
them. It is taken only where the forward has the layer norm group over the
same tensors, and where the statements compute exactly layer norm's gradient:
each expression is read as a polynomial (products and powers of tensor reads,
sums over d as atoms of their own), the intermediates' definitions are
substituted into ``x.grad``'s, and the result must be the layer norm
gradient's polynomial term by term (``g.grad`` and ``be.grad`` up to a factor
without indices, the 1/B of batch averaging), and not where one of the
gradients it defines is a seed. It is then one ``native_layer_norm_backward``
on x and mu, which the forward saves in place of xc, as torch's autograd does
(or, where xc is saved anyway, on xc with a zero mean). The kernel drops the
program's term in ``sum_d xc``, which the forward makes zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tcc.ir import Affine, Bin, Call, Neg, Num, Ref, grad_name, reads

from .operands import expr_vars, split_factors
from .poly import add, atom, const, mul, one, poly, power, same, sum_over, try_poly

LAYER_NORM_OPS = ("layer_norm", "layer_norm_backward")


# ------------------------------------------------------------------ the groups

@dataclass
class LayerNorm:
    kind: str                   # layer_norm | layer_norm_backward
    first: int
    count: int
    target: str                 # y; or x.grad
    x: str
    mu: str
    xc: str
    var: str
    rs: str | None
    g: str | None
    be: str | None
    y: str
    eps: float
    index: tuple                # x's index (plain; the normalized index last)
    n: object                   # the normalized axis' range (a dim name or a number)
    also: tuple = ()            # forward: mu, xc, var, rs; backward: g.grad, be.grad
    members: tuple = ()
    scalars: tuple = ()         # backward: (g.grad's, be.grad's) factors without indices
    reads: tuple = ()           # backward: var and/or rs, if its statements read them

    def describe(self) -> str:
        if self.kind == "layer_norm":
            return (f"torch.native_layer_norm over the last axis of {self.x} computes "
                    f"{self.y} (and the statistics {self.mu}, {self.rs or self.var})")
        grads = [grad_name(t) for t in (self.x, self.g, self.be) if t]
        return (f"torch's layer norm backward (native_layer_norm_backward) computes "
                f"{', '.join(grads)}")


def _plain(index):
    vs = [ix.plain if isinstance(ix, Affine) else None for ix in index]
    return tuple(vs) if all(vs) and len(set(vs)) == len(vs) else None


def _size(r):
    return one(atom(r)) if isinstance(r, str) else const(r)


def _calls(e, fn):
    if isinstance(e, Call):
        if e.fn == fn:
            yield e
        for a in e.args:
            yield from _calls(a, fn)
    elif isinstance(e, Bin):
        yield from _calls(e.lhs, fn)
        yield from _calls(e.rhs, fn)
    elif isinstance(e, Neg):
        yield from _calls(e.arg, fn)


def _eps(e, var_ref):
    """eps for the ``sqrt(var + eps)`` in ``e`` (a number >= 0), else None."""
    vp = poly(var_ref)
    for c in _calls(e, "sqrt"):
        p = try_poly(c.args[0])
        if p is None:
            continue
        rest = add(p, vp, -1.0)
        if set(rest) <= {()} and rest.get((), 0.0) >= 0:
            return rest.get((), 0.0)
    return None


def _rstd(var_ref, eps):
    """1 / sqrt(var + eps) as a polynomial."""
    return power(poly(Call("sqrt", (Bin("+", var_ref, Num(eps)),))), -1)


def _tensor_of(a, var):
    """The tensor of an atom that is a read ``t[var]``, else None."""
    if a[1] == frozenset({var}) and a[0].endswith(f"[{var}]"):
        return a[0][:-len(var) - 2]
    return None


def match_forward(stmts, ranges, i):
    """The forward group starting at statement i, or None."""
    if i + 4 > len(stmts):
        return None
    a = stmts[i]
    if a.op != "+=" or not isinstance(a.expr, Bin) or not isinstance(a.expr.lhs, Ref):
        return None
    x, mu = a.expr.lhs, a.target
    xv, mv = _plain(x.index), _plain(mu.index)
    if xv is None or mv is None or mv != xv[:-1] or set(a.loops) != set(xv) or \
            x.tensor == mu.tensor:
        return None
    d = xv[-1]
    n = ranges[i][d]
    N = _size(n)
    if not same(try_poly(a.expr), mul(poly(x), power(N, -1))):
        return None
    b, c = stmts[i + 1:i + 3]
    if b.op != "=" or _plain(b.target.index) != xv or set(b.loops) != set(xv) or \
            b.target.tensor in (x.tensor, mu.tensor) or \
            not same(try_poly(b.expr), add(poly(x), poly(mu), -1.0)):
        return None
    xc = Ref(b.target.tensor, x.index)
    if c.op != "+=" or _plain(c.target.index) != mv or set(c.loops) != set(xv) or \
            c.target.tensor in (x.tensor, mu.tensor, xc.tensor) or \
            not same(try_poly(c.expr), mul(power(poly(xc), 2), power(N, -1))):
        return None
    var = Ref(c.target.tensor, mu.index)
    k, rs = i + 3, None
    s = stmts[k]
    names = {x.tensor, mu.tensor, xc.tensor, var.tensor}
    if s.op == "=" and _plain(s.target.index) == mv and set(s.loops) == set(mv) and \
            s.target.tensor not in names:
        eps = _eps(s.expr, var)
        if eps is None or not same(try_poly(s.expr), _rstd(var, eps)):
            return None
        rs = Ref(s.target.tensor, mu.index)
        names.add(rs.tensor)
        k += 1
        if k >= len(stmts):
            return None
        s = stmts[k]
    if s.op not in ("=", "+=") or _plain(s.target.index) != xv or set(s.loops) != set(xv) or \
            s.target.tensor in names:
        return None
    eps = _eps(stmts[i + 3].expr, var) if rs is not None else _eps(s.expr, var)
    if eps is None:
        return None
    R = _rstd(var, eps)
    p = try_poly(s.expr, {str(rs): R} if rs is not None else None)
    if p is None:
        return None
    base = mul(poly(xc), R)
    g = be = None
    for m, coef in p.items():
        rest = mul({m: coef}, power(base, -1))
        ((rm, rc),) = rest.items()
        if len(rm) == 0 and math.isclose(rc, 1.0) and g is None:
            g = ""
        elif len(rm) == 1 and rm[0][1] == 1 and math.isclose(rc, 1.0) and g is None and \
                _tensor_of(rm[0][0], d) not in (None, *names, s.target.tensor):
            g = _tensor_of(rm[0][0], d)
        elif len(m) == 1 and m[0][1] == 1 and math.isclose(coef, 1.0) and be is None and \
                _tensor_of(m[0][0], d) not in (None, *names, s.target.tensor):
            be = _tensor_of(m[0][0], d)
        else:
            return None
    if g is None:
        return None
    if be is not None and be == g:
        return None
    return LayerNorm("layer_norm", i, k - i + 1, s.target.tensor, x.tensor, mu.tensor,
                     xc.tensor, var.tensor, None if rs is None else rs.tensor, g or None, be,
                     s.target.tensor, eps, x.index, n,
                     also=tuple(t for t in (mu.tensor, xc.tensor, var.tensor,
                                            rs and rs.tensor) if t))


def forward_groups(info) -> list:
    """The layer norm groups of a forward program."""
    stmts = [si.stmt for si in info.stmts]
    ranges = [si.ranges for si in info.stmts]
    out = [match_forward(stmts, ranges, i) for i in range(len(stmts))]
    return [g for g in out if g is not None]


def match(stmts, ranges, i, forward=None, outputs=(), inputs=()):
    """(group, the tensors only it may read) at statement i, or None: a forward
    group when ``forward`` is None, else a backward group for one of
    ``forward``'s (the forward program's Info). ``outputs``, ``inputs``: the program's;
    the variance, which the forward group rebuilds from rstd (exact but for
    rounding relative to var + eps), is not taken when it is one."""
    if forward is None:
        g = match_forward(stmts, ranges, i)
        return None if g is None or g.var in outputs else (g, set())
    for fg in forward_groups(forward):
        g = match_backward(stmts, ranges, i, fg)
        # (a gradient that is a seed, of an output, starts from its given values)
        if g is not None and not any(stmts[k].target.tensor in inputs
                                     for k in range(g.first, g.first + g.count)):
            return g, {grad_name(t) for t in (fg.mu, fg.xc, fg.var, fg.rs) if t}
    return None


def match_backward(stmts, ranges, i, fwd: LayerNorm):
    """The backward group starting at statement i, for the forward group fwd."""
    xg, gg, bg = grad_name(fwd.x), fwd.g and grad_name(fwd.g), fwd.be and grad_name(fwd.be)
    inner = {grad_name(t) for t in (fwd.mu, fwd.xc, fwd.var, fwd.rs) if t}
    allowed = inner | {xg, gg, bg} - {None}
    k = i
    while k < len(stmts) and stmts[k].target.tensor in allowed:
        k += 1
    run = stmts[i:k]
    targets = [s.target.tensor for s in run]
    if not run or targets[-1] != xg or len(set(targets)) != len(targets):
        return None
    xv = _plain(fwd.index)
    d, mv = xv[-1], xv[:-1]
    byname = {s.target.tensor: s for s in run}
    for s in run:
        tv = _plain(s.target.index)
        if s.op not in ("=", "+=", "-=") or set(s.loops) != set(xv) or tv is None:
            return None
        want = xv if s.target.tensor in (xg, grad_name(fwd.xc)) else \
            (d,) if s.target.tensor in (gg, bg) else mv
        if tv != want:
            return None
    N = _size(fwd.n)
    # the forward's tensors as polynomials: rs and y in terms of xc and var
    mu_ix = fwd.index[:-1]
    var_ref = Ref(fwd.var, mu_ix)
    R = _rstd(var_ref, fwd.eps)
    xc = poly(Ref(fwd.xc, fwd.index))
    G = poly(Ref(fwd.g, (fwd.index[-1],))) if fwd.g else const(1)
    subst = {str(Ref(fwd.y, fwd.index)): add(mul(mul(G, xc), R),
                                              poly(Ref(fwd.be, (fwd.index[-1],)))
                                              if fwd.be else {})}
    if fwd.rs:
        subst[str(Ref(fwd.rs, mu_ix))] = R
    # the intermediates' values, substituted into x.grad's expression
    defs = dict(subst)
    order = [s for s in run if s.target.tensor in inner or s.target.tensor == xg]
    for s in order:
        p = try_poly(s.expr, defs)
        if p is None:
            return None
        if s.op == "-=":
            p = add({}, p, -1.0)
        if s.target.tensor != xg and _plain(s.target.index) == mv:
            p = sum_over(p, d, N)
        defs[str(s.target)] = p
    A = mul(poly(Ref(grad_name(fwd.y), fwd.index)), G)
    sa = sum_over(A, d, N)
    saxc = sum_over(mul(A, xc), d, N)
    sxc = sum_over(xc, d, N)
    invN = power(N, -1)
    want = mul(A, R)
    want = add(want, mul(mul(mul(invN, power(R, 3)), xc), saxc), -1.0)
    want = add(want, mul(mul(invN, R), sa), -1.0)
    want = add(want, mul(mul(mul(invN, invN), power(R, 3)), mul(saxc, sxc)))
    if not same(defs[str(byname[xg].target)], want):
        return None
    # g.grad and be.grad: a factor without indices times their summands
    dy = poly(Ref(grad_name(fwd.y), fwd.index))
    scalars = []
    for t, summand in ((gg, mul(mul(dy, xc), R)), (bg, dy)):
        s = byname.get(t)
        if s is None:
            scalars.append(None)
            continue
        p = try_poly(s.expr, subst)
        if p is None or s.op == "-=":
            return None
        ratio = mul(p, power(summand, -1)) if len(summand) == 1 else None
        if ratio is None or len(ratio) != 1 or any(a[1] for m in ratio for a, _ in m):
            return None
        # the factors without indices, as the lowering multiplies them in
        scal = tuple((up, f) for up, f in split_factors(s.expr) if not expr_vars(f))
        value = const(1)
        for up, f in scal:
            value = mul(value, poly(f) if up else power(poly(f), -1))
        if not same(value, ratio):
            return None
        scalars.append(scal)
    read = {r.tensor for s in run for r in reads(s.expr)}
    if fwd.xc not in read or not {fwd.var, fwd.rs} & read or (fwd.g and fwd.g not in read):
        return None     # (the kernel reads xc, var or rs, and g: the backward must have them)
    return LayerNorm("layer_norm_backward", i, len(run), xg, fwd.x, fwd.mu, fwd.xc, fwd.var,
                     fwd.rs, fwd.g, fwd.be, fwd.y, fwd.eps, fwd.index, fwd.n,
                     also=tuple(t for t in (gg, bg) if t and t in byname),
                     scalars=tuple(scalars), reads=tuple(t for t in (fwd.var, fwd.rs)
                                                         if t in read))


# ------------------------------------------------------------------ lowering

def lower(ctx, si, g: LayerNorm) -> list:
    """The group's code, at its first statement (the others lower to nothing)."""
    from .operands import ap, factor_value, mul, read_operand
    from .target import ALL, NEW, Assign, Comment, Index, Lit, Name, Op, Tup
    info = ctx.info
    members = info.stmts[g.first:g.first + g.count]
    inside = {id(m) for m in members}
    out = [Comment(str(m.stmt)) for m in members]
    out.append(Comment(f"(one library kernel: {g.describe()}, the {len(members)} "
                       "statements above)"))
    ranges = members[0].ranges
    d = g.index[-1]

    def operand(t, index):
        return read_operand(ctx, Ref(t, index), ranges).node

    weight = operand(g.g, (d,)) if g.g else Lit(None)
    rstd = ctx.local(g.rs) if g.rs else Name(ctx.names("rstd"))
    if g.kind == "layer_norm":
        read_after = {r.tensor for s in info.stmts if id(s) not in inside
                      for r in reads(s.stmt.expr)}
        needed = [t for t in g.also if t in ctx.returned or t in read_after]
        ctx.defined.update([g.y, *g.also])
        mu = ctx.local(g.mu)
        out.append(Assign(Tup((ctx.local(g.y), mu, rstd)),
                          ap("layer_norm", operand(g.x, g.index), weight,
                             operand(g.be, (d,)) if g.be else Lit(None), eps=g.eps)))
        if g.xc in needed:
            out.append(Assign(ctx.local(g.xc), Op("-", (operand(g.x, g.index),
                                                        Index(mu, (ALL, NEW))))))
        if g.var in needed:     # 1 / rstd ** 2 - eps: only along the leading axes
            out.append(Assign(ctx.local(g.var), Op("-", (Op("**", (rstd, Lit(-2))),
                                                         Lit(g.eps)))))
        return out
    # the backward: rstd from var unless the program has it
    if g.rs not in g.reads:
        rstd = Name(ctx.names("rstd"))
        out.append(Assign(rstd, Op("/", (Lit(1.0), ap("fn:sqrt", Op("+", (
            operand(g.var, g.index[:-1]), Lit(g.eps))))))))
    grads = [grad_name(t) if t else None for t in (g.x, g.g, g.be)]
    present = [t is not None and (t == g.target or t in g.also) for t in grads]
    ctx.defined.update(t for t, p in zip(grads, present) if p)
    dx, dg, db = (ctx.local(t) if p else Name("_") for t, p in zip(grads, present))
    # on x and its mean where the forward saved them (see saved_changes), else on
    # the centred xc with a zero mean
    x, mean = (operand(g.x, g.index), ctx.local(g.mu)) if _reads_x(info, g) else \
        (operand(g.xc, g.index), Lit(None))
    out.append(Assign(Tup((dx, dg, db)), ap(
        "layer_norm_backward", operand(grad_name(g.y), g.index), x, mean, rstd, weight,
        mask=tuple(present))))
    for name, scal, t in ((dg, g.scalars[0], grads[1]), (db, g.scalars[1], grads[2])):
        if not scal:
            continue
        s = next(m for m in members if m.stmt.target.tensor == t)
        value = factor_value(ctx, list(scal), (), s.ranges)
        # a 1/B over an empty sum is 0, as the statement by statement lowering has it
        count = None
        for v in g.index[:-1]:
            n = ctx.var_size(s.ranges, v.plain)
            count = n if count is None else mul(count, n)
        if count is not None:
            value = ap("if_nonzero", value, count)
        out.append(Assign(name, mul(value, name)))
    return out


# ------------------------------------------------------------------ what is saved

def _reads_x(binfo, g: LayerNorm) -> bool:
    """Whether the backward kernel reads x and mu (the forward saves mu, not xc):
    so where nothing else in the backward reads xc, and xc has no step of the
    backward's checks but its shape."""
    inside = range(g.first, g.first + g.count)
    if any(g.xc in {r.tensor for r in reads(si.stmt.expr)} | {si.stmt.target.tensor}
           for k, si in enumerate(binfo.stmts) if k not in inside):
        return False
    return not any(step[0] != "shape" and g.xc in repr(step) for step in binfo.plan)


def saved_changes(info, binfo, ops) -> tuple[set, list]:
    """(forward values the backward no longer reads, those it reads instead):
    layer norm's backward kernel reads x and mu where its statements read xc.
    Nothing changes for a backend without the kernel."""
    if "layer_norm_backward" not in ops:
        return set(), []
    from .kernels import find
    drop, add = set(), []
    for g in find(binfo, [grad_name(t) for t in info.differentiable], ops, info):
        if isinstance(g, LayerNorm) and _reads_x(binfo, g):
            drop.add(g.xc)
            add += [g.x, g.mu]
    return drop, add
