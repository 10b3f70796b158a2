"""ONNX models in and out of cnnext.

:func:`export` writes a cnnext model as an ONNX graph that ONNX Runtime (or
any ONNX runtime) can run; :func:`load` builds a runnable model from an ONNX
file; the :mod:`cnnext.onnx.backend` module implements ONNX's backend
interface.  They need the ``onnx`` package, an optional extra
(``pip install "cnnext[onnx]"``), imported only when a function here is
called: ``import cnnext.onnx`` works without it.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> import onnx
>>> from cnnext import models
>>> from cnnext.onnx import export, load
>>> path = os.path.join(tempfile.mkdtemp(), "resnet8.onnx")
>>> model = models.resnet8(seed=0).eval()
>>> export(model, path, (1, 1, 28, 28), opset=17)
>>> onnx.checker.check_model(path)
>>> sorted({node.op_type for node in onnx.load(path).graph.node})
['Add', 'BatchNormalization', 'Conv', 'Flatten', 'Gemm', 'GlobalAveragePool', 'Relu']
>>> x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
>>> bool(np.allclose(load(path)(x), model(x), rtol=1e-5, atol=1e-6))
True
"""
from ._export import export
from ._load import OnnxModel, UnsupportedModelError, load

__all__ = ["OnnxModel", "UnsupportedModelError", "export", "load"]
