"""The reference against the math itself: central finite differences in float64, and the lengths
semantics. Every kernel is then tested against this reference."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import reference as ref
from tests.gradcheck import assert_layer_grads_match, numeric_grad
from tests.tolerances import FINITE_DIFF, assert_close


def make_layer(rng, B, T, I, H, time_major):
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I))
    h0 = rng.standard_normal((B, H)) * 0.5
    w_ih = rng.standard_normal((H, I)) * 0.5
    w_hh = rng.standard_normal((H, H)) * 0.5
    b = rng.standard_normal(H) * 0.1
    return x, h0, w_ih, w_hh, b


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("lengths", [None, [0, 1, 4]])
def test_rnn_gradients_match_finite_differences(time_major, lengths):
    rng = np.random.default_rng(1)
    B, T, I, H = 3, 4, 2, 3
    x, h0, w_ih, w_hh, b = make_layer(rng, B, T, I, H, time_major)
    lens = None if lengths is None else np.array(lengths)
    y, h_n = ref.rnn_forward(x, h0, w_ih, w_hh, b, lens, time_major)
    dy, dh_n = rng.standard_normal(y.shape), rng.standard_normal(h_n.shape)

    def objective():  # a random linear function of both outputs
        y, h_n = ref.rnn_forward(x, h0, w_ih, w_hh, b, lens, time_major)
        return np.sum(y * dy) + np.sum(h_n * dh_n)

    grads = ref.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lens, time_major)
    for name, a, g in zip(("dx", "dh0", "dw_ih", "dw_hh", "db"), (x, h0, w_ih, w_hh, b), grads):
        assert_close(name, numeric_grad(objective, a), g, FINITE_DIFF)


def test_dense_and_xent_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    B, H, C = 5, 4, 3
    h, w, b = rng.standard_normal((B, H)), rng.standard_normal((C, H)), rng.standard_normal(C)
    labels = np.array([0, 2, 1, 2, 0])

    def loss():
        return ref.softmax_xent(ref.dense_forward(h, w, b), labels)[0]

    _, _, dlogits = ref.softmax_xent(ref.dense_forward(h, w, b), labels)
    dh, dw, db = ref.dense_backward(dlogits, h, w)
    for name, a, g in (("dh", h, dh), ("dw", w, dw), ("db", b, db)):
        assert_close(name, numeric_grad(loss, a), g, FINITE_DIFF)


def test_classifier_grads_match_finite_differences():
    rng = np.random.default_rng(4)
    B, T, I, H, C = 4, 3, 2, 3, 3
    x = rng.standard_normal((B, T, I))
    labels = np.array([0, 1, 2, 1])
    layers = [(rng.standard_normal((H, I if k == 0 else H)) * 0.5,
               rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H) * 0.1) for k in range(2)]
    w_out, b_out = rng.standard_normal((C, H)), rng.standard_normal(C)

    def loss():
        return ref.classifier_grads(x, labels, layers, w_out, b_out)[0]

    _, _, layer_grads, (dw_out, db_out) = ref.classifier_grads(x, labels, layers, w_out, b_out)
    assert_close("dw_out", numeric_grad(loss, w_out), dw_out, FINITE_DIFF)
    assert_close("db_out", numeric_grad(loss, b_out), db_out, FINITE_DIFF)
    assert_layer_grads_match(loss, layers, layer_grads)


@pytest.mark.parametrize("time_major", [False, True])
def test_lengths_zero_outputs_and_carried_state(time_major):
    rng = np.random.default_rng(5)
    B, T, I, H = 4, 5, 3, 2
    x, h0, w_ih, w_hh, b = make_layer(rng, B, T, I, H, time_major)
    lens = np.array([0, 1, 3, 5])
    y, h_n = ref.rnn_forward(x, h0, w_ih, w_hh, b, lens, time_major)
    y_full, _ = ref.rnn_forward(x, h0, w_ih, w_hh, b, None, time_major)
    yb, yb_full = (y.swapaxes(0, 1), y_full.swapaxes(0, 1)) if time_major else (y, y_full)
    for i, n in enumerate(lens):
        assert np.all(yb[i, n:] == 0), "outputs past the length must be exactly zero"
        np.testing.assert_array_equal(yb[i, :n], yb_full[i, :n])
        np.testing.assert_array_equal(h_n[i], h0[i] if n == 0 else yb_full[i, n - 1])


def test_softmax_xent_is_stable_and_counts_ties_as_first_index():
    logits = np.array([[1000.0, 0.0, -1000.0], [2.0, 2.0, 0.0]])
    loss, acc, d = ref.softmax_xent(logits, np.array([0, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert acc == 0.5  # the tie in row 2 picks class 0
    np.testing.assert_allclose(loss, (0 + np.log(2 + np.exp(-2))) / 2)


def test_adam_matches_the_closed_form_first_step():
    # After one step from m = v = 0, m_hat = g and v_hat = g^2: the update is lr * g/(|g| + eps).
    g = np.array([0.5, -2.0, 1e-3])
    p, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    ref.adam_update(p, g, m, v, step=1, lr=0.1)
    np.testing.assert_allclose(p, -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g)
    np.testing.assert_allclose(v, 0.001 * g * g)
