"""The torch backend (``backend="torch"``): every course example and catalogue
program against the reference interpreter, forward and backward, float64 and
float32, optimized and not; the module imports only torch and has no
CPU-only code; its run-time errors are the NumPy module's; ``--check`` passes
in a process where tcc cannot be imported; on CUDA (skipped without it) every
course example runs on the GPU and agrees with the CPU.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_backends as tb  # noqa: E402
from catalogue import COURSE_EXAMPLES, example_path  # noqa: E402

import tcc  # noqa: E402
from tcc.ir import py_name  # noqa: E402

torch.set_num_threads(1)       # small tensors: threads only add overhead here

_DT = {np.float64: torch.float64, np.float32: torch.float32}


def _to_torch(kw, device="cpu"):
    return {k: torch.as_tensor(v).to(device) for k, v in kw.items()}


def _close(actual, expected, rtol, atol, what):
    assert isinstance(actual, torch.Tensor), f"{what}: {type(actual).__name__}, not a tensor"
    tb.assert_close(actual.detach().cpu().numpy(), expected, rtol, atol, what)


def _run(case_id, optimize, dtype, rtol, atol, device="cpu"):
    source, _, _ = tb.CASES[case_id]
    ref = tb.reference(case_id)
    info = ref.info
    k = tcc.compile(source, backend="torch", optimize=optimize)
    kw = _to_torch(ref.kwargs(dtype, np.int64), device)
    before = {t: a.clone() for t, a in kw.items()}
    fwd = k.forward(**kw)
    label = f"{case_id} [torch, {'optimized' if optimize else 'not optimized'}, " \
            f"{np.dtype(dtype).name}, {device}]"
    for key, value in fwd.items():
        assert value.dtype == _DT[dtype], f"{label}: forward()['{key}'] is {value.dtype}"
        assert value.device.type == torch.device(device).type, f"{label}: {key} moved"
    if not optimize:
        assert set(fwd) == {py_name(t) for t in info.computed}
    for t in (info.computed if not optimize else info.outputs):
        _close(fwd[py_name(t)], ref.computed[t], rtol, atol, f"{label}: forward {t}")
    seeds = {o: torch.as_tensor(s.astype(dtype)).to(device) for o, s in ref.seeds.items()}
    grads = k.backward(seeds, **kw, **fwd)
    assert set(grads) == set(info.differentiable)
    for t in info.differentiable:
        assert grads[t].dtype == _DT[dtype], f"{label}: {t}.grad is {grads[t].dtype}"
        _close(grads[t], ref.grads[t], rtol, atol, f"{label}: {t}.grad")
    for t, a in before.items():
        assert torch.equal(kw[t], a), f"{label}: the module modified its argument '{t}'"


@pytest.mark.parametrize("optimize", (True, False), ids=["opt", "noopt"])
@pytest.mark.parametrize("case_id", tb.CASE_IDS)
def test_float64_matches_interpreter(case_id, optimize):
    _run(case_id, optimize, np.float64, tb.RTOL64, tb.ATOL64)


@pytest.mark.parametrize("case_id", tb.CASE_IDS)
def test_float32_stays_float32(case_id):
    _run(case_id, True, np.float32, tb.RTOL32, tb.ATOL32)


# ------------------------------------------------------------------ the module's text

def _module(name):
    return tcc.compile_source(example_path(name), backend="torch")


@pytest.mark.parametrize("name", COURSE_EXAMPLES)
def test_imports_only_torch_and_has_no_host_code(name):
    source = _module(name)
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom)}
    assert imported <= {"torch", "itertools", "sys"}, imported
    code = source.split("def forward(", 1)[1].split("def random_inputs(", 1)[0]
    for bad in ("np.", "numpy", ".numpy()", ".cpu()", "cuda", ".item()", ".tolist()"):
        assert bad not in code, f"{name}: the generated functions use {bad!r}"


def test_check_runs_without_tcc(tmp_path):
    """`python mod.py --check` in a fresh process where `import tcc` fails (a
    fake tcc that raises, first on the path)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "tcc.py").write_text("raise ImportError('a generated module must not import tcc')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(fake), PYTHONDONTWRITEBYTECODE="1")
    for name in ("conv2d", "softmax_xent", "ugrnn_cell"):
        path = tmp_path / f"{name}.py"
        path.write_text(_module(name))
        r = subprocess.run([sys.executable, str(path), "--check"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ok" in r.stdout and "FAIL" not in r.stdout
    r = subprocess.run([sys.executable, "-c", "import tcc"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "must not import tcc" in r.stderr


def test_cli_compiles_torch(tmp_path, capsys):
    out = tmp_path / "m.py"
    assert tb.cli_main(["compile", example_path("ttic_softmax"), "--backend", "torch",
                        "-o", str(out)]) in (0, None)
    assert "import torch" in out.read_text()


# ------------------------------------------------------------------ run-time errors

_MISUSE = ["test_wrong_rank", "test_sizes_disagree_between_tensors",
           "test_size_disagrees_with_a_literal", "test_dim_checked_against_a_literal_at_run_time",
           "test_declared_dim_shared_by_two_tensors", "test_affine_access_out_of_bounds",
           "test_missing_and_unknown_tensors", "test_unknown_seed",
           "test_seed_of_the_wrong_shape", "test_missing_saved_value",
           "test_saved_value_of_the_wrong_shape", "test_a_tensor_named_grads"]


@pytest.mark.parametrize("name", _MISUSE)
def test_errors_as_the_numpy_module(name):
    """The NumPy module's misuse tests, on the torch module (they pass NumPy
    arrays, which it takes as tensors)."""
    getattr(tb, name)("torch")


@pytest.mark.parametrize("bad", [3, -1])
def test_gather_out_of_range(bad):
    tb.test_gather_out_of_range("torch", bad)


def test_tensors_on_two_devices_or_complex():
    k = tcc.compile(example_path("ttic_ugrnn_linear"), backend="torch")
    kw = _to_torch(tb.reference("ttic_ugrnn_linear").kwargs())
    kw["x"] = kw["x"].to(torch.complex128)
    with pytest.raises(ValueError, match="'x' is complex"):
        k.forward(**kw)
    kw = _to_torch(tb.reference("softmax_xent").kwargs())
    kw["y"] = kw["y"].double()
    with pytest.raises(ValueError, match="'y' holds gather positions"):
        tcc.compile(example_path("softmax_xent"), backend="torch").forward(**kw)


def test_missing_seed_and_zero_gradients():
    k = tcc.compile("input x[N]\ninput z[N]\noutput q[N]\noutput r\n"
                    "for i: q[i] = 2 * x[i]\nfor i: r += x[i] * x[i]\n", backend="torch")
    x, z = torch.arange(3.0), torch.ones(3)
    fwd = k.forward(x=x, z=z)
    g = k.backward({"r": torch.tensor(1.0)}, x=x, z=z, **fwd)
    assert torch.equal(g["x"], 2 * x) and torch.equal(g["z"], torch.zeros(3))


def test_integer_and_int32_inputs():
    k = tcc.compile(example_path("softmax_xent"), backend="torch")
    fwd = k.forward(s=torch.zeros(2, 3, dtype=torch.int32), y=torch.tensor([0, 2],
                                                                             dtype=torch.int32))
    assert fwd["L"].dtype == torch.float64
    assert torch.allclose(fwd["L"], torch.full((2,), float(np.log(3)), dtype=torch.float64))


def test_random_inputs_are_tensors():
    k = tcc.compile(example_path("softmax_xent"), backend="torch")
    a, b = k.random_inputs(seed=3), k.random_inputs(seed=3)
    assert all(torch.equal(a[t], b[t]) for t in a)
    assert a["s"].dtype == torch.float64 and a["y"].dtype == torch.int64
    k.forward(**a)


# ------------------------------------------------------------------ on the GPU

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case_id", COURSE_EXAMPLES)
def test_cuda(case_id):
    _run(case_id, True, np.float64, tb.RTOL64, tb.ATOL64, device="cuda")
    _run(case_id, True, np.float32, tb.RTOL32, tb.ATOL32, device="cuda")


# ------------------------------------------------------------------ library kernels

_KERNELS = {
    "softmax over the first axis": (
        "input s[B, J]\noutput p[B, J]\nfor b, j: Z[j] += exp(s[b, j])\n"
        "for b, j: p[b, j] = exp(s[b, j]) / Z[j]\n",
        ["torch.softmax(s, dim=0)", "torch.ops.aten._softmax_backward_data(p_grad, p, 0,"]),
    "softmax of a product, three axes": (
        "input x[B, T, K]\nparam W[J, K]\noutput p[B, T, J]\n"
        "for b, t, j, k: s[b, t, j] += W[j, k] * x[b, t, k]\n"
        "for b, t, j: Z[b, t] += exp(s[b, t, j])\n"
        "for b, t, j: p[b, t, j] = exp(s[b, t, j]) / Z[b, t]\n",
        ["torch.softmax(s, dim=2)", "_softmax_backward_data(p_grad, p, 2,"]),
    "log-sum-exp": (      # (the stable pass subtracts the maximum, then it is recognized)
        "data s[B, K]\noutput L[B]\nfor b, k: Z[b] += exp(s[b, k])\nfor b: L[b] = log(Z[b])\n",
        ["L = torch.logsumexp(s, dim=1)"]),
    "log-softmax, stabilized by tcc": (
        "data s[B, K]\noutput q[B, K]\nfor b, k: Z[b] += exp(s[b, k])\n"
        "for b, k: q[b, k] = s[b, k] - log(Z[b])\n",
        ["q = torch.log_softmax(s, dim=1)"]),
    "log-softmax": (
        "data s[B, K]\noutput q[B, K]\nfor b, k: m[b] max= s[b, k]\n"
        "for b, k: E[b, k] = exp(s[b, k] - m[b])\nfor b, k: Z[b] += E[b, k]\n"
        "for b, k: q[b, k] = s[b, k] - m[b] - log(Z[b])\n",
        ["q = torch.log_softmax(s, dim=1)"]),
}


def _against_interpreter(text, optimize=True):
    dims = {d for d in ("B", "J", "K", "T") if d in text}
    ref = tb.Ref(text, {d: n for d, n in {"B": 3, "J": 4, "K": 5, "T": 2}.items() if d in dims})
    k = tcc.compile(text, backend="torch", optimize=optimize)
    kw = _to_torch(ref.kwargs())
    fwd = k.forward(**kw)
    for o in ref.info.outputs:
        _close(fwd[py_name(o)], ref.computed[o], tb.RTOL64, tb.ATOL64, f"{o}")
    grads = k.backward({o: torch.as_tensor(s) for o, s in ref.seeds.items()}, **kw, **fwd)
    for t in ref.info.differentiable:
        _close(grads[t], ref.grads[t], tb.RTOL64, tb.ATOL64, f"{t}.grad")


@pytest.mark.parametrize("name", list(_KERNELS))
def test_library_kernels(name):
    """Groups of statements that are one torch kernel are lowered as that call
    (and only on the torch backend); the results are the interpreter's."""
    text, calls = _KERNELS[name]
    source = tcc.compile_source(text, backend="torch")
    for c in calls:
        assert c in source, f"{name}: {c!r} not in\n{source}"
    assert "one library kernel" not in tcc.compile_source(text)      # NumPy: as before
    _against_interpreter(text)


def test_kernels_keep_what_is_read_elsewhere():
    """The maximum and the sum are returned for the backward: no kernel hides them."""
    text = ("input s[B, K]\noutput L[B]\nfor b, k: m[b] max= s[b, k]\n"
            "for b, k: Z[b] += exp(s[b, k] - m[b])\nfor b: L[b] = log(Z[b]) + m[b]\n")
    assert "logsumexp" not in tcc.compile_source(text, backend="torch")
    _against_interpreter(text)
    _against_interpreter(text, optimize=False)


def test_explain_shows_the_kernels():
    from tcc.explain import explain
    text, _ = explain(example_path("ttic_softmax"))
    assert "torch.softmax over axis 1 of s computes p" in text
    assert "torch's softmax backward over axis 1" in text


def test_a_function_without_a_torch_row_fails_at_generation():
    from tcc import functions
    functions.register(functions.Function(
        "softplus", 1, lambda x: np.logaddexp(0, x), lambda x: np.logaddexp(0.0, x),
        "np.logaddexp(0, {0})", (lambda args, call: functions.Call("sigmoid", args),)))
    try:
        text = "input x[N]\noutput y\nfor i: y += softplus(x[i])\n"
        assert "np.logaddexp" in tcc.compile_source(text)
        with pytest.raises(NotImplementedError, match="torch backend has no code for "
                                                      "function 'softplus'"):
            tcc.compile_source(text, backend="torch")
    finally:
        del functions.TABLE["softplus"]


def test_readme_torch_examples():
    """The README's kernel listing is what tcc explain prints, and its adapter
    example runs."""
    import re
    readme = open(os.path.join(os.path.dirname(HERE), "README.md"), encoding="utf-8").read()
    blocks = [b for b in re.findall(r"```text\n(.*?)```", readme, re.S)
              if "Library kernels" in b]
    assert len(blocks) == 2
    from tcc.explain import explain
    root = os.path.dirname(HERE)
    for block in blocks:
        path = block.splitlines()[0].split()[3]         # $ tcc explain PATH  # ...
        text, _ = explain(os.path.join(root, path))
        shown = block.splitlines()[1:]
        assert "\n".join(shown) in text, path
    run_readme_python("from tcc.torch import Module, function")


def run_readme_python(marker: str) -> None:
    """Run the README's one ```python block that contains ``marker``, from the
    repository root."""
    import re
    root = os.path.dirname(HERE)
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if marker in b]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)


def test_layer_norm_statistics_in_one_kernel():
    """Statistics that are not followed by layer norm's normalization (here eps
    is outside the square root) are still one torch.var_mean."""
    text = tb.CASES["layer_norm"][1].replace("sqrt(var[b] + 1e-5)", "(sqrt(var[b]) + 1e-5)")
    source = tcc.compile_source(text, backend="torch")
    assert "(var, mu) = torch.var_mean(x, dim=1, correction=0)" in source
    assert "_layer_norm(" not in source
    _against_interpreter(text)


@pytest.mark.parametrize("name, calls", [
    ("conv2d", ["torch.nn.functional.conv2d(", "_conv_backward("]),
    ("conv1d_stride2", ["torch.nn.functional.conv1d(", "_conv_backward(", "stride=(2,)"]),
])
def test_convolutions_through_torch(name, calls):
    """A convolution statement and its two gradients are torch's convolution
    calls (on permuted views; the input cut to the extent the outputs reach),
    the two gradients in one call."""
    source = _module(name)
    for c in calls:
        assert c in source, c
    _run(name, True, np.float64, tb.RTOL64, tb.ATOL64)


def test_the_forward_convolution_is_a_forward_convolution():
    """With stride 1 the statement reads alike as a convolution or as a weight
    gradient; the window index is the one the loops list later (as the tap
    lowering has it), so the forward is conv2d, not a weight gradient."""
    text = open(os.path.join(os.path.dirname(HERE), "benchmarks", "programs",
                             "conv2d.loop")).read()
    source = tcc.compile_source(text, backend="torch")
    assert "Y = torch.nn.functional.conv2d(X[:, :, " in source
    assert "_conv_backward(X[:, :, " in source


_CONV1D = open(os.path.join(os.path.dirname(HERE), "benchmarks", "programs",
                            "conv1d.loop")).read()


@pytest.mark.parametrize("role, calls", [
    ("data", ["torch.nn.grad.conv1d_weight("]), ("input", ["_conv_backward("])])
def test_one_gradient_or_both(role, calls):
    """Where only the filter's gradient is needed (x is data) it is conv1d_weight
    alone; with both, one convolution backward."""
    text = _CONV1D.replace("input  x[B, L, C]", f"{role:<6} x[B, L, C]")
    source = tcc.compile_source(text, backend="torch")
    for c in calls:
        assert c in source
    assert "conv1d_input" not in source
    ref = tb.Ref(text, {"B": 2, "L": 10, "C": 3, "O": 2, "F": 3})
    k = tcc.compile(text, backend="torch")
    kw = _to_torch(ref.kwargs())
    fwd = k.forward(**kw)
    grads = k.backward({o: torch.as_tensor(s) for o, s in ref.seeds.items()}, **kw, **fwd)
    for t in ref.info.differentiable:
        _close(grads[t], ref.grads[t], tb.RTOL64, tb.ATOL64, f"{t}.grad")


@pytest.mark.parametrize("L, text", [
    (9, _CONV1D),          # the outputs reach the last position
    (10, _CONV1D),         # one position past them: the kernels take x whole
    (10, _CONV1D.replace("output f", "output f[B, 2, O]")),     # fewer outputs: a slice
], ids=["exact", "tail", "declared"])
def test_batched_strided_convolution_with_averaging(L, text):
    source = tcc.compile_source(text, backend="torch")
    assert "_conv_backward(" in source and "1 / dt.new_full((), B)" in source
    assert "_extent(L, 2 * (" in source
    ref = tb.Ref(text, {"B": 2, "L": L, "C": 3, "O": 2, "F": 3})
    k = tcc.compile(text, backend="torch")
    kw = _to_torch(ref.kwargs())
    fwd = k.forward(**kw)
    _close(fwd["f"], ref.computed["f"], tb.RTOL64, tb.ATOL64, "f")
    grads = k.backward({o: torch.as_tensor(s) for o, s in ref.seeds.items()}, **kw, **fwd)
    for t in ref.info.differentiable:
        _close(grads[t], ref.grads[t], tb.RTOL64, tb.ATOL64, f"{t}.grad")
