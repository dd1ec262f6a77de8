"""Hypothesis strategies: random *valid* .loop programs with matching arrays.

``programs()`` draws a whole program -- declarations, 1 to 8 statements, the
dim sizes and a seed for the arrays -- and returns a ``Generated``: its text,
the sizes of the dims the arrays bind, and ``arrays()`` (fresh arrays by IR
name, float64 values and valid integer positions for gather data).

Validity is kept by construction, never by filtering, so that every program
the strategy draws must be accepted by tcc; the sizes are drawn first and
every index is chosen to stay in bounds for them:

* tensors of rank 0 to 4 with random roles (input, param, data; integer data
  for gathers; a ``B`` dim, ``batch N`` or ``batch 1``), shape entries that
  are dims or integer literals;
* every index form: plain, affine (strides, offsets, dim offsets, reversed
  ``D - 1 - i``, two indices in one expression), constant, gather (reads and
  scatter targets), diagonal targets, "valid" windows whose range tcc infers
  (``x[2*n + i + 1]``, unfixed ``n``), a declared output whose shape fixes an
  index that no read uses (broadcasting);
* ``+=``, ``-=`` (also mixed on one tensor), ``=``, ``max=``, reductions,
  scalar targets, ``for`` written or omitted;
* every function and operator: ``exp log sqrt tanh sigmoid relu abs sin cos
  max min``, ``+ - * /``, ``**`` and ``^`` with constant and tensor
  exponents, unary minus, the six comparisons, numbers in every spelling,
  dims used as numbers.

Values are kept in the functions' domains (``log``, ``sqrt``, division and
negative or fractional powers only of things built positive, like
``exp(..)`` or ``a * a + 1``) and in a modest range: the generator tracks an
upper bound of every expression's magnitude and squashes (``tanh``) or
rescales what would grow too large, so finite differences stay meaningful
after a chain of eight statements.

With ``breadth=True`` (issue 12's forms; the backend properties draw with
it) it also draws index comparisons (``(i == j)``, ``(k == p3[b])``,
``(t < B - 1)``), stacked constant targets (``w[b, 0] += ...; w[b, 1] +=
...``), written ranges with zero padding (``for n in N, i in 3: ... x[n + i -
1]``), ``min=``, and declared outputs that later statements read.

The text is rendered with random but legal layout: optional ``dim`` lines,
several tensors on one declaration line, comments, blank lines, statements
continued inside brackets or with a backslash, redundant parentheses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

# Names. Dims are upper case, loop indices lower case single letters, tensors
# a letter and a number: no clash between the three namespaces, no reserved
# word, no Python keyword.
DIM_POOL = ("B", "I", "J", "K", "L", "M", "D")
VAR_POOL = ("i", "j", "k", "l", "m", "n", "q", "r", "s", "t", "u", "v", "w", "z")
ALIAS_POOL = ("N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8", "N9")

MAX_VARS = 5           # loop indices per statement (the interpreter is slow)
LIMIT = 20.0           # expression magnitudes are kept below this
TENSOR_LIMIT = 60.0    # ... and computed tensors below this

UNARY_BOUNDED = ("tanh", "sigmoid", "sin", "cos")
REDUCTIONS = ("max=", "min=")
COMPARISONS = ("<", ">", "<=", ">=", "==", "!=")


# ------------------------------------------------------------------- model

@dataclass
class Tensor:
    name: str
    role: str                       # input/param/data/computed
    shape: tuple                    # symbols: dim name, int literal, ("~", n) derived
    mag: float = 3.0
    readable: bool = True
    open: bool = False              # may still be updated with += / -=
    integer: bool = False           # integer data (gather positions)
    int_values: bool = False        # non-gather data passed as an integer array
    limit: int | None = None        # gather data: values < limit
    output_decl: str | None = None  # None, "bare", "shaped", "bound" (forced)
    ops: list = field(default_factory=list)


@dataclass
class E:
    """A rendered expression: text, an upper bound of |value|, whether it is an
    atom (no parentheses needed around it as an operand)."""
    text: str
    mag: float
    atom: bool = True


@dataclass
class Ctx:
    vars: dict                      # loop index -> symbol
    allow_new: bool                 # reads may introduce new (summed) indices
    private: set = field(default_factory=set)   # window indices: never reused
    fixed: set = field(default_factory=set)     # indices some plain use fixes
    depth: int = 3
    written: dict = field(default_factory=dict)  # index -> its written range


class Generated:
    """A drawn program: its text, the sizes of the dims its arrays bind, and
    what ``arrays()`` needs. (A plain class, not a dataclass, so that
    hypothesis prints a failing example with ``__repr__``: the program text
    line by line.)"""

    def __init__(self, text: str, sizes: dict, seed: int, shapes: dict, kinds: dict,
                 limits: dict, features: frozenset = frozenset()):
        self.text = text
        self.sizes = sizes          # {dim: size} for the dims the arrays bind
        self.seed = seed
        self.shapes = shapes        # {input tensor: concrete shape}
        self.kinds = kinds          # {input tensor: "float" | "int" | "gather"}
        self.limits = limits        # {gather data: exclusive upper bound}
        self.features = features

    def arrays(self, seed: int | None = None) -> dict:
        """Fresh arrays for the inputs, params and data, by IR name."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        out = {}
        for t, shape in self.shapes.items():
            kind = self.kinds[t]
            if kind == "gather":
                out[t] = rng.integers(0, max(self.limits.get(t, 1), 1), size=shape)
            elif kind == "int":
                out[t] = rng.integers(-1, 3, size=shape)
            else:
                out[t] = rng.standard_normal(shape)
        return out

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        body = "".join(f"    {line}\n" for line in self.text.splitlines())
        return (f"<program, sizes={self.sizes!r}, array seed={self.seed}:\n{body}"
                f"  as a string: {self.text!r}>")


# ---------------------------------------------------------------- generator

class _Gen:
    def __init__(self, draw, grad_names: bool, breadth: bool = False):
        self.draw = draw
        self.grad_names = grad_names
        self.breadth = breadth
        self.sizes: dict = {}           # symbol -> concrete size
        self.dims: list[str] = []       # dim names, in order of creation
        self.tensors: dict[str, Tensor] = {}
        self.stmts: list[str] = []
        self.counter = 0
        self.derived = 0
        self.features: set[str] = set()
        self.declare_outputs = False

    # -------------------------------------------------------------- helpers
    def d(self, strategy):
        return self.draw(strategy)

    def flip(self, p: float = 0.5) -> bool:
        """True with probability p; shrinks towards False (integers() shrink to 0)."""
        return self.d(st.integers(0, 999)) >= 1000 - p * 1000

    def choice(self, seq):
        seq = list(seq)
        return seq[self.d(st.integers(0, len(seq) - 1))]

    def weighted(self, pairs):
        """pairs: [(weight, value)]; shrinks towards the first."""
        pairs = [(w, v) for w, v in pairs if w > 0]
        total = sum(w for w, _ in pairs)
        x = self.d(st.integers(0, total - 1))
        for w, v in pairs:
            if x < w:
                return v
            x -= w
        raise AssertionError

    def fresh_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def size(self, sym) -> int:
        return sym if isinstance(sym, int) else self.sizes[sym]

    def feature(self, name: str):
        self.features.add(name)

    # ------------------------------------------------------------- symbols
    def new_dim(self) -> str:
        free = [d for d in DIM_POOL if d not in self.dims]
        if not free:
            return self.choice(self.dims)
        name = free[0] if self.flip(0.6) else self.choice(free)
        self.sizes[name] = self.d(st.integers(1, 3 if name == "B" else 4))
        self.dims.append(name)
        return name

    def axis_symbol(self):
        r = self.weighted([(6 if self.dims else 0, "old"), (3, "new"), (1, "lit")])
        if r == "old":
            return self.choice(self.dims)
        if r == "lit":
            self.feature("literal shape")
            return self.d(st.integers(1, 3))
        return self.new_dim()

    def bound_symbols(self):
        """Symbols the arrays bind: dims and literals of input shapes."""
        out = []
        for t in self.tensors.values():
            if t.role in ("input", "param", "data"):
                for s in t.shape:
                    if not isinstance(s, tuple) and s not in out:
                        out.append(s)
        return out

    # ------------------------------------------------------------- inputs
    def new_input(self, role=None, rank=None) -> Tensor:
        if role is None:
            role = self.weighted([(4, "input"), (3, "param"), (2, "data")])
        if rank is None:
            rank = self.weighted([(3, 1), (3, 2), (2, 0), (1, 3), (1, 4)])
        shape = tuple(self.axis_symbol() for _ in range(rank))
        prefix = {"input": "x", "param": "W", "data": "y"}[role]
        name = self.fresh_name(prefix)
        t = Tensor(name, role, shape)
        if role == "data":
            if self.grad_names and self.flip(0.15):
                t.name = name = f"g{self.counter}.grad"   # a name with .grad, no base tensor
                self.feature(".grad name")
            if self.flip(0.3):
                t.int_values = True
                t.mag = 2.0
                self.feature("integer data")
        self.tensors[name] = t
        self.feature(f"rank {rank}")
        self.feature(role)
        return t

    def gather_source(self, max_rank=2) -> Tensor:
        """An integer data tensor for positions (existing or new)."""
        existing = [t for t in self.tensors.values() if t.integer]
        if existing and self.flip(0.5):
            return self.choice(existing)
        rank = self.d(st.integers(1, max_rank))
        shape = tuple(self.axis_symbol() for _ in range(rank))
        name = self.fresh_name("p")
        t = Tensor(name, "data", shape, mag=4.0, integer=True)
        self.tensors[name] = t
        return t

    # --------------------------------------------------------------- reads
    def var_for(self, ctx: Ctx, sym, allow_new: bool | None = None):
        """An index of symbol ``sym``: an existing one or a new one; None if neither."""
        allow_new = ctx.allow_new if allow_new is None else allow_new
        same = [v for v, s in ctx.vars.items() if s == sym and v not in ctx.private]
        can_new = allow_new and len(ctx.vars) < MAX_VARS
        if same and (not can_new or self.flip(0.7)):
            return self.choice(same)
        if can_new:
            v = next(x for x in VAR_POOL if x not in ctx.vars)
            ctx.vars[v] = sym
            return v
        return None

    def plain(self, ctx: Ctx, sym):
        v = self.var_for(ctx, sym)
        if v is not None:
            ctx.fixed.add(v)
        return v

    def index_for_axis(self, ctx: Ctx, sym, target=False):
        """The text of one index into an axis of symbol ``sym`` (concrete size n)."""
        n = self.size(sym)
        kind = self.weighted([(10, "plain"), (2, "const"), (2, "affine"), (1, "reverse"),
                              (0 if target and not ctx.allow_new else 5 if target else 2,
                               "gather")])
        if kind == "gather":
            g = self.gather_source()
            parts = []
            for s in g.shape:
                v = self.plain(ctx, s)
                if v is None:
                    parts.append("0")
                else:
                    parts.append(v)
            g.limit = n if g.limit is None else min(g.limit, n)
            self.feature("gather target" if target else "gather read")
            return f"{g.name}[{', '.join(parts)}]"
        if kind == "affine":
            text = self.affine(ctx, n)
            if text is not None:
                return text
        if kind == "reverse" and not isinstance(sym, tuple):
            same = [v for v, s in ctx.vars.items() if s == sym and v not in ctx.private]
            if same:
                v = self.choice(same)
                self.feature("reversed index")
                if isinstance(sym, str):
                    return f"{sym} - 1 - {v}" if self.flip() else f"-{v} + {sym} - 1"
                return f"{sym - 1} - {v}"
        if kind in ("plain", "affine", "reverse"):
            v = self.plain(ctx, sym)
            if v is not None:
                return v
        c = self.d(st.integers(0, min(n - 1, 2)))
        self.feature("constant index")
        return str(c)

    def affine(self, ctx: Ctx, n: int):
        """``a*v + b*u + c (+ D)`` over indices already in the statement, in
        bounds for an axis of size n; None if none fits."""
        usable = [v for v in ctx.vars if v not in ctx.private]
        if not usable:
            return None
        k = self.d(st.integers(1, min(2, len(usable))))
        chosen = []
        for _ in range(k):
            v = self.choice(usable)
            if v not in chosen:
                chosen.append(v)
        terms = [(v, self.d(st.integers(1, 2))) for v in chosen]
        hi = sum(c * (self.size(ctx.vars[v]) - 1) for v, c in terms)
        if hi > n - 1:
            return None
        const = self.d(st.integers(0, n - 1 - hi))
        if len(terms) == 1 and terms[0][1] == 1 and not const:
            if hi + 1 > n - 1:
                return None         # would be a plain use of an index of another range
            const = 1
        dim = None
        if const and self.flip(0.3):
            fits = [d for d in self.bound_symbols() if isinstance(d, str) and
                    self.sizes[d] <= const]
            if fits:
                dim = self.choice(fits)
                const -= self.sizes[dim]
        parts = [f"{c}*{v}" if c != 1 else v for v, c in terms]
        if dim:
            parts.append(dim)
        if const:
            parts.append(str(const))
        self.feature("affine")
        if dim:
            self.feature("dim offset")
        if any(c > 1 for _, c in terms):
            self.feature("stride")
        return " + ".join(parts)

    def read(self, ctx: Ctx, t: Tensor) -> E:
        if not t.shape:
            return E(t.name, t.mag)
        idx = [self.index_for_axis(ctx, s) for s in t.shape]
        return E(f"{t.name}[{self.sep().join(idx)}]", t.mag)

    def sep(self) -> str:
        r = self.weighted([(12, ", "), (1, ","), (1, " , "), (1, ",\n        ")])
        if "\n" in r:
            self.feature("continuation line")
        return r

    def readable(self):
        return [t for t in self.tensors.values() if t.readable]

    def leaf(self, ctx: Ctx) -> E:
        kind = self.weighted([(8, "read"), (2, "num"), (1, "dimval")])
        if kind == "dimval":
            dims = [d for d in self.bound_symbols() if isinstance(d, str)]
            if dims:
                dname = self.choice(dims)
                self.feature("dim as a number")
                return E(dname, float(self.sizes[dname]))
        if kind == "num":
            return self.number()
        t = self.choice(self.readable())
        return self.take(self.read(ctx, t), t)

    def take(self, e: E, t: Tensor) -> E:
        if t.open:
            t.open = False      # read: no later update
        if t.role == "computed":
            self.feature("reads a computed tensor")
        return e

    def number(self, positive=False) -> E:
        text, value = self.choice([("2", 2), ("0.5", .5), ("3", 3), ("1.5", 1.5), ("1e-3", 1e-3),
                                   (".25", .25), ("2.", 2.0), ("1E+1", 10.0), ("0", 0),
                                   ("1", 1), ("7", 7), ("0.125e1", 1.25)])
        if positive and value == 0:
            text, value = "1", 1
        return E(text, float(value))

    # --------------------------------------------------------- expressions
    @staticmethod
    def wrap(e: E) -> str:
        return e.text if e.atom else f"({e.text})"

    def squash(self, e: E, limit=LIMIT) -> E:
        if e.mag <= limit:
            return e
        if self.flip(0.5):
            fn = self.choice(UNARY_BOUNDED)
            self.feature(fn)
            return E(f"{fn}({e.text})", 1.0)
        k = 10 ** math.ceil(math.log10(e.mag / limit))
        return E(f"{self.wrap(e)} / {k}", e.mag / k, atom=False)

    def expr(self, ctx: Ctx, depth: int) -> E:
        if depth <= 0:
            return self.leaf(ctx)
        kind = self.weighted([
            (5, "leaf"), (3, "add"), (3, "mul"), (1, "div"), (1, "neg"), (2, "pow"),
            (2, "fn"), (1, "relu_abs"), (1, "maxmin"), (2, "cmp"), (1, "exp"), (1, "log"),
            (1, "sqrt"), (1, "tpow"), (1, "paren"), (3 if self.breadth else 0, "icmp")])
        sub = lambda: self.expr(ctx, depth - 1)  # noqa: E731
        if kind == "icmp":
            bracket = self.index_comparison(ctx)
            if bracket is None:
                return self.leaf(ctx)
            if self.flip(0.6):     # as a factor: a select of the other factor
                a = sub()
                return E(f"{self.wrap(a)} * {bracket.text}", a.mag, False)
            return bracket
        if kind == "leaf":
            return self.leaf(ctx)
        if kind == "paren":
            e = sub()
            return E(f"({e.text})", e.mag)
        if kind == "add":
            a, b = sub(), sub()
            op = self.choice("+-")
            return self.squash(E(f"{self.wrap(a)} {op} {self.wrap(b)}", a.mag + b.mag, False))
        if kind == "mul":
            a, b = sub(), sub()
            if a.mag * b.mag > LIMIT:
                b = self.squash(b, 1.0)
            return self.squash(E(f"{self.wrap(a)} * {self.wrap(b)}", a.mag * b.mag, False))
        if kind == "div":
            a = sub()
            p, lo = self.positive(ctx, depth - 1)
            self.feature("/")
            return self.squash(E(f"{self.wrap(a)} / {self.wrap(p)}", a.mag / lo, False))
        if kind == "neg":
            a = sub()
            self.feature("unary minus")
            return E(f"-{self.wrap(a)}", a.mag, False)
        if kind == "pow":
            return self.power(ctx, depth)
        if kind == "fn":
            fn = self.choice(UNARY_BOUNDED)
            self.feature(fn)
            return E(f"{fn}({sub().text})", 1.0)
        if kind == "relu_abs":
            fn = self.choice(("relu", "abs"))
            self.feature(fn)
            a = sub()
            return E(f"{fn}({a.text})", a.mag)
        if kind == "maxmin":
            fn = self.choice(("max", "min"))
            self.feature(fn)
            a = sub()
            b = sub() if self.flip(0.7) else self.number()
            if self.flip(0.5):
                a, b = b, a
            return E(f"{fn}({a.text}, {b.text})", max(a.mag, b.mag))
        if kind == "cmp":
            op = self.choice(COMPARISONS)
            self.feature("comparison " + op)
            a = sub()
            b = sub() if self.flip(0.6) else self.number()
            return E(f"({self.wrap(a)} {op} {self.wrap(b)})", 1.0)
        if kind == "exp":
            self.feature("exp")
            a = sub()
            if a.mag > 3:
                a = self.bound_wrap(a)
            return E(f"exp({a.text})", math.exp(min(a.mag, 3.0)))
        if kind == "log":
            self.feature("log")
            p, lo = self.positive(ctx, depth - 1)
            return E(f"log({p.text})", max(abs(math.log(lo)), math.log(max(p.mag, 1.0))) + 0.1)
        if kind == "sqrt":
            self.feature("sqrt")
            p, lo = self.positive(ctx, depth - 1)
            return E(f"sqrt({p.text})", math.sqrt(p.mag))
        if kind == "tpow":
            # a positive base to a bounded tensor exponent
            self.feature("tensor exponent")
            p, lo = self.positive(ctx, depth - 1)
            x = self.bounded(ctx, depth - 1)
            op = "**" if self.flip(0.7) else "^"
            return E(f"{self.wrap(p)} {op} {self.wrap(x)}", max(p.mag, 1 / lo, 1.0) + 0.1, False)
        raise AssertionError(kind)

    def index_comparison(self, ctx: Ctx) -> E | None:
        """``(i == j)``, ``(j <= i + 1)``, ``(i < B - 1)``, ``(k == p3[i])``: over
        indices the statement already has (a comparison fixes no range)."""
        usable = [v for v in ctx.vars if v not in ctx.private]
        if not usable:
            return None
        v = self.choice(usable)
        op = self.choice(COMPARISONS)
        kind = self.weighted([(3, "index"), (2, "const"), (2, "offset"), (1, "dim"),
                              (2, "gather")])
        n = self.size(ctx.vars[v]) if ctx.vars[v] is not None else 1
        other = None
        if kind == "index":
            other = self.choice(usable)
        elif kind == "offset":
            other = f"{self.choice(usable)} + {self.d(st.integers(1, 2))}"
        elif kind == "dim":
            dims = [d for d in self.bound_symbols() if isinstance(d, str)]
            if dims:
                other = f"{self.choice(dims)} - {self.d(st.integers(1, 2))}"
        elif kind == "gather":
            sym = ctx.vars[v]
            if sym is not None and not isinstance(sym, tuple):
                g = Tensor(self.fresh_name("p"), "data", (sym,), mag=4.0, integer=True,
                           limit=n + 1)          # may hold n: not range-checked
                self.tensors[g.name] = g
                other = f"{g.name}[{v}]" if self.flip(0.5) else None
                if other is None:           # the compared index is another one
                    w = self.choice([u for u in usable if ctx.vars[u] == sym] or [v])
                    other = f"{g.name}[{w}]"
                    v = self.choice(usable)
                self.feature("comparison with a gather")
        if other is None:
            other = str(self.d(st.integers(0, max(n - 1, 0))))
        lhs, rhs = (v, other) if self.flip(0.7) else (other, v)
        self.feature(f"index comparison {op}")
        return E(f"({lhs} {op} {rhs})", 1.0)

    def power(self, ctx: Ctx, depth: int) -> E:
        op = "**" if self.flip(0.65) else "^"
        if op == "^":
            self.feature("^")
        k, text = self.choice([(2, "2"), (3, "3"), (2, "2.0"), (1, "1"), (0, "0"),
                               (-1, "-1"), (-2, "-2"), (.5, "0.5"), (1.5, "1.5"), (-.5, "-0.5")])
        self.feature(f"** {text}")
        if k < 0 or not float(k).is_integer():
            p, lo = self.positive(ctx, depth - 1)
            mag = max(p.mag ** k if k > 0 else lo ** k, 1.0)
            return E(f"{self.wrap(p)} {op} {text}", mag, False)
        a = self.expr(ctx, depth - 1)
        if a.mag ** k > LIMIT:
            a = self.bound_wrap(a)
        if not a.atom or a.text.startswith("-"):
            a = E(f"({a.text})", a.mag)
        return E(f"{a.text} {op} {text}", max(a.mag ** k, 1.0), False)

    def bound_wrap(self, e: E) -> E:
        fn = self.choice(UNARY_BOUNDED)
        self.feature(fn)
        return E(f"{fn}({e.text})", 1.0)

    def bounded(self, ctx: Ctx, depth: int) -> E:
        """|value| <= 1."""
        fn = self.choice(UNARY_BOUNDED)
        self.feature(fn)
        return E(f"{fn}({self.expr(ctx, max(depth, 0)).text})", 1.0)

    def positive(self, ctx: Ctx, depth: int) -> tuple[E, float]:
        """(an expression whose value is >= lo > 0, lo)."""
        kind = self.weighted([(3, "exp"), (3, "square"), (2, "sig"), (1, "abs"), (1, "dim"),
                              (1, "num"), (1, "trig"), (1, "relu")])
        if kind == "dim":
            dims = [d for d in self.bound_symbols() if isinstance(d, str)]
            if dims:
                dname = self.choice(dims)
                self.feature("dim as a number")
                return E(dname, float(self.sizes[dname])), 1.0
            kind = "num"
        if kind == "num":
            e = self.number(positive=True)
            if e.mag < 0.1:
                e = E("0.5", 0.5)
            return e, e.mag
        if kind == "exp":
            self.feature("exp")
            a = self.bounded(ctx, depth - 1) if depth > 0 else self.leaf_bounded(ctx)
            return E(f"exp({a.text})", math.e), math.exp(-1)
        if kind == "sig":
            self.feature("sigmoid")
            a = self.expr(ctx, depth - 1) if depth > 0 else self.leaf(ctx)
            return E(f"1 + sigmoid({a.text})", 2.0, False), 1.0
        if kind == "trig":
            fn = self.choice(("sin", "cos"))
            self.feature(fn)
            a = self.expr(ctx, depth - 1) if depth > 0 else self.leaf(ctx)
            sign = self.choice("+-")
            return E(f"2 {sign} {fn}({a.text})", 3.0, False), 1.0
        if kind == "abs":
            self.feature("abs")
            a = self.expr(ctx, depth - 1) if depth > 0 else self.leaf(ctx)
            a = self.squash(a)
            return E(f"abs({a.text}) + 0.5", a.mag + 0.5, False), 0.5
        if kind == "relu":
            self.feature("relu")
            a = self.expr(ctx, depth - 1) if depth > 0 else self.leaf(ctx)
            a = self.squash(a)
            return E(f"1 + relu({a.text})", a.mag + 1, False), 1.0
        # a * a + c, or a ** 2 + c
        a = self.expr(ctx, depth - 1) if depth > 0 else self.leaf(ctx)
        if a.mag > 4:
            a = self.bound_wrap(a)
        c = self.choice([(1.0, "1"), (0.5, "0.5"), (2.0, "2")])
        if self.flip():
            text = f"{self.wrap(a)} * {self.wrap(a)} + {c[1]}"
        else:
            base = a.text if a.atom and not a.text.startswith("-") else f"({a.text})"
            text = f"{base} ** 2 + {c[1]}"
        return E(text, a.mag ** 2 + c[0], False), c[0]

    def leaf_bounded(self, ctx: Ctx) -> E:
        fn = self.choice(UNARY_BOUNDED)
        self.feature(fn)
        return E(f"{fn}({self.leaf(ctx).text})", 1.0)

    # ---------------------------------------------------------- statements
    def statement(self):
        opens = [t for t in self.tensors.values() if t.open]
        kind = self.weighted([(8, "new"), (2, "window"), (2 if opens else 0, "reupdate"),
                              (1, "scatter"), (1, "broadcast"),
                              (2 if self.breadth else 0, "stack"),
                              (3 if self.breadth else 0, "padded")])
        if kind == "window" and self.window():
            return
        if kind == "stack" and self.stack():
            return
        if kind == "padded" and self.padded():
            return
        if kind == "reupdate":
            return self.reupdate(self.choice(opens))
        if kind == "scatter" and self.scatter():
            return
        if kind == "broadcast" and self.broadcast():
            return
        self.new_stmt()

    def target_symbols(self, k: int):
        syms = []
        for t in self.readable():
            for s in t.shape:
                if s not in syms:
                    syms.append(s)
        return [self.choice(syms) for _ in range(k)] if syms else []

    def finish_stmt(self, ctx: Ctx, target: Tensor, target_text: str, op: str, rhs: E,
                    target_plain: set):
        loops = list(ctx.vars)
        if op not in REDUCTIONS:
            summed = [v for v in loops if v not in target_plain]
            factor = math.prod(self.size(ctx.vars[v]) for v in summed)
        else:
            factor = 1
        mag = rhs.mag * factor
        rhs_text = rhs.text
        if mag > TENSOR_LIMIT:
            k = 10 ** math.ceil(math.log10(mag / TENSOR_LIMIT))
            rhs_text = f"{self.wrap(rhs)} / {k}"
            mag /= k
        target.mag = mag if op in ("=", *REDUCTIONS) or not target.ops else target.mag + mag
        target.ops.append(op)
        self.feature(op)
        if op == "+=" and [v for v in loops if v not in target_plain]:
            self.feature("reduction")
        # render
        if loops and (ctx.written or self.flip(0.8)):
            order = list(loops)
            if self.flip(0.3):
                order = order[::-1]
            order = [f"{v} in {ctx.written[v]}" if v in ctx.written else v for v in order]
            head = f"for {', '.join(order)}: "
        else:
            head = ""
            if loops:
                self.feature("for omitted")
        pad = " " if self.flip(0.9) else "  "
        line = f"{head}{target_text}{pad}{op} {rhs_text}"
        if self.flip(0.05):
            line += "  # a comment"
        if self.flip(0.03) and " + " in line:
            k = line.index(" + ")
            line = line[:k] + " \\\n    + " + line[k + 3:]
            self.feature("backslash continuation")
        self.stmts.append(line)

    def cover(self, ctx: Ctx, rhs: E, need: list) -> E:
        """Multiply or add reads until every index in ``need`` has a plain use."""
        for v in need:
            if v in ctx.fixed:
                continue
            sym = ctx.vars[v]
            holders = [t for t in self.readable() if sym in t.shape]
            t = self.choice(holders)
            parts = []
            used = False
            for s in t.shape:
                if s == sym and not used:
                    parts.append(v)
                    used = True
                    ctx.fixed.add(v)
                else:
                    parts.append(self.index_for_axis(ctx, s))
            r = self.take(E(f"{t.name}[{', '.join(parts)}]", t.mag), t)
            if rhs.mag * r.mag <= LIMIT and self.flip(0.6):
                rhs = E(f"{self.wrap(rhs)} * {self.wrap(r)}", rhs.mag * r.mag, False)
            else:
                op = self.choice("+-")
                rhs = E(f"{self.wrap(rhs)} {op} {self.wrap(r)}", rhs.mag + r.mag, False)
        return rhs

    def new_target(self, shape) -> Tensor:
        name = self.fresh_name(self.choice("hzaecf"))
        t = Tensor(name, "computed", tuple(shape))
        self.tensors[name] = t
        return t

    def new_stmt(self):
        op = self.weighted([(6, "+="), (2, "-="), (3, "="), (2, "max="),
                            (2 if self.breadth else 0, "min=")])
        k = self.weighted([(3, 1), (3, 2), (2, 0), (1, 3)])
        syms = self.target_symbols(k)
        ctx = Ctx({}, allow_new=op != "=", depth=self.d(st.integers(0, 3)))
        tvars = []
        for s in syms:
            # a repeated index makes a diagonal target
            same = [v for v in tvars if ctx.vars[v] == s]
            if same and op not in REDUCTIONS and self.flip(0.15):
                tvars.append(same[0])
                self.feature("diagonal target")
                continue
            v = next(x for x in VAR_POOL if x not in ctx.vars)
            ctx.vars[v] = s
            tvars.append(v)
        ctx.allow_new = op != "="
        rhs = self.expr(ctx, ctx.depth)
        rhs = self.cover(ctx, rhs, list(dict.fromkeys(tvars)))
        target = self.new_target([ctx.vars[v] for v in tvars])
        target.open = op in ("+=", "-=")
        ttext = f"{target.name}[{', '.join(tvars)}]" if tvars else target.name
        if not tvars:
            self.feature("scalar target")
        self.finish_stmt(ctx, target, ttext, op, rhs, set(tvars))

    def reupdate(self, target: Tensor):
        """Another += or -= on a tensor no statement has read yet."""
        was = target.readable
        target.readable = False             # a statement never reads its own target
        try:
            self._reupdate(target)
        finally:
            target.readable = was

    def _reupdate(self, target: Tensor):
        op = self.choice(["+=", "-="])
        ctx = Ctx({}, allow_new=True, depth=self.d(st.integers(0, 2)))
        parts, plain_vars = self.target_index(ctx, target.shape, 0.8)
        self.feature("+= and -= on one tensor" if op not in target.ops else "two updates")
        rhs = self.expr(ctx, ctx.depth)
        rhs = self.cover(ctx, rhs, [v for v in ctx.vars if v not in plain_vars])
        ttext = f"{target.name}[{', '.join(parts)}]" if parts else target.name
        self.finish_stmt(ctx, target, ttext, op, rhs, plain_vars)

    def target_index(self, ctx, shape, p_plain: float):
        """A target's index entries, each plain with probability p_plain, else an
        affine, constant or gather entry; and the plain variables used."""
        parts, plain_vars = [], set()
        for s in shape:
            if self.flip(p_plain):
                v = self.plain(ctx, s)
                parts.append(v)
                plain_vars.add(v)
            else:
                parts.append(self.index_for_axis(ctx, s, target=True))
        return parts, plain_vars

    def scatter(self) -> bool:
        """A declared output with a bound shape, updated through gather, affine or
        constant target indices (a scatter-add)."""
        bound = self.bound_symbols()
        if not bound:
            return False
        rank = self.d(st.integers(1, min(3, len(bound) + 1)))
        shape = [self.choice(bound) for _ in range(rank)]
        target = self.new_target(shape)
        target.readable = False
        target.output_decl = "bound"
        self.declare_outputs = True
        op = self.choice(["+=", "-="])
        ctx = Ctx({}, allow_new=True, depth=self.d(st.integers(0, 2)))
        parts, plain_vars = self.target_index(ctx, shape, 0.4)
        self.feature("scatter target")
        rhs = self.expr(ctx, ctx.depth)
        rhs = self.cover(ctx, rhs, [v for v in ctx.vars if v not in plain_vars])
        target.open = True
        self.finish_stmt(ctx, target, f"{target.name}[{', '.join(parts)}]", op, rhs,
                         plain_vars)
        return True

    def broadcast(self) -> bool:
        """A declared output whose shape fixes an index that no read uses."""
        bound = self.bound_symbols()
        if not bound:
            return False
        rank = self.d(st.integers(1, min(3, len(bound))))
        shape = [self.choice(bound) for _ in range(rank)]
        op = self.weighted([(3, "="), (2, "+="), (1, "max="), (1 if self.breadth else 0, "min=")])
        ctx = Ctx({}, allow_new=False, depth=self.d(st.integers(0, 2)))
        tvars = []
        for s in shape:
            v = next(x for x in VAR_POOL if x not in ctx.vars)
            ctx.vars[v] = s
            tvars.append(v)
        ctx.allow_new = op != "="
        rhs = self.expr(ctx, ctx.depth)
        target = self.new_target(shape)
        target.readable = False
        target.output_decl = "bound"
        target.open = op == "+="
        self.declare_outputs = True
        if any(v not in ctx.fixed for v in tvars):
            self.feature("index fixed by a declared output")
        self.finish_stmt(ctx, target, f"{target.name}[{', '.join(tvars)}]", op, rhs, set(tvars))
        return True

    def window(self) -> bool:
        """``for n, i: T[n] += x[s*n + i + c] * w[i]``: n's range is inferred."""
        sources = [(t, a) for t in self.readable() for a, s in enumerate(t.shape)
                   if not isinstance(s, tuple) and self.size(s) >= 1]
        if not sources:
            return False
        op = self.weighted([(4, "+="), (1, "-="), (2, "="), (1, "max="),
                            (1 if self.breadth else 0, "min=")])
        ctx = Ctx({}, allow_new=op != "=", depth=self.d(st.integers(0, 2)))
        nwin = 1 if len(sources) == 1 else self.weighted([(4, 1), (1, 2)])
        reads, wvars, ranges = [], [], {}
        for _ in range(nwin):
            t, axis = self.choice(sources)
            n = self.size(t.shape[axis])
            w = next(x for x in VAR_POOL if x not in ctx.vars)
            ctx.vars[w] = None
            ctx.private.add(w)
            stride = self.d(st.integers(1, 3))
            # an optional fixed index in the same expression
            extra, hi = "", 0
            if ctx.allow_new and self.flip(0.7):
                cands = [s for s in self.target_symbols(3) if self.size(s) <= n]
                if cands:
                    s = self.choice(cands)
                    u = self.plain(ctx, s)     # fixed by a plain use added below
                    if u is not None and u not in ctx.private:
                        ctx.fixed.discard(u)
                        extra = f" + {u}"
                        hi = self.size(s) - 1
            if hi > n - 1:
                return False
            const = self.d(st.integers(0, min(2, n - 1 - hi)))
            rng_w = (n - 1 - hi - const) // stride + 1
            idx = []
            for a, s in enumerate(t.shape):
                if a == axis:
                    text = (f"{stride}*{w}" if stride > 1 else w) + extra
                    idx.append(text + (f" + {const}" if const else ""))
                else:
                    idx.append(self.index_for_axis(ctx, s))
            self.derived += 1
            sym = ("~", self.derived)
            self.sizes[sym] = rng_w
            ctx.vars[w] = sym
            ranges[w] = rng_w
            wvars.append(w)
            reads.append(self.take(E(f"{t.name}[{', '.join(idx)}]", t.mag), t))
            self.feature("inferred window range")
            if stride > 1:
                self.feature("stride")
        # the window indices are the target's (or summed, not with '=')
        tvars = [w for w in wvars if op == "=" or self.flip(0.75)]
        rest = self.expr(ctx, ctx.depth)
        rhs = rest
        for r in reads:
            if rhs.mag * r.mag <= LIMIT and self.flip(0.7):
                rhs = E(f"{self.wrap(r)} * {self.wrap(rhs)}", r.mag * rhs.mag, False)
            else:
                rhs = E(f"{self.wrap(r)} + {self.wrap(rhs)}", r.mag + rhs.mag, False)
        # other plain target indices, never reduced with '='
        if op == "=":
            extra_t = [v for v in ctx.vars if v not in wvars]
        else:
            extra_t = [v for v in ctx.vars if v not in wvars and self.flip(0.5)]
        tvars += extra_t
        rhs = self.cover(ctx, rhs, [v for v in ctx.vars if v not in ctx.private])
        target = self.new_target([ctx.vars[v] for v in tvars])
        target.open = op in ("+=", "-=")
        ttext = f"{target.name}[{', '.join(tvars)}]" if tvars else target.name
        self.finish_stmt(ctx, target, ttext, op, rhs, set(tvars))
        return True

    def stack(self) -> bool:
        """``w[b, 0] += ...; w[b, 2] += ...``: the last axis has the largest
        constant + 1 positions (those no update writes hold 0)."""
        op = self.weighted([(3, "+="), (1, "-="), (1, "max="), (1, "min=")])
        k = self.weighted([(3, 1), (2, 0), (1, 2)])
        syms = self.target_symbols(k)
        if len(syms) != k:
            return False
        consts = [self.d(st.integers(0, 2))]
        if op not in REDUCTIONS:
            consts += [self.d(st.integers(0, 2)) for _ in range(self.d(st.integers(0, 2)))]
        target = self.new_target(list(syms) + [max(consts) + 1])
        target.readable = False             # never read by its own updates
        for c in consts:
            ctx = Ctx({}, allow_new=True, depth=self.d(st.integers(0, 2)))
            tvars = []
            for s in syms:
                v = next(x for x in VAR_POOL if x not in ctx.vars)
                ctx.vars[v] = s
                tvars.append(v)
            rhs = self.expr(ctx, ctx.depth)
            rhs = self.cover(ctx, rhs, list(tvars))
            self.finish_stmt(ctx, target, f"{target.name}[{', '.join(tvars + [str(c)])}]",
                             op if op in REDUCTIONS else self.choice(["+=", "-="]), rhs,
                             set(tvars))
        target.readable = True
        target.open = False
        self.feature("stacked constant target")
        return True

    def padded(self) -> bool:
        """``for n in N, i in 3: y[n] += x[n + i - 1] * ...``: written ranges, and
        reads outside a tensor read 0 (a "same" window, a causal shift)."""
        sources = [(t, a) for t in self.readable() for a, s in enumerate(t.shape)
                   if not isinstance(s, tuple)]
        if not sources:
            return False
        t, axis = self.choice(sources)
        sym = t.shape[axis]
        op = self.weighted([(4, "+="), (1, "-="), (2, "="), (1, "max="), (1, "min=")])
        ctx = Ctx({}, allow_new=op != "=", depth=self.d(st.integers(0, 2)))
        v = next(x for x in VAR_POOL if x not in ctx.vars)
        ctx.vars[v] = sym
        ctx.written[v] = sym
        ctx.fixed.add(v)
        offset = f"{v} - {self.d(st.integers(1, 2))}"
        mag = t.mag
        if op != "=" and self.flip(0.6):
            width = self.d(st.integers(1, 3))
            i = next(x for x in VAR_POOL if x not in ctx.vars)
            ctx.vars[i] = width
            ctx.written[i] = width
            ctx.private.add(i)
            ctx.fixed.add(i)
            offset = f"{v} + {i} - {self.d(st.integers(0, 2))}"
            mag *= 1 if op in REDUCTIONS else width
        idx = [offset if a == axis else self.index_for_axis(ctx, s)
               for a, s in enumerate(t.shape)]
        read = self.take(E(f"{t.name}[{', '.join(idx)}]", mag), t)
        rhs = read
        if self.flip(0.5):
            rest = self.expr(ctx, 0)
            rhs = E(f"{self.wrap(read)} * {self.wrap(self.squash(rest, LIMIT / read.mag))}",
                    LIMIT, False)
        others = [u for u in ctx.vars if u != v and u not in ctx.private]
        tvars = [v] + [u for u in others if op == "=" or self.flip(0.5)]
        rhs = self.cover(ctx, rhs, [u for u in ctx.vars if u not in ctx.private])
        target = self.new_target([ctx.vars[u] for u in tvars])
        target.open = op in ("+=", "-=")
        self.feature("written range")
        self.finish_stmt(ctx, target, f"{target.name}[{', '.join(tvars)}]", op, rhs,
                         set(tvars))
        return True

    # ------------------------------------------------------------- program
    def program(self, max_stmts: int) -> Generated:
        for _ in range(self.d(st.integers(1, 4))):
            self.new_input()
        for _ in range(self.d(st.integers(1, max_stmts))):
            self.statement()
        return self.render()

    def render(self) -> Generated:
        computed = [t for t in self.tensors.values() if t.role == "computed"]
        # the outputs: computed tensors no statement reads
        read = {t.name for t in computed for line in self.stmts
                if _reads_name(line.partition("= ")[2], t.name)}
        unread = [t for t in computed if t.name not in read]
        declare = self.declare_outputs or self.flip(0.3)
        decls: list[tuple[str, str]] = []   # (role, item)
        for t in self.tensors.values():
            if t.role in ("input", "param", "data"):
                item = f"{t.name}[{', '.join(map(str, t.shape))}]" if t.shape else t.name
                decls.append((t.role, item))
        if declare:
            chosen = [t for t in unread if t.output_decl == "bound"]
            for t in unread:
                if t not in chosen and (self.flip(0.7) or not chosen):
                    chosen.append(t)
            if self.breadth:
                for t in computed:
                    if t.name in read and self.flip(0.3):
                        chosen.append(t)
                        t.output_decl = "read later"
                        self.feature("output read later")
            alias = iter(ALIAS_POOL)
            for t in chosen:
                if t.output_decl == "bound":
                    form = "shaped"
                elif not t.shape or t.output_decl == "read later":
                    form = "bare"
                else:
                    form = self.choice(["bare", "shaped"])
                if form == "bare":
                    decls.append(("output", t.name))
                    continue
                entries = []
                for s in t.shape:
                    if isinstance(s, tuple):
                        entries.append(next(alias))
                        self.feature("output dim named by inference")
                    else:
                        entries.append(str(s))
                decls.append(("output", f"{t.name}[{', '.join(entries)}]"))
            self.feature("declared outputs")
        # batch
        lines = []
        dims = [d for d in self.dims]
        mode = self.weighted([(6, "default"), (1, "one"), (1, "named")])
        if mode == "one":
            lines.append("batch 1")
            self.feature("batch 1")
        elif mode == "named" and dims:
            lines.append(f"batch {self.choice(dims)}")
            self.feature("batch named")
        if dims and self.flip(0.3):
            lines.insert(0, "dim " + ", ".join(dims))
        # group declarations of one role on one line sometimes
        order = decls
        k = 0
        while k < len(order):
            role, item = order[k]
            items = [item]
            while k + 1 < len(order) and order[k + 1][0] == role and self.flip(0.3):
                k += 1
                items.append(order[k][1])
            lines.append(f"{role} {', '.join(items)}")
            k += 1
        if self.flip(0.1):
            lines.insert(self.d(st.integers(0, len(lines))), "# a comment line")
        body = list(self.stmts)
        if self.flip(0.1):
            body.insert(self.d(st.integers(0, len(body))), "")
        text = "\n".join(lines + body) + "\n"
        shapes, kinds, limits = {}, {}, {}
        for t in self.tensors.values():
            if t.role in ("input", "param", "data"):
                shapes[t.name] = tuple(self.size(s) for s in t.shape)
                kinds[t.name] = "gather" if t.integer else ("int" if t.int_values else "float")
                if t.integer:
                    limits[t.name] = t.limit if t.limit is not None else 1
        sizes = {d: self.sizes[d] for d in self.dims}
        seed = self.d(st.integers(0, 2 ** 32 - 1))
        return Generated(text, sizes, seed, shapes, kinds, limits, frozenset(self.features))


def _reads_name(rhs: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_.]){re.escape(name)}(?![A-Za-z0-9_])(?!\.grad)",
                     rhs) is not None


@st.composite
def programs(draw, max_stmts: int = 8, grad_names: bool = True,
             breadth: bool = False, recurrence: bool = False) -> Generated:
    """A random valid program with its sizes and a seed for its arrays.

    breadth: also draw issue 12's forms (index comparisons, stacked constant
    targets, written ranges with padding, ``min=``, outputs read later). Off
    by default, so that the strategy's coverage test counts the other forms.
    recurrence: draw a recurrence instead (``recurrences()``); off by default,
    so the other properties see the programs they always saw."""
    if recurrence:
        return draw(recurrences())
    return _Gen(draw, grad_names, breadth).program(max_stmts)


# ------------------------------------------------------------ recurrences

# cells: (the statements that make h[t] from the pre-activation a[t] and the
# state read at the first distance, hp), h in [-1, 1] so that the state stays bounded
_CELLS = {
    "tanh": ["for t, b, s: h[t, b, s] = tanh(a[t, b, s])"],
    "sigmoid": ["for t, b, s: h[t, b, s] = 2 * sigmoid(a[t, b, s]) - 1"],
    "sin": ["for t, b, s: h[t, b, s] = sin(a[t, b, s])"],
    "gated": ["for t, b, s: g[t, b, s] = sigmoid(a[t, b, s] + c[s])",
              "for t, b, s: h[t, b, s] = g[t, b, s] * HP + (1 - g[t, b, s]) * tanh(a[t, b, s])"],
    "accumulate": ["for t, b, s: h[t, b, s] += 0.5 * tanh(a[t, b, s])",
                   "for t, b, s: h[t, b, s] += 0.5 * HP"],
}


@st.composite
def recurrences(draw) -> Generated:
    """A random valid recurrence: an RNN-like cell over steps t (a random cell
    from ``_CELLS``), reading the state at distances 1..3 in either direction
    (``h[t - k]`` upwards, ``h[t + k]`` downwards), with an input term over all
    steps before it, optionally a starting state at the first step, and either
    ``h`` as the output or a readout after the recurrence (with ``h`` an
    intermediate, or an output read later)."""
    up = draw(st.booleans())
    dists = sorted(draw(st.sets(st.integers(1, 3), min_size=1, max_size=3)))
    cell = draw(st.sampled_from(sorted(_CELLS)))
    sizes = {"T": draw(st.integers(1, 5)), "B": draw(st.integers(1, 3)),
             "S": draw(st.integers(1, 3)), "D": draw(st.integers(1, 3))}
    sign = "-" if up else "+"
    first = "0" if up else "T - 1"
    lines, features = [], {f"recurrence {'up' if up else 'down'}", f"cell {cell}"}
    params = ["W[S, D]"] + [f"U{k}[S, S]" for k in dists]
    inputs = ["x[T, B, D]"]
    if cell == "gated":
        params.append("c[S]")
    body = ["for t, b, s, d: a[t, b, s] += W[s, d] * x[t, b, d]"]
    if draw(st.booleans()):
        features.add("starting state")
        inputs.append("h0[B, S]")
        params.append("V[S, S]")
        body.append(f"for b, s, r: a[{first}, b, s] += V[s, r] * h0[b, r]")
    for k in dists:
        scale = draw(st.sampled_from(["", "0.5 * "]))
        # an index comparison over the step (held fixed in the step loop, shifted
        # where the backward restricts the steps) or over the state's indices
        mask = draw(st.sampled_from(["", "", "", f" * (t >= {k})", " * (t < T - 1)",
                                     " * (r <= s)", " * (s < r + 1)", f" * ({k} <= t)"]))
        if mask:
            features.add("index comparison in a recurrence")
        body.append(f"for t, b, s, r: a[t, b, s] += {scale}U{k}[s, r] * h[t {sign} {k}, b, r]"
                    f"{mask}")
    hp = f"h[t {sign} {dists[0]}, b, s]"
    body += [line.replace("HP", hp) for line in _CELLS[cell]]
    readout = draw(st.sampled_from(["none", "loss", "readout"]))
    features.add(f"readout {readout}")
    if readout == "loss":
        body.append("for t, b, s: L[b] += h[t, b, s] ** 2")
    elif readout == "readout":
        params.append("R[S]")
        body.append("for t, b, s: y[t, b] += R[s] * h[t, b, s]")
    outputs = {"none": ["h[T, B, S]"], "loss": ["L[B]"],
               "readout": draw(st.sampled_from([["y[T, B]"], ["h[T, B, S]", "y[T, B]"]]))}
    if readout == "readout" and len(outputs["readout"]) == 2:
        features.add("output read later")
    lines.append("input  " + ", ".join(inputs))
    lines.append("param  " + ", ".join(params))
    lines.append("output " + ", ".join(outputs[readout]))
    lines += body
    text = "\n".join(lines) + "\n"
    shapes = {}
    for decl in inputs + params:
        name, dims = decl[:-1].split("[")
        shapes[name] = tuple(sizes[d.strip()] for d in dims.split(","))
    kinds = {t: "float" for t in shapes}
    return Generated(text, sizes, draw(st.integers(0, 2 ** 31 - 1)), shapes, kinds, {},
                     frozenset(features))


def scaled(factor: float, floor: int = 3) -> int:
    """``factor`` times the loaded hypothesis profile's max_examples, at least
    ``floor``: the cheap properties run more examples than the costly ones."""
    from hypothesis import settings
    return max(floor, int(settings().max_examples * factor))


# ------------------------------------------------------------ invalid input

TOKEN_RE = (r"\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|[A-Za-z_][A-Za-z0-9_]*|\*\*|max=|[+\-]=|[<>=!]="
            r"|\S|\n| +")

VOCABULARY = ["for", "input", "param", "data", "output", "dim", "batch", "max=", "+=", "-=",
              "=", "[", "]", "(", ")", ",", ":", "*", "**", "^", "/", "+", "-", "<", ">=",
              "==", ".grad", "exp", "max", "min", "relu", "0", "1", "-1", "2.5", "1e400",
              "9" * 400, "B", "J", "x", "y", "i", "\n", " ", "#", "\\\n", "$", "é", "λ",
              "ｘ", "\u2028", "\t", "\r", "\x00", "\ufeff", "grad", "lambda", "None", "_",
              "x.grad.grad", "x[]", "1/0", "e", "E", "°"]


def tokens_of(text: str) -> list[str]:
    return re.findall(TOKEN_RE, text)


@st.composite
def mutated(draw, base=None) -> str:
    """A valid program with one to three random token mutations."""
    if base is None:
        base = draw(programs(max_stmts=4)).text
    toks = tokens_of(base)
    for _ in range(draw(st.integers(1, 3))):
        if not toks:
            toks = [draw(st.sampled_from(VOCABULARY))]
            continue
        k = draw(st.integers(0, len(toks) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace",
                                   "bracket", "number", "name", "newline"]))
        if op == "delete":
            del toks[k]
        elif op == "duplicate":
            toks.insert(k, toks[k])
        elif op == "swap" and k + 1 < len(toks):
            toks[k], toks[k + 1] = toks[k + 1], toks[k]
        elif op == "insert":
            toks.insert(k, draw(st.sampled_from(VOCABULARY)))
        elif op == "replace":
            toks[k] = draw(st.sampled_from(VOCABULARY))
        elif op == "bracket":
            brackets = [i for i, t in enumerate(toks) if t in "[]()"]
            if brackets:
                i = draw(st.sampled_from(brackets))
                toks[i] = draw(st.sampled_from(["[", "]", "(", ")", "{", "}", ""]))
        elif op == "number":
            nums = [i for i, t in enumerate(toks) if t[:1].isdigit()]
            if nums:
                i = draw(st.sampled_from(nums))
                toks[i] = draw(st.sampled_from(["0", "-1", "1e309", "9" * 30, "9" * 5000,
                                                "1.5", "00", "1e-400", "3.", ".5",
                                                "123456789012345678901234567890"]))
        elif op == "name":
            names = [i for i, t in enumerate(toks) if t[:1].isalpha()]
            if names:
                i = draw(st.sampled_from(names))
                toks[i] = draw(st.sampled_from(["exp", "for", "lambda", "x.grad", "é", "_",
                                                "B", "i", "xé", "ｘ", "x_grad", "class",
                                                "grad", toks[i] + ".grad", toks[i] + "_grad"]))
        elif op == "newline":
            toks.insert(k, draw(st.sampled_from(["\n", "\n\n", "\\\n", "\r\n", "\r"])))
    return "".join(toks)


def unicode_text(max_size: int = 200):
    """Arbitrary unicode, biased towards the language's own characters."""
    alphabet = st.one_of(st.sampled_from(list("xyzBJ[](),:+-*/^=<>!.#\n 0123456789e")),
                         st.characters())
    return st.text(alphabet, max_size=max_size)
