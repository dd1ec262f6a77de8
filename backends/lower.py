"""Lowering checked IR to NumPy statements, shared by every backend.

Each update's right-hand side is split at its top-level ``+``/``-`` into
products; each product into factors. A factor that is not a plain read is
computed once, elementwise, over only its own indices; factors whose indices
are a subset of another's are multiplied into it. What remains is one
contraction per product, which goes to BLAS: a matrix product or
``tensordot`` for two operands, a backend-specific cached path for three or
more. Nothing is ever materialized over the whole loop space when a
contraction will do. An update with no summed index is one broadcast
expression.

Reads with affine indices are strided views (basic slices, or one
``as_strided`` view: the im2col of a convolution); gathers are advanced
indexing. Writes at affine positions are strided slice-adds looping only over
the window indices; writes at gathered positions use ``np.add.at``.
"""

from __future__ import annotations

import ast
import keyword
import math
from dataclasses import dataclass, field

from tcc import functions
from tcc.check import Info, StmtInfo
from tcc.ir import (Affine, Bin, Call, DimVal, Expr, Gather, Neg, Num, Ref, base_name, map_refs,
                    py_name)

# Names the generated functions use besides the program's own.
RESERVED_LOCALS = {"np", "oe", "dt", "sizes", "tensors", "grads", "itertools", "out",
                   "saved", "seeds", "arrays", "take", "seed", "seed_names", "need_saved",
                   "bind_sizes", "computation_dtype", "fd_check", "forward", "backward",
                   "random_inputs", "math", "sys"}
# One generated module's Python names for tensors and dims, unique (reset per module).
NAMES: dict[str, str] = {}
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def local_name(name: str) -> str:
    """The Python local for a tensor or dim name (``X.grad`` is ``X_grad``):
    itself where it can be, else with trailing underscores, never shared."""
    if name in NAMES:
        return NAMES[name]
    p = py_name(name)
    taken = set(NAMES.values())
    if p in RESERVED_LOCALS or keyword.iskeyword(p) or p.startswith("_") or p in taken:
        p = p + "_"
        while p in taken or p in RESERVED_LOCALS or py_name(p) in NAMES:
            p = p + "_"
    NAMES[name] = p
    return p


def reset_names(names) -> None:
    """Start a module: the program's own Python names claim themselves first."""
    NAMES.clear()
    plain = [n for n in names if py_name(n) not in RESERVED_LOCALS and
             not keyword.iskeyword(py_name(n)) and not py_name(n).startswith("_")]
    for n in plain:
        NAMES[n] = py_name(n)
    for n in names:
        local_name(n)


@dataclass
class Operand:
    code: str
    vars: tuple[str, ...]
    fresh: bool = False       # a new array, not a view of a named tensor

    def wrapped(self) -> str:
        """The code, parenthesized when a method call would bind wrongly."""
        c = self.code
        if c.replace("_", "").replace(".", "").isalnum() or c.endswith((")", "]")) and \
                _balanced_call(c):
            return c
        return f"({c})"


def _balanced_call(c: str) -> bool:
    """Whether c is a single call or subscript like ``np.exp(s)`` or ``x[0, :]``."""
    depth = 0
    for k, ch in enumerate(c):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth == 0 and k != len(c) - 1:
                nxt = c[k + 1]
                if nxt not in "([.":
                    return False
        elif depth == 0 and ch in " +-*/<>=":
            return False
    return True


@dataclass
class Context:
    """What one generated function knows: names, sizes, helpers used."""
    info: Info
    target: "object"                 # the backend
    helpers: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)   # tensors assigned so far
    value_casts: dict[str, str] = field(default_factory=dict)   # int data read as numbers
    used: set = field(default_factory=set)          # size names the code reads
    loop_names: set = field(default_factory=set)    # Python loop variables (tap loops)
    flat_layouts: dict = field(default_factory=dict)  # padded flat copies already made

    def size(self, sym) -> str:
        if isinstance(sym, int):
            return str(sym)
        if sym not in self.loop_names:
            self.used.add(sym)
        return local_name(sym)

    def var_size(self, ranges, v) -> str:
        return self.size(ranges[v])


# ----------------------------------------------------------------- helpers

def tuple_code(items) -> str:
    """Python source for a tuple of the given source snippets: (), (a,), (a, b)."""
    items = list(items)
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def align(code: str, src: tuple[str, ...], dst: tuple[str, ...]) -> str:
    """Rearrange an array over ``src`` to broadcast over ``dst`` (a superset)."""
    present = [v for v in dst if v in src]
    if list(src) != present:
        perm = tuple(src.index(v) for v in present)
        if len(src) == 2:
            code = f"{_atom(code)}.T"
        else:
            code = f"{_atom(code)}.transpose{perm}"
    if not present:
        return code
    first = dst.index(present[0])
    last = max(dst.index(v) for v in present)
    parts = []
    for v in dst[first:]:
        parts.append(":" if v in src else "None")
    if len(dst) - 1 > last:
        pass
    if all(p == ":" for p in parts):
        return code
    while parts and parts[-1] == ":":
        parts.pop()
    return f"{_atom(code)}[{', '.join(parts)}]"


def _atom(code: str) -> str:
    return Operand(code, ()).wrapped()


def _const_code(ctx: Context, a: Affine) -> str:
    parts = [str(a.const)] if a.const or not a.dims else []
    for d, c in a.dims:
        parts.append(f"{c} * {ctx.size(d)}" if c != 1 else ctx.size(d))
    return " + ".join(parts).replace("+ -", "- ") or "0"


def _simple_axes(index) -> bool:
    """Each axis a constant, or one index with a positive coefficient used nowhere else."""
    seen = []
    for ix in index:
        if not isinstance(ix, Affine):
            return False
        if len(ix.terms) > 1:
            return False
        if ix.terms:
            v, c = ix.terms[0]
            if c <= 0 or v in seen:
                return False
            seen.append(v)
    return True


def _slice_code(ctx: Context, ix: Affine, ranges, axis_size) -> str:
    """A basic slice for an axis: a constant, or ``start : stop : step``."""
    if not ix.terms:
        return _const_code(ctx, ix)
    v, c = ix.terms[0]
    n = ctx.var_size(ranges, v)
    start = _const_code(ctx, ix) if (ix.const or ix.dims) else ""
    if c == 1 and not start and ranges[v] == axis_size:
        return ":"
    stop_base = f"{start} + " if start else ""
    if c == 1:
        return f"{start}:{stop_base}{n}"
    return f"{start}:{stop_base}{c} * ({n} - 1) + 1:{c}"


def index_vars(index) -> tuple[str, ...]:
    out = []
    for ix in index:
        for v in ix.vars:
            if v not in out:
                out.append(v)
    return tuple(out)


def read_operand(ctx: Context, ref: Ref, ranges, as_value: bool = True) -> Operand:
    """An array over the read's indices (in order of appearance)."""
    info = ctx.info
    name = local_name(ref.tensor)
    if as_value and ref.tensor in ctx.value_casts:
        name = ctx.value_casts[ref.tensor]
    if not ref.index:
        return Operand(name, ())
    shape = info.shapes.get(ref.tensor) or info.shapes.get(base_name(ref.tensor))
    vars_ = index_vars(ref.index)
    plains = [ix.plain if isinstance(ix, Affine) else None for ix in ref.index]
    if all(plains) and len(set(plains)) == len(plains):
        return Operand(name, tuple(plains))
    if any(isinstance(ix, Gather) for ix in ref.index):
        return Operand(f"{name}[{advanced_index(ctx, ref.index, vars_, ranges)}]", vars_, True)
    if _simple_axes(ref.index):
        parts = [_slice_code(ctx, ix, ranges, shape[k]) for k, ix in enumerate(ref.index)]
        while parts and parts[-1] == ":":
            parts.pop()
        order = tuple(ix.terms[0][0] for ix in ref.index if ix.terms)
        return Operand(f"{name}[{', '.join(parts)}]" if parts else name, order)
    ctx.helpers.add("_view")
    offsets = [_const_code(ctx, ix) for ix in ref.index]
    coefs = []
    for v in vars_:
        coefs.append("(" + ", ".join(str(dict(ix.terms).get(v, 0)) for ix in ref.index)
                     + ("," if len(ref.index) == 1 else "") + ")")
    sizes = ", ".join(ctx.var_size(ranges, v) for v in vars_)
    return Operand(f"_view({name}, ({', '.join(offsets)}{',' if len(offsets) == 1 else ''}), "
                   f"({sizes}{',' if len(vars_) == 1 else ''}), "
                   f"({', '.join(coefs)}{',' if len(coefs) == 1 else ''}))", vars_)


def advanced_index(ctx: Context, index, vars_: tuple[str, ...], ranges) -> str:
    """An all-advanced index tuple whose broadcast shape is ``vars_``."""
    ctx.helpers.add("_ix")
    n = len(vars_)
    parts = []
    for ix in index:
        if isinstance(ix, Gather):
            inner = read_operand(ctx, Ref(ix.tensor, ix.index), ranges, as_value=False)
            parts.append(align(inner.code, inner.vars, vars_) if inner.vars else inner.code)
        elif not ix.terms:
            parts.append(_const_code(ctx, ix))
        else:
            terms = []
            for v, c in ix.terms:
                ar = f"_ix({ctx.var_size(ranges, v)}, {vars_.index(v)}, {n})"
                terms.append(ar if c == 1 else f"{c} * {ar}")
            if ix.const or ix.dims:
                terms.append(_const_code(ctx, ix))
            parts.append(" + ".join(terms))
    return ", ".join(parts)


# ------------------------------------------------------------- expressions

def _fold(e: Expr):
    """The value of an expression of numbers only, or None."""
    if isinstance(e, Num):
        return e.value
    if isinstance(e, Neg):
        v = _fold(e.arg)
        return None if v is None else -v
    if isinstance(e, Bin):
        a, b = _fold(e.lhs), _fold(e.rhs)
        if a is None or b is None:
            return None
        try:
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b, "**": lambda: a ** b,
                    "<": lambda: float(a < b), ">": lambda: float(a > b),
                    "<=": lambda: float(a <= b), ">=": lambda: float(a >= b),
                    "==": lambda: float(a == b), "!=": lambda: float(a != b)}[e.op]()
        except (ZeroDivisionError, OverflowError, ValueError):
            return None
    if isinstance(e, Call):
        args = [_fold(a) for a in e.args]
        if any(a is None for a in args):
            return None
        return functions.fold(e.fn, args)
    return None


def _num_code(v) -> str:
    if isinstance(v, complex):
        raise ValueError(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "np.inf" if v > 0 else "-np.inf"
        if math.isnan(v):
            return "np.nan"
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v)) + ".0"
    return repr(v)


_PREC = {"+": 2, "-": 2, "*": 3, "/": 3, "**": 5}


def elementwise(ctx: Context, e: Expr, order: tuple[str, ...], ranges) -> tuple[str, int]:
    """(code, precedence) of e computed over ``order`` by broadcasting."""
    v = _fold(e)
    if v is not None:
        code = _num_code(v)
        return code, (9 if not code.startswith("-") else 4)
    if isinstance(e, DimVal):
        # a size read as a number, in the computation's dtype: 1/B for B = 0 is
        # inf (a mean over nothing is nan), as NumPy and the interpreter have it
        return f"dt.type({ctx.size(e.name)})", 9
    if isinstance(e, Ref):
        op = read_operand(ctx, e, ranges)
        return align(op.code, op.vars, order) if op.vars else op.code, 9
    if isinstance(e, Neg):
        code, p = elementwise(ctx, e.arg, order, ranges)
        return "-" + (code if p > 4 else f"({code})"), 4
    if isinstance(e, Bin):
        a, pa = elementwise(ctx, e.lhs, order, ranges)
        b, pb = elementwise(ctx, e.rhs, order, ranges)
        if e.op in ("<", ">", "<=", ">=", "==", "!="):
            return f"({a} {e.op} {b}).astype(dt)", 9
        p = _PREC[e.op]
        if e.op == "**":
            a = a if pa > p else f"({a})"
            b = b if pb >= p else f"({b})"
            return f"{a} ** {b}", p
        a = a if pa >= p else f"({a})"
        b = b if pb > p else f"({b})"
        return f"{a} {e.op} {b}", p
    if isinstance(e, Call):
        args = [elementwise(ctx, a, order, ranges)[0] for a in e.args]
        row = functions.lookup(e.fn, e.pos)
        ctx.helpers.update(row.helpers)
        return row.code.format(*args), 9
    raise AssertionError(e)


def expr_vars(e: Expr) -> set[str]:
    from tcc.ir import reads
    out = set()
    for r in reads(e):
        out.update(index_vars(r.index))
    return out


# ------------------------------------------------------- sums of products

def split_terms(e: Expr, sign: int = 1) -> list[tuple[int, Expr]]:
    """The top-level terms of a sum, with their signs."""
    if isinstance(e, Bin) and e.op in "+-" and len(e.op) == 1:
        return split_terms(e.lhs, sign) + split_terms(e.rhs, sign if e.op == "+" else -sign)
    if isinstance(e, Neg):
        return split_terms(e.arg, -sign)
    return [(sign, e)]


def split_factors(e: Expr, up: bool = True) -> list[tuple[bool, Expr]]:
    """The factors of a product: (True, f) multiplies, (False, f) divides."""
    if isinstance(e, Bin) and e.op == "*":
        return split_factors(e.lhs, up) + split_factors(e.rhs, up)
    if isinstance(e, Bin) and e.op == "/":
        return split_factors(e.lhs, up) + split_factors(e.rhs, not up)
    return [(up, e)]


def ordered(vs, loops) -> tuple[str, ...]:
    return tuple(v for v in loops if v in vs)


def factor_code(ctx, factors: list[tuple[bool, Expr]], order, ranges) -> str:
    """Multiply and divide factors elementwise over ``order``."""
    num = [f for up, f in factors if up]
    den = [f for up, f in factors if not up]
    code = ""
    for k, f in enumerate(num):
        c, p = elementwise(ctx, f, order, ranges)
        c = c if p >= 3 else f"({c})"
        code = c if k == 0 else f"{code} * {c}"
    if not code:
        code = "1.0"
    for f in den:
        c, p = elementwise(ctx, f, order, ranges)
        code = f"{code} / {c if p > 3 else f'({c})'}"
    return code


def product_operands(ctx, factors, loops, ranges) -> tuple[str, list[Operand]]:
    """(scalar code, operands) for one product's factors."""
    scalars, groups = [], []       # groups: [vars, factors, plain Ref or None]
    for up, f in factors:
        vs = expr_vars(f)
        if not vs:
            scalars.append((up, f))
            continue
        groups.append([ordered(vs, loops), [(up, f)]])
    # Fold each factor into another whose indices contain its own.
    merged = True
    while merged:
        merged = False
        for i, (vi, fi) in enumerate(groups):
            hosts = [j for j, (vj, _) in enumerate(groups) if j != i and set(vi) <= set(vj)]
            if not hosts:
                continue
            # prefer a host that is already computed (not a bare read), then the smallest
            hosts.sort(key=lambda j: (_is_plain_read(groups[j][1]), len(groups[j][0])))
            j = hosts[0]
            # two plain reads stay separate operands: a contraction (BLAS or
            # einsum) multiplies and sums them without building their product
            if not (_is_plain_read(fi) and _is_plain_read(groups[j][1])):
                groups[j][1] = groups[j][1] + fi
                groups.pop(i)
                merged = True
                break
    operands = []
    for vs, fs in groups:
        if len(fs) == 1 and fs[0][0] and isinstance(fs[0][1], Ref):
            op = read_operand(ctx, fs[0][1], ranges)
            operands.append(op)
        else:
            operands.append(Operand(factor_code(ctx, fs, vs, ranges), vs, True))
    scalar = factor_code(ctx, scalars, (), ranges) if scalars else ""
    return scalar, operands


def _is_plain_read(fs) -> bool:
    return len(fs) == 1 and fs[0][0] and isinstance(fs[0][1], Ref)


def contract(ctx, operands: list[Operand], out: tuple[str, ...], loops) -> Operand:
    """Contract operands, summing every index not in ``out``; result over out∩vars."""
    keep_all = set(out)
    # Sum indices that only one operand has, inside that operand.
    ops = []
    for k, op in enumerate(operands):
        others = set().union(*(o.vars for j, o in enumerate(operands) if j != k)) \
            if len(operands) > 1 else set()
        lone = [v for v in op.vars if v not in keep_all and v not in others]
        if lone and len(operands) > 1:
            axes = tuple(op.vars.index(v) for v in lone)
            rest = tuple(v for v in op.vars if v not in lone)
            ax = axes[0] if len(axes) == 1 else axes
            op = Operand(f"{op.wrapped()}.sum(axis={ax})", rest, True)
        ops.append(op)
    present = set().union(*(o.vars for o in ops)) if ops else set()
    res = tuple(v for v in out if v in present)
    if len(ops) == 1:
        op = ops[0]
        lone = [v for v in op.vars if v not in keep_all]
        if lone:
            axes = tuple(op.vars.index(v) for v in lone)
            rest = tuple(v for v in op.vars if v not in lone)
            ax = axes[0] if len(axes) == 1 else axes
            op = Operand(f"{op.wrapped()}.sum(axis={ax})", rest, True)
        return Operand(align(op.code, op.vars, res) if op.vars != res else op.code, res,
                       op.fresh)
    if len(ops) == 2:
        return _contract2(ctx, ops[0], ops[1], res)
    return ctx.target.contract_many(ctx, ops, res)


def einsum_spec(ops: list[Operand], res) -> str:
    letters = {}
    for o in ops:
        for v in o.vars:
            letters.setdefault(v, LETTERS[len(letters)])
    return ",".join("".join(letters[v] for v in o.vars) for o in ops) + "->" + \
        "".join(letters[v] for v in res)


def _contract2(ctx, a: Operand, b: Operand, res) -> Operand:
    shared = [v for v in a.vars if v in b.vars]
    summed = [v for v in shared if v not in res]
    batch = [v for v in shared if v in res]
    if not summed:
        prod = f"{align(a.code, a.vars, res)} * {align(b.code, b.vars, res)}"
        return Operand(prod, res, True)
    if batch:
        return ctx.target.contract_batched(ctx, [a, b], res)
    af = tuple(v for v in a.vars if v not in summed)
    bf = tuple(v for v in b.vars if v not in summed)
    if len(summed) == 1 and len(a.vars) <= 2 and len(b.vars) <= 2:
        c = summed[0]
        # A as (free, c), B as (c, free): the result is over af + bf.
        if res == bf + af and af and bf:
            a, b, af, bf = b, a, bf, af
        left = a.code if a.vars[-1] == c else f"{_atom(a.code)}.T"
        right = b.code if b.vars[0] == c else f"{_atom(b.code)}.T"
        return Operand(f"{_atom(left)} @ {_atom(right)}", af + bf, True).aligned(res)
    # tensordot's result is over af + bf: put first the operand that keeps the
    # result's innermost index innermost, so what follows reads memory in order.
    if res and res[-1] in af and af and bf:
        a, b, af, bf = b, a, bf, af
    mm = _matmul_forms(a, b, summed, res)
    if mm is not None:
        return mm
    ia = tuple(a.vars.index(v) for v in summed)
    ib = tuple(b.vars.index(v) for v in summed)
    code = f"np.tensordot({a.code}, {b.code}, axes=({ia}, {ib}))"
    return Operand(code, af + bf, True).aligned(res)


def _matmul_forms(a: Operand, b: Operand, summed, res) -> Operand | None:
    """Contractions that np.matmul does on strided views without copying them
    (tensordot would reshape, and copy, a view that does not flatten):
    - a stack of matrices times one matrix: (..., n, c) @ (c, o);
    - a batch summed afterwards: (b, o, n) @ (b, n, c), then .sum(axis=0)."""
    if len(summed) == 1:
        c = summed[0]
        for x, y in ((a, b), (b, a)):
            if len(x.vars) >= 3 and len(y.vars) == 2 and x.vars[-2] == c and \
                    x.vars[-1] not in y.vars:
                o = tuple(v for v in y.vars if v != c)
                left = y.code if y.vars[-1] == c else f"{_atom(y.code)}.T"
                if "[" in y.code:
                    left = f"np.ascontiguousarray({left})"
                res_vars = x.vars[:-2] + o + (x.vars[-1],)
                return Operand(f"np.matmul({left}, {x.code})", res_vars, True).aligned(res)
            if x.vars[-1] == c and len(x.vars) >= 3 and len(y.vars) in (1, 2):
                o = tuple(v for v in y.vars if v != c)
                right = y.code if (y.vars[0] == c) else f"{_atom(y.code)}.T"
                if "[" in y.code:   # a strided slice: BLAS wants the small matrix contiguous
                    right = f"np.ascontiguousarray({right})"
                return Operand(f"{_atom(x.code)} @ {_atom(right)}", x.vars[:-1] + o,
                               True).aligned(res)
    if len(summed) == 2 and a.vars[0] == b.vars[0] and a.vars[0] in summed:
        bt = a.vars[0]
        c = next(v for v in summed if v != bt)
        ar, br = a.vars[1:], b.vars[1:]
        if c in ar and c in br and len(ar) <= 2 and len(br) <= 2:
            af = tuple(v for v in ar if v != c)
            bf = tuple(v for v in br if v != c)
            left = a.code if ar[-1] == c else _swap_last(a.code, len(a.vars))
            right = b.code if br[0] == c else _swap_last(b.code, len(b.vars))
            if not af:
                left = f"{_atom(left)}[:, None, :]"
            if not bf:
                right = f"{_atom(right)}[:, :, None]"
            code = f"np.matmul({left}, {right}).sum(axis=0)"
            if not af and not bf:
                code += "[0, 0]"
            elif not af:
                code += "[0]"
            elif not bf:
                code += "[:, 0]"
            return Operand(code, af + bf, True).aligned(res)
    return None


def _swap_last(code: str, ndim: int) -> str:
    """Swap the last two axes (a view)."""
    perm = tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)
    return f"{_atom(code)}.transpose{perm}"


def _aligned(self: Operand, res) -> Operand:
    if self.vars == tuple(res):
        return self
    return Operand(align(self.code, self.vars, tuple(res)), tuple(res), self.fresh)


Operand.aligned = _aligned  # type: ignore[attr-defined]


# --------------------------------------------------------------- statements

def tap_windows(s) -> tuple[str, ...]:
    """The window indices of a convolution-shaped update to loop over, tap by
    tap, or (): each multi-index axis ``2*n + i`` of a read or the target gives
    its window index, and with those fixed every access must be a basic slice
    whose innermost axis stays a plain index (so each tap's slices feed BLAS
    without a copy). Otherwise the im2col view (one contraction) is used."""
    if s.op == "max=":
        return ()
    tvars = set(index_vars(s.target.index))
    if all(v in tvars for v in s.loops):
        return ()
    windows: list[str] = []
    accesses = [s.target, *_reads(s.expr)]
    for r in accesses:
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
    for r in [fixed.target, *_reads(fixed.expr)]:
        if not _simple_axes(r.index):
            return ()
    return tuple(windows)


def _reads(e):
    from tcc.ir import reads
    return reads(e)


def fix_indices(s, names) -> "object":
    """The update with some loop indices held fixed (read as Python variables)."""
    from dataclasses import replace as _replace


    def fix_affine(a: Affine) -> Affine:
        terms = tuple((v, c) for v, c in a.terms if v not in names)
        dims = a.dims + tuple((v, c) for v, c in a.terms if v in names)
        return Affine(terms, a.const, dims, a.pos)

    def fix_ref(r: Ref) -> Ref:
        return Ref(r.tensor, tuple(fix_affine(ix) if isinstance(ix, Affine) else
                                   Gather(ix.tensor, tuple(fix_affine(a) for a in ix.index))
                                   for ix in r.index), r.pos)

    return _replace(s, loops=tuple(v for v in s.loops if v not in names),
                    target=fix_ref(s.target), expr=map_refs(s.expr, fix_ref))


def lower_statement(ctx: Context, si: StmtInfo) -> list[str]:
    """The Python lines for one update, preceded by a comment quoting it."""
    from .flatconv import flat_plan, lower_flat
    windows = tap_windows(si.stmt)
    if windows:
        return _lower_taps(ctx, si, windows)
    plan = flat_plan(si.stmt)
    if plan is not None:
        return lower_flat(ctx, si, plan, _lower_statement, fix_indices, local_name)
    return _lower_statement(ctx, si)


def matmul_operands(expr: str) -> tuple[str, str] | None:
    """The two operands' source when ``expr`` is one matrix product (``a @ b`` or
    ``np.matmul(a, b)``), so that it can be written with ``out=``; else None."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        a, b = node.left, node.right
    elif isinstance(node, ast.Call) and ast.unparse(node.func) == "np.matmul" and \
            len(node.args) == 2 and not node.keywords:
        a, b = node.args
    else:
        return None
    return ast.get_source_segment(expr, a), ast.get_source_segment(expr, b)


def tap_value(expr: str, buffer: str) -> tuple[str, bool]:
    """The line that computes one tap's value into ``buffer``, and whether it
    reuses the buffer: a matrix product is written with ``out=`` (one buffer
    for every tap, no allocation per tap), anything else as it is."""
    product = matmul_operands(expr)
    if product is None:
        return f"{buffer} = {expr}", False
    return f"{buffer} = np.matmul({product[0]}, {product[1]}, out={buffer})", True


def _strided_taps(s, windows, line: str, name: str):
    """(axis, S, n, i, expression) when the tap loop's one line is a scatter-add
    ``name[..., S*n + i, ...] += expression`` over a single window index i, every
    other target axis plain; else None."""
    if len(windows) != 1 or s.op not in ("+=", "-=") or not line.startswith(name + "["):
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
    head, sep, expr = line.partition(" += ")
    if found is None or not sep:
        return None
    return (*found, w, expr)


def _lower_taps(ctx: Context, si: StmtInfo, windows) -> list[str]:
    """A convolution, one matrix product per window position (tap)."""
    s = si.stmt
    t = s.target.tensor
    lines = [f"# {s}", f"# (tap by tap over {', '.join(windows)}: one matrix product each)"]
    name = local_name(t)
    shape = ctx.info.shapes[t]
    shape_code = tuple_code(ctx.size(d) for d in shape)
    fresh = t not in ctx.defined
    ctx.defined.add(t)
    ctx.loop_names.update(windows)
    inner = _lower_statement(ctx, StmtInfo(fix_indices(s, windows), si.ranges))[1:]
    # Every tap adds to the whole target: the first tap's product is the sum so
    # far, with no zeros to add it to (unless it is a view, or broadcasts).
    whole = fresh and len(inner) == 1 and inner[0].startswith(f"{name} += ") and \
        not {v for ix in s.target.index for v in ix.vars} & set(windows)
    strided = None if whole or not fresh or len(inner) != 1 else \
        _strided_taps(s, windows, inner[0], name)
    tap = local_name(f"{t}__tap")
    if strided is not None:
        # x.grad[b, S*n + i, c] += ...: taps i = 0..S-1 reach the positions below
        # S*N once between them, so they write and the later taps add. Only the
        # positions past S*N start at zero (all of them if there are fewer taps).
        axis, stride, n, w, expr = strided
        nsize, wsize = ctx.var_size(si.ranges, n), ctx.var_size(si.ranges, w)
        tail = ", ".join([":"] * axis + [f"{stride} * {nsize}:"])
        lines.append(f"{name} = np.empty({shape_code}, dtype=dt) if {wsize} >= {stride} "
                     f"else np.zeros({shape_code}, dtype=dt)")
        lines.append(f"{name}[{tail}] = 0")
        lines.append(f"{tap} = None")
        target = inner[0][:inner[0].index(" += ")]    # (a -= arrives as += -(...))
        inner = [f"if {local_name(w)} < {stride}:", f"    {target} = {expr}", "else:",
                 "    " + tap_value(expr, tap)[0], f"    {target} += {tap}"]
    elif fresh and not whole:
        lines.append(f"{name} = np.zeros({shape_code}, dtype=dt)")
    if whole:
        line, reused = tap_value(inner[0][len(name) + 4:], tap)
        lines.append(f"{name} = {tap} = None")
        inner = [line, f"if {name} is None:",
                 f"    {name} = {tap} if {tap}.base is None and {tap}.dtype == dt and "
                 f"{tap}.shape == {shape_code} else {tap} + np.zeros({shape_code}, dtype=dt)",
                 *([f"    {tap} = None   # (the sum keeps that buffer)"] if reused else []),
                 "else:", f"    {name} += {tap}"]
    indent = ""
    for w in windows:
        lines.append(f"{indent}for {local_name(w)} in range({ctx.var_size(si.ranges, w)}):")
        indent += "    "
    lines += [indent + line for line in inner]
    if whole:
        lines.append(f"if {name} is None:   # no taps: an empty window")
        lines.append(f"    {name} = np.zeros({shape_code}, dtype=dt)")
    return lines


def _lower_statement(ctx: Context, si: StmtInfo) -> list[str]:
    s, ranges = si.stmt, si.ranges
    info = ctx.info
    loops = s.loops
    t = s.target.tensor
    tname = local_name(t)
    tvars = index_vars(s.target.index)
    plain_target = all(isinstance(ix, Affine) and ix.plain for ix in s.target.index) and \
        len(set(tvars)) == len(s.target.index)
    tvars_order = tvars
    if not plain_target and not any(isinstance(ix, Gather) for ix in s.target.index):
        tvars_order = scatter_order(s)
    summed = [v for v in loops if v not in tvars]
    lines = [f"# {s}"]
    first = t not in ctx.defined
    ctx.defined.add(t)
    shape = info.shapes[t]

    def shape_code():
        return tuple_code(ctx.size(d) for d in shape)

    if s.op == "max=":
        allv = tuple(tvars_order) + tuple(summed)
        code, _ = elementwise(ctx, s.expr, allv, ranges)
        if expr_vars(s.expr) != set(allv):
            full_shape = ", ".join(ctx.var_size(ranges, v) for v in allv)
            code = f"np.broadcast_to({code}, ({full_shape}{',' if len(allv) == 1 else ''}))"
        if summed:
            axes = tuple(range(len(tvars_order), len(allv)))
            ax = axes[0] if len(axes) == 1 else axes
            val = Operand(f"np.max({code}, axis={ax}, initial=-np.inf)", tvars_order, True)
        else:
            val = Operand(code, tvars_order, True)
        val.partial = False  # type: ignore[attr-defined]
        if plain_target and set(val.vars) == set(tvars_order) and tvars_order:
            lines.append(f"{tname} = {align(val.code, val.vars, tvars_order)}")
        elif plain_target:
            lines.append(f"{tname} = np.full({shape_code()}, -np.inf, dtype=dt)")
            lines.append(f"{tname}[...] = {align(val.code, val.vars, tvars_order)}"
                         if val.vars else f"{tname}[...] = {val.code}")
        else:
            lines.append(f"{tname} = np.full({shape_code()}, -np.inf, dtype=dt)")
            lines += _scatter(ctx, s, tname, val, ranges, "np.maximum.at")
        return lines

    if not summed:
        code, p = elementwise(ctx, s.expr, tvars_order, ranges)
        covered = expr_vars(s.expr)
        val = Operand(code, tvars_order, not isinstance(s.expr, Ref))
    else:
        parts = []
        for tsign, term in split_terms(s.expr):
            scalar, operands = product_operands(ctx, split_factors(term), loops, ranges)
            res = contract(ctx, operands, tvars_order, loops) if operands else \
                Operand("1.0", ())
            code = align(res.code, res.vars, tvars_order) if res.vars else res.code
            # summed indices this term does not depend on: each adds the term again
            present = set().union(*(o.vars for o in operands)) if operands else set()
            count = [ctx.var_size(ranges, v) for v in summed if v not in present]
            if count:
                scalar = " * ".join(([scalar] if scalar else []) + count)
            # a batch average over an empty batch: the loops run no update, so 0
            # (not 1/0 times an empty sum)
            empty = [ctx.var_size(ranges, v) for v in summed
                     if isinstance(ranges[v], str) and
                     any(isinstance(f, DimVal) and f.name == ranges[v]
                         for _, f in split_factors(term))]
            if scalar and empty:
                scalar = f"({scalar} if {' * '.join(empty)} else 0.0)"
            if scalar:
                code = f"{scalar} * {_atom(code)}" if code != "1.0" else scalar
            parts.append((tsign, code, res.vars))
        code = ""
        for k, (tsign, c, _) in enumerate(parts):
            if k == 0:
                code = c if tsign > 0 else f"-{_atom(c)}"
            else:
                code += (" + " if tsign > 0 else " - ") + (c if tsign > 0 else _atom(c))
        covered = set().union(*(set(v) for _, _, v in parts))
        if len(parts) > 1 and any(set(v) != covered for _, _, v in parts):
            covered = set()     # a sum of parts each missing some index: broadcast it
        val = Operand(code, tvars_order, True)
    # val's code broadcasts over the target's indices; partial if it lacks some
    val.partial = set(covered) != set(tvars_order)  # type: ignore[attr-defined]

    full = not val.partial
    update = "-=" if s.op == "-=" else "+="
    if plain_target:
        aligned = val.code
        if first:
            neg = "-" + _atom(aligned) if update == "-=" else aligned
            if not tvars_order:
                fn = "np.asarray" if val.fresh or update == "-=" else "np.array"
                lines.append(f"{tname} = {fn}({neg}, dtype=dt)")
            elif full:
                if val.fresh or update == "-=":
                    lines.append(f"{tname} = {neg}")
                else:
                    lines.append(f"{tname} = np.array({aligned}, dtype=dt)")
            else:
                lines.append(f"{tname} = np.zeros({shape_code()}, dtype=dt)")
                lines.append(f"{tname} {update} {aligned}")
        else:
            lines.append(f"{tname} {update} {aligned}")
        return lines
    if first:
        lines.append(f"{tname} = np.zeros({shape_code()}, dtype=dt)")
    if update == "-=":
        partial = val.partial
        val = Operand("-" + val.wrapped(), val.vars, True)
        val.partial = partial  # type: ignore[attr-defined]
    lines += _scatter(ctx, s, tname, val, ranges, "np.add.at")
    return lines


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


def _scatter(ctx, s, tname, val: Operand, ranges, at_fn) -> list[str]:
    """Add (or max) val, over the target's indices, at non-plain target positions."""
    index = s.target.index
    gathers = any(isinstance(ix, Gather) for ix in index)
    tvars = index_vars(index) if gathers else scatter_order(s)
    code = val.code
    if getattr(val, "partial", False):
        shape = ", ".join(ctx.var_size(ranges, v) for v in tvars)
        code = f"np.broadcast_to({code}, ({shape}{',' if len(tvars) == 1 else ''}))"
    if at_fn == "np.add.at" and not gathers and _simple_axes(index):
        shape = ctx.info.shapes[s.target.tensor]
        parts = [_slice_code(ctx, ix, ranges, shape[k]) for k, ix in enumerate(index)]
        return [f"{tname}[{', '.join(parts)}] += {code}"]
    if at_fn == "np.add.at" and not gathers:
        ctx.helpers.add("_add_affine")
        offsets = [_const_code(ctx, ix) for ix in index]
        coefs = ["(" + ", ".join(str(dict(ix.terms).get(v, 0)) for ix in index)
                 + ("," if len(index) == 1 else "") + ")" for v in tvars]
        return [f"_add_affine({tname}, {code}, ({', '.join(offsets)}"
                f"{',' if len(offsets) == 1 else ''}), ({', '.join(coefs)}"
                f"{',' if len(coefs) == 1 else ''}))"]
    idx = advanced_index(ctx, index, tvars, ranges)
    return [f"{at_fn}({tname}, ({idx}{',' if len(index) == 1 else ''}), {code})"]
