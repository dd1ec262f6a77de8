"""By-hand benchmark: Hessian-vector products (issue 14). Never run in CI.

    python benchmarks/bench_hvp.py [--repeat N] [--quick]

tcc's generated ``hvp`` (forward mode over the backward, ``tcc compile
--second-order``; the NumPy module, and the torch module beside it) against
``torch.func.jvp(torch.func.grad(f))`` and ``jax.jvp(jax.grad(f))`` under
``jax.jit``, on the MLP train step and the softmax of benchmarks/programs/.
A column whose library is not importable (jax is not a dependency of tcc) is
left out, with a note under the table. Each column is first checked
against tcc's result (params' H v carry the gradient's 1/B, so the others are
scaled alike); then the columns are timed interleaved, one call each per
round, and a ratio is the median over rounds of column / tcc.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import tcc  # noqa: E402

SIZES = {"softmax": {"B": 256, "J": 8192}, "mlp": {"B": 512, "D": 784, "H": 256, "O": 10}}
QUICK = {"softmax": {"B": 32, "J": 512}, "mlp": {"B": 64, "D": 100, "H": 32, "O": 10}}


def inputs_for(name, sizes, rng):
    if name == "softmax":
        t = {"s": rng.standard_normal((sizes["B"], sizes["J"]))}
        return t, {"s": rng.standard_normal(t["s"].shape)}, {"p": rng.standard_normal(
            t["s"].shape)}
    B, D, H, O = sizes["B"], sizes["D"], sizes["H"], sizes["O"]
    t = {"W1": rng.standard_normal((H, D)) / np.sqrt(D), "c1": rng.standard_normal(H) * 0.1,
         "W2": rng.standard_normal((O, H)) / np.sqrt(H), "c2": rng.standard_normal(O) * 0.1,
         "x": rng.standard_normal((B, D)), "y": rng.integers(0, O, B)}
    dirs = {k: rng.standard_normal(t[k].shape) for k in ("W1", "c1", "W2", "c2")}
    return t, dirs, {"L": np.ones(B)}


def torch_hvp(name, t, dirs, seeds):
    import torch
    from torch.func import grad, jvp
    tt = {k: torch.from_numpy(np.asarray(v)) for k, v in t.items()}
    wrt = list(dirs)
    seed = {k: torch.from_numpy(v) for k, v in seeds.items()}
    scale = 1.0 / t["x"].shape[0] if name == "mlp" else 1.0

    def loss(params):
        a = {**tt, **params}
        if name == "softmax":
            return (seed["p"] * torch.softmax(a["s"], dim=1)).sum()
        s = torch.relu(a["x"] @ a["W1"].T + a["c1"]) @ a["W2"].T + a["c2"]
        L = -torch.log_softmax(s, dim=1).gather(1, a["y"][:, None])[:, 0]
        return (seed["L"] * L).sum()

    primals = ({k: tt[k] for k in wrt},)
    tangents = ({k: torch.from_numpy(dirs[k]) for k in wrt},)

    def run():
        _, hv = jvp(grad(loss), primals, tangents)
        return {k: v.numpy() * scale for k, v in hv.items()}
    return run


def jax_hvp(name, t, dirs, seeds):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    wrt = list(dirs)
    fixed = {k: jnp.asarray(v) for k, v in t.items() if k not in wrt}
    seed = {k: jnp.asarray(v) for k, v in seeds.items()}
    scale = 1.0 / t["x"].shape[0] if name == "mlp" else 1.0

    def loss(params):
        a = {**fixed, **params}
        if name == "softmax":
            return (seed["p"] * jax.nn.softmax(a["s"], axis=1)).sum()
        s = jax.nn.relu(a["x"] @ a["W1"].T + a["c1"]) @ a["W2"].T + a["c2"]
        L = -jnp.take_along_axis(jax.nn.log_softmax(s, axis=1), a["y"][:, None], 1)[:, 0]
        return (seed["L"] * L).sum()

    f = jax.jit(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1])
    p = {k: jnp.asarray(t[k]) for k in wrt}
    v = {k: jnp.asarray(dirs[k]) for k in wrt}

    def run():
        hv = f(p, v)
        return {k: np.asarray(a.block_until_ready()) * scale for k, a in hv.items()}
    return run


def tcc_torch_hvp(name, t, dirs, seeds):
    """tcc's hvp from the torch backend (``--backend torch --second-order``),
    on torch tensors."""
    import torch
    k = tcc.compile(str(HERE / "programs" / f"{name}.loop"), backend="torch",
                    second_order=True)
    tt = {key: torch.from_numpy(np.asarray(v)) for key, v in t.items()}
    dd = {key: torch.from_numpy(v) for key, v in dirs.items()}
    ss = {key: torch.from_numpy(v) for key, v in seeds.items()}

    def run():
        return {key: v.numpy() for key, v in k.hvp(dd, ss, **tt).items()}
    return run


# the columns beside tcc's NumPy module, in order: (name, header, builder)
OTHERS = [("tcc-torch", "tcc torch ms", tcc_torch_hvp),
          ("torch", "torch.func ms", torch_hvp),
          ("jax", "jax ms", jax_hvp)]


def available(notes):
    """The columns whose library imports here; a note for each one that does not."""
    out = []
    for col, header, build in OTHERS:
        module = "jax" if col == "jax" else "torch"
        try:
            __import__(module)
        except Exception as err:    # noqa: BLE001 - a broken install skips the column too
            notes.append(f"{col}: {module} is not importable here ({type(err).__name__}): "
                         "column skipped")
            continue
        out.append((col, header, build))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    notes: list[str] = []
    others = available(notes)
    versions = [f"NumPy {np.__version__}"]
    for module in dict.fromkeys("jax" if c == "jax" else "torch" for c, _, _ in others):
        versions.append(f"{module} {__import__(module).__version__}")
    print(f"# {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}, {', '.join(versions)}, float64, median of "
          f"{args.repeat}")
    heads = ["workload", "sizes", "tcc hvp ms"]
    for _, header, _ in others:
        heads += [header, "ratio"]
    external = [c for c, _, _ in others if c in ("torch", "jax")]
    if external:
        heads.append("tcc / faster of " + " and ".join(external))
    print("| " + " | ".join(heads) + " |")
    print("|" + " --- |" * len(heads))
    for name in ("mlp", "softmax"):
        sizes = (QUICK if args.quick else SIZES)[name]
        k = tcc.compile(str(HERE / "programs" / f"{name}.loop"), second_order=True)
        t, dirs, seeds = inputs_for(name, sizes, rng)
        cols = {"tcc": lambda k=k, t=t, dirs=dirs, seeds=seeds: k.hvp(dirs, seeds, **t)}
        for col, _, build in others:
            cols[col] = build(name, t, dirs, seeds)
        want = cols["tcc"]()
        for col, fn in cols.items():
            got = fn()
            for key in dirs:
                scale = max(1e-12, float(np.max(np.abs(want[key]))))
                err = float(np.max(np.abs(got[key] - want[key]))) / scale
                if err > 1e-8:
                    print(f"FAIL {name} {col} {key}: relative error {err:.2e}")
        for fn in cols.values():        # warm up: first calls trace, allocate, pick kernels
            for _ in range(3):
                fn()
        times = {c: [] for c in cols}
        for _ in range(args.repeat):
            for c, fn in cols.items():
                start = time.perf_counter()
                fn()
                times[c].append(time.perf_counter() - start)
        base = statistics.median(times["tcc"]) * 1e3
        row = [name, " ".join(f"{d}={v}" for d, v in sizes.items()), f"{base:.2f}"]
        for c, _, _ in others:
            ms = statistics.median(times[c]) * 1e3
            ratio = statistics.median(b / a for a, b in zip(times["tcc"], times[c]))
            row += [f"{ms:.2f}", f"{ratio:.2f}x"]
        if external:
            best = [min(times[c][i] for c in external) for i in range(args.repeat)]
            row.append(f"{statistics.median(a / b for a, b in zip(times['tcc'], best)):.2f}x")
        print("| " + " | ".join(row) + " |")
    print("(ratio: other / tcc per round, median; above 1, tcc's NumPy module is faster."
          + (" Last column: the issue's target, at most 1.0x." if external else "") + ")")
    for note in notes:
        print(f"# {note}")


if __name__ == "__main__":
    main()
