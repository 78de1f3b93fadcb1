// rnn_backward.cu: BPTT of one tanh RNN layer (rnn_forward.cu), one launch per layer for the
// recurrence plus one for the weight gradients (float32).
//
//   g_t  = dy_t + dh_t                       (dh_T = dh_n; dy may be NULL: zeros)
//   dz_t = g_t * (1 - y_t*y_t)  for t < lengths[b], else 0   (tanh' from the saved output)
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
//                    free. Per step: 32 shuffles + 64 FMA; no barrier.
//                    launch: cuda_launch.bwd_warp_launch(B) (grid ceil(B/wpb), block 32*wpb).
//   rnn_bwd_block    any H <= 1024: seq_per_block sequences per block, thread k owns unit k;
//                    dz_t of the block's sequences in a shared double buffer, one __syncthreads
//                    per step; W_hh (row-major, read w_hh[i*H + k]: coalesced over k) staged in
//                    shared memory when it fits. dx = dz W_ih is a GEMM after the launch.
//                    launch: cuda_launch.bwd_block_launch(B, H, *block_plan(B, H)).
//   rnn_weight_grads dW_ih | dW_hh | db as one [H, I+H+1] output, each element a fixed-order sum
//                    over the B*T (b, t) pairs: deterministic, no atomics. Block: 32 columns x
//                    WG_ROWS rows, WG_WARPS warps each summing a contiguous chunk of (b, t), then
//                    a fixed-order sum of the WG_WARPS partials in shared memory.
//                    launch: cuda_launch.wgrad_launch(I, H).
//
// Checked by: pytest tests/test_cuda_compile.py, pytest -m cuda_emu tests/test_cuda_emu.py,
// pytest -m gpu tests/test_kernels_gpu.py; timed by bench/gpu_check.sh.
#include "common.cuh"

// Rows of dW per block and warps per block of rnn_weight_grads; must equal cuda_launch.WGRAD_ROWS
// and cuda_launch.WGRAD_WARPS.
#define WG_ROWS 4
#define WG_WARPS 8

// dy [.., H] nullable, strides sy; dh_n [B,H] nullable; w_ih [H,I] (nullable when dx is NULL);
// w_hh [H,H]; y [.., H] strides sy; lengths [B] nullable; dz [.., H] out, strides sy, may alias
// dy (each element is read before it is written, by the same thread); dx [.., I] out, strides sx,
// nullable, needs I <= 32; dh0 [B,H] out.
extern "C" __global__ void rnn_bwd_warp(
    const float* dy, const float* __restrict__ dh_n, const float* __restrict__ w_ih,
    const float* __restrict__ w_hh, const float* __restrict__ y, const int* __restrict__ lengths,
    float* dz, float* __restrict__ dx, float* __restrict__ dh0,
    int B, int T, int I, int H, int sy_b, int sy_t, int sx_b, int sx_t)
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

    // y and dy of step t are loaded one step ahead (they do not depend on the chain).
    float yv = 0.f, dyv = 0.f;
    if (len > 0 && unit) {
        yv = y[yo + (long long)(len - 1) * sy_t + lane];
        dyv = dy != nullptr ? dy[yo + (long long)(len - 1) * sy_t + lane] : 0.f;
    }
    for (int t = len - 1; t >= 0; --t) {
        float yn = 0.f, dyn = 0.f;
        if (t > 0 && unit) {
            yn = y[yo + (long long)(t - 1) * sy_t + lane];
            dyn = dy != nullptr ? dy[yo + (long long)(t - 1) * sy_t + lane] : 0.f;
        }
        const float d = (dyv + dh) * (1.f - yv * yv);  // 0 on lanes >= H
        if (unit) dz[yo + (long long)t * sy_t + lane] = d;
        float a0 = 0.f, a1 = 0.f, c0 = 0.f, c1 = 0.f;
#pragma unroll
        for (int i = 0; i < 32; i += 2) {
            const float d0 = __shfl_sync(FULL_MASK, d, i);
            const float d1 = __shfl_sync(FULL_MASK, d, i + 1);
            a0 += whc[i] * d0;
            a1 += whc[i + 1] * d1;
            c0 += wic[i] * d0;
            c1 += wic[i + 1] * d1;
        }
        dh = a0 + a1;
        if (want_dx && lane < I) dx[xo + (long long)t * sx_t + lane] = c0 + c1;
        yv = yn;
        dyv = dyn;
    }
    if (unit) dh0[(long long)seq * H + lane] = dh;
}

// As rnn_bwd_warp without dx; w_hh [H,H] row-major (not transposed). Dynamic shared:
// zbuf [2][seq_per_block][H], then W_hh [H*H] when w_in_smem.
extern "C" __global__ void rnn_bwd_block(
    const float* dy, const float* __restrict__ dh_n, const float* __restrict__ w_hh,
    const float* __restrict__ y, const int* __restrict__ lengths, float* dz,
    float* __restrict__ dh0, int B, int T, int H, int sy_b, int sy_t, int seq_per_block,
    int w_in_smem)
{
    extern __shared__ float smem[];
    const int S = seq_per_block;
    const int k = threadIdx.x;
    const bool unit = k < H;
    float* zbuf = smem;  // [2][S][H]
    const float* W = w_hh;
    if (w_in_smem) {
        float* ws = smem + 2 * S * H;
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
        dh[s] = (valid && unit && dh_n != nullptr) ? dh_n[(long long)seq * H + k] : 0.f;
        if (valid && unit)  // past the length dz = 0
            for (int t = len[s]; t < T; ++t)
                dz[(long long)seq * sy_b + (long long)t * sy_t + k] = 0.f;
    }

    int p = 0;
    for (int t = maxlen - 1; t >= 0; --t) {  // maxlen is the same in every thread of the block
        float* zp = zbuf + p * S * H;
        if (unit) {
#pragma unroll
            for (int s = 0; s < BLK_MAX_SEQ; ++s) {
                if (s < S) {
                    float d = 0.f;
                    if (t < len[s]) {
                        const long long o = (long long)(seq0 + s) * sy_b + (long long)t * sy_t + k;
                        const float yv = y[o];
                        const float g = (dy != nullptr ? dy[o] : 0.f) + dh[s];
                        d = g * (1.f - yv * yv);
                        dz[o] = d;
                    }
                    zp[s * H + k] = d;
                }
            }
        }
        __syncthreads();  // zbuf[p] complete. The next step writes zbuf[p^1], whose last reads
                          // (one step earlier) all finished before this barrier.
        if (unit) {
            float acc[BLK_MAX_SEQ];
#pragma unroll
            for (int s = 0; s < BLK_MAX_SEQ; ++s) acc[s] = 0.f;
            // per step: H loads of W (coalesced over k) + S*H broadcast reads + S*H FMAs
            for (int i = 0; i < H; ++i) {
                const float w = W[i * H + k];
#pragma unroll
                for (int s = 0; s < BLK_MAX_SEQ; ++s)
                    if (s < S) acc[s] += w * zp[s * H + i];
            }
#pragma unroll
            for (int s = 0; s < BLK_MAX_SEQ; ++s)
                if (s < S && t < len[s]) dh[s] = acc[s];
        }
        p ^= 1;
    }

    if (unit) {
#pragma unroll
        for (int s = 0; s < BLK_MAX_SEQ; ++s)
            if (s < S && seq0 + s < B) dh0[(long long)(seq0 + s) * H + k] = dh[s];
    }
}

// dz [.., H] and y [.., H] strides sy; x [.., I] strides sx; h0 [B,H] nullable (zeros).
// Outputs (overwritten): dw_ih [H,I], dw_hh [H,H], db [H]. Column c of the combined output:
// c < I -> x_t[c]; c < I+H -> h_{t-1}[c-I]; c == I+H -> 1 (bias).
extern "C" __global__ void rnn_weight_grads(
    const float* __restrict__ dz, const float* __restrict__ x, const float* __restrict__ y,
    const float* __restrict__ h0, float* __restrict__ dw_ih, float* __restrict__ dw_hh,
    float* __restrict__ db, int B, int T, int I, int H, int sx_b, int sx_t, int sy_b, int sy_t)
{
    __shared__ float part[WG_WARPS][WG_ROWS][32];
    const int lane = threadIdx.x & 31;
    const int w = threadIdx.x >> 5;
    const int col = blockIdx.x * 32 + lane;
    const int row0 = blockIdx.y * WG_ROWS;
    const int J = I + H + 1;
    const long long N = (long long)B * T;

    float acc[WG_ROWS];
#pragma unroll
    for (int r = 0; r < WG_ROWS; ++r) acc[r] = 0.f;

    if (col < J) {
        // Warp w sums the contiguous chunk [n0, n1) of n = b*T + t.
        const long long chunk = (N + WG_WARPS - 1) / WG_WARPS;
        const long long n0 = w * chunk;
        const long long n1 = n0 + chunk < N ? n0 + chunk : N;
        int b = (int)(n0 / (T > 0 ? T : 1));
        int t = (int)(n0 - (long long)b * T);
        for (long long n = n0; n < n1; ++n) {
            float a;
            if (col < I) {
                a = x[seq_off(b, t, sx_b, sx_t) + col];
            } else if (col < I + H) {
                if (t > 0) a = y[seq_off(b, t - 1, sy_b, sy_t) + (col - I)];
                else a = h0 != nullptr ? h0[(long long)b * H + (col - I)] : 0.f;
            } else {
                a = 1.f;
            }
            const float* zr = dz + seq_off(b, t, sy_b, sy_t);
#pragma unroll
            for (int r = 0; r < WG_ROWS; ++r)
                if (row0 + r < H) acc[r] += zr[row0 + r] * a;
            if (++t == T) { t = 0; ++b; }
        }
    }
#pragma unroll
    for (int r = 0; r < WG_ROWS; ++r) part[w][r][lane] = acc[r];
    __syncthreads();
    if (w == 0 && col < J) {
#pragma unroll
        for (int r = 0; r < WG_ROWS; ++r) {
            const int row = row0 + r;
            if (row >= H) break;
            float s = 0.f;
            for (int q = 0; q < WG_WARPS; ++q) s += part[q][r][lane];  // fixed order
            if (col < I) dw_ih[(long long)row * I + col] = s;
            else if (col < I + H) dw_hh[(long long)row * H + (col - I)] = s;
            else db[row] = s;
        }
    }
}
