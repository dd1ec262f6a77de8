"""A fuzzed front end: no text makes tcc crash, hang or point nowhere.

Random mutations of valid programs (tokens deleted, duplicated, swapped,
replaced; brackets changed; numbers made huge; names made reserved or
non-ASCII), random unicode, random bytes, deep nesting, huge numbers,
unicode names. Each input either goes through (parse, analyze, compile) or
raises a ``TccError`` with a position inside the text whose ``format()``
shows the offending line; through the CLI it exits with status 1 and never
prints a traceback. Every case runs under a time limit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strategies import mutated, programs, scaled, unicode_text  # noqa: E402

import tcc  # noqa: E402
import tcc.cli  # noqa: E402
from tcc import interp  # noqa: E402
from tcc.check import analyze  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 20          # seconds for one input, generous for a slow CI machine

pytestmark = pytest.mark.property


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = LIMIT):
    """Raise Hang in the main thread if the block runs longer than ``seconds``
    of this process's CPU time (not wall time: a loaded machine must not make a
    fast input look like a hang)."""
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s of CPU time")
    old = signal.signal(signal.SIGPROF, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def source_lines(text: str) -> list[str]:
    """The lines as tcc counts them: only '\\n' ends a line."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def check_error(err: tcc.TccError, text: str):
    """A TccError points inside the text and shows that line with a caret."""
    assert err.pos is not None, f"error without a position: {err}\n{text!r}"
    lines = source_lines(text)
    assert 1 <= err.pos.line <= len(lines), f"line {err.pos.line} of {len(lines)}: {err}"
    assert err.pos.col >= 1, str(err)
    assert err.pos.col <= len(lines[err.pos.line - 1]) + 2, f"col past the line end: {err}"
    shown = err.format().split("\n")
    assert shown[0] == str(err)
    assert "Traceback" not in err.format()
    assert len(shown) == 3, f"no source line under the message: {err.format()!r}"
    wanted = lines[err.pos.line - 1].rstrip("\r").expandtabs(1)
    assert shown[1].rstrip("\r") == "    " + wanted, \
        f"format() shows another line than {err.pos.line}: {shown[1]!r} vs {wanted!r}"
    assert shown[2] == "    " + " " * (err.pos.col - 1) + "^"


def front_end(text: str, compile_too: bool = True):
    """Parse, analyze and compile: any failure must be a positioned TccError.
    (One line ending in ``.loop`` is a path to tcc.parse: a missing file.)"""
    if "\n" not in text and text.endswith(".loop") and not os.path.exists(text):
        with pytest.raises(FileNotFoundError):
            tcc.parse(text)
        return None
    with time_limit():
        try:
            program = tcc.parse(text)
            try:
                analyze(program)
            except tcc.TccError as err:
                raise err.attach(None, text) from None   # as the CLI and tcc.compile do
            if compile_too:
                for optimize in (False, True):
                    tcc.compile_source(text, optimize=optimize)
        except tcc.TccError as err:
            check_error(err, text)
            return err
    return None


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit():
        try:
            status = tcc.cli.main(argv)
        except SystemExit as exc:      # argparse
            status = exc.code
    return status, out.getvalue(), err.getvalue()


def check_cli_error(status: int, stderr: str, path: str):
    assert status in (0, 1), (status, stderr)
    assert "Traceback" not in stderr
    if status == 1:
        first = stderr.splitlines()[0] if stderr else ""
        if first.startswith(path):
            assert re.match(re.escape(path) + r":\d+:\d+: error: ", first), \
                f"an error without LINE:COL: {first!r}"
        else:
            assert first.startswith("tcc: error: "), first


# ------------------------------------------------------------- mutations

@settings(max_examples=scaled(8))
@given(mutated())
def test_mutated_programs_fail_cleanly(text):
    front_end(text)


@settings(max_examples=scaled(2))
@given(mutated())
def test_mutated_programs_through_the_cli(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.loop")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        for argv in (["parse", path], ["grad", path], ["compile", path],
                     ["grad", path, "--no-optimize"]):
            status, out, err = run_cli(argv)
            check_cli_error(status, err, path)
            if status == 1:
                assert out == "", f"{argv[0]} printed output and failed"


# ------------------------------------------------------- arbitrary input

@settings(max_examples=scaled(8))
@given(unicode_text())
def test_random_unicode_fails_cleanly(text):
    front_end(text, compile_too=False)


@settings(max_examples=scaled(4))
@given(st.binary(max_size=300))
def test_random_bytes_through_the_cli(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bytes.loop")
        with open(path, "wb") as f:
            f.write(data)
        status, out, err = run_cli(["parse", path])
        check_cli_error(status, err, path)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            assert status == 1 and "UTF-8" in err


@settings(max_examples=scaled(2))
@given(programs(max_stmts=4), st.integers(0, 10_000), st.sampled_from(
    ["(", ")", "[", "]", "é", "\u00a0", "\u200b", "\ufeff", "\t", "\f", "\x0b", "\u2028",
     "\x85", "\r", "ｘ", "🙂", "\u0301", "x.grad.grad", "**", "max=", ",,", ":"]))
def test_one_odd_character_anywhere(g, where, odd):
    text = g.text
    k = where % (len(text) + 1)
    front_end(text[:k] + odd + text[k:], compile_too=False)


# ---------------------------------------------------- pathological inputs

def test_deep_parentheses():
    for depth in (99, 100, 101, 5_000, 200_000):
        text = "input x[B]\nfor b: y[b] = " + "(" * depth + "x[b]" + ")" * depth + "\n"
        err = front_end(text)
        if depth > 100:
            assert err is not None and "nest" in err.message


def test_deep_unclosed_parentheses():
    front_end("input x[B]\nfor b: y[b] = " + "(" * 100_000 + "\n")


def test_deep_brackets_and_calls():
    cases = [
        "input x[B]\nfor b: y[b] = " + "exp(" * 3000 + "x[b]" + ")" * 3000 + "\n",
        "input x[B]\nfor b: y[b] = x[" * 3000 + "b" + "]" * 3000 + "\n",
        "input x[B]\nfor b: y[b] = " + "-" * 100_000 + "x[b]\n",
        "input x[B]\nfor b: y[b] = " + "x[b] ** " * 5000 + "2\n",
        "input x[B]\nfor b: y[b] = " + "max(x[b], " * 3000 + "0" + ")" * 3000 + "\n",
        "input x[B]\nfor b: y[b" + " + 1" * 20_000 + "] = x[b]\n",
        "input x[" + "B, " * 20_000 + "B]\n",
    ]
    for text in cases:
        front_end(text)


def test_long_flat_chains():
    for n in (100, 10_000, 100_000):
        text = "input x[B]\nfor b: y[b] = " + " + ".join(["x[b]"] * n) + "\n"
        front_end(text)
        text = "input x[B]\nfor b: y[b] = " + " * ".join(["x[b]"] * n) + "\n"
        front_end(text)


def test_many_statements_and_names():
    n = 3000
    text = "input x[B]\nfor b: h0[b] = x[b]\n" + "".join(
        f"for b: h{k}[b] = h{k - 1}[b] + x[b]\n" for k in range(1, n))
    front_end(text, compile_too=False)
    long_name = "x" * 100_000
    front_end(f"input {long_name}[B]\nfor b: y[b] = {long_name}[b]\n")
    front_end("input x[B]\n" + "\n" * 100_000 + "for b: y[b] = x[b] + z[b]\n")
    front_end("input x[B]\n" + "# comment\n" * 50_000 + "for b: y[b] = x[b] $\n")


HUGE = {"1e309": "1e309", "1e400_digits": "1" + "0" * 400, "4300_digits": "9" * 4300,
        "4301_digits": "9" * 4301, "20000_digits": "9" * 20_000, "1e-400": "1e-400",
        "leading_zeros": "0" * 5000 + "1", "long_fraction": "1." + "5" * 10_000,
        "huge_exponent": "1e99999999999999999999"}


@pytest.mark.parametrize("literal", list(HUGE.values()), ids=list(HUGE))
def test_huge_numbers(literal):
    for text in (f"input x[B]\nfor b: y[b] = x[b] * {literal}\n",
                 f"input x[B]\nfor b: y[b] = x[b + {literal}]\n",
                 f"input x[{literal}]\nfor b: y[b] = x[b]\n",
                 f"input x[B]\nbatch {literal}\nfor b: y[b] = x[b]\n"):
        front_end(text)


def test_huge_numbers_are_tcc_errors_with_positions():
    """Literals that overflow a float are errors; so is an integer too long to
    convert, which Python itself refuses (ValueError past 4300 digits)."""
    for literal in ("1e309", "9" * 400, "9" * 5000):
        text = f"input x[B]\nfor b: y[b] = x[b] * {literal}\n"
        with pytest.raises(tcc.TccError) as info:
            tcc.parse(text)
        assert info.value.pos is not None
        assert (info.value.pos.line, info.value.pos.col) == (2, 22)
        assert "overflows" in info.value.message or "too long" in info.value.message


def test_huge_coefficient_in_a_window_runs():
    """A stride too large for a C long, on an index whose inferred range is 1:
    the program is valid (the interpreter gives sum_j x[j] * w[j]), but the
    module's strided view (np.lib.stride_tricks.as_strided) raises
    OverflowError, and ``tcc check`` prints a traceback."""
    src = ("input x[N], w[F]\noutput h\n"
           "h += x[999999999999999999999999999999*i + j] * w[j]\n")
    x, w = np.arange(5.0), np.array([2.0, 3.0])
    assert interp.run(analyze(tcc.parse(src)), {"x": x, "w": w})["h"] == 3.0
    for optimize in (False, True):
        k = tcc.compile(src, optimize=optimize)
        try:
            assert k.forward(x=x, w=w)["h"] == 3.0
        except ValueError as err:           # or a clear refusal
            assert "x" in str(err)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stride.loop")
        with open(path, "w") as f:
            f.write(src)
        status, out, err = run_cli(["check", path])
        assert status in (0, 1) and "Traceback" not in err


@pytest.mark.parametrize("name", ["é", "xé", "ｘ", "λ", "Ω1", "x\u0301", "名前", "🙂",
                                  "x\u200b", "\u202ex", "ℌ", "ﬁ", "x\u00a0y", "İ", "ǅ"])
def test_unicode_names(name):
    for text in (f"input {name}[B]\nfor b: y[b] = {name}[b]\n",
                 f"input x[{name}]\nfor b: y[b] = x[b]\n",
                 f"input x[B]\nfor {name}: y[{name}] = x[{name}]\n",
                 f"input x[B]\nfor b: {name}[b] = x[b]\n"):
        err = front_end(text)
        assert err is not None, f"non-ASCII name accepted: {text!r}"


def test_control_characters_point_at_the_right_line():
    """format() shows the line tcc counted: '\\f', '\\v' or U+2028 in a line
    must not shift the caret onto another line."""
    for odd in ("\f", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"):
        for text in (f"input x[B]  # a note{odd}with an odd character\n"
                     "for b: y[b] = x[b] + z[b]\n",
                     f"input x[B]\n# {odd}\nfor b: y[b] = x[b] + z[b]\n"):
            err = front_end(text, compile_too=False)
            assert err is not None and err.message.startswith("undefined tensor 'z'")


# ------------------------------------------------------------- the CLI

@pytest.mark.parametrize("command", ["parse", "grad", "compile", "check", "explain"])
def test_cli_subprocess_on_bad_input(tmp_path, command):
    """A real process: status 1, FILE:LINE:COL, no traceback."""
    cases = {
        "syntax.loop": "input x[B]\nfor b: y[b] = x[b] $ 2\n".encode(),
        "deep.loop": ("input x[B]\nfor b: y[b] = " + "(" * 5000 + "x[b]" + ")" * 5000 +
                      "\n").encode(),
        "unicode.loop": "input é[B]\nfor b: y[b] = é[b]\n".encode(),
        "latin1.loop": b"input x[B]\n# caf\xe9\nfor b: y[b] = x[b]\n",
        "nul.loop": b"input x[B]\x00\nfor b: y[b] = x[b]\n",
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "tcc", command, str(path)],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)
        assert proc.returncode == 1, (name, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr, (name, proc.stderr)
        first = proc.stderr.splitlines()[0]
        if name == "latin1.loop":
            assert "UTF-8" in first
        else:
            assert re.match(re.escape(str(path)) + r":\d+:\d+: error: ", first), first


@pytest.mark.slow
@settings(max_examples=scaled(0.1, floor=20))
@given(mutated())
def test_mutated_programs_through_a_real_process(text):
    """`python -m tcc` in a subprocess (slow: one interpreter start per example)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.loop")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        for command in ("grad", "check"):
            proc = subprocess.run([sys.executable, "-m", "tcc", command, path],
                                  capture_output=True, text=True, env=env, timeout=120)
            assert proc.returncode in (0, 1), proc.stderr
            assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def test_bug_check_never_grows_sizes_that_do_not_help():
    """The long profile's one hang: a window whose range is 1 whatever the sizes
    (``x2[.., i + j]`` beside ``x2[.., j, j]``) made ``tcc check`` grow every dim
    eight times, to a loop space of millions of points per finite difference:
    ``python -m tcc check`` ran past two minutes."""
    src = ("input x1[M]\ninput x2[M, B, B]\ndata p3[M, M]\ndata p5[J, 2]\n"
           "e4[l] -= ((x2[p3[k, l], m, i+ j] * x1[p3[l, k]]) + x2[M - 1 - k, j, j]) / 10\n"
           "for m, l, k, j, i: e4[i] += (B + x2[j, p5[k, l], m]) / 10\n"
           "z6[i, j] = p3[j + 2, 0] + (x2[2, i, 1] + 1)\n"
           "h7[i, k, j] max= x1[k + 2] + (p3[j, 2*i] + (exp(sigmoid(3)) ** 0.5))\n")
    from tcc import api, gradcheck
    sizes = gradcheck.choose_sizes(analyze(tcc.parse(src)), {})
    assert max(sizes.values()) <= 10, sizes
    with time_limit(30):
        assert api.check(src).ok


def test_bug_a_constant_index_grows_only_its_own_axis():
    """The long profile's second hang: W3[1, 22, 0, 1] needs B >= 23, and
    check grew every dim by 3 until B got there, making W3 a param of 300,000
    elements whose finite differences ran for hours. Now B alone is 23."""
    src = ("input x1[J, B]\ndata y2[2, J, B, M]\nparam W3[K, B, J, K]\ndata p4[I]\n"
           "data p6[L, J]\ndata p7[I]\n"
           "c5 = (x1[0, 2] - W3[1, 22, 0, 1]) * (exp(cos(W3[0, p4[0], 0, 0])) ** 0.5)\n"
           "for i, j, k, l, m: e8[i] -= ((p4[p6[j, k]] - W3[p7[l], m, k, 2]) - p7[i])  /10\n")
    from tcc import api, gradcheck
    sizes = gradcheck.choose_sizes(analyze(tcc.parse(src)), {})
    assert sizes["B"] == 23 and max(v for d, v in sizes.items() if d != "B") <= 10, sizes
    with time_limit(30):
        assert api.check(src).ok


def test_a_one_line_path_that_does_not_exist():
    """Text of one line ending in .loop is a path: a missing one is FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        tcc.compile("no_such_program.loop")
