"""Activations, softmax and the softmax cross-entropy loss, forward and
backward."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from .. import _eltwise, _plan
from .. import _validate as V
from ._common import _as, _nan_quiet, _numpy_backend, _operands

if TYPE_CHECKING:
    from .. import reference as _ref
    from .._typing import FloatArray
else:  # imported at its first use (the numpy backend)
    from ._common import _reference as _ref

__all__ = [
    "relu",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
    "softmax_cross_entropy",
]


# Elementwise results with Python-number constants end in
# .astype(dtype, copy=False): with numpy 1.x, 0-d operands follow
# value-based casting, so a Python 1 could turn a float32 result into
# float64.




def _elementwise(fname: str, named: Sequence[tuple[str, npt.ArrayLike]]) -> tuple[FloatArray, ...]:
    arrs, _ = _operands(fname, tuple(a for _, a in named), tuple(n for n, _ in named),
                        (None,) * len(named))
    if len(arrs) > 1 and arrs[0].shape != arrs[1].shape:
        desc = ", ".join(f"{n}.shape {a.shape}" for (n, _), a in zip(named, arrs))
        raise ValueError(f"{fname}: arrays must have the same shape, got {desc}")
    return arrs


def _axis(fname: str, axis: int, ndim: int) -> int:
    a = V.as_int(fname, "axis", axis)
    if not -ndim <= a < ndim:
        raise ValueError(f"{fname}: axis must be in [{-ndim}, {ndim}), got {a}")
    return a


def relu(x: npt.ArrayLike) -> FloatArray:
    """``max(x, 0)`` elementwise.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.relu([-1.0, 0.0, 2.0])
    array([0., 0., 2.])
    """
    (x,) = _elementwise("relu", [("x", x)])
    if _numpy_backend():
        return _ref.relu(x)
    out = np.empty_like(x)
    _eltwise.relu(x.reshape(-1), out.reshape(-1), _elt_threads(x.size))
    return out


def relu_backward(grad_out: npt.ArrayLike, x: npt.ArrayLike) -> FloatArray:
    """Gradient of :func:`relu`: 0 where ``x <= 0``, else ``grad_out``.

    As in PyTorch (``threshold_backward``), a NaN in ``x`` passes the
    gradient through.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.relu_backward([5.0, 5.0], [-1.0, 1.0])
    array([0., 5.])
    """
    g, x = _elementwise("relu_backward", [("grad_out", grad_out), ("x", x)])
    if _numpy_backend():
        return _ref.relu_backward(g, x)
    out = np.empty_like(g)
    _eltwise.relu_backward(g.reshape(-1), x.reshape(-1), out.reshape(-1), _elt_threads(g.size))
    return out


def _slope(fname: str, negative_slope: float) -> float:
    return V.real(fname, "negative_slope", negative_slope)


def _elt_threads(n: int) -> int:
    return _plan.threads_for(n, elements=True)


@_nan_quiet
def leaky_relu(x: npt.ArrayLike, negative_slope: float = 0.01) -> FloatArray:
    """``x`` where ``x > 0``, else ``negative_slope * x``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.leaky_relu([-2.0, 3.0], 0.5)
    array([-1.,  3.])
    """
    a = _slope("leaky_relu", negative_slope)
    (x,) = _elementwise("leaky_relu", [("x", x)])
    if _numpy_backend():
        return _ref.leaky_relu(x, a)
    return np.where(x > 0, x, x * x.dtype.type(a))


def leaky_relu_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, negative_slope: float = 0.01
) -> FloatArray:
    """Gradient of :func:`leaky_relu` (slope 1 where ``x > 0``, else ``negative_slope``).

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.leaky_relu_backward([2.0, 2.0], [-1.0, 1.0], 0.1)
    array([0.2, 2. ])
    """
    a = _slope("leaky_relu_backward", negative_slope)
    g, x = _elementwise("leaky_relu_backward", [("grad_out", grad_out), ("x", x)])
    if _numpy_backend():
        return _ref.leaky_relu_backward(g, x, a)
    out = np.empty_like(g)
    _eltwise.leaky_relu_backward(
        g.reshape(-1), x.reshape(-1), out.reshape(-1), a, _elt_threads(g.size)
    )
    return out


@_nan_quiet
def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, without overflow for large ``|x|``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.sigmoid([-1e4, 0.0, 1e4])
    array([0. , 0.5, 1. ])
    """
    (x,) = _elementwise("sigmoid", [("x", x)])
    if _numpy_backend():
        return _ref.sigmoid(x)
    # exp of a non-positive number never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


@_nan_quiet
def sigmoid_backward(grad_out: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """Gradient of :func:`sigmoid` given its *output* ``y``: ``grad_out * y * (1 - y)``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.sigmoid_backward([1.0], [0.5])
    array([0.25])
    """
    g, y = _elementwise("sigmoid_backward", [("grad_out", grad_out), ("y", y)])
    if _numpy_backend():
        return _ref.sigmoid_backward(g, y)
    return (g * y * (1 - y)).astype(g.dtype, copy=False)


def tanh(x: npt.ArrayLike) -> FloatArray:
    """Hyperbolic tangent.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.tanh([0.0, 1e4])
    array([0., 1.])
    """
    (x,) = _elementwise("tanh", [("x", x)])
    if _numpy_backend():
        return _ref.tanh(x)
    return np.tanh(x)


@_nan_quiet
def tanh_backward(grad_out: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """Gradient of :func:`tanh` given its *output* ``y``: ``grad_out * (1 - y**2)``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.tanh_backward([2.0], [0.5])
    array([1.5])
    """
    g, y = _elementwise("tanh_backward", [("grad_out", grad_out), ("y", y)])
    if _numpy_backend():
        return _ref.tanh_backward(g, y)
    return (g * (1 - y * y)).astype(g.dtype, copy=False)


@_nan_quiet
def softmax(x: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """Softmax along ``axis``, stable for large inputs (max subtracted).

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.softmax([[1e4, 1e4]])
    array([[0.5, 0.5]])
    """
    (x,) = _elementwise("softmax", [("x", x)])
    axis = _axis("softmax", axis, x.ndim)
    if x.size == 0:
        return np.empty_like(x)
    if _numpy_backend():
        return _ref.softmax(x, axis=axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return cast("FloatArray", e)


@_nan_quiet
def softmax_backward(grad_out: npt.ArrayLike, y: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """Gradient of :func:`softmax` given its output ``y``:
    ``y * (grad_out - sum(grad_out * y, axis))``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.softmax_backward([[1.0, 1.0]], [[0.5, 0.5]])
    array([[0., 0.]])
    """
    g, y = _elementwise("softmax_backward", [("grad_out", grad_out), ("y", y)])
    axis = _axis("softmax_backward", axis, y.ndim)
    if y.size == 0:
        return np.empty_like(y)
    if _numpy_backend():
        return _ref.softmax_backward(g, y, axis=axis)
    return cast(
        "FloatArray", (y * (g - (g * y).sum(axis=axis, keepdims=True))).astype(g.dtype, copy=False)
    )


@_nan_quiet
def log_softmax(x: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """``log(softmax(x))`` computed stably (log-sum-exp).

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.log_softmax([[0.0, 0.0]])
    array([[-0.69314718, -0.69314718]])
    """
    (x,) = _elementwise("log_softmax", [("x", x)])
    axis = _axis("log_softmax", axis, x.ndim)
    if x.size == 0:
        return np.empty_like(x)
    if _numpy_backend():
        return _ref.log_softmax(x, axis=axis)
    z = x - x.max(axis=axis, keepdims=True)
    return cast(
        "FloatArray",
        (z - np.log(np.exp(z).sum(axis=axis, keepdims=True))).astype(x.dtype, copy=False),
    )


@_nan_quiet
def log_softmax_backward(
    grad_out: npt.ArrayLike, y: npt.ArrayLike, axis: int = -1
) -> FloatArray:
    """Gradient of :func:`log_softmax` given its output ``y``:
    ``grad_out - exp(y) * sum(grad_out, axis)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.log_softmax_backward([[1.0, 0.0]], np.log([[0.5, 0.5]]))
    array([[ 0.5, -0.5]])
    """
    g, y = _elementwise("log_softmax_backward", [("grad_out", grad_out), ("y", y)])
    axis = _axis("log_softmax_backward", axis, y.ndim)
    if y.size == 0:
        return np.empty_like(y)
    if _numpy_backend():
        return _ref.log_softmax_backward(g, y, axis=axis)
    return cast(
        "FloatArray", (g - np.exp(y) * g.sum(axis=axis, keepdims=True)).astype(g.dtype, copy=False)
    )


@_nan_quiet
def softmax_cross_entropy(
    logits: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[float, FloatArray]:
    """Mean softmax cross-entropy and its gradient, in one stable pass.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    labels : array_like of int, shape (N,)
        Class indices in ``[0, K)``.

    Returns
    -------
    loss : float
        ``mean_i(-log_softmax(logits)[i, labels[i]])`` (0.0 for N = 0).
    grad_logits : ndarray, shape (N, K)
        ``(softmax(logits) - onehot(labels)) / N``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> loss, g = F.softmax_cross_entropy([[0.0, 0.0]], [1])
    >>> round(loss, 6), g
    (0.693147, array([[ 0.5, -0.5]]))
    """
    fname = "softmax_cross_entropy"
    (z,), dt = V.float_arrays(fname, [("logits", logits)], [(2,)], {"logits": "(N, K)"})
    y = V.as_array(fname, "labels", labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{fname}: labels must be integer class indices, got dtype {y.dtype}")
    N, K = z.shape
    if y.shape != (N,):
        raise ValueError(
            f"{fname}: labels.shape must be ({N},) to match logits {z.shape}, got {y.shape}"
        )
    y = np.ascontiguousarray(y, dtype=np.int64)
    if N and not _eltwise.indices_within(y.reshape(-1), 0, K):
        raise ValueError(
            f"{fname}: labels must lie in [0, {K}) for {K} classes, got values in "
            f"[{y.min()}, {y.max()}]"
        )
    if _numpy_backend():
        loss, g = _ref.softmax_cross_entropy(z, y)
        return float(loss), _as(g, dt)
    if N == 0:
        return 0.0, np.zeros((0, K), dtype=dt)
    g = np.empty((N, K), dtype=dt)
    loss = _eltwise.softmax_cross_entropy(z, y, g)
    return float(loss), g


