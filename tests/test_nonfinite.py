"""NaN and inf in the data propagate as in PyTorch, and inputs (including
the upstream gradient given to backward functions and ``layer.backward``)
are never modified.

Compared with ``torch.nn.functional`` when torch is importable, else with
the numpy reference (``cnnext.reference``).
"""
import numpy as np
import pytest

import cnnext
from cnnext import functional as F
from cnnext import nn
from cnnext import reference as R

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

NAN, INF = np.nan, np.inf


def _poison(a, rng, frac=0.1):
    a = a.copy()
    flat = a.reshape(-1)
    k = max(1, int(flat.size * frac))
    pos = rng.choice(flat.size, k, replace=False)
    flat[pos] = rng.choice([NAN, INF, -INF], k)
    return a


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _same(got, want):
    """Equal with NaN == NaN and identical infinities; close elsewhere."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg="+inf positions")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg="-inf positions")
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-9, atol=1e-9)


#: Regression: the stride-1 input-gradient path (conv2d_backward's grad_x,
#: conv_transpose2d at stride 1, full_conv2d) used to run the forward kernel
#: over a zero-padded gradient even for an inf/NaN weight, so 0*inf = NaN
#: appeared where PyTorch's scatter gives finite values, e.g.
#: full_conv2d(ones((1,1,2,2)), w with w[0,0,0,0]=inf) must be
#: [[inf, inf, 1], [inf, inf, 2], [1, 2, 1]].  Non-finite weights now take
#: the scatter (col2im) path.


@pytest.fixture(params=[
    "x", "grad_out",
    "weight",
    "all",
])
def poisoned_s1(request, rng):
    return _make_poisoned(request.param, rng, (2, 4, 7, 9), dict(stride=1, padding=(0, 1)))


@pytest.fixture(params=["x", "weight", "grad_out", "all"])
def poisoned(request, rng):
    return _make_poisoned(request.param, rng, (2, 4, 5, 9), KW)


def _need_torch_for_weight(w):
    if torch is None and not np.isfinite(w).all():
        pytest.skip("the numpy reference is no oracle for inf/NaN weights in the "
                    "input-gradient direction (it pads too); needs torch")


def _make_poisoned(which, rng, gshape, kw):
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 2))
    g = rng.standard_normal(gshape)
    assert F.conv2d(x, w, **kw).shape == gshape
    if which in ("x", "all"):
        x = _poison(x, rng)
    if which in ("weight", "all"):
        w = _poison(w, rng, 0.05)
    if which in ("grad_out", "all"):
        g = _poison(g, rng)
    return x, w, g, kw


KW = dict(stride=(2, 1), padding=(1, 1))


def test_conv2d_forward_and_backward_nonfinite(poisoned):
    _check_conv2d(*poisoned)


def test_conv2d_stride1_nonfinite(poisoned_s1):
    _need_torch_for_weight(poisoned_s1[1])
    _check_conv2d(*poisoned_s1)


def _check_conv2d(x, w, g, KW):
    copies = [a.copy() for a in (x, w, g)]
    y = F.conv2d(x, w, **KW)
    gx, gw, gb = F.conv2d_backward(g, x, w, **KW)
    for a, c in zip((x, w, g), copies):
        np.testing.assert_array_equal(a, c)  # NaN-aware: inputs untouched
    if torch is not None:
        tx, tw = _t(x).requires_grad_(), _t(w).requires_grad_()
        tb = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        ty = torch.nn.functional.conv2d(tx, tw, tb, **KW)
        ty.backward(_t(g))
        want = (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy())
    else:
        want = (R.conv2d(x, w, **KW),) + tuple(R.conv2d_backward(g, x, w, **KW))
    for got_a, want_a in zip((y, gx, gw, gb), want):
        _same(got_a, want_a)


def test_conv_transpose_nonfinite(poisoned):
    x, w, g, KW = poisoned
    _need_torch_for_weight(w)
    y = F.conv_transpose2d(g, w, **KW)
    want = (torch.nn.functional.conv_transpose2d(_t(g), _t(w), **KW).numpy()
            if torch is not None else R.conv_transpose2d(g, w, **KW))
    _same(y, want)


def test_conv_transpose_and_full_conv_stride1_nonfinite(poisoned_s1):
    x, w, g, KW = poisoned_s1
    _need_torch_for_weight(w)
    wt = w  # read as (C_in=4, C_out=3, kH, kW)
    y = F.conv_transpose2d(g, wt, **KW)
    f = F.full_conv2d(g, wt)
    if torch is not None:
        want_y = torch.nn.functional.conv_transpose2d(_t(g), _t(wt), **KW).numpy()
        want_f = torch.nn.functional.conv_transpose2d(_t(g), _t(wt)).numpy()
    else:
        want_y, want_f = R.conv_transpose2d(g, wt, **KW), R.full_conv2d(g, wt)
    _same(y, want_y)
    _same(f, want_f)


@pytest.mark.parametrize("padding", [0, 1])
def test_max_pool_nan_wins_and_inf(rng, padding):
    x = np.maximum(np.round(rng.standard_normal((2, 3, 8, 7))), 0)  # ties
    x = _poison(x, rng, 0.08)
    xc = x.copy()
    y, idx = F.max_pool2d(x, 3, 2, padding, return_indices=True)
    g = rng.standard_normal(y.shape)
    gc = g.copy()
    gx = F.max_pool2d_backward(g, idx, x.shape)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(g, gc)
    # A window holding a NaN returns NaN, and its index points at a NaN.
    flat = x.reshape(6, -1)
    picked = np.take_along_axis(flat, idx.reshape(6, -1), axis=1).reshape(y.shape)
    assert np.isnan(y).any(), "the poisoned input should put a NaN in some window"
    np.testing.assert_array_equal(np.isnan(picked), np.isnan(y))
    _same(picked, y)
    if torch is not None:
        ty, ti = torch.nn.functional.max_pool2d(_t(x), 3, 2, padding, return_indices=True)
        tx = _t(x).requires_grad_()
        torch.nn.functional.max_pool2d(tx, 3, 2, padding).backward(_t(g))
        want = (ty.numpy(), ti.numpy(), tx.grad.numpy())
    else:
        want_y, want_idx = R.max_pool2d(x, 3, 2, padding, return_indices=True)
        want = (want_y, want_idx, R.max_pool2d_backward(g, want_idx, x.shape))
    _same(y, want[0])
    np.testing.assert_array_equal(idx, want[1])
    _same(gx, want[2])


def test_avg_pool_and_activations_nonfinite(rng):
    x = _poison(rng.standard_normal((2, 3, 6, 6)), rng)
    a = F.avg_pool2d(x, 2, padding=1)
    want = (torch.nn.functional.avg_pool2d(_t(x), 2, padding=1).numpy() if torch is not None
            else R.avg_pool2d(x, 2, padding=1))
    _same(a, want)
    for fn, tfn in ((F.relu, "relu"), (F.sigmoid, "sigmoid"), (F.tanh, "tanh")):
        got = fn(x)
        if torch is not None:
            ref = getattr(torch, tfn)(_t(x)).numpy()
        else:
            ref = getattr(R, tfn)(x)
        _same(got, ref)


def test_nan_in_one_sample_does_not_leak_into_others(rng):
    """Batch rows are independent: a NaN in sample 0 must not reach sample 1
    (a shared scratch buffer or 0*inf in padding would)."""
    x = rng.standard_normal((2, 3, 9, 8))
    x[0, 1, 4, 4] = NAN
    x[0, 2, 0, 0] = INF
    w = rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 5, 4))
    with cnnext.use_backend("cython"):
        y = F.conv2d(x, w, stride=2, padding=1)
        gx, _, _ = F.conv2d_backward(g, x, w, stride=2, padding=1)
    assert np.isfinite(y[1]).all() and np.isfinite(gx[1]).all()
    assert np.isnan(y[0]).any()


LAYER_CASES = [
    (lambda: nn.Conv2D(3, 4, 3, stride=2, padding=1, seed=0), (2, 3, 9, 8)),
    (lambda: nn.Dense(5, 3, seed=0), (4, 5)),
    (lambda: nn.MaxPool2D(3, 2, 1), (2, 3, 9, 8)),
    (lambda: nn.AvgPool2D(2, padding=1), (2, 3, 9, 8)),
    (lambda: nn.Flatten(), (2, 3, 4, 4)),
    (lambda: nn.ReLU(), (2, 7)),
    (lambda: nn.LeakyReLU(0.1), (2, 7)),
    (lambda: nn.Sigmoid(), (2, 7)),
    (lambda: nn.Tanh(), (2, 7)),
    (lambda: nn.Softmax(), (2, 7)),
    (lambda: nn.Dropout(0.5, seed=0), (2, 7)),
]


@pytest.mark.parametrize("make,shape", LAYER_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_backward_never_modifies_inputs(rng, make, shape, dtype):
    """forward(x) and backward(grad_y) leave x and grad_y bit-for-bit
    unchanged, also when they hold NaN/inf and when backward runs twice."""
    layer = make()
    x = _poison(rng.standard_normal(shape), rng, 0.05).astype(dtype)
    xc = x.copy()
    y = layer.forward(x)
    g = _poison(rng.standard_normal(y.shape), rng, 0.05).astype(y.dtype)
    gc = g.copy()
    for _ in range(2):
        gx = layer.backward(g)
        assert gx.shape == x.shape
        assert x.tobytes() == xc.tobytes()
        assert g.tobytes() == gc.tobytes()


def test_full_conv2d_inf_weight_matches_torch_example():
    w = np.ones((1, 1, 2, 2))
    w[0, 0, 0, 0] = np.inf
    got = F.full_conv2d(np.ones((1, 1, 2, 2)), w)[0, 0]
    want = np.array([[np.inf, np.inf, 1.0], [np.inf, np.inf, 2.0], [1.0, 2.0, 1.0]])
    np.testing.assert_array_equal(got, want)
