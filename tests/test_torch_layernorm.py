"""Layer norm on the torch backend (``backends/layernorm.py``): where the
statements are exactly layer norm (mean, centred, biased variance, eps inside
the square root, optional gain and bias over the last axis), the forward is
``torch.native_layer_norm`` and the backward ``native_layer_norm_backward``;
near misses keep the statement-by-statement code. Either way the results are
the reference interpreter's, forward and backward.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_backends as tb  # noqa: E402

import tcc  # noqa: E402
from tcc.ir import py_name  # noqa: E402

torch.set_num_threads(1)

_SIZES = {"B": 3, "T": 2, "D": 5}

_AFFINE = """
param  g[D], be[D]
input  x[B, D]
output y[B, D]
for b, d: mu[b] += x[b, d] / D
for b, d: xc[b, d] = x[b, d] - mu[b]
for b, d: var[b] += xc[b, d] ** 2 / D
for b, d: y[b, d] = g[d] * xc[b, d] / sqrt(var[b] + 1e-5) + be[d]
"""

FIRES = {
    "gain and bias": _AFFINE,
    # the benchmark's program (rs written out, xc * xc)
    "rs written out, xc * xc": (Path(__file__).parent.parent / "benchmarks" / "programs" /
                                "layernorm.loop").read_text(),
    "gain only, two leading axes": """
param g[D]
input x[B, T, D]
output y[B, T, D]
for b, t, d: mu[b, t] += x[b, t, d] / D
for b, t, d: xc[b, t, d] = x[b, t, d] - mu[b, t]
for b, t, d: var[b, t] += xc[b, t, d] * xc[b, t, d] / D
for b, t, d: y[b, t, d] = g[d] * xc[b, t, d] / sqrt(var[b, t] + 1e-5)
""",
    "bias only, the size a number": """
param be[8]
input x[B, 8]
output y[B, 8]
for b, d: mu[b] += x[b, d] / 8
for b, d: xc[b, d] = x[b, d] - mu[b]
for b, d: var[b] += xc[b, d] ** 2 / 8
for b, d: y[b, d] = xc[b, d] / sqrt(var[b] + 0.001) + be[d]
""",
    "no affine": """
input x[B, D]
output y[B, D]
for b, d: mu[b] += x[b, d] / D
for b, d: xc[b, d] = x[b, d] - mu[b]
for b, d: var[b] += xc[b, d] ** 2 / D
for b, d: y[b, d] = xc[b, d] / sqrt(var[b] + 1e-5)
""",
    "inside a larger program": """
param W[D, D], g[D], be[D]
input x[B, D]
output L
for b, e, d: h[b, e] += W[e, d] * x[b, d]
for b, d: mu[b] += h[b, d] / D
for b, d: xc[b, d] = h[b, d] - mu[b]
for b, d: var[b] += xc[b, d] ** 2 / D
for b, d: y[b, d] = g[d] * xc[b, d] / sqrt(var[b] + 1e-5) + be[d]
for b, d: L += tanh(y[b, d]) * x[b, d]
""",
}

NEAR_MISSES = {
    "eps outside the square root": _AFFINE.replace("sqrt(var[b] + 1e-5)",
                                                   "(sqrt(var[b]) + 1e-5)"),
    "unbiased variance": _AFFINE.replace("xc[b, d] ** 2 / D", "xc[b, d] ** 2 / (D - 1)"),
    "mean over a number that is not the size": _AFFINE.replace("x[b, d] / D", "x[b, d] / 4"),
    "bias along the batch": _AFFINE.replace("param  g[D], be[D]", "param  g[D], be[B]")
                                   .replace("+ be[d]", "+ be[b]"),
    "gain squared": _AFFINE.replace("g[d] * xc", "g[d] * g[d] * xc"),
    "twice the gain": _AFFINE.replace("g[d] * xc", "2 * g[d] * xc"),
    "normalized over the first axis": """
param  g[B], be[B]
input  x[B, D]
output y[B, D]
for b, d: mu[d] += x[b, d] / B
for b, d: xc[b, d] = x[b, d] - mu[d]
for b, d: var[d] += xc[b, d] ** 2 / B
for b, d: y[b, d] = g[b] * xc[b, d] / sqrt(var[d] + 1e-5) + be[b]
""",
    "the square root squared": _AFFINE.replace("/ sqrt(var[b] + 1e-5)",
                                               "/ sqrt(var[b] + 1e-5) ** 2"),
}


def _against_interpreter(text, optimize=True, dtype=np.float64):
    ref = tb.Ref(text, {d: n for d, n in _SIZES.items() if d in text})
    k = tcc.compile(text, backend="torch", optimize=optimize)
    kw = {t: torch.as_tensor(a) for t, a in ref.kwargs(dtype).items()}
    fwd = k.forward(**kw)
    rtol, atol = (tb.RTOL64, tb.ATOL64) if dtype == np.float64 else (tb.RTOL32, tb.ATOL32)
    for o in ref.info.outputs:
        tb.assert_close(fwd[py_name(o)].numpy(), ref.computed[o], rtol, atol, f"{o}")
    seeds = {o: torch.as_tensor(s.astype(dtype)) for o, s in ref.seeds.items()}
    grads = k.backward(seeds, **kw, **fwd)
    for t in ref.info.differentiable:
        tb.assert_close(grads[t].numpy(), ref.grads[t], rtol, atol, f"{t}.grad")


def _halves(source):
    body = source.split("def forward(", 1)[1]
    forward, backward = body.split("def backward(", 1)
    return forward, backward.split("def random_inputs(", 1)[0]


@pytest.mark.parametrize("name", list(FIRES))
def test_layer_norm_is_torchs_kernels(name):
    text = FIRES[name]
    forward, backward = _halves(tcc.compile_source(text, backend="torch"))
    assert "= _layer_norm(" in forward, forward
    assert "= _layer_norm_backward(" in backward, backward
    assert "one library kernel" not in tcc.compile_source(text)     # NumPy: as before
    _against_interpreter(text)
    _against_interpreter(text, dtype=np.float32)
    _against_interpreter(text, optimize=False)


@pytest.mark.parametrize("name", list(NEAR_MISSES))
def test_near_misses_are_not_layer_norm(name):
    text = NEAR_MISSES[name]
    source = tcc.compile_source(text, backend="torch")
    assert "_layer_norm" not in source, name
    _against_interpreter(text)


def test_only_what_is_read_is_computed():
    """The backward kernel reads x and mu, as torch's autograd saves them: the
    forward returns mu and var (from the kernel's rstd, along the leading axes
    only) and never builds xc; with no gradients to compute it returns nothing
    more than y."""
    k = tcc.compile(_AFFINE, backend="torch")
    forward, backward = _halves(k.source)
    assert "(y, mu, rstd) = _layer_norm(x, g, be, 1e-05)" in forward
    assert "var = rstd ** (-2) - 1e-05" in forward and "xc =" not in forward
    assert "_layer_norm_backward(y_grad, x, mu, rstd, g, (True, True, True))" in backward
    kw = {t: torch.as_tensor(a) for t, a in tb.Ref(_AFFINE, {"B": 3, "D": 5}).kwargs().items()}
    assert set(k.forward(**kw)) == {"y", "mu", "var"}
    data = _AFFINE.replace("param  g[D], be[D]", "data   g[D], be[D]") \
                  .replace("input  x[B, D]", "data   x[B, D]")
    forward, _ = _halves(tcc.compile_source(data, backend="torch"))
    assert "_layer_norm(x, g, be, 1e-05)" in forward
    assert "xc =" not in forward and "var =" not in forward
    _against_interpreter(data)


def test_a_second_reader_of_the_statistics():
    """An output that reads the variance: its gradient flows into var.grad, so
    the backward is not layer norm's alone and stays statement by statement,
    reading xc, which the forward then computes from the kernel's mean."""
    text = _AFFINE.replace("output y[B, D]", "output y[B, D], v[B]") + \
        "for b: v[b] = var[b] * 2\n"
    forward, backward = _halves(tcc.compile_source(text, backend="torch"))
    assert "= _layer_norm(" in forward and "xc = x - mu[..., None]" in forward
    assert "_layer_norm_backward" not in backward
    _against_interpreter(text)
    _against_interpreter(text, optimize=False)


def test_the_variance_as_an_output():
    """var is rebuilt from the kernel's rstd (exact but for rounding relative to
    var + eps): where the program returns it, the forward is not the kernel;
    and its gradient starts from a seed, so neither is the backward (nor where
    the mean is an output)."""
    for t in ("var", "mu"):
        text = _AFFINE.replace("output y[B, D]", f"output y[B, D], {t}[B]")
        forward, backward = _halves(tcc.compile_source(text, backend="torch"))
        assert ("_layer_norm(" in forward) == (t == "mu")
        assert "_layer_norm_backward(" not in backward
        _against_interpreter(text)


def test_a_second_reader_of_the_centred_input():
    """xc read by another output: the backward kernel (if taken) reads xc."""
    text = _AFFINE.replace("output y[B, D]", "output y[B, D], z[B, D]") + \
        "for b, d: z[b, d] = xc[b, d] * 3\n"
    forward, _ = _halves(tcc.compile_source(text, backend="torch"))
    assert "= _layer_norm(" in forward
    _against_interpreter(text)


def test_explain_shows_layer_norm():
    from tcc.explain import explain
    out, _ = explain(os.path.join(os.path.dirname(HERE), "benchmarks", "programs",
                                  "layernorm_affine.loop"))
    assert "[forward] torch.native_layer_norm over the last axis of x computes y" in out
    assert "[backward] torch's layer norm backward (native_layer_norm_backward) computes " \
           "x.grad, g.grad, be.grad" in out


def test_adapter_gradcheck():
    from tcc.torch import function
    f = function(FIRES["gain and bias"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    g = (1 + 0.1 * torch.randn(5, dtype=torch.float64, generator=gen)).requires_grad_()
    be = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g, be: f(x=x, g=g, be=be)["y"], (x, g, be))
    want = torch.nn.functional.layer_norm(x, (5,), g, be, 1e-5)
    assert torch.allclose(f(x=x, g=g, be=be)["y"], want, rtol=1e-12, atol=1e-12)
