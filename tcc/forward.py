"""Forward mode, Hessian-vector products and the diagonal Hessian: programs
in the same language, from the same derivative rules as reverse mode (the
rows of ``tcc.functions`` and ``autodiff.BIN_RULES``).

Forward mode (``tcc jvp``). For each update ``for I: Y[o] op f(..., X[e], ...)``,
in order, and each read of a tensor that has a tangent, emit

    for I: Y.dot[o] += X.dot[e] * (df/dX[e])

with ``-=`` flipping the sign; ``max=`` sends the tangent to the positions
that tie for the maximum, split evenly (``Y.dot[o] += X.dot[e] * (v == Y[o]) /
count[o]``). Inputs and params have tangents ``X.dot`` (the directions, data
of the printed program); every computed tensor that depends on them gets
``Y.dot``. The printed program reads the forward's values, as the backward does.

Hessian-vector products (``tcc hvp``): forward mode applied to the backward
program (forward over reverse). The forward's tangents come first, then the
backward's statements, then their tangents; the results are ``X.grad.dot``,
the derivative of each input's and param's gradient along the directions,
with the gradient's ``1/B`` for params. Comparisons (relu's indicator, max's
choice) have derivative 0, so kinks have second derivative 0.

The diagonal Hessian (``tcc hessian --diagonal``): the recursion of ETH
exercise 4, problem 2 (Becker and LeCun), propagated backward beside the
gradient. For each update and each tensor X[e] it reads (all reads of one
element together), with D = d f / d X[e] and D2 = d^2 f / d X[e]^2,

    X.hess[e] += Y.hess[o] * D ** 2 + Y.grad[o] * D2

which neglects every off-diagonal term d^2 L / dY[o] dY[o'] and d^2 f / dX[e]
dX[e'] (e != e'). It is exact where no such term is nonzero: a single layer
with an elementwise loss, or any chain of statements whose target elements each
depend on one element of each operand. Through a recurrence it is a
recurrence in the backward's direction (descending, like BPTT); a weight that
every step reads drops the terms between steps (a later h depends on an
earlier one), so its diagonal is an approximation even for an elementwise cell.

It is one module over 500 lines on purpose: the tangent rules, the HVP (the
same rules applied to the backward program) and the diagonal recursion read
one rule table and one fixed point over recurrences; split, each would carry
a copy of that walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .autodiff import (ONE, _in_run_order, _needs_grad, _plain_step_target, _plain_vars,
                       _range_pins, _shifted_first, _step_written, active_tensors,
                       build_product, derivative, differentiate, read_paths)
from .check import Info, analyze, size_symbols
from .errors import TccError
from .ir import (COMPARISONS, DOT, HESS, REDUCTIONS, Affine, Bin, Decl, DimVal, Expr,
                 IndexCmp, Neg, Num, Program, Ref, Stmt, dim_uses, grad_name, hess_name,
                 index_cmps, index_vars, is_grad, reads, shape_owner, stmt_vars, tangent_name)
from .algebra import split_product
from .names import fresh
from .passes import Context, Log, taken_names

# ------------------------------------------------------------- one term


def _term(info: Info, si, origin, target: Ref, lead: list[Expr], coef, nums: list[Expr],
          dens: list[Expr], negate: bool) -> Stmt:
    """``for I: target += lead * coef * nums / dens`` over the loops of the
    statement ``si`` it comes from, as autodiff builds a backward term: reads
    raised to the power 0 keep ranges the term would lose, and a loop index
    the term no longer mentions multiplies it by its range."""
    s = si.stmt
    op = "-=" if (coef < 0) != negate else "+="
    coef = abs(coef)
    # 1/B (or any dim divided by) first, as the backward prints it
    front = [d for d in dens if isinstance(d, DimVal)]
    dens = [d for d in dens if not isinstance(d, DimVal)]
    lead = [Bin("/", ONE, d) for d in front] + list(lead)
    fixed = [target] + [r for f in lead for r in reads(f)]
    nums = nums + _range_pins(info, si, fixed, nums + dens)
    body = build_product(lead, 1, nums, dens)
    used = set(stmt_vars(Stmt(s.loops, target, op, body)))
    loops = tuple(v for v in s.loops if v in used)
    for v in s.loops:
        if v not in used:
            size = si.ranges[v]
            lead.append(Num(size) if isinstance(size, int) else DimVal(size))
    expr = build_product(lead, coef, nums, dens)
    written = tuple((v, size) for v, size in s.written if v in loops)
    # a forward recurrence's tensor read at another step is data here: 0 outside
    written += tuple(w for w in _step_written(info, si, reads(expr))
                     if w[0] in loops and w[0] not in dict(written))
    return Stmt(loops, target, op, expr, s.pos, origin=origin, written=written)


def _has_tangent_name(t: str) -> bool:
    """Whether ``t.dot`` is a name: X.dot and X.grad.dot are, X.dot.dot and X.hess.dot not."""
    return not (t.endswith(DOT) or t.endswith(HESS))


def _tie_split(s: Stmt, k, taken: set[str], origin: bool):
    """For a max= or min= statement: the statement counting the positions that
    tie, and the factors (v == m[o]) / count[o] that split among them."""
    y = s.target.tensor
    count = fresh(f"{shape_owner(y)}_count", taken)
    hit = Bin("==", s.expr, Ref(y, s.target.index))
    stmt = Stmt(s.loops, Ref(count, s.target.index), "+=", hit, s.pos,
                origin=(k, -1) if origin else None, written=s.written)
    return stmt, [hit], [Ref(count, s.target.index)]


# ------------------------------------------------------------ forward mode

def tangents(info: Info, start, taken: set[str], origin: bool = True,
             what: str = "forward mode") -> tuple[list[Stmt], set[str]]:
    """The tangent statements of a checked program, in its order, given the
    tensors that have tangents to begin with (``start``). Returns them and
    every tensor that has a tangent after them. ``origin``: tag each with the
    statement it comes from (for the optimizer's passes)."""
    if info.recurrences:
        # a recurrence reads at an earlier step what it updates later in program
        # order: which tensors have tangents is a fixed point over the cycle
        before = None
        has = set(start)
        while has != before:
            before = set(has)
            _, has = _tangent_pass(info, has, set(taken), origin, what)
        start = has
    return _tangent_pass(info, start, taken, origin, what)


def _tangent_pass(info: Info, start, taken: set[str], origin: bool,
                  what: str) -> tuple[list[Stmt], set[str]]:
    has = set(start)
    out: list[Stmt] = []
    for k, si in enumerate(info.stmts):
        s = si.stmt
        y = s.target.tensor
        paths = list(read_paths(s.expr))
        if not any(r.tensor in has for _, r in paths):
            continue
        if not _has_tangent_name(y):
            raise TccError(f"'{y}' would need a tangent, '{y}.dot', which is not a name: "
                           f"only data tensors may be called X{y[len(shape_owner(y)):]}",
                           s.target.pos)
        pending, extra, dens0 = [], [], []
        if s.op in REDUCTIONS:
            count, extra, dens0 = _tie_split(s, k, taken, origin)
            pending.append(count)
        terms = []
        for n, (path, r) in enumerate(paths):
            if r.tensor not in has:
                continue
            chain = derivative(s.expr, path)
            if chain is None:
                continue
            coef, nums, dens = split_product(extra + chain)
            if coef == 0:
                continue
            terms.append(_term(info, si, (k, n) if origin else None,
                               Ref(tangent_name(y), s.target.index),
                               [Ref(tangent_name(r.tensor), r.index)], coef, nums,
                               dens0 + dens, s.op == "-="))
        if terms:
            out += pending + terms
            has.add(y)
    return out, has


# ----------------------------------------------------------- declarations

def declare(infos: list[Info], stmts: list[Stmt], outputs: list[str],
            first: list[str] = ()) -> Program:
    """A complete program of ``stmts``: ``data`` for everything they read and
    do not compute (the names in ``first`` first, in that order), ``output``
    for the ``outputs`` they compute. Shapes come from ``infos`` (a derived
    name, X.dot, X.grad, X.grad.dot or X.hess, has the shape of X)."""
    computed = {s.target.tensor for s in stmts}
    shapes: dict = {}
    for i in reversed(infos):
        shapes.update(i.shapes)

    def shape_of(t):
        shape = shapes.get(t)
        if shape is None:
            shape = shapes.get(shape_owner(t), ())
        return tuple(shape) if shape else None

    read: list[str] = []

    def need(t):
        if t not in computed and t not in read:
            read.append(t)

    for s in stmts:
        for r in [s.target, *reads(s.expr)]:
            if r is not s.target:
                need(r.tensor)
            for ix in r.index:
                if not isinstance(ix, Affine):
                    need(ix.tensor)
        for c in index_cmps(s.expr):
            for ix in c.sides:
                if not isinstance(ix, Affine):
                    need(ix.tensor)
    # data seeds the statements add to (X.grad of an output read later)
    for s in stmts:
        t = s.target.tensor
        if is_grad(t) and t in first and t not in read:
            read.append(t)
    # A derived name written at positions that do not fix its shape, or whose
    # dims nothing else binds, takes its shape from its tensor: declare it.
    forward = infos[0]
    bound = {e for t in read for e in (shape_of(t) or ()) if isinstance(e, str)}
    for s in stmts:
        t = s.target.tensor
        owner = shape_owner(t)
        if owner == t or owner not in forward.shapes or owner in read or owner in computed:
            continue
        scatter = any(not (isinstance(ix, Affine) and ix.plain) for ix in s.target.index)
        unbound = t in outputs and any(isinstance(e, str) and e not in bound
                                       for e in forward.shapes[owner])
        if scatter or unbound:
            read.append(owner)
            bound.update(e for e in forward.shapes[owner] if isinstance(e, str))
    # An index that no plain use of a tensor of known shape fixes (``c.grad[i]
    # += y.grad``): the target takes its shape from its tensor, declared data.
    changed = True
    while changed:
        changed = False
        known = set(read) | {t for t in computed if shape_owner(t) in read}
        for s in stmts:
            t = s.target.tensor
            owner = shape_owner(t)
            accesses = [s.target, *reads(s.expr)]
            for v in index_vars(s.target.index):
                if any(r.tensor in known and v in _plain_vars([r]) for r in accesses):
                    continue
                if owner != t and owner in forward.shapes and owner not in read and \
                        owner not in computed:
                    read.append(owner)
                    changed = True
            known.add(t)
    # dims used as numbers (1/B) or offsets need an array of that size
    for d in dict.fromkeys(d for st in stmts for d, _ in dim_uses(st)):
        if d in bound:
            continue
        holder = next((t for t in [*forward.inputs, *forward.computed]
                       if d in (forward.shapes.get(t) or ())), None)
        if holder is not None:
            if holder not in read:
                read.append(holder)
            bound.update(e for e in forward.shapes[holder] if isinstance(e, str))
    order = [t for t in first if t in read] + \
        [t for t in forward.roles if t in read and t not in first] + \
        [t for t in read if t not in first and t not in forward.roles]
    decls = [Decl("dim", d) for d in forward.dims]
    decls += [Decl("data", t, shape_of(t)) for t in order]
    decls += [Decl("output", t, shape_of(t)) for t in outputs if t in computed]
    return Program(tuple(decls), tuple(stmts))


# -------------------------------------------------------------- cleanup

@dataclass
class _Ctx(Context):
    """The optimizer's context for a derived program with declarations of its own."""
    declare_fn: Callable | None = field(default=None)

    def program(self, stmts) -> Program:
        return self.declare_fn(list(stmts))


def _equalities(program: Program):
    """The run-time range equalities a program's analysis asks for (``index 'i'
    ranges over both N and 2``), or None where it does not analyze."""
    try:
        return {step[1:3] for step in analyze(program).plan if step[0] == "equal"}
    except TccError:
        return None


def _keeping_ranges(pass_):
    """``pass_``, undone where its result needs a range equality the program
    did not: an inlined read that pins a loop index to another range (the
    tangent of ``h[i, j] -= e[j, j, i + j]`` read as ``h.dot[i, 0]`` and inlined
    as ``x.dot[i]`` would make ``i`` range over all of x)."""
    def run(program: Program, ctx) -> Program:
        out = pass_(program, ctx)
        if out.stmts == program.stmts:
            return out
        before, after = _equalities(program), _equalities(out)
        if after is None or (before is not None and after - before):
            return program
        return out
    run.__name__ = pass_.__name__
    return run


def cleanup(info: Info, program: Program, declare_fn, log: Log | None = None) -> Program:
    """The backward's clean-up passes (reuse of saved values, inline, simplify,
    merge, dead) on a derived program, to a fixed point; a pass whose result
    would change a loop's range is undone."""
    from .optimize import CLEANUP, MAX_ROUNDS, fixed_point
    outputs = {d.name for d in program.decls if d.role == "output"}
    ctx = _Ctx(info, log, "backward", outputs, taken_names(info, program.stmts),
               declare_fn=declare_fn)
    return fixed_point([_keeping_ranges(p) for p in CLEANUP], program, ctx, MAX_ROUNDS)


def _finish(info: Info, program: Program, declare_fn, optimize: bool) -> Program:
    """The clean-up passes, or without optimization only ``dead``: a derived
    program computes nothing its results do not need."""
    if optimize:
        return cleanup(info, program, declare_fn)
    from .passes import dead
    outputs = {d.name for d in program.decls if d.role == "output"}
    ctx = _Ctx(info, None, "backward", outputs, set(), declare_fn=declare_fn)
    return dead(program, ctx)


def _taken(*infos: Info) -> set[str]:
    taken: set[str] = set()
    for i in infos:
        taken |= taken_names(i, [si.stmt for si in i.stmts]) | size_symbols(i)
    return taken


def _forward_info(info: Info | Program, optimize: bool) -> Info:
    from .optimize import optimize_forward
    info = info if isinstance(info, Info) else analyze(info)
    if optimize:
        info = analyze(optimize_forward(info))
    return info


def _require(info: Info, suffix: str = DOT):
    """Refuse a program whose names clash with the derived program's: an input
    or param called X.dot (its tangent would be X.dot.dot), or a tensor called
    X.dot (X.hess) beside an X that gets a tangent (a diagonal)."""
    def where(t):
        decl = next((d for d in info.program.decls if d.name == t), None)
        first = next((si.stmt.target for si in info.stmts if si.stmt.target.tensor == t),
                     None)
        return (decl or first).pos

    for t in info.differentiable:
        if not _has_tangent_name(t):
            raise TccError(f"'{t}' would need a tangent, '{t}.dot', which is not a name: "
                           f"only data tensors may be called X{t[len(shape_owner(t)):]}",
                           where(t))
    active = active_tensors(info)
    for t in info.roles:
        owner = t[:-len(suffix)]
        if t.endswith(suffix) and owner in active:
            what = "tangent" if suffix == DOT else "diagonal Hessian"
            raise TccError(f"'{t}' is the name of the {what} of '{owner}' in the derived "
                           "program: rename it", where(t))


# ------------------------------------------------------------- the programs

@dataclass
class Derived:
    """A derived program and the forward it reads: ``program`` is what ``tcc
    jvp`` (hvp, hessian) prints; ``forward`` the checked forward program whose
    values it reads (run it first); ``results`` maps each output of the derived
    program to the plain name it belongs to."""
    forward: Info
    program: Program
    results: dict[str, str]


def jvp(program: Info | Program, optimize: bool = True) -> Derived:
    """The tangent program: Y.dot for every output Y, from X.dot for every
    input and param X, reading the forward's values."""
    info = _forward_info(program, optimize)
    _require(info)
    taken = _taken(info)
    stmts, has = tangents(info, info.differentiable, taken)
    outputs = [tangent_name(t) for t in info.outputs if t in has]
    first = [*info.inputs, *(tangent_name(t) for t in info.differentiable)]

    def declare_fn(ss):
        return declare([info], ss, outputs, first)

    out = _finish(info, declare_fn(stmts), declare_fn, optimize)
    return Derived(info, out, {tangent_name(t): t for t in info.outputs if t in has})


def backward_of(info: Info, optimize: bool) -> Program:
    """The backward the second-order programs differentiate: the optimized one
    (fusions included) on the forward as written, without the stable forms."""
    from .optimize import optimize_backward
    backward = differentiate(info)
    return optimize_backward(info, backward) if optimize else backward


def hvp(program: Info | Program, optimize: bool = True) -> Derived:
    """Forward mode applied to the backward program: X.grad.dot for every
    input and param X, from the seeds Y.grad and the directions X.dot."""
    info = _forward_info(program, optimize)
    _require(info)
    backward = backward_of(info, optimize)
    binfo = analyze(backward, reserved=size_symbols(info))
    taken = _taken(info, binfo)
    fstmts, has = tangents(info, info.differentiable, taken, what="hvp")
    bstart = {t for t in binfo.inputs if t in has}
    bstmts, bhas = tangents(binfo, bstart, taken, origin=False, what="hvp")
    stmts = fstmts + list(backward.stmts) + bstmts
    outputs = [tangent_name(grad_name(t)) for t in info.differentiable
               if tangent_name(grad_name(t)) in {s.target.tensor for s in bstmts}]
    seeds = [grad_name(t) for t in info.outputs]
    first = [*info.inputs, *seeds, *(tangent_name(t) for t in info.differentiable)]

    def declare_fn(ss):
        return declare([info, binfo], ss, outputs, first)

    out = _finish(info, declare_fn(stmts), declare_fn, optimize)
    return Derived(info, out, {o: shape_owner(o) for o in outputs})


# ---------------------------------------------------- the diagonal Hessian

def _expr_tangent(e: Expr, seeded) -> Expr | None:
    """d e along the reads for which ``seeded(ref)`` holds, each with
    direction 1: the sum of their chain-rule products, or None where it is 0."""
    terms = []
    for path, r in read_paths(e):
        if not seeded(r):
            continue
        chain = derivative(e, path)
        if chain is None:
            continue
        coef, nums, dens = split_product(chain)
        if coef != 0:
            terms.append(build_product([], coef, nums, dens) if coef > 0 else
                         Neg(build_product([], -coef, nums, dens)))
    if not terms:
        return None
    out = terms[0]
    for t in terms[1:]:
        out = Bin("+", out, t)
    return out


def _square(e: Expr) -> tuple:
    """e ** 2 as (coefficient, numerators, denominators), each factor squared."""
    coef, nums, dens = split_product([e])
    return coef * coef, [_sq(f) for f in nums], [_sq(f) for f in dens]


def _sq(f: Expr) -> Expr:
    if isinstance(f, IndexCmp) or (isinstance(f, Bin) and f.op in COMPARISONS):
        return f            # a comparison is 0 or 1: its square is itself
    if isinstance(f, Bin) and f.op == "**" and isinstance(f.rhs, Num):
        if f.rhs.value == 0:
            return f
        return Bin("**", f.lhs, Num(f.rhs.value * 2))
    return Bin("**", f, Num(2))


def hessian_diagonal(program: Info | Program, optimize: bool = True) -> Derived:
    """The diagonal Hessian by the Becker-LeCun recursion: X.hess for every
    input and param X, beside the gradients (read from the raw backward).

    A recurrence's diagonal is a recurrence too, in the backward's direction
    (``h.hess[t - 1] += a.hess[t] * U ** 2``, descending like BPTT): which
    tensors have a diagonal is a fixed point over the cycle, as for the
    gradients."""
    info = _forward_info(program, optimize)
    _require(info, HESS)
    backward = differentiate(info)
    binfo = analyze(backward, reserved=size_symbols(info))
    taken = _taken(info, binfo)
    if info.recurrences:
        # a recurrence reads at an earlier step what it updates later in program
        # order: which tensors have a diagonal is a fixed point over the cycle
        before, has_hess = None, set()
        while has_hess != before:
            before = set(has_hess)
            _, has_hess = _diagonal_pass(info, set(taken), has_hess)
        out, _ = _diagonal_pass(info, taken, has_hess)
        out = _shifted_first(_HessSteps(info), out)
    else:
        out, _ = _diagonal_pass(info, taken, set())
    outputs = [hess_name(t) for t in info.differentiable
               if hess_name(t) in {s.target.tensor for s in out}]
    seeds = [grad_name(t) for t in info.outputs]
    first = [*info.inputs, *seeds]
    stmts = list(backward.stmts) + out

    def declare_fn(ss):
        return _in_run_order(info, declare([info, binfo], ss, outputs, first))

    prog = _finish(info, declare_fn(stmts), declare_fn, optimize)
    return Derived(info, prog, {o: shape_owner(o) for o in outputs})


class _HessSteps:
    """``info`` for the backward's step helpers, with the step axis of each
    recurrence tensor's diagonal (X.hess) beside X's and X.grad's."""

    def __init__(self, info: Info):
        self._info = info
        self.step_axes = {**info.step_axes,
                          **{hess_name(t): a for t, a in info.step_axes.items()}}

    def __getattr__(self, name):
        return getattr(self._info, name)


def _diagonal_pass(info: Info, taken: set[str], start: set[str]) -> tuple[list[Stmt], set]:
    """The diagonal's statements in reverse program order, given the tensors
    that have a diagonal before the pass (``start``, for a recurrence's reads of
    later steps); returns them and every tensor with a diagonal after them."""
    active = active_tensors(info)
    needs_grad = _needs_grad(info, active)
    has_grad = {t for t in info.outputs if t in active}
    has_hess: set[str] = set(start)
    batch = info.batch
    out: list[Stmt] = []
    for k, si in reversed(list(enumerate(info.stmts))):
        s = si.stmt
        y = s.target.tensor
        if y not in has_grad and y not in needs_grad:
            continue
        pending, extra, dens0 = [], [], []
        if s.op in REDUCTIONS:
            count, extra, dens0 = _tie_split(s, k, taken, True)
        groups: dict = {}
        for n, (path, r) in enumerate(read_paths(s.expr)):
            if r.tensor in active and derivative(s.expr, path) is not None:
                groups.setdefault((r.tensor, r.index), n)
        terms = []
        for (x, index), n in groups.items():
            def mine(r, x=x, index=index):
                return r.tensor == x and r.index == index
            d1 = _expr_tangent(s.expr, mine)
            if d1 is None:
                continue
            d2 = _expr_tangent(d1, mine)
            target = Ref(hess_name(x), index)
            scale = [Bin("/", ONE, DimVal(batch))] if \
                info.roles.get(x) == "param" and batch is not None else []
            if y in has_hess:
                coef, nums, dens = _square(build_product([], 1, extra + [d1], dens0))
                if coef != 0:
                    terms.append(_term(info, si, (k, n), target,
                                       scale + [Ref(hess_name(y), s.target.index)],
                                       coef, nums, dens, False))
            if d2 is not None:
                coef, nums, dens = split_product(extra + [d2])
                if coef != 0:
                    terms.append(_term(info, si, (k, n), target,
                                       scale + [Ref(grad_name(y), s.target.index)],
                                       coef, nums, dens0 + dens, s.op == "-="))
            has_grad.add(x)
        if terms:
            if dens0:
                pending.append(count)
            steps = _HessSteps(info)
            out += pending + [_plain_step_target(steps, k, t) for t in terms]
            has_hess.update(shape_owner(t.target.tensor) for t in terms
                            if t.target.tensor.endswith(".hess"))
    return out, has_hess


__all__ = ["tangents", "jvp", "hvp", "hessian_diagonal", "declare", "Derived"]
