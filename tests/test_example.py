"""examples/train_mnist.py as a user runs it: the seed-style lines, and clean failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HAVE_GPU

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"
TRN = re.compile(r"^\[trn\] ep (\d+), step (\d+), loss (\d+\.\d{6}), accu (\d\.\d{6}), "
                 r"sec/iter (\d+\.\d{6})$")
TST = re.compile(r"^\[tst\] ep (\d+), step (\d+), accu (\d\.\d{6}), sec/iter (\d+\.\d{6})$")


def run(*args, timeout=600):
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("backend", ["reference", "kernels"])
def test_prints_seed_style_lines(mnist_dir, backend):
    r = run("--device", "cpu", "--backend", backend, "--layers", "1", "--epochs", "2",
            "--max-steps", "500", "--data-dir", str(mnist_dir), "--no-shuffle")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    trn = [TRN.match(line) for line in lines if line.startswith("[trn]")]
    tst = [TST.match(line) for line in lines if line.startswith("[tst]")]
    assert all(trn) and all(tst), r.stdout
    # epoch 1: 429 training steps (a [trn] line at 250), 79 test batches (to 508); epoch 2: the
    # last 71 training steps (to 579, no [trn] line), 79 test batches (to 658)
    assert [(m[1], m[2]) for m in trn] == [("1", "250")], r.stdout
    assert [(m[1], m[2]) for m in tst] == [("1", "508"), ("2", "658")], r.stdout
    assert float(tst[-1][3]) > 0.7, "500 steps of Adam should pass 70% test accuracy"
    assert lines[-1].startswith("[sum] 500 training steps, test accu ")


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_cuda_without_gpu_is_a_one_line_error(mnist_dir):
    r = run("--device", "cuda", "--layers", "3", "--data-dir", str(mnist_dir), timeout=120)
    assert r.returncode != 0
    assert r.stderr.startswith("error: --device cuda: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (("--layers", "0"), "--layers: expected an int >= 1, got 0"),
    (("--lr", "-1"), "--lr: expected a float > 0, got -1.0"),
    (("--device", "tpu"), "argument --device: invalid choice: 'tpu'"),
    (("--backend", "reference", "--device", "cuda"), "--backend reference runs on the CPU only"),
])
def test_bad_flags_are_usage_errors(args, message):
    r = run(*args, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
