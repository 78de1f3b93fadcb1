"""The GPU backend's Python on the CPU emulator: ``fastrnn/backends/cuda.py`` (the classifier's
step, its CUDA-graph replay, ``evaluate``, ``predict``) and the launchers of
``fastrnn/kernels/cuda.py``, with ``cupy`` replaced by ``tests/cuda_emu/fake_cupy.py`` (NumPy
arrays, every launch run by the emulator in program order, a stream capture recorded and
replayed). Checks the glue a GPU test would (which buffer goes to which kernel argument, in which
order, which launches a graph replays) against the NumPy reference, in CI; the CUDA runtime's own
rules still need a GPU (``pytest -m gpu``). Small shapes: an emulated step takes ~0.1-1 s.

Run: ``pytest tests/test_cuda_backend_emu.py`` (needs g++).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn.params import ModelSpec
from tests import emu_cases as cases
from tests.cuda_emu import fake_cupy
from tests.steps import check_inference, run_steps
from tests.tolerances import KERNEL_F32_BACKWARD, KERNEL_F32_FORWARD, assert_close

pytestmark = pytest.mark.cuda_emu


@pytest.fixture
def fake_cp(monkeypatch):
    with fake_cupy.installed(monkeypatch) as cp:
        yield cp


#: (I, H, layers): the warp kernels (1 and 3 layers) and the general path (GEMMs, block kernels)
SHAPES = [(6, 5, 1), (6, 5, 3), (40, 33, 2)]


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
@pytest.mark.parametrize("I,H,layers", SHAPES)
def test_classifier_steps_match_the_reference(fake_cp, monkeypatch, I, H, layers, graph):  # noqa: E741
    """Four steps (B=5, T=7, C=4), clipped, the second on a batch with a NaN (it must change
    nothing); with ``graph`` the first step is eager and the others replay the captured graph
    (H, I <= 32)."""
    spec = ModelSpec(I, H, layers, 4)
    want = run_steps(np, "reference", spec, 4, 5, 7, clip=0.05, nan_at=(2,))
    got = run_steps(fake_cp, "cuda", spec, 4, 5, 7, monkeypatch, graph=graph, clip=0.05,
                    nan_at=(2,))
    bf = got[4]._bufs[(5, 7)]
    assert (bf.graph is not None) == (graph and H <= 32), "graph replay on the wrong shapes"
    assert_close("losses", want[0], got[0], KERNEL_F32_FORWARD)
    assert np.abs(want[1] - got[1]).max() <= 1 / 5 + 1e-12, "accuracy"
    assert_close("grad norms", want[2], got[2], KERNEL_F32_BACKWARD)
    assert_close("params after 3 steps", want[3], got[3], KERNEL_F32_BACKWARD)


@pytest.mark.parametrize("I,H,layers", [(6, 5, 2), (40, 33, 2)], ids=["warp", "block"])
def test_relu_classifier_steps_match_the_reference(fake_cp, monkeypatch, I, H, layers):  # noqa: E741
    """``nonlinearity="relu"``: eager steps (the NaN step included) and inference."""
    spec = ModelSpec(I, H, layers, 4, nonlinearity="relu")
    want = run_steps(np, "reference", spec, 3, 5, 7, clip=0.05, nan_at=(2,))
    got = run_steps(fake_cp, "cuda", spec, 3, 5, 7, monkeypatch, graph=False, clip=0.05,
                    nan_at=(2,))
    assert_close("losses", want[0], got[0], KERNEL_F32_FORWARD)
    assert_close("params after 2 steps", want[3], got[3], KERNEL_F32_BACKWARD)
    check_inference(fake_cp, spec, 6, 7)


@pytest.mark.parametrize("I,H,layers", SHAPES)
def test_evaluate_and_predict_match_the_reference(fake_cp, I, H, layers):  # noqa: E741
    check_inference(fake_cp, ModelSpec(I, H, layers, 4), 6, 7)


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("I,H", [(3, 5), (40, 5), (3, 33)])
def test_functional_launchers_match_the_reference(fake_cp, I, H, time_major):  # noqa: E741
    """``fastrnn.kernels.cuda.rnn_forward`` / ``rnn_backward`` (the functional API on CuPy
    arrays): warp kernels, the projection and dx as GEMMs (I > 32), block kernels (H > 32)."""
    from fastrnn import reference as ref
    from fastrnn.kernels import cuda as launchers

    rng, x, h0, w_ih, w_hh, b, lens = cases.layer_problem(3, 7, I, H, time_major, "mixed")
    d = {k: fake_cp.asarray(cases.f32(v)) for k, v in dict(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh,
                                                           b=b).items()}
    dl = fake_cp.asarray(lens)
    y_r, hn_r = ref.rnn_forward(x, h0, w_ih, w_hh, b, lens, time_major)
    y, hn = launchers.rnn_forward(d["x"], d["h0"], d["w_ih"], d["w_hh"], d["b"], dl, time_major)
    assert_close("y", y_r, np.asarray(y), KERNEL_F32_FORWARD)
    assert_close("h_n", hn_r, np.asarray(hn), KERNEL_F32_FORWARD)
    dy, dh_n = rng.standard_normal(y_r.shape), rng.standard_normal(hn_r.shape)
    y32 = cases.f32(y_r)
    grads_r = ref.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y32.astype(np.float64), lens,
                               time_major)
    grads = launchers.rnn_backward(fake_cp.asarray(cases.f32(dy)), fake_cp.asarray(cases.f32(dh_n)),
                                   d["x"], d["h0"], d["w_ih"], d["w_hh"], fake_cp.asarray(y32),
                                   dl, time_major)
    for name, r, o in zip(("dx", "dh0", "dw_ih", "dw_hh", "db"), grads_r, grads):
        assert_close(name, r, np.asarray(o), KERNEL_F32_BACKWARD)
