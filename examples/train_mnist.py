"""Train a tanh RNN on MNIST read row by row (28 steps of 28 pixels), as the TensorFlow 1.x tutorial
this project redoes, and print its ``[trn]``/``[tst]`` lines.

    python examples/train_mnist.py                          # 1 layer, on the GPU if there is one
    python examples/train_mnist.py --device cuda --layers 3
    python examples/train_mnist.py --backend reference      # the NumPy reference, for comparison
    python examples/train_mnist.py --logdir runs/mnist --plot mnist.png
    python examples/train_mnist.py --epochs 3 --checkpoint-dir ckpt   # stop after 3 epochs...
    python examples/train_mnist.py --checkpoint-dir ckpt --resume     # ...and continue to 10
    mpiexec -n 2 python examples/train_mnist.py --distributed         # data-parallel, MPI

Lines: ``[trn] ep E, step S, loss L, accu A, sec/iter X`` every 250 steps (mean loss and, as in the
tutorial, the minimum batch accuracy over those steps; sec/iter is the mean wall time of a
training step), ``[tst] ep E, step S, accu A, sec/iter X`` after each epoch (accuracy over the
whole test set, unlike the tutorial's minimum over batches), and a closing ``[sum]`` line. The
step counter advances on test batches too, as in the tutorial. Before training, one line says
whether the kernels were compiled (first use) or loaded from Numba's cache, and how long it took.

Optional extras (``pip install -e '.[examples]'``): ``--logdir`` needs tensorboardX, ``--plot``
matplotlib, and the progress bar (on a terminal, unless ``--quiet``) tqdm.

TensorBoard (``DIR/train`` and ``DIR/test``, as the tutorial's two writers, so one
``--logdir DIR`` shows both runs together): ``loss``, ``train_accuracy`` and ``sec/iter`` of every
training step; ``loss``, ``test_accuracy`` and ``sec/iter`` (mean over the test batches) of the
whole test set after each epoch, at the step of its ``[tst]`` line.

Checkpoints (``--checkpoint-dir``): after every complete epoch, model + Adam state + epoch + RNG
state + counters, written atomically (:mod:`fastrnn.checkpoint`); ``--resume`` continues from the
newest and prints exactly the lines an uninterrupted run would (sec/iter aside). A run cut short
by ``--max-steps`` in the middle of an epoch writes no checkpoint for that partial epoch.

Data-parallel (``--distributed``, under ``mpiexec``/``srun``; needs mpi4py: ``pip install -e
'.[mpi]'``): every process holds its share of each global batch (:mod:`fastrnn.distributed`) and
runs ``cores on its node / processes on its node`` Numba threads (with ``--device cuda``: one GPU
per process, gradients through NCCL); rank 0 prints and writes the checkpoints; each process
evaluates the whole test set (no communication). On the CPU the ``[sum]`` line (the SHA-256 of the
final parameters included) is that of a one-process run, bit for bit, and a checkpoint resumes at
any process count that splits the batch; on CUDA the run repeats bit for bit at the same process
count. An error in one process stops them all (``MPI_Abort``) instead of leaving the others
waiting.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

import fastrnn
from fastrnn import distributed
from fastrnn.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from fastrnn.data import load_mnist
from fastrnn.warmup import warmup

STEPS, INPUTS = 28, 28  # one image row per step
PRINT_EVERY = 250
EXTRA = "pip install -e '.[examples]'"
#: run settings a checkpoint must share with the run that resumes from it
RESUME_KEYS = ("layers", "hidden", "batch_size", "lr", "seed", "shuffle")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when CuPy and a GPU are there, else cpu (default: auto)")
    p.add_argument("--backend", choices=("kernels", "reference"), default="kernels",
                   help="reference runs the NumPy reference on the CPU (default: kernels)")
    p.add_argument("--layers", type=int, default=1, help="stacked RNN layers (default: 1)")
    p.add_argument("--hidden", type=int, default=31, help="hidden units (default: 31)")
    p.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh",
                   help="the recurrent layers' activation (default: tanh)")
    p.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    p.add_argument("--epochs", type=int, default=10, help="(default: 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling (default: 0)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the MNIST idx files (default: $FASTRNN_DATA_DIR, then a "
                        "per-user cache, downloading there when missing)")
    p.add_argument("--no-shuffle", action="store_true",
                   help="in-order batches every epoch, as the tutorial (default: reshuffle)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many training steps in all (for smoke tests)")
    p.add_argument("--logdir", metavar="DIR", default=None,
                   help="write TensorBoard event files to DIR/train and DIR/test "
                        f"(needs tensorboardX: {EXTRA})")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="at the end, save learning curves and test digits with their predicted "
                        f"labels to this PNG (needs matplotlib: {EXTRA})")
    p.add_argument("--checkpoint-dir", metavar="DIR", default=None,
                   help="save a checkpoint after every epoch into DIR (atomically)")
    p.add_argument("--keep-checkpoints", type=int, default=3, metavar="K",
                   help="keep the newest K checkpoints (default: 3)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir (from scratch "
                        "when there is none)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of mpiexec/srun (needs mpi4py; with "
                        "--device cuda one GPU per process, NCCL)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (the [trn]/[tst]/[sum] lines are still printed)")
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "batch_size", "epochs", "keep_checkpoints"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if args.seed < 0:
        p.error(f"--seed: expected an int >= 0, got {args.seed}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        p.error(f"--lr: expected a finite float > 0, got {args.lr}")
    if args.max_steps is not None and args.max_steps < 1:
        p.error(f"--max-steps: expected an int >= 1, got {args.max_steps}")
    if args.backend == "reference" and args.device == "cuda":
        p.error("--backend reference runs on the CPU only: drop --device cuda")
    if args.distributed and args.backend == "reference":
        p.error("--distributed runs the CPU or CUDA kernels: drop --backend reference")
    if args.resume and args.checkpoint_dir is None:
        p.error("--resume needs --checkpoint-dir DIR")
    # written after the first epoch, or at the end: refuse a path that cannot be written now
    for flag, path, is_dir in (("--checkpoint-dir", args.checkpoint_dir, True),
                               ("--logdir", args.logdir, True), ("--plot", args.plot, False)):
        if path is not None:
            problem = output_problem(path, is_dir)
            if problem:
                p.error(f"{flag}: {problem}")
    return args


def output_problem(path: str, is_dir: bool) -> str | None:
    """Why the example could not write ``path`` (a directory to create or fill when ``is_dir``,
    else a file), or None: a path of the other kind, one inside a file, or one in a folder where
    this process cannot create anything (tried with a scratch folder, removed at once)."""
    kind = "a directory" if is_dir else "a file"
    target = Path(path)
    if target.exists() and target.is_dir() != is_dir:
        return (f"expected {kind} or a path to create, got {path!r}, which is "
                f"{'not a directory' if is_dir else 'a directory'}")
    folder = target if is_dir else target.parent
    while not folder.exists():  # the nearest existing folder, where the rest would be created
        folder = folder.parent
    if not folder.is_dir():
        return (f"expected {kind} or a path to create, got {path!r}, inside {str(folder)!r}, "
                f"which is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".train_mnist-", dir=folder))
    except OSError as e:
        return (f"expected a path this process can write, got {path!r}: nothing can be created "
                f"in {str(folder)!r} ({e.strerror})")
    return None


def require(module: str, flag: str):
    """``module`` imported, or exit with one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        sys.exit(f"error: {flag} needs {module}, which is not installed: {EXTRA}")


def pick_device(requested: str, backend: str) -> str:
    """``cpu`` or ``cuda``; exits with a one-line message when cuda was asked for and is missing."""
    if backend == "reference" or requested == "cpu":
        return "cpu"
    from fastrnn.classifier import _cupy_or_exit_reason

    cupy, reason = _cupy_or_exit_reason()
    if cupy is None and requested == "cuda":
        sys.exit(f"error: --device cuda: {reason}")
    return "cuda" if cupy is not None else "cpu"


class Progress:
    """A tqdm bar per epoch (loss and sec/iter so far) when enabled; lines go around it."""

    def __init__(self, enabled: bool):
        self.tqdm = None
        if enabled:
            try:
                from tqdm import tqdm

                self.tqdm = tqdm
            except ImportError:
                print(f"(no progress bar: tqdm is not installed: {EXTRA}; --quiet hides this)",
                      file=sys.stderr, flush=True)
        self.bar = None

    def start(self, epoch: int, total: int) -> None:
        if self.tqdm is not None:
            self.bar = self.tqdm(total=total, desc=f"ep {epoch}", unit="step", leave=False,
                                 file=sys.stdout, dynamic_ncols=True, mininterval=0.25)
            self.loss_sum, self.secs_sum, self.n = 0.0, 0.0, 0

    def update(self, loss: float, secs: float) -> None:
        if self.bar is not None:
            self.loss_sum += loss
            self.secs_sum += secs
            self.n += 1
            self.bar.set_postfix_str(f"loss {self.loss_sum / self.n:.4f}, sec/iter "
                                     f"{self.secs_sum / self.n:.6f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def print(self, line: str) -> None:
        if self.bar is not None:
            self.tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(line, flush=True)


class Board:
    """The tutorial's two TensorBoard writers (``DIR/train``, ``DIR/test``), or nothing."""

    def __init__(self, logdir: str | None, purge_step: int | None):
        self.train = self.test = None
        if logdir is not None:
            writer = require("tensorboardX", "--logdir").SummaryWriter
            # purge_step: TensorBoard hides events a crashed run logged past the checkpoint
            self.train = writer(str(Path(logdir) / "train"), purge_step=purge_step)
            self.test = writer(str(Path(logdir) / "test"), purge_step=purge_step)

    def train_step(self, step: int, loss: float, acc: float, secs: float) -> None:
        if self.train is not None:
            self.train.add_scalar("loss", loss, step)
            self.train.add_scalar("train_accuracy", acc, step)
            self.train.add_scalar("sec/iter", secs, step)

    def test_epoch(self, step: int, loss: float, acc: float, secs: float) -> None:
        if self.test is not None:
            self.test.add_scalar("loss", loss, step)
            self.test.add_scalar("test_accuracy", acc, step)
            self.test.add_scalar("sec/iter", secs, step)

    def close(self) -> None:
        for w in (self.train, self.test):
            if w is not None:
                w.close()


def plot(path: str, history: np.ndarray, images: np.ndarray, labels: np.ndarray,
         predicted: np.ndarray, title: str) -> None:
    """Learning curves (train and test loss, test accuracy per epoch) above a grid of test digits
    captioned ``predicted (true)``, wrong ones in red: the first 24 and the first 8 mistakes
    after them. ``history [E,4]``: epoch, train loss, test loss, test accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first, n_wrong = 24, 8
    wrong = np.flatnonzero(predicted != labels)
    show = np.concatenate([np.arange(first), wrong[wrong >= first][:n_wrong]])
    fig = Figure(figsize=(10, 9.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.5])
    ax_loss, ax_acc = top.subplots(1, 2)
    ep = history[:, 0]
    ax_loss.plot(ep, history[:, 1], "o-", label="train (mean over the epoch)")
    ax_loss.plot(ep, history[:, 2], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.legend()
    ax_acc.plot(ep, history[:, 3], "o-", color="C2")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="test accuracy (10,000 digits)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if len(ep) <= 20:
            ax.set_xticks(ep)
    top.suptitle(title)
    axes = bottom.subplots(4, 8)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, show):
        bad = predicted[i] != labels[i]
        ax.imshow(images[i].reshape(STEPS, INPUTS), cmap="gray_r")
        ax.set_title(f"{predicted[i]} ({labels[i]})" + (" ✗" if bad else ""), fontsize=9,
                     color="red" if bad else "black")
        if bad:
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color="red", linewidth=2)
    bottom.suptitle(f"test digits: predicted (true); the first {first}, then the first "
                    f"{n_wrong} mistakes after them, in red")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, path)


def start_distributed():
    """``MPI.COMM_WORLD``, with this process's Numba threads set to its share of its node's
    cores, and stdout silenced on ranks other than 0."""
    MPI = require("mpi4py.MPI", "--distributed")
    import numba

    comm = MPI.COMM_WORLD
    on_node = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS,
                                     (os.cpu_count() or 1) // on_node)))
    if comm.Get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    return comm


def params_digest(model) -> str:
    """The first 16 hex digits of the SHA-256 of the model's parameters (on the host)."""
    params = model.params.get() if hasattr(model.params, "get") else model.params
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()[:16]


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.distributed:
        return train(args, None)
    comm = start_distributed()
    try:
        return train(args, comm)
    except BaseException as e:  # SystemExit included: the others would wait for this one
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        sys.stderr.write(f"rank {comm.Get_rank()}: ")
        if isinstance(e, SystemExit):  # sys.exit("error: ...") and the like: the message
            sys.stderr.write(f"{e.code}\n")
        else:
            traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)


def train(args, comm) -> int:
    """The training run of :func:`main` (``comm``: data-parallel over its processes)."""
    # missing extras: fail now, in one line, not after an hour of training
    if args.logdir is not None:
        require("tensorboardX", "--logdir")
    if args.plot is not None:
        require("matplotlib", "--plot")
    config = {"layers": args.layers, "hidden": args.hidden, "batch_size": args.batch_size,
              **({} if args.nonlinearity == "tanh" else {"nonlinearity": args.nonlinearity}),
              "lr": args.lr, "seed": args.seed, "shuffle": not args.no_shuffle}
    device = pick_device(args.device, args.backend)
    backend = "reference" if args.backend == "reference" else None

    ckpt = None
    if args.checkpoint_dir is not None:
        newest = latest_checkpoint(args.checkpoint_dir)
        if newest is not None and not args.resume:
            sys.exit(f"error: {newest} exists: pass --resume to continue from it, or use another "
                     f"--checkpoint-dir")
        if newest is not None:
            try:
                ckpt = load_checkpoint(newest, config=config, device=device, backend=backend,
                                       comm=comm)
                missing = {"step", "train_steps", "losses", "accs", "secs", "history"} - set(
                    ckpt.state)
                if missing or ckpt.rng_state is None:
                    raise CheckpointError(f"{newest}: not written by this example (no "
                                          f"{', '.join(sorted(missing)) or 'RNG state'})")
            except CheckpointError as e:
                older = [p.name for _, p in list_checkpoints(args.checkpoint_dir)[:-1]]
                hint = f" (remove it to resume from {older[-1]})" if older else ""
                sys.exit(f"error: {e}{hint}")
        elif args.resume:
            print(f"no checkpoint in {args.checkpoint_dir}: starting from scratch", flush=True)

    try:
        mnist = load_mnist(args.data_dir)
    except (OSError, ValueError) as e:  # missing or damaged files, a failed download
        sys.exit(f"error: MNIST: {e}")
    if args.batch_size > mnist.train.num_examples:
        sys.exit(f"error: --batch-size: expected an int <= {mnist.train.num_examples} (the "
                 f"training images), got {args.batch_size}")
    rows = slice(None)  # this process's rows of each batch
    if comm is not None:
        why = distributed.world_problem(args.batch_size, comm.Get_size(), device)
        if why is not None:
            sys.exit(f"error: --distributed on {comm.Get_size()} processes: --batch-size "
                     f"{args.batch_size}: {why}")
        rows = distributed.shard(args.batch_size, comm, device)
    if ckpt is None:
        try:  # sizes the library refuses (too many parameters, more than the memory): one line
            model = fastrnn.RNNClassifier(INPUTS, args.hidden, args.layers, 10, device=device,
                                          lr=args.lr, seed=args.seed, backend=backend, comm=comm,
                                          nonlinearity=args.nonlinearity)
        except (ValueError, TypeError, MemoryError) as e:
            sys.exit(f"error: cannot build the model: {e or type(e).__name__}")
        rng = np.random.default_rng(args.seed)
        first_epoch, step, train_steps = 1, 0, 0
        losses, accs, secs, history = [], [], [], np.zeros((0, 4))
    else:
        model, rng, s = ckpt.model, ckpt.rng(), ckpt.state
        first_epoch, step, train_steps = ckpt.epoch + 1, int(s["step"]), int(s["train_steps"])
        losses, accs, secs = list(s["losses"]), list(s["accs"]), list(s["secs"])
        history = s["history"]
    xp = model.xp
    train_x = xp.asarray(mnist.train.images.reshape(-1, STEPS, INPUTS))
    train_y = xp.asarray(mnist.train.labels)
    test_x = xp.asarray(mnist.test.images.reshape(-1, STEPS, INPUTS))
    test_y = xp.asarray(mnist.test.labels)
    bs = args.batch_size
    n_batches = mnist.train.num_examples // bs
    where = "" if comm is None else f", {comm.Get_size()} processes"
    act = "" if args.nonlinearity == "tanh" else f" ({args.nonlinearity})"
    print(f"fastrnn {fastrnn.__version__}: {args.layers} layer(s) of {args.hidden}{act}, "
          f"batch {bs}, device {device}, backend {args.backend}{where}, {n_batches} steps per "
          f"epoch", flush=True)
    if ckpt is not None:
        print(f"resuming from {ckpt.path} (epoch {ckpt.epoch}, step {step})", flush=True)
    if backend is None:  # the one-time compile, announced instead of hidden in the first step
        print(f"preparing {device.upper()} kernels… ", end="", flush=True)
        print(warmup(device, functional=False).outcome(), flush=True)

    progress = Progress(enabled=not args.quiet and sys.stdout.isatty())
    board = Board(args.logdir, purge_step=step + 1 if ckpt is not None else None)
    t_start = time.perf_counter()
    all_train_secs = []
    test_acc = float(history[-1, 3]) if len(history) else float("nan")
    done = args.max_steps is not None and train_steps >= args.max_steps
    for ep in range(first_epoch, args.epochs + 1):
        if done:
            break
        order = None if args.no_shuffle else xp.asarray(rng.permutation(mnist.train.num_examples))
        ep_losses = []
        progress.start(ep, n_batches)
        for i in range(n_batches):
            sl = slice(i * bs, (i + 1) * bs)
            xb, yb = ((train_x[sl], train_y[sl]) if order is None
                      else (train_x[order[sl]], train_y[order[sl]]))
            t0 = time.perf_counter()
            loss, acc = model.train_step(xb[rows], yb[rows])
            dt = time.perf_counter() - t0
            secs.append(dt)
            losses.append(loss)
            accs.append(acc)
            ep_losses.append(loss)
            step += 1
            train_steps += 1
            board.train_step(step, loss, acc, dt)
            progress.update(loss, dt)
            if step % PRINT_EVERY == 0:
                progress.print(f"[trn] ep {ep}, step {step}, loss {np.mean(losses):f}, "
                               f"accu {np.min(accs):f}, sec/iter {np.mean(secs):f}")
                all_train_secs += secs
                losses, accs, secs = [], [], []
            if args.max_steps is not None and train_steps >= args.max_steps:
                done = True
                break
        progress.close()
        complete = len(ep_losses) == n_batches
        correct, loss_sum, test_secs = 0.0, 0.0, []
        for lo in range(0, mnist.test.num_examples, bs):
            t0 = time.perf_counter()
            b_loss, acc = model.evaluate(test_x[lo:lo + bs], test_y[lo:lo + bs])
            test_secs.append(time.perf_counter() - t0)
            n = len(test_y[lo:lo + bs])
            correct += acc * n
            loss_sum += b_loss * n
            step += 1
        test_acc = correct / mnist.test.num_examples
        test_loss = loss_sum / mnist.test.num_examples
        progress.print(f"[tst] ep {ep}, step {step}, accu {test_acc:f}, "
                       f"sec/iter {np.mean(test_secs):f}")
        board.test_epoch(step, test_loss, test_acc, float(np.mean(test_secs)))
        history = np.concatenate([history, [[ep, np.mean(ep_losses), test_loss, test_acc]]])
        if args.checkpoint_dir is not None and complete:
            save_checkpoint(args.checkpoint_dir, model, ep, rng=rng, config=config,
                            keep=args.keep_checkpoints,
                            state={"step": step, "train_steps": train_steps,
                                   "losses": np.array(losses, dtype=np.float64),
                                   "accs": np.array(accs, dtype=np.float64),
                                   "secs": np.array(secs, dtype=np.float64),
                                   "history": history})
        elif args.checkpoint_dir is not None:
            print(f"(epoch {ep} stopped by --max-steps after {len(ep_losses)} of {n_batches} "
                  f"steps: no checkpoint for it)", flush=True)
    board.close()
    all_train_secs += secs
    status = 0
    if args.plot is not None and len(history):  # last: the checkpoint and logs are written
        n_show = min(2048, mnist.test.num_examples)
        predicted = model.predict(test_x[:n_show]).argmax(axis=1)
        predicted = predicted.get() if hasattr(predicted, "get") else predicted
        try:
            plot(args.plot, history, mnist.test.images[:n_show], mnist.test.labels[:n_show],
                 np.asarray(predicted),
                 f"fastrnn on MNIST: {args.layers} layer(s) of {args.hidden}, batch {bs}, "
                 f"Adam {args.lr:g}, {device}")
        except OSError as e:  # the run's results still get their [sum] line
            print(f"error: --plot: could not write {args.plot!r}: {e}", file=sys.stderr,
                  flush=True)
            status = 1
    median = f"{np.median(all_train_secs):f}" if all_train_secs else "nan"
    print(f"[sum] {train_steps} training steps, test accu {test_acc:f}, params sha256 "
          f"{params_digest(model)}, train sec/iter "
          f"{median} (median), {time.perf_counter() - t_start:.1f} s in all", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
