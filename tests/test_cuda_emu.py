"""The CUDA kernels run on the CPU: ``kernels/*.cu`` compiled by g++ through ``tests/cuda_emu``
(``harness.py`` says how, and what it cannot see), against the NumPy reference.

First the harness itself: warp collectives against NumPy, misuses it must reject, and planted
bugs it must flag (a race whose values are right under every order: TSan; a one-past-the-end
shared read: ASan; a missing barrier that only some orders show) while passing their fixed twins.
Then every entry point of ``kernels/*.cu`` with the launch shapes of ``cuda_launch``, on
irregular shapes (H = 1, 5, 31, 33, 64, 257; B = 1, 3, 5 against 4 warps or 2-3 sequences per
block; T = 1, 7, 28; lengths 0 and T; both layouts), in all three thread orders on some, and
under TSan and ASan+UBSan on one small shape each.

Run: ``pytest -m cuda_emu tests/test_cuda_emu.py`` (needs g++; about a minute on 2 cores, the
first run compiles into ``$CUDA_EMU_CACHE``, default ``/tmp/fastrnn-cuda-emu``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fastrnn.kernels import cuda_launch as L
from tests import emu_cases as cases
from tests.cuda_emu.harness import EmuError, load, run_isolated, sanitizer_runtime

pytestmark = [pytest.mark.cuda_emu,
              pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")]

ORDERS = ("forward", "reverse", "random")
SANITIZER_REPORTS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "runtime error:")


def _sanitized(build, case, **kwargs):
    if sanitizer_runtime(build) is None:
        pytest.skip(f"g++ has no {build} runtime")
    res = run_isolated(build, f"tests.emu_cases:{case}", **kwargs)
    print(res.stdout, res.stderr[-6000:])
    return res


def _assert_clean(res):
    assert res.returncode == 0 and not any(r in res.stderr for r in SANITIZER_REPORTS), (
        f"exit {res.returncode}:\n{res.stderr[-6000:]}")


# ---- the harness ------------------------------------------------------------------------------


def _warp_ops_expected(x, width):
    """What ``planted/warp_ops.cu`` writes, from the CUDA semantics of each collective."""
    lane = np.arange(x.size) % 32
    base = lane & ~(width - 1)
    warp0 = np.arange(x.size) - lane
    src = {
        "idx": base + (7 * lane + 3) % width,
        "up": np.where(lane - 3 >= base, lane - 3, lane),
        "down": np.where(lane + 5 < base + width, lane + 5, lane),
        "xor": np.where((lane ^ 1) < base + width, lane ^ 1, lane),
    }
    rows = [x[warp0 + s] for s in src.values()]
    groups = x.reshape(-1, width)
    rows.append(np.repeat(groups.sum(axis=1), width))
    rows.append(np.repeat((groups > 0).sum(axis=1), width).astype(np.float32))
    rows.append(x[warp0 + np.where(lane < 16, 15, 16)])
    return np.stack(rows)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("width", [32, 8, 1])
def test_warp_collectives_match_numpy(width, order):
    x = np.random.default_rng(width).standard_normal(128).astype(np.float32)
    out = np.full((7, 128), np.nan, dtype=np.float32)
    load(cases.PLANTED / "warp_ops.cu").launch("warp_ops", 2, 64, 0, x, out, np.int32(width),
                                               order=order, seed=width)
    np.testing.assert_allclose(out, _warp_ops_expected(x, width), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("entry,message", [
    ("shfl_from_returned_lane", r"__shfl_sync \(line \d+\): lane 12 reads lane 16, which does not"),
    ("divergent_barrier", r"deadlock .* threads 0-15 at __syncthreads \(line \d+\); threads 16-31 "
                          r"at __syncthreads \(line \d+\)"),
])
def test_emulator_rejects_misuse(entry, message):
    with pytest.raises(EmuError, match=message):
        load(cases.PLANTED / "warp_ops.cu").launch(entry, 1, 32, 0, np.zeros(32, np.float32))


def test_arguments_must_have_the_c_types():
    mod = load(cases.PLANTED / "tile_reload.cu")
    w = np.zeros(40, np.float32)
    with pytest.raises(TypeError, match=r"argument 2 \(int\): expected np.int32, got int"):
        mod.launch("tile_reload_fixed", 1, 40, 0, w, w, 3)
    with pytest.raises(TypeError, match=r"argument 0 \(const float\*\): expected a C-contiguous "
                                        r"float32 array or None, got a C-contiguous float64"):
        mod.launch("tile_reload_fixed", 1, 40, 0, w.astype(np.float64), w, np.int32(3))


def test_missing_barrier_shows_in_some_orders_only():
    """Reading a neighbour's shared slot without a barrier is right when threads happen to run
    in increasing order, NaN (the 0xFF fill) in reverse and in most random orders."""
    mod = load(cases.PLANTED / "neighbour_shift.cu")
    x = np.arange(1, 65, dtype=np.float32)
    want = np.concatenate([[0], x[:-1]])

    def run(entry, order, seed=0):
        y = np.full(64, -1, dtype=np.float32)
        mod.launch(entry, 1, 64, 4 * 64, x, y, order=order, seed=seed)
        return y

    for order in ORDERS:
        np.testing.assert_array_equal(run("shift_fixed", order), want)
    np.testing.assert_array_equal(run("shift_racy", "forward"), want)
    assert np.isnan(run("shift_racy", "reverse")[1:]).all()
    assert all(np.isnan(run("shift_racy", "random", seed)).any() for seed in range(3))


@pytest.mark.parametrize("order", ORDERS)
def test_planted_bugs_give_right_values(order):
    """Neither planted bug changes a value, in any order: only the sanitizers can see them."""
    for fixed in (False, True):
        cases.planted_tile_reload(fixed, order, seed=1)
        cases.planted_pair_max(fixed, order, seed=1)


def test_tsan_flags_missing_barrier():
    res = _sanitized("tsan", "planted_tile_reload", fixed=False)
    assert res.returncode == 66, res.stderr[-3000:]  # TSan's exit code: values were right
    assert "WARNING: ThreadSanitizer: data race" in res.stderr
    assert "tile_reload.cu:12" in res.stderr and "tile_reload.cu:14" in res.stderr  # write, read


def test_asan_flags_off_by_one_shared_read():
    res = _sanitized("asan", "planted_pair_max", fixed=False)
    assert res.returncode != 0
    assert "ERROR: AddressSanitizer: use-after-poison" in res.stderr  # past the launch's size
    assert "pair_max.cu:13" in res.stderr


@pytest.mark.parametrize("build,case", [("tsan", "planted_tile_reload"),
                                        ("asan", "planted_pair_max")])
def test_sanitizers_pass_the_fixed_twins(build, case):
    _assert_clean(_sanitized(build, case, fixed=True))


# ---- the real kernels -------------------------------------------------------------------------

#: (B, T, I, H, time_major, lengths, per_block, w_in_smem): per_block is warps per block on the
#: warp path (H <= 32), sequences per block on the block path; None: the launcher's choice.
LAYERS = [
    (1, 7, 3, 1, False, "none", None, None),
    (3, 28, 3, 5, True, "mixed", None, None),
    (3, 1, 4, 31, False, "mixed", None, None),
    (5, 28, 6, 31, True, "mixed", 4, None),  # 4 warps per block, B = 5: a half-empty block
    (5, 7, 40, 31, False, "mixed", 4, None),  # I > 32: projection and dx outside the kernel
    (1, 28, 4, 33, False, "none", None, None),
    (5, 7, 4, 33, True, "mixed", 3, 1),  # 3 sequences per block, W_hh in shared memory
    (5, 7, 4, 64, False, "mixed", 2, 0),  # W_hh read from global memory
    (3, 7, 4, 64, True, "mixed", None, None),
    (3, 7, 4, 257, True, "mixed", 2, None),
    (2, 1, 3, 257, False, "mixed", None, None),
]


def _layer_id(case):
    B, T, I, H, tm, lengths, per_block, w_in_smem = case
    extra = "".join(f"-{k}{v}" for k, v in (("pb", per_block), ("ws", w_in_smem)) if v is not None)
    return f"B{B}-T{T}-I{I}-H{H}-{'tm' if tm else 'bm'}-{lengths}{extra}"


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("case", LAYERS, ids=_layer_id)
def test_forward(case, nonlinearity):
    cases.check_forward(*case, nonlinearity=nonlinearity)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("case", LAYERS, ids=_layer_id)
def test_backward(case, nonlinearity):
    cases.check_backward(*case, nonlinearity=nonlinearity)


def test_backward_with_dz_aliasing_dy():
    cases.check_backward(3, 7, 3, 5, False, "mixed", alias=True)
    cases.check_backward(3, 7, 4, 33, True, "mixed", 2, alias=True)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("B,T,I,H,time_major,lengths", [(3, 1500, 4, 5, True, "mixed"),
                                                        (2, 2200, 30, 32, False, "none")])
def test_backward_long_sequences(B, T, I, H, time_major, lengths, order):
    """B*T > 32 * NUM_SMS rows: each rnn_wgrad_partial block stages several chunks, the last
    one partial."""
    assert L.wgrad_plan(B, T, I, H)[0] > L.WGRAD_CHUNK
    cases.check_backward(B, T, I, H, time_major, lengths, order=order, seed=5)


@pytest.mark.parametrize("order", ["reverse", "random"])
@pytest.mark.parametrize("case", [LAYERS[3], LAYERS[6], LAYERS[9]], ids=_layer_id)
def test_layer_in_every_thread_order(case, order):
    cases.check_forward(*case, order=order, seed=7)
    cases.check_backward(*case, order=order, seed=7)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("B,C,H", [(1, 10, 31), (5, 37, 5), (6, 10, 64)])
def test_classifier_head(B, C, H, order):
    cases.check_classifier(B, C, H, order, seed=3)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n,step", [(1, 1), (257, 3), (2180, 1000)])
def test_adam(n, step, order):
    cases.check_adam(n, step, order=order, seed=3)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("clip_norm", [0.0, 0.05, 1e3], ids=["off", "active", "inactive"])
def test_adam_clipped(clip_norm, order):
    """n = 2180 (the showcase's flat buffer, one norm block): the gradient's norm is ~0.47."""
    cases.check_adam(2180, 3, clip_norm, loss=2.3, order=order, seed=3)


@pytest.mark.parametrize("n", [8192, 8193, 100_003, 3_000_017])
def test_adam_clipped_many_norm_blocks(n):
    """One norm block up to 8K gradients, then more (8193: the second one holds one element),
    up to the 128-block cap, and the grid-stride Adam beyond 4 blocks per SM."""
    assert L.norm_part_size(n) == min(L.NORM_MAX_BLOCKS, -(-n // L.NORM_PER_BLOCK))
    cases.check_adam(n, 7, 0.5, seed=1)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("N,k,offset,n_mean", [(1, 1, 0, 0), (2, 300, 300, 599), (3, 257, 0, 10),
                                               (8, 1000, 7000, 7999)])
def test_sum_in_rank_order(N, k, offset, n_mean, order):
    """The data-parallel gradient exchange's sum: rows in rank order, means below n_mean (the
    last shard of a buffer whose final entry is a count, not a mean)."""
    cases.check_rank_sum(N, k, offset, n_mean, order=order, seed=3)


def test_adam_clip_handles_gradients_whose_squares_overflow_float32():
    """|g| ~ 1e30: g*g overflows float32 but not the double sum; the clipped step is finite."""
    cases.check_adam(300, 2, 1.0, grad_scale=1e30)


def test_adam_clip_inactive_is_exact():
    cases.check_adam_clip_inactive_is_exact(2180)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("what", cases.NONFINITE)
def test_adam_nonfinite_step_writes_nothing(what, order):
    cases.check_adam_skips(2180, what, order=order, seed=3)


def test_adam_nonfinite_step_writes_nothing_many_blocks():
    """The skip is decided by every block on its own: 13 norm blocks, 392 Adam blocks; an
    overflowing update in one block stops all of them."""
    for what in ("nan_grad", "inf_loss", "v_overflow"):
        cases.check_adam_skips(100_003, what, clip_norm=0.0)


#: one small shape per kernel under each sanitizer (warp and block paths, both layouts)
SANITIZED = [
    ("check_forward", dict(B=5, T=7, I=3, H=5, time_major=False, lengths="mixed", per_block=4)),
    ("check_backward", dict(B=5, T=7, I=3, H=5, time_major=True, lengths="mixed", per_block=4)),
    ("check_forward", dict(B=5, T=7, I=3, H=33, time_major=True, lengths="mixed", per_block=3,
                           w_in_smem=1)),
    ("check_backward", dict(B=5, T=7, I=3, H=33, time_major=False, lengths="mixed",
                            per_block=3, w_in_smem=1)),
    ("check_classifier", dict(B=5, C=37, H=5)),
    ("check_adam", dict(n=300, step=2, clip_norm=0.01, loss=2.3)),
    ("check_adam_skips", dict(n=300, what="nan_grad")),
    ("check_adam_skips", dict(n=300, what="v_overflow")),
    ("check_adam", dict(n=8193, step=2, clip_norm=0.5)),  # two norm blocks
]


@pytest.mark.parametrize("build", ["tsan", "asan"])
@pytest.mark.parametrize("case,kwargs", SANITIZED, ids=[
    f"{c}-{k['H']}" if "H" in k else f"{c}-{k['n']}" if "n" in k else c for c, k in SANITIZED])
def test_real_kernels_under_sanitizer(build, case, kwargs):
    _assert_clean(_sanitized(build, case, order="random", **kwargs))
