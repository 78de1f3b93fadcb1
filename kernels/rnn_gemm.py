"""The GEMM strategy for one RNN layer (tanh or relu) on the CPU: BLAS for every matrix product,
Numba for the recurrence's element-wise work: the strategy of large hidden sizes and of batch 1
(``fastrnn/backends/cpu.py``'s ``choose`` picks it).

What it computes is ``rnn_cpu``'s math (``fastrnn/reference.py``, same positional signature):

    forward   y_t = x_t W_ih^T + b            one GEMM [T*B,I] x [I,H] for all steps, first
              y_t = f(y_t + h_{t-1} W_hh^T)    per step: one GEMM [B,H] x [H,H] (at B = 1
                                              and W_hh in L2: H dots, ``_matmul_t``), then f
              (past a length: y_t = 0, the state carried)   f = tanh, or relu with ``relu``
    backward  dz_t = (dy_t + dh_t) * f'(y_t),  dh_{t-1} = dz_t W_hh   per step (one GEMM)
              f'(y) = 1 - y*y (tanh), 1 if y > 0 else 0 (relu)
              dx = dz W_ih,  dW_ih = dz^T x,  dW_hh = dz^T [h0; y_0..y_{T-2}]  one GEMM each,
              db = sum dz                                                      after the loop

Shapes: x [B,T,I] or, with ``time_major``, [T,B,I], C-contiguous (as the API hands them over);
h0, dh_n [B,H]; w_ih [H,I]; w_hh [H,H]; b [H]; lengths [B] int32; y, dy, dz like x with last
axis H. The GEMMs over all steps read the arrays flat ([T*B, .] rows, in either layout: row
order is the same on both sides of each product), so nothing is transposed or padded. The loop
kernels take the layout as a flag and read each (step, row) as a C-contiguous [H] row
(``_row``), so the element-wise loops vectorise; they call BLAS (``np.dot``: SciPy's BLAS, which
Numba needs for it) on C-contiguous [B,H] state buffers.

Launch: one Numba call per layer and direction (the step loop runs inside it, GEMMs too), and
one per step of :func:`rnn_step` (online use: state in, state out; every CPU backend call of
``fastrnn.rnn_step`` runs it, whatever the shape: one step has no recurrence to fuse).
Threads: BLAS's own (OpenBLAS: all cores); the element-wise work is serial. Bits: the same
inputs and thread count give the same bits (BLAS splits the output, not the sums, among threads
for these shapes, and nothing here depends on timing); across thread counts it is BLAS's choice,
so this strategy makes no promise there.

tanh: ``rnn_cpu._tanh`` (the same rational float32 tanh as the fused kernels; ``math.tanh`` for
float64), inlined into a plain loop that LLVM's loop vectoriser vectorises (these kernels use
Numba's default pipeline, not ``_numba_env.VectorizingCompiler``).

Check: ``pytest tests/test_kernels_cpu.py -k gemm tests/test_step.py``.
Time: ``pytest bench/ --benchmark-only`` (the shape grid, the stream step).
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from .rnn_cpu import _relu, _relu_grad, _tanh, vector_bits

#: How long (2^n cycles) SciPy's OpenBLAS, which ``np.dot`` calls here, keeps its idle worker
#: threads spinning after a call. Its default, 28 (~0.1 s), starves the fused kernels' OpenMP
#: threads on the same cores: a B = 64, H = 128 predict on the fused strategy took 6.5-7.7 ms
#: right after a B = 1 predict on this one, 1.2-1.7 ms alone (2 vCPUs, Zen 5); with 18
#: (~0.1 ms) 1.2-1.8 ms either way, and these kernels' own calls kept their speed (their GEMMs
#: run back to back). OpenBLAS reads it when SciPy's BLAS loads, at the first GEMM here, so it
#: takes effect unless the process loaded ``scipy.linalg`` before; a value the user set (not
#: empty) is kept. ``bench/test_bench_cpu.py::test_mixed_strategies`` times the case.
BLAS_THREAD_TIMEOUT = "18"
if not os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = BLAS_THREAD_TIMEOUT

#: Numba options of these kernels: cached, NumPy's error model, FMA contraction only (as
#: ``_numba_env.JIT_OPTIONS``, with Numba's own pipeline: loop vectoriser on)
OPTIONS = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}}


#: Numba options of the row dots: reassociated sums, which LLVM splits over vector lanes (the
#: order is fixed by the build's vector width, not by the data)
DOT_OPTIONS = {"cache": True, "error_model": "numpy", "fastmath": {"contract", "reassoc"}}


@njit(**DOT_OPTIONS)
def _dot(a, v):
    """``a . v``."""
    s = a.dtype.type(0)
    for k in range(a.shape[0]):
        s += a[k] * v[k]
    return s


@njit(**DOT_OPTIONS)
def _dot4(a, b, c, d, v):
    """``(a . v, b . v, c . v, d . v)``: four rows share each load of ``v``."""
    s0 = s1 = s2 = s3 = a.dtype.type(0)
    for k in range(a.shape[0]):
        vk = v[k]
        s0 += a[k] * vk
        s1 += b[k] * vk
        s2 += c[k] * vk
        s3 += d[k] * vk
    return s0, s1, s2, s3


#: rows per dot: 1 on AVX-512 (2 zmm loads a cycle cover a row of w and v), 4 on AVX2 and
#: narrower, where four rows sharing each load of ``v`` ran 1.2x faster (H = 256, w in L2)
DOT_ROWS = 1 if vector_bits() == 512 else 4

#: the largest ``w`` (bytes) that :func:`_matmul_t` multiplies by row dots at batch 1: one
#: core's L2 on a Zen 3 (512 KB; Zen 4 and 5: 1 MB)
ROW_DOTS_MAX_BYTES = 1 << 19


@njit(inline="always")
def _matmul_t(a, w, out):
    """``out = a w^T`` for ``a [B,K]``, ``w [N,K]``. At batch 1, with ``w`` small enough to sit
    in L2, row dots on this thread; otherwise BLAS. A forward of T = 100 steps at B = 1, I = H =
    64 / 128 / 256 ran 1.0-1.2x / 1.0-1.2x / 1.1-1.3x faster with the dots than with BLAS's gemv
    (2 threads, Zen 5, AVX-512, calls alternating, 4 runs; AVX2 build: 1.05-1.33x);
    at H = 384 the same; at H = 512 and 1024 BLAS, which splits ``w`` between the cores, was up
    to 1.35x faster than the dots."""
    if a.shape[0] == 1 and w.nbytes <= ROW_DOTS_MAX_BYTES:
        a0, o = a[0], out[0]
        N = w.shape[0]
        n = N - N % DOT_ROWS
        for j in range(0, n, DOT_ROWS):
            if DOT_ROWS == 1:
                o[j] = _dot(w[j], a0)
            else:
                o[j], o[j + 1], o[j + 2], o[j + 3] = _dot4(w[j], w[j + 1], w[j + 2], w[j + 3],
                                                           a0)
        for j in range(n, N):
            o[j] = _dot(w[j], a0)
    else:
        np.dot(a, w.T, out)


@njit(inline="always")
def _act(v, relu):
    """``relu(v)`` or ``tanh(v)`` (``rnn_cpu``'s scalar ones, typed by dtype). ``relu`` is
    loop-invariant: LLVM hoists the branch out of the element loops."""
    if relu:
        return _relu(v)
    return _tanh(v)


@njit(inline="always")
def _act_grad(y, relu, one):
    """f' from the output ``y``: ``rnn_cpu._relu_grad`` (1 if y > 0 else 0) or ``1 - y*y``
    (``one`` of y's type: an int 1 would make float32 arithmetic float64)."""
    if relu:
        return _relu_grad(y)
    return one - y * y


@njit(inline="always")
def _row(a, t, r, time_major):
    """Row ``(t, r)`` of ``a`` [T,B,H] (``time_major``) or [B,T,H]: a C-contiguous [H] view either
    way, so the element-wise loops over it vectorise."""
    return a[t, r] if time_major else a[r, t]


@njit(**OPTIONS)
def forward_kernel(x2, w_ih, w_hh, b, lengths, h0, y, time_major, h_n, hbuf, hw, relu):
    """x2 [T*B,I] (x flat); y [T,B,H] or [B,T,H] out; h_n [B,H] out; hbuf [2,B,H], hw [B,H]
    workspaces; ``relu``: relu, else tanh."""
    B, H = h0.shape
    T = x2.shape[0] // B
    np.dot(x2, w_ih.T, y.reshape(-1, H))
    hbuf[0] = h0
    for t in range(T):
        cur, nxt = hbuf[t & 1], hbuf[(t + 1) & 1]
        _matmul_t(cur, w_hh, hw)
        for r in range(B):
            yr, hr, cr, nr = _row(y, t, r, time_major), hw[r], cur[r], nxt[r]
            if t < lengths[r]:
                for j in range(H):
                    v = _act(yr[j] + hr[j] + b[j], relu)
                    yr[j] = v
                    nr[j] = v
            else:  # past the length: output zero, state carried
                for j in range(H):
                    yr[j] = 0
                    nr[j] = cr[j]
    h_n[:] = hbuf[T & 1]


@njit(**OPTIONS)
def step_kernel(x, h, w_ih, w_hh, b, out, relu):
    """One step of every row, for online use: ``out = f(x W_ih^T + h W_hh^T + b)``, f relu
    (``relu``) or tanh. x [B,I], h [B,H] in; out [B,H] out (all C-contiguous; out may be h)."""
    hw = np.empty_like(out)  # here, not an argument: ~0.2 us less per call
    _matmul_t(h, w_hh, hw)
    _matmul_t(x, w_ih, out)
    for r in range(out.shape[0]):
        o, a = out[r], hw[r]
        for j in range(o.shape[0]):
            o[j] = _act(o[j] + a[j] + b[j], relu)


@njit(**OPTIONS)
def backward_kernel(dy, dh_n, x2, h0, w_ih, w_hh, y, lengths, time_major, dx2, dh0, dw_ih, dw_hh,
                    db, dz, hp, dh, g, dhw, relu):
    """dy, y [T,B,H] or [B,T,H] (``time_major`` or not); x2 [T*B,I] (x flat); dx2 [T*B,I] out
    (no rows: skipped); dh0 [B,H], dw_ih [H,I], dw_hh [H,H], db [H] out; dz, hp like y and dh,
    g, dhw [B,H]: workspaces; ``relu``: relu, else tanh."""
    B, H = h0.shape
    T = x2.shape[0] // B
    one = y.dtype.type(1)
    dh[:] = dh_n
    for t in range(T - 1, -1, -1):
        for r in range(B):
            yr, dyr, dzr, gr, dhr = (_row(y, t, r, time_major), _row(dy, t, r, time_major),
                                     _row(dz, t, r, time_major), g[r], dh[r])
            if t < lengths[r]:
                for j in range(H):
                    v = (dyr[j] + dhr[j]) * _act_grad(yr[j], relu, one)
                    gr[j] = v
                    dzr[j] = v
            else:
                gr[:] = 0
                dzr[:] = 0
        np.dot(g, w_hh, dhw)
        for r in range(B):
            if t < lengths[r]:  # past the length the state was carried, and so is dh
                dh[r] = dhw[r]
    dh0[:] = dh
    for t in range(T):  # the state each step started from: h0, y_0, ..., y_{T-2}
        for r in range(B):
            _row(hp, t, r, time_major)[:] = h0[r] if t == 0 else _row(y, t - 1, r, time_major)
    dz2 = dz.reshape(-1, H)
    if dx2.shape[0] > 0:
        np.dot(dz2, w_ih, dx2)
    np.dot(dz2.T, x2, dw_ih)
    np.dot(dz2.T, hp.reshape(-1, H), dw_hh)
    db[:] = 0
    for n in range(dz2.shape[0]):
        db += dz2[n]


def rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity="tanh"):
    """One layer forward (``rnn_cpu.rnn_forward``'s positional signature; every argument given,
    C-contiguous). Returns ``y`` (layout of x) and ``h_n [B,H]``."""
    H, I = w_ih.shape
    B = h0.shape[0]
    dt = x.dtype
    y, h_n = np.empty(x.shape[:2] + (H,), dt), np.empty((B, H), dt)
    forward_kernel(x.reshape(-1, I), w_ih, w_hh, b, lengths, h0, y, time_major, h_n,
                   np.empty((2, B, H), dt), np.empty((B, H), dt), nonlinearity == "relu")
    return y, h_n


def rnn_step(x, h, w_ih, w_hh, b, nonlinearity="tanh"):
    """One step (:func:`step_kernel`); returns the new state ``[B,H]`` (a new array)."""
    out = np.empty(h.shape, h.dtype)
    step_kernel(x, h, w_ih, w_hh, b, out, nonlinearity == "relu")
    return out


def rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major, nonlinearity="tanh"):
    """BPTT of :func:`rnn_forward` (``rnn_cpu.rnn_backward``'s positional signature; every
    argument given, C-contiguous). Returns ``(dx, dh0, dw_ih, dw_hh, db)``."""
    H, I = w_ih.shape
    B = h0.shape[0]
    dt = x.dtype
    dx, dh0, dw_ih, dw_hh, db = (np.empty_like(x), np.empty((B, H), dt), np.empty((H, I), dt),
                                 np.empty((H, H), dt), np.empty(H, dt))
    backward_kernel(dy, dh_n, x.reshape(-1, I), h0, w_ih, w_hh, y, lengths, time_major,
                    dx.reshape(-1, I), dh0, dw_ih, dw_hh, db, np.empty(y.shape, dt),
                    np.empty(y.shape, dt), *(np.empty((B, H), dt) for _ in range(3)),
                    nonlinearity == "relu")
    return dx, dh0, dw_ih, dw_hh, db
