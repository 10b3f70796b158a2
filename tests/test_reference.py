"""Tests of the numpy reference ``cnnext.reference`` (the test oracle).

The oracle is checked against things that do not share its code:

* float64 central differences with a *random* upstream gradient (an
  all-ones gradient cannot see a backward that routes to the wrong window);
* literal scalar loops written from the definitions (and, for the max-pool
  tie rules, a transcription of PyTorch's CPU loop);
* ``scipy.signal`` correlate/convolve;
* algebraic identities (conv_transpose2d is the adjoint of conv2d and equals
  conv2d's input gradient; full_conv2d is that gradient at stride 1);
* small examples worked by hand.

Hypothesis example counts come from the profile that tests/conftest.py
loads (``ci`` by default, ``HYPOTHESIS_PROFILE=dev`` for a longer hunt).
"""

import doctest

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import signal

from cnnext import reference as R

DTYPES = [np.float32, np.float64]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def fd_grad(f, arr, g, eps=1e-6):
    """Central-difference gradient of ``sum(f(arr) * g)`` w.r.t. ``arr``."""
    arr = np.array(arr, dtype=np.float64)
    out = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + eps
        fp = np.sum(f(arr) * g)
        arr[idx] = old - eps
        fm = np.sum(f(arr) * g)
        arr[idx] = old
        out[idx] = (fp - fm) / (2 * eps)
    return out


def check_backward_fd(name, g, x, wt, b, kw):
    """``R.<name>_backward`` (upstream ``g``) against central differences of
    ``R.<name>`` in x, weight and bias; returns the three gradients."""
    op = getattr(R, name)
    gx, gw, gb = getattr(R, f"{name}_backward")(g, x, wt, **kw)
    fx = fd_grad(lambda v: op(v, wt, b, **kw), x, g)
    fw = fd_grad(lambda v: op(x, v, b, **kw), wt, g)
    fb = fd_grad(lambda v: op(x, wt, v, **kw), b, g)
    np.testing.assert_allclose(gx, fx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, fb, rtol=1e-6, atol=1e-7)
    return gx, gw, gb


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def naive_conv2d(x, w, b, stride, padding, dilation):
    """conv2d from its definition, one scalar at a time."""
    (sh, sw), (ph, pw), (dh, dw) = (_pair(stride), _pair(padding),
                                    _pair(dilation))
    n, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    oh = conv_out(h, kh, sh, ph, dh)
    ow = conv_out(wd, kw, sw, pw, dw)
    y = np.zeros((n, c_out, oh, ow))
    for a in range(n):
        for o in range(c_out):
            for r in range(oh):
                for s in range(ow):
                    acc = 0.0 if b is None else float(b[o])
                    for c in range(c_in):
                        for i in range(kh):
                            for j in range(kw):
                                hh = r * sh - ph + i * dh
                                ww = s * sw - pw + j * dw
                                if 0 <= hh < h and 0 <= ww < wd:
                                    acc += float(x[a, c, hh, ww]) * float(
                                        w[o, c, i, j])
                    y[a, o, r, s] = acc
    return y


def naive_avg_pool2d(x, k, s, p):
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(s), _pair(p)
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for a in range(n):
        for b in range(c):
            for r in range(oh):
                for q in range(ow):
                    acc = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            hh, ww = r * sh - ph + i, q * sw - pw + j
                            if 0 <= hh < h and 0 <= ww < w:
                                acc += x[a, b, hh, ww]
                    y[a, b, r, q] = acc / (kh * kw)
    return y


def rand(rng, *shape):
    return rng.standard_normal(shape)


# Convolution geometries: (N, C_in, H, W, C_out, kernel, stride, padding,
# dilation).
CONV_GEOMS = [
    pytest.param(2, 3, 5, 4, 2, (1, 1), 1, 0, 1, id="1x1"),
    pytest.param(1, 2, 5, 7, 3, (2, 3), 1, 0, 1, id="2x3"),
    pytest.param(2, 1, 7, 11, 2, (3, 5), (1, 2), (1, 2), 1,
                 id="3x5-pad-mixed-stride"),
    pytest.param(2, 2, 7, 7, 2, (2, 2), 3, 0, 1, id="stride>kernel"),
    pytest.param(1, 1, 7, 5, 1, (3, 2), 1, 1, 2, id="dilation2-N1-C1"),
    pytest.param(1, 3, 11, 13, 2, (3, 3), 2, 2, 2, id="prime-s2-p2-d2"),
    pytest.param(3, 2, 5, 5, 1, (3, 3), 2, 2, 1, id="pad-near-kernel"),
    pytest.param(1, 1, 2, 3, 1, (2, 3), 1, 0, 1, id="kernel=input"),
    pytest.param(2, 2, 6, 5, 3, (2, 1), (2, 3), (0, 1), (2, 1),
                 id="all-mixed"),
]


def conv_case(rng, n, c_in, h, w, c_out, k, dtype=np.float64):
    x = rand(rng, n, c_in, h, w).astype(dtype)
    wt = rand(rng, c_out, c_in, *k).astype(dtype)
    b = rand(rng, c_out).astype(dtype)
    return x, wt, b


def matching_output_padding(h, k, s, p, d):
    """output_padding that makes conv_transpose2d return size ``h``."""
    oh = conv_out(h, k, s, p, d)
    return h - ((oh - 1) * s - 2 * p + d * (k - 1) + 1)


# --------------------------------------------------------------------------
# module hygiene
# --------------------------------------------------------------------------

def test_docstring_examples_run():
    attempted = 0
    for family in (R.conv, R.pooling, R.dense, R.activation, R.norm):
        result = doctest.testmod(family, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, family.__name__
        attempted += result.attempted
    assert attempted > 20


def test_all_lists_public_functions():
    public = {name for name in dir(R) if not name.startswith("_")
              and callable(getattr(R, name))
              and getattr(getattr(R, name), "__module__", "").startswith(f"{R.__name__}.")}
    assert public == set(R.__all__)
    for name in R.__all__:
        doc = getattr(R, name).__doc__
        for section in ("Parameters", "Returns", "Notes"):
            assert section in doc, (name, section)


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c_in,h,w,c_out,k,s,p,d", CONV_GEOMS)
def test_conv2d_matches_scalar_loops(n, c_in, h, w, c_out, k, s, p, d, dtype):
    rng = np.random.default_rng(0)
    x, wt, b = conv_case(rng, n, c_in, h, w, c_out, k, dtype)
    y = R.conv2d(x, wt, b, stride=s, padding=p, dilation=d)
    assert y.dtype == dtype
    ref = naive_conv2d(x, wt, b, s, p, d)
    assert y.shape == ref.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


def test_conv2d_matches_scipy_correlate_at_stride_1():
    rng = np.random.default_rng(1)
    x, wt, _ = conv_case(rng, 2, 3, 6, 7, 2, (2, 3))
    y = R.conv2d(x, wt)
    for a in range(2):
        for o in range(2):
            ref = sum(signal.correlate2d(x[a, c], wt[o, c], mode="valid")
                      for c in range(3))
            np.testing.assert_allclose(y[a, o], ref, rtol=1e-12, atol=1e-12)


def test_conv2d_int_and_pair_arguments_agree():
    rng = np.random.default_rng(2)
    x, wt, b = conv_case(rng, 1, 2, 7, 7, 2, (3, 3))
    np.testing.assert_array_equal(
        R.conv2d(x, wt, b, stride=2, padding=1, dilation=2),
        R.conv2d(x, wt, b, stride=(2, 2), padding=(1, 1), dilation=(2, 2)))


@pytest.mark.parametrize("n,c_in,h,w,c_out,k,s,p,d", CONV_GEOMS)
def test_conv2d_backward_matches_finite_differences(n, c_in, h, w, c_out, k,
                                                    s, p, d):
    rng = np.random.default_rng(3)
    x, wt, b = conv_case(rng, n, c_in, h, w, c_out, k)
    y = R.conv2d(x, wt, b, stride=s, padding=p, dilation=d)
    g = rand(rng, *y.shape)
    kw_ = dict(stride=s, padding=p, dilation=d)
    gx, gw, gb = check_backward_fd("conv2d", g, x, wt, b, kw_)
    np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), rtol=1e-12)
    assert gx.shape == x.shape and gw.shape == wt.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_backward_dtypes_and_no_bias(dtype):
    rng = np.random.default_rng(4)
    x, wt, _ = conv_case(rng, 2, 2, 5, 5, 3, (3, 2), dtype)
    g = rand(rng, 2, 3, 3, 4).astype(dtype)
    gx, gw, gb = R.conv2d_backward(g, x, wt, bias=False)
    assert gb is None
    assert gx.dtype == dtype and gw.dtype == dtype
    _, _, gb = R.conv2d_backward(g, x, wt, bias=True)
    assert gb.dtype == dtype and gb.shape == (3,)


def test_conv2d_backward_rows_never_read_get_zero():
    # H = W = 7, k = 2, s = 3: windows read rows/cols {0,1} and {3,4};
    # 2, 5 and 6 are never read.
    rng = np.random.default_rng(5)
    x, wt, _ = conv_case(rng, 2, 2, 7, 7, 2, (2, 2))
    g = rand(rng, 2, 2, 2, 2)
    gx, _, _ = R.conv2d_backward(g, x, wt, stride=3)
    unread = [2, 5, 6]
    assert np.all(gx[:, :, unread, :] == 0)
    assert np.all(gx[:, :, :, unread] == 0)
    read = np.ix_([0, 1, 3, 4], [0, 1, 3, 4])
    assert np.all(gx[:, :, read[0], read[1]] != 0)


# --------------------------------------------------------------------------
# conv_transpose2d and full_conv2d
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n,c_in,h,w,c_out,k,s,p,d", CONV_GEOMS)
def test_conv_transpose2d_is_adjoint_of_conv2d(n, c_in, h, w, c_out, k, s, p,
                                               d):
    rng = np.random.default_rng(6)
    x, wt, _ = conv_case(rng, n, c_in, h, w, c_out, k)
    (sh, sw), (ph, pw), (dh, dw) = _pair(s), _pair(p), _pair(d)
    op = (matching_output_padding(h, k[0], sh, ph, dh),
          matching_output_padding(w, k[1], sw, pw, dw))
    assert 0 <= op[0] < sh and 0 <= op[1] < sw
    y = R.conv2d(x, wt, stride=s, padding=p, dilation=d)
    g = rand(rng, *y.shape)
    # conv2d's weight (C_out, C_in, ...) is conv_transpose2d's
    # (C_in_t, C_out_t, ...) with C_in_t = C_out.
    xt = R.conv_transpose2d(g, wt, stride=s, padding=p, output_padding=op,
                            dilation=d)
    assert xt.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, xt), rtol=1e-10)
    gx, _, _ = R.conv2d_backward(g, x, wt, stride=s, padding=p, dilation=d)
    np.testing.assert_allclose(xt, gx, rtol=1e-10, atol=1e-12)


def test_conv_transpose2d_hand_examples():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    ones = np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(
        R.conv_transpose2d(x, ones)[0, 0],
        [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    np.testing.assert_array_equal(
        R.conv_transpose2d(x, ones, stride=2)[0, 0],
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    # padding 1 crops the first row/column; output_padding 1 keeps the last
    np.testing.assert_array_equal(
        R.conv_transpose2d(x, ones, stride=2, padding=1,
                           output_padding=1)[0, 0],
        [[1, 2, 2], [3, 4, 4], [3, 4, 4]])
    # output_padding larger than padding: zero rows/cols (plus bias) appended
    y = R.conv_transpose2d(np.array([[[[5.0]]]]), ones, bias=np.array([1.0]),
                           stride=3, output_padding=2)
    np.testing.assert_array_equal(
        y[0, 0], [[6, 6, 1, 1], [6, 6, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    # dilation 2: the two taps land two apart
    y = R.conv_transpose2d(np.array([[[[1.0]]]]),
                           np.array([[[[1.0, 2.0]]]]), dilation=2)
    np.testing.assert_array_equal(y[0, 0], [[1, 0, 2]])


def test_conv_transpose2d_channels_and_bias():
    rng = np.random.default_rng(7)
    x = rand(rng, 2, 3, 4, 3)
    wt = rand(rng, 3, 2, 2, 3)          # (C_in, C_out, kH, kW)
    b = rand(rng, 2)
    y0 = R.conv_transpose2d(x, wt, stride=(2, 1), padding=(1, 0),
                            output_padding=(1, 0))
    # OH = (4-1)*2 - 2 + 1 + 1 + 1 = 7, OW = (3-1)*1 - 0 + 2 + 0 + 1 = 5
    assert y0.shape == (2, 2, 7, 5)
    yb = R.conv_transpose2d(x, wt, b, stride=(2, 1), padding=(1, 0),
                            output_padding=(1, 0))
    np.testing.assert_allclose(yb - y0, np.broadcast_to(
        b[None, :, None, None], y0.shape), rtol=1e-12, atol=1e-12)


@given(data=st.data())
def test_conv_adjoint_identities_on_random_geometry(data):
    draw = data.draw
    kh = draw(st.integers(1, 4), label="kH")
    kw = draw(st.integers(1, 4), label="kW")
    sh = draw(st.integers(1, 4), label="sH")
    sw = draw(st.integers(1, 4), label="sW")
    dh = draw(st.integers(1, 3), label="dH")
    dw = draw(st.integers(1, 3), label="dW")
    ph = draw(st.integers(0, 3), label="pH")
    pw = draw(st.integers(0, 3), label="pW")
    h = draw(st.integers(1, 9), label="H")
    w = draw(st.integers(1, 9), label="W")
    oh, ow = conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw)
    assume(oh >= 1 and ow >= 1)
    n = draw(st.integers(1, 2), label="N")
    c_in = draw(st.integers(1, 3), label="C_in")
    c_out = draw(st.integers(1, 3), label="C_out")
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    x, wt, _ = conv_case(rng, n, c_in, h, w, c_out, (kh, kw))
    kwargs = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
    y = R.conv2d(x, wt, **kwargs)
    assert y.shape == (n, c_out, oh, ow)
    g = rand(rng, *y.shape)
    op = (matching_output_padding(h, kh, sh, ph, dh),
          matching_output_padding(w, kw, sw, pw, dw))
    xt = R.conv_transpose2d(g, wt, output_padding=op, **kwargs)
    gx, gw, _ = R.conv2d_backward(g, x, wt, **kwargs)
    np.testing.assert_allclose(xt, gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, gx), rtol=1e-9,
                               atol=1e-12)
    # <conv2d(x, w), g> is linear in w too: <dL/dw, w> == <y, g>
    np.testing.assert_allclose(np.vdot(gw, wt), np.vdot(y, g), rtol=1e-9,
                               atol=1e-12)


@given(data=st.data())
def test_conv2d_backward_finite_differences_on_random_geometry(data):
    draw = data.draw
    kh = draw(st.integers(1, 3), label="kH")
    kw = draw(st.integers(1, 3), label="kW")
    s = (draw(st.integers(1, 3), label="sH"), draw(st.integers(1, 3),
                                                  label="sW"))
    p = (draw(st.integers(0, 2), label="pH"), draw(st.integers(0, 2),
                                                  label="pW"))
    d = (draw(st.integers(1, 2), label="dH"), draw(st.integers(1, 2),
                                                  label="dW"))
    h = draw(st.integers(1, 6), label="H")
    w = draw(st.integers(1, 6), label="W")
    assume(conv_out(h, kh, s[0], p[0], d[0]) >= 1)
    assume(conv_out(w, kw, s[1], p[1], d[1]) >= 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    x, wt, b = conv_case(rng, 1, 2, h, w, 2, (kh, kw))
    kwargs = dict(stride=s, padding=p, dilation=d)
    g = rand(rng, *R.conv2d(x, wt, b, **kwargs).shape)
    gx, gw, gb = R.conv2d_backward(g, x, wt, **kwargs)
    np.testing.assert_allclose(
        gx, fd_grad(lambda v: R.conv2d(v, wt, b, **kwargs), x, g),
        rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        gw, fd_grad(lambda v: R.conv2d(x, v, b, **kwargs), wt, g),
        rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k", [(1, 1), (2, 3), (3, 5), (4, 2)])
def test_full_conv2d_equals_conv2d_input_gradient_at_stride_1(k):
    rng = np.random.default_rng(8)
    x, wt, _ = conv_case(rng, 2, 3, 7, 6, 2, k)
    g = rand(rng, *R.conv2d(x, wt).shape)
    gx, _, _ = R.conv2d_backward(g, x, wt)
    y = R.full_conv2d(g, wt)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, gx, rtol=1e-10, atol=1e-12)


def test_full_conv2d_matches_scipy_full_convolution():
    rng = np.random.default_rng(9)
    x = rand(rng, 2, 3, 4, 5)             # (N, K, H, W)
    wt = rand(rng, 3, 2, 2, 3)            # (K, C, kH, kW)
    y = R.full_conv2d(x, wt)
    assert y.shape == (2, 2, 5, 7)
    for a in range(2):
        for c in range(2):
            ref = sum(signal.convolve2d(x[a, k], wt[k, c], mode="full")
                      for k in range(3))
            np.testing.assert_allclose(y[a, c], ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# groups, padding modes, conv1d, grouped conv_transpose2d and its backward
# --------------------------------------------------------------------------

def naive_grouped_conv2d(x, w, b, stride, before, dilation, groups, out_hw):
    """Grouped conv2d from its definition: output channel o reads input
    channels g*C_g .. (g+1)*C_g - 1 of its group g; ``before`` is the
    padding at the top/left (any rest of the padding only adds zeros)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), before, _pair(dilation)
    n, c_in, h, wd = x.shape
    c_out, c_g, kh, kw = w.shape
    y = np.zeros((n, c_out) + out_hw)
    for a, o, r, s in np.ndindex(y.shape):
        grp = o // (c_out // groups)
        acc = 0.0 if b is None else float(b[o])
        for c, i, j in np.ndindex(c_g, kh, kw):
            hh, ww = r * sh - ph + i * dh, s * sw - pw + j * dw
            if 0 <= hh < h and 0 <= ww < wd:
                acc += float(x[a, grp * c_g + c, hh, ww]) * float(w[o, c, i, j])
        y[a, o, r, s] = acc
    return y


# (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups)
GROUP_GEOMS = [
    pytest.param(2, 4, 5, 6, 6, (2, 3), 1, 0, 1, 2, id="g2-2x3"),
    pytest.param(1, 6, 7, 5, 3, (3, 2), (2, 1), (1, 0), (1, 2), 3, id="g3-mixed"),
    pytest.param(2, 3, 6, 7, 3, (3, 3), 3, 1, 1, 3, id="depthwise-stride>kernel"),
    pytest.param(2, 4, 5, 6, 2, (2, 3), 1, "same", 1, 2, id="g2-same-even"),
    pytest.param(1, 2, 6, 5, 3, (4, 3), 1, "same", (1, 2), 1, id="same-4x3-dil"),
    pytest.param(2, 2, 5, 4, 4, (2, 2), 2, "valid", 1, 2, id="g2-valid"),
]


@pytest.mark.parametrize("n,c_in,h,w,c_out,k,s,p,d,groups", GROUP_GEOMS)
def test_grouped_and_padded_conv2d_match_scalar_loops(n, c_in, h, w, c_out, k, s, p, d,
                                                       groups):
    rng = np.random.default_rng(30)
    x = rand(rng, n, c_in, h, w)
    wt, b = rand(rng, c_out, c_in // groups, *k), rand(rng, c_out)
    y = R.conv2d(x, wt, b, stride=s, padding=p, dilation=d, groups=groups)
    dd = _pair(d)
    if p == "same":  # PyTorch: total d*(k-1), the odd one at the bottom/right
        before = tuple(di * (ki - 1) // 2 for di, ki in zip(dd, k))
        assert y.shape[2:] == (h, w)
    else:
        before = (0, 0) if p == "valid" else _pair(p)
    want = naive_grouped_conv2d(x, wt, b, s, before, d, groups, y.shape[2:])
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,c_in,h,w,c_out,k,s,p,d,groups", GROUP_GEOMS)
def test_grouped_conv2d_backward_matches_finite_differences(n, c_in, h, w, c_out, k, s, p,
                                                             d, groups):
    rng = np.random.default_rng(31)
    x = rand(rng, n, c_in, h, w)
    wt, b = rand(rng, c_out, c_in // groups, *k), rand(rng, c_out)
    kw_ = dict(stride=s, padding=p, dilation=d, groups=groups)
    g = rand(rng, *R.conv2d(x, wt, b, **kw_).shape)
    gx, gw, gb = R.conv2d_backward(g, x, wt, **kw_)
    np.testing.assert_allclose(gx, fd_grad(lambda v: R.conv2d(v, wt, b, **kw_), x, g),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd_grad(lambda v: R.conv2d(x, v, b, **kw_), wt, g),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), rtol=1e-12)


# (N, C_in, H, W, C_out, kernel, stride, padding, output_padding, dilation, groups)
TRANSPOSE_GEOMS = [
    pytest.param(2, 4, 3, 4, 6, (2, 3), 2, 1, 1, 1, 2, id="g2-2x3-s2-op1"),
    pytest.param(1, 3, 4, 3, 3, (3, 2), (1, 3), (1, 0), (1, 2), (2, 1), 3, id="depthwise-op"),
    pytest.param(2, 2, 3, 3, 2, (2, 2), 3, 0, 2, 1, 1, id="stride>kernel-op2"),
    pytest.param(1, 2, 4, 5, 4, (3, 3), 1, 1, 0, 2, 2, id="g2-dilation"),
]


@pytest.mark.parametrize("n,c_in,h,w,c_out,k,s,p,op,d,groups", TRANSPOSE_GEOMS)
def test_grouped_conv_transpose2d_is_adjoint_and_its_backward_matches_finite_differences(
        n, c_in, h, w, c_out, k, s, p, op, d, groups):
    rng = np.random.default_rng(32)
    x = rand(rng, n, c_in, h, w)
    wt, b = rand(rng, c_in, c_out // groups, *k), rand(rng, c_out)
    kw_ = dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d)
    y = R.conv_transpose2d(x, wt, b, **kw_)
    g = rand(rng, *y.shape)
    # adjoint of the grouped conv2d with the same weight
    y0 = R.conv_transpose2d(x, wt, None, **kw_)
    conv = R.conv2d(g, wt, stride=s, padding=p, dilation=d, groups=groups)
    np.testing.assert_allclose(np.vdot(y0, g), np.vdot(x, conv[:, :, :h, :w]), rtol=1e-10)
    check_backward_fd("conv_transpose2d", g, x, wt, b, kw_)
    assert R.conv_transpose2d_backward(g, x, wt, bias=False, **kw_)[2] is None


@pytest.mark.parametrize("padding", [0, 2, "same", "valid"])
def test_conv1d_and_backward_match_finite_differences(padding):
    rng = np.random.default_rng(33)
    x, wt, b = rand(rng, 2, 4, 7), rand(rng, 6, 2, 4), rand(rng, 6)
    kw_ = dict(stride=1 if padding == "same" else 2, padding=padding, dilation=2, groups=2)
    y = R.conv1d(x, wt, b, **kw_)
    # as the grouped conv2d of (1, L) images
    p2 = padding if isinstance(padding, str) else (0, padding)
    y2 = R.conv2d(x[:, :, None], wt[:, :, None], b, (1, kw_["stride"]), p2, (1, 2), 2)
    np.testing.assert_array_equal(y, y2[:, :, 0])
    if padding == "same":
        assert y.shape[-1] == 7
    g = rand(rng, *y.shape)
    gx, gw, gb = R.conv1d_backward(g, x, wt, **kw_)
    np.testing.assert_allclose(gx, fd_grad(lambda v: R.conv1d(v, wt, b, **kw_), x, g),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, fd_grad(lambda v: R.conv1d(x, v, b, **kw_), wt, g),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, g.sum(axis=(0, 2)), rtol=1e-12)


def test_conv_transpose2d_non_finite_weight_reaches_only_its_outputs():
    """Each output sums real products only (as PyTorch): a NaN tap poisons
    the outputs it lands on, not the zeros between strided inputs."""
    x = np.ones((1, 1, 1, 2))
    wt = np.array([[[[np.nan, 1.0]]]])
    y = R.conv_transpose2d(x, wt, stride=3)[0, 0, 0]
    assert np.isnan(y[[0, 3]]).all() and np.array_equal(y[[1, 2, 4]], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(np.isnan(R.full_conv2d(x, wt)[0, 0, 0]), [True, True, False])


# --------------------------------------------------------------------------
# hand-worked examples
# --------------------------------------------------------------------------

X9 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)     # [[1,2,3],[4,5,6],[7,8,9]]
W4 = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])


def test_conv2d_by_hand():
    # y[i,j] = x[i,j] + 2 x[i,j+1] + 3 x[i+1,j] + 4 x[i+1,j+1]
    np.testing.assert_array_equal(R.conv2d(X9, W4)[0, 0], [[37, 47],
                                                           [67, 77]])
    np.testing.assert_array_equal(R.conv2d(X9, W4, np.array([0.5]))[0, 0],
                                  [[37.5, 47.5], [67.5, 77.5]])
    # stride 2, padding 1, all-ones kernel: windows at rows/cols -1..0, 1..2
    ones = np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(
        R.conv2d(X9, ones, stride=2, padding=1)[0, 0], [[1, 5], [11, 28]])
    # dilation 2: the taps are the four corners, 1*1 + 2*3 + 3*7 + 4*9
    np.testing.assert_array_equal(R.conv2d(X9, W4, dilation=2)[0, 0], [[64]])
    # two input channels, two output channels
    x = np.concatenate([X9, -X9], axis=1)             # (1, 2, 3, 3)
    w = np.zeros((2, 2, 1, 1))
    w[0, 0], w[0, 1], w[1, 1] = 1.0, 3.0, 1.0
    y = R.conv2d(x, w)
    np.testing.assert_array_equal(y[0, 0], -2 * X9[0, 0])
    np.testing.assert_array_equal(y[0, 1], -X9[0, 0])


def test_conv2d_backward_by_hand():
    g = np.array([[[[1.0, 0.0], [0.0, 2.0]]]])
    gx, gw, gb = R.conv2d_backward(g, X9, W4)
    # g00 = 1 puts w on x[0:2,0:2]; g11 = 2 puts 2w on x[1:3,1:3]
    np.testing.assert_array_equal(gx[0, 0], [[1, 2, 0], [3, 6, 4], [0, 6, 8]])
    # gw[i,j] = x[i,j] + 2 x[i+1,j+1]
    np.testing.assert_array_equal(gw[0, 0], [[11, 14], [20, 23]])
    np.testing.assert_array_equal(gb, [3])
    # 1x1 kernel (value 2), stride 3 on a 4x4 input reads only rows/cols 0, 3
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.full((1, 1, 1, 1), 2.0)
    np.testing.assert_array_equal(R.conv2d(x, w, stride=3)[0, 0],
                                  [[0, 6], [24, 30]])
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    gx, gw, _ = R.conv2d_backward(g, x, w, stride=3)
    np.testing.assert_array_equal(
        gx[0, 0], [[2, 0, 0, 4], [0, 0, 0, 0], [0, 0, 0, 0], [6, 0, 0, 8]])
    np.testing.assert_array_equal(gw[0, 0], [[0 + 2 * 3 + 3 * 12 + 4 * 15]])


def test_full_conv2d_by_hand():
    # (1 + 2z + 3y + 4yz)^2, coefficients of y^r z^c
    a = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(R.full_conv2d(a, a)[0, 0],
                                  [[1, 4, 4], [6, 20, 16], [9, 24, 16]])


def test_pools_by_hand():
    np.testing.assert_array_equal(R.avg_pool2d(X9, 2, stride=1)[0, 0],
                                  [[3, 4], [6, 7]])
    # padding counts as zeros and the divisor stays 4
    np.testing.assert_array_equal(R.avg_pool2d(X9, 2, stride=2,
                                               padding=1)[0, 0],
                                  [[0.25, 1.25], [2.75, 7.0]])
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(
        R.avg_pool2d_backward(g, (1, 1, 3, 3), 2, stride=1)[0, 0],
        np.array([[1, 3, 2], [4, 10, 6], [3, 7, 4]]) / 4)
    np.testing.assert_array_equal(
        R.avg_pool2d_backward(g, (1, 1, 3, 3), 2, stride=2, padding=1)[0, 0],
        np.array([[1, 2, 2], [3, 4, 4], [3, 4, 4]]) / 4)
    y, idx = R.max_pool2d(X9, 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[5, 6], [8, 9]])
    np.testing.assert_array_equal(idx[0, 0], [[4, 5], [7, 8]])


def test_activations_by_hand():
    np.testing.assert_allclose(R.sigmoid(np.array([0.0, np.log(3.0)])),
                               [0.5, 0.75], rtol=1e-15)
    np.testing.assert_allclose(R.sigmoid(np.array([-np.log(3.0)])), [0.25],
                               rtol=1e-15)
    np.testing.assert_allclose(R.sigmoid_backward(np.array([2.0]),
                                                  np.array([0.75])), [0.375])
    np.testing.assert_allclose(R.tanh(np.array([np.log(2.0)])), [0.6],
                               rtol=1e-15)
    np.testing.assert_allclose(R.tanh_backward(np.array([2.0]),
                                               np.array([0.5])), [1.5])
    x = np.array([-2.0, -0.0, 0.0, 3.0])
    np.testing.assert_array_equal(R.relu(x), [0, 0, 0, 3])
    np.testing.assert_array_equal(R.relu_backward(np.full(4, 7.0), x),
                                  [0, 0, 0, 7])
    np.testing.assert_array_equal(R.leaky_relu(x, 0.5), [-1, 0, 0, 3])
    np.testing.assert_array_equal(
        R.leaky_relu_backward(np.full(4, 8.0), x, 0.5), [4, 4, 4, 8])
    np.testing.assert_allclose(R.leaky_relu(np.array([-100.0])), [-1.0])


def test_softmax_and_loss_by_hand():
    x = np.array([[0.0, np.log(3.0)], [np.log(2.0), np.log(2.0)]])
    np.testing.assert_allclose(R.softmax(x), [[0.25, 0.75], [0.5, 0.5]],
                               rtol=1e-15)
    np.testing.assert_allclose(R.softmax(x, axis=0),
                               [[1 / 3, 3 / 5], [2 / 3, 2 / 5]], rtol=1e-15)
    np.testing.assert_allclose(R.log_softmax(x),
                               np.log([[0.25, 0.75], [0.5, 0.5]]), rtol=1e-15)
    np.testing.assert_allclose(
        R.softmax_backward(np.array([1.0, 0.0]), np.array([0.25, 0.75])),
        [0.1875, -0.1875], rtol=1e-15)
    logits = np.array([[0.0, 0.0], [0.0, np.log(3.0)]])
    loss, grad = R.softmax_cross_entropy(logits, np.array([0, 1]))
    assert isinstance(loss, float)
    assert loss == pytest.approx((np.log(2.0) - np.log(0.75)) / 2, rel=1e-15)
    np.testing.assert_allclose(grad, [[-0.25, 0.25], [0.125, -0.125]],
                               rtol=1e-15)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

POOL_GEOMS = [
    pytest.param(2, 2, 0, id="k2s2"),
    pytest.param(3, 2, 1, id="k3s2p1-overlap"),
    pytest.param((2, 3), (1, 2), (1, 1), id="k2x3-s1x2-p1"),
    pytest.param(3, 1, 1, id="k3s1p1"),
    pytest.param(1, 1, 0, id="k1"),
    pytest.param((3, 2), None, 0, id="stride-None"),
    pytest.param(2, 3, 1, id="stride>kernel"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_GEOMS)
def test_avg_pool2d_matches_scalar_loops(k, s, p, dtype):
    rng = np.random.default_rng(10)
    x = rand(rng, 2, 3, 7, 8).astype(dtype)
    y = R.avg_pool2d(x, k, stride=s, padding=p)
    assert y.dtype == dtype
    ref = naive_avg_pool2d(x, k, k if s is None else s, p)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("k,s,p", POOL_GEOMS)
def test_avg_pool2d_backward_matches_finite_differences(k, s, p):
    rng = np.random.default_rng(11)
    x = rand(rng, 2, 2, 5, 7)
    y = R.avg_pool2d(x, k, stride=s, padding=p)
    g = rand(rng, *y.shape)
    gx = R.avg_pool2d_backward(g, x.shape, k, stride=s, padding=p)
    fx = fd_grad(lambda v: R.avg_pool2d(v, k, stride=s, padding=p), x, g)
    np.testing.assert_allclose(gx, fx, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_GEOMS)
def test_max_pool2d_matches_torch_loop_on_distinct_values(k, s, p, dtype):
    rng = np.random.default_rng(12)
    x = rand(rng, 2, 3, 7, 8).astype(dtype)
    y, idx = R.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    ry, ridx = torch_pool_loops(x, k, k if s is None else s, p)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    # indices are flat positions in each input plane
    planes = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(
        np.take_along_axis(planes, idx.reshape(2, 3, -1), axis=2),
        y.reshape(2, 3, -1))
    np.testing.assert_array_equal(R.max_pool2d(x, k, stride=s, padding=p), y)


@pytest.mark.parametrize("k,s,p", POOL_GEOMS)
def test_max_pool2d_backward_matches_finite_differences(k, s, p):
    rng = np.random.default_rng(13)
    # distinct values in [0, 1) spaced by 1/140, so a 1e-6 step never changes
    # a window's argmax and finite differences are valid
    x = (rng.permutation(2 * 2 * 5 * 7) / 140.0).reshape(2, 2, 5, 7)
    y, idx = R.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    g = rand(rng, *y.shape)
    gx = R.max_pool2d_backward(g, idx, x.shape)
    fx = fd_grad(lambda v: R.max_pool2d(v, k, stride=s, padding=p), x, g)
    np.testing.assert_allclose(gx, fx, rtol=1e-6, atol=1e-8)


def test_max_pool2d_backward_accumulates_overlapping_windows():
    x = np.array([[[[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]]]])
    y, idx = R.max_pool2d(x, 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[4, 4], [4, 4]])
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    gx = R.max_pool2d_backward(g, idx, x.shape)
    np.testing.assert_array_equal(gx[0, 0], [[0, 0, 0], [0, 10, 0], [0, 0, 0]])
    # the overlapping 3x3 / s2 / p1 geometry on 5x5: windows cover rows
    # -1..1, 1..3, 3..5, so (1, 1) lies in 4 windows; make it the maximum
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    x[0, 0, 1, 1] = 100.0
    y, idx = R.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[6, 6, 9], [6, 6, 19],
                                              [21, 23, 24]])
    g = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    gx = R.max_pool2d_backward(g, idx, x.shape)
    assert gx[0, 0, 1, 1] == 1 + 2 + 4 + 5
    assert gx.sum() == g.sum()


def test_max_pool2d_backward_dtype_and_input_unchanged():
    g = np.ones((1, 2, 2, 2), dtype=np.float32)
    idx = np.zeros((1, 2, 2, 2), dtype=np.int64)
    gx = R.max_pool2d_backward(g, idx, (1, 2, 3, 3))
    assert gx.dtype == np.float32 and gx.shape == (1, 2, 3, 3)
    assert np.all(gx[:, :, 0, 0] == 4) and gx.sum() == 8


# -- (b) ties, -inf and NaN ---------------------------------------------------

def pool1(plane, k, s=None, p=0):
    """max_pool2d of one 2-D plane; returns (values, indices) as 2-D."""
    x = np.asarray(plane, dtype=np.float64)[None, None]
    y, idx = R.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    ry, ridx = torch_pool_loops(x, k, k if s is None else s, p)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    return y[0, 0], idx[0, 0]


def test_max_pool2d_first_maximum_wins_ties():
    y, idx = pool1(np.zeros((4, 4)), 2)               # all ties (post-ReLU)
    np.testing.assert_array_equal(idx, [[0, 2], [8, 10]])
    np.testing.assert_array_equal(y, 0)
    y, idx = pool1([[1, 3], [3, 2]], 2)
    assert y[0, 0] == 3 and idx[0, 0] == 1
    y, idx = pool1([[0, 1], [1, 1]], 2)
    assert idx[0, 0] == 1
    # overlapping windows over a constant row: each picks its first tap
    y, idx = pool1([[2, 2, 2, 2]], (1, 2), 1)
    np.testing.assert_array_equal(idx, [[0, 1, 2]])
    # a tie straddling two windows: each window reports its own first max
    y, idx = pool1([[5, 1, 5, 5]], (1, 2), 2)
    np.testing.assert_array_equal(idx, [[0, 2]])
    # -0.0 and 0.0 compare equal, so the first one wins, sign included
    y, idx = pool1([[-0.0, 0.0]], (1, 2))
    assert idx[0, 0] == 0 and np.signbit(y[0, 0])
    y, idx = pool1([[0.0, -0.0]], (1, 2))
    assert idx[0, 0] == 0 and not np.signbit(y[0, 0])


def test_max_pool2d_padding_is_never_selected():
    # all-negative input: zero padding would win, -inf padding does not
    y, idx = pool1(-X9[0, 0], 2, 2, 1)
    np.testing.assert_array_equal(y, [[-1, -2], [-4, -5]])
    np.testing.assert_array_equal(idx, [[0, 1], [3, 4]])


def test_max_pool2d_minus_infinity():
    # a window of -inf reports -inf and its first in-bounds position
    y, idx = pool1(np.full((3, 3), -np.inf), 2, 1, 1)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(
        idx, [[0, 0, 1, 2], [0, 0, 1, 2], [3, 3, 4, 5], [6, 6, 7, 8]])
    y, idx = pool1([[-np.inf, -np.inf], [-np.inf, -3.0]], 2)
    assert y[0, 0] == -3 and idx[0, 0] == 3
    y, idx = pool1([[-np.inf, -np.inf], [-np.inf, -np.inf]], 2)
    assert y[0, 0] == -np.inf and idx[0, 0] == 0
    y, idx = pool1([[1.0, np.inf], [np.inf, 2.0]], 2)
    assert y[0, 0] == np.inf and idx[0, 0] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_nan_propagates_last_nan_index(dtype):
    nan = np.nan
    cases = [
        ([[1.0, nan], [nan, 0.0]], 2),     # two NaNs: the last one
        ([[nan, 5.0], [7.0, 1.0]], 0),     # nothing is > NaN afterwards
        ([[5.0, nan], [7.0, 1.0]], 1),
        ([[np.inf, nan], [1.0, 2.0]], 1),
        ([[-np.inf, -np.inf], [-np.inf, nan]], 3),
        ([[nan, nan], [nan, nan]], 3),
    ]
    for plane, want in cases:
        x = np.array(plane, dtype=dtype)[None, None]
        y, idx = R.max_pool2d(x, 2, return_indices=True)
        assert np.isnan(y[0, 0, 0, 0]), plane
        assert idx[0, 0, 0, 0] == want, plane
        assert y.dtype == dtype
    # NaN next to padding, in a padded corner window
    y, idx = pool1([[nan, 1.0], [2.0, 3.0]], 2, 1, 1)
    assert np.isnan(y[0, 0]) and idx[0, 0] == 0
    assert np.isnan(y[1, 1]) and idx[1, 1] == 0
    assert y[2, 2] == 3 and idx[2, 2] == 3


@given(data=st.data())
def test_max_pool2d_tie_heavy_random_matches_torch_loop(data):
    draw = data.draw
    kh = draw(st.integers(1, 3), label="kH")
    kw = draw(st.integers(1, 3), label="kW")
    sh = draw(st.integers(1, 3), label="sH")
    sw = draw(st.integers(1, 3), label="sW")
    ph = draw(st.integers(0, kh // 2), label="pH")   # PyTorch: p <= k/2
    pw = draw(st.integers(0, kw // 2), label="pW")
    h = draw(st.integers(1, 6), label="H")
    w = draw(st.integers(1, 6), label="W")
    assume(h + 2 * ph >= kh and w + 2 * pw >= kw)
    values = st.sampled_from([0.0, 0.0, 1.0, 2.0, -np.inf, np.inf, np.nan])
    flat = draw(st.lists(values, min_size=2 * h * w, max_size=2 * h * w),
                label="values")
    x = np.array(flat).reshape(1, 2, h, w)
    y, idx = R.max_pool2d(x, (kh, kw), stride=(sh, sw), padding=(ph, pw),
                          return_indices=True)
    ry, ridx = torch_pool_loops(x, (kh, kw), (sh, sw), (ph, pw))
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)


# --------------------------------------------------------------------------
# activations and loss
# --------------------------------------------------------------------------

def test_elementwise_activation_backwards_match_finite_differences():
    rng = np.random.default_rng(14)
    x = rand(rng, 2, 3, 2, 4)
    x[np.abs(x) < 0.1] += 0.3          # keep away from the kink at 0
    g = rand(rng, *x.shape)
    np.testing.assert_allclose(R.relu_backward(g, x),
                               fd_grad(R.relu, x, g), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        R.leaky_relu_backward(g, x, 0.2),
        fd_grad(lambda v: R.leaky_relu(v, 0.2), x, g), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        R.leaky_relu_backward(g, x),
        fd_grad(R.leaky_relu, x, g), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(R.sigmoid_backward(g, R.sigmoid(x)),
                               fd_grad(R.sigmoid, x, g), rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(R.tanh_backward(g, R.tanh(x)),
                               fd_grad(R.tanh, x, g), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((3, 5), 0),
                                        ((2, 4, 3), 1), ((1, 1), -1)])
def test_softmax_backwards_match_finite_differences(shape, axis):
    rng = np.random.default_rng(15)
    x = 3 * rand(rng, *shape)
    g = rand(rng, *shape)
    np.testing.assert_allclose(
        R.softmax_backward(g, R.softmax(x, axis=axis), axis=axis),
        fd_grad(lambda v: R.softmax(v, axis=axis), x, g),
        rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        R.log_softmax_backward(g, R.log_softmax(x, axis=axis), axis=axis),
        fd_grad(lambda v: R.log_softmax(v, axis=axis), x, g),
        rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(R.softmax(x, axis=axis).sum(axis=axis), 1.0,
                               rtol=1e-14)
    np.testing.assert_allclose(np.exp(R.log_softmax(x, axis=axis)),
                               R.softmax(x, axis=axis), rtol=1e-13)


@pytest.mark.parametrize("n,k", [(1, 1), (1, 4), (5, 3), (7, 10)])
def test_softmax_cross_entropy_gradient_matches_finite_differences(n, k):
    rng = np.random.default_rng(16)
    logits = 2 * rand(rng, n, k)
    labels = rng.integers(0, k, size=n)
    loss, grad = R.softmax_cross_entropy(logits, labels)
    fx = fd_grad(lambda v: np.array(R.softmax_cross_entropy(v, labels)[0]),
                 logits, 1.0)
    np.testing.assert_allclose(grad, fx, rtol=1e-6, atol=1e-9)
    want = -np.mean(np.log(R.softmax(logits))[np.arange(n), labels])
    assert loss == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_are_stable_for_large_inputs(dtype):
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        s = R.sigmoid(x)
        np.testing.assert_array_equal(s[[0, 2, 4]], [0.0, 0.5, 1.0])
        assert np.all(np.isfinite(R.sigmoid_backward(np.ones_like(x), s)))
        t = R.tanh(x)
        np.testing.assert_array_equal(t[[0, 2, 4]], [-1.0, 0.0, 1.0])
        sm = R.softmax(x)
        assert sm[-1] == 1.0 and np.all(np.isfinite(sm))
        ls = R.log_softmax(x)
        assert ls[-1] == 0.0 and ls[0] == pytest.approx(-2e4)
        assert np.all(np.isfinite(ls))
        assert np.all(np.isfinite(R.log_softmax_backward(np.ones_like(x),
                                                         ls)))
        loss, grad = R.softmax_cross_entropy(
            np.array([[1e4, -1e4], [-1e4, 1e4]], dtype=dtype),
            np.array([1, 1]))
        assert loss == pytest.approx(1e4)
        np.testing.assert_allclose(grad, [[0.5, -0.5], [0.0, 0.0]],
                                   atol=1e-7)
        assert grad.dtype == dtype
    for out in (s, t, sm, ls):
        assert out.dtype == dtype


def test_relu_nan_and_zero_semantics():
    x = np.array([np.nan, 0.0, -1.0, 1.0])
    y = R.relu(x)
    assert np.isnan(y[0]) and list(y[1:]) == [0, 0, 1]
    g = np.array([2.0, 3.0, 4.0, 5.0])
    # PyTorch threshold_backward: 0 where x <= 0, else grad (NaN passes)
    np.testing.assert_array_equal(R.relu_backward(g, x), [2, 0, 0, 5])


# --------------------------------------------------------------------------
# dtype, empty batch, inputs never modified
# --------------------------------------------------------------------------

def all_calls(dtype, n=2):
    """(name, thunk) for every public function on small inputs."""
    rng = np.random.default_rng(17)

    def a(*shape):
        arr = rand(rng, *shape).astype(dtype)
        arr.flags.writeable = False
        return arr

    x, w, b = a(n, 2, 5, 6), a(3, 2, 2, 3), a(3)
    gy = a(n, 3, 3, 3)           # conv2d(x, w, stride=2, padding=1) shape
    wt = a(3, 2, 2, 2)           # conv_transpose2d weight (C_in=3, C_out=2)
    gp = a(n, 2, 3, 4)           # pool output shape for k=2, s=2, p=1
    idx = np.zeros((n, 2, 3, 4), dtype=np.int64)
    idx.flags.writeable = False
    z = a(n, 4)
    labels = np.zeros(n, dtype=np.int64)
    ga, idxa = a(n, 2, 3, 2), np.zeros((n, 2, 3, 2), dtype=np.int64)  # adaptive (3, 2)
    x1, g1 = a(n, 2, 7), a(n, 2, 4)  # 1-D: k=3, s=2, p=1, ceil_mode
    idx1 = np.zeros((n, 2, 4), dtype=np.int64)
    return [
        ("adaptive_avg_pool2d", lambda: R.adaptive_avg_pool2d(x, (3, 2))),
        ("adaptive_avg_pool2d_backward", lambda: R.adaptive_avg_pool2d_backward(ga, x.shape)),
        ("adaptive_max_pool2d", lambda: R.adaptive_max_pool2d(x, (3, None), True)),
        ("adaptive_max_pool2d_backward",
         lambda: R.adaptive_max_pool2d_backward(ga, idxa, x.shape)),
        ("max_unpool2d", lambda: R.max_unpool2d(gp, idx, 2, 2, 1)),
        ("max_unpool2d_backward", lambda: R.max_unpool2d_backward(x, idx)),
        ("max_pool1d", lambda: R.max_pool1d(x1, 3, 2, 1, 1, True, return_indices=True)),
        ("max_pool1d_backward", lambda: R.max_pool1d_backward(g1, idx1, x1.shape)),
        ("avg_pool1d", lambda: R.avg_pool1d(x1, 3, 2, 1, True)),
        ("avg_pool1d_backward", lambda: R.avg_pool1d_backward(g1, x1.shape, 3, 2, 1, True)),
        ("conv2d", lambda: R.conv2d(x, w, b, stride=2, padding=1)),
        ("conv2d_backward",
         lambda: R.conv2d_backward(gy, x, w, stride=2, padding=1)),
        ("conv_transpose2d",
         lambda: R.conv_transpose2d(gy, wt, b[:2], stride=2, padding=1,
                                    output_padding=1)),
        ("conv_transpose2d_backward",
         lambda: R.conv_transpose2d_backward(x, gy, wt, stride=2, padding=1,
                                             output_padding=1)),
        ("conv1d", lambda: R.conv1d(x[:, :, 0], w[:, :, 0], b, 2, 1)),
        ("conv1d_backward",
         lambda: R.conv1d_backward(a(n, 3, 3), x[:, :, 0], w[:, :, 0], 2, 1)),
        ("full_conv2d", lambda: R.full_conv2d(x, a(2, 3, 2, 3))),
        ("max_pool2d",
         lambda: R.max_pool2d(x, 2, 2, 1, return_indices=True)),
        ("max_pool2d_backward",
         lambda: R.max_pool2d_backward(gp, idx, x.shape)),
        ("avg_pool2d", lambda: R.avg_pool2d(x, 2, 2, 1)),
        ("avg_pool2d_backward",
         lambda: R.avg_pool2d_backward(gp, x.shape, 2, 2, 1)),
        ("linear", lambda: R.linear(z, a(3, 4), b)),
        ("linear_backward", lambda: R.linear_backward(a(n, 3), z, a(3, 4))),
        ("relu", lambda: R.relu(x)),
        ("relu_backward", lambda: R.relu_backward(x, x)),
        ("leaky_relu", lambda: R.leaky_relu(x)),
        ("leaky_relu_backward", lambda: R.leaky_relu_backward(x, x)),
        ("sigmoid", lambda: R.sigmoid(x)),
        ("sigmoid_backward", lambda: R.sigmoid_backward(x, x)),
        ("tanh", lambda: R.tanh(x)),
        ("tanh_backward", lambda: R.tanh_backward(x, x)),
        ("softmax", lambda: R.softmax(z)),
        ("softmax_backward", lambda: R.softmax_backward(z, z)),
        ("log_softmax", lambda: R.log_softmax(z)),
        ("log_softmax_backward", lambda: R.log_softmax_backward(z, z)),
        ("softmax_cross_entropy", lambda: R.softmax_cross_entropy(z, labels)),
        ("batch_norm", lambda: R.batch_norm(x, None, None, b[:2], b[1:], training=True)),
        ("batch_norm_backward",
         lambda: R.batch_norm_backward(x, x, b[:2], b[1:] ** 2, b[:2], training=False)),
    ]


def _arrays(result):
    out = result if isinstance(result, tuple) else (result,)
    return [r for r in out if isinstance(r, np.ndarray)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_function_preserves_dtype_and_accepts_read_only(dtype):
    calls = all_calls(dtype)
    assert {name for name, _ in calls} == set(R.__all__)
    for name, thunk in calls:
        for arr in _arrays(thunk()):        # read-only inputs: no writes
            if arr.dtype.kind == "f":
                assert arr.dtype == dtype, name
            assert arr.flags.writeable, name


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype):
    shapes = {
        "conv2d": [(0, 3, 3, 3)],
        "conv2d_backward": [(0, 2, 5, 6), (3, 2, 2, 3), (3,)],
        "conv_transpose2d": [(0, 2, 5, 5)],
        "conv_transpose2d_backward": [(0, 3, 3, 3), (3, 2, 2, 2), (2,)],
        "conv1d_backward": [(0, 2, 6), (3, 2, 3), (3,)],
        "full_conv2d": [(0, 3, 6, 8)],
        "max_pool2d": [(0, 2, 3, 4), (0, 2, 3, 4)],
        "max_pool2d_backward": [(0, 2, 5, 6)],
        "avg_pool2d": [(0, 2, 3, 4)],
        "avg_pool2d_backward": [(0, 2, 5, 6)],
        "softmax_cross_entropy": [(0, 4)],
        "linear_backward": [(0, 4), (3, 4), (3,)],
        "batch_norm_backward": [(0, 2, 5, 6), (2,), (2,)],
    }
    for name, thunk in all_calls(dtype, n=0):
        got = [a.shape for a in _arrays(thunk())]
        if name in shapes:
            assert got == shapes[name], name
        else:
            assert all(0 in s for s in got), name
    loss, grad = R.softmax_cross_entropy(np.zeros((0, 4), dtype=dtype),
                                         np.zeros(0, dtype=np.int64))
    assert loss == 0.0 and isinstance(loss, float) and grad.dtype == dtype


# --------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_linear_backward_matches_finite_differences(bias):
    rng = np.random.default_rng(5)
    x, w = rand(rng, 3, 4), rand(rng, 2, 4)
    b = rand(rng, 2) if bias else None
    g = rand(rng, 3, 2)
    gx, gw, gb = R.linear_backward(g, x, w, bias=bias)

    def loss(xx, ww, bb):
        return float(np.sum(R.linear(xx, ww, bb) * g))

    eps = 1e-6
    for arr, grad in ((x, gx), (w, gw)) + (((b, gb),) if bias else ()):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            up = loss(x, w, b)
            arr[i] = old - eps
            down = loss(x, w, b)
            arr[i] = old
            num[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)
    if not bias:
        assert gb is None


def test_linear_hand_computed():
    y = R.linear(np.array([[1.0, 2.0]]), np.array([[3.0, 4.0], [5.0, 6.0]]), np.array([1.0, -1.0]))
    np.testing.assert_array_equal(y, [[12.0, 16.0]])


# --------------------------------------------------------------------------
# pooling with every PyTorch option, adaptive pooling, unpooling, 1-D
# --------------------------------------------------------------------------


def torch_out_size(size, k, s, p, d, ceil_mode):
    """Transcription of PyTorch's pooling_output_shape."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def torch_pool_loops(x, k, s, p, d=1, ceil_mode=False, kind="max", count_include_pad=True,
                     divisor_override=None):
    """Transcription of PyTorch's CPU max/avg pooling loops (NCHW), every option."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(k), _pair(s), _pair(p), _pair(d)
    n, c, h, w = x.shape
    oh = torch_out_size(h, kh, sh, ph, dh, ceil_mode)
    ow = torch_out_size(w, kw, sw, pw, dw, ceil_mode)
    y = np.empty((n, c, oh, ow))
    ind = np.empty((n, c, oh, ow), dtype=np.int64)
    for a in range(n):
        for b in range(c):
            plane = x[a, b].ravel()
            for r in range(oh):
                for q in range(ow):
                    ih0, iw0 = r * sh - ph, q * sw - pw
                    if kind == "max":
                        ih1 = min(ih0 + (kh - 1) * dh + 1, h)
                        iw1 = min(iw0 + (kw - 1) * dw + 1, w)
                        while ih0 < 0:
                            ih0 += dh
                        while iw0 < 0:
                            iw0 += dw
                        maxindex, maxval = ih0 * w + iw0, -np.inf
                        for ih in range(ih0, ih1, dh):
                            for iw in range(iw0, iw1, dw):
                                val = plane[ih * w + iw]
                                if val > maxval or np.isnan(val):
                                    maxval, maxindex = val, ih * w + iw
                        y[a, b, r, q], ind[a, b, r, q] = maxval, maxindex
                        continue
                    ih1, iw1 = min(ih0 + kh, h + ph), min(iw0 + kw, w + pw)
                    pool_size = (ih1 - ih0) * (iw1 - iw0)
                    ih0, iw0, ih1, iw1 = max(ih0, 0), max(iw0, 0), min(ih1, h), min(iw1, w)
                    acc = sum(float(plane[ih * w + iw])
                              for ih in range(ih0, ih1) for iw in range(iw0, iw1))
                    if divisor_override is not None:
                        div = divisor_override
                    elif count_include_pad:
                        div = pool_size
                    else:
                        div = (ih1 - ih0) * (iw1 - iw0)
                    y[a, b, r, q] = acc / div
    return y, ind


def torch_adaptive_loops(x, oh, ow):
    """Transcription of PyTorch's CPU adaptive avg/max pooling loops."""
    n, c, h, w = x.shape
    avg, mx = np.empty((n, c, oh, ow)), np.empty((n, c, oh, ow))
    ind = np.empty((n, c, oh, ow), dtype=np.int64)
    for a in range(n):
        for b in range(c):
            for r in range(oh):
                ih0, ih1 = (r * h) // oh, -(-((r + 1) * h) // oh)
                for q in range(ow):
                    iw0, iw1 = (q * w) // ow, -(-((q + 1) * w) // ow)
                    acc, maxval, maxindex = 0.0, -np.inf, ih0 * w + iw0
                    for ih in range(ih0, ih1):
                        for iw in range(iw0, iw1):
                            val = x[a, b, ih, iw]
                            acc += float(val)
                            if val > maxval or np.isnan(val):
                                maxval, maxindex = val, ih * w + iw
                    avg[a, b, r, q] = acc / (ih1 - ih0) / (iw1 - iw0)
                    mx[a, b, r, q], ind[a, b, r, q] = maxval, maxindex
    return avg, mx, ind


FULL_POOL_GEOMS = [
    pytest.param(2, 2, 0, 1, True, id="k2s2-ceil"),
    pytest.param(3, 2, 1, 2, True, id="k3s2p1d2-ceil"),
    pytest.param((2, 3), (1, 2), (1, 1), (2, 1), False, id="k2x3-d2x1"),
    pytest.param(4, 3, 2, 1, True, id="k4s3p2-ceil-last-window-dropped"),
    pytest.param((3, 2), (3, 3), (1, 0), 1, True, id="stride>kernel-ceil"),
    pytest.param(1, 2, 0, 3, True, id="k1-ceil"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,d,cm", FULL_POOL_GEOMS)
def test_max_pool2d_all_options_match_torch_loop(k, s, p, d, cm, dtype):
    rng = np.random.default_rng(30)
    for x in (rand(rng, 2, 3, 7, 8), np.round(rand(rng, 2, 3, 7, 8))):  # distinct, ties
        x = x.astype(dtype)
        x[0, 0, 1, :3] = np.nan
        y, idx = R.max_pool2d(x, k, s, p, d, cm, return_indices=True)
        ry, ridx = torch_pool_loops(x, k, s, p, d, cm)
        np.testing.assert_array_equal(y, ry.astype(dtype))
        np.testing.assert_array_equal(idx, ridx)


@pytest.mark.parametrize("cip,dov", [(True, None), (False, None), (True, 3), (False, -2)])
@pytest.mark.parametrize("k,s,p,d,cm", FULL_POOL_GEOMS)
def test_avg_pool2d_all_options_match_torch_loop(k, s, p, d, cm, cip, dov):
    rng = np.random.default_rng(31)
    x = rand(rng, 2, 3, 7, 8)
    y = R.avg_pool2d(x, k, s, p, cm, cip, dov)
    ry, _ = torch_pool_loops(x, k, s, p, 1, cm, "avg", cip, dov)
    np.testing.assert_allclose(y, ry, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("cip,dov", [(True, None), (False, None), (False, 5)])
@pytest.mark.parametrize("k,s,p,d,cm", FULL_POOL_GEOMS)
def test_avg_pool2d_options_backward_matches_finite_differences(k, s, p, d, cm, cip, dov):
    rng = np.random.default_rng(32)
    x = rand(rng, 1, 2, 5, 7)
    y = R.avg_pool2d(x, k, s, p, cm, cip, dov)
    g = rand(rng, *y.shape)
    gx = R.avg_pool2d_backward(g, x.shape, k, s, p, cm, cip, dov)
    fx = fd_grad(lambda v: R.avg_pool2d(v, k, s, p, cm, cip, dov), x, g)
    np.testing.assert_allclose(gx, fx, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k,s,p,d,cm", FULL_POOL_GEOMS)
def test_max_pool2d_options_backward_matches_finite_differences(k, s, p, d, cm):
    rng = np.random.default_rng(33)
    x = (rng.permutation(2 * 5 * 7) / 140.0).reshape(1, 2, 5, 7)  # tie-free
    y, idx = R.max_pool2d(x, k, s, p, d, cm, return_indices=True)
    g = rand(rng, *y.shape)
    gx = R.max_pool2d_backward(g, idx, x.shape)
    fx = fd_grad(lambda v: R.max_pool2d(v, k, s, p, d, cm), x, g)
    np.testing.assert_allclose(gx, fx, rtol=1e-6, atol=1e-8)


ADAPTIVE_SIZES = [(1, 1), (2, 3), (3, 3), (5, 7), (7, 11), (4, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("o", ADAPTIVE_SIZES)
def test_adaptive_pools_match_torch_loops(o, dtype):
    rng = np.random.default_rng(34)
    for x in (rand(rng, 2, 3, 5, 7), np.round(rand(rng, 2, 3, 5, 7))):
        x = x.astype(dtype)
        x[1, 2, 0, :2] = np.nan
        x[0, 1] = -np.inf
        avg, mx, ind = torch_adaptive_loops(x, *o)
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(R.adaptive_avg_pool2d(x, o), avg.astype(dtype),
                                       rtol=1e-6, atol=1e-6)
        y, idx = R.adaptive_max_pool2d(x, o, return_indices=True)
        np.testing.assert_array_equal(y, mx.astype(dtype))
        np.testing.assert_array_equal(idx, ind)


def test_adaptive_output_size_none_keeps_the_input_size():
    x = np.arange(2 * 5 * 7.0).reshape(1, 2, 5, 7)
    assert R.adaptive_avg_pool2d(x, (None, 3)).shape == (1, 2, 5, 3)
    assert R.adaptive_max_pool2d(x, (2, None)).shape == (1, 2, 2, 7)
    np.testing.assert_array_equal(R.adaptive_avg_pool2d(x, (None, None)), x)


@pytest.mark.parametrize("o", ADAPTIVE_SIZES)
def test_adaptive_backward_matches_finite_differences(o):
    rng = np.random.default_rng(35)
    x = (rng.permutation(2 * 5 * 7) / 140.0).reshape(1, 2, 5, 7)  # tie-free
    g = rand(rng, 1, 2, *o)
    gx = R.adaptive_avg_pool2d_backward(g, x.shape)
    np.testing.assert_allclose(gx, fd_grad(lambda v: R.adaptive_avg_pool2d(v, o), x, g),
                               rtol=1e-6, atol=1e-8)
    _, idx = R.adaptive_max_pool2d(x, o, return_indices=True)
    gx = R.adaptive_max_pool2d_backward(g, idx, x.shape)
    np.testing.assert_allclose(gx, fd_grad(lambda v: R.adaptive_max_pool2d(v, o), x, g),
                               rtol=1e-6, atol=1e-8)


def test_max_unpool2d_by_loops_and_finite_differences():
    rng = np.random.default_rng(36)
    x = rand(rng, 2, 2, 3, 4)
    idx = rng.integers(0, 7 * 9, size=x.shape)
    idx[0, 0, 0, :3] = 5  # repeated: the last one in row-major order wins
    u = R.max_unpool2d(x, idx, 3, 2, 0, output_size=(7, 9))
    want = np.zeros((2, 2, 63))
    for a, b, i, j in np.ndindex(x.shape):
        want[a, b, idx[a, b, i, j]] = x[a, b, i, j]
    np.testing.assert_array_equal(u, want.reshape(2, 2, 7, 9))
    assert R.max_unpool2d(x, idx % 35, 3, 2, 1).shape == (2, 2, 5, 7)  # default size
    # unpooling is linear: its backward is its transpose (without repeats)
    idx = np.stack([rng.permutation(63)[:12].reshape(3, 4) for _ in range(4)]).reshape(x.shape)
    g = rand(rng, 2, 2, 7, 9)
    gx = R.max_unpool2d_backward(g, idx)
    fx = fd_grad(lambda v: R.max_unpool2d(v, idx, 3, 2, output_size=(7, 9)), x, g)
    np.testing.assert_allclose(gx, fx, rtol=1e-6, atol=1e-8)


def test_pool1d_backward_matches_finite_differences():
    rng = np.random.default_rng(37)
    x = (rng.permutation(2 * 11) / 40.0).reshape(1, 2, 11)
    for k, s, p, d, cm in [(3, 2, 1, 1, True), (2, None, 0, 2, False), (4, 3, 2, 1, True)]:
        y, idx = R.max_pool1d(x, k, s, p, d, cm, return_indices=True)
        g = rand(rng, *y.shape)
        np.testing.assert_allclose(R.max_pool1d_backward(g, idx, x.shape),
                                   fd_grad(lambda v: R.max_pool1d(v, k, s, p, d, cm), x, g),
                                   rtol=1e-6, atol=1e-8)
        for cip in (True, False):
            y = R.avg_pool1d(x, k, s, p, cm, cip)
            g = rand(rng, *y.shape)
            np.testing.assert_allclose(
                R.avg_pool1d_backward(g, x.shape, k, s, p, cm, cip),
                fd_grad(lambda v: R.avg_pool1d(v, k, s, p, cm, cip), x, g),
                rtol=1e-6, atol=1e-8)
# batch normalization
# --------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 4), (2, 3, 2, 3)])
def test_batch_norm_backward_matches_finite_differences(shape, training):
    rng = np.random.default_rng(7)
    C = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    w, b, rm = rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal(C)
    rv = rng.random(C) + 0.5
    g = rng.standard_normal(shape)

    def fwd(x_=x, w_=w, b_=b):
        # copies: training mode updates the running statistics in place
        return R.batch_norm(x_, rm.copy(), rv.copy(), w_, b_, training=training, eps=1e-3)

    gx, gw, gb = R.batch_norm_backward(g, x, rm, rv, w, training=training, eps=1e-3)
    np.testing.assert_allclose(gx, fd_grad(lambda a: fwd(x_=a), x, g), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, fd_grad(lambda a: fwd(w_=a), w, g), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, fd_grad(lambda a: fwd(b_=a), b, g), rtol=1e-6, atol=1e-8)
    gx0, gw0, gb0 = R.batch_norm_backward(g, x, rm, rv, None, training=training, eps=1e-3)
    np.testing.assert_allclose(
        gx0, fd_grad(lambda a: R.batch_norm(a, rm.copy(), rv.copy(), training=training,
                                            eps=1e-3), x, g), rtol=1e-6, atol=1e-8)
    assert gw0 is None and gb0 is None


def test_batch_norm_by_definition():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 13.0]])
    rm, rv = np.array([1.0, 2.0]), np.array([4.0, 9.0])
    y = R.batch_norm(x, rm, rv, np.array([2.0, 1.0]), np.array([0.0, 1.0]), training=True,
                     momentum=0.5, eps=0.0)
    mean, var = np.array([3.0, 11.0]), np.array([8 / 3, 2.0])
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var) * [2.0, 1.0] + [0.0, 1.0])
    np.testing.assert_allclose(rm, [2.0, 6.5])
    np.testing.assert_allclose(rv, [0.5 * 4 + 0.5 * 4.0, 0.5 * 9 + 0.5 * 3.0])
    y = R.batch_norm(x, rm, rv, eps=0.0)  # evaluation mode
    np.testing.assert_allclose(y, (x - [2.0, 6.5]) / np.sqrt([4.0, 6.0]))
