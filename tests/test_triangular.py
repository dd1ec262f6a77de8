"""Causal masks lowered as triangles (``backends/triangular.py``): a comparison
between two loop indices, ``(j <= t)``, ``(j < t)``, ``(j >= t)``, ``(t > j + 1)``,
that selects a value over those two indices is ``np.tril`` / ``np.triu`` of it
(``torch.tril`` / ``torch.triu``), with the diagonal offset, not a select over
``arange`` views.

Each program runs on every backend, optimized and not, against the reference
interpreter (forward and backward); the masked positions are exactly 0 even
where the product they select is inf or nan (LANGUAGE.md, "Index comparisons").
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tcc
from tcc import api, interp
from tcc.autodiff import differentiate
from tcc.backends.triangular import triangle
from tcc.check import analyze
from tcc.ir import py_name

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strategies import scaled  # noqa: E402

torch = pytest.importorskip("torch")

BACKENDS = ("numpy", "opt_einsum", "torch")

# name -> (program, shapes, the call the forward must make, or None for a select)
CASES = {
    "scores, j <= t": ("input q[T, E], k[T, E]\noutput s[T, T]\n"
                       "for t, j, e: s[t, j] += q[t, e] * k[j, e] * (j <= t)\n",
                       {"q": (5, 3), "k": (5, 3)}, "s = np.tril(q @ k.T)"),
    "scores, j < t": ("input q[T, E], k[T, E]\noutput s[T, T]\n"
                      "for t, j, e: s[t, j] += q[t, e] * k[j, e] * (j < t)\n",
                      {"q": (5, 3), "k": (5, 3)}, "s = np.tril(q @ k.T, -1)"),
    "scores, j >= t": ("input q[T, E], k[T, E]\noutput s[T, T]\n"
                       "for t, j, e: s[t, j] += q[t, e] * k[j, e] * (j >= t)\n",
                       {"q": (5, 3), "k": (5, 3)}, "s = np.triu(q @ k.T)"),
    "scores, t > j + 1": ("input q[T, E], k[T, E]\noutput s[T, T]\n"
                          "for t, j, e: s[t, j] += q[t, e] * k[j, e] * (t > j + 1)\n",
                          {"q": (5, 3), "k": (5, 3)}, "s = np.tril(q @ k.T, -2)"),
    "scores, j - 1 <= t": ("input q[T, E], k[T, E]\noutput s[T, T]\n"
                           "for t, j, e: s[t, j] += q[t, e] * k[j, e] * (j - 1 <= t)\n",
                           {"q": (5, 3), "k": (5, 3)}, "s = np.tril(q @ k.T, 1)"),
    "rows before columns": ("input q[T, E], k[S, E]\noutput s[S, T]\n"
                            "for j, t, e: s[j, t] += q[t, e] * k[j, e] * (j <= t)\n",
                            {"q": (4, 3), "k": (6, 3)}, "s = np.triu(k @ q.T)"),
    "a band": ("input A[T, T]\noutput f[T, T]\n"
               "for t, j: f[t, j] = A[t, j] * (j <= t) * (j >= t - 2)\n",
               {"A": (6, 6)}, "f = np.triu(np.tril(A), -2)"),
    "heads": ("input q[H, T, E], k[H, T, E]\noutput s[H, T, T]\n"
              "for h, t, j, e: s[h, t, j] += q[h, t, e] * k[h, j, e] * (j <= t)\n",
              {"q": (2, 4, 3), "k": (2, 4, 3)}, "np.tril(q @ k.transpose(0, 2, 1))"),
    "attention output": ("input a[T, T], v[T, D]\noutput o[T, D]\n"
                         "for t, j, d: o[t, d] += (j <= t) * a[t, j] * v[j, d]\n",
                         {"a": (4, 4), "v": (4, 3)}, "o = np.tril(a) @ v"),
    "masked row sums": ("input A[T, T]\noutput f[T]\n"
                        "for t, j: f[t] += exp(A[t, j]) * (j <= t) * (t < T - 1)\n",
                        {"A": (4, 4)}, "np.tril(np.exp(A))"),
    "mask over the leading axes": ("input x[T, T, D]\noutput y[T, T, D]\n"
                                   "for t, j, d: y[t, j, d] = x[t, j, d] * (j <= t)\n",
                                   {"x": (3, 3, 2)}, None),
    "mask over one index": ("input x[T]\noutput y[T, T]\n"
                            "for t, j: y[t, j] = x[j] * (j <= t)\n", {"x": (4,)}, None),
    # two comparisons selecting nothing but 1: a 0/1 matrix (both must hold)
    "a mask alone": ("input x[T, D]\noutput y[T, D]\n"
                     "for t in T, j, d: y[t, d] += x[j, d] * (j <= t) * (t >= j + 1)\n",
                     {"x": (4, 3)}, None),
    "non-square, j <= t": ("input q[T, E], k[S, E]\noutput s[T, S]\n"
                           "for t, j, e: s[t, j] += q[t, e] * k[j, e] * (j <= t)\n",
                           {"q": (3, 2), "k": (5, 2)}, "s = np.tril(q @ k.T)"),
}


# Causal sums (backends/prefix.py): a sum over j masked by (j <= t) of a term
# that does not use t is a running sum, O(T) where the mask is O(T^2).
RUNNING = {
    "prefix sum": ("input x[T, D]\noutput y[T, D]\nfor t, j, d: y[t, d] += x[j, d] * (j <= t)\n",
                   {"x": (5, 3)}, "y = np.cumsum(x, axis=0)"),
    "exclusive prefix sum": ("input x[T, D]\noutput y[T, D]\n"
                             "for t, j, d: y[t, d] += x[j, d] * (j < t)\n",
                             {"x": (5, 3)},
                             "y = np.cumsum(np.pad(x, ((1, 0), (0, 0)))[:T], axis=0)"),
    "suffix sum": ("input x[T, D]\noutput y[T, D]\nfor t, j, d: y[t, d] += x[j, d] * (t <= j)\n",
                   {"x": (5, 3)}, "y = np.flip(np.cumsum(np.flip(x, axis=0), axis=0), axis=0)"),
    "exclusive suffix sum": ("input x[T]\noutput y[T]\nfor t, j: y[t] += x[j] * (j > t)\n",
                             {"x": (4,)}, "np.flip(np.cumsum(np.flip(np.pad(x, ((0, 1),))[1:]"),
    "weighted, summed over d": ("input x[T, D]\nparam w[D]\noutput z[T]\n"
                                "for t, j, d: z[t] += exp(x[j, d]) * w[d] * (j <= t) * 2\n",
                                {"x": (5, 3), "w": (3,)}, "np.cumsum(np.exp(x), axis=0)"),
    "times a factor over t": ("input a[B, T], x[B, T]\noutput y[B, T]\n"
                              "for b, t, j: y[b, t] += a[b, t] * x[b, j] * (j <= t)\n",
                              {"a": (2, 4), "x": (2, 4)}, "a * np.cumsum(x, axis=1)"),
    "both indices summed": ("input x[T], g[T]\noutput n\nfor t, j: n += g[t] * x[j] * (j <= t)\n",
                            {"x": (4,), "g": (4,)}, "cumsum"),
}
CASES.update({name: case for name, case in RUNNING.items()})


def arrays(spec: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {t: rng.standard_normal(shape) for t, shape in spec.items()}


def forward_code(src: str) -> str:
    code = tcc.compile_source(src)
    return code.split("def forward(", 1)[1].split("def backward(", 1)[0]


def as_numpy(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


# Comparisons over the step index of a recurrence: held fixed in the step loop
# (``t >= 1`` is a Python bool there), and over a range the backward restricts
# to the steps where every access is inside (``a.grad[1:]``), compared at t + 1.
RECURRENCES = {
    "step compared in the cycle": (
        "input x[T, D]\nparam W[D, D]\noutput h[T, D]\nfor t, d: a[t, d] += x[t, d]\n"
        "for t, d, e: a[t, d] += W[d, e] * h[t - 1, e] * (t >= 1) * (e <= d)\n"
        "for t, d: h[t, d] = tanh(a[t, d])\n", {"x": (4, 3), "W": (3, 3)}),
    "a causal sum feeding a cycle": (
        "input x[T, D]\nparam W[D, D]\noutput h[T, D]\n"
        "for t in T, j, d: a[t, d] += x[j, d] * (j <= t) * (t >= j + 1)\n"
        "for t, d, e: a[t, d] += W[d, e] * h[t - 1, e]\n"
        "for t, d: h[t, d] = tanh(a[t, d])\n", {"x": (4, 3), "W": (3, 3)}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(RECURRENCES))
def test_a_comparison_over_a_step_index_agrees_with_the_interpreter(name, backend):
    src, spec = RECURRENCES[name]
    agrees(name, src, spec, backend)
    assert api.check(src).ok


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_triangle_agrees_with_the_interpreter(name, backend):
    src, spec, _ = CASES[name]
    agrees(name, src, spec, backend)


def agrees(name, src, spec, backend):
    inputs = arrays(spec)
    info = analyze(tcc.parse(src))
    saved = interp.run(info, inputs)
    rng = np.random.default_rng(1)
    seeds = {o: rng.standard_normal(np.shape(saved[o])) for o in info.outputs}
    grads = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, saved)
    conv = (lambda a: torch.as_tensor(a)) if backend == "torch" else (lambda a: a)
    kw = {py_name(t): conv(a) for t, a in inputs.items()}
    for optimize in (False, True):
        k = tcc.compile(src, backend=backend, optimize=optimize)
        fwd = k.forward(**kw)
        for t in info.outputs:
            np.testing.assert_allclose(as_numpy(fwd[py_name(t)]), saved[t], rtol=1e-12,
                                       atol=1e-12, err_msg=f"{name}, optimize={optimize}: {t}")
        g = k.backward({o: conv(s) for o, s in seeds.items()}, **kw, **fwd)
        for t in info.differentiable:
            np.testing.assert_allclose(as_numpy(g[t]), grads[t], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name}, optimize={optimize}: {t}.grad")


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_form_of_the_mask(name):
    src, _, form = CASES[name]
    code = forward_code(src)
    if form is None:
        assert "np.tril" not in code and "np.triu" not in code
    else:
        assert form in code, code
        # no mask over two arange views (but the selection the exact product of a
        # non-finite operand is handed: it is built only then)
        fast = "\n".join(line.split(" if np.isfinite(")[0] for line in code.splitlines())
        assert "[:, None]" not in fast, code


def test_the_torch_module_calls_torch_tril():
    code = tcc.compile_source(CASES["scores, j < t"][0], backend="torch")
    assert "s = torch.tril(q @ k.T, -1)" in code


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimize", [False, True])
def test_masked_scores_are_exactly_zero_where_the_product_is_inf_or_nan(backend, optimize):
    """The triangle selects after the product: a score the mask removes is 0
    whatever the product is there (the interpreter's answer, a select)."""
    src = CASES["scores, j <= t"][0]
    q = np.array([[1.0, 0.0], [0.0, 1.0], [np.inf, 1.0]])
    k = np.array([[1.0, 2.0], [np.nan, 1.0], [-np.inf, 0.0]])
    info = analyze(tcc.parse(src))
    with np.errstate(all="ignore"):
        want = interp.run(info, {"q": q, "k": k})["s"]
    conv = (lambda a: torch.as_tensor(a)) if backend == "torch" else (lambda a: a)
    with np.errstate(all="ignore"):
        got = as_numpy(tcc.compile(src, backend=backend, optimize=optimize)
                       .forward(q=conv(q), k=conv(k))["s"])
    np.testing.assert_array_equal(np.triu(got, 1), np.zeros((3, 3)))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op, lhs, rhs, want", [
    ("<=", "j", "t", ("tril", 0)), ("<", "j", "t", ("tril", -1)),
    (">=", "j", "t", ("triu", 0)), (">", "j", "t", ("triu", 1)),
    ("<=", "t", "j", ("triu", 0)), ("<", "t", "j", ("triu", 1)),
    (">=", "t", "j", ("tril", 0)), (">", "t", "j", ("tril", -1)),
    ("<=", "j + 2", "t", ("tril", -2)), ("<", "j", "t + 3", ("tril", 2)),
    ("<=", "j - t", "1", ("tril", 1)), (">=", "t - j", "0", ("tril", 0)),
])
def test_the_diagonal_offset(op, lhs, rhs, want):
    """triangle(c, rows="t", cols="j") against the comparison at every point."""
    src = f"input A[T, T]\nfor t, j: f[t, j] = A[t, j] * ({lhs} {op} {rhs})\n"
    c = tcc.parse(src).stmts[0].expr.rhs
    assert triangle(c, "t", "j") == want
    fn, k = want
    keep = (np.tril if fn == "tril" else np.triu)(np.ones((7, 7), dtype=bool), k)
    t, j = np.arange(7)[:, None], np.arange(7)
    assert np.array_equal(keep, eval(f"({lhs}) {op} ({rhs})", {"t": t, "j": j}) &
                          np.ones((7, 7), dtype=bool))


@pytest.mark.parametrize("cmp", ["(2*j <= t)", "(j <= t + T)", "(j == t)", "(j != t)",
                                 "(j <= 3)", "(j + t <= 3)"])
def test_other_comparisons_are_no_triangle(cmp):
    src = f"input A[T, T]\nfor t, j: f[t, j] = A[t, j] * {cmp}\n"
    c = tcc.parse(src).stmts[0].expr.rhs
    assert triangle(c, "t", "j") is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimize", [False, True])
def test_a_running_sum_never_meets_the_masked_terms(backend, optimize):
    """An inf or nan after step t cannot reach y[t] (the interpreter's answer)."""
    src = RUNNING["prefix sum"][0]
    x = np.array([[1.0, 2.0], [3.0, np.nan], [np.inf, 1.0]])
    conv = (lambda a: torch.as_tensor(a)) if backend == "torch" else (lambda a: a)
    with np.errstate(all="ignore"):
        want = interp.run(analyze(tcc.parse(src)), {"x": x})["y"]
        got = as_numpy(tcc.compile(src, backend=backend, optimize=optimize).forward(x=conv(x))["y"])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[0], [1.0, 2.0])


def test_the_backward_of_a_prefix_sum_is_a_suffix_sum():
    code = tcc.compile_source(RUNNING["prefix sum"][0])
    assert "x_grad = np.flip(np.cumsum(np.flip(y_grad, axis=0), axis=0), axis=0)" in code
    assert "[:, None]" not in code.split("def forward(", 1)[1].split("def random_inputs", 1)[0]


# ------------------------------------------------ random causal programs
# The general strategy (tests/strategies.py) rarely draws a comparison between
# a kept and a summed index of the same range: here every program has one,
# in each form the lowering treats apart (a triangle after the product, of an
# operand, a running sum, both indices summed).

_KINDS = {
    # kind: (declarations, target, term)
    "running": ("input x[T, D]\noutput y[T, D]", "y[t, d]", "x[j, d]"),
    "running, weighted": ("input x[T, D]\nparam w[D]\noutput z[T]", "z[t]",
                          "exp(x[j, d]) * w[d]"),
    "running, times t": ("input x[T, D], a[T, D]\noutput y[T, D]", "y[t, d]",
                         "x[j, d] * a[t, d]"),
    "both summed": ("input x[T, D], g[T]\noutput n", "n", "g[t] * x[j, d]"),
    "scores": ("input q[T, D], k[T, D]\noutput s[T, T]", "s[t, j]", "q[t, d] * k[j, d]"),
    "values": ("input a[T, T], v[T, D]\noutput o[T, D]", "o[t, d]", "a[t, j] * v[j, d]"),
}


@st.composite
def causal_programs(draw):
    kind = draw(st.sampled_from(sorted(_KINDS)))
    decls, target, term = _KINDS[kind]
    side = lambda v: draw(st.sampled_from([v, f"{v} + 1", f"{v} - 1", f"{v} + 2"]))  # noqa: E731
    lhs, rhs = side("j"), side("t")
    if draw(st.booleans()):
        lhs, rhs = rhs, lhs
    op = draw(st.sampled_from(["<", "<=", ">", ">="]))
    src = f"{decls}\nfor t, j, d: {target} += {term} * ({lhs} {op} {rhs})\n"
    sizes = {"T": draw(st.integers(1, 5)), "D": draw(st.integers(1, 3))}
    return kind, src, sizes, draw(st.integers(0, 1000))


@pytest.mark.property
@settings(max_examples=scaled(0.5), deadline=None)
@given(causal_programs())
def test_random_causal_programs_agree_with_the_interpreter(case):
    kind, src, sizes, seed = case
    info = analyze(tcc.parse(src))
    shapes = {t: tuple(sizes[d] for d in info.shapes[t]) for t in info.inputs}
    rng = np.random.default_rng(seed)
    inputs = {t: rng.standard_normal(s) for t, s in shapes.items()}
    saved = interp.run(info, inputs)
    seeds = {o: rng.standard_normal(np.shape(saved[o])) for o in info.outputs}
    grads = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, saved)
    for backend in BACKENDS:
        conv = (lambda a: torch.as_tensor(a)) if backend == "torch" else (lambda a: a)
        kw = {py_name(t): conv(a) for t, a in inputs.items()}
        for optimize in (False, True):
            k = tcc.compile(src, backend=backend, optimize=optimize)
            fwd = k.forward(**kw)
            what = f"{kind}, {backend}, optimize={optimize}\n{src}"
            for t in info.outputs:
                np.testing.assert_allclose(as_numpy(fwd[py_name(t)]), saved[t], rtol=1e-10,
                                           atol=1e-12, err_msg=what)
            g = k.backward({o: conv(s) for o, s in seeds.items()}, **kw, **fwd)
            for t in info.differentiable:
                np.testing.assert_allclose(as_numpy(g[t]), grads[t], rtol=1e-9, atol=1e-12,
                                           err_msg=f"{what}: {t}.grad")


# ------------------------------------------- masked products, inf and nan
# A comparison over a summed index selects one operand of a matrix product
# (np.tril(a) @ v). Its zeros meet the other operand inside the product, so an
# inf or nan there at a masked pair would make nan where the contract has 0:
# the module checks that operand (O(its size)) and, only where it has a
# non-finite entry, computes the product exactly (_masked_product); torch
# always does, with no read back to the host.

MASKED = {
    "j <= t": ("input a[T, T], v[T, D]\noutput o[T, D]\n"
               "for t, j, d: o[t, d] += a[t, j] * v[j, d] * (j <= t)\n", "np.tril(a) @ v"),
    "j < t": ("input a[T, T], v[T, D]\noutput o[T, D]\n"
              "for t, j, d: o[t, d] += a[t, j] * v[j, d] * (j < t)\n", "np.tril(a, -1) @ v"),
    "j >= t": ("input a[T, T], v[T, D]\noutput o[T, D]\n"
               "for t, j, d: o[t, d] += a[t, j] * v[j, d] * (j >= t)\n", "np.triu(a) @ v"),
    "j != t": ("input a[T, T], v[T, D]\noutput o[T, D]\n"
               "for t, j, d: o[t, d] += a[t, j] * v[j, d] * (j != t)\n", None),
    # (t + 1 is past j's range at the last t: the equality stays a select)
    "j == t + 1": ("input a[T, T], v[T, D]\noutput o[T, D]\n"
                   "for t, j, d: o[t, d] += a[t, j] * v[j, d] * (j == t + 1)\n", None),
    "heads": ("input a[H, T, T], v[H, T, D]\noutput o[H, T, D]\n"
              "for h, t, j, d: o[h, t, d] += a[h, t, j] * v[h, j, d] * (j <= t)\n",
              "np.tril(a) @ v"),
    "shifted running sum times a": ("input a[B, T], x[B, T]\noutput y[B, T]\n"
                                    "for b, t, j: y[b, t] += a[b, t] * x[b, j] * (j < t)\n",
                                    "a * np.cumsum("),
}


def _nonfinite(shape, seed, dtype=np.float64):
    """Random values with inf, -inf and nan at a few places, masked and not."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    at = rng.choice(flat.size, size=min(flat.size, 4), replace=False)
    flat[at] = np.array([np.inf, -np.inf, np.nan, np.inf])[:len(at)]
    return x


def _masked_inputs(name, seed, dtype=np.float64):
    """(info, inputs, seeds): the operand a comparison does not select has inf and
    nan at masked and kept pairs, and the seeds too. A running sum is only ever
    0 by the mask at its first step: there alone is anything multiplying it
    non-finite (elsewhere inf times a sum is not a sum of infs, with or without
    a mask)."""
    sizes = {"T": 5, "D": 3, "H": 2, "B": 2}
    info = analyze(tcc.parse(MASKED[name][0]))
    rng = np.random.default_rng(seed)
    inputs = {t: rng.standard_normal(tuple(sizes[d] for d in info.shapes[t])).astype(dtype)
              for t in info.inputs}
    if name.startswith("shifted"):
        inputs["a"][:, 0] = [np.inf, np.nan]
        seeds = {"y": rng.standard_normal((2, 5))}
        seeds["y"][:, 0] = [-np.inf, np.nan]
        return info, inputs, seeds
    inputs["v"] = _nonfinite(inputs["v"].shape, seed + 1, dtype)
    if seed % 2:
        inputs["a"][..., 3, 1] = np.inf        # kept by every mask but j >= t
    with np.errstate(all="ignore"):
        shape = np.shape(interp.run(info, inputs)["o"])
    return info, inputs, {"o": _nonfinite(shape, seed + 7)}


def assert_same(got, want, what):
    """Equal where the reference is inf or nan (the same pattern), close elsewhere."""
    got = np.asarray(got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    np.testing.assert_array_equal(np.where(np.isinf(want), want, 0),
                                  np.where(np.isinf(got), got, 0), err_msg=what)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(MASKED))
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_masked_product_is_exact_where_the_other_operand_is_inf_or_nan(name, backend, seed):
    """Forward and backward, optimized and not, against the interpreter: a term
    a comparison removes is 0 even where the operand it would meet is inf or nan
    (seeds with inf and nan too: the backward's products are masked the same way)."""
    src = MASKED[name][0]
    info, inputs, seeds = _masked_inputs(name, seed)
    with np.errstate(all="ignore"):
        saved = interp.run(info, inputs)
        grads = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, saved)
    conv = (lambda a: torch.as_tensor(a)) if backend == "torch" else (lambda a: a)
    kw = {py_name(t): conv(a) for t, a in inputs.items()}
    for optimize in (False, True):
        k = tcc.compile(src, backend=backend, optimize=optimize)
        what = f"{name}, {backend}, optimize={optimize}"
        with np.errstate(all="ignore"):
            fwd = k.forward(**kw)
            g = k.backward({o: conv(s) for o, s in seeds.items()}, **kw, **fwd)
        for t in info.outputs:
            assert_same(as_numpy(fwd[py_name(t)]), saved[t], f"{what}: {t}")
        for t in info.differentiable:
            assert_same(as_numpy(g[t]), grads[t], f"{what}: {t}.grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_masked_inf_leaves_the_rows_before_it_finite(backend):
    """v[4, 0] = inf reaches only o[4, 0] under (j <= t); nan reaches no row before its own."""
    src = MASKED["j <= t"][0]
    a = np.ones((5, 5))
    v = np.ones((5, 2))
    v[4, 0], v[2, 1] = np.inf, np.nan
    conv = (lambda x: torch.as_tensor(x)) if backend == "torch" else (lambda x: x)
    o = as_numpy(tcc.compile(src, backend=backend).forward(a=conv(a), v=conv(v))["o"])
    want = np.cumsum(np.ones((5, 2)), axis=0)
    want[4, 0] = np.inf
    want[2:, 1] = np.nan
    np.testing.assert_array_equal(o, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kept_terms_of_inf_and_nan_sum_as_the_interpreter_sums_them(backend):
    """Kept pairs: inf * inf, -inf * inf, 0 * inf and nan, next to masked ones."""
    src = MASKED["j <= t"][0]
    a = np.ones((4, 4))
    v = np.ones((4, 3))
    v[1, 0], v[2, 1], v[3, 2], v[0, 2] = np.inf, -np.inf, np.nan, -np.inf
    a[1, 1], a[2, 1], a[3, 1] = np.inf, 0.0, -np.inf      # with v[1, 0] = inf
    a[3, 0], a[2, 2] = np.inf, -np.inf                    # with v[0, 2], v[2, 1]
    want = interp.run(analyze(tcc.parse(src)), {"a": a, "v": v})["o"]
    conv = (lambda x: torch.as_tensor(x)) if backend == "torch" else (lambda x: x)
    with np.errstate(all="ignore"):
        got = as_numpy(tcc.compile(src, backend=backend).forward(a=conv(a), v=conv(v))["o"])
    np.testing.assert_array_equal(got, want)
    assert want[0, 0] == want[0, 1] == 1.0          # v[1, 0], v[2, 1] masked there
    assert np.isnan(want).any() and np.isposinf(want).any() and np.isneginf(want).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_masked_product_keeps_float32(backend):
    src = MASKED["heads"][0]
    info, inputs, _ = _masked_inputs("heads", 0, np.float32)
    conv = (lambda a: torch.as_tensor(a)) if backend == "torch" else (lambda a: a)
    with np.errstate(all="ignore"):
        want = interp.run(info, inputs)["o"]
        o = tcc.compile(src, backend=backend).forward(
            **{t: conv(x) for t, x in inputs.items()})["o"]
    assert o.dtype == (torch.float32 if backend == "torch" else np.float32)
    np.testing.assert_array_equal(np.isnan(as_numpy(o)), np.isnan(want))
    np.testing.assert_allclose(as_numpy(o)[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MASKED))
def test_a_finite_operand_keeps_the_plain_product(name):
    """Where the other operand is finite the module runs the product it always
    did (np.tril(a) @ v) and never the exact helper."""
    src, form = MASKED[name]
    code = forward_code(src)
    assert "_masked_product(" in code, code
    if form is not None:
        assert f"{form}" in code.split(" if np.isfinite(", 1)[0], code
    kernel = tcc.compiler.Kernel(tcc.compile_source(src), "masked")

    def refuse(*args):
        raise AssertionError("the exact helper ran on finite operands")

    kernel.namespace["_masked_product"] = refuse
    info = analyze(tcc.parse(src))
    inputs = arrays({t: tuple(3 for _ in info.shapes[t]) for t in info.inputs})
    fwd = kernel.forward(**inputs)
    kernel.backward({o: np.ones_like(fwd[o]) for o in info.outputs}, **inputs, **fwd)


def test_the_torch_module_checks_nothing_on_the_host():
    """torch: the exact form always, on the device (no .all(), .item() or if on data)."""
    code = tcc.compile_source(MASKED["j <= t"][0], backend="torch")
    body = code.split("def forward(", 1)[1].split("def random_inputs", 1)[0]
    assert "o = _masked_product('ab,bc->ac', " in body and "torch.tril(a), v)" in body
    assert ".all()" not in body and ".item()" not in body
