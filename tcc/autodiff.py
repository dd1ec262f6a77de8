"""Reverse mode: a program -> its backward program, in the same language.

For each update ``for I: Y[o] op f(..., X[e], ...)``, taken in reverse
order, and each read of a tensor that needs a gradient, emit

    for I: X.grad[e] += Y.grad[o] * (df/dX[e])

with ``-=`` flipping the sign, ``1/B`` in front for params, and gather or
affine indices on the left becoming scatter-adds. The derivative of each
function is its row in ``tcc.functions``; a read's derivative is the product
of the local derivatives along the path from the root to it (the chain rule).
"""

from __future__ import annotations

from . import functions
from .algebra import split_product
from .check import Info, analyze
from .errors import TccError
from .ir import (COMPARISONS, REDUCTIONS, Affine, Bin, Call, Decl, DimVal, Expr, Neg, Num,
                 Program, Ref, Stmt, base_name, dim_uses, grad_name, index_cmps, index_vars,
                 children, is_grad, reads, shape_owner, stmt_vars)
from .names import fresh

# ------------------------------------------------------------------ building

ONE = Num(1)


def mul(a: Expr, b: Expr) -> Expr:
    return Bin("*", a, b)


def div(a: Expr, b: Expr) -> Expr:
    return Bin("/", a, b)


def sub(a: Expr, b: Expr) -> Expr:
    return Bin("-", a, b)


def call(fn: str, *args: Expr) -> Expr:
    return Call(fn, tuple(args))


def cmp(op: str, a: Expr, b: Expr) -> Expr:
    return Bin(op, a, b)


# ------------------------------------------------------- derivative rules
# The functions' rules are their rows in tcc.functions; the operators' are here.

def _is_constant(e: Expr) -> bool:
    return not reads(e)


def _fold(e: Expr):
    """The value of a constant number expression, or None."""
    if isinstance(e, Num):
        return e.value
    if isinstance(e, Neg):
        v = _fold(e.arg)
        return None if v is None else -v
    return None


def _power_base_rule(a: Expr, c: Expr) -> Expr:
    """d a**c / da = c * a**(c - 1) for an exponent c with no reads (never log(a))."""
    v = _fold(c)
    if v is not None:
        if v - 1 == 0:
            return Num(v)
        lower = a if v - 1 == 1 else Bin("**", a, _num(v - 1))
        return mul(_num(v), lower)
    return mul(c, Bin("**", a, sub(c, ONE)))


def _num(v) -> Expr:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return Num(v) if v >= 0 else Neg(Num(-v))


def _power_base(a: Expr, b: Expr, e: Expr) -> Expr:
    if _is_constant(b):
        return _power_base_rule(a, b)
    return mul(b, Bin("**", a, sub(b, ONE)))            # d a**b/da = b a**(b-1)


# d (a op b)/da and d (a op b)/db, given a, b and the node e = a op b.
BIN_RULES = {
    "+":  (lambda a, b, e: ONE, lambda a, b, e: ONE),               # d(a + b) = da + db
    "-":  (lambda a, b, e: ONE, lambda a, b, e: Num(-1)),           # d(a - b) = da - db
    "*":  (lambda a, b, e: b, lambda a, b, e: a),                   # d(a b) = b da + a db
    "/":  (lambda a, b, e: div(ONE, b),                             # d(a/b) = da / b
           lambda a, b, e: Neg(div(a, Bin("**", b, Num(2))))),      #        - a db / b**2
    "**": (_power_base,                                             # d a**b = b a**(b-1) da
           lambda a, b, e: mul(call("log", a), e)),                 #        + log(a) a**b db
    # comparisons are 1 or 0: derivative 0 (no row: no term)
}


def local_partial(e: Expr, k: int) -> Expr | None:
    """d e / d (child k of e), from the rule tables; None where it is zero."""
    if isinstance(e, Neg):
        return Num(-1)                                  # d(-a) = -da
    if isinstance(e, Bin):
        if e.op in COMPARISONS:
            return None
        return BIN_RULES[e.op][k](e.lhs, e.rhs, e)
    if isinstance(e, Call):
        return functions.lookup(e.fn, e.pos).partial(k, e)
    raise KeyError(f"no derivative rule for {type(e).__name__} {e}")


def read_paths(e: Expr, path=()):
    """(path, Ref) for every read in e, in source order; a path is child positions."""
    if isinstance(e, Ref):
        yield path, e
        return
    for k, c in enumerate(children(e)):
        yield from read_paths(c, path + (k,))


def derivative(e: Expr, path: tuple[int, ...]) -> list[Expr] | None:
    """The chain-rule factors of d e / d (the read at path), outermost first."""
    factors = []
    node = e
    for k in path:
        p = local_partial(node, k)
        if p is None:
            return None
        factors.append(p)
        node = children(node)[k]
    return factors


# --------------------------------------------------------------- products

def build_product(lead: list[Expr], coef, nums: list[Expr], dens: list[Expr]) -> Expr:
    """``lead * coef * nums... / dens...`` with the constant first (coef > 0)."""
    parts = list(lead)
    if coef != 1:
        parts.insert(0, Num(coef))
    parts += nums
    if not parts:
        parts = [ONE]
    e = parts[0]
    for p in parts[1:]:
        e = mul(e, p)
    for d in dens:
        e = div(e, d)
    return e


def _plain_vars(refs: list[Ref]) -> set[str]:
    """The loop indices that some access uses plainly (which fixes their range)."""
    out = set()
    for r in refs:
        for ix in r.index:
            for a in (ix,) if isinstance(ix, Affine) else ix.index:
                if a.plain:
                    out.add(a.plain)
    return out


def _access(r: Ref) -> tuple:
    """What a read constrains: a tensor's axes (``X.grad`` has the shape of X)."""
    return (base_name(r.tensor), r.index)


def _range_pins(info: Info, si, fixed: list[Ref], factors: list[Expr]) -> list[Expr]:
    """Factors ``X[e] ** 0`` (exactly 1, even for inf and nan) that keep a
    backward term's loop ranges those of its forward statement.

    The backward is a program of its own, whose ranges are inferred anew from
    the reads it keeps. A term that drops the read fixing an index's range (d/dw
    of ``z += x[l] + w[l + 1]`` keeps only ``w.grad[l + 1]``) would get the
    largest valid range instead, and a term that drops an index whose range no
    dim names (``_i0``) cannot multiply by it: such a term keeps a forward read
    of that index, raised to the power 0.
    """
    s = si.stmt
    named = info.input_dims
    forward_reads = reads(s.expr)
    pins: list[Expr] = []
    done: set[str] = {v for v, _ in s.written}     # written ranges stay written
    while True:
        refs = fixed + [r for f in factors + pins for r in reads(f)]
        used = {v for r in refs for v in index_vars(r.index)}
        used |= {v for f in factors for c in index_cmps(f) for v in c.vars}
        plain = _plain_vars(refs)
        need = [v for v in s.loops if v not in done and (
            (v in used and v not in plain) or
            (v not in used and not (isinstance(si.ranges[v], int) or si.ranges[v] in named)))]
        if not need:
            return pins
        v = need[0]
        done.add(v)
        have = {_access(r) for r in refs}
        candidates = [r for r in forward_reads
                      if v in index_vars(r.index) and _access(r) not in have]
        fixing = [r for r in candidates if v in _plain_vars([r])]
        pins += [Bin("**", r, Num(0)) for r in (fixing[:1] or candidates)]


# ------------------------------------------------------------ the transform

def active_tensors(info: Info) -> set[str]:
    """Tensors that depend on some input or param."""
    active = set(info.differentiable)
    for si in info.stmts:
        if any(r.tensor in active for r in reads(si.stmt.expr)):
            active.add(si.stmt.target.tensor)
    return active


def differentiate(program: Program | Info) -> Program:
    """The backward program of ``program``: declarations, then the += loops."""
    info = program if isinstance(program, Info) else analyze(program)
    active = active_tensors(info)
    for t in [*info.inputs, *info.computed]:
        suffix = t[len(shape_owner(t)):]   # .grad, .dot, .grad.dot, .hess
        if t in active and suffix:         # its gradient would be t.grad.grad, t.dot.grad
            decl = next((d for d in info.program.decls if d.name == t), None)
            first = next((si.stmt.target for si in info.stmts if si.stmt.target.tensor == t),
                         None)
            raise TccError(f"'{t}' would need a gradient, '{t}.grad', which is not a name: "
                           f"only data tensors may be called X{suffix}", (decl or first).pos)
    has_grad = {t for t in info.outputs if t in active}
    batch = info.batch
    taken = set(info.roles) | set(info.dims) | {grad_name(t) for t in info.roles}
    for si in info.stmts:
        taken.update(si.stmt.loops)

    out: list[Stmt] = []
    for k, si in reversed(list(enumerate(info.stmts))):
        s = si.stmt
        y = s.target.tensor
        if y not in has_grad:
            continue
        seed = Ref(grad_name(y), s.target.index)
        extra: list[Expr] = []
        dens: list[Expr] = []
        if s.op in REDUCTIONS:
            # Split m.grad evenly among the positions that tie for the max (min).
            count = fresh(f"{y}_count", taken)
            hit = cmp("==", s.expr, Ref(y, s.target.index))
            targets_read = [r for _, r in read_paths(s.expr) if r.tensor in active]
            if targets_read:
                out.append(Stmt(s.loops, Ref(count, s.target.index), "+=", hit, s.pos,
                                origin=(k, -1), written=s.written))
                extra.append(hit)
                dens.append(Ref(count, s.target.index))
        for n, (path, r) in enumerate(read_paths(s.expr)):
            x = r.tensor
            if x not in active:
                continue
            chain = derivative(s.expr, path)
            if chain is None:
                continue
            coef, nums, more_dens = split_product(extra + chain)
            if coef == 0:
                continue
            op = "-=" if (coef < 0) != (s.op == "-=") else "+="
            coef = abs(coef)
            lead = [seed]
            if info.roles.get(x) == "param" and batch is not None:
                lead = [div(ONE, DimVal(batch)), seed]
            target = Ref(grad_name(x), r.index)
            nums = nums + _range_pins(info, si, [target, seed], nums + dens + more_dens)
            # A loop index the term no longer mentions: the sum over it adds the
            # same value once per position, so multiply by its range.
            used = set(stmt_vars(Stmt(s.loops, target, op, mul(seed, build_product(
                [], 1, nums, dens + more_dens)))))
            loops = tuple(v for v in s.loops if v in used)
            for v in s.loops:
                if v not in used:
                    size = si.ranges[v]
                    lead.append(Num(size) if isinstance(size, int) else DimVal(size))
            expr = build_product(lead, coef, nums, dens + more_dens)
            written = tuple((v, size) for v, size in s.written if v in loops)
            out.append(Stmt(loops, target, op, expr, s.pos, origin=(k, n), written=written))
            has_grad.add(x)
    return with_declarations(info, out, seeds=[grad_name(t) for t in info.outputs
                                               if t in active])


def with_declarations(info: Info, stmts: list[Stmt], seeds=()) -> Program:
    """Declare what the backward reads (as data) and produces (as outputs).

    seeds: the outputs' gradients. One that the backward also updates (an
    output read by later statements) is declared data all the same: the
    program adds to the given seed.
    """
    computed = {s.target.tensor for s in stmts}
    read: list[str] = [t for t in seeds if t in computed]
    for s in stmts:
        for r in reads(s.expr):
            if r.tensor not in computed and r.tensor not in read:
                read.append(r.tensor)
            for ix in r.index:
                if not isinstance(ix, Affine) and ix.tensor not in read:
                    read.append(ix.tensor)
        for ix in s.target.index:
            if not isinstance(ix, Affine) and ix.tensor not in read:
                read.append(ix.tensor)
        for c in index_cmps(s.expr):
            for ix in c.sides:
                if not isinstance(ix, Affine) and ix.tensor not in read:
                    read.append(ix.tensor)
    # An intermediate gradient written at non-plain positions takes its
    # shape from its forward tensor, which must then be declared too.
    for s in stmts:
        t = s.target.tensor
        base = base_name(t)
        if any(not (isinstance(ix, Affine) and ix.plain) for ix in s.target.index) and \
                base != t and info.roles.get(base) not in ("input", "param") and \
                base not in read:
            read.append(base)

    # A gradient's dims must be bound by some array the backward takes: where
    # nothing else binds them, take the forward tensor itself as data.
    def shape_of(name: str):
        base = base_name(name) if is_grad(name) and name not in info.shapes else name
        shape = info.shapes.get(base, ())
        return tuple(shape) if shape else None

    bound = {e for t in read for e in (shape_of(t) or ()) if isinstance(e, str)}
    for t in info.inputs:
        if info.roles[t] in ("input", "param") and grad_name(t) in computed and \
                any(isinstance(e, str) and e not in bound for e in info.shapes.get(t, ())):
            if t not in read:
                read.append(t)
            bound.update(e for e in info.shapes[t] if isinstance(e, str))

    # Every dim the statements use as a number (``1/B``) or as an offset
    # (``x[t + D]``) must be bound too: declare a forward tensor of that size.
    used_dims = [d for st in stmts for d, _ in dim_uses(st)]
    for d in dict.fromkeys(used_dims):
        if d in bound:
            continue
        holder = next((t for t in [*info.inputs, *info.computed]
                       if d in (info.shapes.get(t) or ())), None)
        if holder is not None:
            if holder not in read:
                read.append(holder)
            bound.update(e for e in info.shapes[holder] if isinstance(e, str))

    # An index that no plain use of a tensor of known shape fixes (x.grad[i] +=
    # y.grad, x an intermediate): the gradient takes its shape from the forward
    # tensor, which the backward then declares.
    outputs = {grad_name(t) for t in info.inputs if info.roles[t] in ("input", "param")}
    changed = True
    while changed:
        changed = False
        known = set(read) | (outputs & computed) | {grad_name(t) for t in read}
        for s in stmts:
            accesses = [s.target, *reads(s.expr)]
            for v in s.loops:
                if not any(r.tensor in known and v in _plain_vars([r]) for r in accesses) \
                        and v in index_vars(s.target.index):
                    base = base_name(s.target.tensor)
                    if is_grad(s.target.tensor) and base in info.shapes and \
                            base not in read:
                        read.append(base)
                        changed = True
            known.add(s.target.tensor)

    decls: list[Decl] = []
    dims = [d for d in info.dims]
    for d in dims:
        decls.append(Decl("dim", d))
    order = [t for t in list(info.roles) if t in read] + [t for t in read if t not in info.roles]
    for t in order:
        decls.append(Decl("data", t, shape_of(t)))
    for t in info.inputs:
        if info.roles[t] in ("input", "param") and grad_name(t) in computed:
            decls.append(Decl("output", grad_name(t), shape_of(t)))
    return Program(tuple(decls), tuple(stmts))


__all__ = ["differentiate", "BIN_RULES", "active_tensors"]
