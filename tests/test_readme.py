"""The README's examples run and show what tcc really prints."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _blocks(lang):
    """The fenced blocks of one language ("" for a plain block), whole fences only."""
    return [body for tag, body in re.findall(r"^```(\w*)\n(.*?)^```$", README, re.S | re.M)
            if tag == lang]


def test_the_two_setup_commands_come_first():
    commands = re.findall(r"^    (python3 -m venv .*)$", README, re.M)
    assert len(commands) >= 2
    assert "pip install -q ." in commands[0] and "tcc grad" in commands[0]
    assert "'.[test]'" in commands[1] and "pytest" in commands[1]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "README.md" in ci, "CI must run the README's commands"


@pytest.mark.parametrize("code", [b for b in _blocks("python") if "import tcc" in b],
                         ids=["language", "api"])
def test_python_examples_run(code):
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("block", [b for b in _blocks("") if b.startswith("$ tcc ")
                                   and "tests/data/" in b.splitlines()[0]])
def test_shell_examples_print_what_the_readme_shows(block):
    lines = block.rstrip("\n").splitlines()
    args = lines[0][len("$ tcc "):].split()
    shown = [line for line in lines[1:]]
    out = subprocess.run([sys.executable, "-m", "tcc", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stderr
    assert _matches(out.stdout.rstrip("\n").splitlines(), shown), out.stdout


def _matches(lines: list[str], shown: list[str]) -> bool:
    """The output is what the README shows, where a line ``...`` stands for
    any lines (none or more), as in doctest's ELLIPSIS."""
    if "..." not in shown:
        return lines == shown
    parts: list[list[str]] = [[]]
    for line in shown:
        if line == "...":
            parts.append([])
        else:
            parts[-1].append(line)
    if lines[:len(parts[0])] != parts[0]:
        return False
    at = len(parts[0])
    for part in parts[1:-1]:
        found = next((k for k in range(at, len(lines) - len(part) + 1)
                      if lines[k:k + len(part)] == part), None)
        if found is None:
            return False
        at = found + len(part)
    last = parts[-1]
    return len(lines) - at >= len(last) and (not last or lines[len(lines) - len(last):] == last)


def test_hand_written_backward_example(tmp_path):
    block = next(b for b in _blocks("") if b.startswith("$ cat my_answer.loop"))
    lines = block.splitlines()
    answer = []
    for line in lines[1:]:
        if line.startswith("$ "):
            break
        answer.append(line)
    mine = tmp_path / "my_answer.loop"
    mine.write_text("\n".join(answer) + "\n")
    out = subprocess.run([sys.executable, "-m", "tcc", "check",
                          "tests/data/examples/ttic_ugrnn_linear.loop", "--backward", str(mine)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stdout + out.stderr
    header = [line for line in lines if line.startswith("gradient")][0]
    assert out.stdout.splitlines()[0] == header


def test_error_example(tmp_path):
    block = next(b for b in _blocks("") if b.startswith("$ tcc grad broken.loop"))
    shown = block.splitlines()[1]
    bad = tmp_path / "broken.loop"
    bad.write_text("input s[B, J]\noutput p[B, J]\nfor b, j: Z[b] += exp(s[b, j]\n"
                   "for b, j: p[b, j] += exp(s[b, j]) / Z[b]\n")
    out = subprocess.run([sys.executable, "-m", "tcc", "grad", "broken.loop"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 1
    first = out.stderr.splitlines()[0]
    head, tail = shown.split("...")
    assert first.startswith(head) and first.endswith(tail)
    assert out.stderr.splitlines()[1:] == block.rstrip("\n").splitlines()[2:4]
