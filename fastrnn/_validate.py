"""Argument checks at the API edge: every message names the argument, what was expected and what
arrived. Kernels never check anything, so everything they assume is established here."""

from __future__ import annotations

import functools
import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: kernels index with 32-bit ints: refuse any array whose element count would overflow them
MAX_ELEMENTS = 2**31 - 1


def _describe(a) -> str:
    if a is None:
        return "None"
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        lib = type(a).__module__.split(".")[0]
        return f"{lib} array of shape {tuple(a.shape)} and dtype {a.dtype}"
    return f"{type(a).__name__} {a!r}"[:120]


def fail(name: str, expected: str, got) -> None:
    """Raise ``ValueError("{name}: expected {expected}, got {got}")``."""
    raise ValueError(f"{name}: expected {expected}, got {got}")


#: the nonlinearities of the Elman cell (``fastrnn.reference.NONLINEARITIES``)
NONLINEARITIES = ("tanh", "relu")


def nonlinearity(name: str, value) -> str:
    """``value`` if it is "tanh" or "relu", else ValueError naming ``name``."""
    if not (isinstance(value, str) and value in NONLINEARITIES):
        fail(name, "'tanh' or 'relu'", repr(value))
    return value


def positive_int(name: str, value) -> int:
    """An ``int`` >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {_describe(value)}")
    if value < 1:
        fail(name, "a positive int", value)
    return int(value)


def positive_float(name: str, value) -> float:
    """A finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive float, got {_describe(value)}")
    if not (np.isfinite(value) and value > 0):
        fail(name, "a finite float > 0", value)
    return float(value)


def array(name: str, a, xp, ndim: int, dtype=None, *, like: str = "x", contiguous: bool = True):
    """An array of module ``xp`` (NumPy or CuPy) with ``ndim`` dims and a float dtype
    (``dtype`` if given); returned C-contiguous (copied only when it is not) unless
    ``contiguous=False``, which returns it as given so that sizes can be checked before any copy.
    ``like``: the caller's name for the argument that chose ``xp`` and ``dtype``, which the
    messages name."""
    if a is None or not hasattr(a, "shape") or not _numpy_dtype(a):
        raise TypeError(f"{name}: expected a {xp.__name__} array, got {_describe(a)}")
    _same_library(name, a, xp, like)
    if a.ndim != ndim:
        fail(name, f"{ndim} dimensions", _describe(a))
    if dtype is None and a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {_describe(a)}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} (the dtype of {like}), got "
                        f"{a.dtype}")
    if a.size > MAX_ELEMENTS:
        fail(name, f"at most {MAX_ELEMENTS} elements (32-bit kernel indexing)", _describe(a))
    return xp.ascontiguousarray(a) if contiguous else a


def _numpy_dtype(a) -> bool:
    """``a`` has a NumPy dtype (NumPy and CuPy arrays): another library's tensor (say torch's)
    has a dtype of its own and is refused by name rather than converted or misread."""
    return isinstance(getattr(a, "dtype", None), np.dtype)


def _same_library(name: str, a, xp, like: str) -> None:
    """``a`` is a CuPy array where ``like`` (the caller's argument name) is, a NumPy one where it
    is NumPy: a device mix is refused, not silently converted."""
    if xp is np and type(a).__module__.startswith("cupy"):
        raise TypeError(f"{name}: expected a NumPy array (like {like}), got {_describe(a)}")
    if xp is not np and not type(a).__module__.startswith("cupy"):
        raise TypeError(f"{name}: expected a CuPy array (like {like}), got {_describe(a)}")


def _not_cupy_on_numpy(name: str, a, xp, like: str) -> None:
    """A CuPy array where the rest is NumPy (a device mix) is refused, not silently converted;
    integer arguments given as lists or NumPy arrays are moved to ``xp`` by the caller."""
    if xp is np:
        _same_library(name, a, xp, like)


def indexable(name: str, count: int, expected: str, got: str) -> None:
    """``count`` elements fit the kernels' 32-bit indices (:data:`MAX_ELEMENTS`)."""
    if count > MAX_ELEMENTS:
        fail(name, f"{expected} <= {MAX_ELEMENTS} (32-bit kernel indexing)", got)


@functools.cache
def total_memory(xp=np) -> int | None:
    """Bytes of memory on ``xp``'s device: the GPU's total for CuPy; for NumPy the physical RAM,
    or the cgroup limit when lower. None when unknown (then nothing is refused for size).
    Asked once per process: the size checks run on every training step."""
    if xp is not np:
        try:
            return int(xp.cuda.Device().mem_info[1])
        except Exception:  # no device query possible: let the allocator decide
            return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return int(total) if total > 0 else None


def memory(name: str, nbytes: int, xp, got: str) -> None:
    """Refuse, before allocating anything, a call whose arrays and workspaces need ``nbytes``
    bytes, more than the device has: ``MemoryError`` naming ``name`` and the sizes in ``got``
    (instead of an out-of-memory kill part-way through)."""
    limit = total_memory(xp)
    if limit is not None and nbytes > limit:
        raise MemoryError(f"{name}: expected sizes whose arrays and workspaces fit in "
                          f"{_gib(limit)} of memory, got {got} needing {_gib(nbytes)}")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def shape(name: str, a, expected: tuple, meaning: str) -> None:
    """``a.shape == expected``; ``meaning`` spells the expected shape in symbols, e.g. ``[B,H]``."""
    if tuple(a.shape) != tuple(expected):
        fail(name, f"shape {meaning} = {tuple(expected)}", f"shape {tuple(a.shape)}")


def labels(name: str, y, xp, batch: int, num_classes: int, like: str = "x"):
    """Integer class labels ``[B]`` in ``[0, num_classes)``, returned as int64."""
    if y is None or not hasattr(y, "dtype"):
        y = np.asarray(y) if y is not None else y
    _not_cupy_on_numpy(name, y, xp, like)
    if y is None or not _numpy_dtype(y) or y.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array of shape [B] = ({batch},), "
                        f"got {_describe(y)}")
    shape(name, y, (batch,), "[B]")
    y = xp.asarray(y)
    lo, hi = int(y.min()), int(y.max())  # before the cast: a uint64 past 2**63 stays itself
    if lo < 0 or hi >= num_classes:
        fail(name, f"labels in [0, {num_classes})", f"values from {lo} to {hi}")
    return y.astype(xp.int64, copy=False)


def lengths(name: str, lens, xp, batch: int, steps: int, like: str = "x"):
    """``lengths [B]`` integers in ``[0, T]``, returned as int32 on ``xp``; None means all T."""
    if lens is None:
        return xp.full(batch, steps, dtype=xp.int32)
    if not hasattr(lens, "dtype"):
        lens = np.asarray(lens)
    _not_cupy_on_numpy(name, lens, xp, like)
    if not _numpy_dtype(lens) or lens.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers, got {_describe(lens)}")
    shape(name, lens, (batch,), "[B]")
    lens = xp.asarray(lens)
    if batch and (int(lens.min()) < 0 or int(lens.max()) > steps):
        fail(name, f"values in [0, T] = [0, {steps}]",
             f"values from {int(lens.min())} to {int(lens.max())}")
    return xp.ascontiguousarray(lens, dtype=xp.int32)
