"""5x5 convolutions by Winograd on four shifted views (``winograd-5x5``).

A 5x5 kernel is four 3x3 blocks at row and column offsets 0 and 2 (the
shared middle row and column kept in the first block); each block is a 3x3
Winograd convolution of the input shifted by its offset, and the four run
as one with four times the input channels, the shifted tiles transformed
in place.  Tested: the kernel and the plans against the float64 reference
over the geometry the tiling must get right (odd sizes, padding 0-2 and
asymmetric, tiny images, channel counts off the panel widths, several tile
blocks), thread counts, PyTorch, the ``auto`` rule and the accuracy ``auto``
rests on (the inf/NaN fallback: test_winograd.py).  Tolerance: the float32
table of ``conftest.TOLERANCES``.
"""
import numpy as np
import pytest

import cnnext
from cnnext import _plan, _winograd
from cnnext import functional as F
from cnnext import reference as R
from cnnext.functional.conv import _conv2d_plan

# (id, (N, C_in, C_out, H, W, padding))
CASES = [
    ("odd-HW", (2, 3, 5, 7, 9, (2, 2))),
    ("pad0", (3, 8, 17, 9, 6, (0, 0))),
    ("pad1", (2, 5, 6, 8, 11, (1, 1))),
    ("pad-asym", (2, 6, 7, 9, 8, (0, 2))),
    ("1x1-output", (2, 4, 3, 5, 5, (0, 0))),
    ("1x1-image-pad2", (1, 4, 3, 1, 1, (2, 2))),
    ("N1-C1", (1, 1, 1, 6, 7, (2, 2))),
    ("C-off-width", (2, 17, 9, 10, 11, (2, 2))),
    ("row-of-tiles", (2, 4, 4, 5, 63, (0, 2))),
    ("blocks", (5, 9, 11, 19, 23, (2, 2))),
    ("channels-64", (2, 64, 64, 12, 12, (2, 2))),
]
IDS = [c[0] for c in CASES]


def arrays(n, cin, cout, h, w, rng):
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, 5, 5)) / np.sqrt(25 * cin)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return x, wt, b


def f64(*a):
    return [np.asarray(v, dtype=np.float64) for v in a]


@pytest.mark.parametrize("geom", [c[1] for c in CASES], ids=IDS)
def test_winograd_5x5_matches_reference(geom, rng, close):
    n, cin, cout, h, w, p = geom
    x, wt, b = arrays(n, cin, cout, h, w, rng)
    go = rng.standard_normal((n, cout, h + 2 * p[0] - 4, w + 2 * p[1] - 4)).astype(np.float32)
    with cnnext.use_conv_algorithm("winograd"):
        plan = _conv2d_plan("conv2d", x, wt, b, x.dtype, 1, p, 1, 1)
        assert plan.method == "winograd-5x5"
        # the input gradient (padding 4 - p) runs on the shifted views at padding 2
        if min(p) == 2:
            assert plan.grad_input == "winograd-5x5"
        else:  # the direct kernels'
            assert plan.grad_input in ("phases", "small")
        y = F.conv2d(x, wt, b, padding=p)
        gx, gw, gb = F.conv2d_backward(go, x, wt, padding=p)
    close(y, R.conv2d(*f64(x, wt, b), padding=p), np.float32)
    rx, rw, rb = R.conv2d_backward(*f64(go, x, wt), padding=p)
    close(gx, rx, np.float32, err_msg="grad_x")
    close(gw, rw, np.float32, err_msg="grad_weight")
    close(gb, rb, np.float32, err_msg="grad_bias")


@pytest.mark.parametrize("threads", [2, 3])
def test_winograd_5x5_same_bits_any_thread_count(threads, rng, restore_threads):
    """Tile blocks are computed alike whichever thread takes them."""
    x, wt, b = arrays(3, 12, 70, 21, 19, rng)
    go = rng.standard_normal((3, 70, 21, 19)).astype(np.float32)
    out = {}
    for nt in (1, threads):
        cnnext.set_num_threads(nt)
        with cnnext.use_conv_algorithm("winograd"):
            out[nt] = (F.conv2d(x, wt, b, padding=2),) + F.conv2d_backward(go, x, wt,
                                                                           padding=2)[:1]
    for a, c in zip(out[1], out[threads]):
        np.testing.assert_array_equal(a, c)


def test_winograd_5x5_kernel_views(rng):
    """winograd_forward_quad on the four blocks' filters equals the sum of
    the four shifted 3x3 convolutions it stands for."""
    x, wt, b = arrays(2, 3, 4, 9, 10, rng)
    y = np.empty((2, 4, 9, 10), np.float32)
    _winograd.winograd_forward_quad(x, _plan._winograd5_filters(wt), b, y, 2, 2, 1)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (2, 3), (2, 3)))
    want = b[:, None, None].astype(np.float64) + np.zeros((2, 4, 9, 10))
    for a in (0, 1):
        for c in (0, 1):
            blk = wt[:, :, 2 * a:2 * a + 3, 2 * c:2 * c + 3].astype(np.float64).copy()
            blk[:, :, :a] = 0
            blk[:, :, :, :c] = 0
            view = xp[:, :, 2 * a:2 * a + 11, 2 * c:2 * c + 12]
            want += R.conv2d(view, blk)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_winograd_5x5_vs_torch(rng):
    torch = pytest.importorskip("torch")
    x, wt, b = arrays(4, 32, 64, 16, 16, rng)
    go = rng.standard_normal((4, 64, 16, 16)).astype(np.float32)
    with cnnext.use_conv_algorithm("winograd"):
        y = F.conv2d(x, wt, b, padding=2)
        gx, gw, gb = F.conv2d_backward(go, x, wt, padding=2)
    xt, wtt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, wt, b))
    yt = torch.nn.functional.conv2d(xt, wtt, bt, padding=2)
    yt.backward(torch.tensor(go, dtype=torch.float64))
    for ours, theirs in ((y, yt), (gx, xt.grad), (gw, wtt.grad), (gb, bt.grad)):
        want = theirs.detach().numpy()
        assert np.abs(ours - want).max() <= 2e-5 * np.abs(want).max()


def test_winograd_5x5_auto_rule():
    """``auto``: float32 5x5 stride-1 layers (padding <= 2, groups 1,
    undilated) with >= 32 input and >= 64 output channels (32 with AVX2)
    and >= 1024 2x2 output tiles; the input gradient by the same rule on
    its own channels."""
    from cnnext import _winograd

    def plan(x_shape, co, alg="auto", dtype=np.float32, padding=(2, 2), **kw):
        return _plan.conv2d_plan("conv2d", x_shape, (co, x_shape[1], 5, 5), None,
                                 np.dtype(dtype), kw.get("s", (1, 1)), padding,
                                 kw.get("d", (1, 1)), 1, alg)
    avx2 = _winograd.isa() == "avx2"
    five = plan((32, 32, 32, 32), 64)
    assert five.method == "winograd-5x5" and "auto" in five.reason
    # its result has 32 channels
    assert five.grad_input == ("winograd-5x5" if avx2 else "phases")
    wide = plan((16, 64, 28, 28), 64)
    assert (wide.method, wide.grad_input) == ("winograd-5x5", "winograd-5x5")
    assert plan((16, 64, 28, 28), 64, padding=(1, 1)).grad_input == "phases"
    assert plan((32, 32, 32, 32), 32).method == ("winograd-5x5" if avx2 else "direct")
    assert plan((32, 32, 32, 32), 16).method == "direct"        # 16 output channels
    assert plan((32, 16, 32, 32), 64).method == "direct"        # 16 input channels
    assert plan((4, 64, 14, 14), 64).method == "direct"         # 196 tiles
    assert plan((32, 32, 32, 32), 64, padding=(3, 3)).method == "direct"
    assert plan((32, 32, 32, 32), 64, dtype=np.float64).method == "direct"
    assert plan((32, 32, 32, 32), 64, s=(2, 2)).method == "direct"
    assert plan((32, 32, 32, 32), 64, d=(2, 2), padding=(4, 4)).method == "direct"
    assert plan((32, 32, 32, 32), 64, "direct").method == "direct"
    assert plan((1, 3, 6, 6), 2, "winograd").method == "winograd-5x5"
    forced = plan((1, 3, 6, 6), 2, "winograd", d=(2, 2), padding=(4, 4))
    assert forced.method == "direct" and "dilation" in forced.reason


@pytest.mark.parametrize("cin, cout, hw", [(32, 64, 16), (128, 128, 8)])
def test_winograd_5x5_error_within_4x_direct(cin, cout, hw, rng):
    """On realistic data (unit-variance input, weights scaled by
    1/sqrt(fan_in)) the float32 RMS error against float64 stays within 4x
    the direct algorithm's, forward and input gradient."""
    x = rng.standard_normal((2, cin, hw, hw)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, 5, 5)) / np.sqrt(25 * cin)).astype(np.float32)
    go = rng.standard_normal((2, cout, hw, hw)).astype(np.float32)
    want = (R.conv2d(*f64(x, wt), padding=2), R.conv2d_backward(*f64(go, x, wt), padding=2)[0])
    err = {}
    for alg in ("direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            got = (F.conv2d(x, wt, padding=2), F.conv2d_backward(go, x, wt, padding=2)[0])
        err[alg] = [np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) for a, b in zip(got, want)]
    for what, e_w, e_d in zip(("forward", "grad_x"), err["winograd"], err["direct"]):
        assert e_w <= 4 * e_d, (what, e_w, e_d)
