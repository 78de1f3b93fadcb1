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
- page-locked host memory is plain host memory.

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


runtime = SimpleNamespace(
    getDeviceCount=lambda: 1, memcpyAsync=_memcpy_async,
    cudaDevAttrMaxSharedMemoryPerBlockOptin=97,
    deviceGetAttribute=lambda attr, device: 227 * 1024)
cuda = SimpleNamespace(
    Stream=_Stream, Event=lambda **kw: _Event(), get_current_stream=lambda: _Stream(),
    runtime=runtime, alloc_pinned_memory=_Pinned,
    Device=lambda *a: SimpleNamespace(id=0, mem_info=(2**34, 2**34)))


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
    try:
        yield sys.modules[__name__]
    finally:
        for cached in caches:
            cached.cache_clear()
