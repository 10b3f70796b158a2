"""ONNX models in cnnext (needs the optional ``onnx`` package:
``pip install "cnnext[onnx]"``).

:func:`load` builds a runnable model from an ONNX file; the
:mod:`cnnext.onnx.backend` module implements ONNX's backend interface.
"""
from ._load import OnnxModel, UnsupportedModelError, load

__all__ = ["OnnxModel", "UnsupportedModelError", "load"]
