"""Process-wide settings: the compute backend, the convolution algorithm and
the kernel thread count."""
from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Literal, SupportsIndex

from . import _openmp

__all__ = [
    "set_backend",
    "get_backend",
    "use_backend",
    "set_conv_algorithm",
    "get_conv_algorithm",
    "use_conv_algorithm",
    "set_num_threads",
    "get_num_threads",
]

#: The idle-worker policy of the OpenMP runtime cnnext's kernels run on:
#: the user's ``OMP_WAIT_POLICY``, ``"PASSIVE"`` (set by cnnext while its
#: runtime loaded), or None: a runtime loaded before cnnext (PyTorch's, when
#: torch is imported first) keeps its own default, spinning for a while.
OMP_WAIT_POLICY: str | None = None

_BACKENDS = ("cython", "numpy")
# A ContextVar: ``use_backend`` in one thread (or asyncio task) never changes
# what another one computes with.  ``set_backend`` sets the default for
# contexts that have not overridden it.
_default_backend = "cython"
_backend_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cnnext_backend", default=None
)


def _check_backend(name: object) -> str:
    if not isinstance(name, str) or name not in _BACKENDS:
        raise ValueError(
            f"set_backend: backend must be one of {_BACKENDS}, got {name!r}"
        )
    return name


def set_backend(name: Literal["cython", "numpy"]) -> None:
    """Select the implementation behind :mod:`cnnext.functional`.

    Parameters
    ----------
    name : {"cython", "numpy"}
        ``"cython"`` (default) runs the compiled kernels; ``"numpy"`` runs
        :mod:`cnnext.reference`, the slow, independent numpy implementation
        (useful to cross-check a result).

    Examples
    --------
    >>> import cnnext
    >>> cnnext.set_backend("numpy"); cnnext.get_backend()
    'numpy'
    >>> cnnext.set_backend("cython")
    """
    global _default_backend
    _default_backend = _check_backend(name)


def get_backend() -> str:
    """Name of the backend in force in the current context."""
    override = _backend_override.get()
    return override if override is not None else _default_backend


def compiled_backend() -> bool:
    """True when the compiled kernels are the backend in force (the hot-path
    form of ``get_backend() == "cython"``)."""
    override = _backend_override.get()
    return (override or _default_backend) == "cython"


@contextlib.contextmanager
def use_backend(name: Literal["cython", "numpy"]) -> Iterator[None]:
    """Context manager: use backend ``name`` inside the ``with`` block only.

    Examples
    --------
    >>> import cnnext
    >>> with cnnext.use_backend("numpy"):
    ...     cnnext.get_backend()
    'numpy'
    >>> cnnext.get_backend()
    'cython'
    """
    token = _backend_override.set(_check_backend(name))
    try:
        yield
    finally:
        _backend_override.reset(token)


_CONV_ALGORITHMS = ("auto", "direct", "winograd")
# Like the backend: a process default and a per-context override.
_default_conv_algorithm = "auto"
_conv_algorithm_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cnnext_conv_algorithm", default=None
)


def _check_conv_algorithm(fname: str, name: object) -> str:
    if not isinstance(name, str) or name not in _CONV_ALGORITHMS:
        raise ValueError(
            f"{fname}: algorithm must be one of {_CONV_ALGORITHMS}, got {name!r}"
        )
    return name


def set_conv_algorithm(name: Literal["auto", "direct", "winograd"]) -> None:
    """Choose how the compiled backend computes 2-D convolutions.

    Parameters
    ----------
    name : {"auto", "direct", "winograd"}
        ``"direct"``: every convolution on the direct (im2col-GEMM) kernels.
        ``"winograd"``: Winograd's F(2x2, 3x3) algorithm for every float32
        3x3 convolution with stride 1, ``groups=1`` and padding at most 2,
        forward and backward, for dilated ones (any padding) on their
        dilation phases, and for 5x5 ones (undilated, padding at most 2) on
        four shifted views (the weight gradient direct); any other
        convolution (and a call
        whose input, weight or upstream gradient holds inf or NaN) falls back
        to the direct kernels.  ``"auto"`` (default): Winograd only where it
        is both faster and accurate enough -- the rule is in
        :doc:`/convolution-algorithms`; each plan records its choice and the
        reason (``plan.method``, ``plan.reason``).

    Notes
    -----
    Winograd trades a little float32 accuracy for speed: on realistic data
    (64-512 channels) its relative error measured 0.9-2.6 times the direct
    algorithm's (1.7 for 5x5 kernels); ``"auto"`` keeps to cases within 4 times.  ``float64``
    always runs direct.

    Examples
    --------
    >>> import cnnext
    >>> cnnext.set_conv_algorithm("direct"); cnnext.get_conv_algorithm()
    'direct'
    >>> cnnext.set_conv_algorithm("auto")
    """
    global _default_conv_algorithm
    _default_conv_algorithm = _check_conv_algorithm("set_conv_algorithm", name)


def get_conv_algorithm() -> str:
    """Name of the convolution algorithm setting in force in the current
    context (see :func:`set_conv_algorithm`)."""
    override = _conv_algorithm_override.get()
    return override if override is not None else _default_conv_algorithm


@contextlib.contextmanager
def use_conv_algorithm(name: Literal["auto", "direct", "winograd"]) -> Iterator[None]:
    """Context manager: use convolution algorithm ``name`` (see
    :func:`set_conv_algorithm`) inside the ``with`` block only, in this
    thread or asyncio task.

    Examples
    --------
    >>> import cnnext
    >>> with cnnext.use_conv_algorithm("winograd"):
    ...     cnnext.get_conv_algorithm()
    'winograd'
    >>> cnnext.get_conv_algorithm()
    'auto'
    """
    token = _conv_algorithm_override.set(_check_conv_algorithm("use_conv_algorithm", name))
    try:
        yield
    finally:
        _conv_algorithm_override.reset(token)


def _threads_from_env() -> int:
    raw = os.environ.get("OMP_NUM_THREADS", "")
    try:
        # OMP_NUM_THREADS may be a list ("4,2"); the first level counts.
        n = int(raw.split(",")[0])
    except ValueError:
        n = 0
    if n >= 1:
        return n
    return max(1, os.cpu_count() or 1)


_num_threads = _threads_from_env()


def set_num_threads(n: SupportsIndex) -> None:
    """Set how many threads the kernels use (OpenMP team size).

    The default honours ``OMP_NUM_THREADS`` and otherwise uses every core.
    Safe to call at any time, from any thread.  Pooling, activations, the
    convolution forward pass and input gradient, and ``linear`` are bitwise
    independent of the thread count; a convolution's weight gradient adds
    per-thread partial sums in a fixed order, so it is bitwise reproducible
    for a given thread count and may differ in the last bits between counts.

    Parameters
    ----------
    n : int
        Number of threads, >= 1.

    Examples
    --------
    >>> import cnnext
    >>> old = cnnext.get_num_threads()
    >>> cnnext.set_num_threads(1); cnnext.get_num_threads()
    1
    >>> cnnext.set_num_threads(old)
    """
    global _num_threads, _kernel_threads
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an integer, got {type(n).__name__}")
    count = int(n.__index__() if not isinstance(n, int) else n)
    if count < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {count}")
    _num_threads = min(count, 1024)
    _kernel_threads = _num_threads if _HAVE_OPENMP else 1


_HAVE_OPENMP = _openmp.openmp_available()
# What get_num_threads returns, kept up to date by set_num_threads (read on
# every call, so it is a plain module attribute).
_kernel_threads = _num_threads if _HAVE_OPENMP else 1


def get_num_threads() -> int:
    """Number of threads the kernels use (see :func:`set_num_threads`)."""
    return _kernel_threads
