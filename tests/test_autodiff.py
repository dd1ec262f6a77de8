"""The differentiator (LANGUAGE.md section 2) and ``tcc check``.

* every course example and every catalogue program passes the finite
  difference check (the worst error is recorded and must stay below 1e-6);
* the printed backward (``tcc grad``) re-parses and, run by the reference
  interpreter, gives the gradients the finite differences give, and the same
  ones as the compiled backward the check runs;
* the unoptimized backward of the TTIC softmax and UGRNN problems is the
  course answer (golden files, compared as normalized sums of products);
* the rules: ``-=`` flips the sign, params get ``1/B`` exactly when there is
  a batch, data and inactive tensors get no gradient work, a tensor read twice
  gets two terms, gather and affine reads become scatter targets, and ``max=``
  splits its gradient evenly among ties;
* ``tcc check --backward`` accepts a right hand-written answer and catches
  wrong ones.
"""

from __future__ import annotations

import math
import os
import re
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from catalogue import CATALOGUE, COURSE_EXAMPLES, EXAMPLE_SIZES, by_name, example_path  # noqa: E402
from normal_form import assert_same, normal_form  # noqa: E402

import tcc  # noqa: E402
from tcc import api, gradcheck, interp  # noqa: E402
from tcc.autodiff import differentiate  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.cli import main  # noqa: E402

DATA = os.path.join(HERE, "data")
GOLDEN = os.path.join(DATA, "golden")
BACKWARD = os.path.join(DATA, "backward")
FD_BOUND = 1e-6

# name -> worst finite-difference error seen for it (see test_zz_worst_error)
WORST: dict[str, float] = {}


def _text(case_or_name) -> tuple[str, str, dict | None]:
    """(id, program text, sizes) for a course example name or a catalogue Case."""
    if isinstance(case_or_name, str):
        with open(example_path(case_or_name), encoding="utf-8") as f:
            return case_or_name, f.read(), EXAMPLE_SIZES.get(case_or_name)
    return case_or_name.name, case_or_name.text, case_or_name.sizes


ALL = [*COURSE_EXAMPLES, *CATALOGUE]
ALL_IDS = [*COURSE_EXAMPLES, *(c.name for c in CATALOGUE)]


def _backward_text(name: str) -> str:
    return os.path.join(BACKWARD, name)


def _record(name: str, report) -> float:
    errors = [r.error for r in report.rows]
    assert report.rows, f"{name}: the report has no rows"
    assert all(not math.isnan(e) for e in errors), report.format()
    worst = max(errors)
    if report.ok:                  # failures are reported by their own tests
        WORST[name] = max(WORST.get(name, 0.0), worst)
    return worst


# ---------------------------------------------------------------- the catalogue

def test_the_catalogue_is_big_enough_and_valid():
    assert len(CATALOGUE) >= 30
    assert len(COURSE_EXAMPLES) == 19      # 11, eth_mlp, 2 of issue 12, 5 recurrences
    for case in CATALOGUE:
        analyze(tcc.parse(case.text))               # every entry is a valid program


# ------------------------------------------------------------ finite differences

@pytest.mark.parametrize("item", ALL, ids=ALL_IDS)
def test_gradients_agree_with_finite_differences(item):
    name, text, sizes = _text(item)
    report = api.check(text, sizes=sizes)
    worst = _record(name, report)
    assert report.ok, f"{name}:\n{report.format()}"
    assert worst < FD_BOUND
    for row in report.rows:
        assert row.ok and row.error < FD_BOUND and row.skipped == 0, row


def _pipeline(text: str, sizes, seed: int = 0):
    """What `tcc check` feeds the backward: (info, sizes, inputs, saved, seeds)."""
    info = analyze(tcc.parse(text))
    chosen = gradcheck.choose_sizes(info, sizes)
    inputs = gradcheck.random_inputs(info, chosen, seed)
    saved = interp.run(info, inputs)
    seeds = gradcheck.random_seeds(info, saved, seed)
    return info, chosen, inputs, saved, seeds


def _compiled_forward(text: str, inputs: dict, optimize: bool = True) -> dict:
    """The compiled module's forward(): the outputs and every saved value its
    backward reads (for the optimized module, tensors of the optimized forward,
    such as a softmax's row maximum), keyed by Python name."""
    from tcc.compiler import compile as compile_kernel
    from tcc.ir import py_name
    k = compile_kernel(text, optimize=optimize)
    return k.forward(**{py_name(t): a for t, a in inputs.items()})


def _run_printed(info, printed: str, inputs, saved, seeds, more_saved=None) -> dict:
    """Parse a printed backward program and run it with the interpreter. Its
    data comes from the seeds, the inputs, the interpreted forward's values
    (``saved``) and, for tensors only the optimized forward computes,
    ``more_saved`` (a compiled forward()'s result)."""
    from tcc.ir import py_name
    binfo = analyze(tcc.parse(printed))
    data = {}
    for t in binfo.inputs:
        if t.endswith(".grad") and t[:-5] in seeds:
            data[t] = seeds[t[:-5]]
        elif t in inputs:
            data[t] = inputs[t]
        elif t in saved:
            data[t] = saved[t]
        else:
            assert more_saved is not None and py_name(t) in more_saved, \
                f"the printed backward reads {t!r}, which the forward does not compute"
            data[t] = more_saved[py_name(t)]
    out = interp.run(binfo, data)
    grads = {}
    for t in info.differentiable:
        g = out.get(t + ".grad")
        grads[t] = np.zeros(np.shape(inputs[t])) if g is None else g
    return grads


@pytest.mark.parametrize("optimize", [False, True], ids=["unoptimized", "optimized"])
@pytest.mark.parametrize("item", ALL, ids=ALL_IDS)
def test_printed_backward_is_runnable_and_right(item, optimize):
    name, text, sizes = _text(item)
    printed = api.grad_text(text, optimize=optimize)
    reparsed = tcc.parse(printed)
    assert tcc.parse(str(reparsed)) == reparsed
    if not optimize:
        # the printed program is the differentiator's program
        assert_same(reparsed, differentiate(analyze(tcc.parse(text))))
    info, chosen, inputs, saved, seeds = _pipeline(text, sizes)
    more = _compiled_forward(text, inputs) if optimize else None
    grads = _run_printed(info, printed, inputs, saved, seeds, more)

    def forward(tensors):
        out = interp.run(info, tensors)
        return {o: out[o] for o in info.outputs}

    report = gradcheck.finite_difference_check(info, forward, grads, inputs, seeds, chosen)
    _record(name, report)
    assert report.ok, f"{name}: the printed backward\n{printed}\n{report.format()}"


@pytest.mark.parametrize("item", ALL, ids=ALL_IDS)
def test_printed_backward_matches_the_compiled_backward(item):
    """`tcc grad`'s program, interpreted, gives the compiled module's gradients."""
    from tcc.compiler import compile as compile_kernel
    from tcc.ir import py_name
    name, text, sizes = _text(item)
    info, chosen, inputs, saved, seeds = _pipeline(text, sizes)
    k = compile_kernel(text)
    kw = {py_name(t): a for t, a in inputs.items()}
    fwd = k.forward(**kw)
    grads = _run_printed(info, api.grad_text(text), inputs, saved, seeds, fwd)
    compiled = k.backward(seeds, **kw, **fwd)
    assert set(compiled) == set(info.differentiable)
    for t in info.differentiable:
        np.testing.assert_allclose(compiled[t], grads[t], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name}: {t}.grad")


# ------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("name", ["ttic_softmax", "residual_block", "softmax_xent"])
def test_cli_check_passes(name, capsys):
    assert main(["check", example_path(name)]) == 0
    out = capsys.readouterr().out
    assert "all gradients agree" in out
    assert "FAIL" not in out


def test_cli_check_with_sizes(capsys):
    sizes = EXAMPLE_SIZES["conv2d"]
    arg = ",".join(f"{k}={v}" for k, v in sizes.items())
    assert main(["check", example_path("conv2d"), "--sizes", arg, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "all gradients agree" in out
    for k, v in sizes.items():
        assert f"{k}={v}" in out
    assert re.search(r"X\.grad\s+\[2, 4, 4\]", out)
    assert re.search(r"H\.grad\s+\[2, 2, 2, 2\]", out)


def test_cli_grad_prints_grad_text(capsys):
    for optimize in (True, False):
        argv = ["grad", example_path("ttic_ugrnn_linear")] + ([] if optimize else ["--no-optimize"])
        assert main(argv) == 0
        assert capsys.readouterr().out == api.grad_text(example_path("ttic_ugrnn_linear"),
                                                        optimize=optimize)


# ------------------------------------------------------------------ golden files

@pytest.mark.parametrize("name", ["ttic_softmax", "ttic_ugrnn_linear"])
def test_unoptimized_backward_is_the_course_answer(name):
    printed = api.grad_text(example_path(name), optimize=False)
    assert_same(printed, os.path.join(GOLDEN, f"{name}.grad.loop"))


# ------------------------------------------------------------------- the rules

def _grad(text: str, optimize: bool = False) -> str:
    return api.grad_text(text, optimize=optimize)


def _stmts(text: str):
    """The differentiator's statements, as (target tensor, op, printed statement)."""
    b = differentiate(analyze(tcc.parse(text)))
    return [(s.target.tensor, s.op, str(s)) for s in b.stmts]


def _terms(text: str, target_prefix: str):
    return [t for t in normal_form(_grad(text)) if t.target.startswith(target_prefix + "[")
            or t.target == target_prefix]


def test_minus_eq_flips_the_sign():
    text = "input x[N], w[N]\noutput y[N]\nfor i: y[i] -= x[i] * w[i]\n"
    got = {t: op for t, op, _ in _stmts(text)}
    assert got == {"x.grad": "-=", "w.grad": "-="}
    assert [t.coef for t in _terms(text, "x.grad")] == [-1.0]
    # a minus inside the expression flips it back
    text = "input x[N]\noutput y[N]\nfor i: y[i] -= -x[i]\n"
    assert [op for _, op, _ in _stmts(text)] == ["+="]
    assert "x.grad[i] += y.grad[i]" in _grad(text)
    # and the course example: Br.grad[j] -= 1/B * Rt.grad[b, j]
    (br,) = _terms(open(example_path("ttic_ugrnn_linear")).read(), "Br.grad")
    assert br.coef == -1.0 and br.den == ("B",)


@pytest.mark.parametrize("name,batch", [
    ("batch_default_B", "B"), ("batch_one", None), ("batch_named_N", "N"), ("batch_none", None),
])
def test_params_are_averaged_exactly_when_there_is_a_batch(name, batch):
    text = by_name(name).text
    info = analyze(tcc.parse(text))
    assert info.batch == batch
    params = [t for t in info.differentiable if info.roles[t] == "param"]
    inputs = [t for t in info.differentiable if info.roles[t] == "input"]
    assert params
    for p in params:
        terms = _terms(text, p + ".grad")
        assert terms, p
        for t in terms:
            assert t.den == ((batch,) if batch else ()), (p, str(t))
    for x in inputs:
        for t in _terms(text, x + ".grad"):
            assert not any(d in ("B", "N") for d in t.den), (x, str(t))
    if batch:
        assert re.search(rf"\+= 1 ?/ ?{batch} \* ", _grad(text)), _grad(text)
    else:
        assert not re.search(r"1 ?/ ?[A-Za-z]", _grad(text)), _grad(text)


def test_a_loss_already_divided_by_B_is_divided_once_more_for_params():
    text = ("param w[K]\ninput x[B, K]\noutput L\n"
            "for b, k: L += w[k] * x[b, k] / B\n")
    (w,) = _terms(text, "w.grad")
    assert w.den == ("B", "B")
    (x,) = _terms(text, "x.grad")
    assert x.den == ("B",)


@pytest.mark.parametrize("name,data", [
    ("data_mask_no_grad", ["m", "t"]), ("idx_transpose", ["G"]), ("scalar_all", ["k0"]),
    ("idx_gather_target_minus", ["y"]), ("inactive_intermediate", ["d"]),
])
def test_data_tensors_get_no_gradient(name, data):
    text = by_name(name).text
    printed = _grad(text)
    for d in data:
        assert f"{d}.grad" not in printed, printed
        assert all(t != f"{d}.grad" for t, _, _ in _stmts(text))
    # the backward declares the gradients of exactly the inputs and params
    info = analyze(tcc.parse(text))
    outs = {d.name for d in tcc.parse(printed).decls if d.role == "output"}
    assert outs <= {t + ".grad" for t in info.differentiable}


def test_ugrnn_data_x_gets_no_gradient():
    printed = _grad(example_path("ttic_ugrnn_linear"))
    assert "x.grad" not in printed
    assert "data x[B, K]" in printed


def test_an_intermediate_nothing_differentiable_flows_through_gets_no_work():
    text = by_name("inactive_intermediate").text
    printed = _grad(text, optimize=False)
    for t in ("c.grad", "e.grad", "d.grad"):
        assert t not in printed
    body = [ln for ln in printed.splitlines() if ln.startswith("for ")]
    assert body == ["for b, j: x.grad[b, j] += y.grad[b, j] * e[j]"]
    assert "c[" not in printed                    # c is not even read


def test_a_tensor_read_twice_gets_two_terms():
    text = by_name("read_twice").text
    stmts = _stmts(text)
    assert [t for t, _, _ in stmts] == ["x.grad", "x.grad"]
    assert [s for _, _, s in stmts] == ["for i: x.grad[i] += y.grad[i] * x[i]"] * 2
    (term,) = normal_form(_grad(text))
    assert term.coef == 2.0                      # the sum is 2 * y.grad * x
    # read twice in the second statement of the transpose program: two T.grad terms
    stmts = _stmts(by_name("idx_transpose").text)
    assert sum(t == "T.grad" for t, _, _ in stmts) == 2


def test_a_tensor_read_by_several_statements_sums_its_gradients():
    stmts = _stmts(by_name("read_by_several").text)
    assert sum(t == "u.grad" for t, _, _ in stmts) == 3


@pytest.mark.parametrize("source,line", [
    (example_path("conv1d_stride2"), "for n, k, i: x.grad[2*n + i, k] += f.grad[n] * W[k, i]"),
    (example_path("conv2d"),
     "for o, i, r, c, fr, fc: X.grad[i, r + fr, c + fc] += Y.grad[o, r, c] * H[o, i, fr, fc]"),
    ("idx_affine_stride_offset", "for n, i: x.grad[2*n + i + 1] += y.grad[n] * w[i]"),
    ("idx_affine_dim_offset", "w.grad[i] += "),
    ("idx_affine_dim_offset", "x.grad[i + N] += "),
    ("idx_constant", "for k: x.grad[0, k] += y.grad[k] * x[2, k]"),
    ("idx_constant", "for k: x.grad[1, k] -= y.grad[k]"),
    ("idx_gather_read", "for b, t, d: E.grad[w[b, t], d] += h.grad[b, d]"),
    ("idx_xent_gather", "for b: s.grad[b, y[b]] -= L.grad[b]"),
    ("idx_gather_target_minus", "for b: x.grad[b] -= h.grad[y[b]] * x[b]"),
    ("idx_diagonal", "for i: A.grad[i, i] += "),
    ("idx_shift_difference", "for t: x.grad[t + 2] += d.grad[t]"),
])
def test_gather_and_affine_reads_become_scatter_targets(source, line):
    text = source if source.endswith(".loop") else by_name(source).text
    printed = _grad(text, optimize=False)
    assert line in printed, printed


def test_scatter_targets_accumulate():
    """Repeated gather ids add up in the gradient. (E is also read plainly, by a
    second output, so that this does not depend on the backward binding V by
    itself; idx_gather_read checks that.)"""
    text = by_name("idx_gather_read").text + "output n\nfor v, d: n += E[v, d] ** 2\n"
    info = analyze(tcc.parse(text))
    E = np.arange(6, dtype=float).reshape(3, 2)
    w = np.array([[0, 2, 0], [1, 0, 0]])
    saved = interp.run(info, {"E": E, "w": w})
    hg = np.array([[1.0, 10.0], [100.0, 1000.0]])
    grads = _run_printed(info, _grad(text), {"E": E, "w": w}, saved, {"h": hg, "n": 0.0})
    want = np.zeros((3, 2))
    for b in range(2):
        for t in range(3):
            want[w[b, t]] += hg[b]
    np.testing.assert_allclose(grads["E"], want)


# ------------------------------------------------------------------ max= ties

MAX_ROWS = """\
input s[B, J]
output m[B]
for b, j: m[b] max= s[b, j]
"""

MAX_POOL = """\
input x[L]
data z[F]
output m
for n, i: m[n] max= x[n + i] + z[i]
"""


def _backward_of(text, tensors, seeds, optimize):
    info = analyze(tcc.parse(text))
    saved = interp.run(info, tensors)
    more = _compiled_forward(text, tensors) if optimize else None
    return saved, _run_printed(info, _grad(text, optimize), tensors, saved, seeds, more)


@pytest.mark.parametrize("optimize", [False, True], ids=["unoptimized", "optimized"])
def test_max_eq_splits_ties_evenly(optimize):
    s = np.array([[1.0, 3.0, 3.0, 2.0],
                  [5.0, 5.0, 5.0, 0.0],
                  [-1.0, -2.0, 4.0, -3.0]])
    mg = np.array([1.0, 3.0, 10.0])
    saved, g = _backward_of(MAX_ROWS, {"s": s}, {"m": mg}, optimize)
    np.testing.assert_array_equal(saved["m"], [3.0, 5.0, 4.0])
    want = np.array([[0.0, 0.5, 0.5, 0.0],           # two-way tie: half each
                     [1.0, 1.0, 1.0, 0.0],           # three-way tie: a third of 3 each
                     [0.0, 0.0, 10.0, 0.0]])         # no tie: all of it
    np.testing.assert_allclose(g["s"], want, rtol=1e-15)


@pytest.mark.parametrize("optimize", [False, True], ids=["unoptimized", "optimized"])
def test_max_pool_ties_split_per_window(optimize):
    x = np.array([1.0, 3.0, 3.0, 0.0])
    z = np.zeros(2)
    mg = np.array([1.0, 2.0, 4.0])
    saved, g = _backward_of(MAX_POOL, {"x": x, "z": z}, {"m": mg}, optimize)
    np.testing.assert_array_equal(saved["m"], [3.0, 3.0, 3.0])
    # window 0 = x[0:2]: x[1] alone; window 1 = x[1:3]: a tie, 1 each; window 2 = x[2:4]: x[2]
    np.testing.assert_allclose(g["x"], [0.0, 1.0 + 1.0, 1.0 + 4.0, 0.0], rtol=1e-15)


def test_max_eq_tie_count_is_printed():
    """The backward counts the ties against the saved forward maximum."""
    printed = _grad(MAX_ROWS, optimize=False)
    body = [ln for ln in printed.splitlines() if ln.startswith("for ")]
    assert len(body) == 2
    count = re.match(r"for b, j: (\w+)\[b\] \+= \(s\[b, j\] == m\[b\]\)$", body[0])
    assert count, body
    cnt = count.group(1)
    assert cnt not in ("s", "m", "B", "J")
    assert_same(printed, "for b, j: c[b] += (s[b, j] == m[b])\n"
                         "for b, j: s.grad[b, j] += m.grad[b] * (s[b, j] == m[b]) / c[b]\n")


# ------------------------------------------------------------- --backward

UGRNN = example_path("ttic_ugrnn_linear")
SOFTMAX = example_path("ttic_softmax")


def test_backward_right_answer_passes(capsys):
    assert main(["check", UGRNN, "--backward", _backward_text("ugrnn_linear_right.loop")]) == 0
    out = capsys.readouterr().out
    assert "all gradients agree" in out
    for g in ("Whr.grad", "Wxr.grad", "Br.grad", "h.grad"):
        assert re.search(rf"^{re.escape(g)}\s.*\sok$", out, re.M), out
    report = api.check(UGRNN, backward=_backward_text("ugrnn_linear_right.loop"))
    assert report.ok
    _record("ugrnn_linear_right (--backward)", report)


def test_backward_slip_is_a_range_conflict_with_default_sizes(capsys):
    slip = _backward_text("ugrnn_linear_slip.loop")
    assert main(["check", UGRNN, "--backward", slip]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    with open(slip, encoding="utf-8") as f:
        lines = f.read().splitlines()
    lineno = next(k for k, ln in enumerate(lines, 1) if "h.grad[b, j]" in ln)
    m = re.search(rf"ugrnn_linear_slip\.loop:{lineno}:(\d+): error: (.*)", err)
    assert m, err
    assert "'j'" in m.group(2) and "I" in m.group(2) and "J" in m.group(2)
    assert lines[lineno - 1].strip() in err                # the offending line is shown
    assert "^" in err


def _first_bad(g, fd, tol=gradcheck.TOLERANCE):
    denom = max(1.0, float(np.max(np.abs(fd))))
    bad = np.argwhere(np.abs(g - fd) / denom > tol)
    return tuple(int(i) for i in bad[0])


def _assert_slip_report(report, inputs, seeds):
    rows = {r.tensor: r for r in report.rows}
    assert not report.ok
    for g in ("Whr.grad", "Wxr.grad", "Br.grad"):
        assert rows[g].ok, rows[g]
    h = rows["h.grad"]
    assert not h.ok and h.error > 1e-3
    # The slip computes h.grad[b, j] = Rt.grad[b, j] * sum_i Whr[j, i];
    # the right answer is h.grad[b, i] = sum_j Rt.grad[b, j] * Whr[j, i].
    rg, W = seeds["Rt"], inputs["Whr"]
    slip = rg * W.sum(axis=1)[None, :]
    right = rg @ W
    pos = _first_bad(slip, right)
    m = re.search(r"first at \[(\d+), (\d+)\]: backward gives (\S+), finite differences (\S+)",
                  h.note)
    assert m, h.note
    assert (int(m.group(1)), int(m.group(2))) == pos
    assert float(m.group(3)) == pytest.approx(slip[pos], rel=1e-5)
    assert float(m.group(4)) == pytest.approx(right[pos], rel=1e-5)


def test_backward_slip_is_caught_with_equal_sizes(capsys):
    """Equal sizes do not hide the slip: I and J are different dim names, so
    j fixed by both is a compile-time range conflict (LANGUAGE.md section 1),
    whatever the sizes; the error points at the slipped line."""
    slip = _backward_text("ugrnn_linear_slip.loop")
    assert main(["check", UGRNN, "--backward", slip, "--sizes", "I=4,J=4"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"ugrnn_linear_slip\.loop:\d+:\d+: error: conflicting ranges for index "
                     r"'j'", err), err
    assert "h.grad[b, j]" in err and "Traceback" not in err


def test_backward_slip_is_caught_when_one_dim_names_both(tmp_path):
    """The same slip against a forward whose h and R share the dim J: it runs and
    the report names h.grad, its first wrong position and the two values."""
    with open(UGRNN, encoding="utf-8") as f:
        text = f.read().replace("Whr[J, I]", "Whr[J, J]").replace("h[B, I]", "h[B, J]")
    fwd = tmp_path / "ugrnn_same_dim.loop"
    fwd.write_text(text)
    slip = _backward_text("ugrnn_linear_slip.loop")
    report = api.check(str(fwd), backward=slip)
    _, _, inputs, _, seeds = _pipeline(text, None)
    _assert_slip_report(report, inputs, seeds)
    assert main(["check", str(fwd), "--backward", slip]) == 1
    assert main(["check", str(fwd), "--backward", _backward_text("ugrnn_linear_right.loop")]) == 0


def test_backward_planted_softmax_mistake_is_caught(capsys):
    assert main(["check", SOFTMAX, "--backward", _backward_text("softmax_right.loop")]) == 0
    capsys.readouterr()
    wrong = _backward_text("softmax_missing_z.loop")
    assert main(["check", SOFTMAX, "--backward", wrong]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^s\.grad\s.*FAIL\s+first at \[\d+, \d+\]", out, re.M), out
    assert "some gradients disagree" in out
    report = api.check(SOFTMAX, backward=wrong)
    (row,) = report.rows
    assert row.tensor == "s.grad" and not row.ok and row.error > 1e-3


# ------------------------------------------------------------------ summary

def test_zz_worst_error():
    """The worst finite-difference error over every check this module ran."""
    if not WORST:
        pytest.skip("no finite-difference checks ran in this session")
    name, worst = max(WORST.items(), key=lambda kv: kv[1])
    print(f"\nworst finite-difference error: {worst:.3g} ({name}); "
          f"{len(WORST)} programs checked")
    assert worst < FD_BOUND
