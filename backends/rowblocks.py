"""Row-block groups: consecutive elementwise and row-reduction statements that
share their leading (batch) axis run together on blocks of rows.

A softmax, a layer norm or the fused softmax backward is a handful of
statements, each a full pass over memory with a fresh temporary as large as
the tensor. Grouped, they run as one local function on blocks of rows of
about 2 MiB of their arrays (``_row_blocks`` in the module's helpers; 2 MiB
measured best on our 2-core machine, where smaller blocks pay the per-block
Python calls too often): every statement of the group does its work on a block while the block is in
cache, the temporaries are the size of a block, and the blocks run on a
thread pool when the arrays are large.

A statement joins a group when, read as the lowering wrote it, it is exact on
any block of rows:

- its target's first index is a plain loop index (the row index) that is
  not summed, and every tensor it reads with that index reads it plainly, as
  its first index and nowhere else;
- its code is assignments and in-place updates of elementwise operations,
  the language's functions, and reductions over other axes (``sum``, ``max``,
  ``min``, and ``einsum`` where no pairwise step is a BLAS product): no
  matrix products (BLAS keeps its own threads, and the pool never runs beside
  it), no scatters, no buffers shaped by the full size, no views that slice
  the rows themselves.

Blocks split rows, never a reduction, so the results are the same bits on any
number of threads. The row-indexed tensors a group reads are passed to the
function sliced to the block; those it defines and that are read after it
(or returned) are allocated once, whole, and written row block by row block;
the rest live in the block only.
"""

from __future__ import annotations

from tcc import contraction
from tcc.check import StmtInfo
from tcc.ir import Affine, Ref, reads

from . import inplace
from .operands import Context, ap, shape_tuple
from .target import ALL, Apply, Assign, Attr, Comment, Def, Do, If, Index, Lit, Name, Slice, \
    Tup, Update, walk

# operations exact on a block of rows (reductions are checked for their axis)
_ROWWISE = {"sum", "max", "min", "scalar", "if_nonzero", "as_float", "einsum"}


def _lead(si: StmtInfo) -> str | None:
    """The statement's row index: its target's first index, plain, not summed,
    read only as the first index of whatever it indexes."""
    s = si.stmt
    if not s.target.index or s.written:
        return None
    first = s.target.index[0]
    v = first.plain if isinstance(first, Affine) else None
    if v is None:
        return None
    for r in (s.target, *reads(s.expr)):
        where = [k for k, ix in enumerate(r.index) if v in ix.vars]
        if where and (where != [0] or not isinstance(r.index[0], Affine) or
                      r.index[0].plain != v):
            return None
    return v


def _written(ctx: Context, si: StmtInfo) -> tuple:
    """The statements the lowering wrote for ``si``: a sum that reuses the
    product before it (``reuse.py``) reads that product, not its own factors."""
    from .reuse import Reuse
    k = ctx.kernels.get(id(si))
    return k.si if isinstance(k, Reuse) else (si,)


def _refs(ctx: Context, si: StmtInfo) -> list:
    return [r for part in _written(ctx, si) for r in (part.stmt.target, *reads(part.stmt.expr))]


def _row_tensors(si: StmtInfo, v: str, refs=None) -> list[str]:
    s = si.stmt
    out = []
    for r in refs or (s.target, *reads(s.expr)):
        if isinstance(r, Ref) and r.index and isinstance(r.index[0], Affine) and \
                r.index[0].plain == v and r.tensor not in out:
            out.append(r.tensor)
    return out


def _blas_free(node: Apply) -> bool:
    """An einsum none of whose pairwise steps numpy or opt_einsum would hand to
    BLAS (``contraction.blas_free``)."""
    spec = node.args[0].value if isinstance(node.args[0], Lit) else node.args[0]
    return isinstance(spec, str) and contraction.blas_free(spec, dict(node.kw).get("path"))


def _exact_on_rows(nodes: list, row_names: set[str]) -> bool:
    """Whether the statement's code means the same on a block of rows."""
    for stmt in nodes:
        if isinstance(stmt, Comment):
            continue
        if not isinstance(stmt, (Assign, Update)) or not isinstance(stmt.target, Name):
            return False
        for n in walk(stmt.value):
            if isinstance(n, Apply):
                if not (n.op.startswith("fn:") or n.op in _ROWWISE):
                    return False
                if n.op == "einsum" and not _blas_free(n):
                    return False
                axis = dict(n.kw).get("axis")
                if n.op in ("sum", "max", "min") and (axis == 0 or (
                        isinstance(axis, tuple) and 0 in axis)) and \
                        any(isinstance(m, Name) and m.name in row_names for m in walk(n.args[0])):
                    return False
            elif isinstance(n, Attr):
                return False
            elif isinstance(n, Index) and isinstance(n.base, Name) and n.base.name in row_names:
                first = n.parts[0] if n.parts else ALL
                if not (first is ALL or first == Slice()):
                    return False
    return True


def group(ctx: Context, lowered: list[tuple[StmtInfo, list]]) -> list:
    """The statements of a function with runs of row-local statements (two or
    more, or one over a large tensor) as row-block groups."""
    marks = []
    for si, nodes in lowered:
        v = _lead(si)
        if v is None or any(_lead(part) != v for part in _written(ctx, si)):
            marks.append(None)
            continue
        tensors = _row_tensors(si, v, _refs(ctx, si))
        names = {ctx.names(t) for t in tensors}
        rows = si.ranges[v]
        ok = all(ctx.shape_of(t)[0] == rows for t in tensors if t in ctx.info.shapes) and \
            not any(t in ctx.value_casts for t in tensors) and _exact_on_rows(nodes, names)
        marks.append((rows, tensors) if ok else None)
    out: list = []
    k = 0
    while k < len(lowered):
        if marks[k] is None:
            out += lowered[k][1]
            k += 1
            continue
        end = k + 1
        while end < len(lowered) and marks[end] is not None and marks[end][0] == marks[k][0]:
            end += 1
        later = {r.tensor for si, _ in lowered[end:] for r in _refs(ctx, si)}
        made = {n.target.name: n.value for _, nodes in lowered[:k] for n in nodes
                if isinstance(n, Assign) and isinstance(n.target, Name)}
        out += _emit(ctx, lowered[k:end], marks[k:end], later | ctx.returned, made)
        k = end
    return out


def _emit(ctx: Context, run, marks, needed_after: set[str], made: dict) -> list:
    rows = marks[0][0]
    defined_here: list[str] = []
    params: list[str] = []
    for (si, nodes), (_, tensors) in zip(run, marks):
        assigned = {p.stmt.target.tensor for p in _written(ctx, si)
                    if any(isinstance(n, Assign) and n.target == ctx.local(p.stmt.target.tensor)
                           for n in nodes)}
        for x in tensors:
            if x in assigned and x not in params and x not in defined_here:
                defined_here.append(x)
            elif x not in defined_here and x not in params:
                params.append(x)
    whole = [t for t in defined_here if t in needed_after]
    passed = params + whole
    body = []
    env = {}
    for si, nodes in run:
        env.update((ctx.names(r.tensor), tuple(ctx.shape_of(r.tensor)))
                   for r in _refs(ctx, si) if isinstance(r, Ref))
        for n in nodes:
            if isinstance(n, Assign) and n.target.name in {ctx.names(t) for t in whole}:
                n = Assign(Index(n.target, (ALL,)), n.value)
            body.append(n)
    body = inplace.rewrite(body, env)
    ctx.row_groups += 1
    fn = f"_rows_{ctx.row_groups}"
    head = [Comment(f"rows of {rows} in blocks, on threads when large: "
                    f"{len(run)} statement{'s' if len(run) > 1 else ''} in one pass")]
    alloc = []
    hosts = _hosts(ctx, body, params, whole, needed_after, made)
    for t in whole:
        shape = shape_tuple(ctx, ctx.shape_of(t))
        new = Assign(ctx.local(t), ap("empty", shape))
        if t in hosts:
            p = ctx.local(hosts[t])
            alloc += [Comment(f"({t} takes the memory of {hosts[t]}, which is not read after "
                              "the rows that write it)"),
                      If(ap("owned", p, shape), (Assign(ctx.local(t), p),), (new,))]
        else:
            alloc.append(new)
    fn_def = Def(fn, tuple(ctx.names(t) for t in passed), tuple(body))
    ctx.groups.append((fn, [str(si.stmt) for si, _ in run], fn_def))
    return head + alloc + [
        fn_def,
        Do(ap("row_blocks", Name(fn), ctx.size(rows), Tup(tuple(ctx.local(t) for t in passed)))),
    ]


def _hosts(ctx: Context, body: list, params: list, whole: list, needed_after: set,
           made: dict) -> dict:
    """Whole arrays of the group that can take the memory of an array the group
    reads: one this function made (a product, an arithmetic result), of the
    same shape, read by nothing after the group, and read inside it only
    before the first write into the new array (or by that write itself, as a
    direct operand of one elementwise ufunc, position by position).
    (Attention: P is computed in the memory of the scores S, as by hand.)"""
    out: dict = {}
    taken: set = set()
    for t in whole:
        for p in params:
            name = ctx.names(p)
            value = made.get(name)
            # (a view or a caller's array never lends its memory; owned() checks the
            # rest at run time)
            if p in taken or p in needed_after or p not in ctx.defined or value is None or \
                    ctx.shape_of(p) != ctx.shape_of(t) or not inplace.new_array(value):
                continue
            if _reads_before_write(body, name, ctx.names(t)):
                out[t] = p
                taken.add(p)
                break
    return out


def _reads_before_write(body: list, p: str, t: str) -> bool:
    pa, ta = {p}, {t}
    first_write = last_read = None
    for k, s in enumerate(body):
        if isinstance(s, Comment):
            continue
        if isinstance(s, Assign) and isinstance(s.target, Name) and isinstance(s.value, Name):
            for group in (pa, ta):
                if s.value.name in group:
                    group.add(s.target.name)
            continue
        if not isinstance(s, (Assign, Update, Do)):
            return False
        if isinstance(s, Do) and s.value.op == "ufunc":
            dest, value = s.value.get("out"), s.value
        else:
            dest = s.target if not isinstance(s, Do) else None
            value = s.value
        base = dest.base if isinstance(dest, Index) else dest
        read = {n.name for n in walk(value) if isinstance(n, Name) and n is not dest}
        if isinstance(s, Update):
            read |= {n.name for n in walk(s.target) if isinstance(n, Name)}
        if isinstance(dest, Index):
            read |= {n.name for part in dest.parts if not isinstance(part, type(ALL))
                     for n in walk(part) if isinstance(n, Name)}
        if read & pa:
            last_read = (k, s)
        if isinstance(base, Name) and base.name in ta and first_write is None:
            first_write = (k, s)
    if first_write is None or last_read is None:
        return first_write is not None
    if last_read[0] < first_write[0]:
        return True
    if last_read[0] > first_write[0]:
        return False
    s = last_read[1]
    return isinstance(s, Do) and s.value.op == "ufunc" and \
        all(isinstance(a, Name) or not ({n.name for n in walk(a) if isinstance(n, Name)} & pa)
            for a in s.value.args[1:])
