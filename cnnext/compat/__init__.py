"""Drop-in adapters: run from-scratch tutorial CNN code on cnnext kernels.

Much CNN code in the wild follows one of a few well-known courses and
tutorials.  Each submodule here offers the same names, signatures, layouts
and return values, computed by :mod:`cnnext.functional` (compiled kernels,
no Python pixel loops), so such code switches with an import change:

:mod:`cnnext.compat.cs231n`
    Stanford CS231n's assignment layers (``conv_forward_naive``,
    ``max_pool_forward_fast``, ``affine_forward``, ``softmax_loss``, the
    ``layer_utils`` sandwiches, ...): NCHW, ``(out, cache)`` pairs,
    ``conv_param`` / ``pool_param`` dicts.
:mod:`cnnext.compat.deeplearning_ai`
    The deeplearning.ai assignment "Convolutional Neural Networks: Step by
    Step" (Andrew Ng's Deep Learning Specialization): ``conv_forward``,
    ``conv_backward``, ``pool_forward``, ``pool_backward`` (NHWC, weights
    ``(f, f, n_C_prev, n_C)``, ``hparameters`` dicts).
:mod:`cnnext.compat.victorzhou`
    Victor Zhou's "CNNs, Part 1/2" classes ``Conv3x3``, ``MaxPool2``,
    ``Softmax`` with ``forward`` / ``backprop`` on one image at a time.
:mod:`cnnext.compat.hanbingtao`
    hanbingtao's "零基础入门深度学习(4) - 卷积神经网络" classes ``ConvLayer``,
    ``MaxPoolingLayer``, ``Filter`` and the ``ReluActivator`` /
    ``SigmoidActivator`` / ``IdentityActivator`` classes, channels-first,
    one sample at a time.

The adapters implement the *correct* math, which differs from the
tutorials' own loops where those are wrong (stride ignored in backward,
``pad = 0`` giving empty gradients, tied maxima all receiving the gradient,
overlapping pooling windows overwriting instead of accumulating).  Each
module's docstring lists the differences; ``docs/compat.md`` has
before/after examples.

Examples
--------
>>> import numpy as np
>>> from cnnext import compat
>>> A = np.ones((1, 3, 3, 1)); W = np.ones((2, 2, 1, 1)); b = np.zeros((1, 1, 1, 1))
>>> Z, cache = compat.deeplearning_ai.conv_forward(A, W, b, {"stride": 1, "pad": 0})
>>> Z[0, :, :, 0]
array([[4., 4.],
       [4., 4.]])
>>> compat.victorzhou.MaxPool2().forward(np.arange(16.0).reshape(4, 4, 1))[:, :, 0]
array([[ 5.,  7.],
       [13., 15.]])
>>> out, cache = compat.cs231n.relu_forward(np.array([-1.0, 2.0]))
>>> out
array([0., 2.])
"""
from . import cs231n, deeplearning_ai, hanbingtao, victorzhou

__all__ = ["cs231n", "deeplearning_ai", "victorzhou", "hanbingtao"]
