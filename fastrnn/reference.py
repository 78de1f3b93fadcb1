"""The NumPy reference: every piece of a fastrnn training step, written to read like the math.

This is the single ground truth that every kernel (Numba on the CPU, CUDA on the GPU) is tested
against, and the baseline in every benchmark. It is dtype-generic: pass float64 arrays and every
intermediate stays float64 (the gradient checks use that); pass float32 for the benchmark baseline.
It does no argument checking: :mod:`fastrnn.api` validates before calling any backend.

Notation (one layer)::

    x   [B,T,I]  (time_major=False)  or  [T,B,I]  (time_major=True)
    h0  [B,H]     w_ih [H,I]     w_hh [H,H]     b [H]     lengths [B] int, 0 <= lengths[b] <= T

    z_t = W_ih x_t + W_hh h_{t-1} + b
    h_t = f(z_t)      f = tanh or relu (nonlinearity)     for t <  lengths[b]
    y_t = h_t   (and 0 for t >= lengths[b], where the state is carried: h_t = h_{t-1})
    h_n = h_{lengths[b]-1}   (h0 when lengths[b] == 0)

These are TensorFlow's ``sequence_length`` semantics. The weight layout is PyTorch's with a single
bias per layer, as in TF's BasicRNNCell (PyTorch's ``b_ih + b_hh`` is one bias here). BPTT takes
f' from the output: ``1 - y*y`` (tanh), ``y > 0`` (relu; 0 at the kink, as PyTorch).

Bidirectional (``nn.RNN(bidirectional=True)``, TF's ``bidirectional_dynamic_rnn``): a reverse
direction runs the same recurrence over each sequence's valid prefix reversed
(:func:`reverse_sequence`: TF's ``reverse_sequence``, so it starts at step ``lengths[b]-1`` and
padding stays zero); its outputs are put back in time order and concatenated after the forward
direction's, ``[fw, bw]`` on the last axis. Stacked: layer ``k`` direction ``d`` is entry
``2k + d`` of the weights and of ``h0``/``h_n`` (PyTorch's order), and layers above the first
take ``2H`` inputs.

Dropout between layers (``nn.RNN(dropout=p)``): in training, the output of every layer but the
last is multiplied by a mask of 0 and ``1/(1-p)`` before it feeds the next layer. The masks come
from :func:`dropout_mask`, a counter-based generator (Philox-4x32-10) keyed by (seed, step,
layer), so every backend draws the same masks for the same seed.
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


#: the nonlinearities of the Elman cell
NONLINEARITIES = ("tanh", "relu")


def activation(z, nonlinearity: str = "tanh"):
    """``tanh(z)`` or ``relu(z) = max(z, 0)``."""
    return np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0)


def activation_grad(y, nonlinearity: str = "tanh"):
    """The derivative of the activation at the step whose output is ``y``: ``1 - y*y`` (tanh),
    ``1`` where ``y > 0`` else ``0`` (relu)."""
    return 1 - y * y if nonlinearity == "tanh" else (y > 0).astype(y.dtype)


def rnn_forward(x, h0, w_ih, w_hh, b, lengths=None, time_major=False, nonlinearity="tanh"):
    """One RNN layer (``nonlinearity`` tanh or relu) over all T steps.

    Returns ``y`` (same layout as ``x``, last axis H) and ``h_n [B,H]``. ``h0=None`` means zeros.
    """
    xs = _time_major(x, time_major)
    T, B, _ = xs.shape
    H = w_hh.shape[0]
    h = np.zeros((B, H), dtype=x.dtype) if h0 is None else h0
    ys = np.zeros((T, B, H), dtype=x.dtype)
    for t in range(T):
        h_new = activation(xs[t] @ w_ih.T + h @ w_hh.T + b, nonlinearity)
        alive = _alive(t, lengths, B)
        ys[t] = np.where(alive, h_new, 0)
        h = np.where(alive, h_new, h)
    return _time_major(ys, time_major), h


def rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths=None, time_major=False,
                 nonlinearity="tanh"):
    """BPTT of :func:`rnn_forward`, given upstream gradients on every output and on the final state.

    ``dy`` has the layout of ``y``; ``dh_n [B,H]``; ``y`` is the forward output (f' is taken from
    it: :func:`activation_grad`). ``dy`` or ``dh_n`` may be None (zeros). Returns ``dx, dh0, dw_ih,
    dw_hh, db``.
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
        dz = np.where(alive, (dys[t] + dh) * activation_grad(ys[t], nonlinearity), 0)
        dxs[t] = dz @ w_ih
        dw_ih += dz.T @ xs[t]
        dw_hh += dz.T @ h_prev
        db += dz.sum(axis=0)
        dh = np.where(alive, dz @ w_hh, dh)
    return _time_major(dxs, time_major), dh, dw_ih, dw_hh, db


def reverse_index(T: int, B: int, lengths=None, xp=np):
    """``[T,B]``: the step that step t of sequence b reads when reversed over its valid prefix,
    ``lengths[b] - 1 - t`` for ``t < lengths[b]``, else ``t`` (all T steps without ``lengths``);
    on ``xp`` (NumPy or CuPy). The one definition of the reverse direction's order."""
    t = xp.arange(T)[:, None]
    n = xp.full((1, B), T) if lengths is None else xp.asarray(lengths)[None, :]
    return xp.where(t < n, n - 1 - t, t)


def reverse_sequence(x, lengths=None, time_major=False):
    """TF's ``reverse_sequence``: each sequence's first ``lengths[b]`` steps in reverse order,
    the steps past its length left where they are (all T steps without ``lengths``). A new
    array of ``x``'s layout; applied twice it gives ``x`` back."""
    xs = _time_major(x, time_major)
    T, B = xs.shape[:2]
    idx = reverse_index(T, B, lengths)
    return _time_major(xs[idx, np.arange(B)], time_major)


def bidirectional_forward(x, h0s, fw: Layer, bw: Layer, lengths=None, time_major=False,
                          nonlinearity="tanh"):
    """One bidirectional layer: ``y`` (``x``'s layout, last axis ``2H``: ``[fw, bw]``) and
    ``(h_n_fw, h_n_bw)``; ``h0s`` is ``(h0_fw, h0_bw)`` or None. The reverse direction's final
    state is its state after step 0 (its last step)."""
    h0f, h0b = (None, None) if h0s is None else h0s
    y_f, h_f = rnn_forward(x, h0f, *fw, lengths, time_major, nonlinearity)
    y_r, h_b = rnn_forward(reverse_sequence(x, lengths, time_major), h0b, *bw, lengths,
                           time_major, nonlinearity)
    return np.concatenate([y_f, reverse_sequence(y_r, lengths, time_major)], axis=-1), (h_f, h_b)


def bidirectional_backward(dy, dh_ns, x, h0s, fw: Layer, bw: Layer, y, lengths=None,
                           time_major=False, nonlinearity="tanh"):
    """BPTT of :func:`bidirectional_forward`: ``dy`` like ``y`` (or None), ``dh_ns`` =
    ``(dh_n_fw, dh_n_bw)`` (or None). Returns ``dx``, ``(dh0_fw, dh0_bw)`` and the two
    directions' ``(dw_ih, dw_hh, db)``."""
    H = fw[1].shape[0]
    h0f, h0b = (None, None) if h0s is None else h0s
    dhf, dhb = (None, None) if dh_ns is None else dh_ns
    dyf, dyb = (None, None) if dy is None else (dy[..., :H], dy[..., H:])
    rev = lambda a: None if a is None else reverse_sequence(a, lengths, time_major)  # noqa: E731
    dx_f, dh0_f, *g_f = rnn_backward(dyf, dhf, x, h0f, fw[0], fw[1], y[..., :H], lengths,
                                     time_major, nonlinearity)
    dx_r, dh0_b, *g_b = rnn_backward(rev(dyb), dhb, rev(x), h0b, bw[0], bw[1],
                                     rev(y[..., H:]), lengths, time_major, nonlinearity)
    return dx_f + rev(dx_r), (dh0_f, dh0_b), (tuple(g_f), tuple(g_b))


def stack_forward(x, h0, layers: Sequence[Layer], lengths=None, time_major=False,
                  nonlinearity="tanh", bidirectional=False, masks=None):
    """L stacked layers with separate weights: the input of layer k+1 is the output of layer k
    (times ``masks[k]``, dropout, when ``masks`` is given: L-1 arrays like those outputs).

    ``layers``: L entries, or 2L with ``bidirectional`` (layer k's directions at 2k, 2k+1).
    ``h0`` is ``[L,B,H]`` (``[2L,B,H]``) or None. Returns the list of per-layer outputs ``ys``
    (each the layout of ``x`` with last axis H, or 2H; before dropout) and ``h_n`` (``[L,B,H]``,
    ``[2L,B,H]``).
    """
    D = 2 if bidirectional else 1
    ys, hs = [], []
    inp = x
    for k in range(len(layers) // D):
        h0k = None if h0 is None else h0[D * k:D * k + D]
        if bidirectional:
            y, h = bidirectional_forward(inp, h0k, layers[2 * k], layers[2 * k + 1], lengths,
                                         time_major, nonlinearity)
        else:
            y, h = rnn_forward(inp, None if h0k is None else h0k[0], *layers[k], lengths,
                               time_major, nonlinearity)
            h = (h,)
        ys.append(y)
        hs += h
        inp = y if masks is None or k == len(layers) // D - 1 else y * masks[k]
    return ys, np.stack(hs)


def stack_backward(dy, dh_n, x, h0, layers: Sequence[Layer], ys, lengths=None, time_major=False,
                   nonlinearity="tanh", bidirectional=False, masks=None):
    """BPTT of :func:`stack_forward` (same options).

    ``dy``: gradient on the top layer's output (or None); ``dh_n`` like ``h_n`` (or None); ``ys``
    the per-layer outputs from the forward. Returns ``dx``, ``dh0`` like ``h0`` and per entry of
    ``layers`` ``(dw_ih, dw_hh, db)``.
    """
    D = 2 if bidirectional else 1
    L = len(layers) // D
    grads: list[Layer] = [None] * (D * L)  # type: ignore[list-item]
    dh0 = [None] * (D * L)
    d_out = dy
    for k in reversed(range(L)):
        inp = x if k == 0 else (ys[k - 1] if masks is None else ys[k - 1] * masks[k - 1])
        dhk = None if dh_n is None else dh_n[D * k:D * k + D]
        h0k = None if h0 is None else h0[D * k:D * k + D]
        if bidirectional:
            d_in, dh0[2 * k:2 * k + 2], grads[2 * k:2 * k + 2] = bidirectional_backward(
                d_out, dhk, inp, h0k, layers[2 * k], layers[2 * k + 1], ys[k], lengths,
                time_major, nonlinearity)
        else:
            w_ih, w_hh, _ = layers[k]
            d_in, dh0[k], *g = rnn_backward(d_out, None if dhk is None else dhk[0], inp,
                                            None if h0k is None else h0k[0], w_ih, w_hh, ys[k],
                                            lengths, time_major, nonlinearity)
            grads[k] = tuple(g)
        d_out = d_in if masks is None or k == 0 else d_in * masks[k - 1]
    return d_out, np.stack(dh0), grads


#: Philox-4x32-10's multipliers and Weyl key increments (Salmon et al., SC'11; Random123)
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def philox4x32(counter, key):
    """Philox-4x32-10: ``counter`` uint32 ``[4, n]``, ``key`` two uint32 -> uint32 ``[4, n]``
    (ten rounds; checked against Random123's known-answer vectors in the tests)."""
    c0, c1, c2, c3 = (np.asarray(c, np.uint64) for c in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    mask = np.uint64(0xFFFFFFFF)
    m0, m1 = np.uint64(_PHILOX_M[0]), np.uint64(_PHILOX_M[1])
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(_PHILOX_W[0])) & mask, (k1 + np.uint64(_PHILOX_W[1])) & mask
        p0, p1 = m0 * c0, m1 * c2  # 32 x 32 -> 64 bits: exact in uint64
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & mask,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & mask)
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def dropout_threshold(p: float) -> int:
    """The uint32 below which a draw drops its element: ``round(p * 2**32)`` (so a mask keeps
    each element with probability ``1 - p`` to within 2**-33, exactly on every backend)."""
    return min(round(p * 2**32), 2**32 - 1)


def dropout_mask(seed: int, step: int, layer: int, shape, p: float, dtype=np.float64,
                 time_major: bool = False):
    """The dropout mask of layer ``layer``'s output at training step ``step``: 0 where dropped,
    ``1/(1-p)`` (rounded to ``dtype``) elsewhere, of ``shape`` = ``[B,T,D]`` (``[T,B,D]`` with
    ``time_major``). Element (b, t, d) draws word 0 of Philox-4x32-10 at counter
    ``(i mod 2**32, i div 2**32, step, layer)``, ``i = (b*T + t)*D + d`` (batch-major whatever
    the layout), key ``(seed mod 2**32, seed div 2**32 mod 2**32)``, and is dropped when the draw
    is below :func:`dropout_threshold`; ``p = 0`` keeps everything."""
    if time_major:
        return dropout_mask(seed, step, layer, (shape[1], shape[0], shape[2]), p, dtype
                            ).swapaxes(0, 1)
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    n = i.size
    counter = (i & np.uint64(0xFFFFFFFF), i >> np.uint64(32), np.full(n, step % 2**32),
               np.full(n, layer % 2**32))
    draw = philox4x32(counter, (seed % 2**32, (seed >> 32) % 2**32))[0]
    keep = draw >= np.uint32(dropout_threshold(p))
    return np.where(keep, np.asarray(1 / (1 - p), dtype), np.asarray(0, dtype)).reshape(shape)


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


def classifier_forward(x, layers: Sequence[Layer], w_out, b_out, lengths=None, time_major=False,
                       nonlinearity="tanh"):
    """The classifier: an RNN stack, its top layer's final state into a dense layer.

    Returns ``logits [B,C]`` and the per-layer outputs ``ys`` (kept for the backward).
    """
    ys, h_n = stack_forward(x, None, layers, lengths, time_major, nonlinearity)
    return dense_forward(h_n[-1], w_out, b_out), ys, h_n


def classifier_grads(x, labels, layers: Sequence[Layer], w_out, b_out, lengths=None,
                     time_major=False, nonlinearity="tanh"):
    """Loss, accuracy and every gradient of one training step (no update).

    Returns ``loss, acc, layer_grads, (dw_out, db_out)`` with ``layer_grads`` a list of
    ``(dw_ih, dw_hh, db)`` per layer.
    """
    logits, ys, h_n = classifier_forward(x, layers, w_out, b_out, lengths, time_major,
                                         nonlinearity)
    loss, acc, dlogits = softmax_xent(logits, labels)
    dh_top, dw_out, db_out = dense_backward(dlogits, h_n[-1], w_out)
    dh_n = np.zeros_like(h_n)
    dh_n[-1] = dh_top
    _, _, layer_grads = stack_backward(None, dh_n, x, None, layers, ys, lengths, time_major,
                                       nonlinearity)
    return loss, acc, layer_grads, (dw_out, db_out)
