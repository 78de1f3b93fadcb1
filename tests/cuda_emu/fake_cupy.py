"""The slice of CuPy that fastrnn's CUDA launchers and backend use, on NumPy and the CPU emulator.

``installed(monkeypatch)`` makes this module ``cupy`` (in ``sys.modules``), so the GPU backend's
Python (the API edge with "CuPy" arrays, the classifier's step and its CUDA-graph replay,
``predict``/``evaluate``, the functional launchers) runs on a machine without a GPU:

- arrays are NumPy arrays of a subclass with CuPy's ``.data.ptr``; ``matmul``, ``sum``, ... are
  NumPy's (the general path's GEMMs);
- ``RawModule`` compiles the ``.cu`` named by the source's ``#line 1 "<path>"`` for the emulator
  (``harness.load``), and each launch runs there to completion, in program order;
- streams and events only keep program order (the emulator runs one launch at a time); stream
  capture records launches and copies into a graph whose ``launch`` replays them;
- page-locked host memory is plain host memory;
- ``cuda.nccl`` (send/recv in groups, all-gather) runs on MPI, each process of an ``mpiexec``
  run standing for one GPU (``tests/mpi_worker.py``'s ``cuda`` case).

What this cannot check: the CUDA runtime's own rules (which calls a capture accepts, concurrency
between streams, what a copy costs). Those need a GPU (``pytest -m gpu``).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from tests.cuda_emu.harness import load

float32, float64, int32, int64 = np.float32, np.float64, np.int32, np.int64

_capture: list | None = None  # the launches and copies of the stream capture in progress


class FakeArray(np.ndarray):
    """A NumPy array with CuPy's ``a.data.ptr`` and ``a.get()``. Its ``__module__`` starts with
    "cupy", so fastrnn's API edge takes it for a CuPy array (and picks the cuda backend)."""

    __module__ = "cupy (fake: tests/cuda_emu/fake_cupy.py)"

    @property
    def data(self):
        return SimpleNamespace(ptr=self.ctypes.data)

    def get(self) -> np.ndarray:
        return np.array(self)

    def set(self, host) -> None:
        self[...] = host


def _fake(a) -> FakeArray:
    return np.asarray(a).view(FakeArray)


def empty(shape, dtype=np.float64):
    return _fake(np.empty(shape, dtype))


def zeros(shape, dtype=np.float64):
    return _fake(np.zeros(shape, dtype))


def full(shape, value, dtype=None):
    return _fake(np.full(shape, value, dtype))


def zeros_like(a):
    return _fake(np.zeros_like(a))


def empty_like(a):
    return _fake(np.empty_like(a))


def array(a, dtype=None):
    return _fake(np.array(a, dtype=dtype))


def asarray(a, dtype=None):
    return _fake(np.array(a, dtype=dtype, copy=None))


def ascontiguousarray(a, dtype=None):
    return _fake(np.ascontiguousarray(a, dtype=dtype))


def asfortranarray(a):
    return _fake(np.asfortranarray(a))


def asnumpy(a):
    return np.array(a)


matmul, sum = np.matmul, np.sum  # noqa: A001 -- CuPy's names


def _run_or_record(op) -> None:
    if _capture is not None:
        _capture.append(op)
    else:
        op()


def _c_arg(a):
    """A launch argument as the emulator takes it: NULL (``np.uint64(0)``) is None."""
    if isinstance(a, np.uint64):
        if a:
            raise TypeError("the emulator takes no raw pointers other than NULL")
        return None
    return np.asarray(a) if isinstance(a, np.ndarray) else a


class _Function:
    def __init__(self, module, name: str):
        self._module, self._name = module, name
        self.max_dynamic_shared_size_bytes = 48 * 1024

    def __call__(self, grid, block, args, shared_mem=0):
        args = tuple(_c_arg(a) for a in args)
        _run_or_record(lambda: self._module.launch(self._name, grid, block, shared_mem, *args,
                                                   order="random", seed=1))


class RawModule:
    def __init__(self, code: str, options=()):
        path = re.match(r'#line 1 "(.+)"\n', code)[1]
        self._module = load(path)

    def get_function(self, name: str) -> _Function:
        return _Function(self._module, name)


class _Event:
    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


class _Graph:
    def __init__(self, ops: list):
        self._ops = ops

    def launch(self, stream=None):
        for op in self._ops:
            op()


class _Stream:
    ptr = 0

    def __init__(self, non_blocking: bool = False):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record(self, event=None):
        return event or _Event()

    def wait_event(self, event):
        pass

    def synchronize(self):
        pass

    def begin_capture(self, mode=None):
        global _capture
        _capture = []

    def end_capture(self) -> _Graph:
        global _capture
        graph, _capture = _Graph(_capture), None
        return graph


def _memcpy_async(dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
    _run_or_record(lambda: ctypes.memmove(dst, src, nbytes))


class _Pinned(bytearray):
    """``alloc_pinned_memory``: a host buffer with CuPy's ``.ptr``."""

    @property
    def ptr(self) -> int:
        return ctypes.addressof(ctypes.c_char.from_buffer(self))


def _host(ptr: int, count: int) -> np.ndarray:
    """The float32 ``[count]`` at address ``ptr`` (a fake device pointer is a host one)."""
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(ptr))


class _NcclCommunicator:
    """CuPy's ``cupy.cuda.nccl.NcclCommunicator`` (the calls ``fastrnn.distributed`` makes), on
    MPI's world communicator: each process of an ``mpiexec`` run plays one GPU of the NCCL
    communicator, float32 buffers only. Point-to-point calls inside ``groupStart``/``groupEnd``
    are posted as non-blocking MPI calls and completed at ``groupEnd``, as NCCL runs a group."""

    def __init__(self, ndev: int, commId: bytes, rank: int):
        from mpi4py import MPI

        self._mpi, self._comm = MPI, MPI.COMM_WORLD
        assert (self._comm.Get_size(), self._comm.Get_rank()) == (ndev, rank), (ndev, rank)

    def _post(self, request) -> None:
        if _nccl_group is None:
            request.Wait()
        else:
            _nccl_group.append(request)

    def send(self, sendbuf: int, count: int, datatype: int, peer: int, stream: int) -> None:
        assert datatype == _nccl.NCCL_FLOAT32
        self._post(self._comm.Isend(_host(sendbuf, count).copy(), dest=peer))

    def recv(self, recvbuf: int, count: int, datatype: int, peer: int, stream: int) -> None:
        assert datatype == _nccl.NCCL_FLOAT32
        self._post(self._comm.Irecv(_host(recvbuf, count), source=peer))

    def allGather(self, sendbuf: int, recvbuf: int, count: int, datatype: int,
                  stream: int) -> None:
        assert datatype == _nccl.NCCL_FLOAT32 and _nccl_group is None
        size, rank = self._comm.Get_size(), self._comm.Get_rank()
        out = _host(recvbuf, size * count)
        in_place = sendbuf == recvbuf + 4 * rank * count
        self._comm.Allgather(self._mpi.IN_PLACE if in_place else _host(sendbuf, count), out)


_nccl_group: list | None = None  # the requests of the NCCL group in progress


def _group_start() -> None:
    global _nccl_group
    _nccl_group = []


def _group_end() -> None:
    global _nccl_group
    requests, _nccl_group = _nccl_group, None
    for r in requests:
        r.Wait()


_nccl = SimpleNamespace(NCCL_FLOAT32=7, get_unique_id=lambda: b"fake-nccl-id",
                        NcclCommunicator=_NcclCommunicator, groupStart=_group_start,
                        groupEnd=_group_end)

runtime = SimpleNamespace(
    getDeviceCount=lambda: 1, memcpyAsync=_memcpy_async,
    cudaDevAttrMaxSharedMemoryPerBlockOptin=97,
    deviceGetAttribute=lambda attr, device: 227 * 1024)
cuda = SimpleNamespace(
    Stream=_Stream, Event=lambda **kw: _Event(), get_current_stream=lambda: _Stream(),
    runtime=runtime, alloc_pinned_memory=_Pinned, nccl=_nccl,
    Device=lambda *a: SimpleNamespace(id=0, mem_info=(2**34, 2**34), use=lambda: None))


@contextlib.contextmanager
def installed(monkeypatch):
    """This module as ``cupy`` for every ``import cupy`` inside the block (fastrnn imports it
    lazily, inside functions), undone by ``monkeypatch``; yields the module. The launchers'
    caches of compiled modules are emptied before and after, so no fake kernel outlives the block
    and no real one is used inside it. Skips the test when g++ (the emulator) is missing."""
    import sys

    from fastrnn.kernels import cuda as launchers

    if shutil.which("g++") is None:
        pytest.skip("needs g++ (the CUDA emulator)")
    caches = (launchers.load_module, launchers.kernel, launchers._smem_optin)
    for cached in caches:
        cached.cache_clear()
    monkeypatch.setitem(sys.modules, "cupy", sys.modules[__name__])
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)  # for "from cupy.cuda import nccl"
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", _nccl)
    try:
        yield sys.modules[__name__]
    finally:
        for cached in caches:
            cached.cache_clear()
