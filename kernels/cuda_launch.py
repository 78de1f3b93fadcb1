"""Launch shapes of the CUDA kernels in ``kernels/*.cu``: pure Python, no CuPy.

One function per kernel returns ``Launch(grid, block, shared_mem)`` (a plain 3-tuple of
``(gx, gy, gz)``, ``(bx, by, bz)`` and dynamic shared-memory bytes) from the problem sizes. The CuPy
launcher (:mod:`fastrnn.kernels.cuda`) and the CPU emulation harness (``tests/cuda_emu``) both call
these, so the emulated runs use exactly the production shapes.

All kernels are float32. Pointers marked *nullable* may be NULL (``np.uint64(0)`` from CuPy,
``None`` through ctypes). Every ``int`` is a C ``int`` (pass ``np.int32``); strides are in elements.

Layouts: a sequence tensor with last axis ``D`` holds element ``(b, t, d)`` at
``b*s_b + t*s_t + d``; :func:`seq_strides` gives ``(s_b, s_t)`` for batch-major ``[B,T,D]``
and time-major ``[T,B,D]``.

Entry points (``extern "C"``)
-----------------------------
``rnn_forward.cu``::

    void rnn_fwd_warp(const float* x, const float* w_ih, const float* w_hh, const float* b,
                      const float* h0, const int* lengths, float* y, float* h_n,
                      int B, int T, int I, int H, int project,
                      int sx_b, int sx_t, int sy_b, int sy_t, int relu)
        H <= 32.  project=1: x [.., I] raw input, I <= 32, w_ih [H,I];
                  project=0: x [.., H] holds W_ih x_t already (strides sx), w_ih unused (nullable).
        b [H]; h0 [B,H] nullable (zeros); lengths [B] nullable (all T); y [.., H] (strides sy);
        h_n [B,H]. relu != 0: f = relu, else tanh (every RNN kernel).    launch: fwd_warp_launch

    void rnn_fwd_block(const float* xp, const float* w_hh_t, const float* b, const float* h0,
                       const int* lengths, float* y, float* h_n,
                       int B, int T, int H, int sx_b, int sx_t, int sy_b, int sy_t,
                       int seq_per_block, int w_in_smem, int relu)
        any H <= 1024.  xp [.., H] = W_ih x_t (no bias); w_hh_t [H,H] = W_hh transposed
        (w_hh_t[k*H+j] = W_hh[j,k]); the rest as above.  seq_per_block, w_in_smem from block_plan.
                                                                        launch: fwd_block_launch

``rnn_backward.cu``::

    void rnn_bwd_warp(const float* dy, const float* dh_n, const float* w_ih, const float* w_hh,
                      const float* y, const int* lengths, float* dz, float* dx, float* dh0,
                      int B, int T, int I, int H, int sy_b, int sy_t, int sx_b, int sx_t,
                      int relu)
        H <= 32.  dy [.., H] nullable (zeros), strides sy; dh_n [B,H] nullable; y [.., H] forward
        output; dz [.., H] out (strides sy; may alias dy); dx [.., I] out, nullable (not computed),
        needs I <= 32 when given, w_ih [H,I] nullable when dx is NULL; dh0 [B,H] out.
                                                                        launch: bwd_warp_launch

    void rnn_bwd_block(const float* dy, const float* dh_n, const float* w_hh, const float* y,
                       const int* lengths, float* dz, float* dh0,
                       int B, int T, int H, int sy_b, int sy_t, int seq_per_block, int w_in_smem,
                       int relu)
        any H <= 1024; as rnn_bwd_warp without dx (the launcher does dx = dz @ W_ih as a GEMM).
                                                                        launch: bwd_block_launch

    void rnn_wgrad_partial(const float* dz, const float* x, const float* y, const float* h0,
                           float* part, int B, int T, int I, int H,
                           int sx_b, int sx_t, int sy_b, int sy_t,
                           int rows_per_block, int chunk_rows)
        dz, y [.., H] (strides sy); x [.., I] (strides sx); h0 [B,H] nullable; part [G, H*J]
        out (J = I+H+1, G = grid x): block g's sum over rows n = b*T+t in
        [g*rows_per_block, (g+1)*rows_per_block) of dz_t[i] * (x_t | h_{t-1} | 1)[c] at i*J + c.
        rows_per_block, chunk_rows from wgrad_plan; part holds wgrad_part_size floats.
                                                                        launch: wgrad_partial_launch

    void rnn_wgrad_reduce(const float* part, float* dw_ih, float* dw_hh, float* db,
                          int G, int I, int H)
        part [G, H*J] from rnn_wgrad_partial; outputs dw_ih [H,I], dw_hh [H,H], db [H]
        (overwritten, not accumulated), each the in-order sum over g.   launch: wgrad_reduce_launch

``classifier.cu``::

    void dense_xent_rows(const float* h, const float* w_out, const float* b_out,
                         const long long* labels, float* logits, float* row_loss,
                         float* row_correct, float* dlogits, float* dh, int B, int C, int H)
        h [B,H]; w_out [C,H]; b_out [C]; labels [B] int64, nullable (then only logits);
        logits [B,C] nullable; row_loss [B], row_correct [B] (1.0 or 0.0) written when labels;
        dlogits [B,C] and dh [B,H] nullable (written when labels and pointer given).
                                                                        launch: rows_launch

    void dense_grads_reduce(const float* dlogits, const float* h, const float* row_loss,
                            const float* row_correct, float* dw_out, float* db_out, float* out2,
                            int B, int C, int H)
        dlogits [B,C] nullable (then dw_out/db_out untouched, may be NULL); h [B,H];
        out2 [2] = (mean loss, accuracy).                               launch: reduce_launch

    void grad_sumsq_partial(const float* g, double* norm_part, int n)
        g [n]; norm_part [G] doubles out (G = grid x = norm_part_size(n)): block j's sum of
        g[i]**2 over its contiguous chunk of ceil(n/G) elements, in a fixed order.
                                                                        launch: norm_launch

    void adam_update(float* p, const float* g, float* m, float* v, const float* hyper,
                     const double* norm_part, int parts, const float* loss, int* overflow,
                     float* norm_out, float* applied_out, int n, int check)
        p, g, m, v [n]; hyper [9] device floats = (lr, beta1, 1-beta1, beta2, 1-beta2, eps,
        1-beta1**step, 1-beta2**step, clip_norm) (see adam_hyper); norm_part [parts] from
        grad_sumsq_partial on the same g; loss [1] nullable (not checked); overflow [grid x]
        ints, scratch between the two launches. Launched twice on the same grid: check=1 flags
        each block whose new p, m or v would hold NaN or inf (writes nothing else); check=0
        writes nothing when the norm or the loss is not finite or a block was flagged, else
        Adam on g * clip_norm / max(norm, clip_norm) (clip_norm > 0) or on g (clip_norm = 0);
        its block 0 writes norm_out [1] (sqrt(sum of norm_part) as float) and applied_out [1]
        (1.0 applied, 0.0 not), both nullable.                          launch: adam_launch

    void sum_in_rank_order(const float* parts, float* out, int N, int k, long long offset,
                           long long n_mean, float inv_n)
        parts [N, k] (row r: process r's copy of one shard of a data-parallel step's gradient
        buffer); out [k] = the sum over r in rank order, times inv_n where offset + i < n_mean.
                                                                        launch: rank_sum_launch

Every kernel is deterministic: no atomics, fixed-order reductions.
"""

from __future__ import annotations

from typing import NamedTuple

#: every ``extern "C"`` entry point, by source file (the compile test checks each is built)
ENTRY_POINTS = {
    "rnn_forward.cu": ("rnn_fwd_warp", "rnn_fwd_block"),
    "rnn_backward.cu": ("rnn_bwd_warp", "rnn_bwd_block", "rnn_wgrad_partial",
                        "rnn_wgrad_reduce"),
    "classifier.cu": ("dense_xent_rows", "dense_grads_reduce", "grad_sumsq_partial",
                      "adam_update", "sum_in_rank_order"),
}
#: entry points whose register use matters most: no spills, no local-memory stack frame
HOT_KERNELS = ("rnn_fwd_warp", "rnn_bwd_warp", "rnn_fwd_block", "rnn_bwd_block",
               "rnn_wgrad_partial")

#: hidden sizes up to this run on the one-warp-per-sequence path (a W_hh row per lane)
WARP_MAX_H = 32
#: input sizes up to this are projected inside the warp kernels (a W_ih row per lane)
WARP_MAX_I = 32
#: largest H of the general (block) path: one thread per hidden unit
BLOCK_MAX_H = 1024
#: sequences per block on the general path; must equal BLK_MAX_SEQ in common.cuh
BLOCK_MAX_SEQ = 8
#: dynamic shared memory a kernel may use without an opt-in attribute
SMEM_DEFAULT_LIMIT = 48 * 1024
#: dynamic shared memory per block with the opt-in attribute on sm_90 (H100/H200: 227 KB); the
#: CuPy launcher passes the device's own value to :func:`block_plan`
SMEM_OPTIN_LIMIT = 227 * 1024
#: most k-slices per hidden unit on the block path (threads per block = slices * 32*ceil(H/32))
BLOCK_MAX_KSPLIT = 4
#: SM count used to size grids (H200: 132; a guess elsewhere only changes speed)
NUM_SMS = 132
#: rnn_wgrad_partial: most threads per block, and most rows staged in shared memory at once
WGRAD_THREADS = 256
WGRAD_CHUNK = 32
#: rnn_wgrad_reduce: warps per block splitting the partials (WGR_WARPS in rnn_backward.cu)
WGRAD_REDUCE_WARPS = 8


class Launch(NamedTuple):
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def seq_strides(B: int, T: int, D: int, time_major: bool) -> tuple[int, int]:
    """``(s_b, s_t)`` in elements of a C-contiguous ``[B,T,D]`` (or ``[T,B,D]``) tensor."""
    return (D, B * D) if time_major else (T * D, D)


def use_warp_path(H: int) -> bool:
    """Whether a layer of hidden size ``H`` runs on the warp kernels."""
    return H <= WARP_MAX_H


def warps_per_block(B: int) -> int:
    """Sequences (warps) per block on the warp path: one per block while that fills the GPU
    (each warp then has an SM sub-partition's issue slots to itself), four beyond."""
    return 1 if B <= 2 * NUM_SMS else 4


def fwd_warp_launch(B: int, wpb: int | None = None) -> Launch:
    """``rnn_fwd_warp``: one warp per sequence, ``wpb`` warps per block, no shared memory."""
    wpb = wpb or warps_per_block(B)
    return Launch((_cdiv(B, wpb), 1, 1), (32 * wpb, 1, 1), 0)


def bwd_warp_launch(B: int, wpb: int | None = None) -> Launch:
    """``rnn_bwd_warp``: same shape as the forward."""
    return fwd_warp_launch(B, wpb)


def block_ksplit(H: int) -> int:
    """k-slices per hidden unit on the block path: each unit's dot product over ``H`` is split
    among this many threads (at most 1024 per block), so more loads of ``W_hh`` are in flight."""
    return max(1, min(BLOCK_MAX_KSPLIT, 1024 // (32 * _cdiv(H, 32))))


def _block_smem(H: int, spb: int, w_in_smem: int) -> int:
    """Dynamic shared bytes of the block kernels: state buffer ``[2][spb][H]``, partial sums
    ``[ksplit-1][spb][H]``, then ``W_hh [H,H]`` when staged."""
    return 4 * ((1 + block_ksplit(H)) * spb * H + (H * H if w_in_smem else 0))


def block_plan(B: int, H: int, smem_limit: int = SMEM_OPTIN_LIMIT) -> tuple[int, int]:
    """``(seq_per_block, w_in_smem)`` for the general path: enough blocks to cover the SMs, at
    most :data:`BLOCK_MAX_SEQ` sequences each; ``W_hh`` staged in shared memory when it fits in
    ``smem_limit`` bytes together with the state and partial-sum buffers (the default is the
    H200's opt-in limit; the launcher raises the kernel's limit above 48 KB)."""
    if not 1 <= H <= BLOCK_MAX_H:
        raise ValueError(f"hidden_size: expected 1..{BLOCK_MAX_H} on the GPU, got {H}")
    spb = max(1, min(BLOCK_MAX_SEQ, _cdiv(B, NUM_SMS)))
    w_in_smem = int(_block_smem(H, spb, 1) <= smem_limit)
    return spb, w_in_smem


def _block_launch(B: int, H: int, spb: int, w_in_smem: int) -> Launch:
    if not 1 <= spb <= BLOCK_MAX_SEQ:
        raise ValueError(f"seq_per_block: expected 1..{BLOCK_MAX_SEQ}, got {spb}")
    threads = block_ksplit(H) * 32 * _cdiv(H, 32)
    return Launch((_cdiv(B, spb), 1, 1), (threads, 1, 1), _block_smem(H, spb, w_in_smem))


def fwd_block_launch(B: int, H: int, spb: int, w_in_smem: int) -> Launch:
    """``rnn_fwd_block``: ``spb`` sequences per block, :func:`block_ksplit` slices of
    ``32*ceil(H/32)`` threads (one thread per hidden unit and slice); shared: the state double
    buffer ``[2][spb][H]``, the slices' partial sums ``[ksplit-1][spb][H]``, then ``W_hh^T [H,H]``
    if staged (may exceed 48 KB: the launcher sets the kernel's opt-in limit)."""
    return _block_launch(B, H, spb, w_in_smem)


def bwd_block_launch(B: int, H: int, spb: int, w_in_smem: int) -> Launch:
    """``rnn_bwd_block``: as the forward; shared: ``dz`` double buffer, partial sums, then
    ``W_hh`` if staged."""
    return _block_launch(B, H, spb, w_in_smem)


def wgrad_plan(B: int, T: int, I: int, H: int) -> tuple[int, int]:
    """``(rows_per_block, chunk_rows)`` of ``rnn_wgrad_partial``: the ``B*T`` rows split over
    about one block per SM, each block staging ``chunk_rows`` rows at a time in at most 48 KB of
    shared memory."""
    N = max(1, B * T)
    rpb = _cdiv(N, NUM_SMS)
    cap = SMEM_DEFAULT_LIMIT // (4 * (H + 8 * _cdiv(I + H + 1, 8)))
    if cap < 1:
        raise ValueError(f"rnn_wgrad_partial: I={I}, H={H} do not fit one row in shared memory")
    return rpb, min(rpb, WGRAD_CHUNK, cap)


def wgrad_blocks(B: int, T: int, I: int, H: int) -> int:
    """``G``: the partial sums ``rnn_wgrad_partial`` writes (its grid's x size)."""
    return _cdiv(max(1, B * T), wgrad_plan(B, T, I, H)[0])


def wgrad_part_size(B: int, T: int, I: int, H: int) -> int:
    """Floats of the scratch buffer ``part [G, H*(I+H+1)]``."""
    return wgrad_blocks(B, T, I, H) * H * (I + H + 1)


def wgrad_partial_launch(B: int, T: int, I: int, H: int) -> Launch:
    """``rnn_wgrad_partial``: grid ``(G, Y)``: ``G`` row blocks (:func:`wgrad_plan`), ``Y`` blocks
    of threads over the ``H * ceil(J/8)`` tasks (8 outputs each, ``J = I+H+1``); dynamic shared
    ``sz [chunk][H]`` and ``sa [chunk][8*ceil(J/8)]``."""
    _, chunk = wgrad_plan(B, T, I, H)
    cg = _cdiv(I + H + 1, 8)
    tasks = H * cg
    threads = min(WGRAD_THREADS, 32 * _cdiv(tasks, 32))
    return Launch((wgrad_blocks(B, T, I, H), _cdiv(tasks, threads), 1), (threads, 1, 1),
                  4 * chunk * (H + 8 * cg))


def wgrad_reduce_launch(I: int, H: int) -> Launch:
    """``rnn_wgrad_reduce``: 32 outputs per block of :data:`WGRAD_REDUCE_WARPS` warps."""
    return Launch((_cdiv(H * (I + H + 1), 32), 1, 1), (32 * WGRAD_REDUCE_WARPS, 1, 1), 0)


#: dense_xent_rows: rows (warps) per block
ROWS_WARPS = 4


def rows_launch(B: int, C: int) -> Launch:
    """``dense_xent_rows``: one warp per row, :data:`ROWS_WARPS` per block; dynamic shared memory
    holds each warp's ``C`` probabilities."""
    return Launch((_cdiv(B, ROWS_WARPS), 1, 1), (32 * ROWS_WARPS, 1, 1), 4 * ROWS_WARPS * C)


#: dense_grads_reduce: outputs (warps) per block
REDUCE_WARPS = 4


def reduce_launch(C: int, H: int) -> Launch:
    """``dense_grads_reduce``: one warp per output (``C*H + C`` gradients, then loss and
    accuracy), lanes splitting the batch, a fixed-order butterfly."""
    return Launch((_cdiv(C * H + C + 2, REDUCE_WARPS), 1, 1), (32 * REDUCE_WARPS, 1, 1), 0)


#: grad_sumsq_partial: threads per block, elements per block before another block is added, and
#: the most blocks (partials); NORM_THREADS must equal the .cu's
NORM_THREADS = 256
NORM_PER_BLOCK = 8192
NORM_MAX_BLOCKS = 128
#: adam_update: threads per block (ADAM_THREADS in classifier.cu) and the most blocks (grid-stride
#: beyond: each block re-adds the norm partials, so their number is kept bounded)
ADAM_THREADS = 256
ADAM_MAX_BLOCKS = 4 * NUM_SMS
#: floats of adam_update's ``hyper`` (see :func:`adam_hyper`)
ADAM_HYPER_SIZE = 9


def norm_part_size(n: int) -> int:
    """``G``: the partial sums of squares ``grad_sumsq_partial`` writes for ``n`` gradients (one
    block per 8K elements, 1 to :data:`NORM_MAX_BLOCKS`); depends on ``n`` only, so the norm of a
    given buffer is always summed in the same order."""
    return max(1, min(NORM_MAX_BLOCKS, _cdiv(n, NORM_PER_BLOCK)))


def norm_launch(n: int) -> Launch:
    """``grad_sumsq_partial``: :func:`norm_part_size` blocks of :data:`NORM_THREADS` threads, each
    over a contiguous chunk of ``ceil(n / G)`` elements."""
    return Launch((norm_part_size(n), 1, 1), (NORM_THREADS, 1, 1), 0)


def adam_launch(n: int) -> Launch:
    """``adam_update``: one thread per parameter up to :data:`ADAM_MAX_BLOCKS` blocks, then a
    grid-stride loop."""
    return Launch((max(1, min(ADAM_MAX_BLOCKS, _cdiv(n, ADAM_THREADS))), 1, 1),
                  (ADAM_THREADS, 1, 1), 0)


def adam_hyper(step: int, lr: float, beta1: float, beta2: float, eps: float,
               clip_norm: float = 0.0) -> list[float]:
    """The 9 floats ``adam_update`` reads from ``hyper``, computed in double like the reference;
    ``clip_norm`` 0 means no clipping."""
    return [lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, 1.0 - beta1**step,
            1.0 - beta2**step, clip_norm]


#: sum_in_rank_order: threads per block (RANK_SUM_THREADS in classifier.cu)
RANK_SUM_THREADS = 256


def rank_sum_launch(k: int) -> Launch:
    """``sum_in_rank_order``: one thread per element of the shard."""
    return Launch((max(1, _cdiv(k, RANK_SUM_THREADS)), 1, 1), (RANK_SUM_THREADS, 1, 1), 0)
