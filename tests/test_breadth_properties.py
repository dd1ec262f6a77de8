"""Properties of issue 12's forms on random valid programs drawn with
``programs(breadth=True)``: index comparisons, stacked constant targets,
written ranges with zero padding, ``min=`` and outputs read later.

Here the front end: the printer round-trips forward and backward, the
reference interpreter's gradients match finite differences, and the printed
backward runs in the interpreter and gives the same gradients. The compiled
backends are checked on the same programs by tests/test_properties.py, whose
backend properties draw ``programs(breadth=True)``.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import event, given, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strategies import programs, scaled  # noqa: E402

import tcc  # noqa: E402
from tcc import api, gradcheck, interp  # noqa: E402
from tcc.autodiff import differentiate  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.ir import base_name, grad_name, is_grad  # noqa: E402

pytestmark = pytest.mark.property

BREADTH = ("index comparison", "stacked constant target", "written range", "min=",
           "output read later")


def note(g):
    for f in sorted(g.features):
        if f.startswith(BREADTH):
            event(f)


@settings(max_examples=scaled(2))
@given(programs(breadth=True))
def test_breadth_round_trips(g):
    note(g)
    p = tcc.parse(g.text)
    assert tcc.parse(str(p)) == p, f"{g.text}\n---\n{p}"
    info = analyze(p)
    back = differentiate(info)
    assert tcc.parse(str(back)) == back, f"{g.text}\n---\n{back}"


@settings(max_examples=scaled(0.5))
@given(programs(max_stmts=5, breadth=True))
def test_breadth_gradients_match_finite_differences(g):
    note(g)
    report = api.check(g.text, sizes=g.sizes, seed=g.seed % 1000, engine="interp")
    assert report.ok, f"tcc check (interpreter) fails\n{g.text}\n{report.format()}"


@settings(max_examples=scaled(0.5))
@given(programs(max_stmts=5, breadth=True))
def test_breadth_printed_backward_runs_and_agrees(g):
    note(g)
    info = analyze(tcc.parse(g.text))
    inputs = g.arrays()
    saved = interp.run(info, inputs)
    seeds = gradcheck.random_seeds(info, saved, g.seed % 1000)
    want = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, saved)
    printed = tcc.parse(tcc.grad_text(g.text, optimize=False))
    binfo = analyze(printed)
    data = {}
    for t in binfo.inputs:
        if is_grad(t) and base_name(t) in seeds:
            data[t] = seeds[base_name(t)]
        else:
            data[t] = inputs[t] if t in inputs else saved[t]
    kept = {t: a.copy() for t, a in data.items()}
    out = interp.run(binfo, data)
    for t, a in data.items():
        np.testing.assert_array_equal(a, kept[t], f"the backward modified {t}")
    for t in info.differentiable:
        got = out.get(grad_name(t), np.zeros(np.shape(inputs[t])))
        np.testing.assert_allclose(got, want[t], rtol=1e-10, atol=1e-10,
                                   err_msg=f"{t}.grad\n{g.text}\n---\n{printed}")


def test_breadth_strategy_draws_every_new_form():
    seen: set[str] = set()

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(programs(breadth=True))
    def collect(g):
        seen.update(g.features)

    collect()
    for form in ("index comparison ==", "comparison with a gather", "stacked constant target",
                 "written range", "min=", "output read later"):
        assert form in seen, f"never drew {form}"
