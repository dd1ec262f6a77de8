"""Live slots: a recurrence statement whose step read moves with another loop
index runs only over the positions of that index whose step is inside.

At step t, ``q[t, b, i, s] += Q[i, s, r] * h[t - 1 - i, b, r]`` over ``i in
T`` reads the zero rows before the first step for every i >= t. Each term of
the sum has that read as a factor, so those points add exactly 0: the
statement runs over i < t only (``i__live = t``), on views ``Q[:i__live]``,
``q[:, :, :i__live]`` and the strided view of the buffer over i__live rows,
and the other positions keep what they hold (zeros, for ``q``). About half the
work of the full range over the whole sequence. The backward's gather
``h.grad[t] += v.grad[t + 1 + i, b, i, s] * V[i, s, r]`` runs over the i with
t + 1 + i <= T - 1 the same way.

Only for ``+=`` and ``-=``, where every term has such a read (all of them with
the same index, direction and literal) as a factor, never under a division,
and the index appears elsewhere only plainly.
"""

from __future__ import annotations

from dataclasses import replace

from tcc.ir import Affine, Gather, Ref, index_cmps, map_refs, reads

from .operands import split_factors, split_terms
from .target import Assign, Comment, If, Index, Lit, Name, Op, Slice


def _shift(ix, v: str):
    """(i, e, c) for a step index ``v + c + e*i`` (e = +-1); else None."""
    if not isinstance(ix, Affine) or len(ix.terms) != 2 or ix.dims:
        return None
    coefs = dict(ix.terms)
    if coefs.get(v) != 1:
        return None
    u, e = next((u, e) for u, e in ix.terms if u != v)
    return (u, e, ix.const) if e in (1, -1) else None


def live_slots(info, stmt, v: str):
    """(i, e, c, tensor, axis, index text) when ``stmt`` (a cycle statement at step v) can
    run over the live positions of i only; else None."""
    steps = info.step_axes
    if stmt.op not in ("+=", "-="):
        return None
    shifted = []
    for r in reads(stmt.expr):
        axis = steps.get(r.tensor)
        f = _shift(r.index[axis], v) if axis is not None else None
        if f is not None:
            shifted.append((r, f, axis))
    if not shifted or len({f for _, f, _ in shifted}) != 1:
        return None
    (u, e, c) = shifted[0][1]
    if (e < 0 and c > 0) or (e > 0 and c < 0) or u == v:
        return None          # the read would also leave the steps on the other side
    mine = [r for r, _, _ in shifted]
    for r in [stmt.target, *reads(stmt.expr)]:
        if any(r is m for m in mine):
            continue
        for ix in r.index:
            if isinstance(ix, Gather) and any(u in a.vars for a in ix.index):
                return None
            if isinstance(ix, Affine) and u in ix.vars and ix.plain != u:
                return None
    if any(u in ix.vars for c_ in index_cmps(stmt.expr) for ix in c_.sides
           if isinstance(ix, Gather)):
        return None
    for _, term in split_terms(stmt.expr):
        if not any(up and any(f is m for m in mine) for up, f in split_factors(term)):
            return None
    r, _, axis = shifted[0]
    return u, e, c, r.tensor, axis, str(r.index[axis])


def restrict(state, s, ranges, v: str, found, names: dict) -> tuple:
    """The rewritten statement ``s`` over the live positions only: (statement,
    ranges, statements before it in the step). ``names``: the live counts
    (by (i, e, c, tensor)) and views already made in this step."""
    ctx = state.ctx
    u, e, c, tensor, axis, shown = found
    n = ctx.var_size(ranges, u)
    out: list = []
    key = (u, e, c, tensor)
    if key not in names:
        count = sum(1 for k in names if k[0] != "view")
        sym = f"{u}__live{count or ''}"
        t = ctx.local(v)
        steps = ctx.shape_of(tensor)[axis]
        if e < 0:       # step t + c - i >= 0: i < t + c + 1 (>= 0 when c >= -1)
            value = Op("+", (t, Lit(c + 1))) if c + 1 else t
            low = c < -1
        else:           # step t + c + i <= T - 1: i < T - t - c (>= 0 when c <= 1)
            value = Op("-", (Op("-", (ctx.size(steps), t)), Lit(c))) if c else \
                Op("-", (ctx.size(steps), t))
            low = c > 1
        out.append(Comment(f"(only the {u} where step {shown} of '{tensor}' is inside: "
                           "the others read zero steps and add 0)"))
        state._size_symbol(sym, value, out)
        live = Name(ctx.names(sym))
        if low:
            out.append(If(Op("<", (live, Lit(0))), (Assign(live, Lit(0)),), ()))
        if ranges[u] != steps:      # a range of its own, maybe shorter than the steps
            out.append(If(Op(">", (live, n)), (Assign(live, n),), ()))
        names[key] = sym
    sym = names[key]
    live = Name(ctx.names(sym))

    def view(r: Ref) -> Ref:
        axes = [a for a, ix in enumerate(r.index) if isinstance(ix, Affine) and ix.plain == u]
        if not axes or not all(isinstance(ix, Affine) for ix in r.index) or \
                any(u in ix.vars and ix.plain != u for ix in r.index):
            return r
        vname = f"{r.tensor}__{sym}"
        if ("view", vname) not in names:       # a view per step: the count changes
            shape = list(ctx.shape_of(r.tensor))
            parts = [Slice()] * (max(axes) + 1)
            for a in axes:
                parts[a] = Slice(None, live)
                shape[a] = sym
            out.append(Assign(ctx.local(vname), Index(ctx.local(r.tensor), tuple(parts))))
            ctx.extra_shapes[vname] = tuple(shape)
            ctx.defined.add(vname)
            names[("view", vname)] = True
        return Ref(vname, r.index, r.pos)

    s = replace(s, target=view(s.target), expr=map_refs(s.expr, view))
    return s, {**ranges, u: sym}, out


__all__ = ["live_slots", "restrict"]
