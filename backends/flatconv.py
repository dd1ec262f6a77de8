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
from tcc.ir import base_name, Affine, Gather, Ref, map_refs, reads

from .lower import tap_value, tuple_code


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


def lower_flat(ctx, si: StmtInfo, plan: FlatPlan, lower_statement, fix_indices,
               local_name) -> list[str]:
    """The lines for a convolution statement lowered on flattened rows."""
    s, ranges = si.stmt, si.ranges
    info = ctx.info
    a, p, k = plan.a, plan.p, plan.k
    ashape = info.shapes[a.tensor] if a.tensor in info.shapes else info.shapes[base_name(a.tensor)]
    lens = [ctx.size(d) for d in ashape[-k:]]                     # Lr, Lc
    counts = [ctx.var_size(ranges, u) for u in plan.us]          # R, C
    strides = [" * ".join(lens[j + 1:]) or "1" for j in range(k)]
    fresh = {n: local_name(f"{a.tensor}__{n}") for n in ("flat", "n", "d", "part")}
    pfresh = local_name(f"{p.tensor}__flat")
    ctx.loop_names.update([f"{a.tensor}__n", f"{a.tensor}__d", *plan.ws])
    lines = [f"# {s}",
             f"# (tap by tap over {', '.join(plan.ws)}, on {a.tensor}'s rows flattened over "
             f"{', '.join(plan.us)}: one matrix product per tap, on views; positions past "
             "a row's end are computed and dropped)"]
    n_expr = " + ".join(f"({c} - 1) * {st}" if st != "1" else f"({c} - 1)"
                        for c, st in zip(counts, strides)) + " + 1"
    lines.append(f"{fresh['n']} = {n_expr}")
    lead_a = len(a.index) - k
    lead_p = len(p.index) - k
    aname, pname = local_name(a.tensor), local_name(p.tensor)
    # the windowed tensor, flattened over its window axes
    a_fresh = s.target is a and a.tensor not in ctx.defined
    if s.target is a:
        if a_fresh:
            # the first tap (offset 0) writes; the rest starts at zero after it
            a_shape = tuple_code(ctx.size(d) for d in ashape)
            taps = " and ".join(f"{ctx.var_size(ranges, w)} > 0" for w in plan.ws)
            lines.append(f"{aname} = np.empty({a_shape}, dtype=dt) if {taps} else "
                         f"np.zeros({a_shape}, dtype=dt)")
            ctx.defined.add(a.tensor)
        lines.append(f"{fresh['flat']} = {aname}.reshape({aname}.shape[:{lead_a}] + (-1,))")
    else:
        lines.append(f"{fresh['flat']} = np.ascontiguousarray({aname}).reshape("
                     f"{aname}.shape[:{lead_a}] + (-1,))")
    # the position tensor, its rows padded to the windowed tensor's row length
    pshape = info.shapes[p.tensor] if p.tensor in info.shapes else info.shapes[base_name(p.tensor)]
    lead_shape = ", ".join(ctx.size(d) for d in pshape[:lead_p])
    padded = ", ".join([lead_shape] if lead_shape else [] + []) + \
        (", " if lead_shape else "") + ", ".join([counts[0]] + lens[1:])
    # a padded copy of a tensor nothing writes serves every statement that reads it so
    layout = (p.tensor, tuple(counts), tuple(lens), lead_p)
    if s.target is p:
        lines.append(f"{pfresh} = None   # the sum of the taps, over flat positions")
    elif k == 1:
        lines.append(f"{pfresh} = {pname}")
    elif ctx.flat_layouts.get(pfresh) != layout:
        lines.append(f"{pfresh} = np.zeros(({padded},), dtype=dt)")
        cut = ", ".join([":"] * (lead_p + 1) + [f":{c}" for c in counts[1:]])
        lines.append(f"{pfresh}[{cut}] = {pname}")
        lines.append(f"{pfresh} = {pfresh}.reshape({pfresh}.shape[:{lead_p}] + (-1,))"
                     f"[..., :{fresh['n']}]")
        if p.tensor in info.inputs:
            ctx.flat_layouts[pfresh] = layout
    if s.target is not a and s.target is not p and s.target.tensor not in ctx.defined:
        tshape = info.shapes[s.target.tensor]
        lines.append(f"{local_name(s.target.tensor)} = np.zeros("
                     f"{tuple_code(ctx.size(d) for d in tshape)}, dtype=dt)")
        ctx.defined.add(s.target.tensor)

    # the statement over one flat position index, windows held fixed
    flat_var = _fresh_var(s, "p")
    n_sym = f"{a.tensor}__n"
    d_sym = f"{a.tensor}__d"
    fixed = fix_indices(s, plan.ws)
    a_flat = Ref(f"{a.tensor}__flat", tuple(fixed_ix for fixed_ix in _lead(fixed, a, lead_a))
                 + (Affine(((flat_var, 1),), 0, ((d_sym, 1),)),))
    p_flat = Ref(f"{p.tensor}__flat", tuple(p.index[:lead_p]) + (Affine(((flat_var, 1),)),))
    local_name(f"{p.tensor}__flat")
    ranges2 = dict(ranges)
    ranges2[flat_var] = n_sym
    loops = tuple(v for v in fixed.loops if v not in plan.us) + (flat_var,)
    part = None
    if s.target is a or s.target is p:
        part = Ref(f"{a.tensor}__part", (a_flat if s.target is a else p_flat).index[:-1]
                   + (Affine(((flat_var, 1),)),))
    inner = _swap_refs(fixed, a, a_flat, p, p_flat, part, loops)
    shapes = dict(info.shapes)
    # The flat views' last axis: n positions (a Python local, like the tap
    # offset). The windowed tensor's whole flat axis is longer, but only ever
    # sliced, so its length is never needed ("?" would fail loudly if it were).
    shapes[a_flat.tensor] = tuple(ashape[:lead_a]) + ("?",)
    shapes[p_flat.tensor] = tuple(pshape[:lead_p]) + (n_sym,)
    if part is not None:
        lead_shape_ = ashape[:lead_a] if s.target is a else pshape[:lead_p]
        shapes[part.tensor] = tuple(lead_shape_) + (n_sym,)
    saved_shapes, info.shapes = info.shapes, shapes
    saved_defined = set(ctx.defined)
    ctx.defined.discard(f"{a.tensor}__part")
    try:
        body = lower_statement(ctx, StmtInfo(inner, ranges2))[1:]
    finally:
        info.shapes = saved_shapes
        ctx.defined = saved_defined | {s.target.tensor}
    op = "-=" if s.op == "-=" else "+="
    part_ = fresh["part"]
    reused = False
    if len(body) == 1 and body[0].startswith(f"{part_} = "):
        line, reused = tap_value(body[0][len(part_) + 3:], part_)
        if reused:
            lines.append(f"{part_} = None")
            body = [line]
    if s.target is a:
        cut = f"{fresh['d']}:{fresh['d']} + {fresh['n']}"
        if a_fresh:
            n_ = fresh["n"]
            body += [f"if {fresh['d']} == 0:   # the first tap",
                     f"    {fresh['flat']}[..., :{n_}] = {'-' if op == '-=' else ''}{part_}",
                     f"    {fresh['flat']}[..., {n_}:] = 0",
                     "else:",
                     f"    {fresh['flat']}[..., {cut}] {op} {part_}"]
        else:
            body.append(f"{fresh['flat']}[..., {cut}] {op} {part_}")
    elif s.target is p:
        # the first tap is the sum so far (a copy only if it is a view of an
        # argument); the others add to it in place, contiguously
        first = f"-{part_}" if op == "-=" else \
            f"{part_} if {part_}.base is None else {part_}.copy()"
        body += [f"if {pfresh} is None:", f"    {pfresh} = {first}"]
        if reused and op == "+=":
            body.append(f"    {part_} = None   # (the sum keeps that buffer)")
        body += ["else:", f"    {pfresh} {op} {part_}"]
    indent = ""
    for w in plan.ws:
        lines.append(f"{indent}for {local_name(w)} in range({ctx.var_size(ranges, w)}):")
        indent += "    "
    d_expr = " + ".join(f"{local_name(w)} * {st}" if st != "1" else local_name(w)
                        for w, st in zip(plan.ws, strides))
    lines.append(f"{indent}{fresh['d']} = {d_expr}")
    lines += [indent + line for line in body]
    if s.target is p:
        empty = tuple_code([*(ctx.size(d) for d in pshape[:lead_p]), f"max({fresh['n']}, 0)"])
        lines.append(f"if {pfresh} is None:   # no taps: an empty window")
        lines.append(f"    {pfresh} = np.zeros({empty}, dtype=dt)")
        # position (u0, u1, ...) of the result is flat position u0 * L1 * ... + u1 * ...
        steps = [f"{st} * {pfresh}.itemsize" if st != "1" else f"{pfresh}.itemsize"
                 for st in strides]
        view = (f"np.lib.stride_tricks.as_strided({pfresh}, shape={pfresh}.shape[:{lead_p}] "
                f"+ {tuple_code(counts)}, strides={pfresh}.strides[:{lead_p}] + "
                f"{tuple_code(steps)})")
        if p.tensor in saved_defined:
            lines.append(f"{pname} += {view}")
        else:
            lines.append(f"{pname} = {view}")
    return lines


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
