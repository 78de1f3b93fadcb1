"""Property-based tests (hypothesis) of the functional API on every backend.

For random shapes (B, T, H down to 1; T up to 300 with small B and H), random ``lengths`` (0 and
T included), both layouts, float32 and float64, and inputs that are C-contiguous, Fortran-ordered,
strided slices of a NaN-filled buffer (a kernel reading a wrong element gets a NaN and fails),
negatively strided or read-only: every backend's ``rnn_forward`` and ``rnn_backward`` match the
float64 reference within the tolerance table, output by output, and no input is ever modified.

Examples are derandomized (the same examples on every run, so CI is reproducible) and the
corners are pinned with ``@example``. Runs in ~10-20 s on a busy 2-core box once the Numba kernels
are cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import reference as ref
from tests.conftest import BACKENDS
from tests.tolerances import (
    F32_UNDERFLOW_ABS,
    KERNEL_F32_BACKWARD,
    KERNEL_F32_FORWARD,
    KERNEL_F64,
    assert_close,
    rel_err,
)

LAYOUTS = ("c", "fortran", "strided", "reversed")
INPUTS = ("x", "h0", "w_ih", "w_hh", "b", "dy", "dh_n", "lengths")


@dataclass(frozen=True)
class Case:
    """One drawn problem; the arrays are made from ``seed`` (see :func:`arrays`)."""

    B: int
    T: int
    I: int  # noqa: E741 -- the math's name
    H: int
    dtype: str = "float64"
    time_major: bool = False
    lengths: tuple[int, ...] | None = None
    with_h0: bool = True
    with_dy: bool = True
    with_dh_n: bool = True
    layouts: tuple[str, ...] = ("c",) * len(INPUTS)
    read_only: tuple[bool, ...] = (False,) * len(INPUTS)
    seed: int = 0


@st.composite
def cases(draw) -> Case:
    if draw(st.integers(0, 4)) == 0:  # one in five: a long run, kept small across
        B, T, I, H = (draw(st.integers(1, 2)), draw(st.integers(100, 300)),
                      draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    else:
        B, T, I = draw(st.integers(1, 5)), draw(st.integers(1, 12)), draw(st.integers(1, 9))
        H = draw(st.one_of(st.integers(1, 8), st.sampled_from([31, 32, 33, 40])))
    lengths = draw(st.one_of(st.none(), st.tuples(*[st.integers(0, T)] * B)))
    return Case(B, T, I, H, draw(st.sampled_from(["float32", "float64"])), draw(st.booleans()),
                lengths, draw(st.booleans()), draw(st.booleans()), draw(st.booleans()),
                tuple(draw(st.sampled_from(LAYOUTS)) for _ in INPUTS),
                tuple(draw(st.booleans()) for _ in INPUTS), draw(st.integers(0, 2**32 - 1)))


def arrays(c: Case) -> dict[str, np.ndarray | None]:
    """C-contiguous NumPy inputs of ``c`` (float64 before the cast to ``c.dtype``).

    Weights are scaled so the recurrence is contractive (spectral radius of ``W_hh`` ~0.9): the
    float32 rounding then stays bounded over T=300 steps and the float32 tolerances apply."""
    rng = np.random.default_rng(c.seed)
    xy = (c.T, c.B) if c.time_major else (c.B, c.T)
    a = {"x": rng.standard_normal((*xy, c.I)),
         "h0": rng.uniform(-0.9, 0.9, (c.B, c.H)) if c.with_h0 else None,
         "w_ih": rng.standard_normal((c.H, c.I)) / np.sqrt(c.I),
         "w_hh": 0.9 * rng.standard_normal((c.H, c.H)) / np.sqrt(c.H),
         "b": 0.1 * rng.standard_normal(c.H),
         "dy": rng.standard_normal((*xy, c.H)) if c.with_dy else None,
         "dh_n": rng.standard_normal((c.B, c.H)) if c.with_dh_n else None,
         "lengths": None if c.lengths is None else np.array(c.lengths, dtype=np.int64)}
    return {k: v if v is None or k == "lengths" else v.astype(c.dtype) for k, v in a.items()}


def laid_out(a, layout: str, read_only: bool, xp=np):
    """``a`` (NumPy) as an ``xp`` array with the same values in ``layout``."""
    if a is None:
        return None
    if layout == "c" or a.ndim == 0:
        out = xp.array(a)
    elif layout == "fortran":
        out = xp.asfortranarray(xp.array(a))
    elif layout == "strided":  # every other element of a NaN-filled buffer (ints: of -1)
        fill = -1 if a.dtype.kind in "iu" else np.nan
        big = xp.full(tuple(2 * n for n in a.shape), fill, dtype=a.dtype)
        every_other = (slice(None, None, 2),) * a.ndim
        big[every_other] = xp.asarray(a)
        out = big[every_other]
    else:  # "reversed": negative strides along the first axis
        out = xp.array(np.ascontiguousarray(a[::-1]))[::-1]
    if read_only and xp is np:
        out.flags.writeable = False
    return out


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def reference_f64(a: dict, time_major: bool):
    """Forward and backward of the float64 reference on the C-contiguous float64 inputs."""
    f = {k: None if v is None else v.astype(np.float64) if k != "lengths" else v
         for k, v in a.items()}
    B, H = (f["x"].shape[1] if time_major else f["x"].shape[0]), f["w_hh"].shape[0]
    h0 = np.zeros((B, H)) if f["h0"] is None else f["h0"]
    y, h_n = ref.rnn_forward(f["x"], h0, f["w_ih"], f["w_hh"], f["b"], f["lengths"], time_major)
    grads = ref.rnn_backward(f["dy"], f["dh_n"], f["x"], h0, f["w_ih"], f["w_hh"], y,
                             f["lengths"], time_major)
    return (y, h_n), grads


def assert_matches(name: str, r, out, tol: float, f32: bool) -> None:
    """:func:`assert_close`, except that a float32 output of a reference that underflows
    float32 (see ``F32_UNDERFLOW_ABS``) passes on a tiny absolute error."""
    if f32 and np.isfinite(rel_err(r, out)) and np.linalg.norm(r - out) <= F32_UNDERFLOW_ABS:
        print(f"{name}: abs err {np.linalg.norm(r - out):.3e} (float32 underflow floor)")
        return
    assert_close(name, r, out, tol)


@pytest.fixture
def backend_xp(backend, monkeypatch):
    """``(backend name, array module)`` of the test's backend; "cuda-emu" is the cuda backend
    with :mod:`tests.cuda_emu.fake_cupy` as ``cupy``: its Python and its ``.cu`` kernels on the
    CPU emulator (needs g++)."""
    if backend != "cuda-emu":
        yield backend, pytest.importorskip("cupy") if backend == "cuda" else np
        return
    from tests.cuda_emu import fake_cupy

    with fake_cupy.installed(monkeypatch) as cp:
        yield "cuda", cp


@pytest.mark.parametrize("backend", [*BACKENDS, pytest.param("cuda-emu",
                                                             marks=pytest.mark.cuda_emu)])
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(c=cases())
@example(c=Case(1, 1, 1, 1))
@example(c=Case(1, 1, 1, 1, "float32", True, (0,), False, False, False))
@example(c=Case(3, 5, 2, 33, "float32", False, (0, 0, 0), layouts=("strided",) * 8,
                read_only=(True,) * 8, seed=1))
@example(c=Case(1, 300, 1, 1, "float32", True, (300,), layouts=("fortran",) * 8, seed=2))
@example(c=Case(2, 257, 3, 4, "float64", False, (0, 257), layouts=("reversed",) * 8,
                read_only=(True,) * 8, seed=3))
@example(c=Case(4, 7, 9, 31, "float32", True, (7, 0, 3, 1), layouts=LAYOUTS * 2,
                read_only=(True, False) * 4, seed=4))
def test_every_backend_matches_the_reference_and_leaves_inputs_alone(backend_xp, c):
    backend, xp = backend_xp
    if backend == "cuda":
        assume(c.dtype == "float32")  # the CUDA kernels compute in float32
    a = arrays(c)
    given_ = {k: laid_out(a[k], lay, ro, xp)
              for k, lay, ro in zip(INPUTS, c.layouts, c.read_only)}
    originals = {k: None if v is None else to_numpy(v).copy() for k, v in given_.items()}
    (y_ref, h_ref), grads_ref = reference_f64(a, c.time_major)
    f32 = c.dtype == "float32"
    tol_fwd, tol_bwd = (KERNEL_F32_FORWARD, KERNEL_F32_BACKWARD) if f32 else (KERNEL_F64,) * 2
    g = given_

    y, h_n = fastrnn.rnn_forward(g["x"], g["h0"], g["w_ih"], g["w_hh"], g["b"], g["lengths"],
                                 c.time_major, backend=backend)
    assert y.dtype == h_n.dtype == np.dtype(c.dtype)
    for name, r, out in (("y", y_ref, y), ("h_n", h_ref, h_n)):
        assert_matches(name, r, to_numpy(out), tol_fwd, f32)

    # the backward sees the reference's y, so it is checked on its own
    y_in = laid_out(y_ref.astype(c.dtype), c.layouts[0], c.read_only[0], xp)
    grads = fastrnn.rnn_backward(g["dy"], g["dh_n"], g["x"], g["h0"], g["w_ih"], g["w_hh"], y_in,
                                 g["lengths"], c.time_major, backend=backend)
    for name, r, out in zip(("dx", "dh0", "dw_ih", "dw_hh", "db"), grads_ref, grads):
        assert out.dtype == np.dtype(c.dtype), name
        assert_matches(name, r, to_numpy(out), tol_bwd, f32)

    for k, v in given_.items():
        if v is not None:
            np.testing.assert_array_equal(to_numpy(v), originals[k], err_msg=f"{k} was modified")
    np.testing.assert_array_equal(to_numpy(y_in), y_ref.astype(c.dtype), err_msg="y was modified")
