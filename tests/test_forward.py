"""Forward mode, Hessian-vector products and the diagonal Hessian (issue 14).

* every course example and catalogue program: the printed JVP (``tcc jvp``),
  run by the reference interpreter, agrees with central differences of the
  forward run by the interpreter and by the compiled module; the printed HVP
  (``tcc hvp``) agrees with central differences of the compiled backward;
  ``u . H v = v . H u``; both at both optimization levels;
* the printed programs re-parse, and compile (``tcc compile``) to modules that
  give the interpreter's values;
* the diagonal Hessian: the one-layer network's (exact there) against the
  diagonal built from one-hot HVPs; the ETH problem 2 recursion against its
  golden file; the last layer of the two-layer network exact, the first not;
  through recurrences: descending like BPTT, the Elman RNN's against the
  recursion written out in NumPy, an elementwise recurrence's input diagonal
  exact (its shared weight's not);
* the rules: comparisons and relu's indicator have derivative 0, ``max=``
  splits its tangent evenly among ties, ``-=`` flips the sign;
* the command line and the errors.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from catalogue import CATALOGUE, COURSE_EXAMPLES, EXAMPLE_SIZES, example_path  # noqa: E402
from normal_form import assert_same  # noqa: E402

import tcc  # noqa: E402
from tcc import _rt, forward, gradcheck, interp, secondcheck  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.cli import main  # noqa: E402
from tcc.ir import py_name  # noqa: E402

GOLDEN = os.path.join(HERE, "data", "golden")
TOL = 1e-6


def _text(item):
    if isinstance(item, str):
        with open(example_path(item), encoding="utf-8") as f:
            return item, f.read(), EXAMPLE_SIZES.get(item)
    return item.name, item.text, item.sizes


ALL = [*COURSE_EXAMPLES, *CATALOGUE]
ALL_IDS = [*COURSE_EXAMPLES, *(c.name for c in CATALOGUE)]


class Setup:
    """A program's forward, compiled module, random inputs, seeds and directions."""

    def __init__(self, text, sizes, seed=0):
        self.text = text
        self.info = analyze(tcc.parse(text))
        self.kernel = tcc.compile(text)
        chosen = gradcheck.choose_sizes(self.info, sizes)
        self.inputs = gradcheck.random_inputs(self.info, chosen, seed)
        self.values = interp.run(self.info, self.inputs)
        self.seeds = gradcheck.random_seeds(self.info, self.values, seed)
        self.dirs = secondcheck.directions(self.info, self.inputs, seed)
        self.dirs2 = secondcheck.directions(self.info, self.inputs, seed + 17)

    def interp_forward(self, tensors):
        out = interp.run(self.info, tensors)
        return {o: out[o] for o in self.info.outputs}

    def compiled_forward(self, tensors):
        out = self.kernel.forward(**{py_name(t): a for t, a in tensors.items()})
        return {o: out[py_name(o)] for o in self.info.outputs}

    def gradient(self, tensors):
        kw = {py_name(t): a for t, a in tensors.items()}
        return self.kernel.backward(self.seeds, **kw, **self.kernel.forward(**kw))


def _close(got: dict, want: dict, what: str, text: str, tol=TOL):
    for k in want:
        err = secondcheck.rel_error(got[k], want[k])
        assert err < tol, f"{what} {k}: relative error {err:.3g}\n{text}\n" \
                          f"got {got[k]}\nwant {want[k]}"


# ------------------------------------------------------------- forward mode

@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "unoptimized"])
@pytest.mark.parametrize("item", ALL, ids=ALL_IDS)
def test_jvp_agrees_with_finite_differences(item, optimize):
    name, text, sizes = _text(item)
    s = Setup(text, sizes)
    derived = forward.jvp(s.info, optimize=optimize)
    printed = tcc.jvp_text(text, optimize=optimize)
    assert str(derived.program) in printed
    got = secondcheck.run_jvp(derived, s.inputs, s.dirs)
    _close(got, secondcheck.fd_jvp(s.interp_forward, s.inputs, s.dirs), "jvp vs interp fd",
           printed)
    _close(got, secondcheck.fd_jvp(s.compiled_forward, s.inputs, s.dirs),
           "jvp vs compiled fd", printed)


@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "unoptimized"])
@pytest.mark.parametrize("item", ALL, ids=ALL_IDS)
def test_hvp_agrees_with_finite_differences_of_the_backward(item, optimize):
    name, text, sizes = _text(item)
    s = Setup(text, sizes)
    derived = forward.hvp(s.info, optimize=optimize)
    printed = tcc.hvp_text(text, optimize=optimize)
    hv = secondcheck.run_hvp(derived, s.inputs, s.seeds, s.dirs)
    _close(hv, secondcheck.fd_hvp(s.gradient, s.inputs, s.dirs), "hvp vs fd of backward",
           printed)
    # symmetry: u . H v = v . H u, once the params' 1/B is undone (the HVP of
    # a param is the derivative of its averaged gradient)
    hu = secondcheck.run_hvp(derived, s.inputs, s.seeds, s.dirs2)
    full = _rt.bind_sizes(s.info.plan, s.inputs, {})
    scale_of = {t: full[s.info.batch] if s.info.roles[t] == "param" and s.info.batch else 1
                for t in hv}
    uhv = sum(float(np.sum(s.dirs2[t] * hv[t])) * scale_of[t] for t in hv)
    vhu = sum(float(np.sum(s.dirs[t] * hu[t])) * scale_of[t] for t in hu)
    scale = max(1.0, *(float(np.max(np.abs(a), initial=0)) for a in [*hv.values(),
                                                                     *hu.values()]))
    assert abs(uhv - vhu) <= 1e-9 * scale * max(1, sum(a.size for a in hv.values())), \
        f"u.Hv = {uhv}, v.Hu = {vhu}\n{printed}"


@pytest.mark.parametrize("kind", ["jvp", "hvp", "hessian"])
@pytest.mark.parametrize("item", [*COURSE_EXAMPLES, *CATALOGUE[::4]],
                         ids=[*COURSE_EXAMPLES, *(c.name for c in CATALOGUE[::4])])
def test_printed_programs_reparse_and_compile(item, kind):
    """The printed program runs as a program of its own: compiled, its forward
    gives what the interpreter gives."""
    name, text, sizes = _text(item)
    printed = {"jvp": tcc.jvp_text, "hvp": tcc.hvp_text, "hessian": tcc.hessian_text}[kind](
        text)
    reparsed = tcc.parse(printed)
    assert tcc.parse(str(reparsed)) == reparsed
    if not reparsed.stmts:
        return
    s = Setup(text, sizes)
    build = {"jvp": forward.jvp, "hvp": forward.hvp, "hessian": forward.hessian_diagonal}
    derived = build[kind](s.info)
    values = interp.run(derived.forward, s.inputs)
    data = secondcheck.program_data(derived, s.inputs, values, s.dirs, s.seeds)
    want = interp.run(analyze(reparsed), data)
    out = tcc.compile(printed).forward(**{py_name(t): a for t, a in data.items()})
    for o in derived.results:
        np.testing.assert_allclose(out[py_name(o)], want[o], rtol=1e-9, atol=1e-9,
                                   err_msg=f"{o}\n{printed}")


def test_cli_check_second_order(capsys):
    assert main(["check", example_path("ugrnn_cell"), "--second-order", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "hn.dot" in out and "WhR.grad.dot" in out and "FAIL" not in out


# ------------------------------------------------------------------ rules

def _stmts(text):
    return [str(s) for s in tcc.parse(text).stmts]


def test_tangent_names_and_declarations():
    out = tcc.jvp_text(example_path("ttic_softmax"), optimize=False)
    prog = tcc.parse(out)
    roles = {d.name: d.role for d in prog.decls}
    assert roles["s.dot"] == "data" and roles["p.dot"] == "output"
    assert roles["s"] == "data" and roles["Z"] == "data"       # the forward's values
    assert "for b, j: Z.dot[b] += s.dot[b, j] * exp(s[b, j])" in _stmts(out)


def test_comparisons_and_relu_have_no_second_derivative():
    src = """
        input x[N]
        output y
        for i: y += relu(x[i]) * 3 + max(x[i], 1) - (x[i] > 0)
        """
    assert tcc.hvp_text(src).rstrip().endswith("is 0: the outputs are linear (or piecewise "
                                                "linear) in the inputs and params")
    assert "(x[i] > 0)" in tcc.jvp_text(src)


def test_max_eq_splits_the_tangent_evenly_among_ties():
    src = """
        input x[N, K]
        output m[N]
        for n, k: m[n] max= x[n, k]
        """
    derived = forward.jvp(analyze(tcc.parse(src)))
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])
    v = np.array([[10.0, 1.0, 3.0], [1.0, 5.0, 7.0]])
    got = secondcheck.run_jvp(derived, {"x": x}, {"x": v})
    np.testing.assert_allclose(got["m"], [2.0, 1.0])


def test_minus_eq_flips_the_tangent():
    out = tcc.jvp_text("input x[N]\noutput y\nfor i: y -= exp(x[i])\n", optimize=False)
    assert "for i: y.dot -= x.dot[i] * exp(x[i])" in _stmts(out)


def test_hvp_keeps_the_batch_average_for_params():
    out = tcc.hvp_text(example_path("eth_mlp"))
    assert "W1.grad.dot[j, i] += 1 / B *" in out and "x.grad.dot[b, i] += 1 / B" not in out


# ------------------------------------------------------- diagonal Hessian

ONE_LAYER = """
# one layer with an elementwise loss: the diagonal recursion is exact
input  x[B, I]
param  W[K, I]
data   t[B, K]
output L
for b, k, i: a[b, k] += W[k, i] * x[b, i]
for b, k:    L += (tanh(a[b, k]) - t[b, k]) ** 2
"""


def _exact_diagonal(s: Setup, derived_hvp) -> dict:
    """diag(H) from one HVP per position, with a one-hot direction."""
    out = {}
    zero = {t: np.zeros_like(s.inputs[t]) for t in s.info.differentiable}
    for t in s.info.differentiable:
        d = np.zeros_like(s.inputs[t])
        for pos in np.ndindex(d.shape):
            dirs = dict(zero)
            onehot = np.zeros_like(s.inputs[t])
            onehot[pos] = 1.0
            dirs[t] = onehot
            d[pos] = secondcheck.run_hvp(derived_hvp, s.inputs, s.seeds, dirs)[t][pos]
        out[t] = d
    return out


def test_diagonal_hessian_is_exact_for_one_layer():
    s = Setup(ONE_LAYER, {"B": 3, "I": 4, "K": 2})
    diag = secondcheck.run_hessian(forward.hessian_diagonal(s.info), s.inputs, s.seeds)
    exact = _exact_diagonal(s, forward.hvp(s.info))
    for t in ("x", "W"):
        np.testing.assert_allclose(diag[t], exact[t], rtol=1e-10, atol=1e-12, err_msg=t)
    assert np.max(np.abs(exact["W"])) > 1e-3


def test_diagonal_hessian_of_the_eth_network():
    """With a squared error the output's Hessian is diagonal and batch items
    are independent, so the weights' diagonals are exact; x.hess neglects the
    off-diagonal terms sum_k W2[k, j] W2[k, j'] of z1 (each z1 feeds every a2),
    so it is not."""
    with open(example_path("eth_mlp"), encoding="utf-8") as f:
        text = f.read()
    s = Setup(text, {"B": 2, "I": 3, "J": 3, "K": 2})
    diag = secondcheck.run_hessian(forward.hessian_diagonal(s.info), s.inputs, s.seeds)
    exact = _exact_diagonal(s, forward.hvp(s.info))
    for t in ("W1", "W2"):
        np.testing.assert_allclose(diag[t], exact[t], rtol=1e-10, atol=1e-12, err_msg=t)
    assert not np.allclose(diag["x"], exact["x"], rtol=1e-3)


def test_eth_problem_2_recursion_is_the_golden_answer():
    printed = tcc.hessian_text(example_path("eth_mlp"))
    assert_same(tcc.parse(printed), os.path.join(GOLDEN, "eth_mlp.hessian.opt.loop"))
    # the formula of the issue, line by line
    text = printed.replace(" ", "")
    assert "z1.hess[b,j]+=a2.hess[b,k]*W2[k,j]**2" in text
    assert "W1.hess[j,i]+=1/B*a1.hess[b,j]*x[b,i]**2" in text


def test_cli_hessian_needs_diagonal(capsys):
    assert main(["hessian", example_path("eth_mlp")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tcc: error:") and "--diagonal" in err and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["jvp", "hvp"])
def test_cli_prints_what_the_api_returns(cmd, capsys):
    assert main([cmd, example_path("ttic_softmax")]) == 0
    out = capsys.readouterr().out
    assert out == getattr(tcc, f"{cmd}_text")(example_path("ttic_softmax"))


def test_a_tangent_named_input_is_a_positioned_error(tmp_path, capsys):
    f = tmp_path / "bad.loop"
    f.write_text("input x.dot[N]\noutput y\nfor i: y += exp(x.dot[i])\n")
    assert main(["jvp", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{f}:1:7: error: 'x.dot' would need a tangent")
    assert "^" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["x.dot.grad", "x.hess.dot", "x.dot.dot"])
def test_derived_names_are_checked_by_the_parser(tmp_path, capsys, name):
    f = tmp_path / "bad.loop"
    f.write_text(f"input {name}[N]\noutput y\nfor i: y += {name}[i]\n")
    assert main(["parse", str(f)]) == 1
    err = capsys.readouterr().err
    assert ":1:" in err and "is not a name" in err


def test_missing_file_is_status_2(capsys):
    assert main(["hvp", "no_such_file.loop"]) == 2


# ------------------------------------------------------ the generated module

MODULE_CASES = [(item, "numpy") for item in ALL] + \
    [(item, "opt_einsum") for item in COURSE_EXAMPLES]
MODULE_IDS = [f"{i}-numpy" for i in ALL_IDS] + [f"{i}-opt_einsum" for i in COURSE_EXAMPLES]


@pytest.mark.parametrize("item, backend", MODULE_CASES, ids=MODULE_IDS)
def test_module_second_order_functions_run_the_printed_programs(item, backend):
    name, text, sizes = _text(item)
    s = Setup(text, sizes)
    k = tcc.compile(text, backend=backend, second_order=True)
    kw = {py_name(t): a for t, a in s.inputs.items()}
    want = secondcheck.run_jvp(forward.jvp(s.info), s.inputs, s.dirs)
    _close(k.jvp(s.dirs, **kw), want, "module jvp", text, tol=1e-9)
    want = secondcheck.run_hvp(forward.hvp(s.info), s.inputs, s.seeds, s.dirs)
    _close(k.hvp(s.dirs, s.seeds, **kw), want, "module hvp", text, tol=1e-9)
    want = secondcheck.run_hessian(forward.hessian_diagonal(s.info), s.inputs, s.seeds)
    _close(k.hessian_diagonal(s.seeds, **kw), want, "module hessian", text, tol=1e-9)


def test_module_tangents_by_plain_name():
    k = tcc.compile(example_path("eth_mlp"), second_order=True)
    inputs = k.random_inputs(0)
    v = {"W1": np.ones_like(inputs["W1"])}
    full = k.jvp({**v, "x": np.zeros_like(inputs["x"]), "W2": np.zeros_like(inputs["W2"])},
                 **inputs)
    np.testing.assert_allclose(k.jvp(v, **inputs)["L"], full["L"])    # missing: zero
    with pytest.raises(ValueError, match="'t'.*not an input or param"):
        k.jvp({"t": inputs["t"]}, **inputs)
    with pytest.raises(ValueError, match="tangent for 'W1' has shape"):
        k.hvp({"W1": np.ones(3)}, {}, **inputs)
    with pytest.raises(ValueError, match="not an output"):
        k.hvp(v, {"W1": 1.0}, **inputs)
    assert set(k.hessian_diagonal({"L": 1.0}, **inputs)) == {"x", "W1", "W2"}


def test_default_module_is_unchanged_and_second_order_module_checks_itself(tmp_path):
    import subprocess
    plain = tcc.compile_source(example_path("ttic_softmax"))
    assert "def jvp" not in plain and "def hvp" not in plain
    out = tmp_path / "eth.py"
    assert main(["compile", example_path("eth_mlp"), "--second-order", "-o", str(out)]) == 0
    run = subprocess.run([sys.executable, str(out), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "W1.grad.dot" in run.stdout and "L.dot" in run.stdout and "FAIL" not in run.stdout


# ---------------------------------------------------- properties (hypothesis)

from hypothesis import assume, given, settings  # noqa: E402
from strategies import programs, scaled  # noqa: E402


def _agrees(got: dict, fd_at, tol=1e-5) -> bool:
    """got against central differences at h; where they differ, the
    differences at h/4 tell a kink crossed (they disagree with those at h:
    the example is dropped) from a wrong derivative (they agree)."""
    fd = fd_at(secondcheck.H)
    bad = [k for k in fd if not _near(got[k], fd[k], tol)]
    if not bad:
        return True
    fine = fd_at(secondcheck.H / 4)
    assume(all(_near(fd[k], fine[k], tol) for k in bad))
    return False


def _near(a, b, tol) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not np.all(np.isfinite(b)):
        assume(False)
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    return bool(np.all(np.abs(a - b) <= tol * scale))


@pytest.mark.property
@settings(max_examples=scaled(1))
@given(programs())
def test_property_jvp_and_hvp_match_finite_differences(g):
    """On random programs: the printed JVP against central differences of the
    compiled forward; the printed HVP against central differences of the
    compiled backward."""
    info = analyze(tcc.parse(g.text))
    assume(info.differentiable)
    inputs = g.arrays()
    k = tcc.compile(g.text)
    with np.errstate(all="ignore"):
        out = k.forward(**{py_name(t): a for t, a in inputs.items()})
        assume(all(np.all(np.isfinite(out[py_name(o)])) for o in info.outputs))
    rng = np.random.default_rng(g.seed % 1000)
    seeds = {o: rng.standard_normal(np.shape(out[py_name(o)])) for o in info.outputs}
    dirs = {t: rng.standard_normal(np.shape(inputs[t])) for t in info.differentiable}

    def fwd(tensors):
        res = k.forward(**{py_name(t): a for t, a in tensors.items()})
        return {o: res[py_name(o)] for o in info.outputs}

    def gradient(tensors):
        kw = {py_name(t): a for t, a in tensors.items()}
        return k.backward(seeds, **kw, **k.forward(**kw))

    with np.errstate(all="ignore"):
        jv = secondcheck.run_jvp(forward.jvp(info), inputs, dirs)
        assert _agrees(jv, lambda h: secondcheck.fd_jvp(fwd, inputs, dirs, h)), \
            f"jvp disagrees\n{g.text}\n{tcc.jvp_text(g.text)}"
        hv = secondcheck.run_hvp(forward.hvp(info), inputs, seeds, dirs)
        assert _agrees(hv, lambda h: secondcheck.fd_hvp(gradient, inputs, dirs, h)), \
            f"hvp disagrees\n{g.text}\n{tcc.hvp_text(g.text)}"


# ------------------------------------------- issue 12's forms (interpreter)

BREADTH = {
    "outputs_read_later": """
        input x[B, D]
        param W[H, D], V[O, H]
        output h1[B, H], h2[B, O]
        for b, h, d: h1[b, h] += W[h, d] * x[b, d]
        for b, o, h: h2[b, o] += V[o, h] * tanh(h1[b, h])
        """,
    "min_rows": "input s[B, J]\noutput m[B]\nfor b, j: m[b] min= exp(s[b, j]) * s[b, j]\n",
    "stacked": "input x[B]\noutput w[B, 2]\nfor b: w[b, 0] += exp(x[b])\n"
               "for b: w[b, 1] += x[b] * x[b]\n",
    "written_range": "input x[T]\noutput y[T]\nfor t in T: y[t] += x[t - 1] * x[t]\n",
    "bracket": "input s[B, K]\ndata y[B]\noutput L[B]\n"
               "for b, k: L[b] -= (k == y[b]) * log(sigmoid(s[b, k])) * s[b, k]\n",
}


@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "unoptimized"])
@pytest.mark.parametrize("name", list(BREADTH))
def test_breadth_forms_by_the_interpreter(name, optimize):
    from tcc import api
    from tcc.autodiff import differentiate
    import textwrap
    text = textwrap.dedent(BREADTH[name])
    info = analyze(tcc.parse(text))
    inputs = gradcheck.random_inputs(info, gradcheck.choose_sizes(info, None), 0)
    seeds = gradcheck.random_seeds(info, interp.run(info, inputs), 0)
    dirs = secondcheck.directions(info, inputs, 0)
    engine = api.InterpEngine(info, differentiate(info))

    def fwd(t):
        out = interp.run(info, t)
        return {o: out[o] for o in info.outputs}

    def gradient(t):
        return engine.backward(seeds, t, interp.run(info, t))

    _close(secondcheck.run_jvp(forward.jvp(info, optimize), inputs, dirs),
           secondcheck.fd_jvp(fwd, inputs, dirs), "jvp", text)
    _close(secondcheck.run_hvp(forward.hvp(info, optimize), inputs, seeds, dirs),
           secondcheck.fd_hvp(gradient, inputs, dirs), "hvp", text)


@pytest.mark.parametrize("cmd, src, where, message", [
    ("jvp", "input x[N]\ndata y.dot[N]\noutput y[N]\nfor i: y[i] = exp(x[i]) * y.dot[i]\n",
     ":2:6:", "'y.dot' is the name of the tangent of 'y'"),
    ("hessian", "input x[N]\ndata y.hess[N]\noutput y[N]\nfor i: y[i] = exp(x[i]) * y.hess[i]\n",
     ":2:6:", "'y.hess' is the name of the diagonal Hessian of 'y'"),
    ("jvp", "input x[N]\noutput y.hess[N]\nfor i: y.hess[i] = exp(x[i])\n",
     ":3:8:", "'y.hess' would need a tangent, 'y.hess.dot', which is not a name"),
    ("grad", "input x.dot[N]\noutput y\nfor i: y += exp(x.dot[i])\n",
     ":1:7:", "'x.dot' would need a gradient, 'x.dot.grad', which is not a name"),
])
def test_derived_name_clashes_are_positioned_errors(tmp_path, capsys, cmd, src, where, message):
    f = tmp_path / "clash.loop"
    f.write_text(src)
    args = [cmd, str(f)] + (["--diagonal"] if cmd == "hessian" else [])
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{f}{where} error: {message}"), err
    assert "^" in err and "Traceback" not in err


def test_bug_inlining_a_tangent_keeps_the_loop_range():
    """Found by the long profile: inlining h8.dot[i, 0] (i over the one valid
    window position of e2[j, j, i + j]) as x1.dot[i] made i range over all of
    x1; the clean-up now undoes a rewrite that changes a range."""
    src = """
        input x1[2]
        data p3[B]
        data p4[I]
        for i, j, k: e2[i, j, k] = (((x1[i] * x1[i]) > 2.) - x1[j]) + x1[k]
        for i: a7[i] -= log(abs(p4[i]) + 0.5)
        for i, j, k: h8[i, j] -= e2[j, j, i + j] + a7[k]
        for i, j, k: f9[i, j, k] += (log(1 + sigmoid(p4[j])) - h8[i, 0]) + p3[k]
        """
    import textwrap
    s = Setup(textwrap.dedent(src), {"B": 3, "I": 2})
    got = secondcheck.run_jvp(forward.jvp(s.info), s.inputs, s.dirs)
    _close(got, secondcheck.fd_jvp(s.interp_forward, s.inputs, s.dirs), "jvp", src)


def test_tangents_run_through_a_recurrence_in_its_direction():
    """A recurrence's tangents are a recurrence over the same steps (h.dot[t]
    reads h.dot[t - 1]); the forward's h read at an earlier step is data, 0
    before the first step (a written range)."""
    text = tcc.jvp_text(example_path("rnn_elman"))
    assert "for t, b, s, r: a.dot[t, b, s] += h.dot[t - 1, b, r] * U[s, r]" in text
    assert "for t in T, b, s, r: a.dot[t, b, s] += U.dot[s, r] * h[t - 1, b, r]" in text


# ------------------------------------------- the diagonal Hessian through time

def test_the_diagonal_hessian_of_a_recurrence_runs_descending():
    """A recurrence's diagonal is a recurrence in the backward's direction:
    h.hess[t - 1] reads a.hess[t], as BPTT's h.grad[t - 1] reads a.grad[t]."""
    derived = forward.hessian_diagonal(analyze(tcc.parse(open(example_path("rnn_elman"),
                                                              encoding="utf-8").read())))
    text = str(derived.program)
    assert "for t, b, s, r: h.hess[t - 1, b, r] += a.hess[t, b, s] * U[s, r] ** 2" in text
    assert "a.hess[t, b, s] += h.hess[t, b, s] * (1 - h[t, b, s] ** 2) ** 2" in text
    recs = analyze(derived.program).recurrences
    hess = [r for r in recs if "h.hess" in r.tensors]
    assert hess and not hess[0].ascending


def _elman_diagonal_by_hand(x, W, U, h, g):
    """The Becker-LeCun recursion for h[t] = tanh(W x[t] + U h[t-1]), written
    out in NumPy: BPTT for the gradient, and beside it, descending,
    h.hess[t-1] = sum_s U[s, r]^2 a.hess[t, s] and a.hess[t] = h.hess[t] h'^2
    + h.grad[t] h''."""
    T, B, _ = x.shape
    hg, hh = g.copy(), np.zeros_like(h)
    ag, ah = np.zeros_like(h), np.zeros_like(h)
    for t in reversed(range(T)):
        d1 = 1 - h[t] ** 2
        ag[t] = hg[t] * d1
        ah[t] = hh[t] * d1 ** 2 + hg[t] * (-2 * h[t] * d1)
        if t > 0:
            hg[t - 1] += ag[t] @ U
            hh[t - 1] += ah[t] @ U ** 2
    prev = np.concatenate([np.zeros_like(h[:1]), h[:-1]])
    return {"x": np.einsum("tbs,sd->tbd", ah, W ** 2),
            "W": np.einsum("tbs,tbd->sd", ah, x ** 2) / B,
            "U": np.einsum("tbs,tbr->sr", ah, prev ** 2) / B}


@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "unoptimized"])
def test_the_diagonal_hessian_of_the_elman_rnn_is_the_recursion_by_hand(optimize):
    with open(example_path("rnn_elman"), encoding="utf-8") as f:
        text = f.read()
    s = Setup(text, {"T": 4, "B": 2, "D": 3, "S": 3})
    diag = secondcheck.run_hessian(forward.hessian_diagonal(s.info, optimize=optimize),
                                   s.inputs, s.seeds)
    want = _elman_diagonal_by_hand(s.inputs["x"], s.inputs["W"], s.inputs["U"],
                                   s.values["h"], s.seeds["h"])
    _close(diag, want, "diagonal vs by hand", text, tol=1e-12)
    k = tcc.compile(text, second_order=True)
    _close(k.hessian_diagonal(s.seeds, **s.inputs), want, "module diagonal", text, tol=1e-12)


def test_the_elman_diagonal_over_one_step_is_exact():
    """With T = 1 the Elman RNN is one layer, h = tanh(W x), under a loss linear
    in h: every diagonal is exact there (U meets only the zero state)."""
    with open(example_path("rnn_elman"), encoding="utf-8") as f:
        text = f.read()
    s = Setup(text, {"T": 1, "B": 2, "D": 3, "S": 2})
    diag = secondcheck.run_hessian(forward.hessian_diagonal(s.info), s.inputs, s.seeds)
    exact = _exact_diagonal(s, forward.hvp(s.info))
    for t in ("x", "W", "U"):
        np.testing.assert_allclose(diag[t], exact[t], rtol=1e-10, atol=1e-12, err_msg=t)
    assert np.max(np.abs(exact["W"])) > 1e-3


ELEMENTWISE_RNN = """\
input x[T, N]
param a[N]
output L
for t, n: p[t, n] += x[t, n]
for t, n: p[t, n] += a[n] * h[t - 1, n]
for t, n: h[t, n] = tanh(p[t, n])
for t, n: L += h[t, n] ** 2 / 2
"""


def test_the_diagonal_hessian_through_an_elementwise_recurrence():
    """Each h[t, n] reads one element of h[t - 1] and x: x.hess is exact (each
    x[t, n] reaches L along one chain). The weight a[n], shared by the steps,
    is not: its diagonal drops the terms between steps (h[t'] depends on
    h[t]), as for any weight read at positions that interact."""
    s = Setup(ELEMENTWISE_RNN, {"T": 4, "N": 3})
    diag = secondcheck.run_hessian(forward.hessian_diagonal(s.info), s.inputs, s.seeds)
    exact = _exact_diagonal(s, forward.hvp(s.info))
    np.testing.assert_allclose(diag["x"], exact["x"], rtol=1e-10, atol=1e-12)
    assert not np.allclose(diag["a"], exact["a"], rtol=1e-3)


def test_the_diagonal_hessian_of_a_recurrence_shifted_by_a_loop_index():
    """AttentionRNN(infinity) scatters into h.hess[t - 1 - i]: re-indexed as the
    backward's h.grad is, so that the printed program is a recurrence."""
    path = os.path.join(HERE, "data", "examples", "nyu_attention_rnn_inf.loop")
    text = tcc.hessian_text(path)
    assert "h.hess[t, b, r] += v.hess[t + i + 1, b, i, s] * V[i, s, r] ** 2" in text
    # a comparison is 0 or 1: D ** 2 keeps it as it is
    assert "(i < t) ** 2" not in text and "(i < t) * exp(w[t, b, i]) ** 2" in text
    info = analyze(tcc.parse(open(path, encoding="utf-8").read()))
    chosen = gradcheck.choose_sizes(info, {"T": 3, "B": 2, "D": 2, "S": 2})
    inputs = gradcheck.random_inputs(info, chosen, 0)
    seeds = gradcheck.random_seeds(info, interp.run(info, inputs), 0)
    diag = secondcheck.run_hessian(forward.hessian_diagonal(info), inputs, seeds)
    assert all(np.all(np.isfinite(v)) for v in diag.values())


def test_a_zero_tangent_stays_defined_and_the_printed_program_checks(capsys):
    # found by the long property profile: h7.dot = x1.dot - h6.dot = 0 was
    # dropped as "adds zero", and the printed program then read it as data;
    # and a module whose outputs are X.dot names failed its own --check
    text = ("input x1\ndata y2[B, I, J, B]\ninput x3[I]\ndata y4[I]\n"
            "h5[i] += x1 + y2[j, i, k, l]\nh6[i] = x1 + y2[i, 0, 0, i]\n"
            "h7[i, j] += (x1 - h6[i]) + y2[j, k, l, m]\nh8[i] += x1 + h7[i, j]\n")
    printed = tcc.jvp_text(text)
    assert "h7.dot[i, j] += 0" in printed and "data h7.dot" not in printed
    k = tcc.compile(printed)
    assert k.namespace["_self_check"]() is True


def test_hvp_benchmark_leaves_out_a_library_that_does_not_import(monkeypatch, capsys):
    """bench_hvp.py without jax (a None entry in sys.modules makes its import
    fail): the jax column is left out with a note; every column is checked
    against tcc's result first (no FAIL line)."""
    import importlib.util
    path = os.path.join(os.path.dirname(HERE), "benchmarks", "bench_hvp.py")
    spec = importlib.util.spec_from_file_location("bench_hvp", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(sys.modules, "jax", None)
    bench.main(["--quick", "--repeat", "1"])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| workload"))
    assert "jax" not in header and "tcc hvp ms" in header
    assert "# jax: jax is not importable here" in out and "FAIL" not in out
    assert sum(line.startswith(("| mlp", "| softmax")) for line in out.splitlines()) == 2
