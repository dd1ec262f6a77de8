"""Recurrences (LANGUAGE.md section 1, "Recurrences"): find them, check their
rules, infer their step index and direction, and order a program's statements.

A statement that reads a tensor which it or a later statement updates forms,
with the statements that update what it reads, a cycle of reads and updates.
The statements on such a cycle (a strongly connected component of the graph
"j updates a tensor that k reads") are one recurrence. Each tensor it updates
has one step axis; every target in it has the statement's step index there
(``h[t]``, ``h.grad[t - 1]``), and its reads of those tensors are at the step
index plus a literal. The sign of (read offset - update offset) gives the
direction: every d < 0 runs the step index upwards, every d > 0 downwards.

The run order (``schedule``) is a list of units, each a single statement or a
whole recurrence: a unit that updates what another reads comes first, and
otherwise program order.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import TccError
from .ir import Affine, Program, Ref, Stmt, reads


@dataclass(frozen=True)
class Recurrence:
    """The statements on one cycle, in program order, and how they step."""
    stmts: tuple[int, ...]                 # statement numbers
    step: tuple[tuple[int, str], ...]      # (statement number, its step index)
    axes: tuple[tuple[str, int], ...]      # (tensor it updates, its step axis)
    direction: int                         # +1: t = 0, 1, ...; -1: t = T-1, ..., 0

    def step_of(self, k: int) -> str:
        return dict(self.step)[k]

    @property
    def tensors(self) -> dict[str, int]:
        return dict(self.axes)

    @property
    def ascending(self) -> bool:
        return self.direction > 0

    def describe(self) -> str:
        steps = list(dict.fromkeys(v for _, v in self.step))
        way = "ascending" if self.ascending else "descending"
        return f"recurrence over {', '.join(steps)}, {way}"


def _err(msg, pos):
    return TccError(msg, pos)


# ------------------------------------------------------------------ the graph

def _components(n: int, edges: dict[int, set[int]]) -> list[list[int]]:
    """The strongly connected components of a small graph (by reachability)."""
    reach = []
    for a in range(n):
        seen, todo = set(), [a]
        while todo:
            for b in edges.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        reach.append(seen)
    done, out = set(), []
    for a in range(n):
        if a in done:
            continue
        comp = [b for b in range(n) if b == a or (b in reach[a] and a in reach[b])]
        done.update(comp)
        out.append(comp)
    return out


def _edges(stmts, updates: dict[str, list[int]]) -> dict[int, set[int]]:
    """j -> k when statement k reads a tensor that statement j updates."""
    edges: dict[int, set[int]] = {}
    for k, s in enumerate(stmts):
        for r in reads(s.expr):
            for j in updates.get(r.tensor, ()):
                edges.setdefault(j, set()).add(k)
    return edges


# ------------------------------------------------------------------ finding

def find(program: Program, updates: dict[str, list[int]]) -> list[Recurrence]:
    """Every recurrence of the program, checked; a TccError at the first broken rule."""
    stmts = program.stmts
    edges = _edges(stmts, updates)
    if not any(k <= j for j, ks in edges.items() for k in ks):
        return []           # every read comes after every update it sees: no cycle
    out = []
    for comp in _components(len(stmts), edges):
        if len(comp) == 1 and comp[0] not in edges.get(comp[0], ()):
            continue
        out.append(_recurrence(stmts, sorted(comp)))
    return out


def _step_form(ix) -> tuple[str, int] | None:
    """(index, literal) for ``t + u``; else None."""
    if isinstance(ix, Affine) and len(ix.terms) == 1 and ix.terms[0][1] == 1 and not ix.dims:
        return ix.terms[0][0], ix.const
    return None


def _hint(r: Ref, axis: int, var: str) -> str:
    parts = [str(ix) for ix in r.index]
    parts[axis] = f"{var} - 1"
    return f"{r.tensor}[{', '.join(parts)}]"


def _rec_reads(stmts, comp, mine: set[str]):
    """(k, read) for every read, in the recurrence, of a tensor it updates."""
    return [(k, r) for k in comp for r in reads(stmts[k].expr) if r.tensor in mine]


def _recurrence(stmts, comp: list[int]) -> Recurrence:
    mine = {stmts[k].target.tensor for k in comp}
    updates = {t: [k for k in comp if stmts[k].target.tensor == t] for t in mine}
    rec_reads = _rec_reads(stmts, comp, mine)
    # the reads of a step not yet done, unless they are at another step
    back = [(k, r) for k, r in rec_reads if max(updates[r.tensor]) >= k]
    axis: dict[str, int] = {}
    var: dict[int, str] = {}

    # Seeds: a read of a later update at an offset, ``h[t - 1]``, names the step
    # axis and the statement's step index.
    for k, r in back + [kr for kr in rec_reads if kr not in back]:
        target_vars = {f[0] for f in map(_step_form, stmts[k].target.index) if f}
        for a, ix in enumerate(r.index):
            if not isinstance(ix, Affine) or ix.plain is not None or ix.dims:
                continue
            v = next((u for u, c in ix.terms if c == 1 and u in target_vars), None)
            if v is None:
                continue
            axis.setdefault(r.tensor, a)
            if axis[r.tensor] == a:
                var.setdefault(k, v)
            break
    # ... and so does an update at an offset, ``h.grad[t - 1] += ...``, that a
    # plain read sees (the backward of a recurrence)
    for _, r in back:
        for j in updates[r.tensor]:
            target = stmts[j].target
            for a, ix in enumerate(target.index):
                f = _step_form(ix)
                if f is None or not f[1] or a >= len(r.index):
                    continue
                if _step_form(r.index[a]) is None or r.tensor in axis:
                    continue
                axis[r.tensor] = a
                var.setdefault(j, f[0])
                break
    if not axis:
        k, r = back[0]
        s = stmts[k]
        later = stmts[max(updates[r.tensor])]
        what = (f"the statement reads its own target '{r.tensor}'" if r.tensor == s.target.tensor
                else f"'{r.tensor}' is read here but updated later, at line {later.pos.line}")
        target = later.target.index
        plain = []
        for a, ix in enumerate(r.index):      # the axis the update has a plain index on
            tv = target[a].plain if a < len(target) and isinstance(target[a], Affine) else None
            mine = ix.plain if isinstance(ix, Affine) else None
            if tv is not None and (mine or tv in s.loops):
                plain.append((mine is not None, a, mine or tv))
        plain = [(a, v) for _, a, v in sorted(plain, key=lambda p: p[0])]
        hint = (f"; to read an earlier step, write {_hint(r, *plain[0])}" if plain
                else "; a tensor is read only after its last update, or at an earlier step "
                     "of a loop index (a recurrence)")
        raise _err(what + hint, r.pos)

    # Propagate: a target's step axis gives its statement's step index, a step
    # index the axis of the tensors it indexes.
    changed = True
    while changed:
        changed = False
        for k in comp:
            s = stmts[k]
            t = s.target.tensor
            if t in axis and k not in var:
                f = _step_form(s.target.index[axis[t]]) if axis[t] < len(s.target.index) \
                    else None
                if f is None:
                    raise _err(_no_step(s, t, axis[t]), s.target.pos)
                var[k] = f[0]
                changed = True
            if k in var and t not in axis:
                a = next((a for a, ix in enumerate(s.target.index)
                          if (f := _step_form(ix)) and f[0] == var[k]), None)
                if a is None:
                    raise _err(_no_step(s, t, None, var[k]), s.target.pos)
                axis[t] = a
                changed = True
            if k in var:
                for r in reads(s.expr):
                    if r.tensor in mine and r.tensor not in axis:
                        a = next((a for a, ix in enumerate(r.index) if isinstance(ix, Affine)
                                  and (var[k], 1) in ix.terms), None)
                        if a is not None:
                            axis[r.tensor] = a
                            changed = True
    for k in comp:
        if k not in var:
            s = stmts[k]
            raise _err(_no_step(s, s.target.tensor, axis.get(s.target.tensor)), s.target.pos)

    # Targets: the step index plainly or plus a literal; with '=', plainly.
    offset: dict[int, int] = {}
    for k in comp:
        s = stmts[k]
        t = s.target.tensor
        f = _step_form(s.target.index[axis[t]])
        if f is None or f[0] != var[k]:
            raise _err(_no_step(s, t, axis[t], var[k]), s.target.pos)
        if s.op == "=" and f[1]:
            raise _err(f"with '=', the step index stands plainly in the target: write "
                       f"'{t}' at [{var[k]}] on axis {axis[t]}, or use '+='", s.target.pos)
        offset[k] = f[1]

    # Reads: the step index plus a literal (or minus another loop index, as in
    # h[t - 1 - i]); every d = read - update of one sign; d = 0 only against
    # an update earlier in program order.
    signs: list[tuple[int, int, Ref]] = []
    for k, r in rec_reads:
        s = stmts[k]
        ix = r.index[axis[r.tensor]] if axis[r.tensor] < len(r.index) else None
        coefs = dict(ix.terms) if isinstance(ix, Affine) else {}
        if coefs.get(var[k]) != 1 or ix.dims:
            raise _err(f"'{r.tensor}' is read inside its recurrence, so its axis "
                       f"{axis[r.tensor]} must be the step index '{var[k]}' plus a literal "
                       f"(as in {_hint(r, axis[r.tensor], var[k])})", r.pos)
        extra = {c for u, c in ix.terms if u != var[k]}
        if extra - {1, -1} or len(extra) > 1:
            raise _err(f"the step of '{r.tensor}' read here is not the step index "
                       f"'{var[k]}' plus a literal, or minus a loop index", r.pos)
        lean = next(iter(extra), 0)
        for j in updates[r.tensor]:
            d = ix.const - offset[j]
            sign = (d > 0) - (d < 0)
            if sign and lean and lean != sign:
                raise _err(f"the step of '{r.tensor}' read here may fall either side of the "
                           f"step it is updated at, at line {stmts[j].pos.line}: a "
                           "recurrence runs in one direction", r.pos)
            if not sign and j >= k:
                what = ("its own target" if j == k else
                        f"the update at line {stmts[j].pos.line}, which comes later")
                raise _err(f"'{r.tensor}' is read at the step being computed, against "
                           f"{what}: the same step is read only after its update; to read "
                           f"an earlier step, write {_hint(r, axis[r.tensor], var[k])}",
                           r.pos)
            sign = sign or lean
            if sign:
                signs.append((sign, k, r))
    if not signs:
        k, r = rec_reads[0]
        raise _err(f"'{r.tensor}' is read inside its recurrence but never at another step: "
                   f"to read an earlier step, write {_hint(r, axis[r.tensor], var[k])}",
                   r.pos)
    first = signs[0]
    for sign, _, r in signs:
        if sign != first[0]:
            word = {-1: "an earlier", 1: "a later"}
            raise _err(f"'{r.tensor}' is read at {word[sign]} step here, but "
                       f"'{first[2].tensor}' at {word[first[0]]} step at line "
                       f"{first[2].pos.line}: a recurrence runs in one direction", r.pos)
    return Recurrence(tuple(comp), tuple((k, var[k]) for k in comp),
                      tuple(sorted(axis.items())), -first[0])


def _no_step(s: Stmt, t: str, axis: int | None, v: str | None = None) -> str:
    where = f"axis {axis}" if axis is not None else "its step axis"
    idx = f" '{v}'" if v else ""
    return (f"'{t}' is updated inside a recurrence, so every target of it there has the "
            f"step index{idx} on {where}, plainly or plus a literal")


# ------------------------------------------------------------------ order

def schedule(program: Program, updates: dict[str, list[int]],
             recurrences: list[Recurrence]) -> list[tuple[int, ...]]:
    """The run order: units (one statement, or a recurrence's statements), each
    after the units that update what it reads, else in program order."""
    stmts = program.stmts
    if not recurrences:
        return [(k,) for k in range(len(stmts))]
    unit_of = {}
    units: list[tuple[int, ...]] = []
    for rec in recurrences:
        for k in rec.stmts:
            unit_of[k] = len(units)
        units.append(rec.stmts)
    for k in range(len(stmts)):
        if k not in unit_of:
            unit_of[k] = len(units)
            units.append((k,))
    after: dict[int, set[int]] = {u: set() for u in range(len(units))}
    rec_tensors = {stmts[k].target.tensor for rec in recurrences for k in rec.stmts}
    for j, k in ((j, k) for j, ks in _edges(stmts, updates).items() for k in ks):
        uj, uk = unit_of[j], unit_of[k]
        if uj != uk and (j < k or stmts[j].target.tensor in rec_tensors):
            after[uk].add(uj)
    # an update of one tensor in another unit, for tensors a recurrence updates:
    # what runs over all steps first comes first (program order otherwise)
    for ks in updates.values():
        for j, k in zip(ks, ks[1:]):
            if unit_of[j] != unit_of[k] and unit_of[k] not in after[unit_of[j]]:
                after[unit_of[k]].add(unit_of[j])
    order, placed = [], set()
    while len(order) < len(units):
        ready = [u for u in range(len(units)) if u not in placed and after[u] <= placed]
        if not ready:        # a cycle between units: program order
            ready = [u for u in range(len(units)) if u not in placed]
        u = min(ready, key=lambda u: units[u][0])
        placed.add(u)
        order.append(units[u])
    return order
