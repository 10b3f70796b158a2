"""Containers: layers composed of layers."""
from .module import Module


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

    def __init__(self, *layers):
        super().__init__()
        seen = set()
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

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    @property
    def params(self):
        """All parameters, ``{"<index>.<name>": ndarray}`` (live arrays)."""
        return {name: p for name, p, _ in self.named_parameters()}

    @property
    def grads(self):
        """All gradients, same names as :attr:`params`."""
        return {name: g for name, _, g in self.named_parameters()}

    def named_parameters(self):
        return [
            (f"{i}.{name}", p, g)
            for i, layer in enumerate(self.layers)
            for name, p, g in layer.named_parameters()
        ]

    def train(self, mode=True):
        super().train(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def forward(self, x):
        """Run the layers in order."""
        for layer in self.layers:
            x = layer.forward(x)
        self._cache = True
        return x

    _skips_input_grad = True

    def backward(self, grad_y, input_grad=True):
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
                    layer.backward(g, input_grad=False)
                else:
                    layer.backward(g)
                return None
            g = layer.backward(g)
        return g

    def __repr__(self):
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"
