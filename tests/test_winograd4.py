"""Winograd F(4x4, 3x3): the forward pass and input gradient of float32 3x3
stride-1 layers with enough channels (``plan.winograd_tiles``).

The kernel against the float64 reference over the geometry 4x4 tiles must
get right (odd H and W, maps smaller than a tile, padding 0/1/2 and
asymmetric, channel counts off the vector and panel widths, tile blocks
spanning images and tile rows), its thread counts (bitwise), the filter
transform (bitwise against float64 in numpy), every instruction-set
variant; the plan's rule and what it records; and the accuracy claim the
rule rests on.  Tolerance: the float32 table of ``conftest.TOLERANCES``.
"""
from collections import namedtuple

import numpy as np
import pytest

import cnnext
from cnnext import _gemm, _plan, _winograd
from cnnext import functional as F
from cnnext import reference as R

W = namedtuple("W", "n cin cout h w p")

CASES = [
    ("odd-HW", W(2, 3, 5, 7, 9, (1, 1))),
    ("1x1-image", W(2, 33, 40, 1, 1, (1, 1))),
    ("1x1-image-pad2", W(1, 4, 3, 1, 1, (2, 2))),
    ("pad0", W(3, 8, 17, 6, 5, (0, 0))),
    ("pad0-3x3-input", W(2, 5, 6, 3, 3, (0, 0))),
    ("pad-asym", W(2, 6, 7, 5, 8, (0, 2))),
    ("pad-asym-2", W(1, 7, 9, 9, 4, (2, 1))),
    ("N1-C1", W(1, 1, 1, 7, 5, (1, 1))),
    ("C-off-width", W(2, 17, 9, 10, 11, (1, 1))),
    ("row-of-tiles", W(2, 4, 4, 2, 63, (1, 0))),
    ("column-of-tiles", W(2, 4, 4, 63, 2, (0, 1))),
    # runs of more than 8 tiles, partial last vectors, blocks spanning images
    ("blocks", W(5, 9, 11, 19, 37, (1, 1))),
    ("wide", W(1, 3, 4, 5, 70, (2, 2))),
    ("channels-64", W(4, 64, 64, 16, 16, (1, 1))),
    # more input channels than one run of the products (KC4)
    ("channels-100", W(2, 100, 70, 13, 18, (1, 1))),
]
IDS = [c[0] for c in CASES]
GEOMS = [c[1] for c in CASES]
MR = _gemm.block_sizes(np.float32)[0]


def arrays(g, rng):
    x = rng.standard_normal((g.n, g.cin, g.h, g.w)).astype(np.float32)
    w = (rng.standard_normal((g.cout, g.cin, 3, 3)) / np.sqrt(9 * g.cin)).astype(np.float32)
    b = rng.standard_normal(g.cout).astype(np.float32)
    return x, w, b


def f64(*a):
    return [np.asarray(v, dtype=np.float64) for v in a]


def forward4(x, w, b, p, threads=1, adjoint=False):
    """The F(4x4, 3x3) kernel: y = conv2d(x, w, b, padding p), or with
    ``adjoint`` the input gradient's convolution (w transposed, rotated)."""
    Co, C = w.shape[1::-1] if adjoint else w.shape[:2]
    upk = np.full((36, -(-Co // MR) * MR * C + 16), np.nan, np.float32)
    assert _winograd.winograd4_filters(w, upk, adjoint, threads)
    N, _, H, Wd = x.shape
    y = np.full((N, Co, H + 2 * p[0] - 2, Wd + 2 * p[1] - 2), np.nan, np.float32)
    _winograd.winograd4_forward(x, upk, b, y, p[0], p[1], threads)
    return y


@pytest.mark.parametrize("g", GEOMS, ids=IDS)
def test_winograd4_kernel_matches_reference(g, rng, close):
    x, w, b = arrays(g, rng)
    y = forward4(x, w, b, g.p)
    close(y, R.conv2d(*f64(x, w, b), padding=g.p), np.float32)
    go = rng.standard_normal(y.shape).astype(np.float32)
    if min(g.p) >= 0 and max(g.p) <= 2:  # the input gradient: padding 2 - p
        gx = forward4(go, w, None, (2 - g.p[0], 2 - g.p[1]), adjoint=True)
        close(gx, R.conv2d_backward(*f64(go, x, w), padding=g.p)[0], np.float32,
              err_msg="grad_x")


# 5x5 kernels (padding at most 2): four 3x3 views shifted by 0 or 2
CASES5 = [
    ("odd-HW", W(2, 3, 5, 9, 11, (2, 2))),
    ("pad0", W(1, 5, 6, 11, 8, (0, 0))),
    ("pad-asym", W(2, 8, 7, 13, 9, (1, 2))),
    ("small-map", W(2, 4, 3, 2, 3, (2, 2))),
    ("blocks", W(3, 17, 9, 20, 23, (2, 2))),
]


@pytest.mark.parametrize("g", [c[1] for c in CASES5], ids=[c[0] for c in CASES5])
def test_winograd4_quad_matches_reference(g, rng, close):
    x = rng.standard_normal((g.n, g.cin, g.h, g.w)).astype(np.float32)
    w = (rng.standard_normal((g.cout, g.cin, 5, 5)) / np.sqrt(25 * g.cin)).astype(np.float32)
    b = rng.standard_normal(g.cout).astype(np.float32)
    upk = _plan._winograd5_filters(w, 1, 4)
    y = np.full((g.n, g.cout, g.h + 2 * g.p[0] - 4, g.w + 2 * g.p[1] - 4), np.nan, np.float32)
    _winograd.winograd4_forward(x, upk, b, y, g.p[0], g.p[1], 1, True)
    close(y, R.conv2d(*f64(x, w, b), padding=g.p), np.float32)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd4_reports_nonfinite_outputs(bad, threads, rng):
    """The kernel returns False exactly when an output it stored is inf or
    NaN (it checks them as it stores them), True otherwise."""
    x, w, b = arrays(W(3, 5, 7, 13, 10, (1, 1)), rng)
    Cop = -(-7 // MR) * MR
    upk = np.empty((36, Cop * 5 + 16), np.float32)
    assert _winograd.winograd4_filters(w, upk)
    y = np.empty((3, 7, 13, 10), np.float32)
    assert _winograd.winograd4_forward(x, upk, b, y, 1, 1, threads)
    x[2, 4, 12, 9] = bad  # the last position: its tile's outputs are partly outside
    assert not _winograd.winograd4_forward(x, upk, b, y, 1, 1, threads)
    x[2, 4, 12, 9] = 3e38  # finite input, its transform overflowing
    assert not _winograd.winograd4_forward(x, upk, b, y, 1, 1, threads)


@pytest.mark.parametrize("threads", [2, 3])
def test_winograd4_thread_counts_same_bits(threads, rng):
    x, w, b = arrays(W(5, 9, 11, 19, 37, (1, 1)), rng)
    np.testing.assert_array_equal(forward4(x, w, b, (1, 1), threads),
                                  forward4(x, w, b, (1, 1), 1))


def test_winograd4_filters_bitwise(rng):
    """G w G^T in float64 in the kernel's order of operations, rounded once;
    MR-row panels, zeros filling the last one; the adjoint filters; the
    same bits on any number of threads."""
    def g(a, b, c):
        return [a, (a + b + c) * (1 / 3), -(a - b + c) * (1 / 3),
                -(16 * a + 8 * b + 4 * c) * (1 / 15), (a - 2 * b + 4 * c) * (1 / 15), c]

    for co, c in [(13, 7), (8, 3), (64, 64), (40, 33)]:
        w = rng.standard_normal((co, c, 3, 3)).astype(np.float32)
        w.reshape(-1)[1::97] *= 1e-39  # subnormal float32 weights
        for adjoint in (False, True):
            wt = (w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if adjoint else w).astype(np.float64)
            Co, C = wt.shape[:2]
            Cop = -(-Co // MR) * MR
            cols = [g(wt[..., 0, j], wt[..., 1, j], wt[..., 2, j]) for j in range(3)]
            rows = [g(cols[0][r], cols[1][r], cols[2][r]) for r in range(6)]
            want = np.zeros((36, Cop, C))
            want[:, :Co] = np.stack([rows[r][s] for r in range(6) for s in range(6)])
            want = want.reshape(36, Cop // MR, MR, C).transpose(0, 1, 3, 2).reshape(36, -1)
            for threads in (1, 2, 3):
                upk = np.full((36, Cop * C + 16), np.nan, np.float32)
                assert _winograd.winograd4_filters(w, upk, adjoint, threads)
                got = upk[:, :Cop * C].view(np.uint32)
                assert np.array_equal(got, want.astype(np.float32).view(np.uint32))
    w[0, 0, 1, 1] = np.nan
    assert not _winograd.winograd4_filters(w, np.empty((36, 48 * 40 + 16), np.float32))


def conv_plan(x_shape, co, alg="auto", threads=None):
    if threads is not None:
        cnnext.set_num_threads(threads)
    return _plan.conv2d_plan("conv2d", x_shape, (co, x_shape[1], 3, 3), None,
                             np.dtype(np.float32), (1, 1), (1, 1), (1, 1), 1, alg)


def test_winograd4_rule(restore_threads):
    """F(4x4, 3x3) for products that sum 64 channels into 32 or more, up to
    128 x 128 filters, on maps of at least 16 outputs a side with 128 4x4
    tiles per thread; the forward and the input gradient (the input's map,
    the channels swapped) apart."""
    assert conv_plan((32, 64, 32, 32), 64, threads=1).winograd_tiles == (4, 4)
    assert conv_plan((32, 64, 32, 32), 64, "winograd", threads=2).winograd_tiles == (4, 4)
    assert conv_plan((8, 128, 28, 28), 128, threads=1).winograd_tiles == (4, 4)
    assert conv_plan((8, 64, 16, 16), 64, threads=1).winograd_tiles == (4, 4)  # 128 tiles
    assert conv_plan((8, 64, 16, 16), 64, threads=2).winograd_tiles == (2, 2)
    assert conv_plan((8, 64, 14, 14), 64, threads=1).winograd_tiles == (2, 2)  # map < 16
    assert conv_plan((8, 256, 14, 14), 256, threads=1).winograd_tiles == (2, 2)
    assert conv_plan((8, 128, 28, 28), 256, threads=1).winograd_tiles == (2, 2)
    assert conv_plan((32, 32, 32, 32), 32, threads=1).winograd_tiles == (2, 2)
    # the input gradient sums the 64 output channels into 32
    assert conv_plan((32, 32, 32, 32), 64, threads=1).winograd_tiles == (2, 4)
    assert conv_plan((32, 64, 32, 32), 16, threads=1).winograd_tiles == (2, 2)
    assert conv_plan((32, 64, 32, 32), 64, "direct", threads=1).winograd_tiles == (2, 2)
    cnnext.set_num_threads(1)
    plan = _plan.conv2d_plan("conv2d", (8, 64, 17, 17), (64, 64, 3, 3), None,
                             np.dtype(np.float32), (1, 1), (0, 0), (1, 1), 1, "auto")
    assert plan.winograd_tiles == (2, 4)  # a 15x15 output, the gradient onto 17x17
    assert "F(2x2, 3x3)" in plan.reason and "F(4x4, 3x3)" in plan.grad_input_reason
    plan = conv_plan((32, 64, 32, 32), 64, threads=1)
    assert "F(4x4, 3x3)" in plan.reason and "F(4x4, 3x3)" in plan.grad_input_reason
    assert "F(2x2, 3x3)" in plan.grad_weight_reason


def test_winograd4_rule_5x5(restore_threads):
    """A 5x5 layer's products run over its four views' 4 * C_in channels:
    the rule of 3x3 layers on those."""
    def plan5(x_shape, co, threads):
        cnnext.set_num_threads(threads)
        return _plan.conv2d_plan("conv2d", x_shape, (co, x_shape[1], 5, 5), None,
                                 np.dtype(np.float32), (1, 1), (2, 2), (1, 1), 1, "auto")
    plan = plan5((32, 32, 32, 32), 64, 2)
    assert plan.method == "winograd-5x5" and plan.winograd_tiles == (4, 4)
    assert "F(4x4, 3x3) on four shifted views" in plan.reason
    assert plan5((8, 64, 32, 32), 64, 1).winograd_tiles == (4, 4)
    assert plan5((8, 128, 16, 16), 128, 1).winograd_tiles == (2, 2)  # 512 x 128 filters


@pytest.mark.parametrize("alg", ["auto", "winograd"])
def test_winograd4_functional_matches_reference(alg, rng, close, restore_threads):
    cnnext.set_num_threads(1)
    g = W(8, 64, 72, 17, 19, (1, 1))
    x, w, b = arrays(g, rng)
    go = rng.standard_normal((g.n, g.cout, g.h, g.w)).astype(np.float32)
    with cnnext.use_conv_algorithm(alg):
        assert conv_plan(x.shape, g.cout, alg).winograd_tiles == (4, 4)
        y = F.conv2d(x, w, b, padding=1)
        gx, gw, gb = F.conv2d_backward(go, x, w, padding=1)
    np.testing.assert_array_equal(y, forward4(x, w, b, (1, 1)))
    close(y, R.conv2d(*f64(x, w, b), padding=1), np.float32)
    rx, rw, rb = R.conv2d_backward(*f64(go, x, w), padding=1)
    close(gx, rx, np.float32, err_msg="grad_x")
    close(gw, rw, np.float32, err_msg="grad_weight")
    close(gb, rb, np.float32, err_msg="grad_bias")


def test_winograd4_on_dilation_phases(rng, close, restore_threads):
    """A dilated layer whose stacked phase convolution qualifies runs it on
    F(4x4, 3x3), forward and input gradient."""
    cnnext.set_num_threads(1)
    x = rng.standard_normal((8, 64, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    go = rng.standard_normal((8, 64, 32, 32)).astype(np.float32)
    with cnnext.use_conv_algorithm("winograd"):
        plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, b.shape, x.dtype, (1, 1), (2, 2),
                                 (2, 2), 1, "winograd")
        assert plan.method == "winograd-phases" and plan.phase_split
        assert plan.phase_plan.winograd_tiles == (4, 4)
        y = F.conv2d(x, w, b, padding=2, dilation=2)
        gx, gw, _ = F.conv2d_backward(go, x, w, padding=2, dilation=2)
    close(y, R.conv2d(*f64(x, w, b), padding=2, dilation=2), np.float32)
    rx, rw, _ = R.conv2d_backward(*f64(go, x, w), padding=2, dilation=2)
    close(gx, rx, np.float32, err_msg="grad_x")
    close(gw, rw, np.float32, err_msg="grad_weight")


@pytest.mark.parametrize("where", ["x", "weight", "grad"])
def test_winograd4_nonfinite_falls_back_to_direct(where, rng, restore_threads):
    cnnext.set_num_threads(1)
    x, w, b = arrays(W(8, 64, 64, 16, 16, (1, 1)), rng)
    go = rng.standard_normal((8, 64, 16, 16)).astype(np.float32)
    {"x": x, "weight": w, "grad": go}[where][1, 2, 1, 2] = np.inf
    results = {}
    for alg in ("direct", "auto"):
        with cnnext.use_conv_algorithm(alg):
            results[alg] = (F.conv2d(x, w, b, padding=1),
                            F.conv2d_backward(go, x, w, padding=1)[0])
    for i, reads in enumerate(({"x", "weight"}, {"grad", "weight"})):  # y, grad_x
        if where in reads:
            np.testing.assert_array_equal(results["auto"][i], results["direct"][i])
        else:
            assert np.isfinite(results["auto"][i]).all()


@pytest.mark.parametrize("n, c, co, hw, k", [(8, 64, 64, 16, 3), (2, 128, 128, 32, 3),
                                             (8, 32, 64, 32, 5), (4, 64, 64, 32, 5)])
def test_winograd4_error_within_4x_direct(n, c, co, hw, k, rng, restore_threads):
    """The rule ``auto`` rests on, for F(4x4, 3x3): on realistic data
    (unit-variance input, weights scaled by 1/sqrt(fan_in)) its float32 RMS
    error against float64 stays within 4x the direct algorithm's (3x3, and
    5x5 on four views)."""
    cnnext.set_num_threads(1)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((co, c, k, k)) / np.sqrt(k * k * c)).astype(np.float32)
    go = rng.standard_normal((n, co, hw, hw)).astype(np.float32)
    p = k // 2
    plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, None, x.dtype, (1, 1), (p, p), (1, 1),
                             1, "auto")
    assert plan.winograd_tiles[0] == 4
    want = (R.conv2d(*f64(x, w), padding=p), R.conv2d_backward(*f64(go, x, w), padding=p)[0])
    err = {}
    for alg in ("direct", "auto"):
        with cnnext.use_conv_algorithm(alg):
            got = (F.conv2d(x, w, padding=p), F.conv2d_backward(go, x, w, padding=p)[0])
        err[alg] = [np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) for a, b in zip(got, want)]
    for what, e_w, e_d in zip(("forward", "grad_x"), err["auto"], err["direct"]):
        assert e_w <= 4 * e_d, (what, e_w, e_d)


_ISA_SCRIPT = """
import numpy as np
from cnnext import _gemm, _winograd, reference as R

MR = _gemm.block_sizes(np.float32)[0]
rng = np.random.default_rng(0)
worst = 0.0
for n, c, co, h, w, p in [(2, 3, 5, 7, 9, 1), (5, 9, 11, 19, 37, 1), (2, 33, 17, 10, 11, 2),
                          (1, 4, 4, 5, 70, 0)]:
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((co, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    upk = np.empty((36, -(-co // MR) * MR * c + 16), np.float32)
    assert _winograd.winograd4_filters(wt, upk)
    y = np.empty((n, co, h + 2 * p - 2, w + 2 * p - 2), np.float32)
    _winograd.winograd4_forward(x, upk, None, y, p, p, 1)
    want = R.conv2d(x.astype(np.float64), wt.astype(np.float64), padding=p)
    worst = max(worst, float(np.abs(y - want).max() / np.abs(want).max()))
print(_winograd.w4_isa(), worst)
"""


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_winograd4_every_isa(isa, tmp_path):
    """CNNEXT_ISA selects each variant of the transforms the CPU supports
    (AVX-512 CPUs run the AVX2 transforms)."""
    import os
    import subprocess
    import sys

    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(_gemm.isa()):
        pytest.skip(f"this CPU runs {_gemm.isa()}, not {isa}")
    proc = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=dict(os.environ, CNNEXT_ISA=isa))
    assert proc.returncode == 0, proc.stderr
    name, worst = proc.stdout.split()
    assert name == isa
    assert float(worst) < 1e-5
