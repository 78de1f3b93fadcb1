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

On CUDA (``RNNClassifier(..., device="cuda", comm=comm)``) each process uses one GPU (the
process with node-local rank ``r`` takes GPU ``r mod (GPUs it sees)``), the batch splits into
equal shares of rows (no chunks), and the gradients, the loss and the number of correct rows
go through NCCL on the device (a communicator set up through MPI), summed in rank order
(:meth:`DataParallel.sum_on_device`): every process gets the same bits, and a run gets the same
bits again at the same process count, whatever algorithm NCCL picks; not the one-process bits
(the CUDA kernels reduce a process's rows in one tree, whose shape depends on its batch).

``mpi4py`` is imported only when a communicator is given (``pip install 'fastrnn[mpi]'``).
Check: ``pytest tests/test_distributed.py`` (runs ``mpiexec -n 2``; the CUDA path on the
emulator, NCCL stood in by MPI: ``tests/cuda_emu/fake_cupy.py``).
"""

from __future__ import annotations

import traceback


def _chunk_rows(batch: int) -> int:
    from fastrnn.kernels import rnn_cpu

    return rnn_cpu.chunk_rows.py_func(batch)


def world_problem(batch: int, size: int, device: str = "cpu") -> str | None:
    """Why a global batch of ``batch`` rows cannot be split among ``size`` processes (on the
    CPU each must hold the same whole number of the batch's chunks, on CUDA the same number of
    rows; one process holds any batch), with what would work; None if it can."""
    if device != "cpu":
        if batch % size == 0:
            return None
        sizes = [n for n in range(1, batch + 1) if batch % n == 0]
        return (f"a global batch of {batch} rows splits into equal shares among "
                f"{', '.join(map(str, sizes))} processes, not {size}; for {size} processes use "
                f"a batch of {-(-batch // size) * size}")
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


def shard(batch: int, comm, device: str = "cpu") -> slice:
    """This process's rows ``[rank*b, (rank+1)*b)`` of a global batch of ``batch`` rows, ``b =
    batch / size``; ``ValueError`` if the batch does not split as ``device`` needs
    (:func:`world_problem`). Index a global batch (or a dataset laid out in global batches)
    with it."""
    size, rank = comm.Get_size(), comm.Get_rank()
    if (why := world_problem(batch, size, device)) is not None:
        raise ValueError(f"batch: {why}")
    b = batch // size
    return slice(rank * b, (rank + 1) * b)


class DataParallel:
    """The MPI (and, on ``device="cuda"``, NCCL) side of a data-parallel classifier
    (``RNNClassifier(comm=...)``)."""

    def __init__(self, comm, device: str = "cpu"):
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm
        self.device = device
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._nccl = None
        self._recv = None  # sum_on_device's [N, k] receive buffer

    def use_gpu(self) -> None:
        """Make this process's GPU current: node-local rank mod the GPUs it sees (with one
        visible GPU per process, as Slurm's ``--gpus-per-task=1`` gives, that one)."""
        import cupy

        local = self.comm.Split_type(self._mpi.COMM_TYPE_SHARED).Get_rank()
        cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()

    def _nccl_comm(self):
        """The NCCL communicator of this MPI communicator's processes (rank 0's unique id
        broadcast over MPI), made on first use."""
        if self._nccl is None:
            from cupy.cuda import nccl

            uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
            self._nccl = (nccl, nccl.NcclCommunicator(self.size, uid, self.rank))
        return self._nccl

    def sum_on_device(self, buf, n_mean: int) -> None:
        """``buf`` (float32 ``[N*k]`` on this process's GPU; N = processes) replaced in place,
        in every process, by the sum of every process's ``buf`` in rank order, its first
        ``n_mean`` entries divided by N. Every process sends shard ``j`` (``k`` elements) of its
        ``buf`` to process ``j`` (NCCL send/recv, grouped), sums the N copies of its own shard
        in rank order (``sum_in_rank_order``), and an all-gather brings every summed shard to
        every process: each process sends and receives ``2 (N-1) k`` floats, as a ring
        all-reduce does, but the order of the sum is fixed (NCCL's own all-reduce sums in the
        order of its algorithm, which it picks per size and topology)."""
        import cupy

        from fastrnn.kernels import cuda as kernels

        N, r = self.size, self.rank
        k = buf.size // N
        if self._recv is None or self._recv.shape != (N, k):
            self._recv = cupy.empty((N, k), dtype=cupy.float32)
        nccl, comm = self._nccl_comm()
        stream = cupy.cuda.get_current_stream().ptr
        mine = buf[r * k:(r + 1) * k]
        self._recv[r] = mine
        nccl.groupStart()
        for j in range(N):
            if j != r:
                comm.send(buf[j * k:].data.ptr, k, nccl.NCCL_FLOAT32, j, stream)
                comm.recv(self._recv[j].data.ptr, k, nccl.NCCL_FLOAT32, j, stream)
        nccl.groupEnd()
        kernels.rank_sum_into(self._recv, mine, r * k, n_mean)
        comm.allGather(mine.data.ptr, buf.data.ptr, k, nccl.NCCL_FLOAT32, stream)

    def broadcast(self, *arrays) -> None:
        """Rank 0's values into every process's ``arrays`` (in place; CuPy arrays through a
        host copy, which needs no CUDA-aware MPI)."""
        for a in arrays:
            if type(a).__module__.startswith("cupy"):
                host = a.get()
                self.comm.Bcast(host, root=0)
                a.set(host)
            else:
                self.comm.Bcast(a, root=0)

    def gather(self, arrays) -> None:
        """Every process's rows of ``arrays`` (each ``[N*k, ...]``, C-contiguous, this
        process's ``k`` rows at ``rank*k``) into every process, in place."""
        for a in arrays:
            self.comm.Allgather(self._mpi.IN_PLACE, a)

    def agree(self, what: str, error: BaseException | None, batch: int | None = None):
        """Every process's error (and local batch size) exchanged; raise in every process if
        any failed (its own error where it failed, a ``RuntimeError`` naming the failed ranks
        elsewhere) or if the batches differ or (on the CPU) do not split into whole chunks.
        Returns the ``shard`` of the backend's step (None without ``batch``): on the CPU this
        process's ``(global batch, number of its first chunk)`` (``train_cpu.ClassifierStep``),
        on CUDA ``(global batch, number of processes)``. ``what``: the operation, for the
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
        if self.device != "cpu":  # equal shares of rows, no chunks
            return total, self.size
        if (why := world_problem(total, self.size)) is not None:
            raise ValueError(f"x: {why}; no process took the step")
        return total, self.rank * batch // _chunk_rows(total)
