"""Numba kernels for the rest of a classifier training step on the CPU, and the step itself.

What they compute (the math of ``fastrnn/reference.py``):
    dense + sparse softmax cross-entropy (mean over the batch) + accuracy, and their gradients:
        logits = h W^T + b,  loss = mean(logsumexp(logits) - logits[label]),
        dlogits = (softmax(logits) - onehot) / B,
        dh = dlogits W,  dW = dlogits^T h,  db = sum dlogits
    Adam over one flat buffer (bias-corrected, eps added to sqrt(v_hat), as the reference).
    ``ClassifierStep``: the whole training step of an L-layer RNN classifier on the flat
    parameter layout (per layer w_ih [H,I_k], w_hh [H,H], b [H]; then w_out [C,H], b_out [C]),
    given as element offsets by the caller (this package does not import fastrnn).

Shapes: h [B,H], w [C,H], b [C], labels [B] int, logits/dlogits [B,C]; flat buffers params, m, v,
grad [P] (must not alias each other). x [B,T,I] batch-major, any strides (read in place).

Launch shape: the RNN layers run ``rnn_cpu``'s parallel kernels (prange over chunks of 8 batch
rows); the head (~40 kFLOP) and Adam (P ~ 2-6k elements) are serial: at these sizes a parallel
launch would cost more than the work. One step = 1 packing call + L forward + 1 head + L backward
+ 1 Adam Numba calls, with every workspace allocated once per (batch, steps) and reused.

Check: ``pytest tests/test_kernels_cpu.py``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import rnn_cpu
from ._numba_env import JIT_OPTIONS


@njit(**JIT_OPTIONS)
def dense_xent_kernel(h, w, b, labels, logits, dlogits, dh, dw, db, want_grad):
    """Dense + softmax cross-entropy (+ gradients if ``want_grad``); returns ``(loss, correct)``.

    h [B,H], w [C,H], b [C], labels [B]; writes logits [B,C] and, if ``want_grad``, dlogits [B,C],
    dh [B,H], dw [C,H], db [C]. ``loss`` is the batch mean (float64), ``correct`` a count.
    """
    B, H = h.shape
    C = w.shape[0]
    inv_b = 1.0 / B
    loss = 0.0
    correct = 0
    for r in range(B):
        best = 0
        for c in range(C):
            s = b[c]
            for j in range(H):
                s += h[r, j] * w[c, j]
            logits[r, c] = s
            if s > logits[r, best]:
                best = c
        if best == labels[r]:
            correct += 1
        mx = logits[r, best]
        z = 0.0
        for c in range(C):
            z += math.exp(logits[r, c] - mx)
        log_z = math.log(z)
        loss += log_z - (logits[r, labels[r]] - mx)
        if want_grad:
            for c in range(C):
                p = math.exp(logits[r, c] - mx - log_z)
                dlogits[r, c] = (p - (1.0 if c == labels[r] else 0.0)) * inv_b
    if want_grad:
        for r in range(B):
            for j in range(H):
                s = dh.dtype.type(0)
                for c in range(C):
                    s += dlogits[r, c] * w[c, j]
                dh[r, j] = s
        for c in range(C):
            sb = db.dtype.type(0)
            for r in range(B):
                sb += dlogits[r, c]
            db[c] = sb
            for j in range(H):
                s = dw.dtype.type(0)
                for r in range(B):
                    s += dlogits[r, c] * h[r, j]
                dw[c, j] = s
    return loss * inv_b, correct


@njit(**JIT_OPTIONS)
def adam_kernel(param, grad, m, v, step, lr, beta1, beta2, eps):
    """Adam in place on ``param``, ``m``, ``v`` [P] given ``grad`` [P]; ``step`` is 1-based.

    Arithmetic in the buffers' dtype, like the reference (scalars rounded to it first).
    """
    one = param.dtype.type(1)
    b1 = param.dtype.type(beta1)
    b2 = param.dtype.type(beta2)
    c1 = param.dtype.type(1 - beta1 ** step)
    c2 = param.dtype.type(1 - beta2 ** step)
    a = param.dtype.type(lr)
    e = param.dtype.type(eps)
    for i in range(param.shape[0]):
        g = grad[i]
        mi = b1 * m[i] + (one - b1) * g
        vi = b2 * v[i] + (one - b2) * g * g
        m[i] = mi
        v[i] = vi
        param[i] -= a * (mi / c1) / (np.sqrt(vi / c2) + e)


@njit(**JIT_OPTIONS)
def pack_kernel(params, layout, H, wih_t, whh_t, bias, wih_p, whh_p):
    """Copy every layer's weights from the flat buffer into the padded forms ``rnn_cpu`` wants.

    layout [L,4] int64: (offset of w_ih, of w_hh, of b, input size I_k) per layer.
    wih_t [L,Imax,HP], whh_t [L,H,HP], bias [L,HP], wih_p [L,H,IPmax], whh_p [L,H,HP]; padding
    columns are never written (zero from allocation).
    """
    for k in range(layout.shape[0]):
        o_ih, o_hh, o_b, I = layout[k, 0], layout[k, 1], layout[k, 2], layout[k, 3]
        for j in range(H):
            bias[k, j] = params[o_b + j]
            for i in range(I):
                w = params[o_ih + j * I + i]
                wih_t[k, i, j] = w
                wih_p[k, j, i] = w
            for i in range(H):
                w = params[o_hh + j * H + i]
                whh_t[k, i, j] = w
                whh_p[k, j, i] = w


def dense_forward(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``logits [B,C] = h [B,H] @ w[C,H]^T + b [C]``, as ``fastrnn.reference.dense_forward``."""
    B, C = h.shape[0], w.shape[0]
    logits = np.empty((B, C), h.dtype)
    dense_xent_kernel(h, w, b, np.zeros(B, np.int64), logits, logits, h, w, b, False)
    return logits


def dense_xent(h: np.ndarray, w: np.ndarray, b: np.ndarray, labels: np.ndarray):
    """Dense, softmax cross-entropy and all their gradients in one call.

    Returns ``loss, acc, logits [B,C], dlogits [B,C], dh [B,H], dw [C,H], db [C]`` (the reference's
    ``dense_forward`` + ``softmax_xent`` + ``dense_backward``).
    """
    (B, H), C = h.shape, w.shape[0]
    dt = h.dtype
    logits, dlogits = np.empty((B, C), dt), np.empty((B, C), dt)
    dh, dw, db = np.empty((B, H), dt), np.empty((C, H), dt), np.empty(C, dt)
    loss, correct = dense_xent_kernel(h, w, b, labels, logits, dlogits, dh, dw, db, True)
    return dt.type(loss), correct / B, logits, dlogits, dh, dw, db


def adam_update(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8) -> None:
    """Adam in place on 1-D ``param``, ``m``, ``v``; see :func:`fastrnn.reference.adam_update`."""
    adam_kernel(param, grad, m, v, step, lr, beta1, beta2, eps)


class ClassifierStep:
    """Workspaces and calls for one classifier shape at one (batch, steps); reused every step.

    Parameters
    ----------
    layout : [L,4] int64 per layer (offset of w_ih, of w_hh, of b, input size I_k)
    out_offsets : (offset of w_out [C,H], offset of b_out [C])
    hidden_size, num_classes, num_params, batch, steps : sizes
    dtype : float32 or float64
    """

    def __init__(self, layout, out_offsets, hidden_size: int, num_classes: int, num_params: int,
                 batch: int, steps: int, dtype):
        self.layout = np.ascontiguousarray(layout, dtype=np.int64)
        L = self.layout.shape[0]
        H, C, B, T = hidden_size, num_classes, batch, steps
        self.H, self.C, self.L = H, C, L
        self.o_w, self.o_b = out_offsets
        dt = np.dtype(dtype)
        HP = rnn_cpu.padded(H)
        imax = int(self.layout[:, 3].max())
        ipmax = rnn_cpu.padded(imax)
        nc = rnn_cpu.num_chunks(B)
        z = np.zeros
        self.wih_t, self.whh_t = z((L, imax, HP), dt), z((L, H, HP), dt)
        self.bias, self.wih_p, self.whh_p = z((L, HP), dt), z((L, H, ipmax), dt), z((L, H, HP), dt)
        self.lengths = np.full(B, T, np.int32)
        self.ys = z((L, T, B, HP), dt)       # each layer's output, time-major, padded rows
        self.h_n = z((L, B, H), dt)
        self.hbuf = z((2, B, HP), dt)
        self.h0 = z((B, H), dt)              # zero initial state / zero dh_n below the top
        self.dh_top = z((B, H), dt)
        self.dxy = z((2, T, B, HP), dt)      # dx of layer k = dy of layer k-1, alternating
        self.dh0 = z((B, H), dt)
        self.dhbuf = z((2, B, HP), dt)
        self.dz = z((T, B, HP), dt)          # padding columns stay zero
        self.row = z((B, max(ipmax, HP)), dt)
        self.part_ih = z((nc, imax, HP), dt)
        self.part_hh = z((nc, H, HP), dt)
        self.part_b = z((nc, HP), dt)
        self.logits, self.dlogits = z((B, C), dt), z((B, C), dt)
        self.no_labels = z(B, np.int64)
        self.grad = z(num_params, dt)

    def _forward(self, params, x):
        H, L = self.H, self.L
        pack_kernel(params, self.layout, H, self.wih_t, self.whh_t, self.bias, self.wih_p,
                    self.whh_p)
        inp = x.swapaxes(0, 1)
        for k in range(L):
            I = int(self.layout[k, 3])
            y = self.ys[k, :, :, :H]
            rnn_cpu.forward_kernel(inp, self.h0, self.wih_t[k, :I], self.whh_t[k], self.bias[k],
                                   self.lengths, y, self.h_n[k], self.hbuf)
            inp = y
        C = self.C
        w_out = params[self.o_w:self.o_w + C * H].reshape(C, H)
        b_out = params[self.o_b:self.o_b + C]
        return w_out, b_out

    def train_step(self, params, m, v, step, x, labels, lr, beta1, beta2, eps):
        """Forward, xent, BPTT, dense grads and Adam; updates params, m, v; returns (loss, acc)."""
        H, L, C, g = self.H, self.L, self.C, self.grad
        w_out, b_out = self._forward(params, x)
        B = x.shape[0]
        loss, correct = dense_xent_kernel(
            self.h_n[L - 1], w_out, b_out, labels, self.logits, self.dlogits, self.dh_top,
            g[self.o_w:self.o_w + C * H].reshape(C, H), g[self.o_b:self.o_b + C], True)
        xs = x.swapaxes(0, 1)
        for k in range(L - 1, -1, -1):
            o_ih, o_hh, o_b, I = (int(a) for a in self.layout[k])
            inp = xs if k == 0 else self.ys[k - 1, :, :, :H]
            dy = self.dxy[(k + 1) & 1, :, :, :H]
            dx = self.dxy[k & 1, :, :, :I]
            rnn_cpu.backward_kernel(
                dy, self.dh_top if k == L - 1 else self.h0, inp, self.h0, self.wih_p[k],
                self.whh_p[k], self.ys[k, :, :, :H], self.lengths, dx, self.dh0,
                g[o_ih:o_ih + H * I].reshape(H, I), g[o_hh:o_hh + H * H].reshape(H, H),
                g[o_b:o_b + H], self.dhbuf, self.dz, self.row, self.part_ih[:, :I],
                self.part_hh, self.part_b, k < L - 1, k > 0)
        adam_kernel(params, g, m, v, step, lr, beta1, beta2, eps)
        return float(loss), correct / B

    def predict(self, params, x):
        """Logits [B,C] (a fresh array)."""
        w_out, b_out = self._forward(params, x)
        dense_xent_kernel(self.h_n[self.L - 1], w_out, b_out, self.no_labels, self.logits,
                          self.logits, self.dh_top, w_out, b_out, False)
        return self.logits.copy()

    def evaluate(self, params, x, labels):
        """(loss, acc) without updating anything."""
        w_out, b_out = self._forward(params, x)
        loss, correct = dense_xent_kernel(self.h_n[self.L - 1], w_out, b_out, labels,
                                          self.logits, self.logits, self.dh_top, w_out, b_out,
                                          False)
        return float(loss), correct / x.shape[0]
