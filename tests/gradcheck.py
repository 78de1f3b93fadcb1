"""Central finite differences, the yardstick for every gradient the reference returns."""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def numeric_grad(f, a: np.ndarray) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to each element of ``a``.

    ``a`` is perturbed in place (and restored), so ``f`` must read it.
    """
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + EPS
        up = f()
        a[i] = old - EPS
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * EPS)
    return g


def assert_layer_grads_match(f, layers, grads) -> None:
    """Each layer's ``(dw_ih, dw_hh, db)`` in ``grads`` against central differences of the
    scalar ``f()`` with respect to the matching ``(w_ih, w_hh, b)`` of ``layers``."""
    from tests.tolerances import FINITE_DIFF, assert_close

    for k, (layer, g) in enumerate(zip(layers, grads, strict=True)):
        for name, a, ga in zip(("dw_ih", "dw_hh", "db"), layer, g, strict=True):
            assert_close(f"{name}[{k}]", numeric_grad(f, a), ga, FINITE_DIFF)
