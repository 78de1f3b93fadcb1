// common.cuh: definitions shared by the fastrnn CUDA kernels (float32 throughout).
//
// Plain CUDA C++ only (no <cmath>, no CUDA headers, no cooperative groups, no inline PTX) so the
// same sources compile under nvcc, under NVRTC (cupy.RawModule) and under g++ with the CPU
// emulation header in tests/cuda_emu. Launch shapes live in kernels/cuda_launch.py.
#pragma once

#define FULL_MASK 0xffffffffu

// Sequences per block on the general (block) path; must equal cuda_launch.BLOCK_MAX_SEQ.
#define BLK_MAX_SEQ 8

// Element (b, t, d) of a sequence tensor with strides (s_b, s_t); see cuda_launch.seq_strides.
__device__ inline long long seq_off(int b, int t, int s_b, int s_t) {
    return (long long)b * s_b + (long long)t * s_t;
}

// A finite float (false for NaN and +-inf) without <cmath>'s isfinite; valid under -ftz=true
// (NVRTC's default in CuPy) as long as fast-math is off, which no build here turns on.
__device__ inline bool finite_f32(float x) { return fabsf(x) <= 3.402823466e38f; }

// The cell's nonlinearity (relu != 0: relu, else tanh) and its derivative from the output y:
// relu keeps NaN (z < 0 is false for NaN), as the reference's np.maximum does; fmaxf would not.
__device__ inline float act_f(float z, int relu) { return relu ? (z < 0.f ? 0.f : z) : tanhf(z); }
__device__ inline float act_grad(float y, int relu) {
    return relu ? (y > 0.f ? 1.f : 0.f) : 1.f - y * y;
}
