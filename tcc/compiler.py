"""Checked IR -> a standalone Python module (LANGUAGE.md section 4).

``compile_source`` writes the module text; ``compile`` executes it and
returns a Kernel with ``.forward``, ``.backward`` and ``.source``, cached by
source text and options.

It is one module near 600 lines on purpose: it is the module generator, and
its parts (header, size plan, runtime selection, forward, backward, the
self-check tail) each emit one section of one file, in order. The lowering,
the runtime and the second-order functions are elsewhere (``backends/``,
``_rt.py``, ``compiler_second.py``).
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import os
import pprint
import re
from importlib import resources

from . import __version__
from .check import Info
from .ir import base_name, is_grad, grad_name, py_name, reads
from .parse import read_source
from .pipeline import Pipeline

def _backend(name: str):
    from .backends import get
    return get(name)


@functools.lru_cache(maxsize=1)
def _runtime_parts() -> tuple[tuple[str, frozenset, frozenset, str], ...]:
    """tcc/_rt.py, the one source of the run-time code that tcc and every
    module share, as its top-level pieces: (kind, names defined, names read,
    text). A module copies only the pieces its code reaches."""
    text = resources.files("tcc").joinpath("_rt.py").read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    parts = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            kind, defined = "import", frozenset()
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            kind, defined = "def", frozenset([node.name])
        elif isinstance(node, ast.Assign):
            kind = "def"
            defined = frozenset(t.id for t in node.targets if isinstance(t, ast.Name))
        else:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        used = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name)) - defined
        parts.append((kind, defined, used, "\n".join(lines[start - 1:node.end_lineno])))
    return tuple(parts)


def _runtime_source(code: str) -> str:
    """The pieces of the runtime that ``code`` (the rest of the module) reaches,
    directly or through each other, in the runtime's order."""
    parts = _runtime_parts()
    words = set(re.findall(r"[A-Za-z_]\w*", code))
    keep: set[int] = set()
    todo = [i for i, (kind, defined, _, _) in enumerate(parts)
            if kind == "def" and defined & words]
    while todo:
        i = todo.pop()
        if i in keep:
            continue
        keep.add(i)
        todo += [j for j, (kind, defined, _, _) in enumerate(parts)
                 if kind == "def" and j not in keep and defined & parts[i][2]]
    chosen = [text for i, (kind, _, _, text) in enumerate(parts) if kind == "import" or i in keep]
    return "\n\n\n".join(chosen) + "\n"


@functools.lru_cache(maxsize=1)
def _torch_runtime_source() -> str:
    """The torch module's runtime: _rt.py's size checks (bind_sizes renamed
    _bind_sizes, which torch's bind_sizes calls on tensor shapes) and argument
    checks, then _rt_torch.py without its imports."""
    names = {"_rt_size", "_rt_span", "bind_sizes", "seed_names", "need_saved"}
    shared = [text for kind, defined, _, text in _runtime_parts() if defined & names]
    shared = [t.replace("def bind_sizes(", "def _bind_sizes(", 1) for t in shared]
    own = resources.files("tcc").joinpath("_rt_torch.py").read_text()
    body = [line for line in own.splitlines()
            if not line.startswith(("#", "import ", "_bind_sizes = "))]
    return "\n\n\n".join(shared) + "\n\n\n" + "\n".join(body).strip() + "\n"


def _plan_py(plan):
    """The plan with tensor names spelled as Python names (the keyword names)."""
    out = []
    for step in plan:
        kind = step[0]
        if kind == "shape":
            out.append((kind, py_name(step[1]), *step[2:]))
        elif kind == "bounds":
            out.append((kind, py_name(step[1]), *step[2:]))
        elif kind == "gather":
            out.append((kind, py_name(step[1]), py_name(step[2]), *step[3:]))
        elif kind == "valid":
            cons = tuple((py_name(c[0]), *c[1:]) for c in step[3])
            out.append((kind, step[1], step[2], cons))
        else:
            out.append(step)
    return out


def _header(p: Pipeline, backend, second_order: bool = False) -> str:
    src = os.path.basename(p.filename) if p.filename else "a .loop program"
    fwd = "\n".join("    " + line for line in str(p.info.program).splitlines())
    bwd = "\n".join("    " + line for line in str(p.backward).splitlines()
                    if not line.startswith(("dim ", "data ", "output ")))
    inputs = ", ".join(f"{py_name(t)}={py_name(t)}" for t in p.info.inputs)
    seeds = ", ".join(f'"{o}": d{py_name(o)}' for o in p.info.outputs)
    opt = "optimized" if p.optimize else "not optimized"
    if second_order:
        from .compiler_second import DOCS
        second = "\n".join(f"    {sig}" for sig, _ in DOCS.values())
        seeds_ = seeds
        usage_more = (f"\n    tangents = jvp({{...}}, {inputs})\n"
                      f"    hv = hvp({{...}}, {{{seeds_}}}, {inputs})\n\n"
                      f"Second order (forward mode over the backward):\n{second}\n")
    else:
        usage_more = ""
    return f'''"""Compiled by tcc {__version__} from {src} (backend: {backend.name}, {opt}).

Generated code: regenerate it with `tcc compile` rather than editing it.
It needs {backend.requires} only, never tcc.

The program:
{fwd}

Its backward (the gradients):
{bwd or "    (nothing: no output depends on an input or param)"}

Usage:
    fwd = forward({inputs})
    grads = backward({{{seeds}}}, {inputs}, **fwd){usage_more}

Run `python {os.path.splitext(src)[0] if p.filename else "module"}.py --check` to check the
gradients against finite differences on random inputs.
"""
'''


def _helper_source(names: set[str], module: str = "helpers") -> str:
    import importlib
    helpers = importlib.import_module(f"tcc.backends.{module}")
    order = ["_sigmoid", "_ix", "_view", "_add_affine", "_contract", "_tuned", "_row_blocks"]
    order += [n for n in sorted(names) if n not in order]
    parts = []
    for name in order:
        if name in names:
            if name == "_contract":
                parts.append("_EXPRESSIONS = {}\n")
            if name == "_tuned" or name == "_row_blocks" and "_tuned" not in names:
                # the measured choices' state, which both of them use
                parts.append(_helpers_section(helpers, "# Measured choices", "def _tuned("))
            if name == "_row_blocks":
                parts.append(_helpers_section(helpers, "# Row blocks."))
                continue
            parts.append(inspect.getsource(getattr(helpers, name)))
    return "\n\n".join(parts)


def _helpers_section(helpers, start: str, end: str | None = None) -> str:
    """Part of the measured-choice and row-block runtime: helpers.py from the
    text ``start`` to the text ``end`` (or to its end)."""
    text = inspect.getsource(helpers)
    text = text[text.index(start):text.index(end) if end else len(text)]
    return text.rstrip() + "\n"


def _function_body(info: Info, names, printer, returned=(), row_blocks: bool = False,
                   forward: Info | None = None, in_place: bool = False
                   ) -> tuple[list[str], object]:
    """The lowered statements of one generated function, printed; ``returned``:
    the tensors it returns (a library kernel never hides one of them);
    ``forward``: the forward's Info, for a backward (its kernels may need it)."""
    from .backends import kernels
    from .backends.lower import lower_program
    from .backends.operands import Context
    from .backends.target import Name, walk
    ctx = Context(info, names, row_blocks=row_blocks, returned=set(returned),
                  in_place=in_place)
    ops = {op for op in kernels.KERNEL_OPS if op in printer.code}
    if ops:
        ctx.kernels = kernels.plan(info, returned, ops, forward)
    from .backends import reuse
    ctx.kernels.update(reuse.plan(info, ctx.kernels))
    # integer data that is read as a number as well as used for gathers
    value_reads = {r.tensor for si in info.stmts for r in reads(si.stmt.expr)}
    for t in sorted(info.gather_data & value_reads):
        ctx.value_casts[t] = names(t + "__value")
    stmts = lower_program(ctx)
    # the sizes the statements read (a size asked for but not printed is not bound)
    seen = {n.name for s in stmts for n in walk(s) if isinstance(n, Name)}
    ctx.used = {sym for sym in ctx.used if names(sym) in seen}
    return printer.lines(stmts), ctx


def _size_lines(ctx, names) -> list[str]:
    used = sorted(ctx.used, key=str)
    if not used:
        return []
    line = f"{', '.join(names(d) for d in used)} = " + ", ".join(f'sizes["{d}"]' for d in used)
    if len(line) <= 92:
        return [line]
    return [f'{names(d)} = sizes["{d}"]' for d in used]


def _unpack(tensors, names, source="arrays") -> list[str]:
    return [f'{names(t)} = {source}["{py_name(t)}"]' for t in tensors]


def backward_reads(p: Pipeline, backend_name: str = "numpy") -> tuple[list, list, set]:
    """(the forward-computed values the generated backward reads, every tensor
    it reads but its seeds, the backward program's inputs it does not read).
    Those of the backward program (``p.saved``), except where a library kernel
    of the backend reads others: torch's layer norm backward reads x and the
    mean in place of the centred x (backends/layernorm.py)."""
    from .backends import kernels, layernorm
    code = _backend(backend_name).code
    drop, add = layernorm.saved_changes(p.info, p.binfo,
                                        {op for op in kernels.KERNEL_OPS if op in code})
    info = p.info
    saved = list(dict.fromkeys([t for t in p.saved if t not in drop] +
                               [t for t in add if t in info.computed]))
    reads = list(dict.fromkeys([t for t in p.binfo.inputs if t not in drop and not
                                (is_grad(t) and base_name(t) in info.outputs)] + add))
    return saved, reads, drop


def generate(p: Pipeline, backend_name: str = "numpy", second_order: bool = False) -> str:
    """The module's text; ``second_order`` adds jvp, hvp and hessian_diagonal."""
    backend = _backend(backend_name)
    from .backends.operands import Names
    info, binfo = p.info, p.binfo
    ranges = [v for i in (info, binfo) for si in i.stmts for v in si.ranges.values()
              if isinstance(v, str)]
    claimed = [*info.roles, *binfo.roles, *info.dims, *binfo.dims, *ranges]
    if second_order:
        from . import compiler_second
        derived = compiler_second.derived_programs(p)
        claimed += compiler_second.claimed_names(derived)
    names = Names(dict.fromkeys(claimed))
    printer = backend.printer()
    local_name = names
    gradcheck_positive = _positive(p.original)

    # ---- forward
    kinds = {py_name(t): ("gather" if t in info.gather_data else "float") for t in info.inputs}
    saved_values, backward_tensors, unread = backward_reads(p, backend_name)
    returned = list(info.outputs) + [t for t in saved_values if t not in info.outputs]
    if not p.optimize:
        returned = list(info.outputs) + [t for t in info.computed if t not in info.outputs]
    fbody, fctx = _function_body(info, names, printer, returned, backend.row_blocks,
                                 in_place=backend.in_place)
    deco = [backend.decorator] if backend.decorator else []
    fwd = [*deco, "def forward(**tensors):"]
    fwd.append(f'    """Run the program. Takes {_takes(info)}.')
    fwd.append("")
    kept = [py_name(t) for t in returned if t not in info.outputs]
    fwd.append(f"    Returns the outputs ({', '.join(map(py_name, info.outputs))})"
               + (f" and the values the backward reads ({', '.join(kept)})." if kept else "."))
    fwd.append('    """')
    fwd.append('    arrays, dt = take(tensors, _FORWARD_KINDS, "forward")')
    fsizes = _size_lines(fctx, names)
    fwd.append(("    sizes = " if fsizes else "    ") + "bind_sizes(_FORWARD_PLAN, arrays)")
    pre = _unpack(info.inputs, names)
    for t, name in fctx.value_casts.items():
        pre.append(f"{name} = {_cast(printer, local_name(t))}")
    pre += fsizes
    fwd += ["    " + line for line in pre + fbody]
    fwd.append("    return {" + ", ".join(f'"{py_name(t)}": {local_name(t)}'
                                         for t in returned) + "}")

    # ---- backward
    bbody, bctx = _function_body(binfo, names, printer,
                                 [grad_name(t) for t in info.differentiable], backend.row_blocks,
                                 forward=info, in_place=backend.in_place)
    seeds = [t for t in binfo.inputs if is_grad(t) and base_name(t) in info.outputs]
    saved = [t for t in backward_tensors if t not in seeds and t not in info.inputs]
    bkinds = dict(kinds)
    for t in info.computed:
        bkinds[py_name(t)] = "float"
    optional = [py_name(t) for t in info.computed]
    bwd = [*deco, "def backward(grads, /, **tensors):"]
    bwd.append('    """Gradients. grads: {output name: its .grad} (a missing one counts as')
    bwd.append("    zero); tensors: the forward's inputs and the dict forward() returned.")
    bwd.append(f"    Returns {{name: gradient}} for {', '.join(info.differentiable) or 'nothing'}"
               + (" (params averaged over the batch)." if any(
                   info.roles[t] == "param" for t in info.differentiable) and info.batch
                  else "."))
    bwd.append('    """')
    bwd.append('    arrays, dt = take(tensors, _BACKWARD_KINDS, "backward", _SAVED_OPTIONAL)')
    bwd.append("    sizes = bind_sizes(_FORWARD_PLAN, {t: arrays[t] for t in _FORWARD_KINDS})")
    if saved:
        bwd.append(f"    need_saved({', '.join(repr(py_name(t)) for t in saved)}, arrays=arrays)")
    bwd.append("    seed_names(grads, _OUTPUTS)")
    for t in seeds:
        o = base_name(t)
        shape = "(" + ", ".join(f'sizes["{d}"]' if isinstance(d, str) else str(d)
                                for d in info.shapes[o]) + \
            ("," if len(info.shapes[o]) == 1 else "") + ")"
        bwd.append(f'    arrays["{py_name(t)}"] = seed(grads, "{o}", {shape}, dt)')
    bpre = _unpack([t for t in binfo.inputs if t not in unread] +
                   [t for t in backward_tensors if t not in binfo.inputs], names)
    for t, name in bctx.value_casts.items():
        bpre.append(f"{name} = {_cast(printer, local_name(t))}")
    size_lines = _size_lines(bctx, names)
    bwd.append(("    sizes = " if size_lines else "    ") +
               "bind_sizes(_BACKWARD_PLAN, arrays, sizes)")
    bpre += size_lines
    bwd += ["    " + line for line in bpre + bbody]
    ret = []
    for t in info.differentiable:
        g = grad_name(t)
        if g in binfo.computed:
            ret.append(f'"{t}": {local_name(g)}')
        else:
            shape = "(" + ", ".join(f'sizes["{d}"]' if isinstance(d, str) else str(d)
                                    for d in info.shapes[t]) + \
                ("," if len(info.shapes[t]) == 1 else "") + ")"
            ret.append(f'"{t}": {_zeros(printer, shape)}')
    bwd.append("    return {" + ", ".join(ret) + "}")

    # the checks of what the backward reads (a kernel's reads in place of the program's)
    bplan = [s for s in binfo.plan if not (s[0] == "shape" and s[1] in unread)] + \
        [("shape", t, tuple(info.shapes[t]), False) for t in backward_tensors
         if t in info.computed and t not in binfo.inputs]

    second_consts, second_funcs = [], []
    if second_order:
        second_consts, second_funcs = compiler_second.functions(
            p, derived, names, printer, _function_body, _size_lines, _unpack,
            backend.decorator)

    helpers = backend.helpers_for(printer.used)
    from .gradcheck import choose_sizes
    try:
        defaults = choose_sizes(p.original)
    except Exception:  # noqa: BLE001 - defaults are a convenience only
        defaults = {}
    rnd = {}
    limits = {}
    for step in info.plan:
        if step[0] == "gather":
            limits.setdefault(py_name(step[1]), []).append(step[4])
    from .gradcheck import comparison_limits
    for data, size in comparison_limits(info):
        limits.setdefault(py_name(data), []).append(size)
    for t in info.inputs:
        kind = "gather" if t in info.gather_data else (
            "positive" if gradcheck_positive else "normal")
        rnd[py_name(t)] = (tuple(info.shapes[t]), kind)
    params = {py_name(t): info.roles[t] for t in info.differentiable}

    consts = [
        f"_FORWARD_KINDS = {kinds!r}",
        f"_BACKWARD_KINDS = {bkinds!r}",
        f"_SAVED_OPTIONAL = {tuple(optional)!r}",
        f"_OUTPUTS = {tuple(info.outputs)!r}",
        f"_DIFFERENTIABLE = {params!r}",
        f"_BATCH = {info.batch!r}",
        f"_DEFAULT_SIZES = {defaults!r}",
        f"_RANDOM = {rnd!r}",
        f"_GATHER_LIMITS = {limits!r}",
        "_FORWARD_PLAN = " + pprint.pformat(_plan_py(info.plan), width=96, compact=True),
        "_BACKWARD_PLAN = " + pprint.pformat(_plan_py(bplan), width=96, compact=True),
        *second_consts,
    ]
    torch = backend.runtime == "torch"
    rest = [] if torch else [_module_runtime()]
    if second_order:
        rest.append(compiler_second.RUNTIME)
    if helpers:
        rest.append("# ---- helpers\n\n" + _helper_source(helpers, backend.helper_module))
    rest += [
        "# ---- the program's tensors, sizes and checks\n\n" + "\n".join(consts),
        "\n".join(fwd),
        "\n".join(bwd),
        *second_funcs,
        _tail(second_order, torch),
    ]
    parts = [
        _header(p, backend, second_order),
        "# ruff: noqa: E501  (each statement is one line, quoted above the code for it)",
        "\n".join(backend.imports_for(printer.used) +
                  (["import itertools"] if "_add_affine" in helpers and
                   "import itertools" not in backend.imports else [])),
        "# ---- run-time checks, shared with tcc's reference interpreter (tcc/_rt.py)",
        _torch_runtime_source() if torch else _runtime_source("\n".join(rest)),
    ] + rest
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"


def _cast(printer, name: str) -> str:
    """Integer data read as a number, in the computation dtype."""
    from .backends.target import Apply, Name
    return printer.expr(Apply("as_float", (Name(name),)))


def _zeros(printer, shape: str) -> str:
    """A zero gradient (no output depends on the tensor)."""
    from .backends.target import Apply
    return printer.expr(Apply("zeros", (shape,)))


def _tail(second_order: bool, torch: bool = False) -> str:
    tail = _TORCH_TAIL if torch else _TAIL
    if not second_order:
        return tail
    from .compiler_second import SELF_CHECK, TORCH_SELF_CHECK
    check = TORCH_SELF_CHECK if torch else SELF_CHECK
    return tail.replace("def _self_check(seed=0):",
                        check + "\n\n\ndef _self_check(seed=0):").replace(
        "sys.exit(0 if _self_check() else 1)",
        "sys.exit(0 if _self_check() & _self_check_second_order() else 1)")


def _takes(info: Info) -> str:
    items = []
    for t in info.inputs:
        shape = info.shapes[t]
        items.append(f"{py_name(t)}{'[' + ', '.join(map(str, shape)) + ']' if shape else ''}")
    return ", ".join(items) or "nothing"


def _positive(info: Info) -> bool:
    from .gradcheck import _positive_only
    return _positive_only(info.program)


def _module_runtime() -> str:
    """The numpy module's seed check (seed_names and need_saved are in _rt.py)."""
    return '''def seed(grads, name, shape, dt, what="seed"):
    g = grads.get(name)
    if g is None:
        return np.zeros(shape, dtype=dt)
    g = np.asarray(g)
    if g.dtype.kind == "c":
        raise ValueError(f"the {what} for '{name}' is complex ({g.dtype})")
    if g.shape != tuple(shape):
        raise ValueError(f"the {what} for '{name}' has shape {g.shape}, but '{name}' has "
                         f"shape {tuple(shape)}")
    return g.astype(dt, copy=False)'''


# The end of every module's _self_check and its __main__, for both runtimes.
_CHECK_REST = '''    grads = backward(seeds, **inputs, **fwd)

    def loss(tensors):
        out = forward(**tensors)
        return sum(float((seeds[o] * out[o.replace(".", "_")]).sum())
                   for o in _OUTPUTS)

    sizes = bind_sizes(_FORWARD_PLAN, inputs)
    scale = {t: 1.0 / sizes[_BATCH] for t, role in _DIFFERENTIABLE.items()
             if role == "param" and _BATCH}
    noise = fd_noise({o: fwd[o.replace(".", "_")] for o in _OUTPUTS}, seeds, inputs)
    rows = fd_check(loss, inputs, {t: grads[t] for t in _DIFFERENTIABLE}, scale, noise)
    print(f"{'gradient':<16} {'shape':<16} {'rel. error':>16}  status")
    for name, shape, err, _skipped, ok, note in rows:
        shown = str(list(shape)) if shape else "scalar"
        print(f"{name + '.grad':<16} {shown:<16} {err:>16.2e}  "
              f"{'ok' if ok else 'FAIL'}{'  ' + note if note else ''}")
    return all(row[4] for row in rows)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if _self_check() else 1)
    print(__doc__)
    print("Run with --check to check the gradients against finite differences.")'''


_TAIL = '''def random_inputs(seed=0, **sizes):
    """Valid random inputs: float64 values, integers in range for gather data.
    Sizes default to small ones; pass e.g. B=8 to change one."""
    unknown = [d for d in sizes if d not in _DEFAULT_SIZES]
    if unknown:
        raise ValueError(f"unknown size {', '.join(unknown)}; the sizes are "
                         f"{', '.join(_DEFAULT_SIZES) or 'none'}")
    dims = {**_DEFAULT_SIZES, **sizes}
    rng = np.random.default_rng(seed)
    out = {}
    for name, (entries, kind) in _RANDOM.items():
        shape = tuple(e if isinstance(e, int) else dims[e] for e in entries)
        if kind == "gather":
            out[name] = np.zeros(shape, dtype=np.int64)
        elif kind == "positive":
            out[name] = rng.uniform(0.5, 1.5, size=shape)
        else:
            out[name] = rng.standard_normal(shape)
    full = bind_sizes(_FORWARD_PLAN, out)
    for name, syms in _GATHER_LIMITS.items():
        high = min(s if isinstance(s, int) else full[s] for s in syms)
        out[name] = rng.integers(0, max(high, 1), size=out[name].shape)
    return out


def _self_check(seed=0):
    """Check backward() against central finite differences of forward()."""
    inputs = random_inputs(seed)
    fwd = forward(**inputs)
    rng = np.random.default_rng(seed + 1)
    seeds = {o: rng.standard_normal(np.shape(fwd[o.replace(".", "_")]))
             for o in _OUTPUTS}
''' + _CHECK_REST


_TORCH_TAIL = '''def random_inputs(seed=0, **sizes):
    """Valid random inputs, as CPU tensors: float64 values, int64 positions in
    range for gather data (move them with .to(device)). Sizes default to small
    ones; pass e.g. B=8 to change one."""
    unknown = [d for d in sizes if d not in _DEFAULT_SIZES]
    if unknown:
        raise ValueError(f"unknown size {', '.join(unknown)}; the sizes are "
                         f"{', '.join(_DEFAULT_SIZES) or 'none'}")
    dims = {**_DEFAULT_SIZES, **sizes}
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for name, (entries, kind) in _RANDOM.items():
        shape = tuple(e if isinstance(e, int) else dims[e] for e in entries)
        if kind == "gather":
            out[name] = torch.zeros(shape, dtype=torch.int64)
        elif kind == "positive":
            out[name] = 0.5 + torch.rand(shape, generator=rng, dtype=torch.float64)
        else:
            out[name] = torch.randn(shape, generator=rng, dtype=torch.float64)
    full = bind_sizes(_FORWARD_PLAN, out)
    for name, syms in _GATHER_LIMITS.items():
        high = min(s if isinstance(s, int) else full[s] for s in syms)
        out[name] = torch.randint(0, max(high, 1), out[name].shape, generator=rng)
    return out


def _self_check(seed=0):
    """Check backward() against central finite differences of forward()."""
    inputs = random_inputs(seed)
    fwd = forward(**inputs)
    rng = torch.Generator().manual_seed(seed + 1)
    seeds = {o: torch.randn(fwd[o.replace(".", "_")].shape, generator=rng,
                            dtype=torch.float64) for o in _OUTPUTS}
''' + _CHECK_REST


# ---------------------------------------------------------------- the API

def compile_source(text_or_path, backend: str = "numpy", optimize: bool = True,
                   second_order: bool = False) -> str:
    """The generated module's text (with jvp, hvp and hessian_diagonal when
    ``second_order``)."""
    text, filename = read_source(text_or_path)
    _backend(backend)
    return _generate(text, filename, backend, optimize, second_order)


def _generate(text, filename, backend, optimize, second_order) -> str:
    from .errors import TccError
    p = Pipeline(text, filename, optimize)
    try:
        return generate(p, backend, second_order)
    except TccError as err:
        raise err.attach(filename, text) from None


class Kernel:
    """A compiled program: ``forward(**tensors)``, ``backward(grads, **tensors)``."""

    def __init__(self, source: str, name: str):
        self.source = source
        namespace: dict = {"__name__": f"tcc_generated_{name}"}
        exec(builtins.compile(source, f"<tcc: {name}>", "exec"), namespace)
        self.forward = namespace["forward"]
        self.backward = namespace["backward"]
        self.random_inputs = namespace["random_inputs"]
        for extra in ("jvp", "hvp", "hessian_diagonal"):
            if extra in namespace:
                setattr(self, extra, namespace[extra])
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"<tcc.Kernel {self.namespace['__name__']}>"


@functools.lru_cache(maxsize=128)
def _compile_cached(text: str, filename: str | None, backend: str, optimize: bool,
                    second_order: bool = False) -> Kernel:
    source = _generate(text, filename, backend, optimize, second_order)
    name = os.path.splitext(os.path.basename(filename))[0] if filename else "program"
    return Kernel(source, name)


def compile(text_or_path, backend: str = "numpy", optimize: bool = True,  # noqa: A001
            second_order: bool = False) -> Kernel:
    """Compile a program (text, or a path to a .loop file) to a Kernel, cached by
    source and options; ``second_order`` adds ``jvp``, ``hvp`` and
    ``hessian_diagonal``."""
    text, filename = read_source(text_or_path)
    _backend(backend)
    return _compile_cached(text, filename, backend, bool(optimize), bool(second_order))
