"""A small training loop: :func:`fit` and :func:`evaluate`.

The loop is the textbook one -- for each mini-batch: ``optimizer.zero_grad()``,
``out = model.forward(xb)``, ``loss.forward(out, yb)``,
``model.backward(loss.backward())``, ``optimizer.step()`` -- plus seeded
shuffling, per-epoch history and an optional progress bar.  A
:class:`cnnext.nn.Sequential` model runs each step (and :func:`evaluate`,
:func:`predict` each batch) through its whole-network plan
(:meth:`cnnext.nn.Sequential.plan`): the same numbers, with less work
between the layers.

Progress bar (``progress=``): ``None`` (default) shows one only when standard
error is a terminal; ``True`` always shows one (on ``sys.stderr``);
``False`` never.  It uses ``tqdm`` when installed and otherwise a small
built-in text bar.  Nothing else is ever written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

import numpy as np
import numpy.typing as npt

from . import _validate as V

if TYPE_CHECKING:
    from .nn import NetPlan
    from ._typing import (
        Loss,
        Model,
        Optimizer,
        Seed,
        SkipsInputGrad,
        TrainableLoss,
        TrainableModel,
    )

    class _Bar(Protocol):
        """A progress bar: tqdm's, or :class:`_TextBar`."""

        def update(self, n: int) -> object: ...

        def set_postfix_str(self, s: str, refresh: bool = ...) -> object: ...

        def close(self) -> object: ...

__all__ = ["fit", "evaluate", "predict"]


# --------------------------------------------------------------------------
# progress bar
# --------------------------------------------------------------------------


class _TextBar:
    """Minimal stand-in for tqdm: ``update``, ``set_postfix_str``, ``close``.

    Redraws at most ~10 times a second with a carriage return.
    """

    _WIDTH = 24

    def __init__(self, total: int, desc: str, stream: TextIO) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.perf_counter()
        self._draw()

    def update(self, n: int) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= 0.1 or self.n >= self.total:
            self._last = now
            self._draw()

    def set_postfix_str(self, s: str, refresh: bool = False) -> None:
        self.postfix = s

    def _draw(self) -> None:
        frac = self.n / self.total if self.total else 1.0
        filled = int(round(frac * self._WIDTH))
        bar = "#" * filled + "." * (self._WIDTH - filled)
        elapsed = time.perf_counter() - self._start
        post = f" {self.postfix}" if self.postfix else ""
        self.stream.write(f"\r{self.desc} [{bar}] {self.n}/{self.total} {elapsed:5.1f}s{post}")
        self.stream.flush()

    def close(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or unusual stream
        return False


def _make_bar(progress: bool | None, total: int, desc: str) -> _Bar | None:
    if progress is False or sys.stderr is None:  # pythonw: no stderr at all
        return None
    if progress is None and not _stderr_is_terminal():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextBar(total, desc, sys.stderr)
    return cast("_Bar", tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, leave=True))


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------


def _check_api(fname: str, name: str, obj: object, methods: Iterable[str]) -> None:
    for m in methods:
        if not callable(getattr(obj, m, None)):
            raise TypeError(
                f"{fname}: {name} must have a {m}() method ({type(obj).__name__} has none)"
            )


def _xy(
    fname: str, x: npt.ArrayLike, y: npt.ArrayLike, xname: str = "x", yname: str = "y"
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError(f"{fname}: {xname} and {yname} must have a sample axis, got 0-D input")
    if len(x) != len(y):
        raise ValueError(
            f"{fname}: {xname} and {yname} must have the same number of samples, got "
            f"{len(x)} and {len(y)}"
        )
    return x, y


def _n_correct(out: npt.ArrayLike, y: npt.NDArray[Any]) -> int | None:
    """Correct predictions in a batch, or None when accuracy does not apply.

    Applies to integer labels ``(N,)`` against scores ``(N, K)``, and to
    one-hot targets ``(N, K)``, K >= 2, against outputs of the same shape.
    """
    out = np.asarray(out)
    if out.ndim != 2:
        return None
    if y.ndim == 1 and y.dtype.kind in "iu":
        return int(np.count_nonzero(out.argmax(axis=1) == y))
    if y.shape == out.shape and out.shape[1] > 1 and _is_one_hot(y):
        return int(np.count_nonzero(out.argmax(axis=1) == y.argmax(axis=1)))
    return None


def _is_one_hot(y: npt.NDArray[Any]) -> bool:
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1))


def _net_plan(model: object, shape: tuple[int, ...], training: bool) -> NetPlan | None:
    """The model's whole-network plan for batches of ``shape``, or None when
    the model is not a :class:`~cnnext.nn.Sequential` whose layers are all
    in the mode ``training`` and whose parameters share one dtype (or the
    numpy backend is selected): such a model runs layer by layer."""
    from . import _config
    from .nn import Sequential
    from .nn.plan import _modules

    if not (isinstance(model, Sequential) and _config.compiled_backend()):
        return None
    if any(m.training != training for m in _modules(model)):
        return None
    if len({p.dtype for _, p, _ in model.named_parameters()}) != 1:
        return None  # no parameters (the input's dtype is kept) or mixed dtypes
    return model.plan(shape, training=training)


def _restore_mode(model: object, was_training: object) -> None:
    if was_training is not None and hasattr(model, "train"):
        model.train(bool(was_training))


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def evaluate(
    model: Model, loss: Loss, x: npt.ArrayLike, y: npt.ArrayLike, batch_size: int = 256,
    comm: Any = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in evaluation mode.

    The model is switched to ``eval()`` for the pass and back to its
    previous mode afterwards; parameters, gradients and buffers (the running
    statistics of batch normalization) are not touched.

    Parameters
    ----------
    model : cnnext.nn.Module
    loss : loss object with ``forward(pred, target) -> float``
    x, y : array_like
        Inputs and targets, same length.
    batch_size : int >= 1
    comm : mpi4py communicator, optional
        Evaluate in parallel: every rank of ``comm`` (each holding the same
        model and the whole set) evaluates its contiguous part of the set,
        and every rank returns the result for the whole set
        (:mod:`cnnext.distributed`).

    Returns
    -------
    dict
        ``{"loss": float, "accuracy": float}``: the sample-weighted mean of
        the batch losses, and the fraction of samples whose argmax output is
        the label (NaN when accuracy does not apply, e.g. regression
        targets, and both NaN for an empty set).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> from cnnext.train import evaluate
    >>> model = nn.Sequential(nn.Dense(2, 2, seed=0))
    >>> model.params["0.weight"][...] = np.eye(2); model.params["0.bias"][...] = 0
    >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0])
    >>> r = evaluate(model, nn.SoftmaxCrossEntropy(), x, y)
    >>> r["accuracy"]
    0.5
    """
    fname = "evaluate"
    _check_api(fname, "model", model, ("forward",))
    _check_api(fname, "loss", loss, ("forward",))
    x, y = _xy(fname, x, y)
    batch_size = V.as_int(fname, "batch_size", batch_size, 1)
    was_training = getattr(model, "training", None)
    if hasattr(model, "eval"):
        model.eval()
    lo, hi = 0, len(x)
    if comm is not None:  # this rank's part of the set
        from .distributed import _share

        lo, hi = _share(0, len(x), comm.Get_rank(), comm.Get_size())
    try:
        total_loss, correct, n_acc = 0.0, 0, 0
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            xb, yb = x[start:stop], y[start:stop]
            plan = _net_plan(model, xb.shape, False)
            out = model.forward(xb) if plan is None else plan.forward(xb)
            total_loss += float(loss.forward(out, yb)) * len(xb)
            c = _n_correct(out, yb)
            if c is not None:
                correct += c
                n_acc += len(xb)
    finally:
        _restore_mode(model, was_training)
    if comm is not None:
        from .distributed import _sum_over_ranks

        total_loss, n_right, n_acc_all = _sum_over_ranks((total_loss, correct, n_acc), comm)
        correct, n_acc = int(n_right), int(n_acc_all)
    n = len(x)
    return {
        "loss": total_loss / n if n else float("nan"),
        "accuracy": correct / n_acc if n_acc and n_acc == n else float("nan"),
    }


def _layered_step(
    model: TrainableModel, loss: TrainableLoss, optimizer: Optimizer, xb: npt.NDArray[Any],
    yb: npt.NDArray[Any],
) -> tuple[float, npt.NDArray[Any]]:
    """(batch loss, output) of one step through the model's own forward and backward."""
    optimizer.zero_grad()
    out = model.forward(xb)
    batch_loss = float(loss.forward(out, yb))
    if getattr(model, "_skips_input_grad", False):
        # Nothing needs the gradient of the data itself.
        cast("SkipsInputGrad", model).backward(loss.backward(), input_grad=False)
    else:
        model.backward(loss.backward())
    optimizer.step()
    return batch_loss, np.asarray(out)


def predict(model: Model, x: npt.ArrayLike, batch_size: int = 256) -> npt.NDArray[Any]:
    """The outputs of ``model`` on ``x``, batch by batch, in evaluation mode.

    The model is switched to ``eval()`` for the pass and back to its
    previous mode afterwards.  A :class:`cnnext.nn.Sequential` runs through
    its whole-network plan.

    Parameters
    ----------
    model : cnnext.nn.Module
    x : array_like
        Inputs, samples along the first axis; never modified.
    batch_size : int >= 1

    Returns
    -------
    ndarray
        The outputs of every batch, concatenated along the first axis.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> from cnnext.train import predict
    >>> model = nn.Sequential(nn.Dense(2, 3, seed=0), nn.ReLU())
    >>> predict(model, np.ones((5, 2), np.float32), batch_size=2).shape
    (5, 3)
    """
    fname = "predict"
    _check_api(fname, "model", model, ("forward",))
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"{fname}: x must have a sample axis, got 0-D input")
    batch_size = V.as_int(fname, "batch_size", batch_size, 1)
    was_training = getattr(model, "training", None)
    if hasattr(model, "eval"):
        model.eval()
    try:
        outs = []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            plan = _net_plan(model, xb.shape, False)
            outs.append(np.asarray(model.forward(xb) if plan is None else plan.forward(xb)))
    finally:
        _restore_mode(model, was_training)
    if not outs:
        return np.asarray(model.forward(x))
    return np.concatenate(outs)


def fit(
    model: TrainableModel,
    loss: TrainableLoss,
    optimizer: Optimizer,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    epochs: int,
    batch_size: int,
    shuffle: bool = True,
    seed: Seed = None,
    validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], object] | None = None,
    distributed: bool = False,
    comm: Any = None,
) -> dict[str, list[float]]:
    """Train ``model`` on ``(x, y)`` with mini-batch gradient descent.

    Each step runs ``optimizer.zero_grad()``, ``model.forward``,
    ``loss.forward``, ``model.backward(loss.backward())`` and
    ``optimizer.step()`` (for a :class:`cnnext.nn.Sequential`, through its
    whole-network plan: the same arithmetic).  The model is in training mode during the epochs,
    in evaluation mode during validation, and is left in the mode it had
    before the call.

    Parameters
    ----------
    model : cnnext.nn.Module
    loss : loss with ``forward(pred, target) -> float`` and ``backward()``
    optimizer : optimizer with ``zero_grad()`` and ``step()`` over the
        model's parameters
    x, y : array_like
        Training inputs and targets (same length); never modified.
    epochs : int >= 0
    batch_size : int >= 1
        The last batch of an epoch may be smaller.
    shuffle : bool
        Visit the samples in a new random order every epoch.
    seed : int, numpy.random.Generator or None
        Source of the shuffling order (None: fresh entropy).
    validation_data : (x_val, y_val), optional
        Evaluated (:func:`evaluate`) after every epoch.
    progress : bool or None
        Progress bar on ``sys.stderr``: None shows it only when stderr is a
        terminal, True always, False never (module docstring).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, logs)`` after each epoch, with the
        1-based epoch number and that epoch's entries of the history (e.g.
        for printing or early checkpoints).
    distributed : bool
        Data-parallel training over MPI, one process per rank, all running
        this same call (:mod:`cnnext.distributed`; needs mpi4py):
        ``batch_size`` is the global batch, of which each rank computes its
        share; the gradients are averaged over the ranks before every
        ``optimizer.step()``; rank 0's order, weights and buffers are used
        everywhere; the history and validation are over all ranks; only
        rank 0 shows a progress bar.  An exception escaping on one rank
        ends the whole job.  With float64 the weights after training equal
        (to rounding) those of one process with the same global batch.
    comm : mpi4py communicator, optional
        The ranks that train together (implies ``distributed``; default
        ``MPI.COMM_WORLD``).

    Returns
    -------
    history : dict of lists, one entry per epoch
        ``"epoch"`` (1-based), ``"loss"`` (sample-weighted mean training
        loss of the epoch, measured during training), ``"accuracy"``
        (training accuracy measured the same way; NaN when it does not
        apply), ``"time"`` (seconds of training, excluding validation),
        and with ``validation_data`` also ``"val_loss"`` and
        ``"val_accuracy"``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn, optim
    >>> from cnnext.train import fit
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 2)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int64)
    >>> model = nn.Sequential(nn.Dense(2, 8, seed=rng), nn.ReLU(), nn.Dense(8, 2, seed=rng))
    >>> hist = fit(model, nn.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.5), x, y,
    ...            epochs=20, batch_size=16, seed=0, progress=False)
    >>> hist["accuracy"][-1] > 0.9
    True
    """
    fname = "fit"
    _check_api(fname, "model", model, ("forward", "backward"))
    _check_api(fname, "loss", loss, ("forward", "backward"))
    _check_api(fname, "optimizer", optimizer, ("zero_grad", "step"))
    x, y = _xy(fname, x, y)
    epochs = V.as_int(fname, "epochs", epochs, 0)
    batch_size = V.as_int(fname, "batch_size", batch_size, 1)
    shuffle = V.boolean(fname, "shuffle", shuffle)
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"{fname}: progress must be True, False or None, got {progress!r}")
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"{fname}: on_epoch_end must be callable, got {on_epoch_end!r}")
    if validation_data is not None:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise TypeError(f"{fname}: validation_data must be a pair (x_val, y_val)")
        x_val, y_val = _xy(fname, *validation_data, xname="x_val", yname="y_val")
    rng = V.rng(fname, seed)
    dist = None
    if V.boolean(fname, "distributed", distributed) or comm is not None:
        from .distributed import _FitSession

        dist = _FitSession(model, optimizer, comm)
        optimizer = dist.optimizer
        if dist.rank != 0:
            progress = False

    n = len(x)
    history: dict[str, list[float]] = {"epoch": [], "loss": [], "accuracy": [], "time": []}
    if validation_data is not None:
        history["val_loss"] = []
        history["val_accuracy"] = []
    was_training = getattr(model, "training", None)
    try:
        for epoch in range(1, epochs + 1):
            if hasattr(model, "train"):
                model.train()
            order = rng.permutation(n) if shuffle else None
            if dist is None:
                spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
            else:  # this rank's share of each global batch of rank 0's order
                order, spans = dist.order(order), dist.spans(n, batch_size)
            bar = _make_bar(progress, sum(hi - lo for lo, hi in spans), f"epoch {epoch}/{epochs}")
            start_time = time.perf_counter()
            total_loss, correct, n_acc, seen = 0.0, 0, 0, 0
            plan = None
            try:
                for lo, hi in spans:
                    if order is None:
                        xb, yb = x[lo:hi], y[lo:hi]
                    else:
                        idx = order[lo:hi]
                        xb, yb = x[idx], y[idx]
                    if dist is not None and not dist.begin_step(len(xb)):
                        continue  # an empty share of a short last batch
                    # The last batch's plan while it is valid for this one (a plan
                    # checks the model it was made for: layers, arrays, modes).
                    if plan is None or plan.input_shape != xb.shape or not plan.valid:
                        plan = _net_plan(model, xb.shape, True)
                    out: npt.NDArray[Any]
                    if plan is not None:
                        batch_loss, out = plan._step(fname, xb, yb, loss, optimizer,
                                                     checked=True)
                    else:
                        batch_loss, out = _layered_step(model, loss, optimizer, xb, yb)
                    total_loss += batch_loss * len(xb)
                    c = _n_correct(out, yb)
                    if c is not None:
                        correct += c
                        n_acc += len(xb)
                    seen += len(xb)
                    if bar is not None:
                        bar.update(len(xb))
                        bar.set_postfix_str(f"loss {total_loss / seen:.4f}", refresh=False)
            finally:
                if bar is not None:
                    bar.close()
            if dist is not None:
                total_loss, n_right, n_acc_all = dist.end_epoch(total_loss, correct, n_acc)
                correct, n_acc = int(n_right), int(n_acc_all)
            elapsed = time.perf_counter() - start_time
            logs = {
                "epoch": epoch,
                "loss": total_loss / n if n else float("nan"),
                "accuracy": correct / n_acc if n_acc and n_acc == n else float("nan"),
                "time": elapsed,
            }
            if validation_data is not None:
                r = evaluate(model, loss, x_val, y_val, batch_size=max(batch_size, 256),
                             comm=None if dist is None else dist.comm)
                logs["val_loss"], logs["val_accuracy"] = r["loss"], r["accuracy"]
            for key, value in logs.items():
                history[key].append(value)
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(logs))
    except BaseException as exc:
        if dist is not None:  # the other ranks would wait for this one forever
            dist.abort(exc)
        raise
    finally:
        _restore_mode(model, was_training)
    return history
