"""PyTorch trained from fastrnn's initial weights on the same in-order MNIST batches: the accuracy
a framework reaches from the same start, for the README's results table (not a timing).

    python bench/mnist_accuracy_torch.py --layers 1 --seed 0      # needs torch (the bench extra)
"""

from __future__ import annotations

import argparse

import torch

import fastrnn
from fastrnn.data import load_mnist


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="fastrnn's initialisation seed")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    mnist = load_mnist(args.data_dir)
    w = fastrnn.RNNClassifier(28, 31, args.layers, 10, seed=args.seed).weights()
    rnn, fc = torch.nn.RNN(28, 31, args.layers, batch_first=True), torch.nn.Linear(31, 10)
    with torch.no_grad():
        for k in range(args.layers):
            getattr(rnn, f"weight_ih_l{k}").copy_(torch.from_numpy(w[f"w_ih_l{k}"]))
            getattr(rnn, f"weight_hh_l{k}").copy_(torch.from_numpy(w[f"w_hh_l{k}"]))
            getattr(rnn, f"bias_ih_l{k}").copy_(torch.from_numpy(w[f"b_l{k}"]))
            getattr(rnn, f"bias_hh_l{k}").zero_()
        fc.weight.copy_(torch.from_numpy(w["w_out"]))
        fc.bias.copy_(torch.from_numpy(w["b_out"]))
    opt = torch.optim.Adam([*rnn.parameters(), *fc.parameters()], lr=1e-3)
    x = torch.from_numpy(mnist.train.images.reshape(-1, 28, 28))
    y = torch.from_numpy(mnist.train.labels)
    for _ in range(args.epochs):
        for i in range(mnist.train.num_examples // 128):
            sl = slice(i * 128, (i + 1) * 128)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(fc(rnn(x[sl])[0][:, -1]), y[sl]).backward()
            opt.step()
    with torch.no_grad():
        logits = fc(rnn(torch.from_numpy(mnist.test.images.reshape(-1, 28, 28)))[0][:, -1])
    acc = (logits.argmax(1).numpy() == mnist.test.labels).mean()
    print(f"torch {torch.__version__} from fastrnn's init (seed {args.seed}), {args.layers} "
          f"layer(s), {args.epochs} epochs: test accu {acc:.4f}")


if __name__ == "__main__":
    main()
