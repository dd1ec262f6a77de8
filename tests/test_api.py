"""The public API, as a user calls it.

* ``tcc.parse``, ``tcc.differentiate``, ``tcc.optimize``, ``tcc.lower`` and
  ``tcc.compile`` keep working after each other, in any order: importing the
  submodules ``tcc/parse.py`` and ``tcc/optimize.py`` must not shadow the
  functions (checked in this process and in fresh interpreters, where the
  first call decides what gets imported first).
* ``tcc grad`` prints what the module runs: for every course example, the
  printed backward, compiled as a program of its own, run on the dict the
  module's ``forward()`` returns and the seeds, gives the module's
  ``backward()``.
"""

from __future__ import annotations

import glob
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from catalogue import EXAMPLE_SIZES, EXAMPLES_DIR, INTERP_ONLY  # noqa: E402

import tcc  # noqa: E402
from tcc import gradcheck  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.ir import Program, grad_name, py_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = """\
input s[B, J]
output p[B, J]
for b, j: Z[b] += exp(s[b, j])
for b, j: p[b, j] = exp(s[b, j]) / Z[b]
"""

STAGES = {
    "parse": lambda: isinstance(tcc.parse(SOURCE), Program),
    "differentiate": lambda: isinstance(tcc.differentiate(tcc.parse(SOURCE)), Program),
    "optimize": lambda: isinstance(tcc.optimize(tcc.parse(SOURCE)), Program),
    "lower": lambda: "def forward" in tcc.lower(SOURCE),
    "compile": lambda: "p" in tcc.compile(SOURCE).forward(s=np.ones((2, 3))),
}


def test_the_stages_work_after_each_other_in_any_order():
    for order in itertools.permutations(STAGES):
        for name in order:
            assert STAGES[name](), f"tcc.{name} after {order[:order.index(name)]}"


_CHILD = """
import itertools, sys
import numpy as np
import tcc
SOURCE = {source!r}
STAGES = {{
    "parse": lambda: tcc.parse(SOURCE),
    "differentiate": lambda: tcc.differentiate(tcc.parse(SOURCE)),
    "optimize": lambda: tcc.optimize(tcc.parse(SOURCE)),
    "lower": lambda: tcc.lower(SOURCE),
    "compile": lambda: tcc.compile(SOURCE).forward(s=np.ones((2, 3))),
}}
first = sys.argv[1]
STAGES[first]()
for order in itertools.permutations(STAGES):
    for name in order:
        STAGES[name]()
print("ok")
"""


@pytest.mark.parametrize("first", list(STAGES))
def test_the_stages_work_in_any_order_in_a_fresh_interpreter(first):
    out = subprocess.run([sys.executable, "-c", _CHILD.format(source=SOURCE), first],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------- printed = compiled

EXAMPLES = sorted(os.path.basename(f)[:-len(".loop")]
                  for f in glob.glob(os.path.join(EXAMPLES_DIR, "*.loop"))
                  if os.path.basename(f)[:-len(".loop")] not in INTERP_ONLY)


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_printed_backward_runs_on_what_forward_returns(name):
    path = os.path.join(EXAMPLES_DIR, name + ".loop")
    info = analyze(tcc.parse(path))
    sizes = gradcheck.choose_sizes(info, EXAMPLE_SIZES.get(name))
    inputs = gradcheck.random_inputs(info, sizes, 0)
    kw = {py_name(t): a for t, a in inputs.items()}
    k = tcc.compile(path)
    fwd = k.forward(**kw)
    seeds = gradcheck.random_seeds(info, {t: fwd[py_name(t)] for t in info.outputs}, 0)
    want = k.backward(seeds, **kw, **fwd)

    printed = tcc.compile(tcc.grad_text(path))
    data = {**kw, **fwd, **{py_name(grad_name(o)): g for o, g in seeds.items()}}
    taken = analyze(tcc.parse(tcc.grad_text(path))).inputs
    got = printed.forward(**{py_name(t): data[py_name(t)] for t in taken})
    for t in info.differentiable:
        g = got.get(py_name(grad_name(t)))
        g = np.zeros_like(want[t]) if g is None else g
        np.testing.assert_allclose(g, want[t], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name}: {t}.grad")
