"""The torch backend's second-order functions (``tcc.compile(...,
backend="torch", second_order=True)``): ``jvp``, ``hvp`` and
``hessian_diagonal`` on torch tensors, with the NumPy module's contract.

* every course example (recurrences included) and a sample of the catalogue:
  the three functions against the printed programs run by the reference
  interpreter, in float64; float32 in, float32 out;
* tangents and seeds by plain name, a missing one zero, an unknown name or a
  wrong shape a ValueError, as in the NumPy module;
* the module imports only torch and its functions no NumPy; ``python mod.py
  --check`` checks jvp and hvp against finite differences, and so does the CLI.
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

from catalogue import CATALOGUE, COURSE_EXAMPLES, EXAMPLE_SIZES, example_path  # noqa: E402

import tcc  # noqa: E402
from tcc import forward, gradcheck, interp, secondcheck  # noqa: E402
from tcc.check import analyze  # noqa: E402
from tcc.cli import main  # noqa: E402
from tcc.ir import py_name  # noqa: E402

torch.set_num_threads(1)

ITEMS = [*COURSE_EXAMPLES, *CATALOGUE[::3]]
IDS = [*COURSE_EXAMPLES, *(c.name for c in CATALOGUE[::3])]


def _text(item):
    if isinstance(item, str):
        with open(example_path(item), encoding="utf-8") as f:
            return f.read(), EXAMPLE_SIZES.get(item)
    return item.text, item.sizes


def _t(a, dtype=torch.float64):
    a = torch.as_tensor(np.asarray(a))
    return a if not a.is_floating_point() else a.to(dtype)


def _close(got: dict, want: dict, what: str, tol: float):
    assert set(got) == set(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
    for k, w in want.items():
        g = got[k]
        assert isinstance(g, torch.Tensor), f"{what} {k}: {type(g).__name__}, not a tensor"
        err = secondcheck.rel_error(g.detach().cpu().to(torch.float64).numpy(), w)
        assert err < tol, f"{what} {k}: relative error {err:.3g}"


class Setup:
    def __init__(self, text, sizes, seed=0):
        self.info = analyze(tcc.parse(text))
        chosen = gradcheck.choose_sizes(self.info, sizes)
        self.inputs = gradcheck.random_inputs(self.info, chosen, seed)
        values = interp.run(self.info, self.inputs)
        self.seeds = gradcheck.random_seeds(self.info, values, seed)
        self.dirs = secondcheck.directions(self.info, self.inputs, seed)

    def kwargs(self, dtype=torch.float64):
        return {py_name(t): _t(a, dtype) for t, a in self.inputs.items()}


@pytest.mark.parametrize("item", ITEMS, ids=IDS)
def test_torch_second_order_functions_run_the_printed_programs(item):
    text, sizes = _text(item)
    s = Setup(text, sizes)
    k = tcc.compile(text, backend="torch", second_order=True)
    kw = s.kwargs()
    dirs = {t: _t(a) for t, a in s.dirs.items()}
    seeds = {t: _t(a) for t, a in s.seeds.items()}
    want = secondcheck.run_jvp(forward.jvp(s.info), s.inputs, s.dirs)
    _close(k.jvp(dirs, **kw), want, "torch jvp", 1e-9)
    want = secondcheck.run_hvp(forward.hvp(s.info), s.inputs, s.seeds, s.dirs)
    _close(k.hvp(dirs, seeds, **kw), want, "torch hvp", 1e-9)
    want = secondcheck.run_hessian(forward.hessian_diagonal(s.info), s.inputs, s.seeds)
    _close(k.hessian_diagonal(seeds, **kw), want, "torch hessian_diagonal", 1e-9)


@pytest.mark.parametrize("name", ["eth_mlp", "rnn_elman"])
def test_torch_second_order_agrees_with_the_numpy_module_in_float32(name):
    text, sizes = _text(name)
    s = Setup(text, sizes)
    kt = tcc.compile(text, backend="torch", second_order=True)
    kn = tcc.compile(text, second_order=True)
    kw = s.kwargs(torch.float32)
    dirs = {t: _t(a, torch.float32) for t, a in s.dirs.items()}
    seeds = {t: _t(a, torch.float32) for t, a in s.seeds.items()}
    for fname, args, nargs in [("jvp", (dirs,), (s.dirs,)),
                               ("hvp", (dirs, seeds), (s.dirs, s.seeds)),
                               ("hessian_diagonal", (seeds,), (s.seeds,))]:
        got = getattr(kt, fname)(*args, **kw)
        want = getattr(kn, fname)(*nargs, **s.inputs)
        for key, value in got.items():
            assert value.dtype == torch.float32, f"{fname}: {key} is {value.dtype}"
        _close(got, want, f"float32 {fname}", 1e-4)


def test_torch_tangents_by_plain_name_and_errors():
    k = tcc.compile(example_path("eth_mlp"), backend="torch", second_order=True)
    inputs = k.random_inputs(0)
    assert all(isinstance(a, torch.Tensor) for a in inputs.values())
    v = {"W1": torch.ones_like(inputs["W1"])}
    full = k.jvp({**v, "x": torch.zeros_like(inputs["x"]),
                  "W2": torch.zeros_like(inputs["W2"])}, **inputs)
    torch.testing.assert_close(k.jvp(v, **inputs)["L"], full["L"])     # missing: zero
    with pytest.raises(ValueError, match="'t'.*not an input or param"):
        k.jvp({"t": inputs["t"]}, **inputs)
    with pytest.raises(ValueError, match="tangent for 'W1' has shape"):
        k.hvp({"W1": torch.ones(3)}, {}, **inputs)
    with pytest.raises(ValueError, match="not an output"):
        k.hvp(v, {"W1": 1.0}, **inputs)
    with pytest.raises(ValueError, match="tangent for 'W1' is complex"):
        k.jvp({"W1": torch.ones_like(inputs["W1"], dtype=torch.complex128)}, **inputs)
    diag = k.hessian_diagonal({"L": 1.0}, **inputs)
    assert set(diag) == {"x", "W1", "W2"}
    hv = k.hvp({"W2": np.ones(tuple(inputs["W2"].shape))}, {"L": 1.0}, **inputs)
    assert all(isinstance(a, torch.Tensor) for a in hv.values())


def test_torch_second_order_module_imports_only_torch_and_checks_itself(tmp_path):
    out = tmp_path / "m.py"
    assert main(["compile", example_path("nyu_gated_rnn"), "--backend", "torch",
                 "--second-order", "-o", str(out)]) == 0
    source = out.read_text()
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    assert imported <= {"torch", "itertools", "sys"}, imported
    code = source.split("def forward(", 1)[1].split("def random_inputs(", 1)[0]
    assert "np." not in code and "numpy" not in code
    for fname in ("jvp", "hvp", "hessian_diagonal"):
        assert f"@torch.no_grad()\ndef {fname}(" in source
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    r = subprocess.run([sys.executable, str(out), "--check"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "h.dot" in r.stdout and "Wh.grad.dot" in r.stdout and "FAIL" not in r.stdout


def test_readme_torch_second_order_example():
    from test_torch import run_readme_python
    run_readme_python('backend="torch", second_order=True')
