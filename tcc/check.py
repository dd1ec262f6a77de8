"""Semantic checks, roles, and shape and range inference.

``analyze(program)`` enforces the rules of LANGUAGE.md section 1 (each error
a TccError at the offending position) and returns an ``Info``: every tensor's
role and symbolic shape, every statement's loop ranges, and the run-time
``plan`` (see tcc/_rt.py) that binds sizes from the arrays passed in and
checks them.

A size symbol is a dim name (``"B"``), an integer literal, or a derived name
for a range tcc infers: ``<T>_<k>`` for axis k of a computed tensor T, or
``_<var><n>`` for an index that names no tensor axis.

This module is over 500 lines on purpose: the rules, the roles and the
range inference read and write one ``Info`` together, in one order (a rule's
error often needs the ranges inferred so far); split, they would pass that
half-built state between modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import TccError
from .ir import (REDUCTIONS, base_name, is_grad, Affine, Bin, Gather, Program, Ref, Stmt, dim_uses,
                 index_cmps, reads, shape_owner, stmt_vars)

Size = Union[str, int]


@dataclass
class StmtInfo:
    stmt: Stmt
    ranges: dict[str, Size]


@dataclass
class Info:
    program: Program
    roles: dict[str, str]                  # input/param/data/output/intermediate
    shapes: dict[str, tuple[Size, ...]]
    dims: list[str]
    batch: str | None
    inputs: list[str]                      # input, param and data tensors, declared order
    outputs: list[str]
    computed: list[str]                    # in order of first update
    stmts: list[StmtInfo]
    plan: list[tuple]
    gather_data: set[str] = field(default_factory=set)
    stacked: set[str] = field(default_factory=set)   # tensors with a stacked constant axis

    def role(self, name: str) -> str:
        return self.roles[name]

    @property
    def input_dims(self) -> set[str]:
        """The dims some input, param or data array's shape gives a size."""
        return {e for t in self.inputs for e in self.shapes[t] if isinstance(e, str)}

    @property
    def differentiable(self) -> list[str]:
        return [t for t in self.inputs if self.roles[t] in ("input", "param")]


def _err(msg, pos):
    return TccError(msg, pos)


def analyze(program: Program, reserved=()) -> Info:
    """Check a parsed program and infer its shapes and ranges. The size symbols
    it invents avoid the names in ``reserved`` (a backward's avoid its forward's,
    with which it shares one table of sizes)."""
    analyzer = _Analyzer(program)
    analyzer.names.update(reserved)
    return analyzer.run()


def size_symbols(info: Info) -> set[str]:
    """Every size symbol a program's analysis uses: dims and inferred ranges."""
    out = set(info.dims)
    for si in info.stmts:
        out.update(v for v in si.ranges.values() if isinstance(v, str))
    for shape in info.shapes.values():
        out.update(e for e in shape if isinstance(e, str))
    return out


class _Analyzer:
    def __init__(self, program: Program):
        self.p = program
        self.roles: dict[str, str] = {}
        self.declared: dict[str, tuple] = {}      # tensor -> declared shape (or None)
        self.decl_pos = {}
        self.dims: list[str] = []
        self.batch: str | None = None
        self.shapes: dict[str, tuple[Size, ...]] = {}
        self.plan: list[tuple] = []
        self.bound: set[str] = set()              # dims some array binds
        self.gather_data: set[str] = set()
        self.names: set[str] = set()
        self.stacked: set[str] = set()

    # ------------------------------------------------------------ declarations
    def declarations(self):
        batch_decl = None
        for d in self.p.decls:
            if d.role == "dim":
                if d.name not in self.dims:
                    self.dims.append(d.name)
            elif d.role == "batch":
                if batch_decl is not None:
                    raise _err("'batch' is declared twice", d.pos)
                batch_decl = d
            else:
                self.roles[d.name] = d.role
                self.declared[d.name] = d.shape
                self.decl_pos[d.name] = d.pos
                for e in d.shape or ():
                    if isinstance(e, str) and e not in self.dims:
                        self.dims.append(e)
                    if isinstance(e, int) and e < 0:
                        raise _err(f"negative size {e} in the shape of '{d.name}'", d.pos)
                if d.role in ("input", "param", "data"):
                    shape = d.shape or ()
                    self.shapes[d.name] = tuple(shape)
                    self.bound.update(e for e in shape if isinstance(e, str))
        if batch_decl is not None:
            self.batch = None if batch_decl.name == "1" else batch_decl.name
        elif "B" in self.dims:
            self.batch = "B"

    def python_names(self):
        """Two tensors Python would spell alike (``x.grad`` and ``x_grad``)."""
        from .ir import py_name
        seen: dict[str, str] = {}
        places = [(d.name, d.pos) for d in self.p.decls if d.role in self.ROLES]
        places += [(s.target.tensor, s.target.pos) for s in self.p.stmts]
        places.sort(key=lambda np_: (np_[1].line, np_[1].col) if np_[1] else (0, 0))
        for name, pos in places:
            p = py_name(name)
            other = seen.setdefault(p, name)
            if other != name:
                raise _err(f"'{name}' clashes with '{other}': Python spells both '{p}'; "
                           "rename one", pos)
            base = name[:-len("_grad")] if name.endswith("_grad") else name
            twin = name + "_grad" if base == name else base
            if twin in seen.values() and not is_grad(name):
                g, plain_ = (name, twin) if name.endswith("_grad") else (twin, name)
                raise _err(f"'{g}' beside '{plain_}' clashes with '{plain_}.grad', which "
                           f"Python spells '{g}': rename it", pos)

    ROLES = ("input", "param", "data", "output")

    # ------------------------------------------------------------ statements
    def statement_rules(self):
        stmts = self.p.stmts
        updates: dict[str, list[int]] = {}
        for k, s in enumerate(stmts):
            t = s.target.tensor
            role = self.roles.get(t)
            seed = role == "data" and is_grad(t)    # a backward's seed, which it adds to
            if seed and s.op not in ("+=", "-="):
                raise _err(f"cannot update the seed '{t}' with '{s.op}': a data seed starts "
                           "at its given values and is only added to ('+=' or '-=')",
                           s.target.pos)
            if role in ("input", "param", "data") and not seed:
                raise _err(f"cannot update '{t}': it is declared {role}; only computed "
                           "tensors and outputs are written", s.target.pos)
            updates.setdefault(t, []).append(k)
        self.updates = updates
        for t, ks in updates.items():
            ops = [stmts[k].op for k in ks]
            for k in ks[1:]:
                s = stmts[k]
                if "=" in ops and len(ks) > 1:
                    first = stmts[ks[0]]
                    raise _err(f"'{t}' is defined with '=' but updated more than once (also "
                               f"at line {first.pos.line if k != ks[0] else s.pos.line}): "
                               "'=' must be a tensor's only update; use '+=' to accumulate",
                               s.pos)
                red = next((op for op in ops if op in REDUCTIONS), None)
                if red:
                    raise _err(f"'{t}' is updated with '{red}' and more than once: a '{red}' "
                               "tensor has exactly one update", s.pos)
        for t in self.declared:
            if self.roles[t] == "output" and t not in updates:
                raise _err(f"output '{t}' is declared but no statement computes it",
                           self.decl_pos[t])

        last = {t: ks[-1] for t, ks in updates.items()}
        for k, s in enumerate(stmts):
            if s.op == "=":
                for v in s.loops:
                    if v not in [ix.plain for ix in s.target.index if isinstance(ix, Affine)]:
                        raise _err(f"with '=', every loop index must be a plain index of the "
                                   f"target, but '{v}' is not: use '+=' to sum over it",
                                   s.target.pos)
            used = set(stmt_vars(s))
            for v in s.loops:
                if v not in used:
                    raise _err(f"loop index '{v}' is not used in the statement", s.pos_of(v))
            for r in reads(s.expr):
                self.check_read(r, k, s, last)
            for g in [ix for ix in s.target.index if isinstance(ix, Gather)]:
                self.check_gather(g, k, last)
            for c in index_cmps(s.expr):
                for g in [ix for ix in c.sides if isinstance(ix, Gather)]:
                    self.check_gather(g, k, last, in_comparison=True)

        outputs = [t for t in self.declared if self.roles[t] == "output"]
        read_by: dict[str, int] = {}
        for k, s in enumerate(stmts):
            for r in reads(s.expr):
                read_by.setdefault(r.tensor, k)
        if not outputs:
            outputs = [t for t in updates if t not in read_by and self.roles.get(t) != "data"]
        # A declared output may be read by later statements: its gradient is its
        # seed plus what flows back from those reads.
        self.outputs = outputs
        for t in updates:
            self.roles.setdefault(t, "intermediate")
            if t in outputs:
                self.roles[t] = "output"
        for t in self.roles:
            base = base_name(t) if is_grad(t) else None
            if base in self.roles and self.roles[base] != "data":
                pos = self.decl_pos.get(t) or stmts[updates[t][0]].target.pos
                raise _err(f"'{t}' is the name of the gradient of {self.roles[base]} "
                           f"'{base}' in the backward: rename it", pos)

    def check_read(self, r: Ref, k: int, s: Stmt, last: dict[str, int]):
        t = r.tensor
        if t == s.target.tensor:
            raise _err(f"the statement reads its own target '{t}'", r.pos)
        if t in last and last[t] > k:
            later = self.p.stmts[last[t]]
            raise _err(f"'{t}' is read here but updated later, at line {later.pos.line}: "
                       "a tensor is read only after its last update", r.pos)
        if t not in self.roles and t not in last:
            raise _err(f"undefined tensor '{t}': declare it (input, param or data) or "
                       "compute it before this statement", r.pos)
        if self.roles.get(t) == "output" and t in last:
            pass  # reported with the outputs
        for g in [ix for ix in r.index if isinstance(ix, Gather)]:
            self.check_gather(g, k, last)

    def check_gather(self, g: Gather, k: int, last, in_comparison=False):
        role = self.roles.get(g.tensor)
        if role != "data":
            what = f"declared {role}" if role else (
                "computed" if g.tensor in last else "undefined")
            why = ("a comparison with a loop index on a side compares positions, and its "
                   "other side is an index form: " if in_comparison else "")
            raise _err(f"{why}gather through '{g.tensor}', which is {what}: gather positions "
                       "must come from an integer 'data' tensor", g.pos)
        self.gather_data.add(g.tensor)

    # ------------------------------------------------------------ shapes
    def known_shape(self, t: str):
        if t in self.shapes:
            return self.shapes[t]
        if is_grad(t) and base_name(t) in self.shapes:
            return self.shapes[base_name(t)]
        if shape_owner(t) != t and shape_owner(t) in self.shapes:   # X.dot, X.hess
            return self.shapes[shape_owner(t)]
        decl = self.declared.get(t)
        if decl is not None and self.roles.get(t) == "output":
            if all(isinstance(e, int) or e in self.bound for e in decl):
                return tuple(decl)
        return None

    def accesses(self, s: Stmt):
        """(tensor, index, pos, is_target) for the target and every read."""
        out = [(s.target.tensor, s.target.index, s.target.pos, True)]
        for r in reads(s.expr):
            out.append((r.tensor, r.index, r.pos, False))
            for g in [ix for ix in r.index if isinstance(ix, Gather)]:
                out.append((g.tensor, g.index, g.pos, False))
        for g in [ix for ix in s.target.index if isinstance(ix, Gather)]:
            out.append((g.tensor, g.index, g.pos, False))
        return out

    def infer(self) -> list[StmtInfo]:
        infos = []
        for k, s in enumerate(self.p.stmts):
            infos.append(StmtInfo(s, self.infer_stmt(k, s)))
        return infos

    def infer_stmt(self, k: int, s: Stmt) -> dict[str, Size]:
        acc = self.accesses(s)
        # The gathers of index comparisons read their data, but fix no range.
        cmp_acc = [(g.tensor, g.index, g.pos, False) for c in index_cmps(s.expr)
                   for g in c.sides if isinstance(g, Gather)]
        fixing: dict[str, list[tuple[Size, str, object]]] = {v: [] for v in s.loops}
        shapes_here = {}
        gather_sources = {(g.tensor, g.index) for t, index, _, _ in acc
                          for g in index if isinstance(g, Gather)}
        for t, index, pos, _ in acc + cmp_acc:
            shape = self.known_shape(t)
            if shape is None:
                continue
            if len(index) != len(shape):
                raise _err(f"'{t}' has {len(shape)} ax{'i' if len(shape) == 1 else 'e'}s"
                           f" ({_fmt_shape(shape)}) but is indexed with {len(index)}", pos)
            if (t, index, pos, False) in cmp_acc:
                continue
            shapes_here[t] = shape
            for axis, ix in enumerate(index):
                v = ix.plain if isinstance(ix, Affine) else None
                if v is not None:
                    fixing[v].append((shape[axis], t, pos))
                elif isinstance(ix, Gather):
                    self.plan.append(("gather", ix.tensor, t, axis, shape[axis]))

        ranges: dict[str, Size] = {}
        for v, size in s.written:
            ranges[v] = size
            for other, t, pos in fixing[v]:
                if isinstance(other, int) and isinstance(size, int):
                    if other != size:
                        raise _err(f"index '{v}' is written to range over {size}, but its "
                                   f"plain use in '{t}' ranges over {other}", pos)
                elif other != size:
                    self.plan.append(("equal", other, size, f"index '{v}' is written to "
                                      f"range over {size}, and '{t}' uses it plainly"))
        for v in s.loops:
            uses = fixing[v]
            if not uses or v in ranges:
                continue
            names = []
            for size, _, _ in uses:
                if isinstance(size, str) and size not in names:
                    names.append(size)
            user = [n for n in names if n in self.dims]
            if len(user) > 1:
                (a, ta), (b, tb) = [(n, next(t for sz, t, _ in uses if sz == n))
                                    for n in user[:2]]
                pos = next(p for sz, t, p in uses if sz == b)
                raise _err(f"conflicting ranges for index '{v}': {a} (from '{ta}') and {b} "
                           f"(from '{tb}')", pos)
            if len(names) > 1:   # a size tcc inferred: compared at run time
                names = user + [n for n in names if n not in user]
                for other in names[1:]:
                    self.plan.append(("alias", other, names[0],
                                      f"index '{v}' ranges over both {names[0]} and {other}"))
            ints = sorted({size for size, _, _ in uses if isinstance(size, int)})
            if len(ints) > 1:
                raise _err(f"conflicting ranges for index '{v}': {ints[0]} and {ints[1]}",
                           uses[-1][2])
            ranges[v] = names[0] if names else ints[0]
            if names and ints:
                self.plan.append(("equal", names[0], ints[0],
                                  f"index '{v}' ranges over both {names[0]} and {ints[0]}"))

        # Indices no plain use fixes: the largest range keeping accesses in bounds.
        unfixed = [v for v in s.loops if v not in ranges]
        target_decl = self.declared.get(s.target.tensor)
        while unfixed:
            progress = False
            for v in list(unfixed):
                constraints, blocked = [], False
                for t, index, _, _ in acc:
                    shape = shapes_here.get(t)
                    if shape is None:
                        continue
                    for axis, ix in enumerate(index):
                        if not isinstance(ix, Affine) or v not in ix.vars:
                            continue
                        others = [(c, u) for u, c in ix.terms if u != v]
                        if any(u in unfixed for _, u in others):
                            blocked = True
                            continue
                        coef = dict(ix.terms)[v]
                        constraints.append((t, axis, shape[axis], coef,
                                            tuple((c, ranges[u]) for c, u in others),
                                            (ix.const, tuple((c, d) for d, c in ix.dims))))
                if not constraints:
                    if blocked:
                        continue
                    raise _err(f"cannot infer the range of index '{v}': use it as a plain "
                               "index of a tensor whose shape is known, write its range "
                               f"('for {v} in N'), or declare the target's shape "
                               "(a comparison fixes no range)", s.pos_of(v))
                sym = self.derived_symbol(s, v, k, target_decl)
                self.plan.append(("valid", sym, v, tuple(constraints)))
                ranges[v] = sym
                unfixed.remove(v)
                progress = True
            if not progress:
                raise _err(f"indices {', '.join(unfixed)} share one index expression and no "
                           "plain use fixes either range", s.pos)

        # Every non-plain access is checked: at compile time where every size is
        # known, else at run time. With written ranges, accesses outside a tensor
        # read 0 (updates are dropped), except a gather's reads of its data.
        checked = acc + cmp_acc
        for t, index, pos, _ in checked:
            shape = self.known_shape(t) if (t, index, pos, False) in cmp_acc else \
                shapes_here.get(t)
            if shape is None:
                continue
            if s.padded and (t, index) not in gather_sources and \
                    (t, index, pos, False) not in cmp_acc:
                continue
            in_cmp = (t, index, pos, False) in cmp_acc
            for axis, ix in enumerate(index):
                if isinstance(ix, Affine) and (ix.plain is None or in_cmp):
                    terms = tuple((c, ranges[u]) for u, c in ix.terms)
                    const = (ix.const, tuple((c, d) for d, c in ix.dims))
                    self.static_bounds(t, axis, shape[axis], ix, terms, pos)
                    self.plan.append(("bounds", t, axis, shape[axis], terms, const,
                                      _statement_text(s)))

        self.shape_target(s, ranges)
        return ranges

    def static_bounds(self, t: str, axis: int, size: Size, ix: Affine, terms, pos):
        """A constant or affine index outside a known-size axis: a compile-time error."""
        if ix.dims or any(isinstance(n, int) and n <= 0 for _, n in terms):
            return
        lo = hi = ix.const
        for c, n in terms:
            if not isinstance(n, int):
                lo, hi = (lo, None) if c > 0 else (None, hi)
            elif c > 0:
                hi = None if hi is None else hi + c * (n - 1)
            else:
                lo = None if lo is None else lo + c * (n - 1)
        where = ix.pos or pos
        if lo is not None and lo < 0:
            raise _err(f"the index {ix} of '{t}' axis {axis} reaches position {lo}: positions "
                       "start at 0 (write the loop's range, 'for i in N', to pad with zeros)",
                       where)
        if hi is not None and isinstance(size, int) and hi >= size:
            raise _err(f"the index {ix} of '{t}' axis {axis} reaches position {hi}, but that "
                       f"axis has size {size}", where)

    def dims_bound(self):
        """A dim used as a number (``1/B``) or an offset (``x[t + D]``) needs a size:
        some array's shape, or a declared output's, must name it."""
        for s in self.p.stmts:
            for d, pos in dim_uses(s):
                if d not in self.bound:
                    raise _err(f"dim '{d}' has no size: no input, param or data array has "
                               f"an axis of size {d}, and no declared output names one",
                               pos or s.pos)

    def derived_symbol(self, s: Stmt, v: str, k: int, target_decl) -> str:
        t = s.target.tensor
        for axis, ix in enumerate(s.target.index):
            if isinstance(ix, Affine) and ix.plain == v:
                if target_decl and isinstance(target_decl[axis], str) and \
                        target_decl[axis] not in self.bound:
                    self.bound.add(target_decl[axis])
                    return target_decl[axis]
                return self.fresh(f"{t.replace('.grad', '')}_{axis}")
        return self.fresh(f"_{v}{k}")

    def fresh(self, base: str) -> str:
        taken = set(self.dims) | set(self.roles) | self.names
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def shape_target(self, s: Stmt, ranges):
        t = s.target.tensor
        if t in self.shapes:
            return
        known = self.known_shape(t)
        decl = self.declared.get(t)
        tie = _tie_count_of(s)
        if known is None and tie is not None and \
                any(not (isinstance(ix, Affine) and ix.plain) for ix in s.target.index):
            known = self.known_shape(tie)      # a max=/min= tie count: its tensor's shape
        if known is not None:
            self.shapes[t] = known
            return
        if decl is not None and len(decl) != len(s.target.index):
            raise _err(f"'{t}' is declared with {len(decl)} axes but indexed with "
                       f"{len(s.target.index)}", s.target.pos)
        shape = []
        for axis, ix in enumerate(s.target.index):
            v = ix.plain if isinstance(ix, Affine) else None
            stacked = self.stacked_length(t, axis)
            if v is None and stacked is None:
                if tie is not None:
                    raise _err(f"the shape of '{tie}' is needed for the backward of this "
                               f"statement but cannot be inferred from the index {ix}: "
                               "declare it as an output with a shape", s.target.pos)
                raise _err(f"the shape of '{t}' cannot be inferred from the index {ix}: "
                           "declare it as an output with a shape, or index that axis by "
                           "a constant in every update", s.target.pos)
            size = ranges[v] if v is not None else stacked
            if v is None:
                self.stacked.add(t)
            if decl is not None:
                want = decl[axis]
                if isinstance(want, int):
                    if v is None and size > want:
                        raise _err(f"'{t}' axis {axis} is declared {want}, but an update "
                                   f"writes position {size - 1}", s.target.pos)
                    if size != want and v is not None:
                        if isinstance(size, int):
                            raise _err(f"'{t}' axis {axis} is declared {want} but index "
                                       f"'{v}' ranges over {size}", s.target.pos)
                        self.plan.append(("equal", size, want,
                                          f"'{t}' axis {axis} is declared {want}"))
                    size = want
                elif want != size:
                    if want in self.bound and isinstance(size, str):
                        raise _err(f"'{t}' axis {axis} is declared {want} but index '{v}' "
                                   f"ranges over {size}", s.target.pos)
                    self.plan.append(("alias", want, size,
                                      f"'{t}' axis {axis} is declared {want}"))
                    self.bound.add(want)
                    # the tensor keeps the loop's size symbol, so a backward
                    # sees one name for one range; `tcc parse` shows the declared one
            shape.append(size)
        self.shapes[t] = tuple(shape)

    def stacked_length(self, t: str, axis: int) -> int | None:
        """The largest constant + 1, when every update of t indexes ``axis`` by a
        constant (``w[b, 0] += ...; w[b, 1] += ...`` stack two columns)."""
        consts = []
        for k in self.updates.get(t, ()):
            index = self.p.stmts[k].target.index
            ix = index[axis] if axis < len(index) else None
            if not (isinstance(ix, Affine) and not ix.terms and not ix.dims):
                return None
            consts.append(ix.const)
        if not consts or min(consts) < 0:
            return None
        return max(consts) + 1

    # ------------------------------------------------------------ run
    def run(self) -> Info:
        self.declarations()
        self.python_names()
        self.statement_rules()
        plan_inputs = []
        for t, role in self.roles.items():
            if role in ("input", "param", "data"):
                plan_inputs.append(("shape", t, tuple(self.declared[t] or ()),
                                    t in self.gather_data))
        self.plan = plan_inputs
        stmt_infos = self.infer()
        self.dims_bound()
        inputs = [t for t, r in self.roles.items() if r in ("input", "param", "data")]
        computed = list(self.updates)
        for t in self.roles:
            if t not in self.shapes and self.roles[t] in ("input", "param", "data"):
                self.shapes[t] = ()
        for name in list(self.roles):
            if name in self.dims:
                raise _err(f"'{name}' names both a dim and a tensor", self.decl_pos.get(name))
        return Info(self.p, dict(self.roles), dict(self.shapes), list(self.dims), self.batch,
                    inputs, list(self.outputs), computed, stmt_infos, list(self.plan),
                    set(self.gather_data), set(self.stacked))


def _tie_count_of(s: Stmt) -> str | None:
    """For the tie count a backward builds for ``m max= e`` (``cnt[o] += (e == m[o])``,
    origin (k, -1)), the name of ``m``; else None."""
    e = s.expr
    if s.origin is not None and s.origin[1] == -1 and isinstance(e, Bin) and e.op == "==" \
            and isinstance(e.rhs, Ref):
        return e.rhs.tensor
    return None


def _statement_text(s: Stmt) -> str:
    """How a run-time error names a statement: its line and text."""
    where = f"line {s.pos.line}: " if s.pos else ""
    return f"{where}{s}"


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]" if shape else "scalar"


def describe(info: Info) -> str:
    """The program as tcc read it: declarations with every inferred shape."""
    lines = []
    if info.dims:
        lines.append("dim " + ", ".join(info.dims))
    if info.batch:
        lines.append(f"batch {info.batch}")
    elif any(d.role == "batch" for d in info.program.decls):
        lines.append("batch 1")
    declared = {d.name: d.shape for d in info.program.decls if d.shape}
    for t in info.inputs + info.outputs:
        shape = declared.get(t) or info.shapes.get(t, ())
        text = f"{t}[{', '.join(map(str, shape))}]" if shape else t
        lines.append(f"{info.roles[t]:<6} {text}")
    for t in info.computed:
        if info.roles[t] == "intermediate":
            shape = info.shapes.get(t, ())
            text = f"{t}[{', '.join(map(str, shape))}]" if shape else t
            lines.append(f"# intermediate {text}")
    for si in info.stmts:
        lines.append(str(si.stmt))
    return "\n".join(lines) + "\n"
