"""Drop-in for the NHWC ``hparameters``-dict functions of the deeplearning.ai
assignment "Convolutional Neural Networks: Step by Step".

The assignment opens course 4, *Convolutional Neural Networks*, of Andrew
Ng's Deep Learning Specialization (deeplearning.ai, on Coursera:
https://www.coursera.org/learn/convolutional-neural-networks), and its
functions are reproduced in many blog posts.  Code written against them
switches with one import::

    from cnnext.compat.deeplearning_ai import (
        conv_forward, conv_backward, pool_forward, pool_backward)

The signatures, argument layouts and return values are the assignment's:

* activations are NHWC, ``(m, n_H, n_W, n_C)``;
* convolution weights are ``(f, f, n_C_prev, n_C)`` and biases
  ``(1, 1, 1, n_C)``;
* ``hparameters`` is a dict: ``{"stride": s, "pad": p}`` for convolutions,
  ``{"f": f, "stride": s}`` for pooling (an optional ``"pad"`` is accepted);
* ``conv_forward`` returns ``(Z, cache)`` with ``cache = (A_prev, W, b,
  hparameters)``, ``pool_forward`` returns ``(A, cache)`` with ``cache =
  (A_prev, hparameters)``, ``conv_backward`` returns ``(dA_prev, dW, db)``
  and ``pool_backward`` returns ``dA_prev``.

Each function transposes to NCHW, calls :mod:`cnnext.functional` (compiled
kernels, no Python loops over pixels) and transposes back.

Differences from the assignment's loop code as it is commonly shared (all
deliberate; this is the correct math):

* ``conv_forward`` adds each bias once per output value, as the
  assignment intends.  A widely shared copy of the code computes
  ``np.sum(a_slice * W + b)`` in ``conv_single_step``, which adds it
  ``f*f*n_C_prev`` times.
* ``conv_backward`` and ``pool_backward`` honour the stride.  Those loops
  place every output position at ``(h, w)`` instead of
  ``(h*stride, w*stride)``, so their gradients are wrong for ``stride > 1``.
* ``conv_backward`` works for ``pad = 0``.  That code unpads with
  ``da_prev_pad[pad:-pad, pad:-pad]``, which is *empty* when ``pad = 0``.
* Max-pool backward sends each gradient to the *first* maximum of its
  window (row-major order, PyTorch's rule).  The assignment's mask
  ``x == np.max(x)`` sends the full gradient to *every* tied maximum,
  which multiplies it (ties are common after a ReLU).
* Overlapping windows accumulate their gradients, as they must.
* Results have the compute dtype of :mod:`cnnext.functional`: float32 when
  every input is float32, float64 otherwise (the assignment always
  returns float64).  Inputs are never modified.
* Bad arguments raise ``ValueError``/``TypeError`` (the assignment code
  returns zeros for an unknown ``mode``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from .. import functional as F
from . import _util as U

if TYPE_CHECKING:
    from .._typing import FloatArray

    #: ``conv_forward``'s cache: its arguments ``(A_prev, W, b, hparameters)``.
    ConvCache: TypeAlias = tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike, dict[str, int]]
    #: ``pool_forward``'s cache: its arguments ``(A_prev, hparameters)``.
    PoolCache: TypeAlias = tuple[npt.ArrayLike, dict[str, int]]

__all__ = ["conv_forward", "conv_backward", "pool_forward", "pool_backward"]

_ScalarT = TypeVar("_ScalarT", bound=np.generic)

_NHWC = "(m, n_H, n_W, n_C) (NHWC)"


def _to_nchw(a: npt.NDArray[_ScalarT]) -> npt.NDArray[_ScalarT]:
    return a.transpose(0, 3, 1, 2)


def _to_nhwc(a: FloatArray) -> FloatArray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _conv_args(
    fname: str, A_prev: npt.ArrayLike, W: npt.ArrayLike, b: npt.ArrayLike,
    hparameters: Mapping[str, int],
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], int, int]:
    A = U.array(fname, "A_prev", A_prev, (4,), _NHWC)
    Wa = U.array(fname, "W", W, (4,), "(f, f, n_C_prev, n_C)")
    ba = U.array(fname, "b", b, (1, 2, 3, 4), "(1, 1, 1, n_C)")
    if Wa.shape[2] != A.shape[3]:
        raise ValueError(
            f"{fname}: W.shape[2] ({Wa.shape[2]}) must equal A_prev.shape[3] "
            f"({A.shape[3]}), the number of input channels n_C_prev"
        )
    if ba.size != Wa.shape[3]:
        raise ValueError(
            f"{fname}: b must hold one value per output channel, shape (1, 1, 1, "
            f"{Wa.shape[3]}); got shape {ba.shape}"
        )
    stride = U.hparam(fname, hparameters, "stride", 1)
    pad = U.hparam(fname, hparameters, "pad", 0)
    # (f, f, C_in, C_out) -> (C_out, C_in, f, f)
    return A, Wa, ba, Wa.transpose(3, 2, 0, 1), stride, pad


def conv_forward(
    A_prev: npt.ArrayLike, W: npt.ArrayLike, b: npt.ArrayLike, hparameters: Mapping[str, int]
) -> tuple[FloatArray, ConvCache]:
    """Convolution forward pass in the deeplearning.ai layout.

    Parameters
    ----------
    A_prev : array_like, shape (m, n_H_prev, n_W_prev, n_C_prev)
        Input activations, NHWC.
    W : array_like, shape (f, f, n_C_prev, n_C)
        Filters (non-square ``(fh, fw, ...)`` also works).
    b : array_like, shape (1, 1, 1, n_C)
        One bias per filter.
    hparameters : dict
        ``{"stride": int >= 1, "pad": int >= 0}`` (zero padding).

    Returns
    -------
    Z : ndarray, shape (m, n_H, n_W, n_C)
        ``Z[i, h, w, c] = b[c] + sum(A_pad[i, h*s:h*s+f, w*s:w*s+f, :] *
        W[:, :, :, c])`` -- a cross-correlation, the kernel is not flipped.
    cache : tuple
        ``(A_prev, W, b, hparameters)``, for :func:`conv_backward`
        (``hparameters`` is a shallow copy).

    Notes
    -----
    ``n_H = (n_H_prev + 2*pad - f) // stride + 1``, likewise ``n_W``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.deeplearning_ai import conv_forward
    >>> A = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> W = np.ones((2, 2, 1, 1)); b = np.full((1, 1, 1, 1), 0.5)
    >>> Z, cache = conv_forward(A, W, b, {"stride": 2, "pad": 0})
    >>> Z.shape, Z[0, :, :, 0]
    ((1, 2, 2, 1), array([[10.5, 18.5],
           [42.5, 50.5]]))
    """
    fname = "conv_forward"
    A, Wa, ba, w, stride, pad = _conv_args(fname, A_prev, W, b, hparameters)
    Z = F.conv2d(_to_nchw(A), w, ba.reshape(-1), stride=stride, padding=pad)
    return _to_nhwc(Z), (A_prev, W, b, dict(hparameters))


def conv_backward(
    dZ: npt.ArrayLike, cache: ConvCache
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Gradients of :func:`conv_forward`, correct for every stride and padding.

    Parameters
    ----------
    dZ : array_like, shape (m, n_H, n_W, n_C)
        Upstream gradient ``dL/dZ``.
    cache : tuple
        ``(A_prev, W, b, hparameters)`` as returned by :func:`conv_forward`.

    Returns
    -------
    dA_prev : ndarray, shape (m, n_H_prev, n_W_prev, n_C_prev)
        The full convolution of the (stride-dilated) ``dZ`` with the
        180-degree-rotated filters, cropped by the padding.
    dW : ndarray, shape (f, f, n_C_prev, n_C)
    db : ndarray, shape of ``b`` (``(1, 1, 1, n_C)``)
        ``dZ`` summed over ``m``, ``n_H`` and ``n_W``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.deeplearning_ai import conv_forward, conv_backward
    >>> A = np.ones((1, 3, 3, 1)); W = np.ones((2, 2, 1, 1)); b = np.zeros((1, 1, 1, 1))
    >>> Z, cache = conv_forward(A, W, b, {"stride": 1, "pad": 0})
    >>> dA, dW, db = conv_backward(np.ones_like(Z), cache)
    >>> dA[0, :, :, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> dW[:, :, 0, 0], db.shape
    (array([[4., 4.],
           [4., 4.]]), (1, 1, 1, 1))
    """
    fname = "conv_backward"
    if not isinstance(cache, tuple) or len(cache) != 4:
        raise TypeError(
            f"{fname}: cache must be the 4-tuple (A_prev, W, b, hparameters) returned by "
            f"conv_forward, got {type(cache).__name__}"
            + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        )
    A, Wa, ba, w, stride, pad = _conv_args(fname, *cache)
    g = U.array(fname, "dZ", dZ, (4,), _NHWC)
    m, H, W_, _ = A.shape
    fh, fw, _, C = Wa.shape
    want = (
        m,
        U.out_size(fname, H, fh, stride, pad, "height"),
        U.out_size(fname, W_, fw, stride, pad, "width"),
        C,
    )
    if g.shape != want:
        raise ValueError(
            f"{fname}: dZ.shape must be the conv_forward output shape {want} for A_prev "
            f"{A.shape}, W {Wa.shape}, stride {stride}, pad {pad}; got {g.shape}"
        )
    gx, gw, gb = F.conv2d_backward(_to_nchw(g), _to_nchw(A), w, stride=stride, padding=pad)
    dW = np.ascontiguousarray(gw.transpose(2, 3, 1, 0))
    return _to_nhwc(gx), dW, gb.reshape(ba.shape)


def _pool_args(
    fname: str, A_prev: npt.ArrayLike, hparameters: Mapping[str, int], mode: str
) -> tuple[npt.NDArray[Any], int, int, int]:
    A = U.array(fname, "A_prev", A_prev, (4,), _NHWC)
    if mode not in ("max", "average"):
        raise ValueError(f"{fname}: mode must be 'max' or 'average', got {mode!r}")
    f = U.hparam(fname, hparameters, "f", 1)
    stride = U.hparam(fname, hparameters, "stride", 1)
    pad = U.hparam(fname, hparameters, "pad", 0, default=0)
    return A, f, stride, pad


def pool_forward(
    A_prev: npt.ArrayLike,
    hparameters: Mapping[str, int],
    mode: Literal["max", "average"] = "max",
) -> tuple[FloatArray, PoolCache]:
    """Max or average pooling forward pass in the deeplearning.ai layout.

    Parameters
    ----------
    A_prev : array_like, shape (m, n_H_prev, n_W_prev, n_C)
    hparameters : dict
        ``{"f": window size >= 1, "stride": int >= 1}``, optionally
        ``"pad"`` (default 0, at most ``f // 2``; max pooling never selects
        padding, average pooling counts it as zeros).
    mode : {"max", "average"}

    Returns
    -------
    A : ndarray, shape (m, n_H, n_W, n_C)
    cache : tuple
        ``(A_prev, hparameters)``, for :func:`pool_backward`.

    Notes
    -----
    ``n_H = (n_H_prev + 2*pad - f) // stride + 1``, likewise ``n_W``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.deeplearning_ai import pool_forward
    >>> A = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> P, cache = pool_forward(A, {"f": 2, "stride": 2}, mode="max")
    >>> P[0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> pool_forward(A, {"f": 2, "stride": 2}, mode="average")[0][0, :, :, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    fname = "pool_forward"
    A, f, stride, pad = _pool_args(fname, A_prev, hparameters, mode)
    x = _to_nchw(A)
    if mode == "max":
        y = F.max_pool2d(x, f, stride=stride, padding=pad)
    else:
        y = F.avg_pool2d(x, f, stride=stride, padding=pad)
    return _to_nhwc(y), (A_prev, dict(hparameters))


def pool_backward(
    dA: npt.ArrayLike, cache: PoolCache, mode: Literal["max", "average"] = "max"
) -> FloatArray:
    """Gradient of :func:`pool_forward`, correct for every stride.

    Parameters
    ----------
    dA : array_like, shape (m, n_H, n_W, n_C)
        Upstream gradient.
    cache : tuple
        ``(A_prev, hparameters)`` as returned by :func:`pool_forward`.
    mode : {"max", "average"}
        As given to :func:`pool_forward`.

    Returns
    -------
    dA_prev : ndarray, shape of ``A_prev``
        ``"max"``: each gradient goes to the first maximum (row-major) of
        its window; ``"average"``: spread evenly, ``/ f**2``.  Overlapping
        windows accumulate.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.deeplearning_ai import pool_forward, pool_backward
    >>> A = np.array([[1., 3.], [3., 0.]]).reshape(1, 2, 2, 1)
    >>> P, cache = pool_forward(A, {"f": 2, "stride": 2})
    >>> pool_backward(np.full((1, 1, 1, 1), 5.0), cache)[0, :, :, 0]
    array([[0., 5.],
           [0., 0.]])
    """
    fname = "pool_backward"
    if not isinstance(cache, tuple) or len(cache) != 2:
        raise TypeError(
            f"{fname}: cache must be the 2-tuple (A_prev, hparameters) returned by "
            f"pool_forward, got {type(cache).__name__}"
            + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        )
    A, f, stride, pad = _pool_args(fname, cache[0], cache[1], mode)
    g = U.array(fname, "dA", dA, (4,), _NHWC)
    m, H, W, C = A.shape
    want = (
        m,
        U.out_size(fname, H, f, stride, pad, "height"),
        U.out_size(fname, W, f, stride, pad, "width"),
        C,
    )
    if g.shape != want:
        raise ValueError(
            f"{fname}: dA.shape must be the pool_forward output shape {want} for A_prev "
            f"{A.shape}, f {f}, stride {stride}, pad {pad}; got {g.shape}"
        )
    g, x = _to_nchw(g), _to_nchw(A)
    if mode == "max":
        # The cache format is the assignment's, so the argmax is recomputed
        # (one pooling pass) instead of stored.
        _, idx = F.max_pool2d(x, f, stride=stride, padding=pad, return_indices=True)
        gx = F.max_pool2d_backward(g, idx, x.shape)
    else:
        gx = F.avg_pool2d_backward(g, x.shape, f, stride=stride, padding=pad)
    return _to_nhwc(gx)
