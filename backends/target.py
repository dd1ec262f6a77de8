"""The target IR: what the lowering decided, as small nodes a backend prints.

The lowering (``lower.py``) turns each checked statement into a list of
statement nodes over value nodes. It makes every decision (which contraction,
which view, which scatter form, which buffers); a backend only prints nodes,
from its table (``Backend.code``: operation name -> how to print it), in the
style of tinygrad's ``code_for_op``. Nothing reads generated text back.

Values
    Name(name)               a local: a tensor, a buffer, a loop variable, a size
    Lit(value)               a number (also inf and nan)
    Op(op, args)             ``+ - * / **``, ``neg``, comparisons; on arrays or sizes
    Index(base, parts)       basic indexing: ints or values, ``Slice``, ``NEW`` (a new
                             axis), ``ALL`` (``...``)
    Attr(base, attr)         ``.shape``, ``.strides``, ``.itemsize``
    Tup(items)               a tuple (shapes, strides)
    Apply(op, args, kw)      an operation of the backend's table: ``matmul``,
                             ``tensordot``, ``einsum``, ``sum``, ``zeros``, a
                             language function ``fn:exp`` ... (see ``OPS``)
Statements
    Comment(text)            ``# text``
    Assign(target, value)    ``target = value`` (target a Name, or an Index to write into)
    Update(target, op, value)  in place: ``target += value`` (``-=``)
    Do(value)                an operation run for its effect (``add_at``, ``add_affine``)
    For(var, count, body)    a loop over taps or steps: ``for var in range(count)``
    If(cond, then, orelse)   on sizes or buffers, never on data
    Def(name, params, body, result)  a local function: the body of a row-block
                             group, run by ``row_blocks`` on blocks of rows, or one
                             candidate of a measured choice (``tuned``), which
                             returns ``result``
``str(node)`` prints a node in a neutral, readable form (for tests and
``tcc explain``); ``Printer`` prints it as a backend's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Union


# ------------------------------------------------------------------ values

@dataclass(frozen=True)
class Name:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Lit:
    value: Union[int, float, bool, None]

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Op:
    op: str                         # + - * / ** neg < > <= >= == != and, is, is not
    args: tuple

    def __str__(self) -> str:
        if self.op == "neg":
            return f"(-{self.args[0]})"
        return "(" + f" {self.op} ".join(map(str, self.args)) + ")"


@dataclass(frozen=True)
class Slice:
    start: object = None
    stop: object = None
    step: object = None

    def __str__(self) -> str:
        parts = ["" if p is None else str(p) for p in (self.start, self.stop)]
        if self.step is not None:
            parts.append(str(self.step))
        return ":".join(parts)


class _Marker:
    def __init__(self, text):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


NEW = _Marker("None")       # a new axis of length 1 (broadcasting)
ALL = _Marker("...")        # every remaining axis


@dataclass(frozen=True)
class Index:
    base: object
    parts: tuple

    def __str__(self) -> str:
        return f"{self.base}[{', '.join(map(str, self.parts))}]"


@dataclass(frozen=True)
class Attr:
    base: object
    attr: str

    def __str__(self) -> str:
        return f"{self.base}.{self.attr}"


@dataclass(frozen=True)
class Tup:
    items: tuple

    def __str__(self) -> str:
        return "(" + ", ".join(map(str, self.items)) + ("," if len(self.items) == 1 else "") + ")"


@dataclass(frozen=True)
class Apply:
    op: str
    args: tuple = ()
    kw: tuple = ()                  # ((name, value), ...)

    def __str__(self) -> str:
        kws = [f"{k}={v}" for k, v in self.kw]
        return f"{self.op}({', '.join([*map(str, self.args), *kws])})"

    def get(self, key, default=None):
        return dict(self.kw).get(key, default)


Value = Union[Name, Lit, Op, Index, Attr, Tup, Apply]

# The operations of ``Apply``, what each computes (every backend prints each
# one it supports; ``Printer`` raises naming the operation for the rest):
OPS = {
    "fn:<name>": "a language function (tcc.functions), elementwise",
    "as_float": "a comparison's 0/1 (or an integer array) in the computation dtype",
    "scalar": "a size or number as a 0-d value of the computation dtype",
    "transpose": "axes permuted (perm); perm None: a matrix transposed",
    "sum": "summed over axis (an int or a tuple)",
    "max": "maximum over axis, initial -inf",
    "min": "minimum over axis, initial +inf",
    "broadcast_to": "a read-only view broadcast to shape",
    "matmul": "a matrix product (out: a buffer to write it into)",
    "tensordot": "a contraction over axes (two tuples)",
    "einsum": "einsum(spec, *args) along path (a list of pairs; None: one loop, no BLAS)",
    "contiguous": "a C-contiguous copy if it is not one already",
    "reshape": "reshaped (a view where it can be)",
    "as_strided": "a strided view: shape, strides in bytes",
    "strided_view": "a read-only strided window (offsets, shape, coefs): the im2col view",
    "arange_axis": "arange(n) shaped to broadcast along axis of ndim (advanced indexing)",
    "take": "advanced indexing: base[index arrays...] (a copy)",
    "zeros": "a new array of zeros (shape)",
    "empty": "a new array, uninitialized (shape)",
    "full": "a new array filled with value (shape, value)",
    "array": "a copy in the computation dtype",
    "asarray": "as an array of the computation dtype, a copy only if needed",
    "copy": "a copy",
    "owned": "whether an array owns its memory, in dt and shape (so it may be kept)",
    "imax": "the larger of two sizes",
    "add_at": "unbuffered base[index] += value (positions may repeat)",
    "max_at": "unbuffered base[index] = max(base[index], value)",
    "min_at": "unbuffered base[index] = min(base[index], value)",
    "arange": "the positions 0 .. n - 1 (an index comparison's side)",
    "diagonal": "a read-only view of the diagonal of axes axis1, axis2 (moved last)",
    "where": "a select: value where the condition holds, else exactly 0 (even for inf, nan)",
    "both": "elementwise logical and of two boolean arrays",
    "masked_product": "product (a contraction einsum(spec, s, o) of s, selected where keep "
                      "holds, and o), exact where o is inf or nan at a pair keep removes",
    "cumsum": "the running sum of x along axis (a causal sum)",
    "flip": "x reversed along axis (a view)",
    "tril": "x with its last two axes' entries above diagonal k (col - row > k) exactly 0",
    "triu": "x with its last two axes' entries below diagonal k (col - row < k) exactly 0",
    "pad": "a copy with zeros added before and after each axis (widths: (before, after) pairs)",
    "add_affine": "dst[offsets + sum coefs*i] += value, positions may repeat",
    # library kernels (backends/kernels.py; only backends whose table has them)
    "softmax": "softmax of x over axis dim (the maximum subtracted)",
    "log_softmax": "log-softmax of x over axis dim",
    "logsumexp": "log of the sum of exp(x) over axis dim (the maximum subtracted)",
    "softmax_backward": "y * (g - sum(g * y, dim)): the softmax backward, y the softmax",
    "var_mean": "(variance, mean) of x over axis dim, the variance over N (not N - 1)",
    "layer_norm": "(y, mean, 1 / sqrt(var + eps)) of layer norm over x's last axis, with "
                  "weight and bias (or None); the statistics over the leading axes",
    "layer_norm_backward": "(x.grad, weight.grad, bias.grad) of layer norm from dy, x, its "
                           "mean (None: x is centred) and rstd (None where mask is False)",
    "conv": "x (batch, channels, positions...) convolved with w (out, in, taps...), "
            "valid, at stride (n: the number of position axes)",
    "conv_weight": "the gradient of conv with respect to w (of shape), given the output's g",
    "conv_input": "the gradient of conv with respect to x (of shape), given the output's g",
    "conv_backward": "(x.grad, w.grad) of conv in one call, given x, w and the output's g",
    "fit": "x in the leading corner of zeros of shape (x itself when it has that shape)",
    "conv_extent": "n, the axis' size, if n - reach < stride (a strided convolution over "
                   "all n has the outputs one over reach has), else reach",
    "stride": "a tensor's strides in elements (torch)",
    "ufunc": "an elementwise operation (add, subtract, multiply, divide, negative, or a "
             "function fn:name whose row has an out form) of args written into out",
    "row_blocks": "run a row-block function (a Def) on blocks of rows of its arrays, "
                  "on a thread pool when they are large",
    "tuned": "call the fastest of several candidate functions (Defs) computing the same "
             "value, timed at the first call with a new size signature (TCC_TUNE)",
}


# -------------------------------------------------------------- statements

@dataclass(frozen=True)
class Comment:
    text: str

    def __str__(self) -> str:
        return f"# {self.text}"


@dataclass(frozen=True)
class Assign:
    target: object
    value: object

    def __str__(self) -> str:
        return f"{self.target} = {self.value}"


@dataclass(frozen=True)
class Update:
    target: object
    op: str                         # "+=" or "-="
    value: object

    def __str__(self) -> str:
        return f"{self.target} {self.op} {self.value}"


@dataclass(frozen=True)
class Do:
    value: Apply

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class For:
    var: str
    count: object
    body: tuple

    def __str__(self) -> str:
        inner = "\n".join("    " + line for s in self.body for line in str(s).splitlines())
        return f"for {self.var} in range({self.count}):\n{inner}"


@dataclass(frozen=True)
class If:
    cond: object
    then: tuple
    orelse: tuple = ()

    def __str__(self) -> str:
        out = f"if {self.cond}:\n" + "\n".join("    " + line for s in self.then
                                                 for line in str(s).splitlines())
        if self.orelse:
            out += "\nelse:\n" + "\n".join("    " + line for s in self.orelse
                                            for line in str(s).splitlines())
        return out


@dataclass(frozen=True)
class Def:
    name: str
    params: tuple[str, ...]
    body: tuple
    result: object = None       # a value returned at the end, or None

    def __str__(self) -> str:
        inner = "\n".join("    " + line for s in self.body for line in str(s).splitlines())
        if self.result is not None:
            inner += f"\n    return {self.result}"
        return f"def {self.name}({', '.join(self.params)}):\n{inner}"


Stmt = Union[Comment, Assign, Update, Do, For, If, Def]


# ---------------------------------------------------------------- printing

ATOM, POWER, UNARY, PRODUCT, SUM, COMPARE, LOGIC = 9, 5, 4, 3, 2, 1, 0
_BIN_PREC = {"**": POWER, "*": PRODUCT, "/": PRODUCT, "//": PRODUCT, "@": PRODUCT,
             "+": SUM, "-": SUM, "<": COMPARE, ">": COMPARE, "<=": COMPARE, ">=": COMPARE,
             "==": COMPARE, "!=": COMPARE, "is": COMPARE, "is not": COMPARE, "and": LOGIC}


def num_code(v, module: str = "np") -> str:
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        if math.isinf(v):
            return f"{module}.inf" if v > 0 else f"-{module}.inf"
        if math.isnan(v):
            return f"{module}.nan"
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v)) + ".0"
    return repr(v)


@dataclass
class Printer:
    """Prints nodes as Python source, with a backend's table for ``Apply``."""
    code: dict[str, tuple[Callable, int]]
    module: str = "np"
    backend: str = "numpy"
    used: set = field(default_factory=set)      # the table entries printed

    # -- values: (source, precedence)
    def value(self, n) -> tuple[str, int]:
        if isinstance(n, Name):
            return n.name, ATOM
        if isinstance(n, Lit):
            text = num_code(n.value, self.module)
            if self.module + "." in text:
                self.used.add("literal")
            return text, (UNARY if text.startswith("-") else ATOM)
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            return self.value(Lit(n))
        if isinstance(n, Op):
            if n.op == "neg":
                return "-" + self.wrap(n.args[0], UNARY + 1), UNARY
            p = _BIN_PREC[n.op]
            a, b = n.args
            if n.op == "**":       # right-associative
                return f"{self.wrap(a, p + 1)} ** {self.wrap(b, p)}", p
            return f"{self.wrap(a, p)} {n.op} {self.wrap(b, p + 1)}", p
        if isinstance(n, Index):
            parts = [self.index_part(x) for x in n.parts]
            return f"{self.atom(n.base)}[{', '.join(parts)}]", ATOM
        if isinstance(n, Attr):
            return f"{self.atom(n.base)}.{n.attr}", ATOM
        if isinstance(n, Tup):
            items = [self.expr(x) for x in n.items]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")", ATOM
        if isinstance(n, Apply):
            key = n.op
            entry = self.code.get(key)
            if entry is None and key.startswith("fn:"):
                return self.function(n)
            if entry is None:
                raise NotImplementedError(f"the {self.backend} backend has no code for "
                                          f"'{key}'")
            self.used.add(key)
            fn, prec = entry
            return fn(self, *n.args, **dict(n.kw)), prec
        if isinstance(n, tuple):
            return self.value(Tup(n))
        if isinstance(n, str):
            return n, ATOM
        raise TypeError(f"not a target IR value: {n!r}")

    def function(self, n: Apply) -> tuple[str, int]:
        from tcc import functions
        row = functions.lookup(n.op[3:])
        self.used.update(row.helpers)
        self.used.add(n.op)
        return row.code.format(*(self.expr(a) for a in n.args)), ATOM

    def expr(self, n) -> str:
        return self.value(n)[0]

    def wrap(self, n, min_prec: int) -> str:
        text, p = self.value(n)
        return text if p >= min_prec else f"({text})"

    def atom(self, n) -> str:
        return self.wrap(n, ATOM)

    def index_part(self, x) -> str:
        if x is NEW or x is ALL:
            return str(x)
        if isinstance(x, Slice):
            parts = ["" if p is None else self.expr(p) for p in (x.start, x.stop)]
            if x.step is not None:
                parts.append(self.expr(x.step))
            return ":".join(parts)
        return self.expr(x)

    # -- statements: lines of source
    def stmt(self, s, indent: str = "") -> list[str]:
        if isinstance(s, Comment):
            return [f"{indent}# {s.text}"]
        if isinstance(s, Assign):
            return [f"{indent}{self.expr(s.target)} = {self.expr(s.value)}"]
        if isinstance(s, Update):
            return [f"{indent}{self.expr(s.target)} {s.op} {self.expr(s.value)}"]
        if isinstance(s, Do):
            return [f"{indent}{self.expr(s.value)}"]
        if isinstance(s, For):
            out = [f"{indent}for {s.var} in range({self.expr(s.count)}):"]
            for b in s.body:
                out += self.stmt(b, indent + "    ")
            return out
        if isinstance(s, Def):
            out = [f"{indent}def {s.name}({', '.join(s.params)}):"]
            for b in s.body:
                out += self.stmt(b, indent + "    ")
            if s.result is not None:
                out.append(f"{indent}    return {self.expr(s.result)}")
            return out
        if isinstance(s, If):
            out = [f"{indent}if {self.expr(s.cond)}:"]
            for b in s.then:
                out += self.stmt(b, indent + "    ")
            if s.orelse:
                out.append(f"{indent}else:")
                for b in s.orelse:
                    out += self.stmt(b, indent + "    ")
            return out
        raise TypeError(f"not a target IR statement: {s!r}")

    def lines(self, stmts) -> list[str]:
        out: list[str] = []
        for s in stmts:
            out += self.stmt(s)
        return out


def walk(n):
    """Every node under a value or statement, parents first."""
    yield n
    if isinstance(n, (Op, Tup)):
        kids = n.args if isinstance(n, Op) else n.items
    elif isinstance(n, Index):
        kids = (n.base, *(p for p in n.parts if not isinstance(p, _Marker)))
    elif isinstance(n, Slice):
        kids = (n.start, n.stop, n.step)
    elif isinstance(n, Attr):
        kids = (n.base,)
    elif isinstance(n, Apply):
        kids = (*n.args, *(v for _, v in n.kw))
    elif isinstance(n, (Assign, Update)):
        kids = (n.target, n.value)
    elif isinstance(n, Do):
        kids = (n.value,)
    elif isinstance(n, For):
        kids = (n.count, *n.body)
    elif isinstance(n, If):
        kids = (n.cond, *n.then, *n.orelse)
    elif isinstance(n, Def):
        kids = (*n.body, n.result)
    else:
        kids = ()
    for k in kids:
        if k is not None:
            yield from walk(k)
