"""The CPU backend's choice of strategy (fastrnn/backends/cpu.py): what it picks per shape and
instruction set, the override, and that every entry point (functional API, cells,
``fastrnn.torch.RNN``, the classifier) runs the strategy chosen."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import fastrnn

cpu = pytest.importorskip("fastrnn.backends.cpu")
from fastrnn.kernels import rnn_cpu, rnn_gemm, train_cpu, train_gemm  # noqa: E402


@pytest.mark.parametrize("train", [False, True], ids=["forward", "training"])
def test_choice_per_shape_and_vector_width(train, monkeypatch):
    monkeypatch.delenv(cpu.STRATEGY_ENV, raising=False)
    crossover = cpu.CROSSOVER_H[cpu.vector_bits()][train]
    assert cpu.choose(128, 31, train) == "fused"  # the showcase
    assert cpu.choose(64, crossover, train) == cpu.choose(256, crossover, train) == "gemm"
    assert cpu.choose(64, crossover - 1, train) == "fused"
    # a batch of 1 (row dots on the GEMM strategy) has its own crossover
    batch1 = cpu.BATCH1_CROSSOVER_H[cpu.vector_bits()][train]
    assert cpu.choose(1, batch1, train) == "gemm" and cpu.choose(1, batch1 - 1, train) == "fused"
    # a batch of 2 fills two of a fused tile's ROWS rows: GEMM from 2/ROWS of the crossover
    rows = rnn_cpu.ROWS
    assert cpu.choose(2, crossover * 2 // rows, train) == "gemm"
    assert cpu.choose(2, crossover * 2 // rows - 1, train) == "fused"
    assert cpu.choose(rows // 2, crossover // 2, train) == "gemm"  # half a tile
    assert cpu.choose(rows // 2, crossover // 2 - 1, train) == cpu.choose(rows, crossover // 2,
                                                                           train) == "fused"


@pytest.mark.parametrize("forced", ["fused", "gemm"])
def test_override(forced, monkeypatch):
    monkeypatch.setenv(cpu.STRATEGY_ENV, forced)
    assert cpu.choose(128, 31, True) == cpu.choose(1, 1024, False) == forced


def test_override_refused_with_a_clear_message(monkeypatch):
    monkeypatch.setenv(cpu.STRATEGY_ENV, "blas")
    with pytest.raises(ValueError, match=r"FASTRNN_CPU_STRATEGY: expected one of \('auto', "
                                         r"'fused', 'gemm'\), got 'blas'"):
        fastrnn.rnn_forward(np.zeros((2, 3, 4), np.float32), None, np.zeros((5, 4), np.float32),
                            np.zeros((5, 5), np.float32), np.zeros(5, np.float32))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 targets")
@pytest.mark.parametrize("target,bits,tile", [
    ({"NUMBA_CPU_NAME": "znver3", "NUMBA_CPU_FEATURES": ""}, 256, (16, 4)),
    ({"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": ""}, 512, (32, 8)),
    ({"NUMBA_CPU_NAME": "generic"}, 128, (16, 4))])
def test_vector_width_and_tile_of_the_compile_target(target, bits, tile):
    """The width is the one Numba compiles for, not the host's: an AVX2 build on an AVX-512
    machine takes the AVX2 crossover and the AVX2 register tile (LANES, ROWS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU_")} | target
    r = subprocess.run([sys.executable, "-c", "from fastrnn.backends import cpu; from "
                        "fastrnn.kernels import rnn_cpu as k; "
                        "print(cpu.vector_bits(), k.LANES, k.ROWS)"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert tuple(map(int, r.stdout.split())) == (bits, *tile)


def _entry_points():
    """Each public way to run a layer forward (and backward) on the CPU, at B=4, T=3, I=5, H=6."""
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 5), dtype=np.float32)
    w_ih, w_hh = rng.random((6, 5), dtype=np.float32), rng.random((6, 6), dtype=np.float32)
    b = np.zeros(6, np.float32)

    def functional():
        y, _ = fastrnn.rnn_forward(x, None, w_ih, w_hh, b)
        fastrnn.rnn_backward(np.ones_like(y), None, x, None, w_ih, w_hh, y)

    def cells():  # a sequence through a cell (one step, cell(x, h), runs rnn_step: no strategy)
        from fastrnn.cells import BasicRNNCell

        fastrnn.dynamic_rnn(BasicRNNCell(6, seed=0), x)

    def torch_rnn():
        torch = pytest.importorskip("torch")
        from fastrnn.torch import RNN

        out, _ = RNN(5, 6, batch_first=True)(torch.from_numpy(x).requires_grad_())
        out.sum().backward()

    def classifier():
        model = fastrnn.RNNClassifier(5, 6, 1, 3, seed=0)
        model.train_step(x, np.array([0, 1, 2, 0]))

    return {"functional": functional, "cells": cells, "torch.RNN": torch_rnn,
            "classifier": classifier}


@pytest.mark.parametrize("entry", list(_entry_points()))
@pytest.mark.parametrize("strategy", ["fused", "gemm"])
def test_every_entry_point_runs_the_chosen_strategy(entry, strategy, monkeypatch):
    monkeypatch.setenv(cpu.STRATEGY_ENV, strategy)
    calls = []
    for owner, name, used in ((rnn_cpu, "rnn_forward", "fused"),
                              (rnn_cpu, "rnn_backward", "fused"),
                              (train_cpu.ClassifierStep, "train_step", "fused"),
                              (rnn_gemm, "rnn_forward", "gemm"),
                              (rnn_gemm, "rnn_backward", "gemm"),
                              (train_gemm.ClassifierStep, "train_step", "gemm")):
        run = getattr(owner, name)
        monkeypatch.setattr(owner, name,
                            lambda *a, _run=run, _used=used: calls.append(_used) or _run(*a))
    _entry_points()[entry]()
    assert calls and set(calls) == {strategy}, calls


@pytest.mark.parametrize("preset", [None, "", "25"])
def test_blas_threads_stop_spinning_soon_unless_the_user_chose(preset):
    """SciPy's OpenBLAS (the GEMM strategy's ``np.dot``) gets ``OPENBLAS_THREAD_TIMEOUT`` =
    ``rnn_gemm.BLAS_THREAD_TIMEOUT`` before it loads, so that its idle threads do not starve
    the fused kernels' threads (``bench/test_bench_cpu.py::test_mixed_strategies``); a value the
    user set is kept (an empty one is OpenBLAS's default: replaced)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    code = ("import os, sys; from fastrnn.kernels import rnn_gemm; "
            "assert 'scipy.linalg' not in sys.modules; "  # not loaded yet: the value applies
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == (preset or rnn_gemm.BLAS_THREAD_TIMEOUT)
