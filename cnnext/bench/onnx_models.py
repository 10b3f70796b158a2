"""Peers of the onnx group: model inference through an imported ONNX file.

Each row builds one of :mod:`cnnext.models` (``lenet5``, ``resnet8``,
``mobilenet_small``) in eval mode, its PyTorch twin
(:func:`~cnnext.bench.twin.torch_twin`), exports the twin with
``torch.onnx.export`` to an in-memory file and times, on the same input:

``cnnext``
    ``cnnext.onnx.load(file)(x)``: the imported graph on cnnext's kernels.
``onnxruntime``
    ``InferenceSession(file).run`` on the CPU execution provider, with as
    many intra-op threads as the row's thread count.
``pytorch``
    The twin's forward under ``torch.no_grad()``.

The row needs PyTorch (to export) and onnx (to load); without them every
peer reports why, and ONNX Runtime's peer says "not installed" without it.
"""
from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._config import get_num_threads
from .harness import Peer

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["build_onnx_peers"]

_MODELS = {"lenet5": "lenet5", "resnet8": "resnet8", "mobilenet": "mobilenet_small"}


def _export(torch: ModuleType, twin: Any, x: np.ndarray[Any, Any]) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(twin, (torch.from_numpy(x.copy()),), f, dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return f.getvalue()


def _ort_peer(data: bytes, x: np.ndarray[Any, Any]) -> Peer:
    try:
        import onnxruntime as ort
    except ImportError:
        return Peer(None, "not installed")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = get_num_threads()
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return Peer(lambda: sess.run(None, {"x": x}),
                impl=f"onnxruntime {ort.__version__} InferenceSession, CPU provider")


def build_onnx_peers(
    name: str, rng: np.random.Generator, torch: ModuleType | None, torch_status: str
) -> dict[str, Peer]:
    """``{"cnnext": Peer, "onnxruntime": Peer, "pytorch": Peer}`` of the row
    ``onnx-<model>-b<N>`` (float32)."""
    short, batch = name.removeprefix("onnx-").rsplit("-b", 1)
    if torch is None:
        why = f"needs torch ({torch_status})"
        return {p: Peer(None, why) for p in ("cnnext", "onnxruntime", "pytorch")}
    try:
        import onnx  # noqa: F401  (what torch.onnx.export and cnnext.onnx.load need)
    except ImportError:
        return {p: Peer(None, "needs onnx") for p in ("cnnext", "onnxruntime",
                                                                  "pytorch")}
    from .. import onnx as cnnext_onnx
    from .. import models  # (imported here: importing cnnext.bench stays cheap)
    from .twin import torch_twin

    model = getattr(models, _MODELS[short])(seed=int(rng.integers(1 << 31)))
    model.eval()
    twin = torch_twin(model, torch)
    x = rng.standard_normal((int(batch), 1, 28, 28)).astype(np.float32)
    data = _export(torch, twin, x)
    loaded = cnnext_onnx.load(data)
    xt = torch.from_numpy(x.copy())

    def torch_fwd() -> Any:
        with torch.no_grad():
            return twin(xt)

    return {
        "cnnext": Peer(lambda: loaded(x), impl="cnnext.onnx.load of the exported file"),
        "onnxruntime": _ort_peer(data, x),
        "pytorch": Peer(torch_fwd, impl="the exported torch.nn twin, eval, torch.no_grad()"),
    }
