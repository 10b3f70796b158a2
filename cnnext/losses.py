"""Loss functions with a ``forward(pred, target) -> float`` / ``backward()`` pair.

Losses live here, outside the layers (a layer never knows its loss); they are
re-exported from :mod:`cnnext.nn`.  Each loss keeps one named cache, the
gradient of its last ``forward``, and ``backward()`` returns a fresh copy of it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from . import _validate as V
from . import functional as F

if TYPE_CHECKING:
    from ._typing import FloatArray

__all__ = ["SoftmaxCrossEntropy", "MSELoss"]


class _Loss:
    """Shared plumbing: ``__call__`` is ``forward``, backward needs a forward first."""

    def __init__(self) -> None:
        self._grad: FloatArray | None = None

    if TYPE_CHECKING:
        def forward(self, pred: npt.ArrayLike, target: npt.ArrayLike) -> float: ...

    def __call__(self, pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
        return self.forward(pred, target)

    def backward(self) -> FloatArray:
        """Gradient of the last ``forward``'s loss with respect to its ``pred``.

        Returns
        -------
        grad_pred : ndarray, shape of ``pred``
            A new array each call (the caller may modify it).

        Raises
        ------
        RuntimeError
            If ``forward`` has not been called yet.
        """
        if self._grad is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: called before forward; call "
                f"forward(pred, target) first"
            )
        return self._grad.copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(_Loss):
    """Mean softmax cross-entropy of logits against integer class labels.

    ``forward(logits, labels)`` applies the softmax itself (stably, with
    :func:`cnnext.functional.softmax_cross_entropy`), so the model should end
    with its last linear layer, not with a :class:`cnnext.nn.Softmax`; this is
    ``torch.nn.CrossEntropyLoss`` with ``reduction="mean"``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.nn import SoftmaxCrossEntropy
    >>> loss = SoftmaxCrossEntropy()
    >>> round(loss.forward(np.array([[0.0, 0.0]]), np.array([1])), 6)
    0.693147
    >>> loss.backward()
    array([[ 0.5, -0.5]])
    """

    def forward(self, logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
        """Loss of ``logits`` (N, K) for integer ``labels`` (N,) in [0, K).

        Returns
        -------
        loss : float
            ``mean_i(-log softmax(logits)[i, labels[i]])``.
        """
        loss, self._grad = F.softmax_cross_entropy(logits, labels)
        return loss


class MSELoss(_Loss):
    """Mean squared error ``mean((pred - target)**2)`` over all elements.

    As ``torch.nn.MSELoss`` with ``reduction="mean"``; the gradient is
    ``2 * (pred - target) / pred.size``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.nn import MSELoss
    >>> loss = MSELoss()
    >>> loss.forward(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    5.0
    >>> loss.backward()
    array([1., 3.])
    """

    def forward(self, pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
        """Mean squared error of ``pred`` against ``target`` (same shape).

        Returns
        -------
        loss : float
        """
        fname = "MSELoss.forward"
        pred = V.as_array(fname, "pred", pred)
        target = V.as_array(fname, "target", target)
        dt = V.compute_dtype(fname, [("pred", pred), ("target", target)])
        if pred.shape != target.shape:
            raise ValueError(
                f"{fname}: pred.shape {pred.shape} must equal target.shape {target.shape}"
            )
        diff = np.subtract(pred, target, dtype=dt)
        n = max(diff.size, 1)
        loss = float(np.vdot(diff, diff) / n) if diff.size else 0.0
        diff *= dt.type(2.0 / n)
        self._grad = diff
        return loss
