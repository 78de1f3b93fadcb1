"""sec/iter of a PyTorch training step (RNN + Linear + CrossEntropy, backward, Adam) on the CPU with
``torch.nn.RNN`` and with ``fastrnn.torch.RNN`` in its place, one table per shape and depth; and the
threads check: each implementation's step timed right after a step of the other, in one process.

    pytest bench/test_bench_torch_dropin.py --benchmark-only --benchmark-json=dropin.json

Tables ``torch drop-in train mnist {1,3}L``: ``nn.RNN`` and ``fastrnn.torch.RNN`` alone.
Tables ``threads mnist {1,3}L``: ``nn.RNN after fastrnn`` times nn.RNN's step with a fastrnn step
(untimed) just before each one, ``fastrnn after nn.RNN`` the other way round. If fastrnn's Numba
threads and torch's OpenMP threads fought for the cores, these would be much slower than the
alone figures (the issue's prototype saw torch's step go from 7 ms to 95 ms on another machine;
here, with Numba's OpenMP layer, nn.RNN after fastrnn stays within noise of nn.RNN alone).
"""

from __future__ import annotations

import importlib.util

import pytest

from bench.conftest import SHOWCASE, Shape, batch, record

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e .[bench])")

HAVE_CPU = importlib.util.find_spec("fastrnn.backends.cpu") is not None
IMPLS = ["fastrnn.torch.RNN", "nn.RNN"]


def train_step(impl: str, shape: Shape, layers: int, seed: int = 0, nonlinearity: str = "tanh",
               bidirectional: bool = False):
    """A warmed-up training step closure: forward, cross-entropy on the last output, backward,
    Adam. Both implementations start from the same weights (nn.RNN's init under ``seed``)."""
    if impl.startswith("fastrnn") and not HAVE_CPU:
        pytest.skip("fastrnn's CPU backend (fastrnn/backends/cpu.py) is not there yet")
    import fastrnn.torch

    x, y = batch(shape)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(seed)
    kw = {"batch_first": True, "nonlinearity": nonlinearity, "bidirectional": bidirectional}
    rnn = torch.nn.RNN(shape.I, shape.H, layers, **kw)
    if impl.startswith("fastrnn"):
        fast = fastrnn.torch.RNN(shape.I, shape.H, layers, **kw)
        fast.load_state_dict(rnn.state_dict())
        rnn = fast
    fc = torch.nn.Linear(shape.H * (2 if bidirectional else 1), shape.C)
    opt = torch.optim.Adam([*rnn.parameters(), *fc.parameters()], lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fc(rnn(xt)[0][:, -1]), yt)
        loss.backward()
        opt.step()
        return loss.item()

    step()  # Numba compile (or load from cache) and allocator warm-up outside the timings
    step()
    return step


def _record(benchmark, group: str, shape: Shape, layers: int, impl: str) -> None:
    record(benchmark, shape, layers, True, impl)
    benchmark.group = f"{group} {shape} {layers}L"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("nonlinearity,bidirectional", [("tanh", False), ("relu", False),
                                                        ("tanh", True)])
def test_dropin_train_step(benchmark, layers, impl, nonlinearity, bidirectional):
    """The drop-in's step against nn.RNN's, with either nonlinearity and either number of
    directions (issue 18). The report's GFLOP/s count one direction (compare times and
    ratios in the bidirectional tables)."""
    step = train_step(impl, SHOWCASE, layers, nonlinearity=nonlinearity,
                      bidirectional=bidirectional)
    group = ("torch drop-in train" + ("" if nonlinearity == "tanh" else " relu")
             + (" bidirectional" if bidirectional else ""))
    _record(benchmark, group, SHOWCASE, layers, impl)
    benchmark(step)


@pytest.mark.parametrize("order", ["nn.RNN after fastrnn", "fastrnn after nn.RNN"])
@pytest.mark.parametrize("layers", [1, 3])
def test_threads_step_after_the_other(benchmark, layers, order):
    timed, before = order.split(" after ")
    timed_step = train_step("nn.RNN" if timed == "nn.RNN" else "fastrnn.torch.RNN", SHOWCASE,
                            layers)
    other_step = train_step("nn.RNN" if before == "nn.RNN" else "fastrnn.torch.RNN", SHOWCASE,
                            layers)
    _record(benchmark, "threads", SHOWCASE, layers, order)

    def setup():  # untimed; pytest-benchmark takes a non-None return value as arguments
        other_step()

    benchmark.pedantic(timed_step, setup=setup, rounds=50, warmup_rounds=2)
