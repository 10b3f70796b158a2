"""``cnnext train``: train a CNN on MNIST from the command line.

Models
------
``tiny``
    The small network of Victor Zhou's "CNNs, Part 2: Training a
    Convolutional Neural Network"
    (https://victorzhou.com/blog/intro-to-cnns-part-2/): a 3x3 convolution
    with 8 filters (no bias), a 2x2 max-pool and a dense layer to the 10
    classes -- Conv2D(1, 8, 3, bias=False) -> MaxPool2D(2) -> Flatten ->
    Dense(1352, 10); input ``image - 0.5``; SGD, lr 0.005, batch size 1,
    3 epochs.
``lenet5``
    conv 6@5x5 (padding 2) -> ReLU -> pool -> conv 16@5x5 -> ReLU -> pool ->
    Dense 120 -> ReLU -> Dense 84 -> ReLU -> Dense 10
    (:func:`cnnext.models.lenet5`).
``resnet8``
    a small ResNet: a stem, three stages of one basic block with batch norm
    and projection shortcuts, global average pooling, a dense head
    (:func:`cnnext.models.resnet8`).
``mobilenet``
    a MobileNet-style network of depthwise-separable blocks with batch norm
    (:func:`cnnext.models.mobilenet_small`).

``lenet5``, ``resnet8`` and ``mobilenet`` share one recipe: inputs
standardised with MNIST's mean/std; Adam, lr 2e-3 halved after each epoch,
batch size 32, 3 epochs.

Data and splits
---------------
``--data DIR`` (default: ``$CNNEXT_DATA/mnist`` or ``~/.cache/cnnext/mnist``)
holds the IDX files, raw or ``.gz``; ``--download`` fetches the four official
files there first.  With ``--split auto`` (default) the model trains on the
60,000-image train split and is tested on the 10,000-image test split when the
train files are present.  When only the test split is present, or with
``--split test``, both sets are ranges of the test split: by default
``--train-range 0:1000 --test-range 5000:6000`` for ``tiny`` and ``0:8000`` /
``8000:10000`` for the others.

Several processes
-----------------
``mpiexec -n N cnnext train ... --distributed`` trains data-parallel over MPI
(:mod:`cnnext.distributed`): ``--batch-size`` is the global batch, each rank
uses its cores divided by the ranks sharing them (``--threads`` sets it), and
only rank 0 prints, shows progress, saves and plots.

Exit status: 0 on success, 2 for bad arguments or a missing/corrupt dataset
(a one-line message, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .nn import Sequential

    class _Defaults(TypedDict):
        epochs: int
        batch_size: int
        lr: float
        lr_decay: float
        ranges: tuple[tuple[int, int], tuple[int, int]]

_NumT = TypeVar("_NumT", int, float)

_MEAN, _STD = np.float32(0.1307), np.float32(0.3081)

_DEFAULTS: dict[str, _Defaults] = {
    # model: epochs, batch size, lr, test-split ranges (train, test)
    "tiny": dict(epochs=3, batch_size=1, lr=0.005, lr_decay=1.0,
                 ranges=((0, 1000), (5000, 6000))),
    **{
        name: dict(epochs=3, batch_size=32, lr=2e-3, lr_decay=0.5,
                   ranges=((0, 8000), (8000, 10000)))
        for name in ("lenet5", "resnet8", "mobilenet")
    },
}


def build_model(
    name: str, seed: int
) -> tuple[Sequential, Callable[[npt.NDArray[np.float32]], npt.NDArray[np.floating[Any]]]]:
    """The named model (see the module docstring) and its input transform."""
    from cnnext import models, nn

    rng = np.random.default_rng(seed)
    if name == "tiny":
        model = nn.Sequential(
            nn.Conv2D(1, 8, 3, bias=False, seed=rng),
            nn.MaxPool2D(2),
            nn.Flatten(),
            nn.Dense(13 * 13 * 8, 10, init="glorot", seed=rng),
        )
        return model, lambda x: x - np.float32(0.5)
    builders = {"lenet5": models.lenet5, "resnet8": models.resnet8,
                "mobilenet": models.mobilenet_small}
    model = builders[name](seed=rng)
    return model, _standardise


def _standardise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(x - mean) / std with MNIST's statistics, the division in place (one
    array of the data's size made, not two)."""
    out = x - _MEAN
    out /= _STD
    return out


def _range(text: str) -> tuple[int | None, int | None]:
    """'A:B' (either end may be omitted) -> (A or None, B or None)."""
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected START:STOP, got {text!r}")
    try:
        lo, hi = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers START:STOP, got {text!r}") from None
    return lo, hi


def _positive(kind: Callable[[str], _NumT]) -> Callable[[str], _NumT]:
    def parse(text: str) -> _NumT:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text!r}")
        return v

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnext train",
        description="Train a CNN on MNIST with cnnext and print its test accuracy.",
        epilog="When only the MNIST test split is available, training and test sets are "
        "ranges of it (defaults: tiny 0:1000 / 5000:6000, the others 0:8000 / 8000:10000).",
    )
    p.add_argument(
        "--model",
        choices=sorted(_DEFAULTS),
        default="tiny",
        help="network to train (default: tiny): tiny, a 3x3 convolution with 8 filters, a "
        "2x2 max-pool and a dense layer to the 10 classes (the network of Victor Zhou's "
        "CNN tutorial); lenet5, LeNet-5; resnet8, a small ResNet with batch norm; "
        "mobilenet, a MobileNet-style network of depthwise-separable blocks",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="directory with the MNIST IDX files, raw or .gz "
        "(default: $CNNEXT_DATA/mnist or ~/.cache/cnnext/mnist)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download the official MNIST files into DIR first (md5-checked)",
    )
    p.add_argument(
        "--split",
        choices=("auto", "train", "test"),
        default="auto",
        help="train on the train split (train), on a range of the test split "
        "(test), or the train split when present (auto, default)",
    )
    p.add_argument(
        "--train-range",
        type=_range,
        metavar="A:B",
        default=None,
        help="training images [A, B) of the training source",
    )
    p.add_argument(
        "--test-range",
        type=_range,
        metavar="A:B",
        default=None,
        help="test images [A, B) of the test split",
    )
    p.add_argument("--epochs", type=int, default=None, help="default 3")
    p.add_argument(
        "--batch-size", type=_positive(int), default=None, help="default 1 (tiny) or 32 (others)"
    )
    p.add_argument(
        "--lr",
        type=_positive(float),
        default=None,
        help="learning rate; default 0.005 (tiny, SGD) or 0.002 (others, Adam)",
    )
    p.add_argument(
        "--lr-decay",
        type=_positive(float),
        default=None,
        help="multiply the learning rate by this after each epoch; default 1 (tiny) or 0.5 "
        "(others)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="initialization and shuffling seed (default 0)"
    )
    p.add_argument(
        "--threads",
        type=_positive(int),
        default=None,
        help="kernel threads (cnnext.set_num_threads); 1 is fastest for tiny batches "
        "on a busy machine",
    )
    p.add_argument("--save", metavar="PATH", default=None, help="save the trained model (.npz)")
    p.add_argument(
        "--plot",
        metavar="PATH",
        default=None,
        help="write the per-epoch loss and accuracy curves (training and test) to PATH; "
        "the format follows the extension (.png, .pdf, .svg); needs matplotlib "
        '(pip install "cnnext[plot]")',
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training over MPI: start with mpiexec -n N (needs mpi4py and an "
        'MPI implementation: pip install "cnnext[mpi]" mpich); --batch-size is the global '
        "batch, --threads each rank's (default: cores / ranks); only rank 0 prints and saves",
    )
    return p


def _slice(name: str, rng: tuple[int | None, int | None], n: int, split: str) -> slice:
    lo, hi = rng
    lo = 0 if lo is None else lo
    hi = n if hi is None else hi
    if not 0 <= lo < hi <= n:
        raise ValueError(
            f"{name} [{lo}, {hi}) must satisfy 0 <= start < stop <= {n} (the {split} split "
            f"has {_plural(n, 'image')})"
        )
    return slice(lo, hi)


def _plural(n: int, word: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# With --distributed: the error messages of this rank, printed once for the
# whole job by rank 0 (see _Ranks).
_errors: list[str] | None = None


def _fail(msg: str) -> int:
    if _errors is not None:
        _errors.append(msg)
    else:
        print(f"cnnext train: error: {msg}", file=sys.stderr)
    return 2


class _Ranks:
    """The ranks of a --distributed run: they agree once the data is loaded
    (every rank loads it; any rank's error stops them all) and on the exit
    status at the end (rank 0's, which alone saves)."""

    def __init__(self, comm: Any) -> None:
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.passed = self.failed = False

    def ready(self) -> bool:
        """All ranks have their data (a collective call; False: stop)."""
        self.passed = True
        self.failed = self._agree(None) is not None
        return not self.failed

    def _agree(self, status: int | None) -> int | None:
        global _errors
        reports = self.comm.allgather((status, _errors))
        _errors = []
        if self.rank == 0:
            seen: dict[str, list[int]] = {}
            for r, (_, msgs) in enumerate(reports):
                for m in msgs or ():
                    seen.setdefault(m, []).append(r)
            for m, ranks in seen.items():
                where = "" if len(ranks) == self.size else f"rank {', '.join(map(str, ranks))}: "
                print(f"cnnext train: error: {where}{m}", file=sys.stderr)
        return max((st for st, _ in reports if st is not None), default=None)

    def finish(self, status: int) -> int:
        """The job's exit status, agreed by every rank."""
        if not self.passed:  # failed before the data was ready: meet the others' ready()
            return self._agree(status) or status
        if self.failed:  # another rank did
            return status
        # after training: rank 0's (the others have nothing to report)
        status = self.comm.bcast(status, root=0)
        self._agree(None)
        return int(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cnnext train``; returns the exit status."""
    global _errors
    parser = _parser()
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 0:
        parser.error(f"--epochs must be >= 0, got {args.epochs}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if not args.distributed:
        return _run(args, None)

    from cnnext import distributed

    try:
        comm = distributed.init(threads=args.threads)
    except ImportError as exc:
        return _fail(str(exc))
    ranks = _Ranks(comm)
    _errors = []
    try:
        if ranks.rank == 0:
            status = _run(args, ranks)
        else:  # only rank 0 prints
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                status = _run(args, ranks)
        return ranks.finish(status)
    finally:
        _errors = None


def _run(args: argparse.Namespace, ranks: _Ranks | None) -> int:
    """Train as ``args`` say; with ``ranks``, this rank's part of the job."""
    import cnnext
    from cnnext import datasets, nn, optim
    from cnnext.train import evaluate, fit

    comm = None if ranks is None else ranks.comm
    if args.threads is not None and ranks is None:
        cnnext.set_num_threads(args.threads)
    d = _DEFAULTS[args.model]
    epochs = d["epochs"] if args.epochs is None else args.epochs
    batch_size = d["batch_size"] if args.batch_size is None else args.batch_size
    lr = d["lr"] if args.lr is None else args.lr
    lr_decay = d["lr_decay"] if args.lr_decay is None else args.lr_decay
    root = datasets.default_root() if args.data is None else args.data
    if args.plot is not None:
        # Before the data and the training: a missing matplotlib or a bad
        # path is reported at once, not after minutes of training.
        from cnnext import viz

        try:
            viz._require_matplotlib("cnnext train --plot")
            viz._check_path("cnnext train --plot", args.plot)
        except (ImportError, ValueError) as exc:
            return _fail(str(exc))

    try:
        if args.download and (ranks is None or ranks.rank == 0):
            print(f"downloading MNIST into {root} ...", file=sys.stderr)
            datasets.download_mnist(root)
        if args.download and comm is not None:  # rank 0 has downloaded
            comm.Barrier()
        split = args.split
        if split == "auto":
            try:
                train_x, train_y = datasets.load_mnist(root, "train")
                split = "train"
            except FileNotFoundError:
                split = "test"
        if split == "train":
            if args.split != "auto":
                train_x, train_y = datasets.load_mnist(root, "train")
            test_x, test_y = datasets.load_mnist(root, "test")
            train_range = args.train_range or (None, None)
            test_range = args.test_range or (None, None)
            train_src = "train"
        else:
            test_x, test_y = datasets.load_mnist(root, "test")
            train_x, train_y = test_x, test_y
            train_range = args.train_range or d["ranges"][0]
            test_range = args.test_range or d["ranges"][1]
            train_src = "test"
        tr = _slice("--train-range", train_range, len(train_x), train_src)
        te = _slice("--test-range", test_range, len(test_x), "test")
    except FileNotFoundError as exc:
        if args.split == "auto":
            return _fail(
                f"no MNIST data in {root!r} (neither train-* nor t10k-* IDX files, raw or "
                f".gz). Point --data at the directory holding them, or pass --download."
            )
        return _fail(str(exc))
    except (ValueError, datasets.DownloadError) as exc:
        return _fail(str(exc))
    if ranks is not None and not ranks.ready():
        return 2

    if args.split == "auto" and split == "test" and (ranks is None or ranks.rank == 0):
        print(
            f"note: no MNIST train split in {root}; training on test-split images "
            f"[{tr.start}, {tr.stop}) and testing on [{te.start}, {te.stop}) (as --split test)",
            file=sys.stderr,
        )
    model, transform = build_model(args.model, args.seed)
    x_train, y_train = transform(train_x[tr]), train_y[tr]
    x_test, y_test = transform(test_x[te]), test_y[te]
    loss = nn.SoftmaxCrossEntropy()
    opt: optim.SGD | optim.Adam
    if args.model == "tiny":
        opt = optim.SGD(model, lr=lr)
    else:
        opt = optim.Adam(model, lr=lr)
    print(
        f"training {args.model} on {_plural(len(x_train), 'image')} ({train_src} split "
        f"[{tr.start}, {tr.stop})), testing on {len(x_test)} (test split [{te.start}, {te.stop})): "
        f"{_plural(epochs, 'epoch')}, batch size {batch_size}, {type(opt).__name__} lr {lr:g} "
        f"(x{lr_decay:g} per epoch), "
        f"seed {args.seed}"
        + ("" if ranks is None else
           f"; {_plural(ranks.size, 'rank')} x {_plural(cnnext.get_num_threads(), 'thread')}"),
        flush=True,
    )

    def report(epoch: int, logs: dict[str, float]) -> None:
        print(
            f"epoch {epoch}/{epochs}: loss {logs['loss']:.4f}, accuracy {logs['accuracy']:.4f}, "
            f"test accuracy {logs['val_accuracy']:.4f} ({logs['time']:.1f} s)",
            flush=True,
        )
        opt.lr *= lr_decay

    start = time.perf_counter()
    history = fit(
        model,
        loss,
        opt,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        seed=args.seed,
        validation_data=(x_test, y_test),
        progress=False if args.no_progress else None,
        on_epoch_end=report,
        comm=comm,
    )
    wall = time.perf_counter() - start
    if history.get("val_loss") and batch_size <= 256:
        # The last epoch's validation: the same model, set and batches (fit
        # validates in batches of max(batch_size, 256), evaluate of 256).
        result = {"loss": history["val_loss"][-1], "accuracy": history["val_accuracy"][-1]}
    else:
        result = evaluate(model, loss, x_test, y_test, comm=comm)
    print(
        f"test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}); "
        f"wall time {wall:.1f} s"
    )
    if ranks is not None and ranks.rank != 0:  # rank 0 saves and plots
        return 0
    if args.save:
        try:
            model.save(args.save)
        except OSError as exc:
            return _fail(f"could not save the model to {args.save}: {exc}")
        print(f"saved model to {args.save}")
    if args.plot is not None:
        from cnnext import viz

        try:
            viz.plot_history(history, args.plot, val_label="test")
        except (OSError, ValueError) as exc:
            return _fail(f"could not write the plot to {args.plot}: {exc}")
        print(f"saved the loss and accuracy curves to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
