"""Plain-numpy reference implementations of the cnnext layer kernels.

This module is the test oracle for the compiled kernels and the ``numpy``
backend of :mod:`cnnext.functional`. It is **slow on purpose**: every
function is written to be obviously correct, not fast.

To avoid sharing bugs with the fast kernels (GEMM micro-kernels over
im2col-ordered panels, and col2im), nothing here builds an im2col matrix.
Forward convolutions and pools gather with :func:`numpy.lib.stride_tricks.sliding_window_view` and a
windowed :func:`numpy.einsum`; backward passes *scatter* with an explicit
loop over the kernel taps (each tap adds its contribution into a strided
slice of a padded buffer); ``conv_transpose2d`` and ``full_conv2d`` scatter
the same way from its definition (every input value times every tap, added
at its output position), and the gradients of ``conv_transpose2d`` gather
windows of the padded output gradient.

Semantics are those of PyTorch's CPU ``torch.nn.functional``: NCHW layout,
convolution weight ``(C_out, C_in, kH, kW)``, the forward pass is a
cross-correlation (the kernel is not flipped), ``dilation=1`` means no
dilation, and ``stride``/``padding``/``dilation``/``kernel_size``/
``output_padding`` are an int or an ``(h, w)`` pair.

Nothing here validates its arguments: :mod:`cnnext.functional` checks shapes
and dtypes, coerces to C-contiguous float32/float64 and turns unbatched 3-D
input into 4-D before it calls in. Inputs are never modified. Results have
the dtype of the corresponding input; sums are accumulated in float64 and
cast back.

The ops live in one module per family (``conv``, ``pooling``, ``dense``,
``activation``, ``norm``), mirroring :mod:`cnnext.functional`, and are all
importable from here.
"""
from __future__ import annotations

from . import activation, conv, dense, norm, pooling
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403
from .dense import *  # noqa: F403
from .norm import *  # noqa: F403
from .pooling import *  # noqa: F403

__all__ = conv.__all__ + pooling.__all__ + dense.__all__ + activation.__all__ + norm.__all__
