"""The dense layer's op, by explicit sums in float64."""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from ._common import _f64, _nan_quiet

if TYPE_CHECKING:
    from .._typing import FloatArray

__all__ = [
    "linear",
    "linear_backward",
]


@_nan_quiet
def linear(x: FloatArray, weight: FloatArray, bias: FloatArray | None = None) -> FloatArray:
    """Fully connected layer ``y = x @ weight.T + bias``, as
    ``torch.nn.functional.linear``, by explicit sums (``einsum``) in float64.

    Parameters
    ----------
    x : ndarray, shape (N, in_features)
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), optional

    Returns
    -------
    y : ndarray, shape (N, out_features), dtype of ``x``

    Notes
    -----
    ``y[n, o] = bias[o] + sum_i x[n, i] * weight[o, i]``.

    Examples
    --------
    >>> import numpy as np
    >>> linear(np.ones((1, 2)), np.array([[1., 2.], [3., 4.]]), np.array([0.5, 0.]))
    array([[3.5, 7. ]])
    """
    y = np.einsum("ni,oi->no", _f64(x), _f64(weight))
    if bias is not None:
        y = y + _f64(bias)
    return cast("FloatArray", y.astype(x.dtype))


@_nan_quiet
def linear_backward(
    grad_out: FloatArray, x: FloatArray, weight: FloatArray, bias: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`linear`: ``(grad_x, grad_weight, grad_bias)``.

    ``grad_x[n, i] = sum_o g[n, o] w[o, i]``, ``grad_weight[o, i] =
    sum_n g[n, o] x[n, i]``, ``grad_bias[o] = sum_n g[n, o]`` (None when
    ``bias`` is False).

    Parameters
    ----------
    grad_out : ndarray, shape (N, out_features)
    x : ndarray, shape (N, in_features)
    weight : ndarray, shape (out_features, in_features)
    bias : bool

    Returns
    -------
    grad_x, grad_weight, grad_bias : ndarrays (grad_bias None without bias)

    Notes
    -----
    Shapes: ``grad_x`` as ``x``, ``grad_weight`` as ``weight``,
    ``grad_bias`` ``(out_features,)``.

    Examples
    --------
    >>> import numpy as np
    >>> gx, gw, gb = linear_backward(np.ones((1, 1)), np.array([[2., 3.]]), np.array([[1., 1.]]))
    >>> gx, gw, gb
    (array([[1., 1.]]), array([[2., 3.]]), array([1.]))
    """
    g = _f64(grad_out)
    gx = np.einsum("no,oi->ni", g, _f64(weight)).astype(x.dtype)
    gw = np.einsum("no,ni->oi", g, _f64(x)).astype(weight.dtype)
    gb = g.sum(axis=0).astype(grad_out.dtype) if bias else None
    return gx, gw, gb


