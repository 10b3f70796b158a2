"""Optimizers: update ``(param, grad)`` pairs in place with PyTorch's formulas.

An optimizer takes a model (anything with a ``parameters()`` method returning
``(param, grad)`` pairs, such as every :class:`cnnext.nn.Module`) or the list
of pairs itself.  ``step()`` updates each ``param`` array *in place* from its
``grad`` array; ``zero_grad()`` sets the gradients to zero (layers accumulate
into them).  The learning rate is the public attribute ``lr`` and may be
changed between steps (a schedule).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import numpy as np

from . import _eltwise
from . import _validate as V

if TYPE_CHECKING:
    from ._typing import FloatArray, Params

__all__ = ["Optimizer", "SGD", "Adam"]


def _fused(*arrays: FloatArray) -> bool:
    """Whether the one-pass kernels can update these arrays in place: native
    float32/float64 of one dtype, C-contiguous (layers' parameters are);
    anything else takes the numpy expressions, which compute the same."""
    return _eltwise.float_operands(arrays, (None,) * len(arrays)) is not None


class Optimizer:
    """Base class: holds the ``(param, grad)`` pairs and ``zero_grad``.

    Parameters
    ----------
    params : model or iterable of (ndarray, ndarray)
        A model with ``parameters()``, or ``(param, grad)`` pairs of
        floating-point arrays of equal shape; ``param`` must be writeable.
    """

    def __init__(self, params: Params) -> None:
        fname = type(self).__name__
        if hasattr(params, "parameters") and callable(params.parameters):
            params = params.parameters()
        if isinstance(params, np.ndarray):
            raise TypeError(
                f"{fname}: params must be a model or a list of (param, grad) pairs, got "
                f"a single ndarray"
            )
        try:
            # A model was replaced by its pairs above; the pairs are checked below.
            pairs = list(cast("Iterable[tuple[FloatArray, FloatArray]]", params))
        except TypeError:
            raise TypeError(
                f"{fname}: params must be a model or a list of (param, grad) pairs, got "
                f"{type(params).__name__}"
            ) from None
        if not pairs:
            raise ValueError(f"{fname}: params is empty; there is nothing to optimize")
        seen: set[int] = set()
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"{fname}: params[{i}] must be a (param, grad) pair, got {pair!r}")
            p, g = pair
            for name, a in (("param", p), ("grad", g)):
                if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                    what = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                    raise TypeError(
                        f"{fname}: params[{i}] {name} must be a floating-point ndarray, got {what}"
                    )
            if p.shape != g.shape:
                raise ValueError(
                    f"{fname}: params[{i}] param.shape {p.shape} must equal grad.shape {g.shape}"
                )
            if not p.flags.writeable:
                raise ValueError(f"{fname}: params[{i}] param is read-only; it is updated in place")
            if id(p) in seen:
                raise ValueError(f"{fname}: params[{i}] appears more than once")
            seen.add(id(p))
        self._pairs = [(p, g) for p, g in pairs]

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place."""
        for _, g in self._pairs:
            g.fill(0)

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and weight decay, as ``torch.optim.SGD``.

    For each parameter ``p`` with gradient ``g``::

        d = g + weight_decay * p
        buf = d                      (first step)
        buf = momentum * buf + d     (later steps; only if momentum > 0)
        p -= lr * buf                (p -= lr * d without momentum)

    Parameters
    ----------
    params : model or list of (param, grad)
    lr : float > 0
    momentum : float >= 0
    weight_decay : float >= 0
        L2 penalty added to the gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.optim import SGD
    >>> p, g = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    >>> opt = SGD([(p, g)], lr=0.1)
    >>> opt.step(); p
    array([0.95, 2.1 ])
    """

    def __init__(
        self, params: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params)
        self.lr = V.real("SGD", "lr", lr, 0.0, low_open=True)
        self.momentum = V.real("SGD", "momentum", momentum, 0.0)
        self.weight_decay = V.real("SGD", "weight_decay", weight_decay, 0.0)
        self._buffers: list[FloatArray | None] = [None] * len(self._pairs)

    def step(self) -> None:
        """Update every parameter in place."""
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for i, (p, g) in enumerate(self._pairs):
            if _fused(p, g):
                first = bool(mu) and self._buffers[i] is None
                if first:
                    self._buffers[i] = np.empty_like(p)
                buf = self._buffers[i] if mu else p
                # (buf is an array: with momentum, made just above on the first step)
                _eltwise.sgd_update(p.reshape(-1), g.reshape(-1), buf.reshape(-1), lr, mu, wd,  # type: ignore[union-attr]
                                    first)
                continue
            d = g + wd * p if wd else g
            if mu:
                buf = self._buffers[i]
                if buf is None:
                    buf = self._buffers[i] = np.array(d, dtype=p.dtype, copy=True)
                else:
                    buf *= mu
                    buf += d
                d = buf
            p -= lr * d


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``amsgrad=False``).

    At step ``t`` (from 1), for each parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p -= (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params : model or list of (param, grad)
    lr : float > 0
    betas : (float, float), each in [0, 1)
    eps : float > 0
    weight_decay : float >= 0
        L2 penalty added to the gradient (not AdamW's decoupled decay).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.optim import Adam
    >>> p, g = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    >>> opt = Adam([(p, g)], lr=0.1)
    >>> opt.step(); p  # the first step moves each entry by about lr
    array([0.9, 2.1])
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr = V.real("Adam", "lr", lr, 0.0, low_open=True)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            V.real("Adam", "betas[0]", betas[0], 0.0, 1.0, high_open=True),
            V.real("Adam", "betas[1]", betas[1], 0.0, 1.0, high_open=True),
        )
        self.eps = V.real("Adam", "eps", eps, 0.0, low_open=True)
        self.weight_decay = V.real("Adam", "weight_decay", weight_decay, 0.0)
        self.t = 0
        self._m = [np.zeros_like(p) for p, _ in self._pairs]
        self._v = [np.zeros_like(p) for p, _ in self._pairs]

    def step(self) -> None:
        """Update every parameter in place."""
        self.t += 1
        b1, b2 = self.betas
        bc1 = 1.0 - b1**self.t
        bc2_sqrt = float(np.sqrt(1.0 - b2**self.t))
        step_size = self.lr / bc1
        wd = self.weight_decay
        for (p, g), m, v in zip(self._pairs, self._m, self._v):
            if _fused(p, g, m, v):
                _eltwise.adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                                     b1, b2, step_size, bc2_sqrt, self.eps, wd)
                continue
            if wd:
                g = g + wd * p
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = np.sqrt(v)
            denom /= bc2_sqrt
            denom += self.eps
            p -= step_size * (m / denom)
