"""cnnext.functional against torch.nn.functional (PyTorch CPU), the
semantics cnnext promises to reproduce.

Forward values, autograd gradients (for a *random* upstream gradient) and
max-pool indices -- compared exactly, including ties, NaN and -inf -- over a
handful of odd geometries in float32 and float64.  Skipped when torch is not
installed.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional

import cnnext  # noqa: E402
from cnnext import functional as F  # noqa: E402

pytestmark = pytest.mark.torch

DTYPES = [np.float32, np.float64]

# (id, N, C_in, C_out, H, W, kernel, stride, padding, dilation)
CONV_GEOMS = [
    ("1x1", 2, 3, 4, 5, 6, (1, 1), (1, 1), (0, 0), (1, 1)),
    ("1x1-stride", 2, 5, 3, 9, 34, (1, 1), (2, 3), (0, 0), (1, 1)),
    ("2x3", 2, 2, 3, 6, 7, (2, 3), (1, 1), (0, 0), (1, 1)),
    ("3x5-pad-stride", 3, 3, 2, 9, 11, (3, 5), (2, 1), (1, 2), (1, 1)),
    ("stride>kernel", 2, 2, 3, 11, 13, (2, 2), (3, 4), (0, 0), (1, 1)),
    ("pad-near-kernel", 1, 1, 2, 5, 4, (3, 3), (1, 1), (2, 2), (1, 1)),
    ("dilation", 2, 3, 2, 11, 10, (3, 2), (2, 3), (2, 1), (2, 3)),
    ("primes", 3, 5, 7, 13, 11, (3, 5), (2, 3), (1, 2), (1, 1)),
    ("K>256", 2, 29, 9, 9, 10, (3, 3), (1, 1), (1, 1), (1, 1)),
]
CONV_IDS = [g[0] for g in CONV_GEOMS]


def t(a, requires_grad=False):
    return torch.from_numpy(np.array(a, copy=True)).requires_grad_(requires_grad)


def n(tensor):
    return tensor.detach().numpy()


def _geom(g):
    _, N, Ci, Co, H, W, k, s, p, d = g
    return N, Ci, Co, H, W, k, dict(stride=s, padding=p, dilation=d)


# --------------------------------------------------------------------------
# convolutions
# --------------------------------------------------------------------------


def _agrees_with_torch(name, x, w, b, kw, dtype, rng, close):
    """``F.<name>`` and ``F.<name>_backward`` (for a random upstream gradient)
    against torch's op and autograd: output, grad_x, grad_weight, grad_bias."""
    tx, tw, tb = t(x, True), t(w, True), t(b, True)
    with warnings.catch_warnings():  # "same" with an even kernel: a padded copy
        warnings.simplefilter("ignore", UserWarning)
        ty = getattr(TF, name)(tx, tw, tb, **kw)
    y = getattr(F, name)(x, w, b, **kw)
    assert y.shape == tuple(ty.shape) and y.dtype == dtype
    close(y, n(ty), dtype)
    go = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(go))
    gx, gw, gb = getattr(F, f"{name}_backward")(go, x, w, **kw)
    close(gx, n(tx.grad), dtype, err_msg="grad_x")
    close(gw, n(tw.grad), dtype, err_msg="grad_weight")
    close(gb, n(tb.grad), dtype, err_msg="grad_bias")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", CONV_GEOMS, ids=CONV_IDS)
def test_conv2d_and_backward(g, dtype, rng, close):
    N, Ci, Co, H, W, k, kw = _geom(g)
    x = rng.standard_normal((N, Ci, H, W)).astype(dtype)
    w = rng.standard_normal((Co, Ci) + k).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    _agrees_with_torch("conv2d", x, w, b, kw, dtype, rng, close)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [(32, 1, 6, 28, 2), (32, 6, 16, 14, 0), (32, 1, 6, 28, 0),
                                  (1, 5, 12, 9, 1)])
def test_small_convolutions_backward_agree_with_torch(geom, dtype, rng, close):
    """LeNet's convolutions and smaller odd ones (the small convolutions'
    direct backward kernels in float32 where AVX-512F runs them)."""
    N, Ci, Co, H, p = geom
    x = rng.standard_normal((N, Ci, H, H)).astype(dtype)
    w = rng.standard_normal((Co, Ci, 5, 5)).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    _agrees_with_torch("conv2d", x, w, b, {"padding": p}, dtype, rng, close)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", CONV_GEOMS, ids=CONV_IDS)
def test_conv_transpose2d_and_its_gradients(g, dtype, rng, close):
    N, Ci, Co, H, W, k, kw = _geom(g)
    op = tuple(max(s, d) - 1 for s, d in zip(kw["stride"], kw["dilation"]))
    kw = dict(kw, output_padding=op)
    x = rng.standard_normal((N, Ci, H, W)).astype(dtype)
    w = rng.standard_normal((Ci, Co) + k).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    tx, tw = t(x, True), t(w, True)
    ty = TF.conv_transpose2d(tx, tw, t(b), **kw)
    y = F.conv_transpose2d(x, w, b, **kw)
    assert y.shape == tuple(ty.shape) and y.dtype == dtype
    close(y, n(ty), dtype)
    # The gradient of a transposed convolution w.r.t. its input is conv2d.
    go = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(go))
    no_op = {key: v for key, v in kw.items() if key != "output_padding"}
    close(F.conv2d(go, w, **no_op), n(tx.grad), dtype)


# (id, N, C_in, C_out, groups, H, W, kernel, stride, padding, dilation)
GROUP_GEOMS = [
    ("g2-2x3", 2, 4, 6, 2, 6, 7, (2, 3), (1, 1), (0, 0), (1, 1)),
    ("g3-stride>kernel-pad", 2, 6, 3, 3, 11, 13, (2, 2), (3, 4), (1, 0), (1, 1)),
    ("depthwise-3x3", 2, 5, 5, 5, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1)),
    ("depthwise-x2-dilation", 1, 3, 6, 3, 9, 8, (3, 2), (2, 1), (2, 0), (2, 3)),
    ("g2-same-2x3", 2, 4, 6, 2, 6, 7, (2, 3), (1, 1), "same", (1, 1)),
    ("same-4x2-dilation", 2, 3, 2, 1, 7, 5, (4, 2), (1, 1), "same", (1, 2)),
    ("same-2x2-dilation-2", 1, 2, 2, 1, 5, 6, (2, 2), (1, 1), "same", (2, 2)),
    ("g4-valid-primes", 3, 8, 12, 4, 13, 11, (3, 5), (2, 3), "valid", (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", GROUP_GEOMS, ids=[g[0] for g in GROUP_GEOMS])
def test_grouped_and_padded_conv2d_and_backward(g, dtype, rng, close):
    _, N, Ci, Co, G, H, W, k, s, p, d = g
    kw = dict(stride=s, padding=p, dilation=d, groups=G)
    x = rng.standard_normal((N, Ci, H, W)).astype(dtype)
    w = rng.standard_normal((Co, Ci // G) + k).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    _agrees_with_torch("conv2d", x, w, b, kw, dtype, rng, close)


# (id, N, C_in, C_out, groups, H, W, kernel, stride, padding, output_padding, dilation)
TRANSPOSE_GEOMS = [
    ("g2-2x3-s2-op1", 2, 4, 6, 2, 5, 6, (2, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    ("g2-dilation-op", 2, 6, 4, 2, 4, 5, (3, 2), (1, 1), (0, 0), (1, 1), (2, 2)),
    ("depthwise-stride>kernel", 1, 3, 3, 3, 4, 3, (2, 2), (3, 4), (1, 0), (2, 3), (2, 1)),
    ("primes", 3, 5, 7, 1, 7, 5, (3, 5), (2, 3), (1, 2), (1, 0), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", TRANSPOSE_GEOMS, ids=[g[0] for g in TRANSPOSE_GEOMS])
def test_grouped_conv_transpose2d_and_backward(g, dtype, rng, close):
    _, N, Ci, Co, G, H, W, k, s, p, op, d = g
    kw = dict(stride=s, padding=p, output_padding=op, groups=G, dilation=d)
    x = rng.standard_normal((N, Ci, H, W)).astype(dtype)
    w = rng.standard_normal((Ci, Co // G) + k).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    _agrees_with_torch("conv_transpose2d", x, w, b, kw, dtype, rng, close)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "groups,k,s,p,d",
    [(1, 2, 1, 0, 1), (2, 3, 3, 1, 1), (4, 3, 1, 2, 2), (2, 4, 1, "same", 1),
     (1, 3, 1, "same", 3), (2, 2, 2, "valid", 1)],
)
def test_conv1d_and_backward(groups, k, s, p, d, dtype, rng, close):
    x = rng.standard_normal((2, 4, 13)).astype(dtype)
    w = rng.standard_normal((8, 4 // groups, k)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    kw = dict(stride=s, padding=p, dilation=d, groups=groups)
    _agrees_with_torch("conv1d", x, w, b, kw, dtype, rng, close)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "xshape,wshape",
    [((2, 3, 5, 7), (3, 2, 2, 3)), ((1, 1, 4, 4), (1, 1, 1, 1)), ((3, 2, 7, 5), (2, 4, 3, 5)),
     ((2, 1, 1, 1), (1, 3, 3, 2))],
)
def test_full_conv2d_is_conv_transpose2d_at_stride_1(xshape, wshape, dtype, rng, close):
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal(wshape).astype(dtype)
    want = n(TF.conv_transpose2d(t(x), t(w), stride=1))
    y = F.full_conv2d(x, w)
    assert y.shape == want.shape
    close(y, want, dtype)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

POOL_GEOMS = [
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (1, 1), (1, 1)),
    ((2, 3), (1, 2), (1, 1)),
    ((3, 2), (2, 1), (1, 1)),
    ((1, 1), (2, 3), (0, 0)),
    ((5, 3), (2, 2), (2, 1)),
    ((4, 4), (3, 3), (2, 2)),
]


def _pool_input(rng, mode, dtype, shape=(2, 3, 9, 11)):
    if mode == "distinct":
        x = rng.standard_normal(shape)
    elif mode == "small_int":
        x = rng.integers(-1, 2, size=shape).astype(float)
    elif mode == "relu":
        x = np.maximum(rng.integers(-3, 3, size=shape), 0).astype(float)
    elif mode == "nan":
        x = rng.integers(0, 3, size=shape).astype(float)
        x[rng.random(shape) < 0.15] = np.nan
    elif mode == "neginf":
        x = rng.integers(0, 3, size=shape).astype(float)
        x[rng.random(shape) < 0.7] = -np.inf
    else:  # constant
        x = np.full(shape, -1.5)
    return x.astype(dtype)


POOL_MODES = ["distinct", "small_int", "relu", "nan", "neginf", "constant"]


def _max_pool_agrees_with_torch(name, x, args, dtype, rng, close):
    """``F.<name>(x, *args)``: values and indices exactly as torch's (NaN
    positions too), and its backward (a random upstream gradient) as
    autograd's."""
    tx = t(x, True)
    ty, tidx = getattr(TF, name)(tx, *args, return_indices=True)
    y, idx = getattr(F, name)(x, *args, return_indices=True)
    np.testing.assert_array_equal(y, n(ty))
    np.testing.assert_array_equal(idx, tidx.numpy())
    go = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(go))
    close(getattr(F, f"{name}_backward")(go, idx, x.shape), n(tx.grad), dtype)


@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_GEOMS)
def test_max_pool2d_values_and_indices_exact(k, s, p, dtype, mode, rng, close):
    x = _pool_input(rng, mode, dtype)
    _max_pool_agrees_with_torch("max_pool2d", x, (k, s, p), dtype, rng, close)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_GEOMS)
def test_avg_pool2d_and_backward(k, s, p, dtype, rng, close):
    x = rng.standard_normal((2, 3, 9, 11)).astype(dtype)
    tx = t(x, True)
    ty = TF.avg_pool2d(tx, k, s, p)  # count_include_pad=True, ceil_mode=False
    y = F.avg_pool2d(x, k, stride=s, padding=p)
    close(y, n(ty), dtype)
    go = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(go))
    close(F.avg_pool2d_backward(go, x.shape, k, stride=s, padding=p), n(tx.grad), dtype)


def test_pool_default_stride_matches_torch(rng):
    x = rng.standard_normal((1, 2, 7, 8))
    np.testing.assert_array_equal(F.max_pool2d(x, 3), n(TF.max_pool2d(t(x), 3)))
    np.testing.assert_allclose(F.avg_pool2d(x, (2, 3)), n(TF.avg_pool2d(t(x), (2, 3))),
                               rtol=1e-12)


# -- every pooling option, adaptive pooling, unpooling, 1-D pooling

# (kernel, stride, padding, dilation, ceil_mode); some ceil_mode geometries
# would start their last window in the padding (dropped, as PyTorch does).
FULL_POOL_GEOMS = [
    ((2, 2), (2, 2), (0, 0), (1, 1), True),
    ((3, 3), (2, 2), (1, 1), (2, 2), True),
    ((2, 3), (3, 2), (1, 1), (1, 2), False),
    ((4, 4), (3, 3), (2, 2), (1, 1), True),    # the last window is dropped
    ((3, 2), (2, 3), (1, 1), (3, 1), True),
    ((1, 1), (2, 2), (0, 0), (1, 1), True),
    ((12, 12), (12, 12), (1, 1), (1, 1), True),  # kernel > padded input: one clipped window
]


@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,d,cm", FULL_POOL_GEOMS)
def test_max_pool2d_dilation_ceil_mode_exact(k, s, p, d, cm, dtype, mode, rng, close):
    x = _pool_input(rng, mode, dtype, shape=(2, 3, 9, 10))
    _max_pool_agrees_with_torch("max_pool2d", x, (k, s, p, d, cm), dtype, rng, close)


@pytest.mark.parametrize("cip,dov", [(True, None), (False, None), (True, 3), (False, -2)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,d,cm", FULL_POOL_GEOMS)
def test_avg_pool2d_all_options(k, s, p, d, cm, cip, dov, dtype, rng, close):
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    tx = t(x, True)
    ty = TF.avg_pool2d(tx, k, s, p, cm, cip, dov)
    y = F.avg_pool2d(x, k, s, p, cm, cip, dov)
    close(y, n(ty), dtype)
    go = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(go))
    close(F.avg_pool2d_backward(go, x.shape, k, s, p, cm, cip, dov), n(tx.grad), dtype)


ADAPTIVE = [1, (1, 1), (2, 3), 3, (5, 7), (9, 4), (None, 4), (13, None)]


@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("o", ADAPTIVE, ids=str)
def test_adaptive_pools(o, dtype, mode, rng, close):
    x = _pool_input(rng, mode, dtype, shape=(2, 3, 9, 11))
    tx = t(x, True)
    ty, tidx = TF.adaptive_max_pool2d(tx, o, return_indices=True)
    y, idx = F.adaptive_max_pool2d(x, o, return_indices=True)
    np.testing.assert_array_equal(y, n(ty))
    np.testing.assert_array_equal(idx, tidx.numpy())
    go = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(go))
    close(F.adaptive_max_pool2d_backward(go, idx, x.shape), n(tx.grad), dtype)
    if mode != "distinct":
        return
    tx = t(x, True)
    ty = TF.adaptive_avg_pool2d(tx, o)
    close(F.adaptive_avg_pool2d(x, o), n(ty), dtype)
    ty.backward(t(go))
    close(F.adaptive_avg_pool2d_backward(go, x.shape), n(tx.grad), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw,out", [((7, 9), None), ((8, 10), (8, 10)),
                                    ((8, 10), (2, 3, 8, 10))], ids=str)
def test_max_unpool2d_and_backward(hw, out, dtype, rng, close):
    x = _pool_input(rng, "small_int", dtype, shape=(2, 3) + hw)
    py, pidx = TF.max_pool2d(t(x), 3, 2, 1, return_indices=True)  # overlapping: repeats
    ty = t(n(py), True)
    tu = TF.max_unpool2d(ty, pidx, 3, 2, 1, output_size=out)
    u = F.max_unpool2d(n(py), pidx.numpy(), 3, 2, 1, output_size=out)
    np.testing.assert_array_equal(u, n(tu))
    go = rng.standard_normal(u.shape).astype(dtype)
    tu.backward(t(go))
    np.testing.assert_array_equal(F.max_unpool2d_backward(go, pidx.numpy()), n(ty.grad))


@pytest.mark.parametrize("mode", ["distinct", "relu", "nan"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,d,cm", [(3, 2, 1, 1, True), (2, None, 0, 2, False),
                                        (4, 3, 2, 1, True), (1, 3, 0, 1, True)])
def test_pool1d(k, s, p, d, cm, dtype, mode, rng, close):
    x = _pool_input(rng, mode, dtype, shape=(2, 3, 13))
    _max_pool_agrees_with_torch("max_pool1d", x, (k, s, p, d, cm), dtype, rng, close)
    xa = rng.standard_normal((3, 13)).astype(dtype)  # unbatched (C, L)
    for cip in (True, False):
        ta = t(xa, True)
        tya = TF.avg_pool1d(ta, k, s, p, cm, cip)
        close(F.avg_pool1d(xa, k, s, p, cm, cip), n(tya), dtype)
        ga = rng.standard_normal(tuple(tya.shape)).astype(dtype)
        tya.backward(t(ga))
        close(F.avg_pool1d_backward(ga, xa.shape, k, s, p, cm, cip), n(ta.grad), dtype)


# --------------------------------------------------------------------------
# activations, softmax, loss
# --------------------------------------------------------------------------


def _act_input(rng, dtype):
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(dtype)
    x[0, 0, :3] = 0.0  # kinks
    x[0, 1, 0] = np.nan  # relu_backward: NaN passes the gradient (threshold_backward)
    return x


ACTS = {
    "relu": (F.relu, F.relu_backward, TF.relu, "x"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.15),
                   lambda g, x: F.leaky_relu_backward(g, x, 0.15),
                   lambda tx: TF.leaky_relu(tx, 0.15), "x"),
    "sigmoid": (F.sigmoid, F.sigmoid_backward, torch.sigmoid, "y"),
    "tanh": (F.tanh, F.tanh_backward, torch.tanh, "y"),
    "softmax": (lambda x: F.softmax(x, axis=1), lambda g, y: F.softmax_backward(g, y, axis=1),
                lambda tx: TF.softmax(tx, dim=1), "y"),
    "log_softmax": (lambda x: F.log_softmax(x, axis=-1),
                    lambda g, y: F.log_softmax_backward(g, y, axis=-1),
                    lambda tx: TF.log_softmax(tx, dim=-1), "y"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_and_backward(name, dtype, rng, close):
    fwd, bwd, tfn, from_ = ACTS[name]
    x = _act_input(rng, dtype)
    if name not in ("relu", "leaky_relu"):
        x = np.nan_to_num(x)  # NaN handling is only specified for the relus
    tx = t(x, True)
    ty = tfn(tx)
    y = fwd(x)
    assert y.dtype == dtype
    close(np.nan_to_num(y, nan=123.0), np.nan_to_num(n(ty), nan=123.0), dtype)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(n(ty)))
    go = rng.standard_normal(x.shape).astype(dtype)
    ty.backward(t(go))
    gx = bwd(go, x if from_ == "x" else y)
    close(np.nan_to_num(gx, nan=123.0), np.nan_to_num(n(tx.grad), nan=123.0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("nk", [(1, 2), (7, 3), (16, 10)])
def test_softmax_cross_entropy(nk, scale, dtype, rng, close):
    N, K = nk
    z = (rng.standard_normal((N, K)) * scale).astype(dtype)
    labels = rng.integers(0, K, size=N)
    tz = t(z, True)
    tl = TF.cross_entropy(tz, torch.from_numpy(labels))
    tl.backward()
    loss, g = F.softmax_cross_entropy(z, labels)
    rel = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(tl.item(), rel=rel, abs=rel)
    close(g, n(tz.grad), dtype)


def test_cross_entropy_is_mean_reduction(rng):
    z = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    total = TF.cross_entropy(t(z), torch.from_numpy(labels), reduction="sum").item()
    loss, _ = F.softmax_cross_entropy(z, labels)
    assert loss == pytest.approx(total / 5, rel=1e-12)


# --------------------------------------------------------------------------
# batch normalization
# --------------------------------------------------------------------------

BN_SHAPES = [(6, 3), (4, 5, 7), (3, 4, 5, 6), (1, 2, 3, 5), (2, 3, 1, 1)]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_matches_torch(shape, dtype, training, affine):
    rng = np.random.default_rng(11)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 - 1).astype(dtype)
    w, b = (rng.standard_normal(C).astype(dtype) for _ in range(2))
    rm, rv = rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    if not affine:
        w = b = None
    xt = t(x, True)
    wt = None if w is None else t(w, True)
    bt = None if b is None else t(b, True)
    tm, tv = t(rm), t(rv)
    yt = TF.batch_norm(xt, tm, tv, wt, bt, training=training, momentum=0.2, eps=1e-4)
    yt.backward(t(g))
    rm1, rv1 = rm.copy(), rv.copy()
    y = F.batch_norm(x, rm1, rv1, w, b, training=training, momentum=0.2, eps=1e-4)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, n(yt), **tol)
    np.testing.assert_allclose(rm1, n(tm), **tol)  # running statistics updated in place
    np.testing.assert_allclose(rv1, n(tv), **tol)
    gx, gw, gb = F.batch_norm_backward(g, x, rm, rv, w, training=training, eps=1e-4)
    np.testing.assert_allclose(gx, n(xt.grad), **tol)
    if affine:
        np.testing.assert_allclose(gw, n(wt.grad), **tol)
        np.testing.assert_allclose(gb, n(bt.grad), **tol)


def test_batch_norm_one_value_per_channel_raises_as_torch():
    x = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError):
        TF.batch_norm(t(x), None, None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(x, None, None, training=True)
    F.batch_norm(x, np.zeros(3), np.ones(3), training=False)  # fine in evaluation mode


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(momentum=None), dict(momentum=0.3, affine=False),
     dict(track_running_stats=False)],
    ids=["default", "cumulative", "no-affine", "no-running-stats"],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm2d_layer_matches_torch_over_train_steps_then_eval(kwargs, dtype):
    from cnnext import nn

    rng = np.random.default_rng(3)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    tl = torch.nn.BatchNorm2d(4, eps=1e-4, dtype=tdt, **kwargs)
    ours = nn.BatchNorm2D(4, eps=1e-4, dtype=dtype, **kwargs)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    if ours.affine:  # a non-trivial affine map, the same in both
        w, b = rng.standard_normal(4), rng.standard_normal(4)
        with torch.no_grad():
            tl.weight.copy_(torch.from_numpy(w))
            tl.bias.copy_(torch.from_numpy(b))
        ours.params["weight"][:] = w
        ours.params["bias"][:] = b
    for step, mode in enumerate(["train"] * 3 + ["eval"] * 2):
        getattr(tl, mode)()
        getattr(ours, mode)()
        x = (rng.standard_normal((3, 4, 5, 6)) * (step + 1) + step).astype(dtype)
        g = rng.standard_normal(x.shape).astype(dtype)
        xt = t(x, True)
        tl.zero_grad()
        ours.zero_grad()
        yt = tl(xt)
        yt.backward(t(g))
        y = ours(x)
        gx = ours.backward(g)
        np.testing.assert_allclose(y, n(yt), **tol)
        np.testing.assert_allclose(gx, n(xt.grad), **tol)
        if ours.affine:
            np.testing.assert_allclose(ours.grads["weight"], n(tl.weight.grad), **tol)
            np.testing.assert_allclose(ours.grads["bias"], n(tl.bias.grad), **tol)
        torch_state = {k: v.numpy() for k, v in tl.state_dict().items()}
        assert list(ours.state_dict()) == list(torch_state)
        for name, a in ours.state_dict().items():
            np.testing.assert_allclose(a, torch_state[name], **tol, err_msg=name)


def test_residual_block_matches_torch():
    from cnnext import nn

    rng = np.random.default_rng(5)
    block = nn.Sequential(nn.Conv2D(3, 4, 3, stride=2, padding=1, bias=False, dtype=np.float64,
                                    seed=0),
                          nn.BatchNorm2D(4, dtype=np.float64), nn.ReLU(),
                          nn.Conv2D(4, 4, 3, padding=1, bias=False, dtype=np.float64, seed=1),
                          nn.BatchNorm2D(4, dtype=np.float64))
    short = nn.Sequential(nn.Conv2D(3, 4, 1, stride=2, bias=False, dtype=np.float64, seed=2),
                          nn.BatchNorm2D(4, dtype=np.float64))
    res = nn.Residual(block, short)

    class TorchResidual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            T = torch.nn
            self.block = T.Sequential(T.Conv2d(3, 4, 3, 2, 1, bias=False), T.BatchNorm2d(4),
                                      T.ReLU(), T.Conv2d(4, 4, 3, 1, 1, bias=False),
                                      T.BatchNorm2d(4))
            self.shortcut = T.Sequential(T.Conv2d(3, 4, 1, 2, bias=False), T.BatchNorm2d(4))

        def forward(self, x):
            return self.block(x) + self.shortcut(x)

    tres = TorchResidual().double()
    tres.load_state_dict({k: torch.from_numpy(v) for k, v in res.state_dict().items()})
    x = rng.standard_normal((2, 3, 7, 6))
    g = rng.standard_normal((2, 4, 4, 3))
    y = res(x)
    gx = res.backward(g)
    xt = t(x, True)
    yt = tres(xt)
    yt.backward(t(g))
    np.testing.assert_allclose(y, n(yt), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gx, n(xt.grad), rtol=1e-10, atol=1e-10)
    tparams = dict(tres.named_parameters())
    assert set(res.params) == set(tparams)
    for name, g_ours in res.grads.items():
        np.testing.assert_allclose(g_ours, n(tparams[name].grad), rtol=1e-10, atol=1e-10,
                                   err_msg=name)
    for name, b in res.named_buffers():  # running statistics updated as torch's
        np.testing.assert_allclose(b, tres.state_dict()[name].numpy(), rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_nonfinite_as_torch(training):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 3, 4)).astype(np.float32)
    x[1, 0, 2] = np.nan
    x[0, 1, 1] = np.inf
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = np.array([1.0, 2.0, 0.5], np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    tm, tv = t(rm), t(rv)
    xt, wt = t(x, True), t(w, True)
    yt = TF.batch_norm(xt, tm, tv, wt, None, training=training)
    yt.backward(t(g))
    y = F.batch_norm(x, rm, rv, w, None, training=training)
    gx, gw, _ = F.batch_norm_backward(g, x, np.zeros(3), np.ones(3), w, training=training)
    for ours, theirs in ((y, yt), (rm, tm), (rv, tv), (gx, xt.grad), (gw, wt.grad)):
        theirs = n(theirs)
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        fin = np.isfinite(theirs)
        np.testing.assert_array_equal(np.isfinite(ours), fin)
        np.testing.assert_allclose(ours[fin], theirs[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 9, 7)])  # whole 2x2 windows, odd rest
def test_avg_pool_2x2_equals_torch_bitwise_with_zero_signs(dtype, shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :2, :2] = -0.0
    y = F.avg_pool2d(x, 2)
    xt = t(x, True)
    yt = TF.avg_pool2d(xt, 2)
    np.testing.assert_array_equal(y, n(yt))
    np.testing.assert_array_equal(np.signbit(y), np.signbit(n(yt)))
    g = rng.standard_normal(y.shape).astype(dtype)
    g[0, 0, 0, 0] = -0.0
    yt.backward(t(g))
    gx = F.avg_pool2d_backward(g, x.shape, 2)
    np.testing.assert_array_equal(gx, n(xt.grad))
    np.testing.assert_array_equal(np.signbit(gx), np.signbit(n(xt.grad)))


# (id, N, C_in, C_out, groups, H, W, kernel, stride, padding): the kernels add
# a transposed convolution's bias themselves (stride phases, stride 1, phases
# without taps, more taps per phase than one block of the micro-kernel).
BIAS_GEOMS = [
    ("phases-4x4s2", 3, 8, 6, 1, 7, 5, (4, 4), 2, 1),
    ("phases-stride-gt-kernel", 2, 5, 4, 1, 4, 6, (2, 3), (3, 4), 0),
    ("phases-deep", 2, 80, 9, 1, 5, 4, (4, 4), 2, 1),
    ("phases-groups", 2, 12, 6, 3, 5, 5, (3, 4), 2, (1, 2)),
    ("stride1", 2, 7, 5, 1, 6, 5, (3, 2), 1, (2, 1)),
    ("stride1-groups", 1, 6, 4, 2, 5, 7, (3, 3), 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", BIAS_GEOMS, ids=[g[0] for g in BIAS_GEOMS])
def test_conv_transpose2d_bias_added_by_the_kernels(g, dtype, rng, close):
    _, N, Ci, Co, G, H, W, k, s, p = g
    x = rng.standard_normal((N, Ci, H, W)).astype(dtype)
    w = rng.standard_normal((Ci, Co // G) + k).astype(dtype)
    b = (10 * rng.standard_normal(Co)).astype(dtype)
    want = n(TF.conv_transpose2d(t(x), t(w), t(b), s, p, 0, G))
    close(F.conv_transpose2d(x, w, b, s, p, 0, G), want, dtype)
    close(F.conv_transpose2d(x[0], w, b, s, p, 0, G), want[0], dtype)
    with cnnext.use_backend("numpy"):
        close(F.conv_transpose2d(x, w, b, s, p, 0, G), want, dtype)
