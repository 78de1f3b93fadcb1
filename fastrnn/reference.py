"""The NumPy reference: every piece of a fastrnn training step, written to read like the math.

This is the single ground truth that every kernel (Numba on the CPU, CUDA on the GPU) is tested
against, and the baseline in every benchmark. It is dtype-generic: pass float64 arrays and every
intermediate stays float64 (the gradient checks use that); pass float32 for the benchmark baseline.
It does no argument checking: :mod:`fastrnn.api` validates before calling any backend.

Notation (one layer)::

    x   [B,T,I]  (time_major=False)  or  [T,B,I]  (time_major=True)
    h0  [B,H]     w_ih [H,I]     w_hh [H,H]     b [H]     lengths [B] int, 0 <= lengths[b] <= T

    z_t = W_ih x_t + W_hh h_{t-1} + b
    h_t = tanh(z_t)                                       for t <  lengths[b]
    y_t = h_t   (and 0 for t >= lengths[b], where the state is carried: h_t = h_{t-1})
    h_n = h_{lengths[b]-1}   (h0 when lengths[b] == 0)

These are TensorFlow's ``sequence_length`` semantics. The weight layout is PyTorch's with a single
bias per layer, as in TF's BasicRNNCell (PyTorch's ``b_ih + b_hh`` is one bias here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Layer = tuple[np.ndarray, np.ndarray, np.ndarray]  # (w_ih [H,I], w_hh [H,H], b [H])


def _time_major(a: np.ndarray, time_major: bool) -> np.ndarray:
    """View ``[B,T,...]`` as ``[T,B,...]`` (no copy); identity when already time-major."""
    return a if time_major else a.swapaxes(0, 1)


def _alive(t: int, lengths: np.ndarray | None, batch: int) -> np.ndarray:
    """``[B,1]`` bool: which sequences are still running at step ``t``."""
    if lengths is None:
        return np.ones((batch, 1), dtype=bool)
    return (t < np.asarray(lengths))[:, None]


def rnn_forward(x, h0, w_ih, w_hh, b, lengths=None, time_major=False):
    """One tanh RNN layer over all T steps.

    Returns ``y`` (same layout as ``x``, last axis H) and ``h_n [B,H]``. ``h0=None`` means zeros.
    """
    xs = _time_major(x, time_major)
    T, B, _ = xs.shape
    H = w_hh.shape[0]
    h = np.zeros((B, H), dtype=x.dtype) if h0 is None else h0
    ys = np.zeros((T, B, H), dtype=x.dtype)
    for t in range(T):
        h_new = np.tanh(xs[t] @ w_ih.T + h @ w_hh.T + b)
        alive = _alive(t, lengths, B)
        ys[t] = np.where(alive, h_new, 0)
        h = np.where(alive, h_new, h)
    return _time_major(ys, time_major), h


def rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths=None, time_major=False):
    """BPTT of :func:`rnn_forward`, given upstream gradients on every output and on the final state.

    ``dy`` has the layout of ``y``; ``dh_n [B,H]``; ``y`` is the forward output (tanh' = 1 - y*y is
    taken from it). ``dy`` or ``dh_n`` may be None (zeros). Returns ``dx, dh0, dw_ih, dw_hh, db``.
    Past a sequence's length the output is a constant zero, so its ``dy`` is ignored, and the
    gradient on the carried state passes through unchanged.
    """
    xs, ys = _time_major(x, time_major), _time_major(y, time_major)
    T, B, _ = xs.shape
    H = w_hh.shape[0]
    dys = np.zeros_like(ys) if dy is None else _time_major(dy, time_major)
    h0 = np.zeros((B, H), dtype=x.dtype) if h0 is None else h0
    dh = np.zeros((B, H), dtype=x.dtype) if dh_n is None else dh_n.astype(x.dtype, copy=True)
    dxs = np.zeros_like(xs)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros(H, dtype=x.dtype)
    for t in reversed(range(T)):
        alive = _alive(t, lengths, B)
        h_prev = ys[t - 1] if t > 0 else h0  # a running sequence's state at t-1 is its output
        dz = np.where(alive, (dys[t] + dh) * (1 - ys[t] * ys[t]), 0)
        dxs[t] = dz @ w_ih
        dw_ih += dz.T @ xs[t]
        dw_hh += dz.T @ h_prev
        db += dz.sum(axis=0)
        dh = np.where(alive, dz @ w_hh, dh)
    return _time_major(dxs, time_major), dh, dw_ih, dw_hh, db


def stack_forward(x, h0, layers: Sequence[Layer], lengths=None, time_major=False):
    """L stacked layers with separate weights: the input of layer k+1 is the output of layer k.

    ``h0`` is ``[L,B,H]`` or None. Returns the list of per-layer outputs ``ys`` (each the layout of
    ``x`` with last axis H) and ``h_n [L,B,H]``.
    """
    ys, hs = [], []
    inp = x
    for k, (w_ih, w_hh, b) in enumerate(layers):
        y, h = rnn_forward(inp, None if h0 is None else h0[k], w_ih, w_hh, b, lengths, time_major)
        ys.append(y)
        hs.append(h)
        inp = y
    return ys, np.stack(hs)


def stack_backward(dy, dh_n, x, h0, layers: Sequence[Layer], ys, lengths=None, time_major=False):
    """BPTT of :func:`stack_forward`.

    ``dy``: gradient on the top layer's output (or None); ``dh_n [L,B,H]`` (or None); ``ys`` the
    per-layer outputs from the forward. Returns ``dx``, ``dh0 [L,B,H]`` and per-layer
    ``(dw_ih, dw_hh, db)``.
    """
    L = len(layers)
    grads: list[Layer] = [None] * L  # type: ignore[list-item]
    dh0 = [None] * L
    d_out = dy
    for k in reversed(range(L)):
        w_ih, w_hh, _ = layers[k]
        inp = x if k == 0 else ys[k - 1]
        d_in, dh0[k], dw_ih, dw_hh, db = rnn_backward(
            d_out, None if dh_n is None else dh_n[k], inp, None if h0 is None else h0[k],
            w_ih, w_hh, ys[k], lengths, time_major)
        grads[k] = (dw_ih, dw_hh, db)
        d_out = d_in
    return d_out, np.stack(dh0), grads


def dense_forward(h, w, b):
    """``logits [B,C] = h [B,H] @ w[C,H]^T + b [C]`` (PyTorch's Linear layout)."""
    return h @ w.T + b


def dense_backward(dlogits, h, w):
    """Gradients of :func:`dense_forward`: returns ``dh [B,H], dw [C,H], db [C]``."""
    return dlogits @ w, dlogits.T @ h, dlogits.sum(axis=0)


def softmax_xent(logits, labels):
    """Sparse softmax cross-entropy, mean over the batch, with accuracy.

    ``logits [B,C]``, ``labels [B]`` int in ``[0, C)``. Returns ``loss`` (scalar, mean of
    ``logsumexp(logits) - logits[label]``, computed stably by subtracting the row max), ``acc`` (the
    fraction of rows whose argmax, first index on ties, equals the label) and ``dlogits [B,C]``, the
    gradient of the mean loss: ``(softmax(logits) - onehot(labels)) / B``.
    """
    B = logits.shape[0]
    rows = np.arange(B)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    loss = np.mean(log_z - shifted[rows, labels])
    acc = np.mean(logits.argmax(axis=1) == labels)
    p = np.exp(shifted - log_z[:, None])
    p[rows, labels] -= 1
    return logits.dtype.type(loss), float(acc), p / B


def adam_update(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam (Kingma & Ba, Algorithm 1), in place on ``param``, ``m`` and ``v`` (same shapes).

    ``step`` is the 1-based count of this update. eps convention: eps is added to the
    bias-corrected ``sqrt(v_hat)`` (as in the paper and PyTorch), not to the uncorrected
    ``sqrt(v)`` as TF's "epsilon hat" does; at eps=1e-8 the two differ only for parameters whose
    gradients are ~0.
    """
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)


def clip_by_global_norm(grads: Sequence[np.ndarray], clip_norm: float):
    """Scale gradients so that their global L2 norm is at most ``clip_norm`` (TF's
    ``clip_by_global_norm``)::

        norm = sqrt(sum_i sum(g_i * g_i))
        g_i <- g_i * clip_norm / max(norm, clip_norm)        (only if clip_norm > 0)

    The squares are summed in float64 whatever the gradients' dtype, so finite float32
    gradients never overflow the sum; the scale is rounded to the gradients' dtype before it
    multiplies them. ``clip_norm`` 0 means no clipping: the gradients come back as they are.
    Returns ``(clipped, norm)`` with ``norm`` a float. When ``norm`` is not finite the clipped
    gradients are meaningless (a training step must skip its update; see
    :mod:`fastrnn.backends`).
    """
    norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    if clip_norm <= 0:
        return list(grads), norm
    scale = clip_norm / max(norm, clip_norm)
    return [g * g.dtype.type(scale) for g in grads], norm


def classifier_forward(x, layers: Sequence[Layer], w_out, b_out, lengths=None, time_major=False):
    """The classifier: an RNN stack, its top layer's final state into a dense layer.

    Returns ``logits [B,C]`` and the per-layer outputs ``ys`` (kept for the backward).
    """
    ys, h_n = stack_forward(x, None, layers, lengths, time_major)
    return dense_forward(h_n[-1], w_out, b_out), ys, h_n


def classifier_grads(x, labels, layers: Sequence[Layer], w_out, b_out, lengths=None,
                     time_major=False):
    """Loss, accuracy and every gradient of one training step (no update).

    Returns ``loss, acc, layer_grads, (dw_out, db_out)`` with ``layer_grads`` a list of
    ``(dw_ih, dw_hh, db)`` per layer.
    """
    logits, ys, h_n = classifier_forward(x, layers, w_out, b_out, lengths, time_major)
    loss, acc, dlogits = softmax_xent(logits, labels)
    dh_top, dw_out, db_out = dense_backward(dlogits, h_n[-1], w_out)
    dh_n = np.zeros_like(h_n)
    dh_n[-1] = dh_top
    _, _, layer_grads = stack_backward(None, dh_n, x, None, layers, ys, lengths, time_major)
    return loss, acc, layer_grads, (dw_out, db_out)
