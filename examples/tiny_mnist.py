"""Victor Zhou's tiny MNIST CNN on cnnext: 1,000 training images, 3 epochs.

The network and training of "CNNs, Part 2: Training a Convolutional Neural
Network" by Victor Zhou (https://victorzhou.com/blog/intro-to-cnns-part-2/):
Conv2D(1, 8, 3, bias=False) -> MaxPool2D(2) -> Flatten -> Dense(13*13*8, 10)
-> softmax (inside the loss), input ``image/255 - 0.5``, plain SGD with
learning rate 0.005, batch size 1, 3 epochs.  The tutorial trains on the
first 1,000 training images and tests on the first 1,000 test images; this
example reads only the MNIST test split, so it trains on its images
[0, 1000) and tests on [5000, 6000).

Run from the repository root::

    python examples/tiny_mnist.py [--data DIR] [--download] [--seed 0]

where ``DIR`` holds the MNIST test split (``t10k-images-idx3-ubyte[.gz]``
and ``t10k-labels-idx1-ubyte[.gz]``); it defaults to ``$CNNEXT_DATA/mnist``,
else ``~/.cache/cnnext/mnist`` (:func:`cnnext.datasets.default_root`), and
``--download`` fetches the two files there first.  Prints the per-epoch loss,
the test accuracy and the wall time.

Measured on a 2-core machine: accuracy 0.877 (seed 0; 0.892 and 0.909 for
seeds 1 and 2), 0.7-1.2 s of training with ``OMP_NUM_THREADS=1``.  At batch
size 1 every kernel call is tiny: on a busy machine, pin one thread
(``OMP_NUM_THREADS=1`` or ``cnnext.set_num_threads(1)``); with two spinning
threads competing for busy cores the same run took 12-50 s.
"""

import argparse
import time

import numpy as np

from cnnext import nn, optim
from cnnext.datasets import DownloadError, default_root, load_mnist
from cnnext.train import evaluate, fit


def build_model(seed=0):
    """The tutorial's network; He init for the conv, Glorot for the classifier."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(1, 8, 3, bias=False, seed=rng),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(13 * 13 * 8, 10, init="glorot", seed=rng),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=default_root(),
        help="directory with t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the MNIST test split into DIR first if it is missing (md5-checked)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    try:
        images, labels = load_mnist(args.data, split="test", download=args.download)
    except (FileNotFoundError, DownloadError) as exc:
        raise SystemExit(f"{parser.prog}: error: {exc}") from None
    x = images - np.float32(0.5)  # image/255 - 0.5
    x_train, y_train = x[:1000], labels[:1000]
    x_test, y_test = x[5000:6000], labels[5000:6000]

    model = build_model(args.seed)
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model, lr=0.005)
    start = time.perf_counter()
    history = fit(
        model, loss, opt, x_train, y_train, epochs=args.epochs, batch_size=1, seed=args.seed
    )
    train_time = time.perf_counter() - start
    for e, loss_, a in zip(history["epoch"], history["loss"], history["accuracy"]):
        print(f"epoch {e}: train loss {loss_:.4f}, train accuracy {a:.3f}")
    result = evaluate(model, loss, x_test, y_test)
    print(
        f"test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}) on images [5000, 6000)"
    )
    print(
        f"training wall time {train_time:.2f} s ({args.epochs} epochs x 1000 images, batch size 1)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
