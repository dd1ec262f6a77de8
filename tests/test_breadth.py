"""Issue 12's language breadth in the front end: ``min=``, index comparisons,
constant-target stacking, written ranges with zero padding, outputs read by
later statements and static bounds. Each form is run by the reference
interpreter against a NumPy oracle, printed and parsed back, differentiated,
and its gradients checked against finite differences (interpreter engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tcc
from tcc.api import check
from tcc.check import analyze
from tcc.interp import run

FRONT = Path(__file__).parent / "data" / "front"


@pytest.fixture
def rng():
    return np.random.default_rng(12)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


def round_trips(src: str):
    p = tcc.parse(src)
    assert tcc.parse(str(p)) == p, str(p)
    back = tcc.differentiate(p)
    assert tcc.parse(str(back)) == back, str(back)
    return p


def gradients_check(src: str, sizes=None):
    report = check(src, sizes=sizes, engine="interp")
    assert report.rows, report
    for row in report.rows:
        assert row.ok, row


def backward_runs(src: str, **tensors):
    """The printed backward parses, checks and runs in the interpreter."""
    back = tcc.parse(tcc.grad_text(src, optimize=False))
    return analyze(back)


# ------------------------------------------------------------------ min=

MIN_ROWS = "input s[B, J]\noutput m[B]\nfor b, j: m[b] min= s[b, j]\n"


def test_min_reduction_starts_at_plus_infinity(rng):
    s = rng.normal(size=(3, 4))
    close(run(round_trips(MIN_ROWS), {"s": s})["m"], s.min(axis=1))
    empty = run(tcc.parse(MIN_ROWS), {"s": np.zeros((2, 0))})["m"]
    assert np.all(empty == np.inf)


def test_min_gradient_splits_ties_evenly():
    back = tcc.differentiate(tcc.parse(MIN_ROWS))
    s = np.array([[1.0, 2.0, 1.0], [3.0, 0.0, 5.0]])
    m = s.min(axis=1)
    out = run(back, {"s": s, "m": m, "m.grad": np.array([1.0, 2.0])})
    close(out["s.grad"], [[0.5, 0, 0.5], [0, 2.0, 0]])


def test_min_gradient_by_finite_differences():
    gradients_check(MIN_ROWS)
    gradients_check("input x[L]\nparam pb[F]\noutput m[N]\n"
                    "for n, i: m[n] min= x[2*n + i] - pb[i]\n", {"L": 9, "F": 3})


def test_max_and_min_backward_keep_written_ranges():
    src = "input x[N]\noutput m[N]\nfor n in N, i in 3: m[n] min= x[n + i - 1]\n"
    back = tcc.parse(tcc.grad_text(src, optimize=False))
    assert all(s.written for s in back.stmts), str(back)
    gradients_check(src)


# ------------------------------------------------------------ index comparisons

def softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_one_hot_bracket_is_the_gather(rng):
    src = (FRONT / "softmax_xent_bracket.loop").read_text()
    p = round_trips(src)
    s, y = rng.normal(size=(4, 5)), np.array([0, 4, 2, 2])
    out = run(p, {"s": s, "y": y})
    close(out["L"], -np.log(softmax(s)[np.arange(4), y]))
    gradients_check(src)


def test_comparison_is_a_select_not_a_product():
    """Where the bracket is 0 the term is exactly 0, though log(0) = -inf there."""
    src = "input x[N]\ndata y\nfor i: f[i] = (i == 0) * log(x[i]) / x[i]\n"
    out = run(round_trips(src.replace("data y\n", "")), {"x": np.array([2.0, 0.0, -1.0])})
    close(out["f"], [np.log(2.0) / 2, 0.0, 0.0])
    src = "input p[B, K]\ndata y[B]\nfor b, k: L[b] -= (k == y[b]) * log(p[b, k])\n"
    p = np.array([[0.0, 0.5, 0.5], [0.25, 0.75, 0.0]])
    out = run(tcc.parse(src), {"p": p, "y": np.array([1, 0])})
    close(out["L"], [-np.log(0.5), -np.log(0.25)])


def test_comparison_bracket_alone_is_0_or_1(rng):
    src = "input p[B, K]\ndata y[B]\nfor b, k: g[b, k] = p[b, k] - (k == y[b])\n"
    p, y = rng.normal(size=(3, 4)), np.array([3, 0, 1])
    close(run(round_trips(src), {"p": p, "y": y})["g"], p - np.eye(4)[y])
    gradients_check(src)


def test_kronecker_delta_diagonal_and_masks(rng):
    A = rng.normal(size=(4, 4))
    src = "input A[N, N]\noutput d[N]\nfor i, j: d[i] += A[i, j] * (i == j)\n"
    close(run(round_trips(src), {"A": A})["d"], np.diag(A))
    gradients_check(src)
    src = "input A[T, T]\noutput f[T]\nfor t, j: f[t] += A[t, j] * (j <= t) * (t < T - 1)\n"
    want = np.tril(A).sum(axis=1)
    want[-1] = 0
    close(run(round_trips(src), {"A": A})["f"], want)
    gradients_check(src)
    src = "input A[N, N]\noutput n\nfor i, j: n += A[i, j] * (i != j) * (2*i + 1 > j)\n"
    i, j = np.indices(A.shape)
    close(run(round_trips(src), {"A": A})["n"], (A * ((i != j) & (2 * i + 1 > j))).sum())


def test_comparison_gather_values_are_not_range_checked():
    src = "input p[B, K]\ndata y[B]\nfor b, k: g[b, k] = p[b, k] * (k == y[b])\n"
    out = run(tcc.parse(src), {"p": np.ones((2, 3)), "y": np.array([7, -1])})
    close(out["g"], np.zeros((2, 3)))


def test_comparison_without_for_loops_over_its_indices(rng):
    src = "input A[N, N]\noutput t\nt += A[i, j] * (i == j)\n"
    p = round_trips(src)
    assert p.stmts[0].loops == ("i", "j")
    A = rng.normal(size=(3, 3))
    close(run(p, {"A": A})["t"], np.trace(A))


# ------------------------------------------------------------ constant targets

def test_constant_targets_stack_columns(rng):
    src = ("input x[B, J]\nfor b, j: w[b, 0] += x[b, j]\nfor b, j: w[b, 1] += x[b, j] ** 2\n"
           "for b: z[b] = w[b, 0] * w[b, 1]\n")
    x = rng.normal(size=(3, 4))
    out = run(round_trips(src), {"x": x})
    close(out["w"], np.stack([x.sum(1), (x ** 2).sum(1)], axis=1))
    close(out["z"], x.sum(1) * (x ** 2).sum(1))
    gradients_check(src)


def test_a_constant_target_leaves_unwritten_positions_zero(rng):
    src = "input x[I]\nfor i: c[i, 2] = x[i]\n"
    x = rng.normal(size=3)
    out = run(round_trips(src), {"x": x})
    close(out["c"], np.stack([0 * x, 0 * x, x], axis=1))


@pytest.mark.parametrize("op, fn", [("max=", np.max), ("min=", np.min)])
def test_max_keep_dim(rng, op, fn):
    src = f"input D[I, J]\nfor i, j: X[i, 0] {op} D[i, j]\n"
    D = rng.normal(size=(3, 5))
    close(run(round_trips(src), {"D": D})["X"], fn(D, axis=1, keepdims=True))
    gradients_check(src)


def test_tie_count_of_a_gather_target_takes_its_tensors_shape(rng):
    src = "input s[B, K]\ndata y[B]\noutput m[K]\nfor b, k: m[y[b]] max= s[b, k]\n"
    back = tcc.differentiate(tcc.parse(src))
    binfo = analyze(back)
    count = back.stmts[0].target.tensor
    assert binfo.shapes[count] == ("K",)
    s, y = rng.normal(size=(3, 2)), np.array([1, 0, 1])
    m = run(tcc.parse(src), {"s": s, "y": y})["m"]
    close(m, [s[1].max(), s[[0, 2]].max()])
    g = run(back, {"s": s, "y": y, "m": m, "m.grad": np.array([1.0, 2.0])})["s.grad"]
    want = np.zeros((3, 2))
    want[1][s[1] == m[0]] = 1.0
    hit = np.zeros((3, 2), bool)
    hit[[0, 2]] = s[[0, 2]] == m[1]
    want[hit] = 2.0 / hit.sum()
    close(g, want)


def test_positions_a_constant_target_skips_hold_zero_for_max():
    out = run(tcc.parse("input D[I, J]\nfor i, j: X[i, 1] max= D[i, j]\n"),
              {"D": np.array([[1.0, -2.0], [-3.0, -4.0]])})
    close(out["X"], [[0.0, 1.0], [0.0, -3.0]])


# ------------------------------------------------------------ written ranges

def test_same_convolution_pads_with_zeros(rng):
    src = (FRONT / "same_conv1d_single.loop").read_text()
    x, w = rng.normal(size=7), rng.normal(size=3)
    out = run(round_trips(src), {"x": x, "w": w})
    xp = np.pad(x, 1)
    close(out["y"], [xp[n:n + 3] @ w for n in range(7)])
    gradients_check(src, {"N": 6, "F": 3})
    backward_runs(src)


def test_same_2d_convolution_tc_style(rng):
    src = ("input x[B, C, H, W]\nparam K[O, C, R, S]\nbatch 1\noutput y[B, O, H, W]\n"
           "for b, o, c, h in H, w in W, r in R, s in S: "
           "y[b, o, h, w] += x[b, c, h + r - 1, w + s - 1] * K[o, c, r, s]\n")
    x, K = rng.normal(size=(2, 2, 4, 5)), rng.normal(size=(3, 2, 3, 3))
    out = run(round_trips(src), {"x": x, "K": K})
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 3, 4, 5))
    for h in range(4):
        for w in range(5):
            want[:, :, h, w] = np.einsum("bcrs,ocrs->bo", xp[:, :, h:h + 3, w:w + 3], K)
    close(out["y"], want)
    gradients_check(src, {"B": 1, "C": 2, "H": 3, "W": 4, "O": 2, "R": 3, "S": 3})


def test_causal_shift_reads_zero_before_the_start(rng):
    src = "input x[T, D]\noutput y[T, D]\nfor t in T, d: y[t, d] = x[t - 1, d]\n"
    x = rng.normal(size=(4, 2))
    close(run(round_trips(src), {"x": x})["y"], np.vstack([np.zeros((1, 2)), x[:-1]]))
    gradients_check(src)


def test_updates_outside_are_dropped(rng):
    src = "input x[N]\noutput y[N]\nfor n in N: y[n + 1] += x[n]\n"
    x = rng.normal(size=4)
    close(run(round_trips(src), {"x": x})["y"], np.concatenate([[0], x[:-1]]))
    gradients_check(src)


@pytest.mark.parametrize("op, fn", [("max=", np.max), ("min=", np.min)])
def test_pooling_with_padding(rng, op, fn):
    src = f"input x[N]\noutput m[N]\nfor n in N, i in 3: m[n] {op} x[n + i - 1]\n"
    x = rng.normal(size=6)
    xp = np.pad(x, 1)
    close(run(round_trips(src), {"x": x})["m"], [fn(xp[n:n + 3]) for n in range(6)])
    gradients_check(src)


def test_average_pooling_window_by_a_written_range(rng):
    src = "input x[N]\noutput a[N]\nfor n in N, i in 2: a[n] += x[2*n + i] / 2\n"
    x = rng.normal(size=6)
    want = np.concatenate([x.reshape(3, 2).mean(1), np.zeros(3)])
    close(run(round_trips(src), {"x": x})["a"], want)
    gradients_check(src)


def test_gathers_are_never_padded():
    src = "input x[N], p[K]\ndata g[N]\nfor n in N: y[n] += x[n - 1] * p[g[n]]\n"
    x, p = np.ones(3), np.ones(2)
    close(run(tcc.parse(src), {"x": x, "p": p, "g": np.array([0, 1, 1])})["y"], [0, 1, 1])
    with pytest.raises(ValueError, match="gather 'g' holds 2"):
        run(tcc.parse(src), {"x": x, "p": p, "g": np.array([0, 1, 2])})


def test_a_plain_use_must_match_the_written_range():
    src = "input x[N], z[M]\nfor n in N: y[n] += x[n] * z[n]\n"
    close(run(tcc.parse(src), {"x": np.ones(3), "z": np.ones(3)})["y"], np.ones(3))
    with pytest.raises(ValueError, match="written to range over N"):
        run(tcc.parse(src), {"x": np.ones(3), "z": np.ones(4)})


def test_written_literal_range(rng):
    src = "input x[N]\nparam w[3]\nbatch 1\noutput y[N]\nfor n in N, i in 3: " \
          "y[n] += x[n + i - 1] * w[i]\n"
    x, w = rng.normal(size=5), rng.normal(size=3)
    xp = np.pad(x, 1)
    close(run(round_trips(src), {"x": x, "w": w})["y"], [xp[n:n + 3] @ w for n in range(5)])
    gradients_check(src)


# ------------------------------------------------------------ outputs read later

TWO_LAYERS = """input x[B, D]
param W[H, D], V[O, H]
output h1[B, H], h2[B, O]
for b, h, d: h1[b, h] += W[h, d] * x[b, d]
for b, o, h: h2[b, o] += V[o, h] * tanh(h1[b, h])
"""


def test_outputs_read_by_later_statements(rng):
    x, W, V = rng.normal(size=(3, 4)), rng.normal(size=(5, 4)), rng.normal(size=(2, 5))
    out = run(round_trips(TWO_LAYERS), {"x": x, "W": W, "V": V})
    close(out["h1"], x @ W.T)
    close(out["h2"], np.tanh(x @ W.T) @ V.T)
    assert analyze(tcc.parse(TWO_LAYERS)).outputs == ["h1", "h2"]
    gradients_check(TWO_LAYERS)


def test_the_backward_adds_to_a_seed_without_modifying_it(rng):
    back = tcc.parse(tcc.grad_text(TWO_LAYERS, optimize=False))
    text = str(back)
    assert "data h1.grad[B, H]" in text
    assert "h1.grad[b, h] += " in text
    x, W, V = rng.normal(size=(3, 4)), rng.normal(size=(5, 4)), rng.normal(size=(2, 5))
    h1 = x @ W.T
    seed1, seed2 = rng.normal(size=(3, 5)), rng.normal(size=(3, 2))
    keep = seed1.copy()
    out = run(back, {"x": x, "W": W, "V": V, "h1": h1, "h1.grad": seed1, "h2.grad": seed2})
    np.testing.assert_array_equal(seed1, keep)
    close(out["h1.grad"], seed1 + (seed2 @ V) * (1 - np.tanh(h1) ** 2))
    close(out["x.grad"], out["h1.grad"] @ W)


# ------------------------------------------------------------ run-time bounds

def test_run_time_bounds_error_names_the_statement():
    src = "input x[T], w[K]\noutput y[T]\nfor t, k: y[t] += x[t + k] * w[k]\n"
    with pytest.raises(ValueError, match=r"ranges over 0\.\.4 .*line 3: for t, k"):
        run(tcc.parse(src), {"x": np.ones(4), "w": np.ones(2)})
