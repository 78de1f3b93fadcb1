"""Cases for tests/test_cuda_emu.py: each runs real or planted CUDA kernels on the CPU emulator
and raises AssertionError when an output is off. Plain functions with JSON-able arguments, so
the same case also runs in a sanitizer subprocess (``harness.run_isolated``).

Every kernel gets its launch shape from :mod:`fastrnn.kernels.cuda_launch` (as the CuPy
launcher does), its float32 inputs rounded from float64 problems, and each output is compared by
name with :mod:`fastrnn.reference` in float64. Outputs start as NaN so an element the kernel
forgets to write fails the comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastrnn import reference as ref
from fastrnn.kernels import cuda_launch as L
from tests.cuda_emu.harness import load
from tests.tolerances import KERNEL_F32_BACKWARD, KERNEL_F32_FORWARD, assert_close

KERNELS = Path(L.__file__).resolve().parent
PLANTED = Path(__file__).resolve().parent / "cuda_emu" / "planted"
i32 = np.int32


def f32(a):
    return None if a is None else np.ascontiguousarray(a, dtype=np.float32)


def nans(shape) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float32)


def layer_problem(B, T, I, H, time_major, lengths, seed=0):
    """float64 inputs of one layer, scaled so tanh is neither saturated nor linear.
    ``lengths``: "none" (NULL lengths, and NULL h0) or "mixed" (random, the first 0, the
    last T)."""
    rng = np.random.default_rng(seed + 1000 * H + 10 * B + T)
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I))
    w_ih = rng.uniform(-1, 1, (H, I)) / np.sqrt(I)
    w_hh = rng.uniform(-1, 1, (H, H)) / np.sqrt(H)
    b = rng.standard_normal(H) * 0.1
    h0 = lens = None
    if lengths == "mixed":
        h0 = rng.standard_normal((B, H)) * 0.5
        lens = rng.integers(0, T + 1, B).astype(np.int32)
        lens[0], lens[-1] = 0, T
    return rng, x, h0, w_ih, w_hh, b, lens


def _block_plan(B, H, per_block, w_in_smem):
    spb, smem = L.block_plan(B, H)
    return per_block or spb, smem if w_in_smem is None else w_in_smem


def check_forward(B, T, I, H, time_major, lengths, per_block=None, w_in_smem=None,
                  order="forward", seed=0, nonlinearity="tanh"):
    """``rnn_fwd_warp`` (H <= 32; input projection fused when I <= 32, else given as W_ih x) or
    ``rnn_fwd_block`` (H > 32), against ``reference.rnn_forward``. ``per_block``: warps per
    block, or sequences per block (default: the launcher's choice)."""
    _, x, h0, w_ih, w_hh, b, lens = layer_problem(B, T, I, H, time_major, lengths)
    y_r, hn_r = ref.rnn_forward(x, h0, w_ih, w_hh, b, lens, time_major, nonlinearity)
    relu = i32(nonlinearity == "relu")
    mod = load(KERNELS / "rnn_forward.cu")
    sx, sy = L.seq_strides(B, T, I, time_major), L.seq_strides(B, T, H, time_major)
    y, h_n = nans(y_r.shape), nans((B, H))
    xp = f32(f32(x).reshape(-1, I) @ f32(w_ih).T)  # W_ih x_t, in y's layout, as the launcher
    if L.use_warp_path(H):
        project = I <= L.WARP_MAX_I
        xin, win, sxin = (f32(x), f32(w_ih), sx) if project else (xp, None, sy)
        mod.launch("rnn_fwd_warp", *L.fwd_warp_launch(B, per_block), xin, win, f32(w_hh), f32(b),
                   f32(h0), lens, y, h_n, i32(B), i32(T), i32(I), i32(H), i32(project),
                   *map(i32, sxin), *map(i32, sy), relu, order=order, seed=seed)
    else:
        spb, smem = _block_plan(B, H, per_block, w_in_smem)
        mod.launch("rnn_fwd_block", *L.fwd_block_launch(B, H, spb, smem), xp, f32(w_hh.T), f32(b),
                   f32(h0), lens, y, h_n, i32(B), i32(T), i32(H), *map(i32, sy), *map(i32, sy),
                   i32(spb), i32(smem), relu, order=order, seed=seed)
    assert_close("y", y_r, y, KERNEL_F32_FORWARD)
    assert_close("h_n", hn_r, h_n, KERNEL_F32_FORWARD)


def check_backward(B, T, I, H, time_major, lengths, per_block=None, w_in_smem=None,
                   alias=False, order="forward", seed=0, nonlinearity="tanh"):
    """``rnn_bwd_warp`` (dx fused when I <= 32) or ``rnn_bwd_block``, then ``rnn_wgrad_partial``
    and ``rnn_wgrad_reduce`` on their ``dz`` (and ``dx = dz W_ih`` as the launcher's GEMM when
    not fused), against ``reference.rnn_backward``. ``dy`` is NULL when ``lengths`` is "none";
    ``alias`` passes one array as both ``dy`` and ``dz``, as the launcher may."""
    rng, x, h0, w_ih, w_hh, b, lens = layer_problem(B, T, I, H, time_major, lengths)
    y = f32(ref.rnn_forward(x, h0, w_ih, w_hh, b, lens, time_major, nonlinearity)[0])
    relu = i32(nonlinearity == "relu")
    dy = None if lengths == "none" else rng.standard_normal(y.shape)
    dh_n = rng.standard_normal((B, H))
    names = ("dx", "dh0", "dw_ih", "dw_hh", "db")
    want = dict(zip(names, ref.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y.astype(np.float64),
                                            lens, time_major, nonlinearity)))
    sx, sy = L.seq_strides(B, T, I, time_major), L.seq_strides(B, T, H, time_major)
    dz = f32(dy).copy() if alias else nans(y.shape)
    dy32 = dz if alias else f32(dy)
    got = {"dx": nans(x.shape), "dh0": nans((B, H))}
    mod = load(KERNELS / "rnn_backward.cu")
    if L.use_warp_path(H):
        fused = I <= L.WARP_MAX_I
        mod.launch("rnn_bwd_warp", *L.bwd_warp_launch(B, per_block), dy32, f32(dh_n),
                   f32(w_ih) if fused else None, f32(w_hh), y, lens, dz,
                   got["dx"] if fused else None, got["dh0"], i32(B), i32(T), i32(I), i32(H),
                   *map(i32, sy), *map(i32, sx), relu, order=order, seed=seed)
    else:
        fused = False
        spb, smem = _block_plan(B, H, per_block, w_in_smem)
        mod.launch("rnn_bwd_block", *L.bwd_block_launch(B, H, spb, smem), dy32, f32(dh_n),
                   f32(w_hh), y, lens, dz, got["dh0"], i32(B), i32(T), i32(H), *map(i32, sy),
                   i32(spb), i32(smem), relu, order=order, seed=seed)
    if not fused:
        got["dx"] = (dz.reshape(-1, H) @ f32(w_ih)).reshape(x.shape)
    got.update(dw_ih=nans((H, I)), dw_hh=nans((H, H)), db=nans(H))
    part = nans(L.wgrad_part_size(B, T, I, H))
    mod.launch("rnn_wgrad_partial", *L.wgrad_partial_launch(B, T, I, H), dz, f32(x), y, f32(h0),
               part, i32(B), i32(T), i32(I), i32(H), *map(i32, sx), *map(i32, sy),
               *map(i32, L.wgrad_plan(B, T, I, H)), order=order, seed=seed)
    mod.launch("rnn_wgrad_reduce", *L.wgrad_reduce_launch(I, H), part, got["dw_ih"],
               got["dw_hh"], got["db"], i32(L.wgrad_blocks(B, T, I, H)), i32(I), i32(H),
               order=order, seed=seed)
    for name in names:
        assert_close(name, want[name], got[name], KERNEL_F32_BACKWARD)


def dense_case(B, C, H):
    """Random ``h [B,H]``, ``w [C,H]``, ``bo [C]``, ``labels [B]`` (float64; seeded by the sizes)
    and the reference's ``logits, loss, acc, dlogits, dh, dw_out, db_out`` for them."""
    rng = np.random.default_rng(B + C + H)
    h = rng.standard_normal((B, H))
    w = rng.standard_normal((C, H)) / np.sqrt(H)
    bo = rng.standard_normal(C) * 0.1
    labels = rng.integers(0, C, B)
    logits = ref.dense_forward(h, w, bo)
    loss, acc, dlogits = ref.softmax_xent(logits, labels)
    return (h, w, bo, labels), (logits, loss, acc, dlogits, *ref.dense_backward(dlogits, h, w))


def check_classifier(B, C, H, order="forward", seed=0):
    """``dense_xent_rows`` then ``dense_grads_reduce`` against the reference's dense layer and
    softmax cross-entropy; also the inference call (no labels: logits only)."""
    (h, w, bo, labels), (logits_r, loss_r, acc_r, dlog_r, dh_r, dw_r, db_r) = dense_case(B, C, H)
    mod = load(KERNELS / "classifier.cu")
    shape, run = L.rows_launch(B, C), {"order": order, "seed": seed}
    sizes = i32(B), i32(C), i32(H)
    logits = nans((B, C))
    mod.launch("dense_xent_rows", *shape, f32(h), f32(w), f32(bo), None, logits, None, None,
               None, None, *sizes, **run)
    assert_close("logits (inference)", logits_r, logits, KERNEL_F32_FORWARD)
    logits, dlog, dh = nans((B, C)), nans((B, C)), nans((B, H))
    row_loss, row_correct, out2, dw, db = nans(B), nans(B), nans(2), nans((C, H)), nans(C)
    mod.launch("dense_xent_rows", *shape, f32(h), f32(w), f32(bo), labels.astype(np.int64),
               logits, row_loss, row_correct, dlog, dh, *sizes, **run)
    mod.launch("dense_grads_reduce", *L.reduce_launch(C, H), dlog, f32(h), row_loss, row_correct,
               dw, db, out2, *sizes, **run)
    for name, want, got in [("logits", logits_r, logits), ("loss", loss_r, out2[0]),
                            ("dlogits", dlog_r, dlog), ("dh", dh_r, dh), ("dw_out", dw_r, dw),
                            ("db_out", db_r, db)]:
        assert_close(name, want, got, KERNEL_F32_FORWARD)
    assert out2[1] == round(acc_r * B), f"correct rows: {out2[1]}, reference {acc_r * B}"
    out2 = nans(2)  # evaluation: loss and correct rows only, no gradients
    mod.launch("dense_grads_reduce", *L.reduce_launch(C, H), None, f32(h), row_loss, row_correct,
               None, None, out2, *sizes, **run)
    assert_close("loss (no gradients)", loss_r, out2[0], KERNEL_F32_FORWARD)
    assert out2[1] == round(acc_r * B)


def clip_by_global_norm(g, clip_norm):
    """``reference.clip_by_global_norm`` on one flat gradient: ``(clipped, norm)``."""
    (clipped,), norm = ref.clip_by_global_norm([g], clip_norm)
    return clipped, norm


def adam_problem(n, grad_scale=1e-2, seed=0):
    """float64 ``(p, g, m, v)`` of one Adam update; ``g`` is rounded to float32 (the kernel's
    input) so the reference norm and clipping see the same values."""
    rng = np.random.default_rng(n + seed)
    p, g = rng.standard_normal(n), f32(rng.standard_normal(n) * grad_scale).astype(np.float64)
    m, v = rng.standard_normal(n) * 1e-3, rng.uniform(0, 1e-4, n)
    return p, g, m, v


def run_adam(p, g, m, v, step, clip_norm, loss, order="forward", seed=0, lr=1e-3):
    """``grad_sumsq_partial`` then ``adam_update`` twice, check and apply (as
    ``kernels/cuda.adam_into``), on float32 copies; returns ``({"param", "m", "v"}, norm,
    applied)``. ``loss``: a float, or None (NULL)."""
    n = p.size
    got = {"param": f32(p), "m": f32(m), "v": f32(v)}
    part = np.full(L.norm_part_size(n), np.nan)
    overflow = np.full(L.adam_launch(n).grid[0], -1, dtype=np.int32)
    norm, applied = nans(1), nans(1)
    run = {"order": order, "seed": seed}
    mod = load(KERNELS / "classifier.cu")
    mod.launch("grad_sumsq_partial", *L.norm_launch(n), f32(g), part, i32(n), **run)
    hyper = f32(L.adam_hyper(step, lr, 0.9, 0.999, 1e-8, clip_norm))
    assert hyper.size == L.ADAM_HYPER_SIZE
    for check in (1, 0):
        mod.launch("adam_update", *L.adam_launch(n), got["param"], f32(g), got["m"], got["v"],
                   hyper, part, i32(part.size), None if loss is None else f32([loss]), overflow,
                   norm, applied, i32(n), i32(check), **run)
        assert np.all(overflow >= 0), "a block of the check launch left its flag unwritten"
    assert applied[0] in (0.0, 1.0), applied
    return got, float(norm[0]), bool(applied[0])


def _assert_norm(norm_r, norm):
    # Squares summed in double: only the final rounding to float32 is left (0.5 ulp), so allow
    # one ulp of float32 at the reference norm, far tighter than any kernel tolerance.
    ulp = float(np.spacing(np.float32(norm_r)))
    print(f"grad norm: {norm!r}, float64 reference {norm_r!r} (ulp {ulp:.1e})")
    assert abs(norm - norm_r) <= ulp, f"grad norm {norm!r}, reference {norm_r!r}"


def check_adam(n, step, clip_norm=0.0, grad_scale=1e-2, loss=None, order="forward", seed=0):
    """``grad_sumsq_partial`` + ``adam_update`` against ``reference.adam_update`` on the clipped
    gradient (one update at 1-based ``step``), the norm against NumPy's float64 norm."""
    p, g, m, v = adam_problem(n, grad_scale)
    got, norm, applied = run_adam(p, g, m, v, step, clip_norm, loss, order, seed)
    assert applied
    clipped, norm_r = clip_by_global_norm(g, clip_norm)
    _assert_norm(norm_r, norm)
    ref.adam_update(p, clipped, m, v, step)
    for name, want in [("param", p), ("m", m), ("v", v)]:
        assert_close(name, want, got[name], KERNEL_F32_FORWARD)


def check_adam_clip_inactive_is_exact(n, order="forward", seed=0):
    """A ``clip_norm`` above the norm scales by exactly 1: the same bits as no clipping."""
    p, g, m, v = adam_problem(n)
    off, norm, _ = run_adam(p, g, m, v, 3, 0.0, 1.5, order, seed)
    on, norm_on, _ = run_adam(p, g, m, v, 3, 2 * norm + 1.0, 1.5, order, seed)
    assert norm == norm_on
    for name in off:
        np.testing.assert_array_equal(on[name], off[name], err_msg=name)


def check_rank_sum(N, k, offset, n_mean, order="forward", seed=0):
    """``sum_in_rank_order`` against NumPy's left-to-right float32 sum over the rows (the same
    operations in the same order: bit for bit), means below ``n_mean``."""
    parts = f32(np.random.default_rng(seed + N * k).standard_normal((N, k)))
    want = parts[0].copy()
    for r in range(1, N):
        want += parts[r]
    idx = offset + np.arange(k)
    want = np.where(idx < n_mean, want * np.float32(1.0 / N), want)
    out = nans(k)
    load(KERNELS / "classifier.cu").launch(
        "sum_in_rank_order", *L.rank_sum_launch(k), parts, out, i32(N), i32(k), np.int64(offset),
        np.int64(n_mean), np.float32(1.0 / N), order=order, seed=seed)
    np.testing.assert_array_equal(out, want)


#: non-finite steps of check_adam_skips: how the gradient, the loss or the update is broken
NONFINITE = ("nan_grad", "inf_grad", "norm_overflow", "inf_loss", "nan_loss", "lr_overflow",
             "v_overflow")


def adam_skip_problem(n, what, clip_norm=1.0):
    """``(p, g, m, v, loss, lr, clip_norm)`` of an Adam step broken as ``what`` says (one of
    :data:`NONFINITE`). ``norm_overflow``: every gradient finite, but the norm above float32's
    range; ``lr_overflow``: an lr at float32's largest value and one first moment at 1, so that
    ``lr * m_hat`` overflows; ``v_overflow``: no clipping and one finite gradient of 1e22, so that
    ``(1 - beta2) * g * g`` (v) overflows float32. The last two are caught by the check launch."""
    p, g, m, v = adam_problem(n)
    loss, lr = 2.3, 1e-3
    if what == "nan_grad":
        g[n // 2] = np.nan
    elif what == "inf_grad":
        g[-1] = -np.inf
    elif what == "norm_overflow":
        g[0] = g[-1] = 3e38
    elif what == "inf_loss":
        loss = np.inf
    elif what == "nan_loss":
        loss = np.nan
    elif what == "lr_overflow":
        lr, m[n // 2] = float(np.finfo(np.float32).max), 1.0
    elif what == "v_overflow":
        g[n // 3], clip_norm = 1e22, 0.0
    else:
        raise ValueError(f"what: expected one of {NONFINITE}, got {what!r}")
    return p, g, m, v, loss, lr, clip_norm


def check_adam_skips(n, what, clip_norm=1.0, order="forward", seed=0):
    """A non-finite step (:func:`adam_skip_problem`) writes nothing: param, m, v keep their bits
    (they start as the float32 problem, compared byte for byte), ``applied`` is 0, and the norm
    still comes back (NaN / inf when the gradient is broken, the true norm otherwise)."""
    p, g, m, v, loss, lr, clip_norm = adam_skip_problem(n, what, clip_norm)
    got, norm, applied = run_adam(p, g, m, v, 5, clip_norm, loss, order, seed, lr)
    assert not applied
    for name, before in [("param", p), ("m", m), ("v", v)]:
        assert got[name].tobytes() == f32(before).tobytes(), f"{name} changed on a {what} step"
    if what == "nan_grad":
        assert np.isnan(norm), norm
    elif what in ("inf_grad", "norm_overflow"):
        assert norm == np.inf, norm
    else:
        _assert_norm(clip_by_global_norm(g, 0.0)[1], norm)


# ---- planted bugs: values are right under every order; only a sanitizer sees them ------------


def planted_tile_reload(fixed, order="forward", seed=0):
    """The missing trailing barrier of ``planted/tile_reload.cu`` (TSan's to find)."""
    n, blocks, steps = 40, 2, 3
    w = np.arange(blocks * n, dtype=np.float32)
    out = nans(blocks * n)
    load(PLANTED / "tile_reload.cu").launch(
        "tile_reload_fixed" if fixed else "tile_reload_racy", blocks, n, 0, w, out, i32(steps),
        order=order, seed=seed)
    right = w.reshape(blocks, n)[:, (np.arange(n) + 1) % n]
    np.testing.assert_array_equal(out, steps * right.ravel())


def planted_pair_max(fixed, order="forward", seed=0):
    """The one-past-the-end shared read of ``planted/pair_max.cu`` (ASan's to find)."""
    n = 37
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    y = nans(n)
    load(PLANTED / "pair_max.cu").launch("pair_max_fixed" if fixed else "pair_max_oob", 1, n,
                                         4 * n, x, y, order=order, seed=seed)
    np.testing.assert_array_equal(y, np.maximum(x, x[np.minimum(np.arange(n) + 1, n - 1)]))
