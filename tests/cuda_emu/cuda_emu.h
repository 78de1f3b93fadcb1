// cuda_emu.h: CUDA C++ mapped onto C++17 so a kernel file compiles with g++ and runs on the CPU.
//
// Every CUDA thread of a block is a ucontext fiber; one fiber runs at a time until it reaches
// __syncthreads, a warp collective or its end, in the order the launch asks for (forward,
// reverse, or a seeded random permutation on every pass). Blocks run one after another. Warp
// collectives are a rendezvous: the last lane to arrive computes every lane's result. Static
// __shared__ arrays live in the section "cuda_emu_shared" and dynamic shared memory in one
// global array; both are filled with 0xFF before each block (a float read before it is written
// is NaN), and under ASan everything past the launch's dynamic size is poisoned.
// Under TSan, fibers are registered with the runtime and switched without synchronisation, so
// the only happens-before edges between threads of a block are the ones CUDA gives: barriers
// and warp collectives (__tsan_release on arrival, __tsan_acquire on leaving).
// harness.py compiles a .cu with this header, generates the extern "C" launch shims
// (CUDA_EMU_ENTRY) and documents the limits.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
// Emulator bookkeeping is shared by all fibers without happens-before: keep TSan out of it.
#define CUDA_EMU_INTERNAL __attribute__((no_sanitize_thread, noinline))
#define CUDA_EMU_TSAN(...) __VA_ARGS__
#else
#define CUDA_EMU_INTERNAL
#define CUDA_EMU_TSAN(...)
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN(...) __VA_ARGS__
#else
#define CUDA_EMU_ASAN(...)
#endif

// ---- keywords -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ __attribute__((section("cuda_emu_shared"))) static
// harness.py rewrites `extern __shared__ T name[];` into a `T*` to this array.
extern "C" {
alignas(128) unsigned char cuda_emu_dynamic_shared[227 * 1024];
}
extern "C" __attribute__((weak)) unsigned char __start_cuda_emu_shared[], __stop_cuda_emu_shared[];

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };
constexpr int warpSize = 32;

namespace cuda_emu {

constexpr size_t kStackBytes = 256 * 1024;
enum State { kReady, kBarrier, kWarp, kDone };
enum Kind { kIdx, kUp, kDown, kXor, kBallot, kAny, kAll, kSyncwarp };
inline const char* const kKindName[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
    "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp"};

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  int warp, lane;
  State state;
  int line;   // source line of the barrier or collective it waits at
  int slot;   // its rendezvous slot while in a warp collective
  char* stack;
  CUDA_EMU_TSAN(void* tsan;)
  CUDA_EMU_ASAN(void* fake_stack;)
};

// One warp collective in progress: lanes deposit, the last arrival computes all results.
struct Rendezvous {
  bool used;
  bool done;              // results computed; lanes in `leaving` have yet to pick theirs up
  Kind kind;
  int width, line;
  unsigned mask, arrived, leaving;
  uint64_t value[32], result[32];
  int arg[32];
};

struct Warp {
  unsigned alive;  // lanes that exist and have not returned
  Rendezvous slots[32];
};

struct Launch {
  dim3 grid, block;
  uint3 block_idx;
  size_t shared_bytes;
  int order;
  std::mt19937 rng;
  void (*run)(void* kernel, void** args);
  void* kernel;
  void** args;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Fiber* cur;
  ucontext_t sched;
  int barrier_epoch;
  std::string error;
  CUDA_EMU_TSAN(void* sched_tsan; char start_sync, end_sync, barrier_sync[2];)
  CUDA_EMU_ASAN(const void* sched_stack; size_t sched_stack_size;)
};
inline Launch g;
inline std::vector<char*> stack_pool;  // fiber stacks, kept across launches

CUDA_EMU_INTERNAL inline uint3 thread_idx() { return g.cur->tid; }

// Leave the current fiber for the scheduler; a `final` switch never comes back.
CUDA_EMU_INTERNAL inline void to_scheduler(bool final) {
  Fiber* f = g.cur;
  CUDA_EMU_TSAN(__tsan_switch_to_fiber(g.sched_tsan, __tsan_switch_to_fiber_no_sync);)
  CUDA_EMU_ASAN(__sanitizer_start_switch_fiber(final ? nullptr : &f->fake_stack, g.sched_stack,
                                               g.sched_stack_size);)
  swapcontext(&f->ctx, &g.sched);
  CUDA_EMU_ASAN(__sanitizer_finish_switch_fiber(f->fake_stack, &g.sched_stack,
                                                &g.sched_stack_size);)
  (void)final;
}

CUDA_EMU_INTERNAL inline void set_error(const std::string& msg) {
  if (g.error.empty()) g.error = msg;
}

inline std::string where() {
  char buf[96];
  snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", g.block_idx.x, g.block_idx.y,
           g.block_idx.z, g.cur->tid.x, g.cur->tid.y, g.cur->tid.z);
  return buf;
}

// Report a misuse of CUDA found inside a thread and abandon the launch.
[[noreturn]] CUDA_EMU_INTERNAL inline void fail(const std::string& msg) {
  set_error(where() + ": " + msg);
  to_scheduler(true);
  __builtin_unreachable();
}

// The same for a misuse by a whole warp (found by whichever lane completes a collective).
[[noreturn]] CUDA_EMU_INTERNAL inline void fail_warp(const std::string& msg) {
  char buf[64];
  snprintf(buf, sizeof buf, "block (%u,%u,%u) warp %d: ", g.block_idx.x, g.block_idx.y,
           g.block_idx.z, g.cur->warp);
  set_error(buf + msg);
  to_scheduler(true);
  __builtin_unreachable();
}

CUDA_EMU_INTERNAL inline void syncthreads(int line) {
  Fiber* f = g.cur;
  int epoch = g.barrier_epoch;
  CUDA_EMU_TSAN(__tsan_release(&g.barrier_sync[epoch & 1]);)
  f->state = kBarrier;
  f->line = line;
  to_scheduler(false);
  // Two alternating sync objects: a thread that already left this barrier and reaches the next
  // one must not release into the object its slower peers are about to acquire.
  CUDA_EMU_TSAN(__tsan_acquire(&g.barrier_sync[epoch & 1]);)
  (void)epoch;
}

// Source lane of `lane` for a shuffle, or `lane` itself where CUDA returns the caller's value.
inline int shuffle_source(Kind kind, int lane, int arg, int width) {
  int base = lane & ~(width - 1);
  switch (kind) {
    case kIdx: return base + (arg & (width - 1));
    case kUp: return lane - arg >= base ? lane - arg : lane;
    case kDown: return lane + arg < base + width ? lane + arg : lane;
    default: return (lane ^ arg) < base + width ? (lane ^ arg) : lane;  // kXor
  }
}

// Compute every arrived lane's result; run by the last lane to arrive (or the lane whose exit
// leaves the rendezvous complete), and wake the others.
CUDA_EMU_INTERNAL inline void complete(Warp& w, Rendezvous& r) {
  unsigned votes = 0;
  for (int l = 0; l < 32; ++l)
    if ((r.arrived >> l & 1) && r.value[l]) votes |= 1u << l;
  for (int l = 0; l < 32; ++l) {
    if (!(r.arrived >> l & 1)) continue;
    switch (r.kind) {
      case kBallot: r.result[l] = votes; break;
      case kAny: r.result[l] = votes != 0; break;
      case kAll: r.result[l] = votes == r.arrived; break;
      case kSyncwarp: r.result[l] = 0; break;
      default: {
        int src = shuffle_source(r.kind, l, r.arg[l], r.width);
        if (!(r.arrived >> src & 1))
          fail_warp(std::string(kKindName[r.kind]) + " (line " + std::to_string(r.line) + "): lane " +
               std::to_string(l) + " reads lane " + std::to_string(src) +
               ", which does not take part (not in the mask, or returned)");
        r.result[l] = r.value[src];
      }
    }
  }
  r.done = true;
  r.leaving = r.arrived;
  int warp = int(&w - g.warps.data());
  for (int l = 0; l < 32; ++l)
    if (r.arrived >> l & 1) {
      Fiber& f = g.fibers[warp * 32 + l];
      if (f.state == kWarp) f.state = kReady;
    }
}

CUDA_EMU_INTERNAL inline uint64_t collective(Kind kind, int line, unsigned mask, uint64_t value,
                                             int arg, int width) {
  Fiber* f = g.cur;
  Warp& w = g.warps[f->warp];
  unsigned bit = 1u << f->lane;
  auto name = [&] { return std::string(kKindName[kind]) + " (line " + std::to_string(line) + ")"; };
  if (!(mask & bit)) fail(name() + ": the mask does not name the calling lane");
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail(name() + ": width " + std::to_string(width) + " is not a power of two <= 32");
  Rendezvous* r = nullptr;
  for (Rendezvous& s : w.slots)
    if (s.used && !s.done && (s.mask & mask)) r = &s;
  if (r && (r->mask != mask || r->kind != kind || r->width != width)) {
    char buf[200];
    snprintf(buf, sizeof buf, ": lane %d calls with mask 0x%08x width %d while lanes 0x%08x wait "
             "in %s (line %d) with mask 0x%08x width %d", f->lane, mask, width, r->arrived,
             kKindName[r->kind], r->line, r->mask, r->width);
    fail(name() + buf);
  }
  if (!r) {
    r = std::find_if(std::begin(w.slots), std::end(w.slots), [](auto& s) { return !s.used; });
    *r = Rendezvous{true, false, kind, width, line, mask, 0, 0, {}, {}, {}};
  }
  r->value[f->lane] = value;
  r->arg[f->lane] = arg;
  r->arrived |= bit;
  // Each lane releases into its own sync object and every participant acquires those of the
  // lanes that arrived: exact even when a later group of lanes reuses the slot.
  CUDA_EMU_TSAN(__tsan_release(&r->arg[f->lane]);)
  if (((mask & w.alive) & ~r->arrived) == 0) {
    complete(w, *r);
  } else {
    f->state = kWarp;
    f->line = line;
    f->slot = int(r - w.slots);
    to_scheduler(false);
  }
  CUDA_EMU_TSAN(for (int l = 0; l < 32; ++l) if (r->arrived >> l & 1) __tsan_acquire(&r->arg[l]);)
  uint64_t result = r->result[f->lane];
  r->leaving &= ~bit;
  if (!r->leaving) r->used = false;
  return result;
}

template <class T>
inline T collective(Kind kind, int line, unsigned mask, T value, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle a scalar");
  uint64_t bits = 0;
  memcpy(&bits, &value, sizeof(T));
  bits = collective(kind, line, mask, bits, arg, width);
  memcpy(&value, &bits, sizeof(T));
  return value;
}

// A returning lane no longer holds up its warp's collectives.
CUDA_EMU_INTERNAL inline void thread_exit() {
  Fiber* f = g.cur;
  Warp& w = g.warps[f->warp];
  w.alive &= ~(1u << f->lane);
  f->state = kDone;
  for (Rendezvous& r : w.slots)
    if (r.used && !r.done && ((r.mask & w.alive) & ~r.arrived) == 0) complete(w, r);
  CUDA_EMU_TSAN(__tsan_release(&g.end_sync);)  // after the last touch of emulator state
  to_scheduler(true);
}

CUDA_EMU_INTERNAL inline void fiber_main() {
  CUDA_EMU_ASAN(__sanitizer_finish_switch_fiber(nullptr, &g.sched_stack, &g.sched_stack_size);)
  CUDA_EMU_TSAN(__tsan_acquire(&g.start_sync);)
  g.run(g.kernel, g.args);
  thread_exit();
}

CUDA_EMU_INTERNAL inline void run_fiber(Fiber& f) {
  g.cur = &f;
  CUDA_EMU_TSAN(__tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync);)
  CUDA_EMU_ASAN(void* fake = nullptr; __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);)
  swapcontext(&g.sched, &f.ctx);
  CUDA_EMU_ASAN(__sanitizer_finish_switch_fiber(fake, nullptr, nullptr);)
}

// Fill shared memory with 0xFF before a block (bytes, so ASan's redzones between the static
// arrays are written without being checked).
__attribute__((no_sanitize_address)) inline void reset_shared() {
  for (volatile unsigned char* p = __start_cuda_emu_shared; p < __stop_cuda_emu_shared; ++p) *p = 0xFF;
  for (volatile unsigned char* p = cuda_emu_dynamic_shared;
       p < cuda_emu_dynamic_shared + g.shared_bytes; ++p)
    *p = 0xFF;
  CUDA_EMU_ASAN(ASAN_UNPOISON_MEMORY_REGION(cuda_emu_dynamic_shared, g.shared_bytes);
                ASAN_POISON_MEMORY_REGION(cuda_emu_dynamic_shared + g.shared_bytes,
                                          sizeof cuda_emu_dynamic_shared - g.shared_bytes);)
}

CUDA_EMU_INTERNAL inline std::string describe_deadlock() {
  std::string msg = "deadlock in block (" + std::to_string(g.block_idx.x) + "," +
                    std::to_string(g.block_idx.y) + "," + std::to_string(g.block_idx.z) + "):";
  // One entry per run of consecutive threads that wait at the same place.
  auto waits = [](const Fiber& f) -> std::string {
    if (f.state == kBarrier) return "__syncthreads (line " + std::to_string(f.line) + ")";
    if (f.state != kWarp) return "";
    const Rendezvous& r = g.warps[f.warp].slots[f.slot];
    char buf[96];
    snprintf(buf, sizeof buf, "%s (line %d) for lanes 0x%08x", kKindName[r.kind], r.line,
             r.mask & ~r.arrived);
    return buf;
  };
  for (size_t i = 0, j; i < g.fibers.size(); i = j) {
    std::string at = waits(g.fibers[i]);
    for (j = i + 1; j < g.fibers.size() && waits(g.fibers[j]) == at;) ++j;
    if (at.empty()) continue;
    msg += j - i == 1 ? " thread " + std::to_string(i) : " threads " + std::to_string(i) + "-" +
                                                             std::to_string(j - 1);
    msg += " at " + at + ";";
  }
  return msg;
}

// Run every thread of the current block to completion. Returns false on an error.
CUDA_EMU_INTERNAL inline bool run_block() {
  size_t n = g.fibers.size();
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = g.fibers[i];
    f.state = kReady;
    CUDA_EMU_ASAN(ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);)
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  for (Warp& w : g.warps) {
    for (Rendezvous& r : w.slots) r.used = false;
    size_t first = (&w - g.warps.data()) * 32;
    w.alive = n - first >= 32 ? ~0u : (1u << (n - first)) - 1;
  }
  g.barrier_epoch = 0;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  if (g.order == 1) std::reverse(order.begin(), order.end());
  for (;;) {
    if (g.order == 2) std::shuffle(order.begin(), order.end(), g.rng);
    bool ran = false;
    for (size_t i : order) {
      if (g.fibers[i].state != kReady) continue;
      run_fiber(g.fibers[i]);
      if (!g.error.empty()) return false;
      ran = true;
    }
    if (ran) continue;
    // Nobody can run: either all live threads wait at one barrier, or it is a deadlock.
    int line = -1;
    bool stuck = false, live = false;
    for (const Fiber& f : g.fibers) {
      if (f.state == kDone) continue;
      live = true;
      if (f.state != kBarrier || (line != -1 && f.line != line)) stuck = true;
      line = f.line;
    }
    if (!live) return true;
    if (stuck) {
      set_error(describe_deadlock());
      return false;
    }
    ++g.barrier_epoch;
    for (Fiber& f : g.fibers)
      if (f.state == kBarrier) f.state = kReady;
  }
}

CUDA_EMU_INTERNAL inline int launch(void (*run)(void*, void**), void* kernel, void** args,
                                    const unsigned* grid, const unsigned* block, size_t shared,
                                    int order, unsigned seed) {
  g.grid = {grid[0], grid[1], grid[2]};
  g.block = {block[0], block[1], block[2]};
  size_t n = size_t(block[0]) * block[1] * block[2];
  g.error.clear();
  if (n == 0 || n > 1024 || block[2] > 64 || !grid[0] || !grid[1] || !grid[2] || grid[1] > 65535 ||
      grid[2] > 65535) {
    set_error("invalid launch shape");
    return 1;
  }
  if (shared > sizeof cuda_emu_dynamic_shared) {
    set_error("dynamic shared memory " + std::to_string(shared) + " B > the 227 KB per block");
    return 1;
  }
  g.shared_bytes = shared;
  g.order = order;
  g.rng.seed(seed);
  g.run = run;
  g.kernel = kernel;
  g.args = args;
  while (stack_pool.size() < n) {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    stack_pool.push_back(static_cast<char*>(p));
  }
  g.fibers.assign(n, Fiber{});
  g.warps.assign((n + 31) / 32, Warp{});
  CUDA_EMU_TSAN(g.sched_tsan = __tsan_get_current_fiber();)
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = g.fibers[i];
    f.tid = {unsigned(i % block[0]), unsigned(i / block[0] % block[1]),
             unsigned(i / (block[0] * block[1]))};
    f.warp = int(i / 32);
    f.lane = int(i % 32);
    f.stack = stack_pool[i];
    CUDA_EMU_TSAN(f.tsan = __tsan_create_fiber(0);)
  }
  bool ok = true;
  for (unsigned z = 0; ok && z < grid[2]; ++z)
    for (unsigned y = 0; ok && y < grid[1]; ++y)
      for (unsigned x = 0; ok && x < grid[0]; ++x) {
        g.block_idx = {x, y, z};
        reset_shared();
        CUDA_EMU_TSAN(__tsan_release(&g.start_sync);)
        ok = run_block();
        CUDA_EMU_TSAN(__tsan_acquire(&g.end_sync);)
      }
  CUDA_EMU_TSAN(for (Fiber& f : g.fibers) __tsan_destroy_fiber(f.tsan);)
  return ok ? 0 : 1;
}

// ---- the extern "C" shims: launch with arguments by address, and a typed signature ----------
template <class... A, size_t... I>
void invoke(void* kernel, void** args, std::index_sequence<I...>) {
  reinterpret_cast<void (*)(A...)>(kernel)(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <class... A>
void invoke(void* kernel, void** args) {
  invoke<A...>(kernel, args, std::index_sequence_for<A...>{});
}
template <class... A>
int launch_kernel(void (*kernel)(A...), const unsigned* grid, const unsigned* block,
                  size_t shared, int order, unsigned seed, void** args) {
  return launch(&invoke<A...>, reinterpret_cast<void*>(kernel), args, grid, block, shared, order,
                seed);
}

template <class T> struct TypeName;
#define CUDA_EMU_TYPE_NAME(T) \
  template <> struct TypeName<T> { static std::string get() { return #T; } };
CUDA_EMU_TYPE_NAME(int)
CUDA_EMU_TYPE_NAME(unsigned int)
CUDA_EMU_TYPE_NAME(long long)
CUDA_EMU_TYPE_NAME(float)
CUDA_EMU_TYPE_NAME(double)
CUDA_EMU_TYPE_NAME(unsigned char)
template <class T> struct TypeName<T*> {
  static std::string get() {
    return (std::is_const<T>::value ? "const " : "") + TypeName<std::remove_cv_t<T>>::get() + "*";
  }
};
template <class T> struct TypeName<const T> : TypeName<T> {};

// "float*,const int*,int": the C parameter types, for harness.py to check arguments against.
template <class... A>
const char* signature(void (*)(A...)) {
  static const std::string s = [] {
    std::string out;
    ((out += (out.empty() ? "" : ",") + TypeName<A>::get()), ...);
    return out;
  }();
  return s.c_str();
}

template <class T, class F>
T atomic_update(T* p, F f) {
  T old, desired;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  do desired = f(old);
  while (!__atomic_compare_exchange(p, &old, &desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return old;
}

}  // namespace cuda_emu

#define CUDA_EMU_ENTRY(k)                                                                    \
  extern "C" int cuda_emu_launch_##k(const unsigned* grid, const unsigned* block,           \
                                     size_t shared, int order, unsigned seed, void** args) { \
    return cuda_emu::launch_kernel(k, grid, block, shared, order, seed, args);              \
  }                                                                                          \
  extern "C" const char* cuda_emu_signature_##k() { return cuda_emu::signature(k); }

// (this header goes into exactly one translation unit per .so: the generated one)
extern "C" const char* cuda_emu_error() { return cuda_emu::g.error.c_str(); }

// ---- built-in variables, barriers, warp collectives ------------------------------------------
#define threadIdx (cuda_emu::thread_idx())
#define blockIdx (cuda_emu::g.block_idx)
#define blockDim (cuda_emu::g.block)
#define gridDim (cuda_emu::g.grid)
#define __syncthreads() cuda_emu::syncthreads(__LINE__)
#define __syncwarp(...) cuda_emu::syncwarp(__LINE__, ##__VA_ARGS__)
#define __shfl_sync(...) cuda_emu::shfl(cuda_emu::kIdx, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) cuda_emu::shfl(cuda_emu::kUp, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) cuda_emu::shfl(cuda_emu::kDown, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) cuda_emu::shfl(cuda_emu::kXor, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) cuda_emu::vote(cuda_emu::kBallot, __LINE__, mask, pred)
#define __any_sync(mask, pred) int(cuda_emu::vote(cuda_emu::kAny, __LINE__, mask, pred))
#define __all_sync(mask, pred) int(cuda_emu::vote(cuda_emu::kAll, __LINE__, mask, pred))

namespace cuda_emu {
inline void syncwarp(int line, unsigned mask = 0xffffffffu) {
  collective(kSyncwarp, line, mask, 0u, 0, 32);
}
template <class T>
inline T shfl(Kind kind, int line, unsigned mask, T var, int arg, int width = warpSize) {
  return collective(kind, line, mask, var, arg, width);
}
inline unsigned vote(Kind kind, int line, unsigned mask, int pred) {
  return collective(kind, line, mask, unsigned(pred != 0), 0, 32);
}
}  // namespace cuda_emu

// ---- fences, atomics, intrinsics, math -------------------------------------------------------
// One OS thread runs every fiber, so a fence only has to stop the compiler reordering.
#define __threadfence() __asm__ volatile("" ::: "memory")
#define __threadfence_block() __asm__ volatile("" ::: "memory")

template <class T> inline T atomicAdd(T* p, T v) {
  return cuda_emu::atomic_update(p, [v](T old) { return T(old + v); });
}
template <class T> inline T atomicMax(T* p, T v) {
  return cuda_emu::atomic_update(p, [v](T old) { return old < v ? v : old; });
}
template <class T> inline T atomicMin(T* p, T v) {
  return cuda_emu::atomic_update(p, [v](T old) { return v < old ? v : old; });
}
template <class T> inline T atomicExch(T* p, T v) {
  return cuda_emu::atomic_update(p, [v](T) { return v; });
}
template <class T> inline T atomicCAS(T* p, T compare, T v) {
  return cuda_emu::atomic_update(p, [=](T old) { return old == compare ? v : old; });
}

template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) { return b < a ? b : a; }
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }
template <class T> inline T __ldg(const T* p) { return *p; }

// The CPU's libm: more accurate than the GPU's fast-math intrinsics (see harness.py).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; memcpy(&x, &f, 4); return x; }
