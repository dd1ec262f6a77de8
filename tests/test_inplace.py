"""In-place steps in row-block groups (backends/inplace.py): elementwise
statements write through ``out=`` into their target or into temporaries they
made, and reuse a local's memory when they read it for the last time. The
results must be the very same bits as the plain expressions.

The target IR's shapes (``shapes.shape``) decide what may be overwritten; the
tests below check those rules on nodes, then every example, forward and
backward, against the module compiled without the pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tcc
from tcc import interp
from tcc.backends import inplace
from tcc.backends.shapes import shape
from tcc.backends.target import ALL, NEW, Apply, Assign, Index, Lit, Name, Op, Slice
from tcc.check import analyze
from tcc.parse import parse

EXAMPLES = Path(__file__).parent / "data" / "examples"
BENCH = Path(__file__).parent.parent / "benchmarks" / "programs"
ENV = {"S": ("N", "N"), "M": ("N", "N"), "P": ("N", "N"), "T": ("N", "N"), "m": ("N",),
       "s": ("N",), "g": ("D",), "x": ("N", "D"), "y": ("N", "D")}


def _code(stmts) -> list[str]:
    return [str(s) for s in stmts]


def _col(name):
    return Index(Name(name), (Slice(), NEW))


def test_shapes_of_target_ir_values():
    assert shape(Name("S"), ENV) == ("N", "N")
    assert shape(_col("m"), ENV) == ("N", 1)
    assert shape(Op("-", (Name("T"), _col("m"))), ENV) == ("N", "N")
    assert shape(Op("*", (Name("g"), Name("x"))), ENV) == ("N", "D")
    assert shape(Apply("fn:exp", (Name("x"),)), ENV) == ("N", "D")
    assert shape(Index(Name("x"), (ALL, NEW)), ENV) == ("N", "D", 1)
    assert shape(Lit(2.0), ENV) == ()
    # sizes that differ by name may differ at run time: not known here
    assert shape(Op("+", (Name("S"), Name("x"))), ENV) is None
    # a gather, a window or an unknown array: not known
    assert shape(Index(Name("x"), (Slice(Lit(1), None),)), ENV) is None
    assert shape(Name("unknown"), ENV) is None


def test_a_chain_writes_into_its_target():
    # P[...] = exp(T - m[:, None]) / s[:, None]: two steps in P, no temporary
    value = Op("/", (Apply("fn:exp", (Op("-", (Name("T"), _col("m"))),)), _col("s")))
    got = inplace.rewrite([Assign(Index(Name("P"), (ALL,)), value)], ENV)
    assert _code(got) == ["ufunc('subtract', T, m[:, None], out=P)",
                          "ufunc('fn:exp', P, out=P)",
                          "ufunc('divide', P, s[:, None], out=P)"]


def test_a_new_local_is_the_first_temporary():
    value = Apply("fn:exp", (Op("-", (Name("S"), _col("m"))),))
    got = inplace.rewrite([Assign(Name("E"), value)], ENV)
    assert _code(got) == ["E = (S - m[:, None])", "ufunc('fn:exp', E, out=E)"]


def test_small_parts_stay_expressions_and_one_operation_is_left_alone():
    # the row-vector factor is cheap: it stays inside the one full-size step
    value = Op("*", (Op("*", (Lit(0.5), _col("m"))), Name("S")))
    assert _code(inplace.rewrite([Assign(Name("E"), value)], ENV)) == \
        ["E = ((0.5 * m[:, None]) * S)"]
    # a number is not an array
    assert _code(inplace.rewrite([Assign(Name("v"), Op("/", (Lit(1), Lit(3))))], ENV)) == \
        ["v = (1 / 3)"]


def test_a_local_read_for_the_last_time_lends_its_memory():
    stmts = [Assign(Name("T"), Op("+", (Name("S"), Name("M")))),
             Assign(Name("E"), Apply("fn:exp", (Op("-", (Name("T"), _col("m"))),)))]
    got = _code(inplace.rewrite(stmts, ENV))
    assert got == ["T = (S + M)", "ufunc('subtract', T, m[:, None], out=T)",
                   "ufunc('fn:exp', T, out=T)", "E = T"]


def test_a_local_read_twice_or_read_later_keeps_its_memory():
    # (T - m) * exp(T): writing T - m into T would change what exp reads
    twice = [Assign(Name("T"), Op("+", (Name("S"), Name("M")))),
             Assign(Name("E"), Op("*", (Op("-", (Name("T"), _col("m"))),
                                        Apply("fn:exp", (Name("T"),)))))]
    assert not any("out=T" in line for line in _code(inplace.rewrite(twice, ENV)))
    later = [Assign(Name("T"), Op("+", (Name("S"), Name("M")))),
             Assign(Name("E"), Apply("fn:exp", (Op("-", (Name("T"), _col("m"))),))),
             Assign(Name("F"), Op("*", (Name("T"), Lit(2.0))))]
    got = _code(inplace.rewrite(later, ENV))
    assert got[:3] == ["T = (S + M)", "E = (T - m[:, None])", "ufunc('fn:exp', E, out=E)"]
    # (F's statement reads T for the last time: its one operation may write into it)
    assert got[3:] == ["ufunc('multiply', T, 2.0, out=T)", "F = T"]


def test_one_operation_on_a_local_read_for_the_last_time_writes_into_it():
    # attention's backward: S.grad = P.grad * P in P.grad's memory, no new array
    stmts = [Assign(Name("T"), Op("+", (Name("S"), Name("M")))),
             Assign(Name("E"), Op("*", (Name("T"), Name("M"))))]
    assert _code(inplace.rewrite(stmts, ENV)) == [
        "T = (S + M)", "ufunc('multiply', T, M, out=T)", "E = T"]
    # not when it is kept (returned), nor when it is no new array (a view of S)
    assert _code(inplace.rewrite(stmts, ENV, keep={"T"}))[1] == "E = (T * M)"
    view = [Assign(Name("T"), Apply("transpose", (Name("S"),), (("perm", None),))),
            Assign(Name("E"), Op("*", (Name("T"), Name("M"))))]
    assert _code(inplace.rewrite(view, ENV))[1] == "E = (T * M)"


def test_a_later_target_hosts_a_local_until_it_is_written():
    # softmax: E = exp(S - m) lives in P, which the last statement divides in place
    stmts = [Assign(Name("E"), Apply("fn:exp", (Op("-", (Name("S"), _col("m"))),))),
             Assign(Name("z"), Apply("sum", (Name("E"),), (("axis", 1),))),
             Assign(Index(Name("P"), (ALL,)), Op("/", (Name("E"), _col("z"))))]
    env = {**ENV, "z": ("N",)}
    assert _code(inplace.rewrite(stmts, env)) == [
        "ufunc('subtract', S, m[:, None], out=P)", "ufunc('fn:exp', P, out=P)", "E = P",
        "z = sum(E, axis=1)", "ufunc('divide', E, z[:, None], out=P)"]
    # not when P is read before it is written, or E is read after
    early = [stmts[0], Assign(Name("z"), Apply("sum", (Name("P"),), (("axis", 1),))), stmts[2]]
    assert "out=P)" not in _code(inplace.rewrite(early, env))[0]
    after = [*stmts, Assign(Name("F"), Op("*", (Name("E"), Lit(2.0))))]
    assert "out=P)" not in _code(inplace.rewrite(after, env))[0]


def test_a_view_is_never_overwritten():
    # V is a view of the input S: its last read must not write into S's memory
    stmts = [Assign(Name("V"), Index(Name("S"), (ALL,))),
             Assign(Name("E"), Apply("fn:exp", (Op("-", (Name("V"), _col("m"))),)))]
    env = {**ENV, "V": ("N", "N")}
    assert not any("out=V" in line for line in _code(inplace.rewrite(stmts, env)))


def test_a_sibling_does_not_reuse_the_target_while_it_holds_a_value():
    # P[...] = (S * M) + (T * M): both products are full size; only one may sit in P
    value = Op("+", (Op("*", (Name("S"), Name("M"))), Op("*", (Name("T"), Name("M")))))
    got = _code(inplace.rewrite([Assign(Index(Name("P"), (ALL,)), value)], ENV))
    assert got == ["ufunc('multiply', S, M, out=P)", "_tmp1 = (T * M)",
                   "ufunc('add', P, _tmp1, out=P)"]


def test_the_generated_code_of_the_attention_softmax():
    k = tcc.compile(str(BENCH / "attention.loop"))
    src = k.source
    # T and Z_exp live in P, the block of the output, as hand-written NumPy has it
    body = src[src.index("def _rows_1(S, M, P):"):src.index("_row_blocks(_rows_1, N")]
    assert [line.strip() for line in body.splitlines() if line.strip()[:1] not in ("#", "")] \
        == ["def _rows_1(S, M, P):", "np.add(S, M, out=P)", "T = P",
            "Z_max = np.max(T, axis=1, initial=-np.inf)",
            "np.subtract(T, Z_max[:, None], out=T)", "np.exp(T, out=P)", "Z_exp = P",
            "Z_shifted = Z_exp.sum(axis=1)", "np.divide(Z_exp, Z_shifted[:, None], out=P)"]


def _without_pass(monkeypatch, path, backend):
    monkeypatch.setattr(inplace, "rewrite", lambda stmts, env: list(stmts))
    return tcc.compile(str(path), backend=backend)


CASES = [*sorted(EXAMPLES.glob("*.loop")), *(BENCH / f"{n}.loop" for n in
                                               ("softmax", "layernorm", "attention"))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_the_same_bits_as_plain_expressions(path, dtype, monkeypatch):
    k = tcc.compile(str(path))
    plain = _without_pass(monkeypatch, path, "numpy")
    ns = k.namespace
    ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"] = 0, 1 << 10       # blocks and threads
    inputs = {t: (v.astype(dtype) if v.dtype.kind == "f" else v)
              for t, v in k.random_inputs(seed=5).items()}
    fwd, ref = k.forward(**inputs), plain.forward(**inputs)
    rng = np.random.default_rng(6)
    seeds = {o: rng.standard_normal(np.shape(fwd[o.replace(".", "_")])).astype(dtype)
             for o in ns["_OUTPUTS"]}
    for got, want in ((fwd, ref), (k.backward(seeds, **inputs, **fwd),
                                   plain.backward(seeds, **inputs, **ref))):
        assert got.keys() == want.keys()
        for name in got:
            assert got[name].dtype == want[name].dtype, name
            assert np.array_equal(got[name], want[name], equal_nan=True), name


def test_a_value_read_twice_in_one_statement_matches_the_interpreter():
    text = ("input x[B, J]\noutput y[B, J]\n"
            "for b, j: t[b, j] = x[b, j] * 2 + 1\n"
            "for b, j: y[b, j] = (t[b, j] - 1) * exp(t[b, j])\n")
    k = tcc.compile(text, optimize=False)
    x = np.random.default_rng(0).standard_normal((5, 7))
    want = interp.run(analyze(parse(text)), {"x": x})["y"]
    np.testing.assert_allclose(k.forward(x=x)["y"], want, rtol=1e-13)


def test_outside_groups_a_product_is_scaled_in_place():
    # (the forward's scores scale their N x E operand instead: S = (Q / ...) @ K.T)
    src = tcc.compile(str(BENCH / "attention.loop")).source
    assert "Q_grad = S_grad @ K\n    np.multiply(1.0 / np.sqrt(dt.type(E)), Q_grad, " \
        "out=Q_grad)" in src


def test_a_returned_tensor_is_never_overwritten():
    # T is returned: its last read in the function is not its last use
    stmts = [Assign(Name("T"), Op("+", (Name("S"), Name("M")))),
             Assign(Name("E"), Apply("fn:exp", (Op("-", (Name("T"), _col("m"))),)))]
    assert "out=T" in " ".join(_code(inplace.rewrite(stmts, ENV)))
    assert "out=T" not in " ".join(_code(inplace.rewrite(stmts, ENV, keep={"T"})))


def _execute(stmts, arrays):
    """Run target IR statements as the numpy backend prints them."""
    from tcc.backends.base import NUMPY_CODE
    from tcc.backends.target import Printer
    ns = {"np": np, **{k: v.copy() for k, v in arrays.items()}}
    exec("\n".join(Printer(NUMPY_CODE).lines(stmts)), ns)
    return ns


def test_a_target_holding_a_local_is_not_scratch_for_its_own_statement():
    # G lives in P until P's statement, which needs two more full-size values
    # before it reads G: they may not go into P (ugrnn_cell's Gp.grad had that bug)
    G, P, S, M = Name("G"), Name("P"), Name("S"), Name("M")
    stmts = [Assign(G, Op("*", (S, M))),
             Assign(Index(P, (ALL,)),
                    Op("*", (Op("*", (G, Apply("fn:exp", (S,)))),
                             Op("-", (Lit(1.0), Apply("fn:exp", (M,)))))))]
    rng = np.random.default_rng(0)
    arrays = {"S": rng.standard_normal((4, 4)), "M": rng.standard_normal((4, 4)),
              "P": np.zeros((4, 4))}
    got = _execute(inplace.rewrite(stmts, ENV), arrays)["P"]
    want = _execute(stmts, arrays)["P"]
    assert np.array_equal(got, want)
    s, m = arrays["S"], arrays["M"]
    np.testing.assert_allclose(want, s * m * np.exp(s) * (1 - np.exp(m)))


def test_a_matrix_product_per_batch_position_is_a_stacked_matmul():
    # AttentionRNN(infinity)'s per-slot products Q[i, s, r] * h[t - 1 - i, b, r]:
    # one BLAS product per slot i, not an einsum loop
    text = ("input A[N, I, K], X[N, K, J]\noutput Y[N, I, J]\n"
            "for n, i, j, k: Y[n, i, j] += A[n, i, k] * X[n, k, j]\n")
    k = tcc.compile(text)
    assert "A @ X" in k.source and "einsum" not in k.source
    rng = np.random.default_rng(2)
    a, x = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 5, 2))
    np.testing.assert_allclose(k.forward(A=a, X=x)["Y"], np.einsum("nik,nkj->nij", a, x),
                               rtol=1e-13)
    # a dot product per row stays one einsum loop
    dots = tcc.compile("input A[N, K], X[N, K]\noutput y[N]\n"
                       "for n, k: y[n] += A[n, k] * X[n, k]\n")
    assert "np.einsum('ab,ab->a', A, X)" in dots.source


def test_a_comparison_local_is_never_a_scratch():
    # booleans cannot hold a product: the mask keeps its memory
    stmts = [Assign(Name("T"), Op(">", (Name("S"), Lit(0.0)))),
             Assign(Name("E"), Op("*", (Name("T"), Apply("fn:exp", (Name("M"),)))))]
    assert "out=T" not in " ".join(_code(inplace.rewrite(stmts, ENV)))
