"""Where a product's factors are applied (``operands.product_parts``): a
scalar on the smallest operand when one is smaller than the result, a factor
over the result's indices on the result when it is smaller than the operand
it would otherwise scale. Attention's ``0.125`` scales Q (N x D), not the
N x N scores, and its ``1 / Z`` the N x E output, not the N x N weights. A
factor never moves past a selecting index comparison, nor past a sum that may
be empty. Results are the reference interpreter's, on NumPy and torch."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_backends as tb  # noqa: E402

import tcc  # noqa: E402
from tcc import interp  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.ir import py_name  # noqa: E402

BENCH = os.path.join(os.path.dirname(HERE), "benchmarks", "programs")
ATTENTION = open(os.path.join(BENCH, "attention_causal.loop")).read()
SIZES = {"B": 2, "N": 5, "D": 3, "E": 2}

BACKENDS = ["numpy", "torch"]


def _module(text, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    return tcc.compile(text, backend=backend)


def _tensors(kw, backend):
    if backend != "torch":
        return kw
    import torch
    return {t: torch.as_tensor(a) for t, a in kw.items()}


def _check(text, sizes, backend):
    """Forward and backward against the interpreter's."""
    ref = tb.Ref(text, sizes)
    k = _module(text, backend)
    kw = _tensors(ref.kwargs(), backend)
    fwd = k.forward(**kw)
    for t in ref.info.outputs:
        tb.assert_close(np.asarray(fwd[py_name(t)]), ref.computed[t], tb.RTOL64, tb.ATOL64, t)
    if ref.info.differentiable:
        seeds = _tensors(ref.seeds, backend)
        grads = k.backward(seeds, **kw, **fwd)
        for t in ref.info.differentiable:
            tb.assert_close(np.asarray(grads[t]), ref.grads[t], tb.RTOL64, tb.ATOL64,
                            f"{t}.grad")
    return k


def _forward_line(k, target):
    forward = k.source.split("def forward(", 1)[1].split("def backward(", 1)[0]
    return [line.strip() for line in forward.splitlines()
            if line.strip().startswith(f"{target} = ")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_scales_its_small_operand_and_result(backend):
    k = _check(ATTENTION, SIZES, backend)
    t = "permute" if backend == "torch" else "transpose"
    assert _forward_line(k, "S") == [f"S = (0.125 * Q) @ K.{t}(0, 2, 1)"]
    divide = "O.div_(Z[:, :, None])" if backend == "torch" else \
        "np.divide(O, Z[:, :, None], out=O)"
    assert _forward_line(k, "O") == ["O = P @ V"] and f"O = P @ V\n    {divide}" in k.source
    # the backward's 1 / Z stays on O.grad (N x E), not on P.grad (N x N)
    assert "P_grad = (O_grad / Z[:, :, None]) @ V" in k.source


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_in_float32_matches_the_interpreter(backend):
    ref = tb.Ref(ATTENTION, SIZES)
    k = _module(ATTENTION, backend)
    kw = _tensors(ref.kwargs(np.float32), backend)
    fwd = k.forward(**kw)
    assert np.asarray(fwd["O"]).dtype == np.float32
    tb.assert_close(np.asarray(fwd["O"]).astype(np.float64), ref.computed["O"], tb.RTOL32,
                    tb.ATOL32, "O")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_selected_product_keeps_its_factors(backend):
    # (j < i) selects nothing in row 0, where Z is 0: the interpreter's O[0] is 0.
    # Moved past the sum, 1 / Z would make it 0 / 0.
    text = ("data P[N, N], Z[N], V[N, E]\noutput O[N, E]\n"
            "for i, j, e: O[i, e] += P[i, j] / Z[i] * V[j, e] * (j < i)\n")
    rng = np.random.default_rng(1)
    arrays = {"P": rng.standard_normal((4, 4)), "Z": np.array([0.0, 1.5, -2.0, 3.0]),
              "V": rng.standard_normal((4, 3))}
    want = interp.run(analyze(tcc.parse(text)), arrays)["O"]
    assert np.all(want[0] == 0) and np.all(np.isfinite(want))
    k = _module(text, backend)
    with np.errstate(divide="ignore", invalid="ignore"):    # P / 0 where it is not selected
        got = np.asarray(k.forward(**_tensors(arrays, backend))["O"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.all(got[0] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_sum_meets_no_moved_factor(backend):
    # O is smaller than P, but its indices do not range over J: with J = 0 the
    # sum is empty and O is 0, where the factor on the result would give 0 / 0
    text = ("data P[I, J, J], Z[I], V[J, J, E]\noutput O[I, E]\n"
            "for i, j, k, e: O[i, e] += P[i, j, k] / Z[i] * V[j, k, e]\n")
    arrays = {"P": np.zeros((3, 0, 0)), "Z": np.zeros(3), "V": np.zeros((0, 0, 2))}
    want = interp.run(analyze(tcc.parse(text)), arrays)["O"]
    k = _module(text, backend)
    got = np.asarray(k.forward(**_tensors(arrays, backend))["O"])
    assert got.shape == want.shape == (3, 2)
    np.testing.assert_array_equal(got, want)
    _check(text, {"I": 3, "J": 4, "E": 2}, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_scalar_on_an_operand_over_an_empty_batch(backend):
    # 1 / B scales G (B x J), smaller than W (J x J); with B = 0 the sum is empty
    # and W is 0, as in the interpreter (G / 0 is empty, not inf)
    text = ("data G[B, J], h[B, J]\noutput W[J, J]\n"
            "for b, j, i: W[j, i] += 1 / B * G[b, j] * h[b, i]\n")
    k = _check(text, {"B": 3, "J": 4}, backend)
    assert _forward_line(k, "W")[0].startswith("W = (G / ")
    arrays = {"G": np.zeros((0, 4)), "h": np.zeros((0, 4))}
    want = interp.run(analyze(tcc.parse(text)), arrays)["W"]
    got = np.asarray(k.forward(**_tensors(arrays, backend))["W"])
    np.testing.assert_array_equal(got, want)
