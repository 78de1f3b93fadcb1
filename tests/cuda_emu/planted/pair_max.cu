// Planted bug for the ASan check: the last thread reads one float past the dynamic shared
// allocation. fmaxf ignores the NaN it finds there (the 0xFF fill), so the values are right;
// only an exact-size allocation makes the read visible.
// y [n] = max(x[t], x[min(t + 1, n - 1)]); launch: (1), (n), 4 * n.

template <bool kOffByOne>
__device__ void pair_max(const float* x, float* y) {
  extern __shared__ float buf[];
  int n = blockDim.x, t = threadIdx.x;
  buf[t] = x[t];
  __syncthreads();
  int right = kOffByOne ? t + 1 : min(t + 1, n - 1);
  y[t] = fmaxf(buf[t], buf[right]);
}

extern "C" __global__ void pair_max_oob(const float* x, float* y) { pair_max<true>(x, y); }
extern "C" __global__ void pair_max_fixed(const float* x, float* y) { pair_max<false>(x, y); }
