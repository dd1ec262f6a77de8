"""``tcc check`` as a grader (issue 13) and ``tcc graph``.

The table is tests/data/answers/*__*.loop: hand answers, right and wrong, to
the course problems (examples + seeds), each with a header naming its forward
program and what ``tcc check --backward`` must say at the default options:

    # forward: ttic_softmax            (tests/data/answers or tests/data/examples)
    # expect: pass | fail | fail at: TEXT | error TEXT | fail hint TEXT
    # options: --data P=onehot         (optional)

``fail at: TEXT`` means the report names the statement whose line holds TEXT.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tcc import api, gradcheck, graph
from tcc.cli import main
from catalogue import INTERP_ONLY  # tests/ is on the path (conftest.py)
from tcc.errors import TccError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSWERS = os.path.join(ROOT, "tests", "data", "answers")
EXAMPLES = os.path.join(ROOT, "tests", "data", "examples")
TABLE = sorted(glob.glob(os.path.join(ANSWERS, "*__*.loop")))


def _forward(name: str) -> str:
    for d in (ANSWERS, EXAMPLES):
        path = os.path.join(d, name + ".loop")
        if os.path.exists(path):
            return path
    raise AssertionError(f"no forward program {name}")


def _entry(path: str):
    text = open(path, encoding="utf-8").read()
    fwd = re.search(r"^# forward: (\S+)", text, re.M).group(1)
    expect = re.search(r"^# expect: (.*)$", text, re.M).group(1).strip()
    opts = re.search(r"^# options: --data (\S+)", text, re.M)
    data = dict(p.split("=") for p in opts.group(1).split(",")) if opts else None
    return _forward(fwd), expect, data


def test_the_table_covers_every_course_problem():
    forwards = {re.search(r"^# forward: (\S+)", open(p).read(), re.M).group(1) for p in TABLE}
    examples = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(EXAMPLES, "*.loop"))}
    examples -= set(INTERP_ONLY)     # not compiled yet: tcc check --backward compiles
    assert examples <= forwards, examples - forwards
    kinds = [_entry(p)[1].split()[0] for p in TABLE]
    assert kinds.count("pass") >= 15 and kinds.count("fail") >= 20


@pytest.mark.parametrize("path", TABLE, ids=[os.path.basename(p)[:-5] for p in TABLE])
def test_hand_answer(path):
    fwd, expect, data = _entry(path)
    kind = expect.split()[0]
    if kind == "error":
        with pytest.raises(TccError) as err:
            api.check(fwd, backward=path, data=data)
        assert expect[len("error "):] in str(err.value)
        return
    report = api.check(fwd, backward=path, data=data)
    text = report.format()
    if kind == "pass":
        assert report.ok, text
        assert "FAIL" not in text and report.blame is None
        return
    assert not report.ok, text
    if expect.startswith("fail at: "):
        assert report.blame is not None, text
        assert expect[len("fail at: "):] in report.blame.text, text
        assert f"{os.path.basename(path)}:{report.blame.line}:" in text
        lines = open(path, encoding="utf-8").read().splitlines()
        assert lines[report.blame.line - 1].strip() in text     # the line, with a caret
    if expect.startswith("fail hint "):
        assert any(expect[len("fail hint "):] in h for h in report.hints), text


# ------------------------------------------------------ the cases

def _answer(name):
    return os.path.join(ANSWERS, name + ".loop")


def test_cli_reports_the_wrong_intermediate(capsys):
    path = _answer("ugrnn_cell__gate_grad")
    assert main(["check", _forward("ugrnn_cell"), "--backward", path]) == 1
    out = capsys.readouterr().out
    line = next(k for k, ln in enumerate(open(path).read().splitlines(), 1)
                if ln.startswith("for b, j:    G.grad"))
    assert re.search(rf"ugrnn_cell__gate_grad\.loop:{line}:\d+: first wrong statement: "
                     r"it computes G\.grad", out), out
    assert re.search(r"^\s+\^$", out, re.M)
    m = re.search(r"G\.grad at \[(\d+), (\d+)\]: your backward gives (\S+), the derivative "
                  r"is (\S+) \(seed (\d+)\)", out)
    assert m, out
    assert float(m.group(3)) == pytest.approx(-float(m.group(4)), rel=1e-4)   # R - h for h - R


def test_one_draw_can_pass_a_wrong_answer_but_five_do_not():
    """Issue 13: the relu unit without its indicator passes at seed 0."""
    fwd, path = _forward("ttic_relu_unit"), _answer("ttic_relu_unit__no_indicator")
    text = open(path).read().replace("# expect", "#")
    only = [ln for ln in text.splitlines() if ln.startswith("for")]
    single = api.check(fwd, backward="\n".join(only) + "\n", seeds=1)
    several = api.check(fwd, backward="\n".join(only) + "\n")
    assert single.ok and not several.ok
    assert several.seeds == [0, 1, 2, 3, 4]


def test_error_is_relative_to_the_gradients_own_size():
    report = api.check(_forward("small_gradient"), backward=_answer("small_gradient__sign"))
    (row,) = report.rows
    assert not row.ok and row.error > 1


def test_typo_in_a_gradient_name_suggests_the_right_one(capsys):
    path = _answer("ttic_ugrnn_linear__typo")
    assert main(["check", _forward("ttic_ugrnn_linear"), "--backward", path]) == 1
    err = capsys.readouterr().err
    assert "did you mean Wxr.grad?" in err and "Traceback" not in err
    assert re.search(r"ttic_ugrnn_linear__typo\.loop:\d+:\d+: error: 'WxR\.grad'", err)


def test_one_hot_data_hint_and_option(capsys):
    fwd = _forward("softmax_xent_onehot")
    path = _answer("softmax_xent_onehot__course")
    assert main(["check", fwd, "--backward", path]) == 1
    out = capsys.readouterr().out
    assert "--data P=onehot" in out and "one" in out
    assert main(["check", fwd, "--backward", path, "--data", "P=onehot"]) == 0


def test_data_kinds_draw_what_they_say():
    from tcc.check import analyze
    from tcc.parse import parse
    info = analyze(parse("input s[B, K]\ndata P[B, K], Q[B, K], R[B, K], S[B, K]\noutput L[B]\n"
                         "for b, k: L[b] += s[b, k] * (P[b, k] + Q[b, k] + R[b, k] + S[b, k])\n"))
    kinds = {"P": "onehot", "Q": "probabilities", "R": "positive", "S": "int:3"}
    x = gradcheck.random_inputs(info, {"B": 4, "K": 5}, 0, kinds)
    assert np.array_equal(x["P"].sum(axis=-1), np.ones(4)) and set(np.unique(x["P"])) == {0, 1}
    assert np.allclose(x["Q"].sum(axis=-1), 1) and (x["Q"] > 0).all()
    assert (x["R"] >= 0.5).all()
    assert set(np.unique(x["S"])) <= {0, 1, 2}
    with pytest.raises(ValueError, match="not a data tensor"):
        api.check("input s[B, K]\ndata P[B, K]\noutput L[B]\nfor b, k: L[b] += s[b, k] * P[b, k]\n",
                  data={"s": "onehot"})


def test_unexercised_gradient_is_a_warning_and_strict_fails():
    src = ("input x[N]\ninput z[N]\noutput L\n"
           "for n: L += max(x[n] ** 2 + 1, 0) + (z[n] > 100) * z[n]\n")
    report = api.check(src)
    assert report.ok
    text = report.format()
    assert "z.grad" in text and "not exercised" in text and "warning" in text
    assert not api.check(src, strict=True).ok


def test_nothing_to_differentiate(tmp_path, capsys):
    f = tmp_path / "none.loop"
    f.write_text("data x[K]\nfor k: y[k] = x[k] * 2\n")
    for command in ("grad", "check"):
        assert main([command, str(f)]) == 1
        captured = capsys.readouterr()
        assert "nothing to differentiate" in captured.err
        assert len(captured.err.strip().splitlines()) == 1 and not captured.out


def test_scalars_are_spelled_scalar(capsys):
    assert main(["check", _forward("ttic_relu_unit")]) == 0
    assert re.search(r"^w\.grad\s+\[\d+\]", capsys.readouterr().out, re.M)
    assert gradcheck.shape_text(()) == "scalar"


def test_closed_pipe_prints_no_traceback():
    code = ("import sys; sys.argv = ['tcc', 'check', sys.argv[1]]; from tcc.cli import main; "
            "sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", code, _forward("ugrnn_cell")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()          # the reader is gone before tcc writes
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    proc.stderr.close()
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ------------------------------------------------------------------ graph

def test_graph_dot_text():
    dot = graph.program_dot(_forward("ttic_softmax"), backward=True)
    assert dot.startswith('digraph "ttic_softmax"')
    assert '"s" [label="s\\n[B, J]"' in dot
    assert '"s" -> "Z" [label="for b, j: Z[b] += exp(s[b, j])"];' in dot
    assert "cluster_forward" in dot and "cluster_backward" in dot
    assert '"backward:s.grad" [label="s.grad\\n[B, J]"' in dot
    assert '"backward:e" -> "backward:s.grad"' in dot
    scalar = graph.program_dot(_forward("ttic_relu_unit"))
    assert '"y" [label="y\\nscalar"' in scalar and "cluster_backward" not in scalar
    # the labels of a one-hot bracket are read too
    bracket = graph.program_dot(_forward("softmax_xent_bracket"))
    assert '"y" -> "L" [label="for b, k: L[b] -= (k == y[b]) * log(p[b, k])"];' in bracket


def test_graph_cli_writes_dot_and_falls_back_without_dot(tmp_path, monkeypatch, capsys):
    out = tmp_path / "g.dot"
    assert main(["graph", _forward("residual_block"), "-o", str(out)]) == 0
    assert out.read_text().startswith("digraph")

    def no_dot(dot, fmt):
        raise RuntimeError("graphviz's 'dot' program was not found on PATH")
    monkeypatch.setattr(graph, "render", no_dot)
    svg = tmp_path / "h.svg"
    assert main(["graph", _forward("residual_block"), "-o", str(svg), "--backward"]) == 0
    assert not svg.exists() and (tmp_path / "h.dot").read_text().startswith("digraph")
    assert "not found" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot program is missing")
def test_graph_renders_svg(tmp_path):
    pytest.importorskip("graphviz")
    svg = tmp_path / "g.svg"
    assert main(["graph", _forward("ttic_softmax"), "--backward", "-o", str(svg)]) == 0
    assert "<svg" in svg.read_text()


def test_readme_shows_the_wrong_intermediate_report():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = next(b for tag, b in re.findall(r"^```(\w*)\n(.*?)^```$", readme, re.S | re.M)
                 if b.startswith("$ tcc check ugrnn_cell.loop --backward wrong_gate.loop"))
    shown = [ln for ln in block.splitlines()[1:] if ln != "..."]
    path = os.path.relpath(_answer("ugrnn_cell__gate_grad"), ROOT)
    out = subprocess.run([sys.executable, "-m", "tcc", "check", _forward("ugrnn_cell"),
                          "--backward", path], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    printed = out.stdout.replace(path, "wrong_gate.loop").splitlines()
    for line in shown:
        assert line in printed, (line, printed)


# ----------------------------------------- the noise floor of the comparison

def _zero_loss_rows(fd_check, fd_noise, asarray, grad):
    """fd_check on a loss that is exactly 0 whatever its input (every output
    0), against a backward that gives ``grad`` everywhere."""
    x = asarray(np.linspace(-1.0, 2.0, 4))
    seeds = {"y": asarray(np.ones(4))}
    outputs = {"y": asarray(np.zeros(4))}
    noise = fd_noise(outputs, seeds, {"x": x})
    return fd_check(lambda t: 0.0, {"x": x}, {"x": asarray(np.full(4, grad))}, {}, noise)


@pytest.mark.parametrize("grad, ok", [(1.4e-16, True), (-3e-15, True), (1e-9, False),
                                      (1e-3, False)])
def test_rounding_against_an_exactly_zero_reference(grad, ok):
    """The long profile's case: every output 0, so the loss's size gives no
    noise floor, and a backward that leaves 1e-16 of rounding in a sum of
    terms that cancel read as a relative error of 1e284. The backward's own
    rounding (about 1000 ulps of seed x input) is the floor; a gradient above
    it still fails."""
    from tcc import _rt
    rows = _zero_loss_rows(_rt.fd_check, _rt.fd_noise, np.asarray, grad)
    assert rows[0][4] is ok, rows


@pytest.mark.parametrize("grad, ok", [(1.4e-16, True), (1e-9, False)])
def test_rounding_floor_in_the_torch_runtime(grad, ok):
    torch = pytest.importorskip("torch")
    from tcc import _rt_torch
    rows = _zero_loss_rows(_rt_torch.fd_check, _rt_torch.fd_noise,
                           lambda a: torch.as_tensor(a, dtype=torch.float64), grad)
    assert rows[0][4] is ok, rows


def test_a_small_gradient_that_is_wrong_still_fails():
    """The floor is absolute, about 2e-13 for inputs of size 1: a program whose
    values are all about 1e-9 is still graded relative to its own size."""
    text = "input x[I]\noutput y[I]\ny[i] += exp(x[i] - 20)\n"
    head = "dim I\ndata y.grad[I]\noutput x.grad[I]\n"
    right = head + "for i: x.grad[i] += y.grad[i] * exp(x[i] - 20)\n"
    wrong = head + "for i: x.grad[i] += y.grad[i] * exp(x[i] - 21)\n"
    assert api.check(text, sizes={"I": 3}).ok
    assert api.check(text, backward=right, sizes={"I": 3}).ok
    assert not api.check(text, backward=wrong, sizes={"I": 3}).ok
