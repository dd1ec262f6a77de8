"""Elementwise statements without whole-size temporaries: ``out=`` and in place.

NumPy evaluates ``P[...] = exp(T - m[:, None]) / s[:, None]`` with a new array
for every operation: ``T - m``, its ``exp`` and the quotient, then a copy into
``P``. Each one is a pass over memory, and each freshly allocated array of a
few MiB costs page faults when the allocator has handed its memory back (about
1000 per call on the attention workload, as many microseconds). Hand-written
NumPy writes ``np.subtract(T, m[:, None], out=P); np.exp(P, out=P); ...``.

``rewrite`` does the same to the statements of a row-block function (the
statements run on blocks of rows, ``rowblocks.py``). It follows the target
IR's shapes (``shapes.shape``): an operation writes into one of its operands
when that operand is a temporary this statement made and already has the
result's shape, or into the statement's target when that is an array of the
result's shape that the expression does not read. Every ufunc runs on the same
operands as before, in the same dtype: the results are the same bits.
"""

from __future__ import annotations

from tcc import functions

from .shapes import shape
from .target import ALL, Apply, Assign, Do, Index, Lit, Name, Op, walk

# operators with a NumPy ufunc, and which may run in place (``**`` stays an
# operator: ``x ** 2`` takes NumPy's fast square)
UFUNCS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "neg": "negative"}


class _Statement:
    """The in-place form of one statement: its steps and its temporaries."""

    def __init__(self, env: dict, taken: set, scratch: Name | None, dest: Name | None,
                 dying: set):
        self.env, self.taken, self.dying = env, taken, dying
        self.steps: list = []
        self.scratch = scratch      # the name the first temporary takes
        self.dest = dest            # an array of the statement's shape to write into
        self.dest_free = dest is not None   # dest holds no temporary yet
        self.full = None            # the statement's shape: smaller values stay expressions

    def temp(self, value, shp) -> Name:
        """A new temporary holding ``value`` (the first takes ``scratch``)."""
        if self.scratch is not None:
            name, self.scratch = self.scratch, None
        else:
            k = 1
            while f"_tmp{k}" in self.taken:
                k += 1
            name = Name(f"_tmp{k}")
            self.taken.add(name.name)
        self.env[name.name] = shp
        self.steps.append(Assign(name, value))
        return name

    def into(self, op: str, args: tuple, out: Name, shp) -> Name:
        self.steps.append(_do(op, args, out))
        self.env[out.name] = shp
        return out

    def value(self, n, root: bool = False):
        """(value, owned): ``n`` computed by the steps so far; owned when it is
        a temporary of this statement, free to overwrite."""
        op, args = _operation(n)
        if op is None:
            if isinstance(n, Name) and n in self.dying:
                return n, True
            if isinstance(n, Apply) and n.op == "matmul" and shape(n, self.env) == self.full:
                return self.temp(n, self.full), True    # a new array: scale it in place
            return n, False
        parts = [self.value(a) for a in args]
        vals = tuple(v for v, _ in parts)
        shp = shape(Op(n.op, vals) if isinstance(n, Op) else Apply(n.op, vals), self.env)
        if shp is None or shp != self.full:
            return (Op(n.op, vals) if isinstance(n, Op) else Apply(n.op, vals, n.kw)), False
        if root and self.dest is not None:
            return self.into(op, vals, self.dest, shp), True
        for v, owned in parts:
            if owned and shape(v, self.env) == shp:
                return self.into(op, vals, v, shp), True
        if self.dest_free:
            self.dest_free = False          # a temporary of the result's shape
            return self.into(op, vals, self.dest, shp), True
        return self.temp(Op(n.op, vals) if isinstance(n, Op) else Apply(n.op, vals, n.kw),
                         shp), True


def _operation(n) -> tuple[str | None, tuple]:
    """The ufunc of an elementwise node and its operands, or (None, ())."""
    if isinstance(n, Op) and n.op in UFUNCS:
        return UFUNCS[n.op], n.args
    if isinstance(n, Apply) and n.op.startswith("fn:") and not n.kw:
        row = functions.TABLE.get(n.op[3:])
        if row is not None and row.out_code is not None:
            return n.op, n.args
    return None, ()


def _do(op: str, args: tuple, out: Name) -> Do:
    return Do(Apply("ufunc", (Lit(op), *args), (("out", out),)))


def rewrite(stmts: list, env: dict, keep=frozenset(), min_rank: int = 0) -> list:
    """The statements with each elementwise assignment computed through ``out=``
    and in place; ``env`` maps each array's name to its shape (``shapes.shape``).

    A local that an earlier statement of ``stmts`` made and that this one reads
    for the last time, once, is a temporary too: its memory is reused; never
    one named in ``keep`` (what the function returns). Statements whose result
    has fewer than ``min_rank`` axes stay as written (outside row-block groups,
    a vector's temporary costs little and the plain expression reads better)."""
    taken = {n.name for s in stmts for n in walk(s) if isinstance(n, Name)}
    last = {n: i for i, s in enumerate(stmts) for n in walk(s) if isinstance(n, Name)}
    env = dict(env)
    local: set = set()
    alias: dict = {}        # a local -> the array whose memory it names
    busy: dict = {}         # an array holding a later statement's local -> its last read
    out: list = []
    for i, s in enumerate(stmts):
        reads = [n for n in walk(s.value) if isinstance(n, Name)] \
            if isinstance(s, Assign) else []
        dying = {n for n in local if last[n] == i and reads.count(n) == 1 and n.name not in keep}
        host = _host(stmts, i, last, env, keep)
        if host is not None and busy.get(host.name, -1) > i:
            host = None             # it holds another local still
        if host is not None:
            busy[host.name] = last[s.target]
        small = isinstance(s, Assign) and len(shape(s.value, env) or ()) < min_rank
        steps = [s] if small else _statement(s, env, taken, dying, host,
                                             {alias.get(n.name, n.name) for n in reads})
        for step in steps:
            if isinstance(step, Assign) and isinstance(step.target, Name) and \
                    isinstance(step.value, Name):
                alias[step.target.name] = alias.get(step.value.name, step.value.name)
        out += steps
        if isinstance(s, Assign) and isinstance(s.target, Name):
            if new_array(s.value) or (isinstance(s.value, Name) and s.value in local):
                local.add(s.target)
            else:
                local.discard(s.target)     # a view may share another array's memory
    return out


# operations whose result is a new array (never a view of another)
_NEW = {"einsum", "sum", "max", "min", "as_float", "array", "copy", "zeros", "full", "empty",
        "matmul", "tensordot"}


def new_array(value) -> bool:
    """Whether a value is a new array of the computation dtype, free to reuse
    (a comparison's booleans are not: a product written into them would fail)."""
    if isinstance(value, Op):
        return value.op in UFUNCS or value.op == "**"
    return isinstance(value, Apply) and (value.op.startswith("fn:") or value.op in _NEW)


def _host(stmts: list, i: int, last: dict, env: dict, keep) -> Name | None:
    """The target of a later statement that may hold statement i's new local
    until then: the statement that reads the local for the last time, once,
    writes the whole of a target of its shape that nothing reads or writes
    before it, or hands its own result on to such a target the same way.
    (Softmax: exp(s - max) goes straight into p, divided there.)"""
    s = stmts[i]
    if not (isinstance(s, Assign) and isinstance(s.target, Name)) or s.target.name in keep \
            or _operation(s.value)[0] is None:
        return None
    j = last.get(s.target, i)
    if j <= i or not isinstance(stmts[j], Assign) or \
            [n for n in walk(stmts[j].value) if n == s.target] != [s.target]:
        return None
    later = stmts[j]
    if isinstance(later.target, Index) and later.target.parts == (ALL,) and \
            isinstance(later.target.base, Name):
        dest = later.target.base
        if dest in walk(later.value):
            return None
    else:
        dest = _host(stmts, j, last, env, keep)
    if dest is None or shape(dest, env) is None or shape(dest, env) != shape(s.value, env) \
            or any(dest in walk(x) for x in stmts[i:j]):
        return None
    return dest


def _statement(s, env: dict, taken: set, dying: set, host: Name | None = None,
               memory: frozenset = frozenset()) -> list:
    """One statement's steps; ``memory``: the arrays its reads name (through
    aliases), which a target may not take as scratch."""
    if not isinstance(s, Assign) or _operation(s.value)[0] is None:
        return [s]
    if host is not None:
        st = _Statement(env, taken, None, host, dying)
    elif isinstance(s.target, Name) and s.target not in walk(s.value):
        st = _Statement(env, taken, s.target, None, dying)
    elif isinstance(s.target, Index) and s.target.parts == (ALL,) and \
            isinstance(s.target.base, Name) and s.target.base not in walk(s.value):
        st = _Statement(env, taken, None, s.target.base, dying)
    else:
        return [s]
    if st.dest is not None and st.dest.name in memory:
        st.dest_free = False        # it holds a value this statement still reads
    st.full = shape(s.value, env)
    if not st.full or (st.dest is not None and shape(st.dest, env) != st.full):
        return [s]              # a number, a shape not known here, or a broadcast
    value, owned = st.value(s.value, root=True)
    if len(st.steps) < 2 and not (owned and (st.dest is not None or value in dying)):
        return [s]              # one operation into a new array: nothing to save
    if isinstance(s.target, Name) and value != s.target:
        st.steps.append(Assign(s.target, value))
        env[s.target.name] = shape(value, env)
    return st.steps


__all__ = ["rewrite", "new_array", "UFUNCS"]
