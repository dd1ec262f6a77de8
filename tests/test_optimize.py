"""The optimizer (LANGUAGE.md section 3; issue #5, deliverable 4).

* optimized and unoptimized compiled modules, on both backends, and the
  optimized backward run by the reference interpreter, agree with the
  reference interpreter on the program as written, on every course example,
  every catalogue program and the programs below (forward outputs and
  gradients);
* the printed optimized backward (``tcc grad``) is the expected form, as
  normalized sums of products, against the golden files
  ``data/golden/*.grad.opt.loop``: the TTIC softmax (problem 3), softmax +
  cross-entropy with a gather label (no exp, log or division left) and with a
  data weight tensor, logistic regression, the TTIC ReLU unit, the UGRNN
  linear step (still the course answer) and the residual block;
* overflow: logits of +1000 and -1000 give finite, correct outputs and
  gradients (against stable NumPy formulas) on both backends;
* the fusions recognize their patterns by structure: renamed tensors and
  indices, two batch axes, the softmax axis first or in the middle;
* every rewrite that fires is verified on random data (``explain.verify``),
  ``tcc explain --verify`` says so for each one, and ``tcc explain`` shows the
  flops and peak memory of the forward and backward, before and after;
* a chain of four matrix products is contracted pairwise (the ``order``
  rewrite) and its backward reuses the pairwise temporaries.

Backward programs are compared with ``normal_form`` (tests/normal_form.py),
after renaming gradients that are not outputs of the backward (``z.grad`` in
the residual block, ``Z.grad`` in the raw softmax) to plain temporaries, since
a backward program is free to name its temporaries either way.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from catalogue import (CATALOGUE, COURSE_EXAMPLES, EXAMPLE_SIZES, RECURRENCE_EXAMPLES,  # noqa: E402
                       example_path)
from normal_form import assert_same, normal_form  # noqa: E402

import tcc  # noqa: E402
from tcc import api, gradcheck, interp  # noqa: E402
from tcc.autodiff import differentiate  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.cli import main  # noqa: E402
from tcc.pipeline import Pipeline  # noqa: E402
from tcc.explain import cost, explain, nominal_sizes, verify  # noqa: E402
from tcc.ir import Bin, Call, DimVal, py_name, reads, walk  # noqa: E402

GOLDEN = os.path.join(HERE, "data", "golden")
BACKENDS = ("numpy", "opt_einsum")
TOL = 1e-9


# ------------------------------------------------------------------ programs

WXENT = """\
# softmax + cross-entropy against data weights whose rows need not sum to 1
input s[B, K]
data Y[B, K]
output L[B]
for b, k: Z[b] += exp(s[b, k])
for b, k: p[b, k] = exp(s[b, k]) / Z[b]
for b, k: L[b] += -Y[b, k] * log(p[b, k])
"""

LSE = """\
# log-sum-exp, written naively: tcc subtracts the maximum
input s[B, K]
output L[B]
for b, k: Z[b] += exp(s[b, k])
for b: L[b] = log(Z[b])
"""

MLP_XENT = """\
# a linear layer, a softmax and the cross-entropy against a label
param W[K, D], c[K]
data x[B, D], y[B]
output L
for b, k, d: s[b, k] += W[k, d] * x[b, d]
for b, k: s[b, k] += c[k]
for b, k: Z[b] += exp(s[b, k])
for b, k: p[b, k] = exp(s[b, k]) / Z[b]
for b: L += -log(p[b, y[b]])
"""

# the same, with the loss averaged over the batch (the usual mean cross-entropy)
MLP_MEAN_XENT = MLP_XENT.replace("for b: L += -log(p[b, y[b]])",
                                 "for b: L += -log(p[b, y[b]]) / B")

# softmax_xent.loop with the loss written with -= (the same program)
XENT_MINUS_EQ = """\
input s[B, K]
data y[B]
output L[B]
for b, k: Z[b] += exp(s[b, k])
for b, k: p[b, k] = exp(s[b, k]) / Z[b]
for b: L[b] -= log(p[b, y[b]])
"""

CHAIN4 = """\
# a chain of four matrix products, written as one statement
input A[I, J], Bm[J, K], C[K, L], D[L, M]
output Y[I, M]
for i, j, k, l, m: Y[i, m] += A[i, j] * Bm[j, k] * C[k, l] * D[l, m]
"""


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- fusion variants: (id, program, rewrites that must fire, expected backward)

SOFTMAX_VARIANTS = [
    ("renamed", """\
input logits[N, C]
output prob[N, C]
for n, c: norm[n] += exp(logits[n, c])
for n, c: prob[n, c] = exp(logits[n, c]) / norm[n]
""", """\
for n, c: acc[n] += prob.grad[n, c] * prob[n, c]
for n, c: logits.grad[n, c] += prob[n, c] * (prob.grad[n, c] - acc[n])
"""),
    ("two_batch_axes", """\
input s[B, T, J]
output p[B, T, J]
for b, t, j: Z[b, t] += exp(s[b, t, j])
for b, t, j: p[b, t, j] = exp(s[b, t, j]) / Z[b, t]
""", """\
for b, t, j: e[b, t] += p.grad[b, t, j] * p[b, t, j]
for b, t, j: s.grad[b, t, j] += p[b, t, j] * (p.grad[b, t, j] - e[b, t])
"""),
    ("axis_first", """\
input s[J, B]
output p[J, B]
for j, b: Z[b] += exp(s[j, b])
for j, b: p[j, b] = exp(s[j, b]) / Z[b]
""", """\
for j, b: e[b] += p.grad[j, b] * p[j, b]
for j, b: s.grad[j, b] += p[j, b] * (p.grad[j, b] - e[b])
"""),
    ("axis_in_the_middle", """\
input s[B, J, T]
output p[B, J, T]
for b, j, t: Z[b, t] += exp(s[b, j, t])
for b, j, t: p[b, j, t] += exp(s[b, j, t]) / Z[b, t]
""", """\
for b, j, t: e[b, t] += p.grad[b, j, t] * p[b, j, t]
for b, j, t: s.grad[b, j, t] += p[b, j, t] * (p.grad[b, j, t] - e[b, t])
"""),
]

XENT_VARIANTS = [
    ("renamed", """\
input a[N, C]
data lab[N]
output loss[N]
for n, c: den[n] += exp(a[n, c])
for n, c: q[n, c] = exp(a[n, c]) / den[n]
for n: loss[n] = -log(q[n, lab[n]])
""", """\
for n, c: a.grad[n, c] += loss.grad[n] * q[n, c]
for n: a.grad[n, lab[n]] -= loss.grad[n]
"""),
    ("two_batch_axes", """\
input s[B, T, K]
data y[B, T]
output L[B, T]
for b, t, k: Z[b, t] += exp(s[b, t, k])
for b, t, k: p[b, t, k] = exp(s[b, t, k]) / Z[b, t]
for b, t: L[b, t] = -log(p[b, t, y[b, t]])
""", """\
for b, t, k: s.grad[b, t, k] += L.grad[b, t] * p[b, t, k]
for b, t: s.grad[b, t, y[b, t]] -= L.grad[b, t]
"""),
    ("axis_first", """\
input s[K, B]
data y[B]
output L[B]
for k, b: Z[b] += exp(s[k, b])
for k, b: p[k, b] = exp(s[k, b]) / Z[b]
for b: L[b] = -log(p[y[b], b])
""", """\
for k, b: s.grad[k, b] += L.grad[b] * p[k, b]
for b: s.grad[y[b], b] -= L.grad[b]
"""),
    ("minus_eq", XENT_MINUS_EQ, """\
for b, k: s.grad[b, k] += L.grad[b] * p[b, k]
for b: s.grad[b, y[b]] -= L.grad[b]
"""),
]

WXENT_VARIANTS = [
    ("renamed", """\
input a[N, C]
data T[N, C]
output loss[N]
for n, c: den[n] += exp(a[n, c])
for n, c: q[n, c] = exp(a[n, c]) / den[n]
for n, c: loss[n] += -T[n, c] * log(q[n, c])
""", """\
for n, c: tsum[n] += T[n, c]
for n, c: a.grad[n, c] += loss.grad[n] * (tsum[n] * q[n, c] - T[n, c])
"""),
    ("two_batch_axes", """\
input s[B, T, K]
data Y[B, T, K]
output L[B, T]
for b, t, k: Z[b, t] += exp(s[b, t, k])
for b, t, k: p[b, t, k] = exp(s[b, t, k]) / Z[b, t]
for b, t, k: L[b, t] += -Y[b, t, k] * log(p[b, t, k])
""", """\
for b, t, k: ys[b, t] += Y[b, t, k]
for b, t, k: s.grad[b, t, k] += L.grad[b, t] * (ys[b, t] * p[b, t, k] - Y[b, t, k])
"""),
    ("axis_first", """\
input s[K, B]
data Y[K, B]
output L[B]
for k, b: Z[b] += exp(s[k, b])
for k, b: p[k, b] = exp(s[k, b]) / Z[b]
for k, b: L[b] += -Y[k, b] * log(p[k, b])
""", """\
for k, b: ys[b] += Y[k, b]
for k, b: s.grad[k, b] += L.grad[b] * (ys[b] * p[k, b] - Y[k, b])
"""),
]

# (printed as the module runs it: with the maximum subtracted)
LSE_VARIANTS = [
    ("renamed", """\
input v[N, C]
output out[N]
for n, c: acc[n] += exp(v[n, c])
for n: out[n] = log(acc[n])
""", """\
for n, c: v.grad[n, c] += out.grad[n] * exp(v[n, c] - acc_max[n]) / acc_shifted[n]
"""),
    ("two_batch_axes", """\
input s[B, T, K]
output L[B, T]
for b, t, k: Z[b, t] += exp(s[b, t, k])
for b, t: L[b, t] = log(Z[b, t])
""", """\
for b, t, k: s.grad[b, t, k] += L.grad[b, t] * exp(s[b, t, k] - Z_max[b, t]) / Z_shifted[b, t]
"""),
    ("axis_first", """\
input s[K, B]
output L[B]
for k, b: Z[b] += exp(s[k, b])
for b: L[b] = log(Z[b])
""", """\
for k, b: s.grad[k, b] += L.grad[b] * exp(s[k, b] - Z_max[b]) / Z_shifted[b]
"""),
]

FUSIONS = (
    [(f"softmax-{n}", "softmax", t, e) for n, t, e in SOFTMAX_VARIANTS]
    + [(f"xent-{n}", "softmax-xent", t, e) for n, t, e in XENT_VARIANTS]
    + [(f"wxent-{n}", "softmax-xent", t, e) for n, t, e in WXENT_VARIANTS]
    + [(f"lse-{n}", "stable", t, e) for n, t, e in LSE_VARIANTS]
)

# everything the cross-checks run: (id, program text, sizes)
EXTRA = [
    ("softmax_wxent", WXENT, None),
    ("logsumexp", LSE, None),
    ("mlp_xent", MLP_XENT, None),
    ("mlp_mean_xent", MLP_MEAN_XENT, None),
    ("chain4", CHAIN4, None),
    *((f"fusion_{i}", t, None) for i, _, t, _ in FUSIONS),
]
ALL = ([(n, _read(example_path(n)), EXAMPLE_SIZES.get(n)) for n in COURSE_EXAMPLES]
       + [(c.name, c.text, c.sizes) for c in CATALOGUE] + EXTRA)
ALL_IDS = [a[0] for a in ALL]


# ------------------------------------------------------------------ helpers

@functools.lru_cache(maxsize=None)
def _reference(text: str, sizes_key=None, seed: int = 0):
    """The reference interpreter on the program as written: (info, inputs,
    forward values, seeds, gradients), gradients from the raw backward."""
    sizes = dict(sizes_key) if sizes_key else None
    info = analyze(tcc.parse(text))
    chosen = gradcheck.choose_sizes(info, sizes)
    inputs = gradcheck.random_inputs(info, chosen, seed)
    fwd = interp.run(info, inputs)
    seeds = gradcheck.random_seeds(info, fwd, seed)
    grads = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, fwd)
    grads = {t: np.zeros(np.shape(inputs[t])) if g is None else g for t, g in grads.items()}
    return info, inputs, fwd, seeds, grads


def _key(sizes):
    return tuple(sorted(sizes.items())) if sizes else None


def _close(got, want, what: str, tol: float = TOL):
    got = np.asarray(got, dtype=float)
    want = np.asarray(want, dtype=float)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, equal_nan=True,
                               err_msg=what)


def _temps_as_plain(text: str, outputs: set[str]) -> str:
    """Rename the computed ``X.grad`` tensors that are not gradients the
    backward returns (``outputs``) to plain names, so ``normal_form`` treats
    them as the temporaries they are."""
    prog = tcc.parse(text)
    for t in sorted({s.target.tensor for s in prog.stmts}, key=len, reverse=True):
        if t.endswith(".grad") and t not in outputs:
            plain = t[:-5] + "__grad_tmp"
            text = re.sub(r"(?<![\w.])" + re.escape(t) + r"(?![\w.])", plain, text)
    return text


def _outputs_of(forward_text: str) -> set[str]:
    info = analyze(tcc.parse(forward_text))
    return {t + ".grad" for t in info.differentiable}


def assert_same_backward(got: str, expected: str, forward_text: str):
    outs = _outputs_of(forward_text)
    a = normal_form(_temps_as_plain(got, outs))
    b = normal_form(_temps_as_plain(expected, outs))
    if a != b:
        only_a = [t for t in a if t not in b]
        only_b = [t for t in b if t not in a]
        raise AssertionError(
            "backward programs differ as sums of products\n--- printed:\n" + got
            + "--- only in printed:\n  " + "\n  ".join(map(str, only_a))
            + "\n--- only in expected:\n  " + "\n  ".join(map(str, only_b)))


def _rewrite_names(text: str) -> list[str]:
    return [rw.name for rw in Pipeline(text, None, True).log.rewrites]


def _kernel_run(text, backend, optimize, inputs, seeds, info):
    k = tcc.compile(text, backend=backend, optimize=optimize)
    kw = {py_name(t): a for t, a in inputs.items()}
    fwd = k.forward(**kw)
    outs = {o: fwd[py_name(o)] for o in info.outputs}
    grads = k.backward(seeds, **kw, **fwd)
    return outs, grads


def _interp_run(info, backward, inputs, seeds):
    """A (forward Info, backward Program) pair run by the reference interpreter."""
    saved = interp.run(info, inputs)
    grads = api.InterpEngine(info, backward).backward(seeds, inputs, saved)
    grads = {t: np.zeros(np.shape(inputs[t])) if g is None else g for t, g in grads.items()}
    return {o: saved[o] for o in info.outputs}, grads


# ================================================================ agreement

ENGINES = ["numpy-optimized", "numpy-unoptimized", "opt_einsum-optimized",
           "opt_einsum-unoptimized", "interp-optimized", "printed-optimized"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("item", ALL, ids=ALL_IDS)
def test_optimized_unoptimized_and_the_interpreter_agree(item, engine):
    """Forward outputs and gradients of each way of running a program against
    the reference interpreter running the program as written and its raw
    backward, on the same random inputs and seeds."""
    name, text, sizes = item
    info, inputs, ref_fwd, seeds, ref_grads = _reference(text, _key(sizes))
    kind, _, opt = engine.partition("-")
    if kind in BACKENDS:
        outs, grads = _kernel_run(text, kind, opt == "optimized", inputs, seeds, info)
    elif kind == "interp":                  # the optimized stages, interpreted
        p = Pipeline(text, None, True)
        outs, grads = _interp_run(p.info, p.backward, inputs, seeds)
    else:               # what `tcc grad` prints, interpreted on the optimized forward's values
        printed = api.grad_text(text, optimize=True)
        outs = {o: ref_fwd[o] for o in info.outputs}
        saved = interp.run(Pipeline(text, None, True).info, inputs)
        grads = api.InterpEngine(info, tcc.parse(printed)).backward(seeds, inputs, saved)
        grads = {t: np.zeros(np.shape(inputs[t])) if g is None else g
                 for t, g in grads.items()}
    assert set(grads) == set(info.differentiable)
    for o in info.outputs:
        _close(outs[o], ref_fwd[o], f"{name} [{engine}]: output {o}")
    for t in info.differentiable:
        _close(grads[t], ref_grads[t], f"{name} [{engine}]: {t}.grad")


# ================================================================== golden

# golden stem -> the forward program it is the optimized backward of
GOLDEN_SOURCES = {
    "ttic_softmax": example_path("ttic_softmax"),
    "softmax_xent": example_path("softmax_xent"),
    "softmax_wxent": WXENT,
    "logistic": example_path("logistic"),
    "ttic_relu_unit": example_path("ttic_relu_unit"),
    "ttic_ugrnn_linear": example_path("ttic_ugrnn_linear"),
    "residual_block": example_path("residual_block"),
    "softmax_xent_bracket": example_path("softmax_xent_bracket"),
    "same_conv1d_single": example_path("same_conv1d_single"),
    # backpropagation through time (issue 11)
    "ttic_ugrnn_rnn": example_path("ttic_ugrnn_rnn"),
    "nyu_gated_rnn": example_path("nyu_gated_rnn"),
    "nyu_attention_rnn2": example_path("nyu_attention_rnn2"),
    "nyu_attention_rnn_inf": example_path("nyu_attention_rnn_inf"),
}
GOLDEN_FILES = sorted(os.path.basename(f)[:-len(".grad.opt.loop")]
                      for f in glob.glob(os.path.join(GOLDEN, "*.grad.opt.loop")))


def _source_text(src: str) -> str:
    return _read(src) if src.endswith(".loop") and "\n" not in src else src


def _cli_grad(src: str, capsys, tmp_path, *extra) -> str:
    if "\n" in src:
        path = tmp_path / "program.loop"
        path.write_text(src, encoding="utf-8")
        src = str(path)
    capsys.readouterr()
    assert main(["grad", src, *extra]) == 0
    return capsys.readouterr().out


def test_every_golden_file_has_a_source():
    assert set(GOLDEN_FILES) == set(GOLDEN_SOURCES)


@pytest.mark.parametrize("name", sorted(GOLDEN_SOURCES))
def test_printed_optimized_backward_is_the_golden_answer(name, capsys, tmp_path):
    src = GOLDEN_SOURCES[name]
    golden = _read(os.path.join(GOLDEN, f"{name}.grad.opt.loop"))
    printed = _cli_grad(src, capsys, tmp_path)
    assert printed == tcc.grad_text(src)
    if name in RECURRENCE_EXAMPLES:     # temporaries that read themselves at other steps
        assert_same(printed, golden)
        return
    assert_same_backward(printed, golden, _source_text(src))


@pytest.mark.parametrize("name", sorted(GOLDEN_SOURCES))
def test_golden_files_are_right(name):
    """Each golden file is a complete program that, run by the interpreter on
    the forward's values, gives the reference gradients."""
    text = _source_text(GOLDEN_SOURCES[name])
    golden = tcc.parse(_read(os.path.join(GOLDEN, f"{name}.grad.opt.loop")))
    analyze(golden)
    info, inputs, fwd, seeds, ref = _reference(text)
    got = api.InterpEngine(info, golden).backward(seeds, inputs, fwd)
    for t in info.differentiable:
        _close(got[t], ref[t], f"golden {name}: {t}.grad")


def test_the_optimized_softmax_is_ttic_problem_3():
    printed = tcc.grad_text(example_path("ttic_softmax"))
    assert_same_backward(printed, """\
for b, j: e[b] += p.grad[b, j] * p[b, j]
for b, j: s.grad[b, j] += p[b, j] * (p.grad[b, j] - e[b])
""", _read(example_path("ttic_softmax")))
    # ... and differs from the unoptimized course answer (problem 2)
    raw = tcc.grad_text(example_path("ttic_softmax"), optimize=False)
    assert normal_form(raw) != normal_form(printed)
    assert normal_form(raw) == normal_form(os.path.join(GOLDEN, "ttic_softmax.grad.loop"))


def _exp_log_div(program_text: str) -> list[str]:
    """exp and log calls and divisions (other than by a dim: 1/B) in a program."""
    bad = []
    for s in tcc.parse(program_text).stmts:
        for e in walk(s.expr):
            if isinstance(e, Call) and e.fn in ("exp", "log"):
                bad.append(f"{e.fn} in: {s}")
            if isinstance(e, Bin) and e.op == "/" and not isinstance(e.rhs, DimVal):
                bad.append(f"division in: {s}")
    return bad


@pytest.mark.parametrize("src", [example_path("softmax_xent"), WXENT, MLP_XENT, MLP_MEAN_XENT,
                                 XENT_MINUS_EQ],
                         ids=["softmax_xent", "softmax_wxent", "mlp_xent", "mlp_mean_xent",
                              "xent_minus_eq"])
def test_softmax_xent_backward_has_no_exp_log_or_division(src):
    """Printed and compiled: the fused backward reads p, the label and L.grad."""
    printed = tcc.grad_text(src)
    assert _exp_log_div(printed) == [], printed
    text = _source_text(src)
    p = Pipeline(text, None, True)
    assert "softmax-xent" in [rw.name for rw in p.log.rewrites]
    assert _exp_log_div(str(p.backward)) == [], str(p.backward)


def test_the_mlp_xent_backward_is_p_minus_onehot_then_the_linear_layer():
    assert_same_backward(tcc.grad_text(MLP_XENT), """\
for b, k: s.grad[b, k] += L.grad * p[b, k]
for b: s.grad[b, y[b]] -= L.grad
for b, k: c.grad[k] += 1/B * s.grad[b, k]
for b, k, d: W.grad[k, d] += 1/B * s.grad[b, k] * x[b, d]
""", MLP_XENT)


def test_the_weighted_cross_entropy_form_of_section_3():
    printed = tcc.grad_text(WXENT)
    assert_same_backward(printed, """\
for b, k: ys[b] += Y[b, k]
for b, k: s.grad[b, k] += L.grad[b] * (ys[b] * p[b, k] - Y[b, k])
""", WXENT)
    # rows that do not sum to 1: the ys factor matters
    rng = np.random.default_rng(5)
    s = rng.standard_normal((3, 4))
    Y = rng.uniform(0, 2, (3, 4))
    Lg = rng.standard_normal(3)
    for backend in BACKENDS:
        k = tcc.compile(WXENT, backend=backend)
        fwd = k.forward(s=s, Y=Y)
        g = k.backward({"L": Lg}, s=s, Y=Y, **fwd)["s"]
        p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
        _close(g, Lg[:, None] * (Y.sum(1, keepdims=True) * p - Y), f"wxent {backend}")


@pytest.mark.parametrize("name,expected", [
    ("logistic", "for i: w.grad[i] -= L.grad * (1 - p) * x[i]\n"),
    # y = max(u, 0) > 0 exactly where u > 0: the mask reads the saved output
    ("ttic_relu_unit", "for i: w.grad[i] += y.grad * x[i] * (y > 0)\n"),
])
def test_course_forms_after_optimization(name, expected):
    text = _read(example_path(name))
    assert_same_backward(tcc.grad_text(text), expected, text)


def test_the_ugrnn_linear_backward_is_still_the_course_answer():
    text = _read(example_path("ttic_ugrnn_linear"))
    answer = os.path.join(GOLDEN, "ttic_ugrnn_linear.grad.loop")
    assert_same_backward(tcc.grad_text(text), _read(answer), text)
    assert_same_backward(tcc.grad_text(text, optimize=False), _read(answer), text)


# ================================================================ overflow

ROWS = np.array([[1000.0, 0.0, -1000.0],
                 [1000.0, 1000.0, 1000.0],
                 [-1000.0, -1000.0, -1000.0],
                 [-1000.0, 0.0, 1000.0],
                 [1000.0, 999.0, -1000.0],
                 [0.5, -1.0, 2.0]])
LABELS = np.array([2, 1, 0, 0, 1, 2])       # several at a logit of -1000: p = 0 there


def _stable_softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _stable_lse(s):
    m = s.max(axis=1)
    return m + np.log(np.exp(s - m[:, None]).sum(axis=1))


def _onehot(y, k):
    return np.eye(k)[y]


def _overflow_ttic_softmax(rng):
    s = ROWS
    pg = rng.standard_normal(s.shape)
    p = _stable_softmax(s)
    sg = p * (pg - (pg * p).sum(1, keepdims=True))
    return example_path("ttic_softmax"), {"s": s}, {"p": pg}, {"p": p}, {"s": sg}


def _overflow_softmax_xent(rng, src=None):
    s, y = ROWS, LABELS
    lg = rng.standard_normal(len(s))
    p = _stable_softmax(s)
    L = _stable_lse(s) - s[np.arange(len(s)), y]
    sg = lg[:, None] * (p - _onehot(y, s.shape[1]))
    return src or example_path("softmax_xent"), {"s": s, "y": y}, {"L": lg}, {"L": L}, {"s": sg}


def _overflow_lse(rng):
    s = ROWS
    lg = rng.standard_normal(len(s))
    return LSE, {"s": s}, {"L": lg}, {"L": _stable_lse(s)}, \
        {"s": lg[:, None] * _stable_softmax(s)}


def _overflow_wxent(rng):
    s = ROWS
    Y = rng.uniform(0, 2, s.shape)
    lg = rng.standard_normal(len(s))
    p = _stable_softmax(s)
    logp = s - _stable_lse(s)[:, None]
    L = -(Y * logp).sum(1)
    sg = lg[:, None] * (Y.sum(1, keepdims=True) * p - Y)
    return WXENT, {"s": s, "Y": Y}, {"L": lg}, {"L": L}, {"s": sg}


def _overflow_mlp(rng, mean=False):
    B, K = ROWS.shape
    x = ROWS / 1000.0                          # with W = 1000 I: logits of +-1000
    W = 1000.0 * np.eye(K)
    c = np.array([0.5, -0.25, 0.0])
    y = LABELS
    lg = np.array(rng.standard_normal())
    s = x @ W.T + c
    p = _stable_softmax(s)
    scale = 1.0 / B if mean else 1.0
    L = scale * np.sum(_stable_lse(s) - s[np.arange(B), y])
    sg = scale * lg * (p - _onehot(y, K))
    grads = {"W": sg.T @ x / B, "c": sg.sum(0) / B}
    return (MLP_MEAN_XENT if mean else MLP_XENT), {"W": W, "c": c, "x": x, "y": y}, \
        {"L": lg}, {"L": L}, grads


OVERFLOW = {
    "ttic_softmax": _overflow_ttic_softmax,
    "softmax_xent": _overflow_softmax_xent,
    "logsumexp": _overflow_lse,
    "mlp_xent": _overflow_mlp,
    "softmax_wxent": _overflow_wxent,
    "mlp_mean_xent": functools.partial(_overflow_mlp, mean=True),
    "xent_minus_eq": functools.partial(_overflow_softmax_xent, src=XENT_MINUS_EQ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OVERFLOW))
def test_logits_of_plus_and_minus_1000_give_finite_right_answers(name, backend):
    src, inputs, seeds, want_out, want_grads = OVERFLOW[name](np.random.default_rng(0))
    assert np.max(np.abs(ROWS)) == 1000.0 > np.log(np.finfo(float).max)   # exp overflows
    k = tcc.compile(src, backend=backend)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        fwd = k.forward(**inputs)
        grads = k.backward(seeds, **inputs, **fwd)
    bad = [f"output {o} = {fwd[o]!r}" for o in want_out if not np.all(np.isfinite(fwd[o]))]
    bad += [f"{t}.grad = {grads[t]!r}" for t in want_grads if not np.all(np.isfinite(grads[t]))]
    if bad:
        pytest.fail(f"{name} [{backend}]: not finite:\n" + "\n".join(bad), pytrace=False)
    for o, want in want_out.items():
        _close(fwd[o], want, f"{name} [{backend}]: output {o}")
    for t, want in want_grads.items():
        _close(grads[t], want, f"{name} [{backend}]: {t}.grad")


def test_the_stable_forward_subtracts_the_maximum():
    for src in (example_path("ttic_softmax"), example_path("softmax_xent"), LSE, MLP_XENT):
        p = Pipeline(_source_text(src), None, True)
        assert "stable" in [rw.name for rw in p.log.rewrites]
        assert any(s.op == "max=" for s in p.info.program.stmts), str(p.info.program)


# ================================================================= fusions

@pytest.mark.parametrize("ident,rewrite,text,expected", FUSIONS, ids=[f[0] for f in FUSIONS])
def test_fusions_fire_whatever_the_names_and_layout(ident, rewrite, text, expected):
    p = Pipeline(text, None, True)
    names = [rw.name for rw in p.log.rewrites]
    assert rewrite in names, f"{ident}: only {names} fired"
    if rewrite == "softmax-xent":
        assert "softmax" not in names          # the specific fusion wins
    if rewrite == "stable":
        assert any(s.op == "max=" for s in p.info.program.stmts), str(p.info.program)
    else:
        assert "stable" in names
    printed = tcc.grad_text(text)
    assert_same_backward(printed, expected, text)
    if rewrite == "softmax-xent":
        assert _exp_log_div(printed) == [], printed


# ================================================================ verified

@pytest.mark.parametrize("item", ALL, ids=ALL_IDS)
def test_every_rewrite_that_fires_is_verified(item):
    name, text, _ = item
    p = Pipeline(text, None, True)
    problems = []
    for n, rw in enumerate(p.log.rewrites, 1):
        label = f"{name}: rewrite {n} [{rw.name}, {rw.stage}]"
        if rw.program_before is None or rw.program_after is None:
            problems.append(f"{label} has no before/after programs to verify")
            continue
        for seed in (0, 1):
            d = verify(p, rw, seed=seed)
            if not d <= 1e-9:
                problems.append(f"{label}: max difference {d:.2e} (seed {seed})")
    assert not problems, "\n".join(problems)


def test_the_rewrites_seen_include_every_kind():
    seen = set()
    for _, text, _ in ALL:
        seen.update(_rewrite_names(text))
    assert {"reuse", "softmax", "softmax-xent", "inline", "merge", "order",
            "stable"} <= seen, seen


EXPLAIN_FILES = [example_path(n) for n in COURSE_EXAMPLES]


def _explain_programs(tmp_path):
    paths = list(EXPLAIN_FILES)
    for name, text in (("chain4", CHAIN4), ("logsumexp", LSE), ("mlp_xent", MLP_XENT),
                       ("softmax_wxent", WXENT)):
        f = tmp_path / f"{name}.loop"
        f.write_text(text, encoding="utf-8")
        paths.append(str(f))
    return paths


ROW = re.compile(r"^  (forward|backward), (unoptimized|optimized)\s+([\d.]+) ([kMG]?)flop"
                 r"\s+([\d.]+) (B|KiB|MiB|GiB)\s+([\d.]+|n/a)$", re.M)


def test_cli_explain_verify_verifies_every_rewrite(tmp_path, capsys):
    problems = []
    for path in _explain_programs(tmp_path):
        capsys.readouterr()
        rc = main(["explain", path, "--verify"])
        out = capsys.readouterr().out
        name = os.path.basename(path)
        fired = re.search(r"Rewrites that fired \((\d+)\)", out)
        n = int(fired.group(1)) if fired else 0
        if not fired:
            assert "No rewrite fired" in out
        verified = re.findall(r"verified on random data: max difference (\S+)", out)
        if rc != 0:
            problems.append(f"{name}: exit status {rc}")
        if len(verified) != n:
            problems.append(f"{name}: {n} rewrites fired, {len(verified)} verified:\n{out}")
        if "DISAGREE" in out or any(float(d) > 1e-9 for d in verified):
            problems.append(f"{name}: a rewrite disagrees:\n{out}")
    assert not problems, "\n".join(problems)


def test_explain_without_verify_does_not_verify(capsys):
    assert main(["explain", example_path("ttic_softmax")]) == 0
    out = capsys.readouterr().out
    assert "[softmax, backward]" in out and "[stable, forward]" in out
    assert "verified" not in out


def test_explain_shows_cost_before_and_after(tmp_path):
    for path in _explain_programs(tmp_path):
        text, ok = explain(path)
        assert ok
        rows = {(m.group(1), m.group(2)) for m in ROW.finditer(text)}
        assert rows == {("forward", "unoptimized"), ("forward", "optimized"),
                        ("backward", "unoptimized"), ("backward", "optimized")}, text
        assert "Estimated cost (" in text


def test_the_softmax_fusion_makes_the_backward_cheaper():
    text, _ = explain(example_path("ttic_softmax"))
    rows = {(m.group(1), m.group(2)): float(m.group(3)) * {"": 1, "k": 1e3, "M": 1e6,
                                                            "G": 1e9}[m.group(4)]
            for m in ROW.finditer(text)}
    assert rows["backward", "optimized"] < rows["backward", "unoptimized"]


# ================================================================== chains

def test_a_chain_of_four_matrices_is_contracted_pairwise():
    p = Pipeline(CHAIN4, None, True)
    order = [rw for rw in p.log.rewrites if rw.name == "order"]
    assert len(order) == 1 and order[0].stage == "forward"
    fwd = p.info.program.stmts
    assert len(fwd) == 3
    for s in fwd:                                   # pairwise, three loops each
        assert len(reads(s.expr)) == 2 and len(s.loops) == 3, str(s)
    temps = sorted({s.target.tensor for s in fwd} - {"Y"})
    assert len(temps) == 2
    # the backward reads the forward's pairwise products rather than
    # recomputing three-matrix products, and never loops over all five indices
    back = p.backward.stmts
    read = {r.tensor for s in back for r in reads(s.expr)}
    assert set(temps) <= read, str(p.backward)
    assert set(temps) <= set(p.saved)
    for s in back:
        assert len(s.loops) <= 3 and len(reads(s.expr)) <= 2, str(s)
    k = tcc.compile(CHAIN4)
    assert all(t in k.forward(**{t: np.ones((2, 2)) for t in ("A", "Bm", "C", "D")})
               for t in temps)


def test_the_chain_backward_costs_less_than_the_raw_one():
    opt = Pipeline(CHAIN4, None, True)
    raw = Pipeline(CHAIN4, None, False)
    sizes = nominal_sizes(opt.original)
    f_opt, _ = cost(opt.binfo, sizes)
    f_raw, _ = cost(raw.binfo, sizes)
    assert f_opt < f_raw


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_chain_computes_the_matrix_product(backend):
    rng = np.random.default_rng(3)
    A, Bm, C, D = (rng.standard_normal(s) for s in ((2, 3), (3, 4), (4, 5), (5, 6)))
    k = tcc.compile(CHAIN4, backend=backend)
    fwd = k.forward(A=A, Bm=Bm, C=C, D=D)
    _close(fwd["Y"], A @ Bm @ C @ D, "Y")
    G = rng.standard_normal((2, 6))
    g = k.backward({"Y": G}, A=A, Bm=Bm, C=C, D=D, **fwd)
    _close(g["A"], G @ (Bm @ C @ D).T, "A.grad")
    _close(g["Bm"], A.T @ G @ (C @ D).T, "Bm.grad")
    _close(g["C"], (A @ Bm).T @ G @ D.T, "C.grad")
    _close(g["D"], (A @ Bm @ C).T @ G, "D.grad")


# ====================================================== exact where it compares

TIE_REUSE = """\
param W1[2, B]
h4[j] max= W1[j, i] * W1[0, k]
h9[i, j] += 3 * W1[i, j]
"""


def test_a_tie_test_compares_what_the_forward_computed():
    """Reuse once rewrote W1 as h9 / 3 inside max='s tie test: not bitwise the
    forward's product, so no position tied, the count was 0 and W1.grad nan
    (found by the long property profile)."""
    report = api.check(TIE_REUSE, sizes={"B": 1})
    assert report.ok, report.format()
    printed = tcc.grad_text(TIE_REUSE)
    ties = [n for s in tcc.parse(printed).stmts for n in walk(s.expr)
            if isinstance(n, Bin) and n.op == "=="]
    assert ties and all(str(t) == "(W1[j, i] * W1[0, k] == h4[j])" for t in ties), printed
    # the other factors read the input itself, never an inverse of a derived tensor
    assert "h9[" not in printed, printed


def test_reuse_never_divides_by_a_factor_it_does_not_have():
    """h8[i, j] = h7[i] * h7[j] at i = j is h7[j] ** 2: reuse once read h8 for
    the lone h7[j] of h8.grad[i, j] * h7[j], leaving h8[j, j] / h7[j], and
    W2.grad was nan where h7 is 0 (its padded first row; found by the long
    property profile)."""
    text = ("input x1\nparam W2[L]\nfor i in L: h7[i] += W2[i - 1]\n"
            "h8[i, j] += h7[i] * h7[j]\nh10[i] += x1 + W2[i]\n")
    printed = tcc.grad_text(text)
    assert "/ h7" not in printed and "h8[j, j]" not in printed, printed
    report = api.check(text, sizes={"L": 4})
    assert report.ok, report.format()


def test_cost_of_a_term_broadcast_over_a_target_index(tmp_path):
    # h3.grad[j] += h6.grad[i] * h3[i - 1]: no operand has j (it broadcasts);
    # the estimate once failed with opt_einsum's "Output character did not appear"
    path = tmp_path / "broadcast.loop"
    path.write_text("input x1\nh3[1] max= x1\nfor i in 2, j: h6[i] += h3[i - 1] * h3[j]\n")
    text, _ = explain(str(path))
    assert "not estimated" not in text and "backward, optimized" in text, text


def test_reuse_replaces_a_recomputation_not_an_input():
    """A definition that is a bare read times a number saves nothing: reading
    x back as t / 3 would only add a rounding."""
    text = """\
input x[N]
output y, t[N]
for i: t[i] = 3 * x[i]
for i: y += x[i] * x[i] * x[i]
"""
    printed = tcc.grad_text(text)
    assert "t[i]" not in printed and "data t[" not in printed, printed


def test_a_fixed_point_cap_is_logged_and_explained(monkeypatch):
    """The backward clean-up stops at MAX_ROUNDS rounds, and says so."""
    import importlib
    opt = importlib.import_module("tcc.optimize")   # (tcc.optimize is the function)
    monkeypatch.setattr(opt, "MAX_ROUNDS", 1)
    path = example_path("ttic_softmax")
    names = [rw.name for rw in Pipeline(_read(path), None, True).log.rewrites]
    assert "cap" in names, names
    out, ok = explain(path, verify_rewrites=True)
    assert ok and "[cap, backward] stopped after 1 rounds" in out, out


BIAS_TWICE = """\
param c[J]
input x[B, J]
for b, j: a[b, j] += x[b, j] - c[j]
for b, j: y[b, j] += a[b, j] * a[b, j] - c[j]
"""


def test_negative_terms_print_as_minus_equals_and_equal_terms_fold():
    # Issue 13: the merged bias gradient printed `+= -(1 / B * ...) - 1 / B * ...`
    # and the square's gradient `y.grad * a + y.grad * a`.
    text = tcc.grad_text(BIAS_TWICE)
    assert "c.grad[j] -= 1 / B * y.grad[b, j] + 1 / B * a.grad[b, j]" in text
    assert "a.grad[b, j] += 2 * y.grad[b, j] * a[b, j]" in text
    assert "+= -" not in text
    # and the folded program still computes the gradient
    assert api.check(BIAS_TWICE, sizes={"B": 3, "J": 4}).ok


@pytest.mark.parametrize("expr, expected", [
    ("x[i] + x[i]", "2 * x[i]"),
    ("x[i] - x[i] + y[i]", "y[i]"),
    ("-x[i] - y[i]", "-(x[i] + y[i])"),
    ("-x[i] + y[i]", "y[i] - x[i]"),
    ("2 * x[i] * y[i] - y[i] * x[i]", "x[i] * y[i]"),
    ("1 + x[i] - 1", "x[i]"),
])
def test_sums_simplify_term_by_term(expr, expected):
    from tcc import algebra
    from tcc.parse import parse
    stmt = parse(f"input x[I], y[I]\nfor i: z[i] += {expr}\n").stmts[0]
    assert str(algebra.simplify(stmt.expr)) == expected


def test_reuse_note_names_the_tensor_read_more_often():
    """A reuse that only raises a power of a tensor already read
    (rs[b] ** 2 / sqrt(v) -> rs[b] ** 3) still names that tensor."""
    from pathlib import Path

    from tcc.explain import explain
    text, _ = explain(Path(__file__).parent.parent / "benchmarks" / "programs" /
                      "layernorm.loop")
    notes = [line for line in text.splitlines() if "[reuse," in line]
    assert notes and all("] rs already holds this value" in line for line in notes), notes
