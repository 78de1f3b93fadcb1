// Planted bug for the TSan check: a shared tile reloaded every step without a trailing barrier.
// Step s+1 rewrites tile[t] while a neighbour may still be reading it for step s (write after
// read), but it rewrites the same value, so the results are right under every schedule.
// out [gridDim.x * blockDim.x] = steps * w[(t + 1) % n] per block; launch: (blocks), (n <= 64), 0.

template <bool kTrailingSync>
__device__ void tile_reload(const float* w, float* out, int steps) {
  __shared__ float tile[64];
  int n = blockDim.x, t = threadIdx.x, base = blockIdx.x * n;
  float acc = 0.0f;
  for (int s = 0; s < steps; ++s) {
    tile[t] = w[base + t];
    __syncthreads();
    acc += tile[(t + 1) % n];
    if (kTrailingSync) __syncthreads();  // the barrier the racy twin lacks
  }
  out[base + t] = acc;
}

extern "C" __global__ void tile_reload_racy(const float* w, float* out, int steps) {
  tile_reload<false>(w, out, steps);
}
extern "C" __global__ void tile_reload_fixed(const float* w, float* out, int steps) {
  tile_reload<true>(w, out, steps);
}
