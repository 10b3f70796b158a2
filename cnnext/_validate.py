"""Every argument rule of the public API, written once.

Each helper raises ``TypeError`` (wrong kind) or ``ValueError`` (bad value)
with a message that names the function, the parameter, the rule and the
value received, e.g. ``conv2d: x.shape[1] (3) must equal weight.shape[1]
(4)``, and adds a hint where a common mistake is likely.
"""
from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ._typing import FloatArray, FloatDType, IndexArray, Pair, Shape

_T = TypeVar("_T")

# Hyper-parameters beyond this are nonsense for an image layer and would
# overflow index arithmetic downstream; reject them up front.
MAX_SIZE = 2**31 - 1

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES


def _total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows, exotic platforms
        return 2**40


MEMORY_LIMIT = _total_memory_bytes()

_KIND_NAMES = {"b": "bool", "c": "complex", "O": "object", "U": "str", "S": "bytes"}


# --------------------------------------------------------------------------
# scalars
# --------------------------------------------------------------------------


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def as_int(fname: str, name: str, value: object, minimum: int | None = None) -> int:
    """A Python int from an integer-like (never bool, never float)."""
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fname}: {name} must be an int, got {type(value).__name__} {value!r}")
    v = operator.index(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{fname}: {name} must be >= {minimum}, got {v}")
    if v > MAX_SIZE:
        raise ValueError(f"{fname}: {name} must be <= {MAX_SIZE} (2**31 - 1), got {v}")
    return v


def pair(fname: str, name: str, value: object, minimum: int) -> Pair:
    """Normalise an int or an (h, w) pair of ints to a tuple of two ints."""
    if type(value) is int and minimum <= value <= MAX_SIZE:  # fast path
        return (value, value)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{fname}: {name} must be an int or a pair (h, w), got a sequence "
                f"of length {len(value)}: {value!r}"
            )
        return cast(
            "Pair", tuple(as_int(fname, f"{name}[{i}]", v, minimum) for i, v in enumerate(value))
        )
    if isinstance(value, np.ndarray) and value.shape == (2,):
        return pair(fname, name, value.tolist(), minimum)
    v = as_int(fname, name, value, minimum)
    return (v, v)


def real(
    fname: str,
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite Python float, optionally within [low, high] (ends open or closed)."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{fname}: {name} must be a real number, got {type(value).__name__} {value!r}"
        )
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        if low is None and high is None:
            raise ValueError(f"{fname}: {name} must be finite, got {value!r}")
        lo = f"{'(' if low_open else '['}{low}" if low is not None else "(-inf"
        hi = f"{high}{')' if high_open else ']'}" if high is not None else "inf)"
        raise ValueError(f"{fname}: {name} must be finite and in {lo}, {hi}, got {value!r}")
    return v


def boolean(fname: str, name: str, value: object) -> bool:
    """A Python bool from a bool or numpy.bool_ (never 0/1 or a string)."""
    if not _is_bool(value):
        raise TypeError(f"{fname}: {name} must be a bool, got {value!r}")
    return bool(value)


def rng(fname: str, seed: object) -> np.random.Generator:
    """A numpy Generator from an int seed >= 0, a Generator, or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if _is_bool(seed) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"{fname}: seed must be an int, a numpy.random.Generator or None, got "
            f"{type(seed).__name__} {seed!r}"
        )
    if seed < 0:
        raise ValueError(f"{fname}: seed must be >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def float_dtype(fname: str, dtype: npt.DTypeLike) -> FloatDType:
    """numpy.dtype(dtype), which must be float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fname}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{fname}: dtype must be float32 or float64, got {dt}")
    return cast("FloatDType", dt)


def one_of(fname: str, name: str, value: _T, allowed: Collection[object]) -> _T:
    if value not in allowed:
        raise ValueError(f"{fname}: {name} must be one of {allowed}, got {value!r}")
    return value


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------


def as_array(fname: str, name: str, value: object) -> npt.NDArray[Any]:
    """np.asarray with a clear error for things that are not arrays of numbers."""
    if value is None:
        raise TypeError(f"{fname}: {name} must be an array, got None")
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists, ...
        raise TypeError(f"{fname}: {name} could not be converted to an array: {exc}") from None
    if a.dtype.kind == "O":
        raise TypeError(f"{fname}: {name} must hold real numbers, got dtype object")
    return a


def compute_dtype(fname: str, arrays: Sequence[tuple[str, npt.NDArray[Any]]]) -> FloatDType:
    """numpy.result_type(*arrays, float32) restricted to float32/float64."""
    for name, a in arrays:
        k = a.dtype.kind
        if k not in "fiu":
            kind = _KIND_NAMES.get(k, str(a.dtype))
            raise TypeError(
                f"{fname}: {name} must hold real numbers (float or integer), "
                f"got dtype {a.dtype} ({kind})"
            )
    dt = np.result_type(*(a.dtype for _, a in arrays), np.float32)
    if dt not in FLOAT_DTYPES:
        raise TypeError(
            f"{fname}: inputs promote to {dt}, but only float32 and float64 are "
            f"supported (dtypes: {', '.join(f'{n}={a.dtype}' for n, a in arrays)})"
        )
    return dt


def check_ndim(
    fname: str, name: str, a: npt.NDArray[Any], allowed: Collection[int], layout: str = ""
) -> None:
    if a.ndim not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        layout = f" {layout}" if layout else ""
        raise ValueError(
            f"{fname}: {name} must be {want}{layout}, got {a.ndim}-D array of shape {a.shape}"
        )


def float_arrays(
    fname: str,
    named: Sequence[tuple[str, object]],
    ndims: Sequence[Collection[int] | None],
    layouts: Mapping[str, str] | None = None,
) -> tuple[list[FloatArray], FloatDType]:
    """Arrays -> (list of C-contiguous arrays of the compute dtype, dtype).

    ``named`` is a list of (name, value); ``ndims`` the allowed ndim per
    array (None: any); ``layouts`` an optional name -> layout text for the
    ndim message.  Copies only when the dtype or layout requires it; native
    float32/float64 C-contiguous arrays of one dtype (a training loop's
    common case) pass straight through.
    """
    first = named[0][1]
    if type(first) is np.ndarray:
        dt = first.dtype
        # Identity, not ==: numpy's dtype comparison costs more than the
        # rest of this check; the native float dtypes are singletons.
        if dt is _F32 or dt is _F64:
            for (_, a), nd in zip(named, ndims):
                if (
                    type(a) is not np.ndarray
                    or a.dtype is not dt
                    or not a.flags.c_contiguous
                    or (nd is not None and a.ndim not in nd)
                ):
                    break
            else:
                return cast("list[FloatArray]", [a for _, a in named]), dt
    arrays = [(n, as_array(fname, n, v)) for n, v in named]
    for (n, a), nd in zip(arrays, ndims):
        if nd is not None:
            check_ndim(fname, n, a, nd, (layouts or {}).get(n, ""))
    dt = compute_dtype(fname, arrays)
    # order='C' (not ascontiguousarray, which turns 0-d into 1-d).
    return [np.asarray(a, dtype=dt, order="C") for _, a in arrays], dt


def index_array(fname: str, name: str, value: object, shape: Shape | None = None) -> IndexArray:
    """An int64 C-contiguous copy-if-needed of an integer array."""
    a = as_array(fname, name, value)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{fname}: {name} must be an integer array, got dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{fname}: {name}.shape {a.shape} must equal {shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def shape_tuple(fname: str, name: str, value: object, ndim: int) -> Shape:
    """A tuple of ``ndim`` ints >= 0 (an input shape given to a backward pass)."""
    if type(value) is tuple and len(value) == ndim and all(
        type(v) is int and v >= 0 for v in value
    ):
        return value  # an ndarray's .shape, as layers pass it
    if not isinstance(value, (tuple, list)) and not (
        isinstance(value, np.ndarray) and value.ndim == 1
    ):
        raise TypeError(f"{fname}: {name} must be a tuple of ints, got {type(value).__name__}")
    shape = tuple(as_int(fname, f"{name}[{i}]", v, 0) for i, v in enumerate(value))
    if len(shape) != ndim:
        raise ValueError(
            f"{fname}: {name} must have {ndim} entries to match grad_out ({ndim}-D), got {shape}"
        )
    return shape


def check_alloc(fname: str, shape: Sequence[int], itemsize: int, what: str = "output") -> None:
    """MemoryError *before* allocating a request larger than physical memory;
    ValueError for an empty shape numpy cannot represent all the same (a size
    is 0 but the others multiply past 2**63 bytes)."""
    n = 1
    span = itemsize
    for s in shape:
        n *= int(s)
        span *= max(int(s), 1)
    if n == 0 and span >= 2**63:
        raise ValueError(
            f"{fname}: the {what} of shape {tuple(int(s) for s in shape)} cannot be "
            f"represented (its sizes multiply past 2**63 bytes); check the padding and "
            f"the input size"
        )
    nbytes = n * itemsize
    if nbytes > MEMORY_LIMIT:
        raise MemoryError(
            f"{fname}: the {what} of shape {tuple(int(s) for s in shape)} would need "
            f"{nbytes / 2**30:.1f} GiB, more than this machine's "
            f"{MEMORY_LIMIT / 2**30:.1f} GiB of memory"
        )


# --------------------------------------------------------------------------
# layer geometry
# --------------------------------------------------------------------------


def channels_match(fname: str, x_shape: Sequence[int], n_channels: int, what: str) -> None:
    """x.shape[1] (batched) or x.shape[0] (unbatched) must equal n_channels.

    ``x_shape`` is 3-D (one unbatched sample) or 4-D (NCHW).  The message
    names the likely mistake: channels-last (NHWC) data, or a batch of
    single-channel images without a channel axis read as one sample.
    """
    axis = 1 if len(x_shape) == 4 else 0
    if x_shape[axis] == n_channels:
        return
    msg = (
        f"{fname}: x.shape[{axis}] ({x_shape[axis]}) must equal {what} ({n_channels}), "
        f"the number of input channels"
    )
    if len(x_shape) == 4 and x_shape[3] == n_channels:
        msg += (
            f"; x looks channels-last (N, H, W, C) = {tuple(x_shape)}: cnnext expects NCHW, "
            f"use x.transpose(0, 3, 1, 2)"
        )
    elif len(x_shape) == 3:
        msg += f"; a 3-D x is read as ONE unbatched (C, H, W) sample with {x_shape[0]} channels"
        if n_channels == 1:
            msg += (
                ": for a batch of single-channel images (N, H, W) add the channel "
                "axis, x[:, None]"
            )
    raise ValueError(msg)


def bias_shape(fname: str, shape: Sequence[int] | None, n_out: int) -> None:
    if shape is not None and tuple(shape) != (n_out,):
        raise ValueError(
            f"{fname}: bias must have shape ({n_out},) (one value per output "
            f"channel), got {tuple(shape)}"
        )


def conv_out_size(fname: str, size: int, k: int, s: int, p: int, d: int, axis: str) -> int:
    """PyTorch's conv output size; ValueError naming everything when <= 0."""
    eff = d * (k - 1) + 1
    out = (size + 2 * p - eff) // s + 1
    if out < 1:
        raise ValueError(
            f"{fname}: kernel is larger than the padded input along {axis}: "
            f"input size {size}, kernel {k}, stride {s}, padding {p}, dilation {d} "
            f"(effective kernel {eff} > padded input {size + 2 * p}); output size "
            f"would be {out}"
        )
    return out


def pool_out_size(
    fname: str, size: int, k: int, s: int, p: int, axis: str, d: int = 1, ceil_mode: bool = False
) -> int:
    """PyTorch's pooling output size (``ceil_mode``: rounded up, but a last
    window that would start in the right/bottom padding is dropped);
    ValueError naming everything when <= 0 or when the padding exceeds half
    the kernel."""
    if 2 * p > k:
        raise ValueError(
            f"{fname}: padding must be at most half the kernel size along {axis}: "
            f"kernel_size {k}, padding {p}"
        )
    eff = d * (k - 1) + 1
    out = (size + 2 * p - eff + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    if out < 1:
        extra = f", dilation {d} (effective kernel {eff})" if d != 1 else ""
        raise ValueError(
            f"{fname}: kernel is larger than the padded input along {axis}: input "
            f"size {size}, kernel_size {k}, stride {s}, padding {p}{extra}; output size "
            f"would be {out}"
        )
    return out


def divisor_override(fname: str, value: object) -> int | None:
    """None, or a nonzero int (an average pool's fixed divisor, as PyTorch)."""
    if value is None:
        return None
    v = as_int(fname, "divisor_override", value)
    if v == 0:
        raise ValueError(f"{fname}: divisor_override must be nonzero or None, got 0")
    if v < -MAX_SIZE:
        raise ValueError(f"{fname}: divisor_override must be >= {-MAX_SIZE}, got {v}")
    return v


def adaptive_output_size(fname: str, value: object, in_size: Pair) -> Pair:
    """An adaptive pool's (OH, OW) from an int, or a pair whose entries are
    ints >= 0 or None (None keeps the input size along that axis)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{fname}: output_size must be an int or a pair (h, w), got a sequence "
                f"of length {len(value)}: {value!r}"
            )
        return cast("Pair", tuple(
            in_size[i] if v is None else as_int(fname, f"output_size[{i}]", v, 0)
            for i, v in enumerate(value)
        ))
    if value is None:
        raise TypeError(f"{fname}: output_size must be an int or a pair (h, w), got None")
    return pair(fname, "output_size", value, 0)


def nonempty_planes(fname: str, shape: Shape) -> None:
    """Every axis but the batch axis of an (N, C, H, W) or (C, H, W) input is
    non-empty (adaptive pooling has no window on an empty axis)."""
    dims = shape[1:] if len(shape) == 4 else shape
    if 0 in dims:
        raise ValueError(
            f"{fname}: x must have non-empty channel, height and width axes (only the "
            f"batch axis may be 0), got shape {tuple(shape)}"
        )


def unpool_output_size(
    fname: str, output_size: object, default: Pair, stride: Pair, batch_shape: Shape
) -> Pair:
    """max_unpool2d's (OH, OW): ``default`` or a given ``(OH, OW)`` (or a
    full shape ending in it) within ``stride`` of the default, as PyTorch."""
    if output_size is None:
        return default
    if not isinstance(output_size, (tuple, list)) and not (
        isinstance(output_size, np.ndarray) and output_size.ndim == 1
    ):
        raise TypeError(
            f"{fname}: output_size must be None or a tuple (OH, OW), got "
            f"{type(output_size).__name__} {output_size!r}"
        )
    n = len(output_size)
    if n not in (2, len(batch_shape) + 2):
        raise ValueError(
            f"{fname}: output_size must have 2 entries (OH, OW) or {len(batch_shape) + 2} "
            f"(the full output shape), got {tuple(output_size)}"
        )
    size = cast("Pair", tuple(
        as_int(fname, f"output_size[{i}]", v, 0)
        for i, v in enumerate(output_size) if i >= n - 2
    ))
    if n > 2:
        lead = tuple(as_int(fname, f"output_size[{i}]", v, 0)
                     for i, v in enumerate(output_size) if i < n - 2)
        if lead != tuple(batch_shape):
            raise ValueError(
                f"{fname}: output_size {tuple(output_size)} must start with the batch and "
                f"channel sizes of x {tuple(batch_shape)}"
            )
    for i, axis in enumerate(("height", "width")):
        lo, hi = default[i] - stride[i], default[i] + stride[i]
        if not lo < size[i] < hi:
            raise ValueError(
                f"{fname}: output_size along {axis} must be strictly between {lo} and {hi} "
                f"(the default size {default[i]} -/+ the stride {stride[i]}), got {size[i]}"
            )
    return size


# --------------------------------------------------------------------------
# convolution options: groups, padding modes, 1-D options
# --------------------------------------------------------------------------

#: The padding strings of the convolutions (PyTorch's).
PADDING_MODES = ("same", "valid")


def conv_padding(fname: str, value: object) -> Pair | str:
    """A convolution's padding: an int or (h, w) pair >= 0, or ``"same"``/``"valid"``."""
    if isinstance(value, str):
        if value not in PADDING_MODES:
            raise ValueError(
                f"{fname}: padding must be an int, a pair (h, w), 'same' or 'valid', "
                f"got {value!r}"
            )
        return value
    return pair(fname, "padding", value, 0)


def single(fname: str, name: str, value: object, minimum: int) -> int:
    """A 1-D option: an int or a sequence of one int."""
    if isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        if len(value) != 1:
            raise ValueError(
                f"{fname}: {name} must be an int or a sequence of one int, got a sequence "
                f"of length {len(value)}: {value!r}"
            )
        return as_int(fname, f"{name}[0]", value[0], minimum)
    return as_int(fname, name, value, minimum)


def conv1d_padding(fname: str, value: object) -> int | str:
    """A 1-D convolution's padding: an int (or 1-sequence) >= 0, ``"same"`` or ``"valid"``."""
    if isinstance(value, str):
        return cast("str", conv_padding(fname, value))
    return single(fname, "padding", value, 0)


def resolve_padding(
    fname: str, padding: Sequence[int] | str, stride: Sequence[int], kernel: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(padding on each side, extra padding after) per axis.

    A number pads both sides alike (no extra).  ``"valid"`` pads nothing.
    ``"same"`` (stride 1 only) pads ``d*(k - 1)`` in total along each axis,
    ``total // 2`` on each side and the odd one at the end, as PyTorch.
    """
    if not isinstance(padding, str):
        return tuple(padding), tuple(0 for _ in padding)
    if padding == "valid":
        return tuple(0 for _ in kernel), tuple(0 for _ in kernel)
    if any(s != 1 for s in stride):
        shown = stride[0] if len(stride) == 1 else tuple(stride)
        raise ValueError(
            f"{fname}: padding='same' needs stride 1 (PyTorch does not define it for "
            f"strided convolutions), got stride {shown}"
        )
    total = [d * (k - 1) for d, k in zip(dilation, kernel)]
    return tuple(t // 2 for t in total), tuple(t % 2 for t in total)


def groups(fname: str, value: object) -> int:
    """The ``groups`` option: an int >= 1."""
    return as_int(fname, "groups", value, 1)


def conv_groups(
    fname: str, x_shape: Sequence[int], channel_axis: int, weight_shape: Sequence[int],
    n_groups: int, transposed: bool = False,
) -> None:
    """Channel counts of a (transposed) convolution with ``n_groups`` groups.

    conv: weight ``(C_out, C_in / groups, ...)``, C_out divisible by groups
    and ``x.shape[channel_axis] == weight.shape[1] * groups``.  Transposed:
    weight ``(C_in, C_out / groups, ...)``, C_in divisible by groups.
    """
    if weight_shape[0] % n_groups:
        what = "C_in" if transposed else "C_out"
        raise ValueError(
            f"{fname}: weight.shape[0] ({what} = {weight_shape[0]}) must be divisible by "
            f"groups ({n_groups})"
        )
    if transposed or n_groups == 1:
        return
    want = weight_shape[1] * n_groups
    if x_shape[channel_axis] != want:
        raise ValueError(
            f"{fname}: x.shape[{channel_axis}] ({x_shape[channel_axis]}) must equal "
            f"weight.shape[1] * groups ({weight_shape[1]} * {n_groups} = {want}), the "
            f"number of input channels"
        )


def group_channels(fname: str, n_groups: int, in_channels: int, out_channels: int) -> None:
    """A layer's channel counts must both be divisible by ``groups``."""
    for name, n in (("in_channels", in_channels), ("out_channels", out_channels)):
        if n % n_groups:
            raise ValueError(f"{fname}: {name} ({n}) must be divisible by groups ({n_groups})")
# --------------------------------------------------------------------------
# normalization
# --------------------------------------------------------------------------


def per_channel(fname: str, name: str, shape: Sequence[int], x_shape: Sequence[int]) -> None:
    """A per-channel array (running statistics, weight, bias) must have shape
    (C,) for x of shape (N, C, ...); hints at channels-last x."""
    C = x_shape[1]
    if tuple(shape) == (C,):
        return
    msg = (
        f"{fname}: {name} must have shape ({C},), one value per channel of x "
        f"(x.shape[1] = {C}), got {tuple(shape)}"
    )
    if len(x_shape) >= 3 and len(shape) == 1 and x_shape[-1] == shape[0]:
        order = (0, len(x_shape) - 1) + tuple(range(1, len(x_shape) - 1))
        msg += (
            f"; x looks channels-last {tuple(x_shape)}: cnnext expects the channel axis "
            f"at 1 (N, C, ...), use x.transpose{order}"
        )
    raise ValueError(msg)


def running_stat(fname: str, name: str, value: object, dtype: FloatDType) -> FloatArray:
    """A running statistic updated in place in training mode: a writeable
    ndarray of the compute dtype."""
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{fname}: {name} must be a numpy.ndarray in training mode (it is updated in "
            f"place), got {type(value).__name__}"
        )
    if value.dtype != dtype:
        raise TypeError(
            f"{fname}: {name} must have the compute dtype {dtype} in training mode (it is "
            f"updated in place), got dtype {value.dtype}"
        )
    if not value.flags.writeable:
        raise ValueError(
            f"{fname}: {name} must be writeable in training mode (it is updated in place), "
            f"got a read-only array"
        )
    return cast("FloatArray", value)


def no_overlap(fname: str, name: str, a: npt.NDArray[Any],
               others: Sequence[tuple[str, object]]) -> None:
    """An array written in place must not share memory with another operand."""
    for other, b in others:
        if b is not None and b is not a and isinstance(b, np.ndarray) and (
            np.may_share_memory(a, b)
        ):
            raise ValueError(
                f"{fname}: {name} (updated in place) must not share memory with {other}"
            )
        if b is a:
            raise ValueError(f"{fname}: {name} and {other} must be different arrays")


def features_match(fname: str, x_shape: Sequence[int], num_features: int) -> None:
    """x.shape[1] of an (N, C, ...) input must equal a layer's num_features;
    hints at channels-last x."""
    if x_shape[1] == num_features:
        return
    msg = (
        f"{fname}: x.shape[1] ({x_shape[1]}) must equal num_features ({num_features}), "
        f"the number of channels"
    )
    if len(x_shape) >= 3 and x_shape[-1] == num_features:
        order = (0, len(x_shape) - 1) + tuple(range(1, len(x_shape) - 1))
        msg += (
            f"; x looks channels-last {tuple(x_shape)}: cnnext expects the channel axis "
            f"at 1 (N, C, ...), use x.transpose{order}"
        )
    raise ValueError(msg)
