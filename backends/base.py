"""The backend interface: a backend is a table from target IR operation to
the code that prints it, plus the module's imports and runtime helpers.

A new target copies a table and overrides the entries that differ (as
tinygrad's renderers do); an operation its table lacks fails at generation
time naming the operation and the backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .target import ATOM, POWER, Lit, Printer, Tup

Entry = tuple[Callable, int]     # (printer, *args, **kw) -> source, and its precedence


def call(fmt: str) -> Entry:
    """A table entry for a call: ``fmt`` with the arguments as ``{0}``, ``{1}``
    (printed whole) and keywords by name."""
    def emit(p: Printer, *args, **kw):
        return fmt.format(*(p.expr(a) for a in args),
                          **{k: p.expr(v) if not isinstance(v, str) else v
                             for k, v in kw.items()})
    return emit, ATOM


def method(fmt: str) -> Entry:
    """A table entry for a method or attribute of the first argument: ``{0}``
    is printed as an atom (parenthesized if it must be)."""
    def emit(p: Printer, x, *args, **kw):
        return fmt.format(p.atom(x), *(p.expr(a) for a in args),
                          **{k: p.expr(v) for k, v in kw.items()})
    return emit, ATOM


def literal(v) -> str:
    """A Python literal (axes, permutations, paths) printed as itself."""
    return repr(v)


@dataclass
class Backend:
    name: str
    imports: list[str]
    code: dict[str, Entry]
    module: str = "np"                          # how the module names its array library
    helpers: dict[str, tuple[str, ...]] = field(default_factory=dict)   # op -> helpers used
    requires: str = "NumPy"                     # what the module needs, for its docstring
    op_imports: dict[str, tuple[str, ...]] = field(default_factory=dict)  # op -> imports
    runtime: str = "numpy"                      # the module runtime (tcc/compiler.py RUNTIMES)
    helper_module: str = "helpers"              # where the helpers' source is (in backends/)
    decorator: str = ""                         # a line before forward() and backward()
    # run groups of elementwise and row-reduction statements on row blocks, threaded
    # (``row_blocks``); a backend whose library threads its own kernels leaves it off
    row_blocks: bool = False
    # elementwise steps through out= and in place (``inplace.py``) without row
    # blocks: the torch backend, whose kernels thread themselves
    in_place: bool = False

    def imports_for(self, used: set[str]) -> list[str]:
        """The module's imports: the backend's own, and those of the operations it printed."""
        out = list(self.imports)
        for op in sorted(used):
            out += [i for i in self.op_imports.get(op, ()) if i not in out]
        return out

    def printer(self) -> Printer:
        return Printer(self.code, self.module, self.name)

    def helpers_for(self, used: set[str]) -> set[str]:
        """The runtime helpers a module needs for the operations it printed."""
        out = set()
        for op in used:
            out.update(self.helpers.get(op, ()))
            if op.startswith("_"):              # a function row's own helper
                out.add(op)
        return out

    def extend(self, name: str, imports=None, code=None, helpers=None, requires=None,
               module=None, op_imports=None, row_blocks: bool = False) -> "Backend":
        """A backend that overrides some of this one's entries (row blocks are
        a choice each backend makes for itself: off unless asked for)."""
        return type(self)(name, list(imports if imports is not None else self.imports),
                          {**self.code, **(code or {})}, module or self.module,
                          {**self.helpers, **(helpers or {})}, requires or self.requires,
                          {**self.op_imports, **(op_imports or {})}, runtime=self.runtime,
                          helper_module=self.helper_module, decorator=self.decorator,
                          row_blocks=row_blocks)


def _axis(p: Printer, x, axis) -> str:
    return f"{p.atom(x)}.sum(axis={literal(axis)})"


def _transpose(p: Printer, x, perm=None) -> str:
    return f"{p.atom(x)}.T" if perm is None else f"{p.atom(x)}.transpose{literal(perm)}"


def _matmul(p: Printer, a, b, out=None):
    if out is None:
        # (a scaled operand in parentheses: (0.125 * Q) @ K.T, not 0.125 * Q @ K.T)
        return f"{p.wrap(a, 4)} @ {p.wrap(b, 4)}"
    return f"np.matmul({p.expr(a)}, {p.expr(b)}, out={p.expr(out)})"


def _einsum(p: Printer, spec, *args, path=None) -> str:
    ops = ", ".join(p.expr(a) for a in args)
    if path is None or len(args) < 3:
        return f"np.einsum({p.expr(spec)}, {ops})"
    return f"np.einsum({p.expr(spec)}, {ops}, optimize={literal(['einsum_path', *path])})"


def _ufunc(p: Printer, op, *args, out) -> str:
    """An elementwise operation written into ``out`` (backends/inplace.py)."""
    name = op.value if isinstance(op, Lit) else op
    if name.startswith("fn:"):
        from tcc import functions
        row = functions.lookup(name[3:])
        p.used.update(row.helpers)
        return row.out_code.format(*(p.expr(a) for a in args), out=p.expr(out))
    return f"np.{name}({', '.join(p.expr(a) for a in args)}, out={p.expr(out)})"


def _shape(p: Printer, shape) -> str:
    return p.expr(shape if not isinstance(shape, tuple) else Tup(shape))


def _masked_product(p: Printer, product, spec, keep, s, o, bind=None) -> str:
    """The product as it is where ``o`` is finite (checked in O(size of o)); else
    the helper, exact where the selection of ``s`` removes an inf or nan of ``o``.
    ``bind``: o's value, computed once where it is checked (o is its name)."""
    checked = p.expr(o) if bind is None else f"{p.expr(o)} := {p.expr(bind)}"
    return (f"{p.wrap(product, 1)} if np.isfinite({checked}).all() else "
            f"_masked_product({p.expr(spec)}, {p.expr(keep)}, {p.expr(s)}, {p.expr(o)})")


def _triangle(p: Printer, fn: str, x, k) -> str:
    return f"{fn}({p.expr(x)})" if k == 0 else f"{fn}({p.expr(x)}, {literal(k)})"


# The NumPy table: every operation of target.OPS.
NUMPY_CODE: dict[str, Entry] = {
    "as_float": method("{0}.astype(dt)"),
    "scalar": call("dt.type({0})"),
    "transpose": (lambda p, x, perm=None: _transpose(p, x, perm), ATOM),
    "sum": (lambda p, x, axis: _axis(p, x, axis), ATOM),
    "max": (lambda p, x, axis: f"np.max({p.expr(x)}, axis={literal(axis)}, initial=-np.inf)",
            ATOM),
    "min": (lambda p, x, axis: f"np.min({p.expr(x)}, axis={literal(axis)}, initial=np.inf)",
            ATOM),
    "broadcast_to": call("np.broadcast_to({0}, {1})"),
    "matmul": (lambda p, a, b, out=None: _matmul(p, a, b, out), 3),
    "tensordot": (lambda p, a, b, axes: f"np.tensordot({p.expr(a)}, {p.expr(b)}, "
                                        f"axes={literal(axes)})", ATOM),
    "einsum": (_einsum, ATOM),
    "ufunc": (_ufunc, ATOM),
    "contiguous": call("np.ascontiguousarray({0})"),
    "reshape": method("{0}.reshape({1})"),
    "as_strided": call("np.lib.stride_tricks.as_strided({0}, shape={shape}, "
                       "strides={strides})"),
    "strided_view": call("_view({0}, {1}, {2}, {3})"),
    "arange_axis": call("_ix({0}, {1}, {2})"),
    "zeros": (lambda p, shape: f"np.zeros({_shape(p, shape)}, dtype=dt)", ATOM),
    "empty": (lambda p, shape: f"np.empty({_shape(p, shape)}, dtype=dt)", ATOM),
    "full": (lambda p, shape, v: f"np.full({_shape(p, shape)}, {p.expr(v)}, dtype=dt)", ATOM),
    "array": call("np.array({0}, dtype=dt)"),
    "asarray": call("np.asarray({0}, dtype=dt)"),
    "own": (lambda p, x: f"{p.wrap(x, POWER)} if {p.atom(x)}.base is None else "
                         f"{p.atom(x)}.copy()", 0),
    "owned": (lambda p, x, shape: f"{p.atom(x)}.base is None and {p.atom(x)}.dtype == dt and "
                                  f"{p.atom(x)}.shape == {_shape(p, shape)}", 0),
    "imax": call("max({0}, {1})"),
    "if_nonzero": (lambda p, v, n: f"({p.expr(v)} if {p.expr(n)} else 0.0)", ATOM),
    "add_at": call("np.add.at({0}, {1}, {2})"),
    "max_at": call("np.maximum.at({0}, {1}, {2})"),
    "min_at": call("np.minimum.at({0}, {1}, {2})"),
    "arange": call("np.arange({0})"),
    "diagonal": (lambda p, x, axis1=0, axis2=1: f"np.diagonal({p.expr(x)})" if (axis1, axis2)
                 == (0, 1) else f"np.diagonal({p.expr(x)}, 0, {axis1}, {axis2})", ATOM),
    "where": call("np.where({0}, {1}, 0.0)"),
    "cumsum": call("np.cumsum({0}, axis={axis})"),
    "flip": call("np.flip({0}, axis={axis})"),
    "tril": (lambda p, x, k=0: _triangle(p, "np.tril", x, k), ATOM),
    "triu": (lambda p, x, k=0: _triangle(p, "np.triu", x, k), ATOM),
    "both": call("np.logical_and({0}, {1})"),
    "masked_product": (_masked_product, 0),
    "pad": call("np.pad({0}, {1})"),
    "add_affine": call("_add_affine({0}, {1}, {2}, {3})"),
    "row_blocks": call("_row_blocks({0}, {1}, {2})"),
    "tuned": call("_tuned({0}, {1}, {2}, {3})"),
}

NUMPY_HELPERS = {"strided_view": ("_view",), "arange_axis": ("_ix",),
                 "add_affine": ("_add_affine",), "row_blocks": ("_row_blocks",),
                 "tuned": ("_tuned",), "masked_product": ("_masked_product",)}
NUMPY_OP_IMPORTS = {"row_blocks": ("import os", "import threading", "import time",
                                   "from concurrent.futures import ThreadPoolExecutor"),
                    "tuned": ("import os", "import time")}
