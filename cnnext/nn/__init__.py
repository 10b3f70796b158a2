"""Layers: thin, stateful wrappers around :mod:`cnnext.functional`.

Every layer has ``forward(x) -> y`` and ``backward(grad_y) -> grad_x``, keeps
its parameters in ``layer.params`` (name -> ndarray, ``"weight"`` and
``"bias"`` as in PyTorch; layers with parameters also offer them as
``layer.weight``/``layer.bias``) and their gradients in ``layer.grads``
(same names, shapes and dtypes), and keeps *one* named forward cache,
replaced on every ``forward`` so it never grows.

Conventions
-----------
* ``backward`` *accumulates* into ``grads`` (like PyTorch's ``.grad``); call
  ``optimizer.zero_grad()`` (or ``model.zero_grad()``) before each backward
  pass.  Optimizers update ``params`` in place, so the arrays in ``params``
  and ``grads`` keep their identity for the life of the layer.
* ``backward`` before ``forward`` raises ``RuntimeError``.  ``backward`` uses
  the input of the *last* ``forward``; the caller's arrays (``x``,
  ``grad_y``) are never modified, so do not modify them between the two
  calls either.
* Layers with parameters (:class:`Conv2D`, :class:`Dense`, the batch
  normalizations) compute in their ``dtype`` (float32 by default): inputs
  of another dtype are converted (a copy; the caller's array is untouched).
  The other layers keep the dtype they receive.
* A layer keeps the plan of the input it last saw (see
  :mod:`cnnext.functional`): while the input keeps its shape, dtype and
  memory layout, a call only confirms that and runs the kernels; another
  batch size, dtype or layout simply makes a new plan.  Results are
  bitwise those of the functional call.
* :meth:`Sequential.plan` plans a whole model for one input shape
  (:class:`NetPlan`: every buffer allocated once, bias and ReLU fused into
  the convolutions' and dense layers' output loops); :func:`cnnext.train.fit`,
  ``evaluate`` and ``predict`` run through it.
* ``train()``/``eval()`` switch the mode, in every container (only
  :class:`Dropout` and the batch normalizations behave differently).
* Non-trainable state (the running statistics of :class:`BatchNorm2D`, ...)
  lives in ``layer.buffers``: saved and loaded with the parameters, never
  returned by ``parameters()``, so optimizers never touch it.
* :class:`Sequential` exposes the parameters of its layers under
  PyTorch-``state_dict``-style names (``"0.weight"``, ``"3.bias"``, ...);
  ``model.parameters()`` is the list of ``(param, grad)`` pairs optimizers
  take, and ``model.save(path)``/``model.load(path)`` store them in a
  ``.npz`` file without pickle.

Initialization (``init=`` of :class:`Conv2D` and :class:`Dense`), with
``fan_in = in_channels*kH*kW`` (or ``in_features``) and ``fan_out =
out_channels*kH*kW`` (or ``out_features``):

``"he"`` (default)
    He/Kaiming *normal*: weight ~ N(0, 2/fan_in), bias 0.  For layers
    followed by ReLU-style activations (He et al., 2015).
``"glorot"``
    Glorot/Xavier *uniform*: weight ~ U(-a, a), a = sqrt(6/(fan_in+fan_out)),
    bias 0.  For layers followed by tanh/sigmoid/softmax (e.g. the last
    layer of a classifier).
``"torch"``
    PyTorch's default for ``Conv2d``/``Linear`` (``kaiming_uniform_`` with
    ``a=sqrt(5)``): weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Random numbers are drawn in float64 from ``seed`` (an int, a
``numpy.random.Generator`` -- pass one Generator to every layer of a model
for a reproducible model -- or None for fresh entropy) and then cast to
``dtype``, so a float32 and a float64 layer with the same seed agree up to
rounding.
"""
from ..losses import MSELoss, SoftmaxCrossEntropy
from .activation import Dropout, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .containers import Identity, Residual, Sequential
from .conv import Conv1D, Conv2D, ConvTranspose2D
from .linear import Dense, Flatten
from .module import Module
from .norm import BatchNorm1D, BatchNorm2D
from .plan import NetPlan
from .pooling import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool1D,
    AvgPool2D,
    MaxPool1D,
    MaxPool2D,
    MaxUnpool2D,
)

__all__ = [
    "Module",
    "Conv2D",
    "ConvTranspose2D",
    "Conv1D",
    "MaxPool2D",
    "AvgPool2D",
    "MaxPool1D",
    "AvgPool1D",
    "AdaptiveAvgPool2D",
    "AdaptiveMaxPool2D",
    "MaxUnpool2D",
    "Dense",
    "Flatten",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Dropout",
    "Sequential",
    "BatchNorm1D",
    "BatchNorm2D",
    "Identity",
    "Residual",
    "NetPlan",
    "SoftmaxCrossEntropy",
    "MSELoss",
]


def __dir__() -> list[str]:
    return sorted(__all__)
