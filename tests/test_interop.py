"""PyTorch weights both ways: state_dict names, layouts and the load contract
(no PyTorch needed), and cnnext.interop.from_torch / to_torch against
PyTorch itself (skipped without it)."""
import zipfile

import numpy as np
import pytest

from cnnext import interop, models, nn

RNG_SEED = 20


def _rel(a, b):
    """Largest error relative to the largest magnitude (0 for two zero arrays)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(np.float64).tiny))


def _bn_net(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(2, 4, 3, padding=1, seed=rng, dtype=dtype),
        nn.BatchNorm2D(4, dtype=dtype),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2D(4, 4, 3, padding=1, bias=False, seed=rng,
                                            dtype=dtype), nn.BatchNorm2D(4, dtype=dtype))),
        nn.Flatten(),
        nn.Dense(4 * 5 * 5, 3, seed=rng, dtype=dtype),
    )


# --------------------------------------------------------------------------
# The state_dict contract (no PyTorch)
# --------------------------------------------------------------------------


def test_state_dict_order_is_per_layer_parameters_then_buffers():
    assert list(_bn_net().state_dict()) == [
        "0.weight", "0.bias",
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
        "3.block.0.weight",
        "3.block.1.weight", "3.block.1.bias", "3.block.1.running_mean",
        "3.block.1.running_var", "3.block.1.num_batches_tracked",
        "5.weight", "5.bias",
    ]


def test_load_state_dict_strict_names_every_problem_in_one_message():
    src, dst = _bn_net(0), _bn_net(1)
    before = dst.state_dict()
    state = src.state_dict()
    del state["0.bias"]
    state["9.weight"] = np.zeros(3, np.float32)
    state["5.weight"] = state["5.weight"][:2]
    with pytest.raises(ValueError) as info:
        dst.load_state_dict(state)
    msg = str(info.value)
    assert "Sequential.load_state_dict" in msg
    assert "missing ['0.bias']" in msg
    assert "unexpected ['9.weight']" in msg
    assert "'5.weight' must have shape (3, 100), got shape (2, 100)" in msg
    for k, v in dst.state_dict().items():  # unchanged
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_load_state_dict_non_strict_returns_the_keys_like_torch():
    src, dst = _bn_net(0), _bn_net(1)
    state = src.state_dict()
    del state["1.running_var"], state["5.bias"]
    state["extra"] = np.ones(2, np.float32)
    keep_var, keep_bias = dst.state_dict()["1.running_var"], dst.state_dict()["5.bias"]
    result = dst.load_state_dict(state, strict=False)
    assert result == (["1.running_var", "5.bias"], ["extra"])
    assert result.missing_keys == ["1.running_var", "5.bias"]
    assert result.unexpected_keys == ["extra"]
    got = dst.state_dict()
    np.testing.assert_array_equal(got["1.running_var"], keep_var)
    np.testing.assert_array_equal(got["5.bias"], keep_bias)
    np.testing.assert_array_equal(got["0.weight"], src.state_dict()["0.weight"])
    assert dst.load_state_dict(src.state_dict()) == ([], [])
    # A wrong shape is an error even when not strict (as in PyTorch)
    state = src.state_dict()
    state["0.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"'0.bias' must have shape \(4,\)"):
        dst.load_state_dict(state, strict=False)
    with pytest.raises(TypeError, match="strict"):
        dst.load_state_dict(state, strict="no")


def test_load_state_dict_converts_dtypes_and_rejects_other_kinds():
    src = _bn_net(0, np.float64)
    dst = _bn_net(1, np.float32)
    state = src.state_dict()
    state["1.num_batches_tracked"] = np.array(7, np.int32)
    dst.load_state_dict(state)
    got = dst.state_dict()
    assert got["0.weight"].dtype == np.float32 and got["1.num_batches_tracked"].dtype == np.int64
    np.testing.assert_array_equal(got["0.weight"], state["0.weight"].astype(np.float32))
    assert int(got["1.num_batches_tracked"]) == 7
    # lists are arrays too
    state = {k: v.tolist() for k, v in src.state_dict().items()}
    dst.load_state_dict(state)
    before = dst.state_dict()
    for key, bad, what in [("0.weight", np.zeros((4, 2, 3, 3), bool), "real numbers"),
                           ("0.bias", np.zeros(4, complex), "real numbers"),
                           ("0.bias", np.array(["a"] * 4), "real numbers"),
                           ("1.num_batches_tracked", np.array(1.5), "integers")]:
        state = src.state_dict()
        state[key] = bad
        with pytest.raises(TypeError, match=f"'{key}' must hold {what}"):
            dst.load_state_dict(state)
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_files_saved_in_the_previous_key_order_still_load(tmp_path):
    """Before, containers saved all parameters, then all buffers; the archive's
    order never mattered, and still does not."""
    model = _bn_net(0)
    model.train()
    model(np.random.default_rng(0).standard_normal((3, 2, 5, 5)))
    state = model.state_dict()
    old_order = ([k for k in state if k in model.params]
                 + [k for k in state if k not in model.params])
    assert old_order != list(state)
    path = tmp_path / "old.npz"
    np.savez(path, **{k: state[k] for k in old_order})
    with zipfile.ZipFile(path) as z:
        assert [n[:-4] for n in z.namelist()] == old_order
    other = _bn_net(1)
    other.load(path)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)


# --------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _torch_dtype(torch, dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def _run_torch(tmodel, x):
    import torch

    with torch.no_grad():
        return tmodel(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _every_layer_torch(torch, dtype):
    """A torch.nn.Sequential of every layer with a cnnext twin (two branches:
    2-D images and 1-D signals)."""
    tnn = torch.nn
    torch.manual_seed(0)
    images = tnn.Sequential(
        tnn.Conv2d(3, 6, (3, 2), stride=(1, 2), padding=1, dilation=(2, 1), groups=3),
        tnn.BatchNorm2d(6),
        tnn.LeakyReLU(0.1),
        tnn.MaxPool2d(3, 2, 1, dilation=1, ceil_mode=True),
        tnn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, bias=False),
        tnn.Sigmoid(),
        tnn.AvgPool2d(2, 1, 1, ceil_mode=True, count_include_pad=False),
        tnn.Conv2d(4, 4, 3, padding="same"),
        tnn.Tanh(),
        tnn.AvgPool2d(3, 2, 1, divisor_override=7),
        tnn.AdaptiveMaxPool2d((2, 2)),
        tnn.AdaptiveAvgPool2d(1),
        tnn.Flatten(),
        tnn.Dropout(0.3),
        tnn.Linear(4, 5),
        tnn.BatchNorm1d(5, momentum=None),
        tnn.Identity(),
        tnn.ReLU(),
        tnn.Linear(5, 3, bias=False),
        tnn.Softmax(dim=1),
    )
    signals = tnn.Sequential(
        tnn.Conv1d(2, 4, 3, padding=2, dilation=2),
        tnn.BatchNorm1d(4, affine=False),
        tnn.MaxPool1d(3, 2, 1, dilation=2),
        tnn.AvgPool1d(2, ceil_mode=True),
        tnn.Conv1d(4, 3, 1, bias=False),
    )
    return images.to(_torch_dtype(torch, dtype)), signals.to(_torch_dtype(torch, dtype))


def _train_torch_stats(torch, tmodel, x):
    """A few training-mode forwards, so the running statistics are not the defaults."""
    tmodel.train()
    with torch.no_grad():
        for k in range(3):
            tmodel(torch.from_numpy(x * (k + 1)))
    tmodel.eval()


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_state_dict_both_ways_and_conversion(torch, dtype):
    rng = np.random.default_rng(RNG_SEED)
    images, signals = _every_layer_torch(torch, dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for tmodel, shape in ((images, (4, 3, 9, 10)), (signals, (3, 2, 17))):
        x = rng.standard_normal(shape).astype(dtype)
        _train_torch_stats(torch, tmodel, x)
        model = interop.from_torch(tmodel)
        assert not model.training
        torch_state = {k: v.numpy() for k, v in tmodel.state_dict().items()}
        assert list(model.state_dict()) == list(torch_state)
        for k, v in model.state_dict().items():
            assert v.shape == torch_state[k].shape and v.dtype == torch_state[k].dtype, k
            np.testing.assert_array_equal(v, torch_state[k], err_msg=k)
        assert _rel(model(x), _run_torch(tmodel, x)) <= rtol
        # A fresh cnnext model loads the torch state (tensors as they are, too)
        fresh = interop.from_torch(_every_layer_torch(torch, dtype)[shape == (3, 2, 17)])
        fresh.load_state_dict(tmodel.state_dict())
        assert _rel(fresh.eval()(x), _run_torch(tmodel, x)) <= rtol
        # ... and back: cnnext -> torch via to_torch, and via load_state_dict
        twin = interop.to_torch(model)
        assert list(twin.state_dict()) == list(torch_state)
        assert _rel(_run_torch(twin, x), model(x)) <= rtol
        tfresh = _every_layer_torch(torch, dtype)[shape == (3, 2, 17)]
        tfresh.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        assert _rel(_run_torch(tfresh.eval(), x), model(x)) <= rtol


@pytest.mark.torch
def test_training_mode_carries_over(torch):
    rng = np.random.default_rng(1)
    images, _ = _every_layer_torch(torch, np.float64)
    images = torch.nn.Sequential(*list(images)[:4])  # no dropout: deterministic
    x = rng.standard_normal((4, 3, 9, 10))
    model = interop.from_torch(images.train())
    assert model.training
    np.testing.assert_allclose(model(x), _run_torch(images, x), rtol=1e-12, atol=1e-12)
    for k, v in images.state_dict().items():  # both updated their running stats alike
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-12, err_msg=k)
    assert interop.to_torch(model).training
    assert not interop.to_torch(model.eval()).training


def _torchvision_blocks(torch):
    """torchvision's BasicBlock and Bottleneck, as torchvision writes them
    (torchvision is not a test dependency)."""
    tnn = torch.nn

    def conv3x3(cin, cout, stride=1):
        return tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)

    class BasicBlock(tnn.Module):
        def __init__(self, cin, cout, stride=1, downsample=None):
            super().__init__()
            self.conv1 = conv3x3(cin, cout, stride)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = conv3x3(cout, cout)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(out + identity)

    class Bottleneck(tnn.Module):
        def __init__(self, cin, width, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(width)
            self.conv2 = conv3x3(width, width, stride)
            self.bn2 = tnn.BatchNorm2d(width)
            self.conv3 = tnn.Conv2d(width, width * 4, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(width * 4)
            self.relu = tnn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(out + identity)

    return BasicBlock, Bottleneck


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torchvision_style_residual_blocks(torch, dtype):
    tnn = torch.nn
    BasicBlock, Bottleneck = _torchvision_blocks(torch)
    torch.manual_seed(3)
    down = tnn.Sequential(tnn.Conv2d(8, 16, 1, 2, bias=False), tnn.BatchNorm2d(16))
    tmodel = tnn.Sequential(
        tnn.Conv2d(3, 8, 3, padding=1, bias=False), tnn.BatchNorm2d(8), tnn.ReLU(),
        BasicBlock(8, 8), BasicBlock(8, 16, 2, down),
        Bottleneck(16, 4), Bottleneck(16, 8, 2, tnn.Sequential(
            tnn.Conv2d(16, 32, 1, 2, bias=False), tnn.BatchNorm2d(32))),
        tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(32, 10),
    ).to(_torch_dtype(torch, dtype))
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 11)).astype(dtype)
    _train_torch_stats(torch, tmodel, x)
    model = interop.from_torch(tmodel)
    res = model[3][0]
    assert isinstance(res, nn.Residual) and res.shortcut is None
    assert isinstance(model[4][0].shortcut, nn.Sequential)
    assert len(model[5][0].block) == 8
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert _rel(model(x), _run_torch(tmodel, x)) <= rtol
    assert _rel(_run_torch(interop.to_torch(model), x), model(x)) <= rtol


@pytest.mark.torch
@pytest.mark.parametrize("make", [models.lenet5, models.resnet8, models.mobilenet_small])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trips_through_pytorch(torch, make, dtype):
    """cnnext -> PyTorch (to_torch), and PyTorch -> state_dict -> cnnext."""
    rng = np.random.default_rng(4)
    model = make(seed=5, dtype=dtype)
    x = rng.standard_normal((6, 1, 28, 28)).astype(dtype)
    for k in range(2):  # running statistics away from their defaults
        model(x * (k + 1))
    model.eval()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    ref = model(x)
    twin = interop.to_torch(model)
    assert not twin.training
    assert _rel(_run_torch(twin, x), ref) <= rtol
    # PyTorch -> state_dict -> a fresh cnnext model of the same architecture
    with torch.no_grad():  # change the weights in PyTorch, as training would
        for p in twin.parameters():
            p.mul_(1.25)
    fresh = make(seed=6, dtype=dtype).eval()
    fresh.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    assert _rel(fresh(x), _run_torch(twin, x)) <= rtol
    assert _rel(interop.from_torch(twin)(x), _run_torch(twin, x)) <= rtol


@pytest.mark.torch
def test_unsupported_modules_are_named(torch):
    tnn = torch.nn
    cases = [
        (tnn.Sequential(tnn.Linear(2, 2), tnn.Sequential(tnn.ReLU(), tnn.GELU())),
         r"module\.1\.1 \(GELU\) has no cnnext counterpart"),
        (tnn.Sequential(tnn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
         r"module\.0 \(Conv2d\) has padding_mode='reflect'"),
        (tnn.Sequential(tnn.MaxPool2d(2, return_indices=True)), r"return_indices"),
        (tnn.Sequential(tnn.Flatten(0)), r"start_dim=0"),
        (tnn.Sequential(tnn.Linear(2, 2).half()), r"float16"),
        (tnn.Sequential(tnn.Softmax()), r"dim=None"),
        (tnn.LSTM(2, 2), r"module \(LSTM\)"),
    ]
    for m, match in cases:
        with pytest.raises(TypeError, match=match):
            interop.from_torch(m)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        interop.from_torch(nn.ReLU())
    with pytest.raises(TypeError, match=r"model\.1 \(MaxUnpool2D\) has no PyTorch twin"):
        interop.to_torch(nn.Sequential(nn.ReLU(), nn.MaxUnpool2D(2)))
    with pytest.raises(TypeError, match="cnnext.nn.Module"):
        interop.to_torch(tnn.ReLU())


def test_interop_needs_torch_only_when_called(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs PyTorch"):
        interop.to_torch(nn.ReLU())
    with pytest.raises(ImportError, match="needs PyTorch"):
        interop.from_torch(object())


def test_worked_example_script(tmp_path):
    """examples/pytorch_onnx.py (the documentation's worked example) runs and
    both engines agree."""
    import importlib.util
    from pathlib import Path

    for peer in ("torch", "onnx", "onnxruntime"):
        pytest.importorskip(peer)
    path = Path(__file__).resolve().parent.parent / "examples" / "pytorch_onnx.py"
    if not path.exists():
        pytest.skip("the examples are not shipped with this copy of the tests")
    spec = importlib.util.spec_from_file_location("pytorch_onnx_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    from_torch_err, onnx_err = example.main(["--out", str(tmp_path), "--seed", "1"])
    assert from_torch_err <= 1e-5 and onnx_err <= 1e-5
    assert (tmp_path / "resnet8.onnx").is_file()


def test_onnx_is_needed_only_by_export(monkeypatch, tmp_path):
    import sys

    from cnnext.onnx import export

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "cnnext\[onnx\]"'):
        export(nn.ReLU(), tmp_path / "m.onnx", (1, 2))
