"""Measured choices: a statement with several correct lowerings, picked by timing.

A convolution-shaped update has up to three: on flattened rows (one matrix
product per tap on views of a contiguous buffer, ``flatconv.py``), tap by tap
on basic slices (``lower._lower_taps``), and one contraction on the im2col view
(or, for a write at affine positions, a strided scatter per tap:
``lower.lower_update``). Which is fastest depends on the machine: on one CPU
im2col beat the flat rows by 30%, on another it lost by as much. Where a
backend asks for it (``Context.tune``, the NumPy backends), such a statement
becomes one local function per candidate and a ``tuned`` call, which times the
candidates at the first call with a new size signature and keeps the fastest
for that signature (``_tuned`` in the module's helpers, like FFTW's plans).
``TCC_TUNE=0`` runs the first, the static choice; ``TCC_TUNE=<label>`` runs
the candidate of that label wherever there is one.

Every candidate computes the statement by its definition; they differ only in
the order of floating-point additions (tests run each against the
interpreter). Each is lowered from the same state of the context, and what one
makes (flattened copies, padded buffers) stays its own: later statements make
their own rather than read a candidate's locals.
"""

from __future__ import annotations

import copy

from tcc.check import StmtInfo

from .operands import Context, ap
from .target import Assign, Comment, Def, Lit, Name, Tup

# what one candidate's lowering may add to the context, restored before the next
_STATE = ("defined", "flat_layouts", "copies", "padded", "extra_shapes", "size_values")


def strategies(ctx: Context, si: StmtInfo) -> list[tuple[str, object]]:
    """The candidate lowerings of a convolution-shaped update, static choice
    first: (label, a function returning its statements). Empty for any other
    update."""
    from .flatconv import flat_plan, lower_flat
    from .lower import _lower_taps, lower_update, tap_windows
    windows = tap_windows(si.stmt)
    plan = flat_plan(si.stmt)
    out: list = []
    if windows:
        out.append(("taps", lambda: _lower_taps(ctx, si, windows)))
    if plan is not None:
        out.append(("flat-rows", lambda: lower_flat(ctx, si, plan)))
    if out:
        out.append(("im2col", lambda: lower_update(ctx, si)))
    return out


def lower_tuned(ctx: Context, si: StmtInfo, cands: list[tuple[str, object]]) -> list:
    """One local function per candidate and the call that picks among them."""
    s = si.stmt
    t = s.target.tensor
    target = ctx.local(t)
    existed = t in ctx.defined
    before = {k: copy.copy(getattr(ctx, k)) for k in _STATE}
    site = f"{target.name}:{len(ctx.tuned_sites) + 1}"
    defs, pairs = [], []
    # a target tuned before in this function: its candidates' names get a number
    again = sum(other.startswith(f"{target.name}:") for other, _, _ in ctx.tuned_sites)
    suffix = f"_{again + 1}" if again else ""
    for label, lower in cands:
        for k, v in before.items():
            setattr(ctx, k, copy.copy(v))
        body = [n for n in lower() if not (isinstance(n, Comment) and n.text == str(s))]
        fn = f"_{target.name}__{label.replace('-', '_')}{suffix}"
        defs.append(Def(fn, (target.name,) if existed else (), tuple(body), result=target))
        pairs.append(Tup((Lit(label), Name(fn))))
    for k, v in before.items():
        setattr(ctx, k, v)
    ctx.defined.add(t)
    ctx.tuned_sites.append((site, str(s), tuple(label for label, _ in cands)))
    key = Tup((*(ctx.var_size(si.ranges, v) for v in s.loops), Name("dt")))
    labels = ", ".join(label for label, _ in cands)
    return [Comment(str(s)),
            Comment(f"(measured choice among {labels}: the fastest at the first call "
                    f"with these sizes; TCC_TUNE=0 takes {cands[0][0]})"),
            *defs,
            Assign(target, ap("tuned", Lit(site), Tup(tuple(pairs)), key,
                              Tup((target,) if existed else ())))]


__all__ = ["strategies", "lower_tuned"]
