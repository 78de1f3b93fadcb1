"""The program ``tests/test_distributed.py`` runs under ``mpiexec`` (and alone, for one process).

``python tests/mpi_worker.py CASE [ARGS]``; every rank prints one JSON line ``{"rank": r, ...}``.

train LAYERS   20 clipped Adam steps on synthetic batches of 64 rows, each process given its
               rows (all of them without MPI); prints a SHA-256 of every loss, accuracy and
               gradient norm and of the final parameters and Adam moments
faults [cuda]  a bad input on rank 1, then NaN in rank 1's rows, then unequal batches, then a
               good step: prints what each step raised, and a digest of the parameters after each
               (cuda: on the emulated GPUs, as in the cuda case)
save DIR       two steps, save (rank 0 writes), load with the communicator, one more step
cuda H LAYERS [real]
               6 clipped Adam steps of a CUDA model on the emulator (tests/cuda_emu/fake_cupy.py:
               NCCL stood in by MPI; "real": CuPy, GPUs and NCCL), each process given its rows;
               prints a SHA-256 of every loss, accuracy and gradient norm and of the final
               parameters, the final parameters, and the last step's loss, accuracy and norm
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

import fastrnn
from fastrnn import distributed

B, T, I, H, C = 64, 7, 5, 13, 4


def comm_or_none():
    if "OMPI_COMM_WORLD_SIZE" not in os.environ:
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD


def batches(n: int):
    rng = np.random.default_rng(1)
    for _ in range(n):
        yield rng.standard_normal((B, T, I)).astype(np.float32), rng.integers(0, C, B)


def digest(model, *more) -> str:
    h = hashlib.sha256()
    for a in (*more, model.params, model.m, model.v):
        h.update(np.asarray(a.get() if hasattr(a, "get") else a).tobytes())
    return h.hexdigest()


def faults(rank, rows, comm, device, to_device) -> dict:
    """The ``faults`` case on ``device`` (``to_device``: NumPy rows to an array there)."""
    model = fastrnn.RNNClassifier(I, H, 1, C, seed=3, comm=comm, device=device)
    (x, y), (x2, y2) = batches(2)
    bad_x = x[rows].copy()
    nan_x = x[rows].copy()
    short = x[rows]
    if rank == 1:
        bad_x = bad_x[:, :, :-1]  # the wrong input size
        nan_x[0, 0, 0] = np.nan
        short = short[:-8]
    steps = []
    for xs in (bad_x, nan_x, short, x[rows]):
        try:
            model.train_step(to_device(xs), to_device(y[rows][:len(xs)]))
            steps.append(["ok", digest(model)])
        except Exception as e:
            steps.append([type(e).__name__, str(e), digest(model)])
    return {"steps": steps, "step": model.step}


def cuda_steps(rows, comm, hidden: int, layers: int, cp) -> dict:
    """The ``cuda`` case: 6 clipped steps of a CUDA model (``cp``: CuPy or the fake)."""
    model = fastrnn.RNNClassifier(I, hidden, layers, C, device="cuda", clip_norm=0.5, seed=3,
                                  comm=comm)
    seen = []
    for x, y in batches(6):
        seen += [*model.train_step(cp.asarray(x[rows]), cp.asarray(y[rows])),
                 model.last_grad_norm]
    host = cp.asnumpy(model.params)
    return {"digest": digest(model, seen), "params": host.astype(np.float64).tolist(),
            "last": seen[-3:]}


def main() -> None:
    comm = comm_or_none()
    rank = 0 if comm is None else comm.Get_rank()
    rows = slice(None) if comm is None else distributed.shard(B, comm)
    case = sys.argv[1]
    out: dict = {"rank": rank}
    if case == "train":
        model = fastrnn.RNNClassifier(I, H, int(sys.argv[2]), C, clip_norm=0.5, seed=3,
                                      comm=comm)
        seen = []
        for x, y in batches(20):
            seen += [*model.train_step(x[rows], y[rows]), model.last_grad_norm]
        out["digest"] = digest(model, seen)
        out["last"] = seen[-3:]
    elif case == "faults" and sys.argv[2:] == ["cuda"]:  # the same on the emulated GPUs
        import pytest

        from tests.cuda_emu import fake_cupy

        with pytest.MonkeyPatch.context() as mp, fake_cupy.installed(mp) as cp:
            out |= faults(rank, rows, comm, "cuda", cp.asarray)
    elif case == "faults":
        out |= faults(rank, rows, comm, "cpu", np.asarray)
    elif case == "save":
        path = f"{sys.argv[2]}/model.npz"
        model = fastrnn.RNNClassifier(I, H, 1, C, seed=3, comm=comm)
        data = list(batches(3))
        for x, y in data[:2]:
            model.train_step(x[rows], y[rows])
        model.save(path)
        model = fastrnn.RNNClassifier.load(path, comm=comm)
        x, y = data[2]
        model.train_step(x[rows], y[rows])
        out["digest"], out["step"] = digest(model), model.step
    elif case == "cuda" and sys.argv[4:] == ["real"]:  # real GPUs and NCCL
        import cupy

        out |= cuda_steps(rows, comm, int(sys.argv[2]), int(sys.argv[3]), cupy)
    elif case == "cuda":
        import pytest

        from tests.cuda_emu import fake_cupy

        with pytest.MonkeyPatch.context() as mp, fake_cupy.installed(mp) as cp:
            out |= cuda_steps(rows, comm, int(sys.argv[2]), int(sys.argv[3]), cp)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
