"""Run CUDA kernels on the CPU: a ``.cu`` compiled by g++ with ``cuda_emu.h``, called with ctypes.

::

    mod = load("kernels/rnn_forward.cu")              # compiled once, cached by source hash
    mod.launch("rnn_fwd_warp", grid, block, shared_mem, x, ..., np.int32(B), order="random")

Arrays are passed as pointers (C-contiguous, of the pointee's dtype, or ``None`` for NULL) and
scalars must already have the C parameter's type (``np.int32`` for ``int``, ``np.float32`` for
``float``), checked against the signature that the compiled shim reports, as CuPy would not.

Each CUDA thread is a ucontext fiber that runs until it reaches a barrier, a warp collective or
its end; ``order`` picks which ready thread runs next: ``forward`` (increasing thread index),
``reverse``, or ``random`` (a new permutation from ``seed`` on every pass). The emulator stops the
launch with :class:`EmuError` on a deadlock, a ``__syncthreads`` reached at different lines by
one block, a shuffle from a lane that does not take part, or lanes of one warp calling different
collectives at once. Shared memory is filled with 0xFF before each block (floats read before they
are written are NaN) and dynamic shared memory is exactly the launch's size.

Variants: ``plain`` (-O2); ``tsan``: ThreadSanitizer, where fibers are TSan fibers switched
without synchronisation and barriers and warp collectives are the only happens-before edges
between threads of a block, so a missing barrier is reported even when every schedule gives
the right values; ``asan``: AddressSanitizer + UBSan, with the dynamic shared memory past the
launch's size poisoned and redzones between static ``__shared__`` arrays. A sanitizer build
loads only into a Python with that runtime preloaded: :func:`run_isolated` starts one.

Limits (what this does not see):

- Blocks run one after another, each to completion, and are ordered by happens-before: races
  between blocks are not seen, and a kernel that waits for another block to make progress hangs.
- Threads switch only at barriers and collectives, one OS thread runs them all and x86 is more
  strongly ordered than the GPU: a missing ``__threadfence``/``volatile`` is not seen; races
  inside a block show up under TSan (or as wrong values under some order), not as torn values.
- Warps are not lock-step: warp-synchronous code without ``__syncwarp`` is reported by TSan
  (as it is also wrong on Volta and later).
- Float math is the CPU's: libm in place of the GPU's approximations (``__expf``,
  ``__fdividef``, ``tanhf``) and no FMA contraction (nvcc contracts ``a*b+c``), so results differ
  from the GPU at the rounding level; results do not depend on the order.
- Not emulated: fp16/bf16 and vector types, ``__constant__`` copies, textures, cooperative groups
  and grid sync, dynamic parallelism, inline PTX, clocks. Not checked: registers, spills,
  occupancy, ``__launch_bounds__``, shared memory beyond 227 KB per block or the 48 KB limit
  without opt-in, static plus dynamic shared size, bank conflicts, speed.
- A thread that returns does not hold up ``__syncthreads`` or a collective (as on Volta and
  later). One launch at a time per process (the emulator state is global). A thread switch
  costs ~0.2 µs (a warp-path forward at B=5 T=28 H=31 takes 0.05 s), a block ~1 ms per 1,000
  threads to set up, and sanitizer builds run 5-20x slower: keep shapes small.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HEADER = HERE / "cuda_emu.h"
ORDERS = {"forward": 0, "reverse": 1, "random": 2}
VARIANTS = {
    "plain": ["-O2"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all", "-fsanitize-sections=cuda_emu_shared"],
}
#: runtime settings of each sanitizer when run inside Python (which is not instrumented)
RUNTIME_ENV = {
    "tsan": {"runtime": "libtsan.so", "TSAN_OPTIONS": "exitcode=66 history_size=4"},
    "asan": {"runtime": "libasan.so", "ASAN_OPTIONS": "detect_leaks=0",
             "UBSAN_OPTIONS": "print_stacktrace=1 halt_on_error=1"},
}
CACHE = Path(os.environ.get("CUDA_EMU_CACHE", Path(tempfile.gettempdir()) / "fastrnn-cuda-emu"))

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_BOUNDS = r"(?:__launch_bounds__\s*\([^)]*\)\s*)?"
_ENTRY = re.compile(rf"__global__\s+{_BOUNDS}void\s+{_BOUNDS}(\w+)\s*\(")
_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+([^;\[]*?)\s*(\w+)\s*\[\s*\]\s*;")
_ALIGN = re.compile(r"__align__\s*\(\s*\d+\s*\)")
_SCALARS = {"int": np.int32, "unsigned int": np.uint32, "long long": np.int64,
            "float": np.float32, "double": np.float64}
_POINTEES = {**_SCALARS, "unsigned char": np.uint8}
_CTYPES = {np.int32: ctypes.c_int32, np.uint32: ctypes.c_uint32, np.int64: ctypes.c_int64,
           np.float32: ctypes.c_float, np.float64: ctypes.c_double}


class EmuError(RuntimeError):
    """The kernel did something CUDA does not allow (a deadlock, a bad collective, ...)."""


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        order = "C-contiguous" if value.flags.c_contiguous else "non-contiguous"
        return f"{order} {value.dtype} array"
    return type(value).__name__


def _c_arg(where: str, ctype: str, value):
    """The ctypes object holding ``value`` as the C parameter type ``ctype``."""
    if ctype.endswith("*"):
        if value is None:
            return ctypes.c_void_p(None)
        dtype = np.dtype(_POINTEES[ctype.removeprefix("const ").removesuffix("*")])
        if not (isinstance(value, np.ndarray) and value.dtype == dtype
                and value.flags.c_contiguous):
            raise TypeError(f"{where} ({ctype}): expected a C-contiguous {dtype} array or None, "
                            f"got a {_describe(value)}")
        return ctypes.c_void_p(value.ctypes.data)
    scalar = _SCALARS[ctype]
    if type(value) is not scalar:
        raise TypeError(f"{where} ({ctype}): expected np.{scalar.__name__}, "
                        f"got {_describe(value)}")
    return _CTYPES[scalar](value.item())


def _dims(shape) -> ctypes.Array:
    dims = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
    return (ctypes.c_uint * 3)(*(int(d) for d in dims), *(1,) * (3 - len(dims)))


class Module:
    """The kernels of one compiled ``.cu``."""

    def __init__(self, so: Path, entries: list[str]):
        self.entries = entries
        self._lib = ctypes.CDLL(str(so))
        self._lib.cuda_emu_error.restype = ctypes.c_char_p

    def signature(self, entry: str) -> list[str]:
        """The C parameter types of ``entry``, e.g. ``["const float*", "int"]``."""
        fn = getattr(self._lib, f"cuda_emu_signature_{entry}")
        fn.restype = ctypes.c_char_p
        return fn().decode().split(",")

    def launch(self, entry: str, grid, block, shared_mem: int, *args,
               order: str = "forward", seed: int = 0) -> None:
        """Run ``entry<<<grid, block, shared_mem>>>(*args)`` to completion."""
        types = self.signature(entry)
        if len(args) != len(types):
            raise TypeError(f"{entry}: expected {len(types)} arguments, got {len(args)}")
        held = [_c_arg(f"{entry} argument {i}", t, a) for i, (t, a) in enumerate(zip(types, args))]
        argv = (ctypes.c_void_p * len(held))(*(ctypes.addressof(h) for h in held))
        fn = getattr(self._lib, f"cuda_emu_launch_{entry}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                       ctypes.c_uint, ctypes.c_void_p]
        if fn(_dims(grid), _dims(block), shared_mem, ORDERS[order], seed, argv):
            raise EmuError(f"{entry}: {self._lib.cuda_emu_error().decode()}")


def variant() -> str:
    """The build :func:`load` uses in this process: ``$CUDA_EMU_VARIANT``, else ``plain``."""
    return os.environ.get("CUDA_EMU_VARIANT", "plain")


def _dynamic_shared(m: re.Match) -> str:
    """``extern __shared__ T name[];`` -> a pointer to the one dynamic shared buffer, as on the
    GPU every such array starts at the same address (same line count, so ``#line`` holds)."""
    ctype = _ALIGN.sub("", m[1]).strip()
    return f"{ctype}* const {m[2]} = reinterpret_cast<{ctype}*>(cuda_emu_dynamic_shared);"


@functools.cache
def load(cu: str | os.PathLike, build: str | None = None) -> Module:
    """Compile ``cu`` (with every ``*.cuh`` beside it as a dependency) for ``build`` (default:
    :func:`variant`) into a cached ``.so`` and load it."""
    cu, build = Path(cu).resolve(), build or variant()
    text = cu.read_text()
    entries = _ENTRY.findall(_COMMENT.sub("", text))
    source = _DYNAMIC_SHARED.sub(_dynamic_shared, text)
    unit = (f'#include "{HEADER}"\n#line 1 "{cu}"\n{source}\n#line 1 "cuda_emu_shims"\n'
            + "".join(f"CUDA_EMU_ENTRY({e})\n" for e in entries))
    flags = ["-std=gnu++17", "-shared", "-fPIC", "-I", str(cu.parent), *VARIANTS[build]]
    gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join(
        [unit, HEADER.read_text(), gxx, *flags,
         *(p.read_text() for p in sorted(cu.parent.glob("*.cuh")))]).encode()).hexdigest()[:16]
    so = CACHE / f"{cu.stem}-{build}-{key}.so"
    if not so.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        src, tmp = (so.with_name(f"{so.stem}.{os.getpid()}{ext}") for ext in (".cpp", ".tmp"))
        src.write_text(unit)
        done = subprocess.run(["g++", *flags, str(src), "-o", str(tmp)],
                              capture_output=True, text=True)
        src.unlink()
        if done.returncode:
            raise RuntimeError(f"g++ failed on {cu}:\n{done.stderr}")
        os.replace(tmp, so)
    return Module(so, entries)


def sanitizer_runtime(build: str) -> Path | None:
    """The shared runtime of a sanitizer build (``tsan``, ``asan``), or None if g++ has none."""
    name = RUNTIME_ENV[build]["runtime"]
    path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    return Path(path) if os.path.isabs(path) else None  # g++ echoes the bare name if absent


def run_isolated(build: str, function: str, timeout: float = 300, **kwargs):
    """Call ``function`` (``"package.module:name"``) with ``kwargs`` (JSON) in a fresh Python
    where :func:`load` builds ``build``, with that sanitizer's runtime preloaded. Returns the
    ``subprocess.CompletedProcess`` (text ``stdout``/``stderr``) for the caller to judge.
    The interpreter is ``sys.executable`` itself: a wrapper script (a pyenv shim) would run
    bash under the preloaded runtime, which TSan does not survive."""
    module, name = function.split(":")
    env = {**os.environ, "CUDA_EMU_VARIANT": build}
    if build in RUNTIME_ENV:
        settings = {k: v for k, v in RUNTIME_ENV[build].items() if k != "runtime"}
        env.update(settings, LD_PRELOAD=str(sanitizer_runtime(build)))
    code = (f"import importlib, json, sys; "
            f"importlib.import_module({module!r}).{name}(**json.loads(sys.argv[1]))")
    return subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
