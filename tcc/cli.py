"""The ``tcc`` command line: parse, grad, compile, check, explain."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .backends import REGISTRY
from .errors import TccError

EPILOG = """examples:
  tcc parse softmax.loop            how tcc read the program, with inferred shapes
  tcc grad softmax.loop             the backward program (TTIC style += loops)
  tcc compile softmax.loop -o softmax.py
  tcc check softmax.loop --sizes B=3,J=5
  tcc check ugrnn.loop --backward my_answer.loop
"""


def _sizes(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or not name.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"expected NAME=SIZE, got {part!r}")
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"size of {name.strip()} must be an integer, "
                                             f"got {value!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"size of {name.strip()} must be positive")
        out[name.strip()] = n
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tcc", description="tcc: a tensor-contraction compiler for einsum-style loop "
        "programs (.loop files).", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"tcc {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("parse", help="print the program as tcc read it, with inferred shapes")
    p.add_argument("file", metavar="FILE.loop")

    p = sub.add_parser("grad", help="print the backward program")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--no-optimize", action="store_true", help="print the raw backward")

    p = sub.add_parser("compile", help="write a standalone Python module")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("-o", "--output", metavar="OUT.py", help="write here (default: stdout)")
    p.add_argument("--backend", choices=tuple(REGISTRY), default="numpy")
    p.add_argument("--no-optimize", action="store_true")

    p = sub.add_parser("check", help="check gradients against finite differences")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--sizes", type=_sizes, default={}, metavar="B=3,J=5",
                   help="dim sizes for the random inputs (default: small ones)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--backward", metavar="MINE.loop",
                   help="check this hand-written backward program instead of tcc's")

    p = sub.add_parser("explain", help="show the optimizations that fire and their cost")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--verify", action="store_true",
                   help="run each rewrite's before and after on random data")
    return ap


def _exists(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if os.path.isdir(path):
        raise IsADirectoryError(path)


def run(args) -> int:
    from . import api
    _exists(args.file)
    if args.command == "parse":
        from .check import describe
        prog, text, filename = api.load(args.file)
        sys.stdout.write(describe(api._checked(prog, text, filename)))
        return 0
    if args.command == "grad":
        sys.stdout.write(api.grad_text(args.file, optimize=not args.no_optimize))
        return 0
    if args.command == "check":
        if args.backward:
            _exists(args.backward)
        report = api.check(args.file, sizes=args.sizes, seed=args.seed,
                           backward=args.backward)
        print(report.format())
        return 0 if report.ok else 1
    if args.command == "compile":
        from .compiler import compile_source
        source = compile_source(args.file, backend=args.backend,
                                optimize=not args.no_optimize)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(source)
        else:
            sys.stdout.write(source)
        return 0
    if args.command == "explain":
        from .explain import explain
        text, ok = explain(args.file, verify_rewrites=args.verify)
        sys.stdout.write(text)
        return 0 if ok else 1
    raise AssertionError(args.command)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4000))
    try:
        return run(args)
    except TccError as err:
        print(err.format(), file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        what = {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory"}.get(
            type(err), err.strerror or "permission denied")
        print(f"tcc: error: cannot read '{err.filename or err}': {what}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as err:
        print(f"tcc: error: {args.file}: not UTF-8 text ({err.reason} at byte {err.start})",
              file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"tcc: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
