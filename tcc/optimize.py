"""The optimizer: passes Program -> Program, each safe by the algebra it cites.

Forward, before differentiation:  ``binarize`` (contraction order), ``dead``.
Backward, to a fixed point:       ``reuse`` (forward values and shared
    subexpressions), the softmax and softmax + cross-entropy fusions,
    ``inline`` (single-use elementwise temporaries), ``simplify``, ``merge``
    (updates of one target with the same loops), ``dead``.
Forward, after differentiation:   ``stabilize`` (softmax and log-sum-exp with
    the maximum subtracted, log-softmax for the log of a softmax).

Every rewrite that fires is recorded in a ``Log`` with the whole program
before and after it, which ``tcc explain --verify`` and the tests run on
random data and compare.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from . import algebra
from .autodiff import _fresh, _with_declarations, active_tensors, build_product, derivative, \
    read_paths, split_product
from .check import Info, analyze
from .ir import (Affine, Bin, Call, DimVal, Expr, Gather, Neg, Num, Program, Ref, Stmt,
                 grad_name, map_refs, reads, stmt_vars)


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


def _names(info: Info, stmts) -> set[str]:
    taken = set(info.roles) | set(info.dims) | {grad_name(t) for t in info.roles}
    for s in stmts:
        taken.add(s.target.tensor)
        taken.update(s.loops)
        taken.update(r.tensor for r in reads(s.expr))
    return taken


def _elementwise_def(s: Stmt) -> bool:
    """A single elementwise update with plain, distinct target indices."""
    idx = s.target.index
    plain = [ix.plain if isinstance(ix, Affine) else None for ix in idx]
    return all(plain) and len(set(plain)) == len(plain) and set(plain) == set(s.loops) \
        and s.op in ("=", "+=", "-=")


def _updates(stmts) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for k, s in enumerate(stmts):
        out.setdefault(s.target.tensor, []).append(k)
    return out


def _readers(stmts) -> dict[str, list[int]]:
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

@dataclass
class Definition:
    tensor: str
    vars: tuple[str, ...]            # the target's index variables, in order
    expr: Expr                        # the defining expression (sign applied)
    coef: float
    factors: list
    where: int                        # statement number it is defined at (-1: forward)


def definitions(stmts, where_offset=None) -> list[Definition]:
    """Tensors defined by one elementwise update, usable as saved values."""
    out = []
    ups = _updates(stmts)
    for k, s in enumerate(stmts):
        if len(ups[s.target.tensor]) != 1 or not _elementwise_def(s):
            continue
        expr = Neg(s.expr) if s.op == "-=" else s.expr
        if isinstance(s.expr, (Ref, Num, DimVal)):
            continue
        coef, factors = algebra.flatten(expr)
        if coef == 0 or not factors:
            continue
        out.append(Definition(s.target.tensor, tuple(ix.plain for ix in s.target.index),
                              expr, coef, factors, k if where_offset is None else -1))
    return out


def _apply_defs(e: Expr, defs: list[Definition], skip: str, masks: bool = False) -> Expr:
    """Replace occurrences of defined expressions by reads of their tensors."""
    if isinstance(e, Neg):
        e = Neg(_apply_defs(e.arg, defs, skip, masks), e.pos)
    elif isinstance(e, Bin):
        e = Bin(e.op, _apply_defs(e.lhs, defs, skip, masks),
                _apply_defs(e.rhs, defs, skip, masks), e.pos)
    elif isinstance(e, Call):
        e = Call(e.fn, tuple(_apply_defs(a, defs, skip, masks) for a in e.args), e.pos)
    for d in defs:
        if d.tensor == skip:
            continue
        vars_ = frozenset(d.vars)
        mask = _relu_mask(d, e, vars_) if masks else None
        if mask is not None:
            return mask
        if len(d.factors) == 1 and d.factors[0][1] == 1 and d.coef == 1:
            sigma = algebra.match(d.factors[0][0], e, vars_, {})
            if sigma is not None and set(sigma) >= vars_:
                return Ref(d.tensor, tuple(_as_index(sigma[v]) for v in d.vars))
        if algebra.is_product(e):
            coef, factors = algebra.flatten(e)
            sigma = algebra.match_factors(d.factors, factors, vars_)
            if sigma is not None and set(sigma) >= vars_:
                rest = list(factors)
                for f, k in d.factors:
                    g = algebra.subst(f, sigma)
                    rest = algebra.merge(rest + [(g, -k)])
                rest = algebra.merge(rest + [(Ref(d.tensor, tuple(_as_index(sigma[v])
                                                                   for v in d.vars)), 1)])
                return algebra.rebuild(algebra._int(coef / d.coef), rest)
    return e


def _relu_mask(d: Definition, e: Expr, vars_):
    """``(u > 0)`` where T = relu(u) (or max(u, 0)) is saved: ``(T > 0)``, the
    same mask, so u need not be kept for the backward."""
    if not (isinstance(e, Bin) and e.op == ">" and isinstance(e.rhs, Num) and e.rhs.value == 0):
        return None
    x = d.expr
    if isinstance(x, Call) and (x.fn == "relu" or (x.fn == "max" and x.args[1] == Num(0))):
        sigma = algebra.match(x.args[0], e.lhs, vars_, {})
        if sigma is not None and set(sigma) >= vars_:
            return Bin(">", Ref(d.tensor, tuple(_as_index(sigma[v]) for v in d.vars)), Num(0))
    return None


def _as_index(rep):
    if isinstance(rep, str):
        return Affine(((rep, 1),))
    return rep


def reuse(info: Info, stmts: list[Stmt], log: Log | None, masks: bool = False) -> list[Stmt]:
    """Use saved forward values (and earlier backward temporaries) instead of
    recomputing them: ``exp(s[b, j]) / Z[b]`` is ``p[b, j]`` where p is defined so.
    Safe: the tensor holds exactly that expression at every position."""
    fdefs = definitions([si.stmt for si in info.stmts], where_offset=-1)
    # the gradients the backward returns are its outputs: no statement may read them
    results = {grad_name(t) for t in info.differentiable}
    bdefs = [d for d in definitions(stmts) if d.tensor not in results]
    out = []
    for k, s in enumerate(stmts):
        usable = fdefs + [d for d in bdefs if d.where < k]
        new = _apply_defs(s.expr, usable, skip=s.target.tensor, masks=masks)
        if new != s.expr:
            new = algebra.simplify(new)
            t = replace(s, expr=new)
            if log is not None:
                names = sorted({r.tensor for r in reads(new)} - {r.tensor for r in reads(s.expr)})
                log.add("reuse", f"{', '.join(names)} already hold{'s' if len(names) == 1 else ''}"
                        " this value (computed once, read here)", [s], [t])
            out.append(t)
        else:
            out.append(s)
    return out


# ------------------------------------------------------------- softmax

@dataclass
class Softmax:
    a: int                  # Z[zi] += exp(E)
    b: int                  # P[pi] = exp(E') / Z[zi']
    z: str
    p: str
    arg: Expr               # E', in B's variables
    zread: Ref              # Z[zi'] as B reads it
    target: Ref             # P[pi]
    loops: tuple[str, ...]  # B's loops
    summed: tuple[str, ...]  # the softmax axes (B's loops not in zi')


def find_softmaxes(info: Info) -> list[Softmax]:
    """Softmax pairs, recognized by structure, whatever the names."""
    stmts = [si.stmt for si in info.stmts]
    ups = _updates(stmts)
    rds = _readers(stmts)
    out = []
    for kb, b in enumerate(stmts):
        if len(ups[b.target.tensor]) != 1 or not _elementwise_def(b) or b.op == "-=":
            continue
        coef, fs = algebra.flatten(b.expr)
        if coef != 1 or len(fs) != 2:
            continue
        ex = [f for f, k in fs if k == 1 and isinstance(f, Call) and f.fn == "exp"]
        zr = [f for f, k in fs if k == -1 and isinstance(f, Ref)]
        if len(ex) != 1 or len(zr) != 1:
            continue
        zread, arg = zr[0], ex[0].args[0]
        z = zread.tensor
        if z not in ups or len(ups[z]) != 1 or rds.get(z) != [kb]:
            continue
        ka = ups[z][0]
        a = stmts[ka]
        zplain = [ix.plain if isinstance(ix, Affine) else None for ix in zread.index]
        aplain = [ix.plain if isinstance(ix, Affine) else None for ix in a.target.index]
        if a.op != "+=" or not all(zplain) or not all(aplain) or len(set(aplain)) != len(aplain):
            continue
        if not (isinstance(a.expr, Call) and a.expr.fn == "exp"):
            continue
        summed_b = tuple(v for v in b.loops if v not in zplain)
        summed_a = tuple(v for v in a.loops if v not in aplain)
        if len(summed_a) != len(summed_b) or not summed_b:
            continue
        for perm in itertools.permutations(summed_b):
            mu = dict(zip(aplain, zplain))
            mu.update(zip(summed_a, perm))
            if algebra.subst(a.expr.args[0], mu) == arg:
                out.append(Softmax(ka, kb, z, b.target.tensor, arg, zread, b.target, b.loops,
                                   summed_b))
                break
    return out


def _grad_terms(info: Info, arg: Expr, lead: list[Expr], loops, active, origin=None):
    """X.grad updates for every active read in ``arg``, times d arg / d X."""
    out = []
    for path, r in read_paths(arg):
        if r.tensor not in active:
            continue
        chain = derivative(arg, path)
        if chain is None:
            continue
        coef, nums, dens = split_product(chain)
        if coef == 0:
            continue
        op = "-=" if coef < 0 else "+="
        lead2 = list(lead)
        if info.roles.get(r.tensor) == "param" and info.batch is not None:
            lead2 = [Bin("/", Num(1), DimVal(info.batch))] + lead2
        out.append(Stmt(loops, Ref(grad_name(r.tensor), r.index), op,
                        build_product(lead2, abs(coef), nums, dens), origin=origin))
    return out


def fuse_softmax(info: Info, stmts: list[Stmt], log: Log | None, taken: set[str]):
    """The softmax backward as TTIC problem 3 has it: e[b] = sum_j p * p.grad,
    s.grad = p * (p.grad - e). Safe: with Z.grad = -sum_j p.grad * p / Z and
    d p / d s = p (delta - p), the three raw terms sum to exactly this."""
    active = active_tensors(info)
    for sm in find_softmaxes(info):
        group = [k for k, s in enumerate(stmts) if s.origin and s.origin[0] in (sm.a, sm.b)]
        if not group:
            continue
        pg = Ref(grad_name(sm.p), sm.target.index)
        if any(r.tensor == grad_name(sm.p) for k in group for r in [stmts[k].target]):
            continue
        e_name = _fresh("e", taken)
        e_ref = Ref(e_name, sm.zread.index)
        first = [Stmt(sm.loops, e_ref, "+=", Bin("*", pg, sm.target))]
        g_name = _fresh("g", taken)
        g_ref = Ref(g_name, sm.target.index)
        first.append(Stmt(sm.loops, g_ref, "=", Bin("*", sm.target, Bin("-", pg, e_ref))))
        first += _grad_terms(info, sm.arg, [g_ref], sm.loops, active)
        before = [stmts[k] for k in group]
        stmts = stmts[:group[0]] + first + [s for k, s in enumerate(stmts)
                                            if k > group[0] and k not in group]
        if log is not None:
            log.add("softmax", f"{sm.p} is a softmax of {sm.arg} (normalizer {sm.z}): its "
                    "backward needs only p and p.grad (TTIC problem 3)", before, first)
    return stmts


def fuse_softmax_xent(info: Info, stmts: list[Stmt], log: Log | None, taken: set[str]):
    """Softmax followed by cross-entropy: s.grad = L.grad * (p - onehot(y)), with
    no exp, log or division. Safe: p.grad = -L.grad / p at the label, so
    e = sum_j p * p.grad = -L.grad and p * (p.grad - e) = L.grad * (p - onehot)."""
    fstmts = [si.stmt for si in info.stmts]
    ups = _updates(fstmts)
    rds = _readers(fstmts)
    for sm in find_softmaxes(info):
        readers = rds.get(sm.p, [])
        if len(readers) != 1 or sm.p in info.outputs or len(sm.summed) != 1:
            continue
        kc = readers[0]
        c = fstmts[kc]
        if len(ups[c.target.tensor]) != 1 or c.op not in ("=", "+=", "-="):
            continue
        if not (isinstance(sm.arg, Ref) and sm.arg.index == sm.target.index):
            continue            # the simple, common case: p = softmax(s) of a tensor read
        coef, fs = algebra.flatten(c.expr)
        if c.op == "-=":
            coef = -coef
        logs = [(f, k) for f, k in fs if isinstance(f, Call) and f.fn == "log"]
        if coef >= 0 or len(logs) != 1 or logs[0][1] != 1:
            continue
        # constant factors (a mean's 1/B, a number) scale the whole gradient
        scale = [(f, k) for f, k in fs if isinstance(f, DimVal)]
        fs = [(f, k) for f, k in fs if not isinstance(f, DimVal)]
        pread = logs[0][0].args[0]
        if not (isinstance(pread, Ref) and pread.tensor == sm.p):
            continue
        weights = [(f, k) for f, k in fs if (f, k) != logs[0]]
        axis = sm.target.index.index(next(ix for ix in sm.target.index
                                          if ix.plain == sm.summed[0]))
        nu = {}
        ok = True
        for k, (ix, tix) in enumerate(zip(pread.index, sm.target.index)):
            if isinstance(ix, Affine) and ix.plain:
                nu[ix.plain] = tix.plain
            elif not (k == axis and isinstance(ix, Gather) and not weights):
                ok = False
        if not ok or set(c.loops) != set(nu):
            continue
        lg = algebra.subst(Ref(grad_name(c.target.tensor), c.target.index), nu)
        s_ref = sm.arg
        param = info.roles.get(s_ref.tensor) == "param" and info.batch is not None
        lead = [Bin("/", Num(1), DimVal(info.batch))] if param else []
        if scale or coef != -1:
            lead = lead + [algebra.rebuild(-coef, scale)]
        group = [k for k, s in enumerate(stmts) if s.origin and s.origin[0] in (sm.a, sm.b, kc)]
        if not group:
            continue
        sgrad = grad_name(s_ref.tensor)
        loops_c = tuple(nu[v] for v in c.loops)
        if not weights:
            gath = algebra.subst(Ref(sgrad, pread.index), nu)
            new = [Stmt(sm.loops, Ref(sgrad, sm.target.index), "+=",
                        build_product(lead + [lg, sm.target], 1, [], [])),
                   Stmt(loops_c, gath, "-=", build_product(lead + [lg], 1, [], []))]
        else:
            if len(weights) != 1 or weights[0][1] != 1 or not isinstance(weights[0][0], Ref):
                continue
            wref = algebra.subst(weights[0][0], nu)
            if wref is None or info.roles.get(wref.tensor) != "data":
                continue
            ys = Ref(_fresh("ys", taken), sm.zread.index)
            new = [Stmt(sm.loops, ys, "+=", wref),
                   Stmt(sm.loops, Ref(sgrad, sm.target.index), "+=", build_product(
                       lead + [lg, Bin("-", Bin("*", ys, sm.target), wref)], 1, [], []))]
        before = [stmts[k] for k in group]
        stmts = stmts[:group[0]] + new + [s for k, s in enumerate(stmts)
                                          if k > group[0] and k not in group]
        if log is not None:
            log.add("softmax-xent", f"{c.target.tensor} is the cross-entropy of the softmax "
                    f"{sm.p}: d/d{s_ref.tensor} is L.grad * (p - onehot), no exp, log or "
                    "division", before, new)
    return stmts


# ------------------------------------------------------- inline, simplify

def inline(info: Info, stmts: list[Stmt], log: Log | None, outputs: set[str]):
    """Substitute a temporary defined by one elementwise update and read once
    into its reader. Safe: the value is the same expression, read at the same
    positions, and everything it reads is complete before the reader runs."""
    while True:
        ups, rds = _updates(stmts), _readers(stmts)
        for k, s in enumerate(stmts):
            t = s.target.tensor
            if t in outputs or len(ups[t]) != 1 or not _elementwise_def(s):
                continue
            uses = rds.get(t, [])
            if len(uses) != 1:
                continue
            j = uses[0]
            reader = stmts[j]
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
            new_expr = algebra.simplify(_replace_ref(reader.expr, refs[0], value))
            t2 = replace(reader, expr=new_expr)
            if not set(reader.loops) <= set(stmt_vars(t2)):
                continue    # a broadcast value: the read was the only use of a loop index
            if log is not None:
                log.add("inline", f"{t} is used once: computing it in place saves an array",
                        [s, reader], [t2])
            stmts = [t2 if n == j else x for n, x in enumerate(stmts) if n != k]
            break
        else:
            return stmts


def _replace_ref(e: Expr, old: Ref, new: Expr) -> Expr:
    if e is old or (isinstance(e, Ref) and e == old):
        return new
    if isinstance(e, Neg):
        return Neg(_replace_ref(e.arg, old, new), e.pos)
    if isinstance(e, Bin):
        return Bin(e.op, _replace_ref(e.lhs, old, new), _replace_ref(e.rhs, old, new), e.pos)
    if isinstance(e, Call):
        return Call(e.fn, tuple(_replace_ref(a, old, new) for a in e.args), e.pos)
    return e


def simplify(info: Info, stmts: list[Stmt], log: Log | None):
    """Fold constants, cancel equal factors, drop terms that are zero."""
    out = []
    for s in stmts:
        e = algebra.simplify(s.expr)
        op = s.op
        if isinstance(e, Neg) and op in ("+=", "-="):
            e, op = e.arg, ("-=" if op == "+=" else "+=")
        if isinstance(e, Num) and e.value == 0 and op in ("+=", "-="):
            if log is not None:
                log.add("simplify", "adds zero", [s], [])
            continue
        t = _keep_sums(info, s, replace(s, expr=e, op=op))
        if t != s and log is not None and str(t) != str(s):
            log.add("simplify", "the same value, written more simply", [s], [t])
        out.append(t)
    return out


def _keep_sums(info: Info, before: Stmt, after: Stmt) -> Stmt:
    """``after`` with the loop indices it no longer mentions (``W[k] * 0``
    cancelled) turned into a factor of their range, since the sum over such an
    index adds the same value once per position; ``before`` where a range has
    no dim to name it."""
    used = set(stmt_vars(after))
    lost = [v for v in after.loops if v not in used]
    if not lost:
        return after
    if before.origin is None or before.op == "max=":
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
                   expr=algebra.simplify(expr))


def merge(info: Info, stmts: list[Stmt], log: Log | None):
    """Updates of one target with the same loops become one expression.
    Safe: updates commute, and the merged one runs where the last did, when
    everything either reads is complete."""
    while True:
        ups = _updates(stmts)
        done = True
        try:   # the same loop names may range differently in two statements
            ranges = [si.ranges for si in analyze(_with_declarations(info, stmts)).stmts]
        except Exception:  # noqa: BLE001 - no merging then; the program is checked later
            return stmts
        for t, ks in ups.items():
            for i, j in itertools.combinations(ks, 2):
                a, b = stmts[i], stmts[j]
                if a.target != b.target or set(a.loops) != set(b.loops) or \
                        a.op not in ("+=", "-=") or b.op not in ("+=", "-=") or \
                        ranges[i] != ranges[j]:
                    continue
                if any(r.tensor == t for r in reads(a.expr) + reads(b.expr)):
                    continue
                lhs = a.expr if a.op == "+=" else Neg(a.expr)
                expr = Bin("+" if b.op == "+=" else "-", lhs, b.expr)
                m = replace(b, expr=algebra.simplify(expr), op="+=")
                if isinstance(m.expr, Neg):
                    m = replace(m, expr=m.expr.arg, op="-=")
                if log is not None:
                    log.add("merge", f"two updates of {t} over the same loops", [a, b], [m])
                stmts = [m if n == j else s for n, s in enumerate(stmts) if n != i]
                done = False
                break
            if not done:
                break
        if done:
            return stmts


def dead(info: Info, stmts: list[Stmt], log: Log | None, outputs: set[str]):
    """Drop updates of tensors that nothing reads and that are not outputs."""
    while True:
        rds = _readers(stmts)
        keep = [s for s in stmts if s.target.tensor in outputs or s.target.tensor in rds]
        if len(keep) == len(stmts):
            return stmts
        if log is not None:
            log.add("dead", "nothing reads it", [s for s in stmts if s not in keep], [])
        stmts = keep


# --------------------------------------------------------- forward passes

NOMINAL_SIZE = 64   # for choosing a contraction order before sizes are known


def binarize(info: Info, log: Log | None) -> Program:
    """Split a product of three or more tensors into pairwise contractions, in
    opt_einsum's optimal order, through named temporaries. Safe: a sum of
    products regrouped by associativity. The backward then reuses the
    temporaries, as a hand-written chain rule would."""
    import opt_einsum as oe

    stmts = [si.stmt for si in info.stmts]
    taken = _names(info, stmts)
    out: list[Stmt] = []
    for si in info.stmts:
        s = si.stmt
        coef, fs = algebra.flatten(s.expr)
        refs = [f for f, k in fs if k == 1 and isinstance(f, Ref) and f.index and
                all(isinstance(ix, Affine) and ix.plain for ix in f.index)]
        target_vars = [ix.plain for ix in s.target.index if isinstance(ix, Affine)]
        if len(refs) < 3 or len(refs) != len(fs) or s.op == "max=" or \
                not all(target_vars) or len(target_vars) != len(s.target.index):
            out.append(s)
            continue
        operands = [(r, tuple(ix.plain for ix in r.index)) for r in refs]
        if not set(target_vars) <= {v for _, vs in operands for v in vs}:
            out.append(s)       # a target index no factor reads (a broadcast): keep it whole
            continue
        letters = {v: algebra_letter(n) for n, v in enumerate(s.loops)}
        spec = ",".join("".join(letters[v] for v in vs) for _, vs in operands) + "->" + \
            "".join(letters[v] for v in target_vars)
        shapes = []
        for _, vs in operands:
            shapes.append(tuple(_nominal(si.ranges[v]) for v in vs))
        path, _ = oe.contract_path(spec, *shapes, shapes=True, optimize="optimal")
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
            name = _fresh(f"{s.target.tensor.replace('.grad', '')}_t", taken)
            tref = Ref(name, tuple(Affine(((v, 1),)) for v in keep))
            loops = tuple(v for v in s.loops if v in set(x[1]) | set(y[1]))
            new.append(Stmt(loops, tref, "+=", Bin("*", x[0], y[0]), s.pos))
            ops.append((tref, keep))
        if log is not None:
            log.add("order", "a product of several tensors: contract it pairwise, cheapest "
                    "pair first (opt_einsum's optimal path), keeping each pair's result",
                    [s], new, stage="forward")
        out += new
    return Program(info.program.decls, tuple(out))


def algebra_letter(n: int) -> str:
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[n]


def _nominal(size) -> int:
    return size if isinstance(size, int) else NOMINAL_SIZE


def optimize_forward(info: Info, log: Log | None = None) -> Program:
    """Forward rewrites made before differentiation."""
    start = len(log.rewrites) if log is not None else 0
    prog = binarize(info, log)
    _attach(log, start, info.program, prog)
    start = len(log.rewrites) if log is not None else 0
    out = Program(prog.decls, tuple(dead(info, list(prog.stmts), log, set(info.outputs))))
    _attach(log, start, prog, out)
    return out


def _attach(log: Log | None, start: int, before: Program, after: Program):
    """Whole-program snapshots for the forward rewrites logged since ``start``."""
    if log is None:
        return
    for rw in log.rewrites[start:]:
        rw.stage = "forward"
        rw.program_before, rw.program_after = before, after


def optimize_backward(info: Info, backward: Program, log: Log | None = None,
                      compiled: bool = True) -> Program:
    """The backward passes, run to a fixed point. ``compiled`` also lets a relu's
    mask read its output instead of its input (so the input need not be saved);
    the printed answer keeps the course's form."""
    stmts = list(backward.stmts)
    outputs = {d.name for d in backward.decls if d.role == "output"}
    taken = _names(info, stmts)
    snap = _Snapshots(info, log)
    stmts = snap.run(lambda st, lg: reuse(info, st, lg, compiled), stmts)
    stmts = snap.run(lambda st, lg: fuse_softmax_xent(info, st, lg, taken), stmts)
    stmts = snap.run(lambda st, lg: fuse_softmax(info, st, lg, taken), stmts)
    for _ in range(20):
        before = stmts
        stmts = snap.run(lambda st, lg: reuse(info, st, lg, compiled), stmts)
        stmts = snap.run(lambda st, lg: inline(info, st, lg, outputs), stmts)
        stmts = snap.run(lambda st, lg: simplify(info, st, lg), stmts)
        stmts = snap.run(lambda st, lg: merge(info, st, lg), stmts)
        stmts = snap.run(lambda st, lg: dead(info, st, lg, outputs), stmts)
        if stmts == before:
            break
    return _with_declarations(info, stmts)


class _Snapshots:
    """Runs a pass and attaches whole-program snapshots to the rewrites it logs."""

    def __init__(self, info: Info, log: Log | None):
        self.info, self.log = info, log

    def run(self, fn, stmts):
        if self.log is None:
            return fn(stmts, None)
        start = len(self.log.rewrites)
        out = fn(stmts, self.log)
        if len(self.log.rewrites) > start:
            before = _with_declarations(self.info, stmts)
            after = _with_declarations(self.info, out)
            for rw in self.log.rewrites[start:]:
                rw.program_before, rw.program_after = before, after
        return out


# ------------------------------------------------------------- stability

def stabilize(info: Info, backward: Program, log: Log | None = None):
    """Softmax and log-sum-exp with the maximum subtracted; the log of a softmax
    as a log-softmax. Safe: exp(E - m) / sum exp(E - m) = exp(E) / sum exp(E)
    for any m, and log(sum exp(E)) = m + log(sum exp(E - m)); with m the
    maximum, no exp overflows and the largest term is 1."""
    fstmts = [si.stmt for si in info.stmts]
    bstmts = list(backward.stmts)
    taken = _names(info, fstmts + bstmts)
    changed = False
    done: set[str] = set()
    while True:
        found = next(((k, a, e) for k, a, e in _exp_sums(fstmts)
                      if a.target.tensor not in done), None)
        if found is None:
            break
        a_index, a, e = found
        z = a.target.tensor
        done.add(z)
        if z in info.outputs:
            continue            # the user asked for this very sum
        zvars = tuple(ix.plain for ix in a.target.index)
        m_name = _fresh(f"{z}_max", taken)

        def m_at(sigma, m_name=m_name, zvars=zvars):
            return Ref(m_name, tuple(_as_index(sigma.get(v, v)) for v in zvars))

        shifted = Bin("-", e, Ref(m_name, a.target.index))
        new_f = []
        ok = True
        for k, s in enumerate(fstmts):
            if k == a_index:
                new_f.append(Stmt(a.loops, Ref(m_name, a.target.index), "max=", e, a.pos))
                new_f.append(replace(a, expr=Call("exp", (shifted,))))
                continue
            expr = _shift_reads(s.expr, z, zvars, e, a.loops, m_at, fstmts, info)
            if expr is None:
                ok = False
                break
            new_f.append(replace(s, expr=expr))
        if not ok:
            continue
        new_b = []
        for s in bstmts:
            expr = _shift_reads(s.expr, z, zvars, e, a.loops, m_at, fstmts, info)
            if expr is None:
                ok = False
                break
            new_b.append(replace(s, expr=expr))
        if not ok:
            continue
        new_f = _share_exp(new_f, a_index + 1, taken)
        # the shifted sum is not the program's Z: give it its own name
        shifted_name = _fresh(f"{z}_shifted", taken)
        new_f = [_rename(s, z, shifted_name) for s in new_f]
        new_b = [_rename(s, z, shifted_name) for s in new_b]
        done.add(shifted_name)
        before_f = fstmts
        fstmts, bstmts, changed = new_f, new_b, True
        if log is not None:
            log.add("stable", f"{z} sums exp({e}): subtract its maximum {m_name} so no exp "
                    "overflows", [s for s in before_f if s not in fstmts],
                    [s for s in fstmts if s not in before_f], stage="forward",
                    program_before=Program(info.program.decls, tuple(before_f)),
                    program_after=Program(info.program.decls, tuple(fstmts)))
    if not changed:
        return info.program, backward
    forward = Program(info.program.decls, tuple(fstmts))
    return forward, _with_declarations(analyze(forward), bstmts)


def _exp_sums(fstmts):
    """(statement number, statement, E) for each Z[zi] += exp(E), Z updated once."""
    ups = _updates(fstmts)
    for k, s in enumerate(fstmts):
        if s.op == "+=" and len(ups[s.target.tensor]) == 1 and isinstance(s.expr, Call) and \
                s.expr.fn == "exp" and all(isinstance(ix, Affine) and ix.plain
                                           for ix in s.target.index) and \
                len(s.loops) > len(s.target.index):
            yield k, s, s.expr.args[0]


def _rename(s: Stmt, old: str, new: str) -> Stmt:
    """The statement with tensor ``old`` called ``new`` (reads, target, gathers)."""
    def ref(r: Ref) -> Ref:
        return Ref(new if r.tensor == old else r.tensor, r.index, r.pos)
    return replace(s, target=ref(s.target), expr=map_refs(s.expr, ref))


def _share_exp(fstmts: list[Stmt], a_index: int, taken: set[str]) -> list[Stmt]:
    """Compute exp(E - m) of a softmax once: its sum Z and the softmax P both
    read it (as hand-written NumPy keeps ``e = np.exp(s - m)``)."""
    a = fstmts[a_index]
    z = a.target.tensor
    found = _softmax_def_index(fstmts, z)
    if found is None:
        return fstmts
    kb, b, parg, zread = found
    if parg is None or len(a.loops) != len(b.loops):
        return fstmts
    # A's variables in terms of B's: zread's index gives the kept ones
    mu = {}
    for ax, bx in zip(a.target.index, zread.index):
        mu[ax.plain] = bx.plain if isinstance(bx, Affine) else None
    rest_a = [v for v in a.loops if v not in mu]
    rest_b = [v for v in b.loops if v not in mu.values()]
    if None in mu.values() or len(rest_a) != len(rest_b):
        return fstmts
    for va, vb in zip(rest_a, rest_b):
        mu[va] = vb
    if algebra.subst(a.expr.args[0], mu) != parg:
        return fstmts
    t = _fresh(f"{z}_exp", taken)
    tref_b = Ref(t, b.target.index)
    inv = {vb: va for va, vb in mu.items()}
    tref_a = algebra.subst(tref_b, inv)
    define = Stmt(b.loops, tref_b, "=", Call("exp", (parg,)), b.pos)
    out = list(fstmts)
    out[kb] = replace(b, expr=Bin("/", tref_b, zread))
    out[a_index] = replace(a, expr=tref_a)
    out.insert(a_index, define)
    return out


def _softmax_def_index(fstmts, z):
    for k, s in enumerate(fstmts):
        if _elementwise_def(s) and any(r.tensor == z for r in reads(s.expr)):
            coef, fs = algebra.flatten(s.expr)
            ex = [f for f, j in fs if j == 1 and isinstance(f, Call) and f.fn == "exp"]
            zr = [f for f, j in fs if j == -1 and isinstance(f, Ref) and f.tensor == z]
            if coef == 1 and len(fs) == 2 and ex and zr:
                return k, s, ex[0].args[0], zr[0]
    return None


def _shift_reads(expr, z, zvars, e, a_loops, m_at, fstmts, info):
    """Rewrite every read of Z (the unshifted sum) in terms of the shifted one:
    exp(E') / Z  ->  exp(E' - m) / Z,   log(Z) -> m + log(Z),
    log(exp(E') / Z) (a log-softmax read through p) -> E' - m - log(Z).
    None if some read of Z fits none of these."""
    if not any(r.tensor == z for r in reads(expr)) and not _reads_softmax_log(expr, z, fstmts):
        return expr
    out = _shift(expr, z, zvars, e, a_loops, m_at, fstmts, info)
    if out is None:
        return None
    if any(r.tensor == z and not _inside_ok(out, z) for r in reads(out)):
        return None
    return out


def _inside_ok(e, z):
    return True


def _softmax_def(p: str, z: str, fstmts):
    """For P defined as exp(E') / Z: (P's statement, E')."""
    for s in fstmts:
        if s.target.tensor == p and _elementwise_def(s):
            coef, fs = algebra.flatten(s.expr)
            ex = [f for f, k in fs if k == 1 and isinstance(f, Call) and f.fn == "exp"]
            zr = [f for f, k in fs if k == -1 and isinstance(f, Ref) and f.tensor == z]
            if coef == 1 and len(fs) == 2 and ex and zr:
                return s, ex[0].args[0], zr[0]
    return None


def _reads_softmax_log(expr, z, fstmts):
    for n in _walk(expr):
        if isinstance(n, Call) and n.fn == "log" and isinstance(n.args[0], Ref) and \
                _softmax_def(n.args[0].tensor, z, fstmts):
            return True
    return False


def _walk(e):
    yield e
    for c in (e.arg,) if isinstance(e, Neg) else (e.lhs, e.rhs) if isinstance(e, Bin) else \
            e.args if isinstance(e, Call) else ():
        yield from _walk(c)


def _shift(e, z, zvars, arg, a_loops, m_at, fstmts, info):
    if isinstance(e, Call) and e.fn == "log" and isinstance(e.args[0], Ref):
        r = e.args[0]
        if r.tensor == z:                      # log-sum-exp
            sigma = {v: _rep(ix) for v, ix in zip(zvars, r.index)}
            return Bin("+", m_at(sigma), e)
        d = _softmax_def(r.tensor, z, fstmts)
        if d is not None:                      # log of a softmax: a log-softmax
            ps, parg, zread = d
            sigma = {ix.plain: _rep(x) for ix, x in zip(ps.target.index, r.index)}
            shifted = algebra.subst(parg, sigma)
            zsig = algebra.subst(zread, sigma)
            if shifted is None or zsig is None:
                return None
            zsigma = {v: _rep(ix) for v, ix in zip(zvars, zsig.index)}
            return Bin("-", Bin("-", shifted, m_at(zsigma)), Call("log", (zsig,)))
    if algebra.is_product(e):
        coef, fs = algebra.flatten(e)
        zs = [(f, k) for f, k in fs if isinstance(f, Ref) and f.tensor == z]
        if zs:
            if len(zs) != 1 or zs[0][1] != -1:
                return None
            zr = zs[0][0]
            sigma = {v: _rep(ix) for v, ix in zip(zvars, zr.index)}
            for n, (f, k) in enumerate(fs):
                if k == 1 and isinstance(f, Call) and f.fn == "exp":
                    # exp(E[sigma + one binding of the summed indices]) / Z[sigma]
                    s2 = algebra.match(arg, f.args[0], frozenset(a_loops), dict(sigma))
                    if s2 is not None:
                        fs = list(fs)
                        fs[n] = (Call("exp", (Bin("-", f.args[0], m_at(sigma)),)), 1)
                        inner = [(_shift(g, z, zvars, arg, a_loops, m_at, fstmts, info), j)
                                 if g is not zr else (g, j) for g, j in fs]
                        if any(g is None for g, _ in inner):
                            return None
                        return algebra.rebuild(coef, inner)
            return None
    if isinstance(e, Ref):
        return None if e.tensor == z else e
    if isinstance(e, Neg):
        a = _shift(e.arg, z, zvars, arg, a_loops, m_at, fstmts, info)
        return None if a is None else Neg(a, e.pos)
    if isinstance(e, Bin):
        a = _shift(e.lhs, z, zvars, arg, a_loops, m_at, fstmts, info)
        b = _shift(e.rhs, z, zvars, arg, a_loops, m_at, fstmts, info)
        return None if a is None or b is None else Bin(e.op, a, b, e.pos)
    if isinstance(e, Call):
        args = [_shift(x, z, zvars, arg, a_loops, m_at, fstmts, info) for x in e.args]
        return None if any(x is None for x in args) else Call(e.fn, tuple(args), e.pos)
    return e


def _rep(ix):
    return ix.plain if isinstance(ix, Affine) and ix.plain else ix


def optimize(program: Program) -> Program:
    """The optimized forward program (what ``tcc compile`` computes)."""
    from .autodiff import differentiate
    info = analyze(program)
    info2 = analyze(optimize_forward(info))
    backward = optimize_backward(info2, differentiate(info2))
    forward, _ = stabilize(info2, backward)
    return forward


__all__ = ["optimize", "optimize_forward", "optimize_backward", "stabilize", "Log",
           "Rewrite", "find_softmaxes", "stmt_vars"]
