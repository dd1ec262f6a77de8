"""Measured choices (backends/tune.py, ``_tuned`` and ``_row_blocks`` in the
module's helpers): every candidate of every convolution-shaped statement of
the course examples and the catalogue agrees with the reference interpreter,
forward and backward, in float64 and float32; the timing keeps one choice per
size signature; ``TCC_TUNE=0`` and ``TCC_TUNE=<label>`` choose as documented;
a row-block group measured on and off the pool gives the same bits.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import test_backends as tb  # noqa: E402

import tcc  # noqa: E402


@contextmanager
def tune(mode: str | None):
    old = os.environ.get("TCC_TUNE")
    if mode is None:
        os.environ.pop("TCC_TUNE", None)
    else:
        os.environ["TCC_TUNE"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TCC_TUNE", None)
        else:
            os.environ["TCC_TUNE"] = old


def _labels(source: str) -> list[str]:
    """The labels of the candidates of every measured choice in a module."""
    found = re.findall(r"_tuned\('[^']*', \(((?:\('[^']*', \w+\),? ?)+)\)", source)
    return sorted({label for group in found for label in re.findall(r"\('([^']*)',", group)})


def _case_labels() -> list[tuple[str, str]]:
    out = []
    for case_id in tb.CASE_IDS:
        source = tcc.compile(tb.CASES[case_id][0]).source
        out += [(case_id, label) for label in _labels(source)]
    return out


CASE_LABELS = _case_labels()


def test_convolutions_have_candidates():
    """The course's convolutions and the catalogue's get measured choices, and
    all three kinds of candidate occur."""
    cases = {c for c, _ in CASE_LABELS}
    assert {"conv1d_stride2", "conv2d"} <= cases, sorted(cases)
    assert {label for _, label in CASE_LABELS} == {"flat-rows", "taps", "im2col"}


@pytest.mark.parametrize("case_id,label", CASE_LABELS,
                         ids=[f"{c}-{label}" for c, label in CASE_LABELS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_every_candidate_matches_interpreter(case_id, label, dtype):
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else (2e-4, 1e-5)
    with tune(label):
        tb._run_against_reference(case_id, "numpy", True, dtype, np.int64, rtol, atol)


CONV = (Path(__file__).parent.parent / "benchmarks" / "programs" / "conv2d.loop").read_text()


def _conv_inputs(k, **sizes):
    return k.random_inputs(seed=1, **sizes)


def test_first_call_times_the_candidates_and_keeps_one_per_signature():
    k = tcc.compile(CONV)
    ns = k.namespace
    ns["_TUNE_FLOOR"] = 0.0             # small sizes are timed too
    ns["_TUNE_CHOICES"].clear()
    calls = []
    real = ns["_tuned"]

    def counting(site, cands, key, args):
        wrapped = tuple((label, _counted(label, fn, calls)) for label, fn in cands)
        return real(site, wrapped, key, args)

    ns["_tuned"] = counting
    try:
        with tune(None):
            x = _conv_inputs(k, B=2, I=3, O=4, Lr=7, Lc=6, Fr=3, Fc=2)
            first = k.forward(**x)["Y"]
            assert sorted(calls) == ["flat-rows"] * 2 + ["im2col"] * 2   # two rounds
            assert list(ns["_TUNE_CHOICES"].values())[0] in (0, 1)
            calls.clear()
            again = k.forward(**x)["Y"]
            assert len(calls) == 1                               # the kept choice only
            np.testing.assert_allclose(again, first, rtol=1e-12, atol=1e-12)
            calls.clear()
            k.forward(**_conv_inputs(k, B=3, I=3, O=4, Lr=7, Lc=6, Fr=3, Fc=2))
            assert len(calls) == 4                               # a new signature
            assert len(ns["_TUNE_CHOICES"]) == 2
    finally:
        ns["_tuned"] = real


def _counted(label, fn, calls):
    def run(*args):
        calls.append(label)
        return fn(*args)
    return run


def test_tune_off_takes_the_static_choice_and_a_label_forces_one():
    k = tcc.compile(CONV)
    ns = k.namespace
    ns["_TUNE_FLOOR"] = 0.0
    ns["_TUNE_CHOICES"].clear()
    x = _conv_inputs(k, B=2, I=2, O=3, Lr=5, Lc=5, Fr=2, Fc=2)
    seen = []
    real = ns["_tuned"]
    ns["_tuned"] = lambda site, cands, key, args: real(
        site, tuple((label, _counted(label, fn, seen)) for label, fn in cands), key, args)
    try:
        with tune("0"):
            k.forward(**x)
        assert seen == ["flat-rows"] and not ns["_TUNE_CHOICES"]
        seen.clear()
        with tune("im2col"):
            k.forward(**x)
        assert seen == ["im2col"] and not ns["_TUNE_CHOICES"]
    finally:
        ns["_tuned"] = real


def test_small_work_is_not_timed():
    """Under the floor the static choice is kept without running the others."""
    k = tcc.compile(CONV)
    ns = k.namespace
    ns["_TUNE_FLOOR"] = 1e9
    ns["_TUNE_CHOICES"].clear()
    with tune(None):
        k.forward(**_conv_inputs(k, B=2, I=2, O=3, Lr=5, Lc=5, Fr=2, Fc=2))
    assert list(ns["_TUNE_CHOICES"].values()) == [0]


def test_in_place_target_is_not_updated_twice():
    """A candidate that adds to an existing target is timed on a copy: the
    target ends up updated once whichever candidate wins."""
    text = """\
input x[B, L, C]
param W[O, C, F]
output f
for b, n, o, c, i: f[b, n, o] += x[b, 2*n + i, c] * W[o, c, i]
for b, n, o, c, i: f[b, n, o] += x[b, 2*n + i, c] * x[b, 2*n + i, c] * W[o, c, i]
"""
    k = tcc.compile(text)
    assert "_tuned('f:2', (('taps', _f__taps_2), ('im2col', _f__im2col_2)), " \
        "(B, f_1, O, C, F, dt), (f,))" in k.source
    ns = k.namespace
    ns["_TUNE_FLOOR"] = 0.0
    ns["_TUNE_CHOICES"].clear()
    x = k.random_inputs(seed=2, B=2, L=9, C=3, O=2, F=3)
    with tune("0"):
        static = k.forward(**x)["f"]
    with tune(None):
        measured = k.forward(**x)["f"]
    assert len(ns["_TUNE_CHOICES"]) == 2
    np.testing.assert_allclose(measured, static, rtol=1e-12, atol=1e-12)


def test_row_blocks_measured_on_and_off_the_pool_give_the_same_bits():
    k = tcc.compile((Path(__file__).parent / "data" / "examples" / "ttic_softmax.loop")
                    .read_text())
    ns = k.namespace
    ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"] = 0, 1 << 10
    x = k.random_inputs(seed=4, B=64, J=37)
    old = os.environ.get("TCC_NUM_THREADS")
    os.environ["TCC_NUM_THREADS"] = "2"
    try:
        results = {}
        for mode in ("one-thread", "threads", None):
            ns["_TUNE_CHOICES"].clear()
            with tune(mode):
                results[mode] = k.forward(**x)["p"]
                if mode is None:    # the first call measured, the second keeps it
                    (choice,) = [v for key, v in ns["_TUNE_CHOICES"].items()
                                 if key[0] == "rows"]
                    assert choice in (0, 1)
                    results["again"] = k.forward(**x)["p"]
    finally:
        if old is None:
            os.environ.pop("TCC_NUM_THREADS", None)
        else:
            os.environ["TCC_NUM_THREADS"] = old
    first = results["one-thread"]
    for mode, p in results.items():
        assert p.tobytes() == first.tobytes(), mode
