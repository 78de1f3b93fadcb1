"""Long and odd runs: T = 10,000 with H = 31, B = 1 with H = 1024, lengths all zero.

Each is compared with the float64 reference over the whole run (the reference's loop over T is
~1 s at T = 10,000 with B = 2), output by output, and checked for NaN/inf. Each test takes a few
seconds at most on a busy 2-core box.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as ref
from fastrnn.params import init_params, views
from tests.conftest import BACKENDS
from tests.tolerances import KERNEL_F32_BACKWARD, KERNEL_F32_FORWARD, KERNEL_F64, assert_close

GRADS = ("dx", "dh0", "dw_ih", "dw_hh", "db")


def _problem(B, T, I, H, dtype, rng, radius=0.9):
    x = rng.standard_normal((B, T, I))
    h0 = rng.uniform(-0.5, 0.5, (B, H))
    w_ih = rng.standard_normal((H, I)) / np.sqrt(I)
    w_hh = radius * rng.standard_normal((H, H)) / np.sqrt(H)
    b = 0.1 * rng.standard_normal(H)
    dy = rng.standard_normal((B, T, H))
    dh_n = rng.standard_normal((B, H))
    return [a.astype(dtype) for a in (x, h0, w_ih, w_hh, b, dy, dh_n)]


def _compare(backend, dtype, args, lengths):
    x, h0, w_ih, w_hh, b, dy, dh_n = args
    f64 = [a.astype(np.float64) for a in args]
    y_ref, h_ref = ref.rnn_forward(*f64[:5], lengths)
    g_ref = ref.rnn_backward(f64[5], f64[6], f64[0], f64[1], f64[2], f64[3], y_ref, lengths)
    f32 = np.dtype(dtype) == np.float32
    tol_f, tol_b = (KERNEL_F32_FORWARD, KERNEL_F32_BACKWARD) if f32 else (KERNEL_F64, KERNEL_F64)
    y, h_n = fastrnn.rnn_forward(x, h0, w_ih, w_hh, b, lengths, backend=backend)
    assert_close("y", y_ref, y, tol_f)
    assert_close("h_n", h_ref, h_n, tol_f)
    grads = fastrnn.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y_ref.astype(dtype), lengths,
                                 backend=backend)
    for name, r, g in zip(GRADS, g_ref, grads):
        assert_close(name, r, g, tol_b)
    return y, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ten_thousand_steps_h31_match_the_reference(backend, dtype):
    if backend == "cuda" and dtype == "float64":
        pytest.skip("the CUDA kernels compute in float32")
    rng = np.random.default_rng(0)
    B, T = 2, 10_000
    args = _problem(B, T, 3, 31, dtype, rng)
    lengths = np.array([T, T - 1234])
    if backend == "cuda":
        import cupy

        args, lengths = [cupy.asarray(a) for a in args], cupy.asarray(lengths)
        args_np = [a.get() for a in args]
        y, grads = _compare_cuda(args, args_np, lengths)
        return
    y, grads = _compare(backend, dtype, args, lengths)
    assert np.all(y[1, T - 1234:] == 0)


def _compare_cuda(args, args_np, lengths):
    lengths_np = lengths.get()
    f64 = [a.astype(np.float64) for a in args_np]
    y_ref, h_ref = ref.rnn_forward(*f64[:5], lengths_np)
    g_ref = ref.rnn_backward(f64[5], f64[6], f64[0], f64[1], f64[2], f64[3], y_ref, lengths_np)
    y, h_n = fastrnn.rnn_forward(*args[:5], lengths)
    assert_close("y", y_ref, y.get(), KERNEL_F32_FORWARD)
    assert_close("h_n", h_ref, h_n.get(), KERNEL_F32_FORWARD)
    import cupy

    grads = fastrnn.rnn_backward(args[5], args[6], *args[:4], cupy.asarray(y_ref, np.float32),
                                 lengths)
    for name, r, g in zip(GRADS, g_ref, grads):
        assert_close(name, r, g.get(), KERNEL_F32_BACKWARD)
    return y, grads


def test_ten_thousand_steps_with_orthogonal_w_hh_stay_finite_and_bounded():
    """The classifier's own init (orthogonal W_hh, radius 1): nothing overflows over 10,000
    steps, outputs stay in [-1, 1], gradients stay finite; float32 kernels track float64."""
    rng = np.random.default_rng(1)
    B, T, I, H = 2, 10_000, 3, 31
    q, r = np.linalg.qr(rng.standard_normal((H, H)))
    args = _problem(B, T, I, H, np.float64, rng)
    args[3] = q * np.sign(np.diag(r))
    y64, h64 = fastrnn.rnn_forward(*args[:5], backend="cpu")
    g64 = fastrnn.rnn_backward(args[5], args[6], *args[:4], y64, backend="cpu")
    a32 = [a.astype(np.float32) for a in args]
    y32, h32 = fastrnn.rnn_forward(*a32[:5], backend="cpu")
    g32 = fastrnn.rnn_backward(a32[5], a32[6], *a32[:4], y64.astype(np.float32), backend="cpu")
    for name, a in (("y", y32), ("h_n", h32), ("y64", y64), *zip(GRADS, g32), *zip(GRADS, g64)):
        assert np.all(np.isfinite(a)), f"{name} holds NaN or inf"
    assert np.abs(y32).max() <= 1 and np.abs(y64).max() <= 1
    # forward: radius 1 is not contractive, so compare a window where float32 rounding has had
    # little time to be amplified, and the last state only loosely
    assert_close("y[:, :100]", y64[:, :100], y32[:, :100], KERNEL_F32_FORWARD)
    # the backward is given the same y; its recurrence runs on dh only
    for name, r, g in zip(GRADS, g64, g32):
        assert_close(name, r, g, KERNEL_F32_BACKWARD)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_sequence_of_1024_units_matches_the_reference(backend):
    rng = np.random.default_rng(2)
    dtype = "float32"
    args = _problem(1, 20, 8, 1024, dtype, rng)
    if backend == "cuda":
        import cupy

        _compare_cuda([cupy.asarray(a) for a in args], args, cupy.asarray(np.array([20])))
        return
    _compare(backend, dtype, args, None)
    _compare(backend, "float64", [a.astype(np.float64) for a in args], np.array([13]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("time_major", [False, True])
def test_lengths_all_zero_return_the_initial_state_exactly(backend, time_major):
    rng = np.random.default_rng(3)
    B, T, I, H = 3, 50, 4, 31
    x, h0, w_ih, w_hh, b, dy, dh_n = _problem(B, T, I, H, np.float32, rng)
    if time_major:
        x, dy = x.swapaxes(0, 1).copy(), dy.swapaxes(0, 1).copy()
    lengths = np.zeros(B, np.int64)
    xp = np
    if backend == "cuda":
        import cupy as xp
    d = [xp.asarray(a) for a in (x, h0, w_ih, w_hh, b, dy, dh_n, lengths)]
    x, h0, w_ih, w_hh, b, dy, dh_n, lengths = d
    y, h_n = fastrnn.rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, backend=backend)
    assert not y.any()
    assert (h_n == h0).all()
    dx, dh0, dw_ih, dw_hh, db = fastrnn.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths,
                                                     time_major, backend=backend)
    assert not dx.any() and not dw_ih.any() and not dw_hh.any() and not db.any()
    assert (dh0 == dh_n).all()


def test_a_classifier_step_over_ten_thousand_steps_matches_the_reference():
    """One fused CPU training step at T = 10,000 (H = 31) against the reference backend."""
    rng = np.random.default_rng(4)
    B, T, I, H = 2, 10_000, 3, 31
    x = rng.standard_normal((B, T, I))
    labels = np.array([3, 7])
    kernels = fastrnn.RNNClassifier(I, H, 1, 10, dtype="float64", seed=0)
    reference = fastrnn.RNNClassifier(I, H, 1, 10, dtype="float64", seed=0, backend="reference")
    assert np.array_equal(kernels.params, init_params(kernels.spec, 0))
    loss_k, acc_k = kernels.train_step(x, labels)
    loss_r, acc_r = reference.train_step(x, labels)
    assert np.isfinite(loss_k) and abs(loss_k - loss_r) <= 1e-12 * abs(loss_r) and acc_k == acc_r
    vk, vr = views(kernels.params, kernels.spec), views(reference.params, reference.spec)
    for name in vk:
        assert_close(name, vr[name], vk[name], KERNEL_F64)
