"""Type aliases used in cnnext's annotations.

Annotations only: the modules import these names under
``typing.TYPE_CHECKING``, so nothing here runs when cnnext is imported.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol, SupportsFloat, TypeAlias

import numpy as np
import numpy.typing as npt

#: An array of the compute dtype: float32 or float64.
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

#: An int64 array (max-pooling argmax positions, class labels).
IndexArray: TypeAlias = npt.NDArray[np.int64]

#: A float32 or float64 dtype.
FloatDType: TypeAlias = np.dtype[np.floating[Any]]

#: An array shape.
Shape: TypeAlias = tuple[int, ...]

#: A normalised (height, width) pair: stride, padding, dilation, kernel size.
Pair: TypeAlias = tuple[int, int]

#: What the public API takes for stride, padding, dilation and kernel size:
#: one int for both axes, or an (h, w) pair.
IntOrPair: TypeAlias = int | tuple[int, int]

#: An adaptive pool's output size: an int, or a pair whose None entries keep
#: the input size.
AdaptiveSize: TypeAlias = int | tuple[int | None, int | None] | list[int | None]

#: A 1-D pool's size: an int or a 1-tuple.
IntOrSingle: TypeAlias = int | tuple[int]

#: A random seed: an int >= 0, a numpy Generator, or None (fresh entropy).
Seed: TypeAlias = int | np.random.Generator | None

#: A weight initialization scheme of cnnext.nn's layers.
Init: TypeAlias = Literal["he", "glorot", "torch"]

#: A file system path.
StrPath: TypeAlias = str | os.PathLike[str]


class HasParameters(Protocol):
    """A model: anything whose ``parameters()`` gives ``(param, grad)`` pairs
    (every :class:`cnnext.nn.Module`)."""

    def parameters(self) -> list[tuple[FloatArray, FloatArray]]: ...


#: What an optimizer takes: a model or its ``(param, grad)`` pairs.
Params: TypeAlias = HasParameters | Iterable[tuple[FloatArray, FloatArray]]


class SkipsInputGrad(Protocol):
    """A layer or model whose class sets ``_skips_input_grad``: its backward
    takes ``input_grad`` (False: only the parameter gradients, None returned)."""

    def backward(self, grad_y: npt.ArrayLike, input_grad: bool) -> FloatArray | None: ...


class Model(Protocol):
    """What :func:`cnnext.train.evaluate` needs of a model (a
    :class:`cnnext.nn.Module` has it)."""

    def forward(self, x: npt.NDArray[Any]) -> npt.ArrayLike: ...


class TrainableModel(Model, Protocol):
    """What :func:`cnnext.train.fit` needs of a model: forward and backward."""

    def backward(self, grad_y: npt.ArrayLike) -> object: ...


class Loss(Protocol):
    """What :func:`cnnext.train.evaluate` needs of a loss."""

    def forward(self, pred: npt.ArrayLike, target: npt.ArrayLike) -> SupportsFloat: ...


class TrainableLoss(Loss, Protocol):
    """What :func:`cnnext.train.fit` needs of a loss: forward and backward."""

    def backward(self) -> npt.ArrayLike: ...


class Optimizer(Protocol):
    """What :func:`cnnext.train.fit` needs of an optimizer."""

    def zero_grad(self) -> object: ...

    def step(self) -> object: ...


#: One record of :mod:`cnnext.bench`, ready for JSON: a peer's measurement
#: (``status``, ``median``, ``min``, ``q1``, ``q3``, ...) or a report row
#: (``case``, ``dtype``, one measurement per peer, ratios, ...).
Record: TypeAlias = dict[str, Any]

#: A zero-argument callable whose result is ignored (a timed call).
Thunk: TypeAlias = Callable[[], object]
