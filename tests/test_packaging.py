"""fastrnn as users install it: what the wheel and the sdist hold, which ``fastrnn`` the tests
import, and the compiled-kernel cache of a read-only install.

The build tests need the source tree (a git checkout) and skip elsewhere. CI (``.ci/run``) also
builds the wheel and the sdist, installs each into a fresh virtual environment outside the checkout
and runs this suite there (``.ci/installed``) with ``FASTRNN_TEST_INSTALLED`` naming the
environment, which :func:`test_imports_the_installed_fastrnn` holds it to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fastrnn
import fastrnn.backends
import fastrnn.kernels

ROOT = Path(__file__).resolve().parents[1]
needs_checkout = pytest.mark.skipif(
    not (ROOT / ".git").exists() or not (ROOT / "kernels").is_dir(),
    reason="builds fastrnn from its source: needs a git checkout beside tests/")
#: the sdist: every tracked file below these folders, these top-level files, and the metadata the
#: build writes (PKG-INFO, setup.cfg, *.egg-info/)
SDIST_FOLDERS = ("fastrnn", "kernels", "tests", "examples", "bench")
SDIST_TOP = {"pyproject.toml", "setup.py", "MANIFEST.in", "README.md"}
SDIST_GENERATED = {"PKG-INFO", "setup.cfg"}


def _tracked(*folders: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--", *folders], cwd=ROOT, check=True,
                         capture_output=True).stdout
    return {p for p in out.decode().split("\0") if p and (ROOT / p).exists()}


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory) -> Path:
    """The files git tracks, as a fresh clone has them: no build/ or egg-info left by an earlier
    build (setuptools would pack their stale files)."""
    copy = tmp_path_factory.mktemp("clone")
    for path in _tracked():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, copy / path)
    return copy


def _build(kind: str, source: Path, out_dir: Path) -> Path:
    """Build a ``wheel`` or ``sdist`` of ``source`` through setuptools' PEP 517 hooks, in a
    subprocess and without build isolation (tests never download)."""
    code = f"from setuptools import build_meta as b; print(b.build_{kind}({str(out_dir)!r}))"
    r = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True)
    assert r.returncode == 0, f"building the {kind} failed:\n{r.stderr[-3000:]}"
    return out_dir / r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(clean_copy, tmp_path_factory) -> Path:
    return _build("wheel", clean_copy, tmp_path_factory.mktemp("wheel"))


@needs_checkout
def test_wheel_holds_every_package_file_and_nothing_else(wheel):
    """Every module of ``fastrnn/`` and ``kernels/`` (installed as ``fastrnn/kernels/``) and the
    CUDA sources; no tests, examples, benchmarks or caches."""
    expected = set()
    for path in _tracked("fastrnn", "kernels"):
        if path.endswith((".py", ".cu", ".cuh")):
            expected.add("fastrnn/kernels/" + path[len("kernels/"):]
                         if path.startswith("kernels/") else path)
    names = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    assert "fastrnn/backends/cpu.py" in expected and "fastrnn/kernels/rnn_forward.cu" in expected
    assert names == expected, (f"missing from the wheel: {sorted(expected - names)}; "
                               f"not the package: {sorted(names - expected)}")


@needs_checkout
def test_sdist_holds_the_sources_tests_examples_and_benchmarks(clean_copy, tmp_path):
    """What an unpacked sdist needs to build the package and to run its tests and examples."""
    sdist = _build("sdist", clean_copy, tmp_path)
    with tarfile.open(sdist) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    names = {n for n in names if ".egg-info/" not in n} - SDIST_GENERATED
    expected = _tracked(*SDIST_FOLDERS) | SDIST_TOP
    assert "tests/cuda_emu/cuda_emu.h" in expected
    assert names == expected, (f"missing from the sdist: {sorted(expected - names)}; "
                               f"not ours: {sorted(names - expected)}")


def test_imports_the_installed_fastrnn():
    """Where CI runs this suite against an installed wheel or sdist, every fastrnn package comes
    from that install, not from a checkout (in the source tree: skipped)."""
    where = os.environ.get("FASTRNN_TEST_INSTALLED")
    if not where:
        pytest.skip("runs where FASTRNN_TEST_INSTALLED names the environment fastrnn is "
                    "installed in (.ci/installed)")
    for module in (fastrnn, fastrnn.backends, fastrnn.kernels):
        path = Path(module.__file__).resolve()
        assert path.is_relative_to(Path(where).resolve()), f"{module.__name__} from {path}"


def _read_only(site: Path, cmd: list[str]) -> list[str]:
    """``cmd`` run where ``site`` cannot be written to. Its files have lost their write bits; root
    ignores those, so as root ``cmd`` runs in a private mount namespace with ``site`` bind-mounted
    read-only (as a read-only system image or network share would be)."""
    if os.geteuid() != 0:
        return cmd
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(site), *cmd]


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@needs_checkout
def test_read_only_install_caches_kernels_per_user(wheel, tmp_path):
    """A wheel installed into a folder made read-only (as a system site-packages): the kernels
    compile on first use into a per-user cache, which ``python -m fastrnn`` names, and load
    from it in the next process; nothing is written into the install."""
    if os.geteuid() == 0 and shutil.which("unshare") is None:
        pytest.skip("as root, needs unshare (util-linux) to make a folder read-only")
    site, home = tmp_path / "site", tmp_path / "home"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    home.mkdir()
    installed = _files(site)
    try:
        for p in [site, *installed]:
            p.chmod(p.stat().st_mode & 0o555)
        env = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
        env.update(PYTHONPATH=str(site), HOME=str(home))
        write = [sys.executable, "-c", f"open({str(site / 'new')!r}, 'w')"]
        probe = subprocess.run(_read_only(site, write), env=env, cwd=home, capture_output=True,
                               text=True)
        assert probe.returncode != 0 and ("Read-only" in probe.stderr
                                          or "Permission denied" in probe.stderr), (
            f"could not make {site} read-only: {probe.stderr[-500:]}")
        outcomes = []
        for _ in range(2):
            r = subprocess.run(_read_only(site, [sys.executable, "-m", "fastrnn"]), env=env,
                               cwd=home, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            lines = r.stdout.splitlines()
            assert lines[0].startswith(f"fastrnn {fastrnn.__version__} ({site / 'fastrnn'})")
            cache = next(ln for ln in lines if ln.startswith("  Numba kernels  "))
            assert cache.split(None, 2)[2].startswith(str(home / ".cache")), cache
            outcomes.append(next(ln for ln in lines if "preparing kernels" in ln))
        assert "compiled in" in outcomes[0] and "loaded from cache" in outcomes[1], outcomes
        assert _files(site) == installed, "the read-only install was written into"
        assert any(p.suffix == ".nbc" for p in _files(home / ".cache"))
    finally:
        for p in [site, *installed]:
            p.chmod(p.stat().st_mode | 0o200)
