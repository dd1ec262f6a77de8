"""Types of target IR values: shapes in dims and element types.

The lowering knows each array's shape as the program declares it; these
functions carry that through the nodes it builds, from their parts, the way
NumPy's broadcasting and each operation of ``target.OPS`` define it.
``shape`` gives a tuple of sizes (dim names or ints, 1 for a new axis), or
None where the node's shape is computed only at run time (a window, a
reshape); ``dtype`` gives ``dt`` (the computation dtype the inputs give at run
time), ``bool`` or ``int``. The in-place pass (``inplace.py``) and the
passes estimate (``traffic.py``) decide by them; ``tcc explain --lowered``
prints them (``typed_lines``).
"""

from __future__ import annotations

from .target import ALL, NEW, Apply, Assign, Def, Do, For, If, Index, Lit, Name, Op, Slice, \
    Tup


def _broadcast(shapes) -> tuple | None:
    """NumPy's broadcast of shapes whose sizes are dim names or ints; None
    where two different sizes meet (they may be equal at run time, but that
    is not known here)."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(rank):
        sizes = {s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def shape(n, env: dict) -> tuple | None:
    """The shape of a value node, in sizes that are dim names or ints (1 for a
    new axis), given ``env``: array name -> shape. None where the node's shape
    is not known from its parts (a gather, a window, a reduction)."""
    if isinstance(n, Name):
        return tuple(env[n.name]) if n.name in env else None
    if isinstance(n, Lit) or (isinstance(n, (int, float)) and not isinstance(n, bool)):
        return ()
    if isinstance(n, Index):
        base = shape(n.base, env)
        if base is None:
            return None
        if n.parts and all(isinstance(p, (Name, Apply)) for p in n.parts):
            # a gather: index arrays, one per leading axis, broadcast together
            index = [shape(p, env) for p in n.parts]
            if None in index or len(n.parts) > len(base):
                return None
            lead = _broadcast(index)
            return None if lead is None else lead + tuple(base[len(n.parts):])
        out, k = [], 0
        for i, p in enumerate(n.parts):
            if p is NEW:
                out.append(1)
            elif p is ALL:
                after = sum(1 for q in n.parts[i + 1:] if q is not NEW)
                out += base[k:len(base) - after]
                k = len(base) - after
            elif p == Slice() and k < len(base):
                out.append(base[k])
                k += 1
            else:
                return None
        return tuple(out) + tuple(base[k:])
    if isinstance(n, Op):
        if n.op in ("and", "is", "is not"):
            return None
        parts = [shape(a, env) for a in n.args]
        return None if None in parts else _broadcast(parts)
    if isinstance(n, Apply):
        if n.op == "scalar":
            return ()
        if n.op == "if_nonzero":        # a number, or 0 where a size is 0
            return shape(n.args[0], env)
        if n.op in ("array", "asarray", "copy", "contiguous", "own"):
            return shape(n.args[0], env)
        if n.op == "arange_axis":
            size, axis, ndim = (a.value if isinstance(a, Lit) else a for a in n.args)
            size = size.name if isinstance(size, Name) else size
            if not isinstance(size, (str, int)) or not isinstance(axis, int) or \
                    not isinstance(ndim, int):
                return None
            return tuple(size if k == axis else 1 for k in range(ndim))
        if n.op == "transpose":
            base = shape(n.args[0], env)
            perm = n.get("perm")
            if base is None:
                return None
            return tuple(reversed(base)) if perm is None else tuple(base[k] for k in perm)
        if n.op == "matmul" and n.get("out") is None:
            # matrices, or stacks of them (the leading axes broadcast)
            a, b = (shape(x, env) for x in n.args[:2])
            if a is None or b is None or len(a) < 2 or len(b) < 2:
                return None
            batch = _broadcast([a[:-2], b[:-2]])
            return None if batch is None else batch + (a[-2], b[-1])
        if n.op.startswith("fn:") or n.op == "as_float":
            parts = [shape(a, env) for a in n.args]
            return None if None in parts else _broadcast(parts)
        if n.op in ("empty", "zeros", "full") and isinstance(n.args[0], Tup):
            sizes = [x.name if isinstance(x, Name) else x.value if isinstance(x, Lit) else None
                     for x in n.args[0].items]
            return None if None in sizes else tuple(sizes)
        if n.op in ("sum", "max", "min"):
            base, axis = shape(n.args[0], env), n.get("axis")
            if base is None or axis is None:
                return None
            axes = {a % len(base) for a in (axis if isinstance(axis, tuple) else (axis,))}
            return tuple(d for k, d in enumerate(base) if k not in axes)
        if n.op == "einsum" and isinstance(n.args[0], Lit):
            ins, res = n.args[0].value.split("->")
            size: dict = {}
            for letters, x in zip(ins.split(","), n.args[1:]):
                shp = shape(x, env)
                if shp is None or len(shp) != len(letters):
                    return None
                for c, d in zip(letters, shp):
                    if d != 1:
                        size[c] = d
            return tuple(size.get(c, 1) for c in res)
    return None


_COMPARE = {"<", ">", "<=", ">=", "==", "!="}


def dtype(n, env: dict) -> str:
    """A value's element type: ``dt`` (the computation dtype, float32 or
    float64, chosen at run time from the inputs), ``bool`` or ``int``."""
    if isinstance(n, Op) and n.op in _COMPARE | {"and"}:
        return "bool"
    if isinstance(n, Apply) and n.op in ("both", "owned"):
        return "bool"
    if isinstance(n, Apply) and n.op in ("arange", "arange_axis"):
        return "int"
    if isinstance(n, Op) and n.op == "neg":
        return dtype(n.args[0], env)
    return "dt"


def typed_lines(stmts, env: dict, indent: str = "") -> list[str]:
    """The statements printed as ``str`` does, each assignment followed by the
    type of what it makes (shape and dtype) where the shapes of its parts are
    known from ``env`` (array name -> shape; the assignments extend it)."""
    out: list[str] = []
    for s in stmts:
        note = None
        if isinstance(s, Assign) and isinstance(s.target, Name):
            shp = shape(s.value, env)
            if shp is not None:
                env[s.target.name] = shp
                note = (shp, dtype(s.value, env))
        elif isinstance(s, Do) and s.value.op == "ufunc":
            shp = shape(s.value.get("out"), env)
            note = None if shp is None else (shp, "dt")
        if isinstance(s, (For, Def, If)):
            head = str(s).splitlines()[0]
            out.append(indent + head)
            if isinstance(s, If):
                out += typed_lines(s.then, env, indent + "    ")
                if s.orelse:
                    out.append(indent + "else:")
                    out += typed_lines(s.orelse, env, indent + "    ")
            else:
                out += typed_lines(s.body, env, indent + "    ")
                if isinstance(s, Def) and s.result is not None:
                    out.append(f"{indent}    return {s.result}")
            continue
        line = indent + str(s)
        if note is not None and note[0]:
            line += f"    # [{', '.join(map(str, note[0]))}] {note[1]}"
        out.append(line)
    return out



__all__ = ["shape", "dtype", "typed_lines"]
