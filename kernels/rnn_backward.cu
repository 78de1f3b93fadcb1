// rnn_backward.cu: BPTT of one RNN layer, tanh or relu (rnn_forward.cu), one launch per layer for
// the recurrence plus one for the weight gradients (float32).
//
//   g_t  = dy_t + dh_t                       (dh_T = dh_n; dy may be NULL: zeros)
//   dz_t = g_t * f'(y_t)        for t < lengths[b], else 0   (from the saved output: 1 - y*y,
//                                                             or y > 0 with relu != 0; act_grad)
//   dh_{t-1} = W_hh^T dz_t      for t < lengths[b], else dh_t (carried)        dh0 = dh_{-1}
//   dx_t = W_ih^T dz_t;  dW_ih = sum dz_t x_t^T;  dW_hh = sum dz_t h_{t-1}^T;  db = sum dz_t
// with h_{t-1} = y_{t-1} (t > 0) or h0 (t = 0): a running sequence's state at t-1 is its output.
//
// Layout as in rnn_forward.cu: (b, t, d) at b*s_b + t*s_t + d. dz has the layout (and strides)
// of y. Nullable: dy, dh_n, h0, lengths; dx (then not computed).
//
// Kernels:
//   rnn_bwd_warp     H <= 32: one warp per sequence, lane j keeps column j of W_hh (and, when dx
//                    is wanted, I <= 32, column j of W_ih) in registers; dz_t is broadcast with
//                    __shfl_sync and each shuffled value feeds both dh and dx, so dx is nearly
//                    free. Per step: 32 shuffles + 64 FMA; no barrier. y and dy are read 8 steps
//                    ahead (register rings).
//                    launch: cuda_launch.bwd_warp_launch(B) (grid ceil(B/wpb), block 32*wpb).
//   rnn_bwd_block    any H <= 1024: seq_per_block sequences per block, thread k owns unit k
//                    (block_ksplit(H) slices of threads split each unit's dot product);
//                    dz_t of the block's sequences in a shared double buffer, two __syncthreads
//                    per step; W_hh (row-major, read w_hh[i*H + k]: coalesced over k) staged in
//                    shared memory when it fits. dx = dz W_ih is a GEMM after the launch.
//                    launch: cuda_launch.bwd_block_launch(B, H, *block_plan(B, H)).
//   rnn_wgrad_partial + rnn_wgrad_reduce
//                    dW_ih | dW_hh | db as one [H, I+H+1] output summed over the B*T (b, t) rows
//                    in two launches: blocks over chunks of rows (split-K), each staging its
//                    rows in shared memory with coalesced loads and writing one partial [H, J]
//                    to a scratch buffer; then one thread per output adds the partials in a fixed
//                    order. Deterministic, no atomics. (The one-launch tiled version before it
//                    read 32 different 124-byte rows per warp load: 11.1 us at the showcase
//                    size.) The launcher uses them for H <= 32 (inside the CUDA graph); larger
//                    layers use cuBLAS GEMMs. launch: cuda_launch.wgrad_partial_launch(B, T, I,
//                    H) and cuda_launch.wgrad_reduce_launch(I, H); scratch: wgrad_part_size.
//
// Checked by: pytest tests/test_cuda_compile.py, pytest -m cuda_emu tests/test_cuda_emu.py,
// pytest -m gpu tests/test_kernels_gpu.py; timed by bench/gpu_check.sh.
#include "common.cuh"

// Steps of y and dy that rnn_bwd_warp keeps in flight (register rings).
#define BWD_PF 8

// Warps per block of rnn_wgrad_reduce; must equal cuda_launch.WGRAD_REDUCE_WARPS.
#define WGR_WARPS 8

// dy [.., H] nullable, strides sy; dh_n [B,H] nullable; w_ih [H,I] (nullable when dx is NULL);
// w_hh [H,H]; y [.., H] strides sy; lengths [B] nullable; dz [.., H] out, strides sy, may alias
// dy (each element is read before it is written, by the same thread); dx [.., I] out, strides sx,
// nullable, needs I <= 32; dh0 [B,H] out.
extern "C" __global__ void rnn_bwd_warp(
    const float* dy, const float* __restrict__ dh_n, const float* __restrict__ w_ih,
    const float* __restrict__ w_hh, const float* __restrict__ y, const int* __restrict__ lengths,
    float* dz, float* __restrict__ dx, float* __restrict__ dh0,
    int B, int T, int I, int H, int sy_b, int sy_t, int sx_b, int sx_t, int relu)
{
    const int lane = threadIdx.x & 31;
    const int seq = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (seq >= B) return;  // the whole warp leaves together; there is no block barrier below
    const bool unit = lane < H;
    const bool want_dx = dx != nullptr;

    // Column `lane` of W_hh (dh_j = sum_i W_hh[i,j] dz_i) and of W_ih (dx_k = sum_i W_ih[i,k] dz_i).
    float whc[32], wic[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
        whc[i] = (unit && i < H) ? w_hh[i * H + lane] : 0.f;
        wic[i] = (want_dx && lane < I && i < H) ? w_ih[i * I + lane] : 0.f;
    }
    float dh = (dh_n != nullptr && unit) ? dh_n[(long long)seq * H + lane] : 0.f;
    int len = lengths != nullptr ? lengths[seq] : T;
    len = len < T ? len : T;
    len = len > 0 ? len : 0;

    const long long yo = (long long)seq * sy_b;
    const long long xo = (long long)seq * sx_b;
    // Past the length: dz = 0, dx = 0, dh carried.
    for (int t = len; t < T; ++t) {
        if (unit) dz[yo + (long long)t * sy_t + lane] = 0.f;
        if (want_dx && lane < I) dx[xo + (long long)t * sx_t + lane] = 0.f;
    }

    // y and dy are read BWD_PF steps ahead in register rings (step i of the loop is t = len-1-i):
    // a step is ~100 ns, an L2/DRAM load ~0.5-1 us.
    const bool has_dy = dy != nullptr;
    float yr[BWD_PF], gr[BWD_PF];
#pragma unroll
    for (int i = 0; i < BWD_PF; ++i) {
        const long long o = yo + (long long)(len - 1 - i) * sy_t + lane;
        yr[i] = (i < len && unit) ? y[o] : 0.f;
        gr[i] = (i < len && unit && has_dy) ? dy[o] : 0.f;
    }
    for (int i0 = 0; i0 < len; i0 += BWD_PF) {
        float yn[BWD_PF], gn[BWD_PF];
#pragma unroll
        for (int i = 0; i < BWD_PF; ++i) {
            const int in = i0 + BWD_PF + i;
            const long long o = yo + (long long)(len - 1 - in) * sy_t + lane;
            yn[i] = (in < len && unit) ? y[o] : 0.f;
            gn[i] = (in < len && unit && has_dy) ? dy[o] : 0.f;
        }
#pragma unroll
        for (int i = 0; i < BWD_PF; ++i) {
            if (i0 + i >= len) break;  // warp-uniform
            const int t = len - 1 - (i0 + i);
            const float d = (gr[i] + dh) * act_grad(yr[i], relu);  // 0 on lanes >= H
            // dz may alias dy: this lane read dy at this element BWD_PF steps ago, in gr.
            if (unit) dz[yo + (long long)t * sy_t + lane] = d;
            float a0 = 0.f, a1 = 0.f, c0 = 0.f, c1 = 0.f;
#pragma unroll
            for (int k = 0; k < 32; k += 2) {
                const float d0 = __shfl_sync(FULL_MASK, d, k);
                const float d1 = __shfl_sync(FULL_MASK, d, k + 1);
                a0 += whc[k] * d0;
                a1 += whc[k + 1] * d1;
                c0 += wic[k] * d0;
                c1 += wic[k + 1] * d1;
            }
            dh = a0 + a1;
            if (want_dx && lane < I) dx[xo + (long long)t * sx_t + lane] = c0 + c1;
        }
#pragma unroll
        for (int i = 0; i < BWD_PF; ++i) {
            yr[i] = yn[i];
            gr[i] = gn[i];
        }
    }
    if (unit) dh0[(long long)seq * H + lane] = dh;
}

// As rnn_bwd_warp without dx; w_hh [H,H] row-major (not transposed). Block: KS slices of
// HP = 32*ceil(H/32) threads as in rnn_fwd_block: thread (q, k) sums i in slice q of W_hh^T dz
// for unit k; slice 0 adds the others in order and owns dh. Dynamic shared: zbuf [2][S][H],
// red [KS-1][S][H], then W_hh [H*H] when w_in_smem.
extern "C" __global__ void __launch_bounds__(1024) rnn_bwd_block(
    const float* dy, const float* __restrict__ dh_n, const float* __restrict__ w_hh,
    const float* __restrict__ y, const int* __restrict__ lengths, float* dz,
    float* __restrict__ dh0, int B, int T, int H, int sy_b, int sy_t, int seq_per_block,
    int w_in_smem, int relu)
{
    extern __shared__ float smem[];
    const int S = seq_per_block;
    const int HP = 32 * ((H + 31) / 32);
    const int KS = blockDim.x / HP;
    const int k = threadIdx.x % HP, q = threadIdx.x / HP;
    const bool unit = k < H;
    const bool owner = unit && q == 0;  // holds dh of unit k
    const int ic = (H + KS - 1) / KS;
    const int i0 = q * ic, i1 = i0 + ic < H ? i0 + ic : H;
    float* zbuf = smem;              // [2][S][H]
    float* red = smem + 2 * S * H;   // [KS-1][S][H]
    const float* W = w_hh;
    if (w_in_smem) {
        float* ws = red + (KS - 1) * S * H;
        for (int i = threadIdx.x; i < H * H; i += blockDim.x) ws[i] = w_hh[i];
        W = ws;  // first read after the barrier inside the time loop
    }

    const int seq0 = blockIdx.x * S;
    float dh[BLK_MAX_SEQ];
    int len[BLK_MAX_SEQ];
    int maxlen = 0;
#pragma unroll
    for (int s = 0; s < BLK_MAX_SEQ; ++s) {
        const int seq = seq0 + s;
        const bool valid = s < S && seq < B;
        int l = valid ? (lengths != nullptr ? lengths[seq] : T) : 0;
        l = l < T ? l : T;
        len[s] = l > 0 ? l : 0;
        maxlen = len[s] > maxlen ? len[s] : maxlen;
        dh[s] = (valid && owner && dh_n != nullptr) ? dh_n[(long long)seq * H + k] : 0.f;
        if (valid && owner)  // past the length dz = 0
            for (int t = len[s]; t < T; ++t)
                dz[(long long)seq * sy_b + (long long)t * sy_t + k] = 0.f;
    }

    int p = 0;
    for (int t = maxlen - 1; t >= 0; --t) {  // maxlen is the same in every thread of the block
        float* zp = zbuf + p * S * H;
        if (owner) {
#pragma unroll
            for (int s = 0; s < BLK_MAX_SEQ; ++s) {
                if (s < S) {
                    float d = 0.f;
                    if (t < len[s]) {
                        const long long o = (long long)(seq0 + s) * sy_b + (long long)t * sy_t + k;
                        const float yv = y[o];
                        const float g = (dy != nullptr ? dy[o] : 0.f) + dh[s];
                        d = g * act_grad(yv, relu);
                        dz[o] = d;
                    }
                    zp[s * H + k] = d;
                }
            }
        }
        __syncthreads();  // zbuf[p] complete. The next step writes zbuf[p^1], whose last reads
                          // (one step earlier) all finished before this barrier.
        float acc[BLK_MAX_SEQ];
#pragma unroll
        for (int s = 0; s < BLK_MAX_SEQ; ++s) acc[s] = 0.f;
        if (unit) {
            // per step and thread: ic loads of W (coalesced over k) + S*ic broadcast reads + FMAs
#pragma unroll 4
            for (int i = i0; i < i1; ++i) {
                const float w = W[i * H + k];
#pragma unroll
                for (int s = 0; s < BLK_MAX_SEQ; ++s)
                    if (s < S) acc[s] += w * zp[s * H + i];
            }
            if (q > 0) {
#pragma unroll
                for (int s = 0; s < BLK_MAX_SEQ; ++s)
                    if (s < S) red[((q - 1) * S + s) * H + k] = acc[s];
            }
        }
        if (KS > 1) __syncthreads();  // red complete; the owners read it before the next step's
                                      // first barrier, after which it is rewritten
        if (owner) {
#pragma unroll
            for (int s = 0; s < BLK_MAX_SEQ; ++s) {
                if (s < S && t < len[s]) {
                    float a = acc[s];
                    for (int r = 0; r < KS - 1; ++r) a += red[(r * S + s) * H + k];
                    dh[s] = a;
                }
            }
        }
        p ^= 1;
    }

    if (owner) {
#pragma unroll
        for (int s = 0; s < BLK_MAX_SEQ; ++s)
            if (s < S && seq0 + s < B) dh0[(long long)(seq0 + s) * H + k] = dh[s];
    }
}

// dz [.., H] and y [.., H] strides sy; x [.., I] strides sx; h0 [B,H] nullable (zeros);
// part [gridDim.x, H*J] out (J = I+H+1), overwritten. Row n = b*T + t of the sum has the operands
// dz_t[i] and a[c] = x_t[c] (c < I), h_{t-1}[c-I] (c < I+H), 1 (c == I+H).
//
// Block (g, yb) sums rows [g*rows_per_block, (g+1)*rows_per_block) in chunks of chunk_rows:
// each chunk of dz and a is staged in dynamic shared memory with coalesced loads (consecutive
// threads take consecutive elements of a row: neighbouring rows are contiguous in the batch-major
// layout), then thread task = yb*blockDim.x + tid owns output row i = task / CG and the 8 columns
// cg, cg + CG, ..., cg + 7*CG (cg = task % CG, CG = ceil(J/8)): per staged row one broadcast read
// of dz and 8 conflict-free reads of a for 8 FMA. Rows past the end are staged as zeros.
// Deterministic: a fixed order within the block; rnn_wgrad_reduce adds the blocks in order.
// Dynamic shared: sz [chunk_rows][H], then sa [chunk_rows][8*CG].
// At B=128 T=28 I=28 H=31: 128 blocks of 28 rows, 256 threads (248 tasks), 10.5 KB shared.
extern "C" __global__ void rnn_wgrad_partial(
    const float* __restrict__ dz, const float* __restrict__ x, const float* __restrict__ y,
    const float* __restrict__ h0, float* __restrict__ part, int B, int T, int I, int H,
    int sx_b, int sx_t, int sy_b, int sy_t, int rows_per_block, int chunk_rows)
{
    extern __shared__ float smem[];
    const int J = I + H + 1;
    const int CG = (J + 7) / 8, JP = 8 * CG;
    const int R = chunk_rows;
    float* sz = smem;           // [R][H]
    float* sa = smem + R * H;   // [R][JP]
    const int N = B * T;
    const int nb = blockIdx.x * rows_per_block;
    const int ne = nb + rows_per_block < N ? nb + rows_per_block : N;
    const int task = blockIdx.y * blockDim.x + threadIdx.x;
    const bool owns = task < H * CG;
    const int i = owns ? task / CG : 0, cg = task - (task / CG) * CG;

    float acc[8];
#pragma unroll
    for (int c = 0; c < 8; ++c) acc[c] = 0.f;

    for (int n0 = nb; n0 < ne; n0 += R) {
        if (n0 != nb) __syncthreads();  // every thread is done reading the previous chunk
        for (int e = threadIdx.x; e < R * H; e += blockDim.x) {
            const int r = e / H, k = e - (e / H) * H, n = n0 + r;
            sz[e] = n < ne ? dz[seq_off(n / T, n - (n / T) * T, sy_b, sy_t) + k] : 0.f;
        }
        for (int e = threadIdx.x; e < R * JP; e += blockDim.x) {
            const int r = e / JP, c = e - (e / JP) * JP, n = n0 + r;
            float v = 0.f;
            if (n < ne) {
                const int b = n / T, t = n - (n / T) * T;
                if (c < I) v = x[seq_off(b, t, sx_b, sx_t) + c];
                else if (c < I + H)
                    v = t > 0 ? y[seq_off(b, t - 1, sy_b, sy_t) + (c - I)]
                              : (h0 != nullptr ? h0[(long long)b * H + (c - I)] : 0.f);
                else if (c == I + H) v = 1.f;
            }
            sa[e] = v;
        }
        __syncthreads();  // the chunk is staged
        if (owns) {
            const int rows = ne - n0 < R ? ne - n0 : R;
#pragma unroll 4
            for (int r = 0; r < rows; ++r) {
                const float z = sz[r * H + i];
                const float* ar = sa + r * JP + cg;
#pragma unroll
                for (int c = 0; c < 8; ++c) acc[c] += z * ar[c * CG];
            }
        }
    }
    if (owns) {
        float* out = part + (long long)blockIdx.x * H * J + (long long)i * J;
#pragma unroll
        for (int c = 0; c < 8; ++c)
            if (cg + c * CG < J) out[cg + c * CG] = acc[c];
    }
}

// part [G, H*J] from rnn_wgrad_partial (J = I+H+1); outputs (overwritten): dw_ih [H,I],
// dw_hh [H,H], db [H]. Block: 32 outputs (lane = output), its WGR_WARPS warps split the G partials
// (warp w adds g = w, w + WGR_WARPS, ... in order: coalesced, independent loads), then warp 0 adds
// the warps' sums in order. At G = 128: 16 loads per thread, 59 blocks for H*J = 1860.
extern "C" __global__ void rnn_wgrad_reduce(
    const float* __restrict__ part, float* __restrict__ dw_ih, float* __restrict__ dw_hh,
    float* __restrict__ db, int G, int I, int H)
{
    __shared__ float red[WGR_WARPS][32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int J = I + H + 1, HJ = H * J;
    const int o = blockIdx.x * 32 + lane;
    float s = 0.f;
    if (o < HJ) {
#pragma unroll 4
        for (int g = w; g < G; g += WGR_WARPS) s += part[(long long)g * HJ + o];
    }
    red[w][lane] = s;
    __syncthreads();
    if (w == 0 && o < HJ) {
        float tot = 0.f;
#pragma unroll
        for (int q = 0; q < WGR_WARPS; ++q) tot += red[q][lane];
        const int i = o / J, c = o - (o / J) * J;
        if (c < I) dw_ih[(long long)i * I + c] = tot;
        else if (c < I + H) dw_hh[(long long)i * H + (c - I)] = tot;
        else db[i] = tot;
    }
}
