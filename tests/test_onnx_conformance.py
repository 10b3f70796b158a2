"""ONNX's own node conformance cases through ``cnnext.onnx.backend``.

The cases are generated offline by ``onnx.backend.test.case.node`` (inputs,
the model and the expected outputs, from ONNX's numpy reference): every case
whose graph uses only the operators cnnext supports either matches the
expected outputs (ONNX's tolerances) or is one of the listed exceptions,
which must raise :class:`cnnext.onnx.UnsupportedModelError` naming what is
not supported.  Skipped without the ``onnx`` package.
"""
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx.backend.test.case.node import collect_testcases  # noqa: E402

from cnnext.onnx import UnsupportedModelError, backend  # noqa: E402

OPERATORS = frozenset(
    "Conv ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool Gemm MatMul Add "
    "Mul Relu LeakyRelu Sigmoid Tanh Softmax LogSoftmax Flatten Reshape BatchNormalization "
    "Dropout Identity MaxUnpool".split()
)

#: The cases cnnext does not run, each with the words its error must contain.
UNSUPPORTED = {
    "test_batchnorm_example_training_mode": "training_mode=1 is not supported",
    "test_batchnorm_epsilon_training_mode": "training_mode=1 is not supported",
    "test_training_dropout": "training_mode=True with a nonzero ratio",
    "test_training_dropout_default": "training_mode=True with a nonzero ratio",
    "test_training_dropout_default_mask": "training_mode=True with a nonzero ratio",
    "test_training_dropout_mask": "training_mode=True with a nonzero ratio",
    "test_identity_sequence": "has sequence type",
    "test_identity_opt": "has optional type",
}


def _cases():
    with warnings.catch_warnings():  # the generators' own numpy warnings
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [c for c in cases
            if c.kind == "node" and {n.op_type for n in c.model.graph.node} <= OPERATORS]


CASES = _cases()


def _run(case):
    rep = backend.prepare(case.model, "CPU")
    for inputs, expected in case.data_sets:
        got = rep.run(inputs)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype, (g.dtype, e.dtype)
            assert g.shape == e.shape, (g.shape, e.shape)
            np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case):
    if case.name in UNSUPPORTED:
        with pytest.raises(UnsupportedModelError, match=UNSUPPORTED[case.name]):
            _run(case)
    else:
        _run(case)


def test_every_operator_and_exception_is_covered():
    ops = {n.op_type for c in CASES for n in c.model.graph.node}
    assert ops == OPERATORS
    assert set(UNSUPPORTED) <= {c.name for c in CASES}
