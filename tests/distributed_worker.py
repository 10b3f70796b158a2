"""One rank of a distributed test job, run by ``tests/test_distributed.py``
under ``mpiexec -n N python distributed_worker.py MODE OUT [options]``.

Modes
-----
``fit``
    ``cnnext.train.fit(..., distributed=True)`` on the data of
    :func:`problem`; rank 0 writes the trained state and the history to OUT
    (``.npz``), and every rank its state to ``OUT.rank<r>.npz``.
``loop``
    The same training with the public pieces in a loop of one's own
    (``ShardedSampler``, ``DistributedOptimizer``, ``broadcast_parameters``).
``fail``
    ``fit`` in which rank 1 fails at its ``--step``-th step as ``--how``
    says: ``raise``, ``exit`` (``sys.exit(3)``), ``kill`` (SIGKILL),
    ``term`` (SIGTERM).
``exit-loop``
    A loop of one's own (no ``fit``) in which rank 1 calls ``sys.exit(0)``
    at its ``--step``-th step.
``mismatch``
    ``fit`` with a model whose layer sizes differ between the ranks.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import numpy as np

from cnnext import distributed, models, nn, optim
from cnnext.train import fit


def build(kind, dtype, seed=0):
    """The model of ``kind``: LeNet-5, a net of most other layer kinds, or a
    ResNet with batch normalization."""
    rng = np.random.default_rng(seed)
    if kind == "lenet5":
        return models.lenet5(seed=rng, dtype=dtype)
    if kind == "resnet8":
        return models.resnet8(seed=rng, dtype=dtype)
    if kind == "mixed":
        kw = dict(seed=rng, dtype=dtype)
        return nn.Sequential(
            nn.Conv2D(1, 4, (2, 3), padding=1, **kw),
            nn.LeakyReLU(0.1),
            nn.Conv2D(4, 4, 3, groups=4, stride=2, **kw),
            nn.Tanh(),
            nn.AvgPool2D(2),
            nn.ConvTranspose2D(4, 3, 2, stride=2, **kw),
            nn.Sigmoid(),
            nn.AdaptiveMaxPool2D(3),
            nn.Flatten(),
            nn.Dense(27, 16, **kw),
            nn.ReLU(),
            nn.Dense(16, 10, **kw),
        )
    if kind == "seq":  # 1-D layers and a residual block, on (N, 4, 28) inputs
        kw = dict(seed=rng, dtype=dtype)
        return nn.Sequential(
            nn.Conv1D(4, 6, 3, padding=1, **kw),
            nn.Residual(nn.Sequential(nn.Conv1D(6, 6, 3, padding=1, **kw), nn.ReLU())),
            nn.MaxPool1D(2),
            nn.Conv1D(6, 6, 5, stride=2, dilation=2, **kw),
            nn.AvgPool1D(2),
            nn.Flatten(),
            nn.Dense(6, 10, **kw),
        )
    if kind == "dense":
        kw = dict(seed=rng, dtype=dtype)
        return nn.Sequential(nn.Flatten(), nn.Dense(784, 32, **kw), nn.ReLU(),
                             nn.Dense(32, 10, **kw))
    raise ValueError(kind)


def make_optimizer(kind, model):
    if kind == "adam":
        return optim.Adam(model, lr=1e-3, weight_decay=1e-4)
    return optim.SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-4)


def problem(n, dtype, seed=1, kind="lenet5"):
    """Inputs (n, 1, 28, 28) ((n, 4, 28) for the 1-D model) and labels that
    depend on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 28) if kind == "seq" else (n, 1, 28, 28)).astype(dtype)
    y = (x[:, 0, :4].sum(axis=tuple(range(1, x.ndim - 1))) > 0).astype(np.int64)
    return x, y * 3 + rng.integers(0, 3, n)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("out")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--how", default="raise")
    p.add_argument("--step", type=int, default=5)
    p.add_argument("--tag", default="", help="marks the job's processes")
    args = p.parse_args()

    comm = distributed.init(threads=args.threads, exit_timeout=3.0)
    r = distributed.rank()
    cores = comm.allgather(sorted(os.sched_getaffinity(0)))
    dtype = np.dtype(args.dtype)
    model = build(args.model, dtype, seed=10 + r)  # different weights: rank 0's must win
    if args.mode == "mismatch":
        model = nn.Sequential(nn.Flatten(), nn.Dense(784, 10 + r, dtype=dtype))
    opt = make_optimizer(args.optimizer, model)
    x, y = problem(args.n, dtype, kind=args.model)
    loss = nn.SoftmaxCrossEntropy()

    if args.mode in ("fail", "exit-loop"):
        # The failure comes at the start of a step (every step calls the
        # optimizer's zero_grad, however the model runs it).
        calls = 0
        zero_grad = opt.zero_grad

        def failing_zero_grad():
            nonlocal calls
            calls += 1
            if r == 1 and calls == args.step:
                if args.how == "raise":
                    raise RuntimeError("a failure on rank 1")
                if args.how in ("exit", "exit0"):
                    sys.exit(3 if args.how == "exit" else 0)
                os.kill(os.getpid(), signal.SIGKILL if args.how == "kill" else signal.SIGTERM)
            zero_grad()

        opt.zero_grad = failing_zero_grad

    history = None
    if args.mode in ("fit", "fail", "mismatch"):
        history = fit(model, loss, opt, x, y, epochs=args.epochs, batch_size=args.batch_size,
                      seed=3, progress=False, distributed=True,
                      validation_data=(x[: args.n // 3], y[: args.n // 3]))
    elif args.mode in ("loop", "exit-loop"):
        distributed.broadcast_parameters(model)
        dopt = distributed.DistributedOptimizer(opt, model)
        sampler = distributed.ShardedSampler(len(x), args.batch_size, seed=3)
        for _ in range(args.epochs):
            for idx in sampler:
                dopt.zero_grad()
                if len(idx):
                    loss.forward(model.forward(x[idx]), y[idx])
                    model.backward(loss.backward())
                dopt.step(len(idx))
    else:
        raise ValueError(args.mode)

    state = model.state_dict()
    np.savez(f"{args.out}.rank{r}.npz", **state)
    if r == 0:
        np.savez(args.out, **state)
        with open(args.out + ".json", "w") as fh:
            json.dump({"history": history, "size": comm.Get_size(), "cores": cores}, fh)


if __name__ == "__main__":
    main()
