"""Train a tanh RNN on MNIST read row by row (28 steps of 28 pixels), as the TensorFlow 1.x tutorial
this project redoes, and print its ``[trn]``/``[tst]`` lines.

    python examples/train_mnist.py                          # 1 layer, on the GPU if there is one
    python examples/train_mnist.py --device cuda --layers 3
    python examples/train_mnist.py --backend reference      # the NumPy reference, for comparison

Lines: ``[trn] ep E, step S, loss L, accu A, sec/iter X`` every 250 steps (mean loss and, as in the
tutorial, the minimum batch accuracy over those steps; sec/iter is the mean wall time of a
training step), ``[tst] ep E, step S, accu A, sec/iter X`` after each epoch (accuracy over the
whole test set, unlike the tutorial's minimum over batches), and a closing ``[sum]`` line. The
step counter advances on test batches too, as in the tutorial.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastrnn
from fastrnn.data import load_mnist

STEPS, INPUTS = 28, 28  # one image row per step
PRINT_EVERY = 250


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when CuPy and a GPU are there, else cpu (default: auto)")
    p.add_argument("--backend", choices=("kernels", "reference"), default="kernels",
                   help="reference runs the NumPy reference on the CPU (default: kernels)")
    p.add_argument("--layers", type=int, default=1, help="stacked RNN layers (default: 1)")
    p.add_argument("--hidden", type=int, default=31, help="hidden units (default: 31)")
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
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        p.error(f"--lr: expected a float > 0, got {args.lr}")
    if args.max_steps is not None and args.max_steps < 1:
        p.error(f"--max-steps: expected an int >= 1, got {args.max_steps}")
    if args.backend == "reference" and args.device == "cuda":
        p.error("--backend reference runs on the CPU only: drop --device cuda")
    return args


def pick_device(requested: str, backend: str) -> str:
    """``cpu`` or ``cuda``; exits with a one-line message when cuda was asked for and is missing."""
    if backend == "reference" or requested == "cpu":
        return "cpu"
    from fastrnn.classifier import _cupy_or_exit_reason

    cupy, reason = _cupy_or_exit_reason()
    if cupy is None and requested == "cuda":
        sys.exit(f"error: --device cuda: {reason}")
    return "cuda" if cupy is not None else "cpu"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device, args.backend)
    mnist = load_mnist(args.data_dir)
    model = fastrnn.RNNClassifier(INPUTS, args.hidden, args.layers, 10, device=device, lr=args.lr,
                                  seed=args.seed,
                                  backend="reference" if args.backend == "reference" else None)
    xp = model.xp
    train_x = xp.asarray(mnist.train.images.reshape(-1, STEPS, INPUTS))
    train_y = xp.asarray(mnist.train.labels)
    test_x = xp.asarray(mnist.test.images.reshape(-1, STEPS, INPUTS))
    test_y = xp.asarray(mnist.test.labels)
    rng = np.random.default_rng(args.seed)
    bs = args.batch_size
    n_batches = mnist.train.num_examples // bs
    print(f"fastrnn {fastrnn.__version__}: {args.layers} layer(s) of {args.hidden}, batch {bs}, "
          f"device {device}, backend {args.backend}, {n_batches} steps per epoch", flush=True)

    step, train_steps, t_start = 0, 0, time.perf_counter()
    all_train_secs, test_acc = [], float("nan")
    losses, accs, secs = [], [], []
    for ep in range(1, args.epochs + 1):
        order = None if args.no_shuffle else xp.asarray(rng.permutation(mnist.train.num_examples))
        for i in range(n_batches):
            sl = slice(i * bs, (i + 1) * bs)
            xb, yb = ((train_x[sl], train_y[sl]) if order is None
                      else (train_x[order[sl]], train_y[order[sl]]))
            t0 = time.perf_counter()
            loss, acc = model.train_step(xb, yb)
            secs.append(time.perf_counter() - t0)
            losses.append(loss)
            accs.append(acc)
            step += 1
            train_steps += 1
            if step % PRINT_EVERY == 0:
                print(f"[trn] ep {ep}, step {step}, loss {np.mean(losses):f}, "
                      f"accu {np.min(accs):f}, sec/iter {np.mean(secs):f}", flush=True)
                all_train_secs += secs
                losses, accs, secs = [], [], []
            if args.max_steps is not None and train_steps >= args.max_steps:
                break
        correct, test_secs = 0.0, []
        for lo in range(0, mnist.test.num_examples, bs):
            t0 = time.perf_counter()
            _, acc = model.evaluate(test_x[lo:lo + bs], test_y[lo:lo + bs])
            test_secs.append(time.perf_counter() - t0)
            correct += acc * len(test_y[lo:lo + bs])
            step += 1
        test_acc = correct / mnist.test.num_examples
        print(f"[tst] ep {ep}, step {step}, accu {test_acc:f}, sec/iter {np.mean(test_secs):f}",
              flush=True)
        if args.max_steps is not None and train_steps >= args.max_steps:
            break
    all_train_secs += secs
    print(f"[sum] {train_steps} training steps, test accu {test_acc:f}, train sec/iter "
          f"{np.median(all_train_secs):f} (median), {time.perf_counter() - t_start:.1f} s in all",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
