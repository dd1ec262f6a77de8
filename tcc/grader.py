"""``tcc check``: a grader for gradients, tcc's own or a hand-written backward.

A verdict holds only if it holds at several independent draws (``seeds``):
one draw can leave a branch dead (every relu input negative) and let a wrong
answer through. Each gradient's error is relative to that gradient's own
size, so a gradient of size 1e-7 is judged as strictly as one of size 1.

For a hand-written backward, every tensor it computes whose name the derived
backward also has (``Z.grad``), or whose values match a derived tensor under
another name, is compared as well, at the same draw; the first statement whose
result is wrong, while everything it reads is right, is the one reported.
"""

from __future__ import annotations

import difflib

import numpy as np

from . import gradcheck, interp
from .autodiff import active_tensors
from .autodiff import differentiate as _differentiate
from .check import Info, analyze
from .errors import TccError
from .gradcheck import Blame, Report, Row
from .ir import Decl, Program, base_name, grad_name, index_cmps, is_grad, py_name, reads
from .parse import parse as _parse_text
from .parse import read_source

DEFAULT_SEEDS = 5
EXTRA_DRAWS = 10        # more draws, at most, for a gradient all zero at every draw
INTERMEDIATE_NOISE = 1e-10


class NothingToDifferentiate(ValueError):
    """A program none of whose outputs depends on an input or param."""


def nothing_to_differentiate(info: Info, filename: str | None) -> str | None:
    """Why the program has no gradient to compute, in one line; None if it has one."""
    where = filename or "the program"
    if not info.differentiable:
        return (f"{where}: nothing to differentiate: it declares no input or param "
                "(data tensors get no gradient)")
    active = active_tensors(info)
    if not any(o in active for o in info.outputs):
        return (f"{where}: nothing to differentiate: no output depends on "
                f"{', '.join(info.differentiable)}")
    return None


# ----------------------------------------------------------- hand-written

def _names_used(s) -> list:
    """(name, pos) of every tensor a statement names: target, reads, gathers
    (also those of index comparisons, ``(k == y[b])``)."""
    refs = [s.target, *reads(s.expr)]
    out = [(r.tensor, r.pos or s.pos) for r in refs]
    out += [(ix.tensor, ix.pos or s.pos) for r in refs for ix in r.index
            if hasattr(ix, "tensor")]
    out += [(ix.tensor, ix.pos or c.pos or s.pos) for c in index_cmps(s.expr)
            for ix in c.sides if hasattr(ix, "tensor")]
    return out


def _suggest(name: str, choices: list[str]) -> str | None:
    folded = {c.lower(): c for c in choices}
    if name.lower() in folded:
        return folded[name.lower()]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _check_grad_names(forward: Info, user: Program):
    """A ``.grad`` name of no forward tensor is a typo, not a temporary."""
    known = [grad_name(t) for t in forward.roles if not is_grad(t)]
    for s in user.stmts:
        for t, pos in _names_used(s):
            if is_grad(t) and base_name(t) not in forward.roles:
                hint = _suggest(t, known)
                raise TccError(f"'{t}' is the gradient of '{base_name(t)}', which the forward "
                               "program does not have"
                               + (f"; did you mean {hint}?" if hint else ""), pos)


def complete_backward(forward: Info, text: str, filename: str | None) -> Program:
    """A hand-written backward whose declarations may be omitted: resolve its
    names against the forward program (forward tensors and seeds as data, the
    inputs' and params' gradients as outputs)."""
    user = _parse_text(text, filename, known_dims=forward.dims)
    try:
        _check_grad_names(forward, user)
    except TccError as err:
        raise err.attach(filename, text) from None
    declared = {d.name for d in user.decls}
    computed = {s.target.tensor for s in user.stmts}
    decls = list(user.decls)
    if not any(d.role == "dim" for d in decls):
        decls = [Decl("dim", d) for d in forward.dims] + decls
    seen = set()
    for s in user.stmts:
        for t, _pos in _names_used(s):
            if t in declared or t in computed or t in seen:
                continue
            base = base_name(t)
            if base in forward.roles and (t == base or base in forward.outputs):
                shape = forward.shapes.get(base, ())
                decls.append(Decl("data", t, tuple(shape) or None))
                seen.add(t)
    for t in forward.differentiable:
        g = grad_name(t)
        if g in computed and g not in declared:
            shape = forward.shapes.get(t, ())
            decls.append(Decl("output", g, tuple(shape) or None))
    return Program(tuple(decls), user.stmts)


class _Backward:
    """A backward program run on a forward's tensors: every tensor it computes."""

    def __init__(self, program: Program, engine: str, filename=None, text=None):
        from .api import generate_plain
        from .compiler import Kernel
        try:
            self.info = analyze(program)
        except TccError as err:
            raise err.attach(filename, text) from None
        self.program = program
        self.kernel = Kernel(generate_plain(program), "backward") if engine == "compiled" \
            else None

    def run(self, seeds: dict, inputs: dict, saved: dict) -> dict:
        data = self.data(seeds, inputs, saved)
        if self.kernel is None:
            return interp.run(self.info, data)
        out = self.kernel.forward(**{py_name(t): a for t, a in data.items()})
        return {t: out[py_name(t)] for t in self.info.computed if py_name(t) in out}

    def contributions(self, t: str, seeds: dict, inputs: dict, saved: dict) -> list:
        """[(statement, what it adds to t)] for each statement that updates t, by
        the reference interpreter, one statement at a time."""
        arrays, sizes, dtype = interp.prepare(self.info, self.data(seeds, inputs, saved))
        env = dict(arrays)
        for c in self.info.computed:
            shape = tuple(interp._size(sizes, e) for e in self.info.shapes[c])
            env[c] = np.full(shape, -np.inf if any(
                si.stmt.op == "max=" and si.stmt.target.tensor == c for si in self.info.stmts)
                else 0, dtype=dtype)
        out = []
        with np.errstate(all="ignore"):
            for si in self.info.stmts:
                before = np.array(env[t], copy=True) if t in env else None
                interp._run_stmt(si.stmt, si.ranges, env, sizes, dtype)
                if si.stmt.target.tensor == t:
                    out.append((si.stmt, env[t] - (before if before is not None else 0)))
        return out

    def data(self, seeds: dict, inputs: dict, saved: dict) -> dict:
        data = {}
        for t in self.info.inputs:
            if is_grad(t) and base_name(t) in seeds:
                data[t] = seeds[base_name(t)]
            elif t in inputs:
                data[t] = inputs[t]
            elif t in saved:
                data[t] = saved[t]
            else:
                raise ValueError(f"the backward reads '{t}', which is neither an input nor a "
                                 "value the forward computes")
        return data


# ------------------------------------------------------------------ check

class _Forward:
    def __init__(self, info: Info, text: str, engine: str):
        from .compiler import compile as compile_kernel
        self.info = info
        self.plain = compile_kernel(text, optimize=False) if engine == "compiled" else None

    def all(self, tensors: dict) -> dict:
        if self.plain is None:
            return interp.run(self.info, tensors)
        out = self.plain.forward(**{py_name(t): a for t, a in tensors.items()})
        return {t: out[py_name(t)] for t in self.info.computed}


def check(text_or_path, sizes: dict | None = None, seed: int = 0,
          backward: str | None = None, engine: str = "compiled",
          seeds: int = DEFAULT_SEEDS, data: dict | None = None,
          strict: bool = False) -> Report:
    """``tcc check``: the backward's gradients against finite differences.

    The gradients come from the compiled (optimized) module, or from a
    hand-written ``backward`` program; the finite differences from the
    forward as written (compiled without optimization; ``engine="interp"``
    uses the reference interpreter for both). ``seeds`` draws, starting at
    ``seed``; it passes only if every draw does. ``data`` ({name: kind})
    says how data tensors are drawn (gradcheck.DATA_KINDS). ``strict``:
    a gradient that is all zero at every draw fails.
    """
    from .api import _checked, load

    prog, text, filename = load(text_or_path)
    info = _checked(prog, text, filename)
    why = nothing_to_differentiate(info, filename)
    if why:     # vacuously right; ``tcc check`` stops before this with an error
        return Report(hints=[why])
    if seeds < 1:
        raise ValueError("--seeds must be at least 1")
    kinds = gradcheck.check_data_kinds(info, dict(data or {}))
    chosen = gradcheck.choose_sizes(info, sizes)
    forward = _Forward(info, text, engine)
    mine = reference = None
    if backward is not None:
        btext, bname = read_source(backward)
        mine = _Backward(complete_backward(info, btext, bname), engine, bname, btext)
        mine.text, mine.filename = btext, bname
        reference = _Backward(_differentiate(info), engine)
    grader = _Grader(info, text, forward, mine, reference, engine, chosen, strict)
    report = grader.run(seed, seeds, kinds)
    if not report.ok and report.rows:
        report.hints += grader.data_hints(seed, seeds, kinds)
    return report


class _Grader:
    def __init__(self, info, text, forward, mine, reference, engine, sizes, strict):
        self.info, self.text, self.forward = info, text, forward
        self.mine, self.reference, self.engine = mine, reference, engine
        self.sizes, self.strict = sizes, strict
        self.active = active_tensors(info)

    def gradients(self, inputs, saved, seeds) -> tuple[dict, dict]:
        """(gradients by input name, every tensor the hand-written backward computes)."""
        info = self.info
        if self.mine is not None:
            out = self.mine.run(seeds, inputs, saved)
            return {t: out.get(grad_name(t)) for t in info.differentiable}, out
        if self.engine == "compiled":
            from .compiler import compile as compile_kernel
            k = compile_kernel(self.text, optimize=True)
            kw = {py_name(t): a for t, a in inputs.items()}
            return k.backward(seeds, **kw, **k.forward(**kw)), {}
        from .api import InterpEngine
        return InterpEngine(info, _differentiate(info)).backward(seeds, inputs, saved), {}

    def draw(self, seed: int, kinds: dict):
        info = self.info
        inputs = gradcheck.random_inputs(info, self.sizes, seed, kinds)
        saved = self.forward.all(inputs)
        seeds = gradcheck.random_seeds(info, saved, seed)
        grads, computed = self.gradients(inputs, saved, seeds)

        def outputs(tensors):
            out = self.forward.all(tensors)
            return {o: out[o] for o in info.outputs}

        results = gradcheck.check_gradients(info, outputs, grads, inputs, seeds)
        blame = None
        if self.mine is not None:
            blame = self.blame(seed, seeds, inputs, saved, computed)
        return results, blame

    def run(self, first_seed: int, n: int, kinds: dict) -> Report:
        info = self.info
        shapes = {t: a.shape for t, a in
                  gradcheck.random_inputs(info, self.sizes, first_seed, kinds).items()}
        rows = {t: Row(grad_name(t), tuple(shapes[t]), 0.0, 0, True)
                for t in info.differentiable}
        report = Report(sizes=dict(self.sizes), strict=self.strict)
        seed, last = first_seed, first_seed + n - 1
        while seed <= last:
            results, blame = self.draw(seed, kinds)
            report.seeds.append(seed)
            for t, (c, skipped, note) in results.items():
                row = rows[t]
                row.skipped += skipped
                if c is None:
                    row.error, row.note, row.ok = float("nan"), note, False
                    row.seed = seed if row.seed is None else row.seed
                    continue
                row.live += c.live
                if not c.error <= row.error:
                    row.error = c.error
                if not c.error <= gradcheck.TOLERANCE and row.ok:
                    row.ok, row.note, row.seed = False, f"{note} (seed {seed})", seed
            if blame is not None and report.blame is None:
                report.blame = blame
            # a gradient all zero so far, though it depends on an output: draw again
            dead = [t for t in info.differentiable if t in self.active and rows[t].ok
                    and not rows[t].live]
            if seed == last and dead and last < first_seed + n - 1 + EXTRA_DRAWS:
                last += 1
            seed += 1
        for t in info.differentiable:
            if rows[t].ok and t not in self.active:
                rows[t].live = max(rows[t].live, 1)   # zero by structure: nothing to exercise
        report.rows = [rows[t] for t in info.differentiable]
        return report

    # ----------------------------------------------------- intermediates

    def blame(self, seed, seeds, inputs, saved, computed) -> Blame | None:
        """The first statement of the hand-written backward whose result is wrong
        while every tensor it reads that the backward computes is right."""
        ref = self.reference.run(seeds, inputs, saved)
        scale = max([float(np.max(np.abs(v), initial=0.0)) for v in ref.values()
                     if np.all(np.isfinite(v))] + [1e-300])
        noise = INTERMEDIATE_NOISE * scale
        status, wrong_at = {}, {}
        for t, u in computed.items():
            if t in ref and np.shape(ref[t]) == np.shape(u):
                c = gradcheck.compare(u, ref[t], np.ones(np.shape(u), dtype=bool), noise)
                if c.error <= gradcheck.TOLERANCE:
                    status[t] = "right"
                else:
                    status[t] = "wrong"
                    wrong_at[t] = c.first
            elif not is_grad(t) or t not in ref:
                # a temporary under another name: right if it matches one of tcc's
                same = any(np.shape(v) == np.shape(u) and gradcheck.compare(
                    u, v, np.ones(np.shape(u), dtype=bool), noise).error <= gradcheck.TOLERANCE
                    for v in ref.values())
                status[t] = "right" if same else "unknown"
        stmts = self.mine.program.stmts
        wrong = [s for s in stmts if status.get(s.target.tensor) == "wrong"]
        if not wrong:
            return None

        def reads_wrong(t):
            """Whether some update of t reads another wrong tensor (t inherits it)."""
            return any(status.get(r.tensor) == "wrong" and r.tensor != t
                       for s in stmts if s.target.tensor == t for r in reads(s.expr))
        pick = next((s for s in wrong if not reads_wrong(s.target.tensor)), wrong[0])
        missing = False
        if self.reference.info.computed.count(pick.target.tensor):
            pick, missing = self.wrong_term(pick.target.tensor, seeds, inputs, saved, noise)
        t = pick.target.tensor
        first = wrong_at.get(t) or ()
        got = np.asarray(computed[t])[first] if first else float(np.asarray(computed[t]))
        want = np.asarray(ref[t])[first] if first else float(np.asarray(ref[t]))
        lines = self.mine.text.split("\n")
        line = pick.pos.line if pick.pos else 1
        text = lines[line - 1].rstrip("\r").expandtabs(1) if line <= len(lines) else str(pick)
        col = pick.target.pos.col if pick.target.pos and pick.target.pos.line == line else (
            pick.pos.col if pick.pos else 1)
        also = tuple(s.pos.line for s in stmts
                     if s is not pick and s.target.tensor == t and s.pos)
        return Blame(t, text, self.mine.filename, line, col, first, float(got), float(want),
                     seed, also, missing)

    def wrong_term(self, t, seeds, inputs, saved, noise):
        """(statement, whether a term seems missing) among the several that update t:
        the first whose contribution is no sum of the derived backward's terms."""
        from itertools import combinations
        mine = self.mine.contributions(t, seeds, inputs, saved)
        theirs = [c for _s, c in self.reference.contributions(t, seeds, inputs, saved)]
        sums = [sum(group) for n in range(1, min(len(theirs), 4) + 1)
                for group in combinations(theirs, n)]

        def right(c):
            everywhere = np.ones(np.shape(c), dtype=bool)
            return any(np.shape(d) == np.shape(c) and gradcheck.compare(
                c, d, everywhere, noise).error <= gradcheck.TOLERANCE for d in sums)
        for stmt, c in mine:
            if not right(c):
                return stmt, False
        return mine[0][0], True

    # ------------------------------------------------------- data hints

    def data_hints(self, first_seed: int, n: int, kinds: dict) -> list[str]:
        """When the answer fails on random data that a course may treat as one-hot
        (or as probabilities), and passes with that, say so."""
        info = self.info
        candidates = [t for t in info.inputs if info.roles[t] == "data" and t not in kinds
                      and t not in info.gather_data and info.shapes[t]]
        for kind in ("onehot", "probabilities"):
            for group in [[t] for t in candidates] + ([candidates] if len(candidates) > 1
                                                      else []):
                trial = {**kinds, **{t: kind for t in group}}
                try:
                    again = _Grader(info, self.text, self.forward, self.mine, self.reference,
                                    self.engine, self.sizes, False).run(first_seed, n, trial)
                except ValueError:
                    continue
                if again.ok:
                    names = ", ".join(group)
                    opt = ",".join(f"{t}={kind}" for t in group)
                    what = gradcheck.DATA_KINDS[kind]
                    return [f"note: this fails on random {names}, but agrees when {names} "
                            f"{'is' if len(group) == 1 else 'are'} {kind} ({what}); if the "
                            f"problem says so, check with --data {opt}"]
        return []


__all__ = ["check", "complete_backward", "nothing_to_differentiate", "NothingToDifferentiate",
           "DEFAULT_SEEDS"]
