"""cnnext.onnx.load: graphs against ONNX's reference evaluator and PyTorch,
the backend interface, and the rejection of malformed or hostile files.

Skipped without the ``onnx`` package (the PyTorch round trips also need
torch).
"""
import doctest
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import cnnext  # noqa: E402
import cnnext.onnx  # noqa: E402
from cnnext import models  # noqa: E402
from cnnext.onnx import UnsupportedModelError, backend  # noqa: E402

FLOAT = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dtype=np.float32, shape=None):
    return helper.make_tensor_value_info(name, FLOAT.get(dtype, TensorProto.FLOAT), shape)


def _onnxruntime(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    model.ir_version = min(model.ir_version, 8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _agree(model, feeds, rtol=1e-5, atol=1e-6, oracle="reference"):
    """cnnext's outputs against ONNX's reference evaluator (or ONNX Runtime)."""
    got = cnnext.onnx.load(model).run(feeds)
    if oracle == "reference":
        want = ReferenceEvaluator(model).run(None, feeds)
    else:
        want = _onnxruntime(model, feeds)
    for name, w in zip(got, want):
        assert got[name].dtype == w.dtype
        np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol)
    return got


# ---------------------------------------------------------------- operators

CONVS = [  # (id, x shape, weight shape, attributes)
    ("asym-pads", (2, 3, 7, 8), (4, 3, 3, 2), dict(pads=[0, 1, 2, 0], strides=[2, 1])),
    ("same-lower", (1, 2, 9, 6), (3, 2, 2, 3), dict(auto_pad="SAME_LOWER", strides=[2, 3])),
    ("same-upper", (1, 2, 9, 6), (3, 2, 2, 3), dict(auto_pad="SAME_UPPER")),
    ("valid", (2, 1, 5, 5), (2, 1, 3, 3), dict(auto_pad="VALID", dilations=[2, 1])),
    ("group-dilation", (2, 4, 11, 10), (6, 2, 3, 2), dict(group=2, dilations=[2, 3],
                                                          pads=[2, 1, 2, 1])),
    ("depthwise", (1, 3, 8, 8), (3, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),
    ("1-D", (2, 3, 13), (2, 3, 4), dict(pads=[3, 1], strides=[2])),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geom", CONVS, ids=[c[0] for c in CONVS])
def test_conv(geom, dtype):
    _, xs, ws, attrs = geom
    rng = np.random.default_rng(0)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    m = _model([node], [_vi("x", dtype)], [_vi("y", dtype)],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    _agree(m, {"x": rng.standard_normal(xs).astype(dtype)},
           rtol=1e-5 if dtype == np.float32 else 1e-12)


TRANSPOSED = [
    ("asym-pads-output-padding", (1, 2, 4, 5), (2, 3, 3, 3),
     dict(strides=[2, 3], pads=[0, 1, 2, 0], output_padding=[1, 2])),
    ("output-shape", (2, 2, 3, 3), (2, 1, 3, 2), dict(strides=[2, 2], output_shape=[8, 7])),
    ("same-upper", (1, 4, 3, 4), (4, 1, 2, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER",
                                                    group=4)),
    ("dilation", (1, 1, 4, 4), (1, 2, 2, 2), dict(dilations=[2, 3], pads=[1, 1, 1, 1])),
]


@pytest.mark.parametrize("geom", TRANSPOSED, ids=[c[0] for c in TRANSPOSED])
def test_conv_transpose(geom):
    _, xs, ws, attrs = geom
    rng = np.random.default_rng(1)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[1] * attrs.get("group", 1)).astype(np.float32)
    # (ONNX's reference evaluator adds the bias wrongly with groups: none then)
    names = ["x", "w", "b"] if attrs.get("group", 1) == 1 else ["x", "w"]
    node = helper.make_node("ConvTranspose", names, ["y"], **attrs)
    m = _model([node], [_vi("x")], [_vi("y")],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")][:len(names) - 1])
    _agree(m, {"x": rng.standard_normal(xs).astype(np.float32)})


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_3d_and_float16_convolutions_in_numpy(op, dtype):
    rng = np.random.default_rng(11)
    # (the reference evaluator adds a grouped ConvTranspose's bias wrongly: 1 group there)
    group, ws, nb = (2, (4, 2, 2, 3, 2), 4) if op == "Conv" else (1, (4, 2, 2, 3, 2), 2)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(nb).astype(dtype)
    node = helper.make_node(op, ["x", "w", "b"], ["y"], group=group, strides=[2, 1, 2],
                            dilations=[1, 2, 1], pads=[1, 0, 1, 0, 2, 1])
    code = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.DOUBLE
    m = _model([node], [helper.make_tensor_value_info("x", code, None)],
               [helper.make_tensor_value_info("y", code, None)],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    x = rng.standard_normal((2, 4, 5, 7, 6)).astype(dtype)
    tol = 2e-2 if dtype == np.float16 else 1e-12
    _agree(m, {"x": x}, rtol=tol, atol=tol)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_grouped_3d_numpy_path_matches_the_2d_kernels(op):
    # depth-1 kernel taps: each depth slice is the 2-D op (the compiled kernel)
    rng = np.random.default_rng(12)
    w = rng.standard_normal((4, 2, 1, 3, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((2, 4, 3, 6, 5)).astype(np.float32)
    attrs = dict(group=2, strides=[2, 3], pads=[1, 0, 1, 1])

    def run(xx, ww):
        node = helper.make_node(op, ["x", "w", "b"], ["y"], **{
            k: (v if k == "group" else [1, *v] if k == "strides" else [0, *v[:2], 0, *v[2:]])
            for k, v in attrs.items()} if ww.ndim == 5 else attrs)
        m = _model([node], [_vi("x")], [_vi("y")],
                   [numpy_helper.from_array(ww, "w"), numpy_helper.from_array(b, "b")])
        return cnnext.onnx.load(m)(xx)

    y3 = run(x, w)
    for depth in range(x.shape[2]):
        np.testing.assert_allclose(y3[:, :, depth], run(x[:, :, depth], w[:, :, 0]),
                                   rtol=1e-5, atol=1e-5)


POOLS = [  # attributes shared by MaxPool and AveragePool
    ("kernel-path", dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 1, 1, 1])),
    ("asym-pads", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 0])),
    ("ceil", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("same-lower", dict(kernel_shape=[2, 3], auto_pad="SAME_LOWER", strides=[2, 2])),
    ("dilation", dict(kernel_shape=[2, 2], dilations=[2, 3], pads=[1, 0, 1, 0])),
    ("pads-at-kernel-bound", dict(kernel_shape=[2, 3], pads=[1, 0, 0, 2])),
]


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("geom", POOLS, ids=[c[0] for c in POOLS])
def test_max_pool_with_indices(geom, order):
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 9)).astype(np.float32)
    values = helper.make_node("MaxPool", ["x"], ["y"], **geom[1])
    # (the reference evaluator's MaxPool gets strided SAME padding wrong)
    oracle = "onnxruntime" if "auto_pad" in geom[1] else "reference"
    want = _agree(_model([values], [_vi("x")], [_vi("y")], opset=19), {"x": x},
                  oracle=oracle)["y"]
    both = helper.make_node("MaxPool", ["x"], ["y", "i"], storage_order=order, **geom[1])
    got = cnnext.onnx.load(_model([both], [_vi("x")], [_vi("y"), helper.make_tensor_value_info(
        "i", TensorProto.INT64, None)], opset=19)).run({"x": x})
    np.testing.assert_array_equal(got["y"], want)
    # ONNX's index: over the whole input, row-major (0) or spatially column-major (1)
    flat = x.reshape(-1) if order == 0 else x.transpose(0, 1, 3, 2).reshape(-1)
    np.testing.assert_array_equal(flat[got["i"]], want)


def test_pool_pads_must_be_smaller_than_the_kernel():
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[2, 0, 0, 0])
    with pytest.raises(ValueError, match="each smaller than the kernel"):
        cnnext.onnx.load(_model([node], [_vi("x")], [_vi("y")]))


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("geom", POOLS, ids=[c[0] for c in POOLS])
def test_average_pool(geom, include):
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 9)).astype(np.float32)
    node = helper.make_node("AveragePool", ["x"], ["y"], count_include_pad=include, **geom[1])
    _agree(_model([node], [_vi("x")], [_vi("y")], opset=19), {"x": x})


@pytest.mark.parametrize("geom", POOLS, ids=[c[0] for c in POOLS])
def test_numpy_pooling_matches_the_kernels(geom, monkeypatch):
    """The numpy path (3-D, integer tensors) against the kernel path, 2-D float64."""
    import cnnext.onnx._ops as mod
    x = np.random.default_rng(13).standard_normal((2, 3, 7, 9))
    x[0, 0, :3, :3] = x[0, 0, 0, 0]  # ties

    def run(op, **extra):
        outs = ["y", "i"] if op == "MaxPool" else ["y"]
        node = helper.make_node(op, ["x"], outs, **geom[1], **extra)
        m = _model([node], [_vi("x", np.float64)], [helper.make_tensor_value_info(
            o, TensorProto.UNDEFINED, None) for o in outs], opset=19)
        return list(cnnext.onnx.load(m).run({"x": x}).values())

    kernel = {op: run(op) for op in ("MaxPool", "AveragePool")}
    kernel["AveragePool1"] = run("AveragePool", count_include_pad=1)
    monkeypatch.setattr(mod, "_is_float", lambda a: False)  # every call takes numpy
    for key, got in [("MaxPool", run("MaxPool")), ("AveragePool", run("AveragePool")),
                     ("AveragePool1", run("AveragePool", count_include_pad=1))]:
        for g, k in zip(got, kernel[key]):
            np.testing.assert_allclose(g, k, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float64])
def test_3d_and_integer_pooling(dtype):
    x = np.random.default_rng(14).integers(0, 200, (2, 2, 5, 6, 7)).astype(dtype)
    attrs = dict(kernel_shape=[2, 3, 2], strides=[2, 2, 1], pads=[1, 0, 1, 0, 2, 1])
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
    code = {np.uint8: TensorProto.UINT8, np.int32: TensorProto.INT32,
            np.float64: TensorProto.DOUBLE}[dtype]
    m = _model([node], [helper.make_tensor_value_info("x", code, None)],
               [helper.make_tensor_value_info("y", code, None),
                helper.make_tensor_value_info("i", TensorProto.INT64, None)], opset=19)
    got = cnnext.onnx.load(m).run({"x": x})
    want = ReferenceEvaluator(_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)],
                                     [helper.make_tensor_value_info("x", code, None)],
                                     [helper.make_tensor_value_info("y", code, None)],
                                     opset=19)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got["y"], want)
    np.testing.assert_array_equal(x.reshape(-1)[got["i"]], want)
    if dtype == np.float64:
        avg = helper.make_node("AveragePool", ["x"], ["y"], count_include_pad=1, **attrs)
        _agree(_model([avg], [_vi("x", dtype)], [_vi("y", dtype)], opset=19), {"x": x},
               rtol=1e-12)


def test_max_unpool_inverts_max_pool():
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 8)).astype(np.float32)
    nodes = [helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2],
                              strides=[2, 2])]
    y = _agree(_model(nodes, [_vi("x")], [_vi("y")]), {"x": x})["y"]
    assert ((y == x) | (y == 0)).all() and (y != 0).sum() == x.size // 4


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_axis_semantics(op, opset):
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    node = helper.make_node(op, ["x"], ["y"], axis=1)
    got = cnnext.onnx.load(_model([node], [_vi("x", np.float64)], [_vi("y", np.float64)],
                                  opset=opset))(x)
    # before opset 13: over the trailing axes flattened into one; since: over axis 1
    axes = (1, 2) if opset < 13 else 1
    e = np.exp(x - x.max(axis=axes, keepdims=True))
    want = e / e.sum(axis=axes, keepdims=True)
    np.testing.assert_allclose(got, np.log(want) if op == "LogSoftmax" else want, rtol=1e-12)


def test_gemm_attributes_and_broadcast_bias():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    c = rng.standard_normal((1, 4)).astype(np.float32)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, beta=2.0, transA=1,
                            transB=1)
    m = _model([node], [_vi("a"), _vi("c")], [_vi("y")], [numpy_helper.from_array(b, "b")])
    _agree(m, {"a": a, "c": c})


def test_residual_graph_and_shared_values():
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Mul", ["r1", "x"], ["z"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    want = _agree(_model(nodes, [_vi("x")], [_vi("y"), _vi("z")], inits), {"x": x})
    # The nodes listed backwards: the loader orders them.
    loaded = cnnext.onnx.load(_model(nodes[::-1], [_vi("x")], [_vi("y"), _vi("z")], inits))
    np.testing.assert_array_equal(loaded.run({"x": x})["y"], want["y"])
    assert loaded.inputs == ["x"] and loaded.outputs == ["y", "z"]
    y, z = loaded(x)
    np.testing.assert_array_equal(z, loaded.run({"x": x})["z"])


def test_absent_optional_inputs():
    rng = np.random.default_rng(15)
    w = numpy_helper.from_array(rng.standard_normal((3, 2, 2, 2)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w", ""], ["c"]),
             helper.make_node("Dropout", ["c", "", ""], ["y"])]
    m = _model(nodes, [_vi("x")], [_vi("y")], [w])
    _agree(m, {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)})


def test_reshape_flatten_dropout_batchnorm():
    rng = np.random.default_rng(8)
    shape = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape")
    stats = [numpy_helper.from_array(rng.uniform(0.5, 2, 3).astype(np.float32), n)
             for n in ("scale", "bias", "mean", "var")]
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["b"],
                              epsilon=1e-3),
             helper.make_node("Dropout", ["b"], ["d", "mask"]),
             helper.make_node("Reshape", ["d", "shape"], ["r"]),
             helper.make_node("Flatten", ["x"], ["f"], axis=2),
             helper.make_node("LeakyRelu", ["f"], ["y"], alpha=0.2)]
    m = _model(nodes, [_vi("x")], [_vi("r"), _vi("y"),
                                    helper.make_tensor_value_info("mask", TensorProto.BOOL, None)],
               [shape, *stats])
    _agree(m, {"x": rng.standard_normal((2, 3, 4, 5)).astype(np.float32)})


@pytest.mark.parametrize("name", ["lenet5", "resnet8", "mobilenet_small"])
def test_exported_pytorch_models(name, tmp_path):
    torch = pytest.importorskip("torch")
    from cnnext.bench.twin import torch_twin
    model = getattr(models, name)(seed=0)
    model.eval()
    twin = torch_twin(model, torch)
    x = np.random.default_rng(9).standard_normal((3, 1, 28, 28)).astype(np.float32)
    path = tmp_path / f"{name}.onnx"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(twin, (torch.from_numpy(x),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    loaded = cnnext.onnx.load(path)
    got = loaded(x)
    np.testing.assert_allclose(got, model(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(loaded(x[:1]), got[:1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- backend


def test_backend_interface():
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")
    x = np.array([[-1.0, 2.0]], dtype=np.float32)
    (y,) = backend.run_node(helper.make_node("Relu", ["x"], ["y"]), [x])
    np.testing.assert_array_equal(y, [[0.0, 2.0]])
    m = _model([helper.make_node("Sigmoid", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    (y,) = backend.run_model(m, [x])
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x)), rtol=1e-6)
    rep = backend.prepare(m.SerializeToString())
    np.testing.assert_array_equal(rep.run({"x": x})[0], y)
    with pytest.raises(ValueError, match="device 'CUDA'"):
        backend.prepare(m, "CUDA")


# ---------------------------------------------------------------- rejection


def _relu_model(**graph_changes):
    return _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", shape=[2])],
                  [_vi("y", shape=[2])])


def test_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="path, bytes or an onnx.ModelProto"):
        cnnext.onnx.load(3)
    with pytest.raises(ValueError, match="not an ONNX model"):
        cnnext.onnx.load(b"\xff\xff\xff\x07garbage")
    with pytest.raises(FileNotFoundError):
        cnnext.onnx.load("/nonexistent/model.onnx")


def _with_init(tensor, opset=17):
    return _model([helper.make_node("Add", ["x", tensor.name], ["y"])], [_vi("x")], [_vi("y")],
                  [tensor], opset)


def test_rejects_bad_tensors():
    t = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    t.dims[0] = -3
    with pytest.raises(ValueError, match="negative dimension"):
        cnnext.onnx.load(_with_init(t))
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20])
    with pytest.raises(ValueError, match="more than the limit"):
        cnnext.onnx.load(_with_init(huge))
    small = numpy_helper.from_array(np.zeros(64, np.float32), "w")
    with pytest.raises(ValueError, match="max_tensor_bytes"):
        cnnext.onnx.load(_with_init(small), max_tensor_bytes=100)
    short = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    short.raw_data = short.raw_data[:10]
    with pytest.raises(ValueError, match="raw data has 10 bytes"):
        cnnext.onnx.load(_with_init(short))
    wide = TensorProto(name="w", data_type=TensorProto.INT8, dims=[2], int32_data=[1, 300])
    with pytest.raises(ValueError, match="outside the range of int8"):
        cnnext.onnx.load(_with_init(wide))
    half = TensorProto(name="w", data_type=TensorProto.FLOAT16, dims=[1], int32_data=[0x3C00])
    m = _model([helper.make_node("Identity", ["w"], ["y"])], [],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], [half])
    assert cnnext.onnx.load(m)() == np.float16(1.0)
    text = helper.make_tensor("w", TensorProto.STRING, [1], [b"a"])
    with pytest.raises(UnsupportedModelError, match="data type 8"):
        cnnext.onnx.load(_with_init(text))
    unknown = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    unknown.data_type = 99
    with pytest.raises(UnsupportedModelError, match="data type 99"):
        cnnext.onnx.load(_with_init(unknown))


def test_rejects_bad_graphs():
    cyc = _model([helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                  helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    with pytest.raises(ValueError, match="cycle"):
        cnnext.onnx.load(cyc)
    undefined = _model([helper.make_node("Add", ["x", "ghost"], ["y"])], [_vi("x")], [_vi("y")])
    with pytest.raises(ValueError, match="reads 'ghost'"):
        cnnext.onnx.load(undefined)
    twice = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Tanh", ["x"], ["y"])],
                   [_vi("x")], [_vi("y")])
    with pytest.raises(ValueError, match="produced twice"):
        cnnext.onnx.load(twice)
    missing = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("z")])
    with pytest.raises(ValueError, match="'z' is not computed"):
        cnnext.onnx.load(missing)


def test_attributes_cannot_make_huge_tensors():
    x = {"x": np.zeros((1, 1, 4, 4), np.float32)}
    w = numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1 << 30, 0, 0, 1 << 30])
    with pytest.raises(ValueError, match="the padded input of shape"):
        cnnext.onnx.load(_model([conv], [_vi("x")], [_vi("y")], [w])).run(x)
    up = helper.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[1 << 20, 1 << 20])
    with pytest.raises(ValueError, match="ConvTranspose's output of shape"):
        cnnext.onnx.load(_model([up], [_vi("x")], [_vi("y")], [w])).run(x)


def test_unsupported_names_what():
    gather = _model([helper.make_node("Gather", ["x", "x"], ["y"])], [_vi("x")], [_vi("y")])
    with pytest.raises(UnsupportedModelError, match="operator 'Gather'"):
        cnnext.onnx.load(gather)
    attr = _model([helper.make_node("Relu", ["x"], ["y"], slope=2.0)], [_vi("x")], [_vi("y")])
    with pytest.raises(UnsupportedModelError, match="attribute 'slope' of Relu"):
        cnnext.onnx.load(attr)
    dom = _model([helper.make_node("Relu", ["x"], ["y"], domain="com.example")], [_vi("x")],
                 [_vi("y")])
    with pytest.raises(UnsupportedModelError, match="domain 'com.example'"):
        cnnext.onnx.load(dom)
    with pytest.raises(UnsupportedModelError, match="opset 6"):
        cnnext.onnx.load(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")],
                                opset=6))
    unpool = _model([helper.make_node("MaxUnpool", ["x", "x"], ["y"], kernel_shape=[2, 2])],
                    [_vi("x")], [_vi("y")], opset=8)
    with pytest.raises(ValueError, match="'MaxUnpool' is not defined at opset 8"):
        cnnext.onnx.load(unpool)
    wrong = _model([helper.make_node("Conv", ["x", "x"], ["y"], group=2.0)], [_vi("x")],
                   [_vi("y")])
    with pytest.raises(ValueError, match="'group' must be INT"):
        cnnext.onnx.load(wrong)


def test_attributes_of_other_opsets_are_refused():
    avg = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    with pytest.raises(ValueError, match="no attribute 'dilations' at opset 11"):
        cnnext.onnx.load(_model([avg], [_vi("x")], [_vi("y")], opset=11))
    cnnext.onnx.load(_model([avg], [_vi("x")], [_vi("y")], opset=19))
    add = helper.make_node("Add", ["x", "x"], ["y"], broadcast=1)
    with pytest.raises(UnsupportedModelError, match="attribute 'broadcast' of Add"):
        cnnext.onnx.load(_model([add], [_vi("x")], [_vi("y")]))


def _external_model(tmp_path, location, data=b"\x00" * 12):
    (tmp_path / "w.bin").write_bytes(data)
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3])
    t.data_location = TensorProto.EXTERNAL
    for k, v in {"location": location, "offset": "0", "length": "12"}.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    path = tmp_path / "m.onnx"
    path.write_bytes(_with_init(t).SerializeToString())
    return path


def test_external_data(tmp_path):
    path = _external_model(tmp_path, "w.bin", np.arange(3, dtype="<f4").tobytes())
    y = cnnext.onnx.load(path)(np.ones(3, np.float32))
    np.testing.assert_array_equal(y, [1, 2, 3])
    with pytest.raises(ValueError, match="loaded from a path"):
        cnnext.onnx.load(path.read_bytes())
    (tmp_path / "sub").mkdir()
    inner = _external_model(tmp_path / "sub", "../w.bin")
    with pytest.raises(ValueError, match="leaves the model's directory"):
        cnnext.onnx.load(inner)
    with pytest.raises(ValueError, match="must be a relative path"):
        cnnext.onnx.load(_external_model(tmp_path, str(tmp_path / "w.bin")))
    with pytest.raises(ValueError, match="does not exist"):
        cnnext.onnx.load(_external_model(tmp_path, "absent.bin"))
    with pytest.raises(ValueError, match="does not match"):
        cnnext.onnx.load(_external_model(tmp_path, "w.bin", b"\x00" * 4))


def test_float_only_operators_refuse_integer_tensors():
    code = TensorProto.INT32
    for op in ("Sigmoid", "Softmax", "GlobalAveragePool"):
        m = _model([helper.make_node(op, ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", code, None)],
                   [helper.make_tensor_value_info("y", code, None)])
        with pytest.raises(ValueError, match=f"{op} takes floating-point tensors, got int32"):
            cnnext.onnx.load(m)(np.ones((1, 2, 3, 3), np.int32))


def test_feeds_are_checked():
    m = cnnext.onnx.load(_relu_model())
    with pytest.raises(TypeError, match="must be float32, got float64"):
        m(np.zeros(2))
    with pytest.raises(ValueError, match=r"must have shape \[2\]"):
        m(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="missing"):
        m.run({})
    x = np.array([-1.0, 1.0], np.float32)
    x.flags.writeable = False
    np.testing.assert_array_equal(m(x), [0.0, 1.0])


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "cnnext\[onnx\]"'):
        cnnext.onnx.load(b"")


def test_loading_never_writes_outside(tmp_path):
    before = set(os.listdir(tmp_path))
    path = _external_model(tmp_path, "w.bin")
    cnnext.onnx.load(path)
    assert set(os.listdir(tmp_path)) == before | {"w.bin", "m.onnx"}


def test_docstring_examples():
    import cnnext.onnx._load as mod
    res = doctest.testmod(mod)
    assert res.attempted > 0 and res.failed == 0


def test_operator_versions_newer_than_known_are_refused(monkeypatch):
    import cnnext.onnx._load as mod
    monkeypatch.setitem(mod._VERSIONS, "Relu", 6)
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=14)
    with pytest.raises(UnsupportedModelError, match="version 14, newer than the version 6"):
        cnnext.onnx.load(relu)
    cnnext.onnx.load(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")],
                            opset=12))


def test_relu_overwrites_only_what_nothing_else_reads():
    rng = np.random.default_rng(10)
    w = numpy_helper.from_array(rng.standard_normal((2, 2, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),         # c is a graph output: kept
             helper.make_node("Conv", ["x", "w"], ["d"]),
             helper.make_node("Relu", ["d"], ["s"]),         # d read only here: overwritten
             helper.make_node("Relu", ["x"], ["t"])]         # x is the caller's: kept
    m = _model(nodes, [_vi("x")], [_vi("c"), _vi("r"), _vi("s"), _vi("t")], [w])
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    x0 = x.copy()
    got = _agree(m, {"x": x})
    assert (got["c"] < 0).any() and (got["s"] >= 0).all()
    np.testing.assert_array_equal(x, x0)


def test_bench_rows():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from cnnext.bench import run_small_calls
    from cnnext.bench.report import format_onnx_models
    (row,) = run_small_calls("onnx-lenet5-b1", quick=True, torch=torch, threads=1)
    assert row["group"] == "onnx" and row["ratio_onnxruntime"] > 0 and row["ratio_pytorch"] > 0
    text = format_onnx_models([row])
    assert "onnx-lenet5-b1" in text and "cnnext/ORT" in text
    (row,) = run_small_calls("onnx-lenet5-b1", quick=True, torch=None, threads=1)
    assert row["cnnext"] == {"status": "needs torch (not installed)"}


def test_constants_cannot_be_changed_through_outputs():
    w = numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    m = cnnext.onnx.load(_model([helper.make_node("Identity", ["w"], ["y"])], [],
                                [_vi("y")], [w]))
    y = m()
    with pytest.raises(ValueError, match="read-only"):
        y[0] = 5
    np.testing.assert_array_equal(m(), [0, 1, 2])


def test_mutated_files_load_and_run_or_fail_cleanly():
    """Random byte changes to a small CNN file: every outcome is a result or a
    ValueError/TypeError (never another exception)."""
    rng = np.random.default_rng(16)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (4, 1, 3, 3)), ("b", (4,)), ("g", (10, 36)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    data = _model(nodes, [_vi("x", shape=["N", 1, 12, 12])],
                  [_vi("y"), helper.make_tensor_value_info("i", TensorProto.INT64, None)],
                  inits).SerializeToString()
    x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    outcomes = set()
    for _ in range(300):
        d = bytearray(data)
        for pos in rng.integers(len(d), size=rng.integers(1, 6)):
            d[pos] = rng.integers(256)
        try:
            m = cnnext.onnx.load(bytes(d))
            m.run({n: x for n in m.inputs})
            outcomes.add("ran")
        except (ValueError, TypeError) as e:
            outcomes.add(type(e).__name__)
    assert {"ran", "ValueError"} <= outcomes
