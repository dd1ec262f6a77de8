"""The ``tcc`` command line: parse, grad, jvp, hvp, hessian, compile, check, graph,
explain."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .backends import REGISTRY
from .errors import TccError
from .grader import DEFAULT_SEEDS

EPILOG = """examples:
  tcc parse softmax.loop            how tcc read the program, with inferred shapes
  tcc grad softmax.loop             the backward program (TTIC style += loops)
  tcc jvp softmax.loop              the tangent program (forward mode: X.dot -> Y.dot)
  tcc hvp softmax.loop              Hessian-vector products (X.grad.dot)
  tcc hessian mlp.loop --diagonal   the diagonal Hessian recursion (X.hess)
  tcc compile softmax.loop -o softmax.py
  tcc check softmax.loop --sizes B=3,J=5
  tcc check ugrnn.loop --backward my_answer.loop
  tcc check xent.loop --backward mine.loop --data P=onehot
  tcc graph ugrnn.loop --backward -o ugrnn.svg
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


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def _data(text: str) -> dict[str, str]:
    from .gradcheck import parse_data_kind
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, kind = part.partition("=")
        if not eq or not name.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"expected NAME=KIND, got {part!r}")
        try:
            out[name.strip()] = parse_data_kind(name.strip(), kind)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
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

    p = sub.add_parser("jvp", help="print the tangent program (forward mode)")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--no-optimize", action="store_true", help="print the raw tangents")

    p = sub.add_parser("hvp", help="print the Hessian-vector product program")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--no-optimize", action="store_true", help="print the raw program")

    p = sub.add_parser("hessian", help="print the diagonal Hessian recursion (--diagonal)")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--diagonal", action="store_true",
                   help="the diagonal, off-diagonal terms neglected (Becker and LeCun)")
    p.add_argument("--no-optimize", action="store_true", help="print the raw recursion")

    p = sub.add_parser("compile", help="write a standalone Python module")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("-o", "--output", metavar="OUT.py", help="write here (default: stdout)")
    p.add_argument("--backend", choices=tuple(REGISTRY), default="numpy")
    p.add_argument("--no-optimize", action="store_true")
    p.add_argument("--second-order", action="store_true",
                   help="add jvp, hvp and hessian_diagonal to the module")

    p = sub.add_parser("check", help="check gradients against finite differences")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--sizes", type=_sizes, default={}, metavar="B=3,J=5",
                   help="dim sizes for the random inputs (default: small ones)")
    p.add_argument("--seed", type=int, default=0, help="first random seed (default 0)")
    p.add_argument("--seeds", type=_positive, default=DEFAULT_SEEDS, metavar="N",
                   help=f"independent random draws; passes only if all do "
                   f"(default {DEFAULT_SEEDS})")
    p.add_argument("--backward", metavar="MINE.loop",
                   help="check this hand-written backward program instead of tcc's")
    p.add_argument("--data", type=_data, action="append", default=[], metavar="P=onehot",
                   help="how a data tensor is drawn: onehot, probabilities, positive or "
                   "int:K (repeat, or separate by commas)")
    p.add_argument("--strict", action="store_true",
                   help="fail when a gradient is all zero at every draw (not exercised)")
    p.add_argument("--second-order", action="store_true",
                   help="check the JVP against differences of the forward and the HVP "
                   "against differences of the compiled backward, on random directions")

    p = sub.add_parser("graph", help="draw the computation graph (svg, png or dot)")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("-o", "--output", metavar="OUT.svg",
                   help="write here: .svg, .png, .pdf or .dot (default: dot text to stdout)")
    p.add_argument("--backward", action="store_true",
                   help="draw the backward beside the forward")
    p.add_argument("--no-optimize", action="store_true",
                   help="with --backward: the raw backward, before optimization")

    p = sub.add_parser("explain", help="show the optimizations that fire and their cost")
    p.add_argument("file", metavar="FILE.loop")
    p.add_argument("--verify", action="store_true",
                   help="run each rewrite's before and after on random data")
    p.add_argument("--lowered", action="store_true",
                   help="also print the target IR the backends print (views, contractions, "
                        "scatters)")
    return ap


def _exists(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if os.path.isdir(path):
        raise IsADirectoryError(path)


def _differentiable(api, path: str):
    """Stop with one line when the program has nothing to differentiate."""
    from .grader import NothingToDifferentiate, nothing_to_differentiate
    prog, text, filename = api.load(path)
    why = nothing_to_differentiate(api._checked(prog, text, filename), filename)
    if why:
        raise NothingToDifferentiate(why)


def run(args) -> int:
    from . import api
    _exists(args.file)
    if args.command == "parse":
        from .check import describe
        prog, text, filename = api.load(args.file)
        sys.stdout.write(describe(api._checked(prog, text, filename)))
        return 0
    if args.command == "grad":
        _differentiable(api, args.file)
        sys.stdout.write(api.grad_text(args.file, optimize=not args.no_optimize))
        return 0
    if args.command in ("jvp", "hvp", "hessian"):
        if args.command == "hessian" and not args.diagonal:
            raise ValueError("tcc hessian prints the diagonal only: add --diagonal (for "
                             "products with the full Hessian, use tcc hvp)")
        _differentiable(api, args.file)
        show = {"jvp": api.jvp_text, "hvp": api.hvp_text, "hessian": api.hessian_text}
        sys.stdout.write(show[args.command](args.file, optimize=not args.no_optimize))
        return 0
    if args.command == "check" and args.second_order:
        from .secondcheck import check as check2, format_rows
        if args.backward:
            raise ValueError("--second-order checks tcc's own programs: leave out --backward")
        _differentiable(api, args.file)
        data = {k: v for d in args.data for k, v in d.items()}
        rows = check2(args.file, sizes=args.sizes or None, seed=args.seed, seeds=args.seeds,
                      data=data)
        print(format_rows(rows, args.sizes, args.seeds))
        return 0 if all(r.ok for r in rows) else 1
    if args.command == "check":
        if args.backward:
            _exists(args.backward)
        _differentiable(api, args.file)
        data = {k: v for d in args.data for k, v in d.items()}
        report = api.check(args.file, sizes=args.sizes, seed=args.seed, seeds=args.seeds,
                           backward=args.backward, data=data, strict=args.strict)
        print(report.format())
        return 0 if report.ok else 1
    if args.command == "graph":
        from .graph import draw
        note = draw(args.file, args.output, backward=args.backward,
                    optimize=not args.no_optimize)
        if note:
            print(note, file=sys.stderr)
        return 0
    if args.command == "compile":
        from .compiler import compile_source
        source = compile_source(args.file, backend=args.backend,
                                optimize=not args.no_optimize,
                                second_order=args.second_order)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(source)
        else:
            sys.stdout.write(source)
        return 0
    if args.command == "explain":
        from .explain import explain
        text, ok = explain(args.file, verify_rewrites=args.verify, lowered=args.lowered)
        sys.stdout.write(text)
        return 0 if ok else 1
    raise AssertionError(args.command)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4000))
    try:
        status = run(args)
        sys.stdout.flush()      # a closed pipe shows here, not at exit
        return status
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
        print("tcc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (tcc check ... | head -1): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141


if __name__ == "__main__":
    sys.exit(main())
