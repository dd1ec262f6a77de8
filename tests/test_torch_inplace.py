"""The torch backend computes elementwise statements through in-place methods
and ``out=`` (``backends/inplace.py``, printed by ``torch_backend._ufunc``):
the same bits as the plain expressions, no change to anything the caller
passed in or got back, and in attention the N x N scores and their gradient
are updated in place rather than copied."""

from __future__ import annotations

import os
import sys

import pytest

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_backends as tb  # noqa: E402

import tcc  # noqa: E402
from tcc.backends import inplace  # noqa: E402
from tcc.backends.torch_backend import BACKEND  # noqa: E402
from tcc.backends.target import NEW, Apply, Assign, Index, Lit, Name, Op, Slice  # noqa: E402
from tcc.ir import py_name  # noqa: E402

BENCH = os.path.join(os.path.dirname(HERE), "benchmarks", "programs")

ENV = {"S": ("N", "N"), "M": ("N", "N"), "T": ("N", "N"), "m": ("N",)}
S, M, T, m = Name("S"), Name("M"), Name("T"), Name("m")
COL = Index(m, (Slice(), NEW))


def fn(name, *args):
    return Apply("fn:" + name, args)


# T is made by the first statement; the second reads it for the last time, so
# each of its operations may run in T's memory
SECOND = {
    "difference": Op("-", (T, COL)),
    "number minus": Op("-", (Lit(1.0), T)),
    "number over": Op("/", (Lit(2.0), T)),
    "number times": Op("*", (Lit(0.5), T)),
    "sum, T second": Op("+", (M, T)),
    "negative": Op("neg", (T,)),
    "chain": fn("exp", Op("/", (Op("-", (T, COL)), M))),
    "relu": fn("relu", Op("-", (T, Lit(0.25)))),
    "max with a number": fn("max", Op("*", (T, M)), Lit(0.1)),
    "min of two": fn("min", Op("*", (T, Lit(3.0))), M),
    "functions": fn("tanh", fn("sin", fn("abs", Op("*", (T, M))))),
    "log and sqrt": fn("log", fn("sqrt", fn("abs", Op("+", (T, M))))),
    "cos": fn("cos", Op("-", (T, M))),
}


def _run(stmts, arrays):
    printer = BACKEND.printer()
    lines = printer.lines(stmts)
    ns = {"torch": torch, "dt": arrays["S"].new_empty(0),
          **{k: v.clone() for k, v in arrays.items()}}
    if "tensor_of" in printer.used:
        from tcc.backends.torch_helpers import _tensor
        ns["_tensor"] = _tensor
    exec("\n".join(lines), ns)
    return ns, lines


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(SECOND))
def test_in_place_steps_give_the_plain_expressions_bits(case, dtype):
    g = torch.Generator().manual_seed(0)
    arrays = {"S": torch.randn(5, 5, generator=g, dtype=dtype),
              "M": torch.rand(5, 5, generator=g, dtype=dtype) + 0.5,
              "m": torch.randn(5, generator=g, dtype=dtype)}
    stmts = [Assign(T, Op("+", (S, M))), Assign(Name("E"), SECOND[case])]
    plain, _ = _run(stmts, arrays)
    steps = inplace.rewrite(stmts, ENV, min_rank=2)
    got, lines = _run(steps, arrays)
    assert any("out=" in line or "_(" in line for line in lines), lines
    assert got["E"].dtype == dtype
    assert torch.equal(got["E"], plain["E"]), lines
    for name in arrays:                      # the arguments are never written
        assert torch.equal(got[name], arrays[name])


def test_attention_updates_its_scores_in_place():
    text = open(os.path.join(BENCH, "attention_causal.loop")).read()
    src = tcc.compile_source(text, backend="torch")
    forward, backward = src.split("def forward(", 1)[1].split("def backward(", 1)
    assert "S.exp_()\n    S.mul_(M)\n    P = S" in forward
    assert "O = P @ V\n    O.div_(Z[:, :, None])" in forward
    assert "P_grad += Z_grad[:, :, None]" in backward
    assert "P_grad.mul_(P)\n    S_grad = P_grad" in backward


@pytest.mark.parametrize("program", ["attention_causal", "mlp", "ugrnn", "softmax"])
def test_nothing_passed_in_or_returned_is_modified(program):
    text = open(os.path.join(BENCH, program + ".loop")).read()
    ref = tb.Ref(text, None)
    k = tcc.compile(text, backend="torch")
    kw = {t: torch.as_tensor(a) for t, a in ref.kwargs().items()}
    fwd = k.forward(**kw)
    seeds = {o: torch.as_tensor(s) for o, s in ref.seeds.items()}
    before = {n: {t: a.clone() for t, a in d.items()} for n, d in
              (("input", kw), ("forward result", fwd), ("seed", seeds))}
    grads = k.backward(seeds, **kw, **fwd)
    for t in ref.info.outputs:
        tb.assert_close(fwd[py_name(t)].numpy(), ref.computed[t], tb.RTOL64, tb.ATOL64, t)
    for t in ref.info.differentiable:
        tb.assert_close(grads[t].numpy(), ref.grads[t], tb.RTOL64, tb.ATOL64, f"{t}.grad")
    for what, d in (("input", kw), ("forward result", fwd), ("seed", seeds)):
        for t, a in d.items():
            assert torch.equal(a, before[what][t]), f"backward() modified the {what} '{t}'"


def test_a_number_first_is_written_the_other_way_round_or_as_a_tensor():
    printer = BACKEND.printer()
    out = Name("T")
    code = printer.expr(Apply("ufunc", (Lit("multiply"), Lit(0.5), out), (("out", out),)))
    assert code == "T.mul_(0.5)"
    code = printer.expr(Apply("ufunc", (Lit("subtract"), Lit(1.0), out), (("out", out),)))
    assert code == "torch.sub(_tensor(1.0, dt), T, out=T)"
    code = printer.expr(Apply("ufunc", (Lit("fn:relu"), S), (("out", out),)))
    assert code == "torch.clamp(S, min=0.0, out=T)"
