"""Bad input raises the right exception, with a message naming the function,
the parameter, the rule and the value received: ValueError for a bad value,
TypeError for a bad type (and MemoryError, up front, for a valid call whose
output cannot fit in memory).  Validation happens at the public boundary,
before anything is allocated or computed, under both backends.
"""
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnnext
from cnnext import functional as F
from cnnext import nn

X = np.zeros((2, 3, 6, 5))
W = np.zeros((4, 3, 3, 2))
WT = np.zeros((3, 4, 3, 2))  # conv_transpose2d / full_conv2d: (C_in, C_out, kH, kW)
GO = np.zeros((2, 4, 4, 4))  # conv2d(X, W) output
PG = np.zeros((2, 3, 3, 2))  # max/avg_pool2d(X, 2) output
IDX = np.zeros((2, 3, 3, 2), dtype=np.int64)


@pytest.fixture(params=["cython", "numpy"], autouse=True)
def backend(request):
    """Every validation test runs under both backends: checks precede dispatch."""
    with cnnext.use_backend(request.param):
        yield request.param


def raises(exc, fname, *fragments):
    """pytest.raises whose message must start with ``fname:`` and contain every fragment."""
    pattern = "^" + "".join(f"(?=.*{re.escape(f)})" for f in fragments) + re.escape(f"{fname}:")
    return pytest.raises(exc, match=re.compile(pattern, re.S))


# --------------------------------------------------------------------------
# array arguments: ndim, shapes, channels
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,fname,fragments",
    [
        (lambda: F.conv2d(np.zeros((6, 5)), W), "conv2d", ["x", "2-D", "(6, 5)"]),
        (lambda: F.conv2d(np.zeros((1, 2, 3, 6, 5)), W), "conv2d", ["x", "5-D"]),
        (lambda: F.conv2d(X, np.zeros((3, 3, 2))), "conv2d", ["weight", "4-D", "3-D"]),
        (lambda: F.conv2d(X, W, np.zeros((4, 1))), "conv2d", ["bias", "2-D"]),
        (lambda: F.conv2d_backward(GO, X[0, 0], W), "conv2d_backward", ["x", "2-D"]),
        (lambda: F.conv2d_backward(GO[0, 0], X, W), "conv2d_backward", ["grad_out", "2-D"]),
        (lambda: F.conv_transpose2d(X[0, 0], WT), "conv_transpose2d", ["x", "2-D"]),
        (lambda: F.full_conv2d(X, WT[0]), "full_conv2d", ["weight", "3-D"]),
        (lambda: F.max_pool2d(X[0, 0], 2), "max_pool2d", ["x", "2-D"]),
        (lambda: F.avg_pool2d(X[None], 2), "avg_pool2d", ["x", "5-D"]),
        (lambda: F.max_pool2d_backward(PG[0, 0], IDX[0, 0], (6, 5)), "max_pool2d_backward",
         ["grad_out", "2-D"]),
        (lambda: F.avg_pool2d_backward(PG[0, 0], (6, 5), 2), "avg_pool2d_backward",
         ["grad_out", "2-D"]),
        (lambda: F.softmax_cross_entropy(np.zeros(3), [0]), "softmax_cross_entropy",
         ["logits", "2-D", "1-D"]),
        (lambda: F.softmax_cross_entropy(np.zeros((2, 3, 1)), [0, 1]), "softmax_cross_entropy",
         ["logits", "3-D"]),
    ],
)
def test_wrong_ndim(call, fname, fragments):
    with raises(ValueError, fname, *fragments):
        call()


def test_batched_and_unbatched_must_not_mix():
    with raises(ValueError, "conv2d_backward", "grad_out", "3-D", "x", "4-D"):
        F.conv2d_backward(GO[0], X, W)


@pytest.mark.parametrize(
    "call,fname,fragments",
    [
        (lambda: F.conv2d(X, np.zeros((4, 2, 3, 2))), "conv2d",
         ["x.shape[1] (3)", "weight.shape[1] (2)"]),
        (lambda: F.conv2d(X[0], np.zeros((4, 5, 3, 2))), "conv2d",
         ["x.shape[0] (3)", "weight.shape[1] (5)", "unbatched"]),
        # Channels-last data: the hint names NCHW and the transpose.
        (lambda: F.conv2d(np.zeros((2, 28, 28, 1)), np.zeros((8, 1, 3, 3))), "conv2d",
         ["x.shape[1] (28)", "weight.shape[1] (1)", "NCHW", "transpose(0, 3, 1, 2)"]),
        # A batch of (N, H, W) grayscale images read as one (C, H, W) sample.
        (lambda: F.conv2d(np.zeros((16, 28, 28)), np.zeros((8, 1, 3, 3))), "conv2d",
         ["x.shape[0] (16)", "unbatched", "x[:, None]"]),
        (lambda: F.conv2d_backward(GO, X, np.zeros((4, 1, 3, 2))), "conv2d_backward",
         ["x.shape[1] (3)", "weight.shape[1] (1)"]),
        (lambda: F.conv_transpose2d(X, np.zeros((4, 3, 3, 2))), "conv_transpose2d",
         ["x.shape[1] (3)", "weight.shape[0] (4)"]),
        (lambda: F.full_conv2d(X, np.zeros((2, 3, 3, 2))), "full_conv2d",
         ["x.shape[1] (3)", "weight.shape[0] (2)"]),
    ],
)
def test_channel_mismatch(call, fname, fragments):
    with raises(ValueError, fname, *fragments):
        call()


@pytest.mark.parametrize(
    "call,fname",
    [
        (lambda: F.conv2d(X, W, np.zeros(3)), "conv2d"),
        (lambda: F.conv2d(X, W, np.zeros(5)), "conv2d"),
        (lambda: F.conv_transpose2d(X, WT, np.zeros(3)), "conv_transpose2d"),
    ],
)
def test_bias_shape(call, fname):
    with raises(ValueError, fname, "bias", "(4,)"):
        call()


def test_empty_kernel_is_rejected():
    with raises(ValueError, "conv2d", "kernel"):
        F.conv2d(X, np.zeros((4, 3, 0, 2)))


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,weight,axis,fragments",
    [
        ({}, np.zeros((4, 3, 7, 2)), "height",
         ["input size 6", "kernel 7", "stride 1", "padding 0", "dilation 1"]),
        ({"dilation": (1, 5)}, W, "width",
         ["input size 5", "kernel 2", "stride 1", "padding 0", "dilation 5"]),
        ({"padding": (0, 1), "stride": 3, "dilation": 3}, np.zeros((4, 3, 3, 3)), "height",
         ["input size 6", "kernel 3", "stride 3", "padding 0", "dilation 3"]),
        ({"padding": 1}, np.zeros((4, 3, 9, 2)), "height",
         ["input size 6", "kernel 9", "stride 1", "padding 1", "dilation 1"]),
    ],
)
@pytest.mark.parametrize("fn", ["conv2d", "conv2d_backward"])
def test_kernel_larger_than_padded_input_lists_geometry(fn, kwargs, weight, axis, fragments):
    with raises(ValueError, fn, axis, *fragments):
        if fn == "conv2d":
            F.conv2d(X, weight, **kwargs)
        else:
            F.conv2d_backward(GO, X, weight, **kwargs)


def test_conv_transpose_output_too_small_lists_geometry():
    with raises(ValueError, "conv_transpose2d", "height", "input size 6", "kernel 3",
                "stride 1", "padding 5", "dilation 1", "output_padding 0"):
        F.conv_transpose2d(X, WT, padding=5)


@pytest.mark.parametrize("fn", ["max_pool2d", "avg_pool2d"])
def test_pool_kernel_larger_than_padded_input(fn):
    with raises(ValueError, fn, "height", "input size 6", "kernel_size 7", "padding 0"):
        getattr(F, fn)(X, (7, 1))


@pytest.mark.parametrize("param", ["stride", "dilation"])
@pytest.mark.parametrize("value,shown", [(0, "0"), (-1, "-1"), ((1, 0), "0"), ((-2, 1), "-2")])
def test_conv_stride_and_dilation_below_one(param, value, shown):
    with raises(ValueError, "conv2d", param, ">= 1", shown):
        F.conv2d(X, W, **{param: value})
    with raises(ValueError, "conv2d_backward", param, ">= 1", shown):
        F.conv2d_backward(GO, X, W, **{param: value})
    with raises(ValueError, "conv_transpose2d", param, ">= 1", shown):
        F.conv_transpose2d(X, WT, **{param: value})


@pytest.mark.parametrize("fn", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("param", ["kernel_size", "stride"])
@pytest.mark.parametrize("value", [0, -3, (2, 0)])
def test_pool_kernel_and_stride_below_one(fn, param, value):
    kw = {"kernel_size": 2, param: value}
    with raises(ValueError, fn, param, ">= 1"):
        getattr(F, fn)(X, **kw)


@pytest.mark.parametrize("value", [-1, (0, -2), (-5, 0)])
def test_negative_padding(value):
    with raises(ValueError, "conv2d", "padding", ">= 0"):
        F.conv2d(X, W, padding=value)
    with raises(ValueError, "conv_transpose2d", "padding", ">= 0"):
        F.conv_transpose2d(X, WT, padding=value)
    with raises(ValueError, "max_pool2d", "padding", ">= 0"):
        F.max_pool2d(X, 2, padding=value)
    with raises(ValueError, "avg_pool2d_backward", "padding", ">= 0"):
        F.avg_pool2d_backward(PG, X.shape, 2, padding=value)
    with raises(ValueError, "conv_transpose2d", "output_padding", ">= 0"):
        F.conv_transpose2d(X, WT, stride=2, output_padding=value)


@pytest.mark.parametrize("fn", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize(
    "kernel,padding,axis",
    [(2, 2, "height"), (3, 2, "height"), ((4, 3), (2, 2), "width"), (1, 1, "height")],
)
def test_pool_padding_more_than_half_kernel(fn, kernel, padding, axis):
    with raises(ValueError, fn, "padding", "half", axis):
        getattr(F, fn)(X, kernel, stride=1, padding=padding)


def test_pool_padding_exactly_half_kernel_is_allowed():
    assert F.max_pool2d(X, 4, stride=1, padding=2).shape == (2, 3, 7, 6)
    assert F.avg_pool2d(X, (2, 3), stride=1, padding=(1, 1)).shape == (2, 3, 7, 5)


def test_output_padding_must_be_below_stride_or_dilation():
    with raises(ValueError, "conv_transpose2d", "output_padding", "height", "stride 2"):
        F.conv_transpose2d(X, WT, stride=2, output_padding=(2, 0))
    with raises(ValueError, "conv_transpose2d", "output_padding", "width"):
        F.conv_transpose2d(X, WT, output_padding=(0, 1))
    # allowed: below the dilation even at stride 1 (PyTorch's rule)
    assert F.conv_transpose2d(X, WT, dilation=2, output_padding=1).shape == (2, 4, 11, 8)


# --------------------------------------------------------------------------
# size-like arguments: only ints (or pairs of ints)
# --------------------------------------------------------------------------

BAD_INTS = [
    (2.0, TypeError, "float"),
    ("2", TypeError, "str"),
    (None, TypeError, "None"),
    (True, TypeError, "bool"),
    (np.True_, TypeError, "bool"),
    (np.float64(2), TypeError, "float"),
    ((2, 2.5), TypeError, "float"),
    ((2, None), TypeError, "None"),
    ((2, False), TypeError, "bool"),
    ((2,), ValueError, "length 1"),
    ((2, 2, 2), ValueError, "length 3"),
    ([], ValueError, "length 0"),
]


@pytest.mark.parametrize("value,exc,fragment", BAD_INTS, ids=repr)
@pytest.mark.parametrize("param", ["stride", "padding", "dilation"])
def test_conv_size_arguments_must_be_ints(param, value, exc, fragment):
    if param == "padding" and isinstance(value, str):  # a padding mode: its own rule
        exc, fragment = ValueError, "'same' or 'valid'"
    with raises(exc, "conv2d", param, fragment):
        F.conv2d(X, W, **{param: value})


POOL_BAD_INTS = [
    (param,) + bad
    for param in ("kernel_size", "stride", "padding")
    for bad in BAD_INTS
    if not (param == "stride" and bad[0] is None)  # stride=None means kernel_size
]


@pytest.mark.parametrize("param,value,exc,fragment", POOL_BAD_INTS, ids=repr)
@pytest.mark.parametrize("fn", ["max_pool2d", "avg_pool2d"])
def test_pool_size_arguments_must_be_ints(fn, param, value, exc, fragment):
    kw = {"kernel_size": 2, param: value}
    with raises(exc, fn, param, fragment):
        getattr(F, fn)(X, **kw)


@pytest.mark.parametrize("value,exc,fragment", BAD_INTS, ids=repr)
def test_output_padding_must_be_int(value, exc, fragment):
    if value is None:
        exc, fragment = TypeError, "None"
    with raises(exc, "conv_transpose2d", "output_padding", fragment):
        F.conv_transpose2d(X, WT, stride=3, output_padding=value)


def test_numpy_integers_are_accepted():
    y = F.conv2d(X, W, stride=np.int64(2), padding=(np.int32(1), np.uint8(0)))
    assert y.shape == F.conv2d(X, W, stride=2, padding=(1, 0)).shape


@pytest.mark.parametrize(
    "call,fname,param",
    [
        (lambda: F.max_pool2d(X, 2, return_indices=1), "max_pool2d", "return_indices"),
        (lambda: F.max_pool2d(X, 2, return_indices="yes"), "max_pool2d", "return_indices"),
        (lambda: F.conv2d_backward(GO, X, W, bias=None), "conv2d_backward", "bias"),
        (lambda: F.conv2d_backward(GO, X, W, bias=np.zeros(4)), "conv2d_backward", "bias"),
        (lambda: F.leaky_relu(X, "0.1"), "leaky_relu", "negative_slope"),
        (lambda: F.leaky_relu(X, True), "leaky_relu", "negative_slope"),
        (lambda: F.leaky_relu_backward(X, X, None), "leaky_relu_backward", "negative_slope"),
        (lambda: F.softmax(X, axis=1.0), "softmax", "axis"),
        (lambda: F.log_softmax(X, axis="1"), "log_softmax", "axis"),
    ],
)
def test_flag_and_scalar_argument_types(call, fname, param):
    with raises(TypeError, fname, param):
        call()


def test_non_finite_negative_slope():
    with raises(ValueError, "leaky_relu", "negative_slope", "finite"):
        F.leaky_relu(X, float("inf"))


# --------------------------------------------------------------------------
# array dtypes
# --------------------------------------------------------------------------

BAD_ARRAYS = [
    (lambda a: a.astype(np.complex128), "complex"),
    (lambda a: a.astype(object), "object"),
    (lambda a: a.astype(str), "str"),
    (lambda a: a.astype(bool), "bool"),
    (lambda a: a.astype("S3"), "bytes"),
    (lambda a: np.zeros(a.shape, dtype="datetime64[s]"), "datetime64"),
]


@pytest.mark.parametrize("make,kind", BAD_ARRAYS, ids=[k for _, k in BAD_ARRAYS])
@pytest.mark.parametrize(
    "fname,call,slot,name",
    [
        ("conv2d", lambda a: F.conv2d(a, W), 0, "x"),
        ("conv2d", lambda a: F.conv2d(X, a), 1, "weight"),
        ("conv2d", lambda a: F.conv2d(X, W, a), 2, "bias"),
        ("conv2d_backward", lambda a: F.conv2d_backward(a, X, W), 0, "grad_out"),
        ("conv_transpose2d", lambda a: F.conv_transpose2d(X, a), 1, "weight"),
        ("full_conv2d", lambda a: F.full_conv2d(a, WT), 0, "x"),
        ("max_pool2d", lambda a: F.max_pool2d(a, 2), 0, "x"),
        ("max_pool2d_backward", lambda a: F.max_pool2d_backward(a, IDX, X.shape), 0, "grad_out"),
        ("avg_pool2d", lambda a: F.avg_pool2d(a, 2), 0, "x"),
        ("avg_pool2d_backward", lambda a: F.avg_pool2d_backward(a, X.shape, 2), 0, "grad_out"),
        ("relu", lambda a: F.relu(a), 0, "x"),
        ("sigmoid_backward", lambda a: F.sigmoid_backward(X, a), 1, "y"),
        ("softmax", lambda a: F.softmax(a), 0, "x"),
        ("softmax_cross_entropy", lambda a: F.softmax_cross_entropy(a, [0, 1]), 0, "logits"),
    ],
)
def test_non_real_arrays_raise_typeerror(fname, call, slot, name, make, kind):
    template = {
        "conv2d": [X, W, np.zeros(4)],
        "conv2d_backward": [GO],
        "conv_transpose2d": [X, WT],
        "full_conv2d": [X],
        "max_pool2d_backward": [PG],
        "avg_pool2d_backward": [PG],
        "sigmoid_backward": [X, X],
        "softmax_cross_entropy": [np.zeros((2, 3))],
    }.get(fname, [X])[slot]
    with raises(TypeError, fname, name):
        call(make(template))


def test_ragged_nested_lists_raise_typeerror():
    with raises(TypeError, "conv2d", "x"):
        F.conv2d([[[[1.0, 2.0], [3.0]]]], W)


@pytest.mark.parametrize("fname", ["conv2d", "max_pool2d", "relu"])
def test_none_array_raises_typeerror(fname):
    args = {"conv2d": (None, W), "max_pool2d": (None, 2), "relu": (None,)}[fname]
    with raises(TypeError, fname, "None"):
        getattr(F, fname)(*args)


# --------------------------------------------------------------------------
# gradients: shapes, indices, input_shape
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [(2, 4, 4, 3), (2, 4, 3, 4), (1, 4, 4, 4), (2, 5, 4, 4)])
def test_conv2d_backward_grad_out_shape(bad):
    with raises(ValueError, "conv2d_backward", "grad_out", "(2, 4, 4, 4)", str(bad)):
        F.conv2d_backward(np.zeros(bad), X, W)


@pytest.mark.parametrize("bad", [(2, 3, 3, 3), (2, 3, 2, 2), (1, 3, 3, 2), (2, 2, 3, 2)])
def test_avg_pool2d_backward_grad_out_shape(bad):
    with raises(ValueError, "avg_pool2d_backward", "grad_out", str(bad)):
        F.avg_pool2d_backward(np.zeros(bad), X.shape, 2)


@pytest.mark.parametrize(
    "call,fname,fragments",
    [
        (lambda: F.max_pool2d_backward(PG, IDX[..., :1], X.shape), "max_pool2d_backward",
         ["indices.shape", "(2, 3, 3, 1)"]),
        (lambda: F.max_pool2d_backward(PG, IDX[0], X.shape), "max_pool2d_backward",
         ["indices.shape"]),
        (lambda: F.max_pool2d_backward(PG, IDX + 30, X.shape), "max_pool2d_backward",
         ["indices", "[0, 30)", "30"]),
        (lambda: F.max_pool2d_backward(PG, IDX - 1, X.shape), "max_pool2d_backward",
         ["indices", "[0, 30)", "-1"]),
        (lambda: F.max_pool2d_backward(PG, IDX, (2, 3, 6)), "max_pool2d_backward",
         ["input_shape", "4 entries"]),
        (lambda: F.max_pool2d_backward(PG, IDX, (3, 3, 6, 5)), "max_pool2d_backward",
         ["input_shape", "batch"]),
        (lambda: F.max_pool2d_backward(PG, IDX, (2, 4, 6, 5)), "max_pool2d_backward",
         ["input_shape", "channel"]),
        (lambda: F.max_pool2d_backward(PG, IDX, (2, 3, -6, 5)), "max_pool2d_backward",
         ["input_shape[2]", ">= 0"]),
        (lambda: F.avg_pool2d_backward(PG, (2, 3, 6), 2), "avg_pool2d_backward",
         ["input_shape", "4 entries"]),
        (lambda: F.avg_pool2d_backward(PG, (2, 3, 6, 5, 1), 2), "avg_pool2d_backward",
         ["input_shape", "4 entries"]),
        (lambda: F.avg_pool2d_backward(PG, (2, 3, 1, 1), 2), "avg_pool2d_backward",
         ["kernel", "input size 1"]),
    ],
)
def test_pool_backward_value_errors(call, fname, fragments):
    with raises(ValueError, fname, *fragments):
        call()


def test_max_pool2d_backward_index_one_past_plane_end():
    idx = IDX.copy()
    idx[1, 2, 2, 1] = 30  # H*W = 30: one past the end
    with raises(ValueError, "max_pool2d_backward", "indices", "[0, 30)"):
        F.max_pool2d_backward(PG, idx, X.shape)
    idx[1, 2, 2, 1] = 29  # last valid position
    gx = F.max_pool2d_backward(PG + 1, idx, X.shape)
    assert gx[1, 2, 5, 4] == 1


@pytest.mark.parametrize(
    "indices,fragment",
    [
        (IDX.astype(np.float64), "float64"),
        (IDX.astype(np.float32), "float32"),
        (IDX.astype(bool), "bool"),
        (IDX.astype(object), "object"),
    ],
    ids=["float64", "float32", "bool", "object"],
)
def test_max_pool2d_backward_indices_must_be_integers(indices, fragment):
    with raises(TypeError, "max_pool2d_backward", "indices", fragment):
        F.max_pool2d_backward(PG, indices, X.shape)


@pytest.mark.parametrize("fn", ["max_pool2d_backward", "avg_pool2d_backward"])
@pytest.mark.parametrize(
    "shape,exc,fragment",
    [
        ("2356", TypeError, "input_shape"),
        (None, TypeError, "input_shape"),
        (6, TypeError, "input_shape"),
        ((2, 3, 6.0, 5), TypeError, "input_shape[2]"),
        ((2, 3, True, 5), TypeError, "input_shape[2]"),
    ],
    ids=repr,
)
def test_input_shape_types(fn, shape, exc, fragment):
    with raises(exc, fn, fragment):
        if fn == "max_pool2d_backward":
            F.max_pool2d_backward(PG, IDX, shape)
        else:
            F.avg_pool2d_backward(PG, shape, 2)


def test_input_shape_accepts_list_and_ndarray():
    a = F.max_pool2d_backward(PG, IDX, list(X.shape))
    b = F.max_pool2d_backward(PG, IDX, np.array(X.shape))
    assert a.shape == b.shape == X.shape


# --------------------------------------------------------------------------
# activations, softmax, loss
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels,exc,fragments",
    [
        ([0, 3], ValueError, ["labels", "[0, 3)", "3"]),
        ([-1, 0], ValueError, ["labels", "[0, 3)", "-1"]),
        ([0.0, 1.0], TypeError, ["labels", "float64"]),
        (np.array([0, 1], dtype=np.float32), TypeError, ["labels", "float32"]),
        ([True, False], TypeError, ["labels", "bool"]),
        ([0, 1, 2], ValueError, ["labels.shape", "(2,)", "(3,)"]),
        ([[0, 1]], ValueError, ["labels.shape", "(2,)"]),
        (None, TypeError, ["labels", "None"]),
    ],
    ids=repr,
)
def test_softmax_cross_entropy_labels(labels, exc, fragments):
    with raises(exc, "softmax_cross_entropy", *fragments):
        F.softmax_cross_entropy(np.zeros((2, 3)), labels)


@pytest.mark.parametrize(
    "fn", ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]
)
@pytest.mark.parametrize("axis", [2, -3, 10])
def test_softmax_axis_out_of_range(fn, axis):
    a = np.zeros((2, 3))
    args = (a,) if fn in ("softmax", "log_softmax") else (a, a)
    with raises(ValueError, fn, "axis", "[-2, 2)", str(axis)):
        getattr(F, fn)(*args, axis=axis)


@pytest.mark.parametrize(
    "fn",
    ["relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward",
     "softmax_backward", "log_softmax_backward"],
)
def test_activation_backward_shape_mismatch(fn):
    with raises(ValueError, fn, "same shape", "(2, 3)", "(3, 2)"):
        getattr(F, fn)(np.zeros((2, 3)), np.zeros((3, 2)))


# --------------------------------------------------------------------------
# huge sizes: rejected before anything is allocated
# --------------------------------------------------------------------------

HUGE = [2**31, 2**63, 10**12]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("param", ["stride", "padding", "dilation"])
def test_conv_huge_hyperparameters(param, value):
    with pytest.raises((ValueError, MemoryError), match=f"conv2d: {param}"):
        F.conv2d(X, W, **{param: value})
    with pytest.raises((ValueError, MemoryError), match=f"conv2d_backward: {param}"):
        F.conv2d_backward(GO, X, W, **{param: value})


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("param", ["kernel_size", "stride", "padding"])
@pytest.mark.parametrize("fn", ["max_pool2d", "avg_pool2d"])
def test_pool_huge_hyperparameters(fn, param, value):
    kw = {"kernel_size": 2, param: value}
    with pytest.raises((ValueError, MemoryError), match=f"{fn}: "):
        getattr(F, fn)(X, **kw)


@pytest.mark.parametrize(
    "call,fname",
    [
        # valid, but the output would not fit in memory: MemoryError up front
        (lambda: F.conv2d(X, W, padding=2**30), "conv2d"),
        (lambda: F.conv2d(X, W, padding=(2**20, 2**20)), "conv2d"),
        (lambda: F.conv_transpose2d(X, WT, stride=2**30), "conv_transpose2d"),
        (lambda: F.conv_transpose2d(X, WT, stride=2**20, dilation=2**20), "conv_transpose2d"),
        (lambda: F.max_pool2d_backward(PG, IDX, (2, 3, 2**30, 2**30)), "max_pool2d_backward"),
        (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 1, 1)), (2, 3, 2**20, 2**20), 2**20),
         "avg_pool2d_backward"),
        (lambda: F.full_conv2d(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1))), None),
    ],
)
def test_huge_outputs_fail_before_allocating(call, fname):
    if fname is None:  # control: a tiny call is fine
        assert call().shape == (1, 1, 1, 1)
        return
    with pytest.raises((ValueError, MemoryError), match=f"{fname}: "):
        call()


def test_huge_kernel_with_half_padding_is_valid_and_cheap(backend):
    """kernel_size 2**30 with padding 2**29 is legal (padding <= half the
    kernel) and gives one window covering the whole plane.  The kernels clip
    windows to the input, so this is instant; the numpy reference loops over
    every kernel tap and would run for years, so only the cython backend is
    exercised."""
    if backend != "cython":
        pytest.skip("the reference iterates over all kH*kW taps")
    x = np.arange(2 * 3 * 6 * 5, dtype=np.float64).reshape(X.shape)
    y, idx = F.max_pool2d(x, 2**30, padding=2**29, return_indices=True)
    np.testing.assert_array_equal(y[..., 0, 0], x.max(axis=(2, 3)))
    np.testing.assert_array_equal(idx, np.full((2, 3, 1, 1), 29))


def test_huge_requests_do_not_touch_memory(backend, tmp_path):
    """Run the huge calls under a 2 GiB address-space limit.

    If any of them allocated (or tried to allocate) the giant array first,
    numpy's own allocation error would surface instead of cnnext's message.
    """
    resource = pytest.importorskip("resource")
    if not hasattr(resource, "RLIMIT_AS"):
        pytest.skip("no RLIMIT_AS on this platform")
    code = textwrap.dedent(
        """
        import resource
        import numpy as np
        import cnnext
        from cnnext import functional as F
        cnnext.set_backend(BACKEND)
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
        x = np.zeros((1, 1, 4, 4)); w = np.zeros((1, 1, 2, 2))
        calls = [
            lambda: F.conv2d(x, w, padding=2**25),
            lambda: F.conv_transpose2d(x, w, stride=2**25),
            lambda: F.max_pool2d_backward(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), int),
                                          (1, 1, 2**20, 2**20)),
            lambda: F.avg_pool2d_backward(np.zeros((1, 1, 1, 1)), (1, 1, 2**20, 2**20), 2**20),
        ]
        for c in calls:
            try:
                c()
            except (ValueError, MemoryError) as e:
                msg = str(e)
                assert msg.split(":")[0] in ("conv2d", "conv_transpose2d",
                    "max_pool2d_backward", "avg_pool2d_backward"), msg
            else:
                raise SystemExit("no error")
        print("ok")
        """
    )
    code = code.replace("BACKEND", repr(backend))
    # cwd outside the source tree: ``-c`` puts the cwd on sys.path.
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["torch", "", None, "Cython", 1])
def test_set_backend_rejects_unknown(name):
    with raises(ValueError, "set_backend", "backend", repr(name)):
        cnnext.set_backend(name)
    with raises(ValueError, "set_backend", "backend"):
        with cnnext.use_backend(name):
            pass  # pragma: no cover
    assert cnnext.get_backend() in ("cython", "numpy")


@pytest.mark.parametrize(
    "n,exc",
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError),
     (None, TypeError)],
    ids=repr,
)
def test_set_num_threads_rejects_bad_values(n, exc):
    old = cnnext.get_num_threads()
    with raises(exc, "set_num_threads", "n"):
        cnnext.set_num_threads(n)
    assert cnnext.get_num_threads() == old


def test_failed_validation_leaves_inputs_untouched():
    x = np.arange(2 * 3 * 6 * 5, dtype=np.float64).reshape(X.shape)
    before = x.copy()
    with pytest.raises(ValueError):
        F.conv2d(x, np.zeros((4, 2, 3, 3)))
    with pytest.raises(ValueError):
        F.max_pool2d(x, 3, padding=2)
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------
# groups, padding modes, conv1d
# --------------------------------------------------------------------------

XG = np.zeros((2, 4, 6, 5))
WG = np.zeros((6, 2, 3, 2))  # groups=2: (C_out, C_in/2, kH, kW)


@pytest.mark.parametrize(
    "call,exc,fname,fragments",
    [
        (lambda: F.conv2d(XG, WG, groups=0), ValueError, "conv2d", ["groups", ">= 1", "0"]),
        (lambda: F.conv2d(XG, WG, groups=True), TypeError, "conv2d", ["groups", "bool"]),
        (lambda: F.conv2d(XG, WG, groups=2.0), TypeError, "conv2d", ["groups", "float"]),
        (lambda: F.conv2d(XG, WG, groups=(2,)), TypeError, "conv2d", ["groups", "tuple"]),
        (lambda: F.conv2d(XG, np.zeros((5, 2, 3, 2)), groups=2), ValueError, "conv2d",
         ["weight.shape[0]", "C_out = 5", "divisible by groups (2)"]),
        (lambda: F.conv2d(XG, WG, groups=3), ValueError, "conv2d",
         ["x.shape[1] (4)", "weight.shape[1] * groups (2 * 3 = 6)"]),
        (lambda: F.conv2d(XG, np.zeros((6, 1, 3, 2)), groups=2), ValueError, "conv2d",
         ["x.shape[1] (4)", "weight.shape[1] * groups (1 * 2 = 2)"]),
        (lambda: F.conv2d(XG[0], np.zeros((6, 3, 3, 2)), groups=2), ValueError, "conv2d",
         ["x.shape[0] (4)", "weight.shape[1] * groups (3 * 2 = 6)"]),
        (lambda: F.conv2d_backward(np.zeros((2, 6, 4, 5)), XG, WG, groups=2), ValueError,
         "conv2d_backward", ["grad_out.shape", "groups 2", "(2, 6, 4, 4)", "(2, 6, 4, 5)"]),
        (lambda: F.conv2d(XG, WG, groups=2, padding="same", stride=2), ValueError, "conv2d",
         ["padding='same'", "stride 1", "(2, 2)"]),
        (lambda: F.conv2d(XG, WG, groups=2, padding="same", stride=(1, 3)), ValueError,
         "conv2d", ["padding='same'", "(1, 3)"]),
        (lambda: F.conv2d(XG, WG, groups=2, padding="SAME"), ValueError, "conv2d",
         ["padding", "'same' or 'valid'", "'SAME'"]),
        (lambda: F.conv2d_backward(XG, XG, WG, groups=2, padding="full"), ValueError,
         "conv2d_backward", ["padding", "'full'"]),
        (lambda: F.conv2d(XG, np.zeros((6, 2, 7, 2)), groups=2, padding="valid"), ValueError,
         "conv2d", ["kernel is larger", "height", "input size 6", "kernel 7"]),
        (lambda: F.conv_transpose2d(XG, np.zeros((4, 3, 2, 2)), groups=3), ValueError,
         "conv_transpose2d", ["weight.shape[0]", "C_in = 4", "divisible by groups (3)"]),
        (lambda: F.conv_transpose2d(XG, np.zeros((4, 3, 2, 2)), groups=0), ValueError,
         "conv_transpose2d", ["groups", ">= 1"]),
        (lambda: F.conv_transpose2d(XG, np.zeros((4, 3, 2, 2)), padding="same"), TypeError,
         "conv_transpose2d", ["padding", "str"]),
        (lambda: F.conv_transpose2d_backward(np.zeros((2, 6, 7, 7)), XG, np.zeros((4, 3, 2, 2)),
                                             groups=2), ValueError,
         "conv_transpose2d_backward", ["grad_out.shape", "(2, 6, 7, 6)", "(2, 6, 7, 7)",
                                       "groups 2"]),
        (lambda: F.conv_transpose2d_backward(np.zeros((6, 7, 6)), XG, np.zeros((4, 3, 2, 2))),
         ValueError, "conv_transpose2d_backward", ["grad_out (3-D)", "x (4-D)"]),
        (lambda: F.conv_transpose2d_backward(np.zeros((2, 3, 7, 6)), XG, np.zeros((4, 3, 2, 2)),
                                             bias=1), TypeError,
         "conv_transpose2d_backward", ["bias", "bool"]),
        (lambda: F.conv1d(XG, WG), ValueError, "conv1d", ["x", "2-D or 3-D", "4-D"]),
        (lambda: F.conv1d(XG[0], WG[:, :, 0]), ValueError, "conv1d",
         ["x.shape[1] (6)", "weight.shape[1] (2)"]),
        (lambda: F.conv1d(XG[0], np.zeros((3, 2, 2)), groups=2), ValueError, "conv1d",
         ["weight.shape[0]", "C_out = 3", "divisible by groups (2)"]),
        (lambda: F.conv1d(XG[:, :, 0], np.zeros((6, 4, 9))), ValueError, "conv1d",
         ["kernel is larger", "length", "input size 5", "kernel 9"]),
        (lambda: F.conv1d(XG[:, :, 0], np.zeros((6, 4, 2)), stride=(2, 2)), ValueError,
         "conv1d", ["stride", "sequence of one int", "length 2"]),
        (lambda: F.conv1d(XG[:, :, 0], np.zeros((6, 4, 2)), dilation=0), ValueError,
         "conv1d", ["dilation", ">= 1"]),
        (lambda: F.conv1d(XG[:, :, 0], np.zeros((6, 4, 2)), padding="same", stride=2),
         ValueError, "conv1d", ["padding='same'", "stride 1", "got stride 2"]),
        (lambda: F.conv1d(XG[:, :, 0], np.zeros((6, 4, 2)), padding=(1, 1)), ValueError,
         "conv1d", ["padding", "length 2"]),
        (lambda: F.conv1d(XG[:, :, 0], np.zeros((6, 4, 2)), padding=-1), ValueError,
         "conv1d", ["padding", ">= 0"]),
        (lambda: F.conv1d_backward(np.zeros((2, 6, 9)), XG[:, :, 0], np.zeros((6, 4, 2))),
         ValueError, "conv1d_backward", ["grad_out.shape", "(2, 6, 4)", "(2, 6, 9)"]),
        (lambda: F.conv1d_backward(np.zeros((6, 4)), XG[:, :, 0], np.zeros((6, 4, 2))),
         ValueError, "conv1d_backward", ["grad_out (2-D)", "x (3-D)"]),
    ],
)
def test_groups_padding_modes_and_conv1d_rules(call, exc, fname, fragments):
    with raises(exc, fname, *fragments):
        call()


@pytest.mark.parametrize(
    "make,exc,fragments",
    [
        (lambda: nn.Conv2D(4, 6, 3, groups=4), ValueError, ["out_channels (6)", "groups (4)"]),
        (lambda: nn.Conv2D(3, 6, 3, groups=2), ValueError, ["in_channels (3)", "groups (2)"]),
        (lambda: nn.Conv2D(4, 6, 3, groups=0), ValueError, ["groups", ">= 1"]),
        (lambda: nn.Conv2D(4, 6, 3, stride=2, padding="same"), ValueError,
         ["padding='same'", "stride 1"]),
        (lambda: nn.Conv2D(4, 6, 3, padding="full"), ValueError, ["padding", "'full'"]),
        (lambda: nn.ConvTranspose2D(4, 6, 3, groups=4), ValueError,
         ["out_channels (6)", "groups (4)"]),
        (lambda: nn.ConvTranspose2D(4, 6, 3, stride=2, output_padding=2), ValueError,
         ["output_padding must be smaller than stride or dilation", "height"]),
        (lambda: nn.ConvTranspose2D(4, 6, 3, padding="same"), TypeError, ["padding", "str"]),
        (lambda: nn.Conv1D(4, 6, (3, 3)), ValueError, ["kernel_size", "length 2"]),
        (lambda: nn.Conv1D(4, 6, 3, groups=3), ValueError, ["in_channels (4)", "groups (3)"]),
        (lambda: nn.Conv1D(4, 6, 3, stride=2, padding="same"), ValueError,
         ["padding='same'", "stride 1"]),
    ],
)
def test_conv_layer_constructor_rules(make, exc, fragments):
    cls = make.__code__.co_names[-1]
    with raises(exc, cls, *fragments):
        make()


def test_conv_layers_name_their_input_channels():
    with raises(ValueError, "ConvTranspose2D.forward", "x.shape[1] (3)", "in_channels (4)"):
        nn.ConvTranspose2D(4, 2, 2, seed=0).forward(np.zeros((1, 3, 5, 5)))
    with raises(ValueError, "Conv1D.forward", "x.shape[0] (3)", "in_channels (4)"):
        nn.Conv1D(4, 2, 2, seed=0).forward(np.zeros((3, 5)))


# --------------------------------------------------------------------------
# pooling options, adaptive pooling, unpooling, 1-D pooling
# --------------------------------------------------------------------------

X1 = np.zeros((2, 3, 9))  # (N, C, L)


@pytest.mark.parametrize(
    "call,exc,fname,fragments",
    [
        (lambda: F.max_pool2d(X, 2, dilation=0), ValueError, "max_pool2d", ["dilation", ">= 1"]),
        (lambda: F.max_pool2d(X, 2, dilation=1.5), TypeError, "max_pool2d", ["dilation"]),
        (lambda: F.max_pool2d(X, 3, dilation=3), ValueError, "max_pool2d",
         ["height", "input size 6", "kernel_size 3", "dilation 3", "effective kernel 7"]),
        (lambda: F.max_pool2d(X, 2, ceil_mode=1), TypeError, "max_pool2d", ["ceil_mode", "bool"]),
        (lambda: F.max_pool2d(X, 2, ceil_mode="yes"), TypeError, "max_pool2d", ["ceil_mode"]),
        (lambda: F.avg_pool2d(X, 2, ceil_mode=None), TypeError, "avg_pool2d", ["ceil_mode"]),
        (lambda: F.avg_pool2d(X, 2, count_include_pad=0), TypeError, "avg_pool2d",
         ["count_include_pad", "bool"]),
        (lambda: F.avg_pool2d(X, 2, divisor_override=0), ValueError, "avg_pool2d",
         ["divisor_override", "nonzero", "0"]),
        (lambda: F.avg_pool2d(X, 2, divisor_override=2.0), TypeError, "avg_pool2d",
         ["divisor_override", "int", "2.0"]),
        (lambda: F.avg_pool2d(X, 2, divisor_override=True), TypeError, "avg_pool2d",
         ["divisor_override"]),
        (lambda: F.avg_pool2d_backward(PG, X.shape, 2, divisor_override=0), ValueError,
         "avg_pool2d_backward", ["divisor_override", "nonzero"]),
        (lambda: F.avg_pool2d_backward(PG, X.shape, 2, ceil_mode=True, count_include_pad="no"),
         TypeError, "avg_pool2d_backward", ["count_include_pad"]),
        (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 2, 2)), (2, 3, 5, 3), 2, ceil_mode=True),
         ValueError, "avg_pool2d_backward", ["grad_out", "(2, 3, 3, 2)", "(2, 3, 2, 2)",
                                             "ceil_mode True"]),
    ],
)
def test_pool_option_messages(call, exc, fname, fragments):
    with raises(exc, fname, *fragments):
        call()


def test_ceil_mode_still_needs_one_window():
    # Rounding up gives one (clipped) window to a kernel larger than the
    # padded input when the stride is large enough, as in PyTorch ...
    assert F.max_pool2d(X, 9, padding=1, ceil_mode=True).shape == (2, 3, 1, 1)
    # ... but not otherwise.
    with raises(ValueError, "max_pool2d", "kernel is larger", "input size 6", "kernel_size 9",
                "stride 1"):
        F.max_pool2d(X, 9, stride=1, padding=1, ceil_mode=True)


@pytest.mark.parametrize(
    "call,exc,fname,fragments",
    [
        (lambda: F.adaptive_avg_pool2d(X, -1), ValueError, "adaptive_avg_pool2d",
         ["output_size", ">= 0", "-1"]),
        (lambda: F.adaptive_avg_pool2d(X, (2, 3, 4)), ValueError, "adaptive_avg_pool2d",
         ["output_size", "pair", "length 3"]),
        (lambda: F.adaptive_avg_pool2d(X, None), TypeError, "adaptive_avg_pool2d",
         ["output_size", "None"]),
        (lambda: F.adaptive_avg_pool2d(X, 2.0), TypeError, "adaptive_avg_pool2d",
         ["output_size", "int"]),
        (lambda: F.adaptive_max_pool2d(X, (None, "2")), TypeError, "adaptive_max_pool2d",
         ["output_size[1]"]),
        (lambda: F.adaptive_max_pool2d(X, 2, return_indices=1), TypeError,
         "adaptive_max_pool2d", ["return_indices"]),
        (lambda: F.adaptive_avg_pool2d(np.zeros((2, 0, 4, 4)), 1), ValueError,
         "adaptive_avg_pool2d", ["x", "non-empty", "(2, 0, 4, 4)"]),
        (lambda: F.adaptive_max_pool2d(np.zeros((3, 4, 0)), 1), ValueError,
         "adaptive_max_pool2d", ["x", "non-empty", "(3, 4, 0)"]),
        (lambda: F.adaptive_avg_pool2d(X[0, 0], 1), ValueError, "adaptive_avg_pool2d",
         ["x", "2-D"]),
        (lambda: F.adaptive_avg_pool2d_backward(PG, (2, 4, 6, 5)), ValueError,
         "adaptive_avg_pool2d_backward", ["grad_out.shape", "input_shape", "channel"]),
        (lambda: F.adaptive_avg_pool2d_backward(PG, (2, 3, 0, 5)), ValueError,
         "adaptive_avg_pool2d_backward", ["non-empty"]),
        (lambda: F.adaptive_max_pool2d_backward(PG, IDX + 30, X.shape), ValueError,
         "adaptive_max_pool2d_backward", ["indices", "[0, 30)"]),
        (lambda: F.adaptive_max_pool2d_backward(PG, IDX[..., :1], X.shape), ValueError,
         "adaptive_max_pool2d_backward", ["indices.shape"]),
    ],
)
def test_adaptive_pool_messages(call, exc, fname, fragments):
    with raises(exc, fname, *fragments):
        call()


@pytest.mark.parametrize(
    "call,exc,fname,fragments",
    [
        (lambda: F.max_unpool2d(PG, IDX[..., :1], 2), ValueError, "max_unpool2d",
         ["indices.shape", "x.shape"]),
        (lambda: F.max_unpool2d(PG, IDX.astype(float), 2), TypeError, "max_unpool2d",
         ["indices", "integer"]),
        (lambda: F.max_unpool2d(PG, IDX + 30, 2), ValueError, "max_unpool2d",
         ["indices", "[0, 24)", "(6, 4)"]),
        (lambda: F.max_unpool2d(PG, IDX, 2, output_size=(9, 4)), ValueError, "max_unpool2d",
         ["output_size", "height", "between 4 and 8", "9"]),
        (lambda: F.max_unpool2d(PG, IDX, 2, output_size=(6, 2)), ValueError, "max_unpool2d",
         ["output_size", "width", "between 2 and 6", "2"]),
        (lambda: F.max_unpool2d(PG, IDX, 2, output_size=(2, 6, 4)), ValueError, "max_unpool2d",
         ["output_size", "2 entries", "4"]),
        (lambda: F.max_unpool2d(PG, IDX, 2, output_size=(1, 3, 6, 4)), ValueError,
         "max_unpool2d", ["output_size", "batch and channel", "(2, 3)"]),
        (lambda: F.max_unpool2d(PG, IDX, 2, output_size=6), TypeError, "max_unpool2d",
         ["output_size", "tuple"]),
        (lambda: F.max_unpool2d(PG, IDX, 2, output_size=(6.0, 4)), TypeError, "max_unpool2d",
         ["output_size[0]"]),
        (lambda: F.max_unpool2d(PG, IDX, 0), ValueError, "max_unpool2d",
         ["kernel_size", ">= 1"]),
        (lambda: F.max_unpool2d_backward(X, IDX + 30), ValueError, "max_unpool2d_backward",
         ["indices", "[0, 30)"]),
        (lambda: F.max_unpool2d_backward(X, IDX[0]), ValueError, "max_unpool2d_backward",
         ["indices.shape", "grad_out.shape"]),
    ],
)
def test_max_unpool2d_messages(call, exc, fname, fragments):
    with raises(exc, fname, *fragments):
        call()


@pytest.mark.parametrize(
    "call,exc,fname,fragments",
    [
        (lambda: F.max_pool1d(X, 2), ValueError, "max_pool1d", ["x", "4-D", "(N, C, L)"]),
        (lambda: F.avg_pool1d(X1[0, 0], 2), ValueError, "avg_pool1d", ["x", "1-D"]),
        (lambda: F.max_pool1d(X1, (2, 2)), ValueError, "max_pool1d",
         ["kernel_size", "sequence of one int", "length 2"]),
        (lambda: F.max_pool1d(X1, 2, dilation=0), ValueError, "max_pool1d", ["dilation", ">= 1"]),
        (lambda: F.avg_pool1d(X1, 3, padding=2), ValueError, "avg_pool1d",
         ["padding", "half", "length"]),
        (lambda: F.max_pool1d(X1, 10), ValueError, "max_pool1d",
         ["kernel is larger", "length", "input size 9", "kernel_size 10"]),
        (lambda: F.avg_pool1d(X1, 2, ceil_mode=1), TypeError, "avg_pool1d", ["ceil_mode"]),
        (lambda: F.max_pool1d(X1, 2, return_indices="no"), TypeError, "max_pool1d",
         ["return_indices"]),
        (lambda: F.max_pool1d_backward(np.zeros((2, 3, 4)), np.full((2, 3, 4), 9), X1.shape),
         ValueError, "max_pool1d_backward", ["indices", "[0, L)", "[0, 9)"]),
        (lambda: F.max_pool1d_backward(np.zeros((2, 3, 4)), np.zeros((2, 3, 4), int), (2, 9)),
         ValueError, "max_pool1d_backward", ["input_shape", "3 entries"]),
        (lambda: F.avg_pool1d_backward(np.zeros((2, 3, 5)), X1.shape, 2), ValueError,
         "avg_pool1d_backward", ["grad_out", "(2, 3, 4)", "(2, 3, 5)"]),
    ],
)
def test_pool1d_messages(call, exc, fname, fragments):
    with raises(exc, fname, *fragments):
        call()
# batch normalization
# --------------------------------------------------------------------------

BX = np.zeros((2, 3, 4, 5))
C3 = np.zeros(3)


def bn_stats():
    return np.zeros(3), np.ones(3)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4, 5, 6)])
def test_batch_norm_x_ndim(shape):
    with raises(ValueError, "batch_norm", "x must be 2-D or 3-D or 4-D", str(shape)):
        F.batch_norm(np.zeros(shape), *bn_stats(), training=True)
    with raises(ValueError, "batch_norm_backward", "must be 2-D or 3-D or 4-D"):
        F.batch_norm_backward(np.zeros(shape), np.zeros(shape), None, None, training=True)


@pytest.mark.parametrize("name", ["running_mean", "running_var", "weight", "bias"])
def test_batch_norm_per_channel_shapes(name):
    args = dict(running_mean=np.zeros(3), running_var=np.ones(3), weight=C3, bias=C3)
    args[name] = np.zeros(4)
    with raises(ValueError, "batch_norm", f"{name} must have shape (3,)", "got (4,)"):
        F.batch_norm(BX, **args)
    args[name] = np.zeros((3, 1))
    with raises(ValueError, "batch_norm", f"{name} must have shape (3,)", "got (3, 1)"):
        F.batch_norm(BX, **args)


def test_batch_norm_channels_last_hint():
    x = np.zeros((2, 4, 5, 3))  # NHWC with C = 3
    with raises(ValueError, "batch_norm", "channels-last", "x.transpose(0, 3, 1, 2)"):
        F.batch_norm(x, *bn_stats())
    with raises(ValueError, "batch_norm", "channels-last", "x.transpose(0, 2, 1)"):
        F.batch_norm(np.zeros((2, 5, 3)), *bn_stats())


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), float("inf")])
def test_batch_norm_eps_must_be_positive(eps):
    with raises(ValueError, "batch_norm", "eps must be finite and in (0.0, inf)", repr(eps)):
        F.batch_norm(BX, *bn_stats(), eps=eps)
    with raises(ValueError, "batch_norm_backward", "eps"):
        F.batch_norm_backward(BX, BX, *bn_stats(), eps=eps)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_batch_norm_momentum_range(momentum):
    with raises(ValueError, "batch_norm", "momentum must be finite and in [0.0, 1.0]"):
        F.batch_norm(BX, *bn_stats(), training=True, momentum=momentum)


def test_batch_norm_types():
    with raises(TypeError, "batch_norm", "training must be a bool", "1"):
        F.batch_norm(BX, *bn_stats(), training=1)
    with raises(TypeError, "batch_norm", "momentum must be a real number"):
        F.batch_norm(BX, *bn_stats(), momentum=None)
    with raises(TypeError, "batch_norm", "weight must hold real numbers", "complex"):
        F.batch_norm(BX, *bn_stats(), weight=np.zeros(3, complex))
    with raises(TypeError, "batch_norm", "x must hold real numbers", "bool"):
        F.batch_norm(BX.astype(bool), *bn_stats())


def test_batch_norm_eval_needs_running_stats():
    with raises(ValueError, "batch_norm", "running_mean must be given in evaluation mode"):
        F.batch_norm(BX, None, np.ones(3))
    with raises(ValueError, "batch_norm", "running_var must be given in evaluation mode"):
        F.batch_norm(BX, np.zeros(3), None)
    with raises(ValueError, "batch_norm_backward", "running_mean must be given"):
        F.batch_norm_backward(BX, BX, None, None)


def test_batch_norm_training_running_stats_are_updatable_arrays():
    rm, rv = bn_stats()
    with raises(TypeError, "batch_norm", "running_mean must be a numpy.ndarray", "list"):
        F.batch_norm(BX, [0.0, 0.0, 0.0], rv, training=True)
    with raises(TypeError, "batch_norm", "running_var must have the compute dtype float64",
                "float32"):
        F.batch_norm(BX, rm, rv.astype(np.float32), training=True)
    ro = np.ones(3)
    ro.flags.writeable = False
    with raises(ValueError, "batch_norm", "running_var must be writeable"):
        F.batch_norm(BX, rm, ro, training=True)
    with raises(ValueError, "batch_norm", "running_mean and running_var must be different"):
        F.batch_norm(BX, rm, rm, training=True)
    w = np.ones(3)
    with raises(ValueError, "batch_norm", "running_mean (updated in place) must not share "
                "memory with weight"):
        F.batch_norm(BX, w, rv, weight=w[::-1], training=True)
    assert (rm == 0).all() and (rv == 1).all()  # nothing touched on error


def test_batch_norm_one_value_per_channel_in_training():
    with raises(ValueError, "batch_norm", "more than 1 value per channel", "(1, 3, 1, 1)"):
        F.batch_norm(np.zeros((1, 3, 1, 1)), *bn_stats(), training=True)
    with raises(ValueError, "batch_norm_backward", "more than 1 value per channel"):
        F.batch_norm_backward(np.zeros((1, 3)), np.zeros((1, 3)), None, None, training=True)


def test_batch_norm_backward_grad_shape():
    with raises(ValueError, "batch_norm_backward", "grad_out.shape must equal x.shape",
                "(2, 3, 4, 4)"):
        F.batch_norm_backward(np.zeros((2, 3, 4, 4)), BX, *bn_stats())


def test_batch_norm_none_arrays():
    with raises(TypeError, "batch_norm", "x must be an array, got None"):
        F.batch_norm(None, *bn_stats())
    with raises(TypeError, "batch_norm_backward", "grad_out must be an array, got None"):
        F.batch_norm_backward(None, BX, *bn_stats())
