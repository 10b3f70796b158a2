"""Activations, softmax and the softmax cross-entropy loss, in float64."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from ._common import _f64, _nan_quiet

if TYPE_CHECKING:
    from .._typing import FloatArray

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


def relu(x: FloatArray) -> FloatArray:
    """Rectified linear unit, ``max(x, 0)``.

    Parameters
    ----------
    x : ndarray
        Any shape.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Notes
    -----
    NaN propagates (as ``torch.relu``).

    Examples
    --------
    >>> relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    """
    return np.where(x > 0, x, np.where(np.isnan(x), x, 0)).astype(
        x.dtype, copy=False)


def relu_backward(grad_out: FloatArray, x: FloatArray) -> FloatArray:
    """Gradient of :func:`relu`.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient, same shape as ``x``.
    x : ndarray
        The forward input (or output: they have the same sign).

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out`` where ``x > 0``, else 0; at ``x == 0`` the gradient is 0.

    Notes
    -----
    Written as PyTorch's ``threshold_backward``: ``0 if x <= 0 else grad``,
    so a NaN ``x`` passes the gradient through.

    Examples
    --------
    >>> relu_backward(np.array([5.0, 5.0, 5.0]), np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 5.])
    """
    return np.where(x <= 0, 0, grad_out).astype(grad_out.dtype, copy=False)


@_nan_quiet
def leaky_relu(x: FloatArray, negative_slope: float = 0.01) -> FloatArray:
    """Leaky rectified linear unit.

    Parameters
    ----------
    x : ndarray
        Any shape.
    negative_slope : float, optional
        Slope for ``x <= 0``.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
        ``x if x > 0 else x * negative_slope``.

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> leaky_relu(np.array([-2.0, 3.0]), 0.5)
    array([-1.,  3.])
    """
    s = x.dtype.type(negative_slope)
    return np.where(x > 0, x, x * s).astype(x.dtype, copy=False)


@_nan_quiet
def leaky_relu_backward(
    grad_out: FloatArray, x: FloatArray, negative_slope: float = 0.01
) -> FloatArray:
    """Gradient of :func:`leaky_relu`.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient, same shape as ``x``.
    x : ndarray
        The forward input.
    negative_slope : float, optional
        As given to the forward call.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out if x > 0 else grad_out * negative_slope`` (so the slope
        applies at ``x == 0``, as PyTorch).

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> leaky_relu_backward(np.array([2.0, 2.0]), np.array([0.0, 1.0]), 0.5)
    array([1., 2.])
    """
    s = grad_out.dtype.type(negative_slope)
    return np.where(x > 0, grad_out, grad_out * s).astype(
        grad_out.dtype, copy=False)


@_nan_quiet
def sigmoid(x: FloatArray) -> FloatArray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, without overflow.

    Parameters
    ----------
    x : ndarray
        Any shape.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Notes
    -----
    With ``z = exp(-|x|)`` (which never overflows), ``sigmoid(x)`` is
    ``1 / (1 + z)`` for ``x >= 0`` and ``z / (1 + z)`` for ``x < 0``.

    Examples
    --------
    >>> sigmoid(np.array([0.0, np.log(3.0)]))
    array([0.5 , 0.75])
    """
    x64 = _f64(x)
    z = np.exp(-np.abs(x64))
    y = np.where(x64 >= 0, 1.0 / (1.0 + z), z / (1.0 + z))
    return y.astype(x.dtype, copy=False)


@_nan_quiet
def sigmoid_backward(grad_out: FloatArray, y: FloatArray) -> FloatArray:
    """Gradient of :func:`sigmoid`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The sigmoid *output*.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out * y * (1 - y)``.

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> sigmoid_backward(np.array([2.0]), np.array([0.75]))
    array([0.375])
    """
    y64 = _f64(y)
    return (_f64(grad_out) * y64 * (1.0 - y64)).astype(
        grad_out.dtype, copy=False)


@_nan_quiet
def tanh(x: FloatArray) -> FloatArray:
    """Hyperbolic tangent.

    Parameters
    ----------
    x : ndarray
        Any shape.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Notes
    -----
    ``np.tanh`` saturates to +-1 without overflow.

    Examples
    --------
    >>> tanh(np.array([np.log(2.0)]))
    array([0.6])
    """
    return np.tanh(_f64(x)).astype(x.dtype, copy=False)


@_nan_quiet
def tanh_backward(grad_out: FloatArray, y: FloatArray) -> FloatArray:
    """Gradient of :func:`tanh`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The tanh *output*.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out * (1 - y**2)``.

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> tanh_backward(np.array([2.0]), np.array([0.5]))
    array([1.5])
    """
    y64 = _f64(y)
    return (_f64(grad_out) * (1.0 - y64 * y64)).astype(
        grad_out.dtype, copy=False)


@_nan_quiet
def softmax(x: FloatArray, axis: int = -1) -> FloatArray:
    """Softmax along one axis, shifted by the maximum for stability.

    Parameters
    ----------
    x : ndarray
        Any shape.
    axis : int, optional
        Axis to normalise over.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
        ``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    Notes
    -----
    Subtracting the maximum keeps every exponent <= 0, so nothing overflows.

    Examples
    --------
    >>> softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    """
    x64 = _f64(x)
    e = np.exp(x64 - np.max(x64, axis=axis, keepdims=True))
    return cast("FloatArray", (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False))


@_nan_quiet
def softmax_backward(grad_out: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    """Gradient of :func:`softmax`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The softmax *output*.
    axis : int, optional
        As given to the forward call.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``y * (grad_out - sum(grad_out * y, axis))``.

    Notes
    -----
    The Jacobian-vector product of ``diag(y) - y y^T``.

    Examples
    --------
    >>> softmax_backward(np.array([1.0, 0.0]), np.array([0.25, 0.75]))
    array([ 0.1875, -0.1875])
    """
    g = _f64(grad_out)
    y64 = _f64(y)
    s = (g * y64).sum(axis=axis, keepdims=True)
    return cast("FloatArray", (y64 * (g - s)).astype(grad_out.dtype, copy=False))


@_nan_quiet
def log_softmax(x: FloatArray, axis: int = -1) -> FloatArray:
    """Logarithm of :func:`softmax`, computed directly (log-sum-exp).

    Parameters
    ----------
    x : ndarray
        Any shape.
    axis : int, optional
        Axis to normalise over.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
        ``x - max - log(sum(exp(x - max)))`` along ``axis``.

    Notes
    -----
    Never takes the log of an underflowed softmax, so large negative
    outputs stay finite.

    Examples
    --------
    >>> np.exp(log_softmax(np.array([0.0, np.log(3.0)])))
    array([0.25, 0.75])
    """
    x64 = _f64(x)
    shifted = x64 - np.max(x64, axis=axis, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return cast("FloatArray", (shifted - lse).astype(x.dtype, copy=False))


@_nan_quiet
def log_softmax_backward(
    grad_out: FloatArray, y: FloatArray, axis: int = -1
) -> FloatArray:
    """Gradient of :func:`log_softmax`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The log_softmax *output*.
    axis : int, optional
        As given to the forward call.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out - exp(y) * sum(grad_out, axis)``.

    Notes
    -----
    The Jacobian-vector product of ``I - 1 softmax^T``.

    Examples
    --------
    >>> log_softmax_backward(np.array([1.0, 0.0]), np.log([0.25, 0.75]))
    array([ 0.75, -0.75])
    """
    g = _f64(grad_out)
    s = g.sum(axis=axis, keepdims=True)
    return cast("FloatArray", (g - np.exp(_f64(y)) * s).astype(grad_out.dtype, copy=False))


@_nan_quiet
def softmax_cross_entropy(
    logits: FloatArray, labels: npt.NDArray[np.integer[Any]]
) -> tuple[float, FloatArray]:
    """Mean softmax cross-entropy loss and its gradient.

    Parameters
    ----------
    logits : ndarray, shape (N, K)
        Unnormalised class scores.
    labels : ndarray of int, shape (N,)
        Target class of each row, in ``[0, K)``.

    Returns
    -------
    loss : float
        ``mean_i(-log_softmax(logits)[i, labels[i]])``; 0.0 when ``N == 0``.
    grad_logits : ndarray, shape (N, K), dtype of ``logits``
        ``(softmax(logits) - onehot(labels)) / N``.

    Notes
    -----
    As ``torch.nn.functional.cross_entropy`` with ``reduction='mean'``,
    except that an empty batch gives 0.0 rather than NaN.

    Examples
    --------
    >>> loss, g = softmax_cross_entropy(np.array([[0.0, np.log(3.0)]]),
    ...                                 np.array([1]))
    >>> print(f"{loss:.6f}")  # -log(0.75)
    0.287682
    >>> g
    array([[ 0.25, -0.25]])
    """
    lsm = log_softmax(_f64(logits), axis=-1)
    n = lsm.shape[0]
    labels = np.asarray(labels, dtype=np.intp)
    if n == 0:
        return 0.0, np.zeros(logits.shape, dtype=logits.dtype)
    rows = np.arange(n)
    loss = float(-lsm[rows, labels].mean())
    grad = np.exp(lsm)
    grad[rows, labels] -= 1.0
    grad /= n
    return loss, grad.astype(logits.dtype, copy=False)


