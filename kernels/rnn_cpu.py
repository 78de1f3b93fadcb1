"""Numba kernels for one RNN layer (tanh or relu) on the CPU: forward over all T steps, and its
BPTT.

What they compute (the math of ``fastrnn/reference.py``, same positional signature):

    z_t = W_ih x_t + W_hh h_{t-1} + b,  h_t = f(z_t)   for t < lengths[b];
          past a length h_t = h_{t-1} and y_t = 0;   f = tanh, or relu (``relu`` flag)
    dz_t = (dy_t + dh_t) * f'(y_t)   (from the saved output: 1 - y*y, or y > 0; 0 past a length)
    dx_t = dz_t W_ih,  dh_{t-1} = dz_t W_hh,  db = sum dz_t,
    dW_ih = sum dz_t^T x_t,  dW_hh = sum dz_t^T h_{t-1}

Arguments of the public wrappers ``rnn_forward``/``rnn_backward`` (float32 or float64 throughout):
    x [B,T,I] or, with ``time_major``, [T,B,I]; any strides (read in place, never copied)
    h0, dh_n [B,H]    w_ih [H,I]    w_hh [H,H]    b [H]    lengths [B] int32, 0 <= lengths <= T
    y, dy [B,T,H] or [T,B,H] (layout of x)   returns dx like x, dh0 [B,H], dw_ih, dw_hh, db.
    Outputs may be preallocated (``y=``, ``h_n=``, ``out=``); they must not alias any input.

Layout inside the kernels. Sequence *inputs* ``x`` are time-major views ``[T,B,I]`` of any strides
(typed A-layout: one compiled variant serves batch-major and time-major data). Everything the
kernels write or re-read per step is C-contiguous, time-major and padded to
``HP = ceil(H/32)*32`` lanes: y, dy [T,B,HP], dx [T,B,padded(I)], dz [T,B,HP], so every row is
read and written as whole 32-lane blocks (padding lanes stay 0: tanh(0) = 0). The wrappers copy
between the user's layout and these buffers (the fused training step in ``train_cpu`` needs no
copy). Weights arrive pre-transposed and zero-padded (``pad_forward``, ``pad_backward``).

Register tile, per compile target (``LANES``, ``ROWS``; chosen at import from the vector width
Numba compiles for, see the comment at ``LANES``): every product runs as tiles of ROWS rows x
LANES lanes, ROWS rows sharing each loaded weight vector, each lane's accumulator a tuple of
8-lane tuples that LLVM's SLP vectoriser turns into vector registers. AVX-512 (Zen 4/5: 32 zmm,
FMA latency 4, 2 pipes): 8 rows x 32 lanes = 16 zmm, 16 independent FMA chains. AVX2 (16 ymm,
no broadcast operand): 4 rows x 16 lanes = 8 ymm, 0.75 loads per FMA. Anything else (SSE, NEON):
the AVX2 tile, untuned. The weight gradients take ROWS features per pass over dz. Each lane sums
in the same order on every tile, so every target with FMA computes the same bits. Napkin math,
showcase forward: 128*28*(28+31)*32*2 = 13.5 MFLOP per layer; ~0.11 ms on one core (~120
GFLOP/s), of which the tanh is ~0.03 ms.

Parallel launch: ``prange`` over chunks of ``chunk_rows(B)`` batch rows (a quarter of the batch,
8 to 32 rows: 32 for the showcase); each chunk runs its rows
through all T steps (forward) or back (BPTT), then computes *its own* partial weight gradients
over its rows and all steps into ``part_*[chunk]``; a fixed-order sum over chunks follows. No
shared element is written by two iterations, and the chunking depends on B only, so results are
bitwise identical run to run and for any thread count.

tanh: float32 uses a rational x*P(x^2)/Q(x^2) of degree 13/6 fitted (minimax on [0, 9]) for this
file, input clamped to +-9 and output to +-1; max abs error 3.0e-7 over all float32
(``TANH_F32_MAX_ERR``), exactly odd, +-inf -> +-1, NaN -> NaN. float64 uses ``math.tanh`` (the
gradient checks need float64 to match the reference to ~1e-15). No ``fastmath`` beyond FMA
contraction (see ``_numba_env``): reassociation would make results depend on vector width.

Compile time: Numba's IR inlining (``inline="always"``) is slow, so only the flat per-lane helpers
are inlined; block-sized helpers (``_tanh_rows``, ``_vecmat``, ``_group``, ``_dz_at``,
``_store_rows``) are called.
Calls between Numba functions are not inlined by LLVM.

Check: ``pytest tests/test_kernels_cpu.py`` (also with ``NUMBA_BOUNDSCHECK=1``; the AVX2 tile on
an AVX-512 machine: ``NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES=``, the generic one:
``NUMBA_CPU_NAME=generic``).
Time: ``pytest bench/ --benchmark-only -k mnist`` (the fused step); compile:
``NUMBA_CACHE_DIR=$(mktemp -d) python -c "import fastrnn, numpy as np; fastrnn.RNNClassifier(28, 31,
1, 10).train_step(np.zeros((128, 28, 28), np.float32), np.zeros(128, int))"``.
"""

from __future__ import annotations

import functools
import math

import llvmlite.binding as ll
import numpy as np
from numba import njit, prange, typeof, types
from numba.extending import overload

from ._numba_env import JIT_OPTIONS, ParallelKernel

#: hidden and input widths are padded to a multiple of this many lanes (every variant's
#: :data:`LANES` divides it, so buffers and results do not depend on the compile target)
BLOCK = 32
#: most batch rows per parallel chunk (:func:`chunk_rows` picks the size from the batch alone, so
#: reductions do not depend on the thread count)
CHUNK = 32

# tanh_f32(x) = x * P(x^2) / Q(x^2) on |x| <= 9 (x clamped there: float32 tanh(9) rounds to 1).
_CLAMP = np.float32(9.0)
_P = tuple(np.float32(c) for c in (
    9.9999997544888397e-01, 1.3067731829378573e-01, 3.0860611976134857e-03,
    1.0975587392690625e-05, -1.9551916239374851e-08, 4.9816033358939788e-11,
    -7.7965666456488807e-14))
_Q = tuple(np.float32(c) for c in (
    1.0, 4.6401050490932749e-01, 2.4423109169354380e-02, 2.5205792686993836e-04))
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = _P
_P1_ONE, _M1 = np.float32(1), np.float32(-1)
_Q0, _Q1, _Q2, _Q3 = _Q
#: max |tanh_f32(x) - tanh(x)| over every float32 x, measured (tests/test_kernels_cpu.py re-checks)
TANH_F32_MAX_ERR = 3.1e-7


def padded(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`BLOCK`."""
    return -(-n // BLOCK) * BLOCK


@njit(inline="always")
def chunk_rows(batch):
    """Rows per parallel chunk: about a quarter of the batch, a multiple of 8 between 8 and
    :data:`CHUNK` (so a batch of 32 rows or more still gives the threads >= 4 chunks). Larger
    chunks mean fewer partial gradients to sum and longer inner loops: on the showcase (B=128)
    32-row chunks made the 2-thread step 13% faster than 8-row ones, at 4-way parallelism."""
    return min(CHUNK, max(8, batch // 32 * 8))


def num_chunks(batch: int) -> int:
    """Number of parallel chunks (and rows of the ``part_*`` workspaces) for ``batch`` rows."""
    return -(-batch // chunk_rows.py_func(batch))


# ---------------------------------------------------------------------------------------------
# scalar tanh, chosen by dtype at compile time

def _tanh(x):  # pragma: no cover - typed through the overload below
    raise NotImplementedError


def _tanh_f32(x):
    x = np.minimum(np.maximum(x, -_CLAMP), _CLAMP)  # branch-free (SLP) and NaN-propagating
    u = x * x
    p = (((((_P6 * u + _P5) * u + _P4) * u + _P3) * u + _P2) * u + _P1) * u + _P0
    q = ((_Q3 * u + _Q2) * u + _Q1) * u + _Q0
    return np.minimum(np.maximum(x * p / q, _M1), _P1_ONE)  # keep |tanh| <= 1 at the clamp


def _tanh_f64(x):
    return math.tanh(x)


@overload(_tanh, inline="always")
def _tanh_overload(x):
    """float32: the rational ``_tanh_f32`` (inlined, so SLP vectorises it); float64: libm."""
    return _tanh_f32 if x == types.float32 else _tanh_f64


# scalar relu and its derivative from the output, typed by dtype (NaN propagates, as NumPy's)
_F32_ZERO = np.float32(0)


def _relu(x):  # pragma: no cover - typed through the overload below
    raise NotImplementedError


def _relu_grad(y):  # pragma: no cover - typed through the overload below
    raise NotImplementedError


@overload(_relu, inline="always")
def _relu_overload(x):
    if x == types.float32:
        return lambda x: np.maximum(x, _F32_ZERO)
    return lambda x: np.maximum(x, 0.0)


@overload(_relu_grad, inline="always")
def _relu_grad_overload(y):
    """``1 if y > 0 else 0``, of y's type: the comparison cast (a select, which SLP vectorises;
    a conditional expression here made Numba warn about its debug info)."""
    if y == types.float32:
        return lambda y: np.float32(y > _F32_ZERO)
    return lambda y: np.float64(y > 0.0)


# ---------------------------------------------------------------------------------------------
# register blocks, sized per target: ROWS rows x LANES lanes (tuples of 8-lane tuples, SLP)


@functools.cache
def vector_bits() -> int:
    """Widest vector registers of the CPU Numba compiles for (the host, or ``NUMBA_CPU_NAME`` /
    ``NUMBA_CPU_FEATURES``): 512 (AVX-512), 256 (AVX2) or 128 (SSE, NEON), asked of LLVM by
    compiling one 16-float add with Numba's own target machine."""
    from numba.core.registry import cpu_target

    ir = ("define void @f(<16 x float>* %p) {\n  %v = load <16 x float>, <16 x float>* %p\n"
          "  %w = fadd <16 x float> %v, %v\n  store <16 x float> %w, <16 x float>* %p\n"
          "  ret void\n}")
    asm = cpu_target.target_context.codegen()._tm.emit_assembly(ll.parse_assembly(ir))
    return 512 if "zmm" in asm else 256 if "ymm" in asm else 128


#: The register tile of every product: ``ROWS`` rows (batch rows, or features in the weight
#: gradients) share each loaded weight vector of ``LANES`` lanes, in ``ROWS x LANES / width``
#: accumulators. Each FMA also needs its row's value broadcast; AVX2 has no broadcast operand,
#: so there a broadcast is a load of its own, and the loads bound the loop.
#: AVX-512 (32 zmm): 8 rows x 32 lanes = 16 zmm accumulators, 16 independent FMA chains (twice
#: what 2 pipes x 4 cycles latency need); 4 rows were 5-14% slower there.
#: AVX2 (16 ymm): 4 rows x 16 lanes = 8 ymm accumulators (the chains 2 pipes x 4 cycles need),
#: 0.75 loads per FMA, registers left for the weights: forward 79-83 GFLOP/s on one Zen 5 core
#: built for znver3, against 60-64 for 8 x 32 (32 ymm accumulators: spilled), ~69 for 8 x 8
#: (1.1 loads per FMA) and ~60-85 for 6 x 16 (the same at B = 64, a third of a block wasted at
#: B = 16). 128-bit (SSE, NEON): untuned, the AVX2 tile.
#: Each output lane's sum runs in the same order whatever the tile: results have the same bits
#: on every target with FMA (LLVM's generic x86-64 has none, so it rounds differently).
LANES, ROWS = (32, 8) if vector_bits() == 512 else (16, 4)

# The per-lane helpers are written flat (all lanes in one expression, no nested helper calls) and
# inlined at Numba-IR level (``inline="always"``): Numba's IR inlining is slow to compile, so one
# inlining per use rather than five keeps the cold compile short; calls to Numba functions are
# not inlined by LLVM, so the block-sized helpers below them are ordinary (called) functions.
# Each takes a view ``v = w[o:o + LANES]`` sliced once by the caller (a slice costs a bounds
# clamp and a branch). A block is ``LANES // 8`` 8-tuples, a tile ``ROWS`` blocks. Helper ``x``
# comes as ``x_32``/``x_16`` (lanes) or ``x_8``/``x_4`` (rows); ``x`` names this target's.


@njit(inline="always")
def _fmav_32(a, s, v):
    """``a + s * v[:32]``."""
    a0, a1, a2, a3 = a
    return ((a0[0] + s * v[0], a0[1] + s * v[1], a0[2] + s * v[2], a0[3] + s * v[3],
             a0[4] + s * v[4], a0[5] + s * v[5], a0[6] + s * v[6], a0[7] + s * v[7]),
            (a1[0] + s * v[8], a1[1] + s * v[9], a1[2] + s * v[10], a1[3] + s * v[11],
             a1[4] + s * v[12], a1[5] + s * v[13], a1[6] + s * v[14], a1[7] + s * v[15]),
            (a2[0] + s * v[16], a2[1] + s * v[17], a2[2] + s * v[18], a2[3] + s * v[19],
             a2[4] + s * v[20], a2[5] + s * v[21], a2[6] + s * v[22], a2[7] + s * v[23]),
            (a3[0] + s * v[24], a3[1] + s * v[25], a3[2] + s * v[26], a3[3] + s * v[27],
             a3[4] + s * v[28], a3[5] + s * v[29], a3[6] + s * v[30], a3[7] + s * v[31]))


@njit(inline="always")
def _fmav_16(a, s, v):
    """``a + s * v[:16]``."""
    a0, a1 = a
    return ((a0[0] + s * v[0], a0[1] + s * v[1], a0[2] + s * v[2], a0[3] + s * v[3],
             a0[4] + s * v[4], a0[5] + s * v[5], a0[6] + s * v[6], a0[7] + s * v[7]),
            (a1[0] + s * v[8], a1[1] + s * v[9], a1[2] + s * v[10], a1[3] + s * v[11],
             a1[4] + s * v[12], a1[5] + s * v[13], a1[6] + s * v[14], a1[7] + s * v[15]))


@njit(inline="always")
def _loadv_32(v):
    return ((v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]),
            (v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]),
            (v[16], v[17], v[18], v[19], v[20], v[21], v[22], v[23]),
            (v[24], v[25], v[26], v[27], v[28], v[29], v[30], v[31]))


@njit(inline="always")
def _loadv_16(v):
    return ((v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]),
            (v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]))


@njit(inline="always")
def _storev_32(v, a):
    a0, a1, a2, a3 = a
    v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7] = a0
    v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15] = a1
    v[16], v[17], v[18], v[19], v[20], v[21], v[22], v[23] = a2
    v[24], v[25], v[26], v[27], v[28], v[29], v[30], v[31] = a3


@njit(inline="always")
def _storev_16(v, a):
    a0, a1 = a
    v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7] = a0
    v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15] = a1


@njit(inline="always")
def _addv_32(a, v):
    a0, a1, a2, a3 = a
    return ((a0[0] + v[0], a0[1] + v[1], a0[2] + v[2], a0[3] + v[3],
             a0[4] + v[4], a0[5] + v[5], a0[6] + v[6], a0[7] + v[7]),
            (a1[0] + v[8], a1[1] + v[9], a1[2] + v[10], a1[3] + v[11],
             a1[4] + v[12], a1[5] + v[13], a1[6] + v[14], a1[7] + v[15]),
            (a2[0] + v[16], a2[1] + v[17], a2[2] + v[18], a2[3] + v[19],
             a2[4] + v[20], a2[5] + v[21], a2[6] + v[22], a2[7] + v[23]),
            (a3[0] + v[24], a3[1] + v[25], a3[2] + v[26], a3[3] + v[27],
             a3[4] + v[28], a3[5] + v[29], a3[6] + v[30], a3[7] + v[31]))


@njit(inline="always")
def _addv_16(a, v):
    a0, a1 = a
    return ((a0[0] + v[0], a0[1] + v[1], a0[2] + v[2], a0[3] + v[3],
             a0[4] + v[4], a0[5] + v[5], a0[6] + v[6], a0[7] + v[7]),
            (a1[0] + v[8], a1[1] + v[9], a1[2] + v[10], a1[3] + v[11],
             a1[4] + v[12], a1[5] + v[13], a1[6] + v[14], a1[7] + v[15]))


@njit(inline="always")
def _tanh8(a):
    return (_tanh(a[0]), _tanh(a[1]), _tanh(a[2]), _tanh(a[3]),
            _tanh(a[4]), _tanh(a[5]), _tanh(a[6]), _tanh(a[7]))


@njit(inline="always")
def _tanhv_32(a):
    return _tanh8(a[0]), _tanh8(a[1]), _tanh8(a[2]), _tanh8(a[3])


@njit(inline="always")
def _tanhv_16(a):
    return _tanh8(a[0]), _tanh8(a[1])


@njit(inline="always")
def _relu8(a):
    return (_relu(a[0]), _relu(a[1]), _relu(a[2]), _relu(a[3]),
            _relu(a[4]), _relu(a[5]), _relu(a[6]), _relu(a[7]))


@njit(inline="always")
def _reluv_32(a):
    return _relu8(a[0]), _relu8(a[1]), _relu8(a[2]), _relu8(a[3])


@njit(inline="always")
def _reluv_16(a):
    return _relu8(a[0]), _relu8(a[1])


@njit(inline="always")
def _dz8_relu(g, dy, y, o):
    return ((g[o] + dy[o]) * _relu_grad(y[o]), (g[o + 1] + dy[o + 1]) * _relu_grad(y[o + 1]),
            (g[o + 2] + dy[o + 2]) * _relu_grad(y[o + 2]),
            (g[o + 3] + dy[o + 3]) * _relu_grad(y[o + 3]),
            (g[o + 4] + dy[o + 4]) * _relu_grad(y[o + 4]),
            (g[o + 5] + dy[o + 5]) * _relu_grad(y[o + 5]),
            (g[o + 6] + dy[o + 6]) * _relu_grad(y[o + 6]),
            (g[o + 7] + dy[o + 7]) * _relu_grad(y[o + 7]))


@njit(inline="always")
def _dzv_relu_32(g, dy, y):
    return (_dz8_relu(g, dy, y, 0), _dz8_relu(g, dy, y, 8), _dz8_relu(g, dy, y, 16),
            _dz8_relu(g, dy, y, 24))


@njit(inline="always")
def _dzv_relu_16(g, dy, y):
    return _dz8_relu(g, dy, y, 0), _dz8_relu(g, dy, y, 8)


@njit(inline="always")
def _dz8(g, dy, y, o):
    one = y.dtype.type(1)
    return ((g[o] + dy[o]) * (one - y[o] * y[o]),
            (g[o + 1] + dy[o + 1]) * (one - y[o + 1] * y[o + 1]),
            (g[o + 2] + dy[o + 2]) * (one - y[o + 2] * y[o + 2]),
            (g[o + 3] + dy[o + 3]) * (one - y[o + 3] * y[o + 3]),
            (g[o + 4] + dy[o + 4]) * (one - y[o + 4] * y[o + 4]),
            (g[o + 5] + dy[o + 5]) * (one - y[o + 5] * y[o + 5]),
            (g[o + 6] + dy[o + 6]) * (one - y[o + 6] * y[o + 6]),
            (g[o + 7] + dy[o + 7]) * (one - y[o + 7] * y[o + 7]))


@njit(inline="always")
def _dzv_32(g, dy, y):
    return _dz8(g, dy, y, 0), _dz8(g, dy, y, 8), _dz8(g, dy, y, 16), _dz8(g, dy, y, 24)


@njit(inline="always")
def _dzv_16(g, dy, y):
    return _dz8(g, dy, y, 0), _dz8(g, dy, y, 8)


@njit(inline="always")
def _zerov_32(w):
    z = w.dtype.type(0)
    a = (z, z, z, z, z, z, z, z)
    return a, a, a, a


@njit(inline="always")
def _zerov_16(w):
    z = w.dtype.type(0)
    a = (z, z, z, z, z, z, z, z)
    return a, a


# the row tile: ``r`` a tuple of ROWS row indices, ``acc`` a tuple of ROWS blocks

@njit(inline="always")
def _rows_8(i0, last):
    """Indices ``i0..i0+7`` clamped to ``last`` (a short last group repeats its last index)."""
    return (i0, min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last), min(i0 + 4, last),
            min(i0 + 5, last), min(i0 + 6, last), min(i0 + 7, last))


@njit(inline="always")
def _rows_4(i0, last):
    """Indices ``i0..i0+3`` clamped to ``last``."""
    return i0, min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last)


@njit(inline="always")
def _fmar_8(acc, src, r, k, w):
    """``acc[i] + src[r[i], k] * w`` for the 8 rows."""
    return (_fmav(acc[0], src[r[0], k], w), _fmav(acc[1], src[r[1], k], w),
            _fmav(acc[2], src[r[2], k], w), _fmav(acc[3], src[r[3], k], w),
            _fmav(acc[4], src[r[4], k], w), _fmav(acc[5], src[r[5], k], w),
            _fmav(acc[6], src[r[6], k], w), _fmav(acc[7], src[r[7], k], w))


@njit(inline="always")
def _fmar_4(acc, src, r, k, w):
    """``acc[i] + src[r[i], k] * w`` for the 4 rows."""
    return (_fmav(acc[0], src[r[0], k], w), _fmav(acc[1], src[r[1], k], w),
            _fmav(acc[2], src[r[2], k], w), _fmav(acc[3], src[r[3], k], w))


@njit(inline="always")
def _splat_8(a):
    return a, a, a, a, a, a, a, a


@njit(inline="always")
def _splat_4(a):
    return a, a, a, a


def _for_target(*variants):
    """The variant of a helper for this target: the first for AVX-512, the second otherwise."""
    return variants[0] if LANES == 32 else variants[1]


_fmav = _for_target(_fmav_32, _fmav_16)
_loadv = _for_target(_loadv_32, _loadv_16)
_storev = _for_target(_storev_32, _storev_16)
_addv = _for_target(_addv_32, _addv_16)
_tanhv = _for_target(_tanhv_32, _tanhv_16)
_dzv = _for_target(_dzv_32, _dzv_16)
_reluv = _for_target(_reluv_32, _reluv_16)
_dzv_relu = _for_target(_dzv_relu_32, _dzv_relu_16)
_zero = _for_target(_zerov_32, _zerov_16)  # a block of zeros of w's dtype: _zero(w)
_rows = _for_target(_rows_8, _rows_4)
_fmar = _for_target(_fmar_8, _fmar_4)
_splat = _for_target(_splat_8, _splat_4)


@njit(inline="always")
def _fma_at(a, s, w, o):
    """``a + s * w[o:o+LANES]``."""
    return _fmav(a, s, w[o:o + LANES])


@njit(inline="always")
def _load_at(w, o):
    return _loadv(w[o:o + LANES])


@njit(inline="always")
def _store_at(out, o, a):
    """``out[o:o+LANES] = a`` (all loads of a block happen before its stores)."""
    _storev(out[o:o + LANES], a)


@njit(inline="always")
def _add_at(a, w, o):
    return _addv(a, w[o:o + LANES])


@njit(**JIT_OPTIONS)
def _store_rows(out, r, o, acc):
    """``out[r[i], o:o+LANES] = acc[i]`` for the tile's rows (repeated rows store equal values).
    Called, not inlined: once per tile, after its K-long loop."""
    for i in range(ROWS):
        _store_at(out[r[i]], o, acc[i])


@njit(**JIT_OPTIONS)
def _act_rows(yt, nxt, lo, hi, j0, relu):
    """``yt[b, j0:j0+LANES] = nxt[b, j0:j0+LANES] = f(yt[b, j0:j0+LANES])`` for rows ``lo:hi``,
    f relu (``relu``) or tanh. Called, not inlined (inlined tanh blocks per use would cost
    seconds of compile each), once per row group: one call per row cost ~15% of the forward;
    the flag is tested once per call, outside the straight-line lanes SLP vectorises."""
    if relu:
        for b in range(lo, hi):
            a = _reluv(_load_at(yt[b], j0))
            _store_at(yt[b], j0, a)
            _store_at(nxt[b], j0, a)
    else:
        for b in range(lo, hi):
            a = _tanhv(_load_at(yt[b], j0))
            _store_at(yt[b], j0, a)
            _store_at(nxt[b], j0, a)


@njit(**JIT_OPTIONS)
def _dz_at(g, dy, y, o, relu):
    """``(g + dy) * f'(y)`` on lanes ``o:o+LANES``: ``y > 0`` (relu) or ``1 - y*y`` (tanh). The
    flag is tested here, in a called function, not in :func:`_backward_chunk`'s loops (see
    there)."""
    if relu:
        return _dzv_relu(g[o:o + LANES], dy[o:o + LANES], y[o:o + LANES])
    return _dzv(g[o:o + LANES], dy[o:o + LANES], y[o:o + LANES])


@njit(inline="always")
def _running(lengths, t, lo, hi):
    """Whether any of rows ``lo:hi`` is still running at step ``t``."""
    for b in range(lo, hi):
        if t < lengths[b]:
            return True
    return False


@njit(inline="always")
def num_chunks_k(batch):
    rows = chunk_rows(batch)
    return (batch + rows - 1) // rows


@njit(**JIT_OPTIONS)
def _vecmat(a, b0, last, m, K, out):
    """``out[b, :NP] = a[b, :K] @ m[:K, :NP]`` for the :data:`ROWS` rows from ``b0`` (clamped to
    ``last``: repeated rows write equal values); ``NP = out.shape[1]``, a multiple of 32,
    ``m [>=K, >=NP]``. One register tile per LANES columns."""
    r = _rows(b0, last)
    for n0 in range(0, out.shape[1], LANES):
        acc = _splat(_zero(m))
        for k in range(K):
            acc = _fmar(acc, a, r, k, m[k, n0:n0 + LANES])
        _store_rows(out, r, n0, acc)


# ---------------------------------------------------------------------------------------------
# forward

def _forward_callees(x, h0, wih_t, whh_t, bias, lengths, y, h_n, hbuf, relu):
    """:func:`forward_kernel`'s callee typed as it calls it (``ParallelKernel``'s ``prepare``)."""
    rest = map(typeof, (h0, wih_t, whh_t, bias, lengths, y, h_n, hbuf))
    return [(_forward_chunk, (typeof(x).copy(layout="A"), *rest, types.int64, types.int64,
                              typeof(relu)))], []


@functools.partial(ParallelKernel, prepare=_forward_callees)
def forward_kernel(x, h0, wih_t, whh_t, bias, lengths, y, h_n, hbuf, relu):
    """One layer forward. Arguments as :func:`_forward_chunk`; prange over chunks of rows."""
    B = x.shape[1]
    rows = chunk_rows(B)
    for c in prange(num_chunks_k(B)):
        _forward_chunk(x[:, :, :x.shape[2]], h0, wih_t, whh_t, bias, lengths, y, h_n, hbuf,
                       c * rows, min(B, c * rows + rows), relu)


@njit(**JIT_OPTIONS)
def _forward_chunk(x, h0, wih_t, whh_t, bias, lengths, y, h_n, hbuf, lo, hi, relu):
    """Rows ``lo:hi`` of one layer's forward, all steps (one thread).

    x [T,B,I] time-major view, any strides (columns < I read)   h0 [B,H]
    wih_t [>=I,HP] = W_ih^T zero-padded   whh_t [>=H,HP]   bias [HP] (zero-padded)   lengths [B]
    y [T,B,HP] out, C-contiguous, padded (padding lanes come out 0 = tanh(0))   h_n [B,H] out
    hbuf [2,B,HP] workspace (state, double-buffered). Outputs must not alias inputs.
    relu: relu, else tanh (both 0 at 0: the padding lanes stay 0).
    Per step and tile of ROWS rows x LANES lanes: (I+H) tile FMAs, then the vector f.
    """
    T, _, I = x.shape
    H = h_n.shape[1]
    HP = bias.shape[0]
    for b in range(lo, hi):
        for j in range(H):
            hbuf[0, b, j] = h0[b, j]
        for j in range(H, HP):
            hbuf[0, b, j] = 0
    for t in range(T):
        cur = hbuf[t & 1]
        cur_a = hbuf[t & 1, :, :HP]  # the same, typed A-layout like xt
        nxt = hbuf[(t + 1) & 1]
        xt = x[t]
        yt = y[t]
        for b0 in range(lo, hi, ROWS):
            r = _rows(b0, hi - 1)  # a short last tile repeats its last row
            if _running(lengths, t, b0, min(b0 + ROWS, hi)):
                for j0 in range(0, HP, LANES):
                    acc = _splat(_load_at(bias, j0))
                    # input projection fused (its FMAs fill latency gaps), then the state; one
                    # loop body for both (same types: A-layout sources) halves the compile
                    for part in range(2):
                        src = xt if part == 0 else cur_a
                        m = wih_t if part == 0 else whh_t
                        for k in range(I if part == 0 else H):
                            acc = _fmar(acc, src, r, k, m[k, j0:j0 + LANES])
                    # pre-activations; the tanh runs in place, one code copy for all rows
                    _store_rows(yt, r, j0, acc)
                    _act_rows(yt, nxt, b0, min(b0 + ROWS, hi), j0, relu)
            for b in range(b0, min(b0 + ROWS, hi)):
                if t >= lengths[b]:  # past the length: state carried, output zero
                    for j in range(HP):
                        nxt[b, j] = cur[b, j]
                        yt[b, j] = 0
    last = hbuf[T & 1]
    for b in range(lo, hi):
        for j in range(H):
            h_n[b, j] = last[b, j]


# ---------------------------------------------------------------------------------------------
# backward

def _backward_callees(dy, dh_n, x, h0, wih_p, whh_p, y, lengths, dx, dh0, dw_ih, dw_hh, db,
                      dhbuf, dz, part_ih, part_hh, part_b, relu):
    """:func:`backward_kernel`'s callees typed as it calls them, in two halves of ~3.5 s of
    cold compile each (``ParallelKernel``'s ``prepare``)."""
    t = typeof
    span = (types.int64, types.int64)
    here = [(_backward_chunk, (*map(t, (dy, dh_n, whh_p, y, lengths, dh0, dhbuf, dz)), *span,
                                t(relu))),
            (_dx_chunk, (t(dz), t(wih_p), t(dx), *span))]
    there = [(_weight_grads_chunk, (t(x).copy(layout="A"), t(h0), t(y), t(dz), t(part_ih[0]),
                                    t(part_hh[0]), t(part_b[0]), *span))]
    return here, there


@functools.partial(ParallelKernel, prepare=_backward_callees)
def backward_kernel(dy, dh_n, x, h0, wih_p, whh_p, y, lengths, dx, dh0, dw_ih, dw_hh, db,
                    dhbuf, dz, part_ih, part_hh, part_b, relu):
    """BPTT of one layer: :func:`_backward_chunk`, :func:`_dx_chunk` and
    :func:`_weight_grads_chunk` per chunk (prange), then a fixed-order sum of the chunks' partial
    gradients (prange over units).

    dw_ih [H,I], dw_hh [H,H], db [H] out; part_ih [NC,I,HP], part_hh [NC,H,HP], part_b [NC,HP]
    workspaces with NC = num_chunks(B); the rest as in the chunk functions.
    """
    T, B, I = x.shape
    H = dh0.shape[1]
    rows = chunk_rows(B)
    for c in prange(num_chunks_k(B)):
        lo = c * rows
        hi = min(B, lo + rows)
        _backward_chunk(dy, dh_n, whh_p, y, lengths, dh0, dhbuf, dz, lo, hi, relu)
        _dx_chunk(dz, wih_p, dx, lo, hi)
        _weight_grads_chunk(x[:, :, :I], h0, y, dz, part_ih[c], part_hh[c], part_b[c], lo, hi)
    # fixed-order reduction over chunks; each output row has one owner
    nc = num_chunks_k(B)
    for j in prange(H):
        for i in range(I):
            s = part_ih[0, i, j]
            for c in range(1, nc):
                s += part_ih[c, i, j]
            dw_ih[j, i] = s
        for k in range(H):
            s = part_hh[0, k, j]
            for c in range(1, nc):
                s += part_hh[c, k, j]
            dw_hh[j, k] = s
        s = part_b[0, j]
        for c in range(1, nc):
            s += part_b[c, j]
        db[j] = s


@njit(**JIT_OPTIONS)
def _backward_chunk(dy, dh_n, whh_p, y, lengths, dh0, dhbuf, dz, lo, hi, relu):
    """Rows ``lo:hi`` of the BPTT recurrence: ``dz`` and ``dh0`` (one thread).

    dy [T,B,HP] padded, C (zeros where no gradient flows in from above; padding lanes 0)
    dh_n [B,H]   whh_p [H,HP] = W_hh zero-padded   y [T,B,HP] the forward's padded output
    lengths [B]   dh0 [B,H] out   dhbuf [2,B,HP], dz [T,B,HP] workspaces (dz is read by
    :func:`_dx_chunk` and :func:`_weight_grads_chunk`; 0 past a length). Outputs must not
    alias inputs or each other. Per step and row tile: the dz lanes, then H tile FMAs. No
    flags tested here: a runtime flag in here kept SLP from vectorising the dz lanes and made the
    whole recurrence 3x slower; ``relu`` (relu, else tanh) goes to :func:`_dz_at`, which tests
    it.
    """
    T = y.shape[0]
    H = dh0.shape[1]
    HP = whh_p.shape[1]
    for b in range(lo, hi):
        for j in range(H):
            dhbuf[T & 1, b, j] = dh_n[b, j]
        for j in range(H, HP):
            dhbuf[T & 1, b, j] = 0
    for t in range(T - 1, -1, -1):
        cur = dhbuf[(t + 1) & 1]  # dL/dh_t
        nxt = dhbuf[t & 1]        # dL/dh_{t-1}
        dzt = dz[t]
        for b in range(lo, hi):
            if t < lengths[b]:
                for j0 in range(0, HP, LANES):
                    _store_at(dzt[b], j0, _dz_at(cur[b], dy[t, b], y[t, b], j0, relu))
            else:
                for j in range(HP):
                    dzt[b, j] = 0
        for b0 in range(lo, hi, ROWS):
            if _running(lengths, t, b0, min(b0 + ROWS, hi)):
                _vecmat(dzt, b0, hi - 1, whh_p, H, nxt)
            for b in range(b0, min(b0 + ROWS, hi)):
                if t >= lengths[b]:
                    for j in range(HP):
                        nxt[b, j] = cur[b, j]
    for b in range(lo, hi):
        for j in range(H):
            dh0[b, j] = dhbuf[0, b, j]


@njit(**JIT_OPTIONS)
def _dx_chunk(dz, wih_p, dx, lo, hi):
    """Rows ``lo:hi`` of ``dx_t = dz_t W_ih`` for every step, after the recurrence (it is not on
    its critical path). dz [T,B,HP] (0 past a length, so dx is 0 there)   wih_p [H,IP] = W_ih
    zero-padded to IP = padded(I) columns   dx [T,B,IP] out, padded, C."""
    H = wih_p.shape[0]
    for t in range(dz.shape[0]):
        for b0 in range(lo, hi, ROWS):
            _vecmat(dz[t], b0, hi - 1, wih_p, H, dx[t])


@njit(**JIT_OPTIONS)
def _weight_grads_chunk(x, h0, y, dz, pih, phh, pb, lo, hi):
    """This chunk's weight gradients, transposed: ``pih[i, :] = sum_{t,b} x[t,b,i] dz[t,b,:]``,
    ``phh[k, :]`` likewise with the previous state, ``pb = sum dz`` (rows ``lo:hi``).

    x [T,B,I] any strides   h0 [B,H]   y [T,B,HP] padded forward output   dz [T,B,HP]
    pih [>=I,HP], phh [H,HP], pb [HP] out (this chunk's partials, overwritten).
    ROWS features share each pass over ``dz`` (one dz load feeds ROWS tile FMAs); the bias
    takes one more pass, of adds.
    """
    T, _, I = x.shape
    H = h0.shape[1]
    HP = dz.shape[2]
    # A-layout views like x, and a runtime (not literal) shift: one compile of _group
    h0a, ya = h0[:, :H], y[:, :, :H]
    no_shift = lo - lo
    for j0 in range(0, HP, LANES):
        for i0 in range(0, I, ROWS):
            i = _rows(i0, I - 1)  # repeated indices store equal values
            _store_rows(pih, i, j0, _group(x[0], x, no_shift, dz, i, j0, lo, hi))
        for k0 in range(0, H, ROWS):
            k = _rows(k0, H - 1)
            _store_rows(phh, k, j0, _group(h0a, ya, no_shift + 1, dz, k, j0, lo, hi))
        acc = _zero(dz)
        for t in range(T):
            for b in range(lo, hi):
                acc = _add_at(acc, dz[t, b], j0)
        _store_at(pb, j0, acc)


@njit(**JIT_OPTIONS)
def _group(first, rest, shift, dz, k, j0, lo, hi):
    """``sum_{t,b} f_t[b,k] dz[t,b,j0:j0+LANES]`` for the ROWS features ``k`` of the source
    ``f_0 = first [B,>=K]``, ``f_t = rest[t - shift] [T,B,>=K]`` (x: ``first = x[0]``, shift 0;
    previous state: ``first = h0``, ``rest = y``, shift 1, since a running sequence's state at
    t-1 is its output). Rows ``lo:hi``."""
    acc = _splat(_zero(dz))
    for t in range(dz.shape[0]):
        ft = (first if t == 0 else rest[t - shift]).T
        dzt = dz[t]
        for b in range(lo, hi):
            acc = _fmar(acc, ft, k, b, dzt[b, j0:j0 + LANES])
    return acc


@njit(**JIT_OPTIONS)
def tanh_kernel(x, out):
    """``out[i] = tanh(x[i])`` with the kernels' own tanh (rational for float32); x, out [N]."""
    for i in range(x.shape[0]):
        out[i] = _tanh(x[i])


# ---------------------------------------------------------------------------------------------
# Python wrappers: the reference's signature, plus optional preallocated outputs


def pad_forward(w_ih: np.ndarray, w_hh: np.ndarray, b: np.ndarray):
    """``(W_ih^T [I,HP], W_hh^T [H,HP], b [HP])`` zero-padded to ``HP = padded(H)`` columns."""
    H, I = w_ih.shape
    HP = padded(H)
    wih_t = np.zeros((I, HP), w_ih.dtype)
    whh_t = np.zeros((H, HP), w_ih.dtype)
    bias = np.zeros(HP, w_ih.dtype)
    wih_t[:, :H] = w_ih.T
    whh_t[:, :H] = w_hh.T
    bias[:H] = b
    return wih_t, whh_t, bias


def pad_backward(w_ih: np.ndarray, w_hh: np.ndarray):
    """``(W_ih [H,padded(I)], W_hh [H,padded(H)])`` zero-padded on the column side."""
    H, I = w_ih.shape
    wih_p = np.zeros((H, padded(I)), w_ih.dtype)
    whh_p = np.zeros((H, padded(H)), w_ih.dtype)
    wih_p[:, :I] = w_ih
    whh_p[:, :H] = w_hh
    return wih_p, whh_p


def _tm(a: np.ndarray, time_major: bool) -> np.ndarray:
    return a if time_major else a.swapaxes(0, 1)


def _full_lengths(lengths, B: int, T: int) -> np.ndarray:
    if lengths is None:
        return np.full(B, T, np.int32)
    return np.asarray(lengths)


def rnn_forward(x: np.ndarray, h0: np.ndarray | None, w_ih: np.ndarray, w_hh: np.ndarray,
                b: np.ndarray, lengths: np.ndarray | None = None, time_major: bool = False,
                nonlinearity: str = "tanh", y: np.ndarray | None = None,
                h_n: np.ndarray | None = None):
    """One RNN layer over all steps; see :func:`fastrnn.reference.rnn_forward`.

    Parameters
    ----------
    x : [B,T,I] (or [T,B,I] if ``time_major``), float32 or float64, any strides.
    h0 : [B,H] or None (zeros).  w_ih : [H,I].  w_hh : [H,H].  b : [H].
    lengths : [B] int or None (all T).
    nonlinearity : "tanh" or "relu".
    y, h_n : optional preallocated outputs, [B,T,H] (layout of x) and [B,H].

    Returns
    -------
    y : [B,T,H] (layout of x), h_n : [B,H]
    """
    xs = _tm(x, time_major)
    T, B, _ = xs.shape
    H = w_hh.shape[0]
    HP = padded(H)
    dt = x.dtype
    if h0 is None:
        h0 = np.zeros((B, H), dt)
    if y is None:
        y = np.empty((T, B, H) if time_major else (B, T, H), dt)
    if h_n is None:
        h_n = np.empty((B, H), dt)
    wih_t, whh_t, bias = pad_forward(w_ih, w_hh, b)
    y_pad = np.empty((T, B, HP), dt)  # the kernel writes whole 32-lane rows
    forward_kernel(xs, h0, wih_t, whh_t, bias, _full_lengths(lengths, B, T), y_pad, h_n,
                   np.empty((2, B, HP), dt), nonlinearity == "relu")
    _tm(y, time_major)[...] = y_pad[:, :, :H]
    return y, h_n


def rnn_backward(dy: np.ndarray | None, dh_n: np.ndarray | None, x: np.ndarray,
                 h0: np.ndarray | None, w_ih: np.ndarray, w_hh: np.ndarray, y: np.ndarray,
                 lengths: np.ndarray | None = None, time_major: bool = False,
                 nonlinearity: str = "tanh", out=None):
    """BPTT of :func:`rnn_forward`; see :func:`fastrnn.reference.rnn_backward`.

    Parameters
    ----------
    dy : [B,T,H] (layout of x) or None.  dh_n : [B,H] or None.  x, h0, w_ih, w_hh, lengths,
    time_major, nonlinearity : as in :func:`rnn_forward`.  y : the forward output.
    out : optional preallocated ``(dx, dh0, dw_ih, dw_hh, db)``.

    Returns
    -------
    dx (layout of x), dh0 [B,H], dw_ih [H,I], dw_hh [H,H], db [H]
    """
    xs = _tm(x, time_major)
    T, B, I = xs.shape
    H = w_hh.shape[0]
    HP, IP = padded(H), padded(I)
    dt = x.dtype
    if h0 is None:
        h0 = np.zeros((B, H), dt)
    if dh_n is None:
        dh_n = np.zeros((B, H), dt)
    if out is None:
        out = (np.empty_like(x), np.empty((B, H), dt), np.empty((H, I), dt),
               np.empty((H, H), dt), np.empty(H, dt))
    dx, dh0, dw_ih, dw_hh, db = out
    # the kernels read and write whole 32-lane rows: padded time-major copies (padding zero)
    y_pad = np.zeros((T, B, HP), dt)
    y_pad[:, :, :H] = _tm(y, time_major)
    dy_pad = np.zeros((T, B, HP), dt)
    if dy is not None:
        dy_pad[:, :, :H] = _tm(dy, time_major)
    dx_pad = np.empty((T, B, IP), dt)
    wih_p, whh_p = pad_backward(w_ih, w_hh)
    nc = num_chunks(B)
    backward_kernel(dy_pad, dh_n, xs, h0, wih_p, whh_p, y_pad, _full_lengths(lengths, B, T),
                    dx_pad, dh0, dw_ih, dw_hh, db, np.empty((2, B, HP), dt),
                    np.zeros((T, B, HP), dt), np.empty((nc, I, HP), dt),
                    np.empty((nc, H, HP), dt), np.empty((nc, HP), dt), nonlinearity == "relu")
    _tm(dx, time_major)[...] = dx_pad[:, :, :I]
    return dx, dh0, dw_ih, dw_hh, db


def tanh(x: np.ndarray) -> np.ndarray:
    """The kernels' tanh on a 1-D array (rational for float32, ``math.tanh`` for float64)."""
    out = np.empty_like(x)
    tanh_kernel(x, out)
    return out
