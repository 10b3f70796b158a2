"""Plans: how each operation runs, decided once and reused.

Tested directly (geometry, the algorithm chosen for representative shapes,
immutability, the cache), and through the public API: a kept or cached plan
gives bitwise the result of a fresh functional call, also when a layer sees
a new batch size, dtype or memory layout, and the numpy backend receives the
caller's own arguments.
"""
import dataclasses
import functools

import numpy as np
import pytest

import cnnext
from cnnext import _conv, _gemm, _plan, nn
from cnnext import functional as F
from cnnext.functional.conv import _conv2d_plan
from cnnext.functional.pooling import _adaptive_plan, _pool_plan

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)


def conv_plan(x_shape, w_shape, s=1, p=0, d=1, bias=False, dtype=F32):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return _plan.conv2d_plan("conv2d", x_shape, w_shape, (w_shape[0],) if bias else None,
                             dtype, pair(s), pair(p), pair(d))


# --------------------------------------------------------------------------
# geometry and algorithm choice
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape,w_shape,s,p,d,out_shape",
    [
        ((2, 3, 9, 8), (4, 3, 3, 2), 1, 0, 1, (2, 4, 7, 7)),
        ((2, 3, 9, 8), (4, 3, 3, 2), 2, 1, 1, (2, 4, 5, 5)),
        ((2, 3, 9, 8), (4, 3, 3, 2), (2, 3), (1, 2), (2, 1), (2, 4, 4, 4)),
        ((3, 9, 8), (4, 3, 3, 2), 1, 1, 1, (4, 9, 9)),  # unbatched
        ((1, 1, 5, 5), (1, 1, 5, 5), 7, 0, 1, (1, 1, 1, 1)),
    ],
)
def test_conv_plan_geometry(x_shape, w_shape, s, p, d, out_shape):
    plan = conv_plan(x_shape, w_shape, s, p, d)
    assert plan.out_shape == out_shape
    assert plan.unbatched == (len(x_shape) == 3)
    assert plan.x4 == ((1,) + x_shape if len(x_shape) == 3 else x_shape)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(w_shape).astype(np.float32)
    assert plan.forward(x, w, None).shape == out_shape


def test_unused_huge_stride_is_clamped_for_the_kernels_only():
    """One output along an axis never uses the stride: the kernels get the
    smallest stride that still gives one output; the plan keeps the user's."""
    plan = conv_plan((1, 1, 5, 5), (1, 1, 3, 3), s=10**6)
    assert plan.stride == (10**6, 10**6)
    assert plan.out_shape == (1, 1, 1, 1)
    assert plan.kernel_stride == (3, 3)


def test_algorithm_choice_is_named_and_explained():
    small = conv_plan((1, 1, 28, 28), (8, 1, 3, 3))
    # (unpadded, stride 1, few channels: the small convolutions' direct
    # kernels, where AVX-512F or AVX2 runs them)
    gi, gw = ("small", "pvec") if _conv.small_kernels() else ("phases", "dot")
    assert (small.method, small.grad_input, small.grad_weight) == ("direct", gi, gw)
    assert conv_plan((1, 1, 28, 28), (8, 1, 3, 3), p=1, d=2).grad_input == "full-rotated"
    assert small.threads == 1  # 48k multiply-adds: one thread
    big = conv_plan((8, 64, 28, 28), (64, 64, 3, 3), p=1)
    assert big.grad_weight == "transposed"
    assert big.threads == cnnext.get_num_threads()
    assert conv_plan((2, 3, 9, 9), (4, 3, 3, 3), s=2).grad_input == "phases"
    # float64 at stride 1 with many channels: the rotated kernel on the
    # forward kernels (the same bits as the phase kernel, faster there)
    F64 = np.dtype(np.float64)
    wide = conv_plan((2, 32, 9, 9), (8, 32, 3, 3), p=1, dtype=F64)
    assert wide.grad_input == "full-rotated" and "float64" in wide.grad_input_reason
    for few in (conv_plan((2, 16, 9, 9), (8, 16, 3, 3), p=1, dtype=F64),  # few channels
                conv_plan((2, 32, 9, 9), (8, 32, 1, 1), dtype=F64),       # 1x1
                conv_plan((2, 32, 9, 9), (8, 32, 3, 3), p=3, dtype=F64),  # padding > k - 1
                conv_plan((2, 32, 9, 9), (8, 32, 3, 3), s=2, p=1, dtype=F64),
                conv_plan((2, 32, 9, 9), (8, 32, 3, 3), p=1)):            # float32
        assert few.grad_input == "phases"
    assert conv_plan((2, 3, 9, 9), (4, 3, 3, 3), s=2, d=2).grad_input == "col2im"
    # Padding beyond the (effective) kernel: the rotated form would need a
    # negative padding; the phase form crops instead, unless dilated.
    assert conv_plan((2, 3, 9, 9), (4, 3, 3, 3), p=3).grad_input == "phases"
    assert conv_plan((2, 3, 12, 12), (4, 3, 3, 3), p=5, d=2).grad_input == "col2im"
    empty = conv_plan((0, 3, 9, 9), (4, 3, 3, 3))
    assert (empty.method, empty.grad_input) == ("empty", "empty")
    huge = conv_plan((1, 1, 1, 1), (1, 1, 1, 1), s=2**31 - 1, p=2**31 - 1)
    assert huge.method == "gather" and huge.out_shape == (1, 1, 3, 3)
    for plan in (small, big, empty, huge):
        assert plan.reason and plan.grad_input_reason and plan.grad_weight_reason
        assert plan.scratch_bytes >= 0


def test_direct_plans_name_their_forward_kernel():
    """The in-place 3x3 (AVX-512F or AVX2) and result-channel (AVX-512F)
    kernels are the plan's record (the tiles elsewhere), named in its
    reason too."""
    avx512 = _gemm.isa() == "avx512"
    vector = _gemm.isa() in ("avx512", "avx2")
    same = conv_plan((64, 16, 28, 28), (16, 16, 3, 3), p=1)
    assert same.forward_kernel == ("in-place 3x3" if vector else "tiles")
    assert ("in-place 3x3" in same.reason) == vector
    ocv = conv_plan((64, 32, 14, 14), (64, 32, 3, 3), s=2, p=1)
    assert ocv.forward_kernel in (("result-channel",) if avx512 else ("tiles", "result-channel"))
    assert conv_plan((64, 32, 14, 14), (64, 32, 3, 3), s=2, p=1, dtype=F64).forward_kernel == (
        "tiles")
    assert conv_plan((64, 16, 28, 28), (32, 16, 3, 3), s=2, p=1).forward_kernel == "tiles"
    assert conv_plan((64, 16, 28, 28), (16, 16, 3, 3), p=2).forward_kernel == "tiles"
    for plan in (conv_plan((64, 16, 28, 28), (32, 16, 1, 1), s=2),
                 conv_plan((0, 3, 9, 9), (4, 3, 3, 3))):
        assert plan.forward_kernel == ""


def test_grouped_plans_run_the_group_plans_algorithms_on_every_group():
    plan = _plan.conv2d_plan("conv2d", (32, 64, 32, 32), (64, 16, 3, 3), None, F32, (1, 1),
                             (1, 1), (1, 1), 4)
    assert (plan.method, plan.grad_input, plan.grad_weight) == ("grouped",) * 3
    assert plan.groups == 4 and "groups = 4" in plan.reason
    assert plan.grad_input_reason and plan.grad_weight_reason
    gp = plan.group_plan
    assert gp is not None and gp.groups == 1 and gp.group_plan is None
    assert gp.x_shape == (32, 16, 32, 32) and gp.weight_shape == (16, 16, 3, 3)
    assert (gp.method, gp.grad_input) == ("direct", "phases")
    # 16 output channels fill one float32 vector: the packed gradient
    # (16 x 16 tiles); fewer than half a panel (its width depends on the
    # CPU's vectors), with long rows: dot products; a float64 panel (16
    # columns) is full: the packed gradient
    assert gp.grad_weight == "transposed"
    nr = _gemm.block_sizes(F32)[1]
    g_few = conv_plan((32, 16, 32, 32), (nr // 2 - 1, 16, 3, 3), p=1)
    assert g_few.grad_weight == "dot" and "half" in g_few.grad_weight_reason
    g64 = _plan.conv2d_plan("conv2d", (32, 64, 32, 32), (64, 16, 3, 3), None, F64, (1, 1),
                            (1, 1), (1, 1), 4).group_plan
    assert g64.grad_weight == "transposed"
    half64 = _gemm.block_sizes(F64)[1] // 2  # half a float64 panel: dot products
    f64_half = _plan.conv2d_plan("conv2d", (32, 16, 32, 32), (half64, 16, 3, 3), None, F64,
                                 (1, 1), (1, 1), (1, 1))
    assert f64_half.grad_weight == "dot"
    # short rows (8x12 positions) keep the packed gradient (with padding, or
    # without AVX-512F and AVX2; unpadded, the small convolutions' direct
    # kernel)
    assert conv_plan((64, 6, 12, 12), (16, 6, 5, 5), p=1).grad_weight == "transposed"
    lenet2 = conv_plan((64, 6, 12, 12), (16, 6, 5, 5))
    assert lenet2.grad_weight == ("small" if _conv.small_kernels() else "transposed")
    # float32, 32-64 taps: over short rows (7x7) the packed gradient, over
    # long ones (28x28) dot products; fewer taps: the packed gradient into
    # more than half a panel of output channels, else (or float64) dot products
    short = conv_plan((64, 8, 14, 14), (64, 8, 2, 2), s=2)
    assert short.grad_weight == "transposed" and "short rows" in short.grad_weight_reason
    assert conv_plan((64, 8, 28, 28), (64, 8, 2, 2)).grad_weight == "dot"
    few_taps = conv_plan((64, 4, 28, 28), (32, 4, 2, 2), s=2)
    assert few_taps.grad_weight == ("transposed" if nr // 2 < 32 else "dot")
    assert conv_plan((64, 4, 28, 28), (nr // 2, 4, 2, 2), s=2).grad_weight == "dot"
    assert conv_plan((64, 4, 28, 28), (32, 4, 2, 2), s=2, dtype=F64).grad_weight == "dot"
    assert conv_plan((64, 8, 14, 14), (64, 8, 2, 2), s=2, dtype=F64).grad_weight == "dot"
    # a 1x1 kernel: each tap a whole plane, read in place (at a stride, of
    # the input at the output's positions: the ``subsampled`` plan)
    for dt in (F32, F64):
        for x_shape, co in (((64, 32, 28, 28), 64), ((64, 16, 28, 28), 32), ((8, 8, 7, 7), 16)):
            assert conv_plan(x_shape, (co, x_shape[1], 1, 1), dtype=dt).grad_weight == "transposed"
    shortcut = conv_plan((64, 16, 28, 28), (32, 16, 1, 1), s=2)
    sub = shortcut.sub_plan
    assert (shortcut.method, shortcut.grad_input, shortcut.grad_weight) == (
        "subsampled", "phases", "transposed")
    assert sub is not None and sub.x_shape == (64, 16, 14, 14) and sub.stride == (1, 1)
    assert "output's positions" in shortcut.reason and "whole input plane" in (
        shortcut.grad_weight_reason)
    assert conv_plan((64, 16, 28, 28), (32, 16, 1, 1), s=2, p=1).method == "direct"
    # a grouped one runs its groups together on the direct kernels
    grouped = _plan.conv2d_plan("conv2d", (8, 16, 28, 28), (32, 4, 1, 1), None, F32, (2, 2),
                                (0, 0), (1, 1), 4)
    assert grouped.method == "grouped" and grouped.group_plan.method == "direct"
    assert "every group at once" in grouped.grad_weight_reason
    # every group in one call: the group's scratch, and each group's packed
    # weight (16 rows, rounded up to whole MR-row panels, x K = 144)
    assert plan.threads == gp.threads and "every group at once" in plan.grad_weight_reason
    mr = _gemm.block_sizes(F32)[0]
    assert plan.scratch_bytes == gp.scratch_bytes + 3 * -(-16 // mr) * mr * 144 * 4
    # depthwise (groups == C_in, one input channel per filter) has its own
    # kernels, with any channel multiplier; a huge padding falls back to the
    # grouped plan, whose groups take the gather path
    for co in (8, 16):
        dw = _plan.conv2d_plan("conv2d", (2, 8, 9, 9), (co, 1, 3, 3), None, F32, (2, 2),
                               (1, 1), (1, 1), 8)
        assert (dw.method, dw.grad_input, dw.grad_weight) == ("depthwise",) * 3
        assert dw.group_plan is None and "groups = C_in = 8" in dw.reason
        assert dw.scratch_bytes > 0
    huge = _plan.conv2d_plan("conv2d", (1, 2, 3, 3), (2, 1, 1, 1), None, F32,
                             (2**31 - 1, 2**31 - 1), (2**31 - 1, 2**31 - 1), (1, 1), 2)
    assert huge.method == "grouped" and huge.group_plan.method == "gather"
    # groups that are not depthwise stay grouped, even with one channel per group
    assert _plan.conv2d_plan("conv2d", (2, 8, 9, 9), (4, 2, 3, 3), None, F32, (1, 1), (1, 1),
                             (1, 1), 4).method == "grouped"
    # nothing to read beats groups; groups=1 never groups
    assert _plan.conv2d_plan("conv2d", (0, 4, 5, 5), (4, 2, 3, 3), None, F32, (1, 1), (0, 0),
                             (1, 1), 2).method == "empty"
    assert conv_plan((2, 4, 5, 5), (4, 4, 3, 3)).group_plan is None


@pytest.mark.parametrize(
    "x_shape,k,d,pad,extra",
    [
        ((2, 3, 7, 6), (3, 3), (1, 1), (1, 1), None),
        ((2, 3, 7, 6), (2, 3), (1, 1), (0, 1), (1, 0)),  # total (1, 2)
        ((2, 3, 7, 6), (4, 2), (1, 2), (1, 1), (1, 0)),  # total (3, 2)
        ((3, 7, 6), (2, 2), (2, 2), (1, 1), None),       # total (2, 2), unbatched
    ],
)
def test_same_padding_plan(x_shape, k, d, pad, extra):
    w_shape = (4, x_shape[-3]) + k
    plan = _plan.conv2d_plan("conv2d", x_shape, w_shape, None, F32, (1, 1), "same", d)
    assert plan.padding == pad and plan.pad_extra == extra
    assert plan.out_shape[-2:] == x_shape[-2:]
    H, W = x_shape[-2:]
    assert plan.x4[2:] == (H + (extra or (0, 0))[0], W + (extra or (0, 0))[1])
    valid = _plan.conv2d_plan("conv2d", x_shape, w_shape, None, F32, (1, 1), "valid", d)
    assert valid.padding == (0, 0) and valid.pad_extra is None


def test_conv_method_is_the_one_place_that_chooses():
    """Every ConvPlan.method comes from _conv_method (a new method is one
    branch there)."""
    choose = _plan._conv_method
    assert choose((0, 2, 5, 5), (4, 2, 3, 3), 1, (1, 1), (0, 0), 4)[0] == "empty"
    assert choose((2, 4, 5, 5), (4, 2, 3, 3), 2, (1, 1), (0, 0), 4)[0] == "grouped"
    assert choose((2, 4, 5, 5), (4, 4, 3, 3), 1, (1, 1), (0, 0), 4)[0] == "direct"
    assert choose((1, 1, 1, 1), (1, 1, 1, 1), 1, (1, 1), (2**31 - 1,) * 2, 4)[0] == "gather"


def test_conv_transpose2d_and_conv1d_plans():
    t = _plan.conv_transpose2d_plan("conv_transpose2d", (2, 4, 5, 5), (4, 3, 2, 2), (6,), F32,
                                    (2, 2), (0, 0), (1, 1), (1, 1), 2)
    assert t.groups == 2 and t.out_shape == (2, 6, 11, 11) and "2 groups" in t.reason
    # the backward runs the convolution it transposes, on the output's shape
    assert t.adjoint.x_shape == (2, 6, 11, 11) and t.adjoint.method == "grouped"
    assert t.adjoint.out4 == (2, 4, 5, 5)
    c1 = _plan.conv1d_plan("conv1d", (3, 4, 20), (6, 2, 3), None, F32, 2, 1, 1, 2)
    assert c1.out_shape == (3, 6, 10) and c1.plan2d.x_shape == (3, 4, 1, 20)
    assert c1.plan2d.method == "grouped" and c1.plan2d.stride == (1, 2)
    assert _plan.conv1d_plan("conv1d", (4, 20), (6, 4, 4), None, F32, 1, "same", 1,
                             1).out_shape == (6, 20)


def test_plans_are_immutable():
    plan = conv_plan((1, 1, 8, 8), (2, 1, 3, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.method = "gather"


def test_plan_builders_validate_geometry():
    with pytest.raises(ValueError, match=r"conv2d: kernel is larger than the padded input"):
        conv_plan((1, 1, 2, 2), (1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"x.shape\[1\] \(2\) must equal weight.shape\[1\] \(3\)"):
        conv_plan((1, 2, 8, 8), (4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"padding must be at most half the kernel"):
        _plan.pool2d_plan("max_pool2d", "max", (1, 1, 8, 8), F32, (2, 2), (2, 2), (2, 2))


def test_linear_plan_names_its_product():
    assert _plan.linear_plan("linear", (1, 1352), (10, 1352), (10,), F32).method == "dot"
    assert _plan.linear_plan("linear", (64, 256), (120, 256), None, F32).method == "gemm"


# --------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------


def test_a_steady_call_reuses_its_plan_and_the_thread_count_is_part_of_it():
    x = np.ones((2, 1, 8, 8), np.float32)
    w = np.ones((3, 1, 3, 3), np.float32)
    F.conv2d(x, w)
    a = _conv2d_plan("conv2d", x, w, None, F32, 1, 0, 1)
    assert _conv2d_plan("conv2d", x, w, None, F32, 1, 0, 1) is a
    old = cnnext.get_num_threads()
    try:
        cnnext.set_num_threads(old + 1)
        b = _conv2d_plan("conv2d", x, w, None, F32, 1, 0, 1)
    finally:
        cnnext.set_num_threads(old)
    assert b is not a


@pytest.mark.parametrize("bad,exc", [(True, TypeError), (1.0, TypeError), (0, ValueError)])
def test_a_cached_plan_never_admits_an_invalid_option(bad, exc):
    """True == 1 and 1.0 == 1 in Python: the cache must not let them through."""
    x, w = np.ones((1, 1, 6, 6)), np.ones((1, 1, 3, 3))
    F.conv2d(x, w, stride=1)
    F.max_pool2d(x, 2, stride=1)
    with pytest.raises(exc, match="conv2d: stride"):
        F.conv2d(x, w, stride=bad)
    with pytest.raises(exc, match="max_pool2d: stride"):
        F.max_pool2d(x, 2, stride=bad)


# --------------------------------------------------------------------------
# reuse is bitwise the same as a fresh call
# --------------------------------------------------------------------------


def _fresh(fn, *args, **kwargs):
    _plan.forget()
    return fn(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_match_fresh_functional_calls_bitwise(dtype, rng):
    conv = nn.Conv2D(2, 5, 3, stride=1, padding=1, dtype=dtype, seed=0)
    pool = nn.MaxPool2D(2)
    dense = nn.Dense(5 * 4 * 4, 3, dtype=dtype, seed=1)
    for n in (2, 2, 3, 1):  # a repeat (kept plan), then new batch sizes
        x = rng.standard_normal((n, 2, 8, 8)).astype(dtype)
        y = conv.forward(x)
        np.testing.assert_array_equal(y, _fresh(F.conv2d, x, conv.weight, conv.bias, 1, 1))
        p = pool.forward(y)
        np.testing.assert_array_equal(p, _fresh(F.max_pool2d, y, 2))
        f = p.reshape(n, -1)
        z = dense.forward(f)
        np.testing.assert_array_equal(z, _fresh(F.linear, f, dense.weight, dense.bias))
        gz = rng.standard_normal(z.shape).astype(dtype)
        for layer in (conv, dense):
            layer.zero_grad()
        gf = dense.backward(gz)
        want = _fresh(F.linear_backward, gz, f, dense.weight)
        for got, ref in zip((gf, dense.grads["weight"], dense.grads["bias"]), want):
            np.testing.assert_array_equal(got, ref)
        gp = gf.reshape(p.shape)
        gy = pool.backward(gp)
        _, idx = F.max_pool2d(y, 2, return_indices=True)
        np.testing.assert_array_equal(gy, _fresh(F.max_pool2d_backward, gp, idx, y.shape))
        gx = conv.backward(gy)
        want = _fresh(F.conv2d_backward, gy, x, conv.weight, 1, 1)
        for got, ref in zip((gx, conv.grads["weight"], conv.grads["bias"]), want):
            np.testing.assert_array_equal(got, ref)


def test_a_layer_follows_a_new_dtype_and_layout(rng):
    conv = nn.Conv2D(3, 4, 3, seed=0)  # float32
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    y = conv.forward(x)
    # float64 and Fortran-ordered / strided inputs: converted, same answer.
    for other in (x.astype(np.float64), np.asfortranarray(x),
                  np.ascontiguousarray(x[:, :, ::-1])[:, :, ::-1]):
        np.testing.assert_array_equal(conv.forward(other), y)
    # and back to the kept kind of array
    np.testing.assert_array_equal(conv.forward(x), y)
    # A non-contiguous view: the functional call and the layer agree.
    xs = rng.standard_normal((2, 3, 14, 7)).astype(np.float32)[:, :, ::2]
    np.testing.assert_array_equal(conv.forward(xs), F.conv2d(xs, conv.weight, conv.bias))


def test_a_steady_layer_follows_the_thread_count(rng):
    conv = nn.Conv2D(8, 8, 3, padding=1, seed=0)
    x = rng.standard_normal((16, 8, 32, 32)).astype(np.float32)
    conv.forward(x)
    kept = conv._plan
    old = cnnext.get_num_threads()
    try:
        cnnext.set_num_threads(1)
        conv.forward(x)
        assert conv._plan is not kept and conv._plan.threads == 1
    finally:
        cnnext.set_num_threads(old)


def test_first_layer_skips_the_input_gradient_only_when_asked(rng):
    model = nn.Sequential(nn.Conv2D(1, 2, 3, seed=0), nn.Flatten(), nn.Dense(2 * 6 * 6, 3, seed=1))
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    model.forward(x)
    gx = model.backward(g)
    grads = {k: v.copy() for k, v in model.grads.items()}
    model.zero_grad()
    model.forward(x)
    assert model.backward(g, input_grad=False) is None
    for k, v in model.grads.items():
        np.testing.assert_array_equal(v, grads[k])
    assert gx.shape == x.shape


# --------------------------------------------------------------------------
# the numpy backend sees the caller's arguments
# --------------------------------------------------------------------------


def test_the_reference_receives_the_callers_arguments(monkeypatch):
    calls = []
    real = cnnext.reference.conv2d

    def spy(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        calls.append(dict(x_shape=np.shape(x), stride=stride, padding=padding,
                          dilation=dilation, groups=groups))
        return real(x, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(cnnext.reference, "conv2d", spy)
    x = np.ones((1, 5, 5))  # unbatched
    w = np.ones((2, 1, 3, 3))
    with cnnext.use_backend("numpy"):
        y = F.conv2d(x, w, stride=[10**6, 2], padding=(0, 1))
    # Not rewritten: 3-D stays 3-D, the unused huge stride is not clamped.
    assert calls[0] == {"x_shape": (1, 5, 5), "stride": [10**6, 2], "padding": (0, 1),
                        "dilation": 1, "groups": 1}
    np.testing.assert_array_equal(y, F.conv2d(x, w, stride=[10**6, 2], padding=(0, 1)))


def test_the_reference_computes_huge_paddings_itself():
    """Padding near 2**31: the reference loops over output positions, an
    algorithm of its own, instead of sharing the kernels' gather path."""
    x, w = np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 2.0)
    kw = dict(stride=2**31 - 1, padding=2**31 - 1)
    want = np.zeros((1, 1, 3, 3))
    want[0, 0, 1, 1] = 2.0
    np.testing.assert_array_equal(cnnext.reference.conv2d(x, w, **kw), want)
    gx, gw, gb = cnnext.reference.conv2d_backward(np.ones((1, 1, 3, 3)), x, w, **kw)
    np.testing.assert_array_equal(gx, [[[[2.0]]]])
    np.testing.assert_array_equal(gw, [[[[1.0]]]])


def test_threads_calling_different_shapes_never_share_a_plan():
    """Threads alternating between two geometries always get their own plan."""
    import threading

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    xs = [rng.standard_normal((1, 2, h, h)).astype(np.float32) for h in (5, 9)]
    want = [F.conv2d(x, w) for x in xs]
    bad = []

    def work(i):
        for _ in range(300):
            y = F.conv2d(xs[i], w)
            if y.shape != want[i].shape or not np.array_equal(y, want[i]):
                bad.append(i)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


# --------------------------------------------------------------------------
# pooling plans: geometry, options, method
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "H,k,s,p,d,ceil_mode,want",
    [
        (5, 2, 2, 0, 1, False, 2),
        (5, 2, 2, 0, 1, True, 3),    # a last, clipped window
        (5, 2, 2, 1, 1, True, 3),    # rounding up gives 4; the 4th starts in the padding
        (7, 4, 3, 2, 1, True, 3),    # likewise
        (8, 4, 3, 2, 1, True, 4),    # the 4th starts on the last input row: kept
        (9, 3, 2, 1, 2, False, 4),   # dilation: effective kernel 5
        (10, 3, 2, 1, 2, False, 4),
        (10, 3, 2, 1, 2, True, 5),
    ],
)
def test_pool_plan_output_size(H, k, s, p, d, ceil_mode, want):
    plan = _plan.pool2d_plan("max_pool2d", "max", (1, 2, H, 3), F32, (k, 1), (s, 1), (p, 0),
                             (d, 1), ceil_mode)
    assert plan.out_shape == (1, 2, want, 3)
    assert plan.method == "windows" and plan.dilation == (d, 1)
    assert plan.kernel_args == (k, 1, s, 1, p, 0, d, 1, plan.threads)


def test_avg_pool_plan_carries_its_divisor_options():
    plan = _plan.pool2d_plan("avg_pool2d", "avg", (2, 3, 7, 7), F32, (3, 3), (2, 2), (1, 1),
                             (1, 1), True, False, 5)
    assert (plan.ceil_mode, plan.count_include_pad, plan.divisor_override) == (True, False, 5)
    assert plan.kernel_args == (3, 3, 2, 2, 1, 1, 0, 5, plan.threads)
    assert _plan.pool2d_plan("avg_pool2d", "avg", (2, 3, 7, 7), F32, (3, 3), (2, 2), (1, 1)
                             ).kernel_args[6:8] == (1, 0)


def test_adaptive_plans_name_the_global_path():
    glob = _plan.adaptive_pool2d_plan("adaptive_avg_pool2d", "adaptive_avg", (8, 512, 7, 7),
                                      F32, (1, 1))
    assert glob.method == "global" and glob.out_shape == (8, 512, 1, 1)
    assert "mean" in glob.reason
    for kind, o in (("adaptive_avg", (2, 1)), ("adaptive_max", (1, 1)), ("adaptive_max", (3, 5))):
        plan = _plan.adaptive_pool2d_plan("f", kind, (8, 512, 7, 7), F32, o)
        assert plan.method == "adaptive" and plan.out_shape == (8, 512) + o


def test_functional_pools_reuse_their_plans():
    x = np.ones((2, 3, 9, 9), np.float32)
    a = _pool_plan("max_pool2d", "max", x, F32, 3, 2, 1, 2, True)
    assert _pool_plan("max_pool2d", "max", x, F32, 3, 2, 1, 2, True) is a
    assert _pool_plan("max_pool2d", "max", x, F32, (3, 3), (2, 2), (1, 1), (2, 2), True) \
        .out_shape == a.out_shape
    assert _pool_plan("max_pool2d", "max", x, F32, 3, 2, 1, 2, False) is not a
    g = _adaptive_plan("adaptive_avg_pool2d", "adaptive_avg", x.shape, F32, 1)
    assert g is _adaptive_plan("adaptive_avg_pool2d", "adaptive_avg", x.shape, F32, 1)
    assert g.method == "global"
    assert _adaptive_plan("f", "adaptive_avg", x.shape, F32, (None, 1)).out_shape == (2, 3, 9, 1)


@pytest.mark.parametrize(
    "option,bad,exc",
    [("ceil_mode", 1, TypeError), ("dilation", True, TypeError), ("dilation", 0, ValueError)],
)
def test_a_cached_pool_plan_never_admits_an_invalid_option(option, bad, exc):
    x = np.ones((1, 1, 6, 6))
    F.max_pool2d(x, 2, ceil_mode=True, dilation=1)
    with pytest.raises(exc, match=f"max_pool2d: {option}"):
        F.max_pool2d(x, 2, **{option: bad})
    F.avg_pool2d(x, 2, count_include_pad=True)
    with pytest.raises(TypeError, match="avg_pool2d: count_include_pad"):
        F.avg_pool2d(x, 2, count_include_pad=1)
    F.adaptive_avg_pool2d(x, 1)
    with pytest.raises(TypeError, match="adaptive_avg_pool2d: output_size"):
        F.adaptive_avg_pool2d(x, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_layers_match_fresh_functional_calls_bitwise(dtype, rng):
    mp = nn.MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True)
    ap = nn.AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False)
    gap = nn.AdaptiveAvgPool2D(1)
    amp = nn.AdaptiveMaxPool2D((3, None))
    mp1 = nn.MaxPool1D(3, 2, 1, dilation=2, ceil_mode=True)
    ap1 = nn.AvgPool1D(4, 3, 2, ceil_mode=True, count_include_pad=False)
    for n in (2, 2, 3):  # a repeat (kept plan), then a new batch size
        x = np.round(rng.standard_normal((n, 4, 11, 10)) * 2).astype(dtype)
        y = mp.forward(x)
        want, idx = _fresh(F.max_pool2d, x, 3, 2, 1, 2, True, True)
        np.testing.assert_array_equal(y, want)
        g = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(mp.backward(g), _fresh(F.max_pool2d_backward, g, idx,
                                                             x.shape))
        y = ap.forward(x)
        np.testing.assert_array_equal(y, _fresh(F.avg_pool2d, x, 3, 2, 1, True, False))
        g = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(
            ap.backward(g), _fresh(F.avg_pool2d_backward, g, x.shape, 3, 2, 1, True, False))
        y = gap.forward(x)
        np.testing.assert_array_equal(y, _fresh(F.adaptive_avg_pool2d, x, 1))
        g = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(gap.backward(g),
                                      _fresh(F.adaptive_avg_pool2d_backward, g, x.shape))
        y = amp.forward(x)
        want, idx = _fresh(F.adaptive_max_pool2d, x, (3, None), True)
        np.testing.assert_array_equal(y, want)
        g = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(amp.backward(g),
                                      _fresh(F.adaptive_max_pool2d_backward, g, idx, x.shape))
        x1 = x[:, :, 0]
        for layer, fwd, bwd in (
            (mp1, lambda v: F.max_pool1d(v, 3, 2, 1, 2, True, True), None),
            (ap1, lambda v: F.avg_pool1d(v, 4, 3, 2, True, False),
             lambda g, shape: F.avg_pool1d_backward(g, shape, 4, 3, 2, True, False)),
        ):
            y = layer.forward(x1)
            want = _fresh(fwd, x1)
            if bwd is None:
                want, idx = want
                bwd = functools.partial(lambda i, g, shape: F.max_pool1d_backward(g, i, shape),
                                        idx)
            np.testing.assert_array_equal(y, want)
            g = rng.standard_normal(y.shape).astype(dtype)
            np.testing.assert_array_equal(layer.backward(g), _fresh(bwd, g, x1.shape))
    assert gap._plan is not None and gap._plan.method == "global"
    assert mp1._plan is not None and mp1._plan.x_shape == (3, 4, 1, 10)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_conv_layers_match_fresh_functional_calls_bitwise(dtype, rng):
    conv = nn.Conv2D(4, 6, (2, 3), padding="same", groups=2, dtype=dtype, seed=0)
    up = nn.ConvTranspose2D(6, 4, 2, stride=2, groups=2, dtype=dtype, seed=1)
    c1 = nn.Conv1D(4, 4, 3, padding=1, groups=4, dtype=dtype, seed=2)
    for n in (2, 2, 1):  # a repeat (kept plan), then a new batch size
        x = rng.standard_normal((n, 4, 6, 5)).astype(dtype)
        y = conv.forward(x)
        np.testing.assert_array_equal(
            y, _fresh(F.conv2d, x, conv.weight, conv.bias, 1, "same", 1, 2))
        z = up.forward(y)
        np.testing.assert_array_equal(
            z, _fresh(F.conv_transpose2d, y, up.weight, up.bias, 2, 0, 0, 2))
        s = c1.forward(x[:, :, 0])
        np.testing.assert_array_equal(s, _fresh(F.conv1d, x[:, :, 0], c1.weight, c1.bias, 1, 1,
                                                1, 4))
        for layer in (conv, up, c1):
            layer.zero_grad()
        gz = rng.standard_normal(z.shape).astype(dtype)
        gy = up.backward(gz)
        want = _fresh(F.conv_transpose2d_backward, gz, y, up.weight, 2, 0, 0, 2)
        for got, ref in zip((gy, up.grads["weight"], up.grads["bias"]), want):
            np.testing.assert_array_equal(got, ref)
        gx = conv.backward(gy)
        want = _fresh(F.conv2d_backward, gy, x, conv.weight, 1, "same", 1, 2)
        for got, ref in zip((gx, conv.grads["weight"], conv.grads["bias"]), want):
            np.testing.assert_array_equal(got, ref)
        gs = rng.standard_normal(s.shape).astype(dtype)
        g1 = c1.backward(gs)
        want = _fresh(F.conv1d_backward, gs, x[:, :, 0], c1.weight, 1, 1, 1, 4)
        for got, ref in zip((g1, c1.grads["weight"], c1.grads["bias"]), want):
            np.testing.assert_array_equal(got, ref)
# batch normalization
# --------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape,x3,method", [
    ((5, 3), (5, 3, 1), "fused"),
    ((4, 3, 7), (4, 3, 7), "fused"),
    ((2, 3, 5, 6), (2, 3, 30), "fused"),
    ((0, 3, 5, 6), (0, 3, 30), "empty"),
    ((2, 3, 0, 6), (2, 3, 0), "empty"),
])
def test_batch_norm_plan_geometry_and_method(x_shape, x3, method):
    plan = _plan.batch_norm_plan("batch_norm", x_shape, F32, True)
    assert plan.x3 == x3 and plan.method == method and plan.reason
    assert plan.count == x3[0] * x3[2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.method = "other"


def test_batch_norm_plan_threads_and_one_value_rule(restore_threads):
    cnnext.set_num_threads(2)
    assert _plan.batch_norm_plan("bn", (2, 3, 4, 4), F32, True).threads == 1  # small
    if cnnext.get_num_threads() == 2:
        assert _plan.batch_norm_plan("bn", (8, 16, 32, 32), F32, True).threads == 2
    with pytest.raises(ValueError, match="bn: expected more than 1 value per channel"):
        _plan.batch_norm_plan("bn", (1, 3, 1, 1), F32, True)
    assert _plan.batch_norm_plan("bn", (1, 3, 1, 1), F32, False).method == "fused"


def test_batchnorm_layer_keeps_its_plan_per_mode(rng):
    bn = nn.BatchNorm2D(3)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    bn(x)
    kept = bn._plan
    bn(x)
    assert bn._plan is kept  # steady: the same plan
    bn.eval()(x)
    assert bn._plan is not kept  # evaluation mode: another plan (other rules)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.train()(x[:1, :, :1, :1])


def test_default_parallel_thresholds_keep_small_work_on_one_thread(monkeypatch, restore_threads):
    """With the thresholds as shipped, a LeNet-sized convolution (batch 32,
    6 -> 16 channels, 5x5 on 14x14: 7.7 million multiply-adds), dense layer
    and max pool run on one thread at two threads, where waking the second
    thread costs more than it saves; a large convolution (200 million) and
    pool (3.2 million elements) use both; batch normalization from 0.26
    million elements (a ResNet's (64, 32, 14, 14) stage)."""
    macs, elements, batch_norm = _plan.DEFAULT_PARALLEL_MIN
    monkeypatch.setattr(_plan, "PARALLEL_MIN_MACS", macs)
    monkeypatch.setattr(_plan, "PARALLEL_MIN_ELEMENTS", elements)
    monkeypatch.setattr(_plan, "BATCH_NORM_PARALLEL_MIN", batch_norm)
    _plan.forget()
    cnnext.set_num_threads(2)
    assert conv_plan((32, 6, 14, 14), (16, 6, 5, 5)).threads == 1
    assert conv_plan((32, 64, 32, 32), (64, 64, 3, 3), p=1).threads == 2
    assert _plan.threads_for(32 * 400 * 120) == 1
    assert _plan.threads_for(32 * 6 * 28 * 28, elements=True) == 1
    assert _plan.threads_for(32 * 64 * 56 * 28, elements=True) == 2
    assert _plan.batch_norm_plan("bn", (64, 32, 14, 14), F32, True).threads == 2
    assert _plan.batch_norm_plan("bn", (64, 64, 7, 7), F32, True).threads == 1
