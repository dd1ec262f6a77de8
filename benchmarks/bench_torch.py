"""By-hand benchmark: tcc's torch backend against torch eager autograd and
torch.compile, forward + backward, in the same run. Never run in CI.

    python benchmarks/bench_torch.py [--quick] [--only NAME[,NAME]] [--repeat N]
                                     [--dtype float32] [--device cuda] [--no-compile]

Workloads: the six of bench.py (benchmarks/programs/*.loop) plus layer norm
(B=1024, D=1024) and causal attention. Each has a torch function computing the
same outputs the way a torch user writes them (F.softmax, F.layer_norm,
F.conv2d, F.scaled_dot_product_attention ...). Columns:

- eager: the torch function, gradients by autograd (torch.autograd.grad);
- compile: the same function through torch.compile (compiled once, warm);
- tcc: the generated torch module's forward() then backward(), called
  directly, compiled without batch averaging (torch's gradient convention,
  as tcc.torch uses it);
- tcc.torch: the same module through the tcc.torch.function autograd adapter.

Every column is first checked against eager (outputs and gradients). The
columns are timed interleaved, one call of each per round, each round starting
at the next column (so that no column always follows torch.compile's, whose
worker threads spin on after it returns), and a ratio is the median over
rounds of (column / eager), or / compile, so that load on a shared machine
hits every column of a round alike. torch runs with its default number of
threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the workloads' data)

import tcc.torch as tt  # noqa: E402

STRIDE = bench.STRIDE


def t_softmax(s):
    return {"p": torch.softmax(s, dim=1)}


def t_mlp(x, y, W1, c1, W2, c2):
    s = torch.relu(x @ W1.T + c1) @ W2.T + c2
    return {"L": -torch.log_softmax(s, dim=1).gather(1, y[:, None])[:, 0]}


def t_ugrnn(h, x, WhR, WxR, BR, WhG, WxG, BG):
    R = torch.tanh(h @ WhR.T + x @ WxR.T - BR)
    G = torch.sigmoid(h @ WhG.T + x @ WxG.T - BG)
    return {"hn": G * h + (1 - G) * R}


def t_conv1d(x, W):
    return {"f": F.conv1d(x.transpose(1, 2), W, stride=STRIDE).transpose(1, 2)}


def t_conv2d(X, H):
    return {"Y": F.conv2d(X, H)}


def t_chain(A, Bm, C, E):
    return {"D": torch.linalg.multi_dot([A, Bm, C, E])}


def t_layernorm(x, g, be):
    return {"y": F.layer_norm(x, x.shape[1:], g, be, eps=1e-5)}


def t_attention(Q, K, V, M):
    return {"O": F.scaled_dot_product_attention(Q, K, V, is_causal=True, scale=0.125)}


def make_layernorm(rng, dtype, B, D):
    t = {"x": bench._normal(rng, (B, D), dtype), "g": 1 + bench._normal(rng, D, dtype, 0.1),
         "be": bench._normal(rng, D, dtype, 0.1)}
    return t, {"y": bench._normal(rng, (B, D), dtype)}


def make_attention(rng, dtype, B, N, D, E):
    t = {"Q": bench._normal(rng, (B, N, D), dtype), "K": bench._normal(rng, (B, N, D), dtype),
         "V": bench._normal(rng, (B, N, E), dtype), "M": np.tril(np.ones((N, N), dtype))}
    return t, {"O": bench._normal(rng, (B, N, E), dtype)}


# name: (program, torch function, data maker, sizes, quick sizes, differentiable)
WORKLOADS = {
    "softmax": ("softmax.loop", t_softmax, bench.make_softmax, dict(B=256, J=8192),
                dict(B=64, J=2048), ("s",)),
    "mlp": ("mlp.loop", t_mlp, bench.make_mlp, dict(B=512, D=784, H=256, O=10),
            dict(B=128, D=196, H=64, O=10), ("W1", "c1", "W2", "c2")),
    "ugrnn": ("ugrnn.loop", t_ugrnn, bench.make_ugrnn, dict(B=256, J=512, K=256),
              dict(B=64, J=128, K=64), ("h", "WhR", "WxR", "BR", "WhG", "WxG", "BG")),
    "conv1d": ("conv1d.loop", t_conv1d, bench.make_conv1d, dict(B=32, L=4096, C=64, O=64, F=5),
               dict(B=8, L=1024, C=32, O=32, F=5), ("x", "W")),
    "conv2d": ("conv2d.loop", t_conv2d, bench.make_conv2d,
               dict(B=16, I=32, O=64, Lr=32, Lc=32, Fr=3, Fc=3),
               dict(B=4, I=16, O=32, Lr=16, Lc=16, Fr=3, Fc=3), ("X", "H")),
    "chain": ("chain.loop", t_chain, bench.make_chain, dict(I=700, J=700, K=700, L=700, M=700),
              dict(I=200, J=200, K=200, L=200, M=200), ("A", "Bm", "C", "E")),
    "layernorm": ("layernorm_affine.loop", t_layernorm, make_layernorm, dict(B=1024, D=1024),
                  dict(B=256, D=256), ("x", "g", "be")),
    "attention": ("attention_causal.loop", t_attention, make_attention,
                  dict(B=16, N=512, D=64, E=64), dict(B=4, N=128, D=64, E=64), ("Q", "K", "V")),
}


def autograd_step(fn, wrt):
    def step(t, seeds):
        leaves = {n: (x.detach().requires_grad_(True) if n in wrt else x) for n, x in t.items()}
        out = fn(**leaves)
        names = list(seeds)
        grads = torch.autograd.grad([out[n] for n in names], [leaves[n] for n in wrt],
                                    [seeds[n] for n in names])
        return {n: o.detach() for n, o in out.items()}, dict(zip(wrt, grads))
    return step


def tcc_step(f, wrt):
    k = f.spec.kernel

    def step(t, seeds):
        fwd = k.forward(**t)
        grads = k.backward(seeds, **t, **fwd)
        return {n: fwd[n] for n in seeds}, {n: grads[n] for n in wrt}
    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def check(name, got, want, rtol):
    bad = []
    for part in (0, 1):
        for n, w in want[part].items():
            g = got[part][n]
            scale = float(w.abs().max()) or 1.0
            err = float((g.to(w.dtype) - w).abs().max()) / scale
            if not err <= rtol:
                bad.append(f"{name} {'output' if part == 0 else 'grad'} {n}: {err:.2e}")
    return bad


def run(name, args, device, dtype):
    program, fn, make, sizes, quick, wrt = WORKLOADS[name]
    sizes = quick if args.quick else sizes
    rng = np.random.default_rng(0)
    data, seeds = make(rng, np.dtype(dtype), **sizes)
    tdt = getattr(torch, dtype)
    t = {n: torch.as_tensor(a).to(device) for n, a in data.items()}
    t = {n: (x.to(tdt) if x.is_floating_point() else x) for n, x in t.items()}
    seeds = {n: torch.as_tensor(a).to(device=device, dtype=tdt) for n, a in seeds.items()}
    cols = {"eager": autograd_step(fn, wrt)}
    if not args.no_compile:
        cols["compile"] = autograd_step(torch.compile(fn), wrt)
    f = tt.function(PROGRAMS / program)
    cols["tcc"] = tcc_step(f, wrt)
    cols["tcc.torch"] = autograd_step(f, wrt)
    want = cols["eager"](t, seeds)
    rtol = 1e-8 if dtype == "float64" else 2e-3
    problems = []
    for c, step in cols.items():
        if c != "eager":
            problems += check(f"{name} [{c}]", step(t, seeds), want, rtol)
    for p in problems:
        print("FAIL", p, file=sys.stderr)
    times = {c: [] for c in cols}
    names = list(cols)
    for r in range(args.repeat):
        # each round starts at the next column: a column's threads still busy after
        # it returns (torch.compile's OpenMP workers spin for a while) slow whichever
        # column comes next, so every column comes next as often
        for c in names[r % len(names):] + names[:r % len(names)]:
            step = cols[c]
            sync(device)
            t0 = time.perf_counter()
            step(t, seeds)
            sync(device)
            times[c].append(time.perf_counter() - t0)
    row = {"workload": name, "sizes": " ".join(f"{k}={v}" for k, v in sizes.items())}
    for c in cols:
        row[c] = statistics.median(times[c]) * 1e3
    for c in cols:
        if c != "eager":
            row[f"{c}/eager"] = statistics.median(
                a / b for a, b in zip(times[c], times["eager"]))
    if "compile" in cols:
        for c in ("tcc", "tcc.torch"):
            row[f"{c}/compile"] = statistics.median(
                a / b for a, b in zip(times[c], times["compile"]))
    row["ok"] = not problems
    return row


PROGRAMS = HERE / "programs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    names = [n for n in args.only.split(",") if n] or list(WORKLOADS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, "
          f"{args.dtype}, median of {args.repeat}; {os.cpu_count()} cores")
    rows = [run(n, args, device, args.dtype) for n in names]
    cols = [c for c in ("eager", "compile", "tcc", "tcc.torch") if c in rows[0]]
    ratios = [c for c in ("tcc/eager", "tcc/compile", "tcc.torch/eager") if c in rows[0]]
    print("| workload | sizes | " + " | ".join(f"{c} ms" for c in cols) + " | " +
          " | ".join(ratios) + " |")
    print("|" + " --- |" * (2 + len(cols) + len(ratios)))
    for r in rows:
        print(f"| {r['workload']} | {r['sizes']} | " +
              " | ".join(f"{r[c]:.3g}" for c in cols) + " | " +
              " | ".join(f"{r[c]:.2f}x" for c in ratios) + " |" + ("" if r["ok"] else " FAIL"))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
