"""The ``torch`` backend: the NumPy table with the entries that differ
overridden, printing code that imports only torch.

Every array the module creates comes from ``dt``, an empty tensor of the
computation's dtype on the device of the tensors passed in (``dt.new_zeros``,
``x.to(dt)``), so the same module runs on the CPU and on CUDA. Contractions
keep the form the lowering chose (``@``, ``torch.tensordot``, and for three or
more operands pairwise ``torch.einsum`` along the path chosen at generation);
affine reads are views (``as_strided``); scatter-adds are ``index_put_`` with
``accumulate=True``. Nothing reads data back to the host: the only syncs are
the range checks of gather positions, as the NumPy module makes them.
"""

from __future__ import annotations

from tcc import functions

from .base import NUMPY_CODE, Backend, _triangle, call, literal, method
from .target import ATOM, Apply, Attr, Index, Lit, Op, Printer, Tup, walk


def _shape(p: Printer, shape) -> str:
    return p.expr(shape if not isinstance(shape, tuple) else Tup(shape))


def _dims(axis) -> str:
    return literal(axis)


def _transpose(p: Printer, x, perm=None) -> str:
    return f"{p.atom(x)}.T" if perm is None else f"{p.atom(x)}.permute{literal(perm)}"


def _matmul(p: Printer, a, b, out=None):
    if out is None:
        # (a scaled operand in parentheses: (0.125 * Q) @ K.T, not 0.125 * Q @ K.T)
        return f"{p.wrap(a, 4)} @ {p.wrap(b, 4)}"
    return f"torch.matmul({p.expr(a)}, {p.expr(b)}, out={p.expr(out)})"


def _einsum(p: Printer, spec, *args, path=None) -> str:
    ops = ", ".join(p.expr(a) for a in args)
    if path is None or len(args) < 3:
        return f"torch.einsum({p.expr(spec)}, {ops})"
    p.used.add("_einsum")
    return f"_einsum({p.expr(spec)}, {literal([tuple(x) for x in path])}, {ops})"


def _elements(node):
    """A stride value in bytes (NumPy's convention, as the lowering writes it)
    rewritten in elements (torch's): ``x.strides`` is ``x.stride()`` in
    elements and ``x.itemsize`` is 1."""
    if isinstance(node, Attr) and node.attr == "itemsize":
        return Lit(1)
    if isinstance(node, Attr) and node.attr == "strides":
        return Apply("stride", (node.base,))
    if isinstance(node, Op):
        args = tuple(_elements(a) for a in node.args)
        if node.op == "*" and Lit(1) in args:
            return args[0] if args[1] == Lit(1) else args[1]
        return Op(node.op, args)
    if isinstance(node, Tup):
        return Tup(tuple(_elements(a) for a in node.items))
    if hasattr(node, "base") and hasattr(node, "parts"):      # Index
        return type(node)(_elements(node.base), node.parts)
    return node


def _as_strided(p: Printer, x, shape, strides) -> str:
    assert not any(isinstance(n, Attr) and n.attr == "itemsize" for n in walk(shape))
    return f"torch.as_strided({p.expr(x)}, {p.expr(shape)}, {p.expr(_elements(strides))})"


def _where(p: Printer, cond, x) -> str:
    """A select. A condition with no array in it (``t >= 1`` at a fixed step
    ``t`` of a recurrence) is a Python bool, which torch.where does not take."""
    c = p.expr(cond)
    if not any(isinstance(n, (Apply, Index)) for n in walk(cond)):
        c = f"torch.tensor({c}, device=dt.device)"
    return f"torch.where({c}, _tensor({p.expr(x)}, dt), 0.0)"


# backends/inplace.py's steps (an elementwise operation written into ``out``):
# the in-place method where ``out`` is the first operand (``P.mul_(M)``,
# ``S.exp_()``), else the function with ``out=``. torch's functions take a
# tensor first: a product or sum with a number first is written the other way
# round (the same bits), a difference or quotient takes the number as a 0-d tensor.
_OPERATORS = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "div",
              "negative": "neg"}
_COMMUTING = {"add", "multiply"}


def _is_tensor(node) -> bool:
    """Whether a value prints as a tensor (a number literal, or a conditional
    that may be one, does not)."""
    if isinstance(node, Lit):
        return False
    if isinstance(node, Op):
        return any(_is_tensor(a) for a in node.args)
    return not (isinstance(node, Apply) and node.op == "if_nonzero")


def _ufunc(p: Printer, op, *args, out) -> str:
    name = op.value if isinstance(op, Lit) else op
    args = list(args)
    if name in _COMMUTING and (args[1] == out or not _is_tensor(args[0])):
        args.reverse()
    fn, keywords = _OPERATORS.get(name) or name[3:], []
    if name in ("fn:max", "fn:min") and not all(_is_tensor(a) for a in args):
        # max(x, 0.1): a clamp (torch.maximum takes tensors only)
        x, c = (args[1], args[0]) if _is_tensor(args[1]) else (args[0], args[1])
        fn, args = "clamp", [x]
        keywords = [f"{'min' if name == 'fn:max' else 'max'}={p.expr(c)}"]
    elif name in ("fn:max", "fn:min"):
        fn = "maximum" if name == "fn:max" else "minimum"     # (no in-place method)
    elif name == "fn:relu":
        fn, keywords = "clamp", ["min=0.0"]     # torch.relu has no out=
    if not _is_tensor(args[0]):
        args[0] = Apply("tensor_of", (args[0],))
    more = [p.expr(a) for a in args[1:]] + keywords
    if args[0] == out and fn not in ("maximum", "minimum"):
        return f"{p.atom(out)}.{fn}_({', '.join(more)})"
    return f"torch.{fn}({', '.join([p.expr(args[0]), *more, f'out={p.expr(out)}'])})"


def _fn(code: str):
    return call(code)


def _two_arg(name: str, bound: str):
    """max/min of two values: ``torch.maximum`` on two tensors, a clamp when
    one side is a number (torch.maximum takes tensors only)."""
    def emit(p: Printer, a, b):
        if isinstance(b, Lit):
            return f"torch.clamp({p.expr(a)}, {bound}={p.expr(b)})"
        if isinstance(a, Lit):
            return f"torch.clamp({p.expr(b)}, {bound}={p.expr(a)})"
        return f"torch.{name}({p.expr(a)}, {p.expr(b)})"
    return emit, ATOM


# The language's functions (tcc.functions rows) in torch.
FUNCTIONS = {
    "fn:exp": _fn("torch.exp({0})"),
    "fn:log": _fn("torch.log({0})"),
    "fn:sqrt": _fn("torch.sqrt({0})"),
    "fn:tanh": _fn("torch.tanh({0})"),
    "fn:sigmoid": _fn("torch.sigmoid({0})"),
    "fn:relu": _fn("torch.relu({0})"),
    "fn:abs": _fn("torch.abs({0})"),
    "fn:sin": _fn("torch.sin({0})"),
    "fn:cos": _fn("torch.cos({0})"),
    "fn:max": _two_arg("maximum", "min"),
    "fn:min": _two_arg("minimum", "max"),
}

TORCH_CODE = {
    **FUNCTIONS,
    "as_float": method("{0}.to(dt)"),
    "scalar": call("dt.new_full((), {0})"),
    "transpose": (lambda p, x, perm=None: _transpose(p, x, perm), ATOM),
    "sum": (lambda p, x, axis: f"{p.atom(x)}.sum(dim={_dims(axis)})", ATOM),
    "max": (lambda p, x, axis: f"_amax({p.expr(x)}, {_dims(axis)})", ATOM),
    "min": (lambda p, x, axis: f"_amin({p.expr(x)}, {_dims(axis)})", ATOM),
    "broadcast_to": call("torch.broadcast_to(_tensor({0}, dt), {1})"),
    "matmul": (lambda p, a, b, out=None: _matmul(p, a, b, out), 3),
    "tensordot": (lambda p, a, b, axes: f"torch.tensordot({p.expr(a)}, {p.expr(b)}, "
                                        f"dims={literal(axes)})", ATOM),
    "einsum": (_einsum, ATOM),
    "contiguous": method("{0}.contiguous()"),
    "reshape": method("{0}.reshape({1})"),
    "as_strided": (_as_strided, ATOM),
    "stride": method("{0}.stride()"),
    "strided_view": call("_view({0}, {1}, {2}, {3})"),
    "arange_axis": call("_ix({0}, {1}, {2}, dt.device)"),
    "zeros": (lambda p, shape: f"dt.new_zeros({_shape(p, shape)})", ATOM),
    "empty": (lambda p, shape: f"dt.new_empty({_shape(p, shape)})", ATOM),
    "full": (lambda p, shape, v: f"dt.new_full({_shape(p, shape)}, {p.expr(v)})", ATOM),
    "array": call("_array({0}, dt)"),
    "asarray": call("_asarray({0}, dt)"),
    "own": (lambda p, x: f"{p.atom(x)} if {p.atom(x)}._base is None else "
                         f"{p.atom(x)}.clone()", 0),
    "owned": (lambda p, x, shape: f"{p.atom(x)}._base is None and {p.atom(x)}.dtype == "
                                  f"dt.dtype and {p.atom(x)}.shape == {_shape(p, shape)}", 0),
    # library kernels (backends/kernels.py recognizes the statements they replace)
    "softmax": (lambda p, x, dim: f"torch.softmax({p.expr(x)}, dim={dim})", ATOM),
    "log_softmax": (lambda p, x, dim: f"torch.log_softmax({p.expr(x)}, dim={dim})", ATOM),
    "logsumexp": (lambda p, x, dim: f"torch.logsumexp({p.expr(x)}, dim={dim})", ATOM),
    "softmax_backward": (lambda p, g, y, dim: f"torch.ops.aten._softmax_backward_data("
                                              f"{p.expr(g)}, {p.expr(y)}, {dim}, dt.dtype)",
                         ATOM),
    "var_mean": (lambda p, x, dim: f"torch.var_mean({p.expr(x)}, dim={dim}, correction=0)",
                 ATOM),
    "layer_norm": (lambda p, x, w, b, eps: f"_layer_norm({p.expr(x)}, {p.expr(w)}, "
                                           f"{p.expr(b)}, {literal(eps)})", ATOM),
    "layer_norm_backward": (lambda p, dy, x, mean, rstd, w, mask: f"_layer_norm_backward("
                            f"{p.expr(dy)}, {p.expr(x)}, {p.expr(mean)}, {p.expr(rstd)}, "
                            f"{p.expr(w)}, {literal(mask)})", ATOM),
    "conv": (lambda p, x, w, n, stride: f"torch.nn.functional.conv{n}d({p.expr(x)}, "
                                        f"{p.expr(w)}, stride={literal(stride)})", ATOM),
    "conv_weight": (lambda p, x, shape, g, n, stride: f"torch.nn.grad.conv{n}d_weight("
                    f"{p.expr(x)}, {p.expr(shape)}, {p.expr(g)}, stride={literal(stride)})",
                    ATOM),
    "conv_input": (lambda p, shape, w, g, n, stride: f"torch.nn.grad.conv{n}d_input("
                   f"{p.expr(shape)}, {p.expr(w)}, {p.expr(g)}, stride={literal(stride)})",
                   ATOM),
    "conv_backward": (lambda p, x, w, g, n, stride: f"_conv_backward({p.expr(x)}, "
                      f"{p.expr(w)}, {p.expr(g)}, {literal(stride)})", ATOM),
    "ufunc": (_ufunc, ATOM),
    "tensor_of": call("_tensor({0}, dt)"),
    "fit": call("_fit({0}, {1})"),
    "conv_extent": call("_extent({0}, {1}, {2})"),
    "min_at": call("_min_at({0}, {1}, {2})"),
    "arange": call("torch.arange({0}, device=dt.device)"),
    "diagonal": (lambda p, x, axis1=0, axis2=1: f"torch.diagonal({p.expr(x)}, dim1={axis1}, "
                                                f"dim2={axis2})", ATOM),
    "where": (lambda p, c, x: _where(p, c, x), ATOM),
    "both": call("torch.logical_and({0}, {1})"),
    # exact where the selection removes an inf or nan of o, checked on the device
    # (no read back to the host): the helper, whatever the data
    "masked_product": (lambda p, product, spec, keep, s, o, bind=None: f"_masked_product("
                       f"{p.expr(spec)}, {p.expr(keep)}, {p.expr(s)}, "
                       f"{p.expr(o if bind is None else bind)})", ATOM),
    "cumsum": call("torch.cumsum({0}, dim={axis})"),
    "flip": call("torch.flip({0}, dims=({axis},))"),
    "tril": (lambda p, x, k=0: _triangle(p, "torch.tril", x, k), ATOM),
    "triu": (lambda p, x, k=0: _triangle(p, "torch.triu", x, k), ATOM),
    "pad": call("_pad({0}, {1})"),
    "add_at": call("_add_at({0}, {1}, {2})"),
    "max_at": call("_max_at({0}, {1}, {2})"),
    "add_affine": call("_add_affine({0}, {1}, {2}, {3})"),
}
# row_blocks come only in row-block groups, and tuned in measured choices, which the
# torch backend leaves off
assert set(NUMPY_CODE) <= set(TORCH_CODE) | {"imax", "if_nonzero", "row_blocks", "tuned"}, \
    set(NUMPY_CODE) - set(TORCH_CODE)

TORCH_HELPERS = {"strided_view": ("_view",), "arange_axis": ("_ix",),
                 "add_affine": ("_add_affine",), "add_at": ("_add_at", "_indices", "_tensor"),
                 "max_at": ("_max_at", "_indices", "_tensor"), "max": ("_amax",),
                 "min_at": ("_min_at", "_indices", "_tensor"), "where": ("_tensor",),
                 "tensor_of": ("_tensor",),
                 "pad": ("_pad",),
                 "min": ("_amin",), "broadcast_to": ("_tensor",), "array": ("_array",),
                 "asarray": ("_asarray",), "layer_norm": ("_layer_norm",),
                 "layer_norm_backward": ("_layer_norm_backward",), "fit": ("_fit",),
                 "conv_extent": ("_extent",), "conv_backward": ("_conv_backward",),
                 "masked_product": ("_masked_product",)}


class TorchPrinter(Printer):
    """The printer of torch modules: a language function with no torch row is
    an error at generation (its row's code is NumPy's)."""

    def function(self, n: Apply):
        functions.lookup(n.op[3:])
        raise NotImplementedError(f"the {self.backend} backend has no code for function "
                                  f"'{n.op[3:]}': add a 'fn:{n.op[3:]}' row to "
                                  "backends/torch_backend.py")


class TorchBackend(Backend):
    def printer(self) -> Printer:
        return TorchPrinter(self.code, self.module, self.name)


BACKEND = TorchBackend("torch", ["import itertools", "", "import torch"],
                       {**NUMPY_CODE, **TORCH_CODE}, "torch", TORCH_HELPERS, "torch",
                       runtime="torch", helper_module="torch_helpers",
                       # the module computes gradients itself: no autograd tape
                       decorator="@torch.no_grad()", in_place=True)
