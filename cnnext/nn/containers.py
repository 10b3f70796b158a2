"""Containers: layers composed of layers."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt

from .. import _validate as V
from .module import Module

if TYPE_CHECKING:
    from .._typing import FloatArray, Shape, SkipsInputGrad
    from .plan import NetPlan


_ContainerT = TypeVar("_ContainerT", bound="_Container")


class _Container(Module):
    """What the containers share: their parameters, buffers and mode are
    those of their child layers, named ``"<child>.<name>"``."""

    def _children(self) -> list[tuple[str, Module]]:  # pragma: no cover - abstract
        """The child layers with the prefix of their names, in order."""
        raise NotImplementedError

    @property
    def params(self) -> dict[str, FloatArray]:
        """All parameters, ``{"<child>.<name>": ndarray}`` (live arrays)."""
        return {name: p for name, p, _ in self.named_parameters()}

    @property
    def grads(self) -> dict[str, FloatArray]:
        """All gradients, same names as :attr:`params`."""
        return {name: g for name, _, g in self.named_parameters()}

    def named_parameters(self) -> list[tuple[str, FloatArray, FloatArray]]:
        return [(f"{prefix}.{name}", p, g) for prefix, layer in self._children()
                for name, p, g in layer.named_parameters()]

    def named_buffers(self) -> list[tuple[str, npt.NDArray[Any]]]:
        return [(f"{prefix}.{name}", b) for prefix, layer in self._children()
                for name, b in layer.named_buffers()]

    def _state(self) -> dict[str, npt.NDArray[Any]]:
        """Every saved array by name (live), child by child, each child's
        parameters before its buffers: the order of PyTorch's ``state_dict``."""
        return {f"{prefix}.{name}": a for prefix, layer in self._children()
                for name, a in layer._state().items()}

    def train(self: _ContainerT, mode: bool = True) -> _ContainerT:
        super().train(mode)
        for _, layer in self._children():
            layer.train(mode)
        return self


def _backward_params_only(layer: Module, grad_y: npt.ArrayLike) -> None:
    """``layer``'s backward for its parameter gradients only (the input
    gradient skipped where the layer can)."""
    if getattr(layer, "_skips_input_grad", False):
        cast("SkipsInputGrad", layer).backward(grad_y, input_grad=False)
    else:
        layer.backward(grad_y)


class Sequential(_Container):
    """A chain of layers: ``forward`` runs them in order, ``backward`` in reverse.

    Parameters and buffers are exposed under the names ``"<index>.<name>"``
    (nested containers add more prefixes), as in PyTorch's ``state_dict``.

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

    def _children(self) -> list[tuple[str, Module]]:
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

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
                _backward_params_only(layer, g)
                return None
            g = layer.backward(g)
        return cast("FloatArray", g)  # (with no layers, grad_y as given)

    def plan(
        self, input_shape: Shape, dtype: npt.DTypeLike | None = None,
        training: bool | None = None,
    ) -> NetPlan:
        """The whole-network plan of this model for inputs of ``input_shape``.

        Validates every layer against the shape once, fixes their plans,
        allocates every buffer and fuses what can be fused; see
        :class:`cnnext.nn.NetPlan`.  The plan is kept: the same arguments
        return it again while it is :attr:`~cnnext.nn.NetPlan.valid` (a new
        one once the model changed).

        Parameters
        ----------
        input_shape : tuple of int
            The batch's shape, e.g. ``(64, 1, 28, 28)``.
        dtype : float32 or float64, optional
            Default: the parameters' dtype.
        training : bool, optional
            The mode to plan (default: the model's); it must be the mode the
            model is in (``model.train()`` / ``model.eval()``).

        Returns
        -------
        NetPlan

        Examples
        --------
        >>> import numpy as np
        >>> from cnnext import nn
        >>> model = nn.Sequential(nn.Dense(4, 3, seed=0), nn.ReLU(), nn.Dense(3, 2, seed=1))
        >>> plan = model.eval().plan((5, 4))
        >>> plan.forward(np.ones((5, 4), np.float32)).shape
        (5, 2)
        >>> model.plan((5, 4)) is plan
        True
        """
        from .plan import plan_of

        return plan_of(self, "Sequential.plan", input_shape, dtype, training)

    def __repr__(self) -> str:
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"


class Identity(Module):
    """The identity layer: ``forward`` returns its input, ``backward`` the
    upstream gradient (as ``torch.nn.Identity``); a placeholder, e.g. the
    shortcut of a :class:`Residual`.

    Notes
    -----
    Shape:

    - Input: any shape.
    - Output: the input, unchanged.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.Identity()([1.0, 2.0])
    array([1., 2.])
    """

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``x`` as an array (no copy of an ndarray)."""
        a = V.as_array("Identity.forward", "x", x)
        self._cache = True
        return cast("FloatArray", a)

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_y`` as an array (no copy of an ndarray)."""
        self._saved()
        return cast("FloatArray", V.as_array("Identity.backward", "grad_y", grad_y))


class Residual(_Container):
    """A residual connection: ``y = block(x) + shortcut(x)`` (the shortcut is
    the identity when None), the building block of ResNets.

    ``backward`` sends the upstream gradient through both branches and sums
    the two input gradients.  Parameters and buffers are exposed as
    ``"block.<name>"`` and ``"shortcut.<name>"`` (the names the attributes
    would give in a PyTorch module), and :meth:`train`/:meth:`eval` reach
    both branches.

    Parameters
    ----------
    block : Module
        The residual branch (often a :class:`Sequential` of convolutions,
        batch normalizations and activations).
    shortcut : Module, optional
        The projection branch (e.g. a 1x1 strided convolution when the block
        changes the shape); None is the identity.

    Notes
    -----
    Shape:

    - Input: whatever ``block`` and ``shortcut`` accept.
    - Output: the output shape of ``block``, which must equal that of the
      shortcut (or the input's, without one).  The result has the dtype of
      the block's output.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> res = nn.Residual(nn.Sequential(nn.Dense(2, 2, seed=0), nn.ReLU()))
    >>> list(res.params)
    ['block.0.weight', 'block.0.bias']
    >>> x = np.ones((3, 2), dtype=np.float32)
    >>> bool(np.allclose(res(x), res.block(x) + x))
    True
    """

    _skips_input_grad = True

    def __init__(self, block: Module, shortcut: Module | None = None) -> None:
        super().__init__()
        for name, layer in (("block", block), ("shortcut", shortcut)):
            if layer is not None and not isinstance(layer, Module):
                raise TypeError(
                    f"Residual: {name} must be a cnnext.nn.Module, got {type(layer).__name__}"
                )
        if shortcut is block:
            raise ValueError(
                "Residual: block and shortcut must be different layers (a layer has one "
                "forward cache and cannot be used at two places)"
            )
        self.block = block
        self.shortcut = shortcut

    def _children(self) -> list[tuple[str, Module]]:
        out = [("block", self.block)]
        if self.shortcut is not None:
            out.append(("shortcut", self.shortcut))
        return out

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """``block(x) + shortcut(x)``."""
        yb = self.block.forward(x)
        ys = np.asarray(x) if self.shortcut is None else self.shortcut.forward(x)
        if yb.shape != ys.shape:
            what = "the input" if self.shortcut is None else "the shortcut's output"
            raise ValueError(
                f"Residual.forward: the block's output shape {yb.shape} must equal the shape "
                f"of {what} {ys.shape}"
                + ("; give a shortcut (e.g. a 1x1 convolution) that maps the input to the "
                   "block's output shape" if self.shortcut is None else "")
            )
        self._cache = True
        return yb + ys.astype(yb.dtype, copy=False)

    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: Literal[True] = True) -> FloatArray: ...
    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool) -> FloatArray | None: ...
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool = True) -> FloatArray | None:
        """The gradient through the block plus the gradient through the
        shortcut (``grad_y`` itself for the identity).  With
        ``input_grad=False`` only the parameter gradients are computed and
        None is returned."""
        self._saved()
        if not input_grad:
            for _, layer in self._children():
                _backward_params_only(layer, grad_y)
            return None
        gb = self.block.backward(grad_y)
        gs = np.asarray(grad_y) if self.shortcut is None else self.shortcut.backward(grad_y)
        return gb + gs.astype(gb.dtype, copy=False)

    def __repr__(self) -> str:
        short = "" if self.shortcut is None else f",\n  shortcut={self.shortcut!r}"
        return f"Residual(\n  block={self.block!r}{short}\n)"
