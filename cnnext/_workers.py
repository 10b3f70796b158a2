"""Daemon threads that run calls beside the caller's thread.

A batch-split whole-network plan runs slices of the batch on them, and a
convolution's backward pass may run its weight gradient on one while the
caller computes the input gradient (the kernels release the GIL).  They
are started on first use and shared; a forked child starts its own.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Worker", "beside", "workers"]

#: What a worker puts on a job's ``done`` queue: (the call's result, None)
#: or (None, the exception it raised).
Done = queue.SimpleQueue[tuple[Any, BaseException | None]]


class Worker:
    """A daemon thread running calls one at a time: ``jobs`` takes
    (call, done) pairs; ``done`` receives (the call's result, None) or
    (None, the exception it raised), for the caller's thread to raise."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], Done]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="cnnext-worker", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job, done = self.jobs.get()
            try:
                done.put((job(), None))
            except BaseException as exc:  # handed to the caller's thread  # noqa: BLE001
                done.put((None, exc))


_WORKERS: list[Worker] = []
_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_WORKERS.clear)


def workers(n: int) -> list[Worker]:
    """The first ``n`` shared workers, started as needed."""
    with _LOCK:
        while len(_WORKERS) < n:
            _WORKERS.append(Worker())
        return _WORKERS[:n]


def beside(there: Callable[[], Any], here: Callable[[], Any]) -> tuple[Any, Any]:
    """(here(), there()), ``there`` run on the first worker while the
    caller runs ``here`` (one after the other when the caller is that
    worker); an exception of either reaches the caller once both are
    done."""
    worker = workers(1)[0]
    if threading.current_thread() is worker.thread:
        return here(), there()
    done: Done = queue.SimpleQueue()
    worker.jobs.put((there, done))
    try:
        mine = here()
    finally:
        theirs, error = done.get()
    if error is not None:
        raise error
    return mine, theirs
