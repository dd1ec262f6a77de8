"""Estimated passes over memory of lowered code, from the target IR's shapes.

A pass is one read or one write of an array the size of the function's
largest array. Each operation on arrays reads its array operands and writes
its result; a view (a slice, a new axis) is free. A row-block group (``Def``)
holds its blocks in cache, so it costs one read or write of each array it
touches from outside, however many statements it runs. ``tcc explain``
reports the estimate for the program as written (no groups, no in-place
steps) and as compiled.
"""

from __future__ import annotations

import math

from .shapes import shape
from .target import Apply, Assign, Def, Do, For, If, Index, Lit, Name, Op, Update, walk


class _Unknown(Exception):
    """An array whose shape the target IR does not give (a convolution's
    flattened rows, a gather): no estimate."""


def passes(stmts, env: dict, sizes: dict) -> float | None:
    """Estimated passes of ``stmts`` over memory, or None where some array's
    shape is not known at generation time; ``env``: array name -> shape (dims
    or ints), ``sizes``: dim -> a nominal size."""
    env = dict(env)
    largest = max((_count(s, sizes) for s in env.values()), default=0)
    if not largest:
        return 0.0
    try:
        return _stmts(stmts, env, sizes) / largest
    except _Unknown:
        return None


def _count(shp, sizes) -> int:
    if shp is None:
        return 0
    return math.prod(sizes.get(d, 1) if isinstance(d, str) else d for d in shp)


def _size(n, env, sizes) -> int:
    return _count(shape(n, env), sizes)


def _computes(n) -> bool:
    """Whether a value node makes a new array (not a view, not a number)."""
    return isinstance(n, (Op, Apply)) and not (isinstance(n, Apply) and n.op in (
        "transpose", "broadcast_to", "reshape", "as_strided", "strided_view", "diagonal",
        "scalar", "if_nonzero"))


def _expr(n, env, sizes) -> int:
    """Elements moved to compute value ``n``: its operands read, its result
    written, recursively."""
    if not _computes(n) or (isinstance(n, Apply) and n.op == "empty"):
        return 0            # a view, a number, or memory not yet touched
    args = n.args if isinstance(n, Op) else (*n.args, *(v for _, v in n.kw))
    moved = sum(_expr(a, env, sizes) + _size(a, env, sizes) for a in args
                if isinstance(a, (Name, Index, Op, Apply)))
    return moved + _size(n, env, sizes)


def _stmts(stmts, env, sizes) -> int:
    total = 0
    for s in stmts:
        if isinstance(s, Assign):
            total += _expr(s.value, env, sizes)
            if isinstance(s.target, Name):
                shp = shape(s.value, env)
                if shp is None and not isinstance(s.value, Lit):
                    raise _Unknown(s.target.name)
                env[s.target.name] = shp
                if not _computes(s.value):
                    continue            # a name for a view: nothing moves
            if isinstance(s.target, Index):     # written into an existing array
                total += 2 * _size(s.target, env, sizes) if _computes(s.value) else \
                    2 * _size(s.value, env, sizes)
        elif isinstance(s, Update):
            if shape(s.target, env) is None:
                raise _Unknown(str(s.target))
            total += _expr(s.value, env, sizes) + _size(s.value, env, sizes) + \
                2 * _size(s.target, env, sizes)
        elif isinstance(s, Do):
            if s.value.op != "row_blocks":
                total += _expr(s.value, env, sizes)
        elif isinstance(s, Def) and s.result is not None:
            raise _Unknown(s.name)      # a measured choice: decided at run time
        elif isinstance(s, Def):
            inner = {n.name for b in s.body for n in walk(b)
                     if isinstance(b, Assign) and isinstance(b.target, Name) and n == b.target}
            touched = {n.name for b in s.body for n in walk(b) if isinstance(n, Name)}
            total += sum(_count(env.get(name), sizes) for name in touched - inner)
        elif isinstance(s, For):
            count = s.count.value if isinstance(s.count, Lit) else \
                sizes.get(s.count.name, 1) if isinstance(s.count, Name) else 1
            total += count * _stmts(s.body, env, sizes)
        elif isinstance(s, If):
            total += _stmts(s.then, env, sizes)
    return total


__all__ = ["passes"]
