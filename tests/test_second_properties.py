"""Second derivatives on random recurrence programs (``programs(recurrence=True)``:
random cells, distances 1..3, both directions, starting states, readouts):

* the printed HVP (``tcc hvp``, run by the reference interpreter) against
  central differences of the compiled backward;
* the generated module's ``jvp``, ``hvp`` and ``hessian_diagonal``
  (``--second-order``, NumPy and opt_einsum, and torch where it is installed)
  against the printed programs run by the interpreter; the diagonal's
  recursion is a recurrence in the backward's direction.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import assume, event, given, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strategies import programs, scaled  # noqa: E402
from test_forward import _agrees  # noqa: E402

import tcc  # noqa: E402
from tcc import forward, interp, secondcheck  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.ir import py_name  # noqa: E402

pytestmark = pytest.mark.property


def _setup(g):
    for f in sorted(g.features):
        event(f)
    info = analyze(tcc.parse(g.text))
    assume(info.differentiable)
    inputs = g.arrays()
    with np.errstate(all="ignore"):
        values = interp.run(info, inputs)
        assume(all(np.all(np.isfinite(values[o])) for o in info.outputs))
    rng = np.random.default_rng(g.seed % 1000)
    seeds = {o: rng.standard_normal(np.shape(values[o])) for o in info.outputs}
    dirs = {t: rng.standard_normal(np.shape(inputs[t])) for t in info.differentiable}
    return info, inputs, seeds, dirs


def _close(got, want, what, text):
    for k, w in want.items():
        g = got[k]
        g = g.numpy() if hasattr(g, "numpy") else g
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10, err_msg=f"{what} {k}\n{text}")


@settings(max_examples=scaled(0.3))
@given(programs(recurrence=True))
def test_recurrence_hvp_matches_finite_differences_of_the_backward(g):
    info, inputs, seeds, dirs = _setup(g)
    k = tcc.compile(g.text)

    def gradient(tensors):
        kw = {py_name(t): a for t, a in tensors.items()}
        return k.backward(seeds, **kw, **k.forward(**kw))

    with np.errstate(all="ignore"):
        hv = secondcheck.run_hvp(forward.hvp(info), inputs, seeds, dirs)
        assert _agrees(hv, lambda h: secondcheck.fd_hvp(gradient, inputs, dirs, h)), \
            f"hvp disagrees\n{g.text}\n{tcc.hvp_text(g.text)}"


@settings(max_examples=scaled(0.3))
@given(programs(recurrence=True))
def test_recurrence_second_order_module_runs_the_printed_programs(g):
    info, inputs, seeds, dirs = _setup(g)
    diagonal = forward.hessian_diagonal(info)
    recs = analyze(diagonal.program).recurrences
    hess = [r for r in recs if any(t.endswith(".hess") for t in r.tensors)]
    ascending = analyze(tcc.parse(g.text)).recurrences[0].ascending
    assert all(r.ascending != ascending for r in hess), str(diagonal.program)
    with np.errstate(all="ignore"):
        want = {"jvp": secondcheck.run_jvp(forward.jvp(info), inputs, dirs),
                "hvp": secondcheck.run_hvp(forward.hvp(info), inputs, seeds, dirs),
                "hessian_diagonal": secondcheck.run_hessian(diagonal, inputs, seeds)}
    assume(all(np.all(np.isfinite(a)) for d in want.values() for a in d.values()))
    kw = {py_name(t): a for t, a in inputs.items()}
    backends = ["numpy", "opt_einsum"]
    try:
        import torch
        backends.append("torch")
    except ImportError:
        torch = None
    for backend in backends:
        k = tcc.compile(g.text, backend=backend, second_order=True)
        args = (kw, dirs, seeds)
        if backend == "torch":
            args = tuple({n: torch.as_tensor(a) for n, a in d.items()} for d in args)
        tkw, tdirs, tseeds = args
        with np.errstate(all="ignore"):
            _close(k.jvp(tdirs, **tkw), want["jvp"], f"{backend} jvp", g.text)
            _close(k.hvp(tdirs, tseeds, **tkw), want["hvp"], f"{backend} hvp", g.text)
            _close(k.hessian_diagonal(tseeds, **tkw), want["hessian_diagonal"],
                   f"{backend} hessian_diagonal", g.text)
