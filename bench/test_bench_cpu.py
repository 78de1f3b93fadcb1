"""sec/iter of a training step and an inference step on the CPU: fastrnn's Numba kernels against the
NumPy reference and PyTorch (nn.RNN + Linear + CrossEntropy + Adam), one table per shape and depth;
and the latency of one streaming step at batch 1 (state in, state out: ``BasicRNNCell`` against
``nn.RNNCell``), the baseline of issue 16's target (under 5 us at H = 256, I = 64, one core).

    pytest bench/ --benchmark-only --benchmark-json=bench.json && python bench/report.py bench.json

Compilation happens before timing. The implementations of one table run one after another in the
same process; PyTorch's runs last in each table, so its OpenMP threads, which spin for a while after
each parallel region, never overlap fastrnn's timings.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.conftest import IMPLS, SHAPES, Shape, flops, make_step, record


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_train_step(benchmark, shape, layers, impl):
    step = make_step(impl, shape, layers, train=True)
    record(benchmark, shape, layers, True, impl)
    benchmark(step)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_inference_step(benchmark, shape, layers, impl):
    step = make_step(impl, shape, layers, train=False)
    record(benchmark, shape, layers, False, impl)
    benchmark(step)


#: one frame of a stream: batch 1, one step (the cell keeps no state: the caller passes it)
STREAM = Shape("stream B1 I64 H256", B=1, T=1, I=64, H=256)


def stream_step(impl: str):
    """One ``state -> new state`` step at :data:`STREAM`'s sizes, float32, no gradients."""
    x = np.random.default_rng(0).random((STREAM.B, STREAM.I), dtype=np.float32)
    if impl == "torch":
        torch = pytest.importorskip("torch", reason="no PyTorch (pip install -e '.[bench]')")
        cell = torch.nn.RNNCell(STREAM.I, STREAM.H)
        xt, ht = torch.from_numpy(x), torch.zeros(STREAM.B, STREAM.H)

        def step():
            with torch.inference_mode():
                return cell(xt, ht)
        return step
    from fastrnn.cells import BasicRNNCell

    cell = BasicRNNCell(STREAM.H, seed=0)
    state = cell.zero_state(STREAM.B)
    backend = "reference" if impl == "reference" else None
    return lambda: cell(x, state, backend=backend)


@pytest.mark.parametrize("impl", IMPLS)
def test_stream_step(benchmark, impl):
    step = stream_step(impl)
    step()  # compile / warm up outside the timings
    step()
    record(benchmark, STREAM, 1, False, impl, quantity="stream step",
           n_flops=2 * STREAM.B * STREAM.H * (STREAM.I + STREAM.H))  # no dense layer
    benchmark(step)


#: a model run on a large batch and queried one sequence at a time, alternating: at H = 128 the
#: CPU backend runs B = 64 on the fused strategy (OpenMP threads) and B = 1 on the GEMM one
#: (BLAS's threads for the input projection), whose idle threads must not slow each other
MIXED_BIG, MIXED_ONE = (Shape(f"mixed B{b} H128", B=b, T=100, I=128, H=128) for b in (64, 1))


@pytest.mark.parametrize("impl", ["fastrnn-cpu", "torch"])
def test_mixed_strategies(benchmark, impl):
    """An inference step at B = 64 then one at B = 1, one after the other, as one round."""
    big, one = (make_step(impl, s, 1, train=False) for s in (MIXED_BIG, MIXED_ONE))
    record(benchmark, Shape("mixed B64+B1 H128", B=65, T=100, I=128, H=128), 1, False, impl,
           quantity="inference, alternating batches",
           n_flops=flops(MIXED_BIG, 1, False) + flops(MIXED_ONE, 1, False))
    benchmark(lambda: (big(), one()))
