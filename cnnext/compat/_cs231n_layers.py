"""The CS231n layers behind :mod:`cnnext.compat.cs231n` (``layers.py`` and
``fast_layers.py`` of the course): convolution, max pooling, affine, ReLU
and the two losses.  Import them from :mod:`cnnext.compat.cs231n`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from .. import functional as F
from . import _util as U

if TYPE_CHECKING:
    from .._typing import FloatArray, Pair

    #: ``(x, w, b, conv_param)``: the convolution forward's cache.
    ConvCache: TypeAlias = tuple[
        npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], dict[str, int]
    ]
    #: ``(x, pool_param)``: the max-pooling forward's cache.
    PoolCache: TypeAlias = tuple[npt.NDArray[Any], dict[str, int]]
    #: ``(x, w, b)``: the affine forward's cache.
    AffineCache: TypeAlias = tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]
    #: ``x``: the ReLU forward's cache.
    ReluCache: TypeAlias = npt.NDArray[Any]

_TupleT = TypeVar("_TupleT", bound=tuple[Any, ...])

_NCHW = "(N, C, H, W)"


def unpack_cache(fname: str, cache: _TupleT, length: int, what: str, made_by: str) -> _TupleT:
    """``cache`` if it is the tuple of ``length`` items that ``made_by`` returns."""
    if not isinstance(cache, tuple) or len(cache) != length:
        raise TypeError(
            f"{fname}: cache must be the {length}-tuple {what} returned by {made_by}, got "
            f"{type(cache).__name__}"
            + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        )
    return cache


def _same_shape(
    fname: str, name: str, a: npt.NDArray[Any], want: tuple[int, ...], made_by: str
) -> None:
    if a.shape != want:
        raise ValueError(
            f"{fname}: {name}.shape must be the {made_by} output shape {want}, got {a.shape}"
        )


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------


def _conv_args(
    fname: str, x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike,
    conv_param: Mapping[str, int],
) -> tuple[
    npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], int, int, tuple[int, int, int, int]
]:
    xa = U.array(fname, "x", x, (4,), _NCHW)
    wa = U.array(fname, "w", w, (4,), "(F, C, HH, WW)")
    ba = U.array(fname, "b", b, (1,), "(F,)")
    if wa.shape[1] != xa.shape[1]:
        raise ValueError(
            f"{fname}: w.shape[1] ({wa.shape[1]}) must equal x.shape[1] ({xa.shape[1]}), "
            f"the number of input channels C"
        )
    if ba.shape[0] != wa.shape[0]:
        raise ValueError(
            f"{fname}: b must hold one bias per filter, shape ({wa.shape[0]},); got shape "
            f"{ba.shape}"
        )
    stride = U.hparam(fname, conv_param, "stride", 1, dict_name="conv_param")
    pad = U.hparam(fname, conv_param, "pad", 0, dict_name="conv_param")
    N, _, H, W = xa.shape
    Fo, _, HH, WW = wa.shape
    out_shape = (
        N,
        Fo,
        U.out_size(fname, H, HH, stride, pad, "height"),
        U.out_size(fname, W, WW, stride, pad, "width"),
    )
    return xa, wa, ba, stride, pad, out_shape


def _conv_forward(
    fname: str, x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike,
    conv_param: Mapping[str, int],
) -> tuple[FloatArray, ConvCache]:
    xa, wa, ba, stride, pad, _ = _conv_args(fname, x, w, b, conv_param)
    out = F.conv2d(xa, wa, ba, stride=stride, padding=pad)
    return out, (xa, wa, ba, dict(conv_param))


def _conv_backward(
    fname: str, dout: npt.ArrayLike, cache: ConvCache, made_by: str
) -> tuple[FloatArray, FloatArray, FloatArray]:
    x, w, b, conv_param = unpack_cache(fname, cache, 4, "(x, w, b, conv_param)", made_by)
    xa, wa, _, stride, pad, out_shape = _conv_args(fname, x, w, b, conv_param)
    g = U.array(fname, "dout", dout, (4,), _NCHW)
    _same_shape(fname, "dout", g, out_shape, made_by)
    return F.conv2d_backward(g, xa, wa, stride=stride, padding=pad)


def conv_forward_naive(
    x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike, conv_param: Mapping[str, int]
) -> tuple[FloatArray, ConvCache]:
    """Forward pass of a convolutional layer (cross-correlation, zero padding).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (F, C, HH, WW)
        One filter per output channel, spanning all ``C`` input channels.
    b : array_like, shape (F,)
    conv_param : dict
        ``{'stride': int >= 1, 'pad': int >= 0}``; ``pad`` zeros are added
        on both sides of the height and width axes.

    Returns
    -------
    out : ndarray, shape (N, F, H', W')
        ``H' = 1 + (H + 2*pad - HH) // stride``, likewise ``W'``;
        ``out[n, f] = b[f] + sum over c, i, j of w[f, c, i, j] * x_pad[n, c,
        h*stride + i, w*stride + j]`` (the kernel is not flipped).
    cache : tuple
        ``(x, w, b, conv_param)``, for :func:`conv_backward_naive`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_forward_naive
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2)); b = np.array([0.5])
    >>> out, cache = conv_forward_naive(x, w, b, {'stride': 2, 'pad': 0})
    >>> out
    array([[[[10.5, 18.5],
             [42.5, 50.5]]]])
    """
    return _conv_forward("conv_forward_naive", x, w, b, conv_param)


def conv_backward_naive(
    dout: npt.ArrayLike, cache: ConvCache
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Backward pass of a convolutional layer.

    Parameters
    ----------
    dout : array_like, shape (N, F, H', W')
        Upstream derivatives.
    cache : tuple
        ``(x, w, b, conv_param)`` from :func:`conv_forward_naive` (or
        :func:`conv_forward_fast`).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
        ``dout`` summed over ``N``, ``H'`` and ``W'``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_forward_naive, conv_backward_naive
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2)); b = np.zeros(1)
    >>> out, cache = conv_forward_naive(x, w, b, {'stride': 1, 'pad': 0})
    >>> dx, dw, db = conv_backward_naive(np.ones_like(out), cache)
    >>> dx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> dw[0, 0], db
    (array([[4., 4.],
           [4., 4.]]), array([4.]))
    """
    return _conv_backward("conv_backward_naive", dout, cache, "conv_forward_naive")


def conv_forward_fast(
    x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike, conv_param: Mapping[str, int]
) -> tuple[FloatArray, ConvCache]:
    """Forward pass of a convolutional layer; the same as :func:`conv_forward_naive`.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (F, C, HH, WW)
    b : array_like, shape (F,)
    conv_param : dict
        ``{'stride': int >= 1, 'pad': int >= 0}``.

    Returns
    -------
    out : ndarray, shape (N, F, H', W')
    cache : tuple
        ``(x, w, b, conv_param)``, for :func:`conv_backward_fast` (or
        :func:`conv_backward_naive`).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_forward_fast
    >>> out, cache = conv_forward_fast(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)),
    ...                                np.zeros(4), {'stride': 1, 'pad': 1})
    >>> out.shape, out[0, 0, :2, :2]
    ((2, 4, 8, 8), array([[12., 18.],
           [18., 27.]]))
    """
    return _conv_forward("conv_forward_fast", x, w, b, conv_param)


def conv_backward_fast(
    dout: npt.ArrayLike, cache: ConvCache
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Backward pass of a convolutional layer; the same as :func:`conv_backward_naive`.

    Parameters
    ----------
    dout : array_like, shape (N, F, H', W')
    cache : tuple
        ``(x, w, b, conv_param)`` from either forward variant.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_forward_fast, conv_backward_fast
    >>> out, cache = conv_forward_fast(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)),
    ...                                np.zeros(4), {'stride': 2, 'pad': 1})
    >>> dx, dw, db = conv_backward_fast(np.ones_like(out), cache)
    >>> dx.shape, dw.shape, db
    ((2, 3, 8, 8), (4, 3, 3, 3), array([32., 32., 32., 32.]))
    """
    return _conv_backward("conv_backward_fast", dout, cache, "conv_forward_fast")


# --------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------


def _pool_args(
    fname: str, x: npt.ArrayLike, pool_param: Mapping[str, int]
) -> tuple[npt.NDArray[Any], Pair, int, tuple[int, int, int, int]]:
    xa = U.array(fname, "x", x, (4,), _NCHW)
    ph = U.hparam(fname, pool_param, "pool_height", 1, dict_name="pool_param")
    pw = U.hparam(fname, pool_param, "pool_width", 1, dict_name="pool_param")
    stride = U.hparam(fname, pool_param, "stride", 1, dict_name="pool_param")
    N, C, H, W = xa.shape
    out_shape = (
        N,
        C,
        U.out_size(fname, H, ph, stride, 0, "height"),
        U.out_size(fname, W, pw, stride, 0, "width"),
    )
    return xa, (ph, pw), stride, out_shape


def _pool_forward(
    fname: str, x: npt.ArrayLike, pool_param: Mapping[str, int]
) -> tuple[FloatArray, PoolCache]:
    xa, k, stride, _ = _pool_args(fname, x, pool_param)
    return F.max_pool2d(xa, k, stride=stride), (xa, dict(pool_param))


def _pool_backward(
    fname: str, dout: npt.ArrayLike, cache: PoolCache, made_by: str
) -> FloatArray:
    x, pool_param = unpack_cache(fname, cache, 2, "(x, pool_param)", made_by)
    xa, k, stride, out_shape = _pool_args(fname, x, pool_param)
    g = U.array(fname, "dout", dout, (4,), _NCHW)
    _same_shape(fname, "dout", g, out_shape, made_by)
    # The cache is the course's (x, pool_param), so the argmax is recomputed.
    _, idx = F.max_pool2d(xa, k, stride=stride, return_indices=True)
    return F.max_pool2d_backward(g, idx, xa.shape)


def max_pool_forward_naive(
    x: npt.ArrayLike, pool_param: Mapping[str, int]
) -> tuple[FloatArray, PoolCache]:
    """Forward pass of a max-pooling layer (no padding).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    pool_param : dict
        ``{'pool_height': int >= 1, 'pool_width': int >= 1, 'stride': int >= 1}``.

    Returns
    -------
    out : ndarray, shape (N, C, H', W')
        ``H' = 1 + (H - pool_height) // stride``,
        ``W' = 1 + (W - pool_width) // stride``.
    cache : tuple
        ``(x, pool_param)``, for :func:`max_pool_backward_naive`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import max_pool_forward_naive
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> out, cache = max_pool_forward_naive(
    ...     x, {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    >>> out
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    """
    return _pool_forward("max_pool_forward_naive", x, pool_param)


def max_pool_backward_naive(dout: npt.ArrayLike, cache: PoolCache) -> FloatArray:
    """Backward pass of a max-pooling layer.

    Parameters
    ----------
    dout : array_like, shape (N, C, H', W')
    cache : tuple
        ``(x, pool_param)`` from :func:`max_pool_forward_naive` (or
        :func:`max_pool_forward_fast`).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        Each ``dout`` value goes to the first maximum (row-major) of its
        window; where overlapping windows pick the same input, their
        gradients add up.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import max_pool_forward_naive, max_pool_backward_naive
    >>> x = np.array([[[[1., 3.], [3., 0.]]]])
    >>> out, cache = max_pool_forward_naive(
    ...     x, {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    >>> max_pool_backward_naive(np.array([[[[5.]]]]), cache)    # first maximum only
    array([[[[0., 5.],
             [0., 0.]]]])
    """
    return _pool_backward("max_pool_backward_naive", dout, cache, "max_pool_forward_naive")


def max_pool_forward_fast(
    x: npt.ArrayLike, pool_param: Mapping[str, int]
) -> tuple[FloatArray, PoolCache]:
    """Forward pass of a max-pooling layer; the same as :func:`max_pool_forward_naive`.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    pool_param : dict
        ``{'pool_height': int >= 1, 'pool_width': int >= 1, 'stride': int >= 1}``;
        any window and stride work (the course's fast version falls back to
        a slower method unless the windows tile the input).

    Returns
    -------
    out : ndarray, shape (N, C, H', W')
    cache : tuple
        ``(x, pool_param)``, for :func:`max_pool_backward_fast` (or
        :func:`max_pool_backward_naive`).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import max_pool_forward_fast
    >>> x = np.arange(25.0).reshape(1, 1, 5, 5)
    >>> out, cache = max_pool_forward_fast(
    ...     x, {'pool_height': 3, 'pool_width': 3, 'stride': 2})
    >>> out
    array([[[[12., 14.],
             [22., 24.]]]])
    """
    return _pool_forward("max_pool_forward_fast", x, pool_param)


def max_pool_backward_fast(dout: npt.ArrayLike, cache: PoolCache) -> FloatArray:
    """Backward pass of a max-pooling layer; the same as :func:`max_pool_backward_naive`.

    Parameters
    ----------
    dout : array_like, shape (N, C, H', W')
    cache : tuple
        ``(x, pool_param)`` from either forward variant.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        Each ``dout`` value goes to the first maximum (row-major) of its
        window, also when several values tie (the course's version splits
        it among them when the windows tile the input).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import max_pool_forward_fast, max_pool_backward_fast
    >>> x = np.zeros((1, 1, 2, 2))                      # four tied maxima
    >>> out, cache = max_pool_forward_fast(
    ...     x, {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    >>> max_pool_backward_fast(np.array([[[[4.]]]]), cache)
    array([[[[4., 0.],
             [0., 0.]]]])
    """
    return _pool_backward("max_pool_backward_fast", dout, cache, "max_pool_forward_fast")


# --------------------------------------------------------------------------
# Affine, ReLU, losses
# --------------------------------------------------------------------------


def _affine_args(
    fname: str, x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    xa = U.array(fname, "x", x, range(1, 33), "(N, d_1, ..., d_k)")
    wa = U.array(fname, "w", w, (2,), "(D, M)")
    ba = U.array(fname, "b", b, (1,), "(M,)")
    x2 = xa.reshape(xa.shape[0], int(np.prod(xa.shape[1:])))
    if x2.shape[1] != wa.shape[0]:
        raise ValueError(
            f"{fname}: x must have D = w.shape[0] = {wa.shape[0]} values per sample; x of "
            f"shape {xa.shape} has {x2.shape[1]} (w is (D, M), not PyTorch's (M, D))"
        )
    if ba.shape[0] != wa.shape[1]:
        raise ValueError(
            f"{fname}: b must hold one bias per output, shape ({wa.shape[1]},); got shape "
            f"{ba.shape}"
        )
    return xa, x2, wa, ba


def affine_forward(
    x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike
) -> tuple[FloatArray, AffineCache]:
    """Forward pass of an affine (fully connected) layer, ``x.reshape(N, D) @ w + b``.

    Parameters
    ----------
    x : array_like, shape (N, d_1, ..., d_k)
        Flattened to ``(N, D)`` with ``D = d_1 * ... * d_k``.
    w : array_like, shape (D, M)
        The course's layout: ``w.T`` is the ``(M, D)`` weight of
        :func:`cnnext.functional.linear` and PyTorch.
    b : array_like, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple
        ``(x, w, b)``, for :func:`affine_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import affine_forward
    >>> x = np.ones((2, 3, 2))                          # D = 6
    >>> w = np.arange(12.0).reshape(6, 2); b = np.array([0.5, -0.5])
    >>> out, cache = affine_forward(x, w, b)
    >>> out
    array([[30.5, 35.5],
           [30.5, 35.5]])
    """
    fname = "affine_forward"
    xa, x2, wa, ba = _affine_args(fname, x, w, b)
    return F.linear(x2, wa.T, ba), (xa, wa, ba)


def affine_backward(
    dout: npt.ArrayLike, cache: AffineCache
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Backward pass of an affine layer.

    Parameters
    ----------
    dout : array_like, shape (N, M)
    cache : tuple
        ``(x, w, b)`` from :func:`affine_forward`.

    Returns
    -------
    dx : ndarray, shape of ``x`` ``(N, d_1, ..., d_k)``
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import affine_forward, affine_backward
    >>> x = np.array([[[1., 2.], [3., 4.]]]); w = np.ones((4, 2)); b = np.zeros(2)
    >>> out, cache = affine_forward(x, w, b)
    >>> dx, dw, db = affine_backward(np.array([[1., 2.]]), cache)
    >>> dx
    array([[[3., 3.],
            [3., 3.]]])
    >>> dw
    array([[1., 2.],
           [2., 4.],
           [3., 6.],
           [4., 8.]])
    >>> db
    array([1., 2.])
    """
    fname = "affine_backward"
    x, w, b = unpack_cache(fname, cache, 3, "(x, w, b)", "affine_forward")
    xa, x2, wa, _ = _affine_args(fname, x, w, b)
    g = U.array(fname, "dout", dout, (2,), "(N, M)")
    _same_shape(fname, "dout", g, (x2.shape[0], wa.shape[1]), "affine_forward")
    dx2, dwt, db = F.linear_backward(g, x2, wa.T)
    return dx2.reshape(xa.shape), np.ascontiguousarray(dwt.T), db


def relu_forward(x: npt.ArrayLike) -> tuple[FloatArray, ReluCache]:
    """Forward pass of a ReLU layer, ``max(x, 0)``.

    Parameters
    ----------
    x : array_like, any shape

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : ndarray
        ``x``, for :func:`relu_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import relu_forward
    >>> out, cache = relu_forward(np.array([[-1.0, 0.0, 2.0]]))
    >>> out
    array([[0., 0., 2.]])
    """
    xa = U.array("relu_forward", "x", x, range(33), "(any shape)")
    return F.relu(xa), xa


def relu_backward(dout: npt.ArrayLike, cache: ReluCache) -> FloatArray:
    """Backward pass of a ReLU layer: ``dout`` where ``x > 0``, else 0.

    Parameters
    ----------
    dout : array_like, shape of ``x``
    cache : array_like
        ``x``, as returned by :func:`relu_forward`.

    Returns
    -------
    dx : ndarray, shape of ``x``

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import relu_forward, relu_backward
    >>> out, cache = relu_forward(np.array([-1.0, 0.0, 2.0]))
    >>> relu_backward(np.array([5.0, 5.0, 5.0]), cache)
    array([0., 0., 5.])
    """
    fname = "relu_backward"
    xa = U.array(fname, "cache", cache, range(33), "(the relu_forward input x)")
    g = U.array(fname, "dout", dout, range(33), "(shape of x)")
    _same_shape(fname, "dout", g, xa.shape, "relu_forward")
    return F.relu_backward(g, xa)


def _loss_args(
    fname: str, x: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    xa = U.array(fname, "x", x, (2,), "(N, C) class scores")
    ya = U.array(fname, "y", y, (1,), "(N,) labels")
    if ya.dtype.kind not in "iu":
        raise TypeError(f"{fname}: y must hold integer class labels, got dtype {ya.dtype}")
    N, C = xa.shape
    if ya.shape != (N,):
        raise ValueError(f"{fname}: y.shape must be ({N},) to match x {xa.shape}, got {ya.shape}")
    if N and (ya.min() < 0 or ya.max() >= C):
        raise ValueError(
            f"{fname}: y must lie in [0, {C}) for {C} classes, got values in "
            f"[{ya.min()}, {ya.max()}]"
        )
    return xa, ya


def softmax_loss(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, FloatArray]:
    """Softmax (cross-entropy) loss and its gradient, averaged over the samples.

    Parameters
    ----------
    x : array_like, shape (N, C)
        Class scores; ``x[i, j]`` is the score of class ``j`` for sample ``i``.
    y : array_like of int, shape (N,)
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
        ``mean_i(-log softmax(x[i])[y[i]])``, computed stably.
    dx : ndarray, shape (N, C)
        ``(softmax(x) - onehot(y)) / N``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import softmax_loss
    >>> loss, dx = softmax_loss(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 6), dx[0]
    (1.386294, array([-0.375,  0.125,  0.125,  0.125]))
    """
    xa, ya = _loss_args("softmax_loss", x, y)
    return F.softmax_cross_entropy(xa, ya)


def svm_loss(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, FloatArray]:
    """Multiclass SVM (hinge) loss with margin 1 and its gradient, averaged over the samples.

    Parameters
    ----------
    x : array_like, shape (N, C)
        Class scores.
    y : array_like of int, shape (N,)
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
        ``mean_i(sum_{j != y[i]} max(0, x[i, j] - x[i, y[i]] + 1))``.
    dx : ndarray, shape (N, C)
        ``1/N`` for every class ``j != y[i]`` with a positive margin, minus
        ``1/N`` times their number at ``y[i]``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import svm_loss
    >>> loss, dx = svm_loss(np.array([[3.0, 2.5, 0.0]]), np.array([0]))
    >>> loss, dx
    (0.5, array([[-1.,  1.,  0.]]))
    """
    xa, ya = _loss_args("svm_loss", x, y)
    dt = np.result_type(xa.dtype, np.float32) if xa.dtype.kind == "f" else np.float64
    xa = xa.astype(dt, copy=False)
    N = xa.shape[0]
    if N == 0:
        return 0.0, np.zeros(xa.shape, dtype=dt)
    rows = np.arange(N)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf propagate quietly
        margins = np.maximum(xa - xa[rows, ya][:, None] + 1, 0)
        margins[rows, ya] = 0
        loss = float(margins.sum() / N)
        positive = margins > 0
        dx = positive.astype(dt)
        dx[rows, ya] -= positive.sum(axis=1)
        dx /= N
    return loss, dx
