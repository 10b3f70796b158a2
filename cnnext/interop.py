"""Models to and from PyTorch: :func:`from_torch` and :func:`to_torch`.

PyTorch is imported only inside these two functions (it is never a
dependency of cnnext).  Weights need neither: a cnnext model's
:meth:`~cnnext.nn.Module.state_dict` has PyTorch's names and layouts, so
``model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})``
moves the weights of a PyTorch model into the matching cnnext model.

The layers that convert, both ways (cnnext -- PyTorch):

* :class:`~cnnext.nn.Sequential` -- ``torch.nn.Sequential``;
* :class:`~cnnext.nn.Residual` -- a module with the children ``block``
  (and ``shortcut``) computing ``block(x) + shortcut(x)`` (what
  :func:`to_torch` makes); from PyTorch also torchvision's ``BasicBlock``
  and ``Bottleneck`` (see :func:`from_torch`);
* :class:`~cnnext.nn.Conv1D`, :class:`~cnnext.nn.Conv2D`,
  :class:`~cnnext.nn.ConvTranspose2D` -- ``Conv1d``, ``Conv2d``,
  ``ConvTranspose2d`` (zero padding);
* :class:`~cnnext.nn.Dense` -- ``Linear``;
* :class:`~cnnext.nn.BatchNorm1D`, :class:`~cnnext.nn.BatchNorm2D` --
  ``BatchNorm1d``, ``BatchNorm2d``;
* :class:`~cnnext.nn.ReLU`, :class:`~cnnext.nn.LeakyReLU`,
  :class:`~cnnext.nn.Sigmoid`, :class:`~cnnext.nn.Tanh`,
  :class:`~cnnext.nn.Softmax` -- ``ReLU``, ``LeakyReLU``, ``Sigmoid``,
  ``Tanh``, ``Softmax``;
* :class:`~cnnext.nn.MaxPool1D`, :class:`~cnnext.nn.MaxPool2D`,
  :class:`~cnnext.nn.AvgPool1D`, :class:`~cnnext.nn.AvgPool2D`,
  :class:`~cnnext.nn.AdaptiveAvgPool2D`,
  :class:`~cnnext.nn.AdaptiveMaxPool2D` -- ``MaxPool1d``, ``MaxPool2d``,
  ``AvgPool1d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``,
  ``AdaptiveMaxPool2d`` (without ``return_indices``);
* :class:`~cnnext.nn.Flatten` -- ``Flatten()`` (``start_dim=1``,
  ``end_dim=-1``);
* :class:`~cnnext.nn.Dropout`, :class:`~cnnext.nn.Identity` --
  ``Dropout``, ``Identity``.

Anything else raises ``TypeError`` naming the first module that does not
convert (by its path in the model, as in ``state_dict`` names).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import nn

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["from_torch", "to_torch"]


def _import_torch(fname: str) -> ModuleType:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"{fname} needs PyTorch (pip install torch); cnnext itself does not"
        ) from exc
    return cast("ModuleType", torch)


# --------------------------------------------------------------------------
# cnnext -> PyTorch
# --------------------------------------------------------------------------


def to_torch(model: nn.Module) -> Any:
    """A ``torch.nn.Module`` computing what ``model`` computes.

    Same layers, parameters and buffers (copies), dtype (float32 or
    float64) and train/eval mode.  A :class:`~cnnext.nn.Residual` becomes a
    small PyTorch module with the children ``block`` and ``shortcut``, so
    the PyTorch model's ``state_dict`` names are those of ``model``'s.

    Parameters
    ----------
    model : cnnext.nn.Module
        Built from the layers listed in :mod:`cnnext.interop`.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    TypeError
        Naming the first layer (by its path) that has no PyTorch twin.
    ImportError
        Without PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from cnnext import interop, models
    >>> model = models.lenet5(seed=0).eval()
    >>> twin = interop.to_torch(model)
    >>> x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    >>> with torch.no_grad():
    ...     y = twin(torch.from_numpy(x)).numpy()
    >>> bool(np.allclose(y, model(x), rtol=1e-5, atol=1e-6))
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_torch: model must be a cnnext.nn.Module, got {type(model).__name__}")
    torch = _import_torch("to_torch")
    twin = _to_torch(model, "model", torch)
    twin.train(model.training)
    return twin


def _to_torch(layer: nn.Module, path: str, torch: ModuleType) -> Any:
    tnn = torch.nn
    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*(_to_torch(sub, f"{path}.{i}", torch)
                                for i, sub in enumerate(layer)))
    if isinstance(layer, nn.Residual):
        shortcut = (None if layer.shortcut is None
                    else _to_torch(layer.shortcut, f"{path}.shortcut", torch))
        return _residual_class(torch)(_to_torch(layer.block, f"{path}.block", torch), shortcut)
    m = _torch_layer(layer, tnn)
    if m is None:
        raise TypeError(
            f"to_torch: {path} ({type(layer).__name__}) has no PyTorch twin; see "
            f"cnnext.interop for the layers that convert"
        )
    state = layer.state_dict()
    if state:
        dtype = torch.float64 if layer.dtype == np.float64 else torch.float32  # type: ignore[attr-defined]
        m = m.to(dtype)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return m


def _torch_layer(layer: nn.Module, tnn: Any) -> Any:
    """The PyTorch layer of ``layer``'s class and options (initial weights), or None."""
    t = type(layer)
    L: Any = layer
    if t in (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Flatten, nn.Identity):
        return getattr(tnn, t.__name__)()
    if t is nn.LeakyReLU:
        return tnn.LeakyReLU(L.alpha)
    if t is nn.Softmax:
        return tnn.Softmax(dim=L.axis)
    if t is nn.Dropout:
        return tnn.Dropout(L.p)
    if t in (nn.MaxPool2D, nn.MaxPool1D):
        cls = tnn.MaxPool2d if t is nn.MaxPool2D else tnn.MaxPool1d
        return cls(L.kernel_size, L.stride, L.padding, L.dilation, ceil_mode=L.ceil_mode)
    if t is nn.AvgPool2D:
        return tnn.AvgPool2d(L.kernel_size, L.stride, L.padding, L.ceil_mode,
                             L.count_include_pad, L.divisor_override)
    if t is nn.AvgPool1D:
        return tnn.AvgPool1d(L.kernel_size, L.stride, L.padding, L.ceil_mode,
                             L.count_include_pad)
    if t in (nn.AdaptiveAvgPool2D, nn.AdaptiveMaxPool2D):
        return getattr(tnn, t.__name__[:-1] + "d")(L.output_size)
    bias = "bias" in layer.params
    if t in (nn.Conv2D, nn.Conv1D):
        cls = tnn.Conv2d if t is nn.Conv2D else tnn.Conv1d
        return cls(L.in_channels, L.out_channels, L.kernel_size, L.stride, L.padding,
                   L.dilation, L.groups, bias)
    if t is nn.ConvTranspose2D:
        return tnn.ConvTranspose2d(L.in_channels, L.out_channels, L.kernel_size, L.stride,
                                   L.padding, L.output_padding, L.groups, bias, L.dilation)
    if t is nn.Dense:
        return tnn.Linear(L.in_features, L.out_features, bias)
    if t in (nn.BatchNorm1D, nn.BatchNorm2D):
        cls = tnn.BatchNorm1d if t is nn.BatchNorm1D else tnn.BatchNorm2d
        return cls(L.num_features, L.eps, L.momentum, L.affine, L.track_running_stats)
    return None


@functools.cache
def _residual_class(torch: ModuleType) -> Any:
    """The PyTorch twin of :class:`cnnext.nn.Residual` (one class per process)."""

    class Residual(torch.nn.Module):  # type: ignore[name-defined,misc]
        """``block(x) + shortcut(x)``, the shortcut the identity when None
        (cnnext.nn.Residual's twin, made by cnnext.interop.to_torch)."""

        def __init__(self, block: Any, shortcut: Any = None) -> None:
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x: Any) -> Any:
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    return Residual


# --------------------------------------------------------------------------
# PyTorch -> cnnext
# --------------------------------------------------------------------------


def from_torch(module: Any) -> nn.Module:
    """A cnnext model computing what the PyTorch ``module`` computes.

    Same layers, parameters and buffers (copies, as numpy arrays), dtype
    (float32 or float64, per layer) and train/eval mode (that of
    ``module``).  Residual blocks convert to :class:`~cnnext.nn.Residual`:
    cnnext's own twin (a module with children ``block`` and optionally
    ``shortcut``, as :func:`to_torch` makes), and torchvision's
    ``BasicBlock`` (``conv1, bn1, relu, conv2, bn2`` and an optional
    ``downsample``) and ``Bottleneck`` (also ``conv3, bn3``), recognised by
    their class names and children, which become a ``Residual`` followed by
    a ``ReLU`` in a :class:`~cnnext.nn.Sequential`.

    Parameters
    ----------
    module : torch.nn.Module
        Built from the layers listed in :mod:`cnnext.interop`.

    Returns
    -------
    cnnext.nn.Module

    Raises
    ------
    TypeError
        Naming the first module (by its path) that does not convert, or an
        option that cnnext lacks (e.g. ``padding_mode="reflect"``).
    ImportError
        Without PyTorch.

    Examples
    --------
    >>> import torch
    >>> from cnnext import interop
    >>> tmodel = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> interop.from_torch(tmodel)
    Sequential(
      (0): Dense(4, 3, bias=True)
      (1): ReLU()
    )
    """
    torch = _import_torch("from_torch")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"from_torch: module must be a torch.nn.Module, got {type(module).__name__}"
        )
    model = _from_torch(module, "module", torch)
    model.train(bool(module.training))
    return model


def _unsupported(path: str, m: Any, why: str = "has no cnnext counterpart") -> TypeError:
    return TypeError(
        f"from_torch: {path} ({type(m).__name__}) {why}; see cnnext.interop for the "
        f"modules that convert"
    )


_BLOCKS = {
    "BasicBlock": ["conv1", "bn1", "relu", "conv2", "bn2"],
    "Bottleneck": ["conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"],
}


def _from_torch(m: Any, path: str, torch: ModuleType) -> nn.Module:
    tnn = torch.nn
    children = dict(m.named_children())
    if isinstance(m, tnn.Sequential):
        return nn.Sequential(*(_from_torch(c, f"{path}.{k}", torch) for k, c in children.items()))
    name = type(m).__name__
    if name == "Residual" and "block" in children and set(children) <= {"block", "shortcut"}:
        short = children.get("shortcut")
        return nn.Residual(
            _from_torch(children["block"], f"{path}.block", torch),
            None if short is None else _from_torch(short, f"{path}.shortcut", torch),
        )
    if name in _BLOCKS and set(children) - {"downsample"} == set(_BLOCKS[name]):
        order = _BLOCKS[name]
        block = nn.Sequential(*(_from_torch(children[k], f"{path}.{k}", torch) for k in order))
        down = children.get("downsample")
        short = None if down is None else _from_torch(down, f"{path}.downsample", torch)
        return nn.Sequential(nn.Residual(block, short), nn.ReLU())
    convert = _CONVERTERS.get(name)
    if convert is None or type(m) is not getattr(tnn, name, None):
        raise _unsupported(path, m)
    layer = convert(m, path)
    state = {k: v.detach().cpu().numpy() for k, v in m.state_dict().items()}
    if state:
        layer.load_state_dict(state)
    return layer


def _dtype(m: Any, path: str) -> type[np.floating[Any]]:
    dt = str(m.weight.dtype if getattr(m, "weight", None) is not None
             else m.running_mean.dtype if getattr(m, "running_mean", None) is not None
             else "torch.float32")
    if dt not in ("torch.float32", "torch.float64"):
        raise _unsupported(path, m, f"has dtype {dt}; cnnext computes in float32 or float64")
    return np.float64 if dt == "torch.float64" else np.float32


def _conv(m: Any, path: str) -> nn.Module:
    if m.padding_mode != "zeros":
        raise _unsupported(path, m, f"has padding_mode={m.padding_mode!r}; cnnext pads "
                                    f"with zeros only")
    kw: dict[str, Any] = dict(stride=m.stride, padding=m.padding, dilation=m.dilation,
                              groups=m.groups, bias=m.bias is not None,
                              dtype=_dtype(m, path), seed=0)
    name = type(m).__name__
    if name == "ConvTranspose2d":
        kw["output_padding"] = m.output_padding
        return nn.ConvTranspose2D(m.in_channels, m.out_channels, m.kernel_size, **kw)
    cls = nn.Conv2D if name == "Conv2d" else nn.Conv1D
    return cls(m.in_channels, m.out_channels, m.kernel_size, **kw)


def _batch_norm(m: Any, path: str) -> nn.Module:
    cls = nn.BatchNorm2D if type(m).__name__ == "BatchNorm2d" else nn.BatchNorm1D
    return cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
               dtype=_dtype(m, path))


def _pool(m: Any, path: str) -> nn.Module:
    name = type(m).__name__
    if getattr(m, "return_indices", False):
        raise _unsupported(path, m, "has return_indices=True (a pair output cannot be "
                                    "chained)")
    if name.startswith("Adaptive"):
        return getattr(nn, name[:-1] + "D")(m.output_size)  # type: ignore[no-any-return]
    cls = getattr(nn, name[:-1] + "D")
    if name.startswith("Max"):
        return cls(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)  # type: ignore[no-any-return]
    extra = () if name == "AvgPool1d" else (m.divisor_override,)
    return cls(m.kernel_size, m.stride, m.padding, m.ceil_mode,  # type: ignore[no-any-return]
               m.count_include_pad, *extra)


def _flatten(m: Any, path: str) -> nn.Module:
    if (m.start_dim, m.end_dim) != (1, -1):
        raise _unsupported(path, m, f"has start_dim={m.start_dim}, end_dim={m.end_dim}; "
                                    f"cnnext flattens start_dim=1, end_dim=-1 only")
    return nn.Flatten()


def _softmax(m: Any, path: str) -> nn.Module:
    if m.dim is None:
        raise _unsupported(path, m, "has dim=None; give the axis explicitly")
    return nn.Softmax(m.dim)


_CONVERTERS: dict[str, Callable[[Any, str], nn.Module]] = {
    "Conv1d": _conv,
    "Conv2d": _conv,
    "ConvTranspose2d": _conv,
    "Linear": lambda m, path: nn.Dense(m.in_features, m.out_features, m.bias is not None,
                                       dtype=_dtype(m, path), seed=0),
    "BatchNorm1d": _batch_norm,
    "BatchNorm2d": _batch_norm,
    "ReLU": lambda m, path: nn.ReLU(),
    "LeakyReLU": lambda m, path: nn.LeakyReLU(m.negative_slope),
    "Sigmoid": lambda m, path: nn.Sigmoid(),
    "Tanh": lambda m, path: nn.Tanh(),
    "Softmax": _softmax,
    "Dropout": lambda m, path: nn.Dropout(m.p),
    "Identity": lambda m, path: nn.Identity(),
    "Flatten": _flatten,
    **dict.fromkeys(["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
                     "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"], _pool),
}
