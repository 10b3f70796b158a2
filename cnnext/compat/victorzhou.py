"""Drop-in for the ``Conv3x3`` / ``MaxPool2`` / ``Softmax`` classes of Victor
Zhou's two-part tutorial "CNNs, Part 1: An Introduction to Convolutional
Neural Networks" (https://victorzhou.com/blog/intro-to-cnns-part-1/) and
"CNNs, Part 2: Training a Convolutional Neural Network"
(https://victorzhou.com/blog/intro-to-cnns-part-2/), whose code is at
https://github.com/vzhou842/cnn-from-scratch and has been translated and
reposted widely.

Code written against that tutorial switches with one import::

    from cnnext.compat.victorzhou import Conv3x3, MaxPool2, Softmax

The classes keep the tutorial's constructors, attributes (``filters``,
``weights``, ``biases``, ``last_input``, ``last_input_shape``,
``last_totals``) and methods, and work on one image at a time:

* ``Conv3x3(num_filters).forward(image)``: a 2-D ``(h, w)`` image ->
  ``(h - 2, w - 2, num_filters)`` ('valid' 3x3 cross-correlation, no bias);
* ``MaxPool2().forward(x)``: ``(h, w, c)`` -> ``(h // 2, w // 2, c)``
  (a 2-D ``(h, w)`` input gives a 2-D result);
* ``Softmax(input_len, nodes).forward(x)``: flattens ``x`` (``input_len``
  values) and returns the ``nodes`` class probabilities;
* ``backprop(d_L_d_out, learn_rate)`` applies one SGD step to the layer's
  parameters and returns ``d_L_d_input`` (``MaxPool2.backprop`` takes only
  ``d_L_d_out``; a ``learn_rate`` is accepted and ignored so all three can
  be called alike).

Each method calls :mod:`cnnext.functional` (compiled kernels, no Python
loops over pixels).

Differences from the tutorial code (deliberate; this is the correct math):

* ``MaxPool2.backprop`` sends each gradient to the *first* maximum of its
  2x2 window (row-major order, PyTorch's rule).  The tutorial sends the
  full gradient to *every* position equal to the maximum, so tied values
  (common after a ReLU, or in flat image regions) receive it several times.
  (A widely shared copy of the tutorial code also writes the gradient to
  ``[i + i2, j + j2]`` instead of ``[i * 2 + i2, j * 2 + j2]``, i.e. to the
  wrong pixels; the adapter follows the original.)
* ``Conv3x3.backprop`` returns ``d_L_d_input`` (shape of the image); the
  tutorial returns ``None`` because its first layer needs no input
  gradient.  Code that ignores the return value is unaffected.
* ``Softmax.backprop`` back-propagates any upstream gradient through the
  full softmax Jacobian.  The tutorial's loop returns after the first
  nonzero entry of ``d_L_d_out``, which is only right for the one-hot
  cross-entropy gradient it is used with (where both agree).  The forward
  pass is computed stably (the maximum is subtracted before ``exp``).
* With ``seed=None`` the initial weights come from numpy's global random
  state exactly as in the tutorial (``np.random.randn(...) / 9`` and
  ``/ input_len``), so ``np.random.seed(0)`` reproduces its runs; pass
  ``seed=`` (int or ``numpy.random.Generator``) for an independent source.
* Inputs are never modified; the layer keeps its own copy of the last input.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from .. import _gemm
from .. import functional as F
from . import _util as U

if TYPE_CHECKING:
    from .._typing import FloatArray, IndexArray, Seed

__all__ = ["Conv3x3", "MaxPool2", "Softmax"]


def _float64(
    fname: str, name: str, value: object, ndim: Collection[int], layout: str
) -> npt.NDArray[np.float64]:
    return np.array(U.array(fname, name, value, ndim, layout), dtype=np.float64)


class Conv3x3:
    """A bias-free 3x3 convolution with ``num_filters`` filters on one 2-D image.

    Parameters
    ----------
    num_filters : int
        Number of output channels.
    seed : None, int or numpy.random.Generator, optional
        ``None`` (default) draws the filters from numpy's global random state,
        as the tutorial does; otherwise from the given generator / seed.

    Attributes
    ----------
    num_filters : int
    filters : ndarray, shape (num_filters, 3, 3), float64
        Initialised ``randn / 9``; updated in place by :meth:`backprop`.
    last_input : ndarray, shape (h, w)
        A copy of the last image given to :meth:`forward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.victorzhou import Conv3x3
    >>> conv = Conv3x3(8, seed=0)
    >>> out = conv.forward(np.zeros((28, 28)))
    >>> out.shape
    (26, 26, 8)
    >>> conv.backprop(np.ones((26, 26, 8)), learn_rate=0.005).shape
    (28, 28)
    """

    def __init__(self, num_filters: int, seed: Seed = None) -> None:
        fname = "Conv3x3"
        self.num_filters = U.positive_int(fname, "num_filters", num_filters)
        rng = U.generator(fname, seed)
        self.filters = U.randn(rng, (self.num_filters, 3, 3)) / 9
        self.last_input: npt.NDArray[np.float64] | None = None

    def _weight(self) -> FloatArray:
        return self.filters.reshape(self.num_filters, 1, 3, 3)

    def forward(self, input: npt.ArrayLike) -> FloatArray:
        """Correlate the image with every filter.

        Parameters
        ----------
        input : array_like, shape (h, w)
            One grayscale image, ``h, w >= 3``.

        Returns
        -------
        output : ndarray, shape (h - 2, w - 2, num_filters)
            ``output[i, j, f] = sum(input[i:i+3, j:j+3] * filters[f])``.
        """
        x = _float64("Conv3x3.forward", "input", input, (2,), "(h, w) (one grayscale image)")
        self.last_input = x
        y = F.conv2d(x[None], self._weight())
        return np.ascontiguousarray(y.transpose(1, 2, 0))

    def backprop(self, d_L_d_out: npt.ArrayLike, learn_rate: float) -> FloatArray:
        """Update ``filters`` by one SGD step and return the image gradient.

        Parameters
        ----------
        d_L_d_out : array_like, shape (h - 2, w - 2, num_filters)
        learn_rate : float

        Returns
        -------
        d_L_d_input : ndarray, shape (h, w)
            Computed with the filters *before* the update (the tutorial
            returns None here).
        """
        fname = "Conv3x3.backprop"
        x = U.not_before_forward(fname, self.last_input)
        lr = U.real(fname, "learn_rate", learn_rate)
        g = U.array(fname, "d_L_d_out", d_L_d_out, (3,), "(h - 2, w - 2, num_filters)")
        want = (x.shape[0] - 2, x.shape[1] - 2, self.num_filters)
        if g.shape != want:
            raise ValueError(
                f"{fname}: d_L_d_out.shape must be the forward output shape {want}, got {g.shape}"
            )
        gx, gw, _ = F.conv2d_backward(
            g.transpose(2, 0, 1), x[None], self._weight(), bias=False
        )
        self.filters -= lr * gw.reshape(self.filters.shape)
        return cast("FloatArray", gx[0])


class MaxPool2:
    """2x2 max pooling with stride 2 on one ``(h, w, c)`` (or ``(h, w)``) input.

    Odd heights/widths drop the last row/column, as in the tutorial.

    Attributes
    ----------
    last_input : ndarray
        A copy of the last input given to :meth:`forward`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.victorzhou import MaxPool2
    >>> pool = MaxPool2()
    >>> x = np.array([[1., 2.], [2., 0.]])[:, :, None]
    >>> pool.forward(x)[:, :, 0]
    array([[2.]])
    >>> pool.backprop(np.array([[[7.]]]))[:, :, 0]    # first maximum only
    array([[0., 7.],
           [0., 0.]])
    """

    def __init__(self) -> None:
        self.last_input: npt.NDArray[np.float64] | None = None
        self._indices: IndexArray | None = None

    def forward(self, input: npt.ArrayLike) -> FloatArray:
        """Max over non-overlapping 2x2 windows.

        Parameters
        ----------
        input : array_like, shape (h, w, c) or (h, w)

        Returns
        -------
        output : ndarray, shape (h // 2, w // 2, c) (or (h // 2, w // 2))
        """
        x = _float64("MaxPool2.forward", "input", input, (2, 3), "(h, w, c) or (h, w)")
        self.last_input = x
        chw = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        y, self._indices = F.max_pool2d(chw, 2, return_indices=True)
        return y[0] if x.ndim == 2 else np.ascontiguousarray(y.transpose(1, 2, 0))

    def backprop(self, d_L_d_out: npt.ArrayLike, learn_rate: object = None) -> FloatArray:
        """Route each gradient to the first maximum of its window.

        Parameters
        ----------
        d_L_d_out : array_like, shape of the forward output
        learn_rate : ignored
            Accepted so that every layer can be called as
            ``backprop(grad, learn_rate)``; this layer has no parameters.

        Returns
        -------
        d_L_d_input : ndarray, shape of the last input
        """
        fname = "MaxPool2.backprop"
        x = U.not_before_forward(fname, self.last_input)
        want = (x.shape[0] // 2, x.shape[1] // 2) + x.shape[2:]
        g = U.array(fname, "d_L_d_out", d_L_d_out, (x.ndim,), "(the forward output shape)")
        if g.shape != want:
            raise ValueError(
                f"{fname}: d_L_d_out.shape must be the forward output shape {want}, got {g.shape}"
            )
        chw_shape = (1,) + x.shape if x.ndim == 2 else (x.shape[2],) + x.shape[:2]
        g = g[None] if x.ndim == 2 else g.transpose(2, 0, 1)
        gx = F.max_pool2d_backward(g, cast("IndexArray", self._indices), chw_shape)
        return gx[0] if x.ndim == 2 else np.ascontiguousarray(gx.transpose(1, 2, 0))


class Softmax:
    """A fully connected layer followed by softmax, on one (flattened) input.

    Parameters
    ----------
    input_len : int
        Number of input values (the input is flattened).
    nodes : int
        Number of classes.
    seed : None, int or numpy.random.Generator, optional
        ``None`` (default) draws the weights from numpy's global random state,
        as the tutorial does.

    Attributes
    ----------
    weights : ndarray, shape (input_len, nodes), float64
        Initialised ``randn / input_len``; updated in place by :meth:`backprop`.
    biases : ndarray, shape (nodes,), float64
        Initialised to zeros.
    last_input_shape : tuple
        Shape of the last input (before flattening).
    last_input : ndarray, shape (input_len,)
        The last input, flattened (a copy).
    last_totals : ndarray, shape (nodes,)
        The last pre-softmax scores ``last_input @ weights + biases``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.compat.victorzhou import Softmax
    >>> sm = Softmax(4, 3, seed=0)
    >>> p = sm.forward(np.ones((2, 2)))
    >>> p.shape, round(float(p.sum()), 12)
    ((3,), 1.0)
    >>> grad = np.zeros(3); grad[1] = -1 / p[1]     # cross-entropy, label 1
    >>> sm.backprop(grad, learn_rate=0.1).shape
    (2, 2)
    """

    def __init__(self, input_len: int, nodes: int, seed: Seed = None) -> None:
        fname = "Softmax"
        self.input_len = U.positive_int(fname, "input_len", input_len)
        self.nodes = U.positive_int(fname, "nodes", nodes)
        rng = U.generator(fname, seed)
        self.weights = U.randn(rng, (self.input_len, self.nodes)) / self.input_len
        self.biases = np.zeros(self.nodes)
        self.last_input_shape: tuple[int, ...] | None = None
        self.last_input: npt.NDArray[np.float64] | None = None
        self.last_totals: FloatArray | None = None
        self._last_out: FloatArray | None = None

    def forward(self, input: npt.ArrayLike) -> FloatArray:
        """Class probabilities ``softmax(input.flatten() @ weights + biases)``.

        Parameters
        ----------
        input : array_like, any shape with ``input_len`` elements

        Returns
        -------
        probabilities : ndarray, shape (nodes,)
        """
        fname = "Softmax.forward"
        x = U.array(fname, "input", input, range(33), "(any shape)")
        if x.size != self.input_len:
            raise ValueError(
                f"{fname}: input must have input_len = {self.input_len} elements, got "
                f"shape {x.shape} ({x.size} elements)"
            )
        self.last_input_shape = x.shape
        self.last_input = np.array(x, dtype=np.float64).reshape(-1)
        self.last_totals = self.last_input @ self.weights + self.biases
        self._last_out = F.softmax(self.last_totals)
        return self._last_out.copy()

    def backprop(self, d_L_d_out: npt.ArrayLike, learn_rate: float) -> FloatArray:
        """Update ``weights``/``biases`` by one SGD step and return the input gradient.

        Parameters
        ----------
        d_L_d_out : array_like, shape (nodes,)
            Gradient with respect to the probabilities (for cross-entropy:
            ``-1 / p[label]`` at the label, zero elsewhere).
        learn_rate : float

        Returns
        -------
        d_L_d_input : ndarray, shape ``last_input_shape``
            Computed with the weights *before* the update.
        """
        fname = "Softmax.backprop"
        out = U.not_before_forward(fname, self._last_out)
        lr = U.real(fname, "learn_rate", learn_rate)
        g = U.array(fname, "d_L_d_out", d_L_d_out, (1,), "(nodes,)")
        if g.shape != (self.nodes,):
            raise ValueError(
                f"{fname}: d_L_d_out.shape must be (nodes,) = ({self.nodes},), got {g.shape}"
            )
        d_L_d_t = F.softmax_backward(g, out)
        d_L_d_input = self.weights @ d_L_d_t
        step = -lr * d_L_d_t
        if self.weights.flags.c_contiguous and self.weights.dtype == np.float64:
            # weights += last_input (column) @ step (row): one pass, no temporaries
            _gemm.gemm(cast("npt.NDArray[np.float64]", self.last_input)[:, None], step[None, :],
                       self.weights, False, False, True, 1)
        else:  # weights replaced by the user with another kind of array
            self.weights += np.outer(cast("npt.NDArray[np.float64]", self.last_input), step)
        self.biases += step
        return d_L_d_input.reshape(self.last_input_shape)
