"""Shared pieces of the benchmarks: shapes, FLOP counts, the implementations being compared, and
the options that size ``bench/test_bench_grid.py``'s shape grid (``--grid``, ``--full``)."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import fastrnn

#: the implementations of a step table; PyTorch last (see bench/test_bench_cpu.py's docstring)
IMPLS = ["fastrnn-cpu", "reference", "torch"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastrnn shape grid (bench/test_bench_grid.py)")
    group.addoption("--grid", action="store_true",
                    help="every grid point whose step takes PyTorch under ~1.5 s (FLOP estimate)")
    group.addoption("--full", action="store_true", help="every grid point")


def pytest_configure(config: pytest.Config) -> None:
    """Start PyTorch's OpenMP threads before Numba's first parallel region. Both use one libgomp,
    and a PyTorch imported after Numba's first parallel region ran runs its steps 15-50x slower
    for the rest of the process on 2 cores (B64 H256 inference: ~300 ms instead of ~15 ms;
    ``import torch`` before it: normal), which would make every comparison meaningless."""
    try:
        import torch
    except ImportError:
        return
    torch.ones(1 << 22).add_(1)  # large enough for at::parallel_for to open a parallel region


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


def _cpu() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def numba_isa() -> str:
    """The CPU Numba compiles for (``NUMBA_CPU_NAME`` or the host) and its widest vector ISA:
    "znver5 AVX-512"; "znver3 (its default features)" when ``NUMBA_CPU_FEATURES`` is empty."""
    from llvmlite import binding as llvm
    from numba.core import config

    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = (llvm.get_host_cpu_features().flatten() if config.CPU_FEATURES is None
                else config.CPU_FEATURES).split(",")
    if features == [""]:
        return f"{name} (its default features)"
    return f"{name} " + next((isa for flag, isa in (("+avx512f", "AVX-512"), ("+avx2", "AVX2"))
                              if flag in features), "no AVX2")


def versions() -> dict:
    """Versions, threads, CPU and the ISAs the compiled code targets, for ``extra_info``."""
    import numba

    info = {"numpy": np.__version__, "numba": numba.__version__,
            "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": _threading_layer(), "isa": numba_isa(),
            "cpu": _cpu(), "cores": os.cpu_count(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)")}
    try:
        import threadpoolctl

        info["blas"] = ", ".join(f"{d['internal_api']} {d.get('architecture', '')}"
                                 for d in threadpoolctl.threadpool_info())
    except ImportError:
        pass
    try:
        import torch

        info |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "torch_isa": torch.backends.cpu.get_cpu_capability()}
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
    benchmark.extra_info.update({"impl": impl, "shape": shape.name, "B": shape.B, "T": shape.T,
                                 "I": shape.I, "H": shape.H, "layers": layers,
                                 "quantity": quantity,
                                 "flops": flops(shape, layers, train) if n_flops is None
                                 else n_flops})


def fastrnn_step(impl: str, shape: Shape, layers: int, train: bool) -> Callable[[], object]:
    """A training step (``train_step``) or an inference step (``predict``) of a classifier on
    the CPU kernels (``impl="fastrnn-cpu"``) or the NumPy reference (``"reference"``)."""
    x, y = batch(shape)
    model = fastrnn.RNNClassifier(shape.I, shape.H, layers, shape.C, device="cpu",
                                  backend="reference" if impl == "reference" else None)
    return (lambda: model.train_step(x, y)) if train else (lambda: model.predict(x))


def torch_step(shape: Shape, layers: int, train: bool) -> Callable[[], object]:
    """The same step in PyTorch (nn.RNN + Linear + CrossEntropy + Adam), on as many threads as
    Numba's."""
    torch = pytest.importorskip("torch", reason="no PyTorch (pip install -e '.[bench]')")
    import numba

    torch.set_num_threads(numba.get_num_threads())
    x, y = batch(shape)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rnn = torch.nn.RNN(shape.I, shape.H, layers, batch_first=True)
    fc = torch.nn.Linear(shape.H, shape.C)
    params = [*rnn.parameters(), *fc.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        opt.zero_grad(set_to_none=True)
        logits = fc(rnn(xt)[0][:, -1])
        loss = loss_fn(logits, yt)
        loss.backward()
        opt.step()
        return loss.item(), (logits.argmax(1) == yt).float().mean().item()

    def infer():
        with torch.inference_mode():
            return fc(rnn(xt)[0][:, -1])

    return train_step if train else infer


def make_step(impl: str, shape: Shape, layers: int, train: bool) -> Callable[[], object]:
    """``impl``'s step (one of :data:`IMPLS`), compiled and run twice outside the timings."""
    step = torch_step(shape, layers, train) if impl == "torch" else fastrnn_step(
        impl, shape, layers, train)
    step()  # compile / warm up outside the timings
    step()
    return step


@pytest.fixture(autouse=True)
def _gflops(request, benchmark):
    """After each benchmark, put GFLOP/s (from the median) next to the time."""
    yield
    stats = getattr(benchmark, "stats", None)
    if stats and "flops" in benchmark.extra_info:
        benchmark.extra_info["gflops"] = benchmark.extra_info["flops"] / stats.stats.median / 1e9
