"""Drop-in for the layer functions of Stanford's CS231n assignments.

CS231n, "Convolutional Neural Networks for Visual Recognition"
(https://cs231n.github.io/), has students write the layers of a CNN in
numpy: ``cs231n/layers.py`` (``conv_forward_naive``, ``affine_forward``,
...), with faster versions in ``cs231n/fast_layers.py`` and the
``layer_utils.py`` "sandwich" layers built from them.  Code written against
that API switches with one import::

    from cnnext.compat.cs231n import (
        conv_forward_fast, conv_backward_fast,
        max_pool_forward_fast, max_pool_backward_fast,
        affine_forward, affine_backward, relu_forward, relu_backward,
        softmax_loss, svm_loss,
        conv_relu_pool_forward, conv_relu_pool_backward,
        affine_relu_forward, affine_relu_backward)

The conventions are the course's:

* every ``*_forward`` returns ``(out, cache)`` and the matching
  ``*_backward(dout, cache)`` returns the gradients, in the same order as
  the forward inputs: ``dx, dw, db`` for convolutions and affine layers,
  ``dx`` for pooling and ReLU;
* activations are NCHW ``(N, C, H, W)``; convolution weights are
  ``(F, C, HH, WW)``, biases ``(F,)``; ``conv_param = {'stride': s,
  'pad': p}`` (zero padding on both sides); ``pool_param =
  {'pool_height': ph, 'pool_width': pw, 'stride': s}`` (no padding);
* ``affine_forward`` takes ``x`` of any shape ``(N, d_1, ..., d_k)``,
  flattened to ``(N, D)``, and ``w`` of shape ``(D, M)`` -- note: the
  transpose of the ``(M, D)`` layout of :func:`cnnext.functional.linear`
  and PyTorch; ``dx`` has the shape of ``x``, ``dw`` that of ``w``;
* ``softmax_loss(x, y)`` and ``svm_loss(x, y)`` take scores ``(N, C)`` and
  integer labels ``(N,)`` and return ``(loss, dx)``, the loss averaged over
  the ``N`` samples;
* caches are the course's tuples: ``(x, w, b, conv_param)`` for
  convolutions, ``(x, pool_param)`` for pooling, ``(x, w, b)`` for affine
  layers, ``x`` for ReLU, and tuples of those for the sandwich layers.

Every function calls :mod:`cnnext.functional` (compiled kernels, no Python
loops over pixels).  The ``_naive`` and ``_fast`` variants compute the
same thing with the same kernels; both names exist so that code written
for either runs unchanged.

Differences from the course's code (see ``docs/compat.md``):

* Max-pool backward sends each gradient to the *first* maximum of its
  window, in row-major order (PyTorch's rule), in both variants.  The
  course's ``max_pool_backward_fast`` splits it equally among tied maxima
  when the windows tile the input (its "reshape" path) and takes the first
  maximum (``np.argmax``) otherwise; naive versions written for the
  assignment differ from student to student.  Without ties all agree.
* Output sizes are floored, ``H' = 1 + (H + 2*pad - HH) // stride``, as in
  the course's ``conv_forward_fast``; its ``im2col`` variants and the
  naive versions assume the stride divides evenly.
* The fast caches are the naive tuples (the course's hold an ``im2col``
  matrix or a method tag), so every backward function accepts the cache of
  either forward variant; the pooling backward recomputes the argmax from
  ``x`` (one pooling pass) instead of storing it.
* Results are float32 when every floating input is float32, float64
  otherwise (integer inputs compute in float64), following
  :mod:`cnnext.functional`; the course's naive code returns float64.
  ``relu_backward`` passes the gradient through where ``x`` is NaN
  (PyTorch's rule); the course's ``dout * (x > 0)`` zeroes it.
* Inputs are never modified, and bad arguments raise ``ValueError`` /
  ``TypeError`` naming the function, the parameter and the value received
  (the course's code fails later, or asserts).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy.typing as npt

from ._cs231n_layers import (
    unpack_cache,
    affine_backward,
    affine_forward,
    conv_backward_fast,
    conv_backward_naive,
    conv_forward_fast,
    conv_forward_naive,
    max_pool_backward_fast,
    max_pool_backward_naive,
    max_pool_forward_fast,
    max_pool_forward_naive,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)

if TYPE_CHECKING:
    from .._typing import FloatArray
    from ._cs231n_layers import AffineCache, ConvCache, PoolCache, ReluCache

__all__ = [
    "conv_forward_naive",
    "conv_backward_naive",
    "conv_forward_fast",
    "conv_backward_fast",
    "max_pool_forward_naive",
    "max_pool_backward_naive",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "softmax_loss",
    "svm_loss",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
    "affine_relu_forward",
    "affine_relu_backward",
]


# --------------------------------------------------------------------------
# layer_utils "sandwich" layers
# --------------------------------------------------------------------------


def affine_relu_forward(
    x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike
) -> tuple[FloatArray, tuple[AffineCache, ReluCache]]:
    """An affine layer followed by a ReLU.

    Parameters
    ----------
    x : array_like, shape (N, d_1, ..., d_k)
    w : array_like, shape (D, M)
    b : array_like, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple
        ``(fc_cache, relu_cache)``, for :func:`affine_relu_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import affine_relu_forward
    >>> out, cache = affine_relu_forward(np.array([[1.0, -2.0]]), np.eye(2), np.zeros(2))
    >>> out
    array([[1., 0.]])
    """
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(
    dout: npt.ArrayLike, cache: tuple[AffineCache, ReluCache]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Backward pass of :func:`affine_relu_forward`.

    Parameters
    ----------
    dout : array_like, shape (N, M)
    cache : tuple
        ``(fc_cache, relu_cache)`` from :func:`affine_relu_forward`.

    Returns
    -------
    dx : ndarray, shape of ``x``
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import affine_relu_forward, affine_relu_backward
    >>> out, cache = affine_relu_forward(np.array([[1.0, -2.0]]), np.eye(2), np.zeros(2))
    >>> dx, dw, db = affine_relu_backward(np.ones((1, 2)), cache)
    >>> dx, db
    (array([[1., 0.]]), array([1., 0.]))
    """
    fc_cache, relu_cache = unpack_cache(
        "affine_relu_backward", cache, 2, "(fc_cache, relu_cache)", "affine_relu_forward"
    )
    da = relu_backward(dout, relu_cache)
    return affine_backward(da, fc_cache)


def conv_relu_forward(
    x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike, conv_param: Mapping[str, int]
) -> tuple[FloatArray, tuple[ConvCache, ReluCache]]:
    """A convolution followed by a ReLU.

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
        ``(conv_cache, relu_cache)``, for :func:`conv_relu_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_relu_forward
    >>> x = np.array([[[[1.0, -3.0]]]])
    >>> out, cache = conv_relu_forward(x, np.ones((1, 1, 1, 1)), np.array([1.0]),
    ...                                {'stride': 1, 'pad': 0})
    >>> out
    array([[[[2., 0.]]]])
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(
    dout: npt.ArrayLike, cache: tuple[ConvCache, ReluCache]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Backward pass of :func:`conv_relu_forward`.

    Parameters
    ----------
    dout : array_like, shape (N, F, H', W')
    cache : tuple
        ``(conv_cache, relu_cache)`` from :func:`conv_relu_forward`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_relu_forward, conv_relu_backward
    >>> x = np.array([[[[1.0, -3.0]]]])
    >>> out, cache = conv_relu_forward(x, np.ones((1, 1, 1, 1)), np.array([1.0]),
    ...                                {'stride': 1, 'pad': 0})
    >>> dx, dw, db = conv_relu_backward(np.ones_like(out), cache)
    >>> dx, dw.ravel(), db
    (array([[[[1., 0.]]]]), array([1.]), array([1.]))
    """
    conv_cache, relu_cache = unpack_cache(
        "conv_relu_backward", cache, 2, "(conv_cache, relu_cache)", "conv_relu_forward"
    )
    da = relu_backward(dout, relu_cache)
    return conv_backward_fast(da, conv_cache)


def conv_relu_pool_forward(
    x: npt.ArrayLike,
    w: npt.ArrayLike,
    b: npt.ArrayLike,
    conv_param: Mapping[str, int],
    pool_param: Mapping[str, int],
) -> tuple[FloatArray, tuple[ConvCache, ReluCache, PoolCache]]:
    """A convolution, a ReLU and a max pooling.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (F, C, HH, WW)
    b : array_like, shape (F,)
    conv_param : dict
        ``{'stride': int >= 1, 'pad': int >= 0}``.
    pool_param : dict
        ``{'pool_height': int >= 1, 'pool_width': int >= 1, 'stride': int >= 1}``.

    Returns
    -------
    out : ndarray
        The pooled activations.
    cache : tuple
        ``(conv_cache, relu_cache, pool_cache)``, for
        :func:`conv_relu_pool_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_relu_pool_forward
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4) - 8
    >>> out, cache = conv_relu_pool_forward(
    ...     x, np.ones((1, 1, 1, 1)), np.zeros(1), {'stride': 1, 'pad': 0},
    ...     {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    >>> out
    array([[[[0., 0.],
             [5., 7.]]]])
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(
    dout: npt.ArrayLike, cache: tuple[ConvCache, ReluCache, PoolCache]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Backward pass of :func:`conv_relu_pool_forward`.

    Parameters
    ----------
    dout : array_like
        Shape of the pooled output.
    cache : tuple
        ``(conv_cache, relu_cache, pool_cache)`` from
        :func:`conv_relu_pool_forward`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.cs231n import conv_relu_pool_forward, conv_relu_pool_backward
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4) - 8
    >>> out, cache = conv_relu_pool_forward(
    ...     x, np.ones((1, 1, 1, 1)), np.zeros(1), {'stride': 1, 'pad': 0},
    ...     {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    >>> dx, dw, db = conv_relu_pool_backward(np.ones_like(out), cache)
    >>> dx[0, 0]
    array([[0., 0., 0., 0.],
           [0., 0., 0., 0.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    >>> dw.ravel(), db
    (array([12.]), array([2.]))
    """
    conv_cache, relu_cache, pool_cache = unpack_cache(
        "conv_relu_pool_backward", cache, 3, "(conv_cache, relu_cache, pool_cache)",
        "conv_relu_pool_forward",
    )
    ds = max_pool_backward_fast(dout, pool_cache)
    da = relu_backward(ds, relu_cache)
    return conv_backward_fast(da, conv_cache)
