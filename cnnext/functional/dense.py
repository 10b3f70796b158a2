"""The dense (fully connected) layer's op, forward and backward."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast, overload

import numpy.typing as npt

from .. import _config, _plan
from .. import _validate as V
from ._common import (
    _GXW, _LINEAR_GRAD_NDIM, _LINEAR_LAYOUT, _LINEAR_NDIM, _XWB, _as, _as_grads, _float_operands,
    _numpy_backend, _operands, _shape,
)

if TYPE_CHECKING:
    from .. import reference as _ref
    from .._typing import FloatArray, FloatDType
else:  # imported at its first use (the numpy backend)
    from ._common import _reference as _ref

__all__ = [
    "linear",
    "linear_backward",
]


def _linear_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType
) -> _plan.LinearPlan:
    bshape = _shape(bias)
    return _plan.cached(
        ("linear", x.shape, w.shape, bshape, dt, _config.get_num_threads()),
        _plan.linear_plan, fname, x.shape, w.shape, bshape, dt,
    )


# --------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------


def linear(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None
) -> FloatArray:
    """Fully connected layer ``y = x @ weight.T + bias``, as
    ``torch.nn.functional.linear``.

    Runs on cnnext's own GEMM micro-kernels and thread count (no BLAS
    threads competing with the OpenMP kernels).

    Parameters
    ----------
    x : array_like, shape (N, in_features)
    weight : array_like, shape (out_features, in_features)
    bias : array_like, shape (out_features,), optional

    Returns
    -------
    y : ndarray, shape (N, out_features)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.linear(np.ones((1, 2)), np.array([[1., 2.], [3., 4.]]), np.array([0.5, 0.]))
    array([[3.5, 7. ]])
    """
    fname = "linear"
    dt = _float_operands((x, weight, bias), _LINEAR_NDIM, True, True)
    if dt is None:
        (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _LINEAR_NDIM,
                                          _LINEAR_LAYOUT)
    elif TYPE_CHECKING:  # the one-step check passed: native float arrays
        x, weight, bias = cast("tuple[FloatArray, FloatArray, FloatArray | None]",
                               (x, weight, bias))
    plan = _linear_plan(fname, x, weight, bias, dt)
    if _numpy_backend():
        return _as(_ref.linear(x, weight, bias), dt)
    return plan.forward(x, weight, bias)


@overload
def linear_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def linear_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, bias: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def linear_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, bias: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`linear`.

    Parameters
    ----------
    grad_out : array_like, shape (N, out_features)
    x : array_like, shape (N, in_features)
    weight : array_like, shape (out_features, in_features)
    bias : bool
        Whether the layer has a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape (N, in_features)
        ``grad_out @ weight``.
    grad_weight : ndarray, shape (out_features, in_features)
        ``grad_out.T @ x``.
    grad_bias : ndarray of shape (out_features,), or None
        ``grad_out.sum(axis=0)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.linear_backward(np.ones((1, 1)), np.array([[2., 3.]]), np.array([[1., 1.]]))
    (array([[1., 1.]]), array([[2., 3.]]), array([1.]))
    """
    fname = "linear_backward"
    bias = V.boolean(fname, "bias", bias)
    (g, xa, w), dt = _operands(fname, (grad_out, x, weight), _GXW, _LINEAR_GRAD_NDIM,
                               {"grad_out": "(N, out_features)"})
    plan = _linear_plan(fname, xa, w, None, dt)
    n, n_out = xa.shape[0], w.shape[0]
    if g.shape != (n, n_out):
        raise ValueError(
            f"{fname}: grad_out.shape must be (N, out_features) = {(n, n_out)} for x "
            f"{xa.shape} and weight {w.shape}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.linear_backward(g, xa, w, bias=bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


