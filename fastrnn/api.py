"""The functional API: one tanh RNN layer forward and backward, on NumPy (CPU) or CuPy (GPU) arrays.

The array type picks the device; ``backend="reference"`` selects the NumPy reference on the CPU.
Arguments are validated here, once; kernels check nothing.
"""

from __future__ import annotations

import numpy as np

from fastrnn import _validate as check
from fastrnn.backends import array_device, get_backend


def _xp(x):
    if array_device(x) == "cuda":
        try:
            import cupy
        except ImportError as e:  # a CuPy-looking object without CuPy: say so, naming x
            raise TypeError(f"x: expected a NumPy array, or a CuPy array with CuPy installed, "
                            f"got {check._describe(x)} ({type(e).__name__}: {e})") from e
        return cupy
    return np


def _pick_backend(x, backend: str | None):
    return backend_for(array_device(x), backend, "x")


def backend_for(device: str, backend: str | None, like: str):
    """The backend named ``backend`` (None: the one of ``device``), which must run on ``device``
    (``"cpu"`` or ``"cuda"``), where the caller's argument ``like`` is."""
    if backend is None:
        return get_backend(device)
    allowed = ("cpu", "reference") if device == "cpu" else ("cuda",)
    if backend not in allowed:
        check.fail("backend", f"one of {allowed} for {like} on the {device} (or None)",
                   repr(backend))
    return get_backend(backend)


def _check_layer(x, h0, w_ih, w_hh, b, lengths, time_major, has_bias=True, out_arrays=2):
    """Validate one layer's arguments; returns them normalised plus (xp, B, T, H).

    Every shape, dtype and size is checked before anything is copied or allocated, so a call too
    large for 32-bit kernel indices or for the device's memory is refused up front.
    ``out_arrays``: how many ``[B,T,*]`` arrays the call allocates (outputs, zero gradients, the
    backend's workspaces), for that memory estimate; each counts as ``max(I,H)`` rounded up to
    the CPU kernels' 32 lanes (their time-major copies are padded so: ``kernels/rnn_cpu.py``).
    """
    if not isinstance(time_major, bool):
        raise TypeError(f"time_major: expected a bool, got {time_major!r}")
    xp = _xp(x)
    x = check.array("x", x, xp, 3, contiguous=False)
    dt = x.dtype
    T, B, I = x.shape if time_major else (x.shape[1], x.shape[0], x.shape[2])
    layout = "[T,B,I]" if time_major else "[B,T,I]"
    for name, n in (("B", B), ("T", T), ("I", I)):
        if n < 1:
            check.fail("x", f"shape {layout} with {name} >= 1", f"shape {tuple(x.shape)}")
    w_hh = check.array("w_hh", w_hh, xp, 2, dt, contiguous=False)
    H = w_hh.shape[0]
    if H < 1:
        check.fail("w_hh", "shape [H,H] with H >= 1", f"shape {tuple(w_hh.shape)}")
    check.shape("w_hh", w_hh, (H, H), "[H,H]")
    w_ih = check.array("w_ih", w_ih, xp, 2, dt, contiguous=False)
    check.shape("w_ih", w_ih, (H, I), "[H,I]")
    if has_bias:  # rnn_backward takes no bias
        b = check.array("b", b, xp, 1, dt, contiguous=False)
        check.shape("b", b, (H,), "[H]")
    if h0 is not None:
        h0 = check.array("h0", h0, xp, 2, dt, contiguous=False)
        check.shape("h0", h0, (B, H), "[B,H]")
    sizes = f"B={B}, T={T}, I={I}, H={H}"
    check.indexable("x", B * T * max(I, H), "B*T*max(I,H)", sizes)
    # inputs copied when not contiguous (at most x and the weights), plus the call's own arrays
    lanes = -(-max(I, H) // 32) * 32
    elements = B * T * (I + out_arrays * lanes) + 2 * H * (I + H) + 4 * B * H
    check.memory("x", elements * dt.itemsize, xp, f"{sizes} ({dt})")
    lengths = _ready(xp, check.lengths("lengths", lengths, xp, B, T))
    x, w_hh, w_ih = _ready(xp, x), _ready(xp, w_hh), _ready(xp, w_ih)
    if has_bias:
        b = _ready(xp, b)
    h0 = xp.zeros((B, H), dtype=dt) if h0 is None else _ready(xp, h0)
    return x, h0, w_ih, w_hh, b, lengths, (xp, B, T, H)


def _ready(xp, a):
    """``a`` C-contiguous and, on NumPy, writeable: Numba types a read-only array apart, so each
    pattern of read-only arguments would compile the kernels again (8-16 s each); a copy of a
    read-only input costs far less than the kernel reading it."""
    a = xp.ascontiguousarray(a)
    if xp is np and not a.flags.writeable:
        a = a.copy()
    return a


def rnn_forward(x, h0, w_ih, w_hh, b, lengths=None, time_major=False, *, nonlinearity="tanh",
                backend=None):
    """One RNN layer over all T steps: ``h_t = f(W_ih x_t + W_hh h_{t-1} + b)``, f = tanh or
    relu.

    Parameters
    ----------
    x : array [B,T,I] (or [T,B,I] when ``time_major``), float32 or float64
        NumPy array: runs on the CPU; CuPy array: on the GPU. Every other array must match its
        type and dtype.
    h0 : array [B,H] or None
        Initial state; None means zeros.
    w_ih : array [H,I]
    w_hh : array [H,H]
    b : array [H]
        One bias (PyTorch's ``b_ih + b_hh``).
    lengths : integer array [B] or None
        TensorFlow's ``sequence_length``: for ``t >= lengths[b]`` the output is zero and the state
        is carried, so ``h_n[b]`` is the state at ``t = lengths[b]-1`` (``h0[b]`` for length 0).
        None means every sequence runs all T steps.
    time_major : bool
        Layout of ``x`` and ``y``.
    nonlinearity : {"tanh", "relu"}
        f, as ``torch.nn.RNN``'s ``nonlinearity``.
    backend : {None, "cpu", "reference", "cuda"}
        None picks by the array type; "reference" runs the NumPy reference.

    Returns
    -------
    y : array [B,T,H] (or [T,B,H])
    h_n : array [B,H]
    """
    check.nonlinearity("nonlinearity", nonlinearity)
    x, h0, w_ih, w_hh, b, lengths, _ = _check_layer(x, h0, w_ih, w_hh, b, lengths, time_major)
    return _pick_backend(x, backend).rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major,
                                                 nonlinearity)


def _step_ready(x, h, w_ih, w_hh, b) -> bool:
    """Whether one step's arguments are NumPy arrays that the CPU kernel takes as they are
    (one float dtype, C-contiguous, consistent shapes): the streaming fast path's whole check,
    ~1 us; anything else goes through the full checks, which name what is wrong."""
    t = np.ndarray
    if not (type(x) is t and type(h) is t and type(w_ih) is t and type(w_hh) is t
            and type(b) is t and x.ndim == 2 and h.ndim == 2):
        return False
    dt = x.dtype
    (B, I), H = x.shape, h.shape[1]
    return (dt in check.FLOAT_DTYPES and h.dtype == dt and w_ih.dtype == dt
            and w_hh.dtype == dt and b.dtype == dt and B >= 1 and I >= 1 and H >= 1
            and h.shape[0] == B and w_hh.shape == (H, H) and w_ih.shape == (H, I)
            and b.shape == (H,) and x.flags.c_contiguous and h.flags.c_contiguous
            and w_ih.flags.c_contiguous and w_hh.flags.c_contiguous and b.flags.c_contiguous)


def fast_step(x, h, w_ih, w_hh, b, nonlinearity="tanh"):
    """:func:`rnn_step` on the CPU when its fast path takes these arguments, else None."""
    if not ((nonlinearity == "tanh" or nonlinearity == "relu")
            and _step_ready(x, h, w_ih, w_hh, b)):
        return None
    return get_backend("cpu").rnn_step(x, h, w_ih, w_hh, b, nonlinearity)


def rnn_step(x, h, w_ih, w_hh, b, *, nonlinearity="tanh", backend=None):
    """One step of one layer, for online use (a stream of frames): state in, state out.

    ``h_new = f(W_ih x + W_hh h + b)`` (f = tanh or relu), forward only. On NumPy arrays of one
    dtype, already C-contiguous, the call costs a few microseconds: its checks are a handful of
    comparisons and the CPU backend runs one Numba call (``kernels/rnn_gemm.py``'s
    ``step_kernel``).

    Parameters
    ----------
    x : array [B,I], float32 or float64 (NumPy: CPU; CuPy: GPU)
    h : array [B,H] or None
        The state before the step; None means zeros.
    w_ih : array [H,I]    w_hh : array [H,H]    b : array [H]
    nonlinearity, backend : as in :func:`rnn_forward`

    Returns
    -------
    h_new : array [B,H] (a new array; also the step's output)
    """
    h_new = fast_step(x, h, w_ih, w_hh, b, nonlinearity) if backend is None else None
    if h_new is not None:
        return h_new
    check.nonlinearity("nonlinearity", nonlinearity)
    xp = _xp(x)
    x2 = check.array("x", x, xp, 2, contiguous=False)
    if 0 in x2.shape:
        check.fail("x", "shape [B,I] with B >= 1 and I >= 1", f"shape {tuple(x2.shape)}")
    if h is not None:  # checked here so that errors name it h, not rnn_forward's h0
        h = check.array("h", h, xp, 2, x2.dtype, contiguous=False)
        w_hh = check.array("w_hh", w_hh, xp, 2, x2.dtype, contiguous=False)
        check.shape("h", h, (x2.shape[0], w_hh.shape[0]), "[B,H]")
    x3, h, w_ih, w_hh, b, lengths, _ = _check_layer(x2[:, None, :], h, w_ih, w_hh, b, None,
                                                    False)
    chosen = _pick_backend(x3, backend)
    if chosen.rnn_step is not None:  # x3: a C-contiguous [B,1,I]
        return chosen.rnn_step(x3[:, 0], h, w_ih, w_hh, b, nonlinearity)
    return chosen.rnn_forward(x3, h, w_ih, w_hh, b, lengths, False, nonlinearity)[1]


def rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths=None, time_major=False, *,
                 nonlinearity="tanh", backend=None):
    """BPTT of :func:`rnn_forward`, given upstream gradients on every output and the final state.

    Parameters
    ----------
    dy : array like ``y`` or None
        Gradient on the outputs (None: zeros). Ignored past each sequence's length.
    dh_n : array [B,H] or None
        Gradient on the final state (None: zeros).
    x, h0, w_ih, w_hh, lengths, time_major
        As given to :func:`rnn_forward`.
    y : array like ``x`` with last axis H
        The forward's output; f' is taken from it: ``1 - y*y`` (tanh), ``y > 0`` (relu).
    nonlinearity, backend : as in :func:`rnn_forward`

    Returns
    -------
    dx : array like ``x``
    dh0 : array [B,H]
    dw_ih : array [H,I]
    dw_hh : array [H,H]
    db : array [H]
    """
    check.nonlinearity("nonlinearity", nonlinearity)
    # y (copied), dy (given or zeros), dx, and the CPU kernels' padded y, dy, dz and dx: 7 arrays
    x, h0, w_ih, w_hh, _, lengths, (xp, B, T, H) = _check_layer(
        x, h0, w_ih, w_hh, None, lengths, time_major, has_bias=False, out_arrays=7)
    out_shape = (T, B, H) if time_major else (B, T, H)
    meaning = "[T,B,H]" if time_major else "[B,T,H]"
    y = check.array("y", y, xp, 3, x.dtype, contiguous=False)
    check.shape("y", y, out_shape, meaning)
    if dy is not None:
        dy = check.array("dy", dy, xp, 3, x.dtype, contiguous=False)
        check.shape("dy", dy, out_shape, meaning)
    if dh_n is not None:
        dh_n = check.array("dh_n", dh_n, xp, 2, x.dtype, contiguous=False)
        check.shape("dh_n", dh_n, (B, H), "[B,H]")
    y = _ready(xp, y)
    dy = xp.zeros(out_shape, dtype=x.dtype) if dy is None else _ready(xp, dy)
    dh_n = xp.zeros((B, H), dtype=x.dtype) if dh_n is None else _ready(xp, dh_n)
    return _pick_backend(x, backend).rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths,
                                                  time_major, nonlinearity)
