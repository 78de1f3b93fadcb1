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
//   adam_update         Adam over the flat parameter buffer, one thread per element. The step's
//                       scalars come from device memory (hyper), so a captured CUDA graph replays
//                       with new bias corrections. launch: cuda_launch.adam_launch(n).
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

// p, g, m, v [n] (p, m, v updated in place; g may not alias them). hyper [8] device floats:
// lr, beta1, 1-beta1, beta2, 1-beta2, eps, 1-beta1^step, 1-beta2^step (cuda_launch.adam_hyper).
// Same operation order as the reference: m_hat = m / bc1, v_hat = v / bc2,
// p -= lr * m_hat / (sqrt(v_hat) + eps)  (eps added to the bias-corrected sqrt, as PyTorch).
extern "C" __global__ void adam_update(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, const float* __restrict__ hyper, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float lr = hyper[0], beta1 = hyper[1], c1 = hyper[2], beta2 = hyper[3], c2 = hyper[4];
    const float eps = hyper[5], bc1 = hyper[6], bc2 = hyper[7];
    const float gi = g[i];
    const float mi = beta1 * m[i] + c1 * gi;
    const float vi = beta2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float m_hat = mi / bc1;
    const float v_hat = vi / bc2;
    p[i] -= lr * m_hat / (sqrtf(v_hat) + eps);
}
