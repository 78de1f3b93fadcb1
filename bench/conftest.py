"""Shared pieces of the benchmarks: shapes, FLOP counts, the implementations being compared."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    T: int
    I: int
    H: int
    C: int = 10

    def __str__(self) -> str:
        return self.name


SHOWCASE = Shape("mnist", B=128, T=28, I=28, H=31)
LARGE = Shape("large", B=64, T=100, I=64, H=256)
SHAPES = [SHOWCASE, LARGE]


def flops(shape: Shape, layers: int, train: bool) -> int:
    """Multiply-adds x 2 of one step (2*m*n*k per matmul; tanh, softmax and Adam not counted).

    Per layer k with input size I_k: forward 2BTH(I_k+H); training adds dW_ih and dW_hh
    (2BTH(I_k+H)), the state gradient dh (2BTH^2) and, above the first layer, dx (2BTH I_k).
    The dense layer adds 2BHC forward and 4BHC backward.
    """
    B, T, I, H, C = shape.B, shape.T, shape.I, shape.H, shape.C
    total = 2 * B * H * C * (3 if train else 1)
    for k in range(layers):
        i_k = I if k == 0 else H
        total += 2 * B * T * H * (i_k + H)
        if train:
            total += 2 * B * T * H * (i_k + H) + 2 * B * T * H * H
            total += 2 * B * T * H * i_k if k else 0
    return total


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run in this process yet
        return os.environ.get("NUMBA_THREADING_LAYER", "(not started)")


def versions() -> dict:
    import numba

    info = {"numpy": np.__version__, "numba": numba.__version__,
            "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": _threading_layer(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)")}
    try:
        import threadpoolctl

        info["blas"] = ", ".join(f"{d['internal_api']} {d.get('architecture', '')}"
                                 for d in threadpoolctl.threadpool_info())
    except ImportError:
        pass
    try:
        import torch

        info |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    except ImportError:
        pass
    return info


def batch(shape: Shape, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((shape.B, shape.T, shape.I), dtype=np.float32)
    return x, rng.integers(0, shape.C, shape.B)


def record(benchmark, shape: Shape, layers: int, train: bool, impl: str, *,
           quantity: str | None = None, n_flops: int | None = None) -> None:
    """Group one table per (quantity, shape, layers); put the FLOP count and versions beside.
    ``quantity`` defaults to "train" or "inference", ``n_flops`` to :func:`flops`."""
    quantity = quantity or ("train" if train else "inference")
    benchmark.group = f"{quantity} {shape} {layers}L"
    benchmark.extra_info.update(versions())
    benchmark.extra_info.update({"impl": impl, "shape": shape.name, "layers": layers,
                                 "quantity": quantity,
                                 "flops": flops(shape, layers, train) if n_flops is None
                                 else n_flops})


@pytest.fixture(autouse=True)
def _gflops(request, benchmark):
    """After each benchmark, put GFLOP/s (from the median) next to the time."""
    yield
    stats = getattr(benchmark, "stats", None)
    if stats and "flops" in benchmark.extra_info:
        benchmark.extra_info["gflops"] = benchmark.extra_info["flops"] / stats.stats.median / 1e9
