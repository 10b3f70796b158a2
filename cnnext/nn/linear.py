"""Dense (fully connected) layer and Flatten."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .. import _validate as V
from .. import functional as F
from ..functional.dense import _linear_plan
from .module import Module, Weighted, init_params

if TYPE_CHECKING:
    from .._plan import LinearPlan
    from .._typing import FloatArray, Init, Seed, Shape


class Dense(Weighted):
    """Fully connected layer ``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    init : {"he", "glorot", "torch"}
        Weight initialization (:mod:`cnnext.nn`).  Default He normal, for a
        layer followed by ReLU; use ``"glorot"`` for the last layer of a
        classifier.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None

    Attributes
    ----------
    weight : ndarray, shape (out_features, in_features)
        PyTorch's layout (``params["weight"]``).
    bias : ndarray of shape (out_features,), or None

    Notes
    -----
    Shape:

    - Input: ``(N, in_features)``; put a :class:`Flatten` before it after
      convolutions.
    - Output: ``(N, out_features)``

    Calls :func:`cnnext.functional.linear` and
    :func:`~cnnext.functional.linear_backward` (cnnext's own GEMM kernels and
    threads, no BLAS).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> fc = nn.Dense(3, 2, seed=0)
    >>> fc.params["weight"][...] = [[1, 0, 0], [0, 1, 1]]
    >>> fc.forward(np.array([[1.0, 2.0, 3.0]]))
    array([[1., 5.]], dtype=float32)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: Init = "he",
        dtype: npt.DTypeLike = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        fname = "Dense"
        self.in_features = V.as_int(fname, "in_features", in_features, 1)
        self.out_features = V.as_int(fname, "out_features", out_features, 1)
        has_bias = V.boolean(fname, "bias", bias)
        shape = (self.out_features, self.in_features)
        init_params(self, fname, init, dtype, seed, shape, self.out_features if has_bias else 0)

    def _call_forward(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> FloatArray:
        self._check_input(x)
        return F.linear(x, w, b)

    def _call_backward(
        self, g: FloatArray, x: FloatArray, w: FloatArray, has_bias: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        if g.shape != (x.shape[0], self.out_features):
            raise ValueError(
                f"Dense.backward: grad_y.shape must be {(x.shape[0], self.out_features)} "
                f"(the forward output shape), got {g.shape}"
            )
        return F.linear_backward(g, x, w, bias=has_bias)

    def _check_input(self, x: FloatArray) -> None:
        if x.ndim != 2:
            hint = " (put a Flatten layer before it)" if x.ndim > 2 else ""
            raise ValueError(
                f"Dense.forward: x must be 2-D (N, in_features={self.in_features}), got a "
                f"{x.ndim}-D array of shape {x.shape}{hint}"
            )
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense.forward: x.shape[1] ({x.shape[1]}) must equal in_features "
                f"({self.in_features}): the layer before gives {x.shape[1]} features per "
                f"sample"
            )

    def _plan_of(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> LinearPlan:
        """The plan ``F.linear`` just used."""
        return _linear_plan("linear", x, w, b, self.dtype)

    def __repr__(self) -> str:
        return f"Dense({self.in_features}, {self.out_features}, bias={self.bias is not None})"


class Flatten(Module):
    """Flatten all axes after the first: ``(N, ...) -> (N, prod(...))``.

    Returns a view when possible (as ``torch.flatten``), never modifying it.

    Notes
    -----
    Shape:

    - Input: ``(N, *)``
    - Output: ``(N, prod(*))``

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.Flatten().forward(np.zeros((2, 8, 13, 13))).shape
    (2, 1352)
    """

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``x`` reshaped to ``(N, features)`` (a view when possible)."""
        if type(x) is not np.ndarray:
            x = V.as_array("Flatten.forward", "x", x)
        if x.ndim < 1:
            raise ValueError("Flatten.forward: x must have a batch axis, got a 0-D array")
        shape = x.shape
        self._cache = shape
        # Explicit feature count: reshape(N, -1) is ambiguous for N = 0.
        return x.reshape(shape[0], math.prod(shape[1:]))

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_y`` reshaped back to the last input's shape."""
        shape: Shape = self._saved()
        g = grad_y if type(grad_y) is np.ndarray else V.as_array("Flatten.backward", "grad_y",
                                                                  grad_y)
        if g.shape[:1] != shape[:1] or g.size != math.prod(shape):
            raise ValueError(
                f"Flatten.backward: grad_y.shape {g.shape} does not match the forward "
                f"output for input shape {shape}"
            )
        return g.reshape(shape)
