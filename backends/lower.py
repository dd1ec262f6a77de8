"""Lowering: a checked, optimized program -> target IR statements.

Each update becomes a comment quoting it and the statements that compute it
(``operands.py`` builds the values). An update with no summed index is one
broadcast expression; with summed indices, one contraction per product.
Writes at plain positions assign or update in place; at affine positions
they are strided slice-adds looping only over the window indices
(``add_affine``); at gathered positions, unbuffered ``add_at``/``max_at``.
Convolution-shaped updates run tap by tap: on flattened rows where each tap
is one matrix product on a view (``flatconv.py``), else one product per tap
on basic slices, else through the im2col view in one contraction. A statement
with written ranges runs on zero-padded copies (``breadth.py``); index
comparisons select the factors they multiply (``operands.py``; a causal mask
is a triangle, ``triangular.py``, a causal sum a running sum, ``prefix.py``),
and an equality that fixes a summed index removes it (``breadth.eliminate``).
"""

from __future__ import annotations

from dataclasses import replace

from tcc.check import StmtInfo
from tcc.ir import Affine, DimVal, Gather, IndexCmp, Ref, children, index_cmps, reads, rebuild

from .contractions import contract
from .operands import (Context, Operand, add, align, ap, elementwise,
                       expr_vars, index_vars, is_guard, mul, shape_tuple,
                       simple_axes, slice_part, split_factors, split_terms,
                       const_value, advanced_index)
from .products import product_parts, scaled
from .target import ALL, Apply, Assign, Comment, Do, For, If, Index, Lit, Name, Op, Slice, Tup, \
    Update


def lower_program(ctx: Context) -> list:
    """The statements of one generated function: every update, in order."""
    if ctx.info.recurrences:
        from .recurrence import lower_program as lower_recurrences
        return lower_recurrences(ctx, lower_statement)
    from .breadth import copy_seed
    lowered = []
    for si in ctx.info.stmts:
        t = si.stmt.target.tensor
        # a seed the backward adds to starts from its given values
        seed = ctx.info.roles.get(t) == "data" and t not in ctx.defined
        copy = copy_seed(ctx, t) if seed else []
        body = lower_statement(ctx, si)
        lowered.append((si, body[:1] + copy + body[1:]))
    if ctx.row_blocks or ctx.in_place:
        from . import inplace
        from .rowblocks import group
        env = {ctx.names(t): tuple(ctx.shape_of(t)) for t in ctx.info.shapes}
        flat = group(ctx, lowered) if ctx.row_blocks else [n for _, ns in lowered for n in ns]
        return inplace.rewrite(flat, env, keep={ctx.names(t) for t in ctx.returned}, min_rank=2)
    return [n for _, nodes in lowered for n in nodes]


def lower_statement(ctx: Context, si: StmtInfo) -> list:
    """The statements for one update, preceded by a comment quoting it."""
    from .breadth import lower_padded
    if id(si) in ctx.kernels:       # part of a group that one library call computes
        from .kernels import lower_group
        return lower_group(ctx, si, ctx.kernels[id(si)])
    if si.stmt.padded:
        return lower_padded(ctx, si, lower_statement)
    if not index_cmps(si.stmt.expr):
        from .tune import lower_tuned, strategies
        cands = strategies(ctx, si)
        if ctx.tune and len(cands) > 1:
            return lower_tuned(ctx, si, cands)
        if cands:
            return cands[0][1]()
    return lower_update(ctx, si)


# --------------------------------------------------------------- one update

def _max_update(ctx: Context, si: StmtInfo, tname, tvars_order, summed, plain_target) -> list:
    """``max=`` (``min=``): a maximum reduction over the summed indices, written
    into a tensor that starts at -inf (+inf) wherever an update can write it and
    at 0 elsewhere (positions a constant axis skips)."""
    s, ranges = si.stmt, si.ranges
    red = "max" if s.op == "max=" else "min"
    start = Lit(float("-inf") if red == "max" else float("inf"))
    allv = tuple(tvars_order) + tuple(summed)
    val = elementwise(ctx, s.expr, allv, ranges)
    if expr_vars(s.expr) != set(allv):
        val = ap("broadcast_to", val, Tup(tuple(ctx.var_size(ranges, v) for v in allv)))
    if summed:
        axes = tuple(range(len(tvars_order), len(allv)))
        val = ap(red, val, axis=axes[0] if len(axes) == 1 else axes)
    shape = shape_tuple(ctx, ctx.shape_of(s.target.tensor))
    if plain_target and tvars_order:
        return [Assign(tname, align(val, tvars_order, tvars_order))]
    if plain_target:
        return [Assign(tname, ap("full", shape, start)), Assign(Index(tname, (ALL,)), val)]
    index = s.target.index
    consts = [isinstance(ix, Affine) and not ix.terms and not ix.dims for ix in index]
    parts = None
    if simple_axes(index):      # each position written once: the reduction is the value
        target = s.target.tensor
        parts = tuple(slice_part(ctx, ix, ranges, ctx.shape_of(target)[k])
                      for k, ix in enumerate(index))
    if any(consts):
        reach = tuple(const_value(ctx, ix) if c else Slice() for ix, c in zip(index, consts))
        init = [Assign(tname, ap("zeros", shape))]
        if parts is None or any(p != Slice() for p, c in zip(parts, consts) if not c):
            init.append(Assign(Index(tname, reach), start))
    else:
        init = [Assign(tname, ap("full", shape, start))]
    if parts is not None:
        return init + [Assign(Index(tname, parts), val)]
    return init + _scatter(ctx, s, tname, Operand(val, tvars_order, True), False, ranges,
                           f"{red}_at")


def _sum_of_products(ctx: Context, si: StmtInfo, tvars_order, summed):
    """The right-hand side with summed indices: (value, covered indices, whether
    the value is a new array rather than a view of a tensor)."""
    s, ranges, loops = si.stmt, si.ranges, si.stmt.loops
    parts = []
    from .breadth import eliminate
    for tsign, term in split_terms(s.expr):
        # an equality that fixes a summed index leaves one point of its sum
        factors, gone = eliminate(ctx, split_factors(term), summed, ranges)
        # comparisons over the target's indices select the term once it is summed
        post = [f for up, f in factors if is_guard(up, f) and set(f.vars) <= set(tvars_order)]
        factors = [(up, f) for up, f in factors if not (is_guard(up, f) and f in post)]
        # a causal sum ((j <= t) over a summed j) is a running sum (prefix.py)
        from .prefix import prefix_sum
        running = prefix_sum(ctx, factors, tvars_order, summed, loops, ranges)
        if running is not None:
            scalar, res, present = running
        else:
            # (factors over the result's indices may scale it, not an operand)
            scalar, operands, after = product_parts(ctx, factors, loops, ranges, tvars_order)
            res = contract(ctx, operands, tvars_order, ranges) if operands else \
                Operand(Lit(1.0), ())
            from .triangular import exact
            res = exact(ctx, operands, res, ranges)
            present = set().union(*(o.vars for o in operands)) if operands else set()
        node = align(res.node, res.vars, tvars_order) if res.vars else res.node
        if running is None and after:
            node = scaled(ctx, node, after, tvars_order, ranges)
        # summed indices this term does not depend on: each adds the term again
        for v in summed:
            if v not in present and v not in gone:
                scalar = ctx.var_size(ranges, v) if scalar is None else \
                    mul(scalar, ctx.var_size(ranges, v))
        # a batch average over an empty batch: the loops run no update, so 0
        # (not 1/0 times an empty sum)
        empty = [ctx.var_size(ranges, v) for v in summed
                 if isinstance(ranges[v], str) and
                 any(isinstance(f, DimVal) and f.name == ranges[v]
                     for _, f in split_factors(term))]
        if scalar is not None and empty:
            count = empty[0]
            for e in empty[1:]:
                count = mul(count, e)
            scalar = ap("if_nonzero", scalar, count)
        if scalar is not None:
            node = scalar if node == Lit(1.0) else mul(scalar, node)
        vars_ = res.vars
        if post:
            from .triangular import guarded
            node = guarded(ctx, post, tvars_order, ranges, node, res.vars)
            kept = set(vars_).union(*(c.vars for c in post))
            vars_ = tuple(v for v in tvars_order if v in kept)
        # (a view of a tensor, where an equality left one point of the sum)
        fresh = res.fresh or scalar is not None or bool(post) or tsign < 0
        parts.append((tsign, node, vars_, fresh))
    node = None
    for tsign, n, _, _ in parts:
        if node is None:
            node = n if tsign > 0 else Op("neg", (n,))
        else:
            node = Op("+" if tsign > 0 else "-", (node, n))
    covered = set().union(*(set(v) for _, _, v, _ in parts))
    if len(parts) > 1 and any(set(v) != covered for _, _, v, _ in parts):
        covered = set()     # a sum of parts each missing some index: broadcast it
    return node, covered, len(parts) > 1 or parts[0][3]


def lower_update(ctx: Context, si: StmtInfo) -> list:
    s, ranges = si.stmt, si.ranges
    loops = s.loops
    t = s.target.tensor
    tname = ctx.local(t)
    tvars = index_vars(s.target.index)
    plain_target = all(isinstance(ix, Affine) and ix.plain and ctx.whole_axis(t, k)
                       for k, ix in enumerate(s.target.index)) and \
        len(set(tvars)) == len(s.target.index)
    tvars_order = tvars
    if not plain_target and not any(isinstance(ix, Gather) for ix in s.target.index):
        tvars_order = scatter_order(s)
    summed = [v for v in loops if v not in tvars]
    out: list = [Comment(str(s))]
    first = t not in ctx.defined
    ctx.defined.add(t)
    zeros = ap("zeros", shape_tuple(ctx, ctx.shape_of(t)))

    if s.op in ("max=", "min="):
        return out + _max_update(ctx, si, tname, tvars_order, summed, plain_target)

    if not summed:
        node = elementwise(ctx, s.expr, tvars_order, ranges)
        covered = expr_vars(s.expr)
        fresh = not isinstance(s.expr, Ref)
    else:
        node, covered, fresh = _sum_of_products(ctx, si, tvars_order, summed)
    # the value broadcasts over the target's indices; partial if it lacks some
    partial = set(covered) != set(tvars_order)
    update = "-=" if s.op == "-=" else "+="
    if plain_target:
        if not first:
            return out + [Update(tname, update, node)]
        neg = Op("neg", (node,)) if update == "-=" else node
        if not tvars_order:
            return out + [Assign(tname, ap("asarray" if fresh or update == "-=" else "array",
                                           neg))]
        if not partial:
            return out + [Assign(tname, neg if fresh or update == "-=" else ap("array", node))]
        return out + [Assign(tname, zeros), Update(tname, update, node)]
    if first:
        out.append(Assign(tname, zeros))
    if update == "-=":
        node = Op("neg", (node,))
    return out + _scatter(ctx, s, tname, Operand(node, tvars_order, True), partial, ranges,
                          "add_at")


def scatter_order(s) -> tuple[str, ...]:
    """Index order for a value added at affine target positions: the window
    indices first (in ``2*n + i`` the one with the smaller coefficient; in
    ``r + fr`` the one the loops list later), then one index per target axis in
    axis order, so each window position adds one contiguous block."""
    window, position = [], []
    for ix in s.target.index:
        if isinstance(ix, Affine) and len(ix.terms) > 1:
            terms = sorted(ix.terms, key=lambda t: (-abs(t[1]), s.loops.index(t[0])))
            position.append(terms[0][0])
            window += [v for v, _ in terms[1:]]
        else:
            position += [v for v in ix.vars]
    out = []
    for v in window + position:
        if v not in out:
            out.append(v)
    return tuple(out)


def _scatter(ctx, s, tname, val: Operand, partial: bool, ranges, at_op: str) -> list:
    """Add (or max) val, over the target's indices, at non-plain target positions."""
    index = s.target.index
    gathers = any(isinstance(ix, Gather) for ix in index)
    tvars = index_vars(index) if gathers else scatter_order(s)
    node = val.node
    if partial:
        node = ap("broadcast_to", node, Tup(tuple(ctx.var_size(ranges, v) for v in tvars)))
    if at_op == "add_at" and not gathers and simple_axes(index):
        shape = ctx.shape_of(s.target.tensor)
        parts = tuple(slice_part(ctx, ix, ranges, shape[k]) for k, ix in enumerate(index))
        return [Update(Index(tname, parts), "+=", node)]
    if at_op == "add_at" and not gathers:
        offsets = Tup(tuple(const_value(ctx, ix) for ix in index))
        coefs = Tup(tuple(tuple(dict(ix.terms).get(v, 0) for ix in index) for v in tvars))
        return [Do(ap("add_affine", tname, node, offsets, coefs))]
    idx = Tup(advanced_index(ctx, index, tvars, ranges))
    return [Do(ap(at_op, tname, idx, node))]


# ------------------------------------------------------------------- taps

def tap_windows(s) -> tuple[str, ...]:
    """The window indices of a convolution-shaped update to loop over, tap by
    tap, or (): each multi-index axis ``2*n + i`` of a read or the target gives
    its window index, and with those fixed every access must be a basic slice
    whose innermost axis stays a plain index (so each tap's slices feed BLAS
    without a copy). Otherwise the im2col view (one contraction) is used."""
    if s.op in ("max=", "min="):
        return ()
    tvars = set(index_vars(s.target.index))
    if all(v in tvars for v in s.loops):
        return ()
    windows: list[str] = []
    for r in [s.target, *reads(s.expr)]:
        if any(isinstance(ix, Gather) for ix in r.index):
            return ()
        multi = [ix for ix in r.index if isinstance(ix, Affine) and len(ix.terms) > 1]
        if not multi:
            continue
        last = r.index[-1]
        if not (isinstance(last, Affine) and last.plain):
            return ()
        for ix in multi:
            terms = sorted(ix.terms, key=lambda t: (-abs(t[1]), s.loops.index(t[0])))
            windows += [v for v, _ in terms[1:] if v not in windows]
    if not windows:
        return ()
    fixed = fix_indices(s, windows)
    for r in [fixed.target, *reads(fixed.expr)]:
        if not simple_axes(r.index):
            return ()
    return tuple(windows)


def fix_indices(s, names):
    """The update with some loop indices held fixed (read as Python variables)."""
    def fix_affine(a: Affine) -> Affine:
        terms = tuple((v, c) for v, c in a.terms if v not in names)
        dims = a.dims + tuple((v, c) for v, c in a.terms if v in names)
        return Affine(terms, a.const, dims, a.pos)

    def fix_index(ix):
        return fix_affine(ix) if isinstance(ix, Affine) else \
            Gather(ix.tensor, tuple(fix_affine(a) for a in ix.index))

    def fix_ref(r: Ref) -> Ref:
        return Ref(r.tensor, tuple(fix_index(ix) for ix in r.index), r.pos)

    def fix(e):         # reads and index comparisons ((t >= 1) at a fixed step t)
        if isinstance(e, Ref):
            return fix_ref(e)
        if isinstance(e, IndexCmp):
            return IndexCmp(e.op, fix_index(e.lhs), fix_index(e.rhs), e.pos)
        return rebuild(e, [fix(c) for c in children(e)])

    return replace(s, loops=tuple(v for v in s.loops if v not in names),
                   target=fix_ref(s.target), expr=fix(s.expr))


def tap_value(value, buffer: Name) -> tuple[Assign, bool]:
    """The statement that computes one tap's value into ``buffer``, and whether
    it reuses the buffer: a matrix product writes into it (one buffer for
    every tap, no allocation per tap), anything else is assigned as it is."""
    if isinstance(value, Apply) and value.op == "matmul" and value.get("out") is None:
        return Assign(buffer, ap("matmul", *value.args, out=buffer)), True
    return Assign(buffer, value), False


def _strided_taps(s, windows, inner: list, tname: Name):
    """(axis, S, n, i, value) when the tap loop's one statement is a scatter-add
    ``t[..., S*n + i, ...] += value`` over a single window index i, every
    other target axis plain; else None."""
    if len(windows) != 1 or s.op not in ("+=", "-=") or len(inner) != 1:
        return None
    (stmt,) = inner
    if not (isinstance(stmt, Update) and stmt.op == "+=" and isinstance(stmt.target, Index)
            and stmt.target.base == tname):
        return None
    (w,) = windows
    found = None
    for axis, ix in enumerate(s.target.index):
        if not isinstance(ix, Affine):
            return None
        if ix.plain is not None and ix.plain != w:
            continue
        coefs = dict(ix.terms)
        if found is not None or len(coefs) != 2 or coefs.get(w) != 1 or ix.const or ix.dims:
            return None
        (n, stride), = [(v, c) for v, c in coefs.items() if v != w]
        if stride < 1:
            return None
        found = (axis, stride, n)
    if found is None:
        return None
    return (*found, w, stmt)


def _lower_taps(ctx: Context, si: StmtInfo, windows) -> list:
    """A convolution, one matrix product per window position (tap)."""
    s = si.stmt
    t = s.target.tensor
    out: list = [Comment(str(s)),
                 Comment(f"(tap by tap over {', '.join(windows)}: one matrix product each)")]
    name = ctx.local(t)
    shape = shape_tuple(ctx, ctx.shape_of(t))
    fresh = t not in ctx.defined
    ctx.defined.add(t)
    ctx.loop_names.update(windows)
    inner = lower_update(ctx, StmtInfo(fix_indices(s, windows), si.ranges))[1:]
    # Every tap adds to the whole target: the first tap's product is the sum so
    # far, with no zeros to add it to (unless it is a view, or broadcasts).
    whole = fresh and len(inner) == 1 and isinstance(inner[0], Update) and \
        inner[0].target == name and inner[0].op == "+=" and \
        not {v for ix in s.target.index for v in ix.vars} & set(windows)
    strided = None if whole or not fresh else _strided_taps(s, windows, inner, name)
    tap = ctx.local(f"{t}__tap")
    none = Lit(None)
    if strided is not None:
        # x.grad[b, S*n + i, c] += ...: taps i = 0..S-1 reach the positions below
        # S*N once between them, so they write and the later taps add. Only the
        # positions past S*N start at zero (all of them if there are fewer taps).
        axis, stride, n, w, stmt = strided
        nsize, wsize = ctx.var_size(si.ranges, n), ctx.var_size(si.ranges, w)
        out.append(If(Op(">=", (wsize, Lit(stride))), (Assign(name, ap("empty", shape)),),
                      (Assign(name, ap("zeros", shape)),)))
        tail = (Slice(),) * axis + (Slice(mul(Lit(stride), nsize)),)
        out.append(Assign(Index(name, tail), Lit(0)))
        out.append(Assign(tap, none))
        inner = [If(Op("<", (ctx.local(w), Lit(stride))), (Assign(stmt.target, stmt.value),),
                    (tap_value(stmt.value, tap)[0], Update(stmt.target, "+=", tap)))]
    elif fresh and not whole:
        out.append(Assign(name, ap("zeros", shape)))
    if whole:
        compute, reused = tap_value(inner[0].value, tap)
        out.append(Assign(name, none))
        out.append(Assign(tap, none))
        keep = [Assign(name, tap)] + ([Assign(tap, none)] if reused else [])
        inner = [compute,
                 If(Op("is", (name, none)),
                    (If(ap("owned", tap, shape), tuple(keep),
                        (Assign(name, Op("+", (tap, ap("zeros", shape)))),)),),
                    (Update(name, "+=", tap),))]
    body = inner
    for w in reversed(windows):
        body = [For(ctx.names(w), ctx.var_size(si.ranges, w), tuple(body))]
    out += body
    if whole:
        out.append(If(Op("is", (name, none)), (Comment("no taps: an empty window"),
                                                Assign(name, ap("zeros", shape)))))
    return out


__all__ = ["lower_program", "lower_statement", "lower_update", "fix_indices", "tap_value",
           "add", "split_terms", "split_factors"]
