"""Data-parallel training over MPI: one process (rank) per shard of every batch.

Every rank holds the whole model.  Each step, every rank computes the
gradient of its share of the global batch; one in-place ``Allreduce`` of all
gradients (packed in one preallocated flat buffer, each rank's weighted by
its sample count) gives every rank the gradient of the whole global batch,
and every rank then takes the same optimizer step.  The ranks' weights stay
identical without ever being sent again.

Start the processes with the MPI launcher, e.g. ``mpiexec -n 4 python
train.py`` or ``mpiexec -n 4 cnnext train --model lenet5 --distributed``.
Needs mpi4py and an MPI implementation: ``pip install "cnnext[mpi]" mpich``
(on a cluster, build mpi4py against the site's MPI instead).

:func:`cnnext.train.fit` does all of this with ``distributed=True``; the
pieces are public for a training loop of one's own:

* :func:`init` -- start MPI, make a failing rank end the whole job, and
  share the machine's cores among its ranks;
* :func:`rank`, :func:`size`;
* :func:`broadcast_parameters` -- rank 0's weights and buffers to all ranks;
* :func:`average_buffers` -- the running statistics averaged over the ranks;
* :class:`DistributedOptimizer` -- reduce the gradients, then step;
* :class:`ShardedSampler` -- this rank's share of every global batch of one
  shared permutation.

Failure handling
----------------
MPI has no notion of a rank that went away: the others wait for it in the
next collective operation forever.  After :func:`init`:

* an uncaught exception on any rank prints its traceback and calls
  ``MPI_Abort``, which ends every rank (:func:`cnnext.train.fit` does the
  same for any exception, ``SystemExit`` and ``KeyboardInterrupt``
  included, that escapes it on one rank);
* a rank that exits normally (``sys.exit``, the end of the script) first
  waits up to ``exit_timeout`` seconds for every other rank to reach its
  own exit, and calls ``MPI_Abort`` when they do not (they are still
  waiting for it in a collective operation);
* a rank killed by a signal is seen by the launcher (``mpiexec``,
  ``mpirun``, ``srun --kill-on-bad-exit``), which ends the others.

In every case the launcher exits with a non-zero status.

Batch normalization
-------------------
Each rank normalizes its share of the batch with that share's statistics
(as PyTorch's ``DistributedDataParallel`` does without ``SyncBatchNorm``).
The running statistics are averaged over the ranks at the end of every
epoch by :func:`cnnext.train.fit` (:func:`average_buffers`), so every rank
evaluates and saves the same model, estimated from all the shards rather
than rank 0's alone (PyTorch's default copies rank 0's).
"""
from __future__ import annotations

import atexit
import os
import sys
import time
import traceback
from collections.abc import Iterator
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _config
from . import _validate as V

if TYPE_CHECKING:
    from ._typing import FloatArray, Optimizer, Seed

__all__ = [
    "init",
    "rank",
    "size",
    "broadcast_parameters",
    "average_buffers",
    "DistributedOptimizer",
    "ShardedSampler",
]

_INSTALL = (
    'cnnext.distributed needs mpi4py and an MPI implementation: pip install "cnnext[mpi]" '
    "mpich (or, on a cluster, mpi4py built against the site's MPI)"
)

# The communicator of init() and its exit settings (one per process).
_comm: Any = None
_exit_timeout = 10.0


def _mpi() -> ModuleType:
    """mpi4py's MPI module, imported (and MPI started) on first use."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc})") from exc
    except RuntimeError as exc:  # mpi4py present, but no MPI library it can load
        raise ImportError(f"{_INSTALL} ({exc})") from exc
    return sys.modules[MPI.__name__]  # typed ModuleType with or without mpi4py's stubs


def _world(comm: Any) -> Any:
    """``comm``, or the communicator of :func:`init` (started on first use)."""
    if comm is not None:
        return comm
    return _comm if _comm is not None else init()


# --------------------------------------------------------------------------
# start-up and failure handling
# --------------------------------------------------------------------------


def init(
    comm: Any = None, threads: int | None = None, exit_timeout: float = 10.0, bind: bool = True
) -> Any:
    """Start MPI for data-parallel training; returns the communicator.

    Installs the failure handling described in the module docstring and sets
    the kernel thread count.  Calling it again only changes the settings.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        The ranks that train together (default ``MPI.COMM_WORLD``).
    threads : int >= 1, optional
        Kernel threads of this rank.  Default: the cores this rank may run
        on divided by the ranks of this machine that may run on them too (at
        least 1): all cores / ranks per machine when the launcher does not
        bind ranks to cores, the rank's own cores when it does.  With
        ``OMP_NUM_THREADS`` set, that count instead.
    bind : bool
        When the launcher left every rank of this machine free to run on
        the same cores and there are at least as many cores as ranks, pin
        each rank to its own share of them (what ``mpiexec -bind-to core``
        does).  Unpinned ranks that wait for each other at every step are
        often scheduled onto the same core by the operating system
        (measured: a 2-rank step took as long as the two ranks' compute
        one after the other).
    exit_timeout : float > 0
        Seconds a rank that exits waits for the other ranks to exit too
        before it ends the whole job.  Raise it when one rank works alone
        for longer at the end of the program (or have the others wait for
        it in ``comm.Barrier()``).

    Returns
    -------
    mpi4py communicator

    Notes
    -----
    Under plain ``python`` (no launcher) the job has one rank, and code
    written for many ranks runs unchanged.

    Examples
    --------
    >>> from cnnext import distributed
    >>> comm = distributed.init()
    >>> distributed.rank(), distributed.size()  # ranks 0 to 3 of 4 under mpiexec -n 4
    (0, 1)
    """
    global _comm, _exit_timeout
    MPI = _mpi()
    first = _comm is None
    _comm = MPI.COMM_WORLD if comm is None else comm
    _exit_timeout = V.real("init", "exit_timeout", exit_timeout, 0.0, low_open=True)
    if threads is not None:
        threads = V.as_int("init", "threads", threads, 1)
    cores = _place(MPI, _comm, V.boolean("init", "bind", bind))
    if threads is not None:
        _config.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        _config.set_num_threads(cores)
    if first:
        previous = sys.excepthook

        def abort_on_exception(
            kind: type[BaseException], exc: BaseException, tb: TracebackType | None
        ) -> None:
            previous(kind, exc, tb)
            _abort(1)

        sys.excepthook = abort_on_exception
        atexit.register(_exit_together)
    return _comm


def _place(MPI: ModuleType, comm: Any, bind: bool) -> int:
    """This rank's share of its cores: their count, the cores it may run on
    divided by the ranks of this machine that may run on them too.  With
    ``bind``, when every local rank may run on the same cores and there are
    enough of them, pins local rank ``i`` to the ``i``-th share."""
    can_pin = hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity")
    if can_pin:
        mine = frozenset(os.sched_getaffinity(0))
    else:
        mine = frozenset(range(os.cpu_count() or 1))
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        sets = local.allgather(mine)
        index = local.Get_rank()
    finally:
        local.Free()
    sharing = sum(1 for other in sets if other & mine)
    share = max(1, len(mine) // max(1, sharing))
    if bind and can_pin and 1 < len(sets) <= len(mine) and all(o == mine for o in sets):
        os.sched_setaffinity(0, sorted(mine)[index * share:(index + 1) * share])
    return share


def _abort(status: int) -> None:
    """End every rank of the job with ``status`` (never returns)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    # The launcher forwards the ranks' output asynchronously and drops what
    # is still in flight when the job is torn down: give it a moment.
    time.sleep(0.25)
    (_comm if _comm is not None else _mpi().COMM_WORLD).Abort(status)


def _exit_together() -> None:
    """At exit: wait for every rank to get here, or end the job."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or _comm is None or MPI.Is_finalized():
        return
    request = _comm.Ibarrier()
    deadline = time.monotonic() + _exit_timeout
    while not request.Test():
        if time.monotonic() > deadline:
            print(
                f"cnnext.distributed: rank {_comm.Get_rank()} exits while other ranks are "
                f"still running (not all reached their exit within {_exit_timeout:g} s); "
                "ending the whole job",
                file=sys.stderr,
            )
            _abort(1)
        time.sleep(0.005)


def _abort_on(exc: BaseException) -> None:
    """End the whole job because ``exc`` escapes one rank's part of a
    collective computation: print its traceback (for ``SystemExit``, its
    code), then ``MPI_Abort`` with the exit status it stands for (1 for an
    exception or a zero exit)."""
    comm = _world(None)
    status = 1
    if isinstance(exc, SystemExit):
        status = exc.code if isinstance(exc.code, int) and exc.code else 1
        print(f"cnnext.distributed: rank {comm.Get_rank()} exits (status {exc.code!r}) while "
              "the others are training; ending the whole job", file=sys.stderr)
    else:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        print(f"cnnext.distributed: rank {comm.Get_rank()} failed; ending the whole job",
              file=sys.stderr)
    _abort(status)


def rank(comm: Any = None) -> int:
    """This process's rank, 0 to ``size() - 1`` (starts MPI if needed)."""
    return int(_world(comm).Get_rank())


def size(comm: Any = None) -> int:
    """The number of ranks (starts MPI if needed)."""
    return int(_world(comm).Get_size())


# --------------------------------------------------------------------------
# model state
# --------------------------------------------------------------------------


def _named_state(model: Any) -> list[tuple[str, npt.NDArray[Any]]]:
    if not (callable(getattr(model, "named_parameters", None))
            and callable(getattr(model, "named_buffers", None))):
        raise TypeError(
            f"a model must have named_parameters() and named_buffers() (a cnnext.nn.Module), "
            f"got {type(model).__name__}"
        )
    return [(n, p) for n, p, _ in model.named_parameters()] + list(model.named_buffers())


def broadcast_parameters(model: Any, root: int = 0, comm: Any = None) -> None:
    """Copy rank ``root``'s parameters and buffers into every rank's model, in place.

    Call it once before training so that every rank starts from the same
    weights (and running statistics).

    Parameters
    ----------
    model : cnnext.nn.Module
        The same architecture on every rank.
    root : int
        The rank whose state is sent.
    comm : mpi4py communicator, optional
        Default: the one of :func:`init`.

    Examples
    --------
    >>> from cnnext import distributed, models
    >>> model = models.lenet5(seed=0)
    >>> distributed.broadcast_parameters(model)  # every rank now holds rank 0's weights
    """
    comm = _world(comm)
    state = _named_state(model)
    mine = [(name, a.shape, a.dtype.str) for name, a in state]
    theirs = comm.bcast(mine, root=root)
    if theirs != mine:
        diff = sorted(set(mine) ^ set(theirs), key=str)[:4]
        raise ValueError(
            f"broadcast_parameters: the model of rank {comm.Get_rank()} is not rank {root}'s "
            f"(names, shapes or dtypes differ: {diff})"
        )
    for _, a in state:
        comm.Bcast(a, root=root)


def average_buffers(model: Any, comm: Any = None) -> None:
    """Replace every rank's floating-point buffers (batch normalization's
    running statistics) by their mean over the ranks, and the integer ones
    (batch counters) by rank 0's, in place.

    Parameters
    ----------
    model : cnnext.nn.Module
    comm : mpi4py communicator, optional
        Default: the one of :func:`init`.

    Examples
    --------
    >>> from cnnext import distributed, nn
    >>> bn = nn.BatchNorm1D(2)
    >>> distributed.average_buffers(bn)
    >>> bn.running_var  # the mean of the ranks' running variances
    array([1., 1.], dtype=float32)
    """
    comm = _world(comm)
    MPI = _mpi()
    n = comm.Get_size()
    for _, b in model.named_buffers():
        if b.dtype.kind == "f":
            comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)
            b /= n
        else:
            comm.Bcast(b, root=0)


# --------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------


class DistributedOptimizer:
    """An optimizer whose ``step`` first averages the gradients over the ranks.

    ``step(samples)`` packs every gradient of ``model``, multiplied by this
    rank's sample count, into one preallocated flat buffer whose last entry
    is the count itself, sums the buffer over the ranks with one in-place
    ``Allreduce``, writes ``sum / total count`` back into the gradients, and
    runs the wrapped optimizer's ``step``.  The result is the gradient of
    the mean loss over the whole global batch, however unequal the ranks'
    shares (a rank with an empty share passes ``samples=0`` and zero
    gradients).  Any optimizer works: it only ever sees that gradient.

    Parameters
    ----------
    optimizer : optimizer over ``model``'s parameters
        E.g. :class:`cnnext.optim.SGD` or :class:`cnnext.optim.Adam`.
    model : cnnext.nn.Module
        The model whose gradients ``optimizer`` reads (all of one dtype).
    comm : mpi4py communicator, optional
        Default: the one of :func:`init`.

    Notes
    -----
    ``lr`` reads and sets the wrapped optimizer's learning rate; other
    attributes are the wrapped optimizer's.  ``samples`` (this rank's sample
    count) is used by ``step()`` when called without one; None (default)
    weighs every rank equally.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import distributed, nn, optim
    >>> model = nn.Sequential(nn.Dense(3, 2, seed=0))
    >>> opt = distributed.DistributedOptimizer(optim.SGD(model, lr=0.1), model)
    >>> loss, x, y = nn.SoftmaxCrossEntropy(), np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    >>> opt.zero_grad()
    >>> _ = loss.forward(model.forward(x), y); _ = model.backward(loss.backward())
    >>> opt.step(len(x))  # the mean gradient over every rank's samples, then SGD's step
    >>> opt.lr
    0.1
    """

    def __init__(self, optimizer: Optimizer, model: Any, comm: Any = None) -> None:
        fname = "DistributedOptimizer"
        for m in ("zero_grad", "step"):
            if not callable(getattr(optimizer, m, None)):
                raise TypeError(f"{fname}: optimizer must have a {m}() method "
                                f"({type(optimizer).__name__} has none)")
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError(f"{fname}: optimizer is already a DistributedOptimizer")
        if not callable(getattr(model, "named_parameters", None)):
            raise TypeError(f"{fname}: model must have named_parameters() (a cnnext.nn.Module), "
                            f"got {type(model).__name__}")
        grads = [g for _, _, g in model.named_parameters()]
        if not grads:
            raise ValueError(f"{fname}: model has no parameters; there is nothing to reduce")
        dtypes = sorted({str(g.dtype) for g in grads})
        if len(dtypes) != 1:
            raise TypeError(f"{fname}: the model's gradients must share one dtype, got {dtypes}")
        self.optimizer = optimizer
        self.comm = _world(comm)
        self.samples: int | None = None
        self._MPI = _mpi()
        self._grads = grads
        self._buffer: FloatArray = np.empty(sum(g.size for g in grads) + 1, grads[0].dtype)
        views, start = [], 0
        for g in grads:
            views.append(self._buffer[start:start + g.size].reshape(g.shape))
            start += g.size
        self._views = views

    @property
    def lr(self) -> float:
        """The wrapped optimizer's learning rate."""
        return float(getattr(self.optimizer, "lr"))  # noqa: B009 - any optimizer with an lr

    @lr.setter
    def lr(self, value: float) -> None:
        setattr(self.optimizer, "lr", value)  # noqa: B010

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def zero_grad(self) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.optimizer.zero_grad()

    def step(self, samples: int | None = None) -> None:
        """Reduce the gradients over the ranks, then take the wrapped step.

        Parameters
        ----------
        samples : int >= 0, optional
            This rank's sample count in this step (default: the ``samples``
            attribute; None weighs every rank equally).
        """
        if samples is None:
            samples = self.samples
        k = 1 if samples is None else V.as_int("DistributedOptimizer.step", "samples", samples, 0)
        buf = self._buffer
        for g, view in zip(self._grads, self._views):
            np.multiply(g, k, out=view)
        buf[-1] = k
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        total = buf[-1]
        if total == 0:  # no rank had a sample: nothing to learn from
            return
        for g, view in zip(self._grads, self._views):
            np.divide(view, total, out=g)
        self.optimizer.step()


# --------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------


def _share(lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part of ``[lo, hi)`` split among ``size``
    ranks (the first ``(hi - lo) % size`` parts one longer)."""
    n = hi - lo
    q, r = divmod(n, size)
    start = lo + rank * q + min(rank, r)
    return start, start + q + (rank < r)


def _spans(n: int, batch_size: int, rank: int = 0, size: int = 1) -> list[tuple[int, int]]:
    """This rank's ``(start, stop)`` share of every global batch
    ``[s, s + batch_size)`` of ``n`` positions (shares may be empty)."""
    return [_share(s, min(s + batch_size, n), rank, size) for s in range(0, n, batch_size)]


class ShardedSampler:
    """This rank's share of every global batch of one shared permutation.

    Each epoch rank 0 draws a permutation of ``range(n)`` (or keeps the
    order, without ``shuffle``) and sends it to every rank; iterating yields
    this rank's indices of each global batch of ``batch_size`` positions,
    split among the ranks in contiguous parts that differ by at most one
    sample.  The global batches are exactly those a single process would
    train on with the same seed (:func:`cnnext.train.fit` draws its orders
    the same way).

    Parameters
    ----------
    n : int >= 0
        Number of samples.
    batch_size : int >= 1
        The global batch size.
    shuffle : bool
    seed : int, numpy.random.Generator or None
        Rank 0's source of the permutations.
    comm : mpi4py communicator, optional
        Default: the one of :func:`init`.

    Notes
    -----
    ``len(sampler)`` is the number of global batches, the same on every
    rank; a rank's share of a short last batch may be empty, and that rank
    must still take part in the step (``DistributedOptimizer.step(0)``).

    Examples
    --------
    >>> from cnnext import distributed
    >>> sampler = distributed.ShardedSampler(10, 4, shuffle=False)
    >>> [idx.tolist() for idx in sampler]  # rank 0 of 2 would get [[0, 1], [4, 5], [8]]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: Seed = None,
                 comm: Any = None) -> None:
        fname = "ShardedSampler"
        self.n = V.as_int(fname, "n", n, 0)
        self.batch_size = V.as_int(fname, "batch_size", batch_size, 1)
        self.shuffle = V.boolean(fname, "shuffle", shuffle)
        self.comm = _world(comm)
        self._rng = V.rng(fname, seed)
        self._spans = _spans(self.n, self.batch_size, self.comm.Get_rank(), self.comm.Get_size())

    def __len__(self) -> int:
        return len(self._spans)

    def order(self) -> npt.NDArray[np.int64]:
        """The next epoch's order, rank 0's, the same on every rank."""
        order = self._rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        return _shared_order(order, self.comm)

    def __iter__(self) -> Iterator[npt.NDArray[np.int64]]:
        order = self.order()
        for lo, hi in self._spans:
            yield order[lo:hi]


def _shared_order(order: npt.NDArray[np.integer[Any]], comm: Any) -> npt.NDArray[np.int64]:
    """Rank 0's ``order`` on every rank (int64)."""
    out = np.ascontiguousarray(order, dtype=np.int64)
    comm.Bcast(out, root=0)
    return out


def _sum_over_ranks(values: tuple[float, ...], comm: Any) -> tuple[float, ...]:
    """Each of ``values`` summed over the ranks (one ``Allreduce``)."""
    MPI = _mpi()
    buf = np.array(values, dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return tuple(float(v) for v in buf)


# --------------------------------------------------------------------------
# what cnnext.train.fit needs
# --------------------------------------------------------------------------


class _FitSession:
    """The distributed parts of one :func:`cnnext.train.fit` call.

    Made after fit has checked its arguments: starts MPI (:func:`init`,
    unless done), sends rank 0's weights and buffers to every rank and wraps
    the optimizer.
    """

    def __init__(self, model: Any, optimizer: Optimizer, comm: Any) -> None:
        if _comm is None:
            init(comm)
        self.comm = _world(comm)
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        broadcast_parameters(model, comm=self.comm)
        self.optimizer = (
            optimizer if isinstance(optimizer, DistributedOptimizer)
            else DistributedOptimizer(optimizer, model, self.comm)
        )
        if self.optimizer.comm is not self.comm:
            raise ValueError("fit: the DistributedOptimizer's communicator must be comm")
        self.model = model

    def spans(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        """This rank's share of every global batch."""
        return _spans(n, batch_size, self.rank, self.size)

    def order(self, order: npt.NDArray[np.integer[Any]] | None) -> npt.NDArray[Any] | None:
        """Rank 0's shuffling order on every rank (None stays None)."""
        return None if order is None else _shared_order(order, self.comm)

    def begin_step(self, samples: int) -> bool:
        """Record this rank's sample count for the coming ``step``; with an
        empty share, take part in the step with zero gradients and return
        False (the caller skips the batch)."""
        self.optimizer.samples = samples
        if samples:
            return True
        self.optimizer.zero_grad()
        self.optimizer.step()
        return False

    def end_epoch(self, *totals: float) -> tuple[float, ...]:
        """The epoch's totals summed over the ranks; averages the running
        statistics so every rank holds the same model."""
        average_buffers(self.model, self.comm)
        return _sum_over_ranks(totals, self.comm)

    def abort(self, exc: BaseException) -> None:
        """End the whole job: ``exc`` escapes this rank's part of the training."""
        _abort_on(exc)
