"""The autograd adapters (``tcc.torch.function``, ``tcc.torch.Module``):
``torch.autograd.gradcheck`` in float64 on every course example and the
catalogue, torch's gradient convention (no ``1/B``) and ``average=True``,
only the tensors the backward reads saved, parameters from declarations, and
data-parallel training under ``DistributedDataParallel`` (gloo, two local
processes) equal to one process on the whole batch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_backends as tb  # noqa: E402
from catalogue import COURSE_EXAMPLES, example_path  # noqa: E402

import tcc.torch as tt  # noqa: E402
from tcc.ir import py_name  # noqa: E402

torch.set_num_threads(1)


def _inputs(case_id, requires_grad=True):
    ref = tb.reference(case_id)
    info = ref.info
    out = {}
    for t, a in ref.inputs.items():
        x = torch.as_tensor(np.asarray(a))
        if t in info.gather_data:
            x = x.long()
        else:
            x = x.double()
        if requires_grad and t in info.differentiable:
            x.requires_grad_(True)
        out[py_name(t)] = x
    return out


def _gradcheck(f, kw):
    names = [n for n, x in kw.items() if x.requires_grad]
    rest = {n: x for n, x in kw.items() if not x.requires_grad}

    def run(*xs):
        return tuple(f(**dict(zip(names, xs)), **rest).values())

    assert torch.autograd.gradcheck(run, tuple(kw[n] for n in names), eps=1e-6, atol=1e-6,
                                    rtol=1e-5)


@pytest.mark.parametrize("case_id", COURSE_EXAMPLES + [
    "chain_mlp", "layer_norm", "attention", "logsumexp_stable", "max_pool_stride",
    "idx_gather_target_minus", "conv1d_taps_past_the_stride", "gru_gate_multi_line"])
def test_gradcheck_function(case_id):
    source = tb.CASES[case_id][0]
    _gradcheck(tt.function(source), _inputs(case_id))


@pytest.mark.parametrize("case_id", tb.CASE_IDS)
def test_function_matches_the_interpreter(case_id):
    """Forward values, and backward through autograd with the reference's seeds:
    inputs' gradients as the interpreter's, params' without its 1/B."""
    ref = tb.reference(case_id)
    info = ref.info
    f = tt.function(tb.CASES[case_id][0])
    kw = _inputs(case_id)
    out = f(**kw)
    for o in info.outputs:
        tb.assert_close(out[py_name(o)].detach().numpy(), ref.computed[o], tb.RTOL64,
                        tb.ATOL64, f"{case_id}: {o}")
    live = [(out[py_name(o)], torch.as_tensor(ref.seeds[o])) for o in info.outputs
            if out[py_name(o)].requires_grad]
    if not live:
        return
    torch.autograd.backward([o for o, _ in live], [s for _, s in live])
    sizes = ref.info.batch and tb.gradcheck.choose_sizes(info, tb.CASES[case_id][2])
    for t in info.differentiable:
        want = ref.grads[t]
        if info.roles[t] == "param" and info.batch:
            want = want * sizes[info.batch]
        got = kw[py_name(t)].grad
        got = torch.zeros(want.shape) if got is None else got
        tb.assert_close(got.numpy(), want, tb.RTOL64, tb.ATOL64, f"{case_id}: {t}.grad")


def test_gradcheck_module():
    for name in COURSE_EXAMPLES:
        ref = tb.reference(name)
        kw = _inputs(name, requires_grad=False)
        params = {n: kw.pop(n) for n in list(kw) if ref.info.roles.get(n) == "param"}
        sizes = {d: n for t, x in params.items()
                 for d, n in zip(ref.info.shapes[t], x.shape) if isinstance(d, str)}
        m = tt.Module(example_path(name), dtype=torch.float64, **sizes)
        assert sorted(dict(m.named_parameters())) == sorted(params)
        for n, x in params.items():
            with torch.no_grad():
                getattr(m, n).copy_(x)
        for n, x in kw.items():
            if n in {py_name(t) for t in ref.info.differentiable}:
                x.requires_grad_(True)
        flat = list(m.parameters()) + [x for x in kw.values() if x.requires_grad]

        def run(*_, m=m, kw=kw):
            return tuple(m(**kw).values())

        assert torch.autograd.gradcheck(run, tuple(flat), eps=1e-6, atol=1e-6, rtol=1e-5), \
            name


def test_average_keeps_the_programs_batch_mean():
    ref = tb.reference("ugrnn_cell")
    kw = _inputs("ugrnn_cell")
    kw2 = {n: x.detach().clone().requires_grad_(x.requires_grad) for n, x in kw.items()}
    seed = torch.as_tensor(ref.seeds["hn"])
    tt.function(example_path("ugrnn_cell"))(**kw)["hn"].backward(seed)
    tt.function(example_path("ugrnn_cell"), average=True)(**kw2)["hn"].backward(seed)
    B = kw["h"].shape[0]
    for n, x in kw.items():
        if not x.requires_grad:
            continue
        if ref.info.roles[n] == "param":
            torch.testing.assert_close(kw2[n].grad * B, x.grad)
            tb.assert_close(kw2[n].grad.numpy(), ref.grads[n], tb.RTOL64, tb.ATOL64, n)
        else:
            torch.testing.assert_close(kw2[n].grad, x.grad)


def test_only_what_the_backward_reads_is_saved():
    f = tt.function(example_path("ttic_softmax"))
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    p = f(s=s)["p"]
    saved = p.grad_fn.saved_tensors
    assert len(saved) == 1 and torch.equal(saved[0], p.detach())   # p, not s
    p.sum().backward()
    assert torch.allclose(s.grad, torch.zeros_like(s), atol=1e-12)


def test_module_sizes_at_first_call_and_errors():
    m = tt.Module(example_path("ugrnn_cell"), dtype=torch.float64)
    assert all(isinstance(p, torch.nn.parameter.UninitializedParameter)
               for p in m.parameters())
    h, x = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    out = m(h=h, x=x)["hn"]
    assert out.shape == (4, 3) and m.WxR.shape == (3, 2) and m.BR.shape == (3,)
    out.sum().backward()
    assert m.WhR.grad.shape == (3, 3)
    with pytest.raises(ValueError, match="'WhR' is a parameter"):
        m(h=h, x=x, WhR=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="missing tensor 'x'"):
        m(h=h)
    m2 = tt.Module(example_path("ugrnn_cell"), J=6, K=2)
    assert m2.WhR.shape == (6, 6) and m2.WhR.dtype == torch.float32
    m3 = tt.Module("param W[J, K]\ninput x[B, K]\noutput y[B, J]\n"
                   "for b, j, k: y[b, j] += W[j, k] * x[b, k]\n")
    with pytest.raises(ValueError, match="param 'W'.*J"):
        m3(x=torch.zeros(2, 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_equals_one_process(tmp_path):
    """Two processes under DistributedDataParallel (gloo, 127.0.0.1), each on half
    the batch, give the parameter gradients of one process on the whole batch,
    at every step of a short training run."""
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "grads.pt"
    port = str(_free_port())
    worker = os.path.join(HERE, "ddp_worker.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK",
                                                                     "WORLD_SIZE"))}
    procs = [subprocess.Popen([sys.executable, worker, str(r), "2", port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    result = torch.load(out)
    assert len(result["ddp"]) == len(result["single"]) == 3
    for step, (d, s) in enumerate(zip(result["ddp"], result["single"])):
        assert set(d) == set(s) == {"WhR", "WxR", "BR", "WhG", "WxG", "BG"}
        for n in d:
            torch.testing.assert_close(d[n], s[n], rtol=1e-10, atol=1e-12,
                                       msg=f"step {step}: {n}.grad")
