"""Every CUDA kernel on a real GPU (CuPy) against the float64 NumPy reference, output by output.

All tests are ``@pytest.mark.gpu``: conftest skips them without CuPy and a device. Shapes are
irregular on purpose (H = 1, 5, 31, 33, 64, 257 and 1024; B = 1, 3, 128; T = 1, 28, 63; lengths
of 0 and T; both layouts), covering both kernel paths (warp: H <= 32, block: H > 32, with W_hh in
shared memory or not) and both input paths (projection fused for I <= 32, a GEMM above).
Run: ``pytest -m gpu tests/test_kernels_gpu.py -q``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import reference as ref
from fastrnn.params import ModelSpec, init_params
from tests import emu_cases as cases
from tests.steps import batch, check_inference, run_steps
from tests.tolerances import KERNEL_F32_BACKWARD, KERNEL_F32_FORWARD, assert_close

pytestmark = pytest.mark.gpu

HS = (1, 5, 31, 33, 64, 257)
BS = (1, 3, 128)
TS = (1, 28, 63)


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.fixture(scope="module")
def kc():
    from fastrnn.kernels import cuda

    return cuda


def _lengths(rng, B, T, kind):
    if kind == "none":
        return None
    lens = rng.integers(0, T + 1, size=B)
    lens[0] = 0
    if B > 1:
        lens[-1] = T
    return lens.astype(np.int32)


def _problem(B, T, I, H, time_major, lengths_kind, seed=0):
    """float64 inputs of one layer (scaled so tanh is neither saturated nor linear)."""
    rng = np.random.default_rng(seed + 1000 * H + 10 * B + T)
    shape = (T, B, I) if time_major else (B, T, I)
    x = rng.standard_normal(shape)
    h0 = rng.standard_normal((B, H)) * 0.5
    w_ih = rng.uniform(-1, 1, (H, I)) / np.sqrt(I)
    w_hh = rng.uniform(-1, 1, (H, H)) / np.sqrt(H)
    b = rng.standard_normal(H) * 0.1
    return rng, x, h0, w_ih, w_hh, b, _lengths(rng, B, T, lengths_kind)


def _dev(cp, a, dtype=np.float32):
    return None if a is None else cp.asarray(np.ascontiguousarray(a, dtype=dtype))


def _check_layer(cp, kc, B, T, I, H, time_major, lengths_kind):
    rng, x, h0, w_ih, w_hh, b, lengths = _problem(B, T, I, H, time_major, lengths_kind)
    y_r, hn_r = ref.rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major)
    d = {k: _dev(cp, v) for k, v in dict(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b=b).items()}
    dl = _dev(cp, lengths, np.int32)
    y, hn = kc.rnn_forward(d["x"], d["h0"], d["w_ih"], d["w_hh"], d["b"], dl, time_major)
    tag = f"B={B} T={T} I={I} H={H} tm={time_major} len={lengths_kind}"
    assert_close(f"y [{tag}]", y_r, cp.asnumpy(y), KERNEL_F32_FORWARD)
    assert_close(f"h_n [{tag}]", hn_r, cp.asnumpy(hn), KERNEL_F32_FORWARD)
    if lengths is not None:  # past each length the output is exactly zero
        yn = cp.asnumpy(y) if not time_major else cp.asnumpy(y).swapaxes(0, 1)
        for bi, ln in enumerate(lengths):
            assert not yn[bi, ln:].any(), f"y past length {ln} not zero [{tag}]"

    # Backward: random upstream gradients on both outputs and the final state; the saved y is
    # the reference's (rounded to float32) so only the BPTT itself is compared.
    dy = rng.standard_normal(y_r.shape)
    dh_n = rng.standard_normal((B, H))
    y32 = y_r.astype(np.float32).astype(np.float64)
    grads_r = ref.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y32, lengths, time_major)
    grads = kc.rnn_backward(_dev(cp, dy), _dev(cp, dh_n), d["x"], d["h0"], d["w_ih"], d["w_hh"],
                            _dev(cp, y32), dl, time_major)
    for name, r, o in zip(("dx", "dh0", "dw_ih", "dw_hh", "db"), grads_r, grads):
        assert_close(f"{name} [{tag}]", r, cp.asnumpy(o), KERNEL_F32_BACKWARD)


@pytest.mark.parametrize("lengths_kind", ["none", "mixed"])
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("B", BS)
@pytest.mark.parametrize("H", HS)
def test_layer(cp, kc, H, B, T, time_major, lengths_kind):
    _check_layer(cp, kc, B, T, 28, H, time_major, lengths_kind)


@pytest.mark.parametrize("H", [5, 31, 64])
@pytest.mark.parametrize("time_major", [False, True])
def test_layer_wide_input(cp, kc, H, time_major):
    """I > 32: the input projection and dx go through GEMMs on both paths."""
    _check_layer(cp, kc, 3, 28, 40, H, time_major, "mixed")


def test_layer_h1024(cp, kc):
    _check_layer(cp, kc, 3, 28, 28, 1024, False, "mixed")


def test_layer_long_sequences(cp, kc):
    """B*T above 32 rows per SM: each rnn_wgrad_partial block stages several chunks of rows."""
    _check_layer(cp, kc, 3, 1500, 4, 5, True, "mixed")
    _check_layer(cp, kc, 2, 2200, 28, 32, False, "none")


def test_layer_many_blocks_of_sequences(cp, kc):
    """B above the one-warp-per-block threshold (4 warps per block, B not a multiple of 4) and
    several sequences per block on the block path."""
    _check_layer(cp, kc, 1027, 5, 28, 31, False, "mixed")
    _check_layer(cp, kc, 1027, 5, 28, 33, True, "mixed")


@pytest.mark.parametrize("B,C,H", [(1, 10, 31), (128, 10, 31), (3, 37, 5), (77, 100, 257)])
def test_dense_xent(cp, kc, B, C, H):
    (h, w, bo, labels), (logits_r, loss_r, acc_r, dlog_r, dh_r, dw_r, db_r) = cases.dense_case(
        B, C, H)
    loss, correct, logits, dlog, dh, dw, db = kc.dense_xent(_dev(cp, h), _dev(cp, w),
                                                            _dev(cp, bo), cp.asarray(labels))
    tag = f"B={B} C={C} H={H}"
    assert_close(f"logits [{tag}]", logits_r, cp.asnumpy(logits), KERNEL_F32_FORWARD)
    assert_close(f"loss [{tag}]", loss_r, float(loss), KERNEL_F32_FORWARD)
    assert float(correct) / B == pytest.approx(acc_r, abs=1e-12)
    assert_close(f"dlogits [{tag}]", dlog_r, cp.asnumpy(dlog), KERNEL_F32_FORWARD)
    assert_close(f"dh [{tag}]", dh_r, cp.asnumpy(dh), KERNEL_F32_FORWARD)
    assert_close(f"dw_out [{tag}]", dw_r, cp.asnumpy(dw), KERNEL_F32_FORWARD)
    assert_close(f"db_out [{tag}]", db_r, cp.asnumpy(db), KERNEL_F32_FORWARD)


def _assert_norm(norm_r, norm, what="grad norm"):
    """The norm is summed in double: within one float32 ulp of the float64 norm."""
    ulp = float(np.spacing(np.float32(norm_r)))
    print(f"{what}: {norm!r}, float64 reference {norm_r!r} (ulp {ulp:.1e})")
    assert abs(norm - norm_r) <= ulp, f"{what} {norm!r}, reference {norm_r!r}"


@pytest.mark.parametrize("clip_norm", [0.0, 0.05])
@pytest.mark.parametrize("n,step", [(1, 1), (2180, 3), (6086, 10), (100_003, 1000),
                                    (3_000_017, 2)])
def test_adam(cp, kc, n, step, clip_norm):
    """grad_sumsq_partial + adam_update (one to 128 norm blocks, grid-stride Adam above 528
    blocks) against the reference's Adam on the clipped gradient."""
    p, g, m, v = cases.adam_problem(n)
    dp, dg, dm, dv = (_dev(cp, a) for a in (p, g, m, v))
    clipped, norm_r = cases.clip_by_global_norm(g, clip_norm)
    ref.adam_update(p, clipped, m, v, step)
    norm, applied = kc.adam(dp, dg, dm, dv, step, clip_norm=clip_norm, loss=2.3)
    _assert_norm(norm_r, float(norm[0]))
    assert float(applied[0]) == 1.0
    assert_close("adam m", m, cp.asnumpy(dm), KERNEL_F32_FORWARD)
    assert_close("adam v", v, cp.asnumpy(dv), KERNEL_F32_FORWARD)
    assert_close("adam param", p, cp.asnumpy(dp), KERNEL_F32_FORWARD)


@pytest.mark.parametrize("n", [2180, 100_003])
@pytest.mark.parametrize("what", cases.NONFINITE)
def test_adam_nonfinite_step_writes_nothing(cp, kc, n, what):
    p, g, m, v, loss, lr, clip_norm = cases.adam_skip_problem(n, what)
    dp, dg, dm, dv = (_dev(cp, a) for a in (p, g, m, v))
    before = [cp.asnumpy(a).tobytes() for a in (dp, dm, dv)]
    norm, applied = kc.adam(dp, dg, dm, dv, 5, lr=lr, clip_norm=clip_norm, loss=loss)
    norm = float(norm[0])
    assert float(applied[0]) == 0.0
    for name, b, a in zip(("param", "m", "v"), before, (dp, dm, dv)):
        assert cp.asnumpy(a).tobytes() == b, f"{name} changed on a {what} step"
    if what == "nan_grad":
        assert np.isnan(norm)
    elif what in ("inf_grad", "norm_overflow"):
        assert norm == np.inf
    else:
        _assert_norm(cases.clip_by_global_norm(g, 0.0)[1], norm)


@pytest.mark.parametrize("clip", [0.0, 0.05], ids=["no-clip", "clip"])
@pytest.mark.parametrize("layers", [1, 3])
def test_classifier_10_steps_match_reference(cp, layers, clip, monkeypatch):
    """clip 0.05 is below every step's gradient norm here (~0.1-1), so each step is clipped."""
    spec = ModelSpec(28, 31, layers, 10)
    l_r, a_r, n_r, p_r, _ = run_steps(cp, "reference", spec, 10, 128, 28, clip=clip)
    l_c, a_c, n_c, p_c, _ = run_steps(cp, "cuda", spec, 10, 128, 28, monkeypatch, graph=True,
                                       clip=clip)
    for s in range(10):
        assert_close(f"loss step {s + 1}", l_r[s], l_c[s], KERNEL_F32_FORWARD)
        assert_close(f"grad norm step {s + 1}", n_r[s], n_c[s], KERNEL_F32_BACKWARD)
        assert abs(a_r[s] - a_c[s]) <= 1 / 128 + 1e-12, f"accuracy step {s + 1}"
    if clip:
        assert (n_r > clip).all(), f"not every step clipped: norms {n_r}"
    assert_close("params after 10 steps", p_r, p_c, KERNEL_F32_BACKWARD)


#: clip_norm per step: off, active, inactive, active with another value, off
CLIPS = [0.0, 0.05, 1e3, 0.02, 0.0]


def test_classifier_graph_equals_eager(cp, monkeypatch):
    """The CUDA-graph replay runs exactly the eager launches: bitwise-equal losses, norms and
    params, with clip_norm changing from step to step (read at replay from the pinned hyper
    buffer: captured once, never again)."""
    from fastrnn.backends import cuda as cuda_backend

    spec = ModelSpec(28, 31, 3, 10)
    enqueued = []
    enqueue = cuda_backend._CudaClassifier._enqueue_step
    monkeypatch.setattr(cuda_backend._CudaClassifier, "_enqueue_step",
                        lambda self, *a: enqueued.append(1) or enqueue(self, *a))
    l_g, a_g, n_g, p_g, clf = run_steps(cp, "cuda", spec, 5, 128, 28, monkeypatch, graph=True,
                                         clip=CLIPS)
    assert len(enqueued) == 2, f"{len(enqueued)} enqueues: want 1 eager step + 1 capture"
    bf = clf._bufs[(128, 28)]
    assert bf.graph is not None and bf.eager_steps == 1, "the graph was not replayed"
    l_e, a_e, n_e, p_e, _ = run_steps(cp, "cuda", spec, 5, 128, 28, monkeypatch, graph=False,
                                       clip=CLIPS)
    np.testing.assert_array_equal(l_g, l_e)
    np.testing.assert_array_equal(a_g, a_e)
    np.testing.assert_array_equal(n_g, n_e)
    np.testing.assert_array_equal(p_g, p_e)


def test_classifier_deterministic(cp, monkeypatch):
    """Same state, same batch, twice: bitwise-equal results (no float atomics anywhere)."""
    spec = ModelSpec(28, 31, 3, 10)
    runs = [run_steps(cp, "cuda", spec, 3, 128, 28, monkeypatch, clip=0.05) for _ in range(2)]
    for i in range(4):
        np.testing.assert_array_equal(runs[0][i], runs[1][i])


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
def test_classifier_nan_batch_writes_nothing(cp, monkeypatch, graph):
    """A batch with a NaN (steps 1, 3 and 5: the eager first step, then graph replays) leaves
    params, m and v bitwise unchanged (checked inside _run_steps); the good steps around them
    then give exactly the run that never saw those batches."""
    spec = ModelSpec(28, 31, 2, 10)
    bad = run_steps(cp, "cuda", spec, 7, 64, 28, monkeypatch, graph=graph, clip=0.05,
                     nan_at=(1, 3, 5))
    # the same good batches (seeds 2, 4, 6, 7) as Adam steps 1-4, without the NaN steps
    monkeypatch.setenv("FASTRNN_CUDA_GRAPH", "1" if graph else "0")
    from fastrnn.backends import get_backend

    clf = get_backend("cuda").classifier(spec)
    params = cp.asarray(init_params(spec, 0))
    m, v = cp.zeros_like(params), cp.zeros_like(params)
    good = []
    for adam_step, seed in enumerate((2, 4, 6, 7), start=1):
        x, labels = batch(spec, 64, 28, seed)
        good.append(clf.train_step(params, m, v, adam_step, cp.asarray(x), cp.asarray(labels),
                                   1e-3, 0.9, 0.999, 1e-8, 0.05)[:3])
    loss, acc, norm = (np.array(c) for c in zip(*good))
    np.testing.assert_array_equal(bad[0], loss)
    np.testing.assert_array_equal(bad[2], norm)
    np.testing.assert_array_equal(bad[3], cp.asnumpy(params))


@pytest.mark.parametrize("I,H,layers", [(40, 64, 2), (28, 257, 1), (40, 5, 1)])
def test_classifier_general_path(cp, I, H, layers, monkeypatch):
    """Shapes that cannot use the graph (GEMMs for the projection / dx, block kernels)."""
    spec = ModelSpec(I, H, layers, 10)
    l_r, _, n_r, p_r, _ = run_steps(cp, "reference", spec, 3, 33, 9, clip=0.05)
    l_c, _, n_c, p_c, _ = run_steps(cp, "cuda", spec, 3, 33, 9, monkeypatch, clip=0.05)
    assert_close("losses", l_r, l_c, KERNEL_F32_FORWARD)
    assert_close("grad norms", n_r, n_c, KERNEL_F32_BACKWARD)
    assert_close("params after 3 steps", p_r, p_c, KERNEL_F32_BACKWARD)


@pytest.mark.parametrize("layers", [1, 3])
def test_evaluate_and_predict(cp, layers):
    check_inference(cp, ModelSpec(28, 31, layers, 10), 300, 28)


def test_predict_follows_the_parameter_buffer(cp):
    """predict caches launch arguments per parameter buffer: a second buffer, and an in-place
    change of the first, must both show in the logits."""
    from fastrnn.backends import get_backend

    spec = ModelSpec(28, 31, 2, 10)
    x, _ = batch(spec, 64, 28, 3)
    ref_clf = get_backend("reference").classifier(spec)
    cu_clf = get_backend("cuda").classifier(spec)
    dx = cp.asarray(x)
    p1, p2 = init_params(spec, 1), init_params(spec, 2)
    d1, d2 = cp.asarray(p1), cp.asarray(p2)
    for name, p, d in [("params 1", p1, d1), ("params 2", p2, d2), ("params 1 again", p1, d1)]:
        want = ref_clf.predict(p.astype(np.float64), x.astype(np.float64))
        assert_close(f"logits, {name}", want, cp.asnumpy(cu_clf.predict(d, dx)),
                     KERNEL_F32_FORWARD)
    d1 *= 0.5  # in place: same buffer, new values
    want = ref_clf.predict(p1.astype(np.float64) * 0.5, x.astype(np.float64))
    assert_close("logits, params 1 halved", want, cp.asnumpy(cu_clf.predict(d1, dx)),
                 KERNEL_F32_FORWARD)
