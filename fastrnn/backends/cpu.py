"""The CPU backend: fastrnn's Numba kernels (``fastrnn.kernels.rnn_cpu`` / ``train_cpu``).

Arrays arrive validated (see :mod:`fastrnn.backends`). A classifier's training step, evaluate and
predict are each one Numba call (``train_cpu.step_kernel``). Kernels compile on first use for each
dtype (one layout each; cached on disk; see ``kernels/_numba_env.py`` for the Numba settings and
the threading layer: OpenMP, with a serial fallback in forked children). Results are bitwise
reproducible, run to run, for any number of threads, and in a forked child.
A step whose loss or gradient norm is not finite leaves params, m and v untouched.
"""

from __future__ import annotations

import numpy as np

# Imported here, not in fastrnn/__init__: loading this module is what pulls in Numba.
from fastrnn.backends import Backend, ShapeCache
from fastrnn.kernels import rnn_cpu, train_cpu
from fastrnn.params import ModelSpec


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
        self._steps: ShapeCache[train_cpu.ClassifierStep] = ShapeCache()

    def _step(self, x) -> train_cpu.ClassifierStep:
        s = self.spec
        return self._steps.get(
            (x.shape[0], x.shape[1], x.dtype.str),
            lambda: train_cpu.ClassifierStep(self._layout, self._out, s.hidden_size,
                                             s.num_classes, s.size, x.shape[0], x.shape[1],
                                             x.dtype))

    def train_step(self, params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm):
        # the norm, the finiteness check and the clipping happen inside the one fused call
        return self._step(x).train_step(params, m, v, step, x, labels, lr, beta1, beta2, eps,
                                        clip_norm)

    def evaluate(self, params, x, labels):
        return self._step(x).evaluate(params, x, labels)

    def predict(self, params, x):
        return self._step(x).predict(params, x)


BACKEND = Backend("cpu", rnn_cpu.rnn_forward, rnn_cpu.rnn_backward, _CpuClassifier)
