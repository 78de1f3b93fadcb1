"""Steady memory: after warm-up, a training step allocates no new arrays (CPU; CUDA on a GPU).

The CPU backend allocates its workspaces once per (batch, steps) and reuses them (see
``kernels/train_cpu.py``); the Python glue around the kernel must not allocate per step either.
NumPy reports its data buffers to :mod:`tracemalloc`, so over 1,000 steps we check that
(1) the peak of steps 101-1000 is no higher than that of steps 1-100, (2) nothing accumulates
(memory after step 1000 equals memory after step 100) and (3) a single step's transient
allocations stay far below the size of one workspace array (64 KiB here): a per-step temporary
array would show up there. A failure prints the allocating lines (file:line) from tracemalloc.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastrnn

B, T, I, H = 32, 16, 8, 32  # one [T,B,H] float32 workspace = 64 KiB
#: bytes a step may allocate transiently or keep: Python floats, ints and tuples, never an array
SLACK = 4096


def _top_allocations(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> str:
    stats = after.compare_to(before, "lineno")
    return "\n".join(str(s) for s in stats[:8])


def test_a_training_step_allocates_no_arrays_after_warm_up():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    labels = rng.integers(0, 10, B)
    model = fastrnn.RNNClassifier(I, H, 2, 10, lr=1e-3, seed=0)
    model.train_step(x, labels)  # compile / load the kernels and allocate the workspaces

    tracemalloc.start(10)
    try:
        for _ in range(100):
            model.train_step(x, labels)
        current_100, peak_warm = tracemalloc.get_traced_memory()
        snap_100 = tracemalloc.take_snapshot()

        tracemalloc.reset_peak()
        worst_step = 0
        for _ in range(900):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            model.train_step(x, labels)
            worst_step = max(worst_step, tracemalloc.get_traced_memory()[1] - before)
        current_1000, peak_steady = tracemalloc.get_traced_memory()
        snap_1000 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()

    where = _top_allocations(snap_100, snap_1000)
    print(f"after 100 steps {current_100} B (peak {peak_warm}); after 1000 {current_1000} B "
          f"(peak {peak_steady}); largest transient allocation of one step {worst_step} B")
    assert current_1000 - current_100 <= SLACK, f"memory grows over steps:\n{where}"
    assert peak_steady <= peak_warm + SLACK, f"peak grows over steps:\n{where}"
    assert worst_step <= SLACK, f"a step allocates {worst_step} B transiently"


@pytest.mark.gpu
def test_a_cuda_training_step_allocates_nothing_after_warm_up():
    """The CUDA step reuses its buffers and its captured graph: over 1,000 steps CuPy's memory
    pool neither grows (used or held bytes) nor sees a new allocation."""
    import cupy

    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((B, T, I)).astype(np.float32))
    labels = cupy.asarray(rng.integers(0, 10, B))
    model = fastrnn.RNNClassifier(I, H, 2, 10, device="cuda", lr=1e-3, seed=0)
    pool = cupy.get_default_memory_pool()
    for _ in range(100):  # eager first step, graph capture, then replays
        model.train_step(x, labels)
    cupy.cuda.Device().synchronize()
    used_100, held_100 = pool.used_bytes(), pool.total_bytes()
    for _ in range(900):
        model.train_step(x, labels)
    cupy.cuda.Device().synchronize()
    print(f"pool after 100 steps: used {used_100} B, held {held_100} B; after 1000: used "
          f"{pool.used_bytes()} B, held {pool.total_bytes()} B")
    assert pool.used_bytes() <= used_100, "a CUDA training step keeps new device memory"
    assert pool.total_bytes() <= held_100, "the pool grew: a CUDA training step allocates"


#: (B, T) pairs of equal B*T, so every shape's workspaces are about the same size
SHAPES = [(16, 24), (24, 16), (8, 48), (48, 8), (12, 32), (32, 12), (6, 64), (64, 6), (4, 96),
          (96, 4)]


def test_many_batch_shapes_hold_a_bounded_number_of_workspaces():
    """A classifier keeps the workspaces of its ShapeCache.keep most recent batch shapes, not of
    every shape ever seen: predict over 10 shapes holds no more memory than over the first 4
    (with one shape's workspaces as margin)."""
    rng = np.random.default_rng(0)
    model = fastrnn.RNNClassifier(I, H, 2, 10, lr=1e-3, seed=0)
    xs = [rng.standard_normal((b, t, I)).astype(np.float32) for b, t in SHAPES]
    model.predict(xs[0][:2, :3])  # compile / load the kernels outside the trace
    keep = model._kernels._steps.keep
    tracemalloc.start(10)
    try:
        base = tracemalloc.get_traced_memory()[0]
        held = []
        for x in xs:
            model.predict(x)
            held.append(tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    one = held[0]
    print(f"held after each shape: {held} B (keep {keep})")
    assert len(model._kernels._steps) == keep
    assert max(held) <= held[keep - 1] + one, f"memory grows with the shapes seen: {held}"
