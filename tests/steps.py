"""Training steps through a backend's classifier contract, for the GPU tests and for the GPU
backend's Python on the CPU emulator (``tests/test_cuda_backend_emu.py``)."""

from __future__ import annotations

import numpy as np

from fastrnn.params import init_params


def batch(spec, B, T, seed):
    """A random batch ``x [B,T,I]`` in [0, 1) (float32) and ``labels [B]`` (int64)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (B, T, spec.input_size)).astype(np.float32)
    labels = rng.integers(0, spec.num_classes, B).astype(np.int64)
    return x, labels


def run_steps(cp, backend_name, spec, steps, B, T, monkeypatch=None, graph=True, clip=0.0,
              nan_at=()):
    """``steps`` training steps from fixed seeds through the backend's ``train_step`` (``cp``: the
    CuPy module the "cuda" backend uses; ``monkeypatch`` sets ``FASTRNN_CUDA_GRAPH``); ``clip``:
    one clip_norm for every step, or a list of one per step. Steps in ``nan_at`` (1-based) get a
    batch with a NaN and must leave params, m and v bitwise as they were; they do not count as
    Adam steps. Returns per-step arrays (loss, acc, grad_norm), the final params and the kernels.
    """
    from fastrnn.backends import get_backend

    if monkeypatch is not None:
        monkeypatch.setenv("FASTRNN_CUDA_GRAPH", "1" if graph else "0")
    be = get_backend(backend_name)
    dtype = np.float64 if backend_name == "reference" else np.float32
    params = init_params(spec, 0).astype(dtype)
    m, v = np.zeros_like(params), np.zeros_like(params)
    if backend_name == "cuda":
        params, m, v = cp.asarray(params), cp.asarray(m), cp.asarray(v)
    host = cp.asnumpy if backend_name == "cuda" else np.asarray
    clf = be.classifier(spec)
    clips = clip if isinstance(clip, list) else [clip] * steps
    out, adam_step = [], 0
    for s in range(1, steps + 1):
        x, labels = batch(spec, B, T, s)
        bad = s in nan_at
        if bad:
            x[B // 2, T // 2, 0] = np.nan
            before = [host(a).tobytes() for a in (params, m, v)]
        if backend_name == "cuda":
            x, labels = cp.asarray(x), cp.asarray(labels)
        else:
            x = x.astype(dtype)
        res = clf.train_step(params, m, v, adam_step + 1, x, labels, 1e-3, 0.9, 0.999, 1e-8,
                             clips[s - 1])
        assert len(res) == 4 and all(isinstance(r, float) for r in res[:3]), res
        assert res[3] is (not bad), f"step {s}: {res}"  # applied
        res = res[:3]
        if bad:
            assert not (np.isfinite(res[0]) and np.isfinite(res[2])), f"step {s}: {res}"
            for name, b, a in zip(("params", "m", "v"), before, (params, m, v)):
                assert host(a).tobytes() == b, f"{name} changed on the NaN step {s}"
            continue
        adam_step += 1
        out.append(res)
    loss, acc, norm = (np.array(c) for c in zip(*out))
    return loss, acc, norm, host(params), clf


def check_inference(cp, spec, B, T, calls=2):
    """The cuda backend's ``predict`` and ``evaluate`` (``cp``: the CuPy module it uses) against
    the reference's on a random batch, ``calls`` times (later calls run the cached launch
    arguments)."""
    from fastrnn.backends import get_backend
    from tests.tolerances import KERNEL_F32_FORWARD, assert_close

    params = init_params(spec, 1)
    x, labels = batch(spec, B, T, 7)
    ref_clf = get_backend("reference").classifier(spec)
    clf = get_backend("cuda").classifier(spec)
    logits_r = ref_clf.predict(params.astype(np.float64), x.astype(np.float64))
    loss_r, acc_r = ref_clf.evaluate(params.astype(np.float64), x.astype(np.float64), labels)
    dp, dx, dl = cp.asarray(params), cp.asarray(x), cp.asarray(labels)
    for _ in range(calls):
        assert_close("logits", logits_r, cp.asnumpy(clf.predict(dp, dx)), KERNEL_F32_FORWARD)
        loss, acc = clf.evaluate(dp, dx, dl)
        assert_close("eval loss", loss_r, loss, KERNEL_F32_FORWARD)
        assert abs(acc - acc_r) <= 1 / B + 1e-12
