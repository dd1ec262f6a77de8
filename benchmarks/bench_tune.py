"""By-hand benchmark of the measured choices (TCC_TUNE): each candidate strategy
of the generated NumPy module, forced with TCC_TUNE=<label>, and the measured
choice (TCC_TUNE unset), against hand-written NumPy, on the workloads whose
modules have measured choices (the convolutions).

Never run in CI. From the repository root:

    python benchmarks/bench_tune.py [--quick] [--only NAME[,NAME]] [--repeat N] [--dtype float32]

Timing, checking and the table are bench.py's: interleaved rounds, each
column checked against the hand-written result first, ratios the median over
rounds of column / hand-written. Below the table, the candidate the measured
mode kept at each statement (the module's ``_TUNE_CHOICES``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

import tcc  # noqa: E402


def _labels(source: str) -> list[str]:
    """The candidate labels of a module's measured choices, in order of first use."""
    out: list[str] = []
    for label in re.findall(r"\('([a-z0-9-]+)', _\w+\)", source):
        if label not in out:
            out.append(label)
    return out


def _forced(kernel, mode: str | None):
    """A bench column: the module's forward+backward under TCC_TUNE=mode."""
    def step(t, seeds):
        old = os.environ.get("TCC_TUNE")
        if mode is None:
            os.environ.pop("TCC_TUNE", None)
        else:
            os.environ["TCC_TUNE"] = mode
        try:
            saved = kernel.forward(**t)
            grads = kernel.backward(seeds, **{**t, **saved})
        finally:
            if old is None:
                os.environ.pop("TCC_TUNE", None)
            else:
                os.environ["TCC_TUNE"] = old
        return {name: saved[name] for name in seeds}, grads
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to smoke-test")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="only these workloads")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop a workload's rounds after this long (default 60)")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    rows, labels_all, kept = [], ["hand-written"], []
    for w in bench.WORKLOADS:
        if wanted is not None and w.name not in wanted:
            continue
        kernel = tcc.compile(str(w.program), backend="numpy")
        labels = _labels(kernel.source)
        if not labels:
            continue
        cols = {"hand-written": lambda w: w.hand}
        for label in labels:
            cols[f"TCC_TUNE={label}"] = lambda w, k=kernel, label=label: _forced(k, label)
        cols["measured"] = lambda w, k=kernel: _forced(k, None)
        kernel.namespace["_TUNE_CHOICES"].clear()
        rows.append(bench.bench_workload(w, cols, args))
        labels_all += [c for c in cols if c not in labels_all]
        for (site, _key), k in kernel.namespace["_TUNE_CHOICES"].items():
            if site != "rows":
                kept.append(f"{w.name}: {site} kept candidate {k}")
    labels_all = [c for c in labels_all if c != "measured"] + ["measured"]
    cols = ["workload", "sizes"]
    for label in labels_all:
        cols += [label] if label == "hand-written" else [label, label + " ratio"]
    print()
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for row in rows:
        print("| " + " | ".join(row.get(c, "") for c in cols) + " |")
    print()
    for line in kept:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
