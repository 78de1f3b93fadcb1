"""Shared test fixtures: where the MNIST copy is, and the GPU skip logic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _mnist_dir() -> Path | None:
    """The MNIST folder from $FASTRNN_DATA_DIR, else ../shared/data/mnist beside the checkout."""
    candidates = [os.environ.get("FASTRNN_DATA_DIR"),
                  Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    for c in candidates:
        if c and all((Path(c) / f).exists() for f in MNIST_FILES):
            return Path(c)
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A folder holding the four original gzipped MNIST files; skips when there is none."""
    d = _mnist_dir()
    if d is None:
        pytest.skip("no MNIST copy: set FASTRNN_DATA_DIR to a folder with the four idx .gz files")
    return d


def _have_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAVE_GPU = _have_gpu()

#: every backend of the functional API, as a test parameter: the same test runs on CPU-only CI
#: and does real work on a GPU machine
BACKENDS = ["reference", "cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_report_header(config) -> str:
    """Which fastrnn the run tests: the checkout's (editable install) or an installed one."""
    import fastrnn

    return f"fastrnn {fastrnn.__version__} imported from {Path(fastrnn.__file__).parent}"


def pytest_collection_modifyitems(config, items):
    if HAVE_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy installed (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
