"""The functional API's edge: defaults, layouts, and every invalid argument answered clearly."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as ref

B, T, I, H = 3, 4, 5, 6


def args(dtype=np.float64, time_major=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I)).astype(dtype)
    return (x, rng.standard_normal((B, H)).astype(dtype),
            rng.standard_normal((H, I)).astype(dtype), rng.standard_normal((H, H)).astype(dtype),
            rng.standard_normal(H).astype(dtype))


def test_reference_backend_is_the_reference_and_h0_none_is_zeros():
    x, h0, w_ih, w_hh, b = args()
    y, h_n = fastrnn.rnn_forward(x, None, w_ih, w_hh, b, backend="reference")
    y_ref, h_ref = ref.rnn_forward(x, np.zeros_like(h0), w_ih, w_hh, b)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(h_n, h_ref)
    grads = fastrnn.rnn_backward(None, h_n, x, None, w_ih, w_hh, y, backend="reference")
    grads_ref = ref.rnn_backward(np.zeros_like(y), h_n, x, np.zeros_like(h0), w_ih, w_hh, y)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_array_equal(g, g_ref)


def test_non_contiguous_inputs_are_accepted_and_not_modified():
    x, h0, w_ih, w_hh, b = args()
    xf = np.asfortranarray(x)
    w_t = np.ascontiguousarray(w_hh.T).T  # a transposed view: not C-contiguous
    xf.flags.writeable = False
    y, _ = fastrnn.rnn_forward(xf, h0, w_ih, w_t, b, backend="reference")
    np.testing.assert_array_equal(y, ref.rnn_forward(x, h0, w_ih, w_hh, b)[0])
    np.testing.assert_array_equal(xf, x)


def _bad(**change):
    x, h0, w_ih, w_hh, b = args()
    kw = {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b": b, "lengths": None} | change
    return kw


@pytest.mark.parametrize("change, exc, match", [
    ({"x": [[[1.0]]]}, TypeError, "x: expected a numpy array, got list"),
    ({"x": np.zeros((B, T), np.float64)}, ValueError, "x: expected 3 dimensions"),
    ({"x": np.zeros((B, T, I), np.int32)}, TypeError, "x: expected dtype float32 or float64"),
    ({"x": np.zeros((0, T, I))}, ValueError, r"x: expected shape \[B,T,I\] with B >= 1"),
    ({"x": np.zeros((B, 0, I))}, ValueError, "with T >= 1"),
    ({"w_ih": np.zeros((H, I + 1))}, ValueError, r"w_ih: expected shape \[H,I\] = \(6, 5\)"),
    ({"w_hh": np.zeros((H, H + 1))}, ValueError, r"w_hh: expected shape \[H,H\] = \(6, 6\)"),
    ({"w_hh": np.zeros((H, H), np.float32)}, TypeError,
     "w_hh: expected dtype float64 .the dtype of x., got float32"),
    ({"b": np.zeros(H + 1)}, ValueError, r"b: expected shape \[H\] = \(6,\), got shape \(7,\)"),
    ({"b": None}, TypeError, "b: expected a numpy array, got None"),
    ({"h0": np.zeros((B + 1, H))}, ValueError, r"h0: expected shape \[B,H\] = \(3, 6\)"),
    ({"lengths": np.array([1, 2, T + 1])}, ValueError,
     r"lengths: expected values in \[0, T\] = \[0, 4\], got values from 1 to 5"),
    ({"lengths": np.array([-1, 2, 3])}, ValueError, "lengths: expected values in"),
    ({"lengths": np.array([1.0, 2.0, 3.0])}, TypeError, "lengths: expected integers"),
    ({"lengths": np.array([1, 2])}, ValueError, r"lengths: expected shape \[B\] = \(3,\)"),
])
def test_rnn_forward_rejects_invalid_arguments(change, exc, match):
    with pytest.raises(exc, match=match):
        fastrnn.rnn_forward(**_bad(**change), backend="reference")


def test_rnn_forward_rejects_bad_layout_flag_and_backend():
    with pytest.raises(TypeError, match="time_major: expected a bool, got 1"):
        fastrnn.rnn_forward(**_bad(), time_major=1)
    with pytest.raises(ValueError, match=r"backend: expected one of \('cpu', 'reference'\)"):
        fastrnn.rnn_forward(**_bad(), backend="cuda")


@pytest.mark.parametrize("change, exc, match", [
    ({"y": np.zeros((B, T, H + 1))}, ValueError, r"y: expected shape \[B,T,H\] = \(3, 4, 6\)"),
    ({"dy": np.zeros((T, B, H))}, ValueError, r"dy: expected shape \[B,T,H\]"),
    ({"dh_n": np.zeros((B, H, 1))}, ValueError, "dh_n: expected 2 dimensions"),
    ({"dh_n": np.zeros((B, H), np.float32)}, TypeError, "dh_n: expected dtype float64"),
])
def test_rnn_backward_rejects_invalid_arguments(change, exc, match):
    x, h0, w_ih, w_hh, _ = args()
    kw = {"dy": np.zeros((B, T, H)), "dh_n": None, "x": x, "h0": h0, "w_ih": w_ih,
          "w_hh": w_hh, "y": np.zeros((B, T, H))} | change
    with pytest.raises(exc, match=match):
        fastrnn.rnn_backward(**kw, backend="reference")


@pytest.mark.parametrize("backend", [None, "reference"])
def test_relu_in_the_functional_api_is_the_reference(backend):
    """``nonlinearity="relu"`` through rnn_forward, rnn_backward and rnn_step (the default
    backend runs the CPU kernels; float64, so the kernels' tolerance is the float64 one)."""
    from tests.tolerances import KERNEL_F64, assert_close

    rng = np.random.default_rng(4)
    x, h0 = rng.standard_normal((3, 6, 4)), rng.standard_normal((3, 5))
    w_ih, w_hh = rng.standard_normal((5, 4)), rng.standard_normal((5, 5)) / 2
    b = rng.standard_normal(5)
    lengths = np.array([6, 0, 3])
    y, h_n = fastrnn.rnn_forward(x, h0, w_ih, w_hh, b, lengths, nonlinearity="relu",
                                 backend=backend)
    y_r, h_r = ref.rnn_forward(x, h0, w_ih, w_hh, b, lengths, False, "relu")
    assert_close("y", y_r, y, KERNEL_F64)
    assert_close("h_n", h_r, h_n, KERNEL_F64)
    dy = rng.standard_normal(y.shape)
    got = fastrnn.rnn_backward(dy, None, x, h0, w_ih, w_hh, y, lengths, nonlinearity="relu",
                               backend=backend)
    want = ref.rnn_backward(dy, None, x, h0, w_ih, w_hh, y_r, lengths, False, "relu")
    for name, r, g in zip(("dx", "dh0", "dw_ih", "dw_hh", "db"), want, got):
        assert_close(name, r, g, KERNEL_F64)
    step = fastrnn.rnn_step(np.ascontiguousarray(x[:, 0]), h0, w_ih, w_hh, b,
                            nonlinearity="relu", backend=backend)
    first = ref.rnn_forward(x[:, :1], h0, w_ih, w_hh, b, None, False, "relu")[1]
    assert_close("rnn_step", first, step, KERNEL_F64)


@pytest.mark.parametrize("call", [
    lambda a: fastrnn.rnn_forward(*a, nonlinearity="sigmoid"),
    lambda a: fastrnn.rnn_backward(None, None, a[0], a[1], a[2], a[3], a[0][..., :2],
                                   nonlinearity="Relu"),
    lambda a: fastrnn.rnn_step(a[0][:, 0], a[1], a[2], a[3], a[4], nonlinearity=None),
])
def test_an_unknown_nonlinearity_is_refused_by_name(call):
    x = np.zeros((1, 3, 2))
    args = (x, np.zeros((1, 2)), np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu', got"):
        call(args)
