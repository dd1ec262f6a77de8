"""Library kernels: groups of statements that compute what one call of a
backend's library computes (torch's softmax, log-softmax, log-sum-exp and the
softmax backward), recognized by structure on the checked, optimized program.

A backend whose table has the kernel's operation (``softmax``,
``log_softmax``, ``logsumexp``, ``softmax_backward``: see ``target.OPS``) gets
the group lowered as that one call; any other backend lowers the statements
one by one, as before. A group is taken only where its intermediate tensors
(the maximum, the exponentials, their sum) are read by no other statement and
not returned, so nothing else needs them. The statements must be consecutive
and use the same index names; the reduced axis may be any axis of the input.

Patterns (x read with plain, distinct indices; m, Z, E, e over x's indices
less the reduced one j, in order):

    softmax      m max= x;  E = exp(x - m);  Z += E;  p = E / Z
    log-softmax  m max= x;  E = exp(x - m);  Z += E;  q = x - m - log(Z)
    log-sum-exp  m max= x;  Z += exp(x - m);  L = log(Z) + m   (or with E = exp(x - m))
    softmax bwd  e += g * p;  s.grad += p * (g - e)             (e dead elsewhere)
    var-mean     mu += x / N;  xc = x - mu;  var += xc ** 2 / N   (N the reduced range;
                 layer norm's statistics: mu and var from one pass, xc as written)

Two more families have their own modules, found here with these: whole layer
norms, forward and backward (``layernorm.py``, tried first at each statement)
and convolutions and their gradients (``convkernels.py``). ``reuse.py``'s
rewrites (every backend) go through the same hook of the lowering.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcc.ir import Affine, Bin, Call, DimVal, Num, Ref, reads

KERNEL_OPS = ("softmax", "log_softmax", "logsumexp", "softmax_backward", "var_mean",
              "conv", "conv_weight", "conv_input", "conv_backward", "layer_norm",
              "layer_norm_backward")


@dataclass
class Group:
    kind: str               # one of KERNEL_OPS
    first: int              # index of its first statement
    count: int              # how many consecutive statements
    target: str             # the tensor it defines
    args: tuple[str, ...]   # the tensors it reads (x; or g, p for the backward)
    dim: int                # the reduced axis of x
    index: tuple            # x's (and the target's) index
    also: tuple[str, ...] = ()    # var-mean: the mean (the target is the variance)
    members: tuple[int, ...] = ()  # the statements it replaces (default: all of them)

    def describe(self) -> str:
        call = {"softmax": "torch.softmax", "log_softmax": "torch.log_softmax",
                "logsumexp": "torch.logsumexp",
                "softmax_backward": "torch's softmax backward",
                "var_mean": "torch.var_mean"}[self.kind]
        if self.also:
            return (f"{call} over axis {self.dim} of {', '.join(self.args)} computes "
                    f"{self.target} and {', '.join(self.also)}")
        return f"{call} over axis {self.dim} of {', '.join(self.args)} computes {self.target}"


def _plain(index) -> tuple[str, ...] | None:
    vs = [ix.plain if isinstance(ix, Affine) else None for ix in index]
    return tuple(vs) if all(vs) and len(set(vs)) == len(vs) else None


def _ref(t, index) -> Ref:
    return Ref(t, tuple(index))


def _max_head(s):
    """(x ref, m ref, reduced var, dim) for ``m[...] max= x[...]``, else None."""
    if s.op != "max=" or not isinstance(s.expr, Ref):
        return None
    xv, mv = _plain(s.expr.index), _plain(s.target.index)
    if xv is None or mv is None or set(s.loops) != set(xv):
        return None
    rest = [v for v in xv if v not in mv]
    if len(rest) != 1 or tuple(v for v in xv if v != rest[0]) != mv:
        return None
    return s.expr, s.target, rest[0], xv.index(rest[0])


def _new(s, op=("=", "+=")):
    return s.op in op


def _lse(m, Z):
    """The log-sum-exp from the maximum and the shifted sum, as it may be written."""
    return (Bin("+", Call("log", (Z,)), m), Bin("+", m, Call("log", (Z,))))


def _log_softmax(x, m, Z):
    return (Bin("-", Bin("-", x, m), Call("log", (Z,))),
            *(Bin("-", x, lse) for lse in _lse(m, Z)))


def _tail(i, count, x, m, Z, dim, last, dead):
    """The group ending in ``last``: a log-sum-exp or a log-softmax, or None."""
    if not _new(last):
        return None
    if _plain(last.target.index) == _plain(m.index) and last.expr in _lse(m, Z):
        return Group("logsumexp", i, count, last.target.tensor, (x.tensor,), dim,
                     x.index), dead
    if _plain(last.target.index) == _plain(x.index) and last.expr in _log_softmax(x, m, Z):
        return Group("log_softmax", i, count, last.target.tensor, (x.tensor,), dim,
                     x.index), dead
    return None


def _var_mean(stmts, ranges, i):
    """mu += x / N; xc = x - mu; var += xc ** 2 / N, N the range of the summed index."""
    if i + 2 >= len(stmts):
        return None
    a, b, c = stmts[i:i + 3]
    if a.op != "+=" or not isinstance(a.expr, Bin) or a.expr.op != "/" or \
            not isinstance(a.expr.lhs, Ref):
        return None
    x, mu = a.expr.lhs, a.target
    xv, mv = _plain(x.index), _plain(mu.index)
    if xv is None or mv is None or set(a.loops) != set(xv):
        return None
    rest = [v for v in xv if v not in mv]
    if len(rest) != 1 or tuple(v for v in xv if v != rest[0]) != mv:
        return None
    n = DimVal(ranges[i][rest[0]]) if isinstance(ranges[i][rest[0]], str) else \
        Num(ranges[i][rest[0]])
    if a.expr.rhs != n or b.op != "=" or b.expr != Bin("-", x, mu) or \
            _plain(b.target.index) != xv:
        return None
    if b.target.tensor in (x.tensor, mu.tensor):
        return None
    xc = _ref(b.target.tensor, x.index)
    if c.op != "+=" or c.expr != Bin("/", Bin("**", xc, Num(2)), n) or \
            _plain(c.target.index) != mv or c.target.tensor in (mu.tensor, xc.tensor):
        return None
    return Group("var_mean", i, 3, c.target.tensor, (x.tensor,), xv.index(rest[0]), x.index,
                 (mu.tensor,), (i, i + 2)), set()


def _match_at(stmts, i, ranges=None):
    n = len(stmts)
    if ranges is not None:
        found = _var_mean(stmts, ranges, i)
        if found is not None:
            return found
    head = _max_head(stmts[i]) if i < n else None
    if head is not None:
        x, m, j, dim = head
        shifted = Call("exp", (Bin("-", x, m),))
        rest = stmts[i + 1:i + 4]
        # m max= x; Z += exp(x - m); L = log(Z) + m  (or q = x - m - log(Z))
        if len(rest) >= 2 and rest[0].op == "+=" and rest[0].expr == shifted and \
                _plain(rest[0].target.index) == _plain(m.index):
            Z = _ref(rest[0].target.tensor, m.index)
            found = _tail(i, 3, x, m, Z, dim, rest[1], {m.tensor, Z.tensor})
            if found is not None:
                return found
        if len(rest) >= 3 and rest[0].op == "=" and rest[0].expr == shifted and \
                _plain(rest[0].target.index) == _plain(x.index):
            E = _ref(rest[0].target.tensor, x.index)
            zs = rest[1]
            if zs.op == "+=" and zs.expr == E and _plain(zs.target.index) == _plain(m.index):
                Z = _ref(zs.target.tensor, m.index)
                last = rest[2]
                dead = {m.tensor, E.tensor, Z.tensor}
                if _new(last) and _plain(last.target.index) == _plain(x.index):
                    if last.expr == Bin("/", E, Z):
                        return Group("softmax", i, 4, last.target.tensor, (x.tensor,), dim,
                                     x.index), dead
                found = _tail(i, 4, x, m, Z, dim, last, dead)
                if found is not None:
                    return found
    # e += g * p; s.grad += p * (g - e)
    if i + 1 < n:
        a, b = stmts[i], stmts[i + 1]
        if a.op == "+=" and isinstance(a.expr, Bin) and a.expr.op == "*" and \
                isinstance(a.expr.lhs, Ref) and isinstance(a.expr.rhs, Ref) and \
                _plain(a.expr.lhs.index) is not None and \
                a.expr.lhs.index == a.expr.rhs.index and _plain(a.target.index) is not None:
            xv = _plain(a.expr.lhs.index)
            ev = _plain(a.target.index)
            rest = [v for v in xv if v not in ev]
            if len(rest) == 1 and tuple(v for v in xv if v != rest[0]) == ev and \
                    set(a.loops) == set(xv):
                e = a.target
                for g, p in ((a.expr.lhs, a.expr.rhs), (a.expr.rhs, a.expr.lhs)):
                    want = (Bin("*", p, Bin("-", g, e)), Bin("*", Bin("-", g, e), p))
                    if b.op in ("+=", "=") and b.expr in want and \
                            _plain(b.target.index) == xv and set(b.loops) == set(xv):
                        return Group("softmax_backward", i, 2, b.target.tensor,
                                     (g.tensor, p.tensor), xv.index(rest[0]), g.index), \
                            {e.tensor}
    return None


def _candidates(stmts, ranges, i, ops, forward, info):
    """The groups that may start at statement i, the largest first: (group, the
    tensors that must be dead elsewhere), or None."""
    from . import layernorm
    if set(ops) & set(layernorm.LAYER_NORM_OPS):
        yield layernorm.match(stmts, ranges, i, forward, info.outputs, info.inputs)
    if ops:
        yield _match_at(stmts, i, ranges)
    from .convkernels import CONV_OPS, _conv
    if set(ops) & set(CONV_OPS):
        conv = _conv(stmts[i], i)
        yield None if conv is None else (conv, set())


def find(info, keep, ops, forward=None) -> list[Group]:
    """The kernel groups of a checked program whose operations are in ``ops``;
    ``keep``: the tensors the function returns; ``forward``: for a backward
    program, the forward's Info (layer norm's backward needs its forward)."""
    stmts = [si.stmt for si in info.stmts]
    ranges = [si.ranges for si in info.stmts]
    found, i = [], 0
    while i < len(stmts):
        for m in _candidates(stmts, ranges, i, ops, forward, info):
            if m is None or m[0].kind not in ops:
                continue
            group, dead = m
            inside = range(group.first, group.first + group.count)
            outside = [s for k, s in enumerate(stmts) if k not in inside]
            used = {r.tensor for s in outside for r in reads(s.expr)} | \
                {s.target.tensor for s in outside} | \
                {g.tensor for s in outside for r in [s.target, *reads(s.expr)]
                 for g in r.index if not isinstance(g, Affine)}
            targets = [stmts[k].target.tensor for k in inside]
            defined = {group.target, *group.also}
            later = {s.target.tensor for s in stmts[:i]} | \
                {s.target.tensor for s in stmts[group.first + group.count:]}
            if not (dead & (used | set(keep))) and group.target not in targets[:-1] and \
                    not (defined & {s.target.tensor for s in stmts[:i]}) and \
                    not (group.also and defined & later):
                found.append(group)
                i += group.count
                break
        else:
            i += 1
    return found


def plan(info, keep, ops, forward=None) -> dict[int, Group]:
    """{id of the group's StmtInfo: group} for the lowering's hook, every member."""
    out = {}
    found = find(info, keep, ops, forward)
    if "conv_backward" in ops:
        from .convkernels import _pair_gradients
        _pair_gradients(found)
    for g in found:
        for k in g.members or range(g.first, g.first + g.count):
            out[id(info.stmts[k])] = g
    return out


def lower_group(ctx, si, group: Group) -> list:
    """The group's statements, at its first member (its others lower to nothing)."""
    from .operands import ap, read_operand
    from .target import Assign, Comment, Tup
    info = ctx.info
    if id(si) != id(info.stmts[group.first]):
        return []
    from .convkernels import Conv, lower_conv
    if isinstance(group, Conv):
        return lower_conv(ctx, si, group)
    from .layernorm import LayerNorm, lower
    if isinstance(group, LayerNorm):
        return lower(ctx, si, group)
    from .reuse import Reuse
    if isinstance(group, Reuse):
        from .lower import lower_statement
        out = [Comment(str(si.stmt)), Comment(f"(the sum above, reusing the product "
                                              f"before it: {group.describe()})")]
        for part in group.si:
            t = part.stmt.target.tensor
            if t not in ctx.info.shapes and t not in ctx.extra_shapes:     # target__sum
                ctx.extra_shapes[t] = ctx.shape_of(group.target)
            out += lower_statement(ctx, part)[1:]
        return out
    members = [info.stmts[k] for k in group.members or
               range(group.first, group.first + group.count)]
    out = [Comment(str(m.stmt)) for m in members]
    out.append(Comment(f"(one library kernel: {group.describe()}, the {len(members)} "
                       "statements above)"))
    ranges = members[0].ranges
    args = [read_operand(ctx, Ref(t, group.index), ranges).node for t in group.args]
    ctx.defined.update([group.target, *group.also])
    target = ctx.local(group.target)
    if group.also:
        target = Tup((target, *map(ctx.local, group.also)))
    return out + [Assign(target, ap(group.kind, *args, dim=group.dim))]
