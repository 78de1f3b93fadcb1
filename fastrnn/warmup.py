"""Compile (or load) a device's kernels up front, and say how long it took.

fastrnn's CPU kernels are compiled by Numba the first time they run for a dtype (~11 s for the
classifier step on 2 cores) and cached on disk, so later processes load them in about a second;
the CUDA kernels are compiled by NVRTC on first use and cached by CuPy. Without a warm-up that
one-time cost lands silently in the first training step. :func:`warmup` runs every operation
once on tiny inputs and reports what happened::

    >>> from fastrnn.warmup import warmup
    >>> print(warmup("cpu"))                              # doctest: +SKIP
    CPU kernels (float32): compiled in 11.4 s (first use; cached for later runs)
    >>> print(warmup("cpu"))                              # doctest: +SKIP
    CPU kernels (float32): ready in 0.00 s (already loaded)

"Compiled" and "loaded from cache" are told apart by Numba's own per-function counters of cache
hits and misses (``Dispatcher.stats``), summed over the ``fastrnn.kernels`` modules.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["WarmupReport", "numba_cache_counts", "warmup"]


@dataclass(frozen=True)
class WarmupReport:
    """What :func:`warmup` did.

    Attributes
    ----------
    what : str
        ``"CPU kernels"``, ``"CUDA kernels"`` or ``"NumPy reference"``.
    device, dtype : str
    seconds : float
        Wall time of the whole warm-up.
    compiled : int or None
        Numba functions compiled during the call (cache misses); None where not known (CUDA).
    loaded : int or None
        Numba functions loaded from the on-disk cache; None where not known (CUDA).
    """

    what: str
    device: str
    dtype: str
    seconds: float
    compiled: int | None
    loaded: int | None

    def outcome(self) -> str:
        """``"compiled in 11.4 s (first use; …)"``, ``"loaded from cache in 0.4 s"``, …"""
        if self.compiled is None:
            return (f"ready in {self.seconds:.1f} s (NVRTC compiles on first use; CuPy caches the "
                    f"result on disk)")
        if self.compiled:
            return f"compiled in {self.seconds:.1f} s (first use; cached for later runs)"
        if self.loaded:
            return f"loaded from cache in {self.seconds:.1f} s"
        return f"ready in {self.seconds:.2f} s (already loaded)"

    def __str__(self) -> str:
        return f"{self.what} ({self.dtype}): {self.outcome()}"


def numba_cache_counts() -> tuple[int, int]:
    """``(cache hits, cache misses)`` summed over every Numba function of the imported
    ``fastrnn.kernels`` modules; (0, 0) before any is imported."""
    hits = misses = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("fastrnn.kernels.") or module is None:
            continue
        for obj in vars(module).values():
            # a kernels._numba_env.ParallelKernel holds two dispatchers
            for dispatcher in getattr(obj, "dispatchers", (obj,)):
                stats = getattr(dispatcher, "stats", None)
                if stats is not None and hasattr(stats, "cache_misses"):
                    hits += sum(stats.cache_hits.values())
                    misses += sum(stats.cache_misses.values())
    return hits, misses


def warmup(device: str = "cpu", dtype: str = "float32", *, functional: bool = True,
           backend: str | None = None) -> WarmupReport:
    """Run every kernel of ``device`` once on tiny inputs, so later calls start at full speed.

    Builds a throwaway 2-layer :class:`~fastrnn.RNNClassifier` (input 5, hidden 3, batch 3,
    4 steps) and runs ``train_step``, ``evaluate`` and ``predict``; with ``functional`` also
    :func:`fastrnn.rnn_forward` and :func:`fastrnn.rnn_backward` with ``lengths``. Numba compiles
    per dtype and memory layout, not per shape, so this covers every size the classifier and the
    batch-major functional API are later called with.

    Parameters
    ----------
    device : {"cpu", "cuda"}
    dtype : {"float32", "float64"}
        The CUDA kernels are float32 only.
    functional : bool
        Also warm the functional API (the classifier does not need it).
    backend : {None, "reference"}
        As in :class:`~fastrnn.RNNClassifier` (the reference compiles nothing).

    Returns
    -------
    WarmupReport
        ``str(report)`` is a one-line summary such as ``"CPU kernels (float32): loaded from cache
        in 0.4 s"``.
    """
    import fastrnn

    before = numba_cache_counts()
    t0 = time.perf_counter()
    model = fastrnn.RNNClassifier(5, 3, 2, 4, device=device, seed=0, backend=backend,
                                  dtype=dtype)
    xp = model.xp
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((3, 4, 5)).astype(dtype))
    labels = xp.asarray(np.array([0, 3, 1]))
    model.train_step(x, labels)
    model.evaluate(x, labels)
    model.predict(x)
    if functional:
        w = {k: xp.asarray(v) for k, v in model.weights().items()}
        lengths = xp.asarray(np.array([4, 0, 2], dtype=np.int32))
        y, h_n = fastrnn.rnn_forward(x, None, w["w_ih_l0"], w["w_hh_l0"], w["b_l0"],
                                     lengths=lengths, backend=backend)
        fastrnn.rnn_backward(y, h_n, x, None, w["w_ih_l0"], w["w_hh_l0"], y, lengths=lengths,
                             backend=backend)
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()
    seconds = time.perf_counter() - t0
    if device == "cuda":
        return WarmupReport("CUDA kernels", device, str(dtype), seconds, None, None)
    after = numba_cache_counts()
    what = "NumPy reference" if backend == "reference" else "CPU kernels"
    return WarmupReport(what, device, str(dtype), seconds, after[1] - before[1],
                        after[0] - before[0])
