"""The generated module's second-order functions (``tcc compile --second-order``):
``jvp``, ``hvp`` and ``hessian_diagonal``.

Each runs the forward the derived program was built from, then the derived
program (what ``tcc jvp``, ``tcc hvp`` and ``tcc hessian --diagonal`` print)
on its values: the module computes exactly the printed programs.
"""

from __future__ import annotations

import pprint

from .check import Info, analyze, size_symbols
from .forward import Derived, hessian_diagonal, hvp, jvp
from .ir import is_grad, py_name, shape_owner


def derived_programs(p) -> dict[str, tuple[Derived, Info]]:
    """{function name: (derived program, its checked form)} for a Pipeline."""
    out = {}
    for name, build in (("jvp", jvp), ("hvp", hvp), ("hessian_diagonal", hessian_diagonal)):
        d = build(p.original, optimize=p.optimize)
        out[name] = (d, analyze(d.program, reserved=size_symbols(d.forward)))
    return out


def claimed_names(programs) -> list[str]:
    """Every tensor and size name the second-order functions use, for the
    module's one table of Python names."""
    out: list[str] = []
    for d, dinfo in programs.values():
        for i in (d.forward, dinfo):
            out += [*i.roles, *i.dims]
            out += [v for si in i.stmts for v in si.ranges.values() if isinstance(v, str)]
    return out


def _shape_code(shape) -> str:
    return "(" + ", ".join(f'sizes["{d}"]' if isinstance(d, str) else str(d)
                           for d in shape) + ("," if len(shape) == 1 else "") + ")"


DOCS = {
    "jvp": ("jvp(tangents, /, **tensors)",
            "Forward mode: {output: its tangent Y.dot}. tangents: {input or param:\n"
            "    its direction X.dot} (a missing one counts as zero, an unknown name is a\n"
            "    ValueError); tensors: the inputs, params and data, as for forward()."),
    "hvp": ("hvp(tangents, grads, /, **tensors)",
            "Hessian-vector products: {input or param: H v}, the derivative of its\n"
            "    gradient (params averaged over the batch, as backward() gives) along the\n"
            "    directions. tangents: {input or param: its direction}; grads: {output:\n"
            "    its .grad}, as for backward(); tensors: as for forward()."),
    "hessian_diagonal": (
        "hessian_diagonal(grads, /, **tensors)",
        "The diagonal Hessian by the Becker-LeCun recursion (off-diagonal terms\n"
        "    neglected): {input or param: X.hess}. grads and tensors as for hvp()."),
}


def functions(p, programs, names, printer, body_of, size_lines, unpack,
              decorator: str = "") -> tuple[list, list]:
    """(constant lines, function texts) of the second-order functions; the
    printer's rows make the casts and zeros (NumPy or torch), ``decorator``
    is the backend's line before each function (torch's no_grad)."""
    from .compiler import _cast, _zeros
    consts, funcs = [], []
    info = p.original
    for fname, (d, dinfo) in programs.items():
        tag = fname.upper()
        # a library kernel (torch's) never hides what the derived program reads
        # of the forward, nor what it returns
        fbody, fctx = body_of(d.forward, names, printer,
                              [t for t in dinfo.inputs if t in d.forward.computed])
        body, ctx = body_of(dinfo, names, printer, list(d.results))
        consts.append(f"_{tag}_FORWARD_PLAN = " + pprint.pformat(
            _plan_py(d.forward.plan), width=96, compact=True))
        consts.append(f"_{tag}_PLAN = " + pprint.pformat(_plan_py(dinfo.plan), width=96,
                                                         compact=True))
        sig, doc = DOCS[fname]
        args = {"jvp": "tangents, /", "hvp": "tangents, grads, /",
                "hessian_diagonal": "grads, /"}[fname]
        out = [*([decorator] if decorator else []),
               f"def {fname}({args}, **tensors):", f'    """{doc}', '    """']
        out.append(f'    arrays, dt = take(tensors, _FORWARD_KINDS, "{fname}")')
        out.append(f"    sizes = bind_sizes(_{tag}_FORWARD_PLAN, arrays)")
        if fname != "hessian_diagonal":
            out.append(f'    tangent_names(tangents, _DIFFERENTIABLE, "{fname}")')
        if fname != "jvp":
            out.append("    seed_names(grads, _OUTPUTS)")
        pre = unpack(d.forward.inputs, names)
        for t, local in fctx.value_casts.items():
            pre.append(f"{local} = {_cast(printer, names(t))}")
        pre += size_lines(fctx, names)
        out += ["    " + line for line in pre + fbody]
        # the derived program's data: directions, seeds, the forward's values
        take_lines = ["derived = {}"]
        for t in dinfo.inputs:
            owner = shape_owner(t)
            if t.endswith(".dot") and owner in info.differentiable:
                take_lines.append(f'derived["{py_name(t)}"] = direction(tangents, "{owner}", '
                                  f'{_shape_code(info.shapes[owner])}, dt)')
            elif is_grad(t) and owner in info.outputs:
                take_lines.append(f'derived["{py_name(t)}"] = seed(grads, "{owner}", '
                                  f'{_shape_code(d.forward.shapes[owner])}, dt)')
            else:
                take_lines.append(f'derived["{py_name(t)}"] = {names(t)}')
        take_lines.append(f"sizes = bind_sizes(_{tag}_PLAN, derived, sizes)")
        take_lines += unpack(dinfo.inputs, names, "derived")
        for t, local in ctx.value_casts.items():
            take_lines.append(f"{local} = {_cast(printer, names(t))}")
        take_lines += size_lines(ctx, names)
        out += ["    " + line for line in take_lines + body]
        keys = list(info.outputs) if fname == "jvp" else list(info.differentiable)
        got = {plain: n for n, plain in d.results.items()}
        ret = []
        for k in keys:
            if k in got and got[k] in dinfo.computed:
                ret.append(f'"{k}": {names(got[k])}')
            else:
                ret.append(f'"{k}": {_zeros(printer, _shape_code(d.forward.shapes[k]))}')
        out.append("    return {" + ", ".join(ret) + "}")
        funcs.append("\n".join(out))
    return consts, funcs


def _plan_py(plan):
    from .compiler import _plan_py as plan_py
    return plan_py(plan)


# The second-order runtime, the same for both module kinds: a tangent is
# checked as a seed is (the runtime's seed(), with its own word).
RUNTIME = '''def tangent_names(tangents, names, what):
    unknown = [k for k in tangents if k not in names]
    if unknown:
        raise ValueError(f"{what}() got a tangent for {', '.join(map(repr, unknown))}, which "
                         f"is not an input or param; they are {', '.join(names) or 'none'}")


def direction(tangents, name, shape, dt):
    return seed(tangents, name, shape, dt, "tangent")'''


SELF_CHECK = '''def _self_check_second_order(seed=0):
    """jvp() against central differences of forward(); hvp() against central
    differences of backward(), on random directions."""
    inputs = random_inputs(seed)
    rng = np.random.default_rng(seed + 2)
    fwd = forward(**inputs)
    seeds = {o: rng.standard_normal(np.shape(fwd[o.replace(".", "_")])) for o in _OUTPUTS}
    dirs = {t: rng.standard_normal(np.shape(inputs[t])) for t in _DIFFERENTIABLE}
    h = 1e-5

    def moved(eps):
        return {t: a + eps * dirs[t] if t in dirs else a for t, a in inputs.items()}

    def grads(tensors):
        return backward(seeds, **tensors, **forward(**tensors))

    def error(got, want):
        scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-8)
        return float(np.max(np.abs(got - want), initial=0.0)) / scale

    rows = []
    tangents = jvp(dirs, **inputs)
    up, down = forward(**moved(h)), forward(**moved(-h))
    for o in _OUTPUTS:
        py = o.replace(".", "_")
        rows.append((o + ".dot", error(tangents[o], (up[py] - down[py]) / (2 * h))))
    hv = hvp(dirs, seeds, **inputs)
    up, down = grads(moved(h)), grads(moved(-h))
    for t in _DIFFERENTIABLE:
        rows.append((t + ".grad.dot", error(hv[t], (up[t] - down[t]) / (2 * h))))
    print(f"{'result':<18} {'rel. error':>12}  status")
    for name, err in rows:
        print(f"{name:<18} {err:>12.2e}  {'ok' if err < 1e-6 else 'FAIL'}")
    return all(err < 1e-6 for _, err in rows)'''



# The same check in a torch module: draws by torch.Generator, float64 on the CPU.
TORCH_SELF_CHECK = SELF_CHECK.replace(
    "    rng = np.random.default_rng(seed + 2)\n",
    "    rng = torch.Generator().manual_seed(seed + 2)\n"
).replace(
    "rng.standard_normal(np.shape(fwd[o.replace(\".\", \"_\")]))",
    "torch.randn(fwd[o.replace(\".\", \"_\")].shape, generator=rng, dtype=torch.float64)"
).replace(
    "rng.standard_normal(np.shape(inputs[t]))",
    "torch.randn(inputs[t].shape, generator=rng, dtype=torch.float64)"
).replace(
    """        scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-8)
        return float(np.max(np.abs(got - want), initial=0.0)) / scale""",
    """        if not want.numel():
            return 0.0
        scale = max(float(want.abs().max()), 1e-8)
        return float((got - want).abs().max()) / scale""")
