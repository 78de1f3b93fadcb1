"""Issue 16's shape grid: sec/iter of a training step and an inference step on the CPU, fastrnn's
Numba kernels against the NumPy reference and PyTorch (on as many threads as Numba), for B in
{1, 16, 64, 256}, H in {64, 128, 256, 512, 1024}, I = H, T = 100, 1 and 3 layers; and one
2048^3 float32 sgemm through NumPy, this machine's matrix-multiply throughput in the same sitting.

    pytest bench/test_bench_grid.py --benchmark-only [--grid | --full] --benchmark-json=grid.json
    python bench/report.py grid.json --plot grid.png    # or: bash bench/grid.sh native --grid

Sizes, on 2 Zen 5 cores (the times of --grid and --full are estimates from measured step rates,
not measured whole):
  (default)  B16 H128, B64 H256 and B256 H64 at 1 layer, train and inference, and the sgemm: what
             ``pytest bench/ --benchmark-only`` runs in CI (~23 s measured).
  --grid     every step PyTorch does in under ~1.5 s, estimated from its FLOP count at
             100 GFLOP/s (PyTorch measured 110-140 GFLOP/s at B >= 64 here): 75 of the 80 steps
             (~6-10 min).
  --full     all 80 steps (~10-15 min).
Steps estimated at over 0.2 s run three rounds (after make_step's two warm-ups); the others are
calibrated by pytest-benchmark. PyTorch runs last in each table (see test_bench_cpu.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.conftest import IMPLS, Shape, flops, make_step, record

BATCHES, HIDDEN, T = (1, 16, 64, 256), (64, 128, 256, 512, 1024), 100
#: (B, H) at 1 layer: what runs without --grid or --full
DEFAULT = {(16, 128), (64, 256), (256, 64)}
#: FLOP/s assumed to estimate a step's seconds, and --grid's limit on them
TORCH_FLOPS, GRID_MAX_S = 100e9, 1.5
#: steps estimated slower than this run a fixed few rounds
SLOW_S = 0.2
SGEMM_N = 2048


def grid_shape(B: int, H: int) -> Shape:
    """The grid's shape at batch B and hidden size H = I."""
    return Shape(f"grid B{B} H{H}", B=B, T=T, I=H, H=H)


def estimated_s(shape: Shape, layers: int, train: bool) -> float:
    """Seconds of one step at :data:`TORCH_FLOPS`."""
    return flops(shape, layers, train) / TORCH_FLOPS


def _too_slow(shape: Shape, layers: int, train: bool) -> str:
    """--grid's skip reason."""
    n = flops(shape, layers, train)
    return (f"left out of --grid (run --full): a PyTorch step of ~{n / TORCH_FLOPS:.1f} s "
            f"({n / 1e9:.0f} GFLOP at {TORCH_FLOPS / 1e9:.0f} GFLOP/s) > {GRID_MAX_S} s")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The grid points of the size chosen on the command line, each implementation's after the
    other (PyTorch last) within a point."""
    if "impl" not in metafunc.fixturenames:
        return
    full, grid = metafunc.config.getoption("--full"), metafunc.config.getoption("--grid")
    params = []
    for train in (True, False):
        for layers in (1, 3):
            for B in BATCHES:
                for H in HIDDEN:
                    if not (full or grid) and (layers != 1 or (B, H) not in DEFAULT):
                        continue
                    shape, marks = grid_shape(B, H), ()
                    if grid and not full and estimated_s(shape, layers, train) > GRID_MAX_S:
                        marks = pytest.mark.skip(reason=_too_slow(shape, layers, train))
                    name = f"{'train' if train else 'infer'}-{layers}L-B{B}-H{H}"
                    params += [pytest.param(train, layers, shape, impl, marks=marks,
                                            id=f"{name}-{impl}") for impl in IMPLS]
    metafunc.parametrize("train,layers,shape,impl", params)


def test_sgemm(benchmark):
    """This machine's float32 matrix-multiply throughput through NumPy's BLAS."""
    a, b = (np.random.default_rng(seed).random((SGEMM_N, SGEMM_N), dtype=np.float32)
            for seed in (0, 1))
    out = np.matmul(a, b)
    record(benchmark, Shape(f"{SGEMM_N}^3", B=SGEMM_N, T=1, I=SGEMM_N, H=SGEMM_N), 1, False,
           "numpy", quantity="sgemm", n_flops=2 * SGEMM_N**3)
    benchmark.group = f"sgemm {SGEMM_N}^3 float32"
    benchmark(np.matmul, a, b, out=out)


def test_grid_step(benchmark, train, layers, shape, impl):
    """One grid step of one implementation."""
    step = make_step(impl, shape, layers, train)
    record(benchmark, shape, layers, train, impl)
    benchmark.extra_info["grid"] = True
    if estimated_s(shape, layers, train) > SLOW_S:
        benchmark.pedantic(step, rounds=3)
    else:
        benchmark(step)
