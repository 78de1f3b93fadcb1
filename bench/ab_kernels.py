"""A/B of the fused CPU layer kernels of two checkouts, in one process, alternating calls.

    git worktree add /tmp/before <commit>
    python bench/ab_kernels.py /tmp/before [--steps 50] [--shapes 64x256x256,128x28x31]
    NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES= python bench/ab_kernels.py /tmp/before   # AVX2 build

Loads ``kernels/`` of the other checkout as package ``kernels_before`` and this checkout's as
``kernels_after`` (their own Numba cache: ``NUMBA_CACHE_DIR`` defaults to a folder under the
system's temporary directory, so neither checkout's ``__pycache__`` gets entries compiled under
another module name), then times ``rnn_forward`` and ``rnn_backward`` of each, before and after
in turn, 20 times per shape (B x I x H, T = ``--steps``). On this noisy shared machine separate
processes drifted by up to 2x between runs; paired calls see the same drift. Prints the best
GFLOP/s of each and the median of the paired speed ratios (after / before > 1: faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "fastrnn-ab-cache"))

import numpy as np  # noqa: E402

# the compile helper process cannot import the packages loaded under these names; compiling
# without it only takes longer
warnings.filterwarnings("ignore", message="fastrnn: the compile helper process")


def load(name: str, kernels_dir: Path):
    """``kernels_dir`` imported as package ``name``; returns its ``rnn_cpu`` module."""
    spec = importlib.util.spec_from_file_location(name, kernels_dir / "__init__.py",
                                                  submodule_search_locations=[str(kernels_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(name + ".rnn_cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before", type=Path, help="the other checkout (its kernels/ folder is used)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--shapes", default="64x256x256,128x28x31,16x128x128,256x64x64",
                   help="comma-separated BxIxH")
    a = p.parse_args()
    before = load("kernels_before", a.before / "kernels")
    after = load("kernels_after", Path(__file__).resolve().parents[1] / "kernels")
    print(f"after: LANES {after.LANES}, ROWS {after.ROWS}; T={a.steps}, float32")
    rng = np.random.default_rng(0)
    for shape in a.shapes.split(","):
        B, I, H = map(int, shape.split("x"))
        x = rng.random((B, a.steps, I), dtype=np.float32)
        w_ih = rng.random((H, I), dtype=np.float32) * 0.05
        w_hh = rng.random((H, H), dtype=np.float32) * 0.05
        b = np.zeros(H, np.float32)
        y, _ = before.rnn_forward(x, None, w_ih, w_hh, b)
        dy = rng.random(y.shape, dtype=np.float32)
        calls = {}
        for k in (before, after):
            calls[k, "forward"] = partial(k.rnn_forward, x, None, w_ih, w_hh, b)
            calls[k, "backward"] = partial(k.rnn_backward, dy, None, x, None, w_ih, w_hh, y)
        for f in calls.values():
            f()  # compile or load
        for what, flop in (("forward", 2), ("backward", 4)):
            times = {before: [], after: []}
            for _ in range(20):
                for k in (before, after):
                    t = time.perf_counter()
                    calls[k, what]()
                    times[k].append(time.perf_counter() - t)
            work = flop * B * a.steps * (I + H) * H / 1e9
            ratio = float(np.median(np.array(times[before]) / np.array(times[after])))
            print(f"{what:8s} B={B:4d} I={I:5d} H={H:5d}: before {work / min(times[before]):6.1f}"
                  f" after {work / min(times[after]):6.1f} GFLOP/s, after/before speed {ratio:.2f}")


if __name__ == "__main__":
    main()
