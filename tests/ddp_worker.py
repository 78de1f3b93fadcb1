"""The program ``tests/test_distributed.py`` runs as each process of a 2-process
``torch.nn.parallel.DistributedDataParallel`` job on the CPU (gloo backend).

``python tests/ddp_worker.py RANK WORLD PORT OUT``: builds ``fastrnn.torch.RNN`` and
``torch.nn.RNN`` with the same weights (float64, 2 layers, ``batch_first``), wraps each in DDP, runs
3 SGD steps on this rank's rows of fixed global batches, and saves every step's gradients and the
final weights of both (rank by rank) to ``OUT`` (``.npz``).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import fastrnn.torch as ft

B, T, I, H, LAYERS = 8, 6, 5, 7, 2


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    theirs = torch.nn.RNN(I, H, LAYERS, batch_first=True, dtype=torch.float64)
    ours = ft.RNN(I, H, LAYERS, batch_first=True, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    models = {"ours": torch.nn.parallel.DistributedDataParallel(ours),
              "theirs": torch.nn.parallel.DistributedDataParallel(theirs)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.1) for k, m in models.items()}
    gen = torch.Generator().manual_seed(1)
    rows = slice(rank * B // world, (rank + 1) * B // world)
    saved = {}
    for step in range(3):
        x = torch.randn(B, T, I, generator=gen, dtype=torch.float64)[rows]
        target = torch.randn(B, T, H, generator=gen, dtype=torch.float64)[rows]
        for name, model in models.items():
            opts[name].zero_grad()
            y, h_n = model(x)
            ((y - target) ** 2).mean().backward()
            for pname, p in model.module.named_parameters():
                saved[f"{name}.{step}.grad.{pname}"] = p.grad.numpy().copy()
            opts[name].step()
    for name, model in models.items():
        for pname, p in model.module.named_parameters():
            saved[f"{name}.final.{pname}"] = p.detach().numpy().copy()
    np.savez(out, **saved)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
