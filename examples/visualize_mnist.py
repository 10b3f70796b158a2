"""Look inside a small CNN trained on MNIST: filters, feature maps, curves.

Trains a two-convolution network (conv 8@5x5 -> ReLU -> max-pool 2 ->
conv 16@5x5 -> ReLU -> max-pool 2 -> Dense 10) for a few epochs on MNIST
test-split images [0, 4000), tests it on [8000, 10000), then writes three
pictures with :mod:`cnnext.viz`:

``filters.png``
    the first layer's 8 trained 5x5 filters;
``feature_maps.png``
    one test image's 8 feature maps after the first ReLU;
``curves.png``
    the per-epoch loss and accuracy, training and test.

Needs matplotlib (``pip install "cnnext[plot]"``) and the MNIST test split
(``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``) in
``--data DIR``; ``cnnext train --download`` fetches the files into the
default directory.  Run::

    python examples/visualize_mnist.py [--data DIR] [--out DIR] [--epochs 3]
"""

import argparse
import os

import numpy as np

from cnnext import nn, optim, viz
from cnnext.datasets import default_root, load_mnist
from cnnext.train import fit

MEAN, STD = np.float32(0.1307), np.float32(0.3081)


def build_model(seed=0):
    """Two convolutions and a classifier (He init, Glorot for the last layer)."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(1, 8, 5, padding=2, seed=rng),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(8, 16, 5, seed=rng),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(16 * 5 * 5, 10, init="glorot", seed=rng),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_root(), help="directory with the MNIST files")
    parser.add_argument("--out", default=".", help="directory for the PNG files (default: .)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    images, labels = load_mnist(args.data, split="test")
    x = (images - MEAN) / STD
    x_train, y_train = x[: args.train_size], labels[: args.train_size]
    x_test, y_test = x[8000:], labels[8000:]

    model = build_model(args.seed)
    history = fit(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.Adam(model, lr=2e-3),
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        seed=args.seed,
        validation_data=(x_test, y_test),
        progress=False,
    )
    for epoch, acc in zip(history["epoch"], history["val_accuracy"]):
        print(f"epoch {epoch}: test accuracy {acc:.4f}")

    paths = {name: os.path.join(args.out, f"{name}.png")
             for name in ("filters", "feature_maps", "curves")}
    viz.plot_filters(model, paths["filters"])
    viz.plot_feature_maps(model, x_test[0], layer_index=1, path=paths["feature_maps"])
    viz.plot_history(history, paths["curves"], val_label="test")
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
