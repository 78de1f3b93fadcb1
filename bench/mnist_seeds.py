"""The example's final test accuracy over initialisation seeds: the spread behind the README's
accuracy figures (not a timing).

    python bench/mnist_seeds.py --layers 1 --seeds 0-19 --threshold 0.915   # ~25 s on 2 cores
    python bench/mnist_seeds.py --layers 3 --seeds 0-19 --threshold 0.96    # ~50 s

Each seed is one run of ``examples/train_mnist.py --device cpu --no-shuffle`` (the tutorial's
in-order batches, 10 epochs) on one Numba thread, ``--jobs`` runs at a time; the accuracy is its
``[sum]`` line's (the whole 10,000-image test set). Prints one line per seed, then the mean, its
standard error, the range and, with ``--threshold``, how many seeds reach it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"
SUM = re.compile(r"^\[sum\] (\d+) training steps, test accu (\d\.\d+),", re.MULTILINE)


def seeds(text: str) -> list[int]:
    """``"0-19"`` or ``"0,3,7"`` (or both, comma-separated) as a list of seeds."""
    out = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            out += range(int(first), int(last or first) + 1)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected seeds like 0-19 or 0,3,7, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one seed, got {text!r}")
    return out


def accuracy(seed: int, args: argparse.Namespace) -> float:
    """Test accuracy of one run of the example at ``seed``."""
    cmd = [sys.executable, str(EXAMPLE), "--device", "cpu", "--no-shuffle", "--quiet",
           "--layers", str(args.layers), "--seed", str(seed), "--epochs", str(args.epochs)]
    if args.max_steps is not None:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.data_dir is not None:
        cmd += ["--data-dir", args.data_dir]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    m = SUM.search(r.stdout)
    if r.returncode != 0 or m is None:
        sys.exit(f"error: seed {seed}: the example failed ({r.returncode}): "
                 f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return float(m[2])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--seeds", type=seeds, default=seeds("0-19"), help="e.g. 0-19 (default)")
    p.add_argument("--threshold", type=float, default=None,
                   help="count the seeds whose accuracy reaches this")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs: expected an integer >= 1, got {args.jobs}")
    with ThreadPoolExecutor(args.jobs) as pool:
        accs = list(pool.map(lambda s: accuracy(s, args), args.seeds))
    for s, a in zip(args.seeds, accs):
        print(f"seed {s:3d}: test accu {a:.4f}")
    n = len(accs)
    se = statistics.stdev(accs) / n**0.5 if n > 1 else float("nan")
    line = (f"{args.layers} layer(s), {n} seeds: mean {statistics.fmean(accs):.4f}, standard "
            f"error {se:.4f}, range {min(accs):.4f}-{max(accs):.4f}")
    if args.threshold is not None:
        line += f", {sum(a >= args.threshold for a in accs)} of {n} at {args.threshold} or more"
    print(line)


if __name__ == "__main__":
    main()
