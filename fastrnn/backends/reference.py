"""The NumPy reference as a backend: slow, plain, and the baseline every benchmark compares to."""

from __future__ import annotations

import numpy as np

from fastrnn import reference as ref
from fastrnn.backends import Backend
from fastrnn.params import ModelSpec, layers, views


class _ReferenceClassifier:
    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def _unpack(self, params):
        v = views(params, self.spec)
        return layers(params, self.spec), v["w_out"], v["b_out"]

    def train_step(self, params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm):
        lys, w_out, b_out = self._unpack(params)
        # NaN or inf in the batch or the weights is reported through loss and norm, not warned
        with np.errstate(over="ignore", invalid="ignore"):
            loss, acc, layer_grads, dense_grads = ref.classifier_grads(
                x, labels, lys, w_out, b_out, nonlinearity=self.spec.nonlinearity)
            grads = [g for lg in layer_grads for g in lg] + list(dense_grads)  # params' order
            clipped, norm = ref.clip_by_global_norm(grads, clip_norm)
            # judged and reported in the parameters' dtype (the loss already is), as the kernels
            norm = float(params.dtype.type(norm))
        if not (np.isfinite(loss) and np.isfinite(norm)):
            return float(loss), acc, norm, False
        # the update on copies, kept only if every new value is finite
        grad = np.concatenate([g.ravel() for g in clipped]).astype(params.dtype)
        p_new, m_new, v_new = params.copy(), m.copy(), v.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            ref.adam_update(p_new, grad, m_new, v_new, step, lr, beta1, beta2, eps)
        if not all(np.isfinite(a).all() for a in (p_new, m_new, v_new)):
            return float(loss), acc, norm, False
        params[...], m[...], v[...] = p_new, m_new, v_new
        return float(loss), acc, norm, True

    def evaluate(self, params, x, labels):
        loss, acc, _ = ref.softmax_xent(self.predict(params, x), labels)
        return float(loss), acc

    def predict(self, params, x):
        lys, w_out, b_out = self._unpack(params)
        return ref.classifier_forward(x, lys, w_out, b_out,
                                      nonlinearity=self.spec.nonlinearity)[0]


BACKEND = Backend("reference", ref.rnn_forward, ref.rnn_backward, _ReferenceClassifier)
