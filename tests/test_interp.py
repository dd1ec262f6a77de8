"""The reference interpreter against NumPy formulas written out here, its
run-time size checks, and the shapes ``tcc parse`` prints."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import tcc
import tcc.cli
from tcc.check import analyze
from tcc.interp import run

EXAMPLES = Path(__file__).parent / "data" / "examples"


def example(name: str):
    return tcc.parse(str(EXAMPLES / f"{name}.loop"))


def sigmoid(u):
    return 1 / (1 + np.exp(-u))


@pytest.fixture
def rng():
    return np.random.default_rng(31230)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ examples

def test_ttic_softmax(rng):
    s = rng.normal(size=(3, 4))
    out = run(example("ttic_softmax"), {"s": s})
    Z = np.exp(s).sum(axis=1)
    close(out["Z"], Z)
    close(out["p"], np.exp(s) / Z[:, None])
    close(out["p"].sum(axis=1), np.ones(3))
    assert set(out) == {"Z", "p"}


def test_softmax_xent_gathers_the_label(rng):
    s = rng.normal(size=(4, 5))
    y = np.array([0, 4, 2, 2])
    out = run(example("softmax_xent"), {"s": s, "y": y})
    p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    close(out["p"], p)
    close(out["L"], -np.log(p[np.arange(4), y]))
    assert out["L"].shape == (4,)


def test_conv1d_stride2_valid_range(rng):
    x = rng.normal(size=(11, 7))
    W = rng.normal(size=(7, 3))
    out = run(example("conv1d_stride2"), {"x": x, "W": W})
    f = out["f"]
    assert f.shape == (5,)
    windows = sliding_window_view(x, 3, axis=0)[::2]          # [n, k, i] = x[2n + i, k]
    close(f, np.einsum("nki,ki->n", windows, W))
    close(f[4], sum(x[8 + i, k] * W[k, i] for k in range(7) for i in range(3)))


def test_conv1d_stride2_range_follows_the_input(rng):
    for length, n in [(3, 1), (4, 1), (5, 2), (12, 5), (13, 6)]:
        out = run(example("conv1d_stride2"), {"x": rng.normal(size=(length, 2)),
                                              "W": rng.normal(size=(2, 3))})
        assert out["f"].shape == (n,), length


def test_conv2d_valid(rng):
    X = rng.normal(size=(2, 5, 6))          # Ni, Lr, Lc
    H = rng.normal(size=(3, 2, 2, 3))       # No, Ni, Fr, Fc
    out = run(example("conv2d"), {"X": X, "H": H})
    windows = sliding_window_view(X, (2, 3), axis=(1, 2))   # [i, r, c, fr, fc]
    expected = np.einsum("oiab,irsab->ors", H, windows)
    assert expected.shape == (3, 4, 4)
    close(out["Y"], expected)


def test_ugrnn_cell(rng):
    B, J, K = 2, 3, 4
    t = {"WhR": rng.normal(size=(J, J)), "WxR": rng.normal(size=(J, K)), "BR": rng.normal(size=J),
         "WhG": rng.normal(size=(J, J)), "WxG": rng.normal(size=(J, K)), "BG": rng.normal(size=J),
         "h": rng.normal(size=(B, J)), "x": rng.normal(size=(B, K))}
    out = run(example("ugrnn_cell"), t)
    h, x = t["h"], t["x"]
    R = np.tanh(h @ t["WhR"].T + x @ t["WxR"].T - t["BR"])
    G = sigmoid(h @ t["WhG"].T + x @ t["WxG"].T - t["BG"])
    close(out["R"], R)
    close(out["G"], G)
    close(out["hn"], G * h + (1 - G) * R)


def test_ttic_ugrnn_linear_subtracts_the_bias(rng):
    B, I, J, K = 2, 3, 4, 5
    t = {"Whr": rng.normal(size=(J, I)), "Wxr": rng.normal(size=(J, K)), "Br": rng.normal(size=J),
         "h": rng.normal(size=(B, I)), "x": rng.normal(size=(B, K))}
    out = run(example("ttic_ugrnn_linear"), t)
    close(out["Rt"], t["h"] @ t["Whr"].T + t["x"] @ t["Wxr"].T - t["Br"])


def test_residual_block(rng):
    H, v, x = rng.normal(size=(4, 4)), rng.normal(size=4), rng.normal(size=(3, 4))
    out = run(example("residual_block"), {"H": H, "v": v, "x": x})
    z = x @ H.T
    close(out["z"], z)
    close(out["y"], x + np.maximum(z + v, 0))
    assert (z + v < 0).any() and (z + v > 0).any()       # both sides of the ReLU


def test_trace(rng):
    A, Bm = rng.normal(size=(3, 4)), rng.normal(size=(4, 3))
    out = run(example("trace"), {"A": A, "Bm": Bm})
    assert out["t"].shape == ()
    close(out["t"], np.trace(Bm @ A))


def test_norm_squared(rng):
    W, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    out = run(example("norm_squared"), {"W": W, "x": x})
    close(out["y"], W @ x)
    close(out["L"], np.sum((W @ x) ** 2))


def test_logistic(rng):
    w, x = rng.normal(size=5), rng.normal(size=5)
    out = run(example("logistic"), {"w": w, "x": x})
    u = w @ x
    close(out["u"], u)
    close(out["p"], sigmoid(u))
    close(out["L"], -np.log(sigmoid(u)))


@pytest.mark.parametrize("sign", [1, -1])
def test_ttic_relu_unit(sign):
    w = np.array([1.0, 2.0, -0.5])
    x = sign * np.array([0.5, 1.0, 1.0])
    out = run(example("ttic_relu_unit"), {"w": w, "x": x})
    close(out["u"], w @ x)
    close(out["y"], max(w @ x, 0.0))
    assert (out["y"] > 0) == (sign > 0)


def test_run_accepts_info_and_program(rng):
    s = rng.normal(size=(2, 3))
    prog = example("ttic_softmax")
    a = run(prog, {"s": s})
    b = run(analyze(prog), {"s": s})
    close(a["p"], b["p"])


# ------------------------------------------------------- semantics, one by one

def run_text(src: str, **tensors):
    return run(tcc.parse(src), tensors)


def test_max_reduction_starts_at_minus_infinity():
    s = np.array([[1.0, 3.0, 2.0], [-5.0, -7.0, -6.0]])
    out = run_text("input s[B, J]\nfor b, j: m[b] max= s[b, j]\n", s=s)
    close(out["m"], [3.0, -5.0])                          # not max(..., 0)


def test_max_reduction_with_ties():
    s = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [-1.0, 0.0, -1.0]])
    out = run_text("input s[B, J]\nfor b, j: m[b] max= s[b, j]\n"
                   "for b, j: cnt[b] += (s[b, j] == m[b])\n", s=s)
    close(out["m"], [3.0, 2.0, 0.0])
    close(out["cnt"], [2.0, 3.0, 1.0])


def test_max_reduction_over_an_empty_axis_is_minus_infinity():
    out = run_text("input s[B, J]\nfor b, j: m[b] max= s[b, j]\n", s=np.zeros((2, 0)))
    assert np.all(out["m"] == -np.inf)


def test_subtract_and_accumulate_mix():
    x, c = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])
    out = run_text("input x[B], c[B]\nfor b: y[b] -= x[b]\nfor b: y[b] += c[b]\n"
                   "for b: y[b] -= 2 * x[b]\n", x=x, c=c)
    close(out["y"], c - 3 * x)


def test_accumulate_sums_over_indices_not_in_the_target():
    x = np.arange(12.0).reshape(3, 4)
    out = run_text("input x[B, J]\nfor b, j: r[b] += x[b, j]\nfor b, j: t += x[b, j]\n", x=x)
    close(out["r"], x.sum(axis=1))
    close(out["t"], x.sum())


def test_define_is_elementwise():
    x = np.array([-1.0, 0.5, 2.0])
    out = run_text("input x[B]\nfor b: a[b] = max(x[b], 0) + min(x[b], 1)\n", x=x)
    close(out["a"], np.maximum(x, 0) + np.minimum(x, 1))


def test_dims_as_numbers():
    x = np.array([1.0, 2.0, 3.0, 6.0])
    out = run_text("input x[B]\noutput f\nfor b: f += 1/B * x[b]\n", x=x)
    close(out["f"], x.mean())
    out = run_text("input x[N, K]\nfor n, k: y[n] += x[n, k] / K + N\n", x=np.ones((2, 5)))
    close(out["y"], [1.0 + 5 * 2, 1.0 + 5 * 2])


def test_constant_indices():
    x = np.arange(12.0).reshape(3, 4)
    out = run_text("input x[B, K]\nfor b: y[b] = x[b, 0] + 10 * x[b, 3] - x[2, 1]\n", x=x)
    close(out["y"], x[:, 0] + 10 * x[:, 3] - x[2, 1])


def test_affine_shift_in_a_read():
    x = np.array([1.0, 4.0, 9.0, 16.0])
    out = run_text("input x[T]\nfor t: y[t] += x[t + 1]\n", x=x)
    close(out["y"], x[1:])                               # t ranges over 3


def test_affine_shift_in_the_target():
    x = np.array([1.0, 4.0, 9.0, 16.0])
    out = run_text("input x[T]\noutput y[5]\nfor t: y[t + 1] += x[t]\n", x=x)
    close(out["y"], [0.0, 1.0, 4.0, 9.0, 16.0])


def test_dim_in_an_index_reverses():
    x = np.array([1.0, 4.0, 9.0, 16.0])
    out = run_text("input x[T]\noutput y[T]\nfor t: y[t] = x[T - 1 - t]\n", x=x)
    close(out["y"], x[::-1])


def test_gather_reads_integer_positions():
    E = np.arange(6.0).reshape(3, 2)
    w = np.array([[1, 2], [0, 0]])
    out = run_text("input E[V, D]\ndata w[B, T]\nfor b, t, d: H[b, t, d] = E[w[b, t], d]\n",
                   E=E, w=w)
    close(out["H"], E[w])


def test_gather_in_the_target_scatter_adds():
    E = np.arange(6.0).reshape(3, 2)
    w = np.array([1, 1, 3])
    out = run_text("input E[B, D]\ndata w[B]\noutput H[4, D]\n"
                   "for b, d: H[w[b], d] += E[b, d]\n", E=E, w=w)
    expected = np.zeros((4, 2))
    np.add.at(expected, w, E)
    close(out["H"], expected)


def test_integer_data_is_read_as_numbers():
    p = np.ones((2, 3))
    m = np.array([1, 3])
    out = run_text("input p[B, K]\ndata m[B]\nfor b, k: L[b] += p[b, k] * m[b] / 2\n", p=p, m=m)
    close(out["L"], [1.5, 4.5])                          # true division, not 0 and 3
    assert out["L"].dtype == np.float64


def test_integer_and_bool_inputs_are_converted():
    out = run_text("input p[B]\nfor b: L[b] = p[b] / 2\n", p=np.array([1, 2, 3]))
    close(out["L"], [0.5, 1.0, 1.5])
    assert out["L"].dtype == np.float64
    out = run_text("input p[B]\nfor b: L[b] = p[b] * 2\n", p=np.array([True, False]))
    close(out["L"], [2.0, 0.0])


def test_computation_dtype_follows_the_floats():
    out = run_text("input x[B], z[B]\nfor b: y[b] = x[b] * z[b]\n",
                   x=np.ones(2, np.float32), z=np.ones(2, np.float16))
    assert out["y"].dtype == np.float32


def test_scalars_and_lists():
    out = run_text("input x\noutput y\ny = x * 2\n", x=3.0)
    assert out["y"].shape == ()
    close(out["y"], 6.0)
    out = run_text("input x[B]\nfor b: y[b] = -x[b] ** 2\n", x=[1.0, -2.0])
    close(out["y"], [-1.0, -4.0])


def test_operators_and_precedence_evaluate_like_python():
    a = np.array([2.0, -3.0, 0.5])
    cases = {
        "-x[b] ** 2": -a ** 2,
        "x[b] ** -2": a ** -2.0,
        "x[b] ^ 2": a ** 2,
        "2 ** 3 ** x[b]": 2.0 ** 3.0 ** a,
        "24 / x[b] / 3 - 1 - 2": 24 / a / 3 - 1 - 2,
        "7 / 2 + x[b] * 0": np.full(3, 3.5),
        "(x[b] > 0) - (x[b] < 0) + (x[b] >= 2) * 10 + (x[b] <= -3) * 100": (
            np.sign(a) + (a >= 2) * 10 + (a <= -3) * 100),
        "(x[b] == 2) + (x[b] != 2) * 3": np.where(a == 2, 1.0, 3.0),
        "exp(x[b]) + sqrt(abs(x[b])) + tanh(x[b]) + sigmoid(x[b]) + relu(x[b])": (
            np.exp(a) + np.sqrt(np.abs(a)) + np.tanh(a) + sigmoid(a) + np.maximum(a, 0)),
        "sin(x[b]) * cos(x[b]) + log(abs(x[b]))": np.sin(a) * np.cos(a) + np.log(np.abs(a)),
    }
    for src, expected in cases.items():
        out = run_text(f"input x[B]\nfor b: y[b] = {src}\n", x=a)
        close(out["y"], expected)


def test_ieee_arithmetic_without_exceptions():
    with np.errstate(all="raise"):
        out = run_text("input x[B]\nfor b: y[b] = log(x[b]) + 1 / x[b]\n",
                       x=np.array([-1.0, 0.0, 1.0]))
    assert np.isnan(out["y"][0])
    assert out["y"][1] == -np.inf or np.isnan(out["y"][1])
    close(out["y"][2], 1.0)


# --------------------------------------------------------- run-time errors

def run_error(src: str, **tensors) -> str:
    with pytest.raises(ValueError) as info:
        run(tcc.parse(src), tensors)
    return str(info.value)


def assert_mentions(message: str, *parts: str):
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


MATVEC = "input x[B, J], c[J]\nfor b, j: y[b] += x[b, j] * c[j]\n"


def test_wrong_rank():
    msg = run_error(MATVEC, x=np.ones(3), c=np.ones(3))
    assert_mentions(msg, "'x'", "rank 2", "(3,)")


def test_scalar_given_an_array():
    msg = run_error("input x\noutput y\ny = x * 2\n", x=np.ones(1))
    assert_mentions(msg, "'x'", "(1,)")


def test_sizes_disagree_with_each_other():
    msg = run_error(MATVEC, x=np.ones((2, 3)), c=np.ones(4))
    assert_mentions(msg, "'c'", "J", "4", "3", "'x'")


def test_sizes_disagree_with_a_literal_shape():
    msg = run_error("input x[N, 4]\nfor n, k: y[n] += x[n, k]\n", x=np.ones((2, 3)))
    assert_mentions(msg, "'x'", "axis 1", "4", "3")


def test_dim_against_a_literal_is_checked_at_run_time():
    src = "input x[N], w[4]\nfor n: y[n] = x[n] * w[n]\n"
    close(run_text(src, x=np.ones(4), w=np.ones(4))["y"], np.ones(4))
    msg = run_error(src, x=np.ones(3), w=np.ones(4))
    assert_mentions(msg, "N", "3", "4", "'x'")


def test_affine_access_out_of_bounds():
    msg = run_error("input x[T]\nfor t: y[t] += x[t + 1] - x[t]\n", x=np.ones(4))
    assert_mentions(msg, "'x'", "axis 0", "4", "1..4")
    msg = run_error("input x[T]\noutput y[5]\nfor t: y[t + 1] += x[t]\n", x=np.ones(5))
    assert_mentions(msg, "'y'", "axis 0", "5", "1..5")
    msg = run_error("input x[N]\nfor n: y[n] += x[n] * x[3]\n", x=np.ones(2))
    assert_mentions(msg, "'x'", "2", "3")


def test_valid_range_is_empty():
    msg = run_error(str(example("conv1d_stride2")), x=np.ones((2, 7)), W=np.ones((7, 3)))
    assert_mentions(msg, "'n'", "empty", "'x'", "2")


GATHER = "input p[B, K]\ndata y[B]\nfor b: L[b] = p[b, y[b]]\n"


def test_gather_in_range():
    p = np.arange(6.0).reshape(2, 3)
    close(run_text(GATHER, p=p, y=np.array([2, 0]))["L"], [2.0, 3.0])


@pytest.mark.parametrize("bad", [3, 7, -1, -3])
def test_gather_value_out_of_range(bad):
    msg = run_error(GATHER, p=np.ones((2, 3)), y=np.array([0, bad]))
    assert_mentions(msg, "'y'", str(bad), "'p'", "axis 1", "3")


def test_gather_in_target_out_of_range():
    msg = run_error("input E[B, D]\ndata w[B]\noutput H[4, D]\nfor b, d: H[w[b], d] += E[b, d]\n",
                    E=np.ones((3, 2)), w=np.array([1, 1, 4]))
    assert_mentions(msg, "'w'", "4", "'H'")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gather_data_must_be_integer(dtype):
    msg = run_error(GATHER, p=np.ones((2, 3)), y=np.array([0, 1], dtype=dtype))
    assert_mentions(msg, "'y'", "integer")


def test_gather_data_size_mismatch():
    msg = run_error(GATHER, p=np.ones((2, 3)), y=np.array([0, 1, 2]))
    assert_mentions(msg, "'y'", "3", "2")


def test_missing_tensor():
    msg = run_error(MATVEC, x=np.ones((2, 3)))
    assert "missing" in msg
    assert re.search(r"\bc\b", msg), msg


def test_unknown_tensor():
    msg = run_error(MATVEC, x=np.ones((2, 3)), c=np.ones(3), d=np.ones(3))
    assert "unknown" in msg
    assert re.search(r"\bd\b", msg), msg


def test_computed_tensor_passed_in_is_unknown():
    msg = run_error(MATVEC, x=np.ones((2, 3)), c=np.ones(3), y=np.ones(2))
    assert "unknown" in msg
    assert re.search(r"\by\b", msg), msg


@pytest.mark.parametrize("name", ["x", "c"])
def test_complex_arrays_are_rejected(name):
    t = {"x": np.ones((2, 3)), "c": np.ones(3)}
    t[name] = t[name] * (1 + 1j)
    msg = run_error(MATVEC, **t)
    assert_mentions(msg, f"'{name}'", "complex")


def test_non_numeric_arrays_are_rejected():
    msg = run_error(MATVEC, x=np.ones((2, 3)), c=np.array(["a", "b", "c"]))
    assert_mentions(msg, "'c'")


# ------------------------------------------------------------- tcc parse

def tcc_parse(path, capsys) -> list[str]:
    assert tcc.cli.main(["parse", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


def test_parse_shows_inferred_output_shape_of_conv1d(capsys):
    lines = tcc_parse(EXAMPLES / "conv1d_stride2.loop", capsys)
    assert "output f[f_0]" in [" ".join(line.split()) for line in lines]
    assert "for n, k, i: f[n] += x[2*n + i, k] * W[k, i]" in lines


def test_parse_shows_conv2d_valid_shape(capsys):
    lines = [" ".join(line.split()) for line in tcc_parse(EXAMPLES / "conv2d.loop", capsys)]
    assert "output Y[No, Y_1, Y_2]" in lines


def test_parse_shows_intermediates(capsys):
    lines = [" ".join(line.split()) for line in tcc_parse(EXAMPLES / "softmax_xent.loop", capsys)]
    for line in ["input s[B, K]", "data y[B]", "output L[B]",
                 "# intermediate Z[B]", "# intermediate p[B, K]",
                 "for b: L[b] = -log(p[b, y[b]])"]:
        assert line in lines


def test_parse_shows_scalars_and_inferred_outputs(capsys, tmp_path):
    lines = [" ".join(line.split()) for line in tcc_parse(EXAMPLES / "logistic.loop", capsys)]
    for line in ["param w[D]", "data x[D]", "output L", "# intermediate u", "# intermediate p"]:
        assert line in lines
    path = tmp_path / "mv.loop"
    path.write_text("input A[I, J], x[J]\ny[i] += A[i, j] * x[j]\n")
    lines = [" ".join(line.split()) for line in tcc_parse(path, capsys)]
    assert "output y[I]" in lines                           # undeclared, unread: an output
    assert "for i, j: y[i] += A[i, j] * x[j]" in lines      # the for list filled in


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.loop")), ids=lambda p: p.stem)
def test_parse_output_is_a_program_with_the_same_shapes(path, capsys):
    text = "\n".join(tcc_parse(path, capsys)) + "\n"
    info = analyze(tcc.parse(str(path)))
    again = analyze(tcc.parse(text))
    assert again.shapes == info.shapes
    assert again.roles == info.roles
    assert again.program.stmts == info.program.stmts
