"""Batch normalization, forward and backward."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast, overload

import numpy as np
import numpy.typing as npt

from .. import _config, _plan
from .. import _validate as V
from ._common import _as, _nan_quiet, _numpy_backend

if TYPE_CHECKING:
    from .. import reference as _ref
    from .._typing import FloatArray, FloatDType
else:  # imported at its first use (the numpy backend)
    from ._common import _reference as _ref

__all__ = [
    "batch_norm",
    "batch_norm_backward",
]


_BN_NDIM = (2, 3, 4)
_BN_FULL = ("x", "grad_out")
_BN_LAYOUTS = {n: "(N, C), (N, C, L) or (N, C, H, W)" for n in _BN_FULL}


def _bn_operands(
    fname: str, named: Sequence[tuple[str, object]]
) -> tuple[dict[str, FloatArray], FloatDType]:
    """Check -> ({name: C-contiguous array of the compute dtype}, dtype) for
    the present operands (``x``, ``grad_out`` and per-channel arrays; None
    ones are left out); per-channel arrays must have shape (C,)."""
    present = [(n, a) for n, a in named if a is not None or n in _BN_FULL]
    ndims = [_BN_NDIM if n in _BN_FULL else None for n, _ in present]
    arrs, dt = V.float_arrays(fname, present, ndims, _BN_LAYOUTS)
    out = dict(zip((n for n, _ in present), arrs))
    xs = out["x"].shape
    for n, a in out.items():
        if n not in _BN_FULL:
            V.per_channel(fname, n, a.shape, xs)
    return out, dt


def _bn_plan(fname: str, x: FloatArray, dt: FloatDType, training: bool) -> _plan.BatchNormPlan:
    return _plan.cached((fname, x.shape, dt, training, _config._kernel_threads),
                        _plan.batch_norm_plan, fname, x.shape, dt, training)


def _bn_running(
    fname: str, ops: Mapping[str, FloatArray], training: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The running statistics as float64 in evaluation mode (required
    there), None in training mode."""
    if training:
        return None
    for name in ("running_mean", "running_var"):
        if name not in ops:
            raise ValueError(
                f"{fname}: {name} must be given in evaluation mode (training=False), got None"
            )
    # copies: the caller's arrays may be read-only or change later
    return (np.array(ops["running_mean"], dtype=np.float64),
            np.array(ops["running_var"], dtype=np.float64))


@_nan_quiet
def _bn_inplace(
    fname: str, dt: FloatDType, running_mean: object, running_var: object,
    others: list[tuple[str, object]],
) -> tuple[FloatArray | None, FloatArray | None]:
    """Training mode: the caller's running statistics, checked to be
    updatable in place (writeable arrays of the compute dtype, sharing no
    memory with each other or with the other operands); None stays None."""
    rm = None if running_mean is None else V.running_stat(fname, "running_mean",
                                                          running_mean, dt)
    rv = None if running_var is None else V.running_stat(fname, "running_var",
                                                         running_var, dt)
    if rm is not None:
        V.no_overlap(fname, "running_mean", rm, others + [("running_var", rv)])
    if rv is not None:
        V.no_overlap(fname, "running_var", rv, others)
    return rm, rv


@_nan_quiet
def batch_norm(
    x: npt.ArrayLike, running_mean: npt.ArrayLike | None, running_var: npt.ArrayLike | None,
    weight: npt.ArrayLike | None = None, bias: npt.ArrayLike | None = None,
    training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
) -> FloatArray:
    """Batch normalization over the channel axis, as
    ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, per channel.  In
    training mode ``mean`` and ``var`` are the batch's (over every axis but
    axis 1; the *biased* variance), and ``running_mean``/``running_var``
    are **updated in place** (when not None)::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * unbiased_var

    In evaluation mode the running statistics are used (and required).
    This is the one function of the module that writes to arrays it is
    given: the running statistics, by design (as PyTorch); ``x``, ``weight``
    and ``bias`` are never modified.

    Parameters
    ----------
    x : array_like, shape (N, C), (N, C, L) or (N, C, H, W)
    running_mean, running_var : ndarray of shape (C,), or None
        In training mode: None, or writeable ndarrays of the compute dtype
        (updated in place).  In evaluation mode: array_like, required.
    weight, bias : array_like of shape (C,), optional
        The affine map (1 and 0 when None).
    training : bool
        Batch statistics (True) or running statistics (False).
    momentum : float in [0, 1]
        The weight of the batch statistics in the running update.
    eps : float > 0
        Added to the variance.

    Returns
    -------
    y : ndarray, shape of ``x``
        Of the compute dtype (float32 or float64).

    Raises
    ------
    ValueError
        In training mode with only one value per channel (``N * L == 1`` or
        ``N * H * W == 1``), as PyTorch.

    Notes
    -----
    The output has the shape of ``x``.  Statistics are computed in float64:
    for float64 data in two passes (the mean, then the squared deviations),
    for float32 data in one pass of sums shifted by each channel's first
    value (exact to far below float32's precision).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> F.batch_norm(x, rm, rv, training=True).round(4)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> rm, rv  # updated in place, with the unbiased batch variance
    (array([0.2, 0.4]), array([1.1, 1.7]))
    >>> F.batch_norm(x, rm, rv).round(4)  # evaluation mode: running statistics
    array([[0.7628, 1.2271],
           [2.6697, 4.295 ]])
    """
    fname = "batch_norm"
    training = V.boolean(fname, "training", training)
    momentum = V.real(fname, "momentum", momentum, 0.0, 1.0)
    eps = V.real(fname, "eps", eps, 0.0, low_open=True)
    ops, dt = _bn_operands(fname, [("x", x), ("running_mean", running_mean),
                                   ("running_var", running_var), ("weight", weight),
                                   ("bias", bias)])
    xa, w, b = ops["x"], ops.get("weight"), ops.get("bias")
    running = _bn_running(fname, ops, training)
    rm, rv = (None, None) if running is not None else _bn_inplace(
        fname, dt, running_mean, running_var, [("x", x), ("weight", weight), ("bias", bias)])
    plan = _bn_plan(fname, xa, dt, training)
    if _numpy_backend():
        if running is not None:
            rm, rv = ops["running_mean"], ops["running_var"]
        return _as(_ref.batch_norm(xa, rm, rv, w, b, training=training, momentum=momentum,
                                   eps=eps), dt)
    if running is None:
        y, mean, var = plan.forward(xa, w, b, eps)
        plan.update_running(rm, rv, mean, var, momentum)
        return y
    return plan.forward(xa, w, b, eps, *running)[0]


@overload
def batch_norm_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None, weight: None = None, training: bool = False,
    eps: float = 1e-5,
) -> tuple[FloatArray, None, None]: ...
@overload
def batch_norm_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None, weight: npt.ArrayLike, training: bool = False,
    eps: float = 1e-5,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@_nan_quiet
def batch_norm_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None, weight: npt.ArrayLike | None = None,
    training: bool = False, eps: float = 1e-5,
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of :func:`batch_norm` with respect to ``x``, ``weight`` and
    ``bias``.

    Parameters
    ----------
    grad_out : array_like, shape of ``x``
        Upstream gradient ``dL/dy``.
    x : array_like, shape (N, C), (N, C, L) or (N, C, H, W)
        The forward input.
    running_mean, running_var : array_like of shape (C,), or None
        The running statistics of an evaluation-mode forward (required
        there; unused and never modified in training mode).
    weight : array_like of shape (C,), optional
        The forward's weight (None: no affine map).
    training : bool
        Whether the forward used batch statistics.
    eps : float > 0
        As given to the forward.

    Returns
    -------
    grad_x : ndarray, shape of ``x``
        Training mode: the gradient through the batch mean and variance,
        ``w / sigma * (g - mean(g) - xhat * mean(g * xhat))``; evaluation
        mode: ``g * w / sigma`` (``xhat = (x - mean) / sigma``, ``sigma =
        sqrt(var + eps)``, means per channel).
    grad_weight, grad_bias : ndarray of shape (C,), or None
        ``sum(g * xhat)`` and ``sum(g)`` per channel; None when ``weight``
        is None.

    Notes
    -----
    ``grad_x`` has the shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[1.0], [3.0]])
    >>> gx, gw, gb = F.batch_norm_backward([[1.0], [0.0]], x, None, None, np.ones(1),
    ...                                    training=True)
    >>> gx.round(4), gw.round(4), gb
    (array([[ 0.],
           [-0.]]), array([-1.]), array([1.]))
    """
    fname = "batch_norm_backward"
    training = V.boolean(fname, "training", training)
    eps = V.real(fname, "eps", eps, 0.0, low_open=True)
    named = [("x", x), ("grad_out", grad_out), ("weight", weight)]
    if not training:
        named += [("running_mean", running_mean), ("running_var", running_var)]
    ops, dt = _bn_operands(fname, named)
    xa, g, w = ops["x"], ops["grad_out"], ops.get("weight")
    if g.shape != xa.shape:
        raise ValueError(
            f"{fname}: grad_out.shape must equal x.shape {xa.shape}, got {g.shape}"
        )
    running = _bn_running(fname, ops, training)
    plan = _bn_plan(fname, xa, dt, training)
    if _numpy_backend():
        gx, gw, gb = _ref.batch_norm_backward(g, xa, ops.get("running_mean"),
                                              ops.get("running_var"), w, training=training,
                                              eps=eps)
        return (_as(gx, dt), None if gw is None else _as(gw, dt),
                None if gb is None else _as(gb, dt))
    mean, var = plan.statistics(xa) if running is None else running
    gxo, gwo, gbo = plan.backward(g, xa, mean, 1.0 / np.sqrt(var + eps), w, training)
    return cast("FloatArray", gxo), gwo, gbo
