"""Properties of recurrences (issue 11) on random RNN-like programs drawn with
``programs(recurrence=True)``: random cells, distances 1..3, both directions,
starting states, readouts after the recurrence. The printer round-trips
forward and backward; the reference interpreter's gradients match finite
differences; the printed backward runs and agrees; every backend, optimized
or not, agrees with the interpreter, forward and backward."""

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
from tcc.ir import base_name, grad_name, is_grad, py_name  # noqa: E402

pytestmark = pytest.mark.property


def note(g):
    for f in sorted(g.features):
        event(f)


def _reference(g):
    info = analyze(tcc.parse(g.text))
    inputs = g.arrays()
    saved = interp.run(info, inputs)
    seeds = gradcheck.random_seeds(info, saved, g.seed % 1000)
    want = api.InterpEngine(info, differentiate(info)).backward(seeds, inputs, saved)
    return info, inputs, saved, seeds, want


@settings(max_examples=scaled(1))
@given(programs(recurrence=True))
def test_recurrence_round_trips_and_is_found(g):
    note(g)
    p = tcc.parse(g.text)
    assert tcc.parse(str(p)) == p
    info = analyze(p)
    (rec,) = info.recurrences
    assert rec.ascending == ("recurrence up" in g.features)
    back = differentiate(info)
    assert tcc.parse(str(back)) == back
    (brec,) = analyze(back).recurrences
    assert brec.ascending != rec.ascending


@settings(max_examples=scaled(0.3))
@given(programs(recurrence=True))
def test_recurrence_gradients_match_finite_differences(g):
    note(g)
    report = api.check(g.text, sizes=g.sizes, seed=g.seed % 1000, engine="interp", seeds=1)
    assert report.ok, f"tcc check (interpreter) fails\n{g.text}\n{report.format()}"


@settings(max_examples=scaled(0.3))
@given(programs(recurrence=True))
def test_recurrence_printed_backward_runs_and_agrees(g):
    note(g)
    info, inputs, saved, seeds, want = _reference(g)
    for optimize in (False, True):
        p = tcc.pipeline.Pipeline(g.text, None, optimize)
        values = interp.run(p.info, inputs)
        binfo = analyze(p.backward)
        data = {t: seeds[base_name(t)] if is_grad(t) and base_name(t) in seeds
                else (inputs[t] if t in inputs else values[t]) for t in binfo.inputs}
        out = interp.run(binfo, data)
        for t in info.differentiable:
            got = out.get(grad_name(t), np.zeros(np.shape(inputs[t])))
            np.testing.assert_allclose(got, want[t], rtol=1e-9, atol=1e-10,
                                       err_msg=f"{t}.grad\n{g.text}\n---\n{p.backward}")


@settings(max_examples=scaled(0.3))
@given(programs(recurrence=True))
def test_recurrence_compiled_agrees_with_the_interpreter(g):
    note(g)
    info, inputs, saved, seeds, want = _reference(g)
    kw = {py_name(t): a for t, a in inputs.items()}
    for backend in ("numpy", "opt_einsum"):
        for optimize in (True, False):
            k = tcc.compile(g.text, backend=backend, optimize=optimize)
            fwd = k.forward(**kw)
            for o in info.outputs:
                np.testing.assert_allclose(fwd[py_name(o)], saved[o], rtol=1e-10, atol=1e-12)
            got = k.backward(seeds, **kw, **fwd)
            for t in info.differentiable:
                np.testing.assert_allclose(got[t], want[t], rtol=1e-9, atol=1e-10,
                                           err_msg=f"{backend} {optimize} {t}\n{g.text}")


def test_recurrence_strategy_draws_every_form():
    seen: set[str] = set()

    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(programs(recurrence=True))
    def collect(g):
        seen.update(g.features)

    collect()
    for form in ("recurrence up", "recurrence down", "cell gated", "cell accumulate",
                 "starting state", "readout loss", "output read later",
                 "index comparison in a recurrence"):
        assert form in seen, f"never drew {form}"
