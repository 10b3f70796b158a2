"""Float64 Winograd F(2x2, 3x3) (``winograd-float64``).

The forward pass, the input and the weight gradient against the float64 reference over
the geometry the 2x2 tiles, the micro-kernel's 6 x 8 panels, its 256-deep
blocks of channels and the blocks of tiles cut (odd H and W, 1x1 images,
padding 0/1/2 and asymmetric, N=1, unbatched input); thread counts (the same
bits); the ``"auto"`` rule and its fallbacks; inf/NaN; and the accuracy
claim (against a long-double reference).  Tolerance: the float64 table of
``conftest.TOLERANCES``.
"""
import numpy as np
import pytest

import cnnext
from cnnext import _winograd64
from cnnext import functional as F
from cnnext import reference as R
from cnnext.functional.conv import _conv2d_plan

# (n, cin, cout, h, w, padding)
GEOMS = {
    "odd-HW": (2, 3, 5, 7, 9, (1, 1)),
    "1x1-image-pad2": (1, 4, 3, 1, 1, (2, 2)),
    "pad0": (3, 8, 17, 6, 5, (0, 0)),
    "pad-asym": (2, 6, 7, 5, 8, (0, 2)),
    "N1-C1": (1, 1, 1, 7, 5, (1, 1)),
    "panels": (2, 17, 13, 10, 11, (1, 1)),      # channels off 6 and 8
    "channel-blocks": (1, 300, 20, 6, 6, (1, 1)),  # two 256-deep blocks
    "tile-blocks": (5, 9, 11, 19, 23, (1, 1)),  # blocks spanning images
    "many-channels": (2, 130, 129, 9, 8, (2, 1)),
}


def arrays(rng, n, cin, cout, h, w, p):
    x = rng.standard_normal((n, cin, h, w))
    wt = rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)
    b = rng.standard_normal(cout)
    g = rng.standard_normal((n, cout, h + 2 * p[0] - 2, w + 2 * p[1] - 2))
    return x, wt, b, g


@pytest.mark.parametrize("geom", list(GEOMS.values()), ids=list(GEOMS))
def test_winograd64_matches_reference(geom, rng, close):
    x, w, b, g = arrays(rng, *geom)
    p = geom[-1]
    with cnnext.use_conv_algorithm("winograd"):
        plan = _conv2d_plan("conv2d", x, w, b, x.dtype, 1, p, 1, 1)
        assert (plan.method, plan.grad_input, plan.grad_weight) == ("winograd-float64",) * 3
        y = F.conv2d(x, w, b, padding=p)
        gx, gw, gb = F.conv2d_backward(g, x, w, padding=p, bias=True)
    close(y, R.conv2d(x, w, b, padding=p), np.float64)
    rx, rw, rb = R.conv2d_backward(g, x, w, padding=p)
    close(gx, rx, np.float64, err_msg="grad_x")
    close(gw, rw, np.float64, err_msg="grad_weight")
    close(gb, rb, np.float64, err_msg="grad_bias")


def test_winograd64_unbatched_and_layouts(rng, close):
    """A 3-D input, and non-contiguous arrays (converted, not modified)."""
    x, w, b, g = arrays(rng, 1, 5, 4, 9, 7, (1, 1))
    xt = np.asfortranarray(x[0])
    wt = w[:, :, ::-1, ::-1].copy()[:, :, ::-1, ::-1]  # negative strides
    x0, w0 = xt.copy(), wt.copy()
    with cnnext.use_conv_algorithm("winograd"):
        y = F.conv2d(xt, wt, b, padding=1)
        gx, gw, _ = F.conv2d_backward(g[0], xt, wt, padding=1)
    close(y, R.conv2d(x[0], w, b, padding=1), np.float64)
    rx, rw, _ = R.conv2d_backward(g[0], x[0], w, padding=1)
    close(gx, rx, np.float64)
    close(gw, rw, np.float64)
    assert np.array_equal(xt, x0) and np.array_equal(wt, w0)


def test_winograd64_same_bits_at_every_thread_count(rng, restore_threads):
    """Blocks of tiles are the threads' units and never split (the weight
    gradient's threads split the input channels, each summing over every
    tile in the same blocks): the same bits at 1, 2 and 3 threads."""
    x, w, b, g = arrays(rng, 5, 20, 14, 19, 23, (1, 1))
    got = []
    with cnnext.use_conv_algorithm("winograd"):
        for threads in (1, 2, 3):
            cnnext.set_num_threads(threads)
            got.append((F.conv2d(x, w, b, padding=1),) + F.conv2d_backward(g, x, w, padding=1)[:2])
    for other in got[1:]:
        for a, want in zip(other, got[0]):
            assert np.array_equal(a, want)


def test_winograd64_auto_rule():
    def method(shape, co, alg="auto", k=3, padding=1):
        x = np.empty(shape)
        with cnnext.use_conv_algorithm(alg):
            return _conv2d_plan("conv2d", x, np.empty((co, shape[1], k, k)), None, x.dtype, 1,
                                padding, 1, 1).method

    assert method((8, 256, 14, 14), 256) == "winograd-float64"  # 392 tiles
    assert method((8, 128, 28, 28), 128) == "winograd-float64"
    assert method((8, 64, 32, 32), 64) == "winograd-float64"
    assert method((2, 256, 14, 14), 256) == "winograd-float64"  # 98 tiles
    assert method((8, 128, 28, 28), 48) == "direct"             # 48 output channels
    assert method((8, 48, 32, 32), 64) == "direct"              # 48 input channels
    assert method((1, 256, 14, 14), 256) == "direct"            # 49 tiles
    assert method((8, 512, 7, 7), 512) == "direct"              # 512 x 512 filters
    assert method((8, 256, 14, 14), 256, "direct") == "direct"
    assert method((1, 2, 5, 5), 3, "winograd") == "winograd-float64"
    assert method((1, 2, 9, 9), 3, "winograd", k=5, padding=2) == "direct"
    with cnnext.use_conv_algorithm("winograd"):
        x = np.empty((1, 2, 9, 9))
        plan = _conv2d_plan("conv2d", x, np.empty((3, 2, 5, 5)), None, x.dtype, 1, 2, 1, 1)
        assert "float64 5x5 kernel" in plan.reason
        dil = _conv2d_plan("conv2d", x, np.empty((3, 2, 3, 3)), None, x.dtype, 1, 2, 2, 1)
        assert dil.method == "direct"


@pytest.mark.parametrize("where", ["x", "w", "g"])
def test_winograd64_nonfinite_as_direct(where, rng):
    """An inf or NaN reaches exactly the outputs it reaches directly (the
    transforms would spread it: the kernels then recompute directly)."""
    x, w, b, g = arrays(rng, 2, 6, 5, 8, 9, (1, 1))
    {"x": x, "w": w, "g": g}[where][1, 2, 1, 2] = np.inf
    x[0, 0, 0, 0] = np.nan
    got, want = ({}, {})
    for alg, out in (("winograd", got), ("direct", want)):
        with cnnext.use_conv_algorithm(alg):
            out["y"] = F.conv2d(x, w, b, padding=1)
            out["gx"], out["gw"], _ = F.conv2d_backward(g, x, w, padding=1)
    for k in got:
        assert np.array_equal(np.isfinite(got[k]), np.isfinite(want[k])), k
        assert np.array_equal(np.isnan(got[k]), np.isnan(want[k])), k


def test_winograd64_empty_reduction_writes_bias():
    """No input channels: the kernel declines (returns False) rather than
    leave the output unwritten."""
    y = np.full((1, 2, 3, 3), np.nan)
    ok = _winograd64.winograd64_forward(np.empty((1, 0, 3, 3)), np.empty((2, 0, 3, 3)),
                                        np.ones(2), y, 1, 1, False, 1)
    assert ok is False
    gw = np.full((2, 3, 3, 3), np.nan)  # no tiles: nothing summed
    ok = _winograd64.winograd64_grad_weight(np.empty((0, 3, 4, 4)), np.empty((0, 2, 4, 4)),
                                            gw, 1, 1, 1)
    assert ok is False


def _conv_longdouble(x, w, p):
    """conv2d (3x3, padding p) in long double, as a sum over the taps."""
    xp = np.pad(x.astype(np.longdouble), ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    return sum(np.einsum("nchw,oc->nohw", xp[:, :, i:i + oh, j:j + ow],
                         w[:, :, i, j].astype(np.longdouble))
               for i in range(3) for j in range(3))


def _grad_weight_longdouble(x, g, p):
    """The weight gradient of that convolution for g, tap by tap."""
    xp = np.pad(x.astype(np.longdouble), ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = g.shape[2:]
    taps = [np.einsum("nohw,nchw->oc", g.astype(np.longdouble), xp[:, :, i:i + oh, j:j + ow])
            for i in range(3) for j in range(3)]
    return np.stack(taps, -1).reshape(g.shape[1], x.shape[1], 3, 3)


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 60, reason="needs an extended long double")
def test_winograd64_error_within_4x_direct(rng):
    """The rule ``auto`` rests on: on realistic data the float64 Winograd
    RMS error against a long-double reference stays within 4x the direct
    algorithm's, forward, input and weight gradients."""
    c, hw = 128, 8
    x = rng.standard_normal((1, c, hw, hw))
    w = rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)
    g = rng.standard_normal((1, c, hw, hw))
    want = (_conv_longdouble(x, w, 1),
            _conv_longdouble(g, np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]),
                             1),
            _grad_weight_longdouble(x, g, 1))
    err = {}
    for alg in ("direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            got = (F.conv2d(x, w, padding=1),) + F.conv2d_backward(g, x, w, padding=1)[:2]
        err[alg] = [float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))
                    for a, b in zip(got, want)]
    for what, e_w, e_d in zip(("forward", "grad_x", "grad_w"), err["winograd"], err["direct"]):
        assert 0 < e_w <= 4 * e_d, (what, e_w, e_d)
