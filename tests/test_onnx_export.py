"""cnnext.onnx.export: the graph passes onnx.checker and ONNX Runtime runs it
to cnnext's outputs (float32: 1e-5 relative), for every layer with an ONNX
form and for the ready-made models; float64 graphs are checked with onnx's
reference evaluator (ONNX Runtime's CPU convolutions are float32 only).
Skipped without onnx / onnxruntime."""

import numpy as np
import pytest

import cnnext.onnx
from cnnext import models, nn
from cnnext.onnx import export

onnx = pytest.importorskip("onnx")


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(np.float64).tiny))


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def _ort_run(ort, path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _trained(make, dtype, rng):
    """A model whose running statistics moved away from their defaults."""
    model = make(seed=7, dtype=dtype)
    x = rng.standard_normal((4, 1, 28, 28)).astype(dtype)
    for k in range(2):
        model(x * (k + 1))
    return model.eval()


# Every layer kind, with odd options: (id, dtype -> model, input shape)
LAYERS = [
    ("maxpool-ceil-rule", lambda d: nn.MaxPool2D(2, 2, 1, ceil_mode=True), (1, 2, 5, 5)),
    ("maxpool-dilated",
     lambda d: nn.MaxPool2D((3, 2), (2, 3), (1, 1), dilation=(2, 1), ceil_mode=True),
     (2, 3, 11, 13)),
    ("maxpool-floor", lambda d: nn.MaxPool2D(3, 2), (2, 3, 8, 9)),
    ("avgpool-ceil-rule", lambda d: nn.AvgPool2D(2, 2, 1, ceil_mode=True), (1, 2, 5, 5)),
    ("avgpool-ceil-nopad",
     lambda d: nn.AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False), (1, 2, 6, 7)),
    ("avgpool-ceil-pad", lambda d: nn.AvgPool2D(3, 2, 1, ceil_mode=True), (1, 2, 6, 7)),
    ("avgpool-divisor", lambda d: nn.AvgPool2D((3, 2), 2, 1, divisor_override=5), (1, 2, 7, 7)),
    ("avgpool-divisor-ceil",
     lambda d: nn.AvgPool2D(3, 2, 1, ceil_mode=True, divisor_override=-4), (1, 3, 6, 8)),
    ("avgpool-divisor-ceil-rule",
     lambda d: nn.AvgPool2D(2, 2, 1, ceil_mode=True, divisor_override=3), (1, 2, 5, 5)),
    ("maxpool1d", lambda d: nn.MaxPool1D(3, 2, 1, dilation=2, ceil_mode=True), (2, 3, 10)),
    ("avgpool1d",
     lambda d: nn.AvgPool1D(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 3, 10)),
    ("avgpool1d-ceil-rule", lambda d: nn.AvgPool1D(2, 2, 1, ceil_mode=True), (2, 3, 5)),
    ("adaptive-avg-bins", lambda d: nn.AdaptiveAvgPool2D((2, 3)), (2, 3, 8, 9)),
    ("adaptive-max-global", lambda d: nn.AdaptiveMaxPool2D(1), (2, 3, 8, 9)),
    ("adaptive-max-bins", lambda d: nn.AdaptiveMaxPool2D((4, None)), (2, 3, 8, 5)),
    ("adaptive-avg-uneven", lambda d: nn.AdaptiveAvgPool2D((3, 4)), (2, 3, 7, 10)),
    ("adaptive-max-uneven", lambda d: nn.AdaptiveMaxPool2D((5, 2)), (2, 3, 7, 3)),
    ("adaptive-avg-grow", lambda d: nn.AdaptiveAvgPool2D((9, 2)), (2, 3, 7, 5)),
    ("conv1d-same-softmax",
     lambda d: nn.Sequential(nn.Conv1D(3, 4, 4, padding="same", seed=0, dtype=d), nn.Flatten(),
                             nn.Dense(40, 5, seed=1, dtype=d), nn.Softmax(1)),
     (2, 3, 10)),
    ("convT-dilated",
     lambda d: nn.ConvTranspose2D(3, 4, (3, 2), stride=2, padding=1, output_padding=1,
                                  dilation=2, seed=0, dtype=d),
     (2, 3, 5, 6)),
    ("convT-groups",
     lambda d: nn.ConvTranspose2D(4, 6, 3, stride=2, groups=2, bias=False, seed=0, dtype=d),
     (2, 4, 5, 6)),
    ("conv-groups-activations",
     lambda d: nn.Sequential(
         nn.Conv2D(4, 6, (2, 3), stride=(2, 1), padding="valid", dilation=(1, 2), groups=2,
                   seed=0, dtype=d),
         nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(), nn.LeakyReLU(-0.5)),
     (2, 4, 7, 9)),
    ("conv-same-even", lambda d: nn.Conv2D(4, 6, (2, 3), padding="same", seed=0, dtype=d),
     (2, 4, 7, 9)),
    ("conv-asym-pad", lambda d: nn.Conv2D(2, 3, 3, stride=2, padding=(0, 2), seed=0, dtype=d),
     (2, 2, 7, 6)),
    ("dense-bn1d-dropout",
     lambda d: nn.Sequential(nn.Dense(5, 4, seed=0, dtype=d), nn.BatchNorm1D(4, dtype=d),
                             nn.Dropout(0.3)),
     (3, 5)),
    ("bn1d-3d-noaffine-eps",
     lambda d: nn.BatchNorm1D(4, eps=0.3, affine=False, dtype=d), (3, 4, 6)),
    ("dense-nobias", lambda d: nn.Dense(5, 4, bias=False, seed=0, dtype=d), (3, 5)),
    ("residual-identity",
     lambda d: nn.Residual(nn.Sequential(nn.Conv2D(3, 3, 3, padding=1, seed=0, dtype=d),
                                         nn.ReLU())),
     (2, 3, 5, 5)),
    ("residual-projection",
     lambda d: nn.Residual(nn.Conv2D(3, 4, 3, 2, 1, seed=0, dtype=d),
                           nn.Sequential(nn.Conv2D(3, 4, 1, 2, seed=1, dtype=d),
                                         nn.BatchNorm2D(4, dtype=d))),
     (2, 3, 6, 5)),
    ("empty-sequential", lambda d: nn.Sequential(), (2, 3)),
    ("identity", lambda d: nn.Identity(), (2, 3)),
]


def _exported(tmp_path, name, make, shape, dtype):
    rng = np.random.default_rng(0)
    model = make(dtype).train()
    model(rng.standard_normal((4, *shape[1:])).astype(dtype))  # running statistics
    model.eval()
    path = tmp_path / f"{name}.onnx"
    export(model, path, shape, dtype=dtype)
    onnx.checker.check_model(str(path), full_check=True)
    return model, path, rng


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_every_layer_runs_in_onnxruntime_as_in_cnnext(ort, tmp_path, name, make, shape):
    model, path, rng = _exported(tmp_path, name, make, shape, np.float32)
    for n in (shape[0], 3):  # the batch axis is free
        x = rng.standard_normal((n, *shape[1:])).astype(np.float32)
        assert _rel(_ort_run(ort, path, x), model(x)) <= 1e-5


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_every_layer_float64_with_the_onnx_reference_evaluator(tmp_path, name, make, shape):
    reference = pytest.importorskip("onnx.reference")
    if name == "convT-groups":
        pytest.skip("onnx.reference's ConvTranspose fails on group > 1 "
                    "(ONNX Runtime runs the same graph in float32 above)")
    model, path, rng = _exported(tmp_path, name, make, shape, np.float64)
    x = rng.standard_normal((3, *shape[1:]))
    y = reference.ReferenceEvaluator(str(path)).run(None, {"input": x})[0]
    assert _rel(y, model(x)) <= 1e-12


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_uneven_adaptive_pools_at_every_opset(ort, tmp_path, opset):
    """ReduceMean/ReduceMax take their axes as an attribute before opset 18,
    as an input from 18 on."""
    rng = np.random.default_rng(5)
    for layer in (nn.AdaptiveAvgPool2D((3, 4)), nn.AdaptiveMaxPool2D((4, 3))):
        path = tmp_path / "pool.onnx"
        export(layer, path, (1, 2, 7, 10), opset=opset)
        x = rng.standard_normal((2, 2, 7, 10)).astype(np.float32)
        assert _rel(_ort_run(ort, path, x), layer(x)) <= 1e-5


def test_ceil_mode_windows_pytorch_drops_are_cropped(tmp_path):
    """ONNX's ceil_mode keeps a last window starting in the right padding;
    PyTorch's (and cnnext's) drops it: the export slices it off."""
    path = tmp_path / "pool.onnx"
    export(nn.MaxPool2D(2, 2, 1, ceil_mode=True), path, (1, 1, 5, 5))
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node] == ["MaxPool", "Slice"]
    export(nn.MaxPool2D(2, 2, 1, ceil_mode=True), path, (1, 1, 6, 6))
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["MaxPool"]


@pytest.mark.parametrize("make", [models.lenet5, models.resnet8, models.mobilenet_small])
def test_models_cnnext_onnx_onnxruntime(ort, tmp_path, make):
    rng = np.random.default_rng(1)
    model = _trained(make, np.float32, rng)
    path = tmp_path / "model.onnx"
    export(model, path, (1, 1, 28, 28))
    for n in (1, 64):
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        assert _rel(_ort_run(ort, path, x), model(x)) <= 1e-5
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    assert set(model.state_dict()) - inits == {
        k for k in model.state_dict() if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("make", [models.lenet5, models.resnet8, models.mobilenet_small])
def test_models_float64_with_the_onnx_reference_evaluator(tmp_path, make):
    reference = pytest.importorskip("onnx.reference")
    rng = np.random.default_rng(2)
    model = _trained(make, np.float64, rng)
    path = tmp_path / "model.onnx"
    export(model, path, (1, 1, 28, 28))
    x = rng.standard_normal((2, 1, 28, 28))
    y = reference.ReferenceEvaluator(str(path)).run(None, {"input": x})[0]
    assert _rel(y, model(x)) <= 1e-12


@pytest.mark.parametrize("make", [models.lenet5, models.resnet8, models.mobilenet_small])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_models_cnnext_onnx_cnnext(tmp_path, make, dtype):
    load = getattr(cnnext.onnx, "load", None)
    if load is None:
        pytest.skip("cnnext.onnx.load (the ONNX import) is not in this build")
    rng = np.random.default_rng(3)
    model = _trained(make, dtype, rng)
    path = tmp_path / "model.onnx"
    export(model, path, (1, 1, 28, 28))
    loaded = load(path)
    x = rng.standard_normal((5, 1, 28, 28)).astype(dtype)
    assert _rel(np.asarray(loaded(x)), model(x)) <= (1e-5 if dtype == np.float32 else 1e-12)


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = models.resnet8(seed=0)
    model.train()
    model[1].eval()  # mixed modes are kept
    before = model.state_dict()
    export(model, tmp_path / "m.onnx", (2, 1, 12, 12))
    assert model.training and not model[1].training and model[3].block[1].training
    for k, v in model.state_dict().items():  # running statistics untouched
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_fixed_batch_and_opset(ort, tmp_path):
    path = tmp_path / "m.onnx"
    model = models.lenet5(seed=0).eval()
    export(model, path, (3, 1, 28, 28), opset=13, dynamic_batch=False)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 13
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert _rel(_ort_run(ort, path, x), model(x)) <= 1e-5


def test_errors_name_the_layer_and_write_nothing(tmp_path):
    path = tmp_path / "m.onnx"
    cases = [
        (nn.Sequential(nn.ReLU(), nn.MaxUnpool2D(2)), (1, 1, 4, 4), TypeError,
         r"layer 1 \(MaxUnpool2D\) has no ONNX form"),
        (nn.Sequential(nn.Residual(nn.BatchNorm2D(2, track_running_stats=False))),
         (1, 2, 3, 3), ValueError, r"layer 0\.block \(BatchNorm2D.*running statistics"),
        (nn.Sequential(nn.Dense(2, 2), nn.Dense(2, 2, dtype=np.float64)), (1, 2), ValueError,
         r"one dtype; got \['float32', 'float64'\]"),
        (nn.ReLU(), (1, 0), ValueError, r"input_shape\[1\]"),
        (nn.ReLU(), 5, TypeError, r"input_shape"),
        (nn.ReLU(), (), TypeError, r"input_shape"),
        ("relu", (1, 2), TypeError, r"cnnext.nn.Module"),
    ]
    for model, shape, exc, match in cases:
        with pytest.raises(exc, match=match):
            export(model, path, shape)
    with pytest.raises(ValueError, match=r"one dtype, float64; got \['float32'\]"):
        export(nn.Dense(2, 2), path, (1, 2), dtype=np.float64)
    with pytest.raises(TypeError, match="dtype"):
        export(nn.ReLU(), path, (1, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="opset must be >= 13"):
        export(nn.ReLU(), path, (1, 2), opset=12)
    with pytest.raises(ValueError, match="opset must be at most"):
        export(nn.ReLU(), path, (1, 2), opset=onnx.defs.onnx_opset_version() + 1)
    assert list(tmp_path.iterdir()) == []
