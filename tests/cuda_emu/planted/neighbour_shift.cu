// Planted bug for the schedule check: each thread reads its left neighbour's shared slot without
// a barrier (read after write). Right when threads run in increasing order, NaN (the 0xFF fill)
// for the threads that run before their neighbour otherwise.
// y [n] = (0, x[0], ..., x[n-2]); launch: (1), (n), 4 * n.

template <bool kSync>
__device__ void shift_right(const float* x, float* y) {
  extern __shared__ float buf[];
  int t = threadIdx.x;
  buf[t] = x[t];
  if (kSync) __syncthreads();  // the barrier the racy twin lacks
  y[t] = t > 0 ? buf[t - 1] : 0.0f;
}

extern "C" __global__ void shift_racy(const float* x, float* y) { shift_right<false>(x, y); }
extern "C" __global__ void shift_fixed(const float* x, float* y) { shift_right<true>(x, y); }
