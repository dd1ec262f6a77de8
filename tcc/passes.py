"""The optimizer's passes and what they share.

Every pass has one shape, ``pass_(program, ctx) -> Program``: it rewrites a
program (the forward or the backward, as ``ctx.stage`` says) and records each
rewrite that fires in ``ctx.log``, with the statements before and after and
why the rewrite is safe. ``tcc.optimize`` wires them into lists.

Here: the generic passes (``reuse``, ``inline``, ``simplify``, ``merge``,
``dead``) and the forward's ``binarize``; the softmax fusions and the stable
forms are in ``tcc.fusions``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from . import algebra, contraction, rules
from .autodiff import with_declarations
from .check import Info, analyze
from .ir import (Affine, Bin, DimVal, Expr, Gather, Neg, Num, Program, Ref, Stmt, children,
                 base_name, grad_name, rebuild, reads, stmt_vars)
from .names import fresh
from .rules import Definition


@dataclass
class Rewrite:
    name: str
    why: str
    before: list[Stmt]
    after: list[Stmt]
    program_before: Program | None = None
    program_after: Program | None = None
    stage: str = "backward"


@dataclass
class Log:
    rewrites: list[Rewrite] = field(default_factory=list)

    def add(self, *args, **kw):
        self.rewrites.append(Rewrite(*args, **kw))


@dataclass
class Context:
    """What a pass knows besides the program it rewrites."""
    info: Info                      # the forward program (for the backward: the one
    #                                 it was derived from), checked
    log: Log | None = None
    stage: str = "backward"         # "forward" or "backward"
    outputs: set[str] = field(default_factory=set)    # what the program returns
    taken: set[str] = field(default_factory=set)      # names in use: fresh ones avoid them
    backward: Program | None = None  # a forward pass that renames (stabilize) updates it

    def program(self, stmts) -> Program:
        """A program of these statements, declared as the stage's programs are."""
        if self.stage == "forward":
            return Program(self.info.program.decls, tuple(stmts))
        # an output's gradient that the backward adds to stays its given seed
        return with_declarations(self.info, list(stmts),
                                 seeds=[grad_name(t) for t in self.info.outputs])

    def add(self, name: str, why: str, before, after, **kw):
        if self.log is not None:
            self.log.add(name, why, list(before), list(after), stage=self.stage, **kw)


def taken_names(info: Info, stmts) -> set[str]:
    """Every name a program and its forward use: tensors, dims, loop indices."""
    taken = set(info.roles) | set(info.dims) | {grad_name(t) for t in info.roles}
    for s in stmts:
        taken.add(s.target.tensor)
        taken.update(s.loops)
        taken.update(r.tensor for r in reads(s.expr))
    return taken


def elementwise_def(s: Stmt) -> bool:
    """A single elementwise update with plain, distinct target indices."""
    idx = s.target.index
    plain = [ix.plain if isinstance(ix, Affine) else None for ix in idx]
    return all(plain) and len(set(plain)) == len(plain) and set(plain) == set(s.loops) \
        and s.op in ("=", "+=", "-=")


def seeds(program: Program) -> set[str]:
    """The data seeds a backward program adds to (an output read by later
    statements): they start at the given values, so no update defines them."""
    data = {d.name for d in program.decls if d.role == "data"}
    return {s.target.tensor for s in program.stmts if s.target.tensor in data}


def updates(stmts) -> dict[str, list[int]]:
    """Tensor -> the numbers of the statements that update it."""
    out: dict[str, list[int]] = {}
    for k, s in enumerate(stmts):
        out.setdefault(s.target.tensor, []).append(k)
    return out


def readers(stmts) -> dict[str, list[int]]:
    """Tensor -> the numbers of the statements that read it (gathers too)."""
    out: dict[str, list[int]] = {}
    for k, s in enumerate(stmts):
        for r in reads(s.expr):
            out.setdefault(r.tensor, []).append(k)
        for r in [s.target, *reads(s.expr)]:
            for ix in r.index:
                if isinstance(ix, Gather):
                    out.setdefault(ix.tensor, []).append(k)
    return out


# ------------------------------------------------------------------ reuse

def definitions(stmts, forward: bool = False, seeds=frozenset()) -> list[Definition]:
    """Tensors defined by one elementwise update, usable as saved values (not a
    seed the update adds to, nor a statement that pads with zeros)."""
    out = []
    ups = updates(stmts)
    for k, s in enumerate(stmts):
        if len(ups[s.target.tensor]) != 1 or not elementwise_def(s) or s.written or \
                s.target.tensor in seeds:
            continue
        expr = Neg(s.expr) if s.op == "-=" else s.expr
        if isinstance(s.expr, (Ref, Num, DimVal)):
            continue
        coef, factors = algebra.flatten(expr)
        if coef == 0 or not factors:
            continue
        out.append(Definition(s.target.tensor, tuple(ix.plain for ix in s.target.index),
                              expr, coef, factors, -1 if forward else k))
    return out


def reuse(program: Program, ctx: Context) -> Program:
    """Read saved forward values (and earlier backward temporaries) instead of
    recomputing them: ``exp(s[b, j]) / Z[b]`` is ``p[b, j]`` where p is defined
    so (the ``rules.REUSE`` table). Safe: the tensor holds exactly that
    expression at every position; equality tests are never rewritten."""
    info, stmts = ctx.info, list(program.stmts)
    fdefs = definitions([si.stmt for si in info.stmts], forward=True)
    # the gradients the backward returns are its outputs: no statement may read them
    results = {grad_name(t) for t in info.differentiable}
    bdefs = [d for d in definitions(stmts, seeds=seeds(program)) if d.tensor not in results]
    out = []
    for k, s in enumerate(stmts):
        if s.written:           # reads outside read 0 there, which the saved value does not
            out.append(s)
            continue
        usable = [d for d in fdefs + [d for d in bdefs if d.where < k]
                  if d.tensor != s.target.tensor]
        new, fired = rules.rewrite(s.expr, rules.REUSE, usable)
        if new != s.expr:
            new = algebra.simplify(new)
            t = replace(s, expr=new)
            names = sorted({r.tensor for r in reads(new)} - {r.tensor for r in reads(s.expr)})
            if not names:       # read more often now (rs[b] ** 2 / sqrt(v) -> rs[b] ** 3)
                names = sorted({d.tensor for d in usable} & {r.tensor for r in reads(new)})
            why = "; ".join(dict.fromkeys(rule.reason for rule in fired))
            ctx.add("reuse", f"{', '.join(names)} already hold{'s' if len(names) == 1 else ''}"
                    f" this value (computed once, read here): {why}", [s], [t])
            out.append(t)
        else:
            out.append(s)
    return ctx.program(out)


# ------------------------------------------------------- inline, simplify

def inline(program: Program, ctx: Context) -> Program:
    """Substitute a temporary defined by one elementwise update and read once
    into its reader. Safe: the value is the same expression, read at the same
    positions, and everything it reads is complete before the reader runs."""
    stmts = list(program.stmts)
    given = seeds(program)
    while True:
        ups, rds = updates(stmts), readers(stmts)
        for k, s in enumerate(stmts):
            t = s.target.tensor
            if t in ctx.outputs or t in given or len(ups[t]) != 1 or not elementwise_def(s):
                continue
            uses = rds.get(t, [])
            if len(uses) != 1:
                continue
            j = uses[0]
            reader = stmts[j]
            if reader.written:      # a padded read of t is 0 outside, not the expression
                continue
            refs = [r for r in reads(reader.expr) if r.tensor == t]
            if len(refs) != 1 or any(r.tensor == reader.target.tensor for r in reads(s.expr)):
                continue
            if any(isinstance(ix, Gather) and ix.tensor == t
                   for r in [reader.target, *reads(reader.expr)] for ix in r.index):
                continue
            sigma = {ix.plain: ix2 for ix, ix2 in zip(s.target.index, refs[0].index)}
            sigma = {v: (x.plain if isinstance(x, Affine) and x.plain else x)
                     for v, x in sigma.items()}
            # loop variables of s not in its target cannot occur (elementwise)
            clash = set(reader.loops) & (set(s.loops) - set(sigma))
            value = algebra.subst(Neg(s.expr) if s.op == "-=" else s.expr, sigma)
            if value is None or clash:
                continue
            # written ranges pad: the reader keeps them, at its own index names
            written = [(sigma.get(v), size) for v, size in s.written]
            if any(not isinstance(w, str) or w not in reader.loops for w, _ in written):
                continue
            written = reader.written + tuple(w for w in written
                                             if w[0] not in dict(reader.written))
            if s.written and not _same_ranges(ctx, stmts, j, written):
                continue    # the reader's own range of a carried index differs
            new_expr = algebra.simplify(_replace_ref(reader.expr, refs[0], value))
            t2 = replace(reader, expr=new_expr, written=written)
            if not set(reader.loops) <= set(stmt_vars(t2)):
                continue    # a broadcast value: the read was the only use of a loop index
            ctx.add("inline", f"{t} is used once: computing it in place saves an array",
                    [s, reader], [t2])
            stmts = [t2 if n == j else x for n, x in enumerate(stmts) if n != k]
            break
        else:
            return ctx.program(stmts)


def _same_ranges(ctx: Context, stmts, j: int, written) -> bool:
    """Whether statement j already runs each written index over its written
    size (so carrying the written range into it pads nothing it reads)."""
    try:
        ranges = analyze(ctx.program(stmts)).stmts[j].ranges
    except Exception:  # noqa: BLE001 - not inlined then
        return False
    return all(ranges.get(v) == size for v, size in written)


def _replace_ref(e: Expr, old: Ref, new: Expr) -> Expr:
    if isinstance(e, Ref) and e == old:
        return new
    return rebuild(e, [_replace_ref(c, old, new) for c in children(e)])


def simplify(program: Program, ctx: Context) -> Program:
    """Fold constants, cancel equal factors, drop terms that are zero. Safe:
    the same value, to rounding; equality tests are left as they are."""
    out = []
    ups = updates(program.stmts)
    dropped: dict[str, int] = {}
    for s in program.stmts:
        e = algebra.simplify(s.expr)
        op = s.op
        if isinstance(e, Neg) and op in ("+=", "-="):
            e, op = e.arg, ("-=" if op == "+=" else "+=")
        target = s.target.tensor
        # a zero update goes, unless it is all that defines a tensor (then the
        # tensor would turn into an input for whatever reads it): it stays, as 0
        if isinstance(e, Num) and e.value == 0 and op in ("+=", "-=") and \
                len(ups[target]) - dropped.get(target, 0) > 1:
            dropped[target] = dropped.get(target, 0) + 1
            ctx.add("simplify", "adds zero", [s], [])
            continue
        t = _keep_sums(ctx.info, s, replace(s, expr=e, op=op))
        if t != s and str(t) != str(s):
            ctx.add("simplify", "the same value, written more simply", [s], [t])
        out.append(t)
    return ctx.program(out)


def _keep_sums(info: Info, before: Stmt, after: Stmt) -> Stmt:
    """``after`` with the loop indices it no longer mentions (``W[k] * 0``
    cancelled) turned into a factor of their range, since the sum over such an
    index adds the same value once per position; ``before`` where a range has
    no dim to name it."""
    used = set(stmt_vars(after))
    lost = [v for v in after.loops if v not in used]
    if not lost:
        return after
    if before.origin is None or before.op in ("max=", "min="):
        return before
    ranges = info.stmts[before.origin[0]].ranges
    factors: list[Expr] = []
    for v in lost:
        size = ranges.get(v)
        if isinstance(size, int):
            factors.append(Num(size))
        elif size in info.input_dims:
            factors.append(DimVal(size))
        else:
            return before
    expr = after.expr
    for f in factors:
        expr = Bin("*", f, expr)
    return replace(after, loops=tuple(v for v in after.loops if v in used),
                   expr=algebra.simplify(expr),
                   written=tuple((v, n) for v, n in after.written if v in used))


def merge(program: Program, ctx: Context) -> Program:
    """Updates of one target with the same loops become one expression.
    Safe: updates commute, and the merged one runs where the last did, when
    everything either reads is complete."""
    stmts = list(program.stmts)
    while True:
        ups = updates(stmts)
        done = True
        try:   # the same loop names may range differently in two statements
            checked = analyze(ctx.program(stmts))
            ranges = [si.ranges for si in checked.stmts]
        except Exception:  # noqa: BLE001 - no merging then; the program is checked later
            return ctx.program(stmts)
        # a statement on a recurrence's cycle runs step by step: merging one
        # that runs over all steps at once into it would undo the hoisting
        cycle = [checked.recurrence_of(k) for k in range(len(stmts))]
        for t, ks in ups.items():
            for i, j in itertools.combinations(ks, 2):
                a, b = stmts[i], stmts[j]
                if a.target != b.target or set(a.loops) != set(b.loops) or \
                        a.op not in ("+=", "-=") or b.op not in ("+=", "-=") or \
                        ranges[i] != ranges[j] or cycle[i] != cycle[j]:
                    continue
                if any(r.tensor == t for r in reads(a.expr) + reads(b.expr)):
                    continue
                lhs = a.expr if a.op == "+=" else Neg(a.expr)
                expr = Bin("+" if b.op == "+=" else "-", lhs, b.expr)
                # written ranges pad; the other statement's accesses are in range
                written = b.written + tuple(w for w in a.written if w[0] not in dict(b.written))
                m = replace(b, expr=algebra.simplify(expr), op="+=", written=written)
                if isinstance(m.expr, Neg):
                    m = replace(m, expr=m.expr.arg, op="-=")
                ctx.add("merge", f"two updates of {t} over the same loops", [a, b], [m])
                stmts = [m if n == j else s for n, s in enumerate(stmts) if n != i]
                done = False
                break
            if not done:
                break
        if done:
            return ctx.program(stmts)


def dead(program: Program, ctx: Context) -> Program:
    """Drop updates of tensors that nothing reads and that are not outputs.
    Safe: no output depends on them."""
    stmts = list(program.stmts)
    while True:
        rds = readers(stmts)
        keep = [s for s in stmts if s.target.tensor in ctx.outputs or s.target.tensor in rds]
        if len(keep) == len(stmts):
            return ctx.program(stmts)
        ctx.add("dead", "nothing reads it", [s for s in stmts if s not in keep], [])
        stmts = keep


# --------------------------------------------------------- forward passes

def binarize(program: Program, ctx: Context) -> Program:
    """Split a product of three or more tensors into pairwise contractions, in
    the order ``tcc.contraction`` chooses (the one the lowering follows),
    through named temporaries. Safe: a sum of products regrouped by
    associativity. The backward then reuses the temporaries, as a
    hand-written chain rule would."""
    info = analyze(program)
    taken = ctx.taken
    out: list[Stmt] = []
    for si in info.stmts:
        s = si.stmt
        coef, fs = algebra.flatten(s.expr)
        refs = [f for f, k in fs if k == 1 and isinstance(f, Ref) and f.index and
                all(isinstance(ix, Affine) and ix.plain for ix in f.index)]
        target_vars = [ix.plain for ix in s.target.index if isinstance(ix, Affine)]
        if len(refs) < 3 or len(refs) != len(fs) or s.op in ("max=", "min=") or s.written or \
                not all(target_vars) or len(target_vars) != len(s.target.index):
            out.append(s)
            continue
        operands = [(r, tuple(ix.plain for ix in r.index)) for r in refs]
        if not set(target_vars) <= {v for _, vs in operands for v in vs}:
            out.append(s)       # a target index no factor reads (a broadcast): keep it whole
            continue
        path = contraction.path([vs for _, vs in operands], target_vars, si.ranges)
        new: list[Stmt] = []
        ops = list(operands)
        for i, j in path:
            x, y = ops[i], ops[j]
            for k in sorted((i, j), reverse=True):
                ops.pop(k)
            last = not ops
            if last:
                expr = algebra.rebuild(coef, [(x[0], 1), (y[0], 1)])
                loops = tuple(v for v in s.loops if v in set(x[1]) | set(y[1]))
                new.append(Stmt(loops, s.target, s.op, expr, s.pos))
                break
            later = set(target_vars).union(*(vs for _, vs in ops))
            keep = tuple(v for v in s.loops if v in (set(x[1]) | set(y[1])) and v in later)
            name = fresh(f"{base_name(s.target.tensor)}_t", taken)
            tref = Ref(name, tuple(Affine(((v, 1),)) for v in keep))
            loops = tuple(v for v in s.loops if v in set(x[1]) | set(y[1]))
            new.append(Stmt(loops, tref, "+=", Bin("*", x[0], y[0]), s.pos))
            ops.append((tref, keep))
        ctx.add("order", "a product of several tensors: contract it pairwise, cheapest "
                "pair first (opt_einsum's optimal path), keeping each pair's result",
                [s], new)
        out += new
    return Program(program.decls, tuple(out))


__all__ = ["Rewrite", "Log", "Context", "reuse", "inline", "simplify", "merge", "dead",
           "binarize", "definitions", "taken_names", "elementwise_def", "updates", "readers"]


