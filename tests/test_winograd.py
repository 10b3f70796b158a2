"""Winograd F(2x2, 3x3) convolutions (``cnnext.set_conv_algorithm``).

The kernels against the float64 reference over the geometry Winograd cuts
into 2x2 tiles (odd H and W, 1x1 images, padding 0/1/2 and asymmetric, N=1,
channel counts off the vector and panel widths, several tile blocks, tiles
of one block spread over several images), thread counts, memory layouts and
PyTorch (these two also for the dilation-phase kernel); the algorithm
setting (plans, cache, layers, context); the fallbacks (other geometries,
inf/NaN); and the accuracy claim that ``"auto"`` rests on.  Float64
Winograd: test_winograd64.py.

Tolerance: the float32 table of ``conftest.TOLERANCES`` (relative 1e-4,
absolute 1e-5 of the largest value).  Winograd's measured float32 error on
these sizes is below 2e-6 of the largest value (forward; the gradients
less), so the table has a margin of about 5.
"""
import threading
from collections import namedtuple

import numpy as np
import pytest

import cnnext
from cnnext import _plan
from cnnext import functional as F
from cnnext.functional.conv import _conv2d_plan
from cnnext import nn
from cnnext import reference as R

W = namedtuple("W", "n cin cout h w p")

# (id, geometry): 3x3 stride 1, every shape the tiling must get right.
CASES = [
    ("odd-HW", W(2, 3, 5, 7, 9, (1, 1))),
    ("1x1-image", W(2, 33, 40, 1, 1, (1, 1))),
    ("1x1-image-pad2", W(1, 4, 3, 1, 1, (2, 2))),
    ("pad0", W(3, 8, 17, 6, 5, (0, 0))),
    ("pad0-3x3-input", W(2, 5, 6, 3, 3, (0, 0))),
    ("pad2", W(1, 5, 3, 4, 7, (2, 2))),
    ("pad-asym", W(2, 6, 7, 5, 8, (0, 2))),
    ("pad-asym-2", W(1, 7, 9, 9, 4, (2, 1))),
    ("N1-C1", W(1, 1, 1, 7, 5, (1, 1))),
    ("C-off-width", W(2, 17, 9, 10, 11, (1, 1))),
    ("row-of-tiles", W(2, 4, 4, 2, 63, (1, 0))),
    ("column-of-tiles", W(2, 4, 4, 63, 2, (0, 1))),
    # more tiles than one block, blocks spanning images and tile rows
    ("blocks", W(5, 9, 11, 19, 23, (1, 1))),
    ("channels-64", W(2, 64, 64, 12, 12, (1, 1))),
    # 4 tile columns from rows of <= 8 values: four tile rows per vector
    # (blocks spanning images and a ragged last vector; odd rows/columns)
    ("map-7x7", W(5, 9, 10, 7, 7, (1, 1))),
    ("map-5x8", W(3, 4, 5, 5, 8, (1, 1))),
    ("map-6x6-pad2", W(2, 5, 6, 6, 6, (2, 2))),
    # 6 or 7 tile columns from rows of <= 16 values: up to four tile rows
    # per vector
    ("map-14x14", W(3, 6, 7, 14, 14, (1, 1))),
    ("map-11x13-pad0", W(2, 5, 4, 11, 13, (0, 0))),
]
IDS = [c[0] for c in CASES]
GEOMS = [c[1] for c in CASES]


def arrays(g, rng, dtype=np.float32):
    x = rng.standard_normal((g.n, g.cin, g.h, g.w)).astype(dtype)
    w = (rng.standard_normal((g.cout, g.cin, 3, 3)) / np.sqrt(9 * g.cin)).astype(dtype)
    b = rng.standard_normal(g.cout).astype(dtype)
    return x, w, b


def f64(*a):
    return [np.asarray(v, dtype=np.float64) for v in a]


def winograd_plan(x, w, b, p):
    return _conv2d_plan("conv2d", x, w, b, x.dtype, 1, p, 1, 1)


@pytest.mark.parametrize("g", GEOMS, ids=IDS)
def test_winograd_matches_reference(g, rng, close):
    x, w, b = arrays(g, rng)
    go = rng.standard_normal((g.n, g.cout, g.h + 2 * g.p[0] - 2, g.w + 2 * g.p[1] - 2))
    go = go.astype(np.float32)
    with cnnext.use_conv_algorithm("winograd"):
        plan = winograd_plan(x, w, b, g.p)
        assert (plan.method, plan.grad_input, plan.grad_weight) == ("winograd",) * 3
        y = F.conv2d(x, w, b, padding=g.p)
        gx, gw, gb = F.conv2d_backward(go, x, w, padding=g.p)
    close(y, R.conv2d(*f64(x, w, b), padding=g.p), np.float32)
    rx, rw, rb = R.conv2d_backward(*f64(go, x, w), padding=g.p)
    close(gx, rx, np.float32, err_msg="grad_x")
    close(gw, rw, np.float32, err_msg="grad_weight")
    close(gb, rb, np.float32, err_msg="grad_bias")
    assert y.dtype == gx.dtype == gw.dtype == np.float32


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("value", [np.nan, np.inf, 3e38])
@pytest.mark.parametrize("where", [(0, 3, 1, 3), (1, 15, 2, 16), (1, 0, 0, 0)])
def test_winograd_filter_grad_reports_non_finite(threads, value, where, rng):
    """The last step returns False when a result is inf or NaN (an inf/NaN
    partial, or finite partials whose transform overflows float32), for an
    input channel in a vector of eight and in the tail."""
    from cnnext import _winograd

    dup = rng.standard_normal((2, 16, 3, 17)).astype(np.float32)
    gw = np.empty((3, 17, 3, 3), np.float32)
    assert _winograd.winograd_filter_grad(dup, gw, threads)
    dup[where] = value
    dup[(1 - where[0],) + where[1:]] = value  # (a corner point: 6e38 overflows)
    assert not _winograd.winograd_filter_grad(dup, gw, threads)
    assert not np.isfinite(gw).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_winograd_thread_counts(threads, rng, close, restore_threads):
    """The forward pass and input gradient do not depend on the thread count
    (bitwise); the weight gradient matches the reference at every count."""
    g = W(5, 9, 11, 19, 23, (1, 1))
    x, w, b = arrays(g, rng)
    go = rng.standard_normal((g.n, g.cout, g.h, g.w)).astype(np.float32)
    with cnnext.use_conv_algorithm("winograd"):
        cnnext.set_num_threads(1)
        y1 = F.conv2d(x, w, b, padding=1)
        gx1, _, _ = F.conv2d_backward(go, x, w, padding=1)
        cnnext.set_num_threads(threads)
        plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, b.shape, x.dtype, (1, 1), (1, 1),
                                 (1, 1), 1, "winograd")
        y = plan.forward(x, w, b)
        gx, gw, _ = plan.backward(go, x, w, False)
    np.testing.assert_array_equal(y, y1)
    np.testing.assert_array_equal(gx, gx1)
    close(gw, R.conv2d_backward(*f64(go, x, w), padding=1)[1], np.float32)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_winograd_weight_grad_large_blocks(threads, rng, close, restore_threads):
    """A weight gradient whose dU (16 x Co x C) is out of L2 (over 512 KB,
    under the 2 MB of the channel split) sums its tiles in larger blocks,
    split evenly in whole panels, at least one per partial (280 tiles; with
    AVX2's 16-tile panels: blocks of 144 and 136 at one thread, 96, 96 and
    88 over two partials, 80, 80, 80 and 40 over three; with AVX-512's
    48-tile panels, 48 over three): the reference's numbers."""
    from cnnext import _winograd

    lanes = _winograd.panel_tiles()
    tb = _winograd.weight_grad_tiles(5, 13, 15, threads, 100, 96)
    nb = -(-280 // tb)
    assert tb % lanes == 0 and nb >= threads and tb - lanes < -(-280 // nb) <= tb
    expected = {16: {1: 144, 2: 96, 3: 80}, 48: {1: 144, 2: 96, 3: 48}}.get(lanes)
    if expected is not None:  # (the portable kernel's panels: the rule above)
        assert tb == expected[threads]
    g = W(5, 96, 100, 13, 15, (1, 1))
    x, w, b = arrays(g, rng)
    go = rng.standard_normal((g.n, g.cout, g.h, g.w)).astype(np.float32)
    cnnext.set_num_threads(threads)
    plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, b.shape, x.dtype, (1, 1), (1, 1),
                             (1, 1), 1, "winograd")
    assert plan.grad_weight == "winograd"
    assert plan.grad_weight_tasks == threads
    gx, gw, gb = plan.backward(go, x, w, True)
    rx, rw, rb = R.conv2d_backward(*f64(go, x, w), padding=1)
    close(gw, rw, np.float32, err_msg="grad_weight")
    close(gx, rx, np.float32, err_msg="grad_x")


@pytest.mark.parametrize("kind", ["plain", "dilated"])
def test_winograd_weight_grad_channel_split_same_bits(kind, rng, close, restore_threads):
    """A weight gradient of many channels (a dU of 2 MB and more) is split
    between threads by output channels: one partial, the same bits at 1, 2
    and 3 threads (odd map, output channels off the panel width), and the
    reference's numbers."""
    p, d = (1, 1) if kind == "plain" else (2, 2)
    shape = (5, 128, 15, 13) if kind == "plain" else (3, 128, 19, 17)  # threads for each
    kw = {"padding": p, "dilation": d}
    x, w, _, go = kind_arrays(shape, 260, rng, kw)
    grads = []
    for threads in (1, 2, 3):
        cnnext.set_num_threads(threads)
        plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, None, x.dtype, (1, 1), (p, p),
                                 (d, d), 1, "winograd")
        assert plan.method == ("winograd" if kind == "plain" else "winograd-phases")
        assert (plan.grad_weight_tasks, plan.threads) == (1, threads)
        grads.append(plan.backward(go, x, w, False)[1])
    np.testing.assert_array_equal(grads[1], grads[0])
    np.testing.assert_array_equal(grads[2], grads[0])
    close(grads[0], R.conv2d_backward(*f64(go, x, w), **kw)[1], np.float32)


@pytest.mark.parametrize("shape", [(5, 128, 15, 13), (1, 136, 33, 31)], ids=["odd", "N1"])
@pytest.mark.parametrize("bad", [False, True], ids=["finite", "nan"])
def test_winograd_backward_beside_same_bits(shape, bad, rng, close, restore_threads):
    """At two threads a backward with one weight-gradient partial runs the
    weight gradient beside the input gradient (one thread each): the same
    bits as one thread (odd maps, N=1, output channels off the panel
    width); a NaN in x goes to the direct kernels (the reference's NaNs)."""
    x, w, _, go = kind_arrays(shape, 260, rng, {"padding": 1})
    if bad:
        x[0, 3, 2, 5] = np.nan
    grads = []
    for threads in (1, 2):
        cnnext.set_num_threads(threads)
        plan = _plan.conv2d_plan("conv2d", x.shape, w.shape, None, x.dtype, (1, 1), (1, 1),
                                 (1, 1), 1, "winograd")
        assert plan._winograd_beside() == (threads == 2)
        grads.append(plan.backward(go, x, w, False)[:2])
    (gx1, gw1), (gx2, gw2) = grads
    np.testing.assert_array_equal(gx2, gx1)
    ref = R.conv2d_backward(*f64(go, x, w), padding=1)
    if bad:
        assert np.isnan(gw2).any() and np.array_equal(np.isnan(gw2), np.isnan(ref[1]))
        assert np.array_equal(np.isnan(gx2), np.isnan(ref[0]))
    else:
        np.testing.assert_array_equal(gw2, gw1)
        close(gx2, ref[0], np.float32)
        close(gw2, ref[1], np.float32)


@pytest.mark.parametrize("shape,cout", [((5, 128, 15, 13), 260), ((4, 96, 7, 7), 100),
                                         ((1, 136, 33, 31), 70)], ids=["odd", "7x7", "N1"])
def test_shared_weight_grad_same_bits(shape, cout, rng):
    """A helper thread that joins a one-partial weight gradient takes whole
    points of its blocks' products: the bits of one thread (several blocks,
    the 7x7 maps' four-tile-column transforms, output channels off the
    panel width); help before the run has started returns at once, and a
    second run does nothing."""
    from cnnext import _winograd

    x = rng.standard_normal(shape).astype(np.float32)
    go = rng.standard_normal((shape[0], cout) + shape[2:]).astype(np.float32)
    one = np.empty((1, 16, cout, shape[1]), np.float32)
    _winograd.winograd_grad_weight(x, go, one, 1, 1, 1)
    dup = np.full_like(one, np.nan)
    job = _winograd.SharedWeightGrad(x, go, dup, 1, 1)
    job.help()  # not started: returns
    assert not job.started and job.helped == 0
    # The run waits for the helper and leaves it each block's first point.
    worker = threading.Thread(target=job.run, args=(True,))
    worker.start()
    while not job.started:
        pass
    job.help()
    worker.join()
    np.testing.assert_array_equal(dup, one)
    N, C, H, W = shape
    tiles = N * (-(-H // 2)) * (-(-W // 2))
    blocks = -(-tiles // _winograd.weight_grad_tiles(N, H, W, 1, cout, C))
    assert blocks <= job.helped <= 16 * blocks  # at least each block's first point
    job.run()
    np.testing.assert_array_equal(dup, one)


# The undilated kernel and the dilation-phase one (``winograd-phases``) share
# the PyTorch and memory-layout checks: (input shape, conv2d keywords).
KINDS = {
    "plain": ((2, 32, 15, 14), {"padding": 1}),
    "dilated": ((2, 32, 17, 16), {"padding": 2, "dilation": 2}),
}
SMALL_KINDS = {
    "plain": ((2, 6, 9, 7), {"padding": 1}),
    "dilated": ((2, 6, 11, 9), {"padding": 2, "dilation": 2}),
}


def kind_arrays(shape, cout, rng, kw):
    """x, weight, bias and an output gradient for a 3x3 convolution."""
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((cout, shape[1], 3, 3)) / np.sqrt(9 * shape[1])).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    go = rng.standard_normal(R.conv2d(x, w, **kw).shape).astype(np.float32)
    return x, w, b, go


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_winograd_vs_torch(kind, rng):
    torch = pytest.importorskip("torch")
    shape, kw = KINDS[kind]
    x, w, b, go = kind_arrays(shape, 48, rng, kw)
    with cnnext.use_conv_algorithm("winograd"):
        y = F.conv2d(x, w, b, **kw)
        gx, gw, gb = F.conv2d_backward(go, x, w, **kw)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, **kw)
    yt.backward(torch.tensor(go, dtype=torch.float64))
    for ours, theirs in ((y, yt), (gx, xt.grad), (gw, wt.grad), (gb, bt.grad)):
        want = theirs.detach().numpy()
        assert np.abs(ours - want).max() <= 2e-5 * np.abs(want).max()


LAYOUTS = {
    "non-contiguous": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
    "fortran": np.asfortranarray,
    "read-only": lambda a: np.require(a, requirements="C").copy().view(),
}


@pytest.mark.parametrize("kind", sorted(SMALL_KINDS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_winograd_layouts_and_unbatched(layout, kind, rng):
    """Every memory layout gives the contiguous result, inputs unchanged; an
    unbatched sample gives the batched result for it."""
    shape, kw = SMALL_KINDS[kind]
    x, w, b, go = kind_arrays(shape, 5, rng, kw)
    laid = [LAYOUTS[layout](a) for a in (x, w, b, go)]
    if layout == "read-only":
        for a in laid:
            a.flags.writeable = False
    copies = [a.copy() for a in laid]
    with cnnext.use_conv_algorithm("winograd"):
        want_y = F.conv2d(x, w, b, **kw)
        want = F.conv2d_backward(go, x, w, **kw)
        y = F.conv2d(laid[0], laid[1], laid[2], **kw)
        got = F.conv2d_backward(laid[3], laid[0], laid[1], **kw)
        y3 = F.conv2d(x[1], w, b, **kw)
        gx3, gw3, _ = F.conv2d_backward(go[1], x[1], w, **kw)
        gx1, gw1, _ = F.conv2d_backward(go[1:], x[1:], w, **kw)
    np.testing.assert_array_equal(y, want_y)
    for a, b_ in zip(got, want):
        np.testing.assert_array_equal(a, b_)
    for a, c in zip(laid, copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(y3, want_y[1])
    np.testing.assert_array_equal(gx3, gx1[0])
    np.testing.assert_array_equal(gw3, gw1)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", ["x", "weight", "grad"])
@pytest.mark.parametrize("k", [3, 5])  # 5: Winograd on four shifted views
def test_winograd_nonfinite_falls_back_to_direct(bad, where, k, rng, close):
    """A result computed from an array holding inf/NaN is exactly the direct
    algorithm's (the Winograd transforms would spread it to neighbouring
    outputs); the result that does not read that array stays Winograd's."""
    g = W(2, 4, 3, 6, 6, (1, 1))
    x, w, b = arrays(g, rng)
    if k == 5:
        w = (rng.standard_normal((3, 4, 5, 5)) / np.sqrt(100)).astype(np.float32)
    p = k // 2  # "same": the input gradient runs on Winograd too
    go = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    {"x": x, "weight": w, "grad": go}[where][0, 1, 2, 2] = bad
    results = {}
    for alg in ("direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            results[alg] = (F.conv2d(x, w, b, padding=p),) + F.conv2d_backward(
                go, x, w, padding=p)[:2]
    untouched = {"x": 1, "weight": 2, "grad": 0}[where]  # y, grad_x, grad_w
    for i, (a, d) in enumerate(zip(results["winograd"], results["direct"])):
        if i == untouched:
            assert np.isfinite(a).all()
            close(a, d, np.float32)
        else:
            assert not np.isfinite(d).all()
            np.testing.assert_array_equal(a, d)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("adjoint", [False, True])
def test_winograd_filters_in_the_forward_region(threads, adjoint, rng):
    """winograd_forward_filters (the filter transform in the forward's own
    parallel region) gives the filters and outputs of the transform and
    then the forward, bit for bit, at every thread count, and reports an
    inf/NaN weight in any panel."""
    from cnnext import _winograd

    N, C, Co, H = 4, 24, 40, 16  # 5 panels of output channels, 256 tiles
    cin, cout = (Co, C) if adjoint else (C, Co)
    x = rng.standard_normal((N, cin, H, H)).astype(np.float32)
    w = rng.standard_normal((Co, C, 3, 3)).astype(np.float32)
    b = None if adjoint else rng.standard_normal(cout).astype(np.float32)
    width = _plan._winograd_upk(w, adjoint, 2).shape[1]
    upk = np.empty((16, width), np.float32)
    assert _winograd.winograd_filters(w, upk, adjoint, threads)
    want = np.empty((N, cout, H, H), np.float32)
    assert _winograd.winograd_forward(x, upk, b, want, 1, 1, threads)
    got_upk = np.full_like(upk, np.nan)
    got = np.full_like(want, np.nan)
    assert _winograd.winograd_forward_filters(x, w, got_upk, b, got, 1, 1, threads, adjoint)
    assert np.array_equal(got_upk[:, :-16], upk[:, :-16])
    assert got.tobytes() == want.tobytes()
    for where in [(0, 0, 0, 0), (Co - 1, C - 1, 2, 1), (17, 9, 1, 1)]:
        w_bad = w.copy()
        w_bad[where] = np.nan if where[0] % 2 else np.inf
        assert not _winograd.winograd_forward_filters(x, w_bad, got_upk, b, got, 1, 1, threads,
                                                      adjoint)


@pytest.mark.parametrize("k", [3, 5])
def test_winograd_bias_overflow_falls_back_to_direct(k, rng):
    """Finite x, weight and bias whose sum overflows to inf in the stored
    output (the kernels check the outputs plus bias as they store them):
    the direct algorithm's result, inf where it has inf."""
    x = (rng.standard_normal((2, 4, 7, 7)) * 1e32).astype(np.float32)
    w = (rng.standard_normal((3, 4, k, k)) / np.sqrt(4 * k * k)).astype(np.float32)
    b = np.array([np.finfo(np.float32).max, 0, -1], np.float32)
    ys = {}
    for alg in ("direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            ys[alg] = F.conv2d(x, w, b, padding=k // 2)
    assert np.isinf(ys["direct"]).any() and np.isfinite(ys["direct"][:, 1:]).all()
    np.testing.assert_array_equal(ys["winograd"], ys["direct"])


@pytest.mark.parametrize(
    "kwargs, dtype, why",
    [
        ({"stride": 2}, np.float32, "stride"),
        ({"stride": 2}, np.float64, "stride"),
        ({"dilation": 4}, np.float32, "dilation"),  # (dilation 2 runs the phases)
        ({"padding": 3}, np.float32, "padding"),
        ({"groups": 2}, np.float32, "groups"),
    ],
)
def test_forced_winograd_falls_back_to_direct(kwargs, dtype, why, rng, close):
    x = rng.standard_normal((2, 4, 9, 9)).astype(dtype)
    groups = kwargs.get("groups", 1)
    w = rng.standard_normal((4, 4 // groups, 3, 3)).astype(dtype)
    with cnnext.use_conv_algorithm("winograd"):
        y = F.conv2d(x, w, **kwargs)
        plan = _conv2d_plan("conv2d", x, w, None, np.dtype(dtype), kwargs.get("stride", 1),
                              kwargs.get("padding", 0), kwargs.get("dilation", 1), groups)
    assert plan.method != "winograd"
    assert groups > 1 or why in plan.reason
    close(y, R.conv2d(*f64(x, w), **kwargs), dtype)


def test_forced_winograd_falls_back_for_other_kernel_sizes(rng):
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    w = rng.standard_normal((3, 2, 2, 3)).astype(np.float32)
    with cnnext.use_conv_algorithm("winograd"):
        plan = _conv2d_plan("conv2d", x, w, None, x.dtype, 1, 1, 1, 1)
    assert plan.method == "direct" and "2x3 kernel" in plan.reason


def test_auto_rule():
    """``auto``: Winograd for float32 3x3 stride-1 layers with >= 32 input and
    output channels and >= 64 2x2 output tiles over the batch; direct
    otherwise; ``direct`` never Winograd, ``winograd`` wherever it can."""
    def method(x_shape, co, alg, dtype=np.float32, padding=(1, 1)):
        return _plan.conv2d_plan("conv2d", x_shape, (co, x_shape[1], 3, 3), None,
                                 np.dtype(dtype), (1, 1), padding, (1, 1), 1, alg).method
    assert method((8, 128, 28, 28), 128, "auto") == "winograd"
    assert method((8, 512, 7, 7), 512, "auto") == "winograd"  # 8 * 16 tiles
    assert method((1, 64, 16, 16), 64, "auto") == "winograd"  # 64 tiles
    assert method((1, 64, 15, 15), 64, "auto") == "winograd"  # 8 * 8 partial tiles
    assert method((1, 64, 14, 14), 64, "auto") == "direct"    # 49 tiles
    assert method((1, 256, 8, 8), 256, "auto") == "direct"
    assert method((16, 32, 32, 32), 32, "auto") == "winograd"
    assert method((16, 31, 32, 32), 64, "auto") == "direct"
    assert method((8, 128, 28, 28), 31, "auto") == "direct"
    assert method((8, 128, 28, 28), 128, "auto", np.float64) == "winograd-float64"
    assert method((8, 128, 28, 28), 128, "auto", padding=(3, 3)) == "direct"
    assert method((8, 128, 28, 28), 128, "direct") == "direct"
    assert method((1, 3, 5, 5), 2, "winograd") == "winograd"


def test_plan_records_algorithm_and_cache_follows_setting(rng):
    x = rng.standard_normal((1, 64, 16, 16)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    plans = {}
    for alg in ("auto", "direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            plans[alg] = _conv2d_plan("conv2d", x, w, None, x.dtype, 1, 1, 1, 1)
    assert plans["direct"].method == "direct" and plans["direct"].algorithm == "direct"
    assert plans["winograd"].method == "winograd"
    assert plans["auto"].method == "winograd" and "auto" in plans["auto"].reason
    assert "method='winograd'" in repr(plans["winograd"])
    assert "grad_weight='winograd'" in repr(plans["winograd"])


def test_layer_kept_plan_follows_setting(rng):
    conv = nn.Conv2D(4, 4, 3, padding=1, seed=0)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    with cnnext.use_conv_algorithm("direct"):
        conv.forward(x)
        assert conv._plan is not None and conv._plan.method == "direct"
        conv.forward(x)
    with cnnext.use_conv_algorithm("winograd"):
        y = conv.forward(x)
        assert conv._plan.method == "winograd"
        gx = conv.backward(np.ones_like(y))
        y2 = conv.forward(x)  # the kept plan's fast path
        assert conv._plan.method == "winograd"
    with cnnext.use_conv_algorithm("direct"):
        conv.forward(x)
        assert conv._plan.method == "direct"
    np.testing.assert_array_equal(y, y2)
    assert gx.shape == x.shape


def test_set_and_use_algorithm_setting():
    assert cnnext.get_conv_algorithm() == "auto"
    try:
        cnnext.set_conv_algorithm("direct")
        assert cnnext.get_conv_algorithm() == "direct"
        with cnnext.use_conv_algorithm("winograd"):
            assert cnnext.get_conv_algorithm() == "winograd"
        assert cnnext.get_conv_algorithm() == "direct"
    finally:
        cnnext.set_conv_algorithm("auto")
    for bad in ("fast", None, 3):
        with pytest.raises(ValueError, match="set_conv_algorithm: algorithm must be one of"):
            cnnext.set_conv_algorithm(bad)
        with pytest.raises(ValueError, match="use_conv_algorithm: algorithm must be one of"):
            with cnnext.use_conv_algorithm(bad):
                pass


@pytest.mark.parametrize("c, hw", [(64, 16), (256, 8)])
def test_winograd_error_within_4x_direct(c, hw, rng):
    """The rule ``auto`` rests on: on realistic data (unit-variance input,
    weights scaled by 1/sqrt(fan_in)) Winograd's float32 RMS error against
    float64 stays within 4x the direct algorithm's, forward and backward."""
    x = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    go = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    want = (R.conv2d(*f64(x, w), padding=1),) + R.conv2d_backward(*f64(go, x, w), padding=1)[:2]
    err = {}
    for alg in ("direct", "winograd"):
        with cnnext.use_conv_algorithm(alg):
            got = (F.conv2d(x, w, padding=1),) + F.conv2d_backward(go, x, w, padding=1)[:2]
        err[alg] = [np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) for a, b in zip(got, want)]
    for what, e_w, e_d in zip(("forward", "grad_x", "grad_w"), err["winograd"], err["direct"]):
        assert e_w <= 4 * e_d, (what, e_w, e_d)


_ISA_SCRIPT = """
import sys
import numpy as np
import cnnext
from cnnext import _winograd, functional as F, reference as R

rng = np.random.default_rng(0)
worst = 0.0
# 3x3 (odd sizes, padding 1-2); dilated, on the dilation phases (padding off
# the dilation); 5x5, on four shifted views (padding 0-2)
for n, c, co, h, w, k, p, d in [
        (2, 3, 5, 7, 9, 3, 1, 1), (5, 9, 11, 19, 23, 3, 1, 1), (2, 33, 17, 10, 11, 3, 2, 1),
        (2, 5, 7, 11, 13, 3, 2, 2), (2, 3, 4, 10, 11, 3, 1, 2), (1, 4, 5, 12, 10, 3, 4, 3),
        (2, 3, 5, 9, 11, 5, 2, 1), (2, 9, 17, 13, 10, 5, 1, 1), (1, 4, 6, 8, 9, 5, 0, 1)]:
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((co, c, k, k)) / np.sqrt(k * k * c)).astype(np.float32)
    e = d * (k - 1)
    g = rng.standard_normal((n, co, h + 2 * p - e, w + 2 * p - e)).astype(np.float32)
    kw = dict(padding=p, dilation=d)
    with cnnext.use_conv_algorithm("winograd"):
        got = (F.conv2d(x, wt, **kw),) + F.conv2d_backward(g, x, wt, **kw)[:2]
    x64, w64, g64 = (a.astype(np.float64) for a in (x, wt, g))
    want = (R.conv2d(x64, w64, **kw),) + R.conv2d_backward(g64, x64, w64, **kw)[:2]
    for a, b in zip(got, want):
        worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
print(_winograd.isa(), worst)
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_winograd_every_isa(isa, tmp_path):
    """CNNEXT_ISA selects each variant of the transform loops (and, with
    AVX-512, Winograd's own micro-kernel) the CPU supports."""
    import os
    import subprocess
    import sys

    from cnnext import _gemm

    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(_gemm.isa()):
        pytest.skip(f"this CPU runs {_gemm.isa()}, not {isa}")
    proc = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=dict(os.environ, CNNEXT_ISA=isa))
    assert proc.returncode == 0, proc.stderr
    name, worst = proc.stdout.split()
    assert name == isa
    assert float(worst) < 1e-5


_FILTERS_SCRIPT = """
import numpy as np
from cnnext import _gemm, _winograd

def transform(w):  # G w G^T in float64, in g_apply's order of operations
    def g(a, b, c):
        return [a, 0.5 * ((a + b) + c), 0.5 * ((a - b) + c), c]
    cols = [g(w[..., 0, j], w[..., 1, j], w[..., 2, j]) for j in range(3)]  # [j][r]
    rows = [g(cols[0][r], cols[1][r], cols[2][r]) for r in range(4)]        # [r][s]
    return np.stack([rows[r][s] for r in range(4) for s in range(4)])      # (16, Co, C)

MR = _gemm.block_sizes(np.float32)[0]
rng = np.random.default_rng(7)
for co, c in [(13, 7), (8, 3), (5, 9), (64, 64), (256, 33)]:
    w = rng.standard_normal((co, c, 3, 3)).astype(np.float32)
    w[0, 0, 1, 1] = -0.0
    w.reshape(-1)[1::97] *= 1e-39  # subnormal float32 weights
    for adjoint in (False, True):
        wt = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if adjoint else w
        Co, C = wt.shape[:2]
        Cop = -(-Co // MR) * MR
        want = np.zeros((16, Cop, C))
        want[:, :Co] = transform(wt.astype(np.float64))
        want = want.reshape(16, Cop // MR, MR, C).transpose(0, 1, 3, 2).reshape(16, -1)
        upk = np.full((16, Cop * C + 16), np.nan, np.float32)
        assert _winograd.winograd_filters(w, upk, adjoint)
        got = upk[:, :Cop * C]
        assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32)), (
            co, c, adjoint)
        for threads in (2, 3):  # the panels split between threads: the same bits
            upk_t = np.full_like(upk, np.nan)
            assert _winograd.winograd_filters(w, upk_t, adjoint, threads)
            assert np.array_equal(upk_t[:, :Cop * C].view(np.uint32), got.view(np.uint32))
        for bad in (np.inf, np.nan):  # an inf/NaN weight, in the last panel's last filter
            w_bad = w.copy()
            w_bad[-1, -1, 2, 0] = bad
            assert not _winograd.winograd_filters(w_bad, upk, adjoint)
            assert not _winograd.winograd_filters(w_bad, upk, adjoint, 3)

# The weight gradient's last step, G^T (sum of the partials) G: the float64
# sum of the partials in order, transformed in float64 (along the columns
# first) and rounded once, at every thread count (output channels split).
def gt(a, b, c, d):
    return [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d]

for nt, co, c in [(1, 13, 7), (2, 9, 33), (3, 40, 5), (3, 4, 17)]:
    dup = rng.standard_normal((nt, 16, co, c)).astype(np.float32)
    u = dup[0].astype(np.float64)
    for t in range(1, nt):
        u = u + dup[t]
    u = u.reshape(4, 4, co, c)
    cols = [gt(*u[:, j]) for j in range(4)]                         # [j][i]
    rows = [gt(*[cols[j][i] for j in range(4)]) for i in range(3)]  # [i][k]
    want = np.stack([np.stack(r, -1) for r in rows], -2).astype(np.float32)
    for threads in (1, 2, 3):
        gw = np.full((co, c, 3, 3), np.nan, np.float32)
        assert _winograd.winograd_filter_grad(dup, gw, threads)
        assert np.array_equal(gw.view(np.uint32), want.view(np.uint32)), (nt, co, c, threads)
print(_winograd.isa())
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_winograd_filters_bitwise_every_isa(isa, tmp_path):
    """Every variant of the filter transform (a panel's filters at a time
    with AVX-512 and AVX2, one by one otherwise) packs G w G^T computed in float64 and
    rounded once, bit for bit, zeros filling the last panel; odd channel
    counts, the adjoint (input-gradient) filters, -0.0 and subnormals; an
    inf/NaN weight reported.  Every variant of the weight gradient's last
    step (eight input channels at a time with AVX-512) gives its float64
    result rounded once, bit for bit."""
    import os
    import subprocess
    import sys

    from cnnext import _gemm

    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(_gemm.isa()):
        pytest.skip(f"this CPU runs {_gemm.isa()}, not {isa}")
    proc = subprocess.run([sys.executable, "-c", _FILTERS_SCRIPT], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path,
                          env=dict(os.environ, CNNEXT_ISA=isa))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [isa]


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_tile_rows_per_vector_forward_equals_runs(n, threads):
    """For maps of 4 tile columns from at most 8 input columns, the input
    transform and the scatter take four tile rows per vector, for 6 or 7
    tile columns from at most 16 the input transform takes the up to four
    tile rows of 16 consecutive tiles per vector; a map of the
    same values with a zero column and 16 more columns after it takes the
    runs of one tile row: each tile's transform and products are those of
    that tile alone, so the shared outputs are the same bits."""
    from cnnext import _plan, _winograd

    rng = np.random.default_rng(n)
    for H, W, ph, pw in ((7, 7, 1, 1), (8, 8, 1, 1), (5, 7, 1, 1), (6, 6, 2, 2), (14, 14, 1, 1),
                         (9, 11, 1, 1), (13, 13, 0, 0), (5, 10, 2, 2)):
        x = rng.standard_normal((n, 11, H, W)).astype(np.float32)
        wide = np.zeros((n, 11, H, W + 2 * pw + 16), np.float32)
        wide[..., :W] = x
        wide[..., W + 2 * pw:] = rng.standard_normal((n, 11, H, 16))
        w = rng.standard_normal((20, 11, 3, 3)).astype(np.float32)
        b = rng.standard_normal(20).astype(np.float32)
        upk = _plan._winograd_filters(w)
        OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
        assert (OW + 1) // 2 in (4, 6, 7)
        got = np.full((n, 20, OH, OW), np.nan, np.float32)
        _winograd.winograd_forward(x, upk, b, got, ph, pw, threads)
        ref = np.empty((n, 20, OH, wide.shape[3] + 2 * pw - 2), np.float32)
        _winograd.winograd_forward(wide, upk, b, ref, ph, pw, threads)
        np.testing.assert_array_equal(got, ref[..., :OW])
