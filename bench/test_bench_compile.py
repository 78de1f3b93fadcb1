"""Seconds from a fresh Python process to the end of the showcase classifier's first training
step (B=128, T=28, I=28, H=31): with an empty Numba cache, what a user's first run pays for
compiling the CPU kernels, and with the cache filled, what every later run pays. Python's start and
``import fastrnn`` are included. Targets (issue #3): at most 15 s cold and 2 s cached.

    pytest bench/test_bench_compile.py --benchmark-only --benchmark-json=compile.json
    python bench/report.py compile.json

One cold round per depth (each takes the whole machine for ~11 s); three cached rounds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.conftest import versions

FIRST_STEP = ("import numpy as np, fastrnn; fastrnn.RNNClassifier(28, 31, {layers}, 10)"
              ".train_step(np.zeros((128, 28, 28), np.float32), np.zeros(128, int))")
TARGET_S = {"cold": 15.0, "cached": 2.0}


def _first_step(layers: int, cache_dir) -> None:
    env = os.environ | {"NUMBA_CACHE_DIR": str(cache_dir)}
    subprocess.run([sys.executable, "-c", FIRST_STEP.format(layers=layers)], env=env, check=True)


@pytest.mark.parametrize("cache", ["cold", "cached"])
@pytest.mark.parametrize("layers", [1, 3])
def test_first_step(benchmark, tmp_path, layers, cache):
    benchmark.group = "first training step in a fresh process"
    benchmark.extra_info.update(versions())
    benchmark.extra_info.update({"first_use": cache, "layers": layers,
                                 "target_s": TARGET_S[cache]})
    if cache == "cold":  # one round: a second one would find the cache filled
        benchmark.pedantic(_first_step, args=(layers, tmp_path), rounds=1)
    else:
        _first_step(layers, tmp_path)  # fill the cache, untimed
        benchmark.pedantic(_first_step, args=(layers, tmp_path), rounds=3)
