"""LeNet-5 on MNIST, data-parallel over MPI, with checkpoints and restart.

Every rank runs this script; each epoch is one ``fit(..., distributed=True)``
call whose global batch is split among the ranks.  After every epoch rank 0
saves the model (atomically: a crash never leaves a half-written file) and
a small record of the epoch reached; ``--resume`` starts from them, with
every rank loading the same checkpoint.  The shuffling seed of epoch ``e`` is
``seed + e``, so a resumed run visits the samples in the same order as an
uninterrupted one (the optimizer's moments start afresh: they are not part
of a model file).

Run from the repository root, with mpi4py and an MPI installed
(``pip install "cnnext[mpi]" mpich``)::

    mpiexec -n 2 python examples/distributed_mnist.py [--data DIR] [--epochs 3]
    mpiexec -n 2 python examples/distributed_mnist.py --resume   # after an interruption

``DIR`` holds the MNIST test split (``t10k-*`` files; default
:func:`cnnext.datasets.default_root`): training on images [0, 8000), testing
on [8000, 10000).
"""

import argparse
import json
import os

import numpy as np

from cnnext import distributed, models, nn, optim
from cnnext.datasets import default_root, load_mnist
from cnnext.train import evaluate, fit

MEAN, STD = np.float32(0.1307), np.float32(0.3081)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="directory with the MNIST test split")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="lenet5-checkpoint.npz")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    comm = distributed.init()  # a failing rank now ends the whole job
    rank0 = distributed.rank() == 0
    x, y = load_mnist(args.data or default_root(), "test")
    x = (x - MEAN) / STD
    x_train, y_train, x_test, y_test = x[:8000], y[:8000], x[8000:], y[8000:]

    model = models.lenet5(seed=args.seed)
    opt = optim.Adam(model, lr=2e-3)
    loss = nn.SoftmaxCrossEntropy()
    record = args.checkpoint + ".json"
    start = 0
    if args.resume and os.path.exists(record):
        with open(record) as fh:
            start = json.load(fh)["epochs_done"]
        model.load(args.checkpoint)  # every rank reads the same file
        opt.lr *= 0.5**start
    if rank0:
        print(f"{distributed.size()} ranks, global batch {args.batch_size}, "
              f"epochs {start + 1}-{args.epochs}")

    for epoch in range(start, args.epochs):
        logs = fit(model, loss, opt, x_train, y_train, epochs=1, batch_size=args.batch_size,
                   seed=args.seed + epoch, validation_data=(x_test, y_test), comm=comm)
        opt.lr *= 0.5
        if rank0:
            model.save(args.checkpoint)  # atomic
            tmp = record + ".tmp"
            with open(tmp, "w") as fh:
                json.dump({"epochs_done": epoch + 1}, fh)
            os.replace(tmp, record)
            print(f"epoch {epoch + 1}: loss {logs['loss'][0]:.4f}, "
                  f"test accuracy {logs['val_accuracy'][0]:.4f} ({logs['time'][0]:.1f} s)",
                  flush=True)
    result = evaluate(model, loss, x_test, y_test, comm=comm)
    if rank0:
        print(f"test accuracy {result['accuracy']:.4f}")


if __name__ == "__main__":
    main()
