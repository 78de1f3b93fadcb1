"""Tests of fastrnn.data: the real MNIST files, damaged copies, downloads from a local server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from fastrnn import data
from fastrnn.data import MNISTFormatError, load_mnist

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SHIPPED_MIRRORS = data.MIRRORS  # before the autouse fixture below replaces them


@pytest.fixture(autouse=True)
def no_network(tmp_path, monkeypatch):
    """No test reaches the internet: an unreachable mirror, an empty cache, no env data dir."""
    monkeypatch.setattr(data, "MIRRORS", ("http://127.0.0.1:9/unreachable/",))
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 5.0)
    monkeypatch.setenv("FASTRNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTRNN_DATA_DIR", raising=False)


def _load_clean(mnist_dir, **kwargs):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FASTRNN_DATA_DIR", raising=False)
        return load_mnist(mnist_dir, **kwargs)


@pytest.fixture(scope="module")
def ref(mnist_dir):
    """The default split of the real files."""
    return _load_clean(mnist_dir)


@pytest.fixture(scope="module")
def full(mnist_dir):
    """All 60000 training examples (validation_size=0)."""
    return _load_clean(mnist_dir, validation_size=0)


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(x, f), getattr(y, f))
               for x, y in zip(a, b) for f in ("images", "labels"))


# ------------------------------------------------------------------------------- real files
def test_real_files_shapes_dtypes_ranges(ref):
    for split, n in zip(ref, (55000, 5000, 10000)):
        assert split.num_examples == n
        assert split.images.shape == (n, 784) and split.images.dtype == np.float32
        assert split.labels.shape == (n,) and split.labels.dtype == np.int64
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        assert set(np.unique(split.labels)) == set(range(10))
    # well-known first labels, and the usual normalisation mean 0.1307 of the train pixels
    assert ref.validation.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert ref.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    all_train = np.concatenate([ref.validation.images, ref.train.images])
    assert abs(all_train.mean(dtype=np.float64) - 0.1307) < 5e-4
    # pixel values are exactly k / 255
    k = ref.test.images * np.float32(255)
    np.testing.assert_array_equal(k, np.round(k))


def test_label_counts(full):
    assert full.train.num_examples == 60000 and full.validation.num_examples == 0
    assert full.validation.images.shape == (0, 784)
    assert np.bincount(full.train.labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(full.test.labels, minlength=10).tolist() == TEST_COUNTS


def test_default_split_is_tf1_split(ref, full):
    assert np.array_equal(ref.validation.images, full.train.images[:5000])
    assert np.array_equal(ref.train.labels, full.train.labels[5000:])
    assert _same([ref.test], [full.test])


@pytest.mark.parametrize("v", [123, np.int64(59999), 60000])
def test_custom_validation_size(mnist_dir, full, v):
    d = load_mnist(mnist_dir, validation_size=v)
    assert (d.train.num_examples, d.validation.num_examples) == (60000 - v, v)
    assert np.array_equal(d.validation.labels, full.train.labels[:v])
    assert np.array_equal(d.train.images, full.train.images[v:])


def test_uncompressed_copies_give_same_arrays(mnist_dir, ref, tmp_path):
    for name in NAMES:
        (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    assert _same(load_mnist(tmp_path), ref)


def test_env_data_dir(mnist_dir, ref, monkeypatch):
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(mnist_dir))
    assert _same(load_mnist(), ref)


def test_data_dir_precedes_env(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(mnist_dir))
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(MNISTFormatError, match=re.escape(str(bad))):
        load_mnist(tmp_path)


def test_env_data_dir_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"\$FASTRNN_DATA_DIR.*nope"):
        load_mnist()


# ---------------------------------------------------------------------------- damaged copies
def _raw(mnist_dir: Path, name: str) -> bytearray:
    return bytearray(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))


def _flip(b: bytes, i: int) -> bytes:
    b = bytearray(b)
    b[i] ^= 0xFF
    return bytes(b)


def _damaged(mnist_dir, kind):
    """(file name, content, expected message fragment) for one kind of damage."""
    gz = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    lab = _raw(mnist_dir, "t10k-labels-idx1-ubyte")
    lab_name, img_name = "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"
    if kind == "truncated gz":
        return f"{lab_name}.gz", gz[: len(gz) // 2], "damaged gzip file (EOFError"
    if kind == "crc":  # the CRC32 sits in the 8-byte trailer
        return f"{lab_name}.gz", _flip(gz, len(gz) - 8), "CRC check failed"
    if kind == "corrupt deflate":
        return f"{lab_name}.gz", _flip(gz, len(gz) // 2), "damaged gzip file"
    if kind == "not gzip":
        return f"{lab_name}.gz", b"<html>not found</html>" * 50, "damaged gzip file"
    if kind == "wrong magic":  # an images header on a labels file
        content = gzip.compress(b"\0\0\x08\x03" + lab[4:])
        return f"{lab_name}.gz", content, "magic number 2051, expected 2049"
    if kind == "wrong count":
        lab[4:8] = (9999).to_bytes(4, "big")
        return lab_name, bytes(lab), "dimensions (9999,), expected (10000,)"
    if kind == "extra byte":
        return lab_name, bytes(lab) + b"\0", "expected 10008 bytes, got 10009"
    if kind == "short header":
        return lab_name, b"\0\0\x08", "expected a 8-byte header, got 3 bytes"
    if kind == "label out of range":
        lab[8 + 123] = 10
        return lab_name, bytes(lab), "label 10 at index 123, expected 0..9"
    if kind == "truncated images":
        return img_name, bytes(_raw(mnist_dir, img_name)[:1000]), "expected 7840016 bytes, got 1000"
    if kind == "wrong image size":
        img = _raw(mnist_dir, img_name)
        img[8:16] = (32).to_bytes(4, "big") * 2
        return img_name, bytes(img), "dimensions (10000, 32, 32), expected (10000, 28, 28)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "truncated gz", "crc", "corrupt deflate", "not gzip", "wrong magic", "wrong count",
    "extra byte", "short header", "label out of range", "truncated images", "wrong image size"])
def test_damaged_file_raises_naming_it(mnist_dir, tmp_path, kind):
    name, content, why = _damaged(mnist_dir, kind)
    for other in NAMES:  # the intact files beside the damaged one
        if not name.startswith(other):
            (tmp_path / f"{other}.gz").symlink_to(mnist_dir / f"{other}.gz")
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(MNISTFormatError, match=re.escape(f"{bad}: ") + ".*" + re.escape(why)):
        load_mnist(tmp_path)


def test_format_error_is_value_error():
    assert issubclass(MNISTFormatError, ValueError)


# --------------------------------------------------------------------------------- downloads
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def server(tmp_path, mnist_dir, monkeypatch):
    """A local HTTP server: /good/ holds the real files, /bad/ a corrupted copy, /missing/ 404s.

    Its files are the shared copies, whose hashes differ from those the public mirrors serve, so
    ``data.SHA256`` is patched with the shared copies' hashes. Yields the base URL.
    """
    root = tmp_path / "www"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    hashes = {}
    for name in NAMES:
        content = (mnist_dir / f"{name}.gz").read_bytes()
        hashes[f"{name}.gz"] = hashlib.sha256(content).hexdigest()
        (root / "good" / f"{name}.gz").write_bytes(content)
        (root / "bad" / f"{name}.gz").write_bytes(_flip(content, len(content) // 2))
    monkeypatch.setattr(data, "SHA256", hashes)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_download_falls_back_to_second_mirror(server, ref, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", (f"{server}/missing/", f"{server}/good"))
    cache = tmp_path / "cache"
    assert not cache.exists()
    assert _same(load_mnist(), ref)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    for p in cache.iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == data.SHA256[p.name]
    # second call: everything comes from the cache, the mirrors are not asked again
    monkeypatch.setattr(data, "MIRRORS", (f"{server}/missing/",))
    assert _same(load_mnist(), ref)


def test_download_wrong_hash_raises_naming_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", (f"{server}/missing/", f"{server}/bad/"))
    name = "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(MNISTFormatError, match=f"(?s){re.escape(name)}.*hash"):
        load_mnist()
    assert not (tmp_path / "cache" / name).exists()
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written left behind


def test_download_corrupt_first_mirror_uses_second(server, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", (f"{server}/bad/", f"{server}/good/"))
    path = data.fetch("t10k-labels-idx1-ubyte.gz", tmp_path / "c")
    assert path == tmp_path / "c" / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data.SHA256[path.name]


def test_download_all_mirrors_missing_is_oserror(server, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", (f"{server}/missing/", f"{server}/gone/"))
    with pytest.raises(OSError, match="(?s)t10k-labels-idx1-ubyte.gz.*404.*404") as info:
        load_mnist()
    assert not isinstance(info.value, ValueError)


def test_fetch_unknown_name():
    with pytest.raises(ValueError, match="fname.*'mnist.npz'"):
        data.fetch("mnist.npz")


def test_shipped_hashes_are_for_the_four_files():
    assert sorted(data.SHA256) == sorted(f"{n}.gz" for n in NAMES)
    assert all(re.fullmatch("[0-9a-f]{64}", h) for h in data.SHA256.values())
    assert len(set(SHIPPED_MIRRORS)) >= 2
    assert all(m.startswith("https://") and m.endswith("/") for m in SHIPPED_MIRRORS)


# ------------------------------------------------------------------------- invalid arguments
@pytest.mark.parametrize("v", [-1, 60001, 70000])
def test_validation_size_out_of_range(v):
    with pytest.raises(ValueError, match=rf"validation_size must be in \[0, 60000\], got {v}"):
        load_mnist(validation_size=v)


@pytest.mark.parametrize("v", [1.5, "5000", True, None])
def test_validation_size_not_int(v):
    why = rf"validation_size must be an int in \[0, 60000\], got {re.escape(repr(v))}"
    with pytest.raises(TypeError, match=why):
        load_mnist(validation_size=v)


def test_data_dir_missing(tmp_path):
    with pytest.raises(ValueError, match=r"data_dir must be an existing directory.*nowhere"):
        load_mnist(tmp_path / "nowhere")


def test_data_dir_is_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ValueError, match="data_dir"):
        load_mnist(tmp_path / "f")
