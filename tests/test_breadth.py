"""Issue 12's language breadth in the front end: ``min=``, index comparisons,
constant-target stacking, written ranges with zero padding, outputs read by
later statements and static bounds. Each form is run by the reference
interpreter against a NumPy oracle, printed and parsed back, differentiated,
and its gradients checked against finite differences (interpreter engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tcc
from tcc.api import check
from tcc.check import analyze
from tcc.interp import run

FRONT = Path(__file__).parent / "data" / "front"


@pytest.fixture
def rng():
    return np.random.default_rng(12)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


def round_trips(src: str):
    p = tcc.parse(src)
    assert tcc.parse(str(p)) == p, str(p)
    back = tcc.differentiate(p)
    assert tcc.parse(str(back)) == back, str(back)
    return p


def gradients_check(src: str, sizes=None):
    report = check(src, sizes=sizes, engine="interp")
    assert report.rows, report
    for row in report.rows:
        assert row.ok, row


def backward_runs(src: str, **tensors):
    """The printed backward parses, checks and runs in the interpreter."""
    back = tcc.parse(tcc.grad_text(src, optimize=False))
    return analyze(back)


# ------------------------------------------------------------------ min=

MIN_ROWS = "input s[B, J]\noutput m[B]\nfor b, j: m[b] min= s[b, j]\n"


def test_min_reduction_starts_at_plus_infinity(rng):
    s = rng.normal(size=(3, 4))
    close(run(round_trips(MIN_ROWS), {"s": s})["m"], s.min(axis=1))
    empty = run(tcc.parse(MIN_ROWS), {"s": np.zeros((2, 0))})["m"]
    assert np.all(empty == np.inf)


def test_min_gradient_splits_ties_evenly():
    back = tcc.differentiate(tcc.parse(MIN_ROWS))
    s = np.array([[1.0, 2.0, 1.0], [3.0, 0.0, 5.0]])
    m = s.min(axis=1)
    out = run(back, {"s": s, "m": m, "m.grad": np.array([1.0, 2.0])})
    close(out["s.grad"], [[0.5, 0, 0.5], [0, 2.0, 0]])


def test_min_gradient_by_finite_differences():
    gradients_check(MIN_ROWS)
    gradients_check("input x[L]\nparam pb[F]\noutput m[N]\n"
                    "for n, i: m[n] min= x[2*n + i] - pb[i]\n", {"L": 9, "F": 3})
