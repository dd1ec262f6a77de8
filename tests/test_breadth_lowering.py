"""Issue 12's forms in the compiled backends: index comparisons, written
ranges with zero padding, ``min=``, stacked constant targets, outputs read by
later statements and the seeds a backward adds to.

Every program runs on both backends, optimized and not, against the reference
interpreter (forward and backward) and finite differences; then the lowering
is checked for the form it promises: a gather or a diagonal where an equality
leaves one point of a sum, a select (not a product) for a comparison factor,
one padded copy per tensor and none per tap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tcc
from tcc import api, interp
from tcc.autodiff import differentiate
from tcc.backends.lower import lower_program
from tcc.backends.operands import Context, Names
from tcc.backends.target import Apply, For, walk
from tcc.check import analyze
from tcc.ir import py_name
from tcc.pipeline import Pipeline

FRONT = Path(__file__).parent / "data" / "front"
BACKENDS = ("numpy", "opt_einsum")

TWO_LAYERS = """input x[B, D]
param W[H, D], V[O, H]
output h1[B, H], h2[B, O]
for b, h, d: h1[b, h] += W[h, d] * x[b, d]
for b, o, h: h2[b, o] += V[o, h] * tanh(h1[b, h])
"""

# name -> (program, {tensor: shape or array}, sizes for tcc check)
CASES = {
    "min rows": ("input s[B, J]\noutput m[B]\nfor b, j: m[b] min= s[b, j]\n",
                 {"s": (3, 4)}),
    "min strided window": ("input x[L]\nparam pb[F]\noutput m[N]\n"
                           "for n, i: m[n] min= x[2*n + i] - pb[i]\n", {"x": (9,), "pb": (3,)}),
    "min gather target": ("input s[B, K]\ndata y[B]\noutput m[K]\n"
                          "for b, k: m[y[b]] min= s[b, k]\n",
                          {"s": (3, 2), "y": np.array([1, 0, 1])}),
    "one-hot cross-entropy": ((FRONT / "softmax_xent_bracket.loop").read_text(),
                              {"s": (4, 5), "y": np.array([0, 4, 2, 2])}),
    "p minus one-hot": ("input p[B, K]\ndata y[B]\nfor b, k: g[b, k] = p[b, k] - (k == y[b])\n",
                        {"p": (3, 4), "y": np.array([3, 0, 1])}),
    "one-hot out of range": ("input p[B, K]\ndata y[B]\n"
                             "for b, k: g[b] += p[b, k] * (k == y[b])\n",
                             {"p": (3, 3), "y": np.array([7, -1, 1])}),
    "kronecker diagonal": ("input A[N, N]\noutput d[N]\nfor i, j: d[i] += A[i, j] * (i == j)\n",
                           {"A": (4, 4)}),
    "kronecker trace": ("input A[N, N]\noutput t\nt += A[i, j] * (i == j)\n", {"A": (3, 3)}),
    "causal mask": ("input A[T, T]\noutput f[T]\n"
                    "for t, j: f[t] += A[t, j] * (j <= t) * (t < T - 1)\n", {"A": (4, 4)}),
    "causal attention": ("input a[T, T], v[T, D]\noutput o[T, D]\n"
                         "for t, j, d: o[t, d] += (j <= t) * a[t, j] * v[j, d]\n",
                         {"a": (4, 4), "v": (4, 3)}),
    "masked product": ("input A[N, K], C[K, N]\noutput f[N, N]\n"
                       "for i, j, k: f[i, j] += (i == j) * A[i, k] * C[k, j]\n",
                       {"A": (3, 4), "C": (4, 3)}),
    "two conditions": ("input A[N, N]\noutput n\n"
                       "for i, j: n += A[i, j] * (i != j) * (2*i + 1 > j)\n", {"A": (4, 4)}),
    "stacked columns": ("input x[B, J]\nfor b, j: w[b, 0] += x[b, j]\n"
                        "for b, j: w[b, 1] += x[b, j] ** 2\nfor b: z[b] = w[b, 0] * w[b, 1]\n",
                        {"x": (3, 4)}),
    "constant target": ("input x[I]\noutput c\nfor i: c[i, 2] = x[i]\n", {"x": (3,)}),
    "max keep-dim": ("input D[I, J]\nfor i, j: X[i, 0] max= D[i, j]\n", {"D": (3, 5)}),
    "min keep-dim": ("input D[I, J]\nfor i, j: X[i, 0] min= D[i, j]\n", {"D": (3, 5)}),
    "max into column 1": ("input D[I, J]\nfor i, j: X[i, 1] max= D[i, j]\n", {"D": (2, 3)}),
    "same conv1d": ((FRONT / "same_conv1d_single.loop").read_text(), {"x": (7,), "w": (3,)}),
    "same conv2d (TC)": ("input x[B, C, H, W]\nparam K[O, C, R, S]\nbatch 1\n"
                         "output y[B, O, H, W]\nfor b, o, c, h in H, w in W, r in R, s in S: "
                         "y[b, o, h, w] += x[b, c, h + r - 1, w + s - 1] * K[o, c, r, s]\n",
                         {"x": (2, 2, 4, 5), "K": (3, 2, 3, 3)}),
    "causal shift": ("input x[T, D]\noutput y[T, D]\nfor t in T, d: y[t, d] = x[t - 1, d]\n",
                     {"x": (4, 2)}),
    "updates dropped": ("input x[N]\noutput y[N]\nfor n in N: y[n + 1] += x[n]\n", {"x": (4,)}),
    "max pooling, padded": ("input x[N]\noutput m[N]\nfor n in N, i in 3: m[n] max= "
                            "x[n + i - 1]\n", {"x": (6,)}),
    "min pooling, padded": ("input x[N]\noutput m[N]\nfor n in N, i in 3: m[n] min= "
                            "x[n + i - 1]\n", {"x": (6,)}),
    "average pooling window": ("input x[N]\noutput a[N]\nfor n in N, i in 2: "
                               "a[n] += x[2*n + i] / 2\n", {"x": (6,)}),
    "kernel wider than the input": ("input x[N]\nparam w[F]\nbatch 1\noutput y[N]\n"
                                    "for n in N, i in F: y[n] += x[n + i - 2] * w[i]\n",
                                    {"x": (3,), "w": (5,)}),
    "outputs read later": (TWO_LAYERS, {"x": (3, 4), "W": (5, 4), "V": (2, 5)}),
    # a read that gathers on an axis padded for another read and is padded on
    # another axis: a view of the padded copy, unpadded where it gathers
    "gather on a padded axis, padded": ("input x[N, M]\ndata y[N]\noutput f[N, M]\n"
                                        "for n in N, m in M: f[n, m] = x[n - 1, m] + "
                                        "x[y[n], m - 1]\n",
                                        {"x": (4, 3), "y": np.array([3, 0, 0, 2])}),
    "gather on a padded axis, padded (3-d)": (
        "input x[N, C, M]\ndata y[B]\noutput f[B, C, M]\n"
        "for b in B, c, m in M: f[b, c, m] += x[b - 1, c, m] * x[y[b], c, m - 2]\n",
        {"x": (3, 2, 4), "y": np.array([2, 0, 1, 1, 0])}),
    "kronecker product": ("input A[2, 2], Bm[2, 3]\noutput C[4, 6]\n"
                          "for i, j, k, l: C[2*i + k, 3*j + l] += A[i, j] * Bm[k, l]\n",
                          {"A": (2, 2), "Bm": (2, 3)}),
}


def arrays(spec: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {t: v if isinstance(v, np.ndarray) else rng.standard_normal(v)
            for t, v in spec.items()}


def reference(src: str, inputs: dict):
    info = analyze(tcc.parse(src))
    saved = interp.run(info, inputs)
    rng = np.random.default_rng(1)
    seeds = {o: rng.standard_normal(np.shape(saved[o])) for o in info.outputs}
    grads = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, saved)
    return info, saved, seeds, grads


def frozen(d: dict) -> dict:
    out = {}
    for k, a in d.items():
        a = np.array(a)
        a.setflags(write=False)
        out[k] = a
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_agrees_with_the_interpreter(name, backend):
    src, spec = CASES[name]
    inputs = arrays(spec)
    info, saved, seeds, grads = reference(src, inputs)
    kw = frozen({py_name(t): a for t, a in inputs.items()})
    for optimize in (False, True):
        k = tcc.compile(src, backend=backend, optimize=optimize)
        fwd = k.forward(**kw)
        for t in info.outputs if optimize else info.computed:
            np.testing.assert_allclose(fwd[py_name(t)], saved[t], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name}, optimize={optimize}: {t}")
        given = frozen(seeds)
        g = k.backward(given, **kw, **frozen(fwd))
        for t in info.differentiable:
            np.testing.assert_allclose(g[t], grads[t], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name}, optimize={optimize}: {t}.grad")


# (out-of-range labels, and a min= gather target whose unwritten positions are
# +inf, are no inputs for finite differences)
@pytest.mark.parametrize("name", sorted(n for n in CASES if n not in (
    "one-hot out of range", "min gather target")))
def test_compiled_gradients_match_finite_differences(name):
    report = api.check(CASES[name][0], seeds=2)
    assert report.ok, report.format()


@pytest.mark.parametrize("path", sorted(FRONT.glob("*.loop")), ids=lambda p: p.name)
def test_every_front_program_compiles_and_checks(path):
    for backend in BACKENDS:
        for optimize in (False, True):
            k = tcc.compile(path, backend=backend, optimize=optimize)
            inputs = k.random_inputs()
            fwd = k.forward(**inputs)
            info, saved, seeds, grads = reference(path.read_text(), inputs)
            for t in info.outputs:
                np.testing.assert_allclose(fwd[py_name(t)], saved[t], rtol=1e-12, atol=1e-12)
            g = k.backward(seeds, **inputs, **fwd)
            for t in info.differentiable:
                np.testing.assert_allclose(g[t], grads[t], rtol=1e-10, atol=1e-12)
    assert api.check(path).ok


# ------------------------------------------------------------ the forms it lowers to

def lowered(src: str, backward: bool = False, optimize: bool = False):
    p = Pipeline(src, None, optimize=optimize)
    info = p.binfo if backward else p.info
    stmts = lower_program(Context(info, Names(list(info.roles) + list(info.dims))))
    return stmts, [n.op for s in stmts for n in walk(s) if isinstance(n, Apply)]


def source(src: str, optimize: bool = False) -> str:
    text = tcc.compile_source(src, optimize=optimize)
    return text[text.index("def forward"):text.index("def random_inputs")]


def forward_code(src: str, optimize: bool = False) -> str:
    text = source(src, optimize)
    return text[:text.index("def backward")]


def test_an_equality_over_a_checked_gather_is_a_gather_not_a_mask():
    """Where another gather checks y's values against k's range, the sum over k
    of (k == y[b]) * ... is one read at y[b]."""
    src = "input p[B, K], q[B, K]\ndata y[B]\nfor b, k: g[b] += p[b, k] * (k == y[b]) + " \
          "q[b, y[b]]\n"
    code = forward_code(src)
    assert "arange" not in code and "where" not in code, code


def test_an_unchecked_label_selects_over_a_row():
    """A comparison does not check its gathered values, and an out-of-range one
    makes the term 0 (the interpreter's answer): a select over each row, exact
    for any label, also with no classes at all."""
    code = forward_code((FRONT / "softmax_xent_bracket.loop").read_text())
    assert "L = -np.where(np.arange(K) == y[:, None], np.log(p), 0.0).sum(axis=1)" in code
    k = tcc.compile(FRONT / "softmax_xent_bracket.loop")
    with np.errstate(all="ignore"):
        out = k.forward(s=np.zeros((2, 0)), y=np.array([0, 3]))
    np.testing.assert_array_equal(out["L"], [0.0, 0.0])


def test_the_kronecker_delta_is_a_diagonal_view():
    code = source(CASES["kronecker diagonal"][0])
    assert "d = np.array(np.diagonal(A), dtype=dt)" in code
    code = forward_code(CASES["kronecker trace"][0])
    assert "np.diagonal(A).sum(axis=0)" in code and "arange" not in code


def test_a_causal_mask_selects_the_operand_of_one_matrix_product():
    code = source(CASES["causal attention"][0])
    assert "o = np.tril(a) @ v" in code         # a triangle, no mask (tests/test_triangular.py)


def test_a_comparison_over_the_target_selects_the_contraction():
    code = source(CASES["masked product"][0])
    assert "f = np.where(np.arange(N)[:, None] == np.arange(N), A @ C, 0.0)" in code


@pytest.mark.parametrize("optimize", [False, True])
def test_a_comparison_factor_is_a_select_even_at_inf_and_nan(optimize):
    src = "input x[N]\nfor i: f[i] = (i == 0) * log(x[i]) / x[i]\n"
    k = tcc.compile(src, optimize=optimize)
    with np.errstate(all="ignore"):
        out = k.forward(x=np.array([2.0, 0.0, -1.0]))["f"]
    np.testing.assert_array_equal(out, [np.log(2.0) / 2, 0.0, 0.0])
    src = "input p[B, K]\ndata y[B]\nfor b, k: L[b] -= (k == y[b]) * log(p[b, k])\n"
    with np.errstate(all="ignore"):
        out = tcc.compile(src, optimize=optimize).forward(
            p=np.array([[0.0, 0.5, 0.5], [0.25, 0.75, 0.0]]), y=np.array([1, 0]))["L"]
    np.testing.assert_allclose(out, [-np.log(0.5), -np.log(0.25)])


def test_gathered_positions_in_a_comparison_are_not_range_checked():
    k = tcc.compile("input p[B, K]\ndata y[B]\nfor b, k: g[b, k] = p[b, k] * (k == y[b])\n")
    np.testing.assert_array_equal(k.forward(p=np.ones((2, 3)), y=np.array([7, -1]))["g"],
                                  np.zeros((2, 3)))


def test_a_padded_tensor_is_padded_once_never_per_tap():
    stmts, ops = lowered(CASES["same conv2d (TC)"][0])
    assert ops.count("pad") == 1
    loops = [s for s in stmts if isinstance(s, For)]
    assert loops and not any(isinstance(n, Apply) and n.op == "pad"
                             for loop in loops for n in walk(loop))
    code = source(CASES["same conv1d"][0])
    assert "x__pad = np.pad(x, ((1, max(0, F - 2)),))" in code
    # the backward scatters into a padded buffer and keeps its window
    stmts, ops = lowered(CASES["same conv1d"][0], backward=True)
    assert ops.count("pad") == 1            # x, for w.grad; x.grad is a padded buffer
    assert "x_grad = x_grad__pad[1:1 + N]" in source(CASES["same conv1d"][0]).replace(
        "    ", "")


def test_an_argument_read_padded_by_two_statements_is_padded_once():
    src = "input x[N]\noutput y[N], z[N]\nfor n in N: y[n] = x[n - 1]\n" \
          "for n in N: z[n] = x[n - 1] * 2\n"
    _, ops = lowered(src)
    assert ops.count("pad") == 1


def test_min_reduction_and_min_scatter():
    _, ops = lowered(CASES["min rows"][0])
    assert "min" in ops
    _, ops = lowered(CASES["min gather target"][0])
    assert "min_at" in ops


def test_a_stacked_max_leaves_unwritten_columns_zero():
    code = source(CASES["max into column 1"][0])
    assert "X = np.zeros((I, 2), dtype=dt)" in code
    assert "X[:, 1] = np.max(D, axis=1, initial=-np.inf)" in code


@pytest.mark.parametrize("optimize", [False, True])
def test_the_backward_adds_to_a_seed_without_modifying_it(optimize):
    k = tcc.compile(TWO_LAYERS, optimize=optimize)
    inputs = arrays(CASES["outputs read later"][1], seed=3)
    fwd = k.forward(**inputs)
    rng = np.random.default_rng(4)
    s1, s2 = rng.standard_normal((3, 5)), rng.standard_normal((3, 2))
    keep = s1.copy()
    g = k.backward(frozen({"h1": s1, "h2": s2}), **inputs, **fwd)
    np.testing.assert_array_equal(s1, keep)
    h1 = inputs["x"] @ inputs["W"].T
    h1_grad = s1 + (s2 @ inputs["V"]) * (1 - np.tanh(h1) ** 2)
    np.testing.assert_allclose(g["x"], h1_grad @ inputs["W"])
    # and the printed backward, compiled, adds to its given seed as well
    printed = tcc.grad_text(TWO_LAYERS, optimize=optimize)
    assert "h1.grad[b, h] += " in printed and "data h1.grad[B, H]" in printed
    b = tcc.compile(printed)
    out = b.forward(**frozen({"x": inputs["x"], "W": inputs["W"], "V": inputs["V"],
                              "h1": fwd["h1"], "h1_grad": s1, "h2_grad": s2}))
    np.testing.assert_allclose(out["x_grad"], h1_grad @ inputs["W"])


@pytest.mark.parametrize("name", ["one-hot cross-entropy", "same conv1d", "min rows",
                                  "causal attention", "max into column 1"])
def test_float32_stays_float32(name):
    src, spec = CASES[name]
    k = tcc.compile(src)
    inputs = {t: a.astype(np.float32) if a.dtype.kind == "f" else a
              for t, a in arrays(spec).items()}
    fwd = k.forward(**inputs)
    info = analyze(tcc.parse(src))
    for t in info.outputs:
        assert fwd[py_name(t)].dtype == np.float32, t
    seeds = {o: np.ones(np.shape(fwd[py_name(o)]), np.float32) for o in info.outputs}
    for t, g in k.backward(seeds, **inputs, **fwd).items():
        assert g.dtype == np.float32, t


def test_the_fusion_recognizes_the_one_hot_bracket():
    text = tcc.grad_text(FRONT / "softmax_xent_bracket.loop")
    assert "for b, k: s.grad[b, k] += L.grad[b] * p[b, k]" in text
    assert "for b: s.grad[b, y[b]] -= L.grad[b]" in text
    from tcc.explain import explain
    why, _ = explain(FRONT / "softmax_xent_bracket.loop")
    assert "the one-hot (k == y[b]) picks y[b] in each row" in why


# ------------------------------------------------------------ ETH problem 3

ETH_JACOBIAN = """# ETH Deep Learning 2018, problem 3: dL/dW = dL/dy x_{d3} dy/dW for y = W x,
# L = |y|^2, with the Jacobian tensor dy_i/dW_kl = (i == k) x[l] (a Kronecker delta)
input W[I, J], x[J]
output L, T[I, I, J], G[I, J]
for i, j: y[i] += W[i, j] * x[j]
for i: L += y[i] ** 2
for i, k, l: T[i, k, l] = (i == k) * x[l]
for i, k, l: G[k, l] += 2 * y[i] * T[i, k, l]
"""

ETH_TRACE = """# ETH problem 3.4: d tr(BA)/dA, with dL/dy = (i == j) for L = tr(y) and
# d(BA)_ij/dA_kl = Bm[i, k] (j == l)
input Bm[J, K]
output G[K, J]
for i, j in J, k, l: G[k, l] += (i == j) * Bm[i, k] * (j == l)
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimize", [False, True])
def test_eth_problem_3_kronecker_delta(backend, optimize):
    rng = np.random.default_rng(5)
    W, x = rng.standard_normal((3, 4)), rng.standard_normal(4)
    k = tcc.compile(ETH_JACOBIAN, backend=backend, optimize=optimize)
    out = k.forward(W=W, x=x)
    y = W @ x
    np.testing.assert_allclose(out["T"], np.einsum("ik,l->ikl", np.eye(3), x))
    np.testing.assert_allclose(out["G"], 2 * np.outer(y, x))
    # the chain rule through the delta is tcc's own gradient of L
    g = k.backward({"L": np.array(1.0)}, W=W, x=x, **out)
    np.testing.assert_allclose(g["W"], out["G"])
    Bm = rng.standard_normal((4, 3))
    out = tcc.compile(ETH_TRACE, backend=backend, optimize=optimize).forward(Bm=Bm)
    np.testing.assert_allclose(out["G"], Bm.T)          # d tr(BA) / dA = B^T


def test_eth_problem_3_sums_over_the_delta_as_a_diagonal():
    # sum_i g[i] (i == k) x[l]: the delta fixes i, no mask over (i, k, l)
    code = forward_code("input g[I], x[J]\noutput G[I, J]\n"
                        "for i, k, l: G[k, l] += g[i] * (i == k) * x[l]\n")
    assert "arange" not in code and "where" not in code
    code = forward_code(ETH_TRACE)
    assert "arange" not in code


def test_a_gather_read_of_a_padded_tensor_reads_the_tensor_itself():
    # found by the long property profile: y1 is padded for y1[i - 1, j], and the
    # gather y1[p2[k], l] must not be shifted (gathers are never padded)
    text = ("data y1[1, 2]\ndata p2[B]\n"
            "for i in 1, j, k, l: h3[i] += (y1[i - 1, j] * y1[p2[k], l]) / 10\n")
    inputs = {"y1": np.array([[0.5, -1.0]]), "p2": np.array([0, 0, 0])}
    want = interp.run(analyze(tcc.parse(text)), inputs)["h3"]
    for backend in ("numpy", "opt_einsum"):
        for optimize in (True, False):
            got = tcc.compile(text, backend=backend, optimize=optimize).forward(**inputs)["h3"]
            np.testing.assert_allclose(got, want, atol=0)
    text2 = text.replace("y1[i - 1, j]", "y1[i + 1, j]").replace("data y1[1, 2]", "data y1[2, 2]")
    inputs2 = {"y1": np.array([[0.5, -1.0], [2.0, 3.0]]), "p2": np.array([1, 0, 1])}
    want2 = interp.run(analyze(tcc.parse(text2)), inputs2)["h3"]
    got2 = tcc.compile(text2).forward(**inputs2)["h3"]
    np.testing.assert_allclose(got2, want2, rtol=1e-12)


def test_a_gather_read_padded_on_its_other_axis():
    # found by the long property profile: h5 is padded on axis 2 for both reads;
    # the read that gathers on axes 0 and 1 (shifted by 0 there) reads the padded
    # copy at i - 2, which is 0 for the one step of i
    text = ("param W1[1, 3]\ninput x2[2, B]\ndata p3[I], p7[I], p8[B, B]\n"
            "for i in 2, j, k, l: h5[i, j, k] += x2[i - 1, j] * W1[k, l]\n"
            "for i in 1, j, k, l, m: h9[i, l] += h5[p7[j], p8[k, l], i - 2] * "
            "(h5[0, -k + B - 1, m] / 1000)\n"
            "for i in 1, j: h10[i] += h9[i - 1, j]\n")
    assert api.check(text).ok                  # the gradients, at 5 draws
    info = analyze(tcc.parse(text))
    k = tcc.compile(text, optimize=False)
    inputs = {t: v for t, v in k.random_inputs(seed=1).items()}
    want = interp.run(info, inputs)
    got = k.forward(**inputs)
    np.testing.assert_allclose(got["h10"], want["h10"], rtol=1e-12, atol=1e-15)


def test_a_gather_read_padded_on_another_axis_reads_a_window_of_the_padded_copy():
    """Pad once, then gather: the read takes a view of the padded copy that is
    the tensor's own extent on the gathered axis."""
    code = forward_code(CASES["gather on a padded axis, padded"][0])
    assert code.count("np.pad(") == 1
    assert "x__win = x__pad[1:1 + N]" in code
    assert "x__win[y[:, None], _ix(M, 1, 2)]" in code
    for name in ("gather on a padded axis, padded", "gather on a padded axis, padded (3-d)"):
        src, spec = CASES[name]
        sizes = {"N": 4, "M": 3} if "3-d" not in name else {"N": 3, "C": 2, "M": 4, "B": 5}
        assert api.check(src, sizes=sizes).ok, name
        torch = pytest.importorskip("torch")      # and the torch module, against the interpreter
        inputs = arrays(spec)
        info, saved, seeds, grads = reference(src, inputs)
        k = tcc.compile(src, backend="torch")
        kw = {py_name(t): torch.as_tensor(a) for t, a in inputs.items()}
        fwd = k.forward(**kw)
        np.testing.assert_allclose(fwd["f"].numpy(), saved["f"], rtol=1e-12)
        g = k.backward({o: torch.as_tensor(v) for o, v in seeds.items()}, **kw, **fwd)
        np.testing.assert_allclose(g["x"].numpy(), grads["x"], rtol=1e-10, atol=1e-12)
