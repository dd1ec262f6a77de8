"""``tcc explain``: the rewrites that fired, why each is safe, and the cost.

The cost is an estimate of what the generated code does, at nominal sizes:
floating-point operations, and the peak memory of the arrays alive at once
(computed tensors from their first update to their last read, plus the
largest temporary of the statement running).
"""

from __future__ import annotations

import functools

import math

import numpy as np

from . import _rt, interp
from .api import backward_data
from .autodiff import differentiate
from .check import Info, analyze
from .pipeline import Pipeline
from .gradcheck import choose_sizes, random_inputs, random_seeds
from .ir import children, Affine, Ref, grad_name, index_cmps, reads, walk
from .passes import Rewrite
from .parse import read_source

NOMINAL = 64
WINDOW = 3


# ------------------------------------------------------------------ cost

def nominal_sizes(info: Info, given: dict | None = None) -> dict[str, int]:
    """Every dim NOMINAL, window dims (the taps of a convolution) WINDOW."""
    given = dict(given or {})
    window = {c[2] for step in info.plan if step[0] == "valid" for c in step[3]}
    window_dims = set()
    for step in info.plan:
        if step[0] == "valid":
            for c in step[3]:
                for _, sym in c[4]:
                    if isinstance(sym, str):
                        window_dims.add(sym)
    sizes = {}
    for step in info.plan:
        if step[0] == "shape":
            for e in step[2]:
                if isinstance(e, str) and e not in sizes:
                    sizes[e] = given.get(e, WINDOW if e in window_dims and e not in window
                                         else NOMINAL)
    return sizes


def _ops(e) -> int:
    """Operations in an expression: one per operator or call node."""
    return sum(1 for n in walk(e) if children(n))


def _vars(e) -> set[str]:
    out = set()
    for r in reads(e):
        for ix in r.index:
            out.update(ix.vars)
    for c in index_cmps(e):         # a comparison is an array over its indices too
        out.update(c.vars)
    return out


def cost(info: Info, sizes: dict[str, int], itemsize: int = 8) -> tuple[float, float]:
    """(flops, peak bytes) of a program as tcc lowers it, at these sizes."""
    import opt_einsum as oe
    from .backends.lower import split_factors, split_terms

    full = _rt.bind_sizes(info.plan, _shapes_only(info, sizes), dict(sizes))
    flops = 0.0
    last_read = {}
    for k, si in enumerate(info.stmts):
        for r in reads(si.stmt.expr):
            last_read[r.tensor] = k
    born = {}
    temps = []
    for k, si in enumerate(info.stmts):
        s, ranges = si.stmt, si.ranges

        def n(vs, ranges=ranges):
            return math.prod(_size(full, ranges[v]) for v in vs)
        tvars = {v for ix in s.target.index for v in ix.vars}
        summed = [v for v in s.loops if v not in tvars]
        biggest = 0
        if not summed or s.op in ("max=", "min="):
            flops += n(s.loops) * max(_ops(s.expr), 1)
            biggest = n(s.loops) if s.op in ("max=", "min=") else 0
        else:
            for _, term in split_terms(s.expr):
                operands = []
                for _, f in split_factors(term):
                    vs = _vars(f)
                    if not vs:
                        continue
                    if not isinstance(f, Ref):
                        flops += n(vs) * max(_ops(f), 1)
                        biggest = max(biggest, n(vs))
                    operands.append(tuple(sorted(vs)))
                if len(operands) == 1:
                    flops += n(operands[0])
                elif operands:
                    letters = {v: chr(97 + i) if i < 26 else chr(39 + i)
                               for i, v in enumerate(s.loops)}
                    present = set().union(*operands)   # a target index no operand has
                    spec = ",".join("".join(letters[v] for v in o) for o in operands) + \
                        "->" + "".join(letters[v] for v in s.loops
                                       if v in tvars and v in present)
                    shapes = [tuple(_size(full, ranges[v]) for v in o) for o in operands]
                    _, path = oe.contract_path(spec, *shapes, shapes=True, optimize="auto")
                    flops += float(path.opt_cost)
                    biggest = max(biggest, int(path.largest_intermediate))
        born.setdefault(s.target.tensor, k)
        temps.append(biggest)
    peak = 0
    for k in range(len(info.stmts)):
        live = 0
        for t, b in born.items():
            if b <= k and (last_read.get(t, len(info.stmts)) >= k or t in info.outputs):
                live += math.prod(_size(full, d) for d in info.shapes[t])
        peak = max(peak, live + temps[k])
    return flops, peak * itemsize


def _size(full, sym):
    return sym if isinstance(sym, int) else full[sym]


def _shapes_only(info, sizes):
    from .gradcheck import _fake_arrays
    return _fake_arrays(info, sizes)


def _fmt_flops(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}flop"
    return f"{x:.0f} flop"


def _fmt_bytes(x: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


# ---------------------------------------------------------------- verify

def verify(p: Pipeline, rw: Rewrite, seed: int = 0) -> float:
    """Run a rewrite's before and after programs on random data; the largest
    difference of what they compute (relative to its scale)."""
    info0 = p.original
    sizes = choose_sizes(info0)
    inputs = random_inputs(info0, sizes, seed)
    if rw.stage == "forward":
        a = interp.run(analyze(rw.program_before), inputs)
        b = interp.run(analyze(rw.program_after), inputs)
        names = info0.outputs
    else:
        fwd_info = p.unstable
        saved = interp.run(fwd_info, inputs)
        seeds = random_seeds(fwd_info, saved, seed)
        outs = []
        for prog in (rw.program_before, rw.program_after):
            binfo = analyze(prog)
            outs.append((binfo, interp.run(binfo, backward_data(binfo, seeds, inputs, saved))))
        (ia, a), (ib, b) = outs
        names = sorted(set(ia.outputs) | set(ib.outputs))
    worst = 0.0
    for t in names:
        x, y = a.get(t), b.get(t)
        if x is None and y is None:
            continue
        x = np.zeros_like(y) if x is None else x
        y = np.zeros_like(x) if y is None else y
        scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
        d = float(np.max(np.abs(x - y), initial=0.0)) / scale
        worst = max(worst, d if np.isfinite(d) else float("inf"))
    return worst


# ---------------------------------------------------------------- report

def explain(text_or_path, verify_rewrites: bool = False, sizes: dict | None = None,
            verify: bool | None = None, lowered: bool = False) -> tuple[str, bool]:
    """The text ``tcc explain`` prints, and whether every check passed."""
    if verify is not None:
        verify_rewrites = verify
    text, filename = read_source(text_or_path)
    opt = Pipeline(text, filename, optimize=True)
    raw = Pipeline(text, filename, optimize=False)
    lines = [f"tcc explain {filename or '<program>'}", ""]
    ok = True
    if not opt.log.rewrites:
        lines.append("No rewrite fired: the program is lowered as written.")
    else:
        lines.append(f"Rewrites that fired ({len(opt.log.rewrites)}):")
    for n, rw in enumerate(opt.log.rewrites, 1):
        lines.append("")
        lines.append(f"{n:>3}. [{rw.name}, {rw.stage}] {rw.why}")
        if not rw.before and not rw.after:
            continue            # a note on the run (a fixed point's cap), not a rewrite
        for s in rw.before:
            lines.append(f"       before: {s}")
        for s in rw.after:
            lines.append(f"       after:  {s}")
        if not rw.after:
            lines.append("       after:  (removed)")
        if verify_rewrites and rw.program_before is not None:
            d = _safe_verify(opt, rw)
            good = d <= 1e-9
            ok &= good
            lines.append(f"       verified on random data: max difference {d:.1e}"
                         + ("" if good else "  DISAGREE"))
    lines += _kernel_lines(opt)
    nominal = nominal_sizes(opt.original, sizes)
    lines += _numpy_lines(opt, nominal)
    lines += ["", "Estimated cost (" + ", ".join(f"{k}={v}" for k, v in nominal.items())
              + "; float64):",
              f"  {'':<22}{'flops':>14}{'peak memory':>16}{'passes':>10}"]
    rows = [("forward, unoptimized", raw, "forward"), ("forward, optimized", opt, "forward"),
            ("backward, unoptimized", raw, "backward"),
            ("backward, optimized", opt, "backward")]
    for label, pipe, stage in rows:
        info = pipe.info if stage == "forward" else pipe.binfo
        try:
            bound = _bound_for(info, opt, nominal)
            fl, mem = cost(info, bound)
            moved = memory_passes(pipe, stage, bound, grouped=pipe is opt)
            shown = "n/a" if moved is None else f"{moved:.1f}"
            lines.append(f"  {label:<22}{_fmt_flops(fl):>14}{_fmt_bytes(mem):>16}{shown:>10}")
        except (ValueError, KeyError) as err:
            lines.append(f"  {label:<22}  (not estimated: {err})")
    lines.append("  passes: reads and writes of arrays in units of the largest, as the NumPy")
    lines.append("  backend lowers the function (unoptimized: statement by statement; a")
    lines.append("  row-block group reads and writes each of its arrays once)")
    if lowered:
        lines += ["", *lowered_lines(opt)]
    return "\n".join(lines) + "\n", ok


def _kernel_lines(p: Pipeline) -> list[str]:
    """The groups of statements the torch backend computes with one library
    call each (backends/kernels.py), recognized on the optimized program."""
    from .backends import kernels
    from .backends.convkernels import _pair_gradients as pair_gradients
    from .ir import grad_name
    keep = {"forward": list(p.info.outputs) + list(p.saved),
            "backward": [grad_name(t) for t in p.info.differentiable]}
    out = []
    for stage, info, forward in (("forward", p.info, None), ("backward", p.binfo, p.info)):
        found = kernels.find(info, keep[stage], kernels.KERNEL_OPS, forward)
        pair_gradients(found)
        for g in found:
            out.append("")
            out.append(f"  [{stage}] {g.describe()}")
            for k in g.members or range(g.first, g.first + g.count):
                out.append(f"       {info.stmts[k].stmt}")
    if out:
        out = ["", "Library kernels (the torch backend calls one torch function for each "
               "group):"] + out
    return out


@functools.lru_cache(maxsize=8)
def _lowering(p: Pipeline, stage: str, row_blocks: bool):
    """(statements, shapes of the arrays by local name, the lowering's context)
    of one function of p as the NumPy backend lowers it (once per explain: the
    cost table, the groups and --lowered read the same lowering; callers do
    not modify what it returns)."""
    from .backends import reuse
    from .backends.lower import lower_program
    from .backends.operands import Context, Names
    names = Names(dict.fromkeys([*p.info.roles, *p.binfo.roles, *p.info.dims, *p.binfo.dims]))
    info = p.info if stage == "forward" else p.binfo
    returned = set(p.info.outputs) | set(p.saved) if stage == "forward" else \
        {grad_name(t) for t in p.info.differentiable}
    ctx = Context(info, names, row_blocks=row_blocks, returned=returned)
    ctx.kernels.update(reuse.plan(info, ctx.kernels))
    stmts = lower_program(ctx)
    return stmts, {names(t): tuple(ctx.shape_of(t)) for t in info.shapes}, ctx


def memory_passes(p: Pipeline, stage: str, sizes: dict, grouped: bool) -> float | None:
    """Estimated passes over memory of one function (backends/traffic.py);
    None where the lowering makes arrays whose shapes it computes at run time."""
    from .backends.traffic import passes
    stmts, env, _ = _lowering(p, stage, grouped)
    return passes(stmts, env, sizes)


def _numpy_lines(p: Pipeline, nominal: dict) -> list[str]:
    """The row-block groups of the NumPy backends, with their estimated passes
    at the nominal sizes, and the statements whose strategy is measured."""
    from .backends.traffic import passes
    groups, tuned = [], []
    for stage in ("forward", "backward"):
        stmts, env, ctx = _lowering(p, stage, row_blocks=True)
        info = p.info if stage == "forward" else p.binfo
        try:
            bound = _bound_for(info, p, nominal)
        except (ValueError, KeyError):
            bound = {}
        for fn, members, fn_def in ctx.groups:
            moved = passes([fn_def], env, bound) if bound else None
            est = "" if moved is None else f", about {moved:.1f} passes"
            groups.append("")
            groups.append(f"  [{stage}] {fn}: {len(members)} statement"
                          f"{'s' if len(members) > 1 else ''} on blocks of rows{est}")
            groups += [f"       {m}" for m in members]
        for _site, stmt, labels in ctx.tuned_sites:
            tuned.append("")
            tuned.append(f"  [{stage}] {labels[0]} (static), " + ", ".join(labels[1:]))
            tuned.append(f"       {stmt}")
    out = []
    if groups:
        out += ["", "Row-block groups (the NumPy backends run each group's statements "
                "together on blocks of rows, on threads when large; passes at the sizes "
                "below):"] + groups
    if tuned:
        out += ["", "Measured choices (the NumPy backends time each candidate at the first "
                "call with new sizes and keep the fastest; TCC_TUNE=0 takes the static "
                "one):"] + tuned
    return out


def lowered_lines(p: Pipeline) -> list[str]:
    """The target IR the backends print for the optimized forward and backward:
    every strategy the lowering chose (views, contractions and their order,
    scatters), before any backend's table spells it."""
    from .backends.shapes import typed_lines
    out = ["Lowered for NumPy (the target IR; each backend prints these nodes through its "
           "table). Each array a statement makes is typed: its shape, and dt, the "
           "computation dtype the inputs give at run time. Inside a row-block function the "
           "first axis is a block of those rows:"]
    for label in ("forward", "backward"):
        stmts, env, _ = _lowering(p, label, row_blocks=True)
        out += ["", f"  {label}:"]
        out += ["    " + line for line in typed_lines(stmts, dict(env))]
    return out


def _bound_for(info: Info, p: Pipeline, nominal: dict) -> dict:
    """Nominal sizes for a program's own dims (a backward names the forward's)."""
    full = _rt.bind_sizes(p.original.plan, _shapes_only(p.original, nominal), dict(nominal))
    out = {}
    for step in info.plan:
        if step[0] == "shape":
            for e in step[2]:
                if isinstance(e, str) and e in full:
                    out[e] = full[e]
    return out


def _safe_verify(p, rw) -> float:
    try:
        return verify(p, rw)
    except (ValueError, KeyError, ZeroDivisionError) as err:  # pragma: no cover
        print(f"tcc: could not verify {rw.name}: {err}")
        return float("inf")


__all__ = ["explain", "verify", "cost", "differentiate", "Affine"]
