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
from .target import ALL, Apply, Assign, Attr, Comment, Def, Do, Index, Lit, Name, Slice, Tup, \
    Update, walk

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
        out += _emit(ctx, lowered[k:end], marks[k:end], later | ctx.returned)
        k = end
    return out


def _emit(ctx: Context, run, marks, needed_after: set[str]) -> list:
    rows = marks[0][0]
    defined_here: list[str] = []
    params: list[str] = []
    for (si, nodes), (_, tensors) in zip(run, marks):
        made = {p.stmt.target.tensor for p in _written(ctx, si)
                if any(isinstance(n, Assign) and n.target == ctx.local(p.stmt.target.tensor)
                       for n in nodes)}
        for x in tensors:
            if x in made and x not in params and x not in defined_here:
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
    alloc = [Assign(ctx.local(t), ap("empty", shape_tuple(ctx, ctx.shape_of(t)))) for t in whole]
    return head + alloc + [
        Def(fn, tuple(ctx.names(t) for t in passed), tuple(body)),
        Do(ap("row_blocks", Name(fn), ctx.size(rows), Tup(tuple(ctx.local(t) for t in passed)))),
    ]
