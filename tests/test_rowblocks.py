"""Row-block groups (backends/rowblocks.py): which statements are grouped, and
that a group gives the same bits on any number of threads and any block size,
on odd sizes, non-contiguous inputs and float32, from several threads at once.

The thresholds are lowered per module (``_SMALL_BYTES``, ``_BLOCK_BYTES`` in
its namespace) so that small arrays take the blocked, threaded path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import tcc
from tcc import interp
from tcc.backends.rowblocks import _blas_free
from tcc.backends.operands import ap
from tcc.backends.target import Def, Lit
from tcc.check import analyze
from tcc.parse import parse

EXAMPLES = Path(__file__).parent / "data" / "examples"

LAYERNORM = (Path(__file__).parent.parent / "benchmarks" / "programs" /
             "layernorm.loop").read_text()

MLP = """\
input x[B, I]
param W[H, I]
output y[B, H]
for b, h, i: a[b, h] += W[h, i] * x[b, i]
for b, h: y[b, h] = tanh(a[b, h]) * 2
"""

SHIFTED = """\
input x[B, D]
output z[B, D]
for b, d: y[b, d] = exp(x[b, d])
for b, d: z[b, d] = y[b + 1, d] * 2
"""

PROGRAMS = {
    "softmax": (EXAMPLES / "ttic_softmax.loop").read_text(),
    "layernorm": LAYERNORM,
    "softmax_xent": (EXAMPLES / "softmax_xent.loop").read_text(),
}


def _defs(kernel_source: str) -> list[str]:
    return [line.strip() for line in kernel_source.splitlines()
            if line.strip().startswith("def _rows_")]


def _run(kernel, inputs, seeds, small=0, block=1 << 12, threads="2"):
    ns = kernel.namespace
    old = ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"], os.environ.get("TCC_NUM_THREADS")
    ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"] = small, block
    os.environ["TCC_NUM_THREADS"] = threads
    try:
        fwd = kernel.forward(**inputs)
        grads = kernel.backward(seeds, **inputs, **fwd)
    finally:
        ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"] = old[0], old[1]
        if old[2] is None:
            del os.environ["TCC_NUM_THREADS"]
        else:
            os.environ["TCC_NUM_THREADS"] = old[2]
    return fwd, grads


def _inputs(kernel, name, dtype=np.float64, **sizes):
    inputs = {k: (v.astype(dtype) if v.dtype.kind == "f" else v)
              for k, v in kernel.random_inputs(seed=3, **sizes).items()}
    fwd = kernel.forward(**inputs)
    rng = np.random.default_rng(4)
    outputs = kernel.namespace["_OUTPUTS"]
    seeds = {o: rng.standard_normal(fwd[o].shape).astype(dtype) for o in outputs}
    return inputs, seeds


def _same_bits(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k], equal_nan=True), k


# ------------------------------------------------------------ what is grouped

def test_softmax_forward_and_backward_are_one_group_each():
    k = tcc.compile(PROGRAMS["softmax"])
    defs = _defs(k.source)
    assert len(defs) == 2, defs
    # the forward's four statements and the fused backward's two, each in one pass
    assert "# rows of B in blocks, on threads when large: 4 statements in one pass" in k.source
    assert "# rows of B in blocks, on threads when large: 2 statements in one pass" in k.source
    # only what is returned is allocated whole; the temporaries live in the block
    fwd = k.source[k.source.index("def forward"):k.source.index("def backward")]
    assert "p = np.empty((B, J), dtype=dt)" in fwd
    assert "Z_exp = np.empty" not in fwd


def test_a_matrix_product_is_not_grouped():
    k = tcc.compile(MLP)
    fwd = k.source[k.source.index("def forward"):k.source.index("def backward")]
    body = fwd[fwd.index("def _rows_"):]
    assert "@" not in body.split("_row_blocks(")[0] and "np.matmul" not in body.split(
        "_row_blocks(")[0]
    assert "tanh" in body


def test_a_statement_reading_other_rows_is_not_grouped():
    k = tcc.compile(SHIFTED)
    fwd = k.source[k.source.index("def forward"):k.source.index("def backward")]
    assert "1 statement in one pass" in fwd      # y alone; z reads row b + 1
    z_line = next(line for line in fwd.splitlines() if line.strip().startswith("z ="))
    assert not z_line.startswith("        "), "z must not run inside a row block"


def test_the_torch_style_extension_leaves_row_blocks_off():
    from tcc.backends import get
    numpy = get("numpy")
    assert numpy.row_blocks and get("opt_einsum").row_blocks
    assert not numpy.extend("other").row_blocks


@pytest.mark.parametrize("spec, path, free", [
    ("ab,ab->a", None, True),            # a row dot product: no BLAS
    ("ab,b,ab->a", [(0, 1), (0, 1)], True),
    ("ab,bc->ac", None, False),          # a matrix product
    ("ab,b->a", None, False),            # a matrix-vector product
    ("abc,abc->ab", None, True),
])
def test_einsums_with_a_blas_step_are_not_row_local(spec, path, free):
    kw = {"path": path} if path else {}
    operands = [Lit(0)] * (spec.count(",") + 1)
    assert _blas_free(ap("einsum", Lit(spec), *operands, **kw)) is free


def test_the_target_ir_prints_a_group():
    from tcc.pipeline import Pipeline
    from tcc.backends.lower import lower_program
    from tcc.backends.operands import Context, Names
    p = Pipeline(PROGRAMS["softmax"], None, optimize=True)
    ctx = Context(p.info, Names(p.info.roles), row_blocks=True, returned={"p"})
    stmts = lower_program(ctx)
    defs = [s for s in stmts if isinstance(s, Def)]
    assert len(defs) == 1 and defs[0].params == ("s", "p")
    text = "\n".join(map(str, stmts))
    assert "def _rows_1(s, p):" in text and "row_blocks(_rows_1, B, (s, p))" in text


# ------------------------------------------------------------- same results

@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("backend", ["numpy", "opt_einsum"])
def test_blocks_and_threads_give_the_same_bits(name, backend):
    k = tcc.compile(PROGRAMS[name], backend=backend)
    sizes = {"B": 37} if name != "layernorm" else {"B": 37, "D": 29}
    inputs, seeds = _inputs(k, name, **sizes)
    whole = _run(k, inputs, seeds, small=1 << 40)            # one call, no blocks
    for block in (1, 700, 1 << 12):                          # 1-row blocks, odd blocks
        one = _run(k, inputs, seeds, block=block, threads="1")
        two = _run(k, inputs, seeds, block=block, threads="2")
        for a, b in zip(one, two):
            _same_bits(a, b)
        for a, b in zip(one, whole):
            _same_bits(a, b)
    # and the result is the program's: against the reference interpreter
    info = analyze(parse(PROGRAMS[name]))
    ref = interp.run(info, {t: inputs[t] for t in info.inputs})
    for o in info.outputs:
        np.testing.assert_allclose(whole[0][o], ref[o], rtol=1e-10, atol=1e-12)


def test_non_contiguous_and_float32_inputs():
    k = tcc.compile(LAYERNORM)
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 41)).astype(np.float32)
    inputs = {"x": big.T[:, ::2],          # a transposed, strided view: (41, 32)
              "g": rng.standard_normal(32).astype(np.float32),
              "c": rng.standard_normal(32).astype(np.float32)}
    seeds = {"y": rng.standard_normal((41, 32)).astype(np.float32)}
    whole = _run(k, inputs, seeds, small=1 << 40)
    one = _run(k, inputs, seeds, block=300, threads="1")
    two = _run(k, inputs, seeds, block=300, threads="2")
    for a, b in zip(one, two):
        _same_bits(a, b)
    # on a strided input NumPy's own reduction order depends on the block's
    # shape, so blocks and the whole array agree to rounding, not to the bit
    for a, b in zip(whole, two):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert all(v.dtype == np.float32 for v in {**two[0], **two[1]}.values())
    ref = interp.run(analyze(parse(LAYERNORM)), {t: v.astype(np.float64)
                                                  for t, v in inputs.items()})
    np.testing.assert_allclose(two[0]["y"], ref["y"], rtol=1e-4, atol=1e-4)


def test_a_module_used_from_several_threads_at_once():
    k = tcc.compile(PROGRAMS["softmax"])
    ns = k.namespace
    ns["_SMALL_BYTES"], ns["_BLOCK_BYTES"] = 0, 2048
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((57, 31)) * 10 for _ in range(8)]
    want = [k.forward(s=s)["p"] for s in inputs]
    got: list = [None] * len(inputs)

    def work(n):
        for _ in range(5):
            got[n] = k.forward(s=inputs[n])["p"]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_the_thread_count(monkeypatch):
    ns = tcc.compile(PROGRAMS["softmax"]).namespace
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setenv("TCC_NUM_THREADS", "1")
    assert ns["_threads"]() == 1
    monkeypatch.setenv("TCC_NUM_THREADS", "4096")
    assert ns["_threads"]() == cores           # never more than the cores
    monkeypatch.delenv("TCC_NUM_THREADS")
    assert ns["_threads"]() == cores


def test_the_pool_shuts_down_cleanly_at_exit(tmp_path):
    mod = tmp_path / "softmax_mod.py"
    mod.write_text(tcc.compile(PROGRAMS["softmax"]).source)
    script = (
        "import numpy as np, softmax_mod as m\n"
        "m._SMALL_BYTES, m._BLOCK_BYTES = 0, 4096\n"
        "p = m.forward(s=np.random.default_rng(0).standard_normal((300, 50)))['p']\n"
        "assert m._POOLS, 'the pool was not used'\n"
        "print(round(float(p.sum())))\n")
    env = {**os.environ, "TCC_NUM_THREADS": "2", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "300"         # each softmax row sums to 1


# ------------------------------------------------------------------- float32

def _float_locals(kernel, call):
    """Every array a generated function holds in a local when it returns,
    with its dtype: forward, backward and their row-block functions."""
    seen: dict[str, set] = {}
    code_file = kernel.forward.__code__.co_filename

    def tracer(frame, event, arg):
        if event == "return" and frame.f_code.co_filename == code_file and \
                frame.f_code.co_name in ("forward", "backward") or \
                event == "return" and frame.f_code.co_name.startswith("_rows_"):
            for name, v in frame.f_locals.items():
                if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                    seen.setdefault(v.dtype.name, set()).add(f"{frame.f_code.co_name}:{name}")
        return None

    sys.setprofile(tracer)
    threading.setprofile(tracer)
    try:
        call()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return seen


@pytest.mark.parametrize("example", sorted(p.stem for p in EXAMPLES.glob("*.loop")))
def test_float32_code_holds_no_float64_array(example):
    k = tcc.compile(str(EXAMPLES / f"{example}.loop"))
    inputs = {t: (v.astype(np.float32) if v.dtype.kind == "f" else v)
              for t, v in k.random_inputs(seed=0).items()}

    def call():
        fwd = k.forward(**inputs)
        seeds = {o: np.ones_like(fwd[o]) for o in k.namespace["_OUTPUTS"]}
        k.backward(seeds, **inputs, **fwd)

    seen = _float_locals(k, call)
    assert seen.get("float32"), "the tracer saw no array"
    assert "float64" not in seen, f"float64 arrays in float32 code: {sorted(seen['float64'])}"
    # the tracer sees float64 where there is some: a float64 input in the mix
    name = next(t for t, v in inputs.items() if v.dtype == np.float32)
    inputs[name] = inputs[name].astype(np.float64)
    assert "float64" in _float_locals(k, call)


# ------------------------------------------------------- a group's arrays in dying memory

HOSTED = """\
input x[B, E]
param W[D, E]
output t[B, D], y[B, D]
for b, d, e: s[b, d] += x[b, e] * W[d, e]
for b, d: t[b, d] = exp(s[b, d])
for b, d: y[b, d] = t[b, d] + s[b, d]
"""


def test_a_group_array_takes_the_memory_of_a_product_it_reads_last():
    """y may live in s (s is read last by the ufunc that writes y, position by
    position); t may not (s is read after t is written). Values as the
    interpreter's, on the threaded blocked path too."""
    k = tcc.compile(HOSTED)
    src = k.source
    assert "(y takes the memory of s, which is not read after the rows that write it)" in src
    assert "t takes the memory" not in src
    inputs = k.random_inputs(seed=5, B=37, E=4, D=6)
    info = analyze(parse(HOSTED))
    want = interp.run(info, inputs)
    fwd, _ = _run(k, inputs, {"t": np.ones((37, 6)), "y": np.ones((37, 6))})
    for name in ("t", "y"):
        np.testing.assert_allclose(fwd[name], want[name], rtol=1e-12, atol=0)


def test_attention_probabilities_live_in_the_scores():
    """As by hand: softmax(S) is computed in S's memory, and the backward's
    S.grad in P.grad's; the caller's arrays are not written."""
    text = (Path(__file__).parent.parent / "benchmarks" / "programs" /
            "attention.loop").read_text()
    k = tcc.compile(text)
    assert "P = S\n" in k.source and "S_grad = P_grad\n" in k.source
    inputs = k.random_inputs(seed=6, N=9, E=3)
    before = {n: a.copy() for n, a in inputs.items()}
    info = analyze(parse(text))
    want = interp.run(info, inputs)
    fwd, grads = _run(k, inputs, {"O": np.ones((9, 3))})
    np.testing.assert_allclose(fwd["O"], want["O"], rtol=1e-12, atol=1e-14)
    for n, a in before.items():
        assert np.array_equal(inputs[n], a), n
    ref = tcc.compile(text, optimize=False)
    ref_fwd = ref.forward(**inputs)
    ref_grads = ref.backward({"O": np.ones((9, 3))}, **inputs, **ref_fwd)
    for n in ("Q", "K", "V"):
        np.testing.assert_allclose(grads[n], ref_grads[n], rtol=1e-10, atol=1e-12)
