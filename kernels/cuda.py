"""CuPy launchers for the CUDA kernels in this folder (float32).

One small cached loader reads a ``.cu`` file from this package folder, prepends ``#line 1 "<path>"``
so compiler errors point at the real file and line, and compiles it once per process through
``cupy.RawModule`` (NVRTC) with this folder on the include path. Scalars go to kernels as
``np.int32`` (CuPy checks no argument types: a Python int would arrive as a 64-bit value); a NULL
pointer is ``np.uint64(0)``. Launch shapes come from :mod:`fastrnn.kernels.cuda_launch`, shared with
the CPU emulation harness.

``rnn_forward`` and ``rnn_backward`` have the reference's signatures; the ``*_into`` variants
write into caller-owned buffers on the current CuPy stream (what the fused classifier step and its
CUDA graph use). CuPy is imported on first use, never at import time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import cuda_launch as L

KERNEL_DIR = Path(__file__).resolve().parent
NULL = np.uint64(0)
_i32 = np.int32


def _cupy():
    import cupy

    return cupy


#: NVRTC options given to every RawModule (CuPy adds ``-ftz=true`` and the ``-arch``)
NVRTC_OPTIONS = (f"-I{KERNEL_DIR}", "--std=c++17")


def source(filename: str) -> str:
    """The text of ``kernels/<filename>`` as compiled: ``#line 1 "<path>"`` then the file."""
    path = KERNEL_DIR / filename
    return f'#line 1 "{path}"\n' + path.read_text()


@functools.cache
def load_module(filename: str):
    """The compiled ``cupy.RawModule`` of ``kernels/<filename>`` (cached per process)."""
    return _cupy().RawModule(code=source(filename), options=NVRTC_OPTIONS)


@functools.cache
def kernel(filename: str, name: str):
    """The ``extern "C"`` entry point ``name`` of ``kernels/<filename>``."""
    return load_module(filename).get_function(name)


def _launch(filename, name, shape: L.Launch, args):
    k = kernel(filename, name)
    smem = shape.shared_mem
    if smem > L.SMEM_DEFAULT_LIMIT and k.max_dynamic_shared_size_bytes < smem:
        k.max_dynamic_shared_size_bytes = smem  # opt-in above 48 KB (block path)
    k(shape.grid, shape.block, args, shared_mem=shape.shared_mem)


@functools.cache
def _smem_optin(device_id: int) -> int:
    """The device's opt-in dynamic shared-memory limit per block, in bytes."""
    cp = _cupy()
    attr = cp.cuda.runtime.cudaDevAttrMaxSharedMemoryPerBlockOptin
    return int(cp.cuda.runtime.deviceGetAttribute(attr, device_id))


def _block_plan(B: int, H: int) -> tuple[int, int]:
    return L.block_plan(B, H, _smem_optin(_cupy().cuda.Device().id))


def _p(a):
    """A kernel pointer argument: the array, or NULL for None."""
    return NULL if a is None else a


def _check_f32(lengths=None, **arrays):
    for name, a in arrays.items():
        if a is not None and a.dtype != np.float32:
            raise TypeError(f"{name}: the cuda backend computes in float32, got {a.dtype}")
    if lengths is not None and lengths.dtype != np.int32:
        raise TypeError(f"lengths: expected int32 on the cuda backend, got {lengths.dtype}")


# ----------------------------------------------------------------------------------------------
# one RNN layer


def _layer_dims(x, H: int, time_major: bool):
    """``B, T, I`` of ``x`` and the element strides ``(per sequence, per step)`` of ``x`` and of
    an output ``[.., H]`` in the same layout."""
    T, B, I = x.shape if time_major else (x.shape[1], x.shape[0], x.shape[2])
    return B, T, I, L.seq_strides(B, T, I, time_major), L.seq_strides(B, T, H, time_major)


def forward_into(x, h0, w_ih, w_hh, b, lengths, time_major, y, h_n, relu=False):
    """Forward of one layer into ``y`` (layout of ``x``, last axis H) and ``h_n [B,H]``; relu
    (``relu``) or tanh.

    One launch when ``H <= 32`` and ``I <= 32``; otherwise a GEMM for ``W_ih x`` first.
    ``h0`` and ``lengths`` may be None. All arrays C-contiguous float32 (lengths int32).
    """
    cp = _cupy()
    H = w_hh.shape[0]
    B, T, I, (sx_b, sx_t), (sy_b, sy_t) = _layer_dims(x, H, time_major)
    if L.use_warp_path(H) and I <= L.WARP_MAX_I:
        _launch("rnn_forward.cu", "rnn_fwd_warp", L.fwd_warp_launch(B),
                (x, w_ih, w_hh, b, _p(h0), _p(lengths), y, h_n, _i32(B), _i32(T), _i32(I),
                 _i32(H), _i32(1), _i32(sx_b), _i32(sx_t), _i32(sy_b), _i32(sy_t), _i32(relu)))
        return
    xp = cp.matmul(x.reshape(-1, I), w_ih.T)  # [B*T, H] in x's (b, t) order: strides of y
    if L.use_warp_path(H):
        _launch("rnn_forward.cu", "rnn_fwd_warp", L.fwd_warp_launch(B),
                (xp, NULL, w_hh, b, _p(h0), _p(lengths), y, h_n, _i32(B), _i32(T), _i32(I),
                 _i32(H), _i32(0), _i32(sy_b), _i32(sy_t), _i32(sy_b), _i32(sy_t), _i32(relu)))
        return
    spb, w_in_smem = _block_plan(B, H)
    w_hh_t = cp.ascontiguousarray(w_hh.T)
    _launch("rnn_forward.cu", "rnn_fwd_block", L.fwd_block_launch(B, H, spb, w_in_smem),
            (xp, w_hh_t, b, _p(h0), _p(lengths), y, h_n, _i32(B), _i32(T), _i32(H),
             _i32(sy_b), _i32(sy_t), _i32(sy_b), _i32(sy_t), _i32(spb), _i32(w_in_smem),
             _i32(relu)))


def weight_grads_into(dz, x, y, h0, time_major, dw_ih, dw_hh, db, part=None):
    """``rnn_wgrad_partial`` then ``rnn_wgrad_reduce``: ``dw_ih``, ``dw_hh``, ``db`` from ``dz``
    (layout of ``y``), ``x`` and ``y``; ``h0`` may be None. ``part``: float32 scratch of at least
    ``cuda_launch.wgrad_part_size(B, T, I, H)`` elements (allocated here when None)."""
    H = dz.shape[-1]
    B, T, I, (sx_b, sx_t), (sy_b, sy_t) = _layer_dims(x, H, time_major)
    if part is None:
        part = _cupy().empty(L.wgrad_part_size(B, T, I, H), dtype=np.float32)
    rpb, chunk = L.wgrad_plan(B, T, I, H)
    _launch("rnn_backward.cu", "rnn_wgrad_partial", L.wgrad_partial_launch(B, T, I, H),
            (dz, x, y, _p(h0), part, _i32(B), _i32(T), _i32(I), _i32(H), _i32(sx_b),
             _i32(sx_t), _i32(sy_b), _i32(sy_t), _i32(rpb), _i32(chunk)))
    _launch("rnn_backward.cu", "rnn_wgrad_reduce", L.wgrad_reduce_launch(I, H),
            (part, dw_ih, dw_hh, db, _i32(L.wgrad_blocks(B, T, I, H)), _i32(I), _i32(H)))


def backward_into(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major,
                  dz, dx, dh0, dw_ih, dw_hh, db, wg_part=None, relu=False):
    """BPTT of one layer into caller-owned buffers (three launches on the fast path); relu
    (``relu``) or tanh.

    ``dy``, ``dh_n``, ``h0``, ``lengths`` may be None; ``dx`` None skips the input gradient.
    ``dz`` (layout of ``y``) is scratch that the weight-gradient kernels read; it may be ``dy``.
    ``wg_part``: the weight-gradient scratch (see :func:`weight_grads_into`), for H <= 32; pass a
    preallocated one when capturing a CUDA graph.
    """
    cp = _cupy()
    H = w_hh.shape[0]
    B, T, I, (sx_b, sx_t), (sy_b, sy_t) = _layer_dims(x, H, time_major)
    if L.use_warp_path(H):
        fused_dx = dx is not None and I <= L.WARP_MAX_I
        _launch("rnn_backward.cu", "rnn_bwd_warp", L.bwd_warp_launch(B),
                (_p(dy), _p(dh_n), w_ih if fused_dx else NULL, w_hh, y, _p(lengths), dz,
                 dx if fused_dx else NULL, dh0, _i32(B), _i32(T), _i32(I), _i32(H),
                 _i32(sy_b), _i32(sy_t), _i32(sx_b), _i32(sx_t), _i32(relu)))
    else:
        fused_dx = False
        spb, w_in_smem = _block_plan(B, H)
        _launch("rnn_backward.cu", "rnn_bwd_block", L.bwd_block_launch(B, H, spb, w_in_smem),
                (_p(dy), _p(dh_n), w_hh, y, _p(lengths), dz, dh0, _i32(B), _i32(T), _i32(H),
                 _i32(sy_b), _i32(sy_t), _i32(spb), _i32(w_in_smem), _i32(relu)))
    if dx is not None and not fused_dx:
        cp.matmul(dz.reshape(-1, H), w_ih, out=dx.reshape(-1, I))
    if L.use_warp_path(H):  # small: two kernels, capturable in the CUDA graph
        weight_grads_into(dz, x, y, h0, time_major, dw_ih, dw_hh, db, wg_part)
    else:
        _weight_grads_gemm(dz, x, h0, y, time_major, dw_ih, dw_hh, db)


def _weight_grads_gemm(dz, x, h0, y, time_major, dw_ih, dw_hh, db):
    """``dW_ih = sum_t dz_t x_t^T``, ``dW_hh = sum_t dz_t h_{t-1}^T``, ``db = sum_t dz_t`` as cuBLAS
    GEMMs (deterministic for a fixed shape and device). Rows of ``dz``, ``x``, ``y`` are in the same
    (b, t) memory order, so ``dW_ih`` is one GEMM over ``B*T`` rows; ``h_{t-1}`` is ``y`` one step
    back (time-major views make that a contiguous slice) plus ``h0`` at ``t = 0``."""
    cp = _cupy()
    H, I = dz.shape[-1], x.shape[-1]
    dz2 = dz.reshape(-1, H)
    cp.matmul(dz2.T, x.reshape(-1, I), out=dw_ih)
    cp.sum(dz2, axis=0, out=db)
    dzt = dz if time_major else dz.transpose(1, 0, 2)  # [T, B, H] views
    yt = y if time_major else y.transpose(1, 0, 2)
    T = dzt.shape[0]
    if T > 1:
        a = cp.ascontiguousarray(dzt[1:]).reshape(-1, H)
        bm = cp.ascontiguousarray(yt[:-1]).reshape(-1, H)
        cp.matmul(a.T, bm, out=dw_hh)
    else:
        dw_hh[...] = 0
    if h0 is not None and T > 0:
        dw_hh += cp.matmul(dzt[0].T, h0)


def rnn_forward(x, h0, w_ih, w_hh, b, lengths=None, time_major=False, nonlinearity="tanh"):
    """Same signature and result as :func:`fastrnn.reference.rnn_forward`, on CuPy arrays."""
    cp = _cupy()
    _check_f32(lengths, x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b=b)
    H = w_hh.shape[0]
    B = x.shape[1] if time_major else x.shape[0]
    y = cp.empty(x.shape[:2] + (H,), dtype=cp.float32)
    h_n = cp.empty((B, H), dtype=cp.float32)
    forward_into(x, h0, w_ih, w_hh, b, lengths, time_major, y, h_n, nonlinearity == "relu")
    return y, h_n


def rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths=None, time_major=False,
                 nonlinearity="tanh"):
    """Same signature and result as :func:`fastrnn.reference.rnn_backward`, on CuPy arrays."""
    cp = _cupy()
    _check_f32(lengths, dy=dy, dh_n=dh_n, x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, y=y)
    H = w_hh.shape[0]
    B = x.shape[1] if time_major else x.shape[0]
    dz = cp.empty(y.shape, dtype=cp.float32)
    dx = cp.empty(x.shape, dtype=cp.float32)
    dh0 = cp.empty((B, H), dtype=cp.float32)
    dw_ih, dw_hh, db = cp.empty_like(w_ih), cp.empty_like(w_hh), cp.empty(H, dtype=cp.float32)
    backward_into(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major,
                  dz, dx, dh0, dw_ih, dw_hh, db, relu=nonlinearity == "relu")
    return dx, dh0, dw_ih, dw_hh, db


# ----------------------------------------------------------------------------------------------
# classifier head and optimiser


def dense_xent_into(h, w_out, b_out, labels, logits, row_loss, row_correct, dlogits, dh):
    """``dense_xent_rows``: logits and/or per-row loss, correctness and gradients (see the .cu).
    ``labels`` int64 ``[B]`` or None; every output may be None except the row buffers when
    ``labels`` is given."""
    B, H = h.shape
    C = w_out.shape[0]
    _launch("classifier.cu", "dense_xent_rows", L.rows_launch(B, C),
            (h, w_out, b_out, _p(labels), _p(logits), _p(row_loss), _p(row_correct),
             _p(dlogits), _p(dh), _i32(B), _i32(C), _i32(H)))


def dense_reduce_into(dlogits, h, row_loss, row_correct, dw_out, db_out, out2, C):
    """``dense_grads_reduce``: ``dw_out [C,H]``, ``db_out [C]`` (skipped when ``dlogits`` is
    None) and ``out2 = (mean loss, number correct)``."""
    B, H = h.shape
    _launch("classifier.cu", "dense_grads_reduce", L.reduce_launch(C, H),
            (_p(dlogits), h, row_loss, row_correct, _p(dw_out), _p(db_out), out2,
             _i32(B), _i32(C), _i32(H)))


def adam_into(p, g, m, v, hyper, norm_part, overflow, loss=None, norm_out=None,
              applied_out=None):
    """``grad_sumsq_partial``, then ``adam_update`` twice (check, apply) over the flat buffers:
    the global norm of ``g`` into ``norm_out`` (``[1]`` float32 or None), and Adam with clipping
    unless the norm or ``loss`` (``[1]`` float32 on the device, or None: not checked) is not
    finite or a new ``p``, ``m`` or ``v`` would be, in which case ``p``, ``m``, ``v`` are left
    untouched; ``applied_out`` (``[1]`` float32 or None) gets 1.0 or 0.0. ``hyper [9]`` float32
    on the device (``cuda_launch.adam_hyper``); scratch: ``norm_part``, float64 of
    ``cuda_launch.norm_part_size(n)`` elements, and ``overflow``, int32 of
    ``cuda_launch.adam_launch(n).grid[0]``."""
    n = p.size
    parts = L.norm_part_size(n)
    _launch("classifier.cu", "grad_sumsq_partial", L.norm_launch(n), (g, norm_part, _i32(n)))
    for check in (1, 0):
        _launch("classifier.cu", "adam_update", L.adam_launch(n),
                (p, g, m, v, hyper, norm_part, _i32(parts), _p(loss), overflow, _p(norm_out),
                 _p(applied_out), _i32(n), _i32(check)))


def rank_sum_into(parts, out, offset: int, n_mean: int):
    """``sum_in_rank_order``: ``out [k] = parts [N,k]`` summed over its rows in order, entries
    whose index in the whole buffer (``offset + i``) is below ``n_mean`` divided by ``N``."""
    N, k = parts.shape
    _launch("classifier.cu", "sum_in_rank_order", L.rank_sum_launch(k),
            (parts, out, _i32(N), _i32(k), np.int64(offset), np.int64(n_mean),
             np.float32(1.0 / N)))


def dense_xent(h, w_out, b_out, labels):
    """Convenience for tests: ``(loss, correct, logits, dlogits, dh, dw_out, db_out)``, all on the
    device, computed by the two classifier kernels."""
    cp = _cupy()
    B, H = h.shape
    C = w_out.shape[0]
    f = functools.partial(cp.empty, dtype=cp.float32)
    logits, dlogits, dh = f((B, C)), f((B, C)), f((B, H))
    row_loss, row_correct, out2 = f(B), f(B), f(2)
    dw_out, db_out = f((C, H)), f(C)
    dense_xent_into(h, w_out, b_out, labels, logits, row_loss, row_correct, dlogits, dh)
    dense_reduce_into(dlogits, h, row_loss, row_correct, dw_out, db_out, out2, C)
    return out2[0], out2[1], logits, dlogits, dh, dw_out, db_out


def adam(p, g, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, clip_norm=0.0,
         loss=None):
    """Adam in place, the reference's signature (``step`` 1-based) plus clipping by the global
    norm (``clip_norm``, 0: off) and the finiteness guard (``loss``: a float, or None). Returns
    ``(norm, applied)``: the global norm of ``g`` and 1.0 if the update was applied (0.0 if it
    wrote nothing), as device ``[1]`` float32 arrays."""
    cp = _cupy()
    hyper = cp.asarray(np.asarray(L.adam_hyper(step, lr, beta1, beta2, eps, clip_norm),
                                  dtype=np.float32))
    part = cp.empty(L.norm_part_size(p.size), dtype=cp.float64)
    overflow = cp.empty(L.adam_launch(p.size).grid[0], dtype=cp.int32)
    norm, applied = cp.empty(1, dtype=cp.float32), cp.empty(1, dtype=cp.float32)
    dloss = None if loss is None else cp.asarray(np.array([loss], dtype=np.float32))
    adam_into(p, g, m, v, hyper, part, overflow, dloss, norm, applied)
    return norm, applied
