"""PyTorch twins of cnnext models, for the training-step rows and comparisons.

:func:`torch_twin` is :func:`cnnext.interop.to_torch` for callers that
already hold the ``torch`` module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import interop, nn

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["torch_twin"]


def torch_twin(model: nn.Module, torch: ModuleType) -> Any:
    """A ``torch.nn.Module`` equal to ``model`` (same layers, weights, buffers,
    dtype and train/eval mode): :func:`cnnext.interop.to_torch` (``torch``,
    the module the caller imported, is the one it uses); TypeError for a
    layer without a PyTorch twin."""
    del torch  # kept in the signature for the callers; to_torch imports the same module
    return interop.to_torch(model)
