"""By-hand benchmark: causal masks and causal sums, tcc against hand-written NumPy.

Never run in CI. From the repository root:

    python benchmarks/bench_causal.py [--T 1024] [--D 64] [--repeat 7]

Three workloads, forward + backward each:

- scores: ``s[t, j] += q[t, e] * k[j, e] * (j <= t)``; by hand ``np.tril(q @ k.T)``;
- masked values: ``o[t, d] += a[t, j] * v[j, d] * (j <= t)``; by hand ``np.tril(a) @ v``;
- prefix sum: ``y[t, d] += x[j, d] * (j <= t)``; by hand ``np.cumsum(x, axis=0)``.

Each is also written by hand the way a dense mask does it (a select over
``arange`` views, ``mask @ x`` for the prefix sum): the ``dense mask`` column,
what tcc generated before the triangles and running sums. Ratios are column
time / hand-written time (above 1: slower than by hand); medians of --repeat
runs, after a check that every column agrees.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import tcc  # noqa: E402

PROGRAMS = {
    "scores": "input q[T, E], k[T, E]\noutput s[T, T]\n"
              "for t, j, e: s[t, j] += q[t, e] * k[j, e] * (j <= t)\n",
    "masked values": "input a[T, T], v[T, D]\noutput o[T, D]\n"
                     "for t, j, d: o[t, d] += a[t, j] * v[j, d] * (j <= t)\n",
    "prefix sum": "input x[T, D]\noutput y[T, D]\nfor t, j, d: y[t, d] += x[j, d] * (j <= t)\n",
}


def mask(T):
    return np.arange(T) <= np.arange(T)[:, None]


def by_hand(name, dense):
    """forward + backward of one workload, written by hand."""
    sel = (lambda m: np.where(mask(len(m)), m, 0.0)) if dense else np.tril
    if name == "scores":
        def run(q, k, g):
            s = sel(q @ k.T)
            gs = sel(g)
            return s, gs @ k, gs.T @ q
    elif name == "masked values":
        def run(a, v, g):
            ta = sel(a)
            return ta @ v, sel(g @ v.T), ta.T @ g
    else:
        def run(x, g):
            if dense:
                m = mask(len(x)).astype(x.dtype)
                return m @ x, m.T @ g
            return np.cumsum(x, axis=0), np.flip(np.cumsum(np.flip(g, axis=0), axis=0), axis=0)
    return run


def arrays(name, T, D, rng):
    if name == "scores":
        return {"q": rng.standard_normal((T, D)), "k": rng.standard_normal((T, D))}, (T, T)
    if name == "masked values":
        return {"a": rng.standard_normal((T, T)), "v": rng.standard_normal((T, D))}, (T, D)
    return {"x": rng.standard_normal((T, D))}, (T, D)


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name, src, T, D, repeat, rng) -> str:
    """One workload's line of the table."""
    inputs, out_shape = arrays(name, T, D, rng)
    g = rng.standard_normal(out_shape)
    k = tcc.compile(src)
    outname = {"scores": "s", "masked values": "o"}.get(name, "y")
    args = (*inputs.values(), g)

    def run_tcc():
        fwd = k.forward(**inputs)
        return fwd, k.backward({outname: g}, **inputs, **fwd)

    hand, dense = by_hand(name, False), by_hand(name, True)
    fwd, grads = run_tcc()
    got = (fwd[outname], *(grads[t] for t in inputs))
    for w, x, d in zip(hand(*args), got, dense(*args)):
        assert np.allclose(w, x) and np.allclose(w, d), f"{name}: the columns disagree"
    base = median_time(lambda: hand(*args), repeat)
    t_tcc = median_time(run_tcc, repeat)
    t_dense = median_time(lambda: dense(*args), repeat)
    return f"| {name} | {base * 1e3:.2f} | {t_tcc / base:.2f} | {t_dense / base:.2f} |"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"T = {args.T}, D = {args.D}, median of {args.repeat}; ratios against by hand\n")
    print("| workload | by hand (ms) | tcc | dense mask |")
    print("|---|---|---|---|")
    for name, src in PROGRAMS.items():
        print(row(name, src, args.T, args.D, args.repeat, rng))


if __name__ == "__main__":
    main()
