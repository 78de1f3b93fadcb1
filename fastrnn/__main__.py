"""``python -m fastrnn``: what fastrnn finds on this machine, and a self-check of every backend.

Prints the version, the cache folders (Numba's compiled kernels, CuPy's, the MNIST download
folder), then for each backend that can run here (the CPU kernels always; the CUDA kernels when
CuPy and a GPU are present) its versions and threads, how long its kernels took to compile or load,
and one line per check against the NumPy reference on tiny float32 inputs: the functional forward,
the functional backward (random upstream gradients on the outputs *and* the final state, lengths of
0, 3 and T), and one classifier training step of a 2-layer model with clipping active (gradient,
its norm, Adam's moments and the updated parameters). Each line shows the worst error ratio
``||ref - out|| / ||ref||`` over that check's outputs and the output it came from. Exits 1 if any
check disagrees (or raises), else 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

import fastrnn
from fastrnn import reference as ref
from fastrnn.warmup import warmup

#: float32 kernels against the float64 reference on these tiny shapes (T=6): rounding plus the
#: CPU kernels' rational tanh (3e-7 absolute); BPTT and the gradient compound it, hence looser.
#: Same bounds as tests/tolerances.py, which checks far larger shapes.
TOL_FORWARD = 2e-5
TOL_BACKWARD = 1e-4

# tiny but irregular: H=33 crosses the CPU kernels' 32-lane blocks; lengths 6 (=T), 0 and 3
B, T, I, H, C = 3, 6, 5, 33, 4
LENGTHS = np.array([6, 0, 3], dtype=np.int32)


def rel_err(expected, out) -> float:
    """``||expected - out|| / ||expected||`` in float64; inf if ``out`` is not all finite."""
    expected = np.asarray(expected, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if expected.shape != out.shape or not np.all(np.isfinite(out)):
        return float("inf")
    denom = np.linalg.norm(expected)
    diff = np.linalg.norm(expected - out)
    return float(diff / denom) if denom > 0 else float(diff)


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _worst(pairs: dict) -> tuple[float, str]:
    errs = {name: rel_err(e, o) for name, (e, o) in pairs.items()}
    name = max(errs, key=errs.get)
    return errs[name], name


def check_forward(device: str, xp) -> tuple[float, str]:
    """Worst error ratio of ``rnn_forward``'s outputs and its name."""
    rng = np.random.default_rng(1)
    x, h0 = rng.standard_normal((B, T, I)), rng.standard_normal((B, H)) * 0.5
    w_ih, w_hh = rng.standard_normal((H, I)) * 0.4, rng.standard_normal((H, H)) * 0.2
    b = rng.standard_normal(H) * 0.1
    args64 = [a.astype(np.float32).astype(np.float64) for a in (x, h0, w_ih, w_hh, b)]
    y, h_n = fastrnn.rnn_forward(*[xp.asarray(a.astype(np.float32)) for a in args64],
                                 lengths=xp.asarray(LENGTHS), backend=device)
    y_ref, h_ref = ref.rnn_forward(*args64, lengths=LENGTHS)
    return _worst({"y": (y_ref, _host(y)), "h_n": (h_ref, _host(h_n))})


def check_backward(device: str, xp) -> tuple[float, str]:
    """Worst error ratio of ``rnn_backward``'s five gradients and its name."""
    rng = np.random.default_rng(2)
    x, h0 = rng.standard_normal((B, T, I)), rng.standard_normal((B, H)) * 0.5
    w_ih, w_hh = rng.standard_normal((H, I)) * 0.4, rng.standard_normal((H, H)) * 0.2
    b = rng.standard_normal(H) * 0.1
    x, h0, w_ih, w_hh, b = (a.astype(np.float32).astype(np.float64) for a in (x, h0, w_ih, w_hh, b))
    y, _ = ref.rnn_forward(x, h0, w_ih, w_hh, b, lengths=LENGTHS)
    y = y.astype(np.float32).astype(np.float64)  # both sides see the same saved outputs
    dy = rng.standard_normal(y.shape).astype(np.float32).astype(np.float64)
    dh_n = rng.standard_normal((B, H)).astype(np.float32).astype(np.float64)
    args = (dy, dh_n, x, h0, w_ih, w_hh, y)
    out = fastrnn.rnn_backward(*[xp.asarray(a.astype(np.float32)) for a in args],
                               lengths=xp.asarray(LENGTHS), backend=device)
    expected = ref.rnn_backward(*args, lengths=LENGTHS)
    names = ("dx", "dh0", "dw_ih", "dw_hh", "db")
    return _worst({n: (e, _host(o)) for n, e, o in zip(names, expected, out)})


#: the classifier check's clip_norm, below its gradient norm (~6): the clipping is checked too
CLIP = 0.1


def check_classifier(device: str, xp) -> tuple[float, str]:
    """One training step of a 2-layer float32 classifier, clipping by global norm, against the
    float64 reference from the same weights: logits before the step, loss, accuracy, the gradient
    norm, the clipped gradient (Adam's first moment after one step from zero is
    ``(1 - beta1) * grad``), the second moment, and the parameters after the step against the
    reference's Adam applied to the step's own clipped gradient (not to the reference's: where a
    gradient is ~0 a float32 rounding may flip its sign, and Adam moves such a parameter by lr
    whatever the gradient's size)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    labels = np.array([0, 3, 1])
    model = fastrnn.RNNClassifier(I, H, 2, C, device=device, seed=1, clip_norm=CLIP)
    expected = fastrnn.RNNClassifier(I, H, 2, C, device="cpu", seed=1, backend="reference",
                                     dtype="float64", clip_norm=CLIP)
    before = _host(model.params).astype(np.float64)
    expected.params[...] = before
    pairs = {"logits": (expected.predict(x), _host(model.predict(xp.asarray(x))))}
    loss_ref, acc_ref = expected.train_step(x, labels)
    loss, acc = model.train_step(xp.asarray(x), xp.asarray(labels))
    pairs["loss"] = (loss_ref, loss)
    pairs["accuracy"] = (acc_ref, acc)
    pairs["gradient norm"] = (expected.last_grad_norm, model.last_grad_norm)
    pairs["gradient"] = (expected.m, _host(model.m))
    pairs["second moment"] = (expected.v, _host(model.v))
    after, m, v = before.copy(), np.zeros_like(before), np.zeros_like(before)
    ref.adam_update(after, _host(model.m) / (1 - model.beta1), m, v, 1, model.lr, model.beta1,
                    model.beta2, model.eps)
    pairs["parameters"] = (after, _host(model.params))
    return _worst(pairs)


CHECKS: tuple[tuple[str, Callable, float], ...] = (
    ("rnn_forward", check_forward, TOL_FORWARD),
    ("rnn_backward", check_backward, TOL_BACKWARD),
    ("classifier step", check_classifier, TOL_BACKWARD),
)


def _numba_cache_dir() -> str:
    for name, module in list(sys.modules.items()):
        if name.startswith("fastrnn.kernels.") and module is not None:
            for obj in vars(module).values():
                path = getattr(getattr(obj, "stats", None), "cache_path", None)
                if path:
                    return str(path)
    return "unknown"


def _cuda_status() -> tuple[object | None, str]:
    """(CuPy or None, a description of CuPy and the GPUs)."""
    from fastrnn.classifier import _cupy_or_exit_reason

    cupy, reason = _cupy_or_exit_reason()
    if cupy is None:
        return None, f"not available: {reason}"
    gpus = []
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        p = cupy.cuda.runtime.getDeviceProperties(i)
        name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
        gpus.append(f"GPU {i}: {name} (compute {p['major']}.{p['minor']}, "
                    f"{p['totalGlobalMem'] / 2**30:.0f} GiB)")
    return cupy, f"CuPy {cupy.__version__}, " + "; ".join(gpus)


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: " + (str(e).splitlines() or [""])[0]


def _prepare(device: str) -> list[str]:
    """Warm ``device``'s kernels, printing how long compiling or loading took; [] or the failure."""
    print("  preparing kernels… ", end="", flush=True)
    try:
        print(warmup(device).outcome(), flush=True)
    except Exception as e:  # reported, then the checks say which operation is broken
        print(f"FAILED ({_one_line(e)})", flush=True)
        return [f"{device} warm-up"]
    return []


def run_checks(device: str, xp, out=print) -> list[str]:
    """Run :data:`CHECKS` on ``device``, printing one line each; returns the names that failed."""
    failed = []
    for name, check, tol in CHECKS:
        try:
            err, output = check(device, xp)
            ok = err <= tol
            line = f"max err {err:.1e} ({output})"
        except Exception as e:  # a crash is a disagreement too, reported on one line
            ok, line = False, f"raised {_one_line(e)}"
        out(f"  {name:<16} {line:<32} tol {tol:.0e}  {'ok' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{device} {name}")
    return failed


def main(argv: list[str] | None = None) -> int:
    """Print the environment and self-check every backend; returns the exit status (0: all agree).

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``); only ``-h`` is understood.
    """
    argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__.split("\n\n")[0]
                            ).parse_args(argv)
    import numba

    from fastrnn.backends import get_backend
    from fastrnn.data import _cache_dir

    print(f"fastrnn {fastrnn.__version__} ({Path(fastrnn.__file__).parent}), Python "
          f"{platform.python_version()}, NumPy {np.__version__}", flush=True)
    get_backend("cpu")  # imports the kernel modules (compiles nothing yet)
    cupy, cuda_line = _cuda_status()
    print("cache folders:")
    print(f"  Numba kernels  {_numba_cache_dir()}")
    if cupy is not None:
        cupy_cache = os.environ.get("CUPY_CACHE_DIR") or Path.home() / ".cupy" / "kernel_cache"
        print(f"  CuPy kernels   {cupy_cache}")
    data_dir = os.environ.get("FASTRNN_DATA_DIR")
    try:
        mnist_cache = str(_cache_dir())
    except ImportError:  # pooch, needed only for downloads, is missing
        mnist_cache = "none: pooch is not installed, so nothing can be downloaded"
    print(f"  MNIST          {mnist_cache}" + (f" (searched first: $FASTRNN_DATA_DIR={data_dir})"
                                               if data_dir else ""), flush=True)

    failed: list[str] = []  # checks that disagree
    broken: list[str] = []  # warm-ups that raised
    backends = 0
    print(f"cpu: Numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads", flush=True)
    broken += _prepare("cpu")
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run
        layer = "not started"
    print(f"  threading layer {layer}", flush=True)
    failed += run_checks("cpu", np, out=lambda s: print(s, flush=True))
    backends += 1

    print(f"cuda: {cuda_line}", flush=True)
    if cupy is not None:
        broken += _prepare("cuda")
        failed += run_checks("cuda", cupy, out=lambda s: print(s, flush=True))
        backends += 1

    total = backends * len(CHECKS)
    if failed or broken:
        detail = ", ".join(failed + [f"{b} failed" for b in broken])
        print(f"self-check FAILED: {len(failed)} of {total} checks disagree with the NumPy "
              f"reference: {detail}", flush=True)
        return 1
    print(f"self-check passed: {total} checks on {backends} backend(s) agree with the NumPy "
          f"reference", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
