"""Containers: layers composed of layers."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, SupportsIndex, cast, overload

import numpy.typing as npt

from .module import Module

if TYPE_CHECKING:
    from .._typing import FloatArray, SkipsInputGrad


class Sequential(Module):
    """A chain of layers: ``forward`` runs them in order, ``backward`` in reverse.

    Parameters are exposed under the names ``"<index>.<name>"`` (nested
    containers add more prefixes), as in PyTorch's ``state_dict``.

    Parameters
    ----------
    *layers : Module
        Each layer may appear only once (a layer has a single forward
        cache, so it cannot sit at two places in a chain).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> rng = np.random.default_rng(0)
    >>> model = nn.Sequential(
    ...     nn.Conv2D(1, 8, 3, bias=False, seed=rng), nn.MaxPool2D(2), nn.Flatten(),
    ...     nn.Dense(13 * 13 * 8, 10, init="glorot", seed=rng))
    >>> list(model.params)
    ['0.weight', '3.weight', '3.bias']
    >>> logits = model.forward(np.zeros((4, 1, 28, 28), dtype=np.float32))
    >>> logits.shape, model.backward(np.ones_like(logits)).shape
    ((4, 10), (4, 1, 28, 28))
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        seen: set[int] = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: layer {i} must be a cnnext.nn.Module, got {type(layer).__name__}"
                )
            if id(layer) in seen:
                raise ValueError(
                    f"Sequential: layer {i} ({layer!r}) appears twice; a layer has one "
                    f"forward cache and cannot be used at two places"
                )
            seen.add(id(layer))
        self.layers = list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    @overload
    def __getitem__(self, i: SupportsIndex) -> Module: ...
    @overload
    def __getitem__(self, i: slice) -> list[Module]: ...
    def __getitem__(self, i: SupportsIndex | slice) -> Module | list[Module]:
        return self.layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    @property
    def params(self) -> dict[str, FloatArray]:
        """All parameters, ``{"<index>.<name>": ndarray}`` (live arrays)."""
        return {name: p for name, p, _ in self.named_parameters()}

    @property
    def grads(self) -> dict[str, FloatArray]:
        """All gradients, same names as :attr:`params`."""
        return {name: g for name, _, g in self.named_parameters()}

    def named_parameters(self) -> list[tuple[str, FloatArray, FloatArray]]:
        return [
            (f"{i}.{name}", p, g)
            for i, layer in enumerate(self.layers)
            for name, p, g in layer.named_parameters()
        ]

    def train(self, mode: bool = True) -> Sequential:
        super().train(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """Run the layers in order."""
        for layer in self.layers:
            x = layer.forward(x)
        self._cache = True
        return cast("FloatArray", x)  # (with no layers, x as given)

    _skips_input_grad = True

    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: Literal[True] = True) -> FloatArray: ...
    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool) -> FloatArray | None: ...
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool = True) -> FloatArray | None:
        """Run the layers' backward passes in reverse order.

        With ``input_grad=False`` the gradient with respect to the model's
        input is not needed (training on data): the first layer skips it
        where that saves work, and None is returned.
        """
        self._saved()
        g = grad_y
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if i == 0 and not input_grad:
                if getattr(layer, "_skips_input_grad", False):
                    cast("SkipsInputGrad", layer).backward(g, input_grad=False)
                else:
                    layer.backward(g)
                return None
            g = layer.backward(g)
        return cast("FloatArray", g)  # (with no layers, grad_y as given)

    def __repr__(self) -> str:
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"
