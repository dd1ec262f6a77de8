"""The lowering's values: each read, factor and contraction of a statement as
a target IR value over its loop indices (``Operand``).

Right-hand sides are sums of products. A factor that is not a plain read is
computed once, elementwise, over only its own indices; factors whose indices
are a subset of another's are multiplied into it. What remains is one
contraction per product (``contractions.py``; ``products.py`` groups a
product's factors into its operands). Reads with affine indices are
strided views (basic slices, or one ``strided_view``: the im2col of a
convolution); gathers are advanced indexing.
"""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass, field

from tcc import algebra, functions
from tcc.check import Info
from tcc.ir import (Affine, Bin, Call, DimVal, Expr, Gather, IndexCmp, Neg, Num, Ref, base_name,
                    index_cmps, py_name, reads)

from .target import ALL, NEW, Apply, Index, Lit, Name, Op, Slice, Tup, walk


def ap(op: str, *args, **kw) -> Apply:
    """An ``Apply`` node: ``ap("sum", x, axis=0)``."""
    return Apply(op, tuple(args), tuple(kw.items()))


# Names the generated functions use besides the program's own.
RESERVED_LOCALS = {"np", "oe", "torch", "dt", "sizes", "tensors", "grads", "itertools", "out",
                   "saved", "seeds", "arrays", "take", "seed", "seed_names", "need_saved",
                   "bind_sizes", "computation_dtype", "fd_check", "forward", "backward",
                   "random_inputs", "math", "sys"}


class Names:
    """One generated module's Python names for tensors, dims and buffers:
    unique, never a reserved or private name. The program's own names claim
    themselves first."""

    def __init__(self, names=()):
        self.table: dict[str, str] = {}
        plain = [n for n in names if py_name(n) not in RESERVED_LOCALS and
                 not keyword.iskeyword(py_name(n)) and not py_name(n).startswith("_")]
        for n in plain:
            self.table[n] = py_name(n)
        for n in names:
            self(n)

    def __call__(self, name: str) -> str:
        """The Python local for a tensor or dim name (``X.grad`` is ``X_grad``)."""
        if name in self.table:
            return self.table[name]
        p = py_name(name)
        taken = set(self.table.values())
        if p in RESERVED_LOCALS or keyword.iskeyword(p) or p.startswith("_") or p in taken:
            p = p + "_"
            while p in taken or p in RESERVED_LOCALS or py_name(p) in self.table:
                p = p + "_"
        self.table[name] = p
        return p


@dataclass
class Context:
    """What one generated function knows: names, sizes, tensors defined so far."""
    info: Info
    names: Names
    defined: set[str] = field(default_factory=set)   # tensors assigned so far
    value_casts: dict[str, str] = field(default_factory=dict)   # int data read as numbers
    used: set = field(default_factory=set)          # size names the code reads
    loop_names: set = field(default_factory=set)    # Python loop variables (tap loops)
    flat_layouts: dict = field(default_factory=dict)  # padded flat copies already made
    extra_shapes: dict = field(default_factory=dict)  # shapes of the lowering's own views
    kernels: dict = field(default_factory=dict)     # statement -> library kernel (kernels.py)
    size_values: dict = field(default_factory=dict)   # size symbols of those views -> values
    padded: dict = field(default_factory=dict)        # zero-padded copy -> its padded axes
    copies: dict = field(default_factory=dict)        # (what, tensor, ...) -> a local made once
    row_blocks: bool = False                        # group row-local statements (rowblocks.py)
    in_place: bool = False                          # out= and in place, no groups (inplace.py)
    returned: set = field(default_factory=set)      # tensors the function returns
    row_groups: int = 0                             # row-block functions made so far
    tuned_sites: list = field(default_factory=list)  # (site, statement, labels) of each
    groups: list = field(default_factory=list)      # (function, statements, its Def)
    masked: int = 0                                 # computed operands of masked products

    @property
    def tune(self) -> bool:
        """Whether statements with several lowerings get measured choices
        (tune.py): in the NumPy backends, the ones with row-block groups."""
        return self.row_blocks

    def shape_of(self, tensor: str):
        if tensor in self.extra_shapes:
            return self.extra_shapes[tensor]
        shapes = self.info.shapes
        return shapes[tensor] if tensor in shapes else shapes[base_name(tensor)]

    def size(self, sym):
        """A size as a value: a literal, or the local that holds it."""
        if isinstance(sym, int):
            return Lit(sym)
        if sym in self.size_values:
            return self.size_values[sym]
        if sym not in self.loop_names:
            self.used.add(sym)
        return Name(self.names(sym))

    def var_size(self, ranges, v):
        return self.size(ranges[v])

    def local(self, name: str) -> Name:
        return Name(self.names(name))

    def whole_axis(self, tensor: str, axis: int) -> bool:
        """Whether a plain index spans the whole axis (not so on a padded copy's
        padded axes, where it reads a window)."""
        return axis not in self.padded.get(tensor, ())


@dataclass
class Operand:
    """A value over loop indices ``vars`` (its axes, in order)."""
    node: object
    vars: tuple[str, ...]
    fresh: bool = False       # a new array, not a view of a named tensor
    guards: tuple = ()        # index comparisons that select it (exactly 0 where one fails)

    def aligned(self, res) -> "Operand":
        if self.vars == tuple(res):
            return self
        return Operand(align(self.node, self.vars, tuple(res)), tuple(res), self.fresh)


# ----------------------------------------------------------------- helpers

def add(a, b):
    return b if a is None else Op("+", (a, b))


def mul(a, b):
    return Op("*", (a, b))


def shape_tuple(ctx: Context, shape) -> Tup:
    return Tup(tuple(ctx.size(d) for d in shape))


def has_index(node) -> bool:
    """Whether a value indexes an array (a slice, a window, a gather)."""
    return any(isinstance(n, Index) or (isinstance(n, Apply) and n.op == "strided_view")
               for n in walk(node))


def align(node, src: tuple[str, ...], dst: tuple[str, ...]):
    """Rearrange an array over ``src`` to broadcast over ``dst`` (a superset)."""
    present = [v for v in dst if v in src]
    if list(src) != present:
        perm = tuple(src.index(v) for v in present)
        node = ap("transpose", node, perm=None if len(src) == 2 else perm)
    if not present:
        return node
    first = dst.index(present[0])
    parts = [Slice() if v in src else NEW for v in dst[first:]]
    while parts and parts[-1] == Slice():
        parts.pop()
    if not parts:
        return node
    return Index(node, tuple(parts))


def const_value(ctx: Context, a: Affine):
    """The constant part of an index (its literal and dims) as a size value."""
    out = Lit(a.const) if a.const or not a.dims else None
    for d, c in a.dims:
        term = ctx.size(d) if c == 1 else mul(Lit(c), ctx.size(d))
        out = term if out is None else Op("+", (out, term))
    return out


def simple_axes(index) -> bool:
    """Each axis a constant, or one index with a positive coefficient used nowhere else."""
    seen = []
    for ix in index:
        if not isinstance(ix, Affine) or len(ix.terms) > 1:
            return False
        if ix.terms:
            v, c = ix.terms[0]
            if c <= 0 or v in seen:
                return False
            seen.append(v)
    return True


def slice_part(ctx: Context, ix: Affine, ranges, axis_size):
    """A basic slice for an axis: a constant, or ``start : stop : step``."""
    if not ix.terms:
        return const_value(ctx, ix)
    v, c = ix.terms[0]
    n = ctx.var_size(ranges, v)
    start = const_value(ctx, ix) if (ix.const or ix.dims) else None
    if c == 1 and start is None and ranges[v] == axis_size:
        return Slice()
    if c == 1:
        return Slice(start, add(start, n))
    return Slice(start, add(start, Op("+", (mul(Lit(c), Op("-", (n, Lit(1)))), Lit(1)))),
                 Lit(c))


def index_vars(index) -> tuple[str, ...]:
    out = []
    for ix in index:
        for v in ix.vars:
            if v not in out:
                out.append(v)
    return tuple(out)


def read_operand(ctx: Context, ref: Ref, ranges, as_value: bool = True) -> Operand:
    """An array over the read's indices (in order of appearance)."""
    name = ctx.local(ref.tensor)
    if as_value and ref.tensor in ctx.value_casts:
        name = Name(ctx.value_casts[ref.tensor])
    if not ref.index:
        return Operand(name, ())
    vars_ = index_vars(ref.index)
    plains = [ix.plain if isinstance(ix, Affine) and ctx.whole_axis(ref.tensor, k) else None
              for k, ix in enumerate(ref.index)]
    if all(plains) and len(set(plains)) == len(plains):
        return Operand(name, tuple(plains))
    if all(plains) and len(set(plains)) == len(plains) - 1:
        # one index on two axes, A[i, i]: the diagonal, a view (the other axes
        # first, the diagonal last)
        v = next(p for p in plains if plains.count(p) == 2)
        a1, a2 = (k for k, p in enumerate(plains) if p == v)
        kw = {} if (a1, a2) == (0, 1) else {"axis1": a1, "axis2": a2}
        rest = tuple(p for p in plains if p != v)
        return Operand(ap("diagonal", name, **kw), rest + (v,))
    if any(isinstance(ix, Gather) for ix in ref.index):
        return Operand(Index(name, advanced_index(ctx, ref.index, vars_, ranges)), vars_, True)
    if simple_axes(ref.index):
        shape = ctx.shape_of(ref.tensor)
        parts = [slice_part(ctx, ix, ranges, shape[k]) for k, ix in enumerate(ref.index)]
        while parts and parts[-1] == Slice():
            parts.pop()
        order = tuple(ix.terms[0][0] for ix in ref.index if ix.terms)
        return Operand(Index(name, tuple(parts)) if parts else name, order)
    offsets = Tup(tuple(const_value(ctx, ix) for ix in ref.index))
    coefs = Tup(tuple(tuple(dict(ix.terms).get(v, 0) for ix in ref.index) for v in vars_))
    sizes = Tup(tuple(ctx.var_size(ranges, v) for v in vars_))
    return Operand(ap("strided_view", name, offsets, sizes, coefs), vars_)


def advanced_index(ctx: Context, index, vars_: tuple[str, ...], ranges) -> tuple:
    """All-advanced index parts whose broadcast shape is ``vars_``."""
    n = len(vars_)
    parts = []
    for ix in index:
        if isinstance(ix, Gather):
            inner = read_operand(ctx, Ref(ix.tensor, ix.index), ranges, as_value=False)
            parts.append(align(inner.node, inner.vars, vars_) if inner.vars else inner.node)
        elif not ix.terms:
            parts.append(const_value(ctx, ix))
        else:
            node = None
            for v, c in ix.terms:
                ar = ap("arange_axis", ctx.var_size(ranges, v), vars_.index(v), n)
                node = add(node, ar if c == 1 else mul(Lit(c), ar))
            if ix.const or ix.dims:
                node = add(node, const_value(ctx, ix))
            parts.append(node)
    return tuple(parts)


# ------------------------------------------------------------- expressions

def elementwise(ctx: Context, e: Expr, order: tuple[str, ...], ranges):
    """e computed over ``order`` by broadcasting, as a value."""
    v = algebra.fold(e)
    if v is not None:
        if isinstance(v, complex):
            raise ValueError(v)
        return Lit(v)
    if isinstance(e, DimVal):
        # a size read as a number, in the computation's dtype: 1/B for B = 0 is
        # inf (a mean over nothing is nan), as NumPy and the interpreter have it
        return ap("scalar", ctx.size(e.name))
    if isinstance(e, Ref):
        op = read_operand(ctx, e, ranges)
        return align(op.node, op.vars, order) if op.vars else op.node
    if isinstance(e, IndexCmp):
        return ap("as_float", compare(ctx, e, order, ranges))
    if isinstance(e, Neg):
        return Op("neg", (elementwise(ctx, e.arg, order, ranges),))
    if isinstance(e, Bin) and e.op in ("*", "/") and guards_of(e):
        # a product with index comparisons for factors: a select, exactly 0
        # where one is false (whatever inf or nan the other factors hold)
        from .triangular import guarded
        rest = strip_guards(e)
        return guarded(ctx, guards_of(e), order, ranges, elementwise(ctx, rest, order, ranges),
                       expr_vars(rest))
    if isinstance(e, Bin):
        a = elementwise(ctx, e.lhs, order, ranges)
        b = elementwise(ctx, e.rhs, order, ranges)
        if e.op in ("<", ">", "<=", ">=", "==", "!="):
            return ap("as_float", Op(e.op, (a, b)))
        return Op(e.op, (a, b))
    if isinstance(e, Call):
        functions.lookup(e.fn, e.pos)
        return Apply("fn:" + e.fn, tuple(elementwise(ctx, a, order, ranges) for a in e.args))
    raise AssertionError(e)


def expr_vars(e: Expr) -> set[str]:
    out = set()
    for r in reads(e):
        out.update(index_vars(r.index))
    for c in index_cmps(e):
        out.update(c.vars)
    return out


# ------------------------------------------------------- index comparisons

def index_value(ctx: Context, ix, order: tuple[str, ...], ranges):
    """The positions an index form names, over ``order`` (broadcasting): a loop
    index is an ``arange`` view along its axis, a gather reads its data."""
    if isinstance(ix, Gather):
        inner = read_operand(ctx, Ref(ix.tensor, ix.index), ranges, as_value=False)
        return align(inner.node, inner.vars, order) if inner.vars else inner.node
    node = None
    parts = [(align(ap("arange", ctx.var_size(ranges, v)), (v,), order), c) for v, c in ix.terms]
    for val, c in parts + [(ctx.size(d), c) for d, c in ix.dims]:
        term = val if abs(c) == 1 else mul(Lit(abs(c)), val)
        node = (term if c > 0 else Op("neg", (term,))) if node is None else \
            Op("+" if c > 0 else "-", (node, term))
    if node is None:
        return Lit(ix.const)
    if ix.const:
        node = Op("+" if ix.const > 0 else "-", (node, Lit(abs(ix.const))))
    return node


def compare(ctx: Context, c: IndexCmp, order, ranges):
    """An index comparison as a boolean array over (its indices in) ``order``."""
    return Op(c.op, (index_value(ctx, c.lhs, order, ranges),
                     index_value(ctx, c.rhs, order, ranges)))


def condition(ctx: Context, cmps, order, ranges):
    """Several comparisons that must all hold, as one boolean array."""
    out = None
    for c in cmps:
        test = compare(ctx, c, order, ranges)
        out = test if out is None else ap("both", out, test)
    return out


def select(cond, value):
    """value where cond holds, else exactly 0: the meaning of an index comparison
    that is a factor (a select, not a product, so inf * 0 is 0, not nan)."""
    if isinstance(value, Lit) and isinstance(value.value, (int, float)) and \
            math.isfinite(value.value):
        flag = ap("as_float", cond)
        return flag if value.value == 1 else mul(flag, value)
    if isinstance(value, Lit):
        value = ap("scalar", value)
    return ap("where", cond, value)


def guards_of(e: Expr) -> list[IndexCmp]:
    """The index comparisons that are factors of the product ``e`` (through ``*``,
    a numerator and unary minus): where one is false, e is exactly 0."""
    if isinstance(e, IndexCmp):
        return [e]
    if isinstance(e, Neg):
        return guards_of(e.arg)
    if isinstance(e, Bin) and e.op == "*":
        return guards_of(e.lhs) + guards_of(e.rhs)
    if isinstance(e, Bin) and e.op == "/":
        return guards_of(e.lhs)
    return []


def strip_guards(e: Expr) -> Expr:
    """The product ``e`` without the factors ``guards_of`` finds (1 if nothing is left)."""
    if isinstance(e, IndexCmp):
        return Num(1)
    if isinstance(e, Neg):
        return Neg(strip_guards(e.arg), e.pos)
    if isinstance(e, Bin) and e.op == "*":
        a, b = strip_guards(e.lhs), strip_guards(e.rhs)
        if a == Num(1):
            return b
        return a if b == Num(1) else Bin("*", a, b, e.pos)
    if isinstance(e, Bin) and e.op == "/":
        return Bin("/", strip_guards(e.lhs), e.rhs, e.pos)
    return e


def is_guard(up: bool, f: Expr) -> bool:
    """A factor of a product that selects (an index comparison multiplying)."""
    return up and isinstance(f, IndexCmp)


# ------------------------------------------------------- sums of products

def split_terms(e: Expr, sign: int = 1) -> list[tuple[int, Expr]]:
    """The top-level terms of a sum, with their signs."""
    if isinstance(e, Bin) and e.op in ("+", "-"):
        return split_terms(e.lhs, sign) + split_terms(e.rhs, sign if e.op == "+" else -sign)
    if isinstance(e, Neg):
        return split_terms(e.arg, -sign)
    return [(sign, e)]


def split_factors(e: Expr, up: bool = True) -> list[tuple[bool, Expr]]:
    """The factors of a product: (True, f) multiplies, (False, f) divides."""
    if isinstance(e, Neg) and guards_of(e.arg):     # -(i == j) * x: -1 and a select
        return [(up, Num(-1))] + split_factors(e.arg, up)
    if isinstance(e, Bin) and e.op == "*":
        return split_factors(e.lhs, up) + split_factors(e.rhs, up)
    if isinstance(e, Bin) and e.op == "/":
        return split_factors(e.lhs, up) + split_factors(e.rhs, not up)
    return [(up, e)]


def ordered(vs, loops) -> tuple[str, ...]:
    return tuple(v for v in loops if v in vs)


def factor_value(ctx, factors: list[tuple[bool, Expr]], order, ranges):
    """Multiply and divide factors elementwise over ``order``; index comparisons
    among them select."""
    guards = [f for up, f in factors if is_guard(up, f)]
    factors = [(up, f) for up, f in factors if not is_guard(up, f)]
    node = None
    for up, f in factors:
        if up:
            val = elementwise(ctx, f, order, ranges)
            node = val if node is None else mul(node, val)
    if node is None:
        node = Lit(1.0)
    for up, f in factors:
        if not up:
            node = Op("/", (node, elementwise(ctx, f, order, ranges)))
    if guards:
        from .triangular import guarded
        node = guarded(ctx, guards, order, ranges, node,
                       set().union(*(expr_vars(f) for _, f in factors)))
    return node


__all__ = ["ALL", "Context", "Names", "Operand", "ap", "align", "read_operand", "elementwise",
           "split_terms", "split_factors", "factor_value"]
