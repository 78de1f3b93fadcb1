// rnn_forward.cu: one RNN layer (tanh or relu) over all T steps, one launch per layer (float32).
//
//   z_t = W_ih x_t + W_hh h_{t-1} + b,  h_t = f(z_t)         for t <  lengths[b]
//   f = tanh, or relu when the last argument relu != 0 (common.cuh act_f)
//   y_t = 0 and h_t = h_{t-1} (state carried)                   for t >= lengths[b]
//   h_n = h_{lengths[b]-1}  (h0 when lengths[b] == 0)           (TF sequence_length semantics)
//
// Layout: a sequence tensor with last axis D holds (b, t, d) at b*s_b + t*s_t + d, so one kernel
// serves batch-major [B,T,D] and time-major [T,B,D] (strides from cuda_launch.seq_strides).
// Nullable pointers: h0 (zeros), lengths (all T). y and h_n are written in full (y is 0 past
// each length). No pointer may alias another.
//
// Two kernels, chosen by cuda_launch.use_warp_path(H):
//   rnn_fwd_warp   H <= 32: one warp per sequence, lane j owns unit j and keeps row j of W_hh (and
//                  of W_ih when I <= 32) in registers; h_{t-1} is broadcast with __shfl_sync, so a
//                  step has no barrier at all. Napkin math per step: 32 shuffles + 32 FMA for
//                  W_hh h, 32 more of each for W_ih x (off the dependency chain), one tanhf:
//                  ~100 ns; T=28 is ~3 us while every sequence has its own warp resident. x is
//                  read 8 steps ahead (a register ring) so no step waits on memory.
//                  launch: cuda_launch.fwd_warp_launch(B): grid ceil(B/wpb), block 32*wpb, smem 0.
//   rnn_fwd_block  any H <= 1024: seq_per_block sequences per block, thread j owns unit j for all
//                  of them, and block_ksplit(H) slices of threads split each unit's dot product;
//                  h_{t-1} of the block's sequences in a shared double buffer, two __syncthreads
//                  per step (slices combined, state written; never a grid barrier). W_hh^T is
//                  staged in shared memory when it fits (w_in_smem; opt-in limit, 227 KB on
//                  H200), else read through L1/L2 (coalesced: thread j reads w_hh_t[k*H + j]). The input projection W_ih x for all steps is one GEMM before
//                  the launch. launch: cuda_launch.fwd_block_launch(B, H, *block_plan(B, H)).
//
// Checked by: pytest tests/test_cuda_compile.py (nvcc + NVRTC, spills), pytest -m cuda_emu
// tests/test_cuda_emu.py (CPU emulation vs the reference), pytest -m gpu tests/test_kernels_gpu.py
// (on a GPU), timed by bench/gpu_check.sh.
#include "common.cuh"

// Steps of x that rnn_fwd_warp keeps in flight (a register ring; see the loop).
#define FWD_PF 8

// x: [.., I] (project=1, I <= 32) or [.., H] holding W_ih x_t (project=0), strides sx_b, sx_t.
// w_ih [H,I] (unused, nullable, when project=0); w_hh [H,H]; b [H]; h0 [B,H]; lengths [B];
// y [.., H] strides sy_b, sy_t; h_n [B,H].
extern "C" __global__ void rnn_fwd_warp(
    const float* __restrict__ x, const float* __restrict__ w_ih, const float* __restrict__ w_hh,
    const float* __restrict__ b, const float* __restrict__ h0, const int* __restrict__ lengths,
    float* __restrict__ y, float* __restrict__ h_n,
    int B, int T, int I, int H, int project, int sx_b, int sx_t, int sy_b, int sy_t, int relu)
{
    const int lane = threadIdx.x & 31;
    const int seq = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (seq >= B) return;  // the whole warp leaves together; there is no block barrier below
    const bool unit = lane < H;

    // Row `lane` of W_hh and W_ih; zeros beyond H / I make lanes >= H compute tanh(0) = 0.
    float whh[32], wih[32];
#pragma unroll
    for (int k = 0; k < 32; ++k) {
        whh[k] = (unit && k < H) ? w_hh[lane * H + k] : 0.f;
        wih[k] = (project && unit && k < I) ? w_ih[lane * I + k] : 0.f;
    }
    const float bias = unit ? b[lane] : 0.f;
    float h = (h0 != nullptr && unit) ? h0[(long long)seq * H + lane] : 0.f;
    int len = lengths != nullptr ? lengths[seq] : T;
    len = len < T ? len : T;

    const float* xs = x + (long long)seq * sx_b;
    float* ys = y + (long long)seq * sy_b;
    const int xw = project ? I : H;  // lanes that load an element of x_t
    const bool xl = lane < xw;

    // x is read FWD_PF steps ahead in a register ring: a step of the recurrence is ~100 ns and an
    // L2/DRAM load ~0.5-1 us, so loading only one step ahead left every step waiting on memory.
    float xr[FWD_PF];
#pragma unroll
    for (int i = 0; i < FWD_PF; ++i) xr[i] = (i < len && xl) ? xs[(long long)i * sx_t + lane] : 0.f;

    for (int t0 = 0; t0 < len; t0 += FWD_PF) {
        float xn[FWD_PF];
#pragma unroll
        for (int i = 0; i < FWD_PF; ++i) {
            const int tn = t0 + FWD_PF + i;
            xn[i] = (tn < len && xl) ? xs[(long long)tn * sx_t + lane] : 0.f;
        }
#pragma unroll
        for (int i = 0; i < FWD_PF; ++i) {
            const int t = t0 + i;
            if (t >= len) break;  // warp-uniform
            // W_ih x_t + b: independent of h, so it overlaps the previous step's chain.
            float u = bias;
            if (project) {
#pragma unroll
                for (int k = 0; k < 32; ++k) u += wih[k] * __shfl_sync(FULL_MASK, xr[i], k);
            } else {
                u += xr[i];
            }
            // W_hh h_{t-1}: four partial sums to shorten the FMA chain (8 deep each).
            float a0 = u, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma unroll
            for (int k = 0; k < 32; k += 4) {
                a0 += whh[k] * __shfl_sync(FULL_MASK, h, k);
                a1 += whh[k + 1] * __shfl_sync(FULL_MASK, h, k + 1);
                a2 += whh[k + 2] * __shfl_sync(FULL_MASK, h, k + 2);
                a3 += whh[k + 3] * __shfl_sync(FULL_MASK, h, k + 3);
            }
            h = act_f((a0 + a1) + (a2 + a3), relu);
            if (unit) ys[(long long)t * sy_t + lane] = h;
        }
#pragma unroll
        for (int i = 0; i < FWD_PF; ++i) xr[i] = xn[i];
    }
    if (unit) {
        for (int t = len < 0 ? 0 : len; t < T; ++t) ys[(long long)t * sy_t + lane] = 0.f;
        h_n[(long long)seq * H + lane] = h;
    }
}

// xp [.., H] = W_ih x_t (no bias), strides sx_b, sx_t; w_hh_t [H,H] = W_hh^T (w_hh_t[k*H + j] =
// W_hh[j,k]); b [H]; h0 [B,H] nullable; lengths [B] nullable; y [.., H] strides sy_b, sy_t;
// h_n [B,H]. Block: KS slices of HP = 32*ceil(H/32) threads (KS = blockDim.x / HP, from
// cuda_launch.block_ksplit); thread (q, j) sums k in slice q of W_hh h for unit j, slice 0 adds
// the others in order and owns the state. Dynamic shared: hbuf [2][S][H], red [KS-1][S][H], then
// W_hh^T [H*H] when w_in_smem.
extern "C" __global__ void __launch_bounds__(1024) rnn_fwd_block(
    const float* __restrict__ xp, const float* __restrict__ w_hh_t, const float* __restrict__ b,
    const float* __restrict__ h0, const int* __restrict__ lengths,
    float* __restrict__ y, float* __restrict__ h_n,
    int B, int T, int H, int sx_b, int sx_t, int sy_b, int sy_t, int seq_per_block, int w_in_smem,
    int relu)
{
    extern __shared__ float smem[];
    const int S = seq_per_block;
    const int HP = 32 * ((H + 31) / 32);
    const int KS = blockDim.x / HP;
    const int j = threadIdx.x % HP, q = threadIdx.x / HP;
    const bool unit = j < H;
    const bool owner = unit && q == 0;  // holds the state of unit j
    const int kc = (H + KS - 1) / KS;
    const int k0 = q * kc, k1 = k0 + kc < H ? k0 + kc : H;
    float* hbuf = smem;              // [2][S][H]
    float* red = smem + 2 * S * H;   // [KS-1][S][H]
    const float* W = w_hh_t;
    if (w_in_smem) {
        float* ws = red + (KS - 1) * S * H;
        for (int i = threadIdx.x; i < H * H; i += blockDim.x) ws[i] = w_hh_t[i];
        W = ws;
    }

    const int seq0 = blockIdx.x * S;
    float h[BLK_MAX_SEQ];
    int len[BLK_MAX_SEQ];
    int maxlen = 0;
    const float bias = unit ? b[j] : 0.f;
#pragma unroll
    for (int s = 0; s < BLK_MAX_SEQ; ++s) {
        const int seq = seq0 + s;
        const bool valid = s < S && seq < B;
        int l = valid ? (lengths != nullptr ? lengths[seq] : T) : 0;
        len[s] = l < T ? l : T;
        maxlen = len[s] > maxlen ? len[s] : maxlen;
        h[s] = (valid && owner && h0 != nullptr) ? h0[(long long)seq * H + j] : 0.f;
        if (s < S && owner) hbuf[s * H + j] = h[s];
    }
    __syncthreads();  // hbuf[0] and the staged W visible to every thread

    int p = 0;
    for (int t = 0; t < maxlen; ++t) {  // maxlen is the same in every thread of the block
        float acc[BLK_MAX_SEQ];
#pragma unroll
        for (int s = 0; s < BLK_MAX_SEQ; ++s) acc[s] = 0.f;
        if (unit) {
            const float* hp = hbuf + p * S * H;
            // per step and thread: kc loads of W (coalesced over j) + S*kc broadcast reads + FMAs;
            // the KS slices keep KS times more loads of W in flight than one thread per unit.
#pragma unroll 4
            for (int k = k0; k < k1; ++k) {
                const float w = W[k * H + j];
#pragma unroll
                for (int s = 0; s < BLK_MAX_SEQ; ++s)
                    if (s < S) acc[s] += w * hp[s * H + k];
            }
            if (q > 0) {
#pragma unroll
                for (int s = 0; s < BLK_MAX_SEQ; ++s)
                    if (s < S) red[((q - 1) * S + s) * H + j] = acc[s];
            }
        }
        if (KS > 1) __syncthreads();  // red complete (KS is the same in every thread)
        if (owner) {
            float* hq = hbuf + (p ^ 1) * S * H;
#pragma unroll
            for (int s = 0; s < BLK_MAX_SEQ; ++s) {
                if (s < S) {
                    for (int r = 0; r < KS - 1; ++r) acc[s] += red[(r * S + s) * H + j];
                    if (t < len[s]) {
                        const long long seq = seq0 + s;
                        h[s] = act_f(acc[s] + bias + xp[seq * sx_b + (long long)t * sx_t + j],
                                     relu);
                        y[seq * sy_b + (long long)t * sy_t + j] = h[s];
                    }
                    hq[s * H + j] = h[s];  // carried unchanged past the length
                }
            }
        }
        __syncthreads();  // hbuf[p^1] complete; every read of hbuf[p] and red done before reuse
        p ^= 1;
    }

    if (owner) {
#pragma unroll
        for (int s = 0; s < BLK_MAX_SEQ; ++s) {
            const int seq = seq0 + s;
            if (s < S && seq < B) {
                for (int t = len[s] < 0 ? 0 : len[s]; t < T; ++t)
                    y[(long long)seq * sy_b + (long long)t * sy_t + j] = 0.f;
                h_n[(long long)seq * H + j] = h[s];
            }
        }
    }
}
