"""Train a cnnext model and its PyTorch twin on MNIST with the same recipe.

The twin is built layer by layer from the cnnext model and starts from the
same weights, sees the same images in the same order and is trained with the
same optimizer settings, so the two test accuracies differ only by the
numerics of the two engines.  Recipe (as ``cnnext train``'s LeNet-5): inputs
standardised with MNIST's mean and std, softmax cross-entropy, Adam lr 2e-3
halved after each epoch, batch 32, 3 epochs; by default training on images
[0, 8000) of the MNIST test split and testing on [8000, 10000).

Usage::

    python benchmarks/mnist_models.py --model resnet8 --threads 1
    python benchmarks/mnist_models.py --model mobilenet --data ~/mnist

Needs PyTorch (CPU) and the MNIST test split (``--data``, default
``$CNNEXT_MNIST`` or :func:`cnnext.datasets.default_root`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

import cnnext
from cnnext import datasets, models, nn, optim
from cnnext.bench.twin import torch_twin
from cnnext.train import evaluate, fit

_MODELS = {"lenet5": models.lenet5, "resnet8": models.resnet8, "mobilenet": models.mobilenet_small}


def train_torch(model: Any, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """Train the twin with the order of :func:`cnnext.train.fit`; test accuracy."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.5)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return float((pred == y_test).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(_MODELS), default="resnet8")
    p.add_argument("--data", default=os.environ.get("CNNEXT_MNIST") or datasets.default_root())
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-range", default="0:8000")
    p.add_argument("--test-range", default="8000:10000")
    p.add_argument("--skip", choices=("cnnext", "torch"), default=None)
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    cnnext.set_num_threads(a.threads)
    images, labels = datasets.load_mnist(a.data, "test")
    lo, hi = (int(v) for v in a.train_range.split(":"))
    tlo, thi = (int(v) for v in a.test_range.split(":"))
    mean, std = np.float32(0.1307), np.float32(0.3081)
    x = (images[lo:hi] - mean) / std
    x_test = (images[tlo:thi] - mean) / std
    y, y_test = labels[lo:hi], labels[tlo:thi]

    model = _MODELS[a.model](seed=a.seed)
    twin = torch_twin(model, torch)  # before training: the same initial weights
    print(f"{a.model}: {sum(p.size for p, _ in model.parameters())} parameters; "
          f"train [{lo}, {hi}), test [{tlo}, {thi}), {a.epochs} epochs, batch {a.batch_size}, "
          f"Adam lr {a.lr:g} (x0.5 per epoch), {a.threads} thread(s)", flush=True)
    if a.skip != "cnnext":
        opt = optim.Adam(model, lr=a.lr)

        def decay(epoch: int, logs: dict[str, float]) -> None:
            print(f"  cnnext epoch {epoch}: loss {logs['loss']:.4f} ({logs['time']:.1f} s)",
                  flush=True)
            opt.lr *= 0.5

        start = time.perf_counter()
        fit(model, nn.SoftmaxCrossEntropy(), opt, x, y, epochs=a.epochs,
            batch_size=a.batch_size, seed=a.seed, progress=False, on_epoch_end=decay)
        wall = time.perf_counter() - start
        acc = evaluate(model, nn.SoftmaxCrossEntropy(), x_test, y_test)["accuracy"]
        print(f"cnnext : test accuracy {acc:.4f}, training wall time {wall:.1f} s", flush=True)
    if a.skip != "torch":
        start = time.perf_counter()
        tacc = train_torch(twin, x, y, x_test, y_test, a.epochs, a.batch_size, a.lr, a.seed)
        twall = time.perf_counter() - start
        print(f"PyTorch: test accuracy {tacc:.4f}, training wall time {twall:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
