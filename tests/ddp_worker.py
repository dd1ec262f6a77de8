"""One process of the DDP test (tests/test_torch_adapters.py starts two).

Trains ``tcc.torch.Module`` under ``DistributedDataParallel`` (gloo, on
127.0.0.1) on its half of a fixed batch for a few SGD steps, recording the
parameter gradients of every step; rank 0 also trains a copy in one process
on the whole batch. Writes ``{"ddp": [...], "single": [...]}`` to ``OUT``.

Usage: python ddp_worker.py RANK WORLD PORT OUT
"""

import os
import sys

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import tcc.torch as tt  # noqa: E402

PROGRAM = os.path.join(HERE, "data", "examples", "ugrnn_cell.loop")
B, J, K, STEPS = 8, 5, 4, 3


def batch():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(B, J, generator=g, dtype=torch.float64)
    x = torch.randn(B, K, generator=g, dtype=torch.float64)
    target = torch.randn(B, J, generator=g, dtype=torch.float64)
    return h, x, target


def train(model, h, x, target, step_model=None):
    opt = torch.optim.SGD((step_model or model).parameters(), lr=0.1)
    grads = []
    for _ in range(STEPS):
        opt.zero_grad()
        hn = model(h=h, x=x)["hn"]
        loss = ((hn - target) ** 2).sum(dim=1).mean()       # the mean over this batch
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in (step_model or model).named_parameters()})
        opt.step()
    return grads


def main():
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(1)
        model = tt.Module(PROGRAM, dtype=torch.float64, J=J, K=K)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        h, x, target = batch()
        half = slice(rank * B // world, (rank + 1) * B // world)
        result = {"ddp": train(ddp, h[half], x[half], target[half], model)}
        if rank == 0:
            torch.manual_seed(1)
            single = tt.Module(PROGRAM, dtype=torch.float64, J=J, K=K)
            result["single"] = train(single, h, x, target)
            torch.save(result, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
