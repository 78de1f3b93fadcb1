"""Reliability of training: a step that meets NaN or inf changes nothing, clipping by global norm
matches the reference, and training is deterministic (what holds bitwise, and what tolerance holds
where it does not).

Every training test runs on every backend of :class:`RNNClassifier`: the reference, the CPU kernels,
the CUDA kernels (GPU only, skipped elsewhere), and the same CUDA backend on the CPU emulator
("cuda-emu": its Python and .cu kernels, with tests/cuda_emu/fake_cupy.py for CuPy).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as ref
from tests.tolerances import (
    CPU_GPU_100_STEPS_F32,
    KERNEL_F64,
    REF_100_STEPS_F32,
    STEPS_LOSS_F32,
    STEPS_LOSS_F64,
    STEPS_PARAMS_F32,
    STEPS_PARAMS_F64,
    assert_close,
)

ROOT = Path(__file__).resolve().parents[1]


#: the ways to run a classifier: the reference, the CPU kernels (the strategy chosen for these
#: small shapes, and "cpu-gemm": FASTRNN_CPU_STRATEGY=gemm), the CUDA kernels on a GPU, and
#: "cuda-emu": the cuda device with tests/cuda_emu/fake_cupy.py as CuPy (the backend's Python and
#: .cu kernels on the CPU emulator)
RUNNERS = ["reference", "cpu", "cpu-gemm", pytest.param("cuda", marks=pytest.mark.gpu),
           pytest.param("cuda-emu", marks=pytest.mark.cuda_emu)]
#: (runner, dtype) pairs: the CUDA backend computes in float32 only
RUNNER_DTYPES = [(r, d) for r in ("reference", "cpu", "cpu-gemm")
                 for d in ("float32", "float64")] + [
    pytest.param("cuda", "float32", marks=pytest.mark.gpu),
    pytest.param("cuda-emu", "float32", marks=pytest.mark.cuda_emu)]


@pytest.fixture(autouse=True)
def _emulated_cuda(request, monkeypatch):
    """Tests of the "cuda-emu" runner see the stand-in CuPy (and need g++); those of "cpu-gemm"
    run the CPU's GEMM strategy."""
    runner = getattr(request.node, "callspec", None) and request.node.callspec.params.get("runner")
    if runner == "cpu-gemm":
        monkeypatch.setenv("FASTRNN_CPU_STRATEGY", "gemm")
    if runner != "cuda-emu":
        yield
        return
    from tests.cuda_emu import fake_cupy

    with fake_cupy.installed(monkeypatch):
        yield


def make(runner: str, **kw) -> fastrnn.RNNClassifier:
    kw = {"input_size": 5, "hidden_size": 7, "num_layers": 2, "num_classes": 3, "seed": 0} | kw
    if runner == "reference":
        return fastrnn.RNNClassifier(device="cpu", backend="reference", **kw)
    return fastrnn.RNNClassifier(device=runner.removesuffix("-emu").removesuffix("-gemm"), **kw)


def host(a) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") else np.array(a)


def batch(B=16, T=6, I=5, C=3, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, I)).astype(dtype), rng.integers(0, C, B)


# ---- 1. a non-finite step changes nothing -----------------------------------------------------

def _nan_in_x(model, x):
    x = x.copy()
    x[3, 2, 1] = np.nan
    return x


def _inf_in_x(model, x):
    x = x.copy()
    x[5, 0, 4] = np.inf
    return x


def _overflowing_logits(model, x):
    """An exploding model: saturated states (h ~ 1) into a dense layer of weights near the dtype's
    largest value: the logits overflow to inf, and inf - inf makes the loss NaN."""
    w = model.weights()
    big = np.finfo(model.spec.dtype).max / 4
    w["b_l1"][...] = 20.0
    w["w_out"][...] = big
    return x


def _lr_at_the_dtype_max(model, x):
    """An lr the dtype can hold, at its largest value, and Adam's first moment at 1 (a moment
    of the batch's own gradients would keep ``m_hat / sqrt(v_hat)`` near 1, rounding the step
    to the dtype's largest value): the loss and the gradient norm are finite, but
    ``lr * m_hat`` overflows."""
    model.lr = float(np.finfo(model.spec.dtype).max)
    model.m[...] = 1
    return x


def _gradient_whose_square_overflows(model, x):
    """Inputs of 1e25 through input weights of 1e-25: the states stay as they were, but the
    input weights' gradient (dz * x, ~1e24) squared overflows float32: v would be inf. The norm
    is finite; float64 holds the square (the step is then applied)."""
    model.weights()["w_ih_l0"][...] *= 1e-25
    return x * x.dtype.type(1e25)


# (spoil, what the message must say). The inf case: on the CPU an inf input saturates tanh
# (h = +-1, finite, so the loss stays finite) and only its weight gradient, dz * x = 0 * inf, is
# NaN; the CUDA kernels' tiled products also multiply the inf by zeros, so their loss is NaN too.
NONFINITE = [
    pytest.param(_nan_in_x, r"the loss is nan and the gradient norm is nan", id="nan-in-x"),
    pytest.param(_inf_in_x, r"(the loss is nan and )?the gradient norm is (nan|inf);",
                 id="inf-in-x"),
    pytest.param(_overflowing_logits, r"the loss is nan", id="overflowing-logits"),
    pytest.param(_lr_at_the_dtype_max, r"the Adam update overflows", id="lr-at-dtype-max"),
    pytest.param(_gradient_whose_square_overflows, r"the Adam update overflows",
                 id="gradient-square-overflows"),
]


@pytest.mark.parametrize("spoil, what", NONFINITE)
@pytest.mark.parametrize("runner, dtype", RUNNER_DTYPES)
def test_a_nonfinite_step_raises_and_changes_nothing(tmp_path, runner, spoil, what, dtype):
    if spoil is _gradient_whose_square_overflows and dtype == "float64":
        pytest.skip("float64 holds the square of a 1e24 gradient: nothing overflows")
    # no clipping for the gradient case: clipping would scale it into range
    clip = None if spoil is _gradient_whose_square_overflows else 1.0
    model = make(runner, dtype=dtype, clip_norm=clip)
    x, y = batch(dtype=dtype)
    model.train_step(x, y)  # Adam's moments and step are non-trivial before the bad step
    norm_before, lr_before = model.last_grad_norm, model.lr
    saved = {n: host(w).copy() for n, w in model.weights().items()}
    x_bad = spoil(model, x)
    model.save(tmp_path / "before.npz")
    arrays = [host(a) for a in (model.params, model.m, model.v)]

    with pytest.raises(FloatingPointError, match=rf"^train_step 2: {what}") as e:
        model.train_step(x_bad, y)
    print(e.value)
    assert "parameters and optimizer state unchanged" in str(e.value)
    assert model.step == 1 and model.last_grad_norm == norm_before
    model.save(tmp_path / "after.npz")
    assert (tmp_path / "after.npz").read_bytes() == (tmp_path / "before.npz").read_bytes()
    for name, a, b in zip(("params", "m", "v"), arrays, (model.params, model.m, model.v)):
        assert np.array_equal(a, host(b)), f"{name} changed"  # bitwise: no NaN in either

    for name, w in model.weights().items():  # undo the spoiling; then a good step works
        w[...] = model.xp.asarray(saved[name])
    model.lr = lr_before
    loss, acc = model.train_step(x, y)
    assert math.isfinite(loss) and model.step == 2 and math.isfinite(model.last_grad_norm)


# ---- 2. clipping by global norm ---------------------------------------------------------------

def test_clip_by_global_norm_is_the_math():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    norm_r = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    clipped, norm = ref.clip_by_global_norm(grads, 0.5)
    assert norm == pytest.approx(norm_r, rel=1e-15) and norm > 0.5
    assert np.sqrt(sum(np.sum(g * g) for g in clipped)) == pytest.approx(0.5, rel=1e-15)
    for g, c in zip(grads, clipped):  # one common scale: directions kept
        np.testing.assert_allclose(c, g * (0.5 / norm), rtol=1e-15)
    same, _ = ref.clip_by_global_norm(grads, 2 * norm)  # under the threshold: scale exactly 1
    assert all(np.array_equal(g, s) for g, s in zip(grads, same))
    off, norm_off = ref.clip_by_global_norm(grads, 0.0)
    assert norm_off == norm and all(g is o for g, o in zip(grads, off))
    f32 = [np.full(4, 3e38, np.float32)]  # finite float32 gradients: the float64 sum does not
    assert ref.clip_by_global_norm(f32, 0.0)[1] == pytest.approx(6e38)  # overflow


def _run_steps(runner, dtype, steps, clip_norm, lr=1e-2):
    model = make(runner, dtype=dtype, clip_norm=clip_norm, lr=lr)
    x, y = batch(dtype=dtype)
    out = []
    for s in range(steps):
        loss, _ = model.train_step(x[:, : 3 + s % 4], y)  # varying T, one batch size
        out.append((loss, model.last_grad_norm))
    return out, host(model.params), host(model.m)


@pytest.mark.parametrize("runner, dtype", [
    ("cpu", "float64"), ("cpu", "float32"), ("cpu-gemm", "float32"),
    pytest.param("cuda", "float32", marks=pytest.mark.gpu),
    pytest.param("cuda-emu", "float32", marks=pytest.mark.cuda_emu)])
def test_clipped_steps_match_the_reference(runner, dtype):
    """5 steps with a clip_norm well under the gradient norm: losses and gradient norms step by
    step, and the parameters after, against the reference backend (measured on an H200 for
    cuda: parameters 3e-8, m 2e-7)."""
    clip = 0.02
    got, p, m = _run_steps(runner, dtype, 5, clip)
    want, p_r, m_r = _run_steps("reference", dtype, 5, clip)
    tol = STEPS_LOSS_F64 if dtype == "float64" else STEPS_LOSS_F32
    tol_p = STEPS_PARAMS_F64 if dtype == "float64" else STEPS_PARAMS_F32
    for s, ((loss, norm), (loss_r, norm_r)) in enumerate(zip(got, want)):
        print(f"step {s + 1}: loss {loss:.6f} / {loss_r:.6f}, grad norm {norm:.6g} / {norm_r:.6g}")
        assert norm_r > 2 * clip, "clipping should bite at every step"
        assert abs(loss - loss_r) <= tol * abs(loss_r), f"step {s + 1}: loss"
        # |‖a‖ - ‖b‖| <= ‖a - b‖: the norm is as close as the gradients; step 1's gradients
        # are the kernels' against the reference's from the same parameters
        assert abs(norm - norm_r) <= (KERNEL_F64 if s == 0 and dtype == "float64" else tol_p) \
            * norm_r, f"step {s + 1}: grad norm"
    assert_close("params after 5 clipped steps", p_r, p, tol_p)
    # Adam's first moment is a sum of the clipped gradients: it sees the clipping that Adam's
    # normalised update mostly hides (unclipped, m is ~40x larger here)
    assert_close("Adam's m after 5 clipped steps", m_r, m, tol_p)
    assert np.linalg.norm(m_r) < clip
    assert np.linalg.norm(_run_steps("reference", dtype, 5, None)[2]) > 10 * clip


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_clip_norm_above_the_norm_changes_no_bit(runner):
    """The scale is clip / max(norm, clip) = exactly 1: same bits as no clipping."""
    off = _run_steps(runner, "float32", 3, None)
    on = _run_steps(runner, "float32", 3, 1e6)
    assert off[0] == on[0] and np.array_equal(off[1], on[1]) and np.array_equal(off[2], on[2])


# ---- 3. determinism ---------------------------------------------------------------------------

def train_100(runner: str = "cpu", dtype: str = "float32") -> np.ndarray:
    """Parameters, then Adam's m and v, after 100 steps from seed 0 over four fixed batches."""
    model = make(runner, dtype=dtype)
    batches = [batch(seed=s, dtype=dtype) for s in range(4)]
    for s in range(100):
        model.train_step(*batches[s % 4])
    return np.concatenate([host(model.params), host(model.m), host(model.v)])


_TRAIN_100 = """
import contextlib, sys, numpy as np, pytest
from tests.test_reliability import train_100
out, runner = sys.argv[1:]
with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as stack:
    if runner == "cuda-emu":
        from tests.cuda_emu import fake_cupy
        stack.enter_context(fake_cupy.installed(mp))
    np.save(out, train_100(runner))
"""


def _train_100_in_processes(d: Path, runs: list[tuple[str, int]]) -> list[np.ndarray]:
    """train_100 of each (runner, Numba threads) in its own process, all at once."""
    procs = [subprocess.Popen([sys.executable, "-c", _TRAIN_100, str(d / f"{i}.npy"), runner],
                              cwd=ROOT, env=dict(os.environ, NUMBA_NUM_THREADS=str(threads)),
                              stderr=subprocess.PIPE, text=True)
             for i, (runner, threads) in enumerate(runs)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    return [np.load(d / f"{i}.npy") for i in range(len(runs))]


@pytest.fixture(scope="module")
def cpu_runs(tmp_path_factory):
    """Three separate processes: 2 threads, 2 threads again, 1 thread."""
    return _train_100_in_processes(tmp_path_factory.mktemp("runs"),
                                   [("cpu", 2), ("cpu", 2), ("cpu", 1)])


def test_cpu_is_bitwise_reproducible_across_processes(cpu_runs):
    assert np.isfinite(cpu_runs[0]).all()
    assert cpu_runs[0].tobytes() == cpu_runs[1].tobytes()


def test_cpu_is_bitwise_identical_on_one_and_two_threads(cpu_runs):
    assert cpu_runs[0].tobytes() == cpu_runs[2].tobytes()


def test_cpu_after_100_steps_is_close_to_the_reference(cpu_runs):
    """Not bitwise (other summation order, float32 rational tanh): within REF_100_STEPS_F32."""
    P = make("cpu").spec.size
    want = train_100("reference")
    assert_close("params after 100 steps (cpu vs reference, float32)", want[:P], cpu_runs[0][:P],
                 REF_100_STEPS_F32)


_FORK = """
import os, sys, numpy as np, numba
from tests.test_reliability import batch, host, make
model, batches = make("cpu"), [batch(seed=s) for s in range(4)]
for s in range(100):
    if s == 50:
        layer, pid = numba.threading_layer(), os.fork()
    model.train_step(*batches[s % 4])
np.save(sys.argv[2 if pid else 1], np.concatenate([host(model.params), host(model.m),
                                                   host(model.v)]))
if pid == 0:
    os._exit(0)
print(layer, os.waitpid(pid, 0)[1])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_process_forked_mid_training_trains_on_with_the_same_bits(tmp_path, cpu_runs):
    """Numba kills (SIGTERM) a child forked after a GNU OpenMP parallel region as soon as it
    starts one; fastrnn's kernels run their serial twin there (kernels/_numba_env.py). Parent
    and child both finish the 100 steps, bitwise equal to an unforked run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    child, parent = tmp_path / "child.npy", tmp_path / "parent.npy"
    r = subprocess.run([sys.executable, "-c", _FORK, str(child), str(parent)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    layer, status = r.stdout.split()
    assert status == "0", f"the child forked under the {layer} layer died: {r.stderr}"
    assert np.load(child).tobytes() == cpu_runs[0].tobytes()
    assert np.load(parent).tobytes() == cpu_runs[0].tobytes()


@pytest.mark.parametrize("runner", [pytest.param("cuda", marks=pytest.mark.gpu),
                                    pytest.param("cuda-emu", marks=pytest.mark.cuda_emu)])
def test_gpu_is_bitwise_reproducible_across_processes_and_close_to_the_cpu(cpu_runs, runner,
                                                                            tmp_path):
    """Two separate processes give the same bits; against the CPU not bitwise (other summation
    orders and tanh): within CPU_GPU_100_STEPS_F32."""
    runs = _train_100_in_processes(tmp_path, [(runner, 2), (runner, 2)])
    assert np.isfinite(runs[0]).all()
    assert runs[0].tobytes() == runs[1].tobytes()
    P = make("cpu").spec.size
    assert_close(f"params after 100 steps ({runner} vs cpu, float32)", cpu_runs[0][:P],
                 runs[0][:P], CPU_GPU_100_STEPS_F32)


# ---- clip_norm as a model setting -------------------------------------------------------------

@pytest.mark.parametrize("value, exc", [(-1.0, ValueError), (float("nan"), ValueError),
                                        (float("inf"), ValueError), ("1", TypeError),
                                        (True, TypeError)])
def test_clip_norm_is_validated(value, exc):
    with pytest.raises(exc, match=r"^clip_norm: expected None, 0 or a finite float > 0, got"):
        make("reference", clip_norm=value)
    model = make("reference", clip_norm=0.5)
    with pytest.raises(exc, match=r"^clip_norm: expected None, 0 or a finite float > 0, got"):
        model.clip_norm = value  # set between steps: checked the same, and left as it was
    assert model.clip_norm == 0.5
    model.clip_norm = 0
    assert model.clip_norm is None


@pytest.mark.parametrize("value, kept", [(None, None), (0, None), (0.5, 0.5)])
def test_clip_norm_is_saved_and_loaded(tmp_path, value, kept):
    make("reference", clip_norm=value).save(tmp_path / "m.npz")
    assert fastrnn.RNNClassifier.load(tmp_path / "m.npz").clip_norm == kept


def test_a_file_from_before_clip_norm_loads_without_clipping(tmp_path):
    model = make("reference", clip_norm=0.5)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        old = {k: f[k] for k in f.files if k != "clip_norm"}
    np.savez(tmp_path / "old.npz", **old)
    loaded = fastrnn.RNNClassifier.load(tmp_path / "old.npz")
    assert loaded.clip_norm is None and np.array_equal(loaded.params, model.params)
