"""Misuse of compiled kernels at run time.

Each case gives the right result or a ``ValueError`` whose message says
what to fix (the tensor, the axis, the sizes, the name to use); the arrays
passed in are never modified, whatever their layout or flags.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tcc  # noqa: E402
from tcc import api, interp  # noqa: E402
from tcc.autodiff import differentiate  # noqa: E402
from tcc.check import analyze  # noqa: E402

MLP = """
param W[J, K], c[J]
input x[B, K]
output y[B, J]
for b, j, k: h[b, j] += W[j, k] * x[b, k]
for b, j: y[b, j] = tanh(h[b, j] + c[j])
"""

XENT = """
input s[B, K]
data t[B]
output L[B]
for b, k: m[b] max= s[b, k]
for b, k: Z[b] += exp(s[b, k] - m[b])
for b: L[b] = log(Z[b]) + m[b] - s[b, t[b]]
"""

SCALARS = """
input a
param w0
data k0
output f
f = a * w0 + sin(a) * k0 - w0 ** 2
"""

CONV = """
input x[L]
param w[F]
output y[N]
for n, i: y[n] += x[2*n + i] * w[i]
"""

PROGRAMS = {"mlp": MLP, "xent": XENT, "scalars": SCALARS, "conv": CONV}
VARIANTS = [(b, o) for b in ("numpy", "opt_einsum") for o in (False, True)]
VARIANT_IDS = [f"{b}-{'opt' if o else 'plain'}" for b, o in VARIANTS]


def kernel(name, backend="numpy", optimize=True):
    return tcc.compile(PROGRAMS[name], backend=backend, optimize=optimize)


def inputs_for(name, rng, **sizes):
    B, J, K = sizes.get("B", 3), sizes.get("J", 2), sizes.get("K", 4)
    if name == "mlp":
        return {"W": rng.standard_normal((J, K)), "c": rng.standard_normal(J),
                "x": rng.standard_normal((B, K))}
    if name == "xent":
        return {"s": rng.standard_normal((B, K)), "t": rng.integers(0, max(K, 1), size=B)}
    if name == "scalars":
        return {"a": np.array(0.7), "w0": np.array(-1.3), "k0": np.array(2.0)}
    if name == "conv":
        return {"x": rng.standard_normal(sizes.get("L", 9)),
                "w": rng.standard_normal(sizes.get("F", 3))}
    raise KeyError(name)


def reference(name, tensors, seeds):
    """Forward and gradients by the reference interpreter."""
    info = analyze(tcc.parse(PROGRAMS[name]))
    saved = interp.run(info, tensors)
    grads = api.InterpEngine(info, differentiate(info)).backward(seeds, tensors, saved)
    return saved, grads


def seeds_for(k, tensors, rng):
    out = k.forward(**tensors)
    names = [o for o in k.namespace["_OUTPUTS"]]
    return {o: rng.standard_normal(np.shape(out[o])) for o in names}


def assert_close(actual, expected, rtol=1e-10):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol,
                               atol=rtol, equal_nan=True)


def snapshot(arrays: dict) -> dict:
    return {k: (np.array(v, copy=True), getattr(v, "flags", None) and v.flags.writeable)
            for k, v in arrays.items()}


def assert_untouched(arrays: dict, before: dict):
    for k, v in arrays.items():
        old, writeable = before[k]
        np.testing.assert_array_equal(np.asarray(v), old, err_msg=f"{k} was modified")
        if writeable is not None:
            assert v.flags.writeable == writeable, f"{k}'s flags changed"


def full_run(k, tensors, seeds):
    fwd = k.forward(**tensors)
    grads = k.backward(seeds, **tensors, **fwd)
    return fwd, grads


@pytest.fixture
def rng():
    return np.random.default_rng(31230)


# ------------------------------------------------------------------ dtypes

@pytest.mark.parametrize("backend, optimize", VARIANTS, ids=VARIANT_IDS)
def test_int_and_bool_arrays_are_converted(backend, optimize, rng):
    k = kernel("mlp", backend, optimize)
    ints = {"W": rng.integers(-3, 4, size=(2, 4)), "c": rng.integers(-3, 4, size=2),
            "x": rng.integers(-3, 4, size=(3, 4))}
    floats = {t: a.astype(np.float64) for t, a in ints.items()}
    seeds = {"y": rng.standard_normal((3, 2))}
    before = snapshot(ints)
    fwd_i, g_i = full_run(k, ints, seeds)
    fwd_f, g_f = full_run(k, floats, seeds)
    assert fwd_i["y"].dtype == np.float64
    assert_close(fwd_i["y"], fwd_f["y"])
    for t in ("W", "c", "x"):
        assert g_i[t].dtype == np.float64
        assert_close(g_i[t], g_f[t])
    assert_untouched(ints, before)
    bools = {t: (a > 0) for t, a in ints.items()}
    fwd_b, _ = full_run(k, bools, seeds)
    fwd_bf, _ = full_run(k, {t: a.astype(float) for t, a in bools.items()}, seeds)
    assert_close(fwd_b["y"], fwd_bf["y"])


def test_integer_data_and_python_scalars(rng):
    k = kernel("scalars")
    fwd_i = k.forward(a=0.7, w0=-1.3, k0=2)          # Python numbers, integer data
    fwd_f = k.forward(a=np.array(0.7), w0=np.array(-1.3), k0=np.array(2.0))
    assert_close(fwd_i["f"], fwd_f["f"])
    g = k.backward({"f": 1.0}, a=0.7, w0=-1.3, k0=2, **fwd_i)
    assert set(g) == {"a", "w0"}
    assert np.shape(g["a"]) == () and np.shape(g["w0"]) == ()


def test_lists_are_converted(rng):
    k = kernel("mlp")
    t = inputs_for("mlp", rng)
    lists = {n: a.tolist() for n, a in t.items()}
    assert_close(k.forward(**lists)["y"], k.forward(**t)["y"])


@pytest.mark.parametrize("backend, optimize", VARIANTS, ids=VARIANT_IDS)
def test_complex_arrays_are_a_value_error(backend, optimize, rng):
    k = kernel("mlp", backend, optimize)
    t = inputs_for("mlp", rng)
    bad = dict(t, x=t["x"] + 1j)
    with pytest.raises(ValueError, match=r"'x'.*complex"):
        k.forward(**bad)
    fwd = k.forward(**t)
    with pytest.raises(ValueError, match=r"complex"):
        k.backward({"y": np.ones((3, 2)) + 0j}, **t, **fwd)
    with pytest.raises(ValueError, match=r"'x'.*complex"):
        k.backward({"y": np.ones((3, 2))}, **bad, **fwd)


@pytest.mark.parametrize("value, what", [(None, "object"), ("abc", "<U3"),
                                          (np.array([object()] * 4), "object")])
def test_non_numeric_arrays_are_a_value_error(value, what, rng):
    k = kernel("conv")
    with pytest.raises(ValueError, match=rf"'w'.*{what}"):
        k.forward(x=rng.standard_normal(9), w=value)


def test_float32_computes_in_float32_and_mixed_in_float64(rng):
    k = kernel("mlp")
    t = inputs_for("mlp", rng)
    seeds = {"y": rng.standard_normal((3, 2))}
    t32 = {n: a.astype(np.float32) for n, a in t.items()}
    fwd32, g32 = full_run(k, t32, {"y": seeds["y"].astype(np.float32)})
    fwd64, g64 = full_run(k, t, seeds)
    assert fwd32["y"].dtype == np.float32
    assert_close(fwd32["y"], fwd64["y"], rtol=1e-5)
    for n in t:
        assert g32[n].dtype == np.float32
        assert_close(g32[n], g64[n], rtol=1e-4)
    mixed = dict(t32, x=t["x"])
    assert k.forward(**mixed)["y"].dtype == np.float64


def test_gather_data_must_be_integer_and_in_range(rng):
    k = kernel("xent")
    t = inputs_for("xent", rng)
    with pytest.raises(ValueError, match=r"'t'.*integer"):
        k.forward(s=t["s"], t=t["t"].astype(float))
    with pytest.raises(ValueError, match=r"'t' holds 4.*'s' axis 1 of size 4"):
        k.forward(s=t["s"], t=np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"'t' holds -1"):
        k.forward(s=t["s"], t=np.array([0, -1, 1]))
    for dtype in (np.int8, np.uint16, np.int32):       # any integer type
        fwd = k.forward(s=t["s"], t=t["t"].astype(dtype))
        assert_close(fwd["L"], k.forward(**t)["L"])


# ------------------------------------------------------------------ layouts

def layouts(a: np.ndarray, rng) -> dict:
    """The same values in other memory layouts."""
    out = {}
    if a.ndim >= 2:
        out["fortran"] = np.asfortranarray(a)
        out["transposed view"] = np.ascontiguousarray(a.T).T
    if a.ndim >= 1:
        big = np.zeros(tuple(2 * n for n in a.shape), dtype=a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        out["strided view"] = view
        rev = np.ascontiguousarray(a[::-1])[::-1]
        out["reversed view"] = rev
        out["broadcast"] = np.broadcast_to(a.reshape((1,) + a.shape), (3,) + a.shape)[1]
    ro = np.array(a)
    ro.setflags(write=False)
    out["read-only"] = ro
    return out


@pytest.mark.parametrize("backend, optimize", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("name", ["mlp", "xent", "conv", "scalars"])
def test_any_layout_gives_the_same_results_and_is_left_alone(name, backend, optimize, rng):
    k = kernel(name, backend, optimize)
    t = inputs_for(name, rng)
    seeds = seeds_for(k, t, rng)
    fwd0, g0 = full_run(k, t, seeds)
    kinds = set()
    for a in t.values():
        kinds |= set(layouts(a, rng))
    for kind in sorted(kinds):
        tt = {n: layouts(a, rng).get(kind, a) for n, a in t.items()}
        ss = {o: layouts(s, rng).get(kind, s) for o, s in seeds.items()}
        for n in t:
            np.testing.assert_array_equal(tt[n], t[n])
        before, sbefore = snapshot(tt), snapshot(ss)
        fwd, g = full_run(k, tt, ss)
        for o in fwd0:
            assert_close(fwd[o], fwd0[o])
        for n in g0:
            assert_close(g[n], g0[n])
        assert_untouched(tt, before)
        assert_untouched(ss, sbefore)


@pytest.mark.parametrize("backend, optimize", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("name", ["mlp", "xent", "conv", "scalars"])
def test_forward_results_do_not_change_under_backward(name, backend, optimize, rng):
    """backward() may not write into the dict forward() returned, nor into the
    seeds: calling it twice gives the same gradients."""
    k = kernel(name, backend, optimize)
    t = inputs_for(name, rng)
    seeds = seeds_for(k, t, rng)
    fwd = k.forward(**t)
    before, sbefore, tbefore = snapshot(fwd), snapshot(seeds), snapshot(t)
    g1 = k.backward(seeds, **t, **fwd)
    g2 = k.backward(seeds, **t, **fwd)
    for n in g1:
        np.testing.assert_array_equal(g1[n], g2[n])
    assert_untouched(fwd, before)
    assert_untouched(seeds, sbefore)
    assert_untouched(t, tbefore)


# ----------------------------------------------------------- odd sizes

@pytest.mark.parametrize("backend, optimize", VARIANTS, ids=VARIANT_IDS)
def test_batch_of_one(backend, optimize, rng):
    for name in ("mlp", "xent"):
        k = kernel(name, backend, optimize)
        t = inputs_for(name, rng, B=1)
        seeds = seeds_for(k, t, rng)
        fwd, g = full_run(k, t, seeds)
        saved, ref = reference(name, t, seeds)
        for o in k.namespace["_OUTPUTS"]:
            assert fwd[o].shape[0] == 1
            assert_close(fwd[o], saved[o])
        for n, r in ref.items():
            assert_close(g[n], np.zeros_like(t[n]) if r is None else r)


@pytest.mark.parametrize("backend, optimize", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("name, sizes", [("mlp", {"B": 0}), ("mlp", {"K": 0}),
                                         ("mlp", {"J": 0}), ("xent", {"B": 0}),
                                         ("xent", {"K": 0}), ("conv", {"L": 0}),
                                         ("conv", {"F": 0}), ("conv", {"L": 2})])
def test_zero_size_dims(name, sizes, backend, optimize, rng):
    """Empty arrays: the interpreter's answer (sums of nothing are 0, a mean
    over an empty batch is nan), or a ValueError that names the size."""
    k = kernel(name, backend, optimize)
    t = inputs_for(name, rng, **sizes)
    try:
        fwd = k.forward(**t)
    except ValueError as err:
        msg = str(err)
        assert any(w in msg for w in ("size", "empty", "range")), msg
        with pytest.raises(ValueError):
            interp.run(analyze(tcc.parse(PROGRAMS[name])), t)
        return
    seeds = {o: rng.standard_normal(np.shape(fwd[o])) for o in k.namespace["_OUTPUTS"]}
    with np.errstate(all="ignore"):
        g = k.backward(seeds, **t, **fwd)
        saved, ref = reference(name, t, seeds)
    for o in k.namespace["_OUTPUTS"]:
        assert_close(fwd[o], saved[o])
    for n, r in ref.items():
        assert g[n].shape == np.shape(t[n])
        assert_close(g[n], np.zeros_like(t[n]) if r is None else r)


# ------------------------------------------------------------ names, shapes

def test_missing_and_extra_tensors_are_named(rng):
    k = kernel("mlp")
    t = inputs_for("mlp", rng)
    with pytest.raises(ValueError, match=r"missing tensor 'x'"):
        k.forward(W=t["W"], c=t["c"])
    with pytest.raises(ValueError, match=r"missing tensors 'W', 'c'"):
        k.forward(x=t["x"])
    with pytest.raises(ValueError, match=r"unknown tensor 'X'.*takes W, c, x"):
        k.forward(**t, X=t["x"])
    fwd = k.forward(**t)
    with pytest.raises(ValueError, match=r"missing tensor 'x'"):
        k.backward({"y": np.ones((3, 2))}, W=t["W"], c=t["c"], **fwd)
    with pytest.raises(ValueError, match=r"unknown tensor 'q'"):
        k.backward({"y": np.ones((3, 2))}, **t, **fwd, q=1.0)


def test_backward_without_the_saved_values_says_how_to_call_it(rng):
    k = kernel("xent")
    t = inputs_for("xent", rng)
    fwd = k.forward(**t)
    saved = [n for n in fwd if n != "L"]
    assert saved, "the optimized softmax saves values for the backward"
    with pytest.raises(ValueError, match=r"forward\(\)"):
        k.backward({"L": np.ones(3)}, **t)
    part = {n: fwd[n] for n in saved[1:]}
    with pytest.raises(ValueError, match=repr(saved[0])):
        k.backward({"L": np.ones(3)}, **t, **part)


def test_grad_names_are_spelled_the_python_way(rng):
    """A compiled backward program takes p_grad=, not p.grad."""
    printed = tcc.grad_text(MLP)
    k = tcc.compile(printed)
    t = inputs_for("mlp", rng)
    fwd = kernel("mlp", optimize=False).forward(**t)
    args = {n: a for n, a in {**t, **fwd}.items() if n in k.namespace["_FORWARD_KINDS"]}
    args["y_grad"] = np.ones((3, 2))
    out = k.forward(**args)
    assert {"W_grad", "c_grad", "x_grad"} <= set(out)
    dotted = dict(args)
    dotted["y.grad"] = dotted.pop("y_grad")
    with pytest.raises(ValueError, match=r"y_grad"):      # the name to use
        k.forward(**dotted)


def test_seeds(rng):
    k = kernel("mlp")
    t = inputs_for("mlp", rng)
    fwd = k.forward(**t)
    with pytest.raises(ValueError, match=r"seed for 'y' has shape \(2, 3\), but 'y' has "
                                         r"shape \(3, 2\)"):
        k.backward({"y": np.ones((2, 3))}, **t, **fwd)
    with pytest.raises(ValueError, match=r"seed for 'y' has shape \(\)"):
        k.backward({"y": 1.0}, **t, **fwd)
    with pytest.raises(ValueError, match=r"seed for 'y_grad'.*not an output.*y"):
        k.backward({"y_grad": np.ones((3, 2))}, **t, **fwd)
    with pytest.raises(ValueError, match=r"seed for 'h'.*not an output"):
        k.backward({"h": np.ones((3, 2))}, **t, **fwd)
    zero = k.backward({}, **t, **fwd)                       # a missing seed is zero
    for n, g in zero.items():
        assert g.shape == np.shape(t[n]) and not g.any()
    ints = k.backward({"y": np.ones((3, 2), dtype=int)}, **t, **fwd)
    floats = k.backward({"y": np.ones((3, 2))}, **t, **fwd)
    for n in ints:
        assert_close(ints[n], floats[n])
    lists = k.backward({"y": np.ones((3, 2)).tolist()}, **t, **fwd)
    for n in lists:
        assert_close(lists[n], floats[n])


def test_wrong_ranks_and_sizes_name_tensor_axis_and_sizes(rng):
    k = kernel("mlp")
    t = inputs_for("mlp", rng)
    with pytest.raises(ValueError, match=r"'x' must have rank 2 \(\[B, K\]\), but has shape "
                                         r"\(12,\)"):
        k.forward(**dict(t, x=t["x"].ravel()))
    with pytest.raises(ValueError, match=r"'c' must have rank 1.*\(2, 1\)"):
        k.forward(**dict(t, c=t["c"][:, None]))
    with pytest.raises(ValueError, match=r"'x' axis 1 \(K\) has size 5, but K = 4 from 'W' "
                                         r"axis 1"):
        k.forward(**dict(t, x=np.ones((3, 5))))
    with pytest.raises(ValueError, match=r"'c' axis 0 \(J\) has size 3"):
        k.forward(**dict(t, c=np.ones(3)))
    fwd = k.forward(**t)
    other = inputs_for("mlp", rng, B=5)
    with pytest.raises(ValueError, match=r"B"):
        k.backward({"y": np.ones((5, 2))}, **other, **fwd)    # saved values of another batch
    with pytest.raises(ValueError, match=r"'x' must have rank 2"):
        k.backward({"y": np.ones((3, 2))}, **dict(t, x=np.ones(4)), **fwd)


def test_literal_sizes_and_empty_windows(rng):
    k = tcc.compile("input x[3, K]\noutput y[K]\nfor k: y[k] = x[0, k] * x[2, k]\n")
    with pytest.raises(ValueError, match=r"'x' axis 0 must have size 3, but has 2"):
        k.forward(x=np.ones((2, 4)))
    conv = kernel("conv")
    with pytest.raises(ValueError, match=r"range of index 'n' is empty.*'x' axis 0 has size 2"):
        conv.forward(x=np.ones(2), w=np.ones(3))


def test_a_tensor_named_grads_is_allowed(rng):
    k = tcc.compile("input grads[N]\noutput y\nfor i: y += grads[i] ** 2\n")
    x = rng.standard_normal(4)
    fwd = k.forward(grads=x)
    g = k.backward({"y": 1.0 + 0 * fwd["y"]}, grads=x, **fwd)
    assert_close(g["grads"], 2 * x)


def test_forward_results_are_not_views_of_the_inputs(rng):
    """An output that copies an input is a new array: changing it later (or a
    backward that writes into saved values) must not change the caller's
    input."""
    for src in ("input x[N]\noutput y[N]\nfor i: y[i] = x[i]\n",
                "input x[N]\noutput y[N]\nfor i: y[i] += x[i]\n",
                "input x\noutput y\ny = x\n",
                "input x\noutput y\ny += x\n"):
        for optimize in (False, True):
            k = tcc.compile(src, optimize=optimize)
            x = np.asarray(rng.standard_normal(3) if "[N]" in src else 1.5)
            fwd = k.forward(x=x)
            assert not np.shares_memory(fwd["y"], x), src


def test_random_inputs_are_valid(rng):
    for name in PROGRAMS:
        k = kernel(name)
        t = k.random_inputs(seed=3)
        fwd = k.forward(**t)
        k.backward({}, **t, **fwd)
    with pytest.raises(ValueError, match=r"unknown size Q"):
        kernel("mlp").random_inputs(Q=3)


# ------------------------------------------- bugs these tests found (fixed)

def test_bug_accumulating_into_a_scalar_never_writes_into_an_argument():
    """A 0-d ``+=`` started as ``np.asarray(x)``, an alias of the argument,
    and the next ``-=`` wrote into it: forward() overwrote the caller's x (and
    z, which reads x afterwards, came out wrong); backward() did the same to
    the caller's seed, so a second call gave other gradients and ``tcc check``
    failed on a correct backward."""
    for optimize in (False, True):
        k = tcc.compile("input x\noutput f, z\nf += x\nf -= 2 * x\nz += x\n",
                        optimize=optimize)
        x = np.array(1.5)
        fwd = k.forward(x=x)
        assert x == 1.5 and fwd["z"] == 1.5 and fwd["f"] == -1.5
        src = "input x\noutput y, z\ne = x * 2\ny += e\nz += x\n"
        k = tcc.compile(src, optimize=optimize)
        seeds = {"y": np.array(1.0), "z": np.array(1.0)}
        fwd = k.forward(x=x)
        assert k.backward(seeds, x=x, **fwd)["x"] == 3.0
        assert k.backward(seeds, x=x, **fwd)["x"] == 3.0
        assert seeds["z"] == 1.0
    assert api.check(src).ok


def test_bug_an_empty_window_range_is_a_value_error():
    """A zero-size filter made the valid-range inference of ``x[2*n + i]``
    raise UnboundLocalError in the run-time checks."""
    k = kernel("conv")
    try:
        fwd = k.forward(x=np.ones(9), w=np.ones(0))
    except ValueError as err:
        assert "range" in str(err) or "size" in str(err)
    else:
        assert fwd["y"].shape[0] >= 0
