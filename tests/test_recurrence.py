"""Recurrences (issue 11, LANGUAGE.md "Recurrences"): the front end finds them
and infers their direction, the reference interpreter runs them step by step
(checked here against hand-written NumPy), the backward is backpropagation
through time (finite differences for T = 1, 2, 7; golden printed backwards),
the printed backward runs, and the compiled modules (both backends, optimized
or not) agree with the interpreter with only the cycle in a Python loop."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from catalogue import INTERP_ONLY, RECURRENCE_EXAMPLES, example_path  # noqa: E402
from normal_form import assert_same  # noqa: E402

import tcc  # noqa: E402
from tcc import api, gradcheck, interp  # noqa: E402
from tcc.autodiff import differentiate  # noqa: E402
from tcc.check import analyze, describe  # noqa: E402
from tcc.errors import TccError  # noqa: E402
from tcc.ir import py_name  # noqa: E402

GOLDEN = os.path.join(HERE, "data", "golden")
COMPILED = [n for n in RECURRENCE_EXAMPLES if n not in INTERP_ONLY]

REVERSE_RNN = """
input  x[T, B, D]
param  W[S, D], U[S, S]
output h[T, B, S]
for t, b, s, d: a[t, b, s] += W[s, d] * x[t, b, d]
for t, b, s, r: a[t, b, s] += U[s, r] * h[t + 1, b, r]
for t, b, s:    h[t, b, s] = tanh(a[t, b, s])
"""

# a given starting state, a distance-2 read, a loss after the recurrence, no
# declared output (h is read only by its own recurrence and by L)
STARTED = """
input  x[T, B, S], h0[B, S]
param  U[S, S], V[S, S]
for t, b, s:    a[t, b, s] += x[t, b, s]
for b, s, r:    a[0, b, s] += U[s, r] * h0[b, r]
for t, b, s, r: a[t, b, s] += U[s, r] * h[t - 1, b, r] + V[s, r] * h[t - 2, b, r]
for t, b, s:    h[t, b, s] = tanh(a[t, b, s])
for t, b, s:    L += h[t, b, s] ** 2
"""

# one statement reading its own target at the previous step: a running sum
CUMSUM = """
input x[T, B]
output c[T, B]
for t, b: c[t, b] += x[t, b] + 0.5 * c[t - 1, b]
"""

# an update at the next step, read at the current one (d = 0, update earlier)
NEXT_STEP = """
input x[T, B], w[B]
output h[T, B]
for t, b: h[t, b] = tanh(x[t, b] + g[t, b])
for t, b: g[t + 1, b] += w[b] * h[t, b]
"""

# attention over a step's keys with the query from the previous state, and a
# max= inside the recurrence (the stable softmax, written out)
ATTENTION = """
input  x[T, B, J, S]
param  Q[S, S]
output h[T, B, S]
for t, b, s, r: q[t, b, s] += Q[s, r] * h[t - 1, b, r]
for t, b, j, s: w[t, b, j] += q[t, b, s] * x[t, b, j, s]
for t, b, j:    m[t, b] max= w[t, b, j]
for t, b, j:    e[t, b, j] = exp(w[t, b, j] - m[t, b])
for t, b, j:    Z[t, b] += e[t, b, j]
for t, b, j, s: h[t, b, s] += e[t, b, j] / Z[t, b] * x[t, b, j, s]
"""

PROGRAMS = {"reverse_rnn": REVERSE_RNN, "started": STARTED, "cumsum": CUMSUM,
            "next_step": NEXT_STEP, "attention": ATTENTION}


def _text(name: str) -> str:
    if name in PROGRAMS:
        return PROGRAMS[name]
    with open(example_path(name), encoding="utf-8") as f:
        return f.read()


def _sizes(name: str, T: int) -> dict:
    info = analyze(tcc.parse(_text(name)))
    return gradcheck.choose_sizes(info, {"T": T})


# ------------------------------------------------------------------ front end

def test_parse_marks_the_recurrence_index_and_direction():
    text = describe(analyze(tcc.parse(_text("rnn_elman"))))
    lines = text.splitlines()
    assert "# recurrence over t, ascending: the statements marked '# <- t'" in lines
    marked = [line for line in lines if line.endswith("# <- t")]
    assert marked == ["for t, b, s, r: a[t, b, s] += U[s, r] * h[t - 1, b, r]  # <- t",
                      "for t, b, s: h[t, b, s] = tanh(a[t, b, s])  # <- t"]
    back = describe(analyze(differentiate(analyze(tcc.parse(_text("rnn_elman"))))))
    assert "# recurrence over t, descending" in back


@pytest.mark.parametrize("name,direction,stmts", [
    ("rnn_elman", 1, (1, 2)), ("reverse_rnn", -1, (1, 2)), ("cumsum", 1, (0,)),
    ("next_step", 1, (0, 1)), ("started", 1, (2, 3)),
])
def test_recurrences_and_their_direction(name, direction, stmts):
    info = analyze(tcc.parse(_text(name)))
    (rec,) = info.recurrences
    assert rec.direction == direction and rec.stmts == stmts


def test_off_cycle_statements_run_before_and_after():
    info = analyze(tcc.parse(STARTED))
    # both updates of a over all steps first, then the recurrence, then the loss
    assert info.schedule == [(0,), (1,), (2, 3), (4,)]
    # a read at an earlier step of the tensor's own recurrence does not make it
    # an intermediate: h is read by L, so L alone is the output
    assert info.outputs == ["L"]
    assert analyze(tcc.parse(CUMSUM)).outputs == ["c"]


def test_backward_is_a_descending_recurrence_with_the_parameter_sums_outside():
    binfo = analyze(differentiate(analyze(tcc.parse(_text("rnn_elman")))))
    (rec,) = binfo.recurrences
    assert not rec.ascending
    on_cycle = {binfo.stmts[k].stmt.target.tensor for k in rec.stmts}
    assert on_cycle == {"a.grad", "h.grad"}
    outside = [si.stmt for k, si in enumerate(binfo.stmts) if k not in rec.stmts]
    u = next(s for s in outside if s.target.tensor == "U.grad")
    assert u.written == (("t", "T"),)        # reads h[t - 1], data: its range is written


# ------------------------------------------------------------------ interpreter

def _elman(x, W, U, reverse=False):
    T, B, _ = x.shape
    h = np.zeros((B, W.shape[0]))
    out = np.zeros((T, B, W.shape[0]))
    for t in (reversed(range(T)) if reverse else range(T)):
        h = np.tanh(x[t] @ W.T + h @ U.T)
        out[t] = h
    return out


@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("name,reverse", [("rnn_elman", False), ("reverse_rnn", True)])
def test_interpreter_runs_the_rnn_step_by_step(name, reverse, T):
    rng = np.random.default_rng(T)
    x, W, U = rng.normal(size=(T, 3, 4)), rng.normal(size=(5, 4)), 0.5 * rng.normal(size=(5, 5))
    got = interp.run(analyze(tcc.parse(_text(name))), {"x": x, "W": W, "U": U})
    np.testing.assert_allclose(got["h"], _elman(x, W, U, reverse), rtol=1e-12, atol=1e-12)


def test_interpreter_starting_state_distance_two_and_seed_plus_flow():
    rng = np.random.default_rng(0)
    T, B, S = 5, 2, 3
    x, h0 = rng.normal(size=(T, B, S)), rng.normal(size=(B, S))
    U, V = 0.5 * rng.normal(size=(S, S)), 0.5 * rng.normal(size=(S, S))
    got = interp.run(analyze(tcc.parse(STARTED)), {"x": x, "h0": h0, "U": U, "V": V})
    hs = [np.zeros((B, S)), np.zeros((B, S))]
    for t in range(T):
        a = x[t] + hs[-1] @ U.T + hs[-2] @ V.T + (h0 @ U.T if t == 0 else 0)
        hs.append(np.tanh(a))
    np.testing.assert_allclose(got["h"], np.array(hs[2:]), rtol=1e-12)
    np.testing.assert_allclose(got["L"], np.sum(np.array(hs[2:]) ** 2), rtol=1e-12)
    # the next-step form: g[t + 1] is written at step t and dropped at t = T - 1
    x, w = rng.normal(size=(4, 2)), rng.normal(size=2)
    got = interp.run(analyze(tcc.parse(NEXT_STEP)), {"x": x, "w": w})
    h, g = np.zeros((4, 2)), np.zeros(2)
    for t in range(4):
        h[t] = np.tanh(x[t] + g)
        g = w * h[t]
    np.testing.assert_allclose(got["h"], h, rtol=1e-12)


# ------------------------------------------------------------------ gradients

ALL_PROGRAMS = [*RECURRENCE_EXAMPLES, *PROGRAMS]


@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("name", ALL_PROGRAMS)
def test_finite_differences_through_time(name, T):
    engine = "interp" if name in INTERP_ONLY else "compiled"
    sizes = {d: (T if d == "T" else 2 + (d == "B")) for d in _sizes(name, T)}
    report = api.check(_text(name), sizes=sizes, engine=engine,
                       seeds=1 if engine == "interp" else 2)
    assert report.ok, report
    if engine == "compiled" and T < 7:      # and the reference interpreter's backward
        report = api.check(_text(name), sizes=sizes, engine="interp", seeds=1)
        assert report.ok, report


def test_the_elman_backward_is_the_course_answer():
    assert_same(api.grad_text(example_path("rnn_elman")),
                os.path.join(GOLDEN, "rnn_elman.grad.loop"))


@pytest.mark.parametrize("name", [n for n in RECURRENCE_EXAMPLES if n != "rnn_elman"])
def test_printed_backward_golden(name):
    assert_same(api.grad_text(example_path(name)),
                os.path.join(GOLDEN, f"{name}.grad.opt.loop"))


def test_softmax_inside_attention_over_steps_is_still_fused():
    printed = api.grad_text(example_path("nyu_attention_rnn2"))
    assert "e[t, b] += a.grad[t, b, i] * a[t, b, i]" in printed
    assert "w.grad[t, b, i] += a[t, b, i] * (a.grad[t, b, i] - e[t, b])" in printed


def _reference(name: str, T: int = 3, seed: int = 0):
    """(info, inputs, forward values, seeds, gradients) by the interpreter."""
    info = analyze(tcc.parse(_text(name)))
    inputs = gradcheck.random_inputs(info, _sizes(name, T), seed)
    values = interp.run(info, inputs)
    seeds = gradcheck.random_seeds(info, values, seed)
    grads = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, values)
    return info, inputs, values, seeds, grads


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("name", ALL_PROGRAMS)
def test_printed_backward_runs_through_the_interpreter(name, optimize):
    info, inputs, values, seeds, want = _reference(name)
    p = tcc.pipeline.Pipeline(_text(name), None, optimize)
    saved = interp.run(p.info, inputs)
    printed = tcc.parse(api.grad_text(_text(name), optimize=optimize))
    got = api.InterpEngine(p.info, printed).backward(seeds, inputs, saved)
    for t in info.differentiable:
        np.testing.assert_allclose(got[t], want[t], rtol=1e-9, atol=1e-12, err_msg=t)


# ------------------------------------------------------------------ compiled

@pytest.mark.parametrize("backend", ["numpy", "opt_einsum"])
@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("name", [*COMPILED, *PROGRAMS])
def test_compiled_forward_and_backward_agree_with_the_interpreter(name, optimize, backend):
    info, inputs, values, seeds, want = _reference(name)
    k = tcc.compile(_text(name), backend=backend, optimize=optimize)
    fwd = k.forward(**{py_name(t): a for t, a in inputs.items()})
    for o in info.outputs:
        np.testing.assert_allclose(fwd[py_name(o)], values[o], rtol=1e-10, atol=1e-12)
    got = k.backward(seeds, **inputs, **fwd)
    for t in info.differentiable:
        np.testing.assert_allclose(got[t], want[t], rtol=1e-9, atol=1e-12, err_msg=t)
    # the printed backward, compiled as a program of its own, gives the same
    printed = api.grad_text(_text(name), optimize=optimize)
    kb = tcc.compile(printed, backend=backend, optimize=False)
    data = {}
    for d in tcc.parse(printed).decls:
        if d.role != "data":
            continue
        if d.name.endswith(".grad"):
            data[py_name(d.name)] = np.asarray(seeds[d.name[:-5]], dtype=np.float64)
        else:
            data[py_name(d.name)] = inputs[d.name] if d.name in inputs else fwd[py_name(d.name)]
    out = kb.forward(**data)
    for t in info.differentiable:
        np.testing.assert_allclose(out[py_name(t) + "_grad"], want[t], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", COMPILED)
def test_only_the_cycle_runs_in_a_python_loop(name):
    """The hoisted products (W x[t] for every t, the parameter gradients over t
    and b, x.grad) stand outside the step loop; each step is BLAS."""
    from tcc.backends.target import For, Update, walk
    from tcc.compiler import _function_body
    from tcc.backends.operands import Names
    p = tcc.pipeline.Pipeline(_text(name), None, True)
    for info in (p.info, p.binfo):
        names = Names(dict.fromkeys([*info.roles, *info.dims]))
        from tcc.backends import get
        lines, _ = _function_body(info, names, get("numpy").printer())
        text = "\n".join(lines)
        loop_at = next(i for i, line in enumerate(lines) if line.startswith("for "))
        inside = [line for line in lines[loop_at + 1:] if line.startswith("    ")]
        (rec,) = info.recurrences
        # every statement quoted inside the loop is on the cycle
        quoted = [line.strip()[2:] for line in inside if line.strip().startswith("# for")]
        cycle = {str(info.stmts[k].stmt) for k in rec.stmts}
        assert quoted and set(quoted) <= cycle, text
        # one loop over the steps; any other is a tap loop over a window index
        # (AttentionRNN(infinity)'s Q.grad[i] sums v.grad[t, b, i] * h[t - i - 1]
        # over t and b: one matrix product per slot i, after the step loop)
        loops = [k for k, line in enumerate(lines) if line.startswith("for ")]
        steps = {rec.step_of(k) for k in rec.stmts}
        assert [lines[k] for k in loops if lines[k].split()[1].split("__")[0] in steps] == \
            [lines[loop_at]], text
        for k in loops[1:]:
            assert any(line.startswith("# (tap by tap over") for line in lines[k - 3:k]), text
        assert "concatenate" not in text and "stack" not in text
        assert For and Update and walk


def test_elman_module_shape():
    src = tcc.compile_source(example_path("rnn_elman"))
    fwd = src[src.index("def forward"):src.index("def backward")]
    assert "a = x @ W.T" in fwd                               # W x[t] for every t, once
    assert "for t in range(T):" in fwd
    assert "h__pad[t] @ U.T" in fwd                           # one BLAS product per step
    bwd = src[src.index("def backward"):src.index("def random_inputs")]
    assert "for t__step in range(T):" in bwd and "t = T - 1 - t__step" in bwd
    lines = bwd[bwd.index("for t__step"):].splitlines()[1:]
    body = "\n".join(line for line in lines[:next(
        k for k, line in enumerate(lines) if not line.startswith("        "))])
    assert "a_grad[t, :, :] = h_grad[t] * (1 - h[t] ** 2)" in body
    # the update at t - 1 runs where it lands inside (the seed is copied once)
    assert "if t >= 1:" in body and "h_grad[-1 + t, :, :] += a_grad[t] @ U" in body
    assert "h_grad = np.array(h_grad, dtype=dt)" in bwd
    assert "W_grad" not in body and "U_grad" not in body and "x_grad" not in body
    # the parameter gradients summed over t and b: one product each, on views
    assert "np.tensordot(a_grad, x, axes=((0, 1), (0, 1)))" in bwd
    assert "a_grad[1:1 + T__in" in bwd and "h[0:0 + T__in" in bwd


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("text,needle", [
    ("input x[T, B]\nfor t, b: h[t, b] += x[t, b] + h[t, b]\n",
     "to read an earlier step, write h[t - 1, b]"),
    ("input x[T, B]\nfor t, b: h[t, b] = x[t, b] + g[t, b]\nfor t, b: g[t, b] += h[t - 1, b]\n",
     "same step is read only after its update"),
])
def test_error_hints_name_the_rule(text, needle):
    with pytest.raises(TccError) as err:
        analyze(tcc.parse(text))
    assert needle in str(err.value)
