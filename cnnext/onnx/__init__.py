"""ONNX: export cnnext models to ONNX files.

:func:`export` writes a model as an ONNX graph that ONNX Runtime (or any
ONNX runtime) can run.  It needs the ``onnx`` package, an optional extra
(``pip install "cnnext[onnx]"``), imported only when a function here is
called: ``import cnnext.onnx`` works without it.

Examples
--------
>>> import os, tempfile
>>> import onnx
>>> from cnnext import models
>>> from cnnext.onnx import export
>>> path = os.path.join(tempfile.mkdtemp(), "resnet8.onnx")
>>> export(models.resnet8(seed=0), path, (1, 1, 28, 28), opset=17)
>>> onnx.checker.check_model(path)
>>> sorted({node.op_type for node in onnx.load(path).graph.node})
['Add', 'BatchNormalization', 'Conv', 'Flatten', 'Gemm', 'GlobalAveragePool', 'Relu']
"""
from ._export import export

__all__ = ["export"]
