"""``python -m fastrnn`` (environment report and self-check) and fastrnn.warmup."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.__main__ import CHECKS, main
from fastrnn.backends import get_backend
from fastrnn.warmup import WarmupReport, warmup
from tests.conftest import HAVE_GPU

CHECK_LINE = re.compile(r"^  (rnn_forward|rnn_backward|classifier step) +max err (\S+) "
                        r"\(([\w ]+)\) +tol (\S+)  (ok|FAIL)$")


def check_lines(text: str) -> list[re.Match]:
    return [m for line in text.splitlines() if (m := CHECK_LINE.match(line))]


def test_reports_environment_and_passes(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"fastrnn {fastrnn.__version__} (")
    for part in ("cache folders:", "  Numba kernels  ", "  MNIST          ", "cpu: Numba ",
                 " threads", "  threading layer ", "cuda: "):
        assert part in out, part
    assert re.search(r"^  preparing kernels… (compiled|loaded from cache|ready) in ", out, re.M)
    checks = check_lines(out)
    assert [m[1] for m in checks] == [name for name, _, _ in CHECKS] * (2 if HAVE_GPU else 1)
    for m in checks:  # a real comparison happened: float32 rounding shows, within tolerance
        assert 0 < float(m[2]) <= float(m[4]) and m[5] == "ok", m[0]
    n = 6 if HAVE_GPU else 3
    assert out.splitlines()[-1] == (f"self-check passed: {n} checks on {n // 3} backend(s) agree "
                                    f"with the NumPy reference")


def _wrong_forward(real):
    def forward(*args):
        y, h_n = real(*args)
        return y * np.float32(1.001), h_n  # 1e-3 off: 50x the tolerance
    return forward


def _wrong_backward(real):
    def backward(*args):
        dx, dh0, dw_ih, dw_hh, db = real(*args)
        return dx, dh0, dw_ih, dw_hh * np.float32(1.001), db
    return backward


def _wrong_step(spoil):
    """A CPU classifier whose training step is right, then spoiled by ``spoil(out, params, m,
    v)``, which returns the step's ``(loss, acc, grad_norm, applied)``."""
    def wrap(real):
        def classifier(spec):
            kernels = real(spec)
            step = kernels.train_step

            def train_step(params, m, v, *args):
                return spoil(step(params, m, v, *args), params, m, v)
            kernels.train_step = train_step
            return kernels
        return classifier
    return wrap


def _scaled(which):
    """Spoils one of the step's results by 1e-3: 10x the tolerance."""
    def spoil(out, params, m, v):
        if which == "norm":
            return out[0], out[1], out[2] * 1.001, out[3]
        {"params": params, "m": m, "v": v}[which][...] *= np.float32(1.001)
        return out
    return spoil


def _raising(real):
    def forward(*args):
        raise RuntimeError("kernel launch failed\nsecond line")
    return forward


@pytest.mark.parametrize("attr, wrap, failing, shown", [
    ("rnn_forward", _wrong_forward, "rnn_forward", "(y)"),
    ("rnn_backward", _wrong_backward, "rnn_backward", "(dw_hh)"),
    ("classifier", _wrong_step(_scaled("m")), "classifier step", "(gradient)"),
    ("classifier", _wrong_step(_scaled("v")), "classifier step", "(second moment)"),
    ("classifier", _wrong_step(_scaled("params")), "classifier step", "(parameters)"),
    ("classifier", _wrong_step(_scaled("norm")), "classifier step", "(gradient norm)"),
    ("rnn_forward", _raising, "rnn_forward", "raised RuntimeError: kernel launch failed "),
])
def test_a_disagreeing_backend_fails(monkeypatch, capsys, attr, wrap, failing, shown):
    cpu = get_backend("cpu")
    monkeypatch.setattr(cpu, attr, wrap(getattr(cpu, attr)))
    assert main([]) == 1
    out = capsys.readouterr().out
    lines = {line.split("  ")[1].strip(): line for line in out.splitlines()
             if line.startswith("  ") and line.rstrip().endswith(("ok", "FAIL"))}
    assert lines[failing].endswith("FAIL") and shown in lines[failing], out
    assert all(line.endswith("ok") for name, line in lines.items() if name != failing), out
    last = out.splitlines()[-1]
    if wrap is _raising:  # the warm-up hits it first and says so
        assert "  preparing kernels… FAILED (RuntimeError: kernel launch failed)\n" in out
        assert last == ("self-check FAILED: 1 of 3 checks disagree with the NumPy reference: "
                        "cpu rnn_forward, cpu warm-up failed")
    else:
        assert last.startswith("self-check FAILED: 1 of 3 checks disagree")
        assert last.endswith(f"disagree with the NumPy reference: cpu {failing}")


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "python -m fastrnn" in capsys.readouterr().out


@pytest.mark.slow
def test_first_run_compiles_then_loads_from_cache(tmp_path):
    """README: ``python -m fastrnn``, from a cold Numba cache (the one-time ~20 s compile), then
    warm: the announcement tells the two apart, and both self-checks pass."""
    env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path)}
    cold, warm = (subprocess.run([sys.executable, "-m", "fastrnn"], capture_output=True,
                                 text=True, timeout=600, env=env) for _ in range(2))
    for r in (cold, warm):
        assert r.returncode == 0 and r.stderr == "", r.stdout + r.stderr
        assert f"  Numba kernels  {tmp_path}" in r.stdout
    assert re.search(r"^  preparing kernels… compiled in \d+\.\d s \(first use; cached for later "
                     r"runs\)$", cold.stdout, re.M), cold.stdout
    assert re.search(r"^  preparing kernels… loaded from cache in \d+\.\d s$", warm.stdout, re.M), \
        warm.stdout


def test_warmup_report_in_process():
    r = warmup("cpu")
    assert (r.what, r.device, r.dtype) == ("CPU kernels", "cpu", "float32")
    assert r.compiled is not None and r.loaded is not None and r.seconds >= 0
    again = warmup("cpu")  # everything is in memory now
    assert (again.compiled, again.loaded) == (0, 0)
    assert str(again).startswith("CPU kernels (float32): ready in ")
    ref = warmup("cpu", "float64", backend="reference", functional=False)
    assert str(ref).startswith("NumPy reference (float64): ready in ")


@pytest.mark.parametrize("report, text", [
    (WarmupReport("CPU kernels", "cpu", "float32", 18.24, 9, 0),
     "CPU kernels (float32): compiled in 18.2 s (first use; cached for later runs)"),
    (WarmupReport("CPU kernels", "cpu", "float32", 0.43, 0, 9),
     "CPU kernels (float32): loaded from cache in 0.4 s"),
    (WarmupReport("CUDA kernels", "cuda", "float32", 2.0, None, None),
     "CUDA kernels (float32): ready in 2.0 s (NVRTC compiles on first use; CuPy caches the "
     "result on disk)"),
])
def test_warmup_messages(report, text):
    assert str(report) == text


@pytest.mark.gpu
def test_cuda_backend_is_checked(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^cuda: CuPy \S+, GPU 0: ", out, re.M), out
    assert len(check_lines(out)) == 2 * len(CHECKS)


def test_cache_counters_tell_compiled_from_loaded(tmp_path, monkeypatch):
    """What the announcement rests on, on a one-line kernel: a first compile counts as a miss,
    the same function in a fresh module (as in the next process) loads from the disk cache."""
    import importlib.util

    from fastrnn.warmup import numba_cache_counts

    src = tmp_path / "tiny_cpu.py"
    src.write_text("from numba import njit\n\n\n@njit(cache=True)\ndef add_one(x):\n"
                   "    return x + 1\n")
    deltas = []
    for name in ("fastrnn.kernels._tiny_a", "fastrnn.kernels._tiny_b"):
        spec = importlib.util.spec_from_file_location(name, src)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monkeypatch.setitem(sys.modules, name, module)
        before = numba_cache_counts()
        assert module.add_one(1) == 2
        after = numba_cache_counts()
        deltas.append((after[0] - before[0], after[1] - before[1]))
    assert deltas == [(0, 1), (1, 0)]  # (hits, misses): compiled, then loaded from cache
