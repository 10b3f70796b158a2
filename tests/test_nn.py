"""Layers (cnnext.nn) and losses: values, gradients, state, save/load.

Oracles: cnnext.reference for the conv/pool math, plain numpy for dense and
activations, float64 central differences for whole chains, and PyTorch when
it is importable.  Upstream gradients are always random.
"""

import os
import re
import zipfile

import numpy as np
import pytest

from cnnext import nn
from cnnext import reference as R


def _layers():
    """(name, factory, input shape) for every layer type, small shapes."""
    return [
        ("conv", lambda: nn.Conv2D(2, 3, (2, 3), stride=(1, 2), padding=1, seed=0), (2, 2, 5, 6)),
        ("conv_nobias", lambda: nn.Conv2D(2, 3, 3, bias=False, dilation=2, seed=0), (2, 2, 7, 7)),
        ("conv_grouped_same",
         lambda: nn.Conv2D(4, 6, (2, 3), padding="same", groups=2, seed=0), (2, 4, 5, 6)),
        ("conv_transpose",
         lambda: nn.ConvTranspose2D(4, 2, (2, 3), stride=2, output_padding=1, groups=2, seed=0),
         (2, 4, 3, 4)),
        ("conv1d", lambda: nn.Conv1D(3, 6, 2, stride=2, dilation=2, groups=3, seed=0), (2, 3, 9)),
        ("maxpool", lambda: nn.MaxPool2D(3, stride=2, padding=1), (2, 2, 5, 5)),
        ("avgpool", lambda: nn.AvgPool2D(2, stride=1), (2, 2, 4, 5)),
        ("maxpool_dilated_ceil", lambda: nn.MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True),
         (2, 2, 7, 6)),
        ("avgpool_options", lambda: nn.AvgPool2D(3, 2, 1, ceil_mode=True,
                                                 count_include_pad=False), (2, 2, 6, 7)),
        ("avgpool_divisor", lambda: nn.AvgPool2D(2, divisor_override=3), (2, 2, 4, 5)),
        ("maxpool1d", lambda: nn.MaxPool1D(3, 2, 1, ceil_mode=True), (2, 3, 9)),
        ("avgpool1d", lambda: nn.AvgPool1D(2, padding=1, count_include_pad=False), (2, 3, 8)),
        ("global_avgpool", lambda: nn.AdaptiveAvgPool2D(1), (2, 3, 5, 4)),
        ("adaptive_avgpool", lambda: nn.AdaptiveAvgPool2D((3, None)), (2, 3, 5, 4)),
        ("adaptive_maxpool", lambda: nn.AdaptiveMaxPool2D((2, 3)), (2, 3, 5, 4)),
        ("dense", lambda: nn.Dense(6, 4, seed=0), (3, 6)),
        ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
        ("relu", lambda: nn.ReLU(), (3, 5)),
        ("leaky", lambda: nn.LeakyReLU(0.2), (3, 5)),
        ("sigmoid", lambda: nn.Sigmoid(), (3, 5)),
        ("tanh", lambda: nn.Tanh(), (3, 5)),
        ("softmax", lambda: nn.Softmax(), (3, 5)),
        ("dropout", lambda: nn.Dropout(0.3, seed=0), (3, 5)),
        ("bn1d", lambda: nn.BatchNorm1D(4), (3, 4, 5)),
        ("bn1d_2d_cumulative", lambda: nn.BatchNorm1D(5, momentum=None), (3, 5)),
        ("bn2d", lambda: nn.BatchNorm2D(2), (2, 2, 3, 4)),
        ("bn2d_eval", lambda: nn.BatchNorm2D(2).eval(), (2, 2, 3, 4)),
        ("bn2d_no_stats", lambda: nn.BatchNorm2D(2, affine=False, track_running_stats=False),
         (2, 2, 3, 4)),
        ("identity", nn.Identity, (3, 5)),
        (
            "residual",
            lambda: nn.Residual(nn.Sequential(nn.Conv2D(2, 2, 3, padding=1, seed=0),
                                              nn.BatchNorm2D(2), nn.ReLU())),
            (2, 2, 5, 5),
        ),
        (
            "residual_projection",
            lambda: nn.Residual(nn.Sequential(nn.Conv2D(2, 3, 3, stride=2, padding=1, seed=0),
                                              nn.BatchNorm2D(3)),
                                nn.Conv2D(2, 3, 1, stride=2, seed=1)),
            (2, 2, 5, 5),
        ),
        (
            "sequential",
            lambda: nn.Sequential(
                nn.Conv2D(1, 2, 3, seed=0), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 3 * 3, 3, seed=1)
            ),
            (2, 1, 5, 5),
        ),
    ]


LAYERS = _layers()
IDS = [name for name, _, _ in LAYERS]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=IDS)
def test_backward_before_forward_raises(name, make, shape):
    layer = make()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones(shape, dtype=np.float32))


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=IDS)
def test_inputs_never_modified_and_read_only_accepted(name, make, shape, rng):
    layer = make()
    x = rng.standard_normal(shape).astype(np.float32)
    x.flags.writeable = False
    x_copy = x.copy()
    y = layer.forward(x)
    g = rng.standard_normal(np.shape(y)).astype(np.float32)
    g.flags.writeable = False
    g_copy = g.copy()
    gx = layer.backward(g)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(g, g_copy)
    assert gx.shape == x.shape


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=IDS)
def test_cache_replaced_not_grown(name, make, shape, rng):
    """A second forward with another batch size replaces the cache; backward follows it."""
    layer = make()
    x1 = rng.standard_normal(shape).astype(np.float32)
    layer.forward(x1)
    attrs = set(vars(layer))
    bigger = (shape[0] + 2,) + tuple(shape[1:])
    x2 = rng.standard_normal(bigger).astype(np.float32)
    y2 = layer.forward(x2)
    assert set(vars(layer)) == attrs
    gx = layer.backward(rng.standard_normal(np.shape(y2)).astype(np.float32))
    assert gx.shape == bigger


# --------------------------------------------------------------------------
# Values against independent oracles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_matches_reference(dtype, rng, close):
    layer = nn.Conv2D(3, 4, (2, 3), stride=2, padding=(1, 0), dilation=(1, 2), dtype=dtype, seed=1)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    y = layer.forward(x)
    w, b = layer.params["weight"], layer.params["bias"]
    close(y, R.conv2d(x, w, b, stride=2, padding=(1, 0), dilation=(1, 2)), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(g)
    rx, rw, rb = R.conv2d_backward(g, x, w, stride=2, padding=(1, 0), dilation=(1, 2), bias=True)
    close(gx, rx, dtype)
    close(layer.grads["weight"], rw, dtype)
    close(layer.grads["bias"], rb, dtype)
    assert y.dtype == gx.dtype == layer.grads["weight"].dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_conv_layers_match_reference(dtype, rng, close):
    cases = [
        (nn.Conv2D(4, 6, (2, 3), 1, "same", (2, 1), groups=2, dtype=dtype, seed=1),
         (2, 4, 7, 6), R.conv2d, R.conv2d_backward,
         dict(stride=1, padding="same", dilation=(2, 1), groups=2)),
        (nn.ConvTranspose2D(6, 4, (3, 2), 2, 1, 1, 2, True, (1, 2), dtype=dtype, seed=2),
         (2, 6, 4, 3), R.conv_transpose2d, R.conv_transpose2d_backward,
         dict(stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2))),
        (nn.Conv1D(4, 8, 3, 2, 1, 2, groups=4, dtype=dtype, seed=3), (3, 4, 11), R.conv1d,
         R.conv1d_backward, dict(stride=2, padding=1, dilation=2, groups=4)),
    ]
    for layer, shape, fwd, bwd, kw in cases:
        x = rng.standard_normal(shape).astype(dtype)
        w, b = layer.params["weight"], layer.params["bias"]
        for _ in range(2):  # the second call runs the kept plan
            layer.zero_grad()
            y = layer.forward(x)
            close(y, fwd(x, w, b, **kw), dtype)
            g = rng.standard_normal(y.shape).astype(dtype)
            gx = layer.backward(g)
            rx, rw, rb = bwd(g, x, w, bias=True, **kw)
            close(gx, rx, dtype)
            close(layer.grads["weight"], rw, dtype)
            close(layer.grads["bias"], rb, dtype)
            assert y.dtype == gx.dtype == layer.grads["weight"].dtype == dtype


def test_conv_layers_shapes_and_repr():
    conv = nn.Conv2D(8, 4, 3, padding="valid", groups=2, bias=False)
    assert conv.weight.shape == (4, 4, 3, 3) and conv.bias is None
    assert "groups=2" in repr(conv) and "padding='valid'" in repr(conv)
    up = nn.ConvTranspose2D(8, 6, (2, 3), groups=2)
    assert up.weight.shape == (8, 3, 2, 3) and up.bias.shape == (6,)
    c1 = nn.Conv1D(3, 6, 5, padding="same", groups=3)
    assert c1.weight.shape == (6, 1, 5) and c1.forward(np.zeros((2, 3, 7))).shape == (2, 6, 7)
    assert c1.forward(np.zeros((3, 7))).shape == (6, 7)
    # keyword use of the existing arguments keeps working
    old = nn.Conv2D(2, 3, 3, stride=1, padding=1, dilation=1, bias=False, seed=0)
    assert old.groups == 1 and old.weight.shape == (3, 2, 3, 3)


@pytest.mark.parametrize(
    "make,fan_in",
    [
        (lambda: nn.Conv2D(64, 32, 3, groups=4, init="torch", seed=0), 16 * 9),
        (lambda: nn.ConvTranspose2D(64, 32, (3, 2), groups=4, init="torch", seed=0), 8 * 6),
        (lambda: nn.Conv1D(64, 32, 5, groups=8, init="torch", seed=0), 8 * 5),
    ],
)
def test_conv_layers_init_fans_are_torchs(make, fan_in):
    """torch: fan_in = weight.shape[1] * kernel size (C_in/groups for a conv)."""
    p = make().params
    bound = 1 / np.sqrt(fan_in)
    for a in (p["weight"], p["bias"]):
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound


def test_pools_match_reference(rng, close):
    x = rng.standard_normal((2, 3, 7, 8))
    g = rng.standard_normal((2, 3, 4, 4))
    mp = nn.MaxPool2D(3, stride=2, padding=1)
    y = mp.forward(x)
    ry, idx = R.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    close(y, ry)
    close(mp.backward(g), R.max_pool2d_backward(g, idx, x.shape))
    ap = nn.AvgPool2D((2, 3), stride=(2, 2), padding=(1, 1))
    y = ap.forward(x)
    close(y, R.avg_pool2d(x, (2, 3), stride=(2, 2), padding=(1, 1)))
    g = rng.standard_normal(y.shape)
    close(ap.backward(g), R.avg_pool2d_backward(g, x.shape, (2, 3), stride=(2, 2), padding=(1, 1)))


def test_new_pool_layers_match_reference(rng, close):
    x = np.round(rng.standard_normal((2, 3, 7, 8)) * 2)
    cases = [
        (nn.MaxPool2D((3, 2), 2, 1, dilation=(1, 2), ceil_mode=True),
         lambda v: R.max_pool2d(v, (3, 2), 2, 1, (1, 2), True, True)),
        (nn.AdaptiveMaxPool2D((3, 5)), lambda v: R.adaptive_max_pool2d(v, (3, 5), True)),
    ]
    for layer, ref in cases:
        y = layer.forward(x)
        ry, idx = ref(x)
        close(y, ry)
        np.testing.assert_array_equal(layer.indices, idx)
        g = rng.standard_normal(y.shape)
        close(layer.backward(g), R.max_pool2d_backward(g, idx, x.shape))
    ap = nn.AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=None)
    y = ap.forward(x)
    close(y, R.avg_pool2d(x, 3, 2, 1, True, False))
    g = rng.standard_normal(y.shape)
    close(ap.backward(g), R.avg_pool2d_backward(g, x.shape, 3, 2, 1, True, False))
    for o in (1, (2, None)):
        aa = nn.AdaptiveAvgPool2D(o)
        y = aa.forward(x)
        close(y, R.adaptive_avg_pool2d(x, o))
        g = rng.standard_normal(y.shape)
        close(aa.backward(g), R.adaptive_avg_pool2d_backward(g, x.shape))
    x1 = x[:, :, 0]
    mp1 = nn.MaxPool1D(3, 2, 1, dilation=2, ceil_mode=True)
    y = mp1.forward(x1)
    ry, idx = R.max_pool1d(x1, 3, 2, 1, 2, True, return_indices=True)
    close(y, ry)
    g = rng.standard_normal(y.shape)
    close(mp1.backward(g), R.max_pool1d_backward(g, idx, x1.shape))
    ap1 = nn.AvgPool1D(4, 3, 2, ceil_mode=True, count_include_pad=False)
    y = ap1.forward(x1[0])  # unbatched (C, L)
    close(y, R.avg_pool1d(x1[0], 4, 3, 2, True, False))
    g = rng.standard_normal(y.shape)
    close(ap1.backward(g), R.avg_pool1d_backward(g, x1[0].shape, 4, 3, 2, True, False))


def test_max_unpool2d_layer_inverts_a_max_pool(rng, close):
    x = np.abs(rng.standard_normal((2, 3, 6, 7))) + 0.1  # positive: the zeros never win
    pool, unpool = nn.MaxPool2D(2), nn.MaxUnpool2D(2)
    y = pool.forward(x)
    u = unpool(y, pool.indices, output_size=x.shape[2:])
    assert u.shape == x.shape
    np.testing.assert_array_equal(u, R.max_unpool2d(y, pool.indices, 2, output_size=(6, 7)))
    np.testing.assert_array_equal(pool.forward(u), y)  # the maxima are back in place
    g = rng.standard_normal(u.shape)
    np.testing.assert_array_equal(unpool.backward(g), R.max_unpool2d_backward(g, pool.indices))
    with pytest.raises(RuntimeError, match="MaxUnpool2D.backward: called before forward"):
        nn.MaxUnpool2D(2).backward(g)


def test_pool_layer_reprs_show_every_option():
    assert repr(nn.MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True)) == (
        "MaxPool2D(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2), "
        "ceil_mode=True)")
    assert repr(nn.AvgPool2D(2, count_include_pad=False, divisor_override=3)) == (
        "AvgPool2D(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), count_include_pad=False, "
        "divisor_override=3, ceil_mode=False)")
    assert repr(nn.MaxPool1D(3)) == (
        "MaxPool1D(kernel_size=3, stride=3, padding=0, dilation=1, ceil_mode=False)")
    assert repr(nn.AvgPool1D((4,), 2)) == (
        "AvgPool1D(kernel_size=4, stride=2, padding=0, count_include_pad=True, ceil_mode=False)")
    assert repr(nn.AdaptiveAvgPool2D((None, 7))) == "AdaptiveAvgPool2D(output_size=(None, 7))"
    assert repr(nn.AdaptiveMaxPool2D(np.array([2, 3]))) == "AdaptiveMaxPool2D(output_size=(2, 3))"
    assert repr(nn.MaxUnpool2D(2, 1)) == (
        "MaxUnpool2D(kernel_size=(2, 2), stride=(1, 1), padding=(0, 0))")


@pytest.mark.parametrize(
    "make,exc,fragments",
    [
        (lambda: nn.MaxPool2D(2, dilation=0), ValueError, ["MaxPool2D", "dilation", ">= 1"]),
        (lambda: nn.MaxPool2D(2, padding=2), ValueError, ["MaxPool2D", "padding", "half"]),
        (lambda: nn.MaxPool2D(2, ceil_mode=1), TypeError, ["MaxPool2D", "ceil_mode"]),
        (lambda: nn.AvgPool2D(2, count_include_pad=None), TypeError,
         ["AvgPool2D", "count_include_pad"]),
        (lambda: nn.AvgPool2D(2, divisor_override=0), ValueError,
         ["AvgPool2D", "divisor_override", "nonzero"]),
        (lambda: nn.MaxPool1D((2, 2)), ValueError,
         ["MaxPool1D", "kernel_size", "sequence of one int"]),
        (lambda: nn.AvgPool1D(2, padding=2), ValueError, ["AvgPool1D", "padding", "half"]),
        (lambda: nn.AdaptiveAvgPool2D(-1), ValueError, ["AdaptiveAvgPool2D", "output_size"]),
        (lambda: nn.AdaptiveMaxPool2D((2, 2.5)), TypeError,
         ["AdaptiveMaxPool2D", "output_size[1]"]),
        (lambda: nn.AdaptiveMaxPool2D(None), TypeError, ["AdaptiveMaxPool2D", "output_size"]),
        (lambda: nn.MaxUnpool2D(0), ValueError, ["MaxUnpool2D", "kernel_size"]),
    ],
)
def test_pool_layer_constructors_check_their_options(make, exc, fragments):
    with pytest.raises(exc) as info:
        make()
    msg = str(info.value)
    assert msg.startswith(fragments[0] + ":") and all(f in msg for f in fragments), msg


def test_global_average_pool_head_keeps_its_plan(rng):
    head = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Dense(8, 3, seed=0))
    x = rng.standard_normal((4, 8, 7, 7)).astype(np.float32)
    y = head.forward(x)
    plan = head[0]._plan
    assert plan is not None and plan.method == "global"
    np.testing.assert_array_equal(head.forward(x), y)
    assert head[0]._plan is plan  # the steady path kept it
    gx = head.backward(np.ones_like(y))
    assert gx.shape == x.shape and gx.dtype == np.float32


def test_maxpool_ties_after_relu_route_to_first(rng):
    """After ReLU most windows tie at 0: the gradient goes to the first (row-major) zero."""
    x = np.array(
        [
            [
                [[-1.0, -2.0], [-3.0, 4.0]],
            ]
        ]
    )[:, :, :, :]
    x = np.concatenate([x, -np.abs(x)], axis=1)  # channel 1: all negative -> all ties
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2D(2))
    y = model.forward(x)
    np.testing.assert_array_equal(y.ravel(), [4.0, 0.0])
    g = np.array([[[[2.5]], [[-1.5]]]])
    gx = model.backward(g)
    # channel 0: the max (4.0) wins; channel 1: all four tie at 0 but
    # ReLU' = 0 there, so nothing passes.  The pool itself picked index 0.
    np.testing.assert_array_equal(gx[0, 0], [[0, 0], [0, 2.5]])
    np.testing.assert_array_equal(gx[0, 1], np.zeros((2, 2)))
    pool = nn.MaxPool2D(2)
    pool.forward(np.maximum(x, 0))
    np.testing.assert_array_equal(pool.backward(g)[0, 1], [[-1.5, 0], [0, 0]])


def test_dense_matches_numpy_and_torch_layout(rng, close):
    layer = nn.Dense(5, 3, dtype=np.float64, seed=2)
    assert layer.params["weight"].shape == (3, 5)
    x = rng.standard_normal((4, 5))
    w, b = layer.params["weight"], layer.params["bias"]
    y = layer.forward(x)
    close(y, x @ w.T + b)
    g = rng.standard_normal((4, 3))
    close(layer.backward(g), g @ w)
    close(layer.grads["weight"], g.T @ x)
    close(layer.grads["bias"], g.sum(0))


@pytest.mark.parametrize(
    "layer, f, df",
    [
        (nn.ReLU(), lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0),
        (
            nn.LeakyReLU(0.3),
            lambda x: np.where(x > 0, x, 0.3 * x),
            lambda x: np.where(x > 0, 1.0, 0.3),
        ),
        (
            nn.Sigmoid(),
            lambda x: 1 / (1 + np.exp(-x)),
            lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2,
        ),
        (nn.Tanh(), np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    ],
    ids=["relu", "leaky", "sigmoid", "tanh"],
)
def test_activations_match_numpy(layer, f, df, rng, close):
    x = rng.standard_normal((3, 4, 5))
    g = rng.standard_normal(x.shape)
    close(layer.forward(x), f(x))
    close(layer.backward(g), g * df(x))


def test_softmax_layer_jacobian(rng, close):
    x = rng.standard_normal((3, 4))
    layer = nn.Softmax()
    y = layer.forward(x)
    e = np.exp(x - x.max(1, keepdims=True))
    close(y, e / e.sum(1, keepdims=True))
    g = rng.standard_normal(x.shape)
    want = np.stack([(np.diag(p) - np.outer(p, p)) @ gi for p, gi in zip(y, g)])
    close(layer.backward(g), want)


def test_flatten_is_a_view_and_inverts(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = nn.Flatten()
    y = layer.forward(x)
    assert y.shape == (2, 60) and np.shares_memory(y, x)
    g = rng.standard_normal((2, 60))
    np.testing.assert_array_equal(layer.backward(g), g.reshape(2, 3, 4, 5))
    with pytest.raises(ValueError, match="Flatten.backward"):
        layer.backward(rng.standard_normal((3, 40)))


# --------------------------------------------------------------------------
# Whole chain against central differences
# --------------------------------------------------------------------------


def _numeric_grad(f, a, eps=1e-6):
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return grad


def _check_model_gradients(model, x, upstream):
    """The model's input and parameter gradients (for the random ``upstream``)
    against float64 central differences."""

    def objective():
        return float(np.sum(model.forward(x) * upstream))

    objective()
    model.zero_grad()
    gx = model.backward(upstream)
    np.testing.assert_allclose(gx, _numeric_grad(objective, x), rtol=1e-5, atol=1e-8)
    for name, p, g in model.named_parameters():
        np.testing.assert_allclose(g, _numeric_grad(objective, p), rtol=1e-5, atol=1e-8,
                                   err_msg=name)


def test_chain_gradients_match_central_differences(rng):
    f64 = np.float64
    model = nn.Sequential(
        nn.Conv2D(2, 3, 3, padding=1, dtype=f64, seed=rng),
        nn.Tanh(),
        nn.AvgPool2D(2),
        nn.Conv2D(3, 2, (1, 2), dtype=f64, seed=rng),
        nn.LeakyReLU(0.1),
        nn.MaxPool2D((1, 2), stride=1),
        nn.Flatten(),
        nn.Dense(2 * 2 * 2, 3, dtype=f64, seed=rng),
        nn.Sigmoid(),
        nn.Dense(3, 4, init="torch", dtype=f64, seed=rng),
        nn.Softmax(),
    )
    x = rng.standard_normal((2, 2, 4, 8))
    upstream = rng.standard_normal((2, 4))
    _check_model_gradients(model, x, upstream)


def test_grads_accumulate_until_zero_grad(rng, close):
    layer = nn.Dense(3, 2, dtype=np.float64, seed=0)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.forward(x)
    layer.backward(g)
    first = layer.grads["weight"].copy()
    layer.backward(g)
    close(layer.grads["weight"], 2 * first)
    grad_obj = layer.grads["weight"]
    layer.zero_grad()
    assert layer.grads["weight"] is grad_obj and not grad_obj.any()


# --------------------------------------------------------------------------
# Initialization, dtype, seeds
# --------------------------------------------------------------------------


def test_init_schemes_statistics():
    fan_in = 64 * 3 * 3
    he = nn.Conv2D(64, 128, 3, seed=0).params
    assert he["weight"].std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.02)
    assert abs(he["weight"].mean()) < 0.01 * np.sqrt(2 / fan_in) * 10
    assert not he["bias"].any()
    gl = nn.Dense(300, 200, init="glorot", seed=0).params
    a = np.sqrt(6 / 500)
    assert gl["weight"].min() >= -a and gl["weight"].max() <= a
    assert gl["weight"].std() == pytest.approx(a / np.sqrt(3), rel=0.02)
    assert not gl["bias"].any()
    tc = nn.Dense(400, 300, init="torch", seed=0).params
    bound = 1 / np.sqrt(400)
    assert tc["weight"].max() <= bound and tc["weight"].min() >= -bound
    assert tc["weight"].max() > 0.95 * bound
    assert tc["bias"].any() and np.abs(tc["bias"]).max() <= bound


def test_seed_and_generator_reproducible():
    a = nn.Conv2D(2, 3, 3, seed=7).params["weight"]
    b = nn.Conv2D(2, 3, 3, seed=7).params["weight"]
    c = nn.Conv2D(2, 3, 3, seed=8).params["weight"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    m1 = nn.Sequential(*(nn.Dense(4, 4, seed=g) for g in [np.random.default_rng(3)] * 2))
    m2 = nn.Sequential(*(nn.Dense(4, 4, seed=g) for g in [np.random.default_rng(3)] * 2))
    for (_, p1, _), (_, p2, _) in zip(m1.named_parameters(), m2.named_parameters()):
        np.testing.assert_array_equal(p1, p2)
    # one shared generator: the two layers get different weights
    assert not np.array_equal(m1.params["0.weight"], m1.params["1.weight"])


def test_dtype_controls_compute(rng):
    x64 = rng.standard_normal((2, 1, 5, 5))
    y32 = nn.Conv2D(1, 2, 3, seed=0).forward(x64)
    y64 = nn.Conv2D(1, 2, 3, dtype=np.float64, seed=0).forward(x64)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    assert nn.Dense(3, 2, seed=0).forward(np.ones((1, 3), dtype=np.uint8)).dtype == np.float32


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: nn.Conv2D(0, 2, 3), ValueError, "in_channels"),
        (lambda: nn.Conv2D(1, 2, True), TypeError, "kernel_size"),
        (lambda: nn.Conv2D(1, 2, 3, stride=0), ValueError, "stride"),
        (lambda: nn.Conv2D(1, 2, 3, bias=1), TypeError, "bias"),
        (lambda: nn.Conv2D(1, 2, 3, dtype=np.int32), TypeError, "dtype"),
        (lambda: nn.Conv2D(1, 2, 3, init="xavier"), ValueError, "init"),
        (lambda: nn.Dense(3, 2, seed=1.5), TypeError, "seed"),
        (lambda: nn.Dense(3, 2, seed=-1), ValueError, "seed"),
        (lambda: nn.Dense(3, 0), ValueError, "out_features"),
        (lambda: nn.MaxPool2D(0), ValueError, "kernel_size"),
        (lambda: nn.AvgPool2D(2, stride=(1, 2, 3)), ValueError, "stride"),
        (lambda: nn.LeakyReLU("a"), TypeError, "alpha"),
        (lambda: nn.LeakyReLU(float("nan")), ValueError, "alpha"),
        (lambda: nn.Dropout(1.5), ValueError, r"\[0, 1\]"),
        (lambda: nn.Softmax(axis=1.0), TypeError, "axis"),
        (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "layer 1"),
    ],
)
def test_constructor_validation(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_forward_validation():
    # A 2-D input of the wrong width names the width, not the ndim.
    with pytest.raises(ValueError, match=r"Dense.forward: x.shape\[1\] \(4\) must equal "
                                         r"in_features \(3\)"):
        nn.Dense(3, 2, seed=0).forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"Dense.forward: x must be 2-D \(N, in_features=3\)"
                                         r".*Flatten"):
        nn.Dense(3, 2, seed=0).forward(np.ones((2, 3, 1)))
    with pytest.raises(ValueError, match=r"Conv2D.forward: x.shape\[1\] \(3\) must equal "
                                         r"in_channels \(2\)"):
        nn.Conv2D(2, 2, 3, seed=0).forward(np.ones((1, 3, 5, 5)))
    with pytest.raises(TypeError, match="Conv2D.forward"):
        nn.Conv2D(1, 2, 3, seed=0).forward(np.ones((1, 1, 5, 5), dtype=complex))
    layer = nn.Dense(3, 2, seed=0)
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="Dense.backward"):
        layer.backward(np.ones((3, 2)))


# --------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------


def test_dropout_train_and_eval(rng):
    x = rng.standard_normal((200, 50)) + 3.0
    drop = nn.Dropout(0.25, seed=0)
    y = drop.forward(x)
    kept = y != 0
    assert kept.mean() == pytest.approx(0.75, abs=0.02)
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(drop.backward(g), np.where(kept, g / 0.75, 0.0))
    # same seed, same masks; a new forward draws a new mask
    assert np.array_equal(nn.Dropout(0.25, seed=0).forward(x) != 0, kept)
    assert not np.array_equal(drop.forward(x) != 0, kept)
    drop.eval()
    assert not drop.training
    np.testing.assert_array_equal(drop.forward(x), x)
    np.testing.assert_array_equal(drop.backward(g), g)
    assert not nn.Dropout(1.0).forward(x).any()


def test_sequential_train_eval_propagate():
    model = nn.Sequential(nn.Dense(2, 2, seed=0), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1)))
    model.eval()
    assert not model.training and not model[1].training and not model[2][0].training
    model.train()
    assert model[1].training and model[2][0].training
    with pytest.raises(TypeError, match="mode"):
        model.train("no")


# --------------------------------------------------------------------------
# Sequential: names, parameters, duplicates
# --------------------------------------------------------------------------


def test_sequential_names_and_live_parameters():
    inner = nn.Sequential(nn.Dense(3, 3, seed=2), nn.ReLU())
    model = nn.Sequential(
        nn.Conv2D(1, 2, 3, bias=False, seed=0), nn.Flatten(), nn.Dense(8, 3, seed=1), inner
    )
    assert list(model.params) == ["0.weight", "2.weight", "2.bias", "3.0.weight", "3.0.bias"]
    assert list(model.grads) == list(model.params)
    assert model.params["2.weight"] is model[2].params["weight"]
    assert model.grads["3.0.bias"] is inner[0].grads["bias"]
    pairs = model.parameters()
    assert [p.shape for p, _ in pairs] == [(2, 1, 3, 3), (3, 8), (3,), (3, 3), (3,)]
    assert all(
        p is model.params[n] and g is model.grads[n] for (n, p, g) in model.named_parameters()
    )
    assert len(model) == 4 and "Dense(8, 3" in repr(model)


def test_sequential_rejects_a_layer_twice():
    relu = nn.ReLU()
    with pytest.raises(ValueError, match="appears twice"):
        nn.Sequential(relu, nn.Dense(2, 2, seed=0), relu)


# --------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------


def _model(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(1, 2, 3, seed=rng), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 3 * 3, 4, seed=rng)
    )


def test_save_load_roundtrip_atomic(tmp_path, rng):
    src, dst = _model(0), _model(1)
    path = tmp_path / "model.weights"
    src.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.weights"]  # exact name, no temp left
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted(f"{k}.npy" for k in src.params)
    weight_obj = dst.params["3.weight"]
    dst.load(path)
    for name, p in src.params.items():
        np.testing.assert_array_equal(dst.params[name], p)
    assert dst.params["3.weight"] is weight_obj  # loaded in place
    x = rng.standard_normal((2, 1, 5, 5))
    np.testing.assert_array_equal(src.forward(x), dst.forward(x))
    # overwrite in place
    src.params["3.bias"][...] = 7
    src.save(path)
    dst.load(str(path))
    assert (dst.params["3.bias"] == 7).all()


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _corruptions(tmp_path, state):
    def variant(name, **changes):
        arrays = dict(state)
        arrays.update(changes)
        arrays = {k: v for k, v in arrays.items() if v is not None}
        p = tmp_path / f"{name}.npz"
        _write_npz(p, **arrays)
        return name, p

    out = [
        variant("missing", **{"3.bias": None}),
        variant("extra", **{"4.weight": np.zeros(3, np.float32)}),
        variant("shape", **{"0.weight": np.zeros((2, 1, 3, 4), np.float32)}),
        variant("dtype", **{"3.weight": state["3.weight"].astype(np.float64)}),
        variant("object", **{"3.bias": np.array([None, 1, "x", 2.0], dtype=object)}),
    ]
    good = tmp_path / "good.npz"
    _write_npz(good, **state)
    raw = good.read_bytes()
    for name, data in [
        ("truncated", raw[: len(raw) // 2]),
        ("garbage", b"not a zip at all" * 10),
        ("empty", b""),
    ]:
        p = tmp_path / f"{name}.npz"
        p.write_bytes(data)
        out.append((name, p))
    # a member whose data is damaged (valid zip directory, bad payload)
    bad = bytearray(raw)
    start = raw.index(b"\x93NUMPY")
    bad[start : start + 6] = b"XXXXXX"
    p = tmp_path / "badmember.npz"
    p.write_bytes(bytes(bad))
    out.append(("badmember", p))
    npy = tmp_path / "single.npy"
    np.save(npy, state["0.weight"])
    out.append(("npy", npy))
    return out


def test_load_rejects_corrupt_or_mismatched_files_leaving_model_unchanged(tmp_path):
    state = _model(0).state_dict()
    model = _model(1)
    before = model.state_dict()
    for name, path in _corruptions(tmp_path, state):
        with pytest.raises(ValueError, match="load") as info:
            model.load(path)
        assert str(path) in str(info.value) or name in ("missing", "extra", "shape", "dtype"), name
        for k, v in before.items():
            np.testing.assert_array_equal(model.params[k], v, err_msg=name)
    with pytest.raises(FileNotFoundError):
        model.load(tmp_path / "nope.npz")


def test_load_messages_name_the_problem(tmp_path):
    state = _model(0).state_dict()
    model = _model(1)
    found = dict(_corruptions(tmp_path, state))
    with pytest.raises(ValueError, match=r"missing \['3.bias'\]"):
        model.load(found["missing"])
    with pytest.raises(ValueError, match=r"unexpected \['4.weight'\]"):
        model.load(found["extra"])
    with pytest.raises(ValueError, match=r"'0.weight' must have shape \(2, 1, 3, 3\)"):
        model.load(found["shape"])
    with pytest.raises(ValueError, match="dtype float32"):
        model.load(found["dtype"])
    with pytest.raises(ValueError, match="(?i)pickle|object"):
        model.load(found["object"])


def test_load_state_dict(rng):
    src, dst = _model(0), _model(1)
    dst.load_state_dict(src.state_dict())
    for k, v in src.params.items():
        np.testing.assert_array_equal(dst.params[k], v)
    state = src.state_dict()
    state["0.bias"] = state["0.bias"][:1]
    before = dst.state_dict()
    with pytest.raises(ValueError, match="0.bias"):
        dst.load_state_dict(state)
    for k, v in before.items():
        np.testing.assert_array_equal(dst.params[k], v)
    # state_dict returns copies
    sd = src.state_dict()
    sd["0.weight"][...] = 0
    assert src.params["0.weight"].any()


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------


def test_softmax_cross_entropy(rng, close):
    logits = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    loss = nn.SoftmaxCrossEntropy()
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()
    value = loss.forward(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert isinstance(value, float)
    assert value == pytest.approx(-np.log(p[np.arange(5), labels]).mean(), rel=1e-12)
    want = p.copy()
    want[np.arange(5), labels] -= 1
    g = loss.backward()
    close(g, want / 5)
    g[...] = 0  # the caller owns the returned array
    close(loss.backward(), want / 5)
    with pytest.raises(TypeError, match="labels"):
        loss.forward(logits, labels.astype(float))


def test_mse_loss(rng, close):
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss = nn.MSELoss()
    value = loss.forward(pred, target)
    assert value == pytest.approx(((pred - target) ** 2).mean(), rel=1e-12)
    close(loss.backward(), 2 * (pred - target) / pred.size)
    num = _numeric_grad(lambda: nn.MSELoss().forward(pred, target), pred)
    np.testing.assert_allclose(loss.backward(), num, rtol=1e-6, atol=1e-9)
    assert nn.MSELoss().forward(np.ones(3, np.float32), np.zeros(3, np.float32)) == 1.0
    with pytest.raises(ValueError, match="MSELoss.forward: pred.shape"):
        loss.forward(pred, target[:2])


# --------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------


def test_lenet_forward_backward_matches_torch(rng):
    torch = pytest.importorskip("torch")
    model = nn.Sequential(
        nn.Conv2D(1, 6, 5, padding=2, dtype=np.float64, seed=rng),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(6, 16, 5, dtype=np.float64, seed=rng),
        nn.ReLU(),
        nn.AvgPool2D(2),
        nn.Flatten(),
        nn.Dense(16 * 4 * 4, 10, dtype=np.float64, seed=rng),
        nn.Tanh(),
    )
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(256, 10),
        torch.nn.Tanh(),
    ).double()
    with torch.no_grad():
        sd = tnet.state_dict()
        assert set(sd) == set(model.params)  # same naming scheme as PyTorch
        for k, v in model.params.items():
            sd[k].copy_(torch.from_numpy(v))
    x = rng.standard_normal((3, 1, 24, 24))
    labels = rng.integers(0, 10, 3)
    loss = nn.SoftmaxCrossEntropy()
    value = loss.forward(model.forward(x), labels)
    model.backward(loss.backward())
    xt = torch.from_numpy(x).requires_grad_(True)
    tl = torch.nn.functional.cross_entropy(tnet(xt), torch.from_numpy(labels))
    tl.backward()
    assert value == pytest.approx(tl.item(), rel=1e-10)
    for name, p in tnet.named_parameters():
        np.testing.assert_allclose(
            model.grads[name], p.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name
        )


# --------------------------------------------------------------------------
# Batch normalization, buffers, residual connections
# --------------------------------------------------------------------------


def _bn_model(seed, dtype=np.float32):
    return nn.Sequential(
        nn.Conv2D(2, 3, 3, padding=1, dtype=dtype, seed=seed),
        nn.BatchNorm2D(3, dtype=dtype),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2D(3, 3, 3, padding=1, dtype=dtype, seed=seed + 1),
                                  nn.BatchNorm2D(3, dtype=dtype))),
        nn.Flatten(),
        nn.Dense(3 * 4 * 4, 2, dtype=dtype, seed=seed + 2),
    )


def _train_steps(model, rng, steps=3):
    from cnnext.optim import SGD
    opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(steps):
        x = rng.standard_normal((4, 2, 4, 4)).astype(np.float32)
        y = model.forward(x)
        opt.zero_grad()
        model.backward(rng.standard_normal(y.shape).astype(np.float32), input_grad=False)
        opt.step()


def test_buffers_named_like_torch_and_not_parameters():
    model = _bn_model(0)
    names = [n for n, _ in model.named_buffers()]
    assert names == ["1.running_mean", "1.running_var", "1.num_batches_tracked",
                     "3.block.1.running_mean", "3.block.1.running_var",
                     "3.block.1.num_batches_tracked"]
    assert list(model.buffers) == names
    assert "1.weight" in model.params and "3.block.0.weight" in model.params
    assert not set(names) & set(model.params)
    state = model.state_dict()
    # PyTorch's order: layer by layer, each layer's parameters before its buffers
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", *names[:3],
                           "3.block.0.weight", "3.block.0.bias", "3.block.1.weight",
                           "3.block.1.bias", *names[3:], "5.weight", "5.bias"]
    ids = {id(p) for p, _ in model.parameters()}
    assert not any(id(b) in ids for _, b in model.named_buffers())
    assert model.buffers["1.num_batches_tracked"].dtype == np.int64


def test_optimizers_never_touch_buffers(rng):
    from cnnext.optim import SGD, Adam
    model = _bn_model(0)
    x = rng.standard_normal((4, 2, 4, 4)).astype(np.float32)
    y = model.forward(x)
    model.backward(np.ones_like(y))
    before = {n: b.copy() for n, b in model.named_buffers()}
    for opt in (SGD(model, lr=0.5, momentum=0.9, weight_decay=0.1),
                Adam(model, lr=0.5, weight_decay=0.1)):
        opt.step()
    for n, b in model.named_buffers():
        np.testing.assert_array_equal(b, before[n], err_msg=n)


def test_buffers_save_load_and_state_dict_roundtrip(tmp_path, rng):
    model = _bn_model(0)
    _train_steps(model, rng)
    assert int(model.buffers["1.num_batches_tracked"]) == 3
    assert not np.allclose(model.buffers["1.running_mean"], 0)
    path = tmp_path / "m.npz"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        assert "3.block.1.running_var.npy" in z.namelist()
    other = _bn_model(5)
    other.load(path)
    for (n, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=n)
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.eval()(x), other.eval()(x))
    # a bad buffer leaves everything unchanged (all checked before anything is assigned)
    third = _bn_model(7)
    keep = third.state_dict()
    state = model.state_dict()
    state["3.block.1.running_var"] = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="running_var"):
        third.load_state_dict(state)
    del state["3.block.1.running_var"]
    with pytest.raises(ValueError, match=r"missing \['3.block.1.running_var'\]"):
        third.load_state_dict(state)
    for n, a in third.state_dict().items():
        np.testing.assert_array_equal(a, keep[n], err_msg=n)
    np.savez(tmp_path / "params_only.npz", **{n: p for n, p in model.params.items()})
    with pytest.raises(ValueError, match="missing"):
        third.load(tmp_path / "params_only.npz")


def test_train_eval_propagate_into_every_container():
    model = _bn_model(0)
    model.eval()
    inner = model[3]
    assert not inner.training and not inner.block.training and not inner.block[1].training
    model.train()
    assert inner.block[1].training and model[1].training


def test_evaluate_runs_in_eval_mode_and_restores(rng):
    from cnnext.train import evaluate
    model = _bn_model(0)
    _train_steps(model, rng, 1)
    before = {n: b.copy() for n, b in model.named_buffers()}
    x = rng.standard_normal((6, 2, 4, 4)).astype(np.float32)
    evaluate(model, nn.SoftmaxCrossEntropy(), x, rng.integers(0, 2, 6), batch_size=4)
    for n, b in model.named_buffers():
        np.testing.assert_array_equal(b, before[n], err_msg=n)  # eval: no statistics update
    assert model.training and model[3].block[1].training
    model.eval()
    evaluate(model, nn.SoftmaxCrossEntropy(), x, rng.integers(0, 2, 6), batch_size=4)
    assert not model.training


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_layer_matches_functional_and_updates(dtype, momentum, rng, close):
    from cnnext import functional as F
    bn = nn.BatchNorm2D(3, momentum=momentum, dtype=dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    for step in range(1, 4):
        x = (rng.standard_normal((4, 3, 5, 2)) * step + step).astype(dtype)
        y = bn(x)
        factor = 1.0 / step if momentum is None else momentum
        close(y, F.batch_norm(x, rm, rv, training=True, momentum=factor))
        close(bn.running_mean, rm)
        close(bn.running_var, rv)
        g = rng.standard_normal(x.shape).astype(dtype)
        bn.zero_grad()
        gx = bn.backward(g)
        want = F.batch_norm_backward(g, x, None, None, np.ones(3, dtype), training=True)
        for got, exp in zip((gx, bn.grads["weight"], bn.grads["bias"]), want):
            close(got, exp)
    bn.eval()
    x = rng.standard_normal((2, 3, 5, 2)).astype(dtype)
    close(bn(x), F.batch_norm(x, rm, rv))
    g = rng.standard_normal(x.shape).astype(dtype)
    close(bn.backward(g), F.batch_norm_backward(g, x, rm, rv, np.ones(3, dtype))[0])


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval(rng, close):
    from cnnext import functional as F
    bn = nn.BatchNorm1D(4, affine=False, track_running_stats=False, dtype=np.float64).eval()
    assert bn.params == {} and bn.buffers == {} and bn.running_mean is None
    x = rng.standard_normal((5, 4, 3))
    close(bn(x), F.batch_norm(x, None, None, training=True))


@pytest.mark.parametrize("make, exc, match", [
    (lambda: nn.BatchNorm2D(0), ValueError, "num_features must be >= 1"),
    (lambda: nn.BatchNorm2D(2.0), TypeError, "num_features must be an int"),
    (lambda: nn.BatchNorm2D(2, eps=0), ValueError, "eps must be finite and in (0.0"),
    (lambda: nn.BatchNorm1D(2, momentum=2), ValueError, "momentum must be finite and in [0.0"),
    (lambda: nn.BatchNorm1D(2, affine=1), TypeError, "affine must be a bool"),
    (lambda: nn.BatchNorm2D(2, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (lambda: nn.Residual(nn.ReLU(), "x"), TypeError, "shortcut must be a cnnext.nn.Module"),
])
def test_norm_and_residual_constructor_validation(make, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        make()


def test_norm_and_residual_forward_validation(rng):
    bn2 = nn.BatchNorm2D(3)
    with pytest.raises(ValueError, match=re.escape("x must be 4-D (N, C, H, W)")):
        bn2(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="num_features .3.*channels-last.*transpose"):
        bn2(np.zeros((2, 4, 5, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn2(np.zeros((1, 3, 1, 1)))
    bn2.eval()(np.zeros((1, 3, 1, 1)))  # fine with running statistics
    with pytest.raises(ValueError, match="BatchNorm1D.forward: x must be 2-D or 3-D"):
        nn.BatchNorm1D(3)(np.zeros((2, 3, 4, 5)))
    bn2.train()(np.ones((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="grad_y.shape must equal"):
        bn2.backward(np.ones((2, 3, 2, 1)))
    res = nn.Residual(nn.Conv2D(2, 3, 1, seed=0))
    with pytest.raises(ValueError, match="block's output shape .* give a shortcut"):
        res(np.zeros((1, 2, 3, 3), np.float32))
    layer = nn.ReLU()
    with pytest.raises(ValueError, match="different layers"):
        nn.Residual(layer, layer)


def _residual_model(rng, dtype=np.float64):
    return nn.Sequential(
        nn.Residual(nn.Sequential(nn.Conv2D(2, 3, 3, stride=2, padding=1, dtype=dtype, seed=rng),
                                  nn.BatchNorm2D(3, dtype=dtype), nn.Tanh(),
                                  nn.Conv2D(3, 3, 3, padding=1, dtype=dtype, seed=rng)),
                    nn.Sequential(nn.Conv2D(2, 3, 1, stride=2, dtype=dtype, seed=rng),
                                  nn.BatchNorm2D(3, dtype=dtype))),
        nn.Tanh(),
        nn.Residual(nn.Sequential(nn.BatchNorm2D(3, dtype=dtype), nn.Sigmoid())),
        nn.Flatten(),
        nn.Dense(3 * 2 * 3, 2, dtype=dtype, seed=rng),
    )


def test_residual_gradients_match_central_differences(rng):
    model = _residual_model(rng)
    x = rng.standard_normal((3, 2, 4, 5))
    upstream = rng.standard_normal((3, 2))
    _check_model_gradients(model, x, upstream)


def test_residual_first_in_sequential_without_input_grad(rng, close):
    model = _residual_model(rng)
    nested = nn.Sequential(nn.Sequential(model[0], model[1]), *model.layers[2:])
    x = rng.standard_normal((3, 2, 4, 5))
    up = rng.standard_normal((3, 2))
    for m in (model, nested):
        m.forward(x)
        m.zero_grad()
        m.backward(up)
        want = {n: g.copy() for n, g in m.grads.items()}
        m.forward(x)
        m.zero_grad()
        assert m.backward(up, input_grad=False) is None
        for n, g in m.grads.items():
            close(g, want[n], err_msg=n)
    assert list(nested.params)[0] == "0.0.block.0.weight"


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_layer_numpy_backend_agrees(training, rng, close):
    import cnnext
    x = rng.standard_normal((4, 3, 5, 2))
    g = rng.standard_normal(x.shape)
    results = []
    for backend in ("cython", "numpy"):
        bn = nn.BatchNorm2D(3, dtype=np.float64)
        bn.params["weight"][:] = [1.0, 2.0, -1.0]
        bn.buffers["running_var"][:] = [0.5, 1.0, 2.0]
        bn.train(training)
        with cnnext.use_backend(backend):
            y = bn(x)
            gx = bn.backward(g)
        results.append([y, gx, bn.grads["weight"], bn.grads["bias"],
                        bn.running_mean.copy(), bn.running_var.copy()])
    for a, b in zip(*results):
        close(a, b)
