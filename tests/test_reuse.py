"""A sum that repeats the contraction of the statement before it, times
factors free of that contraction's summed indices, reads that statement's
result instead (``backends/reuse.py``): attention's backward drops one
batched matrix product. The results are the reference interpreter's, on the
NumPy and the torch backends."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_backends as tb  # noqa: E402

import tcc  # noqa: E402
from tcc.ir import py_name  # noqa: E402

REUSED = "reusing the product before it"

ATTENTION = open(os.path.join(os.path.dirname(HERE), "benchmarks", "programs",
                              "attention_causal.loop")).read()
SIZES = {"B": 2, "N": 4, "D": 3, "E": 2}

# statement pairs in a backward program (data and outputs written out)
PAIR = """
data   A[I, E], W[J, E], P[I, J], Z[I], G[I, J]
output T[I, J], U[I]
for i, j, e: T[i, j] += A[i, e] * W[j, e] / Z[i]
for i, j, e: U[i] -= A[i, e] * W[j, e] * P[i, j] / Z[i] ** 2
"""
PAIR_SIZES = {"I": 3, "J": 4, "E": 2}

NOT_REUSED = {
    "the first is not the first update of its target":
        PAIR.replace("for i, j, e: T", "for i, j: T[i, j] += G[i, j]\nfor i, j, e: T"),
    "a factor over the first's summed index": PAIR.replace("* P[i, j] / Z", "* A[i, e] / Z"),
    "the second reads a sum of the first's terms":
        PAIR.replace("-= A[i, e] * W[j, e] * P[i, j]", "-= (A[i, e] + W[j, e]) * P[i, j]"),
}


def _check(text, sizes, backend):
    ref = tb.Ref(text, sizes)
    k = tcc.compile(text, backend=backend)
    kw = ref.kwargs()
    if backend == "torch":
        torch = pytest.importorskip("torch")
        kw = {t: torch.as_tensor(a) for t, a in kw.items()}
    fwd = k.forward(**kw)
    for t in ref.info.outputs:
        tb.assert_close(np.asarray(fwd[py_name(t)]), ref.computed[t], tb.RTOL64, tb.ATOL64, t)
    if ref.info.differentiable:
        seeds = ref.seeds if backend == "numpy" else \
            {o: kw[next(iter(kw))].new_tensor(s) for o, s in ref.seeds.items()}
        grads = k.backward(seeds, **kw, **fwd)
        for t in ref.info.differentiable:
            tb.assert_close(np.asarray(grads[t]), ref.grads[t], tb.RTOL64, tb.ATOL64,
                            f"{t}.grad")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_attention_backward_reuses_the_scores_gradient(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    source = tcc.compile_source(ATTENTION, backend=backend)
    backward = source.split("def backward(", 1)[1]
    assert REUSED in backward
    assert "Z_grad__sum = " in backward and "einsum('abc,abc->ab', P_grad, P)" in backward
    _check(ATTENTION, SIZES, backend)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_pair_of_statements(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    assert REUSED in tcc.compile_source(PAIR, backend=backend)
    _check(PAIR, PAIR_SIZES, backend)


@pytest.mark.parametrize("name", list(NOT_REUSED))
def test_not_reused(name):
    text = NOT_REUSED[name]
    assert REUSED not in tcc.compile_source(text)
    _check(text, PAIR_SIZES, "numpy")


def test_attention_backward_on_row_blocks():
    # The reused sum runs in a row-block group (rowblocks.py), which must pass
    # it the tensors it reads as written (P.grad, P), not its statement's own
    # (O.grad, V): else it read the whole P.grad against a block of P
    k = tcc.compile(ATTENTION)
    ns = k.namespace
    old = ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"], os.environ.get("TCC_NUM_THREADS")
    ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"] = 0, 1 << 10      # several blocks, two threads
    os.environ["TCC_NUM_THREADS"] = "2"
    try:
        sizes = {"B": 7, "N": 5, "D": 3, "E": 2}
        ref = tb.Ref(ATTENTION, sizes)
        kw = ref.kwargs()
        fwd = k.forward(**kw)
        grads = k.backward(ref.seeds, **kw, **fwd)
    finally:
        ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"] = old[:2]
        if old[2] is None:
            del os.environ["TCC_NUM_THREADS"]
        else:
            os.environ["TCC_NUM_THREADS"] = old[2]
    backward = k.source.split("def backward(", 1)[1]
    assert "def _rows_1(P_grad, P, Z, Z_grad):" in backward
    tb.assert_close(fwd["O"], ref.computed["O"], tb.RTOL64, tb.ATOL64, "O")
    for t in ref.info.differentiable:
        tb.assert_close(grads[t], ref.grads[t], tb.RTOL64, tb.ATOL64, f"{t}.grad")
