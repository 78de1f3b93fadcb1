"""Numba settings every fastrnn CPU kernel is compiled and run with; import before defining kernels.

Vectoriser switches, scoped to fastrnn's own functions
------------------------------------------------------
The kernels keep their accumulators in registers as tuples of 8 lanes (see ``rnn_cpu.py``); only
LLVM's SLP vectoriser turns those into vector FMAs (two 8-tuples fuse into one zmm on AVX-512
hosts: Numba compiles for the host CPU), and Numba leaves it off by default
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

Threading layer
---------------
fastrnn runs inside PyTorch processes. Numba's default layer picks TBB, else OpenMP; the GNU OpenMP
pool spins while idle and fought PyTorch's own pool for the 2 cores: a PyTorch step went from 7 ms
to 95 ms in one process. ``workqueue`` (Numba's own pool, threads sleep when idle) avoided that at
~5% cost on fastrnn's step, so it is the default here. Its price is launch latency: an empty
``prange`` call costs 25-50 us under ``workqueue`` on a 2-vCPU VM (1-2 us with a spinning OpenMP
pool), which is why a fastrnn training step has exactly one parallel region. It is process-wide
and fixed when Numba first launches its threads, so it is only set if neither the user
(``NUMBA_THREADING_LAYER``) nor an earlier parallel run chose one. Limits of ``workqueue``: do
not call parallel kernels from several Python threads at once, nor nest them. The thread count
is Numba's (all cores, or ``NUMBA_NUM_THREADS`` / ``numba.set_num_threads``); results do not
depend on it (see ``rnn_cpu``).
"""

from __future__ import annotations

import os

import numba
from numba.core import config
from numba.core.compiler import Compiler

THREADING_LAYER = "workqueue"

_VECTORIZER = {"SLP_VECTORIZE": 1, "LOOP_VECTORIZE": 0}


class VectorizingCompiler(Compiler):
    """Numba's default compiler with SLP on and loop vectorisation off for this function only."""

    def compile_extra(self, func):
        saved = {k: getattr(config, k) for k in _VECTORIZER}
        for k, val in _VECTORIZER.items():
            if "NUMBA_" + k not in os.environ:
                setattr(config, k, val)
        try:
            return super().compile_extra(func)
        finally:
            for k, val in saved.items():
                setattr(config, k, val)


def _choose_threading_layer() -> None:
    if "NUMBA_THREADING_LAYER" in os.environ:
        return
    try:
        numba.threading_layer()  # raises ValueError until Numba's threads are launched
    except ValueError:
        config.THREADING_LAYER = THREADING_LAYER


_choose_threading_layer()

#: keyword arguments of every fastrnn ``@njit``: on-disk cache, NumPy's error model (no
#: zero-division check, so the tanh's division vectorises), FMA contraction only (no reassociation:
#: results stay reproducible and the float64 kernels match the reference to ~1e-15).
JIT_OPTIONS = {
    "cache": True,
    "error_model": "numpy",
    "fastmath": {"contract"},
    "pipeline_class": VectorizingCompiler,
}


if __name__ == "__main__":  # the micro-benchmark quoted above
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
        print(f"{name}: {(time.perf_counter() - t0) / 10:.2f} us per 1000x32 FMAs")

