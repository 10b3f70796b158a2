"""PyTorch twins of cnnext models, for the training-step rows and comparisons.

:func:`torch_twin` builds, layer by layer, a ``torch.nn`` module computing
what a cnnext model computes, starting from copies of its parameters and
buffers.  PyTorch is passed in as a module: nothing here imports it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import nn

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["torch_twin"]


def torch_twin(model: nn.Module, torch: ModuleType) -> Any:
    """A ``torch.nn.Module`` equal to ``model`` (same layers, weights, buffers,
    dtype and train/eval mode).

    Supports :class:`~cnnext.nn.Sequential`, :class:`~cnnext.nn.Residual`,
    :class:`~cnnext.nn.Conv2D`, :class:`~cnnext.nn.Dense`,
    :class:`~cnnext.nn.BatchNorm2D`, :class:`~cnnext.nn.ReLU`,
    :class:`~cnnext.nn.MaxPool2D`, :class:`~cnnext.nn.AdaptiveAvgPool2D`,
    :class:`~cnnext.nn.Flatten` and :class:`~cnnext.nn.Identity`; TypeError
    for other layers.
    """
    twin = _twin(model, torch)
    twin.train(model.training)
    return twin


def _twin(layer: nn.Module, torch: ModuleType) -> Any:
    tnn = torch.nn
    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*(_twin(sub, torch) for sub in layer))
    if isinstance(layer, nn.Residual):
        shortcut = None if layer.shortcut is None else _twin(layer.shortcut, torch)
        return _residual(torch, _twin(layer.block, torch), shortcut)
    simple = {nn.ReLU: tnn.ReLU, nn.Flatten: tnn.Flatten, nn.Identity: tnn.Identity}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, nn.MaxPool2D):
        return tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, nn.AdaptiveAvgPool2D):
        return tnn.AdaptiveAvgPool2d(layer.output_size)
    if isinstance(layer, nn.Conv2D):
        m = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                       layer.padding, layer.dilation, layer.groups, layer.bias is not None)
    elif isinstance(layer, nn.Dense):
        m = tnn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    elif isinstance(layer, nn.BatchNorm2D):
        m = tnn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
    else:
        raise TypeError(f"torch_twin: no PyTorch twin for {type(layer).__name__}")
    dt = torch.float64 if layer.dtype == np.float64 else torch.float32
    m = m.to(dt)
    m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in layer.state_dict().items()})
    return m


def _residual(torch: ModuleType, block: Any, shortcut: Any) -> Any:
    class Residual(torch.nn.Module):  # type: ignore[name-defined,misc]
        """``block(x) + shortcut(x)``, the shortcut the identity when None."""

        def __init__(self) -> None:
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x: Any) -> Any:
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    return Residual()
