"""Tests for :mod:`cnnext.compat.cs231n`, the CS231n assignment-layer adapter.

Three oracles:

* the hard-coded ``correct_out`` arrays of the course's notebooks
  (assignment 2 of CS231n, https://cs231n.github.io/: FullyConnectedNets.ipynb
  and ConvolutionalNetworks.ipynb), with the course's ``rel_error`` and the
  error level the notebooks ask for;
* the course's numerical gradient check (``eval_numerical_gradient_array``
  and ``eval_numerical_gradient`` of ``cs231n/gradient_check.py``,
  re-implemented below: centred differences, h = 1e-5, float64, a random
  upstream gradient), on the notebooks' own inputs (``np.random.seed(231)``)
  and on further geometries;
* a small loop-over-output-positions float64 implementation written here,
  for strides that do not divide, non-square windows and float32 inputs.
"""
import doctest

import numpy as np
import pytest

import cnnext
from cnnext.compat import _cs231n_layers as L_layers
from cnnext.compat import cs231n as L

# --------------------------------------------------------------------------
# The course's checking tools (cs231n/gradient_check.py and the notebooks)
# --------------------------------------------------------------------------


def rel_error(x, y):
    """The notebooks' relative error."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Numerical ``sum(f(x) * df)`` gradient, as in ``cs231n/gradient_check.py``."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = f(x).copy()
        x[ix] = oldval - h
        neg = f(x).copy()
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def eval_numerical_gradient(f, x, h=1e-5):
    """Numerical gradient of a scalar ``f``, as in ``cs231n/gradient_check.py``."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        fxph = f(x)
        x[ix] = oldval - h
        fxmh = f(x)
        x[ix] = oldval
        grad[ix] = (fxph - fxmh) / (2 * h)
        it.iternext()
    return grad


def _seed231():
    """The notebooks' ``np.random.seed(231)``, without touching the global state."""
    return np.random.RandomState(231)


POOL2 = {"pool_height": 2, "pool_width": 2, "stride": 2}

# --------------------------------------------------------------------------
# Hard-coded notebook values
# --------------------------------------------------------------------------

# ConvolutionalNetworks.ipynb, "Convolution: Naive forward pass": x, w, b are
# linspaces, conv_param {'stride': 2, 'pad': 1}; "difference should be
# around e-8".
CONV_CORRECT_OUT = np.array(
    [[[[-0.08759809, -0.10987781], [-0.18387192, -0.2109216]],
      [[0.21027089, 0.21661097], [0.22847626, 0.23004637]],
      [[0.50813986, 0.54309974], [0.64082444, 0.67101435]]],
     [[[-0.98053589, -1.03143541], [-1.19128892, -1.24695841]],
      [[0.69108355, 0.66880383], [0.59480972, 0.56776003]],
      [[2.36270298, 2.36904306], [2.38090835, 2.38247847]]]])

# ConvolutionalNetworks.ipynb, "Max-Pooling: Naive forward"; "difference
# should be on the order of e-8".
POOL_CORRECT_OUT = np.array(
    [[[[-0.26315789, -0.24842105], [-0.20421053, -0.18947368]],
      [[-0.14526316, -0.13052632], [-0.08631579, -0.07157895]],
      [[-0.02736842, -0.01263158], [0.03157895, 0.04631579]]],
     [[[0.09052632, 0.10526316], [0.14947368, 0.16421053]],
      [[0.20842105, 0.22315789], [0.26736842, 0.28210526]],
      [[0.32631579, 0.34105263], [0.38526316, 0.4]]]])

# FullyConnectedNets.ipynb, "Affine layer: forward"; "the error should be
# around e-9 or less".
AFFINE_CORRECT_OUT = np.array([[1.49834967, 1.70660132, 1.91485297],
                               [3.25553199, 3.5141327, 3.77273342]])

# FullyConnectedNets.ipynb, "ReLU activation: forward"; "the error should be
# on the order of e-8".
RELU_CORRECT_OUT = np.array([[0., 0., 0., 0.],
                             [0., 0., 0.04545455, 0.13636364],
                             [0.22727273, 0.31818182, 0.40909091, 0.5]])


@pytest.mark.parametrize("forward", [L.conv_forward_naive, L.conv_forward_fast])
def test_conv_forward_matches_notebook(forward):
    x_shape, w_shape = (2, 3, 4, 4), (3, 3, 4, 4)
    x = np.linspace(-0.1, 0.5, num=np.prod(x_shape)).reshape(x_shape)
    w = np.linspace(-0.2, 0.3, num=np.prod(w_shape)).reshape(w_shape)
    b = np.linspace(-0.1, 0.2, num=3)
    out, cache = forward(x, w, b, {"stride": 2, "pad": 1})
    assert out.shape == (2, 3, 2, 2) and out.dtype == np.float64
    # The notebook's reference solution prints 2.2121476417505994e-08: the
    # constants carry 8 decimals.
    assert rel_error(out, CONV_CORRECT_OUT) < 3e-8
    # The course's cache tuple.
    cx, cw, cb, cparam = cache
    np.testing.assert_array_equal(cx, x)
    np.testing.assert_array_equal(cw, w)
    np.testing.assert_array_equal(cb, b)
    assert cparam == {"stride": 2, "pad": 1}


@pytest.mark.parametrize("forward", [L.max_pool_forward_naive, L.max_pool_forward_fast])
def test_max_pool_forward_matches_notebook(forward):
    x_shape = (2, 3, 4, 4)
    x = np.linspace(-0.3, 0.4, num=np.prod(x_shape)).reshape(x_shape)
    out, cache = forward(x, {"pool_width": 2, "pool_height": 2, "stride": 2})
    assert rel_error(out, POOL_CORRECT_OUT) < 1e-7
    cx, cparam = cache
    np.testing.assert_array_equal(cx, x)
    assert cparam == {"pool_width": 2, "pool_height": 2, "stride": 2}


def test_affine_forward_matches_notebook():
    num_inputs, input_shape, output_dim = 2, (4, 5, 6), 3
    input_size = num_inputs * np.prod(input_shape)
    weight_size = output_dim * np.prod(input_shape)
    x = np.linspace(-0.1, 0.5, num=input_size).reshape(num_inputs, *input_shape)
    w = np.linspace(-0.2, 0.3, num=weight_size).reshape(np.prod(input_shape), output_dim)
    b = np.linspace(-0.3, 0.1, num=output_dim)
    out, cache = L.affine_forward(x, w, b)
    assert rel_error(out, AFFINE_CORRECT_OUT) < 1e-8
    cx, cw, cb = cache
    assert cx.shape == x.shape and cw.shape == (120, 3) and cb.shape == (3,)


def test_relu_forward_matches_notebook():
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, cache = L.relu_forward(x)
    # 4.99999979802e-08 in the notebook: 0.5 vs the rounded constants.
    assert rel_error(out, RELU_CORRECT_OUT) < 1e-7
    np.testing.assert_array_equal(cache, x)


# --------------------------------------------------------------------------
# Numerical gradient checks on the notebooks' inputs
# --------------------------------------------------------------------------


def conv_grad_limit():
    """The notebooks' 1e-8 bound on a convolution's input and weight
    gradients against the numerical ones; 5e-8 with Winograd forced for
    these 3-channel layers (float64 Winograd, as ``"winograd"`` runs it,
    rounds its transforms' sums: the forward differs from the exact one by
    ~1e-15, which the central difference, step 1e-5, carries into the
    numerical gradients)."""
    return 5e-8 if cnnext.get_conv_algorithm() == "winograd" else 1e-8


@pytest.mark.parametrize("variant", ["naive", "fast"])
def test_conv_backward_gradient_check_notebook(variant):
    forward = getattr(L, f"conv_forward_{variant}")
    backward = getattr(L, f"conv_backward_{variant}")
    rs = _seed231()
    x = rs.randn(4, 3, 5, 5)
    w = rs.randn(2, 3, 3, 3)
    b = rs.randn(2,)
    dout = rs.randn(4, 2, 5, 5)
    conv_param = {"stride": 1, "pad": 1}
    dx_num = eval_numerical_gradient_array(lambda x: forward(x, w, b, conv_param)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: forward(x, w, b, conv_param)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: forward(x, w, b, conv_param)[0], b, dout)
    _, cache = forward(x, w, b, conv_param)
    dx, dw, db = backward(dout, cache)
    # "Your errors should be around e-8 or less."
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    assert rel_error(dx, dx_num) < conv_grad_limit()
    assert rel_error(dw, dw_num) < conv_grad_limit()
    assert rel_error(db, db_num) < 1e-8


@pytest.mark.parametrize("variant", ["naive", "fast"])
def test_max_pool_backward_gradient_check_notebook(variant):
    forward = getattr(L, f"max_pool_forward_{variant}")
    backward = getattr(L, f"max_pool_backward_{variant}")
    rs = _seed231()
    x = rs.randn(3, 2, 8, 8)
    dout = rs.randn(3, 2, 4, 4)
    dx_num = eval_numerical_gradient_array(lambda x: forward(x, POOL2)[0], x, dout)
    _, cache = forward(x, POOL2)
    dx = backward(dout, cache)
    # "Your error should be on the order of e-12."
    assert rel_error(dx, dx_num) < 1e-11


def test_affine_backward_gradient_check_notebook():
    rs = _seed231()
    x = rs.randn(10, 2, 3)
    w = rs.randn(6, 5)
    b = rs.randn(5)
    dout = rs.randn(10, 5)
    dx_num = eval_numerical_gradient_array(lambda x: L.affine_forward(x, w, b)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: L.affine_forward(x, w, b)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: L.affine_forward(x, w, b)[0], b, dout)
    _, cache = L.affine_forward(x, w, b)
    dx, dw, db = L.affine_backward(dout, cache)
    # "The error should be around e-10 or less."
    assert dx.shape == (10, 2, 3) and dw.shape == (6, 5) and db.shape == (5,)
    assert rel_error(dx_num, dx) < 1e-9
    assert rel_error(dw_num, dw) < 1e-9
    assert rel_error(db_num, db) < 1e-9


def test_relu_backward_gradient_check_notebook():
    rs = _seed231()
    x = rs.randn(10, 10)
    dout = rs.randn(*x.shape)
    dx_num = eval_numerical_gradient_array(lambda x: L.relu_forward(x)[0], x, dout)
    _, cache = L.relu_forward(x)
    dx = L.relu_backward(dout, cache)
    # "The error should be on the order of e-12."
    assert rel_error(dx_num, dx) < 1e-11


def _loss_inputs():
    # FullyConnectedNets.ipynb, "Loss layers: Softmax and SVM".
    rs = _seed231()
    num_classes, num_inputs = 10, 50
    x = 0.001 * rs.randn(num_inputs, num_classes)
    y = rs.randint(num_classes, size=num_inputs)
    return x, y


def test_svm_loss_notebook():
    x, y = _loss_inputs()
    dx_num = eval_numerical_gradient(lambda x: L.svm_loss(x, y)[0], x)
    loss, dx = L.svm_loss(x, y)
    # "Loss should be around 9 and dx error should be around the order of e-9."
    assert abs(loss - 9.0) < 0.01
    assert rel_error(dx_num, dx) < 1e-8
    # The course's vectorised formula (given in its layers.py).
    N = x.shape[0]
    margins = np.maximum(0, x - x[np.arange(N), y][:, None] + 1.0)
    margins[np.arange(N), y] = 0
    assert loss == pytest.approx(np.sum(margins) / N, rel=1e-14)


def test_softmax_loss_notebook():
    x, y = _loss_inputs()
    dx_num = eval_numerical_gradient(lambda x: L.softmax_loss(x, y)[0], x)
    loss, dx = L.softmax_loss(x, y)
    # "Loss should be close to 2.3 and dx error should be around e-8."
    assert abs(loss - np.log(10)) < 0.01
    assert rel_error(dx_num, dx) < 1e-7
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_probs[np.arange(50), y].mean(), rel=1e-14)


def test_affine_relu_gradient_check_notebook():
    rs = _seed231()
    x = rs.randn(2, 3, 4)
    w = rs.randn(12, 10)
    b = rs.randn(10)
    dout = rs.randn(2, 10)
    out, cache = L.affine_relu_forward(x, w, b)
    dx, dw, db = L.affine_relu_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda x: L.affine_relu_forward(x, w, b)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: L.affine_relu_forward(x, w, b)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: L.affine_relu_forward(x, w, b)[0], b, dout)
    # "Relative error should be around e-10 or less."
    assert rel_error(dx_num, dx) < 1e-9
    assert rel_error(dw_num, dw) < 1e-9
    assert rel_error(db_num, db) < 1e-9
    fc_cache, relu_cache = cache
    assert len(fc_cache) == 3 and relu_cache.shape == (2, 10)


def test_conv_relu_gradient_check_notebook():
    rs = _seed231()
    x = rs.randn(2, 3, 8, 8)
    w = rs.randn(3, 3, 3, 3)
    b = rs.randn(3,)
    dout = rs.randn(2, 3, 8, 8)
    conv_param = {"stride": 1, "pad": 1}
    out, cache = L.conv_relu_forward(x, w, b, conv_param)
    dx, dw, db = L.conv_relu_backward(dout, cache)
    fwd = L.conv_relu_forward
    dx_num = eval_numerical_gradient_array(lambda x: fwd(x, w, b, conv_param)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: fwd(x, w, b, conv_param)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: fwd(x, w, b, conv_param)[0], b, dout)
    # "Relative errors should be around e-8 or less."
    assert rel_error(dx_num, dx) < 1e-8
    assert rel_error(dw_num, dw) < 1e-8
    assert rel_error(db_num, db) < 1e-8


def test_conv_relu_pool_gradient_check_notebook():
    rs = _seed231()
    x = rs.randn(2, 3, 16, 16)
    w = rs.randn(3, 3, 3, 3)
    b = rs.randn(3,)
    dout = rs.randn(2, 3, 8, 8)
    conv_param = {"stride": 1, "pad": 1}
    out, cache = L.conv_relu_pool_forward(x, w, b, conv_param, POOL2)
    assert out.shape == (2, 3, 8, 8)
    dx, dw, db = L.conv_relu_pool_backward(dout, cache)
    fwd = L.conv_relu_pool_forward
    dx_num = eval_numerical_gradient_array(lambda x: fwd(x, w, b, conv_param, POOL2)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: fwd(x, w, b, conv_param, POOL2)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: fwd(x, w, b, conv_param, POOL2)[0], b, dout)
    # "Relative errors should be around e-8 or less."
    assert rel_error(dx_num, dx) < conv_grad_limit()
    assert rel_error(dw_num, dw) < conv_grad_limit()
    assert rel_error(db_num, db) < 1e-8
    conv_cache, relu_cache, pool_cache = cache
    assert len(conv_cache) == 4 and len(pool_cache) == 2


# --------------------------------------------------------------------------
# Further geometries: gradient checks and a loop oracle
# --------------------------------------------------------------------------


def loop_conv(x, w, b, s, p):
    N, C, H, W = x.shape
    Fo, _, HH, WW = w.shape
    xp = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    OH, OW = (H + 2 * p - HH) // s + 1, (W + 2 * p - WW) // s + 1
    out = np.empty((N, Fo, OH, OW))
    for i in range(OH):
        for j in range(OW):
            win = xp[:, :, i * s:i * s + HH, j * s:j * s + WW]
            out[:, :, i, j] = np.tensordot(win, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def loop_conv_backward(dout, x, w, s, p):
    N, C, H, W = x.shape
    _, _, HH, WW = w.shape
    xp = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            g = dout[:, :, i, j]                                    # (N, F)
            win = xp[:, :, i * s:i * s + HH, j * s:j * s + WW]      # (N, C, HH, WW)
            dxp[:, :, i * s:i * s + HH, j * s:j * s + WW] += np.tensordot(g, w, axes=(1, 0))
            dw += np.tensordot(g, win, axes=(0, 0))
    return dxp[:, :, p:p + H, p:p + W], dw, dout.sum(axis=(0, 2, 3))


def loop_max_pool(x, ph, pw, s):
    N, C, H, W = x.shape
    OH, OW = (H - ph) // s + 1, (W - pw) // s + 1
    out = np.empty((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            out[:, :, i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].max(axis=(2, 3))
    return out


# (x shape, w shape, stride, pad): strides that do not divide, stride larger
# than the kernel, padding larger than the kernel, non-square kernels.
CONV_GEOMS = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 2, 0),
    ((1, 2, 6, 9), (3, 2, 2, 4), 3, 1),
    ((2, 1, 5, 5), (2, 1, 1, 1), 1, 2),
    ((1, 2, 4, 5), (2, 2, 3, 2), 1, 3),
    ((3, 2, 9, 6), (2, 2, 4, 3), 4, 2),
]


@pytest.mark.parametrize("xs, ws, stride, pad", CONV_GEOMS)
def test_conv_other_geometries(xs, ws, stride, pad, rng, close):
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    conv_param = {"stride": stride, "pad": pad}
    out, cache = L.conv_forward_naive(x, w, b, conv_param)
    close(out, loop_conv(x, w, b, stride, pad))
    dout = rng.standard_normal(out.shape)
    dx, dw, db = L.conv_backward_fast(dout, cache)
    for got, want in zip((dx, dw, db), loop_conv_backward(dout, x, w, stride, pad)):
        close(got, want)
    # The course's check too.  Away from the notebook's inputs a gradient
    # entry close to zero can show a finite-difference error of ~1e-8.
    fwd = L.conv_forward_fast
    dx_num = eval_numerical_gradient_array(lambda x: fwd(x, w, b, conv_param)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: fwd(x, w, b, conv_param)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: fwd(x, w, b, conv_param)[0], b, dout)
    assert rel_error(dx, dx_num) < 1e-7
    assert rel_error(dw, dw_num) < 1e-7
    assert rel_error(db, db_num) < 1e-7


# (x shape, pool_height, pool_width, stride): overlapping windows, windows
# that do not tile, non-square windows.
POOL_GEOMS = [
    ((2, 3, 7, 7), 3, 3, 2),
    ((1, 2, 6, 9), 2, 3, 1),
    ((2, 1, 5, 8), 1, 2, 3),
    ((1, 2, 9, 6), 4, 2, 2),
]


@pytest.mark.parametrize("xs, ph, pw, stride", POOL_GEOMS)
def test_max_pool_other_geometries(xs, ph, pw, stride, rng, close):
    x = rng.standard_normal(xs)
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = L.max_pool_forward_fast(x, pool_param)
    close(out, loop_max_pool(x, ph, pw, stride))
    dout = rng.standard_normal(out.shape)
    dx = L.max_pool_backward_naive(dout, cache)
    fwd = L.max_pool_forward_naive
    dx_num = eval_numerical_gradient_array(lambda x: fwd(x, pool_param)[0], x, dout)
    # Overlapping windows accumulate where they pick the same input.
    assert rel_error(dx, dx_num) < 1e-11


def test_max_pool_ties_go_to_the_first_maximum():
    # A window of four equal values, as after a ReLU: the whole gradient goes
    # to the first maximum in row-major order (the course's fast "reshape"
    # path would give 1/4 to each of the four).
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = [[3.0, 3.0], [1.0, 3.0]]
    out, cache = L.max_pool_forward_fast(x, POOL2)
    dx = L.max_pool_backward_fast(np.full((1, 1, 2, 2), 8.0), cache)
    want = np.zeros((4, 4))
    want[0, 0] = want[0, 2] = want[2, 0] = want[2, 2] = 8.0
    np.testing.assert_array_equal(dx[0, 0], want)
    np.testing.assert_array_equal(L.max_pool_backward_naive(np.full((1, 1, 2, 2), 8.0), cache),
                                  dx)


def test_affine_other_shapes(rng):
    for xs, M in [((5,), 3), ((4, 7), 2), ((3, 2, 2, 2), 4)]:
        x = rng.standard_normal(xs)
        D = int(np.prod(xs[1:]))
        w, b = rng.standard_normal((D, M)), rng.standard_normal(M)
        out, cache = L.affine_forward(x, w, b)
        np.testing.assert_allclose(out, x.reshape(xs[0], D) @ w + b, rtol=1e-12, atol=1e-12)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = L.affine_backward(dout, cache)
        assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
        np.testing.assert_allclose(dx, (dout @ w.T).reshape(xs), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, x.reshape(xs[0], D).T @ dout, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db, dout.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_float32_in_float32_out(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    conv_param = {"stride": 1, "pad": 1}
    out, cache = L.conv_relu_pool_forward(x, w, b, conv_param, POOL2)
    assert out.dtype == np.float32
    ref, _ = L.conv_relu_pool_forward(x.astype(np.float64), w.astype(np.float64),
                                      b.astype(np.float64), conv_param, POOL2)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    dx, dw, db = L.conv_relu_pool_backward(np.ones_like(out), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    loss, dscores = L.softmax_loss(rng.standard_normal((3, 5)).astype(np.float32), [0, 4, 2])
    assert dscores.dtype == np.float32 and isinstance(loss, float)
    loss, dscores = L.svm_loss(rng.standard_normal((3, 5)).astype(np.float32), [0, 4, 2])
    assert dscores.dtype == np.float32 and isinstance(loss, float)


def test_inputs_not_modified(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(2)
    dout = rng.standard_normal((2, 2, 3, 3))
    saved = [a.copy() for a in (x, w, b, dout)]
    out, cache = L.conv_relu_pool_forward(x, w, b, {"stride": 1, "pad": 1}, POOL2)
    L.conv_relu_pool_backward(dout, cache)
    out, cache = L.affine_relu_forward(x, rng.standard_normal((108, 4)), np.zeros(4))
    L.affine_relu_backward(np.ones((2, 4)), cache)
    for a, s in zip((x, w, b, dout), saved):
        np.testing.assert_array_equal(a, s)


def test_svm_loss_gradient_where_margins_are_positive():
    x = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    y = np.array([0, 2])
    loss, dx = L.svm_loss(x, y)
    # sample 0: margins 2 and 0.5 (both > 0); sample 1: -2, -2 (none).
    assert loss == pytest.approx((2.0 + 0.5) / 2)
    np.testing.assert_allclose(dx, [[-1.0, 0.5, 0.5], [0.0, 0.0, 0.0]])
    assert L.svm_loss(np.zeros((0, 3)), np.zeros(0, dtype=int))[0] == 0.0


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_errors(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    b = np.zeros(3)
    with pytest.raises(ValueError, match=r"conv_forward_naive: conv_param must contain the key "
                                         r"'pad'"):
        L.conv_forward_naive(x, w, b, {"stride": 1})
    with pytest.raises(TypeError, match=r"conv_forward_fast: conv_param must be a dict"):
        L.conv_forward_fast(x, w, b, (1, 0))
    with pytest.raises(ValueError, match=r"conv_forward_naive: conv_param\['stride'\] must be "
                                         r">= 1, got 0"):
        L.conv_forward_naive(x, w, b, {"stride": 0, "pad": 0})
    with pytest.raises(ValueError, match=r"conv_forward_naive: w.shape\[1\] \(1\) must equal "
                                         r"x.shape\[1\] \(2\)"):
        L.conv_forward_naive(x, w[:, :1], b, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"conv_forward_naive: b must hold one bias per filter"):
        L.conv_forward_naive(x, w, np.zeros(2), {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"conv_forward_naive: x must be 4-D"):
        L.conv_forward_naive(x[0], w, b, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"conv_forward_naive: the window \(7\) is larger than "
                                         r"the padded input along height"):
        L.conv_forward_naive(x, rng.standard_normal((3, 2, 7, 3)), b, {"stride": 1, "pad": 0})
    out, cache = L.conv_forward_naive(x, w, b, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"conv_backward_naive: dout.shape must be the "
                                         r"conv_forward_naive output shape \(1, 3, 3, 3\)"):
        L.conv_backward_naive(np.zeros((1, 3, 2, 2)), cache)
    with pytest.raises(TypeError, match=r"conv_backward_fast: cache must be the 4-tuple"):
        L.conv_backward_fast(out, cache[:3])
    with pytest.raises(ValueError, match=r"max_pool_forward_naive: pool_param must contain the "
                                         r"key 'pool_width'"):
        L.max_pool_forward_naive(x, {"pool_height": 2, "stride": 2})
    p, pc = L.max_pool_forward_fast(x, POOL2)
    with pytest.raises(ValueError, match=r"max_pool_backward_fast: dout.shape must be the "
                                         r"max_pool_forward_fast output shape \(1, 2, 2, 2\)"):
        L.max_pool_backward_fast(np.zeros((1, 2, 3, 3)), pc)
    with pytest.raises(ValueError, match=r"affine_forward: x must have D = w.shape\[0\] = 10 "
                                         r"values per sample; x of shape \(1, 2, 5, 5\) has 50 "
                                         r"\(w is \(D, M\), not PyTorch's \(M, D\)\)"):
        L.affine_forward(x, np.zeros((10, 50)), np.zeros(50))
    with pytest.raises(ValueError, match=r"affine_forward: b must hold one bias per output"):
        L.affine_forward(x, np.zeros((50, 4)), np.zeros(3))
    with pytest.raises(ValueError, match=r"relu_backward: dout.shape must be the relu_forward "
                                         r"output shape \(2, 3\)"):
        L.relu_backward(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"softmax_loss: y must hold integer class labels"):
        L.softmax_loss(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"svm_loss: y must lie in \[0, 3\) for 3 classes, got "
                                         r"values in \[0, 3\]"):
        L.svm_loss(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"svm_loss: y.shape must be \(2,\)"):
        L.svm_loss(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match=r"conv_relu_pool_backward: cache must be the 3-tuple"):
        L.conv_relu_pool_backward(out, cache)


@pytest.mark.parametrize("module", [L, L_layers])
def test_module_doctests(module):
    # cs231n.py holds the layer_utils sandwiches; the layers it re-exports
    # live (with their examples) in _cs231n_layers.py.
    with np.printoptions(legacy=False):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 15
    assert result.failed == 0
