"""Argument checking shared by the public API (tier 2).

Every message names the function, the parameter, the rule and the value
received, e.g. ``conv2d: x.shape[1] (3) must equal weight.shape[1] (4)``.
"""
import numbers
import operator
import os

import numpy as np

# Hyper-parameters beyond this are nonsense for an image layer and would
# overflow index arithmetic downstream; reject them up front.
MAX_SIZE = 2**31 - 1


def _total_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows, exotic platforms
        return 2**40


_MEMORY_LIMIT = _total_memory_bytes()


def as_int(fname, name, value, minimum=None):
    """A Python int from an integer-like (never bool, never float)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{fname}: {name} must be an int, got {type(value).__name__} {value!r}"
        )
    v = operator.index(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{fname}: {name} must be >= {minimum}, got {v}")
    if v > MAX_SIZE:
        raise ValueError(f"{fname}: {name} must be <= {MAX_SIZE} (2**31 - 1), got {v}")
    return v


def pair(fname, name, value, minimum):
    """Normalise an int or an (h, w) pair of ints to a tuple of two ints."""
    if type(value) is int and minimum <= value <= MAX_SIZE:  # fast path
        return (value, value)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{fname}: {name} must be an int or a pair (h, w), got a sequence "
                f"of length {len(value)}: {value!r}"
            )
        return tuple(as_int(fname, f"{name}[{i}]", v, minimum) for i, v in enumerate(value))
    if isinstance(value, np.ndarray) and value.shape == (2,):
        return pair(fname, name, value.tolist(), minimum)
    v = as_int(fname, name, value, minimum)
    return (v, v)


def compute_dtype(fname, arrays):
    """numpy.result_type(*arrays, float32) restricted to float32/float64."""
    for name, a in arrays:
        k = a.dtype.kind
        if k not in "fiu":
            kind = {
                "b": "bool",
                "c": "complex",
                "O": "object",
                "U": "str",
                "S": "bytes",
            }.get(k, str(a.dtype))
            raise TypeError(
                f"{fname}: {name} must hold real numbers (float or integer), "
                f"got dtype {a.dtype} ({kind})"
            )
    dt = np.result_type(*(a.dtype for _, a in arrays), np.float32)
    if dt not in (np.float32, np.float64):
        raise TypeError(
            f"{fname}: inputs promote to {dt}, but only float32 and float64 are "
            f"supported (dtypes: {', '.join(f'{n}={a.dtype}' for n, a in arrays)})"
        )
    return dt


def as_array(fname, name, value):
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


def check_ndim(fname, name, a, allowed, layout):
    if a.ndim not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        layout = f" {layout}" if layout else ""
        raise ValueError(
            f"{fname}: {name} must be {want}{layout}, got {a.ndim}-D array of shape {a.shape}"
        )


def check_alloc(fname, shape, itemsize, what="output"):
    """MemoryError *before* allocating a request larger than physical memory."""
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * itemsize
    if nbytes > _MEMORY_LIMIT:
        raise MemoryError(
            f"{fname}: the {what} of shape {tuple(int(s) for s in shape)} would need "
            f"{nbytes / 2**30:.1f} GiB, more than this machine's "
            f"{_MEMORY_LIMIT / 2**30:.1f} GiB of memory"
        )


def conv_out_size(fname, size, k, s, p, d, axis):
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


def pool_out_size(fname, size, k, s, p, axis):
    if 2 * p > k:
        raise ValueError(
            f"{fname}: padding must be at most half the kernel size along {axis}: "
            f"kernel_size {k}, padding {p}"
        )
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ValueError(
            f"{fname}: kernel is larger than the padded input along {axis}: input "
            f"size {size}, kernel_size {k}, stride {s}, padding {p}; output size "
            f"would be {out}"
        )
    return out
