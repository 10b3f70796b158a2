"""The validated functional API (also importable as ``cnnext.F``).

This is the only layer that checks arguments, coerces dtypes and memory
layout, picks the float32/float64 kernel and allocates outputs.  Semantics
are PyTorch's CPU semantics:

* layout NCHW; a 3-D ``(C, H, W)`` input is one unbatched sample and gives a
  3-D result;
* convolution weight ``(C_out, C_in, kH, kW)``; the forward pass is a
  *cross-correlation* (the kernel is not flipped);
* ``stride``, ``padding``, ``dilation``, ``kernel_size`` take an int or an
  ``(h, w)`` pair;
* the compute dtype is ``numpy.result_type(*inputs, numpy.float32)``
  restricted to float32/float64, so integer inputs promote to float64 and
  uint8 images to float32.  Inputs are never modified.

Which implementation runs is chosen by :func:`cnnext.set_backend`:
``"cython"`` (default, compiled kernels) or ``"numpy"``
(:mod:`cnnext.reference`).

The ops live in one module per family (:mod:`~cnnext.functional.conv`,
:mod:`~cnnext.functional.pooling`, :mod:`~cnnext.functional.dense`,
:mod:`~cnnext.functional.activation`, :mod:`~cnnext.functional.norm`) and
are all importable from here."""
from __future__ import annotations

from .activation import (
    leaky_relu, leaky_relu_backward, log_softmax, log_softmax_backward, relu, relu_backward,
    sigmoid, sigmoid_backward, softmax, softmax_backward, softmax_cross_entropy, tanh,
    tanh_backward,
)
from .conv import (
    conv1d, conv1d_backward, conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward,
    full_conv2d,
)
from .dense import linear, linear_backward
from .norm import batch_norm, batch_norm_backward
from .pooling import (
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d,
    adaptive_max_pool2d_backward, avg_pool1d, avg_pool1d_backward, avg_pool2d, avg_pool2d_backward,
    max_pool1d, max_pool1d_backward, max_pool2d, max_pool2d_backward, max_unpool2d,
    max_unpool2d_backward,
)

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv1d",
    "conv1d_backward",
    "full_conv2d",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
    "linear",
    "linear_backward",
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
    "batch_norm",
    "batch_norm_backward",
]
