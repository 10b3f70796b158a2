"""Drop-in for the ``ConvLayer`` / ``MaxPoolingLayer`` / activator classes of
hanbingtao's tutorial "零基础入门深度学习(4) - 卷积神经网络" (deep learning for
beginners, part 4: convolutional neural networks,
https://www.zybuluo.com/hanbingtao/note/485480).  The same classes are
reused in huxiaoman7's PaddlePaddle examples
(https://github.com/huxiaoman7/PaddlePaddle_code/blob/master/1.mnist/cnn.py)
and in many reposts.

Code written against that tutorial switches with one import::

    from cnnext.compat.hanbingtao import (
        ConvLayer, MaxPoolingLayer, Filter,
        ReluActivator, SigmoidActivator, IdentityActivator)

Layout and interface are the tutorial's: one sample at a time, channels
first, ``(channel_number, input_height, input_width)`` (a 2-D
``(height, width)`` input is accepted when ``channel_number == 1``);
filters are :class:`Filter` objects holding ``weights`` of shape
``(depth, height, width)``, a scalar ``bias`` and their gradients; results
are left in ``output_array`` (forward) and ``delta_array`` (backward), and
``update()`` takes one SGD step.

Semantics of :meth:`ConvLayer.backward` (as in the tutorial):
``sensitivity_array`` is ``dL/dnet`` of *this* layer's output (the
derivative of this layer's own activation already applied), and
``activator`` is the activation of the *previous* layer: ``delta_array`` is
the input gradient multiplied elementwise by
``activator.backward(input_array)`` (activators take the derivative in
terms of their *output*, which is this layer's input).

Each method calls :mod:`cnnext.functional` (compiled kernels, no Python
loops over pixels).  Differences from the tutorial code (deliberate; this
is the correct math):

* Any ``zero_padding`` and ``stride`` work, including output sizes where
  ``(input - filter + 2*padding)`` is not a multiple of the stride and
  ``zero_padding >= filter_size`` (where the tutorial's full-convolution
  padding ``filter - 1 - padding`` turns negative).
* ``MaxPoolingLayer.backward`` *accumulates* where overlapping windows
  (``stride < filter``) pick the same input, and uses the first maximum of
  each window (row-major); the tutorial overwrites.
* ``backward`` does not re-run ``forward`` (the tutorial does, only to
  rebuild its padded input); ``output_array`` keeps the last forward result.
* ``Filter.weights`` and ``Filter.bias`` store float64 copies of what is
  assigned to them, so ``update()`` never modifies an array you assigned.
* Activators work on whole arrays (and on scalars).  A user-written
  activator that only handles scalars (e.g. ``max(0, x)``) still works: it
  is applied element by element, as the tutorial's ``element_wise_op`` does.
* Inputs are never modified; shapes are checked against the constructor
  arguments with clear errors.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt

from .. import functional as F
from . import _util as U

if TYPE_CHECKING:
    from .._typing import FloatArray, IndexArray, Seed

    class Activator(Protocol):
        """An activator: ``forward`` and ``backward`` take an array, or one
        element at a time, and return the values (or value)."""

        def forward(self, weighted_input: Any) -> npt.ArrayLike: ...

        def backward(self, output: Any) -> npt.ArrayLike: ...

__all__ = [
    "ConvLayer",
    "MaxPoolingLayer",
    "Filter",
    "IdentityActivator",
    "ReluActivator",
    "SigmoidActivator",
]

_T = TypeVar("_T")


def _same_shape(result: npt.ArrayLike, x: npt.ArrayLike) -> float | npt.NDArray[Any]:
    """``result`` shaped like ``x``: a scalar input gives a Python float."""
    r = np.reshape(result, np.shape(x))
    return float(r) if r.ndim == 0 else r


class IdentityActivator:
    """``f(x) = x``; derivative 1.

    Examples
    --------
    >>> from cnnext.compat.hanbingtao import IdentityActivator
    >>> act = IdentityActivator()
    >>> act.forward(-2.0), act.backward(-2.0)
    (-2.0, 1.0)
    """

    def forward(self, weighted_input: _T) -> _T:
        return weighted_input

    def backward(self, output: npt.ArrayLike) -> float | npt.NDArray[Any]:
        return _same_shape(np.ones(np.shape(output)), output)


class ReluActivator:
    """``f(x) = max(0, x)``; derivative (in terms of the output) ``output > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.hanbingtao import ReluActivator
    >>> act = ReluActivator()
    >>> act.forward(np.array([-1.0, 2.0])), act.backward(np.array([0.0, 2.0]))
    (array([0., 2.]), array([0., 1.]))
    """

    def forward(self, weighted_input: npt.ArrayLike) -> float | npt.NDArray[Any]:
        return _same_shape(F.relu(weighted_input), weighted_input)

    def backward(self, output: npt.ArrayLike) -> float | npt.NDArray[Any]:
        return _same_shape((np.asarray(output) > 0).astype(np.float64), output)


class SigmoidActivator:
    """``f(x) = 1 / (1 + exp(-x))``; derivative ``output * (1 - output)``.

    Examples
    --------
    >>> from cnnext.compat.hanbingtao import SigmoidActivator
    >>> act = SigmoidActivator()
    >>> float(act.forward(0.0)), float(act.backward(0.5))
    (0.5, 0.25)
    """

    def forward(self, weighted_input: npt.ArrayLike) -> float | npt.NDArray[Any]:
        return _same_shape(F.sigmoid(weighted_input), weighted_input)

    def backward(self, output: npt.ArrayLike) -> float | npt.NDArray[Any]:
        y = np.asarray(output, dtype=np.float64)
        return _same_shape(y * (1 - y), output)


def _apply(
    fname: str, op: Callable[[Any], npt.ArrayLike], x: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """``op`` on the whole array, or element by element if it only takes scalars.

    The tutorial applies activators with ``np.nditer`` one element at a
    time; cnnext's own activators are vectorised.  A scalar-only user
    activator (``max(0, x)``, ``math.exp(x)``) raises on an array, and is
    then applied per element like the tutorial does.
    """
    try:
        r = np.asarray(op(x), dtype=np.float64)
        if r.shape == x.shape:
            return r
    except (ValueError, TypeError):
        pass
    r = np.vectorize(op, otypes=[np.float64])(x)
    if r.shape != x.shape:
        raise ValueError(f"{fname}: the activator must map each element to one number")
    return cast("npt.NDArray[np.float64]", r)  # (np.vectorize's result is untyped)


class Filter:
    """One convolution filter: ``weights`` (depth, height, width) and a scalar ``bias``.

    Parameters
    ----------
    width, height, depth : int
        Filter size; ``depth`` is the number of input channels.
    seed : None, int or numpy.random.Generator, optional
        ``None`` (default) draws the weights from numpy's global random state
        (``np.random.uniform(-1e-4, 1e-4, ...)``) as the tutorial does.

    Attributes
    ----------
    weights : ndarray, shape (depth, height, width), float64
        Assigning stores a float64 copy (the shape is checked).
    bias : float
    weights_grad : ndarray, shape (depth, height, width)
    bias_grad : float

    Examples
    --------
    >>> from cnnext.compat.hanbingtao import Filter
    >>> f = Filter(2, 2, 1, seed=0)
    >>> f.weights = [[[1.0, 2.0], [3.0, 4.0]]]
    >>> f.weights_grad = f.weights.copy(); f.bias_grad = 10.0
    >>> f.update(0.5)
    >>> f
    filter weights:
    array([[[0.5, 1. ],
            [1.5, 2. ]]])
    bias:
    -5.0
    """

    def __init__(self, width: int, height: int, depth: int, seed: Seed = None) -> None:
        fname = "Filter"
        shape = (
            U.positive_int(fname, "depth", depth),
            U.positive_int(fname, "height", height),
            U.positive_int(fname, "width", width),
        )
        self._shape = shape
        self._weights = U.uniform(U.generator(fname, seed), -1e-4, 1e-4, shape)
        self._bias = 0.0
        self.weights_grad: npt.NDArray[np.floating[Any]] = np.zeros(shape)
        self.bias_grad = 0.0

    @property
    def weights(self) -> FloatArray:
        return self._weights

    @weights.setter
    def weights(self, value: npt.ArrayLike) -> None:
        w = np.array(U.array("Filter.weights", "weights", value, (3,), "(depth, height, width)"),
                     dtype=np.float64)
        if w.shape != self._shape:
            raise ValueError(
                f"Filter.weights: weights must have shape (depth, height, width) = "
                f"{self._shape}, got {w.shape}"
            )
        self._weights = w

    @property
    def bias(self) -> float:
        return self._bias

    @bias.setter
    def bias(self, value: float) -> None:
        self._bias = U.real("Filter.bias", "bias", value)

    def __repr__(self) -> str:
        return "filter weights:\n%s\nbias:\n%s" % (repr(self.weights), repr(self.bias))

    def get_weights(self) -> FloatArray:
        return self.weights

    def get_bias(self) -> float:
        return self.bias

    def update(self, learning_rate: float) -> None:
        """``weights -= learning_rate * weights_grad``, likewise the bias."""
        lr = U.real("Filter.update", "learning_rate", learning_rate)
        self._weights -= lr * np.asarray(self.weights_grad, dtype=np.float64)
        self._bias -= lr * float(self.bias_grad)


def _chw(
    fname: str, value: npt.ArrayLike, channels: int, height: int, width: int
) -> npt.NDArray[np.float64]:
    """A float64 (C, H, W) copy; 2-D accepted for one channel."""
    x = U.array(fname, "input_array", value, (2, 3), "(channel_number, height, width)")
    if x.ndim == 2:
        x = x[None]
    want = (channels, height, width)
    if x.shape != want:
        raise ValueError(
            f"{fname}: input_array must have shape (channel_number, input_height, "
            f"input_width) = {want}, got {np.shape(value)}"
        )
    return np.array(x, dtype=np.float64)


class ConvLayer:
    """Convolution layer for one ``(channel_number, height, width)`` sample.

    Parameters
    ----------
    input_width, input_height, channel_number : int
        Input size.
    filter_width, filter_height, filter_number : int
        Filter size and number of filters (output channels).
    zero_padding : int
        Zeros added on every side.
    stride : int
    activator : object
        With ``forward(x)`` and ``backward(output)``, e.g. :class:`ReluActivator`;
        applied to the convolution result.
    learning_rate : float
        Used by :meth:`update`.
    seed : None, int or numpy.random.Generator, optional
        For the filters' initial weights (``None``: global numpy state, as the
        tutorial).

    Attributes
    ----------
    filters : list of Filter
    output_array : ndarray, shape (filter_number, output_height, output_width)
    delta_array : ndarray, shape (channel_number, input_height, input_width)
        Set by :meth:`backward`.
    output_width, output_height : int
        ``(input - filter + 2*zero_padding) // stride + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.hanbingtao import ConvLayer, IdentityActivator
    >>> cl = ConvLayer(4, 4, 1, 2, 2, 1, 0, 2, IdentityActivator(), 0.1, seed=0)
    >>> cl.filters[0].weights = np.ones((1, 2, 2))
    >>> cl.forward(np.arange(16.0).reshape(1, 4, 4))
    >>> cl.output_array
    array([[[10., 18.],
            [42., 50.]]])
    >>> cl.backward(np.arange(16.0).reshape(1, 4, 4), np.ones((1, 2, 2)), IdentityActivator())
    >>> cl.delta_array.shape, cl.filters[0].bias_grad
    ((1, 4, 4), 4.0)
    """

    def __init__(self, input_width: int, input_height: int, channel_number: int,
                 filter_width: int, filter_height: int, filter_number: int, zero_padding: int,
                 stride: int, activator: Activator, learning_rate: float,
                 seed: Seed = None) -> None:
        fname = "ConvLayer"
        self.input_width = U.positive_int(fname, "input_width", input_width)
        self.input_height = U.positive_int(fname, "input_height", input_height)
        self.channel_number = U.positive_int(fname, "channel_number", channel_number)
        self.filter_width = U.positive_int(fname, "filter_width", filter_width)
        self.filter_height = U.positive_int(fname, "filter_height", filter_height)
        self.filter_number = U.positive_int(fname, "filter_number", filter_number)
        self.zero_padding = U.positive_int(fname, "zero_padding", zero_padding, 0)
        self.stride = U.positive_int(fname, "stride", stride)
        self.output_width = ConvLayer.calculate_output_size(
            self.input_width, self.filter_width, self.zero_padding, self.stride)
        self.output_height = ConvLayer.calculate_output_size(
            self.input_height, self.filter_height, self.zero_padding, self.stride)
        if self.output_width < 1 or self.output_height < 1:
            raise ValueError(
                f"{fname}: the filter is larger than the padded input: input "
                f"{self.input_height}x{self.input_width}, filter "
                f"{self.filter_height}x{self.filter_width}, zero_padding {self.zero_padding}, "
                f"stride {self.stride}"
            )
        self.output_array = np.zeros((self.filter_number, self.output_height, self.output_width))
        rng = U.generator(fname, seed)
        self.filters = [
            Filter(self.filter_width, self.filter_height, self.channel_number, seed=rng)
            for _ in range(self.filter_number)
        ]
        self.activator = activator
        self.learning_rate = U.real(fname, "learning_rate", learning_rate)
        self.input_array: npt.NDArray[np.float64] | None = None
        self.delta_array: FloatArray | None = None

    @staticmethod
    def calculate_output_size(
        input_size: int, filter_size: int, zero_padding: int, stride: int
    ) -> int:
        return (input_size - filter_size + 2 * zero_padding) // stride + 1

    @property
    def padded_input_array(self) -> npt.NDArray[np.float64] | None:
        """The last forward input with its zero padding (computed on access)."""
        if self.input_array is None:
            return None
        p = self.zero_padding
        return np.pad(self.input_array, ((0, 0), (p, p), (p, p)))

    def _params(self, fname: str) -> tuple[FloatArray, npt.NDArray[np.float64]]:
        for i, f in enumerate(self.filters):
            if not isinstance(f, Filter):
                raise TypeError(f"{fname}: filters[{i}] must be a Filter, got {type(f).__name__}")
        if len(self.filters) != self.filter_number:
            raise ValueError(
                f"{fname}: filters must hold filter_number = {self.filter_number} Filter "
                f"objects, got {len(self.filters)}"
            )
        weight = np.stack([f.weights for f in self.filters])
        bias = np.array([f.bias for f in self.filters])
        return weight, bias

    def forward(self, input_array: npt.ArrayLike) -> None:
        """Convolve, add the biases, apply ``activator``; result in ``output_array``.

        Parameters
        ----------
        input_array : array_like, shape (channel_number, input_height, input_width)
        """
        fname = "ConvLayer.forward"
        x = _chw(fname, input_array, self.channel_number, self.input_height, self.input_width)
        weight, bias = self._params(fname)
        z = F.conv2d(x, weight, bias, stride=self.stride, padding=self.zero_padding)
        self.input_array = x
        self.output_array = _apply(fname, self.activator.forward, z)

    def backward(
        self, input_array: npt.ArrayLike, sensitivity_array: npt.ArrayLike, activator: Activator
    ) -> None:
        """Gradients for ``input_array``; results in ``delta_array`` and the filters.

        Parameters
        ----------
        input_array : array_like, shape (channel_number, input_height, input_width)
            The layer's input (the previous layer's output).
        sensitivity_array : array_like, shape (filter_number, output_height, output_width)
            ``dL/dnet`` for this layer's pre-activation output.
        activator : object
            The *previous* layer's activator: ``delta_array`` is multiplied
            elementwise by ``activator.backward(input_array)``.

        Notes
        -----
        Sets ``delta_array`` (the full convolution of the stride-dilated
        sensitivity map with the 180-degree-rotated filters, cropped by the
        padding, times the activation derivative), every filter's
        ``weights_grad`` and ``bias_grad``.  Call :meth:`update` to apply them.
        """
        fname = "ConvLayer.backward"
        x = _chw(fname, input_array, self.channel_number, self.input_height, self.input_width)
        want = (self.filter_number, self.output_height, self.output_width)
        g = U.array(fname, "sensitivity_array", sensitivity_array, (2, 3),
                    "(filter_number, output_height, output_width)")
        if g.ndim == 2:
            g = g[None]
        if g.shape != want:
            raise ValueError(
                f"{fname}: sensitivity_array must have shape (filter_number, output_height, "
                f"output_width) = {want}, got {np.shape(sensitivity_array)}"
            )
        weight, _ = self._params(fname)
        gx, gw, gb = F.conv2d_backward(g, x, weight, stride=self.stride, padding=self.zero_padding)
        for f, w_grad, b_grad in zip(self.filters, gw, gb):
            f.weights_grad = w_grad
            f.bias_grad = float(b_grad)
        self.input_array = x
        self.delta_array = gx * _apply(fname, activator.backward, x)

    def update(self) -> None:
        """One SGD step on every filter with ``learning_rate``."""
        for f in self.filters:
            f.update(self.learning_rate)


class MaxPoolingLayer:
    """Max pooling for one ``(channel_number, height, width)`` sample.

    Parameters
    ----------
    input_width, input_height, channel_number : int
    filter_width, filter_height : int
        Window size.
    stride : int

    Attributes
    ----------
    output_array : ndarray, shape (channel_number, output_height, output_width)
    delta_array : ndarray, shape (channel_number, input_height, input_width)
        Set by :meth:`backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.hanbingtao import MaxPoolingLayer
    >>> mp = MaxPoolingLayer(2, 2, 1, 2, 2, 2)
    >>> x = np.array([[[1., 3.], [3., 0.]]])
    >>> mp.forward(x); mp.output_array
    array([[[3.]]])
    >>> mp.backward(x, np.array([[[5.]]])); mp.delta_array
    array([[[0., 5.],
            [0., 0.]]])
    """

    def __init__(self, input_width: int, input_height: int, channel_number: int,
                 filter_width: int, filter_height: int, stride: int) -> None:
        fname = "MaxPoolingLayer"
        self.input_width = U.positive_int(fname, "input_width", input_width)
        self.input_height = U.positive_int(fname, "input_height", input_height)
        self.channel_number = U.positive_int(fname, "channel_number", channel_number)
        self.filter_width = U.positive_int(fname, "filter_width", filter_width)
        self.filter_height = U.positive_int(fname, "filter_height", filter_height)
        self.stride = U.positive_int(fname, "stride", stride)
        self.output_width = (self.input_width - self.filter_width) // self.stride + 1
        self.output_height = (self.input_height - self.filter_height) // self.stride + 1
        if self.output_width < 1 or self.output_height < 1:
            raise ValueError(
                f"{fname}: the window is larger than the input: input "
                f"{self.input_height}x{self.input_width}, window "
                f"{self.filter_height}x{self.filter_width}"
            )
        self.output_array: FloatArray = np.zeros(
            (self.channel_number, self.output_height, self.output_width)
        )
        self.delta_array: FloatArray | None = None

    def _pool(
        self, fname: str, input_array: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], tuple[FloatArray, IndexArray]]:
        x = _chw(fname, input_array, self.channel_number, self.input_height, self.input_width)
        return x, F.max_pool2d(
            x, (self.filter_height, self.filter_width), stride=self.stride, return_indices=True
        )

    def forward(self, input_array: npt.ArrayLike) -> None:
        """Max of every window; result in ``output_array``."""
        _, (self.output_array, _) = self._pool("MaxPoolingLayer.forward", input_array)

    def backward(self, input_array: npt.ArrayLike, sensitivity_array: npt.ArrayLike) -> None:
        """Route each sensitivity to its window's first maximum; result in ``delta_array``.

        Parameters
        ----------
        input_array : array_like, shape (channel_number, input_height, input_width)
            The forward input (the maxima are located in it).
        sensitivity_array : array_like, shape (channel_number, output_height, output_width)
        """
        fname = "MaxPoolingLayer.backward"
        x, (_, idx) = self._pool(fname, input_array)
        want = idx.shape
        g = U.array(fname, "sensitivity_array", sensitivity_array, (2, 3),
                    "(channel_number, output_height, output_width)")
        if g.ndim == 2:
            g = g[None]
        if g.shape != want:
            raise ValueError(
                f"{fname}: sensitivity_array must have shape (channel_number, output_height, "
                f"output_width) = {want}, got {np.shape(sensitivity_array)}"
            )
        self.delta_array = F.max_pool2d_backward(g, idx, x.shape)
