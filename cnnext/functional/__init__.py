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

from . import activation, conv, dense, norm, pooling
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403
from .dense import *  # noqa: F403
from .norm import *  # noqa: F403
from .pooling import *  # noqa: F403

__all__ = conv.__all__ + pooling.__all__ + dense.__all__ + activation.__all__ + norm.__all__
