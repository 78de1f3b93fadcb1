"""Every CUDA source compiles for sm_80 and sm_90, under nvcc and under NVRTC as RawModule runs it.

Both compilers matter: ``#include <cmath>`` builds under nvcc and fails under NVRTC. The sources are
compiled to cubin with ptxas' verbose report, which must show every entry point of
``cuda_launch.ENTRY_POINTS`` and no register spill or local-memory stack frame in the hot kernels
(a spilled W_hh row would turn every step's FMAs into local-memory loads).

No GPU is needed: nvcc is skipped when absent; the NVRTC half needs ``cupy-cuda13x`` and
``nvidia-cuda-nvrtc`` (pip) and is skipped with the reason when either is missing. It calls
CuPy's NVRTC program wrapper directly with the architecture given here, because
``cupy.cuda.compiler.compile_using_nvrtc`` asks the driver for a device even when given an arch.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fastrnn.kernels import cuda_launch

KERNEL_DIR = Path(cuda_launch.__file__).resolve().parent
SOURCES = sorted(cuda_launch.ENTRY_POINTS)
ARCHS = ("80", "90")


def test_every_source_is_listed():
    on_disk = sorted(p.name for p in KERNEL_DIR.glob("*.cu"))
    assert on_disk == SOURCES, "kernels/*.cu and cuda_launch.ENTRY_POINTS disagree"


def _ptxas_report(log: str) -> dict[str, dict[str, int]]:
    """``{entry: {"stack": bytes, "spill_stores": bytes, "spill_loads": bytes, "regs": n}}``
    from ptxas -v output (nvcc's stderr or NVRTC's program log)."""
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([A-Za-z_]\w*)'?",
                      line)
        if m:
            current = m.group(1)
            out.setdefault(current, {})
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            out[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                                spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[current]["regs"] = int(m.group(1))
    return out


def _check_report(src: str, arch: str, report: dict) -> None:
    for name in cuda_launch.ENTRY_POINTS[src]:
        assert name in report and "spill_stores" in report[name], \
            f"{src} sm_{arch}: no ptxas report for entry point {name!r}: {sorted(report)}"
        r = report[name]
        print(f"{src} sm_{arch} {name}: {r}")
        if name in cuda_launch.HOT_KERNELS:
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0, \
                f"{src} sm_{arch} {name}: register spills {r}"
            assert r["stack"] == 0, f"{src} sm_{arch} {name}: local-memory stack frame {r}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", SOURCES)
def test_nvcc(src, arch, tmp_path):
    cmd = ["nvcc", "-cubin", f"-arch=sm_{arch}", "-Xptxas", "-v", "-Werror", "all-warnings",
           f"-I{KERNEL_DIR}", "-o", str(tmp_path / "k.cubin"), str(KERNEL_DIR / src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
    _check_report(src, arch, _ptxas_report(res.stdout + res.stderr))


def _nvrtc():
    """CuPy's NVRTC program class, or skip with the reason."""
    try:
        from cupy.cuda import compiler
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()  # loads libnvrtc: fails when no NVRTC wheel or toolkit is found
    except Exception as e:  # ImportError, or CuPy's error for a missing libnvrtc
        pytest.skip(f"CuPy with NVRTC not importable ({type(e).__name__}: {e}); "
                    "pip install cupy-cuda13x==14.2.0 nvidia-cuda-nvrtc==13.0.88")
    return compiler


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", SOURCES)
def test_nvrtc(src, arch):
    compiler = _nvrtc()
    from fastrnn.kernels import cuda

    # What cupy.RawModule compiles: the loader's text and options, plus CuPy's own -ftz=true and
    # the -arch it would pick for a device of this compute capability.
    options = cuda.NVRTC_OPTIONS + ("-ftz=true", f"-arch=sm_{arch}", "--ptxas-options=-v")
    prog = compiler._NVRTCProgram(cuda.source(src), name=str(KERNEL_DIR / src), method="cubin")
    log = io.StringIO()
    try:
        cubin, _ = prog.compile(options, log)
    except compiler.CompileException as e:
        pytest.fail(f"NVRTC failed on {src} for sm_{arch}:\n{e}")
    assert len(cubin) > 0
    _check_report(src, arch, _ptxas_report(log.getvalue()))
