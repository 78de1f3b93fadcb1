// classifier.cu: the classifier head and the optimiser of a training step (float32).
//
//   dense_xent_rows     logits = h W_out^T + b_out, sparse softmax cross-entropy per row (stable:
//                       max subtracted), argmax (first index on ties) == label, and the gradients
//                       dlogits = (softmax - onehot) / B, dh = dlogits W_out. One warp per row,
//                       lanes over classes then over hidden units; no block barrier.
//                       launch: cuda_launch.rows_launch(B, C): grid ceil(B/4), block 128,
//                       dynamic shared 4*4*C bytes (each warp's C values).
//   dense_grads_reduce  dW_out = dlogits^T h, db_out = sum_b dlogits, mean loss and the number of
//                       correct rows: one warp per output, lanes over b, a fixed butterfly
//                       (deterministic; B*C*H = 40K FMA at the showcase size).
//                       launch: cuda_launch.reduce_launch(C, H).
//   grad_sumsq_partial  first half of the global gradient norm: block j's sum of g[i]^2 (in double)
//                       over its contiguous chunk of the flat gradient, into norm_part[j]; fixed
//                       order (thread stride, then a butterfly, then warps in order), no atomics.
//                       launch: cuda_launch.norm_launch(n) (1 block up to 8K elements, at most
//                       128); scratch: norm_part_size(n) doubles.
//   adam_update         Adam over the flat parameter buffer (grid-stride, at most 4 blocks per
//                       SM), launched twice with the same grid: check = 1 computes every new p,
//                       m, v without writing and flags its block if one is NaN or inf; check = 0
//                       writes them unless a block was flagged. Every block first adds the
//                       norm_part partials in the same fixed order (so every block sees the same
//                       bits): grad_norm = sqrt(sum); if it or the step's loss is not finite, or
//                       the update would overflow, no block writes anything (p, m, v keep their
//                       bits; applied_out says which); else g is scaled by clip / max(norm, clip)
//                       when clip > 0. The step's scalars, clip included, come from device memory
//                       (hyper), so a captured CUDA graph replays with new bias corrections and a
//                       new clip_norm. launch: cuda_launch.adam_launch(n), twice.
//   sum_in_rank_order   a data-parallel step's gradient exchange (fastrnn/distributed.py): out[i]
//                       = (parts[0][i] + parts[1][i] + ... + parts[N-1][i]) * (offset + i < n_mean
//                       ? inv_n : 1), left to right in rank order: every process sums its shard of
//                       every process's gradients in the same order, whatever NCCL's algorithm.
//                       launch: cuda_launch.rank_sum_launch(k).
//
// Layouts: h [B,H], w_out [C,H] (PyTorch Linear), b_out [C], labels [B] int64, logits and
// dlogits [B,C], all C-contiguous; no output aliases an input.
//
// Checked by: pytest tests/test_cuda_compile.py, pytest -m cuda_emu tests/test_cuda_emu.py,
// pytest -m gpu tests/test_kernels_gpu.py; timed by bench/gpu_check.sh.
#include "common.cuh"

// Warps (rows) per block of dense_xent_rows; must equal cuda_launch.ROWS_WARPS.
#define ROWS_WARPS 4

// labels nullable: then only logits (if given) are written. logits, dlogits, dh nullable.
// row_loss [B], row_correct [B] (1 or 0) written when labels is given.
extern "C" __global__ void dense_xent_rows(
    const float* __restrict__ h, const float* __restrict__ w_out, const float* __restrict__ b_out,
    const long long* __restrict__ labels, float* __restrict__ logits, float* __restrict__ row_loss,
    float* __restrict__ row_correct, float* __restrict__ dlogits, float* __restrict__ dh,
    int B, int C, int H)
{
    extern __shared__ float smem[];  // [ROWS_WARPS][C]
    const int lane = threadIdx.x & 31;
    const int wrp = threadIdx.x >> 5;
    const int row = blockIdx.x * ROWS_WARPS + wrp;
    if (row >= B) return;  // the whole warp leaves together; only __syncwarp below
    float* pr = smem + wrp * C;
    const float* hr = h + (long long)row * H;

    // Logits, and this lane's (max, first argmax) over its classes c = lane, lane+32, ...
    float mx = -3.402823466e38f;
    int am = 0x7fffffff;
    for (int c = lane; c < C; c += 32) {
        const float* wr = w_out + (long long)c * H;
        float z = 0.f;
        for (int k = 0; k < H; ++k) z += wr[k] * hr[k];
        z += b_out[c];
        pr[c] = z;
        if (logits != nullptr) logits[(long long)row * C + c] = z;
        if (z > mx || am == 0x7fffffff) { mx = z; am = c; }
    }
    if (labels == nullptr) return;  // warp-uniform

    // Butterfly: every lane ends with the same (max, smallest index among equal maxima).
    for (int off = 16; off > 0; off >>= 1) {
        const float om = __shfl_xor_sync(FULL_MASK, mx, off);
        const int oa = __shfl_xor_sync(FULL_MASK, am, off);
        if (om > mx || (om == mx && oa < am)) { mx = om; am = oa; }
    }
    float se = 0.f;
    for (int c = lane; c < C; c += 32) se += expf(pr[c] - mx);
    for (int off = 16; off > 0; off >>= 1) se += __shfl_xor_sync(FULL_MASK, se, off);
    const float log_z = logf(se);

    const int lab = (int)labels[row];
    __syncwarp();  // pr[lab] was written by another lane
    const float shifted_lab = pr[lab] - mx;
    if (lane == 0) {
        row_loss[row] = log_z - shifted_lab;
        row_correct[row] = am == lab ? 1.f : 0.f;
    }
    if (dlogits == nullptr && dh == nullptr) return;

    __syncwarp();  // every lane has read pr[lab] before pr is overwritten with dlogits
    const float inv_b = 1.f / (float)B;
    for (int c = lane; c < C; c += 32) {
        float p = expf(pr[c] - mx - log_z);
        if (c == lab) p -= 1.f;
        const float g = p * inv_b;
        pr[c] = g;
        if (dlogits != nullptr) dlogits[(long long)row * C + c] = g;
    }
    if (dh == nullptr) return;
    __syncwarp();  // all of dlogits for this row in pr
    for (int k = lane; k < H; k += 32) {
        float s = 0.f;
        for (int c = 0; c < C; ++c) s += pr[c] * w_out[(long long)c * H + k];
        dh[(long long)row * H + k] = s;
    }
}

// dlogits [B,C] nullable (then dw_out and db_out are not written and may be NULL); h [B,H];
// row_loss, row_correct [B]; out2 [2] = (mean loss, number of correct rows as a float).
// One warp per output o in [0, C*H + C + 2): lane l sums rows b = l, l+32, ... in order, then a
// fixed butterfly over the 32 lanes (deterministic). B=128: 4 independent loads per lane instead
// of 128 dependent-latency steps in one thread.
extern "C" __global__ void dense_grads_reduce(
    const float* __restrict__ dlogits, const float* __restrict__ h,
    const float* __restrict__ row_loss, const float* __restrict__ row_correct,
    float* __restrict__ dw_out, float* __restrict__ db_out, float* __restrict__ out2,
    int B, int C, int H)
{
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int nw = C * H;
    if (o >= nw + C + 2) return;                          // whole warp
    if (o < nw + C && dlogits == nullptr) return;         // whole warp
    float s = 0.f;
    if (o < nw) {
        const int c = o / H, k = o - (o / H) * H;
        for (int b = lane; b < B; b += 32)
            s += dlogits[(long long)b * C + c] * h[(long long)b * H + k];
    } else if (o < nw + C) {
        const int c = o - nw;
        for (int b = lane; b < B; b += 32) s += dlogits[(long long)b * C + c];
    } else {
        const float* src = o == nw + C ? row_loss : row_correct;
        for (int b = lane; b < B; b += 32) s += src[b];
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(FULL_MASK, s, off);
    if (lane == 0) {
        if (o < nw) dw_out[o] = s;
        else if (o < nw + C) db_out[o - nw] = s;
        else if (o == nw + C) out2[0] = s / (float)B;
        else out2[1] = s;
    }
}

// Threads per block of grad_sumsq_partial and adam_update; must equal cuda_launch.NORM_THREADS
// and cuda_launch.ADAM_THREADS.
#define NORM_THREADS 256
#define ADAM_THREADS 256

// g [n]; norm_part [gridDim.x] doubles out: block j's sum of g[i]^2 over i in
// [j*chunk, min(n, (j+1)*chunk)), chunk = ceil(n / gridDim.x). Squares summed in double: no
// overflow for any finite float gradient, and the norm is the float64 norm to ~1e-16 before its
// final rounding to float. NaN or inf anywhere in g makes the sum NaN or inf.
// Napkin: n = 2180 (showcase), one block, ~9 coalesced loads per thread: one L2 round trip plus
// a 5-step butterfly and one barrier, ~2 us with the graph node. n = 4M: 128 blocks, 128 loads
// per thread, 16 MB from DRAM at ~3 TB/s: ~6 us.
extern "C" __global__ void __launch_bounds__(NORM_THREADS) grad_sumsq_partial(
    const float* __restrict__ g, double* __restrict__ norm_part, int n)
{
    __shared__ double warp_sum[NORM_THREADS / 32];
    const long long chunk = ((long long)n + gridDim.x - 1) / gridDim.x;
    const long long i0 = (long long)blockIdx.x * chunk;
    const long long i1 = i0 + chunk < n ? i0 + chunk : n;
    double s = 0.0;
#pragma unroll 4
    for (long long i = i0 + threadIdx.x; i < i1; i += NORM_THREADS) {
        const double gi = g[i];
        s += gi * gi;
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(FULL_MASK, s, off);
    if ((threadIdx.x & 31) == 0) warp_sum[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < NORM_THREADS / 32; ++w) t += warp_sum[w];
        norm_part[blockIdx.x] = t;
    }
}

// p, g, m, v [n] (p, m, v updated in place; g may not alias them). hyper [9] device floats:
// lr, beta1, 1-beta1, beta2, 1-beta2, eps, 1-beta1^step, 1-beta2^step, clip_norm (0: no
// clipping) (cuda_launch.adam_hyper). norm_part [parts] doubles from grad_sumsq_partial over the
// same g. loss [1] nullable: the step's loss (not checked when NULL). overflow [gridDim.x] ints:
// written by the check launch (1: the block's update has a NaN or inf), read by the apply launch.
// norm_out [1], applied_out [1] nullable, written by block 0 of the apply launch: the global norm
// of g (as float) and 1.f if the update was applied, else 0.f.
// Same operation order as the reference: g' = g * scale, m_hat = m / bc1, v_hat = v / bc2,
// p -= lr * m_hat / (sqrt(v_hat) + eps)  (eps added to the bias-corrected sqrt, as PyTorch);
// scale is exactly 1 when clipping is off or the norm is within clip_norm, so g' = g bitwise.
// The check launch makes "nothing written" hold for the update itself (an lr near FLT_MAX, or a
// finite gradient above ~6e20, whose (1-beta2) g^2 overflows v): no block can know the others'
// values before writing its own, hence two launches rather than one.
// Napkin: the prologue costs each block one dependent L2 load of <= 128 doubles (one per lane
// for <= 32 parts) and one barrier, ~0.5 us, on top of the ~1.4 us the update took alone; the
// check launch repeats both without the stores (predicted ~+1.5-2 us per step, showcase).
extern "C" __global__ void __launch_bounds__(ADAM_THREADS) adam_update(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, const float* __restrict__ hyper, const double* __restrict__ norm_part,
    int parts, const float* __restrict__ loss, int* __restrict__ overflow,
    float* __restrict__ norm_out, float* __restrict__ applied_out, int n, int check)
{
    __shared__ int apply;
    __shared__ float scale;
    __shared__ int warp_bad[ADAM_THREADS / 32];
    if (threadIdx.x < 32) {
        // Lane l adds parts l, l+32, ... in order, then a fixed butterfly: identical in every
        // block (a + b == b + a bitwise, so all lanes end with the same bits too).
        double s = 0.0;
        for (int j = threadIdx.x; j < parts; j += 32) s += norm_part[j];
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(FULL_MASK, s, off);
        int flagged = 0;  // the check launch's verdict, in the apply launch
        if (!check)
            for (int j = threadIdx.x; j < (int)gridDim.x; j += 32) flagged |= overflow[j];
        flagged = __any_sync(FULL_MASK, flagged);
        if (threadIdx.x == 0) {
            const double norm = sqrt(s);
            const float norm32 = (float)norm;  // what the caller sees and judges
            const float clip = hyper[8];
            apply = finite_f32(norm32) && (loss == nullptr || finite_f32(loss[0])) && !flagged;
            // clip / max(norm, clip): exactly 1 when norm <= clip (and when clipping is off)
            scale = (clip > 0.f && norm > (double)clip) ? (float)((double)clip / norm) : 1.f;
            if (!check && blockIdx.x == 0) {
                if (norm_out != nullptr) norm_out[0] = norm32;
                if (applied_out != nullptr) applied_out[0] = apply ? 1.f : 0.f;
            }
        }
    }
    __syncthreads();
    if (!apply) {  // block-uniform: a non-finite step writes nothing
        if (check && threadIdx.x == 0) overflow[blockIdx.x] = 0;
        return;
    }
    const float lr = hyper[0], beta1 = hyper[1], c1 = hyper[2], beta2 = hyper[3], c2 = hyper[4];
    const float eps = hyper[5], bc1 = hyper[6], bc2 = hyper[7];
    const float sc = scale;
    const long long stride = (long long)gridDim.x * ADAM_THREADS;
    int bad = 0;
    for (long long i = (long long)blockIdx.x * ADAM_THREADS + threadIdx.x; i < n; i += stride) {
        const float gi = g[i] * sc;
        const float mi = beta1 * m[i] + c1 * gi;
        const float vi = beta2 * v[i] + c2 * gi * gi;
        const float m_hat = mi / bc1;
        const float v_hat = vi / bc2;
        const float pi = p[i] - lr * m_hat / (sqrtf(v_hat) + eps);
        if (check) {
            bad |= !(finite_f32(pi) && finite_f32(mi) && finite_f32(vi));
        } else {
            m[i] = mi;
            v[i] = vi;
            p[i] = pi;
        }
    }
    if (!check) return;
    bad = __any_sync(FULL_MASK, bad);
    if ((threadIdx.x & 31) == 0) warp_bad[threadIdx.x >> 5] = bad;
    __syncthreads();
    if (threadIdx.x == 0) {
        int any = 0;
        for (int w = 0; w < ADAM_THREADS / 32; ++w) any |= warp_bad[w];
        overflow[blockIdx.x] = any;
    }
}

// Threads per block of sum_in_rank_order; must equal cuda_launch.RANK_SUM_THREADS.
#define RANK_SUM_THREADS 256

// parts [N, k] (row r: process r's values of this shard), out [k] (may not alias parts);
// offset: the shard's first index in the whole buffer; entries below n_mean (whole-buffer index)
// are scaled by inv_n after the sum (means over the processes), the others are sums.
// Napkin: a 3-layer H = 1024 model over 8 GPUs: k = 790K, N = 8: 25 MB read, ~10 us on an H200.
extern "C" __global__ void __launch_bounds__(RANK_SUM_THREADS) sum_in_rank_order(
    const float* __restrict__ parts, float* __restrict__ out, int N, int k, long long offset,
    long long n_mean, float inv_n)
{
    const long long i = (long long)blockIdx.x * RANK_SUM_THREADS + threadIdx.x;
    if (i >= k) return;
    float s = parts[i];
    for (int r = 1; r < N; ++r) s += parts[(long long)r * k + i];
    out[i] = offset + i < n_mean ? s * inv_n : s;
}
