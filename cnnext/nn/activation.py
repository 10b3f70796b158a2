"""Activation layers and dropout."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from .. import _validate as V
from .. import functional as F
from .module import Module

if TYPE_CHECKING:
    from .._typing import FloatArray, Seed


class ReLU(Module):
    """``max(x, 0)``.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.ReLU().forward([-1.0, 2.0])
    array([0., 2.])
    """

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``max(x, 0)``; caches ``x``."""
        x = V.as_array("ReLU.forward", "x", x)
        self._cache = x
        return F.relu(x)

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """Zero where the last input was <= 0, else ``grad_y``."""
        return F.relu_backward(grad_y, self._saved())


class LeakyReLU(Module):
    """``x`` where ``x > 0``, else ``alpha * x`` (``torch.nn.LeakyReLU(negative_slope)``).

    Parameters
    ----------
    alpha : float
        Slope for negative inputs (default 0.01).

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.LeakyReLU(0.1).forward([-1.0, 2.0])
    array([-0.1,  2. ])
    """

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = V.real("LeakyReLU", "alpha", alpha)

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``x`` where positive, else ``alpha * x``; caches ``x``."""
        x = V.as_array("LeakyReLU.forward", "x", x)
        self._cache = x
        return F.leaky_relu(x, self.alpha)

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_y`` where the last input was positive, else ``alpha * grad_y``."""
        return F.leaky_relu_backward(grad_y, self._saved(), self.alpha)

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Sigmoid(Module):
    """Logistic sigmoid.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.Sigmoid().forward([0.0])
    array([0.5])
    """

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``1 / (1 + exp(-x))``; caches the output."""
        y = F.sigmoid(x)
        self._cache = y
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_y * y * (1 - y)`` for the cached output ``y``."""
        return F.sigmoid_backward(grad_y, self._saved())


class Tanh(Module):
    """Hyperbolic tangent.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.Tanh().forward([0.0])
    array([0.])
    """

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``tanh(x)``; caches the output."""
        y = F.tanh(x)
        self._cache = y
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_y * (1 - y**2)`` for the cached output ``y``."""
        return F.tanh_backward(grad_y, self._saved())


class Softmax(Module):
    """Softmax along ``axis`` (default 1, the class axis of ``(N, K)``).

    For training a classifier prefer ending the model with its last
    :class:`Dense` and using :class:`SoftmaxCrossEntropy`, which applies the
    softmax itself, stably; this layer is for models that need the
    probabilities inside the network.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.Softmax().forward([[0.0, 0.0]])
    array([[0.5, 0.5]])
    """

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = V.as_int("Softmax", "axis", axis)

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """Softmax along ``axis``; caches the output."""
        y = F.softmax(x, axis=self.axis)
        self._cache = y
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """The softmax gradient for the cached output."""
        return F.softmax_backward(grad_y, self._saved(), axis=self.axis)

    def __repr__(self) -> str:
        return f"Softmax(axis={self.axis})"


class Dropout(Module):
    """Inverted dropout, as ``torch.nn.Dropout``.

    In training mode each element is zeroed with probability ``p`` and the
    survivors are scaled by ``1 / (1 - p)``; in evaluation mode the layer is
    the identity (it returns its input unchanged).

    Parameters
    ----------
    p : float in [0, 1]
    seed : int, numpy.random.Generator or None
        Source of the masks.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> drop = nn.Dropout(0.5, seed=0)
    >>> y = drop.forward(np.ones((2, 4)))
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    >>> drop.eval().forward(np.ones(3))
    array([1., 1., 1.])
    """

    def __init__(self, p: float = 0.5, *, seed: Seed = None) -> None:
        super().__init__()
        self.p = V.real("Dropout", "p", p, 0, 1)
        self._rng = V.rng("Dropout", seed)

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``x`` with elements zeroed (training mode) and survivors scaled by ``1/(1-p)``."""
        x = V.as_array("Dropout.forward", "x", x)
        # Same dtype rule in every mode (eval must not pass str/complex on).
        V.compute_dtype("Dropout.forward", [("x", x)])
        if not self.training or self.p == 0.0:
            self._cache = False  # identity: no mask
            return x
        dt = np.result_type(x.dtype, np.float32)
        if self.p == 1.0:
            mask = np.zeros(x.shape, dtype=dt)
        else:
            keep = self._rng.random(x.shape) >= self.p
            mask = keep.astype(dt) * dt.type(1.0 / (1.0 - self.p))
        self._cache = mask
        with np.errstate(invalid="ignore"):  # NaN/inf propagate silently
            return x * mask

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_y`` masked and scaled as the last forward was."""
        mask: FloatArray | Literal[False] = self._saved()
        g = V.as_array("Dropout.backward", "grad_y", grad_y)
        if mask is False:
            return g
        if g.shape != mask.shape:
            raise ValueError(
                f"Dropout.backward: grad_y.shape {g.shape} must equal the forward shape "
                f"{mask.shape}"
            )
        with np.errstate(invalid="ignore"):  # NaN/inf propagate silently
            return g * mask

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
