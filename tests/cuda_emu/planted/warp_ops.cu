// Warp collectives against NumPy, and two misuses the harness must reject.
// warp_ops: x [n], n a multiple of 32; out [7, n] (rows below); launch: (n / 64), (64), 0.

extern "C" __global__ void warp_ops(const float* x, float* out, int width) {
  const unsigned kAll = 0xffffffffu;
  int n = gridDim.x * blockDim.x, i = blockIdx.x * blockDim.x + threadIdx.x;
  int lane = threadIdx.x % 32;
  float v = x[i];
  out[0 * n + i] = __shfl_sync(kAll, v, 7 * lane + 3, width);
  out[1 * n + i] = __shfl_up_sync(kAll, v, 3, width);
  out[2 * n + i] = __shfl_down_sync(kAll, v, 5, width);
  out[3 * n + i] = __shfl_xor_sync(kAll, v, 1, width);
  float sum = v;  // butterfly sum over each group of `width` lanes
  for (int o = width / 2; o > 0; o /= 2) sum += __shfl_xor_sync(kAll, sum, o, width);
  out[4 * n + i] = sum;
  unsigned group = (width == 32 ? ~0u : (1u << width) - 1) << (lane & ~(width - 1));
  out[5 * n + i] = float(__popc(__ballot_sync(kAll, v > 0.0f) & group));  // positives in group
  // lanes 0-15 and 16-31 shuffle as two independent groups at the same time
  unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  out[6 * n + i] = __shfl_sync(half, v, lane < 16 ? 15 : 16);
}

// Lanes 16-31 return early; lane 0 then shuffles from lane 20.
extern "C" __global__ void shfl_from_returned_lane(float* out) {
  int lane = threadIdx.x;
  if (lane >= 16) return;
  out[lane] = __shfl_sync(0xffffffffu, float(lane), lane + 4);
}

// A __syncthreads inside a branch that splits the block.
extern "C" __global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}
