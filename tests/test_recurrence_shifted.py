"""A recurrence whose step is shifted by another loop index (issue 11, last
part): AttentionRNN(infinity) reads ``h[t - 1 - i]`` for every earlier step,
and its backward gathers ``v.grad[t + 1 + i]``. The compiled backends (numpy,
opt_einsum, torch; optimized or not) against the reference interpreter,
forward and backward, for T = 1, 2, 5 and several sizes (each step runs over
the live slots only, where that adds the same); the interpreter
against a hand-written NumPy AttentionRNN(infinity); the backends' gradients
against finite differences; the same forms downwards, and off the cycle (a
loss reading h[t - 1 - i] after the recurrence); the form that stays refused.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from catalogue import example_path  # noqa: E402

import tcc  # noqa: E402
from tcc import api, gradcheck, interp  # noqa: E402
from tcc.autodiff import differentiate  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.ir import py_name  # noqa: E402

ROOT = os.path.dirname(HERE)
ATTENTION_INF = open(example_path("nyu_attention_rnn_inf"), encoding="utf-8").read()

# downwards: each step reads every later state, h[t + 1 + i] (zero past the end)
LATER_STATES = """
input  x[T, B, S]
param  U[T, S, S]
output h[T, B, S]
for t, b, s:    a[t, b, s] += x[t, b, s]
for t, i in T, b, s, r: a[t, b, s] += U[i, s, r] * h[t + 1 + i, b, r]
for t, b, s:    h[t, b, s] = tanh(a[t, b, s])
"""

# a loss after the recurrence reads h[t - 1 - i]: off the cycle, over all steps
# at once (its backward scatters into h.grad[t - i - 1] before the recurrence)
LOSS_AFTER = """
input  x[T, B, S], y[T, B, S]
param  U[S, S], P[T, S]
output L
for t, b, s:    a[t, b, s] += x[t, b, s]
for t, b, s, r: a[t, b, s] += U[s, r] * h[t - 1, b, r]
for t, b, s:    h[t, b, s] = tanh(a[t, b, s])
for t, i in T, b, s: L += P[i, s] * h[t - 1 - i, b, s] * y[t, b, s]
"""

# the shifted read under exp: exp(0) = 1 at the steps before the first, so every
# i adds to the sum (the statement keeps its whole range of i)
EXP_OF_SHIFTED = """
input  x[T, B, S]
param  U[T, S]
output h[T, B, S]
for t, b, s:    a[t, b, s] += x[t, b, s]
for t, i in T, b, s: a[t, b, s] += U[i, s] * exp(0.5 * h[t - 1 - i, b, s])
for t, b, s:    h[t, b, s] = tanh(a[t, b, s])
"""

# AttentionRNN(3) in the same notation: a written range of 3 slots, shorter or
# longer than the steps (the live slots stop at 3)
ATTENTION_3 = ATTENTION_INF.replace("Q[T, S, S], K[T, S, S], V[T, S, S]",
                                    "Q[3, S, S], K[3, S, S], V[3, S, S]").replace(
                                        "i in T", "i in 3")

PROGRAMS = {"attention_inf": ATTENTION_INF, "later_states": LATER_STATES,
            "loss_after": LOSS_AFTER, "exp_of_shifted": EXP_OF_SHIFTED,
            "attention_3": ATTENTION_3}
SIZES = [{"B": 1, "D": 2, "S": 3}, {"B": 3, "D": 4, "S": 2}]


def _sizes(text: str, T: int, extra: dict) -> dict:
    info = analyze(tcc.parse(text))
    return {d: (T if d == "T" else extra.get(d, 2))
            for d in gradcheck.choose_sizes(info, {"T": T})}


def _reference(text: str, sizes: dict, seed: int = 0):
    info = analyze(tcc.parse(text))
    inputs = gradcheck.random_inputs(info, sizes, seed)
    values = interp.run(info, inputs)
    seeds = gradcheck.random_seeds(info, values, seed)
    grads = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, values)
    return info, inputs, values, seeds, grads


def _compiled(text: str, backend: str, optimize: bool, inputs: dict, seeds: dict):
    """(forward outputs, gradients) of the compiled module, as NumPy arrays."""
    k = tcc.compile(text, backend=backend, optimize=optimize)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        conv, back = torch.as_tensor, (lambda a: a.detach().numpy())
    else:
        conv, back = (lambda a: a), (lambda a: a)
    kw = {py_name(t): conv(a) for t, a in inputs.items()}
    fwd = k.forward(**kw)
    grads = k.backward({o: conv(g) for o, g in seeds.items()}, **kw, **fwd)
    return {n: back(a) for n, a in fwd.items()}, {n: back(a) for n, a in grads.items()}


# ------------------------------------------------------------------ the oracle

def _attention_inf_numpy(x, Q0, K0, V0, Q, K, V):
    """NYU HW2 1.2.2 with k = infinity, step by step: slot 0 attends to x[t],
    slot i + 1 to h[t - 1 - i] for every earlier step; softargmax over them."""
    T, B, _ = x.shape
    h = np.zeros((T, B, Q0.shape[0]))
    for t in range(T):
        scores = [np.sum((x[t] @ Q0.T) * (x[t] @ K0.T), axis=1)]
        values = [x[t] @ V0.T]
        for i in range(t):
            g = h[t - 1 - i]
            scores.append(np.sum((g @ Q[i].T) * (g @ K[i].T), axis=1))
            values.append(g @ V[i].T)
        w = np.stack(scores, axis=1)
        a = np.exp(w - w.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        h[t] = np.einsum("bi,bis->bs", a, np.stack(values, axis=1))
    return h


@pytest.mark.parametrize("T", [1, 2, 5])
def test_the_interpreter_runs_attention_over_every_earlier_step(T):
    rng = np.random.default_rng(T)
    B, D, S = 3, 4, 2
    arrays = {"x": rng.normal(size=(T, B, D)),
              **{n: 0.5 * rng.normal(size=(S, D)) for n in ("Q0", "K0", "V0")},
              **{n: 0.5 * rng.normal(size=(T, S, S)) for n in ("Q", "K", "V")}}
    got = interp.run(analyze(tcc.parse(ATTENTION_INF)), arrays)
    np.testing.assert_allclose(got["h"], _attention_inf_numpy(**arrays), rtol=1e-12,
                               atol=1e-12)


# ------------------------------------------------------------------ compiled

@pytest.mark.parametrize("backend", ["numpy", "opt_einsum", "torch"])
@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "unoptimized"])
@pytest.mark.parametrize("extra", SIZES, ids=["B1_D2_S3", "B3_D4_S2"])
@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_compiled_agrees_with_the_interpreter(name, T, extra, optimize, backend):
    text = PROGRAMS[name]
    info, inputs, values, seeds, want = _reference(text, _sizes(text, T, extra))
    fwd, got = _compiled(text, backend, optimize, inputs, seeds)
    for o in info.outputs:
        np.testing.assert_allclose(fwd[py_name(o)], values[o], rtol=1e-10, atol=1e-12,
                                   err_msg=o)
    for t in info.differentiable:
        np.testing.assert_allclose(got[t], want[t], rtol=1e-9, atol=1e-12, err_msg=t)


@pytest.mark.parametrize("backend", ["numpy", "opt_einsum", "torch"])
@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "unoptimized"])
@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_compiled_gradients_agree_with_finite_differences(name, T, optimize, backend):
    text = PROGRAMS[name]
    info = analyze(tcc.parse(text))
    inputs = gradcheck.random_inputs(info, _sizes(text, T, {"B": 2, "D": 3, "S": 2}), 1)
    seeds = gradcheck.random_seeds(info, interp.run(info, inputs), 1)
    _, grads = _compiled(text, backend, optimize, inputs, seeds)

    def forward(tensors):
        return interp.run(info, tensors)
    for t, (c, _, note) in gradcheck.check_gradients(info, forward, grads, inputs,
                                                       seeds).items():
        assert c is not None and c.error <= gradcheck.TOLERANCE, (t, c.error, note)


def test_the_step_loop_reads_a_view_of_the_buffer():
    """Each step reads the earlier states as one strided view of the padded
    buffer (no copy, no concatenation), over the live slots only (i < t: the
    others read zero steps and would add 0); the backward gathers the later
    steps' gradients the same way, and the parameter gradients run after the
    loop."""
    src = tcc.compile_source(ATTENTION_INF)
    fwd = src[src.index("def forward"):src.index("def backward")]
    assert "h__pad = np.zeros((T + T, B, S), dtype=dt)" in fwd       # T zero steps before
    assert "i__live = t\n" in fwd and "Q__i__live = Q[:i__live]" in fwd
    assert "_view(h__pad, (-1 + T + t, 0, 0), (i__live, B, S), ((-1, 0, 0)," in fwd
    assert "np.where(np.arange(T) < t," in fwd                        # (i < t) at step t
    bwd = src[src.index("def backward"):src.index("def random_inputs")]
    assert "i__live = T - t - 1\n" in bwd
    assert "_view(v_grad__pad, (1 + t, 0, 0, 0), (i__live, B, S), ((1, 0, 1, 0)," in bwd
    loop = bwd[bwd.index("for t__step"):]
    assert "V_grad" not in loop[:loop.index("\n    # for t in T, i in T")]
    for text in (fwd, bwd):
        assert "concatenate" not in text and "stack" not in text
    # under exp, a zero step adds exp(0): the whole range of i stays
    src = tcc.compile_source(EXP_OF_SHIFTED)
    assert "__live" not in src[src.index("def forward"):src.index("def backward")]
    src = tcc.compile_source(ATTENTION_3)
    assert "if i__live > 3:" in src


# ------------------------------------------------------------------ refused

REFUSED = [
    # the step shifted by two loop indices: the interpreter runs it, the
    # compiled backends refuse it at the read
    ("step_shifted_by_two_indices",
     "input x[T, B, S]\nparam U[S, S]\noutput h[T, B, S]\n"
     "for t, i in 2, j in 2, b, s, r: a[t, b, s] += U[s, r] * h[t - 1 - i - j, b, r]\n"
     "for t, b, s: h[t, b, s] = tanh(a[t, b, s] + x[t, b, s])\n",
     4, 59, ("compiled backends", "plus or minus one more loop index", "t - i - j - 1",
             "engine='interp'")),
]


@pytest.mark.parametrize("name, src, line, col, parts", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_forms_are_positioned_errors(name, src, line, col, parts, tmp_path):
    analyze(tcc.parse(src))                     # the front end accepts it
    for backend in ("numpy", "opt_einsum", "torch"):
        with pytest.raises(tcc.TccError) as err:
            tcc.compile(src, backend=backend)
        assert (err.value.line, err.value.col) == (line, col), err.value.message
        for part in parts:
            assert part in err.value.message
    report = api.check(src, sizes={"T": 4, "B": 2, "S": 2}, engine="interp", seeds=1)
    assert report.ok, report
    path = tmp_path / f"{name}.loop"
    path.write_text(src)
    out = subprocess.run([sys.executable, "-m", "tcc", "compile", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"{path}:{line}:{col}: error: " in out.stderr and "^" in out.stderr
