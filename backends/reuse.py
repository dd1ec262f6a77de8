"""Reuse of a contraction just computed. In the backward of a normalization
(attention's softmax over masked exponentials, for one) the gradient of the
normalizer repeats the contraction of the statement before it:

    P.grad[b, i, j] += O.grad[b, i, e] * V[b, j, e] / Z[b, i]
    Z.grad[b, i] -= O.grad[b, i, e] * V[b, j, e] * P[b, i, j] / Z[b, i] ** 2

The second sum is the first one's result times ``P / Z``, summed over j; it is
lowered as

    Z.grad[b, i] -= P.grad[b, i, j] * P[b, i, j] / Z[b, i]

which drops a contraction over e (a batched matrix product of the size of
the scores). Taken where the first statement sums over some index (so a
product is saved), is the first definition of its target, reads no tensor
the second writes, and where the second's expression is, as a polynomial
(``poly.py``), the first's times one product of factors that do not
depend on the first's summed indices, with the same index names and ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tcc.ir import Bin, Call, DimVal, Num, Ref, reads

from .poly import mul, power, same, try_poly


@dataclass
class Reuse:
    kind = "reuse"
    first: int              # the statement it lowers (the second)
    count: int
    si: tuple               # that statement rewritten to read the first's target (and
                            # a second, scaling it by factors over its own indices)
    target: str
    also: tuple = ()
    members: tuple = ()

    def describe(self) -> str:
        return "; ".join(str(si.stmt) for si in self.si)


def _atoms(e, out):
    """{atom text: the IR node} for the reads, sizes and calls in e."""
    if isinstance(e, (Ref, DimVal, Call)):
        p = try_poly(e)
        if p is not None and len(p) == 1:
            ((m, c),) = p.items()
            if len(m) == 1 and m[0][1] == 1 and c == 1.0:
                out[m[0][0][0]] = e
    for child in (getattr(e, "lhs", None), getattr(e, "rhs", None), getattr(e, "arg", None),
                  *getattr(e, "args", ())):
        if child is not None:
            _atoms(child, out)
    return out


def _expr(ref, q, atoms):
    """ref times the monomial q, as an expression over the nodes in atoms."""
    ((m, c),) = q.items()
    up, down = [ref], []
    for (text, _), k in m:
        node = atoms.get(text)
        if node is None:
            return None
        (up if k > 0 else down).append(node if abs(k) == 1 else
                                       Bin("**", node, Num(abs(k))))
    e = up[0]
    for f in up[1:]:
        e = Bin("*", e, f)
    for f in down:
        e = Bin("/", e, f)
    if c != 1.0:
        e = Bin("*", Num(c), e)
    return e


def _tvars(s):
    vs = [getattr(ix, "plain", None) for ix in s.target.index]
    return tuple(vs) if all(vs) and len(set(vs)) == len(vs) else None


def match(info, k):
    """The rewrite of statement k reading statement k - 1's target, or None."""
    stmts, infos = [si.stmt for si in info.stmts], info.stmts
    s1, s2 = stmts[k - 1], stmts[k]
    t1 = s1.target.tensor
    if t1 in info.inputs or s1.padded or s2.padded:
        return None             # (a seed: the first update adds to its given values)
    v1, v2 = _tvars(s1), _tvars(s2)
    if s1.op not in ("=", "+=") or s2.op not in ("=", "+=", "-=") or v1 is None or \
            v2 is None or t1 == s2.target.tensor or \
            any(s.target.tensor == t1 for s in stmts[:k - 1]) or \
            s2.target.tensor in {r.tensor for r in reads(s1.expr)}:
        return None
    summed1 = [v for v in s1.loops if v not in v1]
    summed2 = [v for v in s2.loops if v not in v2]
    if not summed1 or not set(summed1) <= set(summed2) or not set(v1) <= set(s2.loops) or \
            any(infos[k - 1].ranges[v] != infos[k].ranges[v] for v in s1.loops):
        return None
    p1, p2 = try_poly(s1.expr), try_poly(s2.expr)
    if p1 is None or p2 is None or len(p1) != 1:
        return None
    q = mul(p2, power(p1, -1))
    if len(q) != 1 or any(v in a[1] for m in q for a, _ in m for v in summed1):
        return None
    atoms = _atoms(s2.expr, {})
    expr = _expr(s1.target, q, atoms)
    if expr is None or not same(try_poly(expr, {str(s1.target): p1}), p2):
        return None
    loops = tuple(v for v in s2.loops if v not in summed1)
    # factors over the target's indices only multiply the sum once it is taken
    # (into a new tensor, target__sum): the sum is over fewer factors
    ((m, c),) = q.items()
    inner = {tuple((a, k) for a, k in m if not a[1] <= set(v2)): 1.0}
    outer = {tuple((a, k) for a, k in m if a[1] <= set(v2)): c}
    if outer != {(): 1.0}:
        tmp = Ref(s2.target.tensor + "__sum", s2.target.index)
        first = replace(s2, op="+=", target=tmp, expr=_expr(s1.target, inner, atoms),
                        loops=loops)
        then = replace(s2, expr=_expr(tmp, outer, atoms), loops=v2)
        if first.expr is not None and then.expr is not None:
            return Reuse(k, 1, (replace(infos[k], stmt=first), replace(infos[k], stmt=then)),
                         s2.target.tensor)
    return Reuse(k, 1, (replace(infos[k], stmt=replace(s2, expr=expr, loops=loops)),),
                 s2.target.tensor)


def plan(info, taken) -> dict:
    """{id of a StmtInfo: its Reuse} for the statements not in ``taken``."""
    out = {}
    for k in range(1, len(info.stmts)):
        if id(info.stmts[k]) in taken or id(info.stmts[k - 1]) in taken:
            continue
        r = match(info, k)
        if r is not None:
            out[id(info.stmts[k])] = r
    return out
