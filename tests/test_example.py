"""examples/train_mnist.py as a user runs it: the seed-style lines, and clean failures."""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import os
import pty
import re
import shlex
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
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
    (("--lr", "-1"), "--lr: expected a finite float > 0, got -1.0"),
    (("--device", "tpu"), "argument --device: invalid choice: 'tpu'"),
    (("--backend", "reference", "--device", "cuda"), "--backend reference runs on the CPU only"),
    (("--resume",), "--resume needs --checkpoint-dir DIR"),
    (("--keep-checkpoints", "0"), "--keep-checkpoints: expected an int >= 1, got 0"),
    (("--seed", "-1"), "--seed: expected an int >= 0, got -1"),
    # output paths refused at once, not by an OSError after the first epoch or the last one
    (("--checkpoint-dir", str(EXAMPLE)),
     f"--checkpoint-dir: expected a directory or a path to create, got '{EXAMPLE}', which is "
     f"not a directory"),
    (("--checkpoint-dir", f"{EXAMPLE}/sub"),
     f"--checkpoint-dir: expected a directory or a path to create, got '{EXAMPLE}/sub', inside "
     f"'{EXAMPLE}', which is not a directory"),
    (("--logdir", str(EXAMPLE)),
     f"--logdir: expected a directory or a path to create, got '{EXAMPLE}', which is not a "
     f"directory"),
    (("--logdir", f"{EXAMPLE}/runs/a"),
     f"--logdir: expected a directory or a path to create, got '{EXAMPLE}/runs/a', inside "
     f"'{EXAMPLE}', which is not a directory"),
    (("--plot", str(EXAMPLE.parent)),
     f"--plot: expected a file or a path to create, got '{EXAMPLE.parent}', which is a "
     f"directory"),
    (("--plot", f"{EXAMPLE}/curves.png"),
     f"--plot: expected a file or a path to create, got '{EXAMPLE}/curves.png', inside "
     f"'{EXAMPLE}', which is not a directory"),
])
def test_bad_flags_are_usage_errors(args, message):
    r = run(*args, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"train_mnist.py: error: {message}"), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc (unwritable to all)")
@pytest.mark.parametrize("flag", ["--checkpoint-dir", "--logdir", "--plot"])
def test_unwritable_output_paths_are_usage_errors(flag):
    """A place where nothing can be created (even by root): /proc."""
    r = run(flag, "/proc/fastrnn/out", timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert re.fullmatch(rf"train_mnist\.py: error: {flag}: expected a path this process can "
                        r"write, got '/proc/fastrnn/out': nothing can be created in '/proc' "
                        r"\(.+\)", r.stderr.splitlines()[-1]), r.stderr
    assert "Traceback" not in r.stderr


def test_a_plot_that_fails_loses_no_results(mnist_dir, tmp_path, monkeypatch, capsys):
    """The checkpoint and the [sum] line come first: a --plot that fails to be written (past
    the checks at the start: a full disk, a folder removed meanwhile) is one error line and exit
    status 1, not a traceback that ends the run without its results."""
    pytest.importorskip("matplotlib")

    def plot(path, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(example(), "plot", plot)
    status = example().main(["--device", "cpu", "--epochs", "1", "--max-steps", "30",
                             "--data-dir", str(mnist_dir), "--checkpoint-dir",
                             str(tmp_path / "ckpt"), "--plot", str(tmp_path / "curves.png"),
                             "--quiet"])
    out, err = capsys.readouterr()
    assert status == 1
    assert err == (f"error: --plot: could not write '{tmp_path / 'curves.png'}': [Errno 28] No "
                   f"space left on device\n")
    assert out.splitlines()[-1].startswith("[sum] 30 training steps, test accu ")
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("args, message", [
    # more than the 55,000 training images: no step in any epoch
    (("--batch-size", "55001"),
     "error: --batch-size: expected an int <= 55000 (the training images), got 55001"),
    (("--hidden", "1000000"), "error: cannot build the model: hidden_size: expected a parameter "
                              "count <= 2147483647 (32-bit kernel indexing), got "),
])
def test_sizes_refused_after_loading_are_one_line_errors(mnist_dir, tmp_path, args, message):
    r = run("--device", "cpu", "--epochs", "1", "--max-steps", "5", "--data-dir", str(mnist_dir),
            "--checkpoint-dir", str(tmp_path / "ckpt"), *args, timeout=120)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


def test_missing_or_damaged_mnist_is_a_one_line_error(mnist_dir, tmp_path, monkeypatch):
    for where in (tmp_path / "nowhere", EXAMPLE):  # missing, and a file
        msg = exit_message(["--device", "cpu", "--data-dir", where])
        assert msg == f"error: MNIST: data_dir must be an existing directory, got '{where}'", msg
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(tmp_path / "nowhere"))
    msg = exit_message(["--device", "cpu"])
    assert msg == (f"error: MNIST: $FASTRNN_DATA_DIR must be an existing directory, got "
                   f"{str(tmp_path / 'nowhere')!r}"), msg
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(mnist_dir))  # --data-dir is looked in first
    damaged = tmp_path / "damaged"
    shutil.copytree(mnist_dir, damaged)
    images = damaged / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:1000])
    msg = exit_message(["--device", "cpu", "--data-dir", damaged])
    assert msg.startswith(f"error: MNIST: {images}: damaged gzip file"), msg


def test_model_larger_than_memory_is_a_one_line_error(mnist_dir, monkeypatch):
    import fastrnn._validate

    monkeypatch.setattr(fastrnn._validate, "total_memory", lambda xp: 2**30)  # a 1 GiB machine
    msg = exit_message(["--device", "cpu", "--hidden", "8000", "--data-dir", mnist_dir])
    assert msg.startswith("error: cannot build the model: hidden_size: expected sizes whose "
                          "arrays and workspaces fit in 1.0 GiB of memory, got "), msg


# -- the features of issue 6: TensorBoard, progress bar, plot, checkpoints, first-run line -------

#: The README's "Training example" commands, run verbatim below (cwd: a fresh folder; the script's
#: path made absolute; MNIST through $FASTRNN_DATA_DIR as the README says).
README_TRAIN = "python examples/train_mnist.py --logdir runs/mnist --plot examples/mnist.png"
README_STOP = "python examples/train_mnist.py --epochs 3 --checkpoint-dir ckpt"
README_RESUME = "python examples/train_mnist.py --checkpoint-dir ckpt --resume"
EXTRA_HINT = "pip install -e '.[examples]'"


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run_readme(command: str, cwd: Path, mnist_dir: Path, drop: tuple = ()):
    """One README command in ``cwd``; ``drop``: flags (with their value) left out."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "examples/train_mnist.py"], command
    rest = argv[2:]
    for flag in drop:
        i = rest.index(flag)
        del rest[i:i + 2]
    env = os.environ | {"PYTHONUNBUFFERED": "1", "FASTRNN_DATA_DIR": str(mnist_dir)}
    r = subprocess.run([sys.executable, str(EXAMPLE), *rest], capture_output=True, text=True,
                       timeout=600, env=env, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def results(stdout: str) -> list[str]:
    """The [trn]/[tst] lines without their timings: what a resumed run must reproduce."""
    return [line.split(", sec/iter")[0] for line in stdout.splitlines()
            if line.startswith(("[trn]", "[tst]"))]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, mnist_dir):
    """README_TRAIN: 10 epochs, default settings, uninterrupted (without --logdir/--plot when
    their extras are missing: the tests of those features skip, the resume test still runs)."""
    cwd = tmp_path_factory.mktemp("straight")
    drop = () if have("tensorboardX") and have("matplotlib") else ("--logdir", "--plot")
    return cwd, run_readme(README_TRAIN, cwd, mnist_dir, drop)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, mnist_dir):
    """README_STOP then README_RESUME: 3 epochs, a new process, 7 more."""
    cwd = tmp_path_factory.mktemp("resumed")
    return cwd, run_readme(README_STOP, cwd, mnist_dir), run_readme(README_RESUME, cwd, mnist_dir)


def test_resumed_run_reproduces_the_uninterrupted_one(straight, resumed):
    cwd, first, second = resumed
    full = results(straight[1].stdout)
    assert full[5].startswith("[tst] ep 3, step 1524, ") and len(full) == 21  # 11 [trn], 10 [tst]
    assert full[-1].startswith("[tst] ep 10, step 5080, accu ")
    # the split is mid-window: epoch 4's first [trn] line (step 1750) averages steps of epoch 3
    assert results(first.stdout) == full[:6]
    assert "resuming from ckpt/epoch-0003.npz (epoch 3, step 1524)" in second.stdout
    assert results(second.stdout) == full[6:]
    summary = [r.stdout.splitlines()[-1].split(", train sec/iter")[0]
               for r in (straight[1], second)]
    assert summary[0] == summary[1] and summary[0].startswith("[sum] 4290 training steps, ")
    assert sorted(p.name for p in (cwd / "ckpt").iterdir()) == [
        "epoch-0008.npz", "epoch-0009.npz", "epoch-0010.npz"]  # --keep-checkpoints 3


def test_plain_output_when_not_a_tty(straight):
    lines = straight[1].stdout.splitlines()
    assert "\r" not in straight[1].stdout and "step/s" not in straight[1].stdout  # no bar
    assert lines[0].startswith("fastrnn ") and lines[-1].startswith("[sum] ")
    assert re.fullmatch(r"preparing (CPU|CUDA) kernels… (compiled in \d+\.\d s \(first use; "
                        r"cached for later runs\)|loaded from cache in \d+\.\d s|ready in .*)",
                        lines[1]), lines[1]
    for line in lines[2:-1]:
        assert TRN.match(line) or TST.match(line), line


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value)]`` from the TFRecord event files in ``folder``, parsed here:
    records of u64 length, u32 CRC, an ``Event`` protobuf (tensorboardX's classes), u32 CRC."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for f in files:
        data, pos = f.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars


def test_tensorboard_scalars(straight):
    pytest.importorskip("tensorboardX", reason=f"--logdir needs tensorboardX ({EXTRA_HINT})")
    cwd, r = straight
    train, test = read_scalars(cwd / "runs/mnist/train"), read_scalars(cwd / "runs/mnist/test")
    assert set(train) == {"loss", "train_accuracy", "sec/iter"}
    assert set(test) == {"loss", "test_accuracy", "sec/iter"}
    # every training step, numbered as the printed lines number them (test batches count too)
    expected_steps = [ep * 508 + i for ep in range(10) for i in range(1, 430)]
    for tag in train:
        assert [s for s, _ in train[tag]] == expected_steps, tag
    assert all(v > 0 for _, v in train["sec/iter"]) and all(v > 0 for _, v in test["sec/iter"])
    loss, acc = dict(train["loss"]), dict(train["train_accuracy"])
    # each [trn] line is the mean loss / min accuracy of the steps logged since the last one
    previous = 0
    for m in filter(None, map(TRN.match, r.stdout.splitlines())):
        step = int(m[2])
        window = [s for s in expected_steps if previous < s <= step]
        assert abs(np.mean([loss[s] for s in window]) - float(m[3])) < 2e-6, m[0]
        assert f"{min(acc[s] for s in window):f}" == m[4], m[0]
        previous = step
    tst = [m for m in map(TST.match, r.stdout.splitlines()) if m]
    assert [s for s, _ in test["test_accuracy"]] == [int(m[2]) for m in tst] == [
        508 * (ep + 1) for ep in range(10)]
    assert [f"{v:.6f}" for _, v in test["test_accuracy"]] == [m[3] for m in tst]
    assert [s for s, _ in test["loss"]] == [int(m[2]) for m in tst]
    test_loss = [v for _, v in test["loss"]]
    assert test_loss[-1] < test_loss[0] < 2.3


def test_plot_is_a_png_of_curves_and_digits(straight):
    pytest.importorskip("matplotlib", reason=f"--plot needs matplotlib ({EXTRA_HINT})")
    from matplotlib.image import imread

    png = straight[0] / "examples/mnist.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 2_000_000, len(data)
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (800, 760)
    img = imread(png)[..., :3]
    assert img.std() > 0.1, "a blank picture"
    red = (img[..., 0] > 0.8) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.sum() > 500, "the mistakes are not marked in red"


def run_on_tty(*args: str, env=None) -> tuple[int, str]:
    """Run the example with its stdout on a pseudo-terminal of 120 columns; (rc, what it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    p = subprocess.Popen([sys.executable, str(EXAMPLE), *args], stdout=slave,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=os.environ | (env or {}))
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    rc = p.wait(timeout=300)
    assert p.stderr.read() == b""
    return rc, b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_tty_and_not_under_quiet(mnist_dir, quiet):
    if not quiet:
        pytest.importorskip("tqdm", reason=f"the progress bar needs tqdm ({EXTRA_HINT})")
    rc, out = run_on_tty("--device", "cpu", "--epochs", "1", "--max-steps", "300",
                         "--no-shuffle", "--data-dir", str(mnist_dir), *(["--quiet"] * quiet))
    assert rc == 0, out
    bar = re.search(r"\rep 1: +\d+%\|.*\| \d+/429 \[.*, loss \d\.\d{4}, sec/iter \d\.\d{6}\]", out)
    assert (bar is None) == quiet, out
    assert ("\r" in out) != quiet, out
    # what the terminal shows after the bar has gone: the seed-style lines, intact
    shown = [line.rsplit("\r", 1)[-1] for line in out.splitlines()]
    assert [line for line in shown if line.startswith("[")] == [
        line for line in shown if TRN.match(line) or TST.match(line) or line.startswith("[sum]")]
    assert [m[2] for m in map(TRN.match, shown) if m] == ["250"]
    assert [m[2] for m in map(TST.match, shown) if m] == ["379"]


@pytest.mark.parametrize("module, flag", [("tensorboardX", "--logdir"), ("matplotlib", "--plot")])
def test_missing_extra_is_a_one_line_error(tmp_path, module, flag):
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; "
            f"sys.argv = ['train_mnist.py', {flag!r}, 'out']; "
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr == f"error: {flag} needs {module}, which is not installed: {EXTRA_HINT}\n"
    assert list(tmp_path.iterdir()) == []  # failed before training, wrote nothing


@functools.cache
def example():
    """examples/train_mnist.py as a module, for in-process runs of ``main``."""
    spec = importlib.util.spec_from_file_location("train_mnist_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_tqdm_on_a_tty_is_a_hint_not_an_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    progress = example().Progress(enabled=True)
    progress.start(1, 10)
    progress.update(0.5, 0.001)
    progress.print("[tst] ep 1, step 10, accu 0.500000, sec/iter 0.000100")
    progress.close()
    out, err = capsys.readouterr()
    assert out == "[tst] ep 1, step 10, accu 0.500000, sec/iter 0.000100\n"
    assert err == f"(no progress bar: tqdm is not installed: {EXTRA_HINT}; --quiet hides this)\n"


def exit_message(argv) -> str:
    """The one-line ``sys.exit`` message of an in-process run of the example."""
    with pytest.raises(SystemExit) as e:
        example().main([str(a) for a in argv])
    assert isinstance(e.value.code, str) and "\n" not in e.value.code, e.value.code
    return e.value.code


@pytest.fixture
def ckpt_copy(resumed, tmp_path):
    """A copy of the README run's checkpoint folder (epochs 8, 9, 10)."""
    return Path(shutil.copytree(resumed[0] / "ckpt", tmp_path / "ckpt"))


@pytest.mark.parametrize("flags, difference", [
    (("--layers", "2"), "layers 1 (this run 2)"),
    (("--hidden", "16"), "hidden 31 (this run 16)"),
    (("--batch-size", "64"), "batch_size 128 (this run 64)"),
    (("--lr", "0.01"), "lr 0.001 (this run 0.01)"),
    (("--seed", "1"), "seed 0 (this run 1)"),
    (("--no-shuffle",), "shuffle True (this run False)"),
])
def test_resume_with_another_configuration_is_refused(ckpt_copy, mnist_dir, flags, difference):
    msg = exit_message(["--checkpoint-dir", ckpt_copy, "--resume", "--data-dir", mnist_dir,
                        *flags])
    assert msg.startswith(f"error: {ckpt_copy}/epoch-0010.npz: checkpoint of another "
                          f"configuration: {difference}"), msg


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_resume_from_a_damaged_checkpoint_names_it(ckpt_copy, mnist_dir, damage):
    newest = ckpt_copy / "epoch-0010.npz"
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01  # inside the weights or Adam moments
    newest.write_bytes(bytes(data))
    msg = exit_message(["--checkpoint-dir", ckpt_copy, "--resume", "--data-dir", mnist_dir])
    assert msg.startswith(f"error: {newest}: damaged checkpoint, cannot be read ("), msg
    assert msg.endswith("(remove it to resume from epoch-0009.npz)"), msg


def test_existing_checkpoints_need_resume(ckpt_copy, mnist_dir):
    msg = exit_message(["--checkpoint-dir", ckpt_copy, "--data-dir", mnist_dir])
    assert msg == (f"error: {ckpt_copy}/epoch-0010.npz exists: pass --resume to continue from "
                   f"it, or use another --checkpoint-dir")


def test_mismatch_is_one_line_on_stderr(ckpt_copy, mnist_dir):
    r = run("--checkpoint-dir", str(ckpt_copy), "--resume", "--hidden", "16", "--data-dir",
            str(mnist_dir), timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {ckpt_copy}/epoch-0010.npz: checkpoint of another "), \
        r.stderr


def test_resume_without_checkpoint_starts_fresh_and_partial_epochs_are_not_saved(
        tmp_path, mnist_dir, capsys):
    assert example().main(["--device", "cpu", "--epochs", "1", "--max-steps", "5", "--resume",
                           "--checkpoint-dir", str(tmp_path), "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert f"no checkpoint in {tmp_path}: starting from scratch\n" in out
    assert "(epoch 1 stopped by --max-steps after 5 of 429 steps: no checkpoint for it)\n" in out
    assert list(tmp_path.iterdir()) == []


def test_resume_from_a_checkpoint_the_example_did_not_write(tmp_path, mnist_dir):
    import fastrnn
    from fastrnn.checkpoint import save_checkpoint

    config = {"layers": 1, "hidden": 31, "batch_size": 128, "lr": 1e-3, "seed": 0,
              "shuffle": True}
    path = save_checkpoint(tmp_path, fastrnn.RNNClassifier(), 1, config=config)
    msg = exit_message(["--checkpoint-dir", tmp_path, "--resume", "--data-dir", mnist_dir])
    assert msg == (f"error: {path}: not written by this example (no accs, history, losses, secs, "
                   f"step, train_steps)")
