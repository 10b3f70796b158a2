"""cnnext as an ONNX backend (``onnx.backend.base.Backend``).

Runs ONNX models and single nodes on the CPU with cnnext's kernels, through
:func:`cnnext.onnx.load`; the interface ONNX's own test runner drives:
``prepare(model)`` loads a model once, ``rep.run(inputs)`` returns its
outputs in graph order.  Importing this module needs the ``onnx`` package
(``pip install "cnnext[onnx]"``).

Examples
--------
>>> import numpy as np
>>> from onnx import helper
>>> from cnnext.onnx import backend
>>> backend.supports_device("CPU")
True
>>> relu = helper.make_node("Relu", ["x"], ["y"])
>>> backend.run_node(relu, [np.array([-1.0, 2.0], dtype=np.float32)])
(array([0., 2.], dtype=float32),)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._load import OnnxModel, load
from ._proto import _CODES, _INSTALL

try:
    import onnx
    from onnx import helper
    from onnx.backend.base import Backend, BackendRep
except ImportError as e:  # pragma: no cover - exercised without onnx
    raise ImportError(_INSTALL) from e

__all__ = ["CnnextBackend", "CnnextRep", "prepare", "run_model", "run_node", "supports_device"]


class CnnextRep(BackendRep):  # type: ignore[misc]
    """A prepared model: :meth:`run` feeds it and returns the outputs in order."""

    def __init__(self, model: OnnxModel):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray[Any, Any], ...]:
        """Outputs, in graph order, for ``inputs``: a list (graph input order),
        a mapping by name, or one array for a single-input graph."""
        names = self.model.inputs
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        elif isinstance(inputs, np.ndarray) and len(names) == 1:
            feeds = {names[0]: inputs}
        elif isinstance(inputs, Sequence):
            if len(inputs) != len(names):
                raise ValueError(f"CnnextRep.run: {len(names)} inputs expected {names}, got "
                                 f"{len(inputs)}")
            feeds = dict(zip(names, inputs))
        else:
            raise TypeError("CnnextRep.run: inputs must be a list of arrays or a mapping, got "
                            f"{type(inputs).__name__}")
        out = self.model.run(feeds)
        return tuple(out[n] for n in self.model.outputs)


class CnnextBackend(Backend):  # type: ignore[misc]
    """ONNX backend running models with cnnext (CPU only)."""

    @classmethod
    def is_compatible(cls, model: Any, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> CnnextRep:
        """Load ``model`` (a ModelProto, bytes or a path) for running on ``device``."""
        if not cls.supports_device(device):
            raise ValueError(f"cnnext.onnx.backend: device {device!r} is not supported (CPU only)")
        return CnnextRep(load(model))

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray[Any, Any], ...]:
        """Prepare ``model`` and run it once on ``inputs``."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: Any, inputs: Any, device: str = "CPU", outputs_info: Any = None,
                 **kwargs: Any) -> tuple[np.ndarray[Any, Any], ...]:
        """Run one NodeProto on ``inputs`` (arrays for its inputs, in order).

        ``opset_version`` (keyword) selects the default-domain opset
        (default: the newest the installed onnx package knows).
        """
        arrays = [np.asarray(a) for a in inputs]
        names = [n for n in node.input]
        if len(arrays) > len(names):
            raise ValueError(f"cnnext.onnx.backend.run_node: {len(arrays)} inputs for a node "
                             f"with {len(names)}")
        vis, feeds = [], {}
        for name, a in zip(names, arrays):
            if not name:
                continue
            if a.dtype not in _CODES:
                raise ValueError(f"cnnext.onnx.backend.run_node: input {name!r} has dtype "
                                 f"{a.dtype}, which cnnext does not read")
            vis.append(helper.make_tensor_value_info(name, _CODES[a.dtype], a.shape))
            feeds[name] = a
        outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = helper.make_graph([node], "node", vis, outs)
        opset = int(kwargs.get("opset_version", onnx.defs.onnx_opset_version()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return CnnextRep(load(model)).run(feeds)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """True for ``"CPU"`` (cnnext runs nowhere else)."""
        return isinstance(device, str) and device.upper().startswith("CPU")


prepare = CnnextBackend.prepare
run_model = CnnextBackend.run_model
run_node = CnnextBackend.run_node
supports_device = CnnextBackend.supports_device
