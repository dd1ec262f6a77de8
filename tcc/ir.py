"""The IR: a small, frozen, printable tree for .loop programs.

Every node is a frozen dataclass with tuple fields, changed only through
``dataclasses.replace``. Every node carries its source position in ``pos``,
which is left out of equality, so ``parse(str(p)) == p`` compares structure.
``str(node)`` prints the loop language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Pos:
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


def _pos():
    return field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------- indices

@dataclass(frozen=True)
class Affine:
    """``sum(coef * var) + const + sum(coef * dim)``; a plain index is ``1*v``."""
    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0
    dims: tuple[tuple[str, int], ...] = ()
    pos: Pos | None = _pos()

    @property
    def plain(self) -> str | None:
        """The loop index, when this is a plain use of one; else None."""
        if len(self.terms) == 1 and self.terms[0][1] == 1 and not self.const and not self.dims:
            return self.terms[0][0]
        return None

    @property
    def vars(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.terms)

    def __str__(self) -> str:
        parts: list[tuple[int, str]] = []
        for name, c in self.terms + self.dims:
            mag = abs(c)
            parts.append((c, name if mag == 1 else f"{mag}*{name}"))
        if self.const or not parts:
            parts.append((self.const, str(abs(self.const))))
        out = ""
        for i, (c, text) in enumerate(parts):
            if i == 0:
                out = ("-" if c < 0 else "") + text
            else:
                out += (" - " if c < 0 else " + ") + text
        return out


@dataclass(frozen=True)
class Gather:
    """A position read from an integer ``data`` tensor: the ``y[b]`` in ``p[b, y[b]]``."""
    tensor: str
    index: tuple[Affine, ...]
    pos: Pos | None = _pos()

    @property
    def vars(self) -> tuple[str, ...]:
        return tuple(v for a in self.index for v in a.vars)

    def __str__(self) -> str:
        return f"{self.tensor}[{', '.join(map(str, self.index))}]"


Index = Union[Affine, Gather]


def plain(var: str, pos: Pos | None = None) -> Affine:
    return Affine(((var, 1),), 0, (), pos)


# ------------------------------------------------------------ expressions

@dataclass(frozen=True)
class Num:
    value: Union[int, float]
    pos: Pos | None = _pos()

    def __str__(self) -> str:
        v = self.value
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
            return f"{v:.1f}"
        return repr(v)


@dataclass(frozen=True)
class Ref:
    """A tensor read ``X[i, j]``; a scalar read has ``index == ()``."""
    tensor: str
    index: tuple[Index, ...] = ()
    pos: Pos | None = _pos()

    def __str__(self) -> str:
        if not self.index:
            return self.tensor
        return f"{self.tensor}[{', '.join(map(str, self.index))}]"


@dataclass(frozen=True)
class DimVal:
    """A dim name used as a number, as in ``1/B``."""
    name: str
    pos: Pos | None = _pos()

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Neg:
    arg: "Expr"
    pos: Pos | None = _pos()

    def __str__(self) -> str:
        return "-" + _wrap(self.arg, _PREC_UNARY)


@dataclass(frozen=True)
class Bin:
    """``lhs op rhs`` for ``+ - * / **`` and the comparisons."""
    op: str
    lhs: "Expr"
    rhs: "Expr"
    pos: Pos | None = _pos()

    def __str__(self) -> str:
        p = PRECEDENCE[self.op]
        if self.op == "**":
            left = _wrap(self.lhs, p + 1)
            right = str(self.rhs) if isinstance(self.rhs, Neg) else _wrap(self.rhs, p)
            return f"{left} ** {right}"
        if self.op in COMPARISONS:
            return f"({_wrap(self.lhs, p + 1)} {self.op} {_wrap(self.rhs, p + 1)})"
        return f"{_wrap(self.lhs, p)} {self.op} {_wrap(self.rhs, p + 1)}"


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple["Expr", ...]
    pos: Pos | None = _pos()

    def __str__(self) -> str:
        return f"{self.fn}({', '.join(map(str, self.args))})"


@dataclass(frozen=True)
class IndexCmp:
    """An index comparison, ``(i == j)``, ``(k == y[b])``, ``(j <= t)``, ``(t < T - 1)``:
    an Iverson bracket, 1 at the loop points where the positions compare true
    and 0 elsewhere, with derivative 0.

    Each side is an index form: an ``Affine`` (loop indices with integer
    coefficients, a constant, dims) or a ``Gather`` (``y[b]``, integer ``data``
    whose values are not range-checked). It fixes no range. Where it is 0,
    the product (the chain of ``*`` and ``/``) it is a factor of is exactly 0,
    even where the rest is inf or nan: a select, not a multiplication.
    """
    op: str
    lhs: Index
    rhs: Index
    pos: Pos | None = _pos()

    @property
    def vars(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.lhs.vars + self.rhs.vars))

    @property
    def sides(self) -> tuple[Index, Index]:
        return (self.lhs, self.rhs)

    def __str__(self) -> str:
        return f"({self.lhs} {self.op} {self.rhs})"


Expr = Union[Num, Ref, DimVal, Neg, Bin, Call, IndexCmp]

COMPARISONS = ("<", ">", "<=", ">=", "==", "!=")
_PREC_UNARY = 4
PRECEDENCE = {**{op: 1 for op in COMPARISONS}, "+": 2, "-": 2, "*": 3, "/": 3, "**": 5}
FUNCTIONS = {"exp": 1, "log": 1, "sqrt": 1, "tanh": 1, "sigmoid": 1, "relu": 1,
             "abs": 1, "sin": 1, "cos": 1, "max": 2, "min": 2}


def _prec(e: Expr) -> int:
    if isinstance(e, Bin):
        return PRECEDENCE[e.op]
    if isinstance(e, Neg):
        return _PREC_UNARY
    if isinstance(e, Num) and (e.value < 0 or str(e).startswith("-")):
        return _PREC_UNARY
    return 9


def _wrap(e: Expr, min_prec: int) -> str:
    text = str(e)
    if _prec(e) < min_prec and not (isinstance(e, Bin) and e.op in COMPARISONS):
        return f"({text})"
    return text


# ------------------------------------------------------ statements, program

UPDATES = ("+=", "-=", "=", "max=", "min=")
REDUCTIONS = ("max=", "min=")   # start at -inf / +inf; one update; ties split the gradient


@dataclass(frozen=True)
class Stmt:
    """``for loops: target op expr``."""
    loops: tuple[str, ...]
    target: Ref
    op: str
    expr: Expr
    pos: Pos | None = _pos()
    # For a backward statement: (forward statement number, read number) it
    # came from, so passes can find the statements of one forward pattern.
    origin: tuple[int, int] | None = field(default=None, compare=False, repr=False)
    # Where each name of the ``for`` list stands, for errors about one index.
    loop_pos: tuple[Pos, ...] | None = field(default=None, compare=False, repr=False)
    # Written ranges, ``for b, n in N, i in 3``: (loop index, dim name or int
    # literal) for each index whose range the ``for`` list gives (0 to N - 1).
    # Inference never changes them. A statement with any written range pads
    # with zeros: its reads outside a tensor read 0 and its updates outside a
    # tensor are dropped (max= and min= too); gathers are never padded.
    written: tuple[tuple[str, Union[str, int]], ...] = ()

    @property
    def padded(self) -> bool:
        """Whether out-of-range accesses read 0 and drop updates (written ranges)."""
        return bool(self.written)

    def pos_of(self, var: str) -> Pos | None:
        if self.loop_pos and var in self.loops:
            return self.loop_pos[self.loops.index(var)]
        return self.pos

    def __str__(self) -> str:
        body = f"{self.target} {self.op} {self.expr}"
        given = dict(self.written)
        loops = [f"{v} in {given[v]}" if v in given else v for v in self.loops]
        return f"for {', '.join(loops)}: {body}" if self.loops else body


ROLES = ("input", "param", "data", "output")


@dataclass(frozen=True)
class Decl:
    """One declared name: a tensor with its role, a ``dim`` or the ``batch``.

    ``shape`` is None for a bare name (a scalar, or an output whose shape the
    loops give); entries are dim names or integer literals. For ``batch``,
    ``name`` is the dim name or ``"1"``.
    """
    role: str
    name: str
    shape: tuple[Union[str, int], ...] | None = None
    pos: Pos | None = _pos()
    shape_pos: tuple[Pos, ...] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.role in ("dim", "batch"):
            return f"{self.role} {self.name}"
        if self.shape is None:
            return f"{self.role} {self.name}"
        return f"{self.role} {self.name}[{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Program:
    decls: tuple[Decl, ...]
    stmts: tuple[Stmt, ...]

    def __str__(self) -> str:
        lines: list[str] = []
        for d in self.decls:  # consecutive dims share one line
            if d.role == "dim" and lines and lines[-1].startswith("dim "):
                lines[-1] += f", {d.name}"
            else:
                lines.append(str(d))
        lines += [str(s) for s in self.stmts]
        return "".join(f"{line}\n" for line in lines)


# ------------------------------------------------------------- traversal

def children(e: Expr) -> tuple[Expr, ...]:
    """The subexpressions of a node, in order: Neg's argument, Bin's two sides,
    Call's arguments; none for a leaf (Num, Ref, DimVal)."""
    if isinstance(e, Neg):
        return (e.arg,)
    if isinstance(e, Bin):
        return (e.lhs, e.rhs)
    if isinstance(e, Call):
        return e.args
    return ()


def rebuild(e: Expr, kids) -> Expr:
    """The node ``e`` with its subexpressions replaced by ``kids`` (as
    ``children`` orders them), its operator and position kept."""
    if isinstance(e, Neg):
        return Neg(kids[0], e.pos)
    if isinstance(e, Bin):
        return Bin(e.op, kids[0], kids[1], e.pos)
    if isinstance(e, Call):
        return Call(e.fn, tuple(kids), e.pos)
    return e


def walk(e: Expr):
    """Every node of an expression, parents before children."""
    yield e
    for c in children(e):
        yield from walk(c)


def map_refs(e: Expr, fn) -> Expr:
    """e rebuilt with every tensor read r replaced by fn(r) (an expression)."""
    if isinstance(e, Ref):
        return fn(e)
    return rebuild(e, [map_refs(c, fn) for c in children(e)])


def reads(e: Expr) -> list[Ref]:
    """The tensor reads of an expression, in source order."""
    return [n for n in walk(e) if isinstance(n, Ref)]


def index_vars(index: tuple[Index, ...]) -> list[str]:
    out: list[str] = []
    for ix in index:
        for v in ix.vars:
            if v not in out:
                out.append(v)
    return out


def stmt_vars(s: Stmt) -> list[str]:
    """The loop indices a statement uses, in order of appearance."""
    out = index_vars(s.target.index)
    for r in reads(s.expr):
        for v in index_vars(r.index):
            if v not in out:
                out.append(v)
    for c in index_cmps(s.expr):
        out += [v for v in c.vars if v not in out]
    return out


def index_cmps(e: Expr) -> list[IndexCmp]:
    """The index comparisons of an expression, in source order."""
    return [n for n in walk(e) if isinstance(n, IndexCmp)]


def dim_uses(s: Stmt) -> list[tuple[str, Pos | None]]:
    """(dim, position) for every dim a statement uses as a number (``1/B``) or
    as an index offset (``x[t + D]``)."""
    out = [(n.name, n.pos) for n in walk(s.expr) if isinstance(n, DimVal)]
    for ref in [s.target, *reads(s.expr), *index_cmps(s.expr)]:
        for ix in ref.sides if isinstance(ref, IndexCmp) else ref.index:
            for a in (ix,) if isinstance(ix, Affine) else ix.index:
                out += [(d, a.pos or ref.pos) for d, _ in a.dims]
    out += [(d, s.pos_of(v)) for v, d in s.written if isinstance(d, str)]
    return out


def gathers(index: tuple[Index, ...]) -> list[Gather]:
    return [ix for ix in index if isinstance(ix, Gather)]


def py_name(tensor: str) -> str:
    """How Python spells a tensor name: ``X.grad`` is ``X_grad``, ``X.dot`` is
    ``X_dot``, ``X.hess`` is ``X_hess``."""
    return tensor.replace(".grad", "_grad").replace(".dot", "_dot").replace(".hess", "_hess")


GRAD = ".grad"


def grad_name(tensor: str) -> str:
    """The gradient's name: ``X`` -> ``X.grad``."""
    return tensor + GRAD


def is_grad(tensor: str) -> bool:
    """Whether a name is a gradient's (``X.grad``)."""
    return tensor.endswith(GRAD)


def base_name(tensor: str) -> str:
    """The tensor a gradient belongs to (``X.grad`` -> ``X``); other names unchanged."""
    return tensor[:-len(GRAD)] if tensor.endswith(GRAD) else tensor


DOT = ".dot"
HESS = ".hess"


def tangent_name(tensor: str) -> str:
    """The tangent's name in forward mode: ``X`` -> ``X.dot``, ``X.grad`` -> ``X.grad.dot``."""
    return tensor + DOT


def hess_name(tensor: str) -> str:
    """The name of a tensor's Hessian diagonal: ``X`` -> ``X.hess``."""
    return tensor + HESS


def is_tangent(tensor: str) -> bool:
    return tensor.endswith(DOT)


def shape_owner(tensor: str) -> str:
    """The tensor whose shape a derived name has: ``X.grad.dot``, ``X.dot``,
    ``X.hess`` and ``X.grad`` all have the shape of ``X``."""
    for suffix in (DOT, HESS, GRAD):
        if tensor.endswith(suffix):
            tensor = tensor[:-len(suffix)]
    return tensor
