"""Batch normalization, by per-channel sums in float64."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from ._common import _f64

if TYPE_CHECKING:
    from .._typing import FloatArray

__all__ = [
    "batch_norm",
    "batch_norm_backward",
]



def _channel_view(x: npt.NDArray[Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(axes reduced per channel, broadcast shape of a per-channel vector)."""
    return (0,) + tuple(range(2, x.ndim)), (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm(
    x: FloatArray, running_mean: FloatArray | None, running_var: FloatArray | None,
    weight: FloatArray | None = None, bias: FloatArray | None = None, training: bool = False,
    momentum: float = 0.1, eps: float = 1e-5,
) -> FloatArray:
    """Batch normalization over axis 1 of an (N, C, ...) array.

    Parameters
    ----------
    x : ndarray, shape (N, C, ...)
    running_mean, running_var : ndarray of shape (C,), or None
        Updated in place in training mode (when not None); the statistics
        used in evaluation mode.
    weight, bias : ndarray of shape (C,), optional
    training : bool
    momentum : float
    eps : float

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
        ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Notes
    -----
    Training mode normalises with the batch mean and biased variance
    (``numpy.mean``/``numpy.var`` in float64, over every axis but axis 1)
    and updates the running statistics
    ``r = (1 - momentum) * r + momentum * batch_value``, with the *unbiased*
    variance for ``running_var`` (nothing is updated for an empty batch).
    Evaluation mode uses the running statistics.

    Examples
    --------
    >>> rm, rv = np.zeros(1), np.ones(1)
    >>> batch_norm(np.array([[1.0], [3.0]]), rm, rv, training=True)
    array([[-0.999995],
           [ 0.999995]])
    >>> rm, rv
    (array([0.2]), array([1.1]))
    """
    axes, shape = _channel_view(x)
    x64 = _f64(x)
    m = x.size // x.shape[1] if x.shape[1] else 0
    if training:
        mean = x64.mean(axis=axes) if m else np.zeros(x.shape[1])
        var = x64.var(axis=axes) if m else np.ones(x.shape[1])
        if m:
            if running_mean is not None:
                running_mean[...] = (1 - momentum) * _f64(running_mean) + momentum * mean
            if running_var is not None:
                unbiased = var * m / (m - 1)
                running_var[...] = (1 - momentum) * _f64(running_var) + momentum * unbiased
    else:
        mean, var = _f64(cast("FloatArray", running_mean)), _f64(cast("FloatArray", running_var))
    y = (x64 - mean.reshape(shape)) / np.sqrt(var + eps).reshape(shape)
    if weight is not None:
        y = y * _f64(weight).reshape(shape)
    if bias is not None:
        y = y + _f64(bias).reshape(shape)
    return y.astype(x.dtype)


def batch_norm_backward(
    grad_out: FloatArray, x: FloatArray, running_mean: FloatArray | None,
    running_var: FloatArray | None, weight: FloatArray | None = None, training: bool = False,
    eps: float = 1e-5,
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of :func:`batch_norm`: (grad_x, grad_weight, grad_bias).

    Parameters
    ----------
    grad_out, x : ndarray, shape (N, C, ...)
    running_mean, running_var : ndarray of shape (C,), or None
        The statistics of an evaluation-mode forward (unused in training).
    weight : ndarray of shape (C,), optional
    training : bool
    eps : float

    Returns
    -------
    grad_x : ndarray, shape and dtype of ``x``
    grad_weight, grad_bias : ndarray of shape (C,), or None

    Notes
    -----
    In training mode the mean and variance depend on ``x``:
    ``grad_x = w / sigma * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``xhat = (x - mean) / sigma``, ``sigma = sqrt(var + eps)`` (means over
    every axis but the channel axis); in evaluation mode ``grad_x = g * w /
    sigma`` with the running statistics.  ``grad_weight = sum(g * xhat)``,
    ``grad_bias = sum(g)``; both None when ``weight`` is None.

    Examples
    --------
    >>> gx, gw, gb = batch_norm_backward(np.array([[1.0], [0.0]]), np.array([[1.0], [3.0]]),
    ...                                  None, None, np.ones(1), training=True)
    >>> gx.round(4), gw.round(6), gb
    (array([[ 0.],
           [-0.]]), array([-0.999995]), array([1.]))
    """
    axes, shape = _channel_view(x)
    x64, g64 = _f64(x), _f64(grad_out)
    if training:
        mean = x64.mean(axis=axes) if x.size else np.zeros(x.shape[1])
        var = x64.var(axis=axes) if x.size else np.ones(x.shape[1])
    else:
        mean, var = _f64(cast("FloatArray", running_mean)), _f64(cast("FloatArray", running_var))
    sigma = np.sqrt(var + eps).reshape(shape)
    xhat = (x64 - mean.reshape(shape)) / sigma
    w = np.ones(shape) if weight is None else _f64(weight).reshape(shape)
    if training and x.size:
        gx = (g64 - g64.mean(axis=axes, keepdims=True)
              - xhat * (g64 * xhat).mean(axis=axes, keepdims=True)) / sigma * w
    else:
        gx = g64 / sigma * w
    if weight is None:
        return gx.astype(x.dtype), None, None
    gw = (g64 * xhat).sum(axis=axes)
    gb = g64.sum(axis=axes)
    return gx.astype(x.dtype), gw.astype(x.dtype), gb.astype(x.dtype)
