"""The CPU backend: fastrnn's Numba kernels, on one of two strategies chosen per shape.

``fused`` (``fastrnn.kernels.rnn_cpu`` / ``train_cpu``): every product inside fastrnn's own
register-blocked kernels, one parallel call per layer or per whole training step; best where the
matrices are small (the showcase: H = 31). ``gemm`` (``rnn_gemm`` / ``train_gemm``): BLAS for
every matrix product (the input projection and the weight gradients over all steps at once, one
``[B,H] x [H,H]`` product per step) and Numba for the element-wise work; best for large hidden
sizes, and for small batches, which the fused kernels' 8-row blocks would mostly waste.
:func:`choose` picks one per call from the batch, the hidden size and the vector width of the CPU
Numba compiles for (a measured crossover, below); ``FASTRNN_CPU_STRATEGY=fused|gemm`` forces one
everywhere (functional API, cells, ``fastrnn.torch.RNN``, the classifier).

Arrays arrive validated (see :mod:`fastrnn.backends`). On the fused strategy a classifier's
training step, evaluate and predict are each one Numba call (``train_cpu.step_kernel``). Kernels
compile on first use for each dtype (one layout each; cached on disk; see
``kernels/_numba_env.py`` for the Numba settings and the threading layer: OpenMP, with a serial
fallback in forked children). Results are bitwise reproducible run to run on both strategies; the
fused one also for any number of threads and in a forked child (the GEMM one leaves the split of
its products among threads to BLAS).
A step whose loss or gradient norm is not finite leaves params, m and v untouched.
"""

from __future__ import annotations

import os

import numpy as np

# Imported here, not in fastrnn/__init__: loading this module is what pulls in Numba.
from fastrnn.backends import Backend, ShapeCache
from fastrnn.kernels import rnn_cpu, rnn_gemm, train_cpu, train_gemm
from fastrnn.params import ModelSpec

#: the environment variable that forces a strategy, and its values
STRATEGY_ENV = "FASTRNN_CPU_STRATEGY"
STRATEGIES = ("auto", "fused", "gemm")
#: per vector width (bits) of the compile target: the hidden sizes from which the GEMM strategy
#: runs (inference: a forward alone, training: a forward and its backward) faster than the fused
#: one at batches of a multiple of the fused tile's rows, with the machine's own BLAS (``python
#: bench/crossover.py``; README, "CPU strategies"). 128 bits (SSE, NEON) is not measured: the
#: fused kernels run the AVX2 tile there, on registers half as wide, so it is lowest.
CROSSOVER_H = {512: (1024, 512), 256: (512, 256), 128: (128, 128)}
#: per vector width, as CROSSOVER_H but at batch 1, where the GEMM strategy multiplies by row
#: dots on one core (``rnn_gemm._matmul_t``) rather than BLAS: a classifier step at I = H, T =
#: 100, strategies alternating (Zen 5; AVX2 build on it): inference GEMM 1.3-1.5x faster from H =
#: 40 on both builds (H = 32: even); training even at H = 40-64 and 1.1-1.3x faster from H = 96
#: with AVX-512, 1.2-1.3x faster from H = 40 on the AVX2 build
BATCH1_CROSSOVER_H = {512: (40, 64), 256: (40, 40), 128: (40, 40)}
#: the vector width of the compile target (bits), as the kernels see it
vector_bits = rnn_cpu.vector_bits


def choose(batch: int, hidden: int, train: bool) -> str:
    """``"fused"`` or ``"gemm"`` for a layer or classifier of this batch and hidden size, for a
    forward alone (``train=False``) or a forward and its backward (``train=True``: a backward,
    a training step).

    ``FASTRNN_CPU_STRATEGY`` if set to one of them; else a cost model with two measured
    parameters per vector width: the fused kernels compute every row of their tiles of
    ``rnn_cpu.ROWS`` rows (8 on AVX-512: a batch of 1 costs as much as one of 8), GEMMs only the
    batch's rows, so GEMM wins from ``CROSSOVER_H[bits][train] * batch / (batch rounded up to
    ROWS)`` on; at batch 1 from ``BATCH1_CROSSOVER_H[bits][train]``.
    """
    asked = os.environ.get(STRATEGY_ENV, "auto")
    if asked not in STRATEGIES:
        raise ValueError(f"{STRATEGY_ENV}: expected one of {STRATEGIES}, got {asked!r}")
    if asked != "auto":
        return asked
    if batch == 1:
        return "gemm" if hidden >= BATCH1_CROSSOVER_H[vector_bits()][train] else "fused"
    rows = -(-batch // rnn_cpu.ROWS) * rnn_cpu.ROWS  # what the fused kernels compute
    return "gemm" if hidden * rows >= CROSSOVER_H[vector_bits()][train] * batch else "fused"


def rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity="tanh"):
    B = h0.shape[0]
    kernels = rnn_gemm if choose(B, w_hh.shape[0], False) == "gemm" else rnn_cpu
    return kernels.rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity)


def rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major, nonlinearity="tanh"):
    B = h0.shape[0]
    kernels = rnn_gemm if choose(B, w_hh.shape[0], True) == "gemm" else rnn_cpu
    return kernels.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major,
                                nonlinearity)


def _layout(spec: ModelSpec):
    """``([L,4] offsets of w_ih, w_hh, b and I_k per layer, (offset of w_out, of b_out))``."""
    off = {name: o for name, _, o in spec.offsets()}
    rows = [(off[f"w_ih_l{k}"], off[f"w_hh_l{k}"], off[f"b_l{k}"],
             spec.input_size if k == 0 else spec.hidden_size) for k in range(spec.num_layers)]
    return np.array(rows, dtype=np.int64), (off["w_out"], off["b_out"])


class _CpuClassifier:
    """The fused classifier step; one set of workspaces per (batch, steps, dtype), the few most
    recently used kept for reuse (:class:`~fastrnn.backends.ShapeCache`)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._layout, self._out = _layout(spec)
        self._steps: ShapeCache = ShapeCache()  # train_cpu's or train_gemm's ClassifierStep

    def _step(self, x, train: bool, shard=None):
        s = self.spec
        # a data-parallel step (shard) runs fused: its chunks and their fixed-order sum are what
        # make N processes give one process's bits
        strategy = "fused" if shard else choose(x.shape[0], s.hidden_size, train)
        step = train_gemm.ClassifierStep if strategy == "gemm" else train_cpu.ClassifierStep
        extra = (shard,) if shard else ()
        return self._steps.get(
            (x.shape[0], x.shape[1], x.dtype.str, strategy, shard),
            lambda: step(self._layout, self._out, s.hidden_size, s.num_classes, s.size,
                         x.shape[0], x.shape[1], x.dtype, *extra,
                         relu=s.nonlinearity == "relu"))

    def train_step(self, params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm,
                   shard=None, gather=None):
        """``shard``, ``gather``: a data-parallel step (``train_cpu.ClassifierStep``)."""
        # the norm, the finiteness check and the clipping happen inside the one fused call
        extra = (gather,) if shard else ()
        return self._step(x, True, shard).train_step(params, m, v, step, x, labels, lr, beta1,
                                                     beta2, eps, clip_norm, *extra)

    def evaluate(self, params, x, labels):
        return self._step(x, False).evaluate(params, x, labels)

    def predict(self, params, x):
        return self._step(x, False).predict(params, x)


BACKEND = Backend("cpu", rnn_forward, rnn_backward, _CpuClassifier, rnn_gemm.rnn_step)
