"""Data-parallel training over MPI processes: N processes give the one-process result, bit for bit.

The CPU training step splits a batch into chunks by the batch size alone (``chunk_rows`` in
``kernels/rnn_cpu.py``: 32 rows for the showcase's 128) and sums the chunks' partial gradients
in chunk order. A data-parallel step keeps that order across processes: each process holds
whole chunks of the global batch (its own rows, ``shard``), computes their partials
(``train_cpu.step_kernel``'s first half), then every process receives every chunk's partials by
an in-place all-gather and runs the same tail (the fixed-order sum, the global norm, clipping,
Adam). The tail's inputs are the same bits in every process and in a one-process run of the
global batch, so are its outputs: parameters, loss, accuracy and gradient norm.

Why an all-gather and not an all-reduce: a reduction's order is MPI's choice (and NCCL's, and
changes with the process count), and the sum of float32 partials in another order gives other
bits. The all-gather moves ``N-1`` times a process's partials into each process (the showcase:
4 chunks x ~10 KB, 1 layer), where a ring all-reduce would move about twice the partials of one
chunk; at these sizes both are latency, not bandwidth (README, "Training on many processes").

    from mpi4py import MPI
    import fastrnn
    from fastrnn import distributed
    comm = MPI.COMM_WORLD
    model = fastrnn.RNNClassifier(28, 31, 1, 10, comm=comm)   # parameters from rank 0
    rows = distributed.shard(128, comm)      # this process's rows of each global batch of 128
    loss, acc = model.train_step(x[rows], labels[rows])       # loss, acc of all 128 rows

``mpi4py`` is imported only when a communicator is given (``pip install 'fastrnn[mpi]'``).
Check: ``pytest tests/test_distributed.py`` (runs ``mpiexec -n 2``).
"""

from __future__ import annotations

import traceback


def _chunk_rows(batch: int) -> int:
    from fastrnn.kernels import rnn_cpu

    return rnn_cpu.chunk_rows.py_func(batch)


def world_problem(batch: int, size: int) -> str | None:
    """Why a global batch of ``batch`` rows cannot be split among ``size`` processes (each
    must hold the same whole number of the batch's chunks; one process holds any batch), with
    what would work; None if it can."""
    rows = _chunk_rows(batch)
    if size == 1 or (batch % size == 0 and (batch // size) % rows == 0):
        return None
    sizes = [1] + [n for n in range(2, batch + 1) if batch % n == 0 and (batch // n) % rows == 0]
    near = next(b for b in range(batch + 1, batch * size * 64)
                if b % size == 0 and (b // size) % _chunk_rows(b) == 0)
    return (f"a global batch of {batch} rows runs in chunks of {rows} rows, and each of "
            f"{size} processes must hold the same whole number of chunks; for batch {batch} "
            f"use {', '.join(map(str, sizes))} processes, or for {size} processes a batch of "
            f"{near}")


def shard(batch: int, comm) -> slice:
    """This process's rows ``[rank*b, (rank+1)*b)`` of a global batch of ``batch`` rows, ``b =
    batch / size``; ``ValueError`` if the batch does not split into whole chunks
    (:func:`world_problem`). Index a global batch (or a dataset laid out in global batches)
    with it."""
    size, rank = comm.Get_size(), comm.Get_rank()
    if (why := world_problem(batch, size)) is not None:
        raise ValueError(f"batch: {why}")
    b = batch // size
    return slice(rank * b, (rank + 1) * b)


class DataParallel:
    """The MPI side of a data-parallel classifier (``RNNClassifier(comm=...)``)."""

    def __init__(self, comm):
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def broadcast(self, *arrays) -> None:
        """Rank 0's values into every process's ``arrays`` (in place)."""
        for a in arrays:
            self.comm.Bcast(a, root=0)

    def gather(self, arrays) -> None:
        """Every process's rows of ``arrays`` (each ``[N*k, ...]``, C-contiguous, this
        process's ``k`` rows at ``rank*k``) into every process, in place."""
        for a in arrays:
            self.comm.Allgather(self._mpi.IN_PLACE, a)

    def agree(self, what: str, error: BaseException | None, batch: int | None = None):
        """Every process's error (and local batch size) exchanged; raise in every process if
        any failed (its own error where it failed, a ``RuntimeError`` naming the failed ranks
        elsewhere) or if the batches differ or do not split into whole chunks. Returns this
        process's ``(global batch, number of its first chunk)``, the ``shard`` of
        ``train_cpu.ClassifierStep`` (None without ``batch``). ``what``: the operation, for the
        messages."""
        told = self.comm.allgather((batch, None if error is None else
                                    "".join(traceback.format_exception_only(error)).strip()))
        failed = [(r, msg) for r, (_, msg) in enumerate(told) if msg is not None]
        if error is not None:
            raise error
        if failed:
            raise RuntimeError(f"{what}: not done in any process, because rank(s) "
                               + "; ".join(f"{r} raised {msg}" for r, msg in failed))
        if batch is None:
            return None
        sizes = [b for b, _ in told]
        if len(set(sizes)) != 1:
            raise ValueError(f"x: expected the same number of rows in every process, got "
                             f"{sizes} (ranks 0..{self.size - 1}); no process took the step")
        total = sizes[0] * self.size
        if (why := world_problem(total, self.size)) is not None:
            raise ValueError(f"x: {why}; no process took the step")
        return total, self.rank * batch // _chunk_rows(total)
