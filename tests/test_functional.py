"""The compiled (cython) backend of ``cnnext.functional`` against the oracle.

The oracle is :mod:`cnnext.reference` (its own correctness is established in
``tests/test_reference.py`` against finite differences, scalar loops and
scipy); here it is always evaluated in float64 on the *same* input values,
and the kernel result of dtype ``dt`` is compared with the per-dtype
tolerance of ``conftest.TOLERANCES``.  Max-pool values and indices are
compared *exactly*.

Coverage: dtype x odd geometry (1x1 and non-square kernels,
stride larger than the kernel, padding near the kernel size, dilation, prime
sizes, N=1, C=1, N=0, unbatched 3-D) x memory layout (non-contiguous,
Fortran-ordered, read-only; inputs never modified), dtype promotion, the
backend switch, thread counts, the kernels' block boundaries and every
micro-kernel variant (``CNNEXT_ISA``).  Upstream gradients are
always random.
"""
import json
import os
import subprocess
import sys
import threading
import warnings
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import signal

import cnnext
from cnnext import functional as F
from cnnext import reference as R
from cnnext.functional.conv import _conv2d_plan

DTYPES = [np.float32, np.float64]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


Conv = namedtuple("Conv", "n cin cout h w k s p d")


def conv_arrays(g, dtype, rng):
    x = randn(rng, (g.n, g.cin, g.h, g.w), dtype)
    w = randn(rng, (g.cout, g.cin) + g.k, dtype)
    b = randn(rng, (g.cout,), dtype)
    return x, w, b


def conv_kwargs(g):
    return dict(stride=g.s, padding=g.p, dilation=g.d)


def conv_out_shape(g):
    return (
        g.n,
        g.cout,
        conv_out(g.h, g.k[0], g.s[0], g.p[0], g.d[0]),
        conv_out(g.w, g.k[1], g.s[1], g.p[1], g.d[1]),
    )


def draw_pair(data, label, lo, hi):
    return (
        data.draw(st.integers(lo, hi), label=f"{label}_h"),
        data.draw(st.integers(lo, hi), label=f"{label}_w"),
    )


def draw_conv(data, max_hw=9):
    """A valid conv geometry; invalid combinations are rejected with assume."""
    g = Conv(
        n=data.draw(st.integers(1, 3), label="N"),
        cin=data.draw(st.integers(1, 3), label="C_in"),
        cout=data.draw(st.integers(1, 4), label="C_out"),
        h=data.draw(st.integers(1, max_hw), label="H"),
        w=data.draw(st.integers(1, max_hw), label="W"),
        k=draw_pair(data, "kernel", 1, 5),
        s=draw_pair(data, "stride", 1, 4),
        p=draw_pair(data, "padding", 0, 4),
        d=draw_pair(data, "dilation", 1, 3),
    )
    _, _, oh, ow = conv_out_shape(g)
    assume(oh >= 1 and ow >= 1)
    return g


# Explicit odd geometries: (id, Conv).  A 2x3 kernel catches im2col code
# that mixes up kH and kW; stride > kernel skips input rows; padding near the
# kernel size gives output rows that see mostly zeros; primes avoid any
# accidental divisibility.
CASES = [
    ("1x1", Conv(2, 3, 4, 5, 6, (1, 1), (1, 1), (0, 0), (1, 1))),
    ("1x1-stride2", Conv(2, 3, 2, 7, 5, (1, 1), (2, 2), (0, 0), (1, 1))),
    ("1x1-stride-3x2-wide", Conv(3, 4, 5, 8, 37, (1, 1), (3, 2), (0, 0), (1, 1))),
    ("2x3", Conv(2, 2, 3, 6, 7, (2, 3), (1, 1), (0, 0), (1, 1))),
    ("3x5-pad", Conv(2, 3, 2, 7, 9, (3, 5), (1, 1), (1, 2), (1, 1))),
    ("3x2-stride-2x1", Conv(3, 2, 2, 8, 7, (3, 2), (2, 1), (1, 0), (1, 1))),
    ("stride>kernel", Conv(2, 2, 3, 11, 13, (2, 2), (3, 4), (0, 0), (1, 1))),
    ("pad-near-kernel", Conv(2, 2, 2, 5, 4, (3, 3), (1, 1), (2, 2), (1, 1))),
    ("pad=kernel-1x4", Conv(1, 1, 2, 3, 5, (2, 4), (1, 2), (1, 3), (1, 1))),
    ("dilation", Conv(2, 2, 3, 9, 8, (3, 2), (1, 1), (0, 1), (2, 3))),
    ("dilation-stride-pad", Conv(2, 3, 2, 11, 10, (3, 3), (2, 3), (2, 1), (2, 2))),
    ("primes", Conv(3, 5, 7, 13, 11, (3, 5), (2, 3), (1, 2), (1, 1))),
    ("N1-C1", Conv(1, 1, 1, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1))),
    ("kernel=input", Conv(2, 2, 3, 4, 5, (4, 5), (1, 1), (0, 0), (1, 1))),
    ("1-pixel-input", Conv(2, 3, 2, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1))),
]
CASE_IDS = [c[0] for c in CASES]
CASE_GEOMS = [c[1] for c in CASES]


# --------------------------------------------------------------------------
# convolution vs reference
# --------------------------------------------------------------------------


def check_conv2d(g, dtype, rng, close):
    x, w, b = conv_arrays(g, dtype, rng)
    kw = conv_kwargs(g)
    y = F.conv2d(x, w, b, **kw)
    assert y.dtype == dtype and y.shape == conv_out_shape(g)
    close(y, R.conv2d(*f64(x, w, b), **kw), dtype)
    y0 = F.conv2d(x, w, **kw)  # no bias
    close(y0, R.conv2d(*f64(x, w), **kw), dtype)


def check_grads_match_reference(name, go, x, w, kw, dtype, close):
    """``F.<name>_backward`` against the reference's: dtypes, shapes and the
    three gradients; returns the reference's (grad_x, grad_weight)."""
    gx, gw, gb = getattr(F, f"{name}_backward")(go, x, w, **kw)
    rx, rw, rb = getattr(R, f"{name}_backward")(*f64(go, x, w), **kw)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == rb.shape
    close(gx, rx, dtype, err_msg="grad_x")
    close(gw, rw, dtype, err_msg="grad_weight")
    close(gb, rb, dtype, err_msg="grad_bias")
    return rx, rw


def check_unbatched_backward(name, go, x, w, kw):
    """An unbatched sample's gradients are the batched call's for it alone."""
    backward = getattr(F, f"{name}_backward")
    gx3, gw3, _ = backward(go[0], x[0], w, **kw)
    gx1, gw1, _ = backward(go[:1], x[:1], w, **kw)
    np.testing.assert_array_equal(gx3, gx1[0])
    np.testing.assert_array_equal(gw3, gw1)


def check_conv2d_backward(g, dtype, rng, close):
    x, w, _ = conv_arrays(g, dtype, rng)
    kw = conv_kwargs(g)
    go = randn(rng, conv_out_shape(g), dtype)
    rx, rw = check_grads_match_reference("conv2d", go, x, w, kw, dtype, close)
    gx2, gw2, gb2 = F.conv2d_backward(go, x, w, bias=False, **kw)
    assert gb2 is None
    close(gx2, rx, dtype)
    close(gw2, rw, dtype)


def check_conv_transpose2d(g, dtype, rng, close, op=(0, 0)):
    # conv_transpose2d's input plays the role of conv2d's output gradient.
    x = randn(rng, (g.n, g.cin, g.h, g.w), dtype)
    w = randn(rng, (g.cin, g.cout) + g.k, dtype)
    b = randn(rng, (g.cout,), dtype)
    kw = dict(stride=g.s, padding=g.p, dilation=g.d, output_padding=op)
    want = R.conv_transpose2d(*f64(x, w, b), **kw)
    y = F.conv_transpose2d(x, w, b, **kw)
    assert y.dtype == dtype and y.shape == want.shape
    close(y, want, dtype)
    close(F.conv_transpose2d(x, w, **kw), R.conv_transpose2d(*f64(x, w), **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", CASE_GEOMS, ids=CASE_IDS)
def test_conv2d_cases(g, dtype, rng, close):
    check_conv2d(g, dtype, rng, close)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", CASE_GEOMS, ids=CASE_IDS)
def test_conv2d_backward_cases(g, dtype, rng, close):
    check_conv2d_backward(g, dtype, rng, close)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", CASE_GEOMS, ids=CASE_IDS)
def test_conv_transpose2d_cases(g, dtype, rng, close):
    op = tuple(max(s, d) - 1 for s, d in zip(g.s, g.d))  # largest allowed
    check_conv_transpose2d(g, dtype, rng, close, op=(0, 0))
    check_conv_transpose2d(g, dtype, rng, close, op=op)


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_conv2d_hypothesis(data, dtype, close):
    g = draw_conv(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    check_conv2d(g, dtype, rng, close)


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_conv2d_backward_hypothesis(data, dtype, close):
    g = draw_conv(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    check_conv2d_backward(g, dtype, rng, close)


def draw_output_padding(data, g):
    """A transposed convolution's output padding for ``g`` (below the stride
    or the dilation), assuming a non-empty output."""
    oph = data.draw(st.integers(0, max(g.s[0], g.d[0]) - 1), label="output_padding_h")
    opw = data.draw(st.integers(0, max(g.s[1], g.d[1]) - 1), label="output_padding_w")
    for size, k, s, p, d, op in zip((g.h, g.w), g.k, g.s, g.p, g.d, (oph, opw)):
        assume((size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
    return oph, opw


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_conv_transpose2d_hypothesis(data, dtype, close):
    g = draw_conv(data, max_hw=6)
    oph, opw = draw_output_padding(data, g)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    check_conv_transpose2d(g, dtype, rng, close, op=(oph, opw))


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_conv_transpose2d_is_conv2d_input_gradient(data, dtype, close):
    """The same operation through two public doors must agree."""
    g = draw_conv(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x, w, _ = conv_arrays(g, dtype, rng)
    go = randn(rng, conv_out_shape(g), dtype)
    gx, _, _ = F.conv2d_backward(go, x, w, **conv_kwargs(g))
    # output_padding recovers the input rows the strided forward never read
    op = [
        size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
        for size, o, k, s, p, d in zip((g.h, g.w), go.shape[2:], g.k, g.s, g.p, g.d)
    ]
    assume(all(o < max(s, d) for o, s, d in zip(op, g.s, g.d)))
    y = F.conv_transpose2d(go, w, output_padding=tuple(op), **conv_kwargs(g))
    close(y, gx, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_backward_satisfies_adjoint_identity(dtype, rng):
    """<conv2d(x, w), g> = <x, grad_x(g)> = <w, grad_w(g)> on the fast kernels.

    Independent of the oracle: a backward that routes a gradient to the
    wrong position breaks these identities for a random ``g``.
    """
    g = Conv(2, 3, 2, 7, 6, (2, 3), (2, 1), (1, 2), (1, 2))
    x, w, _ = conv_arrays(g, dtype, rng)
    go = randn(rng, conv_out_shape(g), dtype)
    gx, gw, _ = F.conv2d_backward(go, x, w, **conv_kwargs(g))
    y = F.conv2d(x, w, **conv_kwargs(g))
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    lhs = np.sum(y * go, dtype=np.float64)
    assert np.isclose(lhs, np.sum(x * gx, dtype=np.float64), rtol=rtol)
    assert np.isclose(lhs, np.sum(w * gw, dtype=np.float64), rtol=rtol)


# --------------------------------------------------------------------------
# strided input gradient by stride phases: the kernel entry point
# --------------------------------------------------------------------------

# (N, Cg, Cx, H, W, kernel, stride, padding): non-square kernels, stride
# larger than the kernel (phases without taps), padding beyond the kernel
# (stride 1 included), prime sizes, N=1, C=1, few result channels (the
# small micro-kernels), a phase depth past one KC block (Cg*taps > 256).
PHASE_GEOMS = [
    (2, 3, 4, 9, 9, (3, 3), (2, 2), (1, 1)),
    (1, 1, 1, 7, 5, (2, 3), (2, 3), (0, 1)),
    (3, 5, 2, 11, 13, (5, 5), (2, 2), (2, 2)),
    (2, 4, 6, 12, 12, (1, 1), (2, 2), (0, 0)),
    (2, 3, 3, 10, 9, (3, 3), (3, 3), (1, 1)),
    (1, 2, 3, 9, 9, (3, 3), (1, 1), (3, 3)),
    (2, 3, 9, 8, 8, (2, 2), (4, 4), (0, 0)),
    (2, 3, 4, 8, 7, (3, 2), (5, 1), (2, 0)),
    (2, 2, 3, 6, 6, (4, 4), (2, 2), (3, 1)),
    (1, 70, 17, 13, 11, (3, 3), (2, 2), (1, 1)),
    (2, 3, 2, 3, 3, (3, 3), (7, 7), (0, 0)),
    # column stride 2, both column phases as wide: stored as pairs
    (2, 5, 3, 28, 28, (3, 3), (2, 2), (1, 1)),
    (1, 4, 3, 10, 34, (3, 3), (2, 2), (2, 2)),
    # column stride 1, rows a multiple of the micro-kernel width: row tiles
    (2, 3, 5, 7, 32, (3, 3), (2, 1), (1, 1)),
    (1, 2, 3, 4, 16, (2, 2), (1, 1), (3, 3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("geom", PHASE_GEOMS, ids=[str(g) for g in PHASE_GEOMS])
def test_grad_input_phases_kernel_matches_reference(geom, groups, dtype, rng, close):
    """conv2d_grad_input_phases writes every element of its output (a NaN
    sentinel before), equal to the reference input gradient of every group,
    bitwise the same on 1 and 2 threads."""
    from cnnext import _conv

    N, Cg, Cx, H, W, k, s, p = geom
    OH, OW = (conv_out(n, k_i, s_i, p_i, 1) for n, k_i, s_i, p_i in zip((H, W), k, s, p))
    w = randn(rng, (groups * Cg, Cx) + k, dtype)
    g = randn(rng, (N, groups * Cg, OH, OW), dtype)
    want = R.conv2d_backward(*f64(g, np.zeros((N, groups * Cx, H, W)), w),
                             stride=s, padding=p, groups=groups)[0]
    results = []
    for threads in (1, 2):
        out = np.full((N, groups * Cx, H, W), np.nan, dtype)
        _conv.conv2d_grad_input_phases(g, w, out, *s, *p, threads, groups)
        close(out, want, dtype)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_input_phases_kernel_nonfinite_gradient_and_no_channels(dtype, rng):
    """An inf/NaN upstream gradient reaches exactly the input positions the
    reference gives it (never through the padding); no gradient channels or
    an empty batch give zeros or nothing."""
    from cnnext import _conv

    w = randn(rng, (3, 2, 3, 3), dtype)
    g = randn(rng, (2, 3, 5, 5), dtype)
    g[0, 1, 0, 0], g[1, 2, 4, 3] = np.inf, np.nan
    out = np.empty((2, 2, 10, 10), dtype)
    _conv.conv2d_grad_input_phases(g, w, out, 2, 2, 1, 1, 1)
    want = R.conv2d_backward(*f64(g, np.zeros((2, 2, 10, 10)), w), stride=2, padding=1)[0]
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want))
    assert np.isfinite(out).sum() > 0
    out = np.full((2, 2, 10, 10), np.nan, dtype)
    _conv.conv2d_grad_input_phases(np.empty((2, 0, 5, 5), dtype), w[:0], out, 2, 2, 1, 1, 2)
    assert not out.any()
    _conv.conv2d_grad_input_phases(g[:0], w, out[:0], 2, 2, 1, 1, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [(10**6, 2), (3, 10**6)])
def test_strided_backward_huge_stride_and_unbatched(stride, dtype, rng, close):
    """A stride larger than the input (one output along that axis) and an
    unbatched sample through the public function."""
    x = randn(rng, (2, 7, 8), dtype)
    w = randn(rng, (5, 2, 3, 2), dtype)
    go = randn(rng, F.conv2d(x, w, stride=stride, padding=1).shape, dtype)
    gx, gw, _ = F.conv2d_backward(go, x, w, stride=stride, padding=1)
    rx, rw, _ = R.conv2d_backward(*f64(go[None], x[None], w), stride=stride, padding=1)
    assert gx.shape == x.shape
    close(gx, rx[0], dtype)
    close(gw, rw, dtype)


# --------------------------------------------------------------------------
# full convolution
# --------------------------------------------------------------------------


def scipy_full_conv2d(x, w):
    """Literal definition: per plane scipy full convolution, summed over K."""
    n, kk, h, wd = x.shape
    _, c, kh, kw = w.shape
    y = np.zeros((n, c, h + kh - 1, wd + kw - 1))
    for i in range(n):
        for o in range(c):
            for k in range(kk):
                y[i, o] += signal.convolve2d(x[i, k], w[k, o], mode="full")
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "xshape,wshape",
    [
        ((2, 3, 5, 7), (3, 2, 2, 3)),
        ((1, 1, 4, 4), (1, 1, 1, 1)),
        ((3, 2, 7, 5), (2, 4, 3, 5)),
        ((2, 1, 1, 1), (1, 3, 3, 2)),
        ((1, 2, 6, 3), (2, 1, 5, 1)),
    ],
)
def test_full_conv2d_matches_scipy_convolve2d(xshape, wshape, dtype, rng, close):
    x = randn(rng, xshape, dtype)
    w = randn(rng, wshape, dtype)
    y = F.full_conv2d(x, w)
    assert y.dtype == dtype
    want = scipy_full_conv2d(*f64(x, w))
    assert y.shape == want.shape
    close(y, want, dtype)
    close(y, R.full_conv2d(*f64(x, w)), dtype)


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_full_conv2d_equals_conv2d_grad_x_at_stride_1(data, dtype, close):
    n = data.draw(st.integers(1, 3), label="N")
    cin = data.draw(st.integers(1, 3), label="C_in")
    cout = data.draw(st.integers(1, 3), label="C_out")
    kh, kw = draw_pair(data, "kernel", 1, 4)
    h = data.draw(st.integers(kh, 8), label="H")
    w_ = data.draw(st.integers(kw, 8), label="W")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = randn(rng, (n, cin, h, w_), dtype)
    w = randn(rng, (cout, cin, kh, kw), dtype)
    go = randn(rng, (n, cout, h - kh + 1, w_ - kw + 1), dtype)
    gx, _, _ = F.conv2d_backward(go, x, w)
    y = F.full_conv2d(go, w)
    assert y.shape == x.shape
    close(y, gx, dtype)
    close(y, scipy_full_conv2d(*f64(go, w)), dtype)


# --------------------------------------------------------------------------
# groups, padding modes, conv1d, grouped conv_transpose2d and its backward
# --------------------------------------------------------------------------

GConv = namedtuple("GConv", "n cin cout groups h w k s p d")

# Grouped/padded geometries: 2x3 kernels with groups, stride > kernel,
# dilation, "same" with even kernels (the odd padding row/column at the
# bottom/right), depthwise (groups == C_in), one output channel per group,
# N=1, primes.
GROUP_CASES = [
    ("g2-2x3", GConv(2, 4, 6, 2, 6, 7, (2, 3), (1, 1), (0, 0), (1, 1))),
    ("g3-2x3-stride-pad", GConv(2, 6, 3, 3, 7, 8, (2, 3), (2, 1), (1, 2), (1, 1))),
    ("g2-stride>kernel", GConv(2, 4, 4, 2, 11, 13, (2, 2), (3, 4), (0, 0), (1, 1))),
    ("g2-dilation", GConv(2, 4, 2, 2, 9, 8, (3, 2), (1, 1), (0, 1), (2, 3))),
    ("depthwise-3x3", GConv(2, 5, 5, 5, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1))),
    ("depthwise-x2", GConv(1, 3, 6, 3, 5, 7, (3, 2), (2, 1), (1, 0), (1, 1))),
    ("depthwise-5x5-s2", GConv(2, 4, 4, 4, 13, 11, (5, 5), (2, 2), (2, 2), (1, 1))),
    ("depthwise-same-4x2-dil", GConv(2, 3, 3, 3, 9, 7, (4, 2), (1, 1), "same", (2, 1))),
    ("depthwise-3x3-wide", GConv(1, 2, 2, 2, 5, 37, (3, 3), (1, 1), (1, 1), (1, 1))),
    ("g4-1x1", GConv(3, 8, 4, 4, 5, 5, (1, 1), (1, 1), (0, 0), (1, 1))),
    ("g2-same-2x3", GConv(2, 4, 6, 2, 6, 7, (2, 3), (1, 1), "same", (1, 1))),
    ("g1-same-4x2-dil", GConv(2, 3, 2, 1, 7, 5, (4, 2), (1, 1), "same", (1, 2))),
    ("g2-same-1x4", GConv(1, 2, 2, 2, 1, 9, (1, 4), (1, 1), "same", (1, 1))),
    ("g3-valid", GConv(2, 3, 6, 3, 5, 6, (2, 3), (2, 2), "valid", (1, 1))),
    ("g1-same-3x3", GConv(2, 2, 3, 1, 5, 5, (3, 3), (1, 1), "same", (1, 1))),
    ("g2-primes", GConv(3, 10, 14, 2, 13, 11, (3, 5), (2, 3), (1, 2), (1, 1))),
]
GROUP_IDS = [c[0] for c in GROUP_CASES]
GROUP_GEOMS = [c[1] for c in GROUP_CASES]


def gconv_arrays(g, dtype, rng):
    x = randn(rng, (g.n, g.cin, g.h, g.w), dtype)
    w = randn(rng, (g.cout, g.cin // g.groups) + g.k, dtype)
    b = randn(rng, (g.cout,), dtype)
    return x, w, b


def gconv_kwargs(g):
    return dict(stride=g.s, padding=g.p, dilation=g.d, groups=g.groups)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", GROUP_GEOMS, ids=GROUP_IDS)
def test_grouped_and_padded_conv2d_and_backward_cases(g, dtype, rng, close):
    x, w, b = gconv_arrays(g, dtype, rng)
    kw = gconv_kwargs(g)
    want = R.conv2d(*f64(x, w, b), **kw)
    y = F.conv2d(x, w, b, **kw)
    assert y.dtype == dtype and y.shape == want.shape
    if g.p == "same":
        assert y.shape[2:] == x.shape[2:]
    close(y, want, dtype)
    close(F.conv2d(x, w, **kw), R.conv2d(*f64(x, w), **kw), dtype)
    go = randn(rng, y.shape, dtype)
    check_grads_match_reference("conv2d", go, x, w, kw, dtype, close)
    # unbatched input: the batched result's first sample
    np.testing.assert_array_equal(F.conv2d(x[0], w, b, **kw), F.conv2d(x[:1], w, b, **kw)[0])
    check_unbatched_backward("conv2d", go, x, w, kw)


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_grouped_conv2d_hypothesis(data, dtype, close):
    groups = data.draw(st.integers(1, 4), label="groups")
    base = draw_conv(data)
    g = GConv(base.n, base.cin * groups, base.cout * groups, groups, base.h, base.w, base.k,
              base.s, base.p, base.d)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x, w, b = gconv_arrays(g, dtype, rng)
    kw = gconv_kwargs(g)
    y = F.conv2d(x, w, b, **kw)
    close(y, R.conv2d(*f64(x, w, b), **kw), dtype)
    go = randn(rng, y.shape, dtype)
    got = F.conv2d_backward(go, x, w, **kw)
    for a, b in zip(got, R.conv2d_backward(*f64(go, x, w), **kw)):
        close(a, b, dtype)


def test_grouped_conv2d_is_one_conv2d_per_group(rng):
    """groups=G equals G independent convolutions of the channel blocks."""
    x, w, b = gconv_arrays(GConv(2, 6, 4, 2, 7, 6, (2, 3), (2, 1), (1, 1), (1, 2)),
                           np.float64, rng)
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    y = F.conv2d(x, w, b, groups=2, **kw)
    np.testing.assert_allclose(y[:, :2], F.conv2d(x[:, :3], w[:2], b[:2], **kw), rtol=1e-13)
    np.testing.assert_allclose(y[:, 2:], F.conv2d(x[:, 3:], w[2:], b[2:], **kw), rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,d", [((2, 3), (1, 1), (1, 1), (1, 1)),
                                     ((3, 2), (2, 3), (1, 0), (1, 2)),
                                     ((1, 1), (1, 1), (0, 0), (1, 1))])
def test_conv_kernels_run_every_group_in_one_call(k, s, p, d, dtype, rng, close):
    """The compiled kernels' ``groups``: one call equals the reference's
    grouped convolution, forward (with a bias) and every weight-gradient
    schedule, on one and two threads, and a repeat is bitwise the same."""
    from cnnext import _conv
    G, N, Cg, Cog, H, W = 3, 2, 2, 5, 7, 6
    x = randn(rng, (N, G * Cg, H, W), dtype)
    w = randn(rng, (G * Cog, Cg) + k, dtype)
    b = randn(rng, (G * Cog,), dtype)
    kw = dict(stride=s, padding=p, dilation=d, groups=G)
    want = R.conv2d(*f64(x, w, b), **kw)
    OH, OW = want.shape[2:]
    go = randn(rng, want.shape, dtype)
    want_gw = R.conv2d_backward(*f64(go, x, w), **kw)[1]
    geo = (s[0], s[1], p[0], p[1], d[0], d[1])
    K = Cg * k[0] * k[1]
    for threads in (1, 2):
        y = np.full(want.shape, np.nan, dtype)
        _conv.conv2d_forward(x, w, b, y, *geo, threads, G)
        close(y, want, dtype)
        for schedule in _conv.SCHEDULES:
            transposed = schedule == "transposed"
            runs = []
            for _ in range(2):
                gwp = np.full((threads, G) + ((K, Cog) if transposed else (Cog, K)), np.nan,
                              dtype)
                _conv.conv2d_grad_weight(x, go.reshape(N, G * Cog, OH * OW), gwp, schedule,
                                         *k, *geo, OH, OW)
                runs.append(gwp)
            np.testing.assert_array_equal(runs[0], runs[1])
            gw = runs[0].sum(axis=0)
            gw = gw.transpose(0, 2, 1) if transposed else gw
            close(gw.reshape(w.shape), want_gw, dtype, err_msg=schedule)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("co", [3, 8, 9, 16, 17])
def test_transposed_weight_gradient_few_channels(co, dtype, rng, close):
    """The transposed weight-gradient schedule with at most one vector of
    output channels (16 rows of taps by one vector: K = 150 taps in 10 row
    blocks, the last partial; 2 x 23 x 23 positions in several reduction
    blocks) equals the reference, on one and two threads."""
    from cnnext import _conv
    x = randn(rng, (2, 6, 27, 27), dtype)
    w = randn(rng, (co, 6, 5, 5), dtype)
    go = randn(rng, (2, co, 23, 23), dtype)
    want = R.conv2d_backward(*f64(go, x, w))[1]
    for threads in (1, 2):
        gwp = np.full((threads, 1, 150, co), np.nan, dtype)
        _conv.conv2d_grad_weight(x, go.reshape(2, co, -1), gwp, "transposed", 5, 5, 1, 1,
                                 0, 0, 1, 1, 23, 23)
        close(gwp.sum(axis=0)[0].T.reshape(w.shape), want, dtype)


# (x shape, weight shape, stride, padding, dilation, groups): float32
# weight gradients with at most 16 output channels per group, 3-wide kernels
# (taps in threes: 24-row panels, the last partial) and geometries whose taps
# are not in threes (column stride or dilation 2, a 2-wide kernel).
_GW3_GEOMS = [
    ((32, 64, 32, 32), (64, 16, 3, 3), (1, 1), (1, 1), (1, 1), 4),
    ((2, 5, 23, 29), (16, 5, 3, 3), (1, 1), (1, 1), (1, 1), 1),    # K = 45: 24 + 21
    ((3, 6, 11, 13), (9, 2, 3, 3), (1, 1), (0, 0), (1, 1), 3),     # in place, K = 18
    ((2, 8, 9, 17), (6, 4, 5, 3), (2, 1), (2, 1), (1, 1), 2),      # 5x3, row stride
    ((2, 4, 9, 11), (16, 4, 3, 3), (1, 2), (1, 1), (1, 1), 1),     # column stride 2
    ((2, 4, 9, 11), (16, 4, 3, 3), (1, 1), (2, 2), (2, 2), 1),     # dilation 2
    ((2, 6, 9, 11), (12, 3, 3, 2), (1, 1), (1, 1), (1, 1), 2),     # 3x2
]

_GW3_SCRIPT = """
import numpy as np
from cnnext import _conv, _gemm, reference as R
rng = np.random.default_rng(5)
out = {}
for i, (xs, ws, s, p, d, G) in enumerate(GEOMS):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    y = R.conv2d(x.astype(np.float64), w.astype(np.float64), None, s, p, d, G)
    go = rng.standard_normal(y.shape).astype(np.float32)
    N, Co, OH, OW = y.shape
    K = ws[1] * ws[2] * ws[3]
    for threads in (1, 2):
        gwp = np.full((threads, G, K, Co // G), np.nan, np.float32)
        _conv.conv2d_grad_weight(x, go.reshape(N, Co, OH * OW), gwp, "transposed",
                                 ws[2], ws[3], *s, *p, *d, OH, OW)
        out[f"gw{i}-{threads}"] = gwp
    out[f"want{i}"] = R.conv2d_backward(go.astype(np.float64), x.astype(np.float64),
                                        w.astype(np.float64), s, p, d, G)[1]
np.savez(PATH, isa=_gemm.isa(), **out)
"""


# float64 weight gradients with more than 8 output channels per group:
# 3-wide kernels (taps in threes: 12-row panels, full and with 3, 6 or 9
# rows left; partial vectors of channels; groups; one sample, so that the
# second thread has no work) and geometries whose taps are not in threes.
_GW3D_GEOMS = [
    ((2, 20, 9, 11), (40, 20, 3, 3), (1, 1), (1, 1), (1, 1), 1),   # K = 180: 15 x 12
    ((2, 5, 23, 29), (16, 5, 3, 3), (1, 1), (1, 1), (1, 1), 1),    # K = 45, 3 blocks
    ((1, 7, 5, 6), (17, 7, 3, 3), (1, 1), (0, 0), (1, 1), 1),      # K = 63, one unit
    ((3, 12, 11, 13), (36, 6, 3, 3), (1, 1), (1, 1), (1, 1), 2),   # groups, K = 54
    ((2, 4, 9, 11), (24, 4, 3, 3), (1, 2), (1, 1), (1, 1), 1),     # column stride 2
    ((2, 4, 9, 11), (24, 4, 3, 3), (1, 1), (2, 2), (2, 2), 1),     # dilation 2
    ((2, 6, 9, 11), (20, 6, 3, 2), (1, 1), (1, 1), (1, 1), 1),     # 3x2
]


def _npz_under_isas(tmp_path, script):
    """Run ``script`` (Python source saving its arrays and ``isa=_gemm.isa()``
    with ``np.savez(PATH, ...)``) in fresh interpreters under
    ``CNNEXT_ISA=avx512`` and ``=avx2``; check the variants the kernels
    chose and return the two runs' arrays."""
    got = {}
    for isa in ("avx512", "avx2"):
        path = tmp_path / f"{isa}.npz"
        proc = subprocess.run([sys.executable, "-c", f"PATH = {str(path)!r}\n" + script],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env=dict(os.environ, CNNEXT_ISA=isa))
        assert proc.returncode == 0, proc.stderr
        got[isa] = dict(np.load(path))
        assert str(got[isa].pop("isa")) == isa
    return got["avx512"], got["avx2"]


def _assert_same_bytes(fast, slow):
    """The same arrays, bit for bit, under both names."""
    assert fast.keys() == slow.keys()
    for key, value in fast.items():
        assert value.tobytes() == slow[key].tobytes(), key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_taps_in_threes_kernel(dtype, tmp_path, close):
    """The transposed weight gradient's kernels for 3-wide kernels (taps
    read from one pointer per three: float32 24 rows, with its vector
    packing of the gradient block -- one vector of channels, full or
    partial, junk positions zero; float64 12 rows) equal the reference and
    give bitwise the partial sums of the AVX2 kernels (and of the 16-row /
    8-row kernels, where the taps are not in threes), on one and two
    threads."""
    from cnnext import _gemm
    if _gemm.isa() != "avx512":
        pytest.skip(f"this CPU runs {_gemm.isa()}: no taps-in-threes kernels")
    geoms = _GW3_GEOMS if dtype == np.float32 else _GW3D_GEOMS
    fast, slow = _npz_under_isas(tmp_path, f"GEOMS = {geoms!r}\n" + _GW3_SCRIPT.replace(
        "np.float32", f"np.{np.dtype(dtype).name}"))
    for i, (_, ws, *_rest) in enumerate(geoms):
        want = fast[f"want{i}"]
        for threads in (1, 2):
            key = f"gw{i}-{threads}"
            gwp = fast[key]
            assert gwp.dtype == dtype
            assert gwp.tobytes() == slow[key].tobytes(), key
            gw = gwp.sum(axis=0).transpose(0, 2, 1).reshape(ws)
            close(gw, want, dtype, err_msg=key)



# (x shape, weight shape, stride, padding, dilation, groups): float32 weight
# gradients with more than 16 output channels per group (the 8 x 32 kernel
# over valid positions): padding and kernel overhang (junk columns), N = 1,
# a 2x3 kernel, partial panels of taps and of channels, rows longer than a
# reduction block (blocks starting mid-row), stride 2 with groups, dilation
# 2 with a 3x2 kernel, short rows.
_GWV_GEOMS = [
    ((2, 32, 32, 32), (64, 32, 5, 5), (1, 1), (2, 2), (1, 1), 1),
    ((1, 5, 11, 13), (40, 5, 2, 3), (1, 1), (1, 2), (1, 1), 1),    # K = 30: 8 x 3 + 6
    ((3, 4, 9, 300), (33, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1),    # Wq = 302 > 256
    ((2, 6, 17, 9), (48, 3, 3, 3), (2, 2), (1, 1), (1, 1), 2),     # 24 channels a group
    ((2, 3, 9, 10), (70, 3, 3, 2), (1, 1), (2, 2), (2, 2), 1),     # dilation 2, 3x2
    ((2, 8, 7, 7), (32, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1),      # rows of 7 in 9
]


def test_weight_gradient_valid_positions_kernel(tmp_path, close):
    """The float32 transposed weight gradient's kernel over valid positions
    (junk columns skipped, its gradient panel holding only the valid
    positions) equals the reference and gives bitwise the partial sums of
    the AVX2 kernel (which multiplies the junk columns by zero), on one and
    two threads."""
    from cnnext import _gemm
    if _gemm.isa() != "avx512":
        pytest.skip(f"this CPU runs {_gemm.isa()}: no valid-positions kernel")
    fast, slow = _npz_under_isas(tmp_path, f"GEOMS = {_GWV_GEOMS!r}\n" + _GW3_SCRIPT)
    for i, (_, ws, *_rest) in enumerate(_GWV_GEOMS):
        for threads in (1, 2):
            key = f"gw{i}-{threads}"
            gwp = fast[key]
            assert gwp.tobytes() == slow[key].tobytes(), key
            gw = gwp.sum(axis=0).transpose(0, 2, 1).reshape(ws)
            close(gw, fast[f"want{i}"], np.float32, err_msg=key)


@pytest.mark.parametrize("layout", ["fortran", "sliced", "readonly"])
@pytest.mark.parametrize("n", [1, 3])
def test_conv2d_backward_padded_rows_many_channels(n, layout, rng, close):
    """conv2d_backward in float32 with more than 16 output channels and
    padding (the weight gradient over valid columns where AVX-512F runs
    it): the reference's gradients, and the same bits for any memory
    layout of the arguments (a 5x5 kernel at padding 2 on an odd 13 x 11
    map, 40 output channels: a partial panel)."""
    x = randn(rng, (n, 3, 13, 11), np.float32)
    w = randn(rng, (40, 3, 5, 5), np.float32)
    go = randn(rng, (n, 40, 13, 11), np.float32)
    want = F.conv2d_backward(go, x, w, padding=2)
    for a, b in zip(want, R.conv2d_backward(*f64(go, x, w), padding=2)):
        close(a, b, np.float32)
    got = F.conv2d_backward(*(LAYOUTS[layout](a) for a in (go, x, w)), padding=2)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# (x shape, weight shape, stride, padding, dilation): the split weight
# gradient on odd geometry -- 12-row panels full and partial, partial
# vectors of channels (17, 40), one sample, several position blocks per
# sample, unpadded (read in place), stride 2, dilation 2, a 3x2 kernel (the
# 8-row kernel), fewer panels than threads.
_SPLIT_GEOMS = [
    ((2, 20, 9, 11), (40, 20, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 7, 23, 29), (17, 7, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 4, 17, 19), (20, 4, 3, 3), (1, 1), (1, 1), (1, 1)),       # 2 blocks per sample
    ((3, 5, 6, 7), (24, 5, 3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 6, 13, 11), (32, 6, 3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 4, 11, 13), (24, 4, 3, 3), (1, 1), (2, 2), (2, 2)),
    ((2, 6, 9, 11), (20, 6, 3, 2), (1, 1), (1, 1), (1, 1)),
    ((2, 1, 5, 5), (16, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("xs,ws,s,p,d", _SPLIT_GEOMS)
def test_split_weight_gradient_kernel(xs, ws, s, p, d, rng, close):
    """The split weight-gradient schedule (one result, each sample's rows
    shared by the threads) equals the reference, and is bitwise the
    transposed schedule's single partial on one to three threads."""
    from cnnext import _conv
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    y = R.conv2d(x, w, None, s, p, d)
    go = rng.standard_normal(y.shape)
    N, Co, OH, OW = y.shape
    K = ws[1] * ws[2] * ws[3]
    geo = (ws[2], ws[3], *s, *p, *d, OH, OW)
    one = np.full((1, 1, K, Co), np.nan)
    _conv.conv2d_grad_weight(x, go.reshape(N, Co, -1), one, "transposed", *geo)
    want = R.conv2d_backward(go, x, w, s, p, d)[1]
    for threads in (1, 2, 3):
        gwp = np.full((1, 1, K, Co), np.nan)
        _conv.conv2d_grad_weight(x, go.reshape(N, Co, -1), gwp, "split", *geo, threads)
        assert gwp.tobytes() == one.tobytes(), threads
    close(one[0, 0].T.reshape(ws), want, np.float64)


def test_split_weight_gradient_in_the_plan(rng, close, restore_threads):
    """A float64 weight gradient of at least ``SPLIT_MIN_BYTES`` (64 -> 256
    channels, 3x3) runs the split schedule: the reference's values, the same
    bits at one, two and three threads, a Fortran-ordered read-only input
    left untouched, and an inf in x gives the reference's inf/NaN pattern
    (the packed schedule's result)."""
    from cnnext import _plan
    x = np.asfortranarray(rng.standard_normal((2, 64, 9, 7)))
    x.flags.writeable = False
    w = rng.standard_normal((256, 64, 3, 3)) / 24
    plan = _conv2d_plan("conv2d", x, w, None, np.dtype(np.float64), stride=1, padding=1,
                        dilation=1, groups=1)
    assert plan.grad_weight == "split"
    assert 256 * 576 * 8 >= _plan.SPLIT_MIN_BYTES
    go = rng.standard_normal((2, 256, 9, 7))
    x0 = x.copy()
    want = R.conv2d_backward(go, x, w, padding=1)
    got = []
    for threads in (1, 2, 3):
        cnnext.set_num_threads(threads)
        got.append(F.conv2d_backward(go, x, w, padding=1))
    np.testing.assert_array_equal(x, x0)
    for g in got:
        assert g[1].tobytes() == got[0][1].tobytes()
    for a, b in zip(got[0], want):
        close(a, b, np.float64)
    xi = np.array(x)
    xi[1, 5, 4, 3] = np.inf
    gw = F.conv2d_backward(go, xi, w, padding=1)[1]
    ref = R.conv2d_backward(go, xi, w, padding=1)[1]
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(gw), np.isinf(ref))


def test_split_weight_gradient_beside_the_input_gradient(rng, monkeypatch, restore_threads):
    """At two threads a split weight gradient runs in a helper thread beside
    the input gradient: the bits of the two passes one after the other, and
    an error raised in the helper reaches the caller (the helper keeps
    serving the next call)."""
    from cnnext import _plan
    x = rng.standard_normal((2, 64, 6, 5))
    w = rng.standard_normal((256, 64, 3, 3))
    go = rng.standard_normal((2, 256, 6, 5))
    cnnext.set_num_threads(2)
    plan = _conv2d_plan("conv2d", x, w, None, np.dtype(np.float64), stride=1, padding=1,
                        dilation=1, groups=1)
    assert plan.grad_weight == "split" and plan.threads == 2
    gx, gw, _ = plan.backward(go, x, w, False)
    assert gw.tobytes() == plan._grad_weight(go, x).tobytes()
    want_gx = _plan.grad_input(go, w, x.shape[2:], (1, 1), (1, 1), (1, 1), plan.grad_input, 2)
    assert gx.tobytes() == want_gx.tobytes()

    def fail(*args, **kwargs):
        raise MemoryError("no room")

    with monkeypatch.context() as m:
        m.setattr(_plan.ConvPlan, "_grad_weight", fail)
        with pytest.raises(MemoryError, match="no room"):
            plan.backward(go, x, w, False)
    assert plan.backward(go, x, w, False)[1].tobytes() == gw.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c,co,h,w,k,p,groups", [
    (2, 3, 5, 4, 31, (3, 3), (1, 1), 1),    # one partial tile per output row
    (1, 2, 2, 3, 64, (1, 3), (0, 1), 1),    # two full tiles per row, 2 output channels
    (2, 30, 9, 3, 32, (3, 3), (1, 1), 1),   # K = 270 > one reduction block, in place
    (2, 8, 12, 5, 16, (2, 3), (1, 1), 4),   # groups, a float64 tile per row
])
def test_conv2d_tiles_along_output_rows(n, c, co, h, w, k, p, groups, dtype, rng, close):
    """Output rows as wide as (or just under) a multiple of the micro-kernel
    width are tiled row by row and written in place: forward (with a bias)
    and the input gradient (the forward kernel at stride 1) as the reference."""
    x = randn(rng, (n, c, h, w), dtype)
    wt = randn(rng, (co, c // groups) + k, dtype)
    b = randn(rng, (co,), dtype)
    kw = dict(padding=p, groups=groups)
    y = F.conv2d(x, wt, b, **kw)
    close(y, R.conv2d(*f64(x, wt, b), **kw), dtype)
    go = randn(rng, y.shape, dtype)
    got = F.conv2d_backward(go, x, wt, **kw)
    for a, ref in zip(got, R.conv2d_backward(*f64(go, x, wt), **kw)):
        close(a, ref, dtype)


# Geometries whose output rows (or stride phases) are at most a few
# half-tiles wide, tiled two rows at a time by the float32 two-row kernel:
# (x shape, weight shape, stride, padding, groups).
_TWO_ROW_GEOMS = [
    ((3, 3, 31, 31), (25, 3, 3, 3), 2, 1, 1),      # 16 x 16, 7-row panels
    ((2, 4, 9, 13), (8, 4, 3, 3), 1, 1, 1),        # 9 rows: a last row alone
    ((2, 5, 6, 40), (12, 5, 2, 3), 1, 1, 1),       # 40 columns: 16 + 16 + 8
    ((2, 30, 8, 14), (9, 30, 3, 3), 1, 1, 1),      # K = 270: two reduction blocks
    ((2, 8, 7, 9), (12, 2, 3, 3), 2, 1, 4),        # groups, 4 x 5
    ((2, 6, 11, 10), (5, 6, 3, 3), (2, 1), 1, 1),  # input gradient: row phases only
    ((1, 2, 1, 5), (3, 2, 1, 3), 1, (0, 1), 1),    # one row
    ((2, 3, 9, 1), (4, 3, 3, 1), 1, (1, 0), 1),    # one column
    ((2, 4, 9, 75), (6, 4, 3, 3), 2, 1, 1),        # 38 columns; stride-2 phase stores
]


def _conv_as_reference(x, wt, b, kw, dtype, rng, close):
    """conv2d (with bias ``b`` or None) and conv2d_backward equal the
    reference on one and two threads."""
    want = R.conv2d(*f64(x, wt, b), **kw) if b is not None else R.conv2d(*f64(x, wt), **kw)
    go = randn(rng, want.shape, dtype)
    want_g = R.conv2d_backward(*f64(go, x, wt), **kw)
    for threads in (1, 2):
        cnnext.set_num_threads(threads)
        close(F.conv2d(x, wt, b, **kw), want, dtype)
        for got, ref in zip(F.conv2d_backward(go, x, wt, **kw), want_g):
            close(got, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,s,p,groups", _TWO_ROW_GEOMS)
def test_conv2d_two_row_tiles(xs, ws, s, p, groups, dtype, rng, close, restore_threads):
    """Short output rows, tiled two rows at a time (an odd last row alone,
    partial vectors, several reduction blocks, groups, row-only stride
    phases of the input gradient): forward with a bias and all gradients
    as the reference, on one and two threads, from a non-contiguous input."""
    x = randn(rng, xs[:3] + (2 * xs[3],), dtype)[..., ::2]
    wt = randn(rng, ws, dtype)
    b = randn(rng, (ws[0],), dtype)
    _conv_as_reference(x, wt, b, dict(stride=s, padding=p, groups=groups), dtype, rng, close)


# Geometries of few taps (K <= 160) whose output rows are no multiple of the
# float32 tile width, run as flat tiles: 32 consecutive output positions
# across row ends, each half-tile vector read from up to two image rows.
_FLAT_GEOMS = [
    ((2, 3, 35, 35), (64, 3, 7, 7), 2, 3, 1),      # 18 x 18 stem-like, stride 2, K = 147
    ((3, 6, 12, 12), (16, 6, 5, 5), 1, 0, 1),      # 8-wide rows: two rows per vector
    ((2, 1, 28, 28), (6, 1, 5, 5), 1, 0, 1),       # 24-wide rows, 6-row panels
    ((2, 5, 9, 21), (13, 5, 3, 3), 1, 1, 1),       # 21-wide rows, two 7-row panels
    ((1, 4, 10, 40), (3, 4, 2, 3), 1, (0, 1), 1),  # 40-wide rows, 3 channels
    ((2, 6, 9, 20), (10, 3, 3, 3), 1, 1, 2),       # groups, 20-wide rows
    ((2, 17, 7, 17), (9, 17, 3, 3), 1, 1, 1),      # K = 153, 17-wide rows: both vectors span
    ((2, 4, 18, 9), (6, 4, 3, 3), 1, 0, 1),        # 7-wide rows: both 8-wide vectors span
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,s,p,groups", _FLAT_GEOMS)
def test_conv2d_flat_tiles(xs, ws, s, p, groups, dtype, rng, close, restore_threads):
    """Output rows of a width no multiple of the tile's, few taps: float32
    tiles of consecutive output positions across row ends (every number of
    spanning vectors, 3..8-row panels, a partial last tile, groups, stride
    2): forward with a bias and all gradients (the dilated input gradient
    included) as the reference, on one and two threads, from a
    non-contiguous input."""
    x = randn(rng, xs[:3] + (2 * xs[3],), dtype)[..., ::2]
    wt = randn(rng, ws, dtype)
    b = randn(rng, (ws[0],), dtype)
    for d in (1, 2):
        kw = dict(stride=s, padding=p, dilation=d, groups=groups)
        _conv_as_reference(x, wt, b, kw, dtype, rng, close)


@pytest.mark.parametrize("xs,ws,s,p,groups", _FLAT_GEOMS)
def test_flat_tiles_same_bits_as_row_tiles(xs, ws, s, p, groups, restore_threads):
    """A float32 forward on flat tiles gives the bits of the same outputs
    computed in a map whose rows are a multiple of 32 outputs wide (row
    tiles, no row end inside a tile): the same zeros right of the input,
    other values beyond them."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    ph, pw = (p, p) if isinstance(p, int) else p
    ow = (xs[3] + 2 * pw - ws[3]) // s + 1
    wide_ow = -(-ow // 32) * 32
    while s * (wide_ow - 1) + ws[3] - 2 * pw < xs[3] + pw:
        wide_ow += 32
    width = s * (wide_ow - 1) + ws[3] - 2 * pw
    wide = np.zeros(xs[:3] + (width,), np.float32)
    wide[..., :xs[3]] = x
    wide[..., xs[3] + pw:] = rng.standard_normal(xs[:3] + (width - xs[3] - pw,))
    with cnnext.use_conv_algorithm("direct"):
        for threads in (1, 2):
            cnnext.set_num_threads(threads)
            y = F.conv2d(x, w, b, s, p, groups=groups)
            got = F.conv2d(wide, w, b, s, p, groups=groups)
            assert got.shape[3] == wide_ow
            np.testing.assert_array_equal(y, got[..., :ow])


@pytest.mark.parametrize("xs,ws,s,p,groups", [
    ((3, 3, 41, 37), (64, 3, 7, 7), 2, 3, 1),     # stem-like: 21 x 19, 13 tiles a sample
    ((1, 3, 112, 112), (64, 3, 7, 7), 2, 3, 1),   # the stem itself, N = 1
    ((7, 6, 40, 20), (10, 3, 3, 3), 1, 1, 2),     # groups: 14 (sample, group) pairs
])
def test_conv2d_flat_tiles_any_thread_count(xs, ws, s, p, groups, rng, close,
                                            restore_threads):
    """Flat tiles run in groups of eight of a (sample, group) pair's tiles,
    each thread a contiguous share of the groups: the same bits on 1 to 5
    threads (more threads than cores; more threads than groups), and the
    reference's values."""
    x = randn(rng, xs, np.float32)
    wt = randn(rng, ws, np.float32)
    b = randn(rng, (ws[0],), np.float32)
    kw = dict(stride=s, padding=p, groups=groups)
    cnnext.set_num_threads(1)
    want = F.conv2d(x, wt, b, **kw)
    close(want, R.conv2d(*f64(x, wt, b), **kw), np.float32)
    for threads in (2, 3, 5):
        cnnext.set_num_threads(threads)
        for _ in range(3):
            np.testing.assert_array_equal(F.conv2d(x, wt, b, **kw), want)


# 3x3 convolutions at stride 1 and padding 1 with 8-16 channels each way,
# run float32 on AVX-512 or AVX2 by the in-place kernel (masked loads for
# the padding, or plain loads and column masks inside the map): blocks of
# vectors inside the map and at its top and bottom rows, a last one or two
# vectors, maps of one row or column.
_SAME3_GEOMS = [
    ((2, 16, 28, 28), 16),   # resnet's 16 -> 16 on 28x28
    ((1, 8, 13, 7), 8),      # N = 1, odd sizes, a last partial vector
    ((3, 11, 5, 3), 16),     # no block inside rows 1 .. H - 2
    ((2, 16, 1, 17), 8),     # one row
    ((2, 9, 17, 1), 16),     # one column
    ((2, 12, 6, 50), 16),    # 300 positions: 6 blocks and one vector
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,co", _SAME3_GEOMS)
def test_conv2d_same3(xs, co, dtype, rng, close, restore_threads):
    """3x3, stride 1, padding 1, few channels: forward with a bias and all
    gradients as the reference, on one and two threads, from a
    non-contiguous input, and the transposed convolution with a bias (the
    input gradient's kernel); float32's forward and input gradient are
    bitwise those of the fused-im2col kernels on explicitly padded arrays
    (the same taps summed in the same order), inf and NaN inputs included."""
    x = randn(rng, xs[:3] + (2 * xs[3],), dtype)[..., ::2]
    wt = randn(rng, (co, xs[1], 3, 3), dtype)
    b = randn(rng, (co,), dtype)
    _conv_as_reference(x, wt, b, dict(stride=1, padding=1), dtype, rng, close)
    xt = randn(rng, (xs[0], co) + xs[2:], dtype)
    bt = randn(rng, (xs[1],), dtype)
    close(F.conv_transpose2d(xt, wt, bt, padding=1),
          R.conv_transpose2d(*f64(xt, wt, bt), padding=1), dtype)
    xn = np.ascontiguousarray(x)
    xn.flat[rng.choice(xn.size, 3, replace=False)] = [np.inf, np.nan, -np.inf]
    pad = ((0, 0), (0, 0), (1, 1), (1, 1))
    for threads in (1, 2):
        cnnext.set_num_threads(threads)
        np.testing.assert_array_equal(F.conv2d(xn, wt, b, padding=1),
                                      F.conv2d(np.pad(xn, pad), wt, b, padding=0))
        go = randn(rng, (xs[0], co) + xs[2:], dtype)
        rot = np.ascontiguousarray(wt[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        gx = F.conv2d_backward(go, xn, wt, padding=1, bias=False)[0]
        np.testing.assert_array_equal(gx, F.conv2d(np.pad(go, pad), rot, padding=0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw,s,p,d", [
    ((28, 28), 2, 0, 1), ((9, 13), 2, 1, 1), ((7, 10), (2, 1), 0, 1), ((11, 6), (3, 2), 1, 1),
    ((8, 9), 2, (1, 0), (3, 1)),
])
def test_conv2d_one_row_kernel_stride2(hw, s, p, d, dtype, rng, close, restore_threads):
    """A kernel of one row (a 1x1 shortcut, 1x3) at column stride 2 reads
    row phase 0 only, so only those rows are prepared: forward and all
    gradients as the reference, odd sizes and paddings, one and two threads."""
    x = randn(rng, (3, 5) + hw, dtype)
    for k in ((1, 1), (1, 3)):
        wt = randn(rng, (7, 5) + k, dtype)
        _conv_as_reference(x, wt, None, dict(stride=s, padding=p, dilation=d), dtype, rng, close)


# Strided 3x3-type layers (resnet8's 16 -> 32 at 28x28 and 32 -> 64 at
# 14x14, scaled down in the batch): the input gradient's two column phases
# computed as tile pairs and stored interleaved (equal phase widths; row
# tiles where a row's tiles are fewer columns than the padded width) or
# apart (odd widths), the transposed weight gradient with partial
# 32-channel panels (24 and 40 channels), and stride-1 padding of rows up
# to 16 columns (the padded upstream gradient; paddings 1-3).
_STRIDE2_GEOMS = [
    ((2, 16, 28, 28), (32, 16, 3, 3), 2, 1, 1),
    ((1, 32, 14, 14), (64, 32, 3, 3), 2, 1, 1),
    ((3, 5, 12, 10), (24, 5, 3, 3), 2, 1, 1),      # 24 channels
    ((2, 8, 13, 15), (40, 8, 3, 3), 2, 1, 1),      # odd width: 8 and 7 columns
    ((2, 6, 10, 12), (9, 2, 4, 4), 2, 1, 3),       # groups, 4x4 taps
    ((2, 4, 9, 16), (6, 4, 3, 3), 2, 0, 1),        # no padding
    ((1, 3, 8, 34), (5, 3, 3, 3), 2, 2, 1),        # 17-column phases: two vectors
    ((2, 8, 6, 32), (16, 8, 3, 3), 2, 1, 1),       # 16-column phases: row tiles
    ((1, 4, 5, 30), (6, 4, 3, 3), 2, 1, 1),        # 15 columns: a partial row tile
    ((1, 3, 4, 64), (5, 3, 4, 4), 2, 1, 1),        # 4x4: two row tiles per row
    ((2, 3, 7, 9), (4, 3, 3, 3), 1, (2, 3), 1),    # stride 1, rows of 15 padded columns
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,s,p,groups", _STRIDE2_GEOMS)
def test_conv2d_stride2_paired_phases(xs, ws, s, p, groups, dtype, rng, close, restore_threads):
    """Strided layers whose input gradient pairs its column phases (or
    cannot), partial weight-gradient panels, and small padded rows: forward
    with a bias and all gradients as the reference, on one and two
    threads, from a non-contiguous input."""
    x = randn(rng, xs[:3] + (2 * xs[3],), dtype)[..., ::2]
    wt = randn(rng, ws, dtype)
    b = randn(rng, (ws[0],), dtype)
    _conv_as_reference(x, wt, b, dict(stride=s, padding=p, groups=groups), dtype, rng, close)


# Layers at column stride 2 with a multiple of 64 result channels on rows of
# at most 14 results, run float32 on AVX-512 with the result channels in the
# vector lanes (blocks of 7 or fewer results by 64 channels): several
# reduction blocks, two channel groups, a narrower last block, row strides
# 1 and 3, N = 1, no padding.
_OCV_GEOMS = [
    ((2, 32, 14, 14), (64, 32, 3, 3), 2, 1, 1),        # resnet's 32 -> 64, K = 288
    ((1, 5, 13, 9), (128, 5, 3, 3), 2, 0, 1),          # two groups of 64 channels
    ((2, 64, 9, 25), (64, 64, 2, 3), (3, 2), 2, 1),    # two blocks of 7, K = 384
    ((2, 4, 8, 19), (64, 4, 3, 3), (1, 2), 0, 1),      # blocks of 5 and 4
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,s,p,groups", _OCV_GEOMS)
def test_conv2d_result_channel_vectors(xs, ws, s, p, groups, dtype, rng, close,
                                       restore_threads):
    """Strided layers with many result channels on short rows: forward with
    a bias and all gradients as the reference, on one and two threads, from
    a non-contiguous input, and without a bias."""
    x = randn(rng, xs[:3] + (2 * xs[3],), dtype)[..., ::2]
    wt = randn(rng, ws, dtype)
    b = randn(rng, (ws[0],), dtype)
    _conv_as_reference(x, wt, b, dict(stride=s, padding=p, groups=groups), dtype, rng, close)
    _conv_as_reference(x, wt, None, dict(stride=s, padding=p), dtype, rng, close)


_TWO_ROW_SCRIPT = """
import numpy as np
import cnnext
from cnnext import _conv, _gemm, _plan
from cnnext import functional as F
rng = np.random.default_rng(11)
out = {}
for i, (xs, ws, s, p, groups) in enumerate(GEOMS):
    x = rng.standard_normal(xs).astype(np.float32)
    x.flat[::97] = [np.inf, -np.inf, np.nan][i % 3]
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    with cnnext.use_conv_algorithm("direct"):
        for threads in (1, 2):
            cnnext.set_num_threads(threads)
            y = F.conv2d(x, w, b, s, p, 1, groups)
            go = rng.standard_normal(y.shape).astype(np.float32)
            out[f"y{i}-{threads}"] = y
            st = (s, s) if isinstance(s, int) else s
            pd = (p, p) if isinstance(p, int) else p
            # the input gradient by stride phases (on the forward's tiles;
            # the plan may pick a kernel of its own for a small convolution)
            out[f"gx{i}-{threads}"] = _plan.grad_input(go, w, x.shape[2:], st, pd, (1, 1),
                                                       "phases", threads, groups)
            if groups == 1:
                for act, alpha in ((1, 0.0), (2, 0.1)):
                    r = np.empty_like(y)
                    _conv.conv2d_forward(x, w, b, r, *st, *pd, 1, 1, threads, 1, act, alpha)
                    out[f"a{i}-{act}-{threads}"] = r
np.savez(PATH, isa=_gemm.isa(), **out)
"""


@pytest.mark.parametrize("geoms", [_TWO_ROW_GEOMS, _FLAT_GEOMS, _STRIDE2_GEOMS, _OCV_GEOMS],
                         ids=["two-row", "flat", "stride-2 pairs", "result-channel vectors"])
def test_two_row_tiles_give_the_bits_of_the_other_kernels(geoms, tmp_path):
    """The two-row and flat-tile kernels sum each result in the order of
    the other tiles, the paired column phases of a stride-2 input gradient
    are those tiles' results, and the result-channel kernel sums the taps
    in their order, one reduction block at a time: forward (with each fused
    activation, inf and NaN inputs included) and input gradient bitwise
    those of the AVX2 kernels, whose tiles are half as wide (other tiles,
    other kernels for the same results)."""
    from cnnext import _gemm
    if _gemm.isa() != "avx512":
        pytest.skip(f"this CPU runs {_gemm.isa()}: no two-row or flat-tile kernel")
    _assert_same_bytes(*_npz_under_isas(tmp_path, f"GEOMS = {geoms!r}\n" + _TWO_ROW_SCRIPT))


@pytest.mark.parametrize("xs,ws,s,p", [
    ((2, 6, 12, 12), (16, 6, 5, 5), 1, 0),     # LeNet-5's second layer: 8 x 8
    ((3, 32, 14, 14), (64, 32, 3, 3), 2, 1),   # 7 x 7 at stride 2
    ((2, 5, 9, 8), (7, 5, 3, 3), 1, 1),        # 9 rows: a last row alone
    ((2, 3, 10, 7), (6, 3, 3, 3), 1, (2, 1)),  # 12 x 7
])
def test_two_row_tiles_same_bits_as_wider_rows(xs, ws, s, p, restore_threads):
    """A float32 forward of rows of at most 8 outputs (two-row tiles where
    the CPU has the kernel) gives the bits of the same outputs computed in
    a map of wider rows (row tiles): the same zeros right of the input,
    other values beyond them."""
    from cnnext import _conv
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    pw = p if isinstance(p, int) else p[1]
    wide = np.zeros(xs[:3] + (xs[3] + pw + 24,), np.float32)
    wide[..., :xs[3]] = x
    wide[..., xs[3] + pw:] = rng.standard_normal(xs[:3] + (24,))
    ph = p if isinstance(p, int) else p[0]
    with cnnext.use_conv_algorithm("direct"):
        for threads in (1, 2):
            cnnext.set_num_threads(threads)
            y = F.conv2d(x, w, b, s, p)
            np.testing.assert_array_equal(y, F.conv2d(wide, w, b, s, p)[..., :y.shape[3]])
            r = np.empty_like(y)  # with a fused ReLU
            _conv.conv2d_forward(x, w, b, r, s, s, ph, pw, 1, 1, threads, 1, 1, 0.0)
            np.testing.assert_array_equal(r, np.maximum(y, 0))


# float64 layers whose forward runs on channel-vector tiles: up to 14
# positions of one output row by 16 output channels with AVX-512, 6 by 8
# with AVX2, stored transposed (x shape, weight shape, stride, padding,
# groups, dilation).  AVX2's cost rule takes the tiles for these:
_CHANNEL_VECTOR_GEOMS_AVX2 = [
    ((1, 64, 5, 27), (32, 64, 3, 3), 1, 1, 1, 1),    # 27-wide rows: tiles of 14 and 13
    ((2, 32, 11, 11), (32, 32, 3, 3), 1, 2, 1, 2),   # dilation 2
    ((1, 64, 9, 14), (128, 64, 3, 3), 1, 1, 1, 1),   # weight over 512 KB, K = 576
    ((2, 64, 14, 14), (40, 64, 3, 3), 1, 1, 1, 1),   # AVX2: tiles of 5, 5, 4; 5 panels
    ((2, 64, 28, 28), (32, 64, 3, 3), 2, 1, 1, 1),   # stride 2 to 14x14, K = 576
    ((1, 64, 5, 28), (32, 64, 3, 3), 1, 1, 1, 1),    # AVX2: tiles of 6, 6, 6, 6, 4
    ((1, 16, 6, 10), (24, 16, 3, 3), 1, 1, 1, 1),    # 10-wide rows, K = 144
    ((2, 64, 11, 11), (64, 32, 3, 3), 1, 1, 2, 1),   # groups, 11-wide rows
]
# and AVX-512's (only) for these too:
_CHANNEL_VECTOR_GEOMS = _CHANNEL_VECTOR_GEOMS_AVX2 + [
    ((2, 30, 14, 14), (48, 30, 3, 3), 1, 1, 1, 1),   # 14-wide rows, K = 270: two blocks
    ((1, 30, 14, 14), (47, 30, 3, 3), 1, 1, 1, 1),   # N = 1, a last panel of 15 channels
    ((2, 32, 7, 7), (32, 32, 3, 3), 1, 1, 1, 1),     # 7 positions per tile
    ((2, 64, 7, 7), (64, 32, 3, 3), 1, 1, 2, 1),     # groups
    ((2, 32, 28, 28), (32, 32, 3, 3), 2, 1, 1, 1),   # stride 2
    ((2, 32, 9, 9), (32, 32, 3, 3), 1, 0, 1, 1),     # unpadded: read in place
]


@pytest.mark.parametrize("xs,ws,s,p,groups,d", _CHANNEL_VECTOR_GEOMS)
def test_conv2d_float64_channel_vector_tiles(xs, ws, s, p, groups, d, rng, close,
                                             restore_threads):
    """float64 forwards on channel-vector tiles (with a bias, without, and
    with each fused activation) and all gradients as the reference, on one
    and two threads, from a non-contiguous input."""
    from cnnext import _conv
    dtype = np.float64
    x = randn(rng, xs[:3] + (2 * xs[3],), dtype)[..., ::2]
    wt = randn(rng, ws, dtype)
    b = randn(rng, (ws[0],), dtype)
    kw = dict(stride=s, padding=p, groups=groups, dilation=d)
    _conv_as_reference(x, wt, b, kw, dtype, rng, close)
    want = R.conv2d(*f64(x, wt), **kw)
    xc = np.ascontiguousarray(x)
    for threads in (1, 2):
        cnnext.set_num_threads(threads)
        close(F.conv2d(x, wt, None, **kw), want, dtype)
        if groups == 1:
            for act, alpha in ((1, 0.0), (2, 0.1)):
                y = np.empty(want.shape)
                _conv.conv2d_forward(xc, wt, None, y, s, s, p, p, d, d, threads, 1, act, alpha)
                ref = np.where(want > 0, want, alpha * want)
                close(y, ref, dtype)


_CHANNEL_VECTOR_SCRIPT = """
import numpy as np
import cnnext
from cnnext import _conv, _gemm
from cnnext import functional as F
rng = np.random.default_rng(5)
out = {}
for i, (xs, ws, s, p, groups, d) in enumerate(GEOMS):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    with cnnext.use_conv_algorithm("direct"):
        for threads in (1, 2):
            cnnext.set_num_threads(threads)
            y = F.conv2d(x, w, b, s, p, d, groups)
            out[f"y{i}-{threads}"] = y
            out[f"n{i}-{threads}"] = F.conv2d(x, w, None, s, p, d, groups)
            if groups == 1:
                for act, alpha in ((1, 0.0), (2, 0.1)):
                    r = np.empty_like(y)
                    _conv.conv2d_forward(x, w, b, r, s, s, p, p, d, d, threads, 1, act, alpha)
                    out[f"a{i}-{act}-{threads}"] = r
np.savez(PATH, isa=_gemm.isa(), **out)
"""


def test_channel_vector_tiles_give_the_bits_of_the_other_kernels(tmp_path):
    """The channel-vector kernels sum each result in the order of the other
    float64 kernels: forward (with and without a bias, with each fused
    activation) bitwise that of the AVX2 kernels, which have none of them."""
    from cnnext import _gemm
    if _gemm.isa() != "avx512":
        pytest.skip(f"this CPU runs {_gemm.isa()}: no channel-vector kernel")
    _assert_same_bytes(*_npz_under_isas(
        tmp_path, f"GEOMS = {_CHANNEL_VECTOR_GEOMS!r}\n" + _CHANNEL_VECTOR_SCRIPT))


@pytest.mark.parametrize("xs,ws,s,p,groups,d", _CHANNEL_VECTOR_GEOMS_AVX2)
def test_channel_vector_tiles_same_bits_as_wider_rows(xs, ws, s, p, groups, d,
                                                      restore_threads):
    """With AVX2 (tiles of 8 channels by up to 6 positions), a float64
    forward on channel-vector tiles gives the bits of the same outputs
    computed in a map of 16- or 32-wide rows, which runs the 6 x 8 tiles
    (checked: scaling the channel-vector store by 1 + 1e-12 fails every
    geometry of this list): the same
    zeros right of the input, other values beyond them (with a bias,
    without, and with a fused ReLU)."""
    from cnnext import _conv, _gemm
    if _gemm.isa() != "avx2":
        pytest.skip(f"this CPU runs {_gemm.isa()}: not the AVX2 channel-vector tiles")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    ow = (xs[3] + 2 * p - d * (ws[3] - 1) - 1) // s + 1
    wide_ow = 16 if ow < 16 else 32  # rows of whole 8-column tiles
    width = (wide_ow - 1) * s + d * (ws[3] - 1) + 1 - 2 * p
    wide = np.zeros(xs[:3] + (width,))
    wide[..., :xs[3]] = x
    wide[..., xs[3] + p:] = rng.standard_normal(xs[:3] + (width - xs[3] - p,))
    kw = dict(stride=s, padding=p, dilation=d, groups=groups)
    with cnnext.use_conv_algorithm("direct"):
        for threads in (1, 2):
            cnnext.set_num_threads(threads)
            for bias in (b, None):
                y = F.conv2d(x, w, bias, **kw)
                np.testing.assert_array_equal(y, F.conv2d(wide, w, bias, **kw)[..., :y.shape[3]])
            if groups == 1:
                r = np.empty_like(y)
                _conv.conv2d_forward(x, w, None, r, s, s, p, p, d, d, threads, 1, 1, 0.0)
                np.testing.assert_array_equal(r, np.maximum(y, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("w", [2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65])
@pytest.mark.parametrize("pw", [0, 1, 2, 3])
def test_conv2d_stride2_column_phases(w, pw, dtype, rng, close):
    """At column stride 2 each input row is split into its even and odd
    columns (vector blocks of 32 values, a masked remainder of 0..31):
    every width around the blocks, both parities of the padding."""
    x = randn(rng, (2, 3, 5, w), dtype)
    wt = randn(rng, (4, 3, 3, 2), dtype)
    b = randn(rng, (4,), dtype)
    kw = dict(stride=(2, 2), padding=(1, pw))
    close(F.conv2d(x, wt, b, **kw), R.conv2d(*f64(x, wt, b), **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_same_and_valid_are_their_explicit_paddings(dtype, rng):
    """'valid' is padding 0; 'same' with an odd total padding equals padding
    the input explicitly, the extra row/column at the bottom/right."""
    x = randn(rng, (2, 3, 6, 7), dtype)
    w = randn(rng, (4, 3, 2, 3), dtype)  # total padding (1, 2)
    np.testing.assert_array_equal(F.conv2d(x, w, padding="valid"), F.conv2d(x, w))
    xp = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)))
    np.testing.assert_array_equal(F.conv2d(x, w, padding="same"), F.conv2d(xp, w, padding=(0, 1)))
    w4 = randn(rng, (4, 3, 4, 1), dtype)  # dilation 1: total 3, 1 above and 2 below
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 0)))
    np.testing.assert_array_equal(F.conv2d(x, w4, padding="same"), F.conv2d(xp, w4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", [((3, 3), 1, 0), ((2, 3), 1, 1), ((3, 2), 2, 0)])
def test_grouped_conv2d_keeps_each_groups_non_finite_values_to_itself(k, s, p, dtype, rng):
    """The kernels read a group's channels in place: a tap's run may pass the
    end of its channels, but an inf/NaN of another group never reaches this
    group's results (as the reference, which slices)."""
    x = randn(rng, (2, 4, 6, 7), dtype)
    x[1, 2, 5, 6], x[0, 3, 0, 0], x[1, 0, 3, 2] = np.inf, np.nan, -np.inf
    w = randn(rng, (6, 2) + k, dtype)
    kw = dict(stride=s, padding=p, groups=2)
    y = F.conv2d(x, w, **kw)
    want = R.conv2d(*f64(x, w), **kw)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    go = randn(rng, y.shape, dtype)
    got_all = F.conv2d_backward(go, x, w, **kw)
    for got, ref in zip(got_all, R.conv2d_backward(*f64(go, x, w), **kw)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    finite = np.isfinite(want)
    np.testing.assert_allclose(y[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_grouped_conv2d_with_huge_padding_gathers_each_group(rng):
    x, w = rng.standard_normal((1, 4, 2, 2)), rng.standard_normal((2, 2, 1, 1))
    kw = dict(stride=2**31 - 1, padding=2**31 - 1, groups=2)
    plan = _conv2d_plan("conv2d", x, w, None, np.dtype(np.float64), dilation=1, **kw)
    assert plan.method == "grouped" and plan.group_plan.method == "gather"
    y = F.conv2d(x, w, **kw)
    np.testing.assert_allclose(y, R.conv2d(x, w, **kw), rtol=1e-12)
    go = rng.standard_normal(y.shape)
    for got, ref in zip(F.conv2d_backward(go, x, w, **kw), R.conv2d_backward(go, x, w, **kw)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)

GT_CASES = [
    ("g2-2x3-stride-op", GConv(2, 4, 6, 2, 5, 6, (2, 3), (2, 2), (1, 1), (1, 1)), (1, 1)),
    ("g2-dilation-op", GConv(2, 6, 4, 2, 4, 5, (3, 2), (1, 1), (0, 0), (2, 2)), (1, 1)),
    ("g3-stride>kernel", GConv(1, 3, 6, 3, 4, 3, (2, 2), (3, 4), (1, 0), (2, 1)), (2, 3)),
    ("g1-primes", GConv(3, 5, 7, 1, 7, 5, (3, 5), (2, 3), (1, 2), (1, 1)), (1, 0)),
    ("depthwise", GConv(2, 4, 4, 4, 5, 5, (3, 3), (2, 2), (1, 1), (1, 1)), (0, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g,op", [c[1:] for c in GT_CASES], ids=[c[0] for c in GT_CASES])
def test_grouped_conv_transpose2d_and_backward_cases(g, op, dtype, rng, close):
    x = randn(rng, (g.n, g.cin, g.h, g.w), dtype)
    w = randn(rng, (g.cin, g.cout // g.groups) + g.k, dtype)
    b = randn(rng, (g.cout,), dtype)
    kw = dict(stride=g.s, padding=g.p, output_padding=op, groups=g.groups, dilation=g.d)
    want = R.conv_transpose2d(*f64(x, w, b), **kw)
    y = F.conv_transpose2d(x, w, b, **kw)
    assert y.dtype == dtype and y.shape == want.shape
    close(y, want, dtype)
    go = randn(rng, y.shape, dtype)
    check_grads_match_reference("conv_transpose2d", go, x, w, kw, dtype, close)
    assert F.conv_transpose2d_backward(go, x, w, bias=False, **kw)[2] is None
    check_unbatched_backward("conv_transpose2d", go, x, w, kw)


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_conv_transpose2d_backward_hypothesis(data, dtype, close):
    groups = data.draw(st.integers(1, 3), label="groups")
    g = draw_conv(data, max_hw=6)
    oph, opw = draw_output_padding(data, g)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = randn(rng, (g.n, g.cin * groups, g.h, g.w), dtype)
    w = randn(rng, (g.cin * groups, g.cout) + g.k, dtype)
    kw = dict(stride=g.s, padding=g.p, output_padding=(oph, opw), groups=groups, dilation=g.d)
    y = F.conv_transpose2d(x, w, **kw)
    close(y, R.conv_transpose2d(*f64(x, w), **kw), dtype)
    go = randn(rng, y.shape, dtype)
    got = F.conv_transpose2d_backward(go, x, w, **kw)
    for a, b in zip(got, R.conv_transpose2d_backward(*f64(go, x, w), **kw)):
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d_backward_is_the_conv2d_it_transposes(dtype, rng, close):
    """grad_x of a transposed convolution is conv2d of the upstream gradient;
    its grad_weight is that conv2d's weight gradient for upstream x."""
    x = randn(rng, (2, 4, 5, 6), dtype)
    w = randn(rng, (4, 3, 3, 2), dtype)
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    y = F.conv_transpose2d(x, w, groups=2, **kw)
    go = randn(rng, y.shape, dtype)
    gx, gw, _ = F.conv_transpose2d_backward(go, x, w, groups=2, **kw)
    close(gx, F.conv2d(go, w, groups=2, **kw), dtype)
    close(gw, F.conv2d_backward(x, go, w, groups=2, **kw)[1], dtype)


C1 = namedtuple("C1", "n cin cout groups l k s p d")
CONV1D_CASES = [
    ("k2", C1(2, 3, 4, 1, 9, 2, 1, 0, 1)),
    ("g2-stride>kernel", C1(2, 4, 6, 2, 13, 2, 3, 1, 1)),
    ("depthwise-dil", C1(1, 3, 3, 3, 11, 3, 1, 2, 2)),
    ("same-even", C1(2, 2, 4, 2, 7, 4, 1, "same", 1)),
    ("same-dil", C1(3, 3, 3, 1, 5, 3, 1, "same", 2)),
    ("valid-primes", C1(3, 5, 7, 1, 13, 5, 2, "valid", 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", [c[1] for c in CONV1D_CASES], ids=[c[0] for c in CONV1D_CASES])
def test_conv1d_and_backward_cases(g, dtype, rng, close):
    x = randn(rng, (g.n, g.cin, g.l), dtype)
    w = randn(rng, (g.cout, g.cin // g.groups, g.k), dtype)
    b = randn(rng, (g.cout,), dtype)
    kw = dict(stride=g.s, padding=g.p, dilation=g.d, groups=g.groups)
    want = R.conv1d(*f64(x, w, b), **kw)
    y = F.conv1d(x, w, b, **kw)
    assert y.dtype == dtype and y.shape == want.shape and y.ndim == 3
    close(y, want, dtype)
    # the (1, L) images of conv2d
    np.testing.assert_array_equal(
        y, F.conv2d(x[:, :, None], w[:, :, None], b, (1, g.s),
                    g.p if isinstance(g.p, str) else (0, g.p), (1, g.d), g.groups)[:, :, 0])
    go = randn(rng, y.shape, dtype)
    check_grads_match_reference("conv1d", go, x, w, kw, dtype, close)
    y2 = F.conv1d(x[0], w, b, **kw)
    assert y2.ndim == 2
    np.testing.assert_array_equal(y2, F.conv1d(x[:1], w, b, **kw)[0])
    check_unbatched_backward("conv1d", go, x, w, kw)


def test_conv1d_accepts_one_element_sequences():
    x, w = np.arange(10.0).reshape(1, 2, 5), np.ones((2, 2, 2))
    np.testing.assert_array_equal(F.conv1d(x, w, stride=(2,), padding=[1], dilation=(1,)),
                                  F.conv1d(x, w, stride=2, padding=1))


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_groups_and_padding_modes_with_empty_batch(backend):
    x = np.zeros((0, 4, 5, 6), np.float32)
    w = np.ones((6, 2, 2, 3), np.float32)
    with cnnext.use_backend(backend):
        y = F.conv2d(x, w, groups=2, padding="same")
        assert y.shape == (0, 6, 5, 6)
        gx, gw, gb = F.conv2d_backward(y, x, w, padding="same", groups=2)
        assert gx.shape == x.shape and not gw.any() and not gb.any()
        t = F.conv_transpose2d(x, np.ones((4, 3, 2, 2), np.float32), groups=2, stride=2)
        assert t.shape == (0, 6, 10, 12)
        tgx, tgw, _ = F.conv_transpose2d_backward(t, x, np.ones((4, 3, 2, 2)), groups=2,
                                                  stride=2)
        assert tgx.shape == x.shape and tgw.shape == (4, 3, 2, 2) and not tgw.any()
        assert F.conv1d(np.zeros((0, 4, 7)), np.ones((2, 2, 3)), groups=2).shape == (0, 2, 5)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

VALUE_MODES = ["distinct", "small_int", "relu", "nan", "neginf", "constant"]


def pool_input(rng, shape, mode, dtype):
    """Inputs that stress the tie and special-value rules of max pooling."""
    if mode == "distinct":
        x = rng.permutation(int(np.prod(shape))).reshape(shape) - 7.0
    elif mode == "small_int":
        x = rng.integers(-1, 2, size=shape).astype(float)  # ties everywhere
    elif mode == "relu":
        x = np.maximum(rng.integers(-3, 3, size=shape), 0).astype(float)  # mostly 0
    elif mode == "nan":
        x = rng.integers(0, 3, size=shape).astype(float)
        x[rng.random(shape) < 0.2] = np.nan
    elif mode == "neginf":
        x = rng.integers(0, 3, size=shape).astype(float)
        x[rng.random(shape) < 0.6] = -np.inf
    elif mode == "constant":
        x = np.full(shape, 2.5)
    else:  # pragma: no cover
        raise AssertionError(mode)
    return x.astype(dtype)


def check_max_pool(x, k, s, p):
    y, idx = F.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    ry, ridx = R.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    assert y.dtype == x.dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ry)  # NaN == NaN here
    np.testing.assert_array_equal(idx, ridx)
    # The index points at the value reported (NaN windows: at a NaN).
    n, c, h, w = x.shape
    picked = np.take_along_axis(x.reshape(n, c, h * w), idx.reshape(n, c, -1), axis=2)
    np.testing.assert_array_equal(picked.reshape(y.shape), y)
    # Without return_indices: the same values.
    np.testing.assert_array_equal(F.max_pool2d(x, k, stride=s, padding=p), y)
    return y, idx


def draw_pool(data):
    kh, kw = draw_pair(data, "kernel", 1, 4)
    s = draw_pair(data, "stride", 1, 4)
    ph = data.draw(st.integers(0, kh // 2), label="padding_h")
    pw = data.draw(st.integers(0, kw // 2), label="padding_w")
    n = data.draw(st.integers(1, 2), label="N")
    c = data.draw(st.integers(1, 3), label="C")
    h = data.draw(st.integers(1, 9), label="H")
    w = data.draw(st.integers(1, 9), label="W")
    assume(pool_out(h, kh, s[0], ph) >= 1 and pool_out(w, kw, s[1], pw) >= 1)
    return (n, c, h, w), (kh, kw), s, (ph, pw)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(VALUE_MODES))
def test_max_pool2d_hypothesis_exact(data, dtype, mode):
    shape, k, s, p = draw_pool(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = pool_input(rng, shape, mode, dtype)
    check_max_pool(x, k, s, p)


POOL_CASES = [
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (1, 1), (1, 1)),  # overlapping, padded
    ((2, 3), (1, 2), (1, 1)),
    ((3, 2), (2, 1), (1, 1)),
    ((1, 1), (2, 3), (0, 0)),  # stride > kernel
    ((2, 2), (3, 3), (1, 0)),
    ((5, 3), (2, 2), (2, 1)),  # padding = half the kernel
]


@pytest.mark.parametrize("mode", VALUE_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_CASES)
def test_max_pool2d_cases_exact(k, s, p, dtype, mode, rng):
    x = pool_input(rng, (2, 3, 7, 11), mode, dtype)
    check_max_pool(x, k, s, p)


def test_max_pool2d_tie_and_special_rules_by_hand():
    x = np.array(
        [
            [1.0, 1.0, 0.0, 0.0, -np.inf, -np.inf],
            [1.0, 1.0, 0.0, 0.0, -np.inf, -np.inf],
            [np.nan, 5.0, 2.0, np.nan, 3.0, 3.0],
            [5.0, np.nan, np.nan, 2.0, 3.0, 4.0],
        ],
        dtype=np.float32,
    )[None, None]
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    # ties: first in row-major order; all -inf: first in-bounds; NaN: last NaN wins
    np.testing.assert_array_equal(idx[0, 0], [[0, 2, 4], [19, 20, 23]])
    np.testing.assert_array_equal(y[0, 0], [[1, 0, -np.inf], [np.nan, np.nan, 4]])
    # padding is never selected, even against all -inf / negative inputs
    y, idx = F.max_pool2d(-np.ones((1, 1, 2, 2)), 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(y, -np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(idx[0, 0], [[0, 0], [0, 0]])


@given(data=st.data(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(VALUE_MODES))
def test_max_pool2d_backward_hypothesis(data, dtype, mode, close):
    shape, k, s, p = draw_pool(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = pool_input(rng, shape, mode, dtype)
    _, idx = F.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    go = randn(rng, idx.shape, dtype)
    gx = F.max_pool2d_backward(go, idx, x.shape)
    assert gx.dtype == dtype and gx.shape == x.shape
    close(gx, R.max_pool2d_backward(*f64(go), idx, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_backward_overlapping_windows_accumulate(dtype, rng, close):
    # Constant input: every 3x3/stride-1 window's first element wins, so
    # interior positions are chosen by up to 1 window and corners by several
    # (with padding 1, position 0 is the argmax of 4 windows).
    x = np.zeros((2, 2, 5, 6), dtype=dtype)
    _, idx = F.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    go = randn(rng, idx.shape, dtype)
    gx = F.max_pool2d_backward(go, idx, x.shape)
    want = np.zeros((2, 2, 30))
    for n in range(2):
        for c in range(2):
            for q, flat in enumerate(idx[n, c].ravel()):
                want[n, c, flat] += go[n, c].ravel()[q]
    close(gx, want.reshape(x.shape), dtype)
    counts = np.bincount(idx[0, 0].ravel(), minlength=30)
    assert counts.max() >= 4  # the test really exercises accumulation


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_avg_pool2d_and_backward_hypothesis(data, dtype, close):
    shape, k, s, p = draw_pool(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = randn(rng, shape, dtype)
    y = F.avg_pool2d(x, k, stride=s, padding=p)
    assert y.dtype == dtype
    close(y, R.avg_pool2d(*f64(x), k, stride=s, padding=p), dtype)
    go = randn(rng, y.shape, dtype)
    gx = F.avg_pool2d_backward(go, x.shape, k, stride=s, padding=p)
    assert gx.dtype == dtype and gx.shape == x.shape
    close(gx, R.avg_pool2d_backward(*f64(go), x.shape, k, stride=s, padding=p), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_CASES)
def test_avg_pool2d_cases(k, s, p, dtype, rng, close):
    x = randn(rng, (2, 3, 7, 11), dtype)
    y = F.avg_pool2d(x, k, stride=s, padding=p)
    close(y, R.avg_pool2d(*f64(x), k, stride=s, padding=p), dtype)
    go = randn(rng, y.shape, dtype)
    gx = F.avg_pool2d_backward(go, x.shape, k, stride=s, padding=p)
    close(gx, R.avg_pool2d_backward(*f64(go), x.shape, k, stride=s, padding=p), dtype)
    # adjoint identity, independent of the oracle
    assert np.isclose(np.sum(y * go, dtype=np.float64), np.sum(x * gx, dtype=np.float64),
                      rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_pool_stride_defaults_to_kernel_size():
    x = np.arange(2 * 3 * 6 * 9, dtype=np.float64).reshape(2, 3, 6, 9)
    np.testing.assert_array_equal(F.max_pool2d(x, (2, 3)), F.max_pool2d(x, (2, 3), stride=(2, 3)))
    np.testing.assert_array_equal(F.avg_pool2d(x, 3), F.avg_pool2d(x, 3, stride=3))
    assert F.max_pool2d(x, (2, 3)).shape == (2, 3, 3, 3)


# -- the full PyTorch options: dilation, ceil_mode, count_include_pad,
# -- divisor_override; adaptive pooling; unpooling; 1-D pooling


def pool_out_full(size, k, s, p, d, ceil_mode):
    """PyTorch's rule, written out: rounded up with ceil_mode, then a last
    window that starts at or past the end of the input is dropped."""
    eff = d * (k - 1) + 1
    if ceil_mode:
        out = -(-(size + 2 * p - eff) // s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
        return out
    return (size + 2 * p - eff) // s + 1


def draw_pool_full(data, dilation=True):
    shape, k, s, p = draw_pool(data)
    d = draw_pair(data, "dilation", 1, 3) if dilation else (1, 1)
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    h, w = shape[2:]
    assume(all(pool_out_full(n, k[i], s[i], p[i], d[i], ceil_mode) >= 1
               for i, n in enumerate((h, w))))
    return shape, k, s, p, d, ceil_mode


@given(data=st.data(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(VALUE_MODES))
def test_max_pool2d_dilation_ceil_mode_hypothesis_exact(data, dtype, mode, close):
    shape, k, s, p, d, cm = draw_pool_full(data)
    # A window of padding only (dilation can skip every input element) has
    # no input position; see test_max_pool2d_window_of_padding_only.
    assume(_every_window_reaches_input(shape, k, s, p, d, cm))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = pool_input(rng, shape, mode, dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, cm, return_indices=True)
    ry, ridx = R.max_pool2d(x, k, s, p, d, cm, return_indices=True)
    assert y.shape == ry.shape == shape[:2] + tuple(
        pool_out_full(n, k[i], s[i], p[i], d[i], cm) for i, n in enumerate(shape[2:]))
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, cm), y)
    g = randn(rng, y.shape, dtype)
    close(F.max_pool2d_backward(g, idx, x.shape), R.max_pool2d_backward(*f64(g), idx, x.shape),
          dtype)


def _every_window_reaches_input(shape, k, s, p, d, cm):
    for i, n in enumerate(shape[2:]):
        for o in range(pool_out_full(n, k[i], s[i], p[i], d[i], cm)):
            if not any(0 <= o * s[i] - p[i] + d[i] * t < n for t in range(k[i])):
                return False
    return True


def test_max_pool2d_window_of_padding_only():
    # Kernel width 2 with dilation 2 and padding 1 on a 1-wide input: the
    # only window reads the two padding columns.  As PyTorch: -inf and the
    # index of the window's first tap (outside the plane); the backward pass
    # refuses that index rather than route a gradient to a wrong element.
    x = np.array([[[[5.0]]]], dtype=np.float32)
    y, idx = F.max_pool2d(x, (1, 2), 1, (0, 1), (1, 2), return_indices=True)
    assert y[0, 0, 0, 0] == -np.inf and idx[0, 0, 0, 0] == 1
    with pytest.raises(ValueError, match="indices must lie in"):
        F.max_pool2d_backward(np.ones_like(y), idx, x.shape)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), cip=st.booleans(),
       dov=st.sampled_from([None, 1, 4, -3]))
def test_avg_pool2d_options_and_backward_hypothesis(data, dtype, cip, dov, close):
    shape, k, s, p, _, cm = draw_pool_full(data, dilation=False)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = randn(rng, shape, dtype)
    y = F.avg_pool2d(x, k, s, p, cm, cip, dov)
    assert y.dtype == dtype
    close(y, R.avg_pool2d(*f64(x), k, s, p, cm, cip, dov), dtype)
    go = randn(rng, y.shape, dtype)
    gx = F.avg_pool2d_backward(go, x.shape, k, s, p, cm, cip, dov)
    close(gx, R.avg_pool2d_backward(*f64(go), x.shape, k, s, p, cm, cip, dov), dtype)


# (H, k, s, p): ceil_mode adds a last, clipped window -- or would add one
# that starts in the padding, which is dropped.
CEIL_EDGES = [
    (5, 2, 2, 0, 3),   # clipped last window [4, 6) -> one element
    (5, 2, 2, 1, 3),   # rounding up gives 4, the 4th starts at 5 (padding): dropped
    (6, 3, 2, 1, 4),   # last window starts at 5 (in the input), reaches the padding
    (7, 4, 3, 2, 3),   # rounding up gives 4, the 4th starts at 7 (padding): dropped
    (8, 4, 3, 2, 4),   # the 4th starts at 7, the last input row: kept
    (1, 2, 2, 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h,k,s,p,want", CEIL_EDGES)
def test_ceil_mode_edge_cases(h, k, s, p, want, dtype, rng, close):
    x = pool_input(rng, (2, 3, h, h + 2), "small_int", dtype)
    y, idx = F.max_pool2d(x, k, s, p, ceil_mode=True, return_indices=True)
    assert y.shape[2] == want
    ry, ridx = R.max_pool2d(x, k, s, p, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    for cip in (True, False):
        a = F.avg_pool2d(x, k, s, p, ceil_mode=True, count_include_pad=cip)
        assert a.shape == y.shape
        close(a, R.avg_pool2d(*f64(x), k, s, p, True, cip), dtype)
        g = randn(rng, a.shape, dtype)
        close(F.avg_pool2d_backward(g, x.shape, k, s, p, True, cip),
              R.avg_pool2d_backward(*f64(g), x.shape, k, s, p, True, cip), dtype)


def test_avg_pool2d_divisors_by_hand():
    x = np.ones((1, 1, 3, 3))
    # ceil_mode: windows [0, 2) and [2, 4) -> the second is clipped to the
    # input (and to input + padding for the divisor).
    np.testing.assert_array_equal(F.avg_pool2d(x, 2, ceil_mode=True)[0, 0], [[1, 1], [1, 1]])
    # count_include_pad with padding 1: the corner window covers 1 input
    # element of 4 (the padded ones count).
    y = F.avg_pool2d(x, 2, padding=1)
    np.testing.assert_array_equal(y[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(F.avg_pool2d(x, 2, padding=1, count_include_pad=False),
                                  np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(F.avg_pool2d(x, 3, divisor_override=2), [[[[4.5]]]])


def draw_adaptive(data):
    n = data.draw(st.integers(1, 2), label="N")
    c = data.draw(st.integers(1, 3), label="C")
    h = data.draw(st.integers(1, 11), label="H")
    w = data.draw(st.integers(1, 11), label="W")
    oh = data.draw(st.one_of(st.none(), st.integers(1, 13)), label="OH")
    ow = data.draw(st.one_of(st.none(), st.integers(1, 13)), label="OW")
    return (n, c, h, w), (oh, ow)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(VALUE_MODES))
def test_adaptive_pools_hypothesis(data, dtype, mode, close):
    shape, o = draw_adaptive(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = pool_input(rng, shape, mode, dtype)
    want_hw = (shape[2] if o[0] is None else o[0], shape[3] if o[1] is None else o[1])
    y, idx = F.adaptive_max_pool2d(x, o, return_indices=True)
    ry, ridx = R.adaptive_max_pool2d(x, o, return_indices=True)
    assert y.shape == shape[:2] + want_hw
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    g = randn(rng, y.shape, dtype)
    close(F.adaptive_max_pool2d_backward(g, idx, x.shape),
          R.adaptive_max_pool2d_backward(*f64(g), idx, x.shape), dtype)
    xf = randn(rng, shape, dtype)
    a = F.adaptive_avg_pool2d(xf, o)
    close(a, R.adaptive_avg_pool2d(*f64(xf), o), dtype)
    close(F.adaptive_avg_pool2d_backward(g, x.shape),
          R.adaptive_avg_pool2d_backward(*f64(g), x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 1, 1, 1), (3, 2, 1, 13), (2, 5, 33, 31)])
def test_global_average_pool(shape, dtype, rng, close):
    x = randn(rng, shape, dtype)
    y = F.adaptive_avg_pool2d(x, 1)
    close(y, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), dtype)
    np.testing.assert_array_equal(F.adaptive_avg_pool2d(x, (1, 1)), y)
    g = randn(rng, y.shape, dtype)
    gx = F.adaptive_avg_pool2d_backward(g, x.shape)
    close(gx, np.broadcast_to(g.astype(np.float64) / (shape[2] * shape[3]), shape), dtype)
    # the same as an average pool over the whole plane
    close(y, F.avg_pool2d(x, shape[2:]), dtype)


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_max_unpool2d_hypothesis(data, dtype):
    shape, k, s, p = draw_pool(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = pool_input(rng, shape, "small_int", dtype)  # ties: repeated indices
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    default = tuple((n - 1) * s[i] - 2 * p[i] + k[i] for i, n in enumerate(y.shape[2:]))
    out = tuple(max(d, n) for d, n in zip(default, shape[2:]))
    assume(all(o - s[i] < default[i] < o + s[i] or o == default[i]
               for i, o in enumerate(out)))
    u = F.max_unpool2d(y, idx, k, s, p, output_size=out)
    ru = R.max_unpool2d(y, idx, k, s, p, output_size=out)
    np.testing.assert_array_equal(u, ru)
    assert u.shape == shape[:2] + out
    g = randn(rng, u.shape, dtype)
    np.testing.assert_array_equal(F.max_unpool2d_backward(g, idx),
                                  R.max_unpool2d_backward(g, idx))


def test_max_unpool2d_repeated_indices_last_wins():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    idx = np.array([[[[5, 5], [0, 5]]]])
    u = F.max_unpool2d(x, idx, 2)
    assert u.shape == (1, 1, 4, 4)
    assert u[0, 0].ravel()[5] == 4.0 and u[0, 0].ravel()[0] == 3.0
    assert np.count_nonzero(u) == 2
    g = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(F.max_unpool2d_backward(g, idx), [[[[5, 5], [0, 5]]]])


@given(data=st.data(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(VALUE_MODES))
def test_pool1d_hypothesis(data, dtype, mode, close):
    shape, k, s, p, d, cm = draw_pool_full(data)
    n, c, _, L = shape
    assume(_every_window_reaches_input(shape, k, s, p, d, cm))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = pool_input(rng, (n, c, L), mode, dtype)
    y, idx = F.max_pool1d(x, k[1], s[1], p[1], d[1], cm, return_indices=True)
    ry, ridx = R.max_pool1d(x, k[1], s[1], p[1], d[1], cm, return_indices=True)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    g = randn(rng, y.shape, dtype)
    close(F.max_pool1d_backward(g, idx, x.shape), R.max_pool1d_backward(*f64(g), idx, x.shape),
          dtype)
    xf = randn(rng, (n, c, L), dtype)
    for cip in (True, False):
        a = F.avg_pool1d(xf, k[1], s[1], p[1], cm, cip)
        close(a, R.avg_pool1d(*f64(xf), k[1], s[1], p[1], cm, cip), dtype)
        ga = randn(rng, a.shape, dtype)
        close(F.avg_pool1d_backward(ga, xf.shape, k[1], s[1], p[1], cm, cip),
              R.avg_pool1d_backward(*f64(ga), xf.shape, k[1], s[1], p[1], cm, cip), dtype)


def test_pool1d_is_pool2d_of_height_one(rng):
    x = rng.standard_normal((2, 3, 17))
    y, idx = F.max_pool1d(x, (3,), 2, 1, 2, True, return_indices=True)
    y2, idx2 = F.max_pool2d(x[:, :, None], (1, 3), (1, 2), (0, 1), (1, 2), True,
                            return_indices=True)
    np.testing.assert_array_equal(y, y2[:, :, 0])
    np.testing.assert_array_equal(idx, idx2[:, :, 0])
    np.testing.assert_array_equal(F.avg_pool1d(x[0], 4, padding=2, count_include_pad=False),
                                  F.avg_pool2d(x[0][:, None], (1, 4), padding=(0, 2),
                                               count_include_pad=False)[:, 0])


def test_new_pools_bitwise_independent_of_thread_count(rng, restore_threads):
    x = pool_threads_input(rng)

    def run():
        y, idx = F.max_pool2d(x, 3, 2, 1, 2, True, return_indices=True)
        ya, ida = F.adaptive_max_pool2d(x, (5, 4), return_indices=True)
        yp, idp = F.max_pool2d(x, 2, return_indices=True)
        g = np.linspace(-1, 1, ya.size, dtype=np.float32).reshape(ya.shape)
        return (y, idx, F.avg_pool2d(x, 3, 2, 1, True, False, None), ya, ida,
                F.adaptive_avg_pool2d(x, (5, 4)), F.adaptive_avg_pool2d(x, 1),
                F.adaptive_avg_pool2d_backward(g, x.shape),
                F.adaptive_avg_pool2d_backward(g[..., :1, :1], x.shape),
                F.max_unpool2d(yp, idp, 2, output_size=x.shape[2:]),
                F.max_unpool2d_backward(x, idp))

    assert_same_at_1_and_2_threads(run)


# --------------------------------------------------------------------------
# activations and loss: cython backend vs numpy backend
# --------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": lambda x, g, y: F.relu(x),
    "relu_backward": lambda x, g, y: F.relu_backward(g, x),
    "leaky_relu": lambda x, g, y: F.leaky_relu(x, 0.2),
    "leaky_relu_backward": lambda x, g, y: F.leaky_relu_backward(g, x, 0.2),
    "sigmoid": lambda x, g, y: F.sigmoid(x),
    "sigmoid_backward": lambda x, g, y: F.sigmoid_backward(g, y),
    "tanh": lambda x, g, y: F.tanh(x),
    "tanh_backward": lambda x, g, y: F.tanh_backward(g, y),
    "softmax": lambda x, g, y: F.softmax(x, axis=1),
    "softmax_backward": lambda x, g, y: F.softmax_backward(g, y, axis=1),
    "softmax_last": lambda x, g, y: F.softmax(x),
    "log_softmax": lambda x, g, y: F.log_softmax(x, axis=-2),
    "log_softmax_backward": lambda x, g, y: F.log_softmax_backward(g, np.log(y), axis=-2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_cython_vs_numpy_backend(name, dtype, rng, close):
    fn = ACTIVATIONS[name]
    x = randn(rng, (3, 4, 5), dtype) * 3
    x[0, 0, :2] = 0.0  # the kink of relu/leaky_relu
    g = randn(rng, x.shape, dtype)
    y = rng.uniform(0.05, 0.95, size=x.shape).astype(dtype)
    got = fn(x, g, y)
    with cnnext.use_backend("numpy"):
        want = fn(*f64(x, g, y))
    assert got.dtype == dtype and got.shape == x.shape
    close(got, want, dtype)


def test_activation_values_by_definition(rng):
    x = rng.standard_normal((4, 6))
    g = rng.standard_normal((4, 6))
    np.testing.assert_allclose(F.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(F.tanh(x), np.tanh(x), rtol=1e-12)
    np.testing.assert_array_equal(F.relu_backward(g, x), np.where(x > 0, g, 0))
    np.testing.assert_allclose(F.leaky_relu(x, 0.1), np.where(x > 0, x, 0.1 * x), rtol=1e-15)
    sm = np.exp(x) / np.exp(x).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(F.softmax(x, axis=0), sm, rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(x, axis=0), np.log(sm), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 2), (5, 3), (8, 10), (0, 4)])
def test_softmax_cross_entropy_cython_vs_numpy(n, k, dtype, rng, close):
    z = randn(rng, (n, k), dtype) * 4
    labels = rng.integers(0, k, size=n)
    loss, g = F.softmax_cross_entropy(z, labels)
    with cnnext.use_backend("numpy"):
        rloss, rg = F.softmax_cross_entropy(z.astype(np.float64), labels)
    assert isinstance(loss, float)
    assert g.dtype == dtype and g.shape == (n, k)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(rloss, rel=tol, abs=tol)
    close(g, rg, dtype)
    if n:
        # definition: mean of -log softmax at the label
        lsm = R.log_softmax(z.astype(np.float64))
        assert loss == pytest.approx(-lsm[np.arange(n), labels].mean(), rel=tol, abs=tol)
    else:
        assert loss == 0.0


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits_are_stable_and_silent(backend, dtype):
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 2, 2])
    # Overflow, invalid (inf - inf, 0 * inf) and divide-by-zero are bugs;
    # underflow of exp(-2e4) to 0 is the correct, silent result.
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        with cnnext.use_backend(backend):
            loss, g = F.softmax_cross_entropy(z, labels)
            sm = F.softmax(z)
            lsm = F.log_softmax(z)
            sg = F.sigmoid(z)
            th = F.tanh(z)
    for a in (g, sm, lsm, sg, th):
        assert np.all(np.isfinite(a))
    # loss terms: 0, log 3, 2e4 + log 2
    assert loss == pytest.approx((0 + np.log(3) + 2e4 + np.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(sm[0], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(sm[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(lsm[0], [0, -1e4, -2e4], rtol=1e-6)
    np.testing.assert_allclose(sg[0], [1, 0.5, 0], atol=1e-7)
    np.testing.assert_allclose(th[0], [1, 0, -1], atol=1e-7)
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-6)


# --------------------------------------------------------------------------
# a call table for the cross-cutting tests (layout, dtype, batch shapes)
# --------------------------------------------------------------------------


def _calls(rng):
    """name -> (function, list of array arguments, extra kwargs).

    Every array argument can be re-laid-out or re-typed by the tests below;
    integer index/label arrays stay as they are.
    """
    x = rng.standard_normal((3, 2, 7, 6))
    w = rng.standard_normal((4, 2, 2, 3))
    b = rng.standard_normal(4)
    ck = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    go = rng.standard_normal(R.conv2d(x, w, **ck).shape)
    wt = rng.standard_normal((2, 3, 3, 2))
    tk = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 1))
    wf = rng.standard_normal((2, 3, 2, 3))
    tkg = dict(tk, groups=2)
    gt = rng.standard_normal(R.conv_transpose2d(x, wt[:, :1], **tkg).shape)
    g1 = rng.standard_normal((3, 4, 6))
    pk = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1))
    xp = np.round(rng.standard_normal((3, 2, 7, 6)))  # ties
    _, idx = R.max_pool2d(xp, return_indices=True, **pk)
    gp = rng.standard_normal(idx.shape)
    ga = rng.standard_normal(R.avg_pool2d(x, **pk).shape)
    mk = dict(kernel_size=(2, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True)
    _, idm = R.max_pool2d(xp, return_indices=True, **mk)
    ak = dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    gak = rng.standard_normal(R.avg_pool2d(x, **ak).shape)
    _, ida = R.adaptive_max_pool2d(xp, (3, 4), return_indices=True)
    gad = rng.standard_normal(ida.shape)
    _, idu = R.max_pool2d(xp, 2, return_indices=True)
    yu = rng.standard_normal(idu.shape)
    gu = rng.standard_normal(xp.shape[:2] + (6, 6))
    x1 = np.round(rng.standard_normal((3, 2, 11)))
    k1 = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    _, id1 = R.max_pool1d(x1, return_indices=True, **k1)
    gp1 = rng.standard_normal(id1.shape)
    z = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    return {
        "conv2d": (F.conv2d, [x, w, b], ck),
        "conv2d_backward": (F.conv2d_backward, [go, x, w], ck),
        "conv_transpose2d": (F.conv_transpose2d, [x, wt, rng.standard_normal(3)], tk),
        "full_conv2d": (F.full_conv2d, [x, wf], {}),
        "conv2d_grouped_same": (F.conv2d, [x, w[:, :1], b], dict(padding="same", groups=2)),
        "conv2d_backward_grouped": (F.conv2d_backward, [go, x, w[:, :1]], dict(ck, groups=2)),
        "conv_transpose2d_backward": (F.conv_transpose2d_backward, [gt, x, wt[:, :1]], tkg),
        "conv1d": (F.conv1d, [x[:, :, 0], w[:, :, 0], b], dict(stride=2, padding=1)),
        "conv1d_backward": (F.conv1d_backward, [g1, x[:, :, 0], w[:, :1, 0]],
                            dict(padding="same", groups=2)),
        "max_pool2d": (lambda a, **k: F.max_pool2d(a, return_indices=True, **k), [xp], pk),
        "max_pool2d_backward": (lambda g, **k: F.max_pool2d_backward(g, idx, xp.shape), [gp], {}),
        "avg_pool2d": (F.avg_pool2d, [x], pk),
        "avg_pool2d_backward": (lambda g, **k: F.avg_pool2d_backward(g, x.shape, **k), [ga], pk),
        "max_pool2d_dilated_ceil": (lambda a, **k: F.max_pool2d(a, return_indices=True, **k),
                                    [xp], mk),
        "avg_pool2d_ceil_exclude_pad": (F.avg_pool2d, [x], ak),
        "avg_pool2d_backward_ceil_exclude_pad":
            (lambda g, **k: F.avg_pool2d_backward(g, x.shape, **k), [gak], ak),
        "avg_pool2d_divisor": (F.avg_pool2d, [x], dict(pk, divisor_override=5)),
        "adaptive_avg_pool2d": (F.adaptive_avg_pool2d, [x], {"output_size": (3, 4)}),
        "adaptive_avg_pool2d_global": (F.adaptive_avg_pool2d, [x], {"output_size": 1}),
        "adaptive_avg_pool2d_backward":
            (lambda g: F.adaptive_avg_pool2d_backward(g, x.shape), [gad], {}),
        "adaptive_max_pool2d":
            (lambda a: F.adaptive_max_pool2d(a, (3, 4), return_indices=True), [xp], {}),
        "adaptive_max_pool2d_backward":
            (lambda g: F.adaptive_max_pool2d_backward(g, ida, xp.shape), [gad], {}),
        "max_unpool2d": (lambda a: F.max_unpool2d(a, idu, 2, output_size=(7, 7)), [yu], {}),
        "max_unpool2d_backward": (lambda g: F.max_unpool2d_backward(g, idu), [gu], {}),
        "max_pool1d": (lambda a, **k: F.max_pool1d(a, return_indices=True, **k), [x1], k1),
        "max_pool1d_backward": (lambda g: F.max_pool1d_backward(g, id1, x1.shape), [gp1], {}),
        "avg_pool1d": (F.avg_pool1d, [x1], k1),
        "avg_pool1d_backward": (lambda g, **k: F.avg_pool1d_backward(g, x1.shape, **k), [gp1],
                                k1),
        "relu_backward": (F.relu_backward, [go, go[::-1]], {}),
        "leaky_relu": (F.leaky_relu, [x], {"negative_slope": 0.3}),
        "sigmoid_backward": (F.sigmoid_backward, [ga, ga * 0.1], {}),
        "softmax_backward": (F.softmax_backward, [z, np.abs(z)], {"axis": 0}),
        "log_softmax": (F.log_softmax, [x], {"axis": 1}),
        "softmax_cross_entropy": (lambda a: F.softmax_cross_entropy(a, labels), [z], {}),
    }


CALL_NAMES = sorted(_calls(np.random.default_rng(0)))


def _flatten(result):
    """Tuple of ndarrays/floats from any function's result (None dropped)."""
    if isinstance(result, tuple):
        return tuple(r for r in result if r is not None)
    return (result,)


def _assert_results_equal(a, b):
    a, b = _flatten(a), _flatten(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, float):
            assert u == v
        else:
            assert u.dtype == v.dtype and u.shape == v.shape
            np.testing.assert_array_equal(u, v)


def _transposed(a):
    """Same values, non-contiguous: a transposed copy transposed back."""
    axes = tuple(range(a.ndim))[::-1]
    return np.ascontiguousarray(a.transpose(axes)).transpose(axes)


def _sliced(a):
    """Same values, non-contiguous: every other element of a bigger array."""
    big = np.zeros(tuple(2 * s + 1 for s in a.shape), dtype=a.dtype)
    view = big[tuple(slice(1, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


LAYOUTS = {
    "transposed": _transposed,
    "sliced": _sliced,
    "fortran": np.asfortranarray,
    "readonly": _readonly,
    "negative_strides": lambda a: np.ascontiguousarray(a[..., ::-1])[..., ::-1],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CALL_NAMES)
def test_memory_layout_does_not_change_result_and_inputs_unmodified(name, dtype, layout):
    fn, arrays, kw = _calls(np.random.default_rng(1))[name]
    arrays = [a.astype(dtype) for a in arrays]
    want = fn(*arrays, **kw)
    laid = [LAYOUTS[layout](a) for a in arrays]
    for a, arr in zip(arrays, laid):
        np.testing.assert_array_equal(a, arr)
        if layout != "readonly" and a.ndim > 1:
            assert not arr.flags.c_contiguous
    copies = [arr.copy() for arr in laid]
    got = fn(*laid, **kw)
    _assert_results_equal(got, want)
    for arr, c in zip(laid, copies):
        np.testing.assert_array_equal(arr, c)  # inputs never modified
    # results never alias an input
    for r in _flatten(got):
        if isinstance(r, np.ndarray):
            assert not any(np.shares_memory(r, arr) for arr in laid)


@pytest.mark.parametrize("name", CALL_NAMES)
def test_results_are_writeable_even_for_read_only_inputs(name):
    fn, arrays, kw = _calls(np.random.default_rng(2))[name]
    arrays = [_readonly(a) for a in arrays]
    for r in _flatten(fn(*arrays, **kw)):
        if isinstance(r, np.ndarray):
            assert r.flags.writeable


MULTI_ARRAY_CALLS = [n for n in CALL_NAMES if len(_calls(np.random.default_rng(0))[n][1]) >= 2]


def _small_ints(arrays, nonnegative=False):
    """Small integers, exact in every dtype involved: a promoted computation
    must then equal the same computation on float inputs bit for bit."""
    out = [np.round(np.clip(a * 2, -6, 6)) for a in arrays]
    return [np.abs(a) for a in out] if nonnegative else out


@pytest.mark.parametrize(
    "in_dtype,want",
    [(np.int64, np.float64), (np.int32, np.float64), (np.uint8, np.float32),
     (np.int8, np.float32), (np.float16, np.float32)],
    ids=lambda v: np.dtype(v).name,
)
@pytest.mark.parametrize("name", CALL_NAMES)
def test_dtype_promotion(name, in_dtype, want):
    fn, arrays, kw = _calls(np.random.default_rng(3))[name]
    ints = _small_ints(arrays, nonnegative=in_dtype == np.uint8)
    got = fn(*[a.astype(in_dtype) for a in ints], **kw)
    ref = fn(*[a.astype(want) for a in ints], **kw)
    for r in _flatten(got):
        if isinstance(r, np.ndarray) and r.dtype.kind == "f":
            assert r.dtype == want, (name, in_dtype, r.dtype)
    _assert_results_equal(got, ref)


@pytest.mark.parametrize(
    "first,rest,want",
    [(np.float32, np.float64, np.float64), (np.float64, np.float32, np.float64),
     (np.uint8, np.float32, np.float32), (np.int64, np.float32, np.float64),
     (np.float32, np.int16, np.float32)],
    ids=lambda v: np.dtype(v).name,
)
@pytest.mark.parametrize("name", MULTI_ARRAY_CALLS)
def test_mixed_dtype_promotion(name, first, rest, want):
    fn, arrays, kw = _calls(np.random.default_rng(3))[name]
    ints = _small_ints(arrays, nonnegative=True)
    got = fn(ints[0].astype(first), *[a.astype(rest) for a in ints[1:]], **kw)
    ref = fn(*[a.astype(want) for a in ints], **kw)
    for r in _flatten(got):
        if isinstance(r, np.ndarray) and r.dtype.kind == "f":
            assert r.dtype == want, (name, first, rest, r.dtype)
    _assert_results_equal(got, ref)


def test_python_lists_are_float64():
    assert F.relu([[-1.0, 2.0]]).dtype == np.float64
    assert F.conv2d([[[[1, 2], [3, 4]]]], [[[[1]]]]).dtype == np.float64
    y = F.max_pool2d(np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4), 2)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])


# --------------------------------------------------------------------------
# batch shapes: empty batch, unbatched 3-D input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype, backend):
    x = np.zeros((0, 2, 7, 6), dtype=dtype)
    w = np.ones((4, 2, 2, 3), dtype=dtype)
    b = np.arange(4, dtype=dtype)
    with cnnext.use_backend(backend):
        y = F.conv2d(x, w, b, stride=2, padding=1)
        assert y.shape == (0, 4, 4, 3) and y.dtype == dtype
        go = np.zeros(y.shape, dtype=dtype)
        gx, gw, gb = F.conv2d_backward(go, x, w, stride=2, padding=1)
        assert gx.shape == x.shape and gx.dtype == dtype
        np.testing.assert_array_equal(gw, np.zeros(w.shape))
        assert gw.dtype == dtype
        np.testing.assert_array_equal(gb, np.zeros(4))
        assert gb.dtype == dtype
        assert F.conv2d_backward(go, x, w, stride=2, padding=1, bias=False)[2] is None
        t = F.conv_transpose2d(x, w.transpose(1, 0, 2, 3), b, stride=2)
        assert t.shape == (0, 4, 14, 13) and t.dtype == dtype
        fc = F.full_conv2d(np.zeros((0, 4, 3, 3), dtype=dtype), w)
        assert fc.shape == (0, 2, 4, 5) and fc.dtype == dtype
        mp, idx = F.max_pool2d(x, 2, return_indices=True)
        assert mp.shape == idx.shape == (0, 2, 3, 3) and idx.dtype == np.int64
        gmp = F.max_pool2d_backward(np.zeros(mp.shape, dtype), idx, x.shape)
        assert gmp.shape == x.shape and gmp.dtype == dtype
        ap = F.avg_pool2d(x, 3, stride=2, padding=1)
        assert ap.shape == (0, 2, 4, 3) and ap.dtype == dtype
        gap = F.avg_pool2d_backward(ap, x.shape, 3, stride=2, padding=1)
        assert gap.shape == x.shape and gap.dtype == dtype
        mc, ic = F.max_pool2d(x, 3, 2, 1, 2, True, True)
        assert mc.shape == ic.shape == (0, 2, 3, 3) and mc.dtype == dtype
        assert F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False).shape == (0, 2, 4, 3)
        for o, want in ((1, (1, 1)), ((None, 2), (7, 2))):
            a = F.adaptive_avg_pool2d(x, o)
            assert a.shape == (0, 2) + want and a.dtype == dtype
            m, i = F.adaptive_max_pool2d(x, o, True)
            assert m.shape == i.shape == a.shape
            assert F.adaptive_avg_pool2d_backward(a, x.shape).shape == x.shape
            assert F.adaptive_max_pool2d_backward(m, i, x.shape).shape == x.shape
        u = F.max_unpool2d(mp, idx, 2, output_size=(7, 6))
        assert u.shape == x.shape and u.dtype == dtype
        assert F.max_unpool2d_backward(u, idx).shape == mp.shape
        x1 = np.zeros((0, 2, 9), dtype)
        m1, i1 = F.max_pool1d(x1, 2, ceil_mode=True, return_indices=True)
        assert m1.shape == (0, 2, 5) and F.max_pool1d_backward(m1, i1, x1.shape).shape == x1.shape
        a1 = F.avg_pool1d(x1, 2)
        assert a1.shape == (0, 2, 4) and F.avg_pool1d_backward(a1, x1.shape, 2).shape == x1.shape
        loss, g = F.softmax_cross_entropy(np.zeros((0, 5), dtype), np.zeros(0, dtype=int))
        assert loss == 0.0 and g.shape == (0, 5) and g.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_3d_input(dtype, rng):
    g = Conv(1, 3, 2, 7, 6, (2, 3), (2, 1), (1, 1), (1, 2))
    x, w, b = conv_arrays(g, dtype, rng)
    kw = conv_kwargs(g)
    y = F.conv2d(x[0], w, b, **kw)
    assert y.ndim == 3
    np.testing.assert_array_equal(y, F.conv2d(x, w, b, **kw)[0])

    go = randn(rng, conv_out_shape(g), dtype)
    gx3, gw3, gb3 = F.conv2d_backward(go[0], x[0], w, **kw)
    gx4, gw4, gb4 = F.conv2d_backward(go, x, w, **kw)
    assert gx3.shape == x.shape[1:]
    np.testing.assert_array_equal(gx3, gx4[0])
    np.testing.assert_array_equal(gw3, gw4)
    np.testing.assert_array_equal(gb3, gb4)

    wt = randn(rng, (3, 2, 3, 2), dtype)
    t = F.conv_transpose2d(x[0], wt, b, stride=2, output_padding=1)
    assert t.ndim == 3
    np.testing.assert_array_equal(t, F.conv_transpose2d(x, wt, b, stride=2, output_padding=1)[0])

    fc = F.full_conv2d(x[0], wt)
    np.testing.assert_array_equal(fc, F.full_conv2d(x, wt)[0])

    xp = np.round(x * 2)
    mp, idx = F.max_pool2d(xp[0], (3, 2), stride=(2, 1), padding=1, return_indices=True)
    mp4, idx4 = F.max_pool2d(xp, (3, 2), stride=(2, 1), padding=1, return_indices=True)
    assert mp.ndim == idx.ndim == 3
    np.testing.assert_array_equal(mp, mp4[0])
    np.testing.assert_array_equal(idx, idx4[0])
    gp = randn(rng, mp.shape, dtype)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(gp, idx, xp.shape[1:]),
        F.max_pool2d_backward(gp[None], idx4, xp.shape)[0],
    )
    ap = F.avg_pool2d(x[0], 3, stride=2, padding=1)
    np.testing.assert_array_equal(ap, F.avg_pool2d(x, 3, stride=2, padding=1)[0])
    np.testing.assert_array_equal(
        F.avg_pool2d_backward(ap, x.shape[1:], 3, stride=2, padding=1),
        F.avg_pool2d_backward(ap[None], x.shape, 3, stride=2, padding=1)[0],
    )


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_3d_input_new_pools(dtype, backend, rng):
    x = np.round(randn(rng, (1, 3, 7, 6), dtype) * 2)
    with cnnext.use_backend(backend):
        for call in (
            lambda a: F.max_pool2d(a, 3, 2, 1, 2, True, True),
            lambda a: F.avg_pool2d(a, 3, 2, 1, True, False, None),
            lambda a: F.adaptive_avg_pool2d(a, (3, None)),
            lambda a: F.adaptive_avg_pool2d(a, 1),
            lambda a: F.adaptive_max_pool2d(a, (4, 5), True),
        ):
            three, four = _flatten(call(x[0])), _flatten(call(x))
            for a, b in zip(three, four):
                assert a.ndim == 3
                np.testing.assert_array_equal(a, b[0])
        _, idx = F.max_pool2d(x, 2, return_indices=True)
        y = randn(rng, idx.shape, dtype)
        u3 = F.max_unpool2d(y[0], idx[0], 2, output_size=(7, 6))
        np.testing.assert_array_equal(u3, F.max_unpool2d(y, idx, 2, output_size=(7, 6))[0])
        np.testing.assert_array_equal(F.max_unpool2d_backward(u3, idx[0]),
                                      F.max_unpool2d_backward(u3[None], idx)[0])
        g = randn(rng, (1, 3, 2, 2), dtype)
        np.testing.assert_array_equal(F.adaptive_avg_pool2d_backward(g[0], x.shape[1:]),
                                      F.adaptive_avg_pool2d_backward(g, x.shape)[0])
        x1 = x[0, :, 0]  # (C, L)
        y1, i1 = F.max_pool1d(x1, 3, 2, 1, 1, True, True)
        y2, i2 = F.max_pool1d(x1[None], 3, 2, 1, 1, True, True)
        np.testing.assert_array_equal(y1, y2[0])
        np.testing.assert_array_equal(F.max_pool1d_backward(y1, i1, x1.shape),
                                      F.max_pool1d_backward(y2, i2, x1[None].shape)[0])
        a1 = F.avg_pool1d(x1, 2, ceil_mode=True)
        np.testing.assert_array_equal(a1, F.avg_pool1d(x1[None], 2, ceil_mode=True)[0])
        np.testing.assert_array_equal(F.avg_pool1d_backward(a1, x1.shape, 2, ceil_mode=True),
                                      F.avg_pool1d_backward(a1[None], (1,) + x1.shape, 2,
                                                            ceil_mode=True)[0])


def test_int_and_pair_arguments_agree(rng):
    x = rng.standard_normal((2, 2, 7, 7))
    w = rng.standard_normal((3, 2, 3, 3))
    a = F.conv2d(x, w, stride=2, padding=1, dilation=2)
    np.testing.assert_array_equal(a, F.conv2d(x, w, stride=(2, 2), padding=[1, 1], dilation=(2, 2)))
    np.testing.assert_array_equal(
        a, F.conv2d(x, w, stride=np.int64(2), padding=np.array([1, 1]), dilation=np.int32(2))
    )
    np.testing.assert_array_equal(F.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, (3, 3), (2, 2), (1, 1)))


# --------------------------------------------------------------------------
# backend switch
# --------------------------------------------------------------------------


def _float32_conv(rng):
    x = rng.standard_normal((2, 8, 14, 14)).astype(np.float32)
    w = rng.standard_normal((6, 8, 5, 5)).astype(np.float32)
    return x, w


@pytest.fixture
def restore_backend():
    old = cnnext.get_backend()
    yield
    cnnext.set_backend(old)


@pytest.fixture
def reference_calls(monkeypatch):
    """The threads that called ``cnnext.reference.conv2d``, in call order.

    The numpy backend *is* :mod:`cnnext.reference`; the compiled backend
    never calls it.  Recording the calls shows which implementation ran,
    whatever the two results are.
    """
    calls = []
    real = R.conv2d

    def spy(*args, **kwargs):
        calls.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "conv2d", spy)
    return calls


def test_set_backend_switches_implementation(rng, close, restore_backend, reference_calls):
    x, w = _float32_conv(rng)

    assert cnnext.get_backend() == "cython"
    fast = F.conv2d(x, w, padding=1)
    assert reference_calls == []  # the compiled kernels ran
    cnnext.set_backend("numpy")
    assert cnnext.get_backend() == "numpy"
    slow = F.conv2d(x, w, padding=1)
    assert len(reference_calls) == 1  # cnnext.reference ran
    cnnext.set_backend("cython")
    fast_again = F.conv2d(x, w, padding=1)
    assert len(reference_calls) == 1

    oracle = R.conv2d(x, w, padding=1)  # float32 result, float64 accumulation
    np.testing.assert_array_equal(slow, oracle)  # numpy backend *is* the reference
    close(fast, oracle, np.float32)
    np.testing.assert_array_equal(fast_again, fast)


def test_use_backend_is_scoped_and_restores(rng, close, reference_calls):
    x, w = _float32_conv(rng)
    with cnnext.use_backend("numpy"):
        assert cnnext.get_backend() == "numpy"
        slow = F.conv2d(x, w)
        assert len(reference_calls) == 1
        with cnnext.use_backend("cython"):
            assert cnnext.get_backend() == "cython"
            inner = F.conv2d(x, w)
        assert len(reference_calls) == 1  # the inner call ran the compiled kernels
        assert cnnext.get_backend() == "numpy"
    assert cnnext.get_backend() == "cython"
    oracle = R.conv2d(x, w)
    np.testing.assert_array_equal(slow, oracle)
    close(inner, oracle, np.float32)
    # restored even when the block raises
    with pytest.raises(RuntimeError, match="boom"):
        with cnnext.use_backend("numpy"):
            raise RuntimeError("boom")
    assert cnnext.get_backend() == "cython"


def test_use_backend_is_thread_local(rng, close, reference_calls):
    x, w = _float32_conv(rng)
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def worker():
        with cnnext.use_backend("numpy"):
            seen["worker"] = cnnext.get_backend()
            seen["worker_id"] = threading.get_ident()
            seen["worker_y"] = F.conv2d(x, w)
            inside.set()
            release.wait(30)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert inside.wait(30)
        # The worker is inside use_backend("numpy") right now.
        seen["main"] = cnnext.get_backend()
        seen["main_y"] = F.conv2d(x, w)
    finally:
        release.set()
        t.join(30)
    assert seen["worker"] == "numpy" and seen["main"] == "cython"
    # Only the worker's call went to cnnext.reference; the main thread's did not.
    assert reference_calls == [seen["worker_id"]]
    oracle = R.conv2d(x, w)
    np.testing.assert_array_equal(seen["worker_y"], oracle)
    close(seen["main_y"], oracle, np.float32)

    # A thread started inside use_backend does not inherit the override.
    child = {}
    with cnnext.use_backend("numpy"):
        th = threading.Thread(target=lambda: child.setdefault("b", cnnext.get_backend()))
        th.start()
        th.join(30)
    assert child["b"] == "cython"


def test_set_backend_is_the_default_for_other_threads(restore_backend):
    cnnext.set_backend("numpy")
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("b", cnnext.get_backend()))
    th.start()
    th.join(30)
    assert out["b"] == "numpy"


@pytest.mark.parametrize("name", CALL_NAMES)
def test_every_function_agrees_across_backends(name, close):
    fn, arrays, kw = _calls(np.random.default_rng(4))[name]
    got = _flatten(fn(*arrays, **kw))
    with cnnext.use_backend("numpy"):
        want = _flatten(fn(*arrays, **kw))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if isinstance(a, float):
            assert a == pytest.approx(b, rel=1e-12)
        elif a.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b)
        else:
            assert a.dtype == b.dtype
            close(a, b, np.float64)


# --------------------------------------------------------------------------
# threads and kernel blocking
# --------------------------------------------------------------------------


def pool_threads_input(rng):
    """Small integers (ties) with a NaN corner, float32, (4, 5, 17, 13)."""
    x = np.round(rng.standard_normal((4, 5, 17, 13)) * 2).astype(np.float32)
    x[0, 0, :3, :3] = np.nan
    return x


def assert_same_at_1_and_2_threads(run):
    """``run()`` returns the same arrays, bit for bit, at one and two threads."""
    results = []
    for n in (1, 2):
        cnnext.set_num_threads(n)
        assert cnnext.get_num_threads() in (n, 1)
        results.append(run())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_pooling_bitwise_independent_of_thread_count(rng, restore_threads):
    x = pool_threads_input(rng)

    def run():
        y, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
        g = np.linspace(-1, 1, y.size, dtype=np.float32).reshape(y.shape)[..., ::-1]
        return (y, idx, F.max_pool2d_backward(g, idx, x.shape),
                F.avg_pool2d(x, (2, 3), stride=1, padding=1),
                F.avg_pool2d_backward(g, x.shape, 3, stride=2, padding=1))

    assert_same_at_1_and_2_threads(run)


def test_conv_close_across_thread_counts(rng, close, restore_threads):
    g = Conv(5, 3, 4, 12, 11, (3, 2), (1, 2), (1, 1), (2, 1))
    x, w, b = conv_arrays(g, np.float32, rng)
    go = randn(rng, conv_out_shape(g), np.float32)
    res = []
    for n in (1, 2):
        cnnext.set_num_threads(n)
        res.append(
            (F.conv2d(x, w, b, **conv_kwargs(g)),)
            + F.conv2d_backward(go, x, w, **conv_kwargs(g))
            + (F.conv_transpose2d(x, w.transpose(1, 0, 2, 3), stride=2),
               F.full_conv2d(go, w))
        )
    for a, c in zip(*res):
        close(a, c, np.float32)


# Geometries that straddle the kernels' blocking: the reduction depth
# K = C*kH*kW or the number of output positions P just above the KC = 256
# panel depth, C_out not a multiple of the MR rows of a micro-tile, P not a
# multiple of its NR columns, and (stride > 1, input-gradient path) more
# positions than fit one col2im block of 2**16 elements.  Each is run at
# stride 1 (the specialised path) and stride 2, on 1 and 2 threads.
BLOCK_CASES = [
    ("K=261>KC", Conv(3, 29, 9, 9, 10, (3, 3), (1, 1), (1, 1), (1, 1))),
    ("K=261>KC-s2", Conv(3, 29, 9, 9, 10, (3, 3), (2, 2), (1, 1), (1, 1))),
    ("K=512=2KC", Conv(2, 32, 3, 6, 5, (4, 4), (1, 1), (2, 1), (1, 1))),
    ("P=270>KC", Conv(3, 2, 3, 19, 17, (2, 3), (1, 1), (0, 0), (1, 1))),
    ("P>KC-pad-dil", Conv(2, 3, 17, 17, 19, (3, 2), (1, 1), (2, 1), (2, 3))),
    ("P>KC-s2", Conv(2, 2, 5, 37, 35, (3, 3), (2, 2), (1, 1), (1, 1))),
    ("col2im-blocks-s2", Conv(2, 16, 5, 48, 47, (3, 3), (2, 2), (1, 1), (1, 1))),
    ("Co=17-odd-all", Conv(3, 7, 17, 13, 11, (5, 3), (1, 2), (2, 1), (1, 1))),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", [c[1] for c in BLOCK_CASES], ids=[c[0] for c in BLOCK_CASES])
def test_block_boundaries(g, dtype, threads, rng, close, restore_threads):
    cnnext.set_num_threads(threads)
    check_conv2d(g, dtype, rng, close)
    check_conv2d_backward(g, dtype, rng, close)
    op = tuple(max(s, d) - 1 for s, d in zip(g.s, g.d))
    check_conv_transpose2d(g, dtype, rng, close, op=op)


_ISA_SCRIPT = """
import json, sys
import numpy as np
import cnnext
from cnnext import _gemm, functional as F, reference as R

print(_gemm.isa())
geoms, tols = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rng = np.random.default_rng(0)
worst = 0.0
for n, cin, cout, h, w, k, s, p, d in geoms:
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((n, cin, h, w)).astype(dt)
        wt = rng.standard_normal((cout, cin, *k)).astype(dt)
        b = rng.standard_normal(cout).astype(dt)
        kw = dict(stride=s, padding=p, dilation=d)
        y = F.conv2d(x, wt, b, **kw)
        go = rng.standard_normal(y.shape).astype(dt)
        f = [np.float64(a) if a.ndim == 0 else a.astype(np.float64) for a in (x, wt, b, go)]
        pairs = [(y, R.conv2d(f[0], f[1], f[2], **kw))]
        pairs += list(zip(F.conv2d_backward(go, x, wt, **kw),
                          R.conv2d_backward(f[3], f[0], f[1], **kw)))
        pairs.append((F.full_conv2d(go, wt), R.full_conv2d(f[3], f[1])))
        pairs.append((F.conv_transpose2d(go, wt, **kw), R.conv_transpose2d(f[3], f[1], **kw)))
        t = tols[np.dtype(dt).name]
        for got, want in pairs:
            scale = max(1.0, float(np.abs(want).max()))
            err = np.abs(got - want) - t["rtol"] * np.abs(want)
            worst = max(worst, float((err / (t["atol"] * scale)).max()))
print(worst)
"""


def _isa_rank(name):
    return ["generic", "avx2", "avx512"].index(name)


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_microkernel_variant(isa, tmp_path, tolerances):
    """CNNEXT_ISA selects each micro-kernel variant the CPU supports.

    Only one variant runs in the main test process (the best the CPU has);
    this runs the conv functions under each one in a subprocess.
    """
    from cnnext import _gemm

    native = _gemm.isa()
    if native not in ("generic", "avx2", "avx512"):
        pytest.fail(f"unknown micro-kernel variant {native!r}")
    if _isa_rank(isa) > _isa_rank(native):
        pytest.skip(f"this CPU runs {native}, not {isa}")
    geoms = [list(g) for g in CASE_GEOMS[:4] + [c[1] for c in BLOCK_CASES[:5]]]
    tols = {np.dtype(t).name: v for t, v in tolerances.items()}
    env = dict(os.environ, CNNEXT_ISA=isa)
    proc = subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT, json.dumps(geoms), json.dumps(tols)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    name, worst = proc.stdout.split()
    assert name == isa
    # worst = largest (|err| - rtol*|want|) / (atol*scale); <= 0 is within rtol
    assert float(worst) <= 1.0, f"{isa}: error {worst} x the allowed tolerance"


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("co", [1, 3, 5, 6, 7, 9, 12, 13, 20])
def test_conv2d_panel_rows_do_not_change_sums(dt, co, close):
    """Few or odd output channels run panels of fewer rows (no FMAs on empty
    rows); each channel's sum is the same as in a full panel: bit for bit the
    first channels of a 24-channel convolution with the same leading filters,
    and close to the reference."""
    rng = np.random.default_rng(co)
    x = rng.standard_normal((2, 4, 13, 11)).astype(dt)
    w = rng.standard_normal((24, 4, 3, 2)).astype(dt)
    b = rng.standard_normal(24).astype(dt)
    for s, p in (((1, 1), (1, 0)), ((2, 2), (0, 1))):
        full = F.conv2d(x, w, b, s, p)
        part = F.conv2d(x, w[:co], b[:co], s, p)
        np.testing.assert_array_equal(part, full[:, :co])
        close(part, R.conv2d(*f64(x, w[:co], b[:co]), s, p), dt)
        # a transposed convolution (the input-gradient kernels) of co channels
        full = F.conv_transpose2d(x, w.reshape(4, 24, 3, 2), None, s, p)
        part = F.conv_transpose2d(x, w.reshape(4, 24, 3, 2)[:, :co], None, s, p)
        np.testing.assert_array_equal(part, full[:, :co])
        close(part, R.conv_transpose2d(*f64(x, w.reshape(4, 24, 3, 2)[:, :co]), None, s, p),
              dt)


def test_realistic_layer(rng, close):
    """A typical second CNN layer (32->64 channels, 3x3, 14x14 maps, batch 64).

    Sizes no blocking scheme divides evenly; this shape once exposed a
    ragged-last-chunk bug (wrong GEMM leading dimension) in the im2col
    kernels that tiny test shapes never reached.
    """
    x = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((64, 32, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    x64, w64, b64 = f64(x, w, b)
    y = F.conv2d(x, w, b, padding=1)
    close(y, R.conv2d(x64, w64, b64, padding=1), np.float32, err_msg="conv2d")
    go = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = F.conv2d_backward(go, x, w, padding=1)
    rx, rw, rb = R.conv2d_backward(*f64(go), x64, w64, padding=1)
    close(gx, rx, np.float32, err_msg="grad_x")
    close(gw, rw, np.float32, err_msg="grad_weight")
    close(gb, rb, np.float32, err_msg="grad_bias")


# --------------------------------------------------------------------------
# linear (dense) on the GEMM micro-kernels
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n,i,o", [(1, 1, 1), (3, 5, 7), (64, 400, 120), (7, 33, 65), (0, 4, 3), (5, 0, 3), (9, 13, 0)]
)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(dtype, n, i, o, bias, rng, close):
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    g = rng.standard_normal((n, o)).astype(dtype)
    copies = [a.copy() for a in (x, w, g)]
    y = F.linear(x, w, b)
    assert y.dtype == dtype and y.shape == (n, o)
    close(y, R.linear(x, w, b), dtype)
    got = F.linear_backward(g, x, w, bias=bias)
    want = R.linear_backward(g, x, w, bias=bias)
    for a, r in zip(got[:2], want[:2]):
        assert a.dtype == dtype
        close(a, r, dtype)
    if bias:
        close(got[2], want[2], dtype)
    else:
        assert got[2] is None
    for a, c in zip((x, w, g), copies):
        np.testing.assert_array_equal(a, c)


def test_linear_threads_and_layouts(rng, close):
    x = np.asfortranarray(rng.standard_normal((200, 300)))
    w = rng.standard_normal((70, 300))[:, ::1]
    old = cnnext.get_num_threads()
    try:
        cnnext.set_num_threads(1)
        y1 = F.linear(x, w)
        cnnext.set_num_threads(2)
        y2 = F.linear(x, w)
    finally:
        cnnext.set_num_threads(old)
    close(y1, R.linear(x, w), np.float64)
    close(y2, y1, np.float64)


def test_linear_validation():
    msg = r"linear: x.shape\[1\] \(3\) must equal weight.shape\[1\] \(4\)"
    with pytest.raises(ValueError, match=msg):
        F.linear(np.ones((2, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="linear: x must be 2-D"):
        F.linear(np.ones(3), np.ones((5, 3)))
    with pytest.raises(ValueError, match="linear: bias must have shape"):
        F.linear(np.ones((2, 3)), np.ones((5, 3)), np.ones(4))
    with pytest.raises(ValueError, match="linear_backward: grad_out.shape"):
        F.linear_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((5, 3)))
    with pytest.raises(TypeError, match="linear: .*complex"):
        F.linear(np.ones((2, 3), dtype=complex), np.ones((5, 3)))


# --------------------------------------------------------------------------
# bounded kernel scratch: a batch of 512 CIFAR images needs no more scratch
# than a small batch
# --------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
def test_kernel_scratch_does_not_grow_with_the_batch(stride):
    from cnnext import _gemm

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 3, 3, 3)).astype(np.float32)
    seen = {}
    # Both batches are large enough to run on every thread (scratch is per
    # thread), so only the batch size differs.
    for n in (32, 512):
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        _gemm.scratch_high_water(reset=True)
        y = F.conv2d(x, w, stride=stride, padding=1)
        g = rng.standard_normal(y.shape).astype(np.float32)
        F.conv2d_backward(g, x, w, stride=stride, padding=1)
        seen[n] = _gemm.scratch_high_water(reset=True)
    assert 0 < seen[512] <= seen[32] * 1.01 + 4096, seen
    # The documented bound: a few MiB at most for this layer.
    assert seen[512] < 4 * 2**20, seen


# --------------------------------------------------------------------------
# padding too large to materialise: the padding-free gather path
# --------------------------------------------------------------------------


@pytest.mark.parametrize("geom", [((2, 1), (1, 2), (1, 2)), ((1, 1), (0, 0), (1, 1)),
                                  ((3, 2), (2, 1), (2, 1))])
def test_gather_path_matches_kernels(geom, rng):
    """The gather path (taken when the padded sample cannot be allocated)
    computes the same conv2d and conv2d_backward as the kernels."""
    import dataclasses

    from cnnext import _plan

    x = rng.standard_normal((3, 2, 9, 8))
    w = rng.standard_normal((4, 2, 3, 2))
    b = rng.standard_normal(4)
    y = F.conv2d(x, w, b, *geom)
    g = rng.standard_normal(y.shape)
    want = F.conv2d_backward(g, x, w, *geom)
    plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, b.shape, x.dtype,
                             *[(v, v) if isinstance(v, int) else v for v in geom])
    assert plan.method == "direct"
    gather = dataclasses.replace(plan, method="gather", grad_input="gather")
    np.testing.assert_allclose(gather.forward(x, w, b), y, rtol=1e-12, atol=1e-12)
    for got, ref in zip(gather.backward(g, x, w, True), want):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_padding_near_2_31_gives_the_right_answer(backend):
    """Stride and padding 2**31 - 1 on a 1x1 image: three windows per axis,
    only the middle one touches the input (PyTorch's answer)."""
    x = np.ones((1, 1, 1, 1))
    w = np.full((1, 1, 1, 1), 2.0)
    with cnnext.use_backend(backend):
        y = F.conv2d(x, w, stride=2**31 - 1, padding=2**31 - 1)
        gx, gw, gb = F.conv2d_backward(np.ones_like(y), x, w, stride=2**31 - 1,
                                       padding=2**31 - 1)
    want = np.zeros((1, 1, 3, 3))
    want[0, 0, 1, 1] = 2.0
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(gx, [[[[2.0]]]])
    np.testing.assert_array_equal(gw, [[[[1.0]]]])
    np.testing.assert_array_equal(gb, [9.0])


def test_empty_operands_never_touch_kernel_pointers():
    """Regression (found by the bounds-checked debug build): an empty
    reduction in linear and an empty image with padding in conv2d used to
    form a pointer to element [0, 0] of an empty operand."""
    y = F.linear(np.ones((3, 0)), np.ones((2, 0)), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(y, [[1.0, 2.0]] * 3)
    gx, gw, gb = F.linear_backward(np.ones((3, 2)), np.ones((3, 0)), np.ones((2, 0)))
    assert gx.shape == (3, 0) and gw.shape == (2, 0)
    np.testing.assert_array_equal(gb, [3.0, 3.0])
    x, w = np.zeros((1, 1, 0, 1)), np.ones((1, 1, 2, 1))
    y = F.conv2d(x, w, np.array([0.5]), padding=(1, 0))
    np.testing.assert_array_equal(y, np.full((1, 1, 1, 1), 0.5))
    gx, gw, gb = F.conv2d_backward(np.ones_like(y), x, w, padding=(1, 0))
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, [1.0])


# --------------------------------------------------------------------------
# batch normalization
# --------------------------------------------------------------------------

# Short rows are visited in memory order, long ones channel by channel
# (2 KiB rows and longer: (2, 3, 23, 29) in both dtypes, (3, 2, 16, 17) in
# float64 only).
BN_SHAPES = [(5, 3), (1, 4, 7), (4, 3, 7), (2, 3, 5, 6), (1, 1, 3, 5), (3, 7, 1, 1),
             (2, 5, 13, 11), (4, 3, 9, 17), (2, 3, 23, 29), (3, 2, 16, 17)]


def bn_arrays(rng, shape, dtype):
    C = shape[1]
    x = (randn(rng, shape, dtype) * 3 + 2).astype(dtype)
    w, b, rm = (randn(rng, (C,), dtype) for _ in range(3))
    rv = (rng.random(C) + 0.5).astype(dtype)
    return x, w, b, rm, rv


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_vs_reference(shape, dtype, training, affine, rng, close):
    x, w, b, rm, rv = bn_arrays(rng, shape, dtype)
    if not affine:
        w = b = None
    g = randn(rng, shape, dtype)
    rm1, rv1, rm2, rv2 = rm.copy(), rv.copy(), rm.astype(np.float64), rv.astype(np.float64)
    x64, w64, b64 = f64(x)[0], None if w is None else f64(w)[0], None if b is None else f64(b)[0]
    y = F.batch_norm(x, rm1, rv1, w, b, training=training, momentum=0.3, eps=1e-3)
    want = R.batch_norm(x64, rm2, rv2, w64, b64, training=training, momentum=0.3, eps=1e-3)
    assert y.dtype == dtype and y.shape == shape
    close(y, want)
    close(rm1, rm2)
    close(rv1, rv2)
    if not training:
        assert (rm1 == rm).all() and (rv1 == rv).all()
    gx, gw, gb = F.batch_norm_backward(g, x, rm, rv, w, training=training, eps=1e-3)
    wx, ww, wb = R.batch_norm_backward(f64(g)[0], x64, f64(rm)[0], f64(rv)[0], w64,
                                       training=training, eps=1e-3)
    close(gx, wx)
    if affine:
        assert gw.dtype == dtype and gb.dtype == dtype
        close(gw, ww)
        close(gb, wb)
    else:
        assert gw is None and gb is None


@pytest.mark.parametrize("layout", ["noncontiguous", "fortran", "readonly"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_layouts_and_inputs_untouched(layout, dtype, rng, close):
    x, w, b, rm, rv = bn_arrays(rng, (3, 4, 6, 5), dtype)
    g = randn(rng, x.shape, dtype)
    if layout == "noncontiguous":
        x2, g2 = np.repeat(x, 2, axis=3)[..., ::2], np.repeat(g, 2, axis=3)[..., ::2]
        w2 = np.repeat(w, 2)[::2]
    elif layout == "fortran":
        x2, g2, w2 = np.asfortranarray(x), np.asfortranarray(g), w.copy()
    else:
        x2, g2, w2 = x.copy(), g.copy(), w.copy()
        for a in (x2, g2, w2):
            a.flags.writeable = False
    keep = [a.copy() for a in (x2, g2, w2, b)]
    for training in (True, False):
        rm1, rv1, rm2, rv2 = rm.copy(), rv.copy(), rm.copy(), rv.copy()
        close(F.batch_norm(x2, rm1, rv1, w2, b, training=training),
              F.batch_norm(x, rm2, rv2, w, b, training=training))
        close(rm1, rm2)
        for got, want in zip(F.batch_norm_backward(g2, x2, rm, rv, w2, training=training),
                             F.batch_norm_backward(g, x, rm, rv, w, training=training)):
            close(got, want)
    for a, k in zip((x2, g2, w2, b), keep):
        assert (a == k).all()


def test_batch_norm_running_stats_strided_and_untouched_in_eval(rng, close):
    x, w, b, _, _ = bn_arrays(rng, (4, 3, 5), np.float64)
    buf = np.zeros(6)
    rm = buf[::2]  # a non-contiguous running_mean is updated through its view
    rv = np.ones(3)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0)
    close(buf[::2], x.mean(axis=(0, 2)))
    assert (buf[1::2] == 0).all()
    close(rv, x.var(axis=(0, 2), ddof=1))


@pytest.mark.parametrize("shape", [(8, 2, 50), (400, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_large_mean_is_accurate(dtype, shape, close):
    # Two-pass float64 statistics: no cancellation for a mean 1e4 times the spread.
    rng = np.random.default_rng(1)
    x = (1e4 + rng.standard_normal(shape)).astype(dtype)
    axes = (0,) + tuple(range(2, len(shape)))
    rm, rv = np.zeros(2, dtype), np.ones(2, dtype)
    y = F.batch_norm(x, rm, rv, training=True, momentum=1.0)
    x64 = x.astype(np.float64)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(rv, x64.var(axis=axes, ddof=1), rtol=rtol)
    mean, var = x64.mean(axis=axes, keepdims=True), x64.var(axis=axes, keepdims=True)
    want = (x64 - mean) / np.sqrt(var + 1e-5)
    # (x - mean) in float64: nothing lost to the mean (PyTorch's x*a + s form
    # loses |mean/std| * eps32 in float32)
    np.testing.assert_allclose(y, want, atol=1e-6 if dtype == np.float32 else 1e-9)


def test_batch_norm_empty_batch_keeps_running_stats():
    x = np.zeros((0, 3, 4), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = F.batch_norm(x, rm, rv, training=True)
    assert y.shape == (0, 3, 4) and (rm == 0).all() and (rv == 1).all()
    gx, gw, gb = F.batch_norm_backward(x, x, None, None, np.ones(3, np.float32), training=True)
    assert gx.shape == x.shape and (gw == 0).all() and (gb == 0).all()


@pytest.mark.parametrize("shape", [(8, 16, 33, 35), (8, 16, 7, 7), (300, 257)])
def test_batch_norm_close_across_thread_counts(shape, rng, close, restore_threads):
    x, w, b, rm, rv = bn_arrays(rng, shape, np.float32)
    g = randn(rng, x.shape, np.float32)

    def run():
        r1, v1 = rm.copy(), rv.copy()
        y = F.batch_norm(x, r1, v1, w, b, training=True)
        return (y, r1, v1) + F.batch_norm_backward(g, x, None, None, w, training=True)

    # channels are independent: the same arithmetic whatever the split
    assert_same_at_1_and_2_threads(run)


def test_batch_norm_float32_statistics_with_an_outlier_first(close):
    # float32 statistics are one pass of float64 sums shifted by the first
    # value of each channel: an outlier there must cost no accuracy.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 2, 40)).astype(np.float32)
    x[0, :, 0] = [3e4, -1e6]
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(rm, x64.mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(rv, x64.var(axis=(0, 2), ddof=1), rtol=1e-6)


_BN_ISA_SCRIPT = """
import sys
import numpy as np
from cnnext import _norm, functional as F, reference as R
rng = np.random.default_rng(0)
worst = 0.0
for shape in [(4, 3, 7), (2, 5, 13, 11), (3, 2, 1, 33)]:
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    w, b = w.astype(np.float32), b.astype(np.float32)
    for training in (True, False):
        rm, rv = np.zeros(shape[1], np.float32), np.full(shape[1], 2.0, np.float32)
        got = [F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)]
        got += F.batch_norm_backward(g, x, rm, rv, w, training=training)
        x64, g64 = x.astype(np.float64), g.astype(np.float64)
        want = [R.batch_norm(x64, rm.astype(np.float64), rv.astype(np.float64), w, b,
                             training=training)]
        want += R.batch_norm_backward(g64, x64, rm, rv, w, training=training)
        for a, e in zip(got, want):
            worst = max(worst, float(np.max(np.abs(a - e) / (1e-5 + 1e-4 * np.abs(e)))))
print(_norm.isa(), worst)
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_batch_norm_every_loop_variant(isa, tmp_path):
    """CNNEXT_ISA selects each variant of the float32 batch-norm loops."""
    from cnnext import _norm

    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(_norm.isa()):
        pytest.skip(f"this CPU runs {_norm.isa()}, not {isa}")
    env = dict(os.environ, CNNEXT_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", _BN_ISA_SCRIPT], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    name, worst = proc.stdout.split()
    assert name == isa
    assert float(worst) <= 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 3])
def test_max_pool_kernel_allocating_its_outputs_equals_the_in_place_kernel(dtype, n, rng):
    from cnnext import _pool

    x = np.round(rng.standard_normal((n, 3, 9, 8)) * 2).astype(dtype)  # ties
    args = (3, 2, 2, 2, 1, 0, 1, 2, 2)  # kernel, stride, padding, dilation, threads
    for indices in (True, False):
        y, idx = _pool.max_pool2d_forward_new(x, 5, 3, indices, *args)
        want_y, want_i = np.empty((n, 3, 5, 3), dtype), np.empty((n, 3, 5, 3), np.int64)
        _pool.max_pool2d_forward(x, want_y, want_i, *args)
        assert y.dtype == dtype and y.flags.c_contiguous and y.flags.writeable
        np.testing.assert_array_equal(y, want_y)
        if indices:
            np.testing.assert_array_equal(idx, want_i)
        else:
            assert idx is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ci,k,s,G", [(8, 4, 2, 1), (6, 2, 3, 2), (12, 3, 1, 1),
                                      (80, 4, 2, 1), (30, 3, 1, 1), (64, 3, 1, 2)])
def test_conv_transpose2d_bias_is_bitwise_sum_plus_bias(ci, k, s, G, dtype, rng):
    """The kernels add a transposed convolution's bias themselves when the
    taps of an output phase fit one block; the result is bitwise the sum
    plus the bias, as with more taps (where it is added afterwards)."""
    x = rng.standard_normal((3, ci, 7, 6)).astype(dtype)
    w = rng.standard_normal((ci, 4 // G, k, k)).astype(dtype)
    b = rng.standard_normal(w.shape[1] * G).astype(dtype)
    y = F.conv_transpose2d(x, w, b, s, 1, 0, G)
    want = F.conv_transpose2d(x, w, None, s, 1, 0, G) + b[:, None, None]
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Co,C,k,out,p", [(16, 6, (5, 5), (8, 8), (0, 0)),
                                          (300, 5, (3, 2), (6, 5), (1, 0)),
                                          (8, 3, (7, 7), (10, 10), (3, 3)),
                                          (20, 40, (1, 1), (9, 7), (0, 0))])
def test_stride1_input_gradient_phases_equal_the_rotated_full_convolution(Co, C, k, out, p,
                                                                          dtype, rng):
    """At stride 1 the plans take the one-phase kernel for the input gradient;
    it is bitwise the full convolution with the rotated kernel it replaced."""
    from cnnext import _plan

    g = rng.standard_normal((3, Co) + out).astype(dtype)
    w = rng.standard_normal((Co, C) + k).astype(dtype)
    hw = (out[0] + k[0] - 1 - 2 * p[0], out[1] + k[1] - 1 - 2 * p[1])
    args = (hw, (1, 1), p, (1, 1))
    np.testing.assert_array_equal(_plan.grad_input(g, w, *args, "phases", 1),
                                  _plan.grad_input(g, w, *args, "full-rotated", 1))


# float64 layers with many channels run panels of up to 14 rows and, when
# the packed weight outgrows L2 (over 1 MB), chunks of tiles sharing each
# reduction block of it.  Every output channel's sum is independent of the
# panel it falls in and of the tile order: the first 8 channels (8-row
# panels, tile by tile) are bitwise those of the whole layer.
WIDE_F64_CASES = [
    # n, c, co, h, w, k, s, p: padded-width tiles (9 columns in 11)
    (3, 128, 120, 7, 9, (3, 3), (1, 1), (1, 1)),
    # row tiles written in place (14 columns in 16), 19 panels of 14 rows
    (2, 128, 256, 5, 14, (3, 3), (1, 1), (1, 1)),
    # stride 2: its input gradient is 4 stride-phase passes, chunks end at each
    (2, 130, 121, 6, 7, (3, 3), (2, 2), (1, 1)),
    # 1x1: chunks of B packed (here rows back to back, computed in place),
    # odd panel heights (2 x 11 rows)
    (2, 600, 22, 5, 6, (1, 1), (1, 1), (0, 0)),
    # 1x1 row tiles of 32 columns in 31 (B packed tile by tile), one 13-row panel
    (2, 300, 13, 5, 31, (1, 1), (1, 1), (0, 0)),
    # 1x1 padded (padded-width tiles) and at stride 2 (phases), 3 x 14 rows
    (2, 200, 40, 3, 7, (1, 1), (1, 1), (1, 1)),
    (2, 100, 40, 9, 9, (1, 1), (2, 2), (0, 0)),
    # 1x1 unpadded on odd 27x27 maps: flat tiles across rows (the last one
    # partial), chunk ends off the 64-byte lines; results over 4 MB of at
    # most 128 taps stored with streaming stores: the forward (37 -> 300) and
    # the input gradient (300 <- 37)
    (3, 37, 300, 27, 27, (1, 1), (1, 1), (0, 0)),
    (3, 300, 37, 27, 27, (1, 1), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("n,c,co,h,w,k,s,p", WIDE_F64_CASES)
def test_float64_wide_panels_and_chunks_keep_every_sum(n, c, co, h, w, k, s, p, rng, close,
                                                       restore_threads):
    """Forward (with a bias), input gradient and transposed convolution of a
    wide float64 layer: bitwise the first channels computed alone and the
    same on one and two threads, close to the reference; also for a
    non-contiguous input and with the fused ReLU."""
    from cnnext import _conv
    dt = np.float64
    base = randn(rng, (n, c, h, 2 * w), dt)
    x = base[:, :, :, ::2]  # non-contiguous
    wt = randn(rng, (co, c) + k, dt)
    b = randn(rng, (co,), dt)
    kw = dict(stride=s, padding=p)
    res = []
    for threads in (1, 2):
        cnnext.set_num_threads(threads)
        y = F.conv2d(x, wt, b, **kw)
        go = randn(np.random.default_rng(1), y.shape, dt)
        gx, gw, _ = F.conv2d_backward(go, x, wt, **kw)
        yt = F.conv_transpose2d(go, wt, None, **kw)
        res.append((y, gx, yt))
        np.testing.assert_array_equal(y, F.conv2d(np.ascontiguousarray(x), wt, b, **kw))
        np.testing.assert_array_equal(y[:, :8], F.conv2d(x, wt[:8], b[:8], **kw))
        np.testing.assert_array_equal(gx[:, :8], F.conv2d_backward(go, x[:, :8], wt[:, :8],
                                                                   **kw)[0])
        np.testing.assert_array_equal(yt[:, :8], F.conv_transpose2d(go, wt[:, :8], None, **kw))
        relu = np.empty_like(y)
        _conv.conv2d_forward(np.ascontiguousarray(x), wt, b, relu, *s, *p, 1, 1, threads, 1, 1)
        np.testing.assert_array_equal(relu, np.where(y > 0, y, 0.0))
    for a1, a2 in zip(*res):
        np.testing.assert_array_equal(a1, a2)
    y, gx, yt = res[0]
    close(y, R.conv2d(x, wt, b, **kw), dt)
    want = R.conv2d_backward(go, x, wt, **kw)
    close(gx, want[0], dt)
    close(gw, want[1], dt)
    close(yt, R.conv_transpose2d(go, wt, None, **kw), dt)


# float32 1x1 layers of 3 MB and more (input plus result) copy their runs
# to packed chunks with AVX-512 (elsewhere they take the in-place path): the
# same sums in the same order, so the first 8 channels computed alone (a
# small layer, read in place) are bitwise those of the whole layer.
PACKED_1X1_F32_CASES = [
    # n, c, co, h, w, p: the forward's 4.4 MB result (37 taps) streamed
    (5, 37, 300, 27, 27, 0),
    # the input gradient's 4.4 MB result (37 taps) streamed, the forward's
    # 300 taps not
    (5, 300, 37, 27, 27, 0),
    # padded: the forward's runs packed tile by tile (padded-width tiles)
    (4, 150, 60, 40, 41, 1),
]


@pytest.mark.parametrize("n,c,co,h,w,p", PACKED_1X1_F32_CASES)
def test_float32_packed_1x1_keeps_every_sum(n, c, co, h, w, p, rng, close, restore_threads):
    """Forward (with a bias and with the fused ReLU) and input gradient of a
    large float32 1x1 layer: bitwise the first channels computed alone and
    the same on one and two threads, close to the reference; a
    non-contiguous input gives the same bits."""
    from cnnext import _conv
    dt = np.float32
    x = randn(rng, (n, c, h, 2 * w), dt)[:, :, :, ::2]
    wt = randn(rng, (co, c, 1, 1), dt)
    b = randn(rng, (co,), dt)
    go = randn(rng, (n, co, h + 2 * p, w + 2 * p), dt)
    res = []
    for threads in (1, 2):
        cnnext.set_num_threads(threads)
        y = F.conv2d(x, wt, b, padding=p)
        gx = F.conv2d_backward(go, x, wt, padding=p)[0]
        res.append((y, gx))
        np.testing.assert_array_equal(y, F.conv2d(np.ascontiguousarray(x), wt, b, padding=p))
        np.testing.assert_array_equal(y[:, :8], F.conv2d(x, wt[:8], b[:8], padding=p))
        np.testing.assert_array_equal(
            gx[:, :8], F.conv2d_backward(go, x[:, :8], wt[:, :8], padding=p)[0])
        relu = np.empty_like(y)
        _conv.conv2d_forward(np.ascontiguousarray(x), wt, b, relu, 1, 1, p, p, 1, 1, threads,
                             1, 1)
        np.testing.assert_array_equal(relu, np.where(y > 0, y, 0.0))
    for a1, a2 in zip(*res):
        np.testing.assert_array_equal(a1, a2)
    y, gx = res[0]
    close(y, R.conv2d(*f64(x, wt, b), padding=p), dt)
    close(gx, R.conv2d_backward(*f64(go, x, wt), padding=p)[0], dt)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,G,K,Co", [(1, 1, 31, 33), (2, 1, 64, 32), (3, 2, 65, 7),
                                      (2, 3, 1, 97)])
def test_transposed_weight_gradient_partials_summed_in_task_order(T, G, K, Co, dtype, rng):
    """The transposed schedule's partials (T, G, K, C_out) are summed and
    transposed in one pass, around its 32 x 32 blocks: bitwise numpy's sum
    over the tasks, transposed, on one to three threads."""
    from cnnext import _conv
    gwp = randn(rng, (T, G, K, Co), dtype)
    for threads in (1, 2, 3):
        out = np.full((G, Co, K), np.nan, dtype)
        _conv.sum_transposed(gwp, out, threads)
        np.testing.assert_array_equal(out, gwp.sum(axis=0).transpose(0, 2, 1))


# (N, C, H, W, C_out, kernel, stride, dilation, groups): geometries of the
# small convolutions' direct backward kernels -- LeNet's second layer, odd
# sizes, one sample and one channel, 7 and 4 input channels (blocks of 6 and
# 3), two vectors of output channels (17), groups.
_SMALL_GEOMS = [
    (32, 6, 12, 12, 16, (5, 5), (1, 1), (1, 1), 1),
    (3, 5, 11, 9, 19, (2, 3), (1, 1), (1, 1), 1),
    (1, 1, 7, 13, 16, (3, 2), (1, 1), (2, 1), 1),
    (2, 7, 10, 11, 17, (3, 3), (2, 1), (1, 2), 1),
    (2, 4, 9, 9, 12, (5, 1), (1, 3), (1, 1), 1),
    (3, 6, 8, 10, 10, (3, 3), (1, 1), (1, 1), 2),
]


@pytest.mark.skipif(not cnnext._conv.small_kernels(),
                    reason="needs AVX-512F or AVX2")
@pytest.mark.parametrize("geom", _SMALL_GEOMS)
def test_small_backward_kernels_match_reference(geom, rng, close):
    """The small convolutions' weight gradients (``small``: any stride and
    dilation; ``pvec``: stride 1, with and without padding) and input
    gradient (stride 1) equal the
    reference, on one and two threads (``small`` run twice with the same
    bits); every output element is written."""
    from cnnext import _conv
    N, C, H, W, Co, k, s, d, G = geom
    dt = np.float32
    x = randn(rng, (N, G * C, H, W), dt)
    w = randn(rng, (G * Co, C) + k, dt)
    kw = dict(stride=s, dilation=d, groups=G)
    OH, OW = R.conv2d(*f64(x, w), **kw).shape[2:]
    go = randn(rng, (N, G * Co, OH, OW), dt)
    want_gx, want_gw, _ = R.conv2d_backward(*f64(go, x, w), **kw)
    K = C * k[0] * k[1]
    for threads in (1, 2):
        runs = []
        for _ in range(2):
            gwp = np.full((threads, G, K, Co), np.nan, dt)
            _conv.conv2d_grad_weight_small(x, go.reshape(N, G * Co, -1), gwp, *k, *s, *d,
                                           OH, OW)
            runs.append(gwp)
        np.testing.assert_array_equal(runs[0], runs[1])
        gw = runs[0].sum(axis=0).transpose(0, 2, 1).reshape(w.shape)
        close(gw, want_gw, dt)
        if s == (1, 1):
            gx = np.full(x.shape, np.nan, dt)
            _conv.conv2d_grad_input_small(go.reshape(N, G * Co, -1), w, gx, *d, threads)
            close(gx, want_gx, dt)
            for pad in ((0, 0), (2, 1)):
                wkw = dict(kw, padding=pad)
                OHp, OWp = R.conv2d(*f64(x, w), **wkw).shape[2:]
                gop = randn(rng, (N, G * Co, OHp, OWp), dt)
                want_p = R.conv2d_backward(*f64(gop, x, w), **wkw)[1]
                gwp = np.full((threads, G, Co, K), np.nan, dt)
                _conv.conv2d_grad_weight_pvec(x, gop.reshape(N, G * Co, -1), gwp, *k, *pad, *d,
                                              OHp, OWp)
                close(gwp.sum(axis=0).reshape(w.shape), want_p, dt)


@pytest.mark.parametrize("lenet", [(6, 12, 16, "small"), (1, 28, 6, "pvec")])
def test_small_backward_is_planned_and_matches_reference(lenet, rng, close, restore_threads):
    """LeNet's convolutions (6 -> 16 channels, 5x5 on 12x12; 1 -> 6 on 28x28)
    through the plan: float32 takes the small kernels where AVX-512F or
    AVX2 runs them, float64 the general ones; both equal the reference, on 1 and 2
    threads, read-only and non-contiguous inputs unchanged; an inf/NaN input
    gives NaN/inf exactly where the reference does."""
    from cnnext import _conv
    C, H, Co, schedule = lenet
    OH = H - 4
    for dtype in DTYPES:
        x = randn(rng, (32, C, H, 2 * H), dtype)[..., ::2]  # non-contiguous
        w = randn(rng, (Co, C, 5, 5), dtype)
        w.flags.writeable = False
        go = randn(rng, (32, Co, OH, OH), dtype)
        x0 = x.copy()
        plan = _conv2d_plan("conv2d", x, w, None, np.dtype(dtype), 1, 0, 1)
        small = dtype == np.float32 and _conv.small_kernels()
        assert (plan.grad_weight == schedule) == small
        assert (plan.grad_input == "small") == small
        want = R.conv2d_backward(*f64(go, x, w), bias=False)
        for threads in (1, 2):
            cnnext.set_num_threads(threads)
            got = F.conv2d_backward(go, x, w, bias=False)
            close(got[0], want[0], dtype)
            close(got[1], want[1], dtype)
        np.testing.assert_array_equal(x, x0)
        xn = x.copy()
        xn[3, C - 1, 5, 7] = np.nan
        gn = go.copy()
        gn[1, Co - 1, 2, 3] = np.inf
        want = R.conv2d_backward(*f64(gn, xn, w), bias=False)
        gx, gw, _ = F.conv2d_backward(gn, xn, w, bias=False)
        for a, b in ((gx, want[0]), (gw, want[1])):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
