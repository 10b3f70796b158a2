"""Dense (fully connected) layer and Flatten."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import numpy.typing as npt

from .. import _config
from .. import _validate as V
from .. import functional as F
from .module import Module, Weighted, as_dtype, check_init, init_bias, init_weight, steady

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
        self.init = check_init(fname, init)
        self.dtype = V.float_dtype(fname, dtype)
        rng = V.rng(fname, seed)
        shape = (self.out_features, self.in_features)
        self._params["weight"] = init_weight(
            fname, rng, init, shape, self.in_features, self.out_features, self.dtype
        )
        if has_bias:
            self._params["bias"] = init_bias(
                rng, init, self.out_features, self.in_features, self.dtype
            )
        self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._plan: LinearPlan | None = None
        self._plan_threads = 0

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``x @ weight.T + bias`` for ``x`` of shape (N, in_features); caches ``x``."""
        plan, w, b = self._plan, self._params["weight"], self._params.get("bias")
        if plan is not None and steady(x, plan.x_shape, self.dtype, self._plan_threads):
            y = plan.forward(x, w, b)
        else:
            x = np.ascontiguousarray(as_dtype("Dense.forward", "x", x, self.dtype))
            self._check_input(x)
            y = F.linear(x, w, b)
            self._keep_plan(x, w, b)
        self._cache = x
        return y

    _skips_input_grad = True

    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: Literal[True] = True) -> FloatArray: ...
    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool) -> FloatArray | None: ...
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool = True) -> FloatArray | None:
        """Gradient w.r.t. the last input; accumulates ``grads``.  With
        ``input_grad=False`` (a first layer) only the parameter gradients are
        computed and None is returned."""
        x: FloatArray = self._saved()
        plan, w = self._plan, self._params["weight"]
        has_bias = "bias" in self._params
        if (
            plan is not None
            and x.shape == plan.x_shape
            and steady(grad_y, (x.shape[0], self.out_features), self.dtype, self._plan_threads)
        ):
            gx, gw, gb = plan.backward(grad_y, x, w, has_bias, input_grad)
        else:
            g = as_dtype("Dense.backward", "grad_y", grad_y, self.dtype)
            if g.shape != (x.shape[0], self.out_features):
                raise ValueError(
                    f"Dense.backward: grad_y.shape must be {(x.shape[0], self.out_features)} "
                    f"(the forward output shape), got {g.shape}"
                )
            gx, gw, gb = F.linear_backward(g, x, w, bias=has_bias)
            if not input_grad:
                gx = None
        self._grads["weight"] += gw
        if gb is not None:
            self._grads["bias"] += gb
        return gx

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

    def _keep_plan(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> None:
        if _config.get_backend() != "cython":
            self._plan = None
            return
        self._plan = F._linear_plan("linear", x, w, b, self.dtype)
        self._plan_threads = _config.get_num_threads()

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
