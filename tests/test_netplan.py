"""Whole-network plans (cnnext.nn.plan): planned vs layer-by-layer, bit for
bit, for every layer type, both dtypes, training and inference; the fused
activation epilogues of the kernels; invalidation; no aliasing."""

import copy
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import cnnext
from cnnext import _conv, _gemm, models, nn, optim
from cnnext import functional as F
from cnnext.train import evaluate, fit, predict

DTYPES = (np.float32, np.float64)


# ---- the models: every layer type ------------------------------------------


def _fused(dt, rng):
    """Conv2D/Dense followed by ReLU and LeakyReLU (fused), max pools, Flatten."""
    return nn.Sequential(
        nn.Conv2D(2, 5, (2, 3), padding=1, dtype=dt, seed=rng), nn.ReLU(),
        nn.MaxPool2D(2), nn.Conv2D(5, 4, 3, stride=2, bias=False, dtype=dt, seed=rng),
        nn.LeakyReLU(0.1), nn.Flatten(), nn.Dense(4 * 2 * 1, 7, dtype=dt, seed=rng),
        nn.LeakyReLU(0.2), nn.Dense(7, 3, bias=False, dtype=dt, seed=rng),
    ), (3, 2, 11, 9)


def _grouped(dt, rng):
    """Grouped and depthwise convolutions, "same" padding with an even
    kernel, a negative slope (not fused in training), average pools."""
    return nn.Sequential(
        nn.Conv2D(4, 6, 3, padding=1, groups=2, dtype=dt, seed=rng), nn.LeakyReLU(-0.2),
        nn.Conv2D(6, 6, 3, groups=6, dtype=dt, seed=rng), nn.ReLU(),
        nn.Conv2D(6, 4, 2, padding="same", dtype=dt, seed=rng), nn.ReLU(),
        nn.AvgPool2D(2, ceil_mode=True), nn.AdaptiveAvgPool2D(1), nn.Flatten(),
        nn.Dense(4, 3, dtype=dt, seed=rng),
    ), (2, 4, 9, 8)


def _transposed(dt, rng):
    """Transposed convolution, adaptive max pool, batch norm, sigmoid, tanh,
    dropout, softmax."""
    return nn.Sequential(
        nn.ConvTranspose2D(3, 4, 3, stride=2, dtype=dt, seed=rng), nn.ReLU(),
        nn.AdaptiveMaxPool2D((3, 2)), nn.BatchNorm2D(4, dtype=dt), nn.Sigmoid(),
        nn.Flatten(), nn.Dropout(0.3, seed=rng), nn.Dense(24, 5, dtype=dt, seed=rng),
        nn.Tanh(), nn.Dense(5, 4, dtype=dt, seed=rng), nn.Softmax(),
    ), (4, 3, 5, 4)


def _one_d(dt, rng):
    """Conv1D, 1-D pools, BatchNorm1D, a nested Sequential, a ReLU first."""
    return nn.Sequential(
        nn.ReLU(), nn.Conv1D(3, 4, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(),
        nn.MaxPool1D(2), nn.AvgPool1D(2),
        nn.Sequential(nn.BatchNorm1D(4, dtype=dt), nn.Flatten(),
                      nn.Dense(12, 3, dtype=dt, seed=rng)),
    ), (5, 3, 13)


def _residual(dt, rng):
    """Residual blocks with and without projection, batch norm, identity."""
    return nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2D(4, 4, 3, padding=1, dtype=dt, seed=rng),
                                  nn.BatchNorm2D(4, dtype=dt), nn.ReLU())),
        nn.Residual(nn.Conv2D(4, 6, 3, stride=2, padding=1, dtype=dt, seed=rng),
                    nn.Sequential(nn.Conv2D(4, 6, 1, stride=2, dtype=dt, seed=rng))),
        nn.Identity(), nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Dense(6, 3, dtype=dt, seed=rng),
    ), (3, 1, 7, 7)


MODELS = {"fused": _fused, "grouped": _grouped, "transposed": _transposed, "one_d": _one_d,
          "residual": _residual}


def _pair(name, dt, seed=0):
    """Two equal models and the input shape."""
    a, shape = MODELS[name](dt, np.random.default_rng(seed))
    b, _ = MODELS[name](dt, np.random.default_rng(seed))
    return a, b, shape


def _state(model):
    return {**model.params, **{k: v.copy() for k, v in model.named_buffers()}}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- planned == layer by layer ---------------------------------------------


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_inference_equals_layers(name, dt):
    a, b, shape = _pair(name, dt)
    a.eval(), b.eval()
    rng = np.random.default_rng(1)
    plan = b.plan(shape)
    for _ in range(2):
        x = rng.standard_normal(shape).astype(dt)
        x[0].flat[0] = np.nan if name == "fused" else x[0].flat[0]  # NaN propagates alike
        np.testing.assert_array_equal(plan.forward(x), a.forward(x))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_step_equals_layers(name, dt, opt):
    a, b, shape = _pair(name, dt)
    make = (lambda m: optim.SGD(m, lr=0.05, momentum=0.9)) if opt == "sgd" else (
        lambda m: optim.Adam(m, lr=0.01))
    oa, ob = make(a), make(b)
    la, lb = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
    plan = b.plan(shape, training=True)
    _assert_same(_state(a), _state(b))  # planning changed nothing (running statistics)
    rng = np.random.default_rng(2)
    n_out = plan.out_shape[1]
    for _ in range(3):
        x = rng.standard_normal(shape).astype(dt)
        y = rng.integers(0, n_out, shape[0])
        oa.zero_grad()
        va = la.forward(a.forward(x), y)
        a.backward(la.backward(), input_grad=False)
        oa.step()
        vb = plan.train_step(x, y, lb, ob)
        assert va == vb
        _assert_same(_state(a), _state(b))
        _assert_same(a.grads, b.grads)
        np.testing.assert_array_equal(la.backward(), lb.backward())


@pytest.mark.parametrize("dt", DTYPES)
def test_training_step_generic_loss(dt):
    """A loss other than SoftmaxCrossEntropy runs through its own forward/backward."""
    a, b, shape = _pair("fused", dt)
    oa, ob = optim.SGD(a, lr=0.1), optim.SGD(b, lr=0.1)
    la, lb = nn.MSELoss(), nn.MSELoss()
    rng = np.random.default_rng(3)
    plan = b.plan(shape, training=True)
    for _ in range(2):
        x = rng.standard_normal(shape).astype(dt)
        t = rng.standard_normal((shape[0], 3)).astype(dt)
        oa.zero_grad()
        va = la.forward(a.forward(x), t)
        a.backward(la.backward(), input_grad=False)
        oa.step()
        assert plan.train_step(x, t, lb, ob) == va
        _assert_same(a.params, b.params)


def test_lenet5_and_resnet8_equal_layers():
    for make, shape in ((models.lenet5, (2, 1, 28, 28)), (models.resnet8, (2, 1, 12, 12))):
        a, b = make(seed=0), make(seed=0)
        oa, ob = optim.Adam(a), optim.Adam(b)
        x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
        y = np.array([1, 7])
        l1, l2 = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
        oa.zero_grad()
        l1.forward(a.forward(x), y)
        a.backward(l1.backward(), input_grad=False)
        oa.step()
        b.plan(shape).train_step(x, y, l2, ob)
        _assert_same(_state(a), _state(b))
        a.eval(), b.eval()
        np.testing.assert_array_equal(b.plan(shape).forward(x), a.forward(x))


def test_fit_evaluate_predict_equal_layers(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 2, 11, 9)).astype(np.float32)
    y = rng.integers(0, 3, 37)
    a, b, _ = _pair("fused", np.float32)
    ha = _fit_layered(a, x, y)
    hb = fit(b, nn.SoftmaxCrossEntropy(), optim.SGD(b, lr=0.1), x, y, epochs=2, batch_size=8,
             seed=0, progress=False)
    assert ha == hb["loss"]
    _assert_same(a.params, b.params)
    assert b.__dict__["_netplans"]  # the planned path ran
    assert b.training
    a.eval()
    np.testing.assert_array_equal(predict(b, x, batch_size=10), a.forward(x))
    assert b.training
    r = evaluate(b, nn.SoftmaxCrossEntropy(), x, y, batch_size=10)
    ref = sum(nn.SoftmaxCrossEntropy().forward(a.forward(x[i:i + 10]), y[i:i + 10])
              * len(y[i:i + 10]) for i in range(0, 37, 10)) / 37
    assert r["loss"] == ref


def _fit_layered(model, x, y):
    """fit's loop, layer by layer: the mean loss of each of 2 epochs."""
    loss, opt = nn.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.1)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(2):
        order = rng.permutation(len(x))
        total = 0.0
        for s in range(0, len(x), 8):
            idx = order[s:s + 8]
            opt.zero_grad()
            total += float(loss.forward(model.forward(x[idx]), y[idx])) * len(idx)
            model.backward(loss.backward(), input_grad=False)
            opt.step()
        out.append(total / len(x))
    return out


def test_predict_layer_by_layer_for_other_models():
    model = nn.Sequential(nn.ReLU())  # no parameters: the input's dtype is kept
    x = np.array([[-1.0, 2.0]])
    out = predict(model, x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.0, 2.0]])
    assert "_netplans" not in model.__dict__
    with pytest.raises(ValueError, match="predict: batch_size"):
        predict(model, x, batch_size=0)


# ---- fused epilogues in the kernels ------------------------------------------


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("geom", [
    ((2, 3, 9, 31), (5, 3, 3, 3), (1, 1), (1, 1), (1, 1)),    # long rows
    ((1, 2, 7, 5), (9, 2, 2, 3), (2, 3), (0, 1), (1, 1)),     # strided, few columns
    ((3, 1, 28, 28), (6, 1, 5, 5), (1, 1), (2, 2), (1, 1)),   # LeNet's first layer
    ((2, 4, 11, 13), (4, 4, 3, 3), (1, 2), (1, 0), (2, 1)),   # dilated
])
@pytest.mark.parametrize("act,alpha", [(1, 0.0), (2, 0.1), (2, -0.3), (2, 0.0)])
def test_conv_epilogue_equals_activation(dt, geom, act, alpha):
    xs, ws, s, p, d = geom
    rng = np.random.default_rng(6)
    x = rng.standard_normal(xs).astype(dt)
    x[0, 0, 0, :3] = [np.nan, -0.0, np.inf]
    w = rng.standard_normal(ws).astype(dt)
    b = rng.standard_normal(ws[0]).astype(dt)
    ref = F.conv2d(x, w, b, s, p, d)
    want = F.relu(ref) if act == 1 else F.leaky_relu(ref, alpha)
    out = np.empty_like(ref)
    for threads in (1, 2):
        _conv.conv2d_forward(x, w, b, out, *s, *p, *d, threads, 1, act, alpha)
        np.testing.assert_array_equal(out, want)
        assert (np.signbit(out) == np.signbit(want)).all()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m", [1, 5, 70])
@pytest.mark.parametrize("act,alpha", [(0, 0.0), (1, 0.0), (2, 0.01)])
def test_gemm_epilogue_equals_activation(dt, m, act, alpha):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((m, 33)).astype(dt)
    w = rng.standard_normal((19, 33)).astype(dt)
    b = rng.standard_normal(19).astype(dt)
    ref = F.linear(x, w, b)
    want = ref if act == 0 else F.relu(ref) if act == 1 else F.leaky_relu(ref, alpha)
    out = np.empty_like(ref)
    _gemm.gemm(x, w, out, False, True, False, 2, b, act, alpha)
    np.testing.assert_array_equal(out, want)


_EPILOGUE_SCRIPT = """
import itertools
import numpy as np
from cnnext import _conv, _gemm
from cnnext import functional as F
rng = np.random.default_rng(9)
# 37 and 21 columns: full vectors and a scalar tail of every variant's width,
# 20 channels in three 7-row panels,
# stored from result-row tiles (few taps) and from padded-width tiles (many)
for dt, (xs, ws) in itertools.product((np.float32, np.float64), (
        ((2, 3, 9, 37), (20, 3, 3, 3)), ((1, 16, 5, 21), (6, 16, 3, 3)))):
    x = rng.standard_normal(xs).astype(dt)
    x[0, 0, 0, :3] = [np.nan, -0.0, np.inf]
    w = rng.standard_normal(ws).astype(dt)
    b = rng.standard_normal(ws[0]).astype(dt)
    ref = F.conv2d(x, w, b, 1, 1)
    for act, alpha in ((1, 0.0), (2, 0.1), (2, -0.3)):
        want = F.relu(ref) if act == 1 else F.leaky_relu(ref, alpha)
        out = np.empty_like(ref)
        _conv.conv2d_forward(x, w, b, out, 1, 1, 1, 1, 1, 1, 1, 1, act, alpha)
        assert (out.view(np.uint8) == want.view(np.uint8)).all(), (dt, act)
print(_gemm.isa())
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_epilogue_in_every_kernel_variant(isa, tmp_path):
    """CNNEXT_ISA selects each compiled epilogue the CPU supports: each gives
    the activation's exact bits (NaN, -0.0 and inf included)."""
    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(_gemm.isa()):
        pytest.skip(f"this CPU runs {_gemm.isa()}, not {isa}")
    proc = subprocess.run([sys.executable, "-c", _EPILOGUE_SCRIPT], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, CNNEXT_ISA=isa))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [isa]


# ---- invalidation ------------------------------------------------------------


def _planned():
    model, _, shape = _pair("fused", np.float32)
    model.eval()
    return model, model.plan(shape), np.random.default_rng(8).standard_normal(shape)


def test_plan_is_kept_while_valid():
    model, plan, x = _planned()
    assert plan.valid and model.plan(x.shape) is plan
    assert plan._calls is not None  # every step one prebound kernel call
    from cnnext import _pool

    first = "ConvPoolStep" if _pool.pool_isa() == "avx512" else "WeightedStep, MaxPoolStep"
    assert f"steps=[{first}, WeightedStep, FlattenStep" in repr(plan)


def test_in_place_updates_keep_the_plan():
    model, plan, x = _planned()
    model.load_state_dict({k: v * 2 for k, v in model.state_dict().items()})
    assert plan.valid
    np.testing.assert_array_equal(plan.forward(x), model.forward(x))


@pytest.mark.parametrize("change", ["param", "grad", "dtype", "append", "replace_layer",
                                    "mode", "layer_mode", "threads", "backend", "residual",
                                    "algorithm"])
def test_model_changes_invalidate(change):
    model, plan, x = _planned()
    conv = model[0]
    if change == "param":
        conv.params["weight"] = conv.weight * 3
    elif change == "grad":  # (a training plan's: inference uses no gradient)
        plan = model.train().plan(x.shape, training=True)
        conv._grads["weight"] = np.zeros_like(conv.weight)
        assert model.eval().plan(x.shape).valid
        model.train()
    elif change == "dtype":
        for k in ("weight", "bias"):
            conv.params[k] = conv.params[k].astype(np.float64)
        conv.dtype = np.dtype(np.float64)
    elif change == "append":
        model.layers.append(nn.ReLU())
    elif change == "replace_layer":
        model.layers[1] = nn.LeakyReLU(0.5)
    elif change == "mode":
        model.train()
    elif change == "layer_mode":  # a layer whose results depend on the mode
        model[6].training = True  # a Dense: they do not
        assert plan.valid
        model, _, shape = _pair("transposed", np.float32)
        model.eval()
        plan, x = model.plan(shape), np.zeros(shape)
        model[3].training = True  # the BatchNorm2D
    elif change == "residual":
        model, _, shape = _pair("residual", np.float32)
        model.eval()
        plan, x = model.plan(shape), np.zeros(shape)
        model[2].block = nn.Sequential(nn.Identity())
    if change == "threads":
        n = cnnext.get_num_threads()
        cnnext.set_num_threads(n % 2 + 1)
        try:
            assert not plan.valid
        finally:
            cnnext.set_num_threads(n)
        assert plan.valid
        return
    if change == "algorithm":
        with cnnext.use_conv_algorithm("winograd"):
            assert not plan.valid
        assert plan.valid
        return
    if change == "backend":
        with cnnext.use_backend("numpy"):
            assert not plan.valid
        assert plan.valid
        return
    assert not plan.valid
    with pytest.raises(RuntimeError, match="NetPlan.forward: the model changed"):
        plan.forward(x)
    if change in ("mode", "layer_mode", "grad"):
        return
    if change == "dtype":
        with pytest.raises(ValueError, match="Sequential.plan: layer 0"):
            model.plan(x.shape, dtype=np.float32)
        return
    new = model.eval().plan(x.shape)  # (new layers start in training mode)
    assert new is not plan and new.valid
    np.testing.assert_array_equal(new.forward(x), model.forward(x.astype(np.float32)))


# ---- arguments and aliasing ---------------------------------------------------


def test_outputs_and_inputs_are_never_aliased():
    model, plan, x = _planned()
    x = x.astype(np.float32)
    y1 = plan.forward(x)
    keep = y1.copy()
    y2 = plan.forward(x)
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    y2[...] = 123
    np.testing.assert_array_equal(plan.forward(x), keep)
    x[...] = 0  # the caller's later writes change nothing kept
    np.testing.assert_array_equal(plan.forward(x), model.forward(x))
    np.testing.assert_array_equal(y1, keep)


def test_training_step_keeps_no_caller_array():
    model, _, shape = _pair("fused", np.float32)
    plan = model.plan(shape, training=True)
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal(shape).astype(np.float32), np.array([0, 1, 2])
    loss, opt = nn.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.1)
    plan.train_step(x, y, loss, opt)
    before = copy.deepcopy(model.state_dict())
    x[...] = 7
    y[...] = 0
    _assert_same(model.state_dict(), before)


def test_input_conversion_and_errors():
    model, plan, x = _planned()
    ref = model.forward(x.astype(np.float32))
    np.testing.assert_array_equal(plan.forward(x), ref)                  # float64 -> float32
    np.testing.assert_array_equal(plan.forward(np.asfortranarray(x)), ref)
    np.testing.assert_array_equal(plan.forward(x.tolist()), ref)
    ro = x.astype(np.float32)
    ro.flags.writeable = False
    np.testing.assert_array_equal(plan.forward(ro), ref)
    with pytest.raises(ValueError, match=r"NetPlan.forward: x.shape must be \(3, 2, 11, 9\)"):
        plan.forward(x[:2])
    with pytest.raises(TypeError, match="NetPlan.forward"):
        plan.forward(np.zeros(x.shape, complex))
    with pytest.raises(RuntimeError, match="made for inference"):
        plan.train_step(x, np.zeros(3, np.int64), nn.SoftmaxCrossEntropy(), optim.SGD(model,
                                                                                       lr=1))
    with pytest.raises(ValueError, match="Sequential.plan: training=True but the model is in "
                                         "evaluation mode"):
        model.plan(x.shape, training=True)
    with pytest.raises(ValueError, match="Sequential.plan: input_shape"):
        model.plan((3, -2, 11, 9))
    with pytest.raises(ValueError, match="Conv2D"):
        model.plan((3, 5, 11, 9))  # the layer's own message: in_channels


def test_bad_labels_in_a_training_step():
    model, _, shape = _pair("fused", np.float32)
    plan = model.plan(shape, training=True)
    x = np.zeros(shape, np.float32)
    opt = optim.SGD(model, lr=0.1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        plan.train_step(x, np.array([0, 1, 3]), nn.SoftmaxCrossEntropy(), opt)


def test_numpy_backend_has_no_plans():
    model, _, shape = _pair("fused", np.float32)
    with cnnext.use_backend("numpy"), pytest.raises(RuntimeError, match="compiled backend"):
        model.plan(shape)


# ---- bench rows ----------------------------------------------------------------


def test_bench_rows_skip_absent_peers(monkeypatch):
    from cnnext import bench
    from cnnext.bench import netplan_rows

    monkeypatch.setattr(netplan_rows, "_optional", lambda name: None)
    rows = bench.run_small_calls("seed-step-plan,lenet5-infer-b1", quick=True, torch=None,
                                 threads=1, progress=False)
    assert [r["case"] for r in rows] == ["lenet5-infer-b1", "seed-step-plan"]
    assert rows[0]["onnxruntime"]["status"] == "not installed (onnxruntime, an optional " \
                                               "benchmark peer)"
    assert rows[1]["jax"]["status"].startswith("not installed (jax")
    assert rows[1]["cnnext"]["median"] > 0 and rows[1]["ratio_jax"] is None
    text = bench.format_small_calls(rows)
    assert "cnnext/ONNX Runtime" in text and "cnnext/JAX" in text


def test_bench_jax_peer_trains_like_cnnext():
    """The JAX peer (when installed) computes the same SGD step."""
    pytest.importorskip("jax")
    from cnnext.bench.netplan_rows import NETPLAN_BUILDERS

    peers = NETPLAN_BUILDERS["seed-step-plan"](np.dtype(np.float32),
                                               np.random.default_rng(0), None)
    after_one = peers["jax"].state()  # the peer ran one step when it compiled
    peers["cnnext"].fn()
    mine = peers["cnnext"].state()
    assert after_one.keys() == mine.keys()
    for k in mine:
        np.testing.assert_allclose(after_one[k], mine[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_layers_that_change_the_dtype():
    """A parameter-free model keeps float64 through float32 layers' outputs
    as the layers do; a Dense converts what it receives to its dtype."""
    rng = np.random.default_rng(10)
    a = nn.Sequential(nn.Dense(3, 4, seed=0), nn.Sigmoid(), nn.Dense(4, 2, dtype=np.float32,
                                                                     seed=1)).eval()
    x = rng.standard_normal((2, 3))
    plan = a.plan((2, 3))
    np.testing.assert_array_equal(plan.forward(x), a.forward(x))
    b = nn.Sequential(nn.ReLU(), nn.Tanh()).eval()
    plan = b.plan((2, 3), dtype=np.float64)
    out = plan.forward(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, b.forward(x))


def test_copies_and_pickles_of_a_planned_model_plan_afresh():
    import pickle

    model, plan, x = _planned()
    ref = plan.forward(x)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not other.__dict__["_netplans"]
        np.testing.assert_array_equal(other.plan(x.shape).forward(x), ref)
    assert model.plan(x.shape) is plan


def test_empty_batch_and_unbatched_input():
    model = models.lenet5(seed=0).eval()
    assert model.plan((0, 1, 28, 28)).forward(np.zeros((0, 1, 28, 28))).shape == (0, 10)
    model.train()
    plan = model.plan((0, 1, 28, 28), training=True)
    assert plan.train_step(np.zeros((0, 1, 28, 28)), np.zeros(0, np.int64),
                           nn.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.1)) == 0.0
    rng = np.random.default_rng(11)
    conv = nn.Sequential(nn.Conv2D(1, 2, 3, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
                         nn.Flatten(), nn.Dense(169, 3, seed=rng)).eval()
    x = rng.standard_normal((1, 28, 28)).astype(np.float32)  # (C, H, W): Flatten keeps C
    np.testing.assert_array_equal(conv.plan(x.shape).forward(x), conv.forward(x))


def test_subclasses_run_their_own_forward():
    class Doubled(nn.Dense):
        def forward(self, x):
            return 2 * super().forward(x)

        def backward(self, grad_y, input_grad=True):
            return super().backward(2 * np.asarray(grad_y), input_grad)

    def make():
        rng = np.random.default_rng(12)
        return nn.Sequential(nn.Dense(3, 4, seed=rng), nn.ReLU(), Doubled(4, 2, seed=rng))

    a, b = make(), make()
    x = np.random.default_rng(13).standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1])
    oa, ob = optim.SGD(a, lr=0.1), optim.SGD(b, lr=0.1)
    la, lb = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
    oa.zero_grad()
    va = la.forward(a.forward(x), y)
    a.backward(la.backward(), input_grad=False)
    oa.step()
    assert b.plan(x.shape).train_step(x, y, lb, ob) == va
    _assert_same(a.params, b.params)
    a.eval(), b.eval()
    np.testing.assert_array_equal(b.plan(x.shape).forward(x), a.forward(x))


@pytest.mark.parametrize("training", [False, True])
def test_winograd_convolutions_equal_layers(training):
    """A convolution whose plan is not the direct kernel (here Winograd's) gets
    its activation as a separate pass: the same numbers."""
    with cnnext.use_conv_algorithm("winograd"):
        a, b, shape = _pair("residual", np.float32)
        x = np.random.default_rng(14).standard_normal(shape).astype(np.float32)
        if not training:
            a.eval(), b.eval()
            np.testing.assert_array_equal(b.plan(shape).forward(x), a.forward(x))
            return
        y = np.array([0, 2, 1])
        oa, ob = optim.SGD(a, lr=0.1), optim.SGD(b, lr=0.1)
        la, lb = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
        oa.zero_grad()
        va = la.forward(a.forward(x), y)
        a.backward(la.backward(), input_grad=False)
        oa.step()
        assert b.plan(shape).train_step(x, y, lb, ob) == va
        _assert_same(_state(a), _state(b))


def test_winograd_4x4_steps_equal_layers(restore_threads):
    """A convolution whose plan runs F(4x4, 3x3) (64 -> 64 channels on 16x16
    maps, one thread): a training step's forward, input gradient and weight
    gradient, and an inference step (its filters kept), are its plan's: the
    numbers of the layers."""
    cnnext.set_num_threads(1)

    def net():
        r = np.random.default_rng(3)
        return nn.Sequential(nn.Conv2D(64, 64, 3, padding=1, seed=r), nn.ReLU(),
                             nn.Conv2D(64, 64, 3, padding=1, seed=r), nn.Flatten(),
                             nn.Dense(64 * 16 * 16, 3, seed=r))

    a, b = net(), net()
    shape = (8, 64, 16, 16)
    tiles = [s.plan.winograd_tiles for s in b.plan(shape, training=True).steps
             if getattr(getattr(s, "plan", None), "method", None) == "winograd"]
    assert tiles == [(4, 4), (4, 4)]
    infer = _train_and_compare(a, b, shape, np.float32, steps=2)
    assert [s.tile for s in infer.steps if hasattr(s, "tile")] == [4, 4]


def _conv_train_net(dt, rng):
    """Convolutions whose input gradients a training step computes into kept
    buffers: stride phases (stride 1 and 2, 1x1) and Winograd (under
    use_conv_algorithm("winograd"), the 3x3 stride-1 ones)."""
    return nn.Sequential(
        nn.Conv2D(2, 4, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(),
        nn.Conv2D(4, 5, 3, padding=1, dtype=dt, seed=rng),
        nn.Conv2D(5, 6, 3, stride=2, padding=1, bias=False, dtype=dt, seed=rng), nn.ReLU(),
        nn.Conv2D(6, 4, 1, stride=2, dtype=dt, seed=rng),
        nn.Flatten(), nn.Dense(4 * 3 * 3, 3, dtype=dt, seed=rng),
    ), (3, 2, 10, 10)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
@pytest.mark.parametrize("change", ["none", "nan_input", "inf_weight"])
def test_conv_training_steps_with_kept_input_gradients_equal_layers(dt, algorithm, change):
    """Direct and Winograd convolutions in a training step write their input
    gradients into kept buffers: over several steps (the buffers reused) the
    same numbers as layer by layer, inf/NaN inputs and weights included (the
    plans' fallbacks)."""
    with cnnext.use_conv_algorithm(algorithm):
        a, shape = _conv_train_net(dt, np.random.default_rng(5))
        b, _ = _conv_train_net(dt, np.random.default_rng(5))
        plan = b.plan(shape, training=True)
        if algorithm == "winograd":
            methods = [s.plan.method for s in plan.steps if hasattr(s, "plan")]
            assert methods.count("winograd" if dt == np.float32 else "winograd-float64") == 2
        if change == "inf_weight":
            for m in (a, b):
                m.layers[2].params["weight"][1, 2, 0, 1] = np.inf
        oa, ob = optim.SGD(a, lr=0.01), optim.SGD(b, lr=0.01)
        la, lb = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
        rng = np.random.default_rng(6)
        for _ in range(3):
            x = rng.standard_normal(shape).astype(dt)
            if change == "nan_input":
                x[1, 0, 4, 5] = np.nan
            y = rng.integers(0, 3, shape[0])
            oa.zero_grad()
            va = la.forward(a.forward(x), y)
            a.backward(la.backward(), input_grad=False)
            oa.step()
            vb = plan.train_step(x, y, lb, ob)
            assert va == vb or (np.isnan(va) and np.isnan(vb))
            _assert_same(_state(a), _state(b))
            _assert_same(a.grads, b.grads)


# ---- planned batch norm and residual steps -----------------------------------


def _train_and_compare(a, b, shape, dt, steps=3, n_out=None, nan=False):
    """Adam steps layer by layer on ``a`` and planned on ``b``: losses, outputs,
    parameters, buffers (running statistics, batch counts) and gradients
    equal bit for bit; then the same for inference in evaluation mode."""
    oa, ob = optim.Adam(a, lr=0.01), optim.Adam(b, lr=0.01)
    la, lb = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
    plan = b.plan(shape, training=True)
    _assert_same(_state(a), _state(b))  # planning changed nothing
    rng = np.random.default_rng(21)
    n_out = plan.out_shape[1]
    for _ in range(steps):
        x = (3 * rng.standard_normal(shape) + 1).astype(dt)
        y = rng.integers(0, n_out, shape[0])
        oa.zero_grad()
        va = la.forward(a.forward(x), y)
        a.backward(la.backward(), input_grad=False)
        oa.step()
        assert plan.train_step(x, y, lb, ob) == va
        _assert_same(_state(a), _state(b))
        _assert_same(a.grads, b.grads)
    a.eval(), b.eval()
    plan = b.plan(shape)
    for _ in range(2):
        x = rng.standard_normal(shape).astype(dt)
        if nan:
            x[0].flat[:2] = [np.nan, -0.0]
        np.testing.assert_array_equal(plan.forward(x), a.forward(x))
    a.train(), b.train()
    return plan


def _bn_model(dt, rng, kind, relu, first, **bn):
    """A batch norm (kind "1d" on (N, C), "1d3" on (N, C, L), "2d"), a ReLU
    after it or not, first in the model (no input gradient) or after a
    layer with parameters."""
    BN = nn.BatchNorm2D if kind == "2d" else nn.BatchNorm1D
    C = 5
    head = [] if first else [
        nn.Dense(6, C, dtype=dt, seed=rng) if kind == "1d" else
        nn.Conv1D(3, C, 3, padding=1, dtype=dt, seed=rng) if kind == "1d3" else
        nn.Conv2D(3, C, 3, padding=1, dtype=dt, seed=rng)]
    shape = {"1d": (7, 6), "1d3": (4, 3, 9), "2d": (3, 3, 5, 7)}[kind]
    if first:
        shape = (shape[0], C, *shape[2:])
    size = C * math.prod(shape[2:])
    return nn.Sequential(*head, BN(C, dtype=dt, **bn), *([nn.ReLU()] if relu else []),
                         nn.Flatten(), nn.Dense(size, 3, dtype=dt, seed=rng)), shape


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("kind", ["1d", "1d3", "2d"])
@pytest.mark.parametrize("relu,first", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("bn", [{}, {"affine": False}, {"track_running_stats": False},
                                {"momentum": None}])
def test_batch_norm_steps_equal_layers(dt, kind, relu, first, bn):
    a, shape = _bn_model(dt, np.random.default_rng(0), kind, relu, first, **bn)
    b, _ = _bn_model(dt, np.random.default_rng(0), kind, relu, first, **bn)
    plan = _train_and_compare(a, b, shape, dt, nan=True)
    step = plan.steps[0 if first else 1]
    assert type(step).__name__ == "_BatchNormStep" and step.relu == relu
    names = [type(s).__name__ for s in plan.steps]
    assert ("_ActStep" in names) is False  # the ReLU is fused


def _block(dt, rng, c_in, c_out, stride, tail):
    """A residual branch: conv, BN, ReLU, conv, then ``tail`` ("bn": a batch
    norm; "conv": nothing more; "relu": a fused ReLU)."""
    layers = [nn.Conv2D(c_in, c_out, 3, stride=stride, padding=1, bias=False, dtype=dt,
                        seed=rng), nn.BatchNorm2D(c_out, dtype=dt), nn.ReLU(),
              nn.Conv2D(c_out, c_out, 3, padding=1, dtype=dt, seed=rng)]
    if tail == "bn":
        layers.append(nn.BatchNorm2D(c_out, dtype=dt))
    elif tail == "relu":
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _res_model(dt, rng, variant):
    C = 4
    stem = [nn.Conv2D(2, C, 3, padding=1, dtype=dt, seed=rng), nn.BatchNorm2D(C, dtype=dt),
            nn.ReLU()]
    after = [nn.ReLU()]
    if variant == "identity":          # mask into the block's BN and the final sum
        res = nn.Residual(_block(dt, rng, C, C, 1, "bn"))
    elif variant == "projection":      # mask into both branches' BNs
        res = nn.Residual(_block(dt, rng, C, 6, 2, "bn"), nn.Sequential(
            nn.Conv2D(C, 6, 1, stride=2, bias=False, dtype=dt, seed=rng),
            nn.BatchNorm2D(6, dtype=dt)))
    elif variant == "projection_32":   # strides (3, 2), a bias: the grid sum at odd strides
        res = nn.Residual(_block(dt, rng, C, 6, (3, 2), "bn"), nn.Sequential(
            nn.Conv2D(C, 6, 1, stride=(3, 2), dtype=dt, seed=rng),
            nn.BatchNorm2D(6, dtype=dt)))
    elif variant == "projection_conv":  # the shortcut is the strided 1x1 convolution alone
        res = nn.Residual(_block(dt, rng, C, 6, 2, "conv"),
                          nn.Conv2D(C, 6, 1, stride=2, bias=False, dtype=dt, seed=rng))
    elif variant == "no_relu":         # a plain sum
        res, after = nn.Residual(_block(dt, rng, C, C, 1, "bn")), []
    elif variant == "conv_tail":       # the mask computed once, for both branches
        res = nn.Residual(_block(dt, rng, C, C, 1, "conv"), nn.Identity())
    elif variant == "relu_tail":       # the block overwrites its upstream gradient
        res = nn.Residual(_block(dt, rng, C, C, 1, "relu"))
    elif variant == "leaky":           # a LeakyReLU after the sum: its own step
        res, after = nn.Residual(_block(dt, rng, C, C, 1, "bn")), [nn.LeakyReLU(0.1)]
    elif variant == "nested":          # a residual block inside a residual block
        inner = nn.Residual(_block(dt, rng, C, C, 1, "bn"))
        res = nn.Residual(nn.Sequential(inner, nn.ReLU(), nn.Conv2D(C, C, 1, dtype=dt,
                                                                    seed=rng),
                                        nn.BatchNorm2D(C, dtype=dt)))
    elif variant == "dropout":         # random draws in both branches from one generator:
        block = _block(dt, rng, C, C, 1, "bn")  # the branches keep their order
        block.layers.insert(3, nn.Dropout(0.5, seed=rng))
        res = nn.Residual(block, nn.Dropout(0.3, seed=rng))
    elif variant == "first":           # the first layer: no input gradient
        stem = []
        res = nn.Residual(_block(dt, rng, 2, C, 1, "bn"), nn.Sequential(
            nn.Conv2D(2, C, 1, bias=False, dtype=dt, seed=rng), nn.BatchNorm2D(C, dtype=dt)))
    return nn.Sequential(*stem, res, *after, nn.AdaptiveAvgPool2D(1), nn.Flatten(),
                         nn.Dense(6 if variant.startswith("projection") else C, 3, dtype=dt,
                                  seed=rng))


RESIDUALS = ["identity", "projection", "projection_32", "projection_conv", "no_relu",
             "conv_tail", "relu_tail", "leaky", "nested", "dropout", "first"]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("variant", RESIDUALS)
def test_residual_steps_equal_layers(dt, variant):
    a = _res_model(dt, np.random.default_rng(0), variant)
    b = _res_model(dt, np.random.default_rng(0), variant)
    shape = (3, 2, 7, 6)
    plan = _train_and_compare(a, b, shape, dt)
    plan = b.plan(shape, training=True)
    res = next(s for s in plan.steps if type(s).__name__ == "_ResidualStep")
    assert res.relu == (variant not in ("no_relu", "leaky"))
    assert res.masked == (variant in ("identity", "projection", "projection_32", "nested",
                                      "first"))
    assert (res.gm is not None) == (variant in ("conv_tail", "relu_tail", "dropout",
                                                "projection_conv"))
    # the strided 1x1 shortcut's input gradient added on its grid
    assert (res.strided is not None) == variant.startswith("projection")
    assert (res.gcopy is not None) == (variant == "relu_tail")
    # the sum (and ReLU) in the block's last batch norm pass
    assert (res.summing is not None) == (variant not in ("conv_tail", "relu_tail", "dropout",
                                                         "projection_conv"))
    if variant == "nested":
        assert type(res.block[0]).__name__ == "_ResidualStep" and res.block[0].relu


@pytest.mark.parametrize("dt", DTYPES)
def test_strided_shortcut_with_nonfinite_weight_equals_layers(dt):
    """A shortcut weight holding inf/NaN: the shortcut's own backward (which
    sums valid taps only) and the separate sum, as layer by layer."""
    a = _res_model(dt, np.random.default_rng(0), "projection")
    b = _res_model(dt, np.random.default_rng(0), "projection")
    for m in (a, b):
        m[3].shortcut[0].params["weight"][1, 2] = np.inf
    shape = (3, 2, 7, 6)
    oa, ob = optim.SGD(a, lr=0.1), optim.SGD(b, lr=0.1)
    la, lb = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
    x = np.random.default_rng(3).standard_normal(shape).astype(dt)
    y = np.array([0, 2, 1])
    oa.zero_grad()
    va = la.forward(a.forward(x), y)
    a.backward(la.backward(), input_grad=False)
    oa.step()
    vb = b.plan(shape, training=True).train_step(x, y, lb, ob)
    assert vb == va or np.isnan(va) and np.isnan(vb)
    _assert_same(a.grads, b.grads)
    _assert_same(_state(a), _state(b))


def test_rotated_input_gradient_into_kept_buffer_equals_layers():
    """A float64 convolution whose input gradient runs on the rotated kernel
    (many channels, stride 1) writes it into the step's kept buffer: the same
    bits as layer by layer, the buffer reused from step to step."""
    def make():
        rng = np.random.default_rng(4)
        return nn.Sequential(nn.Conv2D(3, 32, 3, padding=1, seed=rng, dtype=np.float64),
                             nn.ReLU(),
                             nn.Conv2D(32, 8, 3, padding=1, seed=rng, dtype=np.float64),
                             nn.ReLU(), nn.Flatten(),
                             nn.Dense(8 * 5 * 6, 3, seed=rng, dtype=np.float64))
    a, b = make(), make()
    shape = (2, 3, 5, 6)
    _train_and_compare(a, b, shape, np.float64, steps=3)
    plan = b.plan(shape, training=True)
    step = next(s for s in nn.plan._all_steps(plan.steps)
                if getattr(s, "layer", None) is b[2])
    assert step.plan.grad_input == "full-rotated" and step.kept_gi == (2, 32, 5, 6)
    kept = []
    for _ in range(2):
        plan.train_step(np.ones(shape), np.array([0, 1]), nn.SoftmaxCrossEntropy(),
                        optim.SGD(b, lr=0.1))
        kept.append(step.gx)
    assert kept[0] is not None and kept[0] is kept[1]


def test_resnet8_and_mobilenet_plans_use_the_fused_steps():
    for make, shape in ((models.resnet8, (4, 1, 12, 12)), (models.mobilenet_small,
                                                           (4, 1, 12, 12))):
        a, b = make(seed=0, dtype=np.float64), make(seed=0, dtype=np.float64)
        plan = _train_and_compare(a, b, shape, np.float64, steps=2)
        names = [type(s).__name__ for s in nn.plan._all_steps(plan.steps)]
        assert "_LayerStep" not in names[:-3] and "_ActStep" not in names, names


def test_batch_norm_mode_switch_invalidates_and_running_stats_are_read_each_call():
    model, _, shape = _pair("residual", np.float32)
    plan = model.plan(shape, training=True)
    bn = model[2].block[1]
    bn.training = False  # one layer's mode: the plan's batch norm step is stale
    assert not plan.valid
    model.eval()
    plan = model.plan(shape)
    x = np.random.default_rng(22).standard_normal(shape).astype(np.float32)
    before = plan.forward(x)
    bn.load_state_dict({"running_mean": np.full(4, 0.5, np.float32),
                        "running_var": np.full(4, 2.0, np.float32),
                        "num_batches_tracked": np.array(3), "weight": bn.weight,
                        "bias": bn.bias})
    assert plan.valid
    after = plan.forward(x)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, model.forward(x))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 37), (2, 3, 5, 7), (1, 1, 2, 1),
                                   (2, 3, 25, 23)])  # (long rows: channel by channel)
@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_kernels_equal_separate_relu(dt, shape, training):
    """batch_norm_forward(relu=True) == the ReLU of its output, and
    batch_norm_backward(ref=...) == its backward of the ReLU's backward (NaN,
    -0.0 and exact zeros included), with one and two threads; input_grad=False
    gives the same sums."""
    from cnnext import _eltwise, _norm

    rng = np.random.default_rng(23)
    N, C = shape[:2]
    x3 = rng.standard_normal(shape).astype(dt).reshape(N, C, -1)
    x3[0, 0, :1] = np.nan if C > 1 else x3[0, 0, :1]
    w, b = rng.standard_normal(C).astype(dt), rng.standard_normal(C).astype(dt)
    g = rng.standard_normal(x3.shape).astype(dt)
    for threads in (1, 2):
        mean, var = rng.random(C), rng.random(C) + 0.5
        m2, v2 = mean.copy(), var.copy()
        y = np.empty_like(x3)
        _norm.batch_norm_forward(x3, y, mean, var, w, b, 1e-5, training, threads)
        want = F.relu(y)
        fused = np.empty_like(x3)
        _norm.batch_norm_forward(x3, fused, m2, v2, w, b, 1e-5, training, threads, True)
        np.testing.assert_array_equal(m2, mean)
        np.testing.assert_array_equal(v2, var)
        assert (fused.view(np.uint8) == want.view(np.uint8)).all()  # NaN kept, no -0.0
        assert x3.size < 4 or ((fused == 0).any() and (fused > 0).any())  # both kinds
        invstd = 1 / np.sqrt(var + 1e-5)
        gm = np.empty_like(g)
        _eltwise.relu_backward(g.reshape(-1), fused.reshape(-1), gm.reshape(-1), 1)
        sums = [np.zeros(C) for _ in range(4)]
        gx_want, gx = np.empty_like(x3), np.empty_like(x3)
        _norm.batch_norm_backward(gm, x3, mean, invstd, w, gx_want, sums[0], sums[1], training,
                                  threads)
        _norm.batch_norm_backward(g, x3, mean, invstd, w, gx, sums[2], sums[3], training,
                                  threads, fused)
        np.testing.assert_array_equal(gx, gx_want)
        np.testing.assert_array_equal(sums[2], sums[0])
        np.testing.assert_array_equal(sums[3], sums[1])
        _norm.batch_norm_backward(g, x3, mean, invstd, w, gx, sums[2], sums[3], training,
                                  threads, fused, False)
        np.testing.assert_array_equal(gx, gm)  # only the masked gradient, no input gradient
        np.testing.assert_array_equal(sums[3], sums[1])
    with pytest.raises(ValueError, match="ref needs gx"):
        _norm.batch_norm_backward(g, x3, mean, invstd, w, None, sums[2], sums[3], training, 1,
                                  fused)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [5, 70001])
def test_residual_sum_kernels(dt, n):
    from cnnext import _eltwise

    rng = np.random.default_rng(24)
    a, b, g = (rng.standard_normal(n).astype(dt) for _ in range(3))
    a[:4] = [np.nan, -0.0, 1.0, -1.0]
    b[:4] = [1.0, 0.0, -1.0, 1.0]
    ref = F.relu(rng.standard_normal(n).astype(dt))
    ref[:2] = [np.nan, 0.0]
    for threads in (1, 2):
        out = np.empty(n, dt)
        _eltwise.add_relu(a, b, out, False, threads)
        np.testing.assert_array_equal(out, a + b)
        _eltwise.add_relu(a, b, out, True, threads)
        want = F.relu(a + b)
        assert (out.view(np.uint8) == want.view(np.uint8)).all()
        _eltwise.add_masked(a, g, ref, out, threads)
        np.testing.assert_array_equal(out, a + np.where(ref <= 0, dt(0), g))



@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,stride", [((2, 3, 7, 6), (2, 2)), ((1, 1, 5, 9), (3, 4)),
                                          ((3, 5, 4, 1), (3, 1)), ((2, 2, 1, 1), (2, 3))])
def test_add_strided_kernel(dt, shape, stride):
    """dst += src on dst's stride grid, any strides, one and two threads;
    the rest of dst untouched (-0.0 kept)."""
    from cnnext import _eltwise

    rng = np.random.default_rng(26)
    N, C, H, W = shape
    sh, sw = stride
    src = rng.standard_normal((N, C, -(-H // sh), -(-W // sw))).astype(dt)
    src.flat[0] = np.nan
    dst = rng.standard_normal(shape).astype(dt)
    dst[..., -1] = -0.0
    for threads in (1, 2):
        got = dst.copy()
        _eltwise.add_strided(src, got, sh, sw, threads)
        want = dst.copy()
        want[:, :, ::sh, ::sw] += src
        assert (got.view(np.uint8) == want.view(np.uint8)).all()


_TAKE_SHAPES = [(2, 3, 7, W) for W in (1, 2, 3, 15, 16, 17, 31, 32, 33, 34, 47, 65)] + [
    (1, 2, 9, 9), (3, 1, 1, 5)]
_TAKE_STRIDES = [(2, 2), (1, 2), (3, 2), (2, 1), (3, 4)]


def _take_all(dt):
    """{key: (got, want)} of take_strided at every shape and stride, one and
    two threads, each output at its largest size and one row and column
    smaller (the stride grid's last ones left out)."""
    from cnnext import _eltwise

    rng = np.random.default_rng(27)
    out = {}
    for shape in _TAKE_SHAPES:
        x = rng.standard_normal(shape).astype(dt)
        x.flat[::5], x.flat[1::11], x.flat[2::13] = -0.0, np.nan, np.inf
        for sh, sw in _TAKE_STRIDES:
            h, w = -(-shape[2] // sh), -(-shape[3] // sw)
            for hh, ww in {(h, w), (max(1, h - 1), max(1, w - 1))}:
                for threads in (1, 2):
                    got = np.full((*shape[:2], hh, ww), 7.0, dt)
                    _eltwise.take_strided(x, got, sh, sw, threads)
                    want = x[:, :, : hh * sh : sh, : ww * sw : sw]
                    out[f"{shape}-{sh}-{sw}-{hh}-{ww}-{threads}"] = (got, want)
    return out


@pytest.mark.parametrize("dt", DTYPES)
def test_take_strided_kernel(dt):
    """dst = src on the stride grid, rows of every width around the vector
    sizes, any strides, one and two threads: the values bit for bit (-0.0
    and NaN kept), nothing read past a row (a masked load)."""
    for key, (got, want) in _take_all(dt).items():
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), key


_TAKE_SCRIPT = """
import json, sys
import numpy as np
from cnnext import _eltwise
sys.path.insert(0, {here!r})
from test_netplan import _take_all
print(_eltwise.eltwise_isa())
print(json.dumps({{f"{{np.dtype(dt).name}}-{{k}}": got.tobytes() == np.ascontiguousarray(
    want).tobytes() for dt in (np.float32, np.float64) for k, (got, want) in
    _take_all(dt).items()}}))
"""


def test_take_strided_portable_loop(run_with_isa):
    """The portable loop (CNNEXT_ISA=generic) copies the same values as the
    AVX-512 one."""
    from cnnext import _eltwise

    if _eltwise.eltwise_isa() != "avx512":
        pytest.skip("this CPU runs only the portable loop")
    fast, slow = run_with_isa(_TAKE_SCRIPT, "generic")
    assert len(fast) > 200 and all(fast.values()) and all(slow.values())


_NORM_SCRIPT = """
import numpy as np
from cnnext import _eltwise, _norm
rng = np.random.default_rng(25)
for shape in ((3, 4, 37), (2, 3, 600)):  # short rows in memory order; long rows: the forward in
  # blocks of channels, the backward channel by channel
  x = rng.standard_normal(shape).astype(np.float32)
  x[0, 1, :2] = [np.nan, np.inf]
  C = shape[1]
  w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
  g = rng.standard_normal(x.shape).astype(np.float32)
  m, v = np.zeros(shape[1]), np.ones(shape[1])
  y, fused = np.empty_like(x), np.empty_like(x)
  _norm.batch_norm_forward(x, y, m, v, w, b, 1e-5, True, 1)
  _norm.batch_norm_forward(x, fused, m, v, w, b, 1e-5, True, 1, True)
  relu = np.empty_like(y)
  _eltwise.relu(y.reshape(-1), relu.reshape(-1), 1)
  assert (fused.view(np.uint8) == relu.view(np.uint8)).all()
  summed = np.empty_like(x)
  _norm.batch_norm_forward(x, summed, m, v, w, b, 1e-5, False, 1, True, g)
  _eltwise.add_relu(y.reshape(-1), g.reshape(-1), relu.reshape(-1), True, 1)
  assert (summed.view(np.uint8) == relu.view(np.uint8)).all()
  gm = np.empty_like(g)
  _eltwise.relu_backward(g.reshape(-1), fused.reshape(-1), gm.reshape(-1), 1)
  istd = 1 / np.sqrt(v + 1e-5)
  s = [np.zeros(shape[1]) for _ in range(4)]
  a, c = np.empty_like(x), np.empty_like(x)
  _norm.batch_norm_backward(gm, x, m, istd, w, a, s[0], s[1], True, 1)
  _norm.batch_norm_backward(g, x, m, istd, w, c, s[2], s[3], True, 1, fused)
  assert (a.view(np.uint8) == c.view(np.uint8)).all() and (s[0] == s[2]).all()
  assert np.array_equal(s[1], s[3], equal_nan=True)
print(_norm.isa())
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_fused_batch_norm_in_every_kernel_variant(isa, tmp_path):
    """CNNEXT_ISA selects each compiled batch-norm variant the CPU supports:
    the fused ReLU, the fused sum and the mask give the separate kernels'
    exact bits."""
    from cnnext import _norm

    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(_norm.isa()):
        pytest.skip(f"this CPU runs {_norm.isa()}, not {isa}")
    proc = subprocess.run([sys.executable, "-c", _NORM_SCRIPT], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, CNNEXT_ISA=isa))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [isa]


def _check_changes(plan, a, b, shape, dt, rng):
    """``plan`` (of ``b``) gives layer-by-layer ``a``'s numbers with NaN and
    inf inputs, after in-place updates of both models' second convolution's
    weight, with an inf in it, and after it is finite again."""
    for change in ["none", "nan_input", "inf_input", "update", "inf_weight", "restore"]:
        x = rng.standard_normal(shape).astype(dt)
        if change == "nan_input":
            x[0, 1, 5, 4] = np.nan
        elif change == "inf_input":
            x[-1, 0, 0, 0] = -np.inf
        for m in (a, b):
            w = m.layers[3].params["weight"]
            if change == "update":
                w *= dt(-0.75)
            elif change == "inf_weight":
                w[1, 2, 0, 1] = np.inf
            elif change == "restore":
                w[1, 2, 0, 1] = 0.5
        np.testing.assert_array_equal(plan.forward(x), a.forward(x), err_msg=change)


def _winograd_net(dt, rng):
    """3x3 stride-1 convolutions (Winograd's, when set) followed by ReLU and
    max pools with and without padding, a LeakyReLU, none, prime sizes."""
    return nn.Sequential(
        nn.Conv2D(3, 5, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(5, 6, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(),
        nn.MaxPool2D(3, stride=2, padding=1),
        nn.Conv2D(6, 4, 3, padding=2, dtype=dt, seed=rng), nn.ReLU(),
        nn.Conv2D(4, 4, 3, padding=1, dtype=dt, seed=rng), nn.LeakyReLU(0.1),
        nn.MaxPool2D(2, ceil_mode=True),
        nn.Conv2D(4, 3, 3, padding=1, bias=False, dtype=dt, seed=rng),
        nn.Flatten(),
    )


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [1, 4, 9])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_inference_steps_equal_layers(dt, n, threads):
    """Inference keeps each Winograd convolution's transformed filters and
    moves a ReLU before a max pool (no padding) after it: the same numbers,
    inf/NaN inputs and weights included, and in-place weight updates seen;
    small batches on one thread (the layers' on two: the same numbers)."""
    shape = (n, 3, 13, 11)
    with cnnext.use_conv_algorithm("winograd"), _threads(threads):
        a = _winograd_net(dt, np.random.default_rng(3)).eval()
        b = _winograd_net(dt, np.random.default_rng(3)).eval()
        plan = b.plan(shape)
        assert plan._calls is not None
        names = repr(plan)
        if dt == np.float32:
            assert names.count("WinogradStep") == 5
            first = plan.steps[0]
            assert first.threads == (first.plan.threads if n * 7 * 6 >= 256 else 1)
            relu = [s.relu for s in plan.steps if type(s).__name__ == "_MaxPoolStep"]
            assert relu == [True, False, False]  # padding; a LeakyReLU
        else:
            assert "WinogradStep" not in names  # float64: Winograd in the layer steps
        _check_changes(plan, a, b, shape, dt, np.random.default_rng(4))
        assert plan.valid


@pytest.mark.parametrize("dt", DTYPES)
def test_refresh_copy(dt):
    src = np.arange(7, dtype=dt)
    kept = src.copy()
    assert not _gemm.refresh_copy(src, kept)
    src[3] = -0.0 if src[3] == 0 else np.nan
    assert _gemm.refresh_copy(src, kept)
    np.testing.assert_array_equal(kept, src)
    assert not _gemm.refresh_copy(src, kept)  # NaN: the same bytes
    kept[0] = -0.0
    assert _gemm.refresh_copy(src, kept) and kept[0] == 0 and not np.signbit(kept[0])
    assert not _gemm.refresh_copy(src[:0], kept[:0])


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [3, 5, 37])
@pytest.mark.parametrize("threads", [1, 2])
def test_narrow_dense_steps_equal_layers(dt, n, threads):
    """Inference dense layers to at most one vector of outputs, past the
    dot-product rows, keep their weight packed: the same numbers (several
    KC blocks, fused ReLU/LeakyReLU, no bias), and in-place updates seen."""
    def make():
        rng = np.random.default_rng(5)
        return nn.Sequential(
            nn.Flatten(), nn.Dense(300, 7, dtype=dt, seed=rng), nn.LeakyReLU(0.1),
            nn.Dense(7, 5, bias=False, dtype=dt, seed=rng), nn.ReLU(),
            nn.Dense(5, 3, dtype=dt, seed=rng),
        ).eval()
    with _threads(threads):
        a, b = make(), make()
        plan = b.plan((n, 3, 10, 10))
        narrow = repr(plan).count("NarrowDenseStep")
        assert narrow == (3 if n > 4 and _gemm.narrow_width(dt) else 0)
        rng = np.random.default_rng(6)
        for update in (False, True, True):
            if update:
                for m in (a, b):
                    m.layers[1].params["weight"][2, ::7] *= dt(-1.5)
            x = rng.standard_normal((n, 3, 10, 10)).astype(dt)
            x[0, 0, 0, 0] = np.nan
            np.testing.assert_array_equal(plan.forward(x), a.forward(x))


class _threads:
    """cnnext's thread count set to ``n`` inside the block."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = cnnext.get_num_threads()
        cnnext.set_num_threads(self.n)

    def __exit__(self, *exc):
        cnnext.set_num_threads(self.old)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,k,n", [(5, 1, 1), (16, 256, 8), (17, 257, 3), (64, 600, 5),
                                   (33, 0, 2)])
@pytest.mark.parametrize("act,alpha", [(0, 0.0), (1, 0.0), (2, 0.2)])
def test_gemm_narrow_equals_gemm(dt, m, k, n, act, alpha):
    w_ = _gemm.narrow_width(dt)
    if not w_:
        pytest.skip("no narrow kernel in this variant")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((m, k)).astype(dt)
    w = rng.standard_normal((n, k)).astype(dt)
    bpk = np.full((k, w_), np.nan, dt)
    _gemm.pack_narrow(w, bpk)
    for bias in (rng.standard_normal(n).astype(dt), None):
        for threads in (1, 2):
            want, got = np.empty((m, n), dt), np.full((m, n), np.nan, dt)
            _gemm.gemm(x, w, want, False, True, False, 1, bias, act, alpha)
            _gemm.gemm_narrow(x, bpk, got, bias, threads, act, alpha)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [1, 5, 6])
def test_small_cnn_plan_on_two_threads_equals_layers(n):
    """The bench's small CNN (auto: Winograd for its 32->64 layer, which the
    layer runs on two threads and the plan, at batch 1, on one; a narrow
    dense head past the dot-product rows) equals the layer-by-layer path."""
    from cnnext.bench.netplan_rows import small_cnn

    with _threads(2):
        a, b = small_cnn(seed=0).eval(), small_cnn(seed=0).eval()
        plan = b.plan((n, 3, 32, 32))
        wino = [s for s in plan.steps if type(s).__name__ == "_WinogradStep"]
        if wino and cnnext.get_num_threads() == 2:
            assert wino[0].plan.threads == wino[0].threads == (1 if n == 1 else 2)
        x = np.random.default_rng(9).standard_normal((n, 3, 32, 32)).astype(np.float32)
        for _ in range(2):
            np.testing.assert_array_equal(plan.forward(x), a.forward(x))


@pytest.mark.parametrize("first", ["conv", "flatten", "relu"])
def test_large_inputs_are_read_in_place(first):
    """From 64 KB on, the first step reads the caller's array itself (not a
    copy): the same numbers, the array untouched and not kept; converted
    inputs and models whose first step is a view (Flatten) as before."""
    rng = np.random.default_rng(12)
    layers = {"conv": [nn.Conv2D(2, 3, 3, seed=rng), nn.ReLU(), nn.Flatten()],
              "flatten": [nn.Flatten()], "relu": [nn.ReLU(), nn.Flatten()]}[first]
    features = 3 * 62 * 62 if first == "conv" else 2 * 64 * 64
    model = nn.Sequential(*layers, nn.Dense(features, 4, seed=rng)).eval()
    shape = (3, 2, 64, 64)  # 96 KB of float32
    plan = model.plan(shape)
    assert plan._first_reads_input == (first != "flatten")
    x = rng.standard_normal(shape).astype(np.float32)
    keep = x.copy()
    want = model.forward(x)
    for arg in (x, x.astype(np.float64), np.asfortranarray(x)):
        got = plan.forward(arg)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x, keep)
    assert all(c.args[0] is not x for c in plan._calls if hasattr(c, "args") and c.args)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [1, 3])
def test_tiled_max_pool_training_steps_equal_layers(dt, n):
    """2x2 max pools that tile their input exactly (backward: every input row
    written once) after a ReLU (ties at zero) and not: training steps equal
    the layer-by-layer ones."""
    def make():
        rng = np.random.default_rng(15)
        return nn.Sequential(
            nn.Conv2D(2, 3, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
            nn.Conv2D(3, 4, 3, padding=1, dtype=dt, seed=rng), nn.MaxPool2D(2), nn.Flatten(),
            nn.Dense(4 * 2 * 3, 5, dtype=dt, seed=rng),
        )
    a, b = make(), make()
    shape = (n, 2, 8, 12)
    rng = np.random.default_rng(16)
    oa, ob = optim.SGD(a, lr=0.1), optim.SGD(b, lr=0.1)
    la, lb = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
    plan = b.plan(shape, training=True)
    pools = [s for s in plan.steps if type(s).__name__ == "_MaxPoolStep"]
    assert [s.pool_backward.__name__.endswith("2x2") for s in pools] == [True, True]
    # the ReLU's backward in the first pool's (float32, AVX-512), not the second's (no ReLU)
    from cnnext import _pool

    fused = dt == np.float32 and _pool.pool_isa() == "avx512"
    assert [s.relu_ref is not None for s in pools] == [fused, False]
    assert plan.steps[0].act_grad_after == fused
    for _ in range(2):
        x = rng.standard_normal(shape).astype(dt)
        y = rng.integers(0, 5, n)
        oa.zero_grad()
        va = la.forward(a.forward(x), y)
        a.backward(la.backward(), input_grad=False)
        oa.step()
        assert plan.train_step(x, y, lb, ob) == va
        _assert_same(_state(a), _state(b))


@pytest.mark.parametrize("model,n,threads", [
    ("lenet5", 64, 2), ("lenet5", 29, 3), ("small", 2, 2), ("small", 11, 2), ("small", 23, 4),
])
def test_batch_split_inference_equals_layers(model, n, threads):
    """On several threads an inference batch with enough work runs in
    contiguous blocks that the threads take in turn, each through the whole
    network on one-thread kernels: the layer-by-layer numbers, blocks of
    two sizes, a Winograd layer's kept filters (refreshed per thread after
    an in-place weight update) and a worker's exception included."""
    from cnnext.bench.netplan_rows import small_cnn

    make = (lambda: models.lenet5(seed=0)) if model == "lenet5" else (lambda: small_cnn(seed=0))
    shape = (n, 1, 28, 28) if model == "lenet5" else (n, 3, 32, 32)
    with _threads(threads):
        a, b = make().eval(), make().eval()
        plan = b.plan(shape)
        if cnnext.get_num_threads() < 2:
            pytest.skip("built without OpenMP: one thread")
        split = plan._split
        assert split is not None
        sizes = [hi - lo for lo, hi in split.blocks]
        assert split.blocks[0][0] == 0 and split.blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(split.blocks, split.blocks[1:]))
        assert len(sizes) % threads == 0 and max(sizes) - min(sizes) <= 1
        assert len(split.bound) == threads
        rng = np.random.default_rng(21)
        for update in (False, True, False):
            if update:
                for m in (a, b):
                    m.layers[3].params["weight"] *= np.float32(-0.5)
            x = rng.standard_normal(shape).astype(np.float32)
            got = plan.forward(x)
            np.testing.assert_array_equal(got, a.forward(x))
            assert got is not plan.forward(x)  # a new array each call
        kept = [dict(sets) for sets in split.bound]
        # a worker's exception (the calling thread slowed down: the workers
        # take blocks), then the calling thread's own
        for who, extra in (("workers", _raise_lookup), ("caller", _raise_lookup)):
            for t, sets in enumerate(split.bound):
                for size, (calls, xbuf, out) in kept[t].items():
                    if (t == 0) == (who == "caller"):
                        sets[size] = ([*calls, extra], xbuf, out)
                    else:
                        sets[size] = ([*calls, _pause], xbuf, out)
            with pytest.raises(LookupError, match="from a slice"):
                plan.forward(x)
        for sets, k in zip(split.bound, kept):
            sets.update(k)
        np.testing.assert_array_equal(plan.forward(x), a.forward(x))


def _raise_lookup():
    raise LookupError("from a slice")


def _pause():
    time.sleep(0.02)


def test_batch_split_only_where_it_pays():
    """No split on one thread, for less work than the hand-over costs, for
    fewer samples than threads, when a step runs a layer's own forward, or
    when a slice's steps would take another algorithm than the batch's."""
    with _threads(2):
        if cnnext.get_num_threads() < 2:
            pytest.skip("built without OpenMP: one thread")
        lenet = models.lenet5(seed=0).eval()
        assert lenet.plan((64, 1, 28, 28))._split is not None
        assert cnnext.get_num_threads() == 2  # (the blocks' steps are built at one)
        assert lenet.plan((2, 1, 28, 28))._split is None  # too little work
        drop = nn.Sequential(nn.Conv2D(3, 64, 3, seed=0), nn.Dropout(0.5), nn.Flatten()).eval()
        assert drop.plan((8, 3, 32, 32))._split is None  # the dropout's own forward
        wide = nn.Sequential(nn.Conv2D(3, 64, 3, seed=0), nn.Flatten()).eval()
        assert wide.plan((8, 3, 32, 32))._split is not None
        with _threads(3):
            assert wide.plan((2, 3, 32, 32))._split is None  # fewer samples than threads
        from cnnext.bench.netplan_rows import small_cnn

        # slices of 2 and 3 rows: the dense layer's dot products, not the batch's GEMM
        assert small_cnn(seed=0).eval().plan((5, 3, 32, 32))._split is None
    with _threads(1):
        assert models.lenet5(seed=0).eval().plan((64, 1, 28, 28))._split is None


_AVX512_POOL = pytest.mark.skipif(
    __import__("cnnext._pool", fromlist=["pool_isa"]).pool_isa() != "avx512",
    reason="the fused convolution + pool kernel runs on AVX-512 CPUs only")


@_AVX512_POOL
@pytest.mark.parametrize("geom", [
    # N, C, H, W, Co, kh, kw, ph, pw
    (1, 3, 32, 32, 32, 3, 3, 1, 1), (3, 1, 28, 28, 6, 5, 5, 0, 0), (2, 2, 11, 13, 5, 2, 3, 2, 1),
    (1, 1, 7, 5, 1, 1, 1, 0, 0), (4, 3, 17, 37, 33, 3, 3, 1, 0), (2, 4, 9, 41, 7, 3, 5, 0, 2),
    (1, 6, 14, 14, 16, 5, 5, 0, 0), (2, 3, 13, 11, 20, 2, 3, 1, 1), (1, 2, 30, 31, 16, 3, 3, 0, 0),
])
@pytest.mark.parametrize("act", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("lanes", [False, True])
def test_conv_max_pool2x2_equals_conv_then_pool(geom, act, bias, threads, lanes):
    """The fused few-tap convolution + ReLU + 2x2 pool kernel (and its
    variant with the output channels in the vector lanes) gives the numbers
    of the direct convolution (with that epilogue) and the max pool run
    apart: ties (-0.0, exact zeros after the ReLU), NaN and infinities
    included; odd sizes (the last row/column dropped), channel counts not a
    multiple of the kernel's block of four (or of 16 lanes), rows of more
    than 32 columns, pooled rows of more than one block of six."""
    from cnnext import _pool

    N, C, H, W, Co, kh, kw, ph, pw = geom
    rng = np.random.default_rng(sum(geom) + 7 * act + bias)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, np.inf, -0.0]
    x[-1, -1, -1, -1] = -np.inf
    x[:, :, 2] = 0.0
    w = rng.standard_normal((Co, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(Co).astype(np.float32) if bias else None
    OH, OW = H + 2 * ph - kh + 1, W + 2 * pw - kw + 1
    y = np.empty((N, Co, OH, OW), np.float32)
    _conv.conv2d_forward(x, w, b, y, 1, 1, ph, pw, 1, 1, 1, 1, act, 0.0)
    want = np.empty((N, Co, OH // 2, OW // 2), np.float32)
    _pool.max_pool2d_forward(y, want, None, 2, 2, 2, 2, 0, 0, 1, 1, 1)
    got = np.full(want.shape, 7.0, np.float32)
    keep = x.copy()
    _pool.conv_max_pool2x2(x, w, b, got, ph, pw, act, threads, lanes)
    np.testing.assert_array_equal(got, want)
    assert (np.signbit(got) == np.signbit(want)).all()
    np.testing.assert_array_equal(x, keep)


@_AVX512_POOL
@pytest.mark.parametrize("n", [1, 5])
def test_first_conv_relu_pool_step(n):
    """LeNet-5's and the small CNN's first convolution, ReLU and max pool
    run as one step, equal to the layers; a LeakyReLU, a pool with a clipped
    last window (ceil_mode), a stride or float64 keep the separate steps."""
    from cnnext.bench.netplan_rows import small_cnn

    for model, shape in ((models.lenet5(seed=0), (n, 1, 28, 28)),
                         (small_cnn(seed=0), (n, 3, 32, 32))):
        plan = model.eval().plan(shape)
        wino = cnnext.get_conv_algorithm() == "winograd"  # as set (LeNet-5's 5x5 too)
        first = ("_ConvPoolStep" if not wino
                 else "_WinogradPoolStep" if shape[1] == 3 else "_WeightedStep")
        assert type(plan.steps[0]).__name__ == first
        if shape[1] == 1 and not wino:  # LeNet-5's second layer too, channels in the lanes
            assert [type(s).__name__ for s in plan.steps[:2]] == ["_ConvPoolStep"] * 2
            assert (plan.steps[0].lanes, plan.steps[1].lanes) == (False, True)
        x = np.random.default_rng(n).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(plan.forward(x), model.forward(x))
    rng = np.random.default_rng(1)
    for layers, dt in (([nn.Conv2D(2, 4, 3, seed=rng), nn.LeakyReLU(0.1), nn.MaxPool2D(2)],
                        np.float32),
                       ([nn.Conv2D(2, 4, 3, seed=rng), nn.ReLU(), nn.MaxPool2D(2, ceil_mode=True)],
                        np.float32),
                       ([nn.Conv2D(2, 4, 3, stride=2, seed=rng), nn.MaxPool2D(2)], np.float32),
                       ([nn.Conv2D(2, 4, 3, seed=rng, dtype=np.float64), nn.ReLU(),
                         nn.MaxPool2D(2)], np.float64)):
        model = nn.Sequential(*layers).eval()
        plan = model.plan((2, 2, 11, 11), dtype=dt)
        assert "ConvPoolStep" not in repr(plan)
        x = rng.standard_normal((2, 2, 11, 11)).astype(dt)
        np.testing.assert_array_equal(plan.forward(x), model.forward(x))


@_AVX512_POOL
@pytest.mark.parametrize("shape", [(1, 64, 16, 16), (3, 5, 9, 35), (2, 1, 2, 2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_max_pool2x2_relu_equals_pool_then_relu(shape, threads):
    """The 2x2 pool with its ReLU (the inference step after a Winograd
    convolution) equals the pool, then the ReLU: NaN kept, -0.0 to 0.0,
    odd sizes (the last row/column dropped)."""
    from cnnext import _eltwise, _pool

    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:4] = [np.nan, -0.0, -np.inf, np.inf]
    x[..., -1, :] = -0.0
    out_shape = (*shape[:2], shape[2] // 2, shape[3] // 2)
    want = np.empty(out_shape, np.float32)
    _pool.max_pool2d_forward(x, want, None, 2, 2, 2, 2, 0, 0, 1, 1, 1)
    _eltwise.relu(want.reshape(-1), want.reshape(-1), 1)
    got = np.full(out_shape, 5.0, np.float32)
    _pool.max_pool2x2_relu(x, got, threads)
    np.testing.assert_array_equal(got, want)
    assert (np.signbit(got) == np.signbit(want)).all()


@pytest.mark.parametrize("geom", [
    # N, C, H, W, Co, ph, pw: 8 tile columns from 16 or fewer input columns
    # (two tile rows per vector; an odd number of tile rows: vectors across
    # samples); other widths; several blocks and a narrow last one
    (3, 5, 16, 16, 9, 1, 1), (2, 3, 14, 16, 8, 1, 1), (4, 2, 16, 14, 16, 1, 2),
    (1, 4, 12, 12, 3, 2, 3), (9, 32, 16, 16, 64, 1, 1), (2, 3, 32, 32, 32, 1, 1),
    (3, 6, 8, 8, 7, 1, 1), (1, 1, 4, 10, 1, 0, 0),
])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_relu_pool2x2_equals_winograd_then_pool(geom, bias, threads):
    """The Winograd convolution with its ReLU and 2x2 pool fused into the
    output transform gives the numbers of winograd_forward, the max pool and
    the ReLU run apart (exact zeros, -0.0 to 0.0), and reports an inf or NaN
    in the convolution's output (and only then)."""
    from cnnext import _eltwise, _plan, _pool, _winograd

    N, C, H, W, Co, ph, pw = geom
    rng = np.random.default_rng(sum(geom) + bias)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    x[:, :, 1] = 0.0
    w = rng.standard_normal((Co, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(Co).astype(np.float32) if bias else None
    upk = _plan._winograd_filters(w)
    OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
    for case in ("finite", "nan", "inf", "overflow"):
        if case == "nan":
            x[-1, -1, H // 2, W - 1] = np.nan
        elif case == "inf":
            x[-1, -1, H // 2, W - 1] = 0.0
            x[0, 0, 0, 0] = -np.inf
        elif case == "overflow":
            x[0, 0, 0, 0] = 3e38
        y = np.empty((N, Co, OH, OW), np.float32)
        _winograd.winograd_forward(x, upk, b, y, ph, pw, threads)
        want = np.empty((N, Co, OH // 2, OW // 2), np.float32)
        _pool.max_pool2d_forward(y, want, None, 2, 2, 2, 2, 0, 0, 1, 1, 1)
        _eltwise.relu(want.reshape(-1), want.reshape(-1), 1)
        got = np.full(want.shape, 7.0, np.float32)
        keep = x.copy()
        ok = _winograd.winograd_relu_pool2x2(x, upk, b, got, ph, pw, threads)
        np.testing.assert_array_equal(x, keep)
        assert ok == bool(np.isfinite(y).all()), case
        if case != "overflow":  # (an overflow depends on the weights)
            assert ok == (case == "finite")
        if ok:
            np.testing.assert_array_equal(got, want)
            assert not np.signbit(got).any()
    with pytest.raises(ValueError, match="not twice the pooled"):
        _winograd.winograd_relu_pool2x2(x, upk, b, np.empty((N, Co, OH // 2 + 1, OW // 2),
                                                            np.float32), ph, pw, 1)


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_two_tile_rows_input_transform_equals_runs(n, threads):
    """For maps of 8 tile columns from at most 16 input columns, the input
    transform takes two tile rows per vector; a map of the same values with
    a zero column and 16 more columns after it takes the runs of one tile
    row: each tile's transform and products are those of that tile alone,
    so the shared outputs are the same bits."""
    from cnnext import _plan, _winograd

    rng = np.random.default_rng(n)
    for H, W, ph, pw in ((16, 16, 1, 1), (13, 15, 1, 1), (9, 14, 2, 2)):
        x = rng.standard_normal((n, 11, H, W)).astype(np.float32)
        wide = np.zeros((n, 11, H, W + 2 * pw + 16), np.float32)
        wide[..., :W] = x
        wide[..., W + 2 * pw:] = rng.standard_normal((n, 11, H, 16))
        w = rng.standard_normal((20, 11, 3, 3)).astype(np.float32)
        upk = _plan._winograd_filters(w)
        OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
        assert (OW + 1) // 2 == 8
        got = np.empty((n, 20, OH, OW), np.float32)
        _winograd.winograd_forward(x, upk, None, got, ph, pw, threads)
        ref = np.empty((n, 20, OH, wide.shape[3] + 2 * pw - 2), np.float32)
        _winograd.winograd_forward(wide, upk, None, ref, ph, pw, threads)
        np.testing.assert_array_equal(got, ref[..., :OW])


def _winograd_pool_net(dt, rng):
    """3x3 convolutions with ReLU and 2x2 pools whose windows are the
    Winograd tiles: 16x16 (8 tile columns), 8x8, 4x4 without padding."""
    return nn.Sequential(
        nn.Conv2D(3, 9, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(9, 8, 3, padding=1, dtype=dt, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(8, 4, 3, bias=False, dtype=dt, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(),
    )


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [1, 4, 9])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_relu_pool_steps_equal_layers(dt, n, threads):
    """A Winograd convolution, its ReLU and a 2x2 max pool tiling its output
    run as one inference step: the layers' numbers, inf/NaN inputs and
    weights (the direct fallback) and in-place weight updates included."""
    shape = (n, 3, 16, 16)
    with cnnext.use_conv_algorithm("winograd"), _threads(threads):
        a = _winograd_pool_net(dt, np.random.default_rng(5)).eval()
        b = _winograd_pool_net(dt, np.random.default_rng(5)).eval()
        plan = b.plan(shape)
        names = repr(plan)
        assert names.count("WinogradPoolStep") == (3 if dt == np.float32 else 0)
        assert "MaxPoolStep" not in names or dt == np.float64
        _check_changes(plan, a, b, shape, dt, np.random.default_rng(6))
        assert plan.valid


@_AVX512_POOL
@pytest.mark.parametrize("shape", [(1, 6, 28, 28), (3, 5, 2, 34), (2, 1, 4, 2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_max_pool2d_backward_2x2_relu_equals_pool_then_relu_backward(shape, threads):
    """The tiled 2x2 pool's backward with a ReLU's backward fused (a
    training step's pool after a convolution with a fused ReLU) equals the
    pool's backward, then relu_backward on the pool's input: +0 where the
    input is <= 0 (-0.0 and exact zeros), a NaN input passing the gradient,
    rows of more than 16 outputs."""
    from cnnext import _eltwise, _pool

    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    x[x < -0.5] = 0.0
    x.reshape(-1)[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 0.0]
    out_shape = (*shape[:2], shape[2] // 2, shape[3] // 2)
    y = np.empty(out_shape, np.float32)
    idx = np.empty(out_shape, np.int64)
    _pool.max_pool2d_forward(x, y, idx, 2, 2, 2, 2, 0, 0, 1, 1, 1)
    g = rng.standard_normal(out_shape).astype(np.float32)
    g.reshape(-1)[:3] = [-0.0, np.nan, -1.5]
    want = np.empty(shape, np.float32)
    _pool.max_pool2d_backward(g, idx, want, 1)
    _eltwise.relu_backward(want.reshape(-1), x.reshape(-1), want.reshape(-1), 1)
    got = np.full(shape, 3.0, np.float32)
    keep = x.copy()
    _pool.max_pool2d_backward_2x2_relu(g, idx, x, got, threads)
    np.testing.assert_array_equal(got, want)
    assert (np.signbit(got) == np.signbit(want)).all()
    np.testing.assert_array_equal(x, keep)
