"""A classifier training step on the GEMM strategy (``rnn_gemm``): the large shapes' counterpart of
``train_cpu.ClassifierStep``, with the same constructor and methods, and the same math and
guarantees (``fastrnn/backends/__init__.py``: the update guard, the norm in float64).

Per step: each layer forward (``rnn_gemm.forward_kernel``: one GEMM for the input projection, one
per step for the recurrence), the head (``train_cpu.dense_xent``), each layer backward
(``rnn_gemm.backward_kernel``, writing its weight gradients into one flat gradient buffer laid out
like the parameters), the norm (``train_cpu.sum_squares``) and Adam (``train_cpu.adam_kernel``,
after a copy of params, m and v that is put back when a new value is not finite). Activations
stay batch-major ([B,T,H], x's layout): no copy of x, and the classifier reads one row per
sequence. Bits: see ``rnn_gemm`` (the same for the same inputs and thread count).

Check: ``pytest tests/test_kernels_cpu.py -k gemm``.
"""

from __future__ import annotations

import math

import numpy as np

from . import rnn_gemm, train_cpu


class ClassifierStep:
    """Workspaces for one classifier shape at one (batch, steps); arguments as
    ``train_cpu.ClassifierStep``."""

    def __init__(self, layout, out_offsets, hidden_size: int, num_classes: int, num_params: int,
                 batch: int, steps: int, dtype, *, relu: bool = False):
        self.relu = bool(relu)
        self.layout = np.asarray(layout, np.int64)
        self.out_offsets = tuple(int(o) for o in out_offsets)
        H, C, B, T = hidden_size, num_classes, batch, steps
        self.H, self.C = H, C
        dt = self.dtype = np.dtype(dtype)
        L = self.layout.shape[0]
        self.ys = np.zeros((L, B, T, H), dt)     # each layer's output
        self.dxy = np.zeros((3, B, T, H), dt)    # dx of layer k = dy of layer k-1, alternating;
        #                                          dxy[2] stays zero (the top layer's dy)
        self.h_n = np.zeros((B, H), dt)
        self.zeros = np.zeros((B, H), dt)        # initial state; dh_n below the top layer
        self.dh0 = np.zeros((B, H), dt)
        self.lengths = np.full(B, T, np.int32)
        self.grad = np.zeros(num_params, dt)
        self.saved = np.zeros((3, num_params), dt)
        self.ws = (np.empty((B, T, H), dt), np.empty((B, T, H), dt),
                   *(np.empty((B, H), dt) for _ in range(3)))  # backward: dz, hp, dh, g, dhw
        self.fws = (np.empty((2, B, H), dt), np.empty((B, H), dt))  # forward: hbuf, hw

    def _layer(self, flat, k):
        o_ih, o_hh, o_b, I = (int(a) for a in self.layout[k])
        H = self.H
        return (flat[o_ih:o_ih + H * I].reshape(H, I), flat[o_hh:o_hh + H * H].reshape(H, H),
                flat[o_b:o_b + H])

    def _head(self, flat):
        o_w, o_b = self.out_offsets
        return flat[o_w:o_w + self.C * self.H].reshape(self.C, self.H), flat[o_b:o_b + self.C]

    def _forward(self, params, x):
        """Every layer forward; returns the top layer's last output [B,H] and x as used."""
        x = np.ascontiguousarray(x, self.dtype)
        for k in range(self.layout.shape[0]):
            inp = x if k == 0 else self.ys[k - 1]
            w_ih, w_hh, b = self._layer(params, k)
            rnn_gemm.forward_kernel(inp.reshape(-1, inp.shape[2]), w_ih, w_hh, b, self.lengths,
                                    self.zeros, self.ys[k], False, self.h_n, *self.fws,
                                    self.relu)
        return self.ys[-1][:, -1], x

    def train_step(self, params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm):
        """As ``train_cpu.ClassifierStep.train_step``: ``(loss, acc, grad_norm, applied)``."""
        top, x = self._forward(params, x)
        w_out, b_out = self._head(params)
        with np.errstate(over="ignore", invalid="ignore"):
            loss, acc, _, _, dh, dw, db = train_cpu.dense_xent(np.ascontiguousarray(top), w_out,
                                                               b_out, labels)
        g_w, g_b = self._head(self.grad)
        g_w[...], g_b[...] = dw, db
        L = self.layout.shape[0]
        for k in range(L - 1, -1, -1):
            inp = x if k == 0 else self.ys[k - 1]
            w_ih, w_hh, _ = self._layer(params, k)
            g_ih, g_hh, g_bk = self._layer(self.grad, k)
            dx = self.dxy[k & 1] if k > 0 else None
            rnn_gemm.backward_kernel(
                self.dxy[2] if k == L - 1 else self.dxy[(k + 1) & 1],
                dh if k == L - 1 else self.zeros, inp.reshape(-1, inp.shape[2]), self.zeros,
                w_ih, w_hh, self.ys[k], self.lengths, False,
                dx.reshape(-1, self.H) if dx is not None else np.empty((0, inp.shape[2]),
                                                                        self.dtype),
                self.dh0, g_ih, g_hh, g_bk, *self.ws, self.relu)
        norm = float(self.dtype.type(math.sqrt(train_cpu.sum_squares(self.grad))))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return float(loss), acc, norm, False
        scale = clip_norm / max(norm, clip_norm) if clip_norm > 0 else 1.0
        self.saved[0], self.saved[1], self.saved[2] = params, m, v
        if not train_cpu.adam_kernel(params, self.grad, m, v, step, lr, beta1, beta2, eps,
                                     scale):
            params[:], m[:], v[:] = self.saved  # an overflowing update: every bit back
            return float(loss), acc, norm, False
        return float(loss), acc, norm, True

    def predict(self, params, x):
        """Logits [B,C] (a fresh array)."""
        top, _ = self._forward(params, x)
        return train_cpu.dense_forward(np.ascontiguousarray(top), *self._head(params))

    def evaluate(self, params, x, labels):
        """(loss, acc) without updating anything."""
        top, _ = self._forward(params, x)
        with np.errstate(over="ignore", invalid="ignore"):
            loss, acc = train_cpu.dense_xent(np.ascontiguousarray(top), *self._head(params),
                                             labels)[:2]
        return float(loss), acc
