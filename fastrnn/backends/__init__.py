"""Backends chosen in one place: a device name or an array's type picks the kernels.

Every backend offers the same three things, all on arrays that :mod:`fastrnn.api` has already
validated (dtype float32 or float64 throughout, C-contiguous in the layout given by ``time_major``,
``h0``/``dh_n`` always arrays, ``lengths`` always an int32 ``[B]`` array, ``dy`` always an array):

``rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major) -> (y, h_n)``
``rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major) -> (dx, dh0, dw_ih, dw_hh, db)``
``classifier(spec: ModelSpec) -> ClassifierKernels`` with, on flat buffers laid out by
:mod:`fastrnn.params`:
    ``train_step(params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm)
    -> (loss, acc, grad_norm)``
        forward, xent, BPTT, dense grads and Adam; ``step`` is the 1-based Adam step;
        ``x [B,T,I]`` batch-major; ``labels [B]`` int64. ``grad_norm`` is the global L2 norm of
        all gradients (squares summed in float64 in a fixed order, reported in the parameters'
        dtype, so a float32 norm past 3.4e38 counts as inf). If ``loss`` or ``grad_norm`` is not
        finite,
        nothing is written: ``params``, ``m``, ``v`` stay bit for bit as they were. Otherwise
        they are updated in place, with the gradients first scaled by
        ``clip_norm / max(grad_norm, clip_norm)`` when ``clip_norm > 0`` (TF's
        ``clip_by_global_norm``; 0 means no clipping).
    ``evaluate(params, x, labels) -> (loss, acc)`` and ``predict(params, x) -> logits [B,C]``.

``import fastrnn`` imports no backend: each is loaded on first use, so CuPy is optional.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache


@dataclass
class Backend:
    """One backend: a name and its three entry points (signatures in the module docstring)."""

    name: str
    rnn_forward: Callable
    rnn_backward: Callable
    classifier: Callable  # ModelSpec -> object with train_step / evaluate / predict

#: device name -> module defining ``BACKEND``
_MODULES = {
    "reference": "fastrnn.backends.reference",
    "cpu": "fastrnn.backends.cpu",
    "cuda": "fastrnn.backends.cuda",
}

BACKENDS = tuple(_MODULES)


@cache
def get_backend(name: str):
    """The backend object for ``name`` (one of :data:`BACKENDS`)."""
    if name not in _MODULES:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    return importlib.import_module(_MODULES[name]).BACKEND


def array_device(a) -> str:
    """``"cuda"`` for a CuPy array, ``"cpu"`` for anything NumPy accepts."""
    return "cuda" if type(a).__module__.startswith("cupy") else "cpu"
