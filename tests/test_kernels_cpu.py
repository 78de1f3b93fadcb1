"""The CPU (Numba) kernels against the NumPy reference, output by output.

Shapes are irregular on purpose and cover each value pairwise rather than as a full product.
Run once more with ``NUMBA_BOUNDSCHECK=1`` in CI (a separate process: it is read at compile time).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from fastrnn import reference as ref
from fastrnn.params import ModelSpec, init_params
from tests.tolerances import (
    KERNEL_F32_BACKWARD,
    KERNEL_F32_FORWARD,
    KERNEL_F64,
    STEPS_LOSS_F32,
    STEPS_LOSS_F64,
    STEPS_PARAMS_F32,
    STEPS_PARAMS_F64,
    assert_close,
)

rnn_cpu = pytest.importorskip("fastrnn.kernels.rnn_cpu")
train_cpu = pytest.importorskip("fastrnn.kernels.train_cpu")
from fastrnn.kernels import rnn_gemm  # noqa: E402  (after the skip: needs Numba)

#: the CPU backend's two strategies (fastrnn/backends/cpu.py), by the name FASTRNN_CPU_STRATEGY
#: gives them; every layer kernel test runs on both
LAYER_KERNELS = {"fused": rnn_cpu, "gemm": rnn_gemm}

DTYPES = [np.float64, np.float32]

# (B, T, I, H, time_major): every H, B, T value, both layouts, pairwise
SHAPES = [
    (1, 1, 3, 1, False),
    (3, 28, 28, 31, True),
    (128, 63, 5, 5, False),
    (3, 63, 17, 33, False),
    (128, 1, 28, 64, True),
    (1, 28, 9, 257, False),
    (128, 28, 28, 31, False),
    (3, 1, 40, 257, True),
    (1, 63, 33, 64, True),
    (128, 28, 2, 33, True),
]


def _tol(dtype, backward):
    if dtype == np.float64:
        return KERNEL_F64
    return KERNEL_F32_BACKWARD if backward else KERNEL_F32_FORWARD


def _problem(B, T, I, H, time_major, dtype, seed=0):
    rng = np.random.default_rng(seed)
    shape = (T, B, I) if time_major else (B, T, I)
    x = rng.standard_normal(shape)
    h0 = 0.5 * rng.standard_normal((B, H))
    w_ih = rng.standard_normal((H, I)) / np.sqrt(I)
    w_hh = np.linalg.qr(rng.standard_normal((H, H)))[0]
    b = 0.1 * rng.standard_normal(H)
    lengths = rng.integers(0, T + 1, B).astype(np.int32)
    lengths[0] = T
    lengths[-1] = 0 if B > 1 else T
    if B > 2:
        lengths[1] = 0
    arrays = [a.astype(dtype) for a in (x, h0, w_ih, w_hh, b)]
    return arrays, lengths, rng


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("strategy", LAYER_KERNELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("B,T,I,H,time_major", SHAPES)
def test_rnn_forward_backward(B, T, I, H, time_major, dtype, strategy, nonlinearity):
    kernels = LAYER_KERNELS[strategy]
    (x, h0, w_ih, w_hh, b), lengths, rng = _problem(B, T, I, H, time_major, dtype)
    f64 = [a.astype(np.float64) for a in (x, h0, w_ih, w_hh, b)]
    y, h_n = kernels.rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity)
    y_r, h_r = ref.rnn_forward(*f64, lengths, time_major, nonlinearity)
    assert y.dtype == dtype and h_n.dtype == dtype
    tol = _tol(dtype, False)
    assert_close("y", y_r, y, tol)
    assert_close("h_n", h_r, h_n, tol)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    grads = kernels.rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major,
                                 nonlinearity)
    # the reference's backward from the kernel's own forward output isolates the backward
    grads_r = ref.rnn_backward(dy.astype(np.float64), dh_n.astype(np.float64), f64[0], f64[1],
                               f64[2], f64[3], y.astype(np.float64), lengths, time_major,
                               nonlinearity)
    for name, r, o in zip(("dx", "dh0", "dw_ih", "dw_hh", "db"), grads_r, grads):
        assert o.dtype == dtype
        assert_close(name, r, o, _tol(dtype, True))


def test_rnn_defaults_and_outputs_past_length():
    (x, h0, w_ih, w_hh, b), lengths, _ = _problem(3, 28, 28, 31, False, np.float64, seed=3)
    y, h_n = rnn_cpu.rnn_forward(x, None, w_ih, w_hh, b)  # h0 None, lengths None
    y_r, h_r = ref.rnn_forward(x, None, w_ih, w_hh, b)
    assert_close("y", y_r, y, KERNEL_F64)
    y, h_n = rnn_cpu.rnn_forward(x, h0, w_ih, w_hh, b, lengths)
    for r in range(3):
        assert np.all(y[r, lengths[r]:] == 0)
    grads = rnn_cpu.rnn_backward(None, None, x, None, w_ih, w_hh, y, lengths)
    assert all(np.all(g == 0) for g in grads)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("B,H,C", [(1, 1, 2), (3, 31, 10), (128, 257, 10)])
def test_dense_xent(B, H, C, dtype):
    rng = np.random.default_rng(B + H)
    h = rng.standard_normal((B, H)).astype(dtype)
    w = rng.standard_normal((C, H)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    labels = rng.integers(0, C, B)
    loss, acc, logits, dlogits, dh, dw, db = train_cpu.dense_xent(h, w, b, labels)
    h64, w64, b64 = (a.astype(np.float64) for a in (h, w, b))
    logits_r = ref.dense_forward(h64, w64, b64)
    loss_r, acc_r, dlogits_r = ref.softmax_xent(logits_r, labels)
    dh_r, dw_r, db_r = ref.dense_backward(dlogits_r, h64, w64)
    tol = KERNEL_F64 if dtype == np.float64 else KERNEL_F32_FORWARD
    assert_close("logits", logits_r, logits, tol)
    assert_close("dense_forward", logits_r, train_cpu.dense_forward(h, w, b), tol)
    assert_close("loss", loss_r, loss, tol)
    assert acc == pytest.approx(acc_r)
    for name, r, o in (("dlogits", dlogits_r, dlogits), ("dh", dh_r, dh), ("dw", dw_r, dw),
                       ("db", db_r, db)):
        assert_close(name, r, o, tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_adam(dtype):
    rng = np.random.default_rng(7)
    p, g, m, v = (rng.standard_normal(1001).astype(dtype) for _ in range(4))
    v = np.abs(v)
    p_r, m_r, v_r = p.copy(), m.copy(), v.copy()
    for step in (1, 2, 3):
        train_cpu.adam_update(p, g, m, v, step)
        ref.adam_update(p_r, g, m_r, v_r, step)
    tol = KERNEL_F64 if dtype == np.float64 else KERNEL_F32_FORWARD
    for name, r, o in (("param", p_r, p), ("m", m_r, m), ("v", v_r, v)):
        assert_close(name, r, o, tol)


def test_tanh_bound():
    """The float32 rational tanh: max abs error over [-20, 20] (past +-9 it is constant), the
    extremes, and the IEEE specials."""
    xs = np.concatenate([np.linspace(-20, 20, 4_000_001, dtype=np.float32),
                         np.float32([0, -0.0, 1e-38, -1e-38, 1e-45, 3.4e38, -3.4e38])])
    out = rnn_cpu.tanh(xs)
    err = np.max(np.abs(out.astype(np.float64) - np.tanh(xs.astype(np.float64))))
    print(f"tanh_f32 max abs err {err:.3e} (bound {rnn_cpu.TANH_F32_MAX_ERR:.1e})")
    assert err <= rnn_cpu.TANH_F32_MAX_ERR
    assert np.all(np.abs(out) <= 1)
    assert np.array_equal(out, -rnn_cpu.tanh(-xs))  # exactly odd
    special = rnn_cpu.tanh(np.float32([np.inf, -np.inf, np.nan]))
    assert special[0] == pytest.approx(1, abs=1e-6) and special[1] == pytest.approx(-1, abs=1e-6)
    assert np.isnan(special[2])
    f64 = rnn_cpu.tanh(np.array([0.3, np.inf, np.nan]))  # float64: libm
    assert f64[0] == np.tanh(0.3) and f64[1] == 1 and np.isnan(f64[2])


def _classifier_run(backend_name, spec, steps, x, labels):
    from fastrnn.backends import get_backend

    k = get_backend(backend_name).classifier(spec)
    p = init_params(spec, 0)
    m, v = np.zeros_like(p), np.zeros_like(p)
    losses = [k.train_step(p, m, v, s + 1, x, labels, 1e-3, 0.9, 0.999, 1e-8, 0.0)[:2]
              for s in range(steps)]
    return losses, p, k


@pytest.mark.parametrize("strategy", LAYER_KERNELS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 3])
def test_classifier_steps_match_reference(layers, dtype, strategy, monkeypatch):
    monkeypatch.setenv("FASTRNN_CPU_STRATEGY", strategy)
    spec = ModelSpec(input_size=28, hidden_size=31, num_layers=layers, num_classes=10, dtype=dtype)
    rng = np.random.default_rng(layers)
    x = rng.random((64, 28, 28)).astype(dtype)
    labels = rng.integers(0, 10, 64)
    got, p, k = _classifier_run("cpu", spec, 10, x, labels)
    want, p_r, k_r = _classifier_run("reference", spec, 10, x, labels)
    tol = STEPS_LOSS_F64 if dtype == "float64" else STEPS_LOSS_F32
    tol_p = STEPS_PARAMS_F64 if dtype == "float64" else STEPS_PARAMS_F32
    for s, ((loss, acc), (loss_r, acc_r)) in enumerate(zip(got, want)):
        assert abs(loss - loss_r) <= tol * abs(loss_r), f"step {s}: {loss} vs {loss_r}"
        assert acc == acc_r
    assert_close("params after 10 steps", p_r, p, tol_p)
    assert_close("predict", k_r.predict(p_r, x), k.predict(p, x), tol_p)
    loss, acc = k.evaluate(p, x, labels)
    loss_r, acc_r = k_r.evaluate(p_r, x, labels)
    assert abs(loss - loss_r) <= tol * abs(loss_r) and acc == acc_r


@pytest.mark.parametrize("strategy", LAYER_KERNELS)
def test_train_step_bitwise_reproducible(strategy, monkeypatch):
    """The same bits run to run on both strategies; on any number of threads too on the fused
    one (the GEMM one leaves that to BLAS)."""
    import numba

    monkeypatch.setenv("FASTRNN_CPU_STRATEGY", strategy)
    spec = ModelSpec(28, 31, 2, 10)
    rng = np.random.default_rng(0)
    x = rng.random((40, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 40)
    runs = []
    n = numba.get_num_threads()
    for threads in (n, n, 1) if strategy == "fused" else (n, n):
        numba.set_num_threads(threads)
        try:
            runs.append(_classifier_run("cpu", spec, 2, x, labels)[1])
        finally:
            numba.set_num_threads(n)
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


@pytest.mark.parametrize("strategy", LAYER_KERNELS)
def test_train_step_any_layout_of_x_and_labels(strategy, monkeypatch):
    """``step_kernel`` calls ``_chunk_step`` by an address compiled for one type of its argument
    tuple, so one step object turns read-only or strided x and labels into that type: the same
    bits as contiguous inputs (and so does the GEMM strategy's)."""
    from fastrnn.backends import get_backend

    monkeypatch.setenv("FASTRNN_CPU_STRATEGY", strategy)
    spec = ModelSpec(5, 3, 2, 4)
    rng = np.random.default_rng(1)
    x = rng.random((6, 4, 5), dtype=np.float32)
    labels = rng.integers(0, 4, 12)[::2]  # strided
    x_ro = x.copy()
    x_ro.flags.writeable = False
    batches = [(x, labels.copy()), (x_ro, labels), (np.asfortranarray(x), labels)]
    runs = []
    for order in (batches, [batches[0]] * 3):
        k = get_backend("cpu").classifier(spec)
        p = init_params(spec, 0)
        m, v = np.zeros_like(p), np.zeros_like(p)
        for s, (xb, yb) in enumerate(order):
            k.train_step(p, m, v, s + 1, xb, yb, 1e-3, 0.9, 0.999, 1e-8, 0.0)
        runs.append(p)
    assert np.array_equal(runs[0], runs[1])


def test_call_by_address_propagates_exceptions():
    """``train_cpu._call_at`` returns the callee's exception to the caller, as a direct call
    does (``NUMBA_BOUNDSCHECK=1`` relies on it)."""
    from numba import njit, typeof, types

    from fastrnn.kernels.train_cpu import _call_at, address_of

    @njit
    def put(c, args):
        out, n = args
        if c >= n:
            raise IndexError("chunk past the end")
        out[c] = c + 1

    @njit
    def run(address, chunks, args):
        for c in range(chunks):
            _call_at(address, np.int64(c), args)

    out = np.zeros(3)
    args = (out, 3)
    address = address_of(put, (types.int64, typeof(args)))
    run(address, 3, args)
    assert out.tolist() == [1, 2, 3]
    with pytest.raises(IndexError, match="chunk past the end"):
        run(address, 4, args)


_COLD_FIRST_STEP = """
import sys, warnings
import numpy as np
from fastrnn.kernels import train_cpu
halves = []
_compile_halves = train_cpu._compile_halves
train_cpu._compile_halves = lambda *args: halves.append(_compile_halves(*args)) or halves[-1]
sys.executable = sys.argv[1]  # the helper process's interpreter
import fastrnn
model = fastrnn.RNNClassifier(5, 3, 2, 4, seed=0)
x = np.random.default_rng(0).random((3, 4, 5), dtype=np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loss = model.train_step(x, np.array([0, 3, 1]))[0]
here, there = halves[0]
for f, sig in here + there:
    assert f.signatures == [sig], (f, f.signatures, sig)  # typed as step_kernel calls them
print(len(caught), sum(sum(f.stats.cache_misses.values()) for f, _ in there), loss.hex())
print(*(w.message for w in caught), sep=chr(10), file=sys.stderr)
"""


@pytest.mark.slow
def test_cold_first_step_compiles_in_two_processes(tmp_path):
    """On a cold cache the helper process compiles ``there`` (this process loads it, no miss);
    a helper that fails (``false`` as its interpreter) leaves a warning and an in-process compile
    of the same kernels, with the same result."""
    import shutil

    runs = []
    for helper in (sys.executable, shutil.which("false")):
        env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path / os.path.basename(helper)),
                            "FASTRNN_CPU_STRATEGY": "fused"}  # the fused kernels' compile
        r = subprocess.run([sys.executable, "-c", _COLD_FIRST_STEP, helper], capture_output=True,
                           text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        runs.append(r.stdout.split())
    (warned, misses, loss), (warned_f, misses_f, loss_f) = runs
    assert (warned, misses) == ("0", "0")
    assert warned_f == "1" and int(misses_f) > 0, r.stderr
    assert loss == loss_f


_COLD_FUNCTIONAL = """
import numpy as np
from fastrnn.kernels import _numba_env, rnn_cpu
lists = []
_compile = _numba_env.compile_in_two_processes
_numba_env.compile_in_two_processes = lambda here, there: lists.append(here + there) or _compile(
    here, there)
rng = np.random.default_rng(0)
x = rng.random((5, 3, 2), dtype=np.float32)  # time-major and C: the kernels slice it to "A"
w_ih, w_hh = rng.random((3, 2), dtype=np.float32), np.eye(3, dtype=np.float32)
y, _ = rnn_cpu.rnn_forward(x, None, w_ih, w_hh, np.ones(3, np.float32), time_major=True)
rnn_cpu.rnn_backward(y, None, x, None, w_ih, w_hh, y, time_major=True)
assert len(lists) == 2, lists
for f, sig in lists[0] + lists[1]:
    assert f.signatures == [sig], (f, f.signatures, sig)  # typed as the kernels call them
print("ok")
"""


@pytest.mark.slow
def test_functional_kernels_compile_their_callees_first(tmp_path):
    """``forward_kernel`` and ``backward_kernel`` compile their chunk functions at top level
    first, typed exactly as they then call them (one signature each, on a cold cache)."""
    r = subprocess.run([sys.executable, "-c", _COLD_FUNCTIONAL], capture_output=True, text=True,
                       timeout=600, env=os.environ | {"NUMBA_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0 and r.stdout.split() == ["ok"], r.stdout + r.stderr


_TARGET_FORWARD = """
import numpy as np
from fastrnn.kernels import rnn_cpu
rng = np.random.default_rng(0)
x, w_ih = rng.random((3, 4, 5), dtype=np.float32), rng.random((33, 5), dtype=np.float32)
w_hh = rng.random((33, 33), dtype=np.float32) * 0.1
y, _ = rnn_cpu.rnn_forward(x, None, w_ih, w_hh, np.ones(33, np.float32))
stats = rnn_cpu._forward_chunk.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), y.tobytes().hex())
"""
#: an AVX2 build on any x86-64 host: Zen 3's name and its own features only (no AVX-512)
AVX2_TARGET = {"NUMBA_CPU_NAME": "znver3", "NUMBA_CPU_FEATURES": ""}


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 targets")
def test_on_disk_cache_keeps_each_cpu_targets_code(tmp_path):
    """One cache folder shared by an AVX2 build and a host build (AVX-512 on the README's
    machine): each compiles its own code the first time, though the other's is on disk, and
    then loads only its own. The outputs are the same bits: no reassociation (see
    ``rnn_cpu``), so the vector width does not change a result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU_")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    runs = {"avx2": [], "host": []}
    for target in ("avx2", "host", "avx2", "host"):
        r = subprocess.run([sys.executable, "-c", _TARGET_FORWARD], capture_output=True,
                           text=True, timeout=600,
                           env=env | (AVX2_TARGET if target == "avx2" else {}))
        assert r.returncode == 0, r.stdout + r.stderr
        hits, misses, y = r.stdout.split()
        runs[target].append((int(hits), int(misses), y))
    for target, ((hits, misses, y), (hits2, misses2, y2)) in runs.items():
        assert (hits, hits2) == (0, 1) and (misses, misses2) == (1, 0), (target, runs)
        assert y == y2 == runs["host"][0][2], target


def test_compile_helper_dead_before_its_jobs(monkeypatch):
    """A compile helper that exits before reading its jobs (``false``, given time to exit) is
    reported once, as failed, and reaped: no second warning about a still-running process."""
    import shutil
    import time
    import warnings

    from numba import int64, njit

    from fastrnn.kernels import _numba_env

    class SlowToWrite(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            time.sleep(0.3)

    monkeypatch.setattr(_numba_env.subprocess, "Popen", SlowToWrite)
    monkeypatch.setattr(_numba_env.sys, "executable", shutil.which("false"))
    probe, there = njit(lambda a: a + 1), njit(lambda a: a - 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _numba_env.compile_in_two_processes([(probe, (int64,))], [(there, (int64,))])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "helper process failed" in messages[0], messages
