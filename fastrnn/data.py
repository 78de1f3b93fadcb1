"""MNIST as TensorFlow 1's ``read_data_sets(one_hot=False)`` gave it, without TensorFlow.

The four original idx files (each gzipped ``.gz`` or not) are looked up, file by file, in
``data_dir``, then ``$FASTRNN_DATA_DIR``, then the cache folder (``$FASTRNN_CACHE_DIR``, else
``pooch.os_cache("fastrnn")``); a file found nowhere is downloaded gzipped into the cache folder
from the first of :data:`MIRRORS` that serves it with the SHA-256 in :data:`SHA256`.

Downloads are checked against those hashes; files already on disk are not (a re-compressed or
uncompressed copy is fine) but every file goes through the format checks of the idx reader
(gzip integrity, magic number, dimensions, exact length, label range), so a damaged file raises
:class:`MNISTFormatError` naming it instead of returning a wrong array.
"""

from __future__ import annotations

import gzip
import numbers
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["MIRRORS", "SHA256", "DataSet", "Datasets", "MNISTFormatError", "fetch", "load_mnist"]

#: Base URLs tried in order for a missing file.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
#: SHA-256 of the original gzipped files as the mirrors serve them (9912422, 28881, 1648877 and
#: 4542 bytes). A re-compressed copy holds the same data but has other hashes.
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz":
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz":
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz":
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz":
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
#: Seconds a download may wait for the server before that mirror counts as failed.
DOWNLOAD_TIMEOUT = 60.0
_N_TRAIN = 60000


class MNISTFormatError(ValueError):
    """An MNIST file is damaged or not what its name says (the message names the file)."""


@dataclass(frozen=True)
class DataSet:
    """One split: ``images`` float32 ``[N, 784]`` in [0, 1], ``labels`` int64 ``[N]`` in 0..9."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def num_examples(self) -> int:
        """Number of examples ``N``."""
        return len(self.labels)


class Datasets(NamedTuple):
    """The three splits returned by :func:`load_mnist`."""

    train: DataSet
    validation: DataSet
    test: DataSet


def _cache_dir() -> Path:
    if os.environ.get("FASTRNN_CACHE_DIR"):
        return Path(os.environ["FASTRNN_CACHE_DIR"])
    import pooch  # only where a download may be needed: local copies load without it

    return Path(pooch.os_cache("fastrnn"))


def _find(name: str, dirs) -> Path | None:
    """The first of ``d/name`` or ``d/name.gz`` that exists, over ``dirs`` in order."""
    return next((p for d in dirs for p in (d / name, d / f"{name}.gz") if p.is_file()), None)


def fetch(fname: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download one gzipped MNIST file into the cache folder, trying :data:`MIRRORS` in order.

    Parameters
    ----------
    fname : str
        One of the keys of :data:`SHA256`, e.g. ``"t10k-labels-idx1-ubyte.gz"``.
    cache_dir : str or os.PathLike, optional
        Target folder (created if needed); default ``$FASTRNN_CACHE_DIR`` or
        ``pooch.os_cache("fastrnn")``. A file already there with the right hash is kept.

    Returns
    -------
    pathlib.Path
        Path of the verified file.

    Raises
    ------
    ValueError
        ``fname`` is not one of the four file names.
    MNISTFormatError
        No mirror served it, and at least one served it with a wrong SHA-256.
    OSError
        No mirror could be reached or had the file.
    """
    if fname not in SHA256:
        raise ValueError(f"fname must be one of {sorted(SHA256)}, got {fname!r}")
    cache = Path(cache_dir) if cache_dir is not None else _cache_dir()
    import pooch

    downloader = pooch.HTTPDownloader(progressbar=False, timeout=DOWNLOAD_TIMEOUT)
    errors: list[tuple[str, Exception]] = []
    for base in MIRRORS:
        url = base.rstrip("/") + "/" + fname
        try:
            return Path(pooch.retrieve(url, known_hash=f"sha256:{SHA256[fname]}", fname=fname,
                                       path=cache, downloader=downloader, progressbar=False))
        except (OSError, ValueError) as e:  # requests errors are OSErrors; a hash mismatch is not
            errors.append((url, e))
    hash_failed = any(not isinstance(e, OSError) for _, e in errors)
    reasons = "".join(f"\n  {url}: {e}" for url, e in errors)
    raise (MNISTFormatError if hash_failed else OSError)(
        f"could not download {cache / fname} from any mirror:{reasons}")


def _read_idx(path: Path, count: int, images: bool) -> np.ndarray:
    """Parse one idx file: float32 ``[count, 784]`` in [0, 1] or int64 ``[count]`` labels."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # bad header or CRC / truncated / bad deflate
            raise MNISTFormatError(f"{path}: damaged gzip file ({type(e).__name__}: {e})") from e
    magic, shape = (2051, (count, 28, 28)) if images else (2049, (count,))
    header = 4 + 4 * len(shape)
    if len(raw) < header:
        raise MNISTFormatError(f"{path}: expected a {header}-byte header, got {len(raw)} bytes")
    found = np.frombuffer(raw, ">u4", count=header // 4).tolist()
    if found[0] != magic:
        raise MNISTFormatError(f"{path}: magic number {found[0]}, expected {magic}")
    if tuple(found[1:]) != shape:
        raise MNISTFormatError(f"{path}: dimensions {tuple(found[1:])}, expected {shape}")
    size = header + int(np.prod(shape))
    if len(raw) != size:
        raise MNISTFormatError(f"{path}: expected {size} bytes, got {len(raw)}")
    data = np.frombuffer(raw, np.uint8, offset=header)
    if images:
        return np.divide(data.reshape(count, 784), np.float32(255), dtype=np.float32)
    if data.max() > 9:
        i = int(data.argmax())
        raise MNISTFormatError(f"{path}: label {data[i]} at index {i}, expected 0..9")
    return data.astype(np.int64)


def load_mnist(data_dir: str | os.PathLike[str] | None = None,
               validation_size: int = 5000) -> Datasets:
    """Load MNIST, split like TensorFlow 1's ``read_data_sets(one_hot=False)``.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Existing folder searched first for the four files, each gzipped or not (an uncompressed
        file wins over a gzipped one in the same folder); then ``$FASTRNN_DATA_DIR``, then the
        cache folder, where missing files are downloaded (see :func:`fetch`).
    validation_size : int, default 5000
        Number of leading training images held out as the validation split, in [0, 60000].

    Returns
    -------
    Datasets
        ``train`` (``60000 - validation_size`` examples), ``validation`` (``validation_size``)
        and ``test`` (10000), each a :class:`DataSet` with ``images`` float32 ``[N, 784]``
        (pixel / 255, rows in reading order) and ``labels`` int64 ``[N]``. ``train`` and
        ``validation`` are views of one array.

    Raises
    ------
    TypeError
        ``validation_size`` is not an integer.
    ValueError
        ``validation_size`` is out of range, ``data_dir`` or ``$FASTRNN_DATA_DIR`` is not an
        existing folder, or a file is damaged (:class:`MNISTFormatError`).
    OSError
        A missing file could not be downloaded.
    """
    if isinstance(validation_size, bool) or not isinstance(validation_size, numbers.Integral):
        raise TypeError(f"validation_size must be an int in [0, {_N_TRAIN}], "
                        f"got {validation_size!r} ({type(validation_size).__name__})")
    if not 0 <= validation_size <= _N_TRAIN:
        raise ValueError(f"validation_size must be in [0, {_N_TRAIN}], got {validation_size}")
    dirs = []
    env = os.environ.get("FASTRNN_DATA_DIR") or None
    for what, d in (("data_dir", data_dir), ("$FASTRNN_DATA_DIR", env)):
        if d is None:
            continue
        if not Path(d).is_dir():
            raise ValueError(f"{what} must be an existing directory, got {os.fspath(d)!r}")
        dirs.append(Path(d))
    arrays = []  # smallest file first, so a damaged one fails fast
    for prefix, count in (("t10k", 10000), ("train", _N_TRAIN)):
        for name, images in ((f"{prefix}-labels-idx1-ubyte", False),
                             (f"{prefix}-images-idx3-ubyte", True)):
            path = _find(name, dirs) or _find(name, [_cache_dir()]) or fetch(f"{name}.gz")
            arrays.append(_read_idx(path, count, images))
    y_test, x_test, y, x = arrays
    v = int(validation_size)
    return Datasets(DataSet(x[v:], y[v:]), DataSet(x[:v], y[:v]), DataSet(x_test, y_test))
