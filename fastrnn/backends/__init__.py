"""Backends chosen in one place: a device name or an array's type picks the kernels.

Every backend offers the same three things, all on arrays that :mod:`fastrnn.api` has already
validated (dtype float32 or float64 throughout, C-contiguous in the layout given by ``time_major``,
``h0``/``dh_n`` always arrays, ``lengths`` always an int32 ``[B]`` array, ``dy`` always an array):

``rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity) -> (y, h_n)``
``rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major, nonlinearity)
-> (dx, dh0, dw_ih, dw_hh, db)``
``rnn_step(x [B,I], h [B,H], w_ih, w_hh, b, nonlinearity) -> h_new [B,H]`` (optional; one
step, forward only); ``nonlinearity`` is "tanh" or "relu" (checked)
``classifier(spec: ModelSpec) -> ClassifierKernels`` with, on flat buffers laid out by
:mod:`fastrnn.params`:
    ``train_step(params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm)
    -> (loss, acc, grad_norm, applied)``
        forward, xent, BPTT, dense grads and Adam; ``step`` is the 1-based Adam step;
        ``x [B,T,I]`` batch-major; ``labels [B]`` int64. ``grad_norm`` is the global L2 norm of
        all gradients (squares summed in float64 in a fixed order, reported in the parameters'
        dtype, so a float32 norm past 3.4e38 counts as inf). If ``loss`` or ``grad_norm`` is not
        finite, or a new parameter or moment would be NaN or inf (an lr near the dtype's largest
        value, a float32 gradient whose square overflows), nothing changes: ``params``,
        ``m``, ``v`` end bit for bit as they were (the CPU kernel puts back a copy) and
        ``applied`` is False. Otherwise they are updated in place, with the gradients first
        scaled by ``clip_norm / max(grad_norm, clip_norm)`` when ``clip_norm > 0`` (TF's
        ``clip_by_global_norm``; 0 means no clipping), and ``applied`` is True.
    ``evaluate(params, x, labels) -> (loss, acc)`` and ``predict(params, x) -> logits [B,C]``.

``import fastrnn`` imports no backend: each is loaded on first use, so CuPy is optional.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cache
from typing import Generic, TypeVar

W = TypeVar("W")


@dataclass
class Backend:
    """One backend: a name and its three entry points (signatures in the module docstring)."""

    name: str
    rnn_forward: Callable
    rnn_backward: Callable
    classifier: Callable  # ModelSpec -> object with train_step / evaluate / predict
    rnn_step: Callable | None = None  # (x, h, w_ih, w_hh, b, f) -> h_new; None: rnn_forward

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


class ShapeCache(Generic[W]):
    """A classifier's workspaces per batch shape, the ``keep`` most recently used.

    A training loop uses a few shapes (its batch, a last partial batch, an evaluation batch) and
    reuses their workspaces with no new allocation; a caller cycling through more shapes (say,
    inference at many sequence lengths) holds at most ``keep`` workspaces instead of one per
    shape ever seen. The least recently used one is dropped before a new one is made, so at most
    ``keep`` exist at any time.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._items: OrderedDict[Hashable, W] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], W]) -> W:
        """The workspace for ``key``, made by ``make()`` when it is not held."""
        item = self._items.get(key)
        if item is None:
            if len(self._items) >= self.keep:
                self._items.popitem(last=False)
            item = self._items[key] = make()
        else:
            self._items.move_to_end(key)
        return item

    def __getitem__(self, key: Hashable) -> W:
        """The workspace held for ``key`` (KeyError if none), leaving the order unchanged."""
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)


def array_device(a) -> str:
    """``"cuda"`` for a CuPy array, ``"cpu"`` for anything NumPy accepts."""
    return "cuda" if type(a).__module__.startswith("cupy") else "cpu"
