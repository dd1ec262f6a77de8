"""The pattern fusions and the stable forms: the softmax backward (TTIC
problem 3), softmax + cross-entropy, and softmax and log-sum-exp with the
maximum subtracted. Each is a pass of the one shape, ``pass_(program, ctx)
-> Program``, recognising its forms (``rules.SOFTMAX``, ``rules.EXP_SUM``)
by structure, whatever the names.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from . import algebra, rules
from .autodiff import active_tensors, build_product, derivative, read_paths
from .check import Info
from .ir import (Affine, Bin, Call, DimVal, Expr, Gather, IndexCmp, Num, Program, Ref, Stmt,
                 children,
                 grad_name, map_refs, rebuild, reads, walk)
from .names import fresh
from .passes import Context, elementwise_def, readers, taken_names, updates
from .rules import as_index

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


def softmax_form(e: Expr) -> tuple[Expr, Ref] | None:
    """(E, Z's read) where e is ``exp(E) / Z[...]`` (``rules.SOFTMAX``)."""
    sigma = rules.match(rules.SOFTMAX, e)
    return None if sigma is None else (sigma["?E"], sigma["?Z"])


def softmax_def(fstmts, z: str, p: str | None = None):
    """(statement number, statement, E', Z's read) for the elementwise
    definition ``P = exp(E') / Z`` that reads the sum z (P named p, if given)."""
    for k, s in enumerate(fstmts):
        if (p is None or s.target.tensor == p) and elementwise_def(s):
            form = softmax_form(s.expr)
            if form is not None and form[1].tensor == z:
                return k, s, form[0], form[1]
    return None


def find_softmaxes(info: Info) -> list[Softmax]:
    """Softmax pairs, recognized by structure, whatever the names."""
    stmts = [si.stmt for si in info.stmts]
    ups = updates(stmts)
    rds = readers(stmts)
    out = []
    for kb, b in enumerate(stmts):
        if len(ups[b.target.tensor]) != 1 or not elementwise_def(b) or b.op == "-=" or \
                b.written:
            continue
        form = softmax_form(b.expr)
        if form is None:
            continue
        arg, zread = form
        z = zread.tensor
        if z not in ups or len(ups[z]) != 1 or rds.get(z) != [kb]:
            continue
        ka = ups[z][0]
        a = stmts[ka]
        zplain = [ix.plain if isinstance(ix, Affine) else None for ix in zread.index]
        aplain = [ix.plain if isinstance(ix, Affine) else None for ix in a.target.index]
        if a.op != "+=" or not all(zplain) or not all(aplain) or \
                len(set(aplain)) != len(aplain) or a.written:
            continue
        if rules.match(rules.EXP_SUM, a.expr) is None:
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
        coef, nums, dens = algebra.split_product(chain)
        if coef == 0:
            continue
        op = "-=" if coef < 0 else "+="
        lead2 = list(lead)
        if info.roles.get(r.tensor) == "param" and info.batch is not None:
            lead2 = [Bin("/", Num(1), DimVal(info.batch))] + lead2
        out.append(Stmt(loops, Ref(grad_name(r.tensor), r.index), op,
                        build_product(lead2, abs(coef), nums, dens), origin=origin))
    return out


def fuse_softmax(program: Program, ctx: Context) -> Program:
    """The softmax backward as TTIC problem 3 has it: e[b] = sum_j p * p.grad,
    s.grad = p * (p.grad - e). Safe: with Z.grad = -sum_j p.grad * p / Z and
    d p / d s = p (delta - p), the three raw terms sum to exactly this."""
    info, stmts, taken = ctx.info, list(program.stmts), ctx.taken
    active = active_tensors(info)
    for sm in find_softmaxes(info):
        group = [k for k, s in enumerate(stmts) if s.origin and s.origin[0] in (sm.a, sm.b)]
        if not group:
            continue
        pg = Ref(grad_name(sm.p), sm.target.index)
        if any(r.tensor == grad_name(sm.p) for k in group for r in [stmts[k].target]):
            continue
        e_name = fresh("e", taken)
        e_ref = Ref(e_name, sm.zread.index)
        first = [Stmt(sm.loops, e_ref, "+=", Bin("*", pg, sm.target))]
        g_name = fresh("g", taken)
        g_ref = Ref(g_name, sm.target.index)
        first.append(Stmt(sm.loops, g_ref, "=", Bin("*", sm.target, Bin("-", pg, e_ref))))
        first += _grad_terms(info, sm.arg, [g_ref], sm.loops, active)
        before = [stmts[k] for k in group]
        stmts = stmts[:group[0]] + first + [s for k, s in enumerate(stmts)
                                            if k > group[0] and k not in group]
        ctx.add("softmax", f"{sm.p} is a softmax of {sm.arg} (normalizer {sm.z}): its "
                "backward needs only p and p.grad (TTIC problem 3)", before, first)
    return ctx.program(stmts)


def fuse_softmax_xent(program: Program, ctx: Context) -> Program:
    """Softmax followed by cross-entropy: s.grad = L.grad * (p - onehot(y)), with
    no exp, log or division. Safe: p.grad = -L.grad / p at the label, so
    e = sum_j p * p.grad = -L.grad and p * (p.grad - e) = L.grad * (p - onehot)."""
    info, stmts, taken = ctx.info, list(program.stmts), ctx.taken
    fstmts = [si.stmt for si in info.stmts]
    ups = updates(fstmts)
    rds = readers(fstmts)
    for sm in find_softmaxes(info):
        p_readers = rds.get(sm.p, [])
        if len(p_readers) != 1 or sm.p in info.outputs or len(sm.summed) != 1:
            continue
        kc = p_readers[0]
        c = fstmts[kc]
        if len(ups[c.target.tensor]) != 1 or c.op not in ("=", "+=", "-=") or c.written:
            continue
        one_hot = one_hot_gather(c)
        if one_hot is not None:     # -(k == y[b]) * log(p[b, k]) is -log(p[b, y[b]])
            c, bracket = one_hot
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
            ys = Ref(fresh("ys", taken), sm.zread.index)
            new = [Stmt(sm.loops, ys, "+=", wref),
                   Stmt(sm.loops, Ref(sgrad, sm.target.index), "+=", build_product(
                       lead + [lg, Bin("-", Bin("*", ys, sm.target), wref)], 1, [], []))]
        before = [stmts[k] for k in group]
        stmts = stmts[:group[0]] + new + [s for k, s in enumerate(stmts)
                                          if k > group[0] and k not in group]
        why = ""
        if one_hot is not None:
            why = (f"; the one-hot {bracket} picks {bracket.rhs} in each row, as the "
                   f"gather in {c.expr} does (the backward checks those positions)")
        ctx.add("softmax-xent", f"{c.target.tensor} is the cross-entropy of the softmax "
                f"{sm.p}: d/d{s_ref.tensor} is L.grad * (p - onehot), no exp, log or "
                f"division{why}", before, new)
    return ctx.program(stmts)


def one_hot_gather(c: Stmt) -> tuple[Stmt, IndexCmp] | None:
    """The statement with a one-hot factor ``(k == y[b])`` (a loop index the
    target does not have, against a gathered position) summed away: ``L[b] -=
    (k == y[b]) * log(p[b, k])`` over b, k is ``L[b] -= log(p[b, y[b]])`` over
    b, the form the softmax + cross-entropy fusion recognizes. With the bracket
    written ``(y[b] == k)`` too (it comes back as ``(k == y[b])``); else None."""
    coef, fs = algebra.flatten(c.expr)
    target_vars = {v for ix in c.target.index for v in ix.vars}
    for n, (f, power) in enumerate(fs):
        if not (isinstance(f, IndexCmp) and f.op == "==" and power == 1):
            continue
        for side, other in ((f.lhs, f.rhs), (f.rhs, f.lhs)):
            v = side.plain if isinstance(side, Affine) else None
            if v is None or v not in c.loops or v in target_vars or \
                    not isinstance(other, Gather) or v in other.vars:
                continue
            rest = [(algebra.subst(g, {v: other}), k) for g, k in fs[:n] + fs[n + 1:]]
            if any(g is None for g, _ in rest):
                continue
            loops = tuple(u for u in c.loops if u != v)
            return (replace(c, loops=loops, expr=algebra.rebuild(coef, rest)),
                    IndexCmp("==", side, other, f.pos))
    return None


# ------------------------------------------------------------- stability

def stabilize(program: Program, ctx: Context) -> Program:
    """Softmax and log-sum-exp with the maximum subtracted; the log of a softmax
    as a log-softmax. Safe: exp(E - m) / sum exp(E - m) = exp(E) / sum exp(E)
    for any m, and log(sum exp(E)) = m + log(sum exp(E - m)); with m the
    maximum, no exp overflows and the largest term is 1. A forward pass: the
    backward (``ctx.backward``) follows its renaming of the sum."""
    info = ctx.info
    fstmts = list(program.stmts)
    bstmts = list(ctx.backward.stmts) if ctx.backward is not None else []
    taken = ctx.taken | taken_names(info, fstmts + bstmts)
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
        m_name = fresh(f"{z}_max", taken)

        def m_at(sigma, m_name=m_name, zvars=zvars):
            return Ref(m_name, tuple(as_index(sigma.get(v, v)) for v in zvars))

        shifted = Bin("-", e, Ref(m_name, a.target.index))
        def shifted_all(stmts, z=z, zvars=zvars, e=e, a=a, m_at=m_at, fstmts=fstmts):
            out = [replace(s, expr=_shift_reads(s.expr, z, zvars, e, a.loops, m_at, fstmts,
                                                info, bool(s.written))) for s in stmts]
            return None if any(s.expr is None for s in out) else out

        rest_f = shifted_all(fstmts[:a_index] + fstmts[a_index + 1:])
        new_b = shifted_all(bstmts)
        if rest_f is None or new_b is None:
            continue
        new_f = rest_f[:a_index] + [
            Stmt(a.loops, Ref(m_name, a.target.index), "max=", e, a.pos),
            replace(a, expr=Call("exp", (shifted,)))] + rest_f[a_index:]
        new_f = _share_exp(new_f, a_index + 1, taken)
        # the shifted sum is not the program's Z: give it its own name
        shifted_name = fresh(f"{z}_shifted", taken)
        new_f = [_rename(s, z, shifted_name) for s in new_f]
        new_b = [_rename(s, z, shifted_name) for s in new_b]
        done.add(shifted_name)
        before_f = fstmts
        fstmts, bstmts, changed = new_f, new_b, True
        ctx.add("stable", f"{z} sums exp({e}): subtract its maximum {m_name} so no exp "
                "overflows", [s for s in before_f if s not in fstmts],
                [s for s in fstmts if s not in before_f],
                program_before=Program(program.decls, tuple(before_f)),
                program_after=Program(program.decls, tuple(fstmts)))
    if not changed:
        return program
    if ctx.backward is not None:
        ctx.backward = Program(ctx.backward.decls, tuple(bstmts))
    return Program(program.decls, tuple(fstmts))


def _exp_sums(fstmts):
    """(statement number, statement, E) for each Z[zi] += exp(E), Z updated once."""
    ups = updates(fstmts)
    for k, s in enumerate(fstmts):
        sigma = rules.match(rules.EXP_SUM, s.expr)
        if s.op == "+=" and len(ups[s.target.tensor]) == 1 and sigma is not None and \
                all(isinstance(ix, Affine) and ix.plain for ix in s.target.index) and \
                len(s.loops) > len(s.target.index) and not s.written:
            yield k, s, sigma["?E"]


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
    found = softmax_def(fstmts, z)
    if found is None:
        return fstmts
    kb, b, parg, zread = found
    if len(a.loops) != len(b.loops):
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
    t = fresh(f"{z}_exp", taken)
    tref_b = Ref(t, b.target.index)
    inv = {vb: va for va, vb in mu.items()}
    tref_a = algebra.subst(tref_b, inv)
    define = Stmt(b.loops, tref_b, "=", Call("exp", (parg,)), b.pos)
    out = list(fstmts)
    out[kb] = replace(b, expr=Bin("/", tref_b, zread))
    out[a_index] = replace(a, expr=tref_a)
    out.insert(a_index, define)
    return out


def _shift_reads(expr, z, zvars, e, a_loops, m_at, fstmts, info, padded=False):
    """Rewrite every read of Z (the unshifted sum) in terms of the shifted one:
    exp(E') / Z  ->  exp(E' - m) / Z,   log(Z) -> m + log(Z),
    log(exp(E') / Z) (a log-softmax read through p) -> E' - m - log(Z).
    None if some read of Z fits none of these."""
    if not any(r.tensor == z for r in reads(expr)) and not _reads_softmax_log(expr, z, fstmts):
        return expr
    if padded:          # reads outside read 0 there: keep the program as it is
        return None
    return _shift(expr, z, zvars, e, a_loops, m_at, fstmts, info)


def _reads_softmax_log(expr, z, fstmts):
    for n in walk(expr):
        sigma = rules.match(rules.LOG_OF, n)
        if sigma is not None and softmax_def(fstmts, z, sigma["?Z"].tensor):
            return True
    return False


def _shift(e, z, zvars, arg, a_loops, m_at, fstmts, info):
    if isinstance(e, Call) and e.fn == "log" and isinstance(e.args[0], Ref):
        r = e.args[0]
        if r.tensor == z:                      # log-sum-exp
            sigma = {v: _rep(ix) for v, ix in zip(zvars, r.index)}
            return Bin("+", m_at(sigma), e)
        d = softmax_def(fstmts, z, r.tensor)
        if d is not None:                      # log of a softmax: a log-softmax
            _, ps, parg, zread = d
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
    kids = [_shift(c, z, zvars, arg, a_loops, m_at, fstmts, info) for c in children(e)]
    return None if any(k is None for k in kids) else rebuild(e, kids)


def _rep(ix):
    return ix.plain if isinstance(ix, Affine) and ix.plain else ix


__all__ = ["Softmax", "find_softmaxes", "softmax_form", "softmax_def", "fuse_softmax",
           "fuse_softmax_xent", "stabilize"]
