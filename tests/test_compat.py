"""Tests for the drop-in tutorial adapters in :mod:`cnnext.compat`.

The oracle is a small, independent, loop-over-output-positions numpy
implementation written here (the *correct* math: stride honoured in
backward, ``x[p:p+H]`` unpadding, first maximum wins, overlapping windows
accumulate) -- never the tutorials' own loops, whose bugs the adapters
deliberately do not reproduce.  The one place where printed tutorial numbers
are the oracle is ``init_test`` of hanbingtao's "零基础入门深度学习(4) -
卷积神经网络" (https://www.zybuluo.com/hanbingtao/note/485480), which the
tutorial computes correctly.  The CS231n adapter has its own test file,
``test_compat_cs231n.py``.
"""
import contextlib
import doctest
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cnnext.compat import deeplearning_ai as dl
from cnnext.compat import hanbingtao, victorzhou

# --------------------------------------------------------------------------
# Independent loop oracles (NHWC, weights (fh, fw, C_in, C_out))
# --------------------------------------------------------------------------


def _pad_nhwc(A, p, value=0.0):
    m, H, W, C = A.shape
    out = np.full((m, H + 2 * p, W + 2 * p, C), value, dtype=np.float64)
    out[:, p:p + H, p:p + W, :] = A
    return out


def loop_conv(A, W, b, s, p):
    A = np.asarray(A, dtype=np.float64)
    m, H, Wd, _ = A.shape
    fh, fw, _, K = W.shape
    Ap = _pad_nhwc(A, p)
    OH, OW = (H + 2 * p - fh) // s + 1, (Wd + 2 * p - fw) // s + 1
    Z = np.empty((m, OH, OW, K))
    for i in range(m):
        for h in range(OH):
            for w in range(OW):
                win = Ap[i, h * s:h * s + fh, w * s:w * s + fw, :]
                Z[i, h, w, :] = np.tensordot(win, W, axes=3) + np.reshape(b, -1)
    return Z


def loop_conv_backward(dZ, A, W, s, p):
    A = np.asarray(A, dtype=np.float64)
    m, H, Wd, _ = A.shape
    fh, fw, _, K = W.shape
    Ap = _pad_nhwc(A, p)
    dAp = np.zeros_like(Ap)
    dW = np.zeros(W.shape)
    _, OH, OW, _ = dZ.shape
    for i in range(m):
        for h in range(OH):
            for w in range(OW):
                g = dZ[i, h, w, :]
                win = Ap[i, h * s:h * s + fh, w * s:w * s + fw, :]
                dAp[i, h * s:h * s + fh, w * s:w * s + fw, :] += W @ g
                dW += win[..., None] * g
    return dAp[:, p:p + H, p:p + Wd, :], dW, dZ.sum(axis=(0, 1, 2)).reshape(1, 1, 1, K)


def loop_pool(A, f, s, p, mode):
    A = np.asarray(A, dtype=np.float64)
    m, H, W, C = A.shape
    Ap = _pad_nhwc(A, p, -np.inf if mode == "max" else 0.0)
    OH, OW = (H + 2 * p - f) // s + 1, (W + 2 * p - f) // s + 1
    out = np.empty((m, OH, OW, C))
    for i in range(m):
        for h in range(OH):
            for w in range(OW):
                for c in range(C):
                    win = Ap[i, h * s:h * s + f, w * s:w * s + f, c]
                    out[i, h, w, c] = win.max() if mode == "max" else win.mean()
    return out


def loop_pool_backward(dA, A, f, s, p, mode):
    A = np.asarray(A, dtype=np.float64)
    m, H, W, C = A.shape
    Ap = _pad_nhwc(A, p, -np.inf if mode == "max" else 0.0)
    dAp = np.zeros(Ap.shape)
    _, OH, OW, _ = dA.shape
    for i in range(m):
        for h in range(OH):
            for w in range(OW):
                for c in range(C):
                    g = dA[i, h, w, c]
                    if mode == "max":
                        win = Ap[i, h * s:h * s + f, w * s:w * s + f, c]
                        u, v = np.unravel_index(np.argmax(win), win.shape)  # first max
                        dAp[i, h * s + u, w * s + v, c] += g
                    else:
                        dAp[i, h * s:h * s + f, w * s:w * s + f, c] += g / (f * f)
    return dAp[:, p:p + H, p:p + W, :]


@contextlib.contextmanager
def _global_seed(seed):
    """Seed numpy's global legacy state (what the tutorials use), then restore it."""
    state = np.random.get_state()  # noqa: NPY002 (the tutorials' global state)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------
# deeplearning.ai functions (cnnext.compat.deeplearning_ai)
# --------------------------------------------------------------------------

# (fh, fw, stride, pad): pad 0, stride 2, stride > kernel, pad >= kernel,
# sizes where the stride does not divide, 1x1 and non-square kernels.
CONV_GEOMS = [
    (3, 3, 1, 0),
    (3, 3, 2, 0),
    (3, 3, 2, 1),
    (2, 2, 2, 0),
    (1, 1, 1, 0),
    (1, 1, 2, 1),
    (2, 2, 3, 0),
    (3, 3, 1, 3),
    (2, 3, 2, 1),
    (5, 5, 3, 2),
]


@pytest.mark.parametrize("fh, fw, stride, pad", CONV_GEOMS)
def test_conv_forward_backward_match_loops(rng, close, fh, fw, stride, pad):
    A = rng.standard_normal((2, 7, 8, 3))
    W = rng.standard_normal((fh, fw, 3, 4))
    b = rng.standard_normal((1, 1, 1, 4))
    hp = {"stride": stride, "pad": pad}
    Z, cache = dl.conv_forward(_readonly(A), _readonly(W), _readonly(b), hp)
    close(Z, loop_conv(A, W, b, stride, pad))
    assert Z.flags.c_contiguous

    dZ = rng.standard_normal(Z.shape)
    dA, dW, db = dl.conv_backward(_readonly(dZ), cache)
    eA, eW, eb = loop_conv_backward(dZ, A, W, stride, pad)
    assert dA.shape == A.shape and dW.shape == W.shape and db.shape == (1, 1, 1, 4)
    close(dA, eA)
    close(dW, eW)
    close(db, eb)


def test_conv_backward_pad0_stride2_not_the_tutorial_bug(rng, close):
    # The tutorial's conv_backward crops with [pad:-pad] (empty at pad = 0)
    # and ignores the stride; the adapter must give the real gradient.
    A = rng.standard_normal((1, 6, 6, 2))
    W = rng.standard_normal((2, 2, 2, 3))
    b = np.zeros((1, 1, 1, 3))
    Z, cache = dl.conv_forward(A, W, b, {"stride": 2, "pad": 0})
    dZ = rng.standard_normal(Z.shape)
    dA, dW, _ = dl.conv_backward(dZ, cache)
    eA, eW, _ = loop_conv_backward(dZ, A, W, 2, 0)
    close(dA, eA)
    close(dW, eW)
    # Stride 2 with a 2x2 kernel tiles the input: every input pixel gets
    # exactly one W-weighted term, so nothing is zero.
    assert np.all(dA != 0)


def test_conv_forward_adds_bias_once(rng, close):
    # A widely shared copy of conv_single_step sums (a * W + b), adding b
    # f*f*C times; the assignment adds it once.
    A = rng.standard_normal((1, 4, 4, 3))
    W = rng.standard_normal((3, 3, 3, 2))
    b = rng.standard_normal((1, 1, 1, 2))
    hp = {"stride": 1, "pad": 0}
    Z, _ = dl.conv_forward(A, W, b, hp)
    Z0, _ = dl.conv_forward(A, W, np.zeros_like(b), hp)
    close(Z - Z0, np.broadcast_to(b, Z.shape))


def test_conv_gradient_matches_finite_differences(rng):
    A = rng.standard_normal((1, 5, 5, 2))
    W = rng.standard_normal((3, 3, 2, 2))
    b = rng.standard_normal((1, 1, 1, 2))
    hp = {"stride": 2, "pad": 1}
    Z, cache = dl.conv_forward(A, W, b, hp)
    G = rng.standard_normal(Z.shape)
    dA, dW, db = dl.conv_backward(G, cache)

    def loss(A_, W_, b_):
        return float(np.sum(dl.conv_forward(A_, W_, b_, hp)[0] * G))

    eps = 1e-6
    for arr, grad, which in ((A, dA, 0), (W, dW, 1), (b, db, 2)):
        num = np.zeros(arr.shape)
        for idx in np.ndindex(arr.shape):
            plus, minus = [A.copy(), W.copy(), b.copy()], [A.copy(), W.copy(), b.copy()]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            num[idx] = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


@given(
    m=st.integers(1, 2),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    C=st.integers(1, 3),
    K=st.integers(1, 3),
    fh=st.integers(1, 4),
    fw=st.integers(1, 4),
    stride=st.integers(1, 4),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv_hypothesis_geometry(m, H, W, C, K, fh, fw, stride, pad, seed):
    assume(H + 2 * pad >= fh and W + 2 * pad >= fw)
    r = np.random.default_rng(seed)
    A = r.standard_normal((m, H, W, C))
    Wt = r.standard_normal((fh, fw, C, K))
    b = r.standard_normal((1, 1, 1, K))
    Z, cache = dl.conv_forward(A, Wt, b, {"stride": stride, "pad": pad})
    np.testing.assert_allclose(Z, loop_conv(A, Wt, b, stride, pad), rtol=1e-10, atol=1e-10)
    dZ = r.standard_normal(Z.shape)
    got = dl.conv_backward(dZ, cache)
    for g, e in zip(got, loop_conv_backward(dZ, A, Wt, stride, pad)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


# (f, stride, pad): non-overlapping, overlapping (stride < f), stride > f,
# the tutorial's default, padding.
POOL_GEOMS = [(2, 2, 0), (3, 2, 0), (3, 1, 0), (2, 3, 0), (1, 1, 0), (3, 2, 1), (4, 3, 2)]


@pytest.mark.parametrize("mode", ["max", "average"])
@pytest.mark.parametrize("f, stride, pad", POOL_GEOMS)
def test_pool_forward_backward_match_loops(rng, close, mode, f, stride, pad):
    A = rng.standard_normal((2, 7, 9, 3))
    hp = {"f": f, "stride": stride}
    if pad:
        hp["pad"] = pad
    P, cache = dl.pool_forward(_readonly(A), hp, mode=mode)
    close(P, loop_pool(A, f, stride, pad, mode))
    dP = rng.standard_normal(P.shape)
    dA = dl.pool_backward(_readonly(dP), cache, mode=mode)
    assert dA.shape == A.shape
    close(dA, loop_pool_backward(dP, A, f, stride, pad, mode))


@pytest.mark.parametrize("f, stride", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_backward_ties_first_max(rng, close, f, stride):
    # ReLU-like data with many exact ties (zeros and small integers).
    A = np.maximum(rng.integers(-2, 3, size=(2, 8, 8, 2)), 0).astype(np.float64)
    P, cache = dl.pool_forward(A, {"f": f, "stride": stride})
    dP = rng.standard_normal(P.shape)
    dA = dl.pool_backward(dP, cache)
    close(dA, loop_pool_backward(dP, A, f, stride, 0, "max"))
    # Exactly one position per window receives the gradient: total preserved
    # (the tutorial's all-ties mask multiplies it).
    np.testing.assert_allclose(dA.sum(), dP.sum(), rtol=1e-12, atol=1e-12)
    assert np.count_nonzero(dA) <= P.size


def test_float32_stays_float32(rng):
    A = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    W = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal((1, 1, 1, 2)).astype(np.float32)
    Z, cache = dl.conv_forward(A, W, b, {"stride": 1, "pad": 1})
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z, loop_conv(A, W, b, 1, 1), rtol=1e-4, atol=1e-4)
    dA, dW, db = dl.conv_backward(rng.standard_normal(Z.shape).astype(np.float32), cache)
    assert dA.dtype == dW.dtype == db.dtype == np.float32
    P, pc = dl.pool_forward(A, {"f": 2, "stride": 2})
    assert P.dtype == np.float32
    assert dl.pool_backward(P, pc).dtype == np.float32


def test_integer_inputs_and_cache_contents(rng):
    A = rng.integers(0, 5, size=(1, 4, 4, 1))
    W = np.ones((2, 2, 1, 1), dtype=np.int64)
    b = np.zeros((1, 1, 1, 1), dtype=np.int64)
    hp = {"stride": 1, "pad": 0}
    Z, cache = dl.conv_forward(A, W, b, hp)
    assert Z.dtype == np.float64
    np.testing.assert_array_equal(Z, loop_conv(A, W, b, 1, 0))
    # The tutorial's cache layout, so code unpacking it keeps working.
    A_c, W_c, b_c, hp_c = cache
    assert A_c is A and W_c is W and b_c is b and hp_c == hp
    A_p, hp_p = dl.pool_forward(A, {"f": 2, "stride": 2})[1]
    assert A_p is A and hp_p == {"f": 2, "stride": 2}


def test_inputs_not_mutated(rng):
    A = rng.standard_normal((2, 5, 5, 2))
    W = rng.standard_normal((3, 3, 2, 3))
    b = rng.standard_normal((1, 1, 1, 3))
    hp = {"stride": 2, "pad": 1}
    copies = [x.copy() for x in (A, W, b)]
    Z, cache = dl.conv_forward(A, W, b, hp)
    dZ = rng.standard_normal(Z.shape)
    dZc = dZ.copy()
    dl.conv_backward(dZ, cache)
    P, pc = dl.pool_forward(A, {"f": 2, "stride": 1}, "max")
    dP = rng.standard_normal(P.shape)
    dPc = dP.copy()
    dl.pool_backward(dP, pc, "max")
    dl.pool_backward(dP, pc, "average")
    for x, c in zip((A, W, b, dZ, dP), copies + [dZc, dPc]):
        np.testing.assert_array_equal(x, c)
    assert hp == {"stride": 2, "pad": 1}


def test_deeplearning_ai_errors(rng):
    A = rng.standard_normal((1, 5, 5, 2))
    W = rng.standard_normal((3, 3, 2, 2))
    b = np.zeros((1, 1, 1, 2))
    with pytest.raises(
        ValueError,
        match=(
            r"pool_forward: mode must be 'max' or 'average', got 'min'"
        ),
    ):
        dl.pool_forward(A, {"f": 2, "stride": 2}, mode="min")
    with pytest.raises(ValueError, match=r"conv_forward: hparameters must contain the key 'pad'"):
        dl.conv_forward(A, W, b, {"stride": 1})
    with pytest.raises(TypeError, match=r"conv_forward: hparameters must be a dict"):
        dl.conv_forward(A, W, b, [1, 0])
    with pytest.raises(
        ValueError,
        match=(
            r"conv_forward: W.shape\[2\] \(3\) must equal A_prev.shape\[3\] \(2\)"
        ),
    ):
        dl.conv_forward(A, rng.standard_normal((3, 3, 3, 2)), b, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"conv_forward: b must hold one value per output channel"):
        dl.conv_forward(A, W, np.zeros((1, 1, 1, 3)), {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"conv_forward: A_prev must be 4-D"):
        dl.conv_forward(A[0], W, b, {"stride": 1, "pad": 0})
    with pytest.raises(
        ValueError,
        match=(
            r"conv_forward: hparameters\['stride'\] must be >= 1, got 0"
        ),
    ):
        dl.conv_forward(A, W, b, {"stride": 0, "pad": 0})
    Z, cache = dl.conv_forward(A, W, b, {"stride": 1, "pad": 0})
    with pytest.raises(
        ValueError,
        match=(
            r"conv_backward: dZ.shape must be the conv_forward output shape \(1, 3, "
            r"3, 2\)"
        ),
    ):
        dl.conv_backward(np.zeros((1, 3, 3, 1)), cache)
    with pytest.raises(TypeError, match=r"conv_backward: cache must be the 4-tuple"):
        dl.conv_backward(Z, cache[:3])
    P, pc = dl.pool_forward(A, {"f": 2, "stride": 2})
    with pytest.raises(
        ValueError,
        match=(
            r"pool_backward: dA.shape must be the pool_forward output shape \(1, 2, "
            r"2, 2\)"
        ),
    ):
        dl.pool_backward(np.zeros((1, 3, 3, 2)), pc)
    with pytest.raises(ValueError, match=r"pool_backward: mode must be"):
        dl.pool_backward(P, pc, mode="Max")


# --------------------------------------------------------------------------
# Conv3x3 / MaxPool2 / Softmax
# --------------------------------------------------------------------------


def test_conv3x3_forward_backprop_match_loops(rng, close):
    img = rng.standard_normal((7, 9))
    conv = victorzhou.Conv3x3(4, seed=3)
    filters0 = conv.filters.copy()
    W = filters0.transpose(1, 2, 0)[:, :, None, :]  # (3, 3, 1, 4)
    out = conv.forward(_readonly(img))
    assert out.shape == (5, 7, 4)
    close(out, loop_conv(img[None, :, :, None], W, np.zeros(4), 1, 0)[0])

    g = rng.standard_normal(out.shape)
    lr = 0.05
    d_in = conv.backprop(_readonly(g), lr)
    eA, eW, _ = loop_conv_backward(g[None], img[None, :, :, None], W, 1, 0)
    close(d_in, eA[0, :, :, 0])
    close(conv.filters, filters0 - lr * eW[:, :, 0, :].transpose(2, 0, 1))


def test_conv3x3_uses_global_random_state_like_the_tutorial():
    # The tutorial draws from numpy's global legacy state; np.random.seed(s)
    # makes that stream equal to RandomState(s)'s.
    with _global_seed(123):
        conv = victorzhou.Conv3x3(8)
        sm = victorzhou.Softmax(13 * 13 * 8, 10)
    legacy = np.random.RandomState(123)
    want_filters = legacy.randn(8, 3, 3) / 9
    want_weights = legacy.randn(13 * 13 * 8, 10) / (13 * 13 * 8)
    np.testing.assert_array_equal(conv.filters, want_filters)
    np.testing.assert_array_equal(sm.weights, want_weights)
    np.testing.assert_array_equal(sm.biases, np.zeros(10))
    a, b = victorzhou.Conv3x3(8, seed=5), victorzhou.Conv3x3(8, seed=5)
    np.testing.assert_array_equal(a.filters, b.filters)
    assert not np.array_equal(a.filters, victorzhou.Conv3x3(8, seed=6).filters)


@pytest.mark.parametrize("shape", [(6, 6, 3), (7, 9, 2), (5, 4)])
def test_maxpool2_matches_loops_with_ties(rng, close, shape):
    x = np.maximum(rng.integers(-1, 3, size=shape), 0).astype(np.float64)
    pool = victorzhou.MaxPool2()
    y = pool.forward(_readonly(x))
    x4 = x[None] if x.ndim == 3 else x[None, :, :, None]
    ey = loop_pool(x4, 2, 2, 0, "max")[0]
    close(y, ey if x.ndim == 3 else ey[:, :, 0])
    g = rng.standard_normal(y.shape)
    d = pool.backprop(_readonly(g))
    g4 = g[None] if x.ndim == 3 else g[None, :, :, None]
    ed = loop_pool_backward(g4, x4, 2, 2, 0, "max")[0]
    assert d.shape == x.shape
    close(d, ed if x.ndim == 3 else ed[:, :, 0])
    # learn_rate is accepted and ignored
    close(pool.backprop(g, 0.5), d)


def _tutorial_maxpool2_backprop(x, d_L_d_out, shared_copy=False):
    """``MaxPool2.backprop`` of Victor Zhou's tutorial (``[i * 2 + i2, ...]``),
    or of the widely shared copy that writes to ``[i + i2, j + j2]``."""
    d_L_d_input = np.zeros(x.shape)
    h, w, _ = x.shape
    for i in range(h // 2):
        for j in range(w // 2):
            im_region = x[i * 2:i * 2 + 2, j * 2:j * 2 + 2]
            amax = np.amax(im_region, axis=(0, 1))
            for i2 in range(2):
                for j2 in range(2):
                    for f2 in range(x.shape[2]):
                        if im_region[i2, j2, f2] == amax[f2]:
                            r, c = (i + i2, j + j2) if shared_copy else (i * 2 + i2, j * 2 + j2)
                            d_L_d_input[r, c, f2] = d_L_d_out[i, j, f2]
    return d_L_d_input


def test_maxpool2_backprop_equals_the_tutorial_without_ties(rng):
    x = rng.standard_normal((26, 26, 4))          # continuous values: no ties
    g = rng.standard_normal((13, 13, 4))
    pool = victorzhou.MaxPool2()
    pool.forward(x)
    d = pool.backprop(g)
    np.testing.assert_array_equal(d, _tutorial_maxpool2_backprop(x, g))
    # The shared copy puts the gradients elsewhere (docs/compat.md, section 3):
    # nothing past row/column 13, and overwritten values are lost.
    copy = _tutorial_maxpool2_backprop(x, g, shared_copy=True)
    assert not np.array_equal(d, copy)
    assert not copy[14:].any() and not copy[:, 14:].any()
    assert np.count_nonzero(copy) < np.count_nonzero(d) == g.size
    # With ties (after a ReLU) the tutorial over-counts; cnnext passes each
    # gradient back exactly once.
    xr = np.maximum(x, 0)
    pool.forward(xr)
    np.testing.assert_allclose(pool.backprop(g).sum(), g.sum(), rtol=1e-12)
    assert np.count_nonzero(_tutorial_maxpool2_backprop(xr, g)) > g.size


def _softmax(t):
    e = np.exp(t - t.max())
    return e / e.sum()


def test_softmax_forward_and_cross_entropy_backprop(rng, close):
    sm = victorzhou.Softmax(24, 5, seed=0)
    W0, b0 = sm.weights.copy(), sm.biases.copy()
    x = rng.standard_normal((2, 3, 4))
    p = sm.forward(_readonly(x))
    close(p, _softmax(x.reshape(-1) @ W0 + b0))
    close(sm.last_totals, x.reshape(-1) @ W0 + b0)
    assert sm.last_input_shape == (2, 3, 4)

    label, lr = 3, 0.1
    grad = np.zeros(5)
    grad[label] = -1 / p[label]
    d_in = sm.backprop(grad, lr)
    d_t = p - np.eye(5)[label]  # cross-entropy through softmax
    close(d_in, (W0 @ d_t).reshape(x.shape))
    close(sm.weights, W0 - lr * np.outer(x.reshape(-1), d_t))
    close(sm.biases, b0 - lr * d_t)


def test_softmax_backprop_general_gradient_finite_differences(rng):
    sm = victorzhou.Softmax(6, 4, seed=1)
    x = rng.standard_normal(6)
    G = rng.standard_normal(4)  # dense upstream gradient, not one-hot
    sm.forward(x)
    W0, b0 = sm.weights.copy(), sm.biases.copy()
    d_in = sm.backprop(G, 0.0)
    np.testing.assert_array_equal(sm.weights, W0)  # lr 0: no change

    def L(xx):
        return float(G @ _softmax(xx @ W0 + b0))

    eps = 1e-6
    num = np.array([(L(x + eps * e) - L(x - eps * e)) / (2 * eps) for e in np.eye(6)])
    np.testing.assert_allclose(d_in, num, rtol=1e-6, atol=1e-8)


def _tutorial_step(conv, pool, softmax, image, label, lr):
    """The tutorial's train() body, verbatim apart from the imports."""
    out = conv.forward((image / 255) - 0.5)
    out = pool.forward(out)
    out = softmax.forward(out)
    loss = -np.log(out[label])
    acc = 1 if np.argmax(out) == label else 0
    gradient = np.zeros(10)
    gradient[label] = -1 / out[label]
    gradient = softmax.backprop(gradient, lr)
    gradient = pool.backprop(gradient)
    gradient = conv.backprop(gradient, lr)
    return loss, acc


def test_tutorial_trio_training_decreases_loss():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 12, 12)).astype(np.uint8)
    labels = rng.integers(0, 10, size=8)
    conv = victorzhou.Conv3x3(8, seed=1)
    pool = victorzhou.MaxPool2()
    softmax = victorzhou.Softmax(5 * 5 * 8, 10, seed=2)
    filters0 = conv.filters.copy()
    images0 = images.copy()

    def mean_loss():
        losses = []
        for im, lab in zip(images, labels):
            p = softmax.forward(pool.forward(conv.forward(im / 255 - 0.5)))
            losses.append(-np.log(p[lab]))
        return float(np.mean(losses))

    before = mean_loss()
    for _ in range(15):
        for im, lab in zip(images, labels):
            _tutorial_step(conv, pool, softmax, im, lab, 0.05)
    after = mean_loss()
    assert before > 2.0  # ~log(10) at initialisation
    assert after < 0.5 * before, (before, after)
    assert not np.array_equal(conv.filters, filters0)  # the conv layer learned too
    np.testing.assert_array_equal(images, images0)  # inputs untouched


def test_victorzhou_errors():
    conv = victorzhou.Conv3x3(2, seed=0)
    pool, sm = victorzhou.MaxPool2(), victorzhou.Softmax(4, 2, seed=0)
    with pytest.raises(RuntimeError, match=r"Conv3x3.backprop: called before forward"):
        conv.backprop(np.zeros((1, 1, 2)), 0.1)
    with pytest.raises(RuntimeError, match=r"MaxPool2.backprop: called before forward"):
        pool.backprop(np.zeros((1, 1, 1)))
    with pytest.raises(RuntimeError, match=r"Softmax.backprop: called before forward"):
        sm.backprop(np.zeros(2), 0.1)
    with pytest.raises(ValueError, match=r"Conv3x3.forward: input must be 2-D"):
        conv.forward(np.zeros((5, 5, 1)))
    conv.forward(np.zeros((5, 5)))
    with pytest.raises(
        ValueError,
        match=(
            r"Conv3x3.backprop: d_L_d_out.shape must be the forward output shape "
            r"\(3, 3, 2\)"
        ),
    ):
        conv.backprop(np.zeros((3, 3, 3)), 0.1)
    with pytest.raises(
        ValueError,
        match=(
            r"Softmax.forward: input must have input_len = 4 elements"
        ),
    ):
        sm.forward(np.zeros(5))
    with pytest.raises(TypeError, match=r"Conv3x3: num_filters must be an int"):
        victorzhou.Conv3x3(2.0)
    with pytest.raises(TypeError, match=r"Softmax: seed must be an int, a numpy.random.Generator or None"):
        victorzhou.Softmax(4, 2, seed="x")


# --------------------------------------------------------------------------
# ConvLayer / MaxPoolingLayer / activators
# --------------------------------------------------------------------------

INIT_TEST_A = np.array(
    [[[0, 1, 1, 0, 2], [2, 2, 2, 2, 1], [1, 0, 0, 2, 0], [0, 1, 1, 0, 0], [1, 2, 0, 0, 2]],
     [[1, 0, 2, 2, 0], [0, 0, 0, 2, 0], [1, 2, 1, 2, 1], [1, 0, 0, 0, 0], [1, 2, 1, 1, 1]],
     [[2, 1, 2, 0, 0], [1, 0, 0, 1, 0], [0, 2, 1, 0, 1], [0, 1, 2, 2, 2], [2, 1, 0, 0, 1]]])
INIT_TEST_B = np.array(
    [[[0, 1, 1], [2, 2, 2], [1, 0, 0]],
     [[1, 0, 2], [0, 0, 0], [1, 2, 1]]])
INIT_TEST_W0 = np.array(
    [[[-1, 1, 0], [0, 1, 0], [0, 1, 1]],
     [[-1, -1, 0], [0, 0, 0], [0, -1, 0]],
     [[0, 0, -1], [0, 1, 0], [1, -1, -1]]], dtype=np.float64)
INIT_TEST_W1 = np.array(
    [[[1, 1, -1], [-1, -1, 1], [0, -1, 1]],
     [[0, 1, 0], [-1, 0, -1], [-1, 1, 0]],
     [[-1, 0, 0], [-1, 0, 1], [-1, 0, 0]]], dtype=np.float64)

# Printed by the tutorial's test() (hanbingtao, 零基础入门深度学习(4)).
PRINTED_FORWARD = np.array(
    [[[6., 7., 5.], [3., -1., -1.], [2., -1., 4.]],
     [[2., -5., -8.], [1., -4., -4.], [0., -5., -5.]]])
PRINTED_FILTER1 = np.array(
    [[[-1.008, 0.99, -0.009], [-0.005, 0.994, -0.006], [-0.006, 0.995, 0.996]],
     [[-1.004, -1.001, -0.004], [-0.01, -0.009, -0.012], [-0.002, -1.002, -0.002]],
     [[-0.002, -0.002, -1.003], [-0.005, 0.992, -0.005], [0.993, -1.008, -1.007]]])
PRINTED_FILTER2 = np.array(
    [[[9.98e-01, 9.98e-01, -1.001e+00], [-1.004e+00, -1.007e+00, 9.97e-01],
      [-4.0e-03, -1.004e+00, 9.98e-01]],
     [[0.0, 9.99e-01, 0.0], [-1.009e+00, -5.0e-03, -1.004e+00], [-1.004e+00, 1.0, 0.0]],
     [[-1.004e+00, -6.0e-03, -5.0e-03], [-1.002e+00, -5.0e-03, 9.98e-01],
      [-1.002e+00, -1.0e-03, 0.0]]])


def init_test():
    """The tutorial's init_test(), verbatim apart from the names."""
    a, b = INIT_TEST_A.copy(), INIT_TEST_B.copy()
    cl = hanbingtao.ConvLayer(5, 5, 3, 3, 3, 2, 1, 2, hanbingtao.IdentityActivator(), 0.001)
    cl.filters[0].weights = INIT_TEST_W0.copy()
    cl.filters[0].bias = 1
    cl.filters[1].weights = INIT_TEST_W1.copy()
    return a, b, cl


def test_init_test_reproduces_the_printed_tutorial_run():
    a, b, cl = init_test()
    cl.forward(a)
    np.testing.assert_array_equal(cl.output_array, PRINTED_FORWARD)
    cl.backward(a, b, hanbingtao.IdentityActivator())
    cl.update()
    np.testing.assert_allclose(cl.filters[0].weights, PRINTED_FILTER1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cl.filters[1].weights, PRINTED_FILTER2, rtol=0, atol=1e-12)
    assert cl.filters[0].bias == pytest.approx(0.991, abs=1e-15)
    assert cl.filters[1].bias == pytest.approx(-0.007, abs=1e-15)
    # The tutorial prints the filters with Filter.__repr__.
    text = repr(cl.filters[0])
    assert text.startswith("filter weights:\narray([[[-1.008,  0.99 , -0.009],")
    assert text.endswith("bias:\n0.991")
    assert repr(cl.filters[1]).endswith("bias:\n-0.007")
    # And the inputs of the run are untouched.
    np.testing.assert_array_equal(a, INIT_TEST_A)
    np.testing.assert_array_equal(b, INIT_TEST_B)


def _chw_to_nhwc(x):
    return np.asarray(x, dtype=np.float64).transpose(1, 2, 0)[None]


def _filters_to_hwio(cl):
    return np.stack([f.weights for f in cl.filters]).transpose(2, 3, 1, 0)


class ScalarRelu:
    """A user activator written for scalars, like the tutorial's ReluActivator."""

    def forward(self, weighted_input):
        return max(0, weighted_input)

    def backward(self, output):
        return 1 if output > 0 else 0


# (H, W, C, fh, fw, K, pad, stride)
HANBINGTAO_GEOMS = [
    (5, 5, 3, 3, 3, 2, 1, 2),
    (6, 7, 2, 3, 3, 3, 0, 1),
    (6, 7, 2, 3, 3, 3, 0, 2),
    (7, 6, 1, 2, 3, 2, 1, 3),
    (4, 4, 2, 2, 2, 1, 2, 1),  # zero_padding >= filter size
    (5, 5, 2, 1, 1, 2, 0, 2),
]


@pytest.mark.parametrize("H, W, C, fh, fw, K, pad, stride", HANBINGTAO_GEOMS)
@pytest.mark.parametrize("act", [hanbingtao.ReluActivator, hanbingtao.SigmoidActivator,
                                 hanbingtao.IdentityActivator, ScalarRelu])
def test_convlayer_matches_loops(rng, close, H, W, C, fh, fw, K, pad, stride, act):
    cl = hanbingtao.ConvLayer(W, H, C, fw, fh, K, pad, stride, act(), 0.01, seed=rng)
    for f in cl.filters:
        f.weights = rng.standard_normal((C, fh, fw))
        f.bias = float(rng.standard_normal())
    Wt = _filters_to_hwio(cl)
    bias = np.array([f.bias for f in cl.filters])
    x = rng.standard_normal((C, H, W))
    if act in (hanbingtao.ReluActivator, ScalarRelu):
        x = np.maximum(x, 0)  # the previous layer's output
    elif act is hanbingtao.SigmoidActivator:
        x = 1 / (1 + np.exp(-x))
    cl.forward(_readonly(x))
    z = loop_conv(_chw_to_nhwc(x), Wt, bias, stride, pad)[0].transpose(2, 0, 1)
    ref_act = {
        hanbingtao.ReluActivator: lambda t: np.maximum(t, 0),
        ScalarRelu: lambda t: np.maximum(t, 0),
        hanbingtao.SigmoidActivator: lambda t: 1 / (1 + np.exp(-t)),
        hanbingtao.IdentityActivator: lambda t: t,
    }[act]
    assert cl.output_array.shape == (K, cl.output_height, cl.output_width)
    close(cl.output_array, ref_act(z))

    sens = rng.standard_normal(cl.output_array.shape)
    cl.backward(_readonly(x), _readonly(sens), act())
    eA, eW, eb = loop_conv_backward(sens.transpose(1, 2, 0)[None], _chw_to_nhwc(x), Wt, stride, pad)
    deriv = {hanbingtao.ReluActivator: lambda y: (y > 0) * 1.0, ScalarRelu: lambda y: (y > 0) * 1.0,
             hanbingtao.SigmoidActivator: lambda y: y * (1 - y),
             hanbingtao.IdentityActivator: lambda y: np.ones_like(y)}[act]
    close(cl.delta_array, eA[0].transpose(2, 0, 1) * deriv(x))
    for k, f in enumerate(cl.filters):
        close(f.weights_grad, eW[..., k].transpose(2, 0, 1))
        assert f.bias_grad == pytest.approx(float(eb.reshape(-1)[k]), rel=1e-12, abs=1e-12)

    before = [(f.weights.copy(), f.bias) for f in cl.filters]
    cl.update()
    for (w0, b0), f in zip(before, cl.filters):
        close(f.weights, w0 - 0.01 * f.weights_grad)
        assert f.bias == pytest.approx(b0 - 0.01 * f.bias_grad, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("fh, fw, stride", [(2, 2, 2), (3, 3, 1), (3, 2, 2), (2, 2, 3)])
def test_maxpoolinglayer_matches_loops_with_ties(rng, close, fh, fw, stride):
    C, H, W = 2, 7, 8
    mp = hanbingtao.MaxPoolingLayer(W, H, C, fw, fh, stride)
    x = np.maximum(rng.integers(-2, 3, size=(C, H, W)), 0).astype(np.float64)
    mp.forward(_readonly(x))
    # non-square windows: the NHWC loop oracle only knows square windows, so
    # compare per window directly
    OH, OW = (H - fh) // stride + 1, (W - fw) // stride + 1
    want = np.empty((C, OH, OW))
    dwant = np.zeros((C, H, W))
    sens = rng.standard_normal((C, OH, OW))
    for c in range(C):
        for i in range(OH):
            for j in range(OW):
                win = x[c, i * stride:i * stride + fh, j * stride:j * stride + fw]
                want[c, i, j] = win.max()
                u, v = np.unravel_index(np.argmax(win), win.shape)
                dwant[c, i * stride + u, j * stride + v] += sens[c, i, j]
    close(mp.output_array, want)
    mp.backward(_readonly(x), _readonly(sens))
    close(mp.delta_array, dwant)


def test_activators_on_scalars_and_arrays():
    relu, sig = hanbingtao.ReluActivator(), hanbingtao.SigmoidActivator()
    ident = hanbingtao.IdentityActivator()
    assert relu.forward(-3.0) == 0.0 and relu.forward(2.5) == 2.5
    assert relu.backward(0.0) == 0.0 and relu.backward(0.1) == 1.0
    assert sig.forward(0.0) == 0.5 and sig.backward(0.25) == pytest.approx(0.1875)
    assert ident.forward(-4.0) == -4.0 and ident.backward(-4.0) == 1.0
    x = np.array([[-1.0, 0.0], [2.0, -3.0]])
    xc = x.copy()
    np.testing.assert_array_equal(relu.forward(x), [[0, 0], [2, 0]])
    np.testing.assert_allclose(sig.forward(x), 1 / (1 + np.exp(-x)))
    np.testing.assert_array_equal(relu.backward(x), [[0, 0], [1, 0]])
    np.testing.assert_array_equal(x, xc)


def test_filter_assignment_copies_and_update_does_not_touch_user_arrays(rng):
    f = hanbingtao.Filter(2, 2, 1, seed=0)
    user = np.array([[[1, 2], [3, 4]]])  # integer, as people type them
    f.weights = user
    f.weights_grad = np.ones((1, 2, 2))
    f.bias_grad = 2
    f.update(0.5)
    np.testing.assert_array_equal(user, [[[1, 2], [3, 4]]])
    np.testing.assert_array_equal(f.weights, [[[0.5, 1.5], [2.5, 3.5]]])
    assert f.bias == -1.0
    with pytest.raises(
        ValueError,
        match=(
            r"Filter.weights: weights must have shape \(depth, height, width\) = "
            r"\(1, 2, 2\), got \(1, 3, 3\)"
        ),
    ):
        f.weights = np.zeros((1, 3, 3))


def test_filter_global_random_state_like_the_tutorial():
    with _global_seed(9):
        cl = hanbingtao.ConvLayer(5, 5, 2, 3, 3, 2, 0, 1, hanbingtao.ReluActivator(), 0.1)
    legacy = np.random.RandomState(9)
    w0 = legacy.uniform(-1e-4, 1e-4, (2, 3, 3))
    w1 = legacy.uniform(-1e-4, 1e-4, (2, 3, 3))
    np.testing.assert_array_equal(cl.filters[0].weights, w0)
    np.testing.assert_array_equal(cl.filters[1].weights, w1)
    assert cl.filters[0].bias == 0 and cl.output_array.shape == (2, 3, 3)


def test_convlayer_single_channel_2d_input(rng, close):
    cl = hanbingtao.ConvLayer(6, 5, 1, 3, 3, 2, 1, 2, hanbingtao.IdentityActivator(), 0.1, seed=1)
    x = rng.standard_normal((5, 6))
    cl.forward(x)
    out2d = cl.output_array.copy()
    cl.forward(x[None])
    close(out2d, cl.output_array)
    cl.backward(x, rng.standard_normal(cl.output_array.shape), hanbingtao.IdentityActivator())
    assert cl.delta_array.shape == (1, 5, 6)


def test_hanbingtao_errors(rng):
    cl = hanbingtao.ConvLayer(5, 5, 3, 3, 3, 2, 1, 2, hanbingtao.IdentityActivator(), 0.001)
    with pytest.raises(
        ValueError,
        match=(
            r"ConvLayer.forward: input_array must have shape \(channel_number, "
            r"input_height, input_width\) = \(3, 5, 5\), got \(2, 5, 5\)"
        ),
    ):
        cl.forward(np.zeros((2, 5, 5)))
    with pytest.raises(
        ValueError,
        match=(
            r"ConvLayer.backward: sensitivity_array must have shape .* = \(2, 3, "
            r"3\), got \(2, 2, 2\)"
        ),
    ):
        cl.backward(np.zeros((3, 5, 5)), np.zeros((2, 2, 2)), hanbingtao.IdentityActivator())
    with pytest.raises(ValueError, match=r"ConvLayer: the filter is larger than the padded input"):
        hanbingtao.ConvLayer(2, 2, 1, 5, 5, 1, 0, 1, hanbingtao.IdentityActivator(), 0.1)
    with pytest.raises(ValueError, match=r"ConvLayer: zero_padding must be >= 0, got -1"):
        hanbingtao.ConvLayer(5, 5, 1, 3, 3, 1, -1, 1, hanbingtao.IdentityActivator(), 0.1)
    mp = hanbingtao.MaxPoolingLayer(4, 4, 1, 2, 2, 2)
    with pytest.raises(
        ValueError,
        match=(
            r"MaxPoolingLayer.backward: sensitivity_array must have shape .* = \(1, "
            r"2, 2\)"
        ),
    ):
        mp.backward(np.zeros((1, 4, 4)), np.zeros((1, 3, 3)))


# --------------------------------------------------------------------------
# Docstring examples of the submodules (test_doctests covers the package)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("modname", ["deeplearning_ai", "victorzhou", "hanbingtao"])
def test_submodule_doctests(modname):
    mod = importlib.import_module(f"cnnext.compat.{modname}")
    with np.printoptions(legacy=False):
        result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 0
    assert result.failed == 0


DOCS = Path(__file__).resolve().parent.parent / "docs" / "compat.md"


def _doc_blocks():
    if not DOCS.is_file():
        return []
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)


#: The modules whose "After" block docs/compat.md runs, in page order.
DOC_MODULES = ["cs231n", "deeplearning_ai", "victorzhou", "hanbingtao"]


@pytest.mark.parametrize("index", range(len(DOC_MODULES)))
def test_docs_after_examples_run(index, capsys):
    blocks = _doc_blocks()
    if not blocks:
        pytest.skip(f"{DOCS} not found")
    assert len(blocks) == len(DOC_MODULES), (
        "docs/compat.md should have one runnable block per adapter"
    )
    code = blocks[index]
    assert f"from cnnext.compat.{DOC_MODULES[index]} import" in code
    state = np.random.get_state()  # noqa: NPY002 (the victorzhou example seeds the global state)
    try:
        with np.printoptions(legacy=False):
            exec(compile(code, f"{DOCS}[block {index}]", "exec"), {"__name__": "__docs__"})
    finally:
        np.random.set_state(state)  # noqa: NPY002
    if DOC_MODULES[index] == "hanbingtao":
        # The page shows the printed output of the tutorial's test(); check it.
        shown = re.search(r"```text\n(\[\[\[ 6\..*?)```", DOCS.read_text(encoding="utf-8"), re.S)
        assert shown is not None
        assert capsys.readouterr().out == shown.group(1)
