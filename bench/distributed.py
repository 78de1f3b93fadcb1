"""Data-parallel step time and its communication, on the showcase (B=128, T=28, I=28, H=31).

    python bench/distributed.py                                     # 1 process (its threads)
    NUMBA_NUM_THREADS=1 mpiexec -n 2 python bench/distributed.py    # 2 processes x 1 thread
    (as root, Open MPI also needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)

Per layer count: the median training step (``RNNClassifier.train_step``, rounds of 200 steps
after 50 of warm-up), and with MPI its communication, timed inside those same steps: the
agreement on errors and batch sizes (one small ``allgather``) and the in-place ``Allgather`` of
every chunk's partial gradients, with the bytes each process receives. Rank 0 prints the table.
"""

from __future__ import annotations

import os
import time

import numpy as np

import fastrnn
from fastrnn import distributed

B, T, I, H, C = 128, 28, 28, 31, 10
ROUNDS, STEPS = 7, 200


def timed(fn, spent: dict, size: int = 0):
    """``fn`` adding its seconds to ``spent["s"]`` (and, given the process count ``size``, the
    bytes an all-gather of its first argument's arrays brings each process to
    ``spent["bytes"]``)."""
    def call(*args):
        t0 = time.perf_counter()
        out = fn(*args)
        spent["s"] += time.perf_counter() - t0
        if size:
            spent["bytes"] = sum(a.nbytes for a in args[0]) * (size - 1) // size
        return out
    return call


def main() -> None:
    comm = None
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    import numba

    size = 1 if comm is None else comm.Get_size()
    rows = slice(None) if comm is None else distributed.shard(B, comm)
    rng = np.random.default_rng(0)
    x = rng.random((B, T, I), dtype=np.float32)[rows].copy()
    y = rng.integers(0, C, B)[rows].copy()
    lines = []
    for layers in (1, 3):
        model = fastrnn.RNNClassifier(I, H, layers, C, comm=comm)
        spent = {"s": 0.0, "bytes": 0}
        if comm is not None:  # the model's own communication, timed where it runs
            dp = model._dp
            dp.agree, dp.gather = timed(dp.agree, spent), timed(dp.gather, spent, size)
        for _ in range(50):
            model.train_step(x, y)
        step_s, comm_s = [], []
        for _ in range(ROUNDS):
            spent["s"] = 0.0
            t0 = time.perf_counter()
            for _ in range(STEPS):
                model.train_step(x, y)
            step_s.append((time.perf_counter() - t0) / STEPS)
            comm_s.append(spent["s"] / STEPS)
        med = np.median(step_s) * 1e6
        if comm is None:
            lines.append(f"| {layers} | 1 x {numba.get_num_threads()} threads | {med:.0f} | | |")
        else:
            lines.append(f"| {layers} | {size} x {numba.get_num_threads()} thread(s) | {med:.0f} "
                         f"| {np.median(comm_s) * 1e6:.0f} | {spent['bytes'] / 1024:.1f} |")
    if comm is None or comm.Get_rank() == 0:
        print("| layers | processes x threads | step (us, median) | communication (us) | "
              "KiB received per process |")
        print("|---|---|---|---|---|")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
