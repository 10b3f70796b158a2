"""Convolutions: 2-D, transposed 2-D and 1-D, forward and backward."""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Literal, cast, overload

import numpy.typing as npt

from .. import _config, _plan
from .. import _validate as V
from ._common import (
    _CONV1D_GRAD_NDIM, _CONV1D_NDIM, _CONV_GRAD_NDIM, _CONV_NDIM, _ONE, _XWB, _ZERO, _as,
    _as_grads, _conv_params, _float_operands, _grad_operands, _numpy_backend, _operands, _shape,
)

if TYPE_CHECKING:
    from .. import reference as _ref
    from .._typing import FloatArray, FloatDType, IntOrPair
else:  # imported at its first use (the numpy backend)
    from ._common import _reference as _ref

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv1d",
    "conv1d_backward",
    "full_conv2d",
]


def _conv2d_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType,
    stride: IntOrPair, padding: str | IntOrPair, dilation: IntOrPair, groups: int = 1,
) -> _plan.ConvPlan:
    """The cached :class:`cnnext._plan.ConvPlan` for these arrays and options."""
    bshape = None if bias is None else bias.shape
    nt = _config._kernel_threads
    alg = _config.get_conv_algorithm()
    # Plain ints (never bool, never float) are their own normal form: a
    # steady-state call finds its plan before normalising anything.
    plain = ((stride is _ONE or type(stride) is int)
             and (padding is _ZERO or type(padding) is int)
             and (dilation is _ONE or type(dilation) is int)
             and (groups is _ONE or type(groups) is int))
    if plain:
        key: Hashable = (fname, x.shape, w.shape, dt, bshape, stride, padding, dilation, groups,
                         nt, alg)
        plan: _plan.ConvPlan | None = _plan.lookup(key)
        if plan is not None:
            return plan
    s, d = V.pair(fname, "stride", stride, 1), V.pair(fname, "dilation", dilation, 1)
    p = V.conv_padding(fname, padding)
    G = V.groups(fname, groups)
    if not plain:
        key = (fname, x.shape, w.shape, dt, bshape, s, p, d, G, nt, alg)
        plan = _plan.lookup(key)
        if plan is not None:
            return plan  # type: ignore[no-any-return]  # a conv2d key's plan is a ConvPlan
    return _plan.store(key, _plan.conv2d_plan(fname, x.shape, w.shape, bshape, dt, s, p, d, G,
                                              alg))


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------


def conv2d(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None,
    stride: IntOrPair = 1, padding: str | IntOrPair = 0, dilation: IntOrPair = 1,
    groups: int = 1,
) -> FloatArray:
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        Input batch (or one unbatched sample).
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
        Filters.  Not flipped: ``y[n, o, i, j] = b[o] + sum_{c, u, v}
        w[o, c, u, v] * x_pad[n, c, i*sH + u*dH, j*sW + v*dW]`` (``c`` over
        the input channels of ``o``'s group).
    bias : array_like, shape (C_out,), optional
    stride, padding, dilation : int or (int, int)
        ``stride >= 1``, ``padding >= 0`` (zeros), ``dilation >= 1`` (1: none).
        ``padding`` may also be ``"valid"`` (no padding) or ``"same"``
        (stride 1 only: the output has the input's size; ``dH*(kH - 1)``
        rows of zeros in total, half above and the rest -- one more for an
        odd total -- below; likewise columns).
    groups : int
        ``>= 1``, dividing ``C_in`` and ``C_out``: input channel block ``g``
        feeds only output channel block ``g`` (``groups == C_in``: a
        depthwise convolution).

    Returns
    -------
    y : ndarray, shape (N, C_out, OH, OW) (3-D when ``x`` was 3-D)
        Of the compute dtype (float32 or float64).

    Notes
    -----
    ``OH = floor((H + 2*pH - dH*(kH - 1) - 1) / sH) + 1`` and likewise ``OW``
    (``OH = H`` for ``"same"``).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> F.conv2d(x, w, stride=2)
    array([[[[10., 18.],
             [42., 50.]]]], dtype=float32)
    """
    fname = "conv2d"
    dt = _float_operands((x, weight, bias), _CONV_NDIM, True, True)
    if dt is None:
        (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _CONV_NDIM)
    elif TYPE_CHECKING:  # the one-step check passed: native float arrays
        x, weight, bias = cast("tuple[FloatArray, FloatArray, FloatArray | None]",
                               (x, weight, bias))
    plan = _conv2d_plan(fname, x, weight, bias, dt, stride, padding, dilation, groups)
    if _numpy_backend():
        return _as(_ref.conv2d(x, weight, bias, stride=stride, padding=padding,
                               dilation=dilation, groups=groups), dt)
    return plan.forward(x, weight, bias)


@overload
def conv2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1,
    bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1,
    bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def conv2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1,
    bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, OH, OW) or (C_out, OH, OW)
        Upstream gradient ``dL/dy``.
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        The forward input.
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
    stride, padding, dilation, groups
        As given to :func:`conv2d`.
    bias : bool
        Whether the forward pass had a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape of ``x``
        The *full convolution* of ``grad_out`` (dilated by the stride) with
        the 180-degree-rotated kernel, summed over C_out, cropped by the
        padding.  At stride 1 without padding it equals
        ``full_conv2d(grad_out, weight)``.
    grad_weight : ndarray, shape (C_out, C_in / groups, kH, kW)
        The correlation of the (padded) input with ``grad_out``, within
        each group.
    grad_bias : ndarray of shape (C_out,), or None
        ``grad_out.sum(axis=(0, 2, 3))``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = F.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gw[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([4.]))
    """
    fname = "conv2d_backward"
    bias = V.boolean(fname, "bias", bias)
    g, xa, w, dt = _grad_operands(fname, grad_out, x, weight, _CONV_GRAD_NDIM)
    plan = _conv2d_plan(fname, xa, w, None, dt, stride, padding, dilation, groups)
    if g.shape != plan.out_shape:
        raise ValueError(
            f"{fname}: grad_out.shape must be the conv2d output shape {plan.out_shape} "
            f"for x {xa.shape}, weight {w.shape}, stride {plan.stride}, padding "
            f"{plan.padding}, dilation {plan.dilation}, groups {plan.groups}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.conv2d_backward(g, xa, w, stride=stride, padding=padding,
                                          dilation=dilation, groups=groups, bias=bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


def _conv_transpose2d_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType,
    stride: IntOrPair, padding: IntOrPair, output_padding: IntOrPair, groups: int,
    dilation: IntOrPair,
) -> _plan.ConvTransposePlan:
    """The cached :class:`cnnext._plan.ConvTransposePlan` for these arrays and options."""
    s, p, d = _conv_params(fname, stride, padding, dilation)
    op = V.pair(fname, "output_padding", output_padding, 0)
    G = V.groups(fname, groups)
    return _plan.cached(
        ("conv_transpose2d", x.shape, w.shape, dt, _shape(bias), s, p, op, d, G,
         _config.get_num_threads()),
        _plan.conv_transpose2d_plan, fname, x.shape, w.shape, _shape(bias), dt, s, p, op, d, G,
    )


def conv_transpose2d(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None,
    stride: IntOrPair = 1, padding: IntOrPair = 0, output_padding: IntOrPair = 0,
    groups: int = 1, dilation: IntOrPair = 1,
) -> FloatArray:
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint of :func:`conv2d`: ``conv_transpose2d(g, w, ...)`` is the
    input gradient of ``conv2d(x, w, ...)`` for upstream gradient ``g``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight : array_like, shape (C_in, C_out / groups, kH, kW)
        Note the order: input channels first, as in PyTorch.
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int)
        ``output_padding`` must be smaller than ``stride`` or ``dilation``.
    groups : int
        ``>= 1``, dividing ``C_in``: input channel block ``g`` feeds only
        output channel block ``g``.

    Returns
    -------
    y : ndarray, shape (N, C_out, OH, OW)

    Notes
    -----
    ``OH = (H - 1)*sH - 2*pH + dH*(kH - 1) + output_padding_h + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    fname = "conv_transpose2d"
    (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _CONV_NDIM)
    plan = _conv_transpose2d_plan(fname, x, weight, bias, dt, stride, padding, output_padding,
                                  groups, dilation)
    if _numpy_backend():
        return _as(_ref.conv_transpose2d(x, weight, bias, stride=stride, padding=padding,
                                         output_padding=output_padding, groups=groups,
                                         dilation=dilation), dt)
    return plan.forward(x, weight, bias)


@overload
def conv_transpose2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1, bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv_transpose2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def conv_transpose2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv_transpose2d` w.r.t. its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, OH, OW) or (C_out, OH, OW)
        Upstream gradient ``dL/dy``.
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        The forward input.
    weight : array_like, shape (C_in, C_out / groups, kH, kW)
    stride, padding, output_padding, groups, dilation
        As given to :func:`conv_transpose2d`.
    bias : bool
        Whether the forward pass had a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape of ``x``
        ``conv2d(grad_out, weight, stride=stride, padding=padding,
        dilation=dilation, groups=groups)`` (the convolution it is the
        adjoint of), cropped to ``x``'s size.
    grad_weight : ndarray, shape of ``weight``
        That convolution's weight gradient, with ``grad_out`` as its input
        and ``x`` as its upstream gradient.
    grad_bias : ndarray of shape (C_out,), or None
        ``grad_out.sum(axis=(0, 2, 3))``.

    Notes
    -----
    ``grad_out`` must have the :func:`conv_transpose2d` output shape.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[[[1., 2.]]]]); w = np.array([[[[1., 10.]]]])
    >>> gx, gw, gb = F.conv_transpose2d_backward(np.array([[[[1., 0., 2.]]]]), x, w)
    >>> gx[0, 0], gw[0, 0], gb
    (array([[ 1., 20.]]), array([[1., 4.]]), array([3.]))
    """
    fname = "conv_transpose2d_backward"
    bias = V.boolean(fname, "bias", bias)
    g, xa, w, dt = _grad_operands(fname, grad_out, x, weight, _CONV_GRAD_NDIM)
    plan = _conv_transpose2d_plan(fname, xa, w, None, dt, stride, padding, output_padding,
                                  groups, dilation)
    if g.shape != plan.out_shape:
        raise ValueError(
            f"{fname}: grad_out.shape must be the conv_transpose2d output shape "
            f"{plan.out_shape} for x {xa.shape}, weight {w.shape}, stride {plan.stride}, "
            f"padding {plan.padding}, output_padding {plan.output_padding}, groups "
            f"{plan.groups}, dilation {plan.dilation}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.conv_transpose2d_backward(
            g, xa, w, stride=stride, padding=padding, output_padding=output_padding,
            groups=groups, dilation=dilation, bias=bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


def _conv1d_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType,
    stride: int | Sequence[int], padding: str | int | Sequence[int],
    dilation: int | Sequence[int], groups: int,
) -> _plan.Conv1dPlan:
    """The cached :class:`cnnext._plan.Conv1dPlan` for these arrays and options."""
    s, d = V.single(fname, "stride", stride, 1), V.single(fname, "dilation", dilation, 1)
    p = V.conv1d_padding(fname, padding)
    G = V.groups(fname, groups)
    bshape = _shape(bias)
    return _plan.cached(
        ("conv1d", fname, x.shape, w.shape, dt, bshape, s, p, d, G, _config.get_num_threads()),
        _plan.conv1d_plan, fname, x.shape, w.shape, bshape, dt, s, p, d, G,
    )


def conv1d(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1,
) -> FloatArray:
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, L) or (C_in, L)
    weight : array_like, shape (C_out, C_in / groups, k)
    bias : array_like, shape (C_out,), optional
    stride, padding, dilation : int or (int,)
        As for :func:`conv2d`, along the one axis; ``padding`` may be
        ``"valid"`` or ``"same"`` (stride 1; the odd one of an odd total
        padding at the end).
    groups : int
        As for :func:`conv2d`.

    Returns
    -------
    y : ndarray, shape (N, C_out, OL) (2-D when ``x`` was 2-D)

    Notes
    -----
    ``OL = floor((L + 2*p - d*(k - 1) - 1) / s) + 1``.  Runs as
    :func:`conv2d` of the ``(1, L)`` images with the ``(1, k)`` kernels.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.conv1d(np.array([[[1., 2., 3., 4.]]]), np.array([[[1., 10.]]]), padding="same")
    array([[[21., 32., 43.,  4.]]])
    """
    fname = "conv1d"
    (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _CONV1D_NDIM,
                                      {"x": "(N, C, L) or (C, L)", "weight": "(C_out, C_in, k)"})
    plan = _conv1d_plan(fname, x, weight, bias, dt, stride, padding, dilation, groups)
    if _numpy_backend():
        return _as(_ref.conv1d(x, weight, bias, stride, padding, dilation, groups),
                   dt)
    return plan.forward(x, weight, bias)


@overload
def conv1d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv1d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def conv1d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv1d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, OL) or (C_out, OL)
    x : array_like, shape (N, C_in, L) or (C_in, L)
    weight : array_like, shape (C_out, C_in / groups, k)
    stride, padding, dilation, groups
        As given to :func:`conv1d`.
    bias : bool
        Whether the forward pass had a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape of ``x``
    grad_weight : ndarray, shape of ``weight``
    grad_bias : ndarray of shape (C_out,), or None

    Notes
    -----
    :func:`conv2d_backward` of the ``(1, L)`` images.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> gx, gw, gb = F.conv1d_backward(np.ones((1, 1, 2)), np.ones((1, 1, 3)),
    ...                                np.array([[[1., 10.]]]))
    >>> gx, gw, gb
    (array([[[ 1., 11., 10.]]]), array([[[2., 2.]]]), array([2.]))
    """
    fname = "conv1d_backward"
    bias = V.boolean(fname, "bias", bias)
    g, xa, w, dt = _grad_operands(fname, grad_out, x, weight, _CONV1D_GRAD_NDIM)
    plan = _conv1d_plan(fname, xa, w, None, dt, stride, padding, dilation, groups)
    if g.shape != plan.out_shape:
        p2 = plan.plan2d
        raise ValueError(
            f"{fname}: grad_out.shape must be the conv1d output shape {plan.out_shape} "
            f"for x {xa.shape}, weight {w.shape}, stride {p2.stride[1]}, padding "
            f"{p2.padding[1]}, dilation {p2.dilation[1]}, groups {p2.groups}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.conv1d_backward(g, xa, w, stride, padding, dilation,
                                          groups, bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


def full_conv2d(x: npt.ArrayLike, weight: npt.ArrayLike) -> FloatArray:
    """Full convolution with the 180-degree-rotated kernel, summed over K.

    ``y[n, c] = sum_k conv_full(x[n, k], weight[k, c])`` where ``conv_full``
    zero-pads by ``(kH-1, kW-1)`` on every side and correlates with
    ``weight[k, c, ::-1, ::-1]``.  This is the input-gradient operation of
    :func:`conv2d` at stride 1: ``full_conv2d(grad_out, w)`` is ``dL/dx``.

    Parameters
    ----------
    x : array_like, shape (N, K, H, W) or (K, H, W)
    weight : array_like, shape (K, C, kH, kW)

    Returns
    -------
    y : ndarray, shape (N, C, H + kH - 1, W + kW - 1)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[[[1., 2.]]]])             # (1, 1, 1, 2)
    >>> w = np.array([[[[1., 10.]]]])            # (1, 1, 1, 2)
    >>> F.full_conv2d(x, w)[0, 0]
    array([[ 1., 12., 20.]])
    """
    fname = "full_conv2d"
    (xa, w, _), dt = _operands(fname, (x, weight, None), _XWB, _CONV_NDIM)
    one, zero = (1, 1), (0, 0)
    plan = _plan.cached(
        ("full_conv2d", xa.shape, w.shape, dt, _config.get_num_threads()),
        _plan.conv_transpose2d_plan, fname, xa.shape, w.shape, None, dt, one, zero, zero, one,
    )
    if _numpy_backend():
        return _as(_ref.full_conv2d(xa, w), dt)
    # Literally: pad by (kH-1, kW-1) and correlate with the rotated kernel
    # (for inf/NaN weights the scatter form, see cnnext._plan.grad_input).
    return plan.forward(xa, w, None)


