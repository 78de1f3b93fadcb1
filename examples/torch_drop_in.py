"""A PyTorch training loop where ``torch.nn.RNN`` is swapped for ``fastrnn.torch.RNN`` by one flag.

MNIST read row by row (28 steps of 28 pixels) into an RNN, its last output into a Linear layer,
cross-entropy, Adam. Both implementations start from the same weights (a ``nn.RNN`` initialised
under ``--seed``, copied with ``load_state_dict``) and see the same batches, so their loss curves
agree to float32 rounding; the closing lines give each one's sec/iter.

    python examples/torch_drop_in.py                       # both, one after the other, and compare
    python examples/torch_drop_in.py --rnn fastrnn         # only the drop-in
    python examples/torch_drop_in.py --synthetic --layers 3 --steps 100

The swap itself is the one line in :func:`make_rnn`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

STEPS, INPUTS, CLASSES = 28, 28, 10


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rnn", choices=("both", "torch", "fastrnn"), default="both",
                   help="torch: nn.RNN; fastrnn: fastrnn.torch.RNN; both: run each, compare "
                        "(default: both)")
    p.add_argument("--synthetic", action="store_true",
                   help="random class prototypes plus noise instead of MNIST (no download)")
    p.add_argument("--layers", type=int, default=1, help="stacked RNN layers (default: 1)")
    p.add_argument("--hidden", type=int, default=31, help="hidden units (default: 31)")
    p.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="weights and batch order (default: 0)")
    p.add_argument("--print-every", type=int, default=25, help="(default: 25)")
    p.add_argument("--data-dir", default=None, help="MNIST folder (see fastrnn.data.load_mnist)")
    p.add_argument("--backend", choices=("cpu", "reference"), default=None,
                   help="fastrnn backend (default: by the tensors' device)")
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "batch_size", "steps", "print_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    return args


def load_data(args) -> tuple[np.ndarray, np.ndarray]:
    """Training images ``[N, 28, 28]`` float32 and labels ``[N]`` int64."""
    if args.synthetic:
        rng = np.random.default_rng(1234)
        protos = rng.random((CLASSES, STEPS, INPUTS), dtype=np.float32)
        labels = rng.integers(0, CLASSES, 8192)
        noise = rng.standard_normal((len(labels), STEPS, INPUTS), dtype=np.float32)
        return protos[labels] + 0.5 * noise, labels
    from fastrnn.data import load_mnist

    train = load_mnist(args.data_dir).train
    return train.images.reshape(-1, STEPS, INPUTS), train.labels


def make_rnn(kind: str, args) -> torch.nn.Module:
    """nn.RNN's initialisation under ``--seed``; for fastrnn the same weights in the drop-in."""
    torch.manual_seed(args.seed)
    rnn = torch.nn.RNN(INPUTS, args.hidden, args.layers, batch_first=True)
    if kind == "fastrnn":
        import fastrnn.torch

        fast = fastrnn.torch.RNN(INPUTS, args.hidden, args.layers, batch_first=True,
                                 backend=args.backend)  # <- the swap
        fast.load_state_dict(rnn.state_dict())
        rnn = fast
    return rnn


def train(kind: str, args, images: np.ndarray, labels: np.ndarray) -> tuple[list[float], float]:
    """Run ``--steps`` Adam steps; returns the loss of each step and the mean sec/iter."""
    rnn = make_rnn(kind, args)
    torch.manual_seed(args.seed + 1)
    head = torch.nn.Linear(args.hidden, CLASSES)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=args.lr)
    order = np.random.default_rng(args.seed).permutation(len(labels))
    n_batches = len(labels) // args.batch_size
    losses, seconds = [], 0.0
    for step in range(args.steps):
        idx = order[(step % n_batches) * args.batch_size:][:args.batch_size]
        x, y = torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(head(rnn(x)[0][:, -1]), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step > 0:  # step 0 pays Numba's compile (or cache load): not a steady-state step
            seconds += time.perf_counter() - t0
    return losses, seconds / max(1, args.steps - 1)


def main(argv=None) -> None:
    args = parse_args(argv)
    images, labels = load_data(args)
    kinds = ["torch", "fastrnn"] if args.rnn == "both" else [args.rnn]
    names = {"torch": "nn.RNN", "fastrnn": "fastrnn.torch.RNN"}
    results = {k: train(k, args, images, labels) for k in kinds}
    print(f"{'step':>6}" + "".join(f"{names[k]:>20}" for k in kinds)
          + ("     |diff|" if len(kinds) == 2 else ""))
    for s in range(0, args.steps, args.print_every):
        row = [float(np.mean(results[k][0][s:s + args.print_every])) for k in kinds]
        print(f"{s:>6}" + "".join(f"{v:>20.6f}" for v in row)
              + (f"{abs(row[0] - row[1]):>11.2e}" if len(kinds) == 2 else ""))
    for k in kinds:
        print(f"[sum] {names[k]}: {results[k][1] * 1e3:.2f} ms/iter, "
              f"final loss {results[k][0][-1]:.4f}")
    if len(kinds) == 2:
        print(f"[sum] speedup of fastrnn.torch.RNN over nn.RNN: "
              f"{results['torch'][1] / results['fastrnn'][1]:.2f}x "
              f"(torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
