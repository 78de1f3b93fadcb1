"""``fastrnn.rnn_step`` (one step for online use: state in, state out) and the cell call built on
it, against the reference's one-step forward; its fast path and its checked path agree bit for
bit; its errors name the argument."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as ref
from fastrnn.cells import BasicRNNCell
from tests.conftest import BACKENDS
from tests.tolerances import KERNEL_F32_FORWARD, KERNEL_F64, assert_close


def step_args(B, I, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, I)).astype(dtype), rng.standard_normal((B, H)).astype(dtype),
            (rng.standard_normal((H, I)) / np.sqrt(I)).astype(dtype),
            (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype),
            rng.standard_normal(H).astype(dtype))


def _device(backend, *arrays):
    if backend != "cuda":
        return arrays
    import cupy

    return tuple(cupy.asarray(a) for a in arrays)


@pytest.mark.parametrize("backend", [None, *BACKENDS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("B,I,H", [(1, 64, 256), (3, 5, 7), (128, 28, 31), (2, 1, 33)])
def test_rnn_step_is_one_forward_step(B, I, H, dtype, backend):
    if backend == "cuda" and dtype == np.float64:
        pytest.skip("the CUDA backend computes in float32")
    x, h, w_ih, w_hh, b = step_args(B, I, H, dtype)
    want = ref.rnn_forward(*(a.astype(np.float64) for a in (x[:, None], h, w_ih, w_hh, b)))[1]
    got = fastrnn.rnn_step(*_device(backend, x, h, w_ih, w_hh, b), backend=backend)
    got = got.get() if hasattr(got, "get") else got
    assert got.dtype == dtype and got.shape == (B, H)
    assert_close("h_new", want, got, KERNEL_F64 if dtype == np.float64 else KERNEL_F32_FORWARD)


def test_fast_and_checked_paths_give_the_same_bits():
    x, h, w_ih, w_hh, b = step_args(5, 9, 40, np.float32)
    fast = fastrnn.rnn_step(x, h, w_ih, w_hh, b)
    assert np.array_equal(fast, fastrnn.rnn_step(x, h, w_ih, w_hh, b))  # run to run
    checked = fastrnn.rnn_step(np.asfortranarray(x), h, np.asfortranarray(w_ih), w_hh, b,
                               backend="cpu")
    assert np.array_equal(fast, checked)
    assert np.array_equal(fastrnn.rnn_step(x, None, w_ih, w_hh, b),
                          fastrnn.rnn_step(x, np.zeros_like(h), w_ih, w_hh, b))


def test_a_stream_of_steps_is_rnn_forward():
    """Feeding a sequence frame by frame gives rnn_forward's outputs, step for step."""
    x, h, w_ih, w_hh, b = step_args(2, 3, 70, np.float64)
    seq = np.random.default_rng(1).standard_normal((2, 6, 3))
    y, h_n = fastrnn.rnn_forward(seq, h, w_ih, w_hh, b)
    for t in range(6):
        h = fastrnn.rnn_step(np.ascontiguousarray(seq[:, t]), h, w_ih, w_hh, b)
        assert_close(f"step {t}", y[:, t], h, KERNEL_F64)
    assert_close("h_n", h_n, h, KERNEL_F64)


@pytest.mark.parametrize("change, exc, match", [
    ({"h": np.zeros((3, 6))}, ValueError, r"h: expected shape \[B,H\] = \(3, 7\), got shape"),
    ({"x": np.zeros((3, 4))}, ValueError, r"w_ih: expected shape \[H,I\] = \(7, 4\)"),
    ({"x": np.zeros(5)}, ValueError, r"x: expected 2 dimensions, got numpy array of shape \(5,\)"),
    ({"x": np.zeros((0, 5))}, ValueError, r"x: expected shape \[B,I\] with B >= 1"),
    ({"h": np.zeros((3, 7), np.float32)}, TypeError, r"h: expected dtype float64 \(the dtype "
                                                       r"of x\), got float32"),
    ({"b": np.zeros(3)}, ValueError, r"b: expected shape \[H\] = \(7,\), got shape \(3,\)"),
    ({"w_hh": [[0.0]]}, TypeError, r"w_hh: expected a numpy array, got list"),
    ({"backend": "gpu"}, ValueError, r"backend: expected one of \('cpu', 'reference'\)"),
])
def test_rnn_step_refuses(change, exc, match):
    x, h, w_ih, w_hh, b = step_args(3, 5, 7, np.float64)
    kw = {"x": x, "h": h, "w_ih": w_ih, "w_hh": w_hh, "b": b} | change
    with pytest.raises(exc, match=match):
        fastrnn.rnn_step(**kw)


def test_cell_call_is_rnn_step():
    cell = BasicRNNCell(33, seed=0)
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    out, state = cell(x, None)  # the checked path: builds the weights
    assert out is state
    out2, state2 = cell(x, state)  # the fast path
    assert np.array_equal(state2, fastrnn.rnn_step(x, state, cell.w_ih, cell.w_hh, cell.b))
    out3, _ = cell(x, state, backend="reference")
    assert_close("cell on the reference", out3, out2, KERNEL_F32_FORWARD)
