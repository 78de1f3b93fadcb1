"""Numba settings every fastrnn CPU kernel is compiled and run with; import before defining kernels.

Vectoriser switches, scoped to fastrnn's own functions
------------------------------------------------------
The kernels keep their accumulators in registers as tuples of 8 lanes (see ``rnn_cpu.py``); only
LLVM's SLP vectoriser turns those into vector FMAs (two 8-tuples fuse into one zmm on AVX-512,
one is one ymm on AVX2: Numba compiles for the host CPU), and Numba leaves it off by default
(``NUMBA_SLP_VECTORIZE=0``). With it on and the loop vectoriser off (it picks the wrong loop here)
the micro-kernel runs ~4.5x faster (``python -m fastrnn.kernels._numba_env``). Every function
that holds such tuple code must itself be compiled with this pipeline: calls between Numba
functions are not inlined by LLVM, so a helper's vectorisation is decided by its own compile.

Numba reads both switches from ``numba.core.config`` when it builds a function's LLVM pass manager,
i.e. at compile time; ``config`` is filled from ``NUMBA_*`` environment variables at import and
re-read by every compile whenever the environment changed (``config.reload_config()``). Setting the
variables in ``os.environ`` would change every other Numba function compiled in the user's process.
Instead each kernel is jitted with ``pipeline_class=VectorizingCompiler`` (a documented ``@jit``
option): it sets the two switches for the duration of that function's own compile and restores them
after, so nothing outside fastrnn is affected and no import order matters. A user who sets
``NUMBA_SLP_VECTORIZE`` or ``NUMBA_LOOP_VECTORIZE`` explicitly keeps their value. On-disk cache
entries (``cache=True``) do not record these switches, so they hold what this compiler produced.

Garbage collection during a compile
-----------------------------------
A cold compile builds millions of long-lived Python objects (Numba IR, types, llvmlite IR), and
CPython's full (generation 2) collections rescan all of them: 22 of them took ~4 s of the showcase
step's first compile (~24 s -> ~20 s without them; measured by ``gc.set_threshold``). So
``VectorizingCompiler`` lifts the generation-2 threshold while it compiles (generations 0 and 1
still run, cycles are freed by the next full collection after it) and restores the user's
thresholds after. Peak memory of that compile rises from ~310 MB to ~475 MB.

Cold compile on two cores
-------------------------
Numba compiles one function at a time, and a caller links every callee's LLVM module into its
own and optimises and emits it again, so each library level above the kernels costs ~0.8 s
(a ``prange`` adds three levels: the parallel body and two wrappers). What keeps that, and
single-core compiling, off the first use:

- ``train_cpu.step_kernel`` calls its parallel body, ``_chunk_step``, by address
  (``train_cpu._call_at``), so neither it nor its three ``prange`` levels link the chunk code;
- on a cold cache, :func:`compile_in_two_processes` has a helper process compile part of the
  kernels (``_forward_chunk``, then ``step_kernel`` itself) into the on-disk cache while this
  process compiles the rest; then ``_chunk_step`` (which links all the chunk code, once) is
  compiled here. A warm cache costs one cached load;
- the functional API's ``rnn_cpu.forward_kernel`` and ``backward_kernel`` have their chunk
  functions compiled first, at top level and the backward's on two cores (``ParallelKernel``'s
  ``prepare``): compiled inside a parallel kernel's compile, a callee took ~2x as long. A cold
  ``rnn_forward`` + ``rnn_backward`` (showcase shape) went from 8.3 + 18.8 s to 7.1 + 9.7 s.

First training step of the showcase (``python -c`` command in ``rnn_cpu``'s docstring) on the
README's 2-vCPU machine: ~25 s with one process and Numba's defaults; ~15 s with full collections
off and the helper process; 10.5-10.9 s with the call by address as well (1 or 3 layers, against
14.7-15.1 s in alternating runs of the same sitting); from the cache: 0.4 s. With Python's start
and the import: ``pytest bench/test_bench_compile.py --benchmark-only``.

Threading layer
---------------
fastrnn asks Numba for OpenMP first (``THREADING_LAYER_PRIORITY`` = omp, tbb, workqueue) unless the
user chose (``NUMBA_THREADING_LAYER``, ``NUMBA_THREADING_LAYER_PRIORITY``) or a parallel region
already ran. Measured on the 2-vCPU machine of the README (``python -m fastrnn.kernels._numba_env``
prints the first line): an empty ``prange`` call costs ~1.2 us under ``omp`` and 50-100 us under
``workqueue``, whose threads sleep between calls; the showcase training step takes ~0.16 ms in all,
so the launch decides the speed. In one process with PyTorch (``bench/test_bench_torch_dropin.py``,
threads tables) torch's own step was not slowed by a fastrnn step before it, with either layer
(1.82 vs 1.86 ms; large shape 29.6 vs 29.8 ms), while fastrnn's was 1.5-2x faster under ``omp``.
``omp`` is also thread-safe (kernels may be called from several Python threads at once; under
``workqueue`` they must not be).

GNU OpenMP is not fork-safe: Numba kills (SIGTERM) a process forked after a parallel region ran as
soon as that child launches one. fastrnn's parallel kernels are :class:`ParallelKernel` objects: in
such a child they run their serial twin (the same code with ``prange`` as ``range``, compiled and
cached on first use there), so the child computes the same bits on one thread instead of dying.
The thread count is Numba's (all cores, or ``NUMBA_NUM_THREADS`` / ``numba.set_num_threads``);
results do not depend on it (see ``rnn_cpu``).
"""

from __future__ import annotations

import functools
import gc
import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import types
import warnings

import numba
from numba.core import config
from numba.core.compiler import Compiler

#: Numba's three layers, in fastrnn's order of preference (see the module docstring)
LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_VECTORIZER = {"SLP_VECTORIZE": 1, "LOOP_VECTORIZE": 0}
#: generation-2 threshold while a kernel compiles: no full collection during a compile
_NO_FULL_GC = 1_000_000


class VectorizingCompiler(Compiler):
    """Numba's default compiler with SLP on and loop vectorisation off for this function only,
    and without Python's full garbage collections while it runs (see the module docstring)."""

    def compile_extra(self, func):
        saved = {k: getattr(config, k) for k in _VECTORIZER}
        for k, val in _VECTORIZER.items():
            if "NUMBA_" + k not in os.environ:
                setattr(config, k, val)
        thresholds = gc.get_threshold()
        gc.set_threshold(*thresholds[:2], _NO_FULL_GC)  # a nested compile keeps it and restores it
        try:
            return super().compile_extra(func)
        finally:
            gc.set_threshold(*thresholds)
            for k, val in saved.items():
                setattr(config, k, val)


def _layer_started() -> str | None:
    try:
        return numba.threading_layer()
    except ValueError:  # Numba's threads are not launched yet
        return None


def _choose_threading_layer() -> None:
    if ("NUMBA_THREADING_LAYER" in os.environ
            or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ or _layer_started()):
        return
    config.THREADING_LAYER_PRIORITY = list(LAYER_PRIORITY)


_choose_threading_layer()

#: True in a process forked after GNU OpenMP ran a parallel region (Numba would kill it)
_serial_only = False


def _after_fork_in_child() -> None:
    global _serial_only
    if _layer_started() == "omp":
        from numba.np.ufunc import omppool

        _serial_only = _serial_only or omppool.openmp_vendor == "GNU"


os.register_at_fork(after_in_child=_after_fork_in_child)

#: keyword arguments of every fastrnn ``@njit``: on-disk cache, NumPy's error model (no
#: zero-division check, so the tanh's division vectorises), FMA contraction only (no reassociation:
#: results stay reproducible and the float64 kernels match the reference to ~1e-15).
JIT_OPTIONS = {
    "cache": True,
    "error_model": "numpy",
    "fastmath": {"contract"},
    "pipeline_class": VectorizingCompiler,
}


class ParallelKernel:
    """``njit(parallel=True, **JIT_OPTIONS)(fn)``, plus its serial twin for forked children.

    Called like the kernel. ``parallel`` and ``serial`` are the two Numba dispatchers; ``serial``
    compiles ``fn``'s code again without ``parallel`` under the name ``<fn>_serial`` (so the two
    have separate on-disk cache entries) and is used only where :data:`_serial_only` is set.
    ``prepare``, if given, maps the first call's arguments to the ``(here, there)`` lists of
    :func:`compile_in_two_processes`: the functions the kernel calls, typed as it calls them, so
    they are compiled (or loaded) at top level, and on two cores, before the kernel itself (a
    callee compiled inside a parallel kernel's compile took ~2x as long).
    """

    def __init__(self, fn, prepare=None):
        self._prepare = prepare
        self.parallel = numba.njit(parallel=True, **JIT_OPTIONS)(fn)
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                  fn.__defaults__, fn.__closure__)
        twin.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = numba.njit(**JIT_OPTIONS)(twin)
        self.dispatchers = (self.parallel, self.serial)
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        if self._prepare is not None:  # the first call
            prepare, self._prepare = self._prepare, None
            compile_in_two_processes(*prepare(*args))
        return (self.serial if _serial_only else self.parallel)(*args)


#: seconds a compile helper process may take before this process compiles its share itself
HELPER_TIMEOUT_S = 300


def compile_in_two_processes(here, there) -> None:
    """Compile two lists of ``(dispatcher, argument types)`` at the same time, on a cold cache.

    Compiles (or loads) ``here[0]`` first, as a probe: if it came from the on-disk cache or was
    already in memory, nothing else happens (the callers load from the cache when first called).
    Otherwise a helper Python process compiles ``there`` into Numba's on-disk cache
    (``NUMBA_CACHE_DIR`` as this process sees it) while this process compiles the rest of
    ``here``, and waits for it (no helper when ``there`` is empty); a caller compiled afterwards
    loads ``there`` from the cache. The two lists must share no function; a
    :class:`ParallelKernel`'s ``parallel`` dispatcher may be in ``there``. If the helper fails or
    runs past :data:`HELPER_TIMEOUT_S`, it is stopped with a warning and ``there`` is compiled
    here on first use, as without it. Dispatchers must be module-level names of their modules.
    """
    probe, sig = here[0]
    misses = sum(probe.stats.cache_misses.values())
    probe.compile(sig)
    if sum(probe.stats.cache_misses.values()) == misses:
        return
    if not there:
        for d, s in here[1:]:
            d.compile(s)
        return
    jobs = pickle.dumps([(d.py_func.__module__, d.py_func.__name__, s) for d, s in there])
    env = dict(os.environ)
    if config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = config.CACHE_DIR
    code = f"import sys; sys.path[:] = {sys.path!r}; import {__name__} as m; m._helper_main()"
    with tempfile.TemporaryFile() as err:
        try:
            helper = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=err, env=env)
        except OSError as e:
            warnings.warn(f"fastrnn: no compile helper process ({e}); compiling here",
                          stacklevel=2)
            helper = None
        else:
            try:
                helper.stdin.write(jobs)
                helper.stdin.close()
            except BrokenPipeError:  # it died before reading its jobs: reported as failed below
                pass
        for d, s in here[1:]:
            d.compile(s)
        if helper is None:
            return
        try:
            failed = helper.wait(timeout=HELPER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            helper.kill()
            failed = helper.wait()
        if failed:
            err.seek(0)
            warnings.warn("fastrnn: the compile helper process failed or timed out; compiling "
                          "here:\n" + err.read()[-2000:].decode(errors="replace"), stacklevel=2)


def _helper_main() -> None:
    """The helper process of :func:`compile_in_two_processes`: compile the pickled jobs on stdin."""
    for module, name, sig in pickle.load(sys.stdin.buffer):
        kernel = getattr(importlib.import_module(module), name)
        (kernel.parallel if isinstance(kernel, ParallelKernel) else kernel).compile(sig)


if __name__ == "__main__":  # the micro-benchmarks quoted above
    import time

    import numpy as np

    def _axpy32(w, h, out):
        z = w.dtype.type(0)
        a = (z, z, z, z, z, z, z, z)
        b, c, d = a, a, a
        for k in range(w.shape[0]):
            s, r = h[k], w[k]
            a = (a[0] + s * r[0], a[1] + s * r[1], a[2] + s * r[2], a[3] + s * r[3],
                 a[4] + s * r[4], a[5] + s * r[5], a[6] + s * r[6], a[7] + s * r[7])
            b = (b[0] + s * r[8], b[1] + s * r[9], b[2] + s * r[10], b[3] + s * r[11],
                 b[4] + s * r[12], b[5] + s * r[13], b[6] + s * r[14], b[7] + s * r[15])
            c = (c[0] + s * r[16], c[1] + s * r[17], c[2] + s * r[18], c[3] + s * r[19],
                 c[4] + s * r[20], c[5] + s * r[21], c[6] + s * r[22], c[7] + s * r[23])
            d = (d[0] + s * r[24], d[1] + s * r[25], d[2] + s * r[26], d[3] + s * r[27],
                 d[4] + s * r[28], d[5] + s * r[29], d[6] + s * r[30], d[7] + s * r[31])
        for i in range(8):
            out[i], out[8 + i], out[16 + i], out[24 + i] = a[i], b[i], c[i], d[i]

    w = np.random.default_rng(0).random((1000, 32), dtype=np.float32)
    h, out = w[:, 0].copy(), np.zeros(32, np.float32)
    for name, opts in [("numba default", {}), ("fastrnn", {"pipeline_class": VectorizingCompiler})]:
        f = numba.njit(fastmath={"contract"}, **opts)(_axpy32)
        f(w, h, out)
        t0 = time.perf_counter()
        for _ in range(10000):
            f(w, h, out)
        print(f"{name}: {(time.perf_counter() - t0) * 100:.2f} us per 1000x32 FMAs")

    @numba.njit(parallel=True)
    def _empty(a):
        for i in numba.prange(a.shape[0]):
            a[i] += 1

    a = np.zeros(16)
    _empty(a)
    t0 = time.perf_counter()
    for _ in range(2000):
        _empty(a)
    print(f"empty prange call, {numba.threading_layer()} layer, {numba.get_num_threads()} threads: "
          f"{(time.perf_counter() - t0) / 2000 * 1e6:.1f} us")

