"""The optimizer: lists of passes, each ``pass_(program, ctx) -> Program``,
and the driver that runs them.

Forward, before differentiation:  ``binarize`` (contraction order), ``dead``.
Backward, once:                   ``reuse``, then the softmax + cross-entropy
    and softmax fusions (``tcc.fusions``).
Backward, to a fixed point:       ``reuse`` (saved values, by the
    ``rules.REUSE`` table), ``inline`` (single-use elementwise temporaries),
    ``simplify``, ``merge`` (updates of one target with the same loops),
    ``dead``.
Forward, after differentiation:   ``stabilize`` (softmax and log-sum-exp with
    the maximum subtracted, log-softmax for the log of a softmax).

Every rewrite that fires is recorded in a ``Log`` with the whole program
before and after it, which ``tcc explain --verify`` and the tests run on
random data and compare. A fixed point not reached within ``MAX_ROUNDS``
rounds is logged too (``cap``), and ``tcc explain`` shows it.
"""

from __future__ import annotations

from typing import Callable

from .autodiff import differentiate, with_declarations
from .check import Info, analyze
from .fusions import find_softmaxes, fuse_softmax, fuse_softmax_xent, stabilize
from .ir import Program, grad_name, stmt_vars
from .passes import (Context, Log, Rewrite, binarize, dead, inline, merge, reuse, simplify,
                     taken_names)

Pass = Callable[[Program, Context], Program]

FORWARD: list[Pass] = [binarize, dead]
FUSIONS: list[Pass] = [reuse, fuse_softmax_xent, fuse_softmax]
CLEANUP: list[Pass] = [reuse, inline, simplify, merge, dead]
STABLE: list[Pass] = [stabilize]
MAX_ROUNDS = 20


def run(passes: list[Pass], program: Program, ctx: Context) -> Program:
    """Each pass once, in order; the rewrites each logs get the whole program
    before and after it (unless the pass gave its own)."""
    for pass_ in passes:
        start = len(ctx.log.rewrites) if ctx.log is not None else 0
        out = pass_(program, ctx)
        if ctx.log is not None:
            for rw in ctx.log.rewrites[start:]:
                if rw.program_before is None:
                    rw.program_before, rw.program_after = program, out
        program = out
    return program


def fixed_point(passes: list[Pass], program: Program, ctx: Context,
                cap: int | None = None) -> Program:
    """The passes in rounds until a round changes nothing, or ``cap`` rounds
    (then logged: the program is right, each pass being safe, but may not be
    as simple as the passes can make it)."""
    cap = MAX_ROUNDS if cap is None else cap
    for _ in range(cap):
        before = program
        program = run(passes, program, ctx)
        if program.stmts == before.stmts:
            return program
    ctx.add("cap", f"stopped after {cap} rounds of {', '.join(p.__name__ for p in passes)}"
            " with the program still changing: it is right, but may not be fully "
            "simplified", [], [])
    return program


def optimize_forward(info: Info, log: Log | None = None) -> Program:
    """Forward rewrites made before differentiation."""
    ctx = Context(info, log, "forward", set(info.outputs),
                  taken_names(info, [si.stmt for si in info.stmts]))
    return run(FORWARD, info.program, ctx)


def optimize_backward(info: Info, backward: Program, log: Log | None = None) -> Program:
    """The backward passes: the fusions once, then the clean-up to a fixed point."""
    outputs = {d.name for d in backward.decls if d.role == "output"}
    ctx = Context(info, log, "backward", outputs, taken_names(info, backward.stmts))
    backward = run(FUSIONS, backward, ctx)
    return fixed_point(CLEANUP, backward, ctx, MAX_ROUNDS)


def stable_forms(info: Info, backward: Program,
                 log: Log | None = None) -> tuple[Program, Program]:
    """The forward with its stable forms, and the backward reading it."""
    ctx = Context(info, log, "forward", set(info.outputs),
                  taken_names(info, backward.stmts), backward=backward)
    forward = run(STABLE, info.program, ctx)
    if forward is info.program:
        return forward, backward
    finfo = analyze(forward)
    return forward, with_declarations(finfo, list(ctx.backward.stmts),
                                      seeds=[grad_name(t) for t in finfo.outputs])


def optimize(program: Program) -> Program:
    """The optimized forward program (what ``tcc compile`` computes)."""
    info = analyze(optimize_forward(analyze(program)))
    backward = optimize_backward(info, differentiate(info))
    forward, _ = stable_forms(info, backward)
    return forward


__all__ = ["optimize", "optimize_forward", "optimize_backward", "stable_forms", "run",
           "fixed_point", "FORWARD", "FUSIONS", "CLEANUP", "STABLE", "MAX_ROUNDS", "Log",
           "Rewrite", "Context", "find_softmaxes", "stmt_vars"]
