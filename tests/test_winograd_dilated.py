"""Dilated 3x3 convolutions by Winograd on their phases (``winograd-phases``).

A stride-1 convolution dilated by (dh, dw) is dh*dw undilated ones, one per
phase (rows r::dh, columns c::dw of the padded input); under
``set_conv_algorithm("winograd")`` each runs Winograd F(2x2, 3x3), read and
written in place, or, when the phases tile the input and the result
exactly, copied out once, run as one stacked convolution and copied back.
Checked against the float64 reference over the geometry the phases must get
right (dilation 2 and 3 and unequal ones, padding not a multiple of the
dilation so that phases start at different offsets, odd map sizes so that
phases differ in size, N=1, C=1, with and without bias), thread counts, the
fallbacks and the accuracy rule; PyTorch and the memory
layouts are checked with the undilated kernel in ``tests/test_winograd.py``.

Tolerance: the float32 table of ``conftest.TOLERANCES``, as for
``tests/test_winograd.py`` (each phase is such a Winograd convolution).
"""
from collections import namedtuple

import numpy as np
import pytest

import cnnext
from cnnext import _plan
from cnnext import functional as F
from cnnext import reference as R
from cnnext.functional.conv import _conv2d_plan

D = namedtuple("D", "n cin cout h w p d bias")

CASES = [
    ("d2-p2", D(2, 5, 7, 12, 12, (2, 2), (2, 2), True)),
    ("d2-odd-HW", D(2, 3, 4, 11, 13, (2, 2), (2, 2), True)),
    ("d2-p1", D(2, 4, 6, 9, 10, (1, 1), (2, 2), False)),
    ("d2-p0", D(1, 3, 2, 9, 8, (0, 0), (2, 2), True)),
    ("d3-p3", D(2, 6, 5, 10, 11, (3, 3), (3, 3), True)),
    ("d3-p4", D(1, 2, 3, 8, 7, (4, 4), (3, 3), False)),
    ("d3-p5-large-pad", D(1, 2, 2, 7, 9, (5, 5), (3, 3), True)),
    ("d2x3-asym", D(2, 4, 3, 9, 11, (3, 1), (2, 3), True)),
    ("d1x2", D(2, 3, 5, 8, 9, (1, 2), (1, 2), True)),
    ("d2x1", D(2, 3, 5, 9, 8, (2, 1), (2, 1), True)),
    ("N1-C1", D(1, 1, 1, 9, 9, (2, 2), (2, 2), True)),
    ("out-equals-dilation", D(1, 3, 2, 6, 6, (0, 0), (2, 2), True)),
    ("channels-64", D(2, 64, 64, 13, 12, (2, 2), (2, 2), True)),
    # phases that tile the input and the result exactly: copied out and back
    ("d3-p3-split", D(2, 4, 5, 9, 12, (3, 3), (3, 3), True)),
    ("d2x3-split", D(1, 3, 4, 8, 9, (2, 3), (2, 3), False)),
    ("channels-64-split", D(2, 64, 64, 12, 12, (2, 2), (2, 2), True)),
]
# The cases whose phases tile input and result exactly (ConvPlan.phase_split).
SPLIT = {"d2-p2", "out-equals-dilation", "d3-p3-split", "d2x3-split", "channels-64-split"}
IDS = [c[0] for c in CASES]
GEOMS = [c[1] for c in CASES]
SPLIT_GEOMS = [c[1] for c in CASES if c[0] in SPLIT]


def arrays(g, rng):
    x = rng.standard_normal((g.n, g.cin, g.h, g.w)).astype(np.float32)
    w = (rng.standard_normal((g.cout, g.cin, 3, 3)) / np.sqrt(9 * g.cin)).astype(np.float32)
    b = rng.standard_normal(g.cout).astype(np.float32) if g.bias else None
    oh = g.h + 2 * g.p[0] - 2 * g.d[0]
    ow = g.w + 2 * g.p[1] - 2 * g.d[1]
    go = rng.standard_normal((g.n, g.cout, oh, ow)).astype(np.float32)
    return x, w, b, go


def f64(*a):
    return [None if v is None else np.asarray(v, dtype=np.float64) for v in a]


def plan_of(x, w, b, g):
    return _conv2d_plan("conv2d", x, w, b, x.dtype, 1, g.p, g.d, 1)


@pytest.mark.parametrize("g", GEOMS, ids=IDS)
def test_phases_match_reference(g, rng, close):
    x, w, b, go = arrays(g, rng)
    with cnnext.use_conv_algorithm("winograd"):
        plan = plan_of(x, w, b, g)
        assert (plan.method, plan.grad_input, plan.grad_weight) == ("winograd-phases",) * 3
        assert plan.phase_plan is not None and plan.phase_plan.method == "winograd"
        assert plan.phase_split == (g in SPLIT_GEOMS)
        y = F.conv2d(x, w, b, padding=g.p, dilation=g.d)
        gx, gw, gb = F.conv2d_backward(go, x, w, padding=g.p, dilation=g.d, bias=g.bias)
    close(y, R.conv2d(*f64(x, w, b), padding=g.p, dilation=g.d), np.float32)
    rx, rw, rb = R.conv2d_backward(*f64(go, x, w), padding=g.p, dilation=g.d, bias=g.bias)
    close(gx, rx, np.float32, err_msg="grad_x")
    close(gw, rw, np.float32, err_msg="grad_weight")
    if g.bias:
        close(gb, rb, np.float32, err_msg="grad_bias")
    assert y.dtype == gx.dtype == gw.dtype == np.float32


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("d", [(2, 2), (3, 3), (2, 3), (1, 2)])
def test_split_and_merge_phases(d, threads):
    """copy_phases stacks phase (r, c) of sample n as sample (n*dh + r)*dw
    + c, the order of the in-place kernels; with merge it inverts that."""
    from cnnext import _winograd
    dh, dw = d
    x = np.arange(2 * 3 * 6 * dh * 5 * dw, dtype=np.float32).reshape(2, 3, 6 * dh, 5 * dw)
    want = np.ascontiguousarray(
        x.reshape(2, 3, 6, dh, 5, dw).transpose(0, 3, 5, 1, 2, 4)).reshape(-1, 3, 6, 5)
    got = np.full_like(want, np.nan)
    _winograd.copy_phases(x, got, dh, dw, False, threads)
    np.testing.assert_array_equal(got, want)
    back = np.full_like(x, np.nan)
    _winograd.copy_phases(got, back, dh, dw, True, threads)
    np.testing.assert_array_equal(back, x)


def test_phase_axis_padding():
    """The phase convolutions' padding: the largest (<= 2, <= p // d) whose
    zeros are all padding of the original input; 0 otherwise."""
    # (size, outputs, padding, dilation) -> (P, buffer length)
    assert _plan._phase_axis(32, 32, 2, 2) == (1, 16)  # "same": no buffer margin
    assert _plan._phase_axis(9, 7, 1, 2) == (0, 6)     # p < d
    assert _plan._phase_axis(8, 16, 6, 2) == (2, 6)    # capped at 2
    # 11 rows, p = 2: phase 0 has 6 outputs, the buffer (P = 1) 6 elements;
    # its last output reads one past them through the padding P: padded row
    # 0 + 2 * (6 + 1) = 14, input row 12, padding of the input too
    assert _plan._phase_axis(11, 11, 2, 2) == (1, 6)
    # 10 rows, p = 3, d = 3: phase 0 has 2 outputs; with P = 1 phase 0's
    # last output would read padded row 0 + 3 * (2 + 1) = 9, input row 6: data
    assert _plan._phase_axis(10, 6, 3, 3) == (0, 4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("g", [D(3, 9, 11, 21, 19, (2, 2), (2, 2), True),
                               D(3, 9, 11, 20, 18, (2, 2), (2, 2), True)],
                         ids=["in-place", "split"])
def test_phases_thread_counts(threads, g, rng, close, restore_threads):
    """Forward and input gradient do not depend on the thread count; the
    weight gradient matches the reference at each count."""
    x, w, b, go = arrays(g, rng)
    with cnnext.use_conv_algorithm("winograd"):
        cnnext.set_num_threads(1)
        y1 = F.conv2d(x, w, b, padding=g.p, dilation=g.d)
        gx1, _, _ = F.conv2d_backward(go, x, w, padding=g.p, dilation=g.d)
        cnnext.set_num_threads(threads)
        plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, b.shape, x.dtype, (1, 1), g.p,
                                 g.d, 1, "winograd")
        assert plan.method == "winograd-phases"
        y = plan.forward(x, w, b)
        gx, gw, _ = plan.backward(go, x, w, False)
    np.testing.assert_array_equal(y, y1)
    np.testing.assert_array_equal(gx, gx1)
    close(gw, R.conv2d_backward(*f64(go, x, w), padding=g.p, dilation=g.d)[1], np.float32)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("where", ["x", "weight", "grad"])
@pytest.mark.parametrize("g", [D(2, 4, 3, 9, 8, (2, 2), (2, 2), True),
                               D(2, 4, 3, 10, 8, (2, 2), (2, 2), True)],
                         ids=["in-place", "split"])
def test_phases_nonfinite_fall_back_to_direct(bad, where, g, rng, close):
    """A result that reads an array holding inf/NaN is the direct
    algorithm's, exactly; the one that does not stays Winograd's."""
    x, w, b, go = arrays(g, rng)
    {"x": x, "weight": w, "grad": go}[where][0, 1, 2, 2] = bad
    results = {}
    for alg in ("direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            results[alg] = (F.conv2d(x, w, b, padding=2, dilation=2),) + F.conv2d_backward(
                go, x, w, padding=2, dilation=2)[:2]
    untouched = {"x": 1, "weight": 2, "grad": 0}[where]  # y, grad_x, grad_w
    for i, (a, d) in enumerate(zip(results["winograd"], results["direct"])):
        if i == untouched:
            assert np.isfinite(a).all()
            close(a, d, np.float32)
        else:
            assert not np.isfinite(d).all()
            np.testing.assert_array_equal(a, d)


def test_direct_setting_runs_dilated_direct(rng, close):
    g = D(2, 64, 64, 16, 16, (2, 2), (2, 2), True)
    x, w, b, go = arrays(g, rng)
    with cnnext.use_conv_algorithm("direct"):
        assert plan_of(x, w, b, g).method == "direct"
        y = F.conv2d(x, w, b, padding=2, dilation=2)
    close(y, R.conv2d(*f64(x, w, b), padding=2, dilation=2), np.float32)


def test_auto_rule_for_dilated():
    """``auto`` runs the phases for column dilation 2 (with AVX-512) from
    128 channels, or from 64 with 2048 2x2 tiles over the stacked phases or
    with phases of at least 8x8 outputs that tile input and result exactly;
    with AVX2, only phases that tile them exactly (copied out and back)."""
    from cnnext import _winograd

    def method(x_shape, co, d=(2, 2), alg="auto", dtype=np.float32):
        return _plan.conv2d_plan("conv2d", x_shape, (co, x_shape[1], 3, 3), None,
                                 np.dtype(dtype), (1, 1), d, d, 1, alg).method
    isa = _winograd.isa()
    copied = "winograd-phases" if isa in ("avx512", "avx2") else "direct"
    in_place = "winograd-phases" if isa == "avx512" else "direct"
    assert method((16, 64, 32, 32), 64) == copied              # 4096 tiles, split
    assert method((8, 128, 16, 16), 128) == copied             # 512 tiles, 128 channels
    assert method((4, 64, 16, 16), 64) == copied               # 256 tiles, 8x8 phases, split
    assert method((1, 64, 16, 16), 64) == copied               # 64 tiles, split
    assert method((8, 128, 17, 17), 128) == in_place           # 128 channels, not split
    assert method((16, 64, 33, 33), 64) == in_place            # 5184 tiles, not split
    assert method((4, 64, 17, 17), 64) == "direct"             # 400 tiles, not split
    assert method((4, 64, 8, 8), 64) == "direct"               # 4x4 phases
    assert method((16, 32, 32, 32), 32) == "direct"            # 32 channels
    assert method((16, 64, 32, 32), 64, (3, 3)) == "direct"    # dilation 3
    assert method((16, 64, 32, 32), 64, (2, 1)) == "direct"    # column dilation 1
    assert method((16, 64, 32, 32), 64, dtype=np.float64) == "direct"
    assert method((16, 64, 32, 32), 64, alg="direct") == "direct"
    assert method((4, 32, 16, 16), 32, (3, 3), "winograd") == "winograd-phases"


@pytest.mark.parametrize("kwargs, why", [
    ({"dilation": 4}, "dilation"),             # 1x1 output, smaller than the dilation
    ({"dilation": 2, "stride": 2}, "stride"),
    ({"dilation": 2, "groups": 2}, "groups"),
])
def test_phases_fall_back_where_they_cannot_run(kwargs, why, rng, close):
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    groups = kwargs.get("groups", 1)
    w = rng.standard_normal((4, 4 // groups, 3, 3)).astype(np.float32)
    with cnnext.use_conv_algorithm("winograd"):
        y = F.conv2d(x, w, **kwargs)
        plan = _conv2d_plan("conv2d", x, w, None, x.dtype, kwargs.get("stride", 1), 0,
                            kwargs.get("dilation", 1), groups)
    assert "winograd" not in plan.method
    assert groups > 1 or why in plan.reason
    close(y, R.conv2d(*f64(x, w), **kwargs), np.float32)


@pytest.mark.parametrize("c, hw, d", [(64, 32, 2), (64, 27, 3)])
def test_phases_error_within_4x_direct(c, hw, d, rng):
    """The accuracy rule of ``docs/convolution-algorithms.md`` holds for the
    phases: float32 RMS error against float64 within 4x the direct
    algorithm's (the weight gradient sums over the phases in a different
    order)."""
    x = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    go = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    kw = {"padding": d, "dilation": d}
    want = (R.conv2d(*f64(x, w), **kw),) + R.conv2d_backward(*f64(go, x, w), **kw)[:2]
    err = {}
    for alg in ("direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            got = (F.conv2d(x, w, **kw),) + F.conv2d_backward(go, x, w, **kw)[:2]
        err[alg] = [np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) for a, b in zip(got, want)]
    for what, e_w, e_d in zip(("forward", "grad_x", "grad_w"), err["winograd"], err["direct"]):
        assert e_w <= 4 * e_d, (what, e_w, e_d)
