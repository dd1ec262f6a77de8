"""The back half's seams: the target IR, backends as tables, the function
table, reentrant lowering, and generated modules that lint clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import tcc
from tcc import functions
from tcc.backends import REGISTRY, get
from tcc.backends.lower import lower_program
from tcc.backends.operands import Context, Names
from tcc.backends.target import Apply, For, Printer, walk
from tcc.pipeline import Pipeline

EXAMPLES = Path(__file__).parent / "data" / "examples"


def _lowered(path: Path, backward: bool = False):
    p = Pipeline(path.read_text(), str(path), optimize=True)
    info = p.binfo if backward else p.info
    return lower_program(Context(info, Names(list(info.roles) + list(info.dims))))


def _ops(stmts) -> list[str]:
    return [n.op for s in stmts for n in walk(s) if isinstance(n, Apply)]


# ------------------------------------------------------------ the target IR

def test_softmax_backward_is_an_einsum_and_a_broadcast():
    stmts = _lowered(EXAMPLES / "ttic_softmax.loop", backward=True)
    assert _ops(stmts).count("einsum") == 1         # e[b] = sum_j p.grad * p, no product array
    assert "# for b, j: e[b] += p.grad[b, j] * p[b, j]" in [str(s) for s in stmts]


def test_conv2d_lowers_to_tap_loops_of_matrix_products_into_one_buffer():
    stmts = _lowered(EXAMPLES / "conv2d.loop")
    loops = [s for s in stmts if isinstance(s, For)]
    assert [loop.var for loop in loops] == ["fr"]
    products = [n for n in walk(loops[0]) if isinstance(n, Apply) and n.op == "matmul"]
    assert products and all(n.get("out") is not None for n in products)


def test_strided_conv_reads_through_views_not_copies():
    stmts = _lowered(EXAMPLES / "conv1d_stride2.loop")
    assert "take" not in _ops(stmts) and "add_at" not in _ops(stmts)


def test_nodes_print_readably():
    text = "\n".join(str(s) for s in _lowered(EXAMPLES / "ttic_softmax.loop"))
    assert "# for b, j: Z_exp[b, j] = exp(s[b, j] - Z_max[b])" in text
    assert "fn:exp(" in text


def test_a_backend_is_a_table_and_names_what_it_lacks():
    numpy = get("numpy")
    bare = numpy.extend("bare", code={})
    del bare.code["matmul"]
    printer = bare.printer()
    stmts = _lowered(EXAMPLES / "ttic_ugrnn_linear.loop")
    with pytest.raises(NotImplementedError, match="the bare backend has no code for 'matmul'"):
        printer.lines(stmts)
    assert Printer(numpy.code).lines(stmts)          # the numpy table has every entry


def test_one_registry_for_the_compiler_and_the_cli():
    assert set(REGISTRY) == {"numpy", "opt_einsum", "torch"}
    with pytest.raises(ValueError, match="unknown backend 'cuda'; choose one of numpy, "
                                         "opt_einsum, torch"):
        tcc.compile("input x[N]\noutput y\ny += x[i]\n", backend="cuda")
    out = subprocess.run([sys.executable, "-m", "tcc", "compile", str(EXAMPLES / "trace.loop"),
                          "--backend", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "numpy" in out.stderr and "opt_einsum" in out.stderr


def test_contraction_order_is_fixed_at_generation():
    text = ("input A[I, J], B[J, K], C[K, L]\noutput D[I, L]\n"
            "for i, j, k, l: D[i, l] += A[i, j] * B[j, k] * C[k, l]\n")
    src = tcc.compile_source(text, optimize=False)
    assert "optimize=['einsum_path'" in src and "einsum_path(" not in src.split("def forward")[1]
    k = tcc.compile(text, optimize=False)
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 4)), rng.normal(size=(4, 5)), rng.normal(size=(5, 2))
    np.testing.assert_allclose(k.forward(A=a, B=b, C=c)["D"], a @ b @ c, rtol=1e-12)


# -------------------------------------------------------- the function table

SOFTPLUS = """input x[B, J]
output y[B]
for b, j: y[b] += softplus(2 * x[b, j])
"""


@pytest.fixture
def softplus():
    functions.register(functions.Function(
        "softplus", 1, lambda x: np.logaddexp(0, x), lambda x: np.logaddexp(0.0, x),
        "np.logaddexp(0, {0})",
        # d softplus(u) = sigmoid(u) du
        (lambda a, f: tcc.ir.Call("sigmoid", a),)))
    yield
    del functions.TABLE["softplus"]


def test_a_function_is_one_row(softplus):
    assert "s.grad" not in tcc.grad_text(SOFTPLUS)
    assert "x.grad[b, j] += 2 * y.grad[b] * sigmoid(2 * x[b, j])" in tcc.grad_text(SOFTPLUS)
    k = tcc.compile(SOFTPLUS)
    x = np.random.default_rng(1).normal(size=(3, 4))
    np.testing.assert_allclose(k.forward(x=x)["y"], np.logaddexp(0, 2 * x).sum(axis=1))
    report = tcc.check(SOFTPLUS)
    assert report.ok, report


def test_a_missing_derivative_names_the_function():
    functions.register(functions.Function("cube", 1, lambda x: x ** 3, lambda x: x ** 3,
                                          "({0}) ** 3"))
    text = "input x[N]\noutput y[N]\ny[i] += cube(x[i])\n"
    try:
        out = tcc.interp.run(tcc.parse(text), {"x": np.array([1.0, 2.0])})
        np.testing.assert_array_equal(out["y"], [1.0, 8.0])
        for stage in (tcc.grad_text, tcc.compile):
            with pytest.raises(tcc.TccError, match=r"3:9: error: function 'cube' has no "
                                                   "derivative rule"):
                stage(text)
    finally:
        del functions.TABLE["cube"]


# ------------------------------------------------------------- reentrancy

def test_compiling_from_threads_gives_the_same_modules():
    from catalogue import INTERP_ONLY
    paths = sorted(p for p in EXAMPLES.glob("*.loop") if p.stem not in INTERP_ONLY)
    expected = {(p.name, b): tcc.compile_source(p.read_text(), backend=b)
                for p in paths for b in REGISTRY}
    got: dict = {}
    errors: list = []

    def work(offset):
        try:
            for n in range(len(paths)):
                p = paths[(n + offset) % len(paths)]
                for b in REGISTRY:
                    got[(p.name, b, offset)] = tcc.compile_source(p.read_text(), backend=b)
        except Exception as err:   # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (name, b, _), src in got.items():
        assert src == expected[(name, b)], name


# ---------------------------------------------------- lean, lint-clean modules

@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
@pytest.mark.parametrize("backend", sorted(REGISTRY))
def test_generated_modules_lint_clean(tmp_path, backend):
    from catalogue import INTERP_ONLY
    for path in sorted(p for p in EXAMPLES.glob("*.loop") if p.stem not in INTERP_ONLY):
        for optimize in (True, False):
            out = tmp_path / f"{path.stem}_{int(optimize)}.py"
            out.write_text(tcc.compile_source(str(path), backend=backend, optimize=optimize))
    res = subprocess.run(["ruff", "check", "--isolated", "--select", "E,F,W,B",
                          "--line-length", "100", str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert res.returncode == 0, res.stdout


def test_modules_carry_only_the_helpers_they_use():
    plain = tcc.compile_source(str(EXAMPLES / "ttic_softmax.loop"))
    assert "def _view(" not in plain and "def _add_affine(" not in plain
    assert "import itertools" not in plain and "opt_einsum" not in plain
    conv = tcc.compile_source(str(EXAMPLES / "conv1d_stride2.loop"), optimize=False)
    assert "def _sigmoid(" not in conv


def test_readme_target_ir_example(capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme[readme.index(">>> from tcc.pipeline"):]
    block = block[:block.index("```")]
    code = [line[4:] for line in block.splitlines() if line.startswith(">>> ")]
    shown = [line for line in block.splitlines() if not line.startswith(">>> ")]
    cwd = os.getcwd()
    os.chdir(Path(__file__).parent.parent)
    try:
        exec("\n".join(code), {})
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().out.splitlines() == shown


def test_a_module_copies_only_the_runtime_it_reaches():
    # The runtime (tcc/_rt.py) is one source for tcc and the modules; a module
    # takes the pieces its code names, and what those pieces name in turn.
    from tcc.compiler import _runtime_source
    sizes_only = _runtime_source("sizes = bind_sizes(_FORWARD_PLAN, arrays)")
    assert "def bind_sizes(" in sizes_only and "def _rt_span(" in sizes_only
    assert "def fd_check(" not in sizes_only and "FD_NOISE" not in sizes_only
    checking = _runtime_source("rows = fd_check(loss, inputs, grads, scale)")
    assert "def compare(" in checking and "class Compared" in checking
    assert "def bind_sizes(" not in checking
    ns: dict = {}
    exec(checking, ns)   # the chosen pieces are complete on their own
    assert callable(ns["fd_check"])


def test_explain_lowered_prints_the_target_ir(capsys):
    from tcc.cli import main
    path = os.path.join(EXAMPLES, "conv1d_stride2.loop")
    assert main(["explain", "--lowered", path]) == 0
    out = capsys.readouterr().out
    lowered = out[out.index("Lowered for NumPy (the target IR"):]
    # the strategy the lowering chose, before a backend spells it: tap loops of
    # matrix products on strided slices, and the affine scatter of the backward
    assert "for i in range(F):" in lowered
    assert "matmul(x[i:" in lowered and ":2]" in lowered
    assert "add_affine(x_grad" in lowered
    assert "np." not in lowered
    assert main(["explain", path]) == 0
    assert "Lowered" not in capsys.readouterr().out


def test_target_ir_values_are_typed(capsys):
    """Every array a statement makes has a shape in dims and a dtype, from the
    shapes of its parts (shapes.shape, shapes.dtype); explain prints them."""
    from tcc.backends.shapes import dtype, shape
    from tcc.backends.target import ALL, Apply, Index, Lit, Name, Op, Slice, Tup
    env = {"x": ("B", "D"), "g": ("D",)}
    assert shape(Apply("sum", (Name("x"),), (("axis", 1),)), env) == ("B",)
    assert shape(Apply("max", (Name("x"),), (("axis", (0, 1)),)), env) == ()
    assert shape(Apply("einsum", (Lit("ab,b,ab->b"), Name("x"), Name("g"), Name("x"))),
                 env) == ("D",)
    assert shape(Apply("matmul", (Name("x"), Apply("transpose", (Name("x"),)))), env) == \
        ("B", "B")
    assert shape(Apply("empty", (Tup((Name("B"), Lit(3))),)), env) == ("B", 3)
    assert shape(Index(Name("x"), (ALL,)), env) == ("B", "D")
    assert shape(Index(Name("x"), (Slice(Lit(0), Lit(2)),)), env) is None
    assert dtype(Op("<", (Name("x"), Lit(0))), env) == "bool"
    assert dtype(Op("*", (Name("x"), Lit(2))), env) == "dt"
    from tcc.cli import main
    path = os.path.join(os.path.dirname(EXAMPLES), "..", "..", "benchmarks", "programs",
                        "attention.loop")
    assert main(["explain", "--lowered", path]) == 0
    out = capsys.readouterr().out
    assert "S = matmul((Q / fn:sqrt(scalar(E))), transpose(K, perm=None))    # [N, N] dt" in out
    assert "Z_max = max(T, axis=1)    # [N] dt" in out
    assert "ufunc('fn:exp', T, out=P)    # [N, N] dt" in out


def test_passes_over_memory(capsys):
    """backends/traffic.py: one read or write of the largest array is a pass;
    a row-block group moves each array it touches once; unknown shapes give
    no estimate; explain shows the softmax going from 7 passes to 2."""
    from tcc.backends.target import ALL, Apply, Assign, Def, Do, Index, Name, Op, Slice, Tup
    from tcc.backends.traffic import passes
    env = {"S": ("N", "N"), "P": ("N", "N"), "m": ("N",)}
    sizes = {"N": 100}
    col = Index(Name("m"), (Slice(),))      # m[:], a view
    # exp(S) into a new array, then a copy into P: read S, write, read, write
    plain = [Assign(Index(Name("P"), (ALL,)), Apply("fn:exp", (Name("S"),)))]
    assert passes(plain, env, sizes) == 4.0
    # the same in a row-block group: S read once, P written once
    group = [Def("_rows_1", ("S", "P"), tuple(plain)),
             Do(Apply("row_blocks", (Name("_rows_1"), Name("N"), Tup((Name("S"), Name("P"))))))]
    assert passes(group, env, sizes) == 2.0
    # a row vector is a hundredth of a pass
    assert passes([Assign(Name("q"), Op("*", (col, col)))], env, sizes) == 0.03
    # a shape computed at run time: no estimate
    assert passes([Assign(Name("r"), Apply("reshape", (Name("S"), Name("shape"))))],
                  env, sizes) is None
    from tcc.cli import main
    assert main(["explain", os.path.join(EXAMPLES, "ttic_softmax.loop")]) == 0
    out = capsys.readouterr().out
    assert "passes" in out
    rows = {line[:24].strip(): line.split()[-1] for line in out.splitlines()
            if line.startswith("  forward, ") or line.startswith("  backward, ")}
    assert rows == {"forward, unoptimized": "7.0", "forward, optimized": "2.0",
                    "backward, unoptimized": "22.1", "backward, optimized": "3.0"}
