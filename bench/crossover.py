"""Where the CPU backend's GEMM strategy overtakes the fused one: the measurement behind
``CROSSOVER_H`` (and the cost model of ``choose``) in ``fastrnn/backends/cpu.py``.

For each batch and hidden size (I = H, T = 100, 1 layer), the classifier's training step and
inference step on both strategies (``FASTRNN_CPU_STRATEGY``), alternating rounds in one process
so that the machine's drift hits both (with a pause before each: OpenBLAS's threads spin for a
while after a call, ~0.1 ms with ``rnn_gemm.BLAS_THREAD_TIMEOUT``, ~0.1 s with OpenBLAS's own
default, and would slow the fused kernels' OpenMP threads measured next); prints
median ms and gemm/fused per point, then the smallest H at which GEMM wins training per batch.
Run it once per compile target:

    python bench/crossover.py                                              # the host's ISA
    NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES= python bench/crossover.py    # an AVX2 build

About 3-4 minutes per target on 2 cores (``--hidden``/``--batch`` narrow it).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import fastrnn
from fastrnn.backends import cpu

#: seconds of rest before each strategy's timings (longer than OpenBLAS's threads spin)
PAUSE_S = 0.5


def _median_ms(step, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def measure(B: int, H: int, T: int, rounds: int) -> dict[str, float]:
    """Median ms of ``{strategy} {train|infer}`` at one shape, alternating strategies."""
    rng = np.random.default_rng(0)
    x, labels = rng.random((B, T, H), dtype=np.float32), rng.integers(0, 10, B)
    steps = {}
    for s in ("fused", "gemm"):
        os.environ[cpu.STRATEGY_ENV] = s
        model = fastrnn.RNNClassifier(H, H, 1, 10, seed=0)
        model.train_step(x, labels)  # compile and allocate outside the timings
        model.predict(x)
        steps[s] = model
    n = max(1, min(7, int(0.3 / max(1e-9, 2 * B * T * H * 2 * H * 3 / 50e9))))
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for s, model in steps.items():
            os.environ[cpu.STRATEGY_ENV] = s
            time.sleep(PAUSE_S)
            out.setdefault(f"{s} train", []).append(_median_ms(
                lambda m=model: m.train_step(x, labels), n))
            out.setdefault(f"{s} infer", []).append(_median_ms(lambda m=model: m.predict(x), n))
    os.environ.pop(cpu.STRATEGY_ENV)
    return {k: float(np.median(v)) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--hidden", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    print(f"vector width of the compile target: {cpu.vector_bits()} bits; T={a.steps}, I=H, "
          f"1 layer; median ms (gemm/fused: < 1 means GEMM is faster)")
    first_win = {}
    for B in a.batch:
        for H in a.hidden:
            r = measure(B, H, a.steps, a.rounds)
            tr, inf = r["gemm train"] / r["fused train"], r["gemm infer"] / r["fused infer"]
            print(f"B={B:4d} H={H:5d}  train fused {r['fused train']:9.3f} gemm "
                  f"{r['gemm train']:9.3f} ({tr:.2f})  infer fused {r['fused infer']:9.3f} gemm "
                  f"{r['gemm infer']:9.3f} ({inf:.2f})", flush=True)
            if tr < 1 and B not in first_win:
                first_win[B] = H
    for B in a.batch:
        print(f"B={B}: GEMM trains faster from H={first_win.get(B, 'none measured')}")


if __name__ == "__main__":
    main()
