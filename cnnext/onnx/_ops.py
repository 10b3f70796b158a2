"""How each supported ONNX operator runs.

A builder per operator checks the node's attributes once, when the model is
loaded, and returns its *step*: a closure calling :mod:`cnnext.functional`
where a compiled kernel fits (1-D and 2-D float32/float64 convolutions and
pooling, GEMM, activations, softmax, batch normalization) and numpy
otherwise (3-D and higher, float16 and integer tensors, element-wise
arithmetic, reshapes).  Window geometry is worked out once per input shape.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import _config, _eltwise, _plan
from .. import functional as F
from ._proto import MAX_TENSOR_BYTES, Array, Step, _Attrs, _bad, _unsupported

# ------------------------------------------------------------------ geometry


def _spatial(x: Array, op: str) -> int:
    if x.ndim < 3:
        raise ValueError(f"cnnext.onnx: {op} needs an (N, C, ...) input, got shape {x.shape}")
    return x.ndim - 2


def _per_axis(v: list[int] | None, n: int, default: int, name: str, op: str) -> list[int]:
    if v is None:
        return [default] * n
    if len(v) != n:
        raise ValueError(f"cnnext.onnx: {op} attribute {name} has {len(v)} entries for "
                         f"{n} spatial axes")
    return v


class _Window:
    """A convolution's or pooling's window attributes, checked at load."""

    def __init__(self, at: _Attrs, pool: bool):
        self.op = at.op
        self.auto_pad = at.string("auto_pad", "NOTSET")
        if self.auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
            raise _bad(f"{at.op}: auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, "
                       f"got {self.auto_pad!r}")
        self.kernel = at.ints("kernel_shape")
        if pool and self.kernel is None:
            raise _bad(f"{at.op}: attribute kernel_shape is required")
        self.strides = at.ints("strides")
        self.dilations = at.ints("dilations")
        self.pads = at.ints("pads")
        for name in ("kernel_shape", "strides", "dilations"):
            v = at.ints(name)
            if v is not None and any(d < 1 for d in v):
                raise _bad(f"{at.op}: {name} must be >= 1, got {v}")
        if self.pads is not None and any(p < 0 for p in self.pads):
            raise _bad(f"{at.op}: pads must be >= 0, got {self.pads}")
        if pool and self.pads is not None and self.kernel is not None and (
                len(self.pads) != 2 * len(self.kernel)
                or any(p >= k for p, k in zip(self.pads, 2 * self.kernel))):
            raise _bad(f"{at.op}: pads must have 2 entries per kernel axis, each smaller than "
                       f"the kernel: pads {self.pads}, kernel_shape {self.kernel}")

    def geometry(self, size: Sequence[int], kernel: Sequence[int], ceil_mode: bool = False,
                 ) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
        """(strides, dilations, pads_begin, pads_end, output size) for ``size``."""
        n = len(size)
        s = _per_axis(self.strides, n, 1, "strides", self.op)
        d = _per_axis(self.dilations, n, 1, "dilations", self.op)
        eff = [(k - 1) * dd + 1 for k, dd in zip(kernel, d)]
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = [-(-h // ss) for h, ss in zip(size, s)]
            total = [max((o - 1) * ss + e - h, 0) for o, ss, e, h in zip(out, s, eff, size)]
            small = [t // 2 for t in total]
            big = [t - t // 2 for t in total]
            pb, pe = (small, big) if self.auto_pad == "SAME_UPPER" else (big, small)
        elif self.auto_pad == "VALID":
            pb, pe = [0] * n, [0] * n
        else:
            pads = _per_axis(self.pads, 2 * n, 0, "pads", self.op)
            pb, pe = pads[:n], pads[n:]
        out = []
        for i in range(n):
            span = size[i] + pb[i] + pe[i] - eff[i]
            o = (-(-span // s[i]) if ceil_mode else span // s[i]) + 1
            if ceil_mode and (o - 1) * s[i] >= size[i] + pb[i]:
                o -= 1
            if span < 0 or o < 1:
                raise ValueError(f"cnnext.onnx: {self.op}: the window ({eff[i]}) is larger than "
                                 f"the padded input ({size[i] + pb[i] + pe[i]}) along spatial "
                                 f"axis {i}")
            out.append(o)
        return s, d, pb, pe, out


def _pair(v: Sequence[int]) -> int | tuple[int, int]:
    """A 2-D option as cnnext takes it: one int when both axes agree (the
    functional API's fast path), else the pair."""
    h, w = int(v[0]), int(v[1])
    return h if h == w else (h, w)


def _is_float(a: Array) -> bool:
    return a.dtype in (np.float32, np.float64)


def _room(shape: Sequence[int], dt: np.dtype[Any], what: str) -> None:
    """ValueError before allocating a tensor an attribute (a padding, an
    output shape) makes larger than ``MAX_TENSOR_BYTES``."""
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise ValueError(f"cnnext.onnx: {what} of shape {tuple(shape)} would take {nbytes} "
                         f"bytes, more than {MAX_TENSOR_BYTES}")


def _pad(x: Array, pb: Sequence[int], pe: Sequence[int], value: float = 0.0) -> Array:
    if not any(pb) and not any(pe):
        return x
    _room([*x.shape[:2], *(h + a + b for h, a, b in zip(x.shape[2:], pb, pe))], x.dtype,
          "the padded input")
    return np.pad(x, [(0, 0), (0, 0), *zip(pb, pe)], constant_values=value)


# ------------------------------------------------------------------ ops


def _conv(at: _Attrs, const: list[Array | None]) -> Step:
    win = _Window(at, pool=False)
    group = at.integer("group", 1)
    if group < 1:
        raise _bad(f"Conv: group must be >= 1, got {group}")
    plans: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = {}

    def run(v: list[Array | None]) -> list[Array | None]:
        x, w, b = v[0], v[1], v[2] if len(v) > 2 else None
        assert x is not None and w is not None
        n = _spatial(x, "Conv")
        _conv_operands("Conv", x, w, b, group, False)
        kernel = list(w.shape[2:])
        if win.kernel is not None and list(win.kernel) != kernel:
            raise ValueError(f"cnnext.onnx: Conv kernel_shape {win.kernel} does not match the "
                             f"weight's {kernel}")
        key = (x.shape, w.shape)
        geo = plans.get(key)
        if geo is None:
            geo = plans[key] = win.geometry(x.shape[2:], kernel)
        s, d, pb, pe, _ = geo
        if n > 2 or not _is_float(x):  # numpy, in float32 at least
            dt = x.dtype
            y = _conv_nd(_pad(_widen(x), pb, pe), _widen(w), s, d, group)
            if b is not None:
                y += b.reshape(-1, *([1] * n))
            return [y.astype(dt, copy=False)]
        if n == 1:
            x, w = x[:, :, None, :], w[:, :, None, :]
            s, d, pb, pe = [1, *s], [1, *d], [0, *pb], [0, *pe]
        if pb != pe:
            x, pad = _pad(x, pb, pe), _pair((0, 0))
        else:
            pad = _pair(pb)
        y = F.conv2d(x, w, b, _pair(s), pad, _pair(d), group)
        return [y[:, :, 0, :] if n == 1 else y]

    return run


def _conv_transpose(at: _Attrs, const: list[Array | None]) -> Step:
    win = _Window(at, pool=False)
    group = at.integer("group", 1)
    out_pad = at.ints("output_padding")
    out_shape = at.ints("output_shape")
    if group < 1:
        raise _bad(f"ConvTranspose: group must be >= 1, got {group}")

    def run(v: list[Array | None]) -> list[Array | None]:
        x, w, b = v[0], v[1], v[2] if len(v) > 2 else None
        assert x is not None and w is not None
        n = _spatial(x, "ConvTranspose")
        _conv_operands("ConvTranspose", x, w, b, group, True)
        size = list(x.shape[2:])
        kernel = list(w.shape[2:])
        s = _per_axis(win.strides, n, 1, "strides", "ConvTranspose")
        d = _per_axis(win.dilations, n, 1, "dilations", "ConvTranspose")
        op = _per_axis(out_pad, n, 0, "output_padding", "ConvTranspose")
        full = [ss * (h - 1) + (k - 1) * dd + 1 for ss, h, k, dd in zip(s, size, kernel, d)]
        if win.pads is None and win.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            want = list(out_shape[-n:]) if out_shape is not None else [
                h * ss for h, ss in zip(size, s)]
            total = [f + o - t for f, o, t in zip(full, op, want)]
            upper = win.auto_pad == "SAME_UPPER"
            pb = [t // 2 if upper else t - t // 2 for t in total]
        else:
            pads = [0] * 2 * n if win.pads is None or win.auto_pad == "VALID" else _per_axis(
                win.pads, 2 * n, 0, "pads", "ConvTranspose")
            pb = pads[:n]
            want = list(out_shape[-n:]) if out_shape is not None else [
                f + o - p0 - p1 for f, o, p0, p1 in zip(full, op, pads[:n], pads[n:])]
        if any(t < 1 for t in want):
            raise ValueError(f"cnnext.onnx: ConvTranspose output size {want} is not positive")
        dt = x.dtype
        if n > 2 or not _is_float(x):  # numpy, in float32 at least
            y = _conv_transpose_nd(_widen(x), _widen(w), s, d, group, full)
        else:
            if n == 1:
                x, w = x[:, :, None, :], w[:, :, None, :]
                s, d, pb, want, full = [1, *s], [1, *d], [0, *pb], [1, *want], [1, *full]
            y = F.conv_transpose2d(x, w, None, _pair(s), 0, 0, group, _pair(d))
        _room([*y.shape[:2], *want], y.dtype, "ConvTranspose's output")
        out = np.zeros((*y.shape[:2], *want), dtype=y.dtype)
        src, dst = [], []
        for p, f, t in zip(pb, full, want):
            lo, hi = max(p, 0), min(f, p + t)
            src.append(slice(lo, max(hi, lo)))
            dst.append(slice(lo - p, max(hi, lo) - p))
        out[(slice(None), slice(None), *dst)] = y[(slice(None), slice(None), *src)]
        if b is not None:
            out += b.reshape(-1, *([1] * len(want)))
        out = out.astype(dt, copy=False)
        return [out[:, :, 0, :] if n == 1 else out]

    return run


def _conv_operands(op: str, x: Array, w: Array, b: Array | None, group: int,
                   transposed: bool) -> None:
    """ValueError unless X, W and B fit together (ONNX's shape rules)."""
    if x.dtype.kind != "f" or w.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
        raise ValueError(f"cnnext.onnx: {op} needs floating X, W and B of one type, got "
                         f"{x.dtype}, {w.dtype}, {None if b is None else b.dtype}")
    shapes = (f"cnnext.onnx: {op} shapes do not fit: X {x.shape}, W {w.shape}, "
              f"B {None if b is None else b.shape}, group {group}")
    if w.ndim != x.ndim:
        raise ValueError(shapes)
    cin = w.shape[0] if transposed else w.shape[1] * group
    cout = w.shape[1] * group if transposed else w.shape[0]
    if x.shape[1] != cin or w.shape[0] % group or (b is not None and b.shape != (cout,)):
        raise ValueError(shapes)


def _widen(a: Array) -> Array:
    """float16 (and other narrow floats) as float32 for the numpy paths."""
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def _taps(kernel: Sequence[int], d: Sequence[int], s: Sequence[int],
          out: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Each kernel tap and the strided slice of input positions it meets."""
    for tap in np.ndindex(*kernel):
        yield tap, tuple(slice(t * dd, t * dd + (o - 1) * ss + 1, ss)
                         for t, dd, o, ss in zip(tap, d, out, s))


def _conv_nd(x: Array, w: Array, s: Sequence[int], d: Sequence[int], group: int) -> Array:
    """Convolution of a padded (N, C, *spatial) input in numpy, one kernel
    tap at a time (any number of spatial axes)."""
    kernel = w.shape[2:]
    out = [(h - (k - 1) * dd - 1) // ss + 1 for h, k, dd, ss in zip(x.shape[2:], kernel, d, s)]
    m, cg = w.shape[0], w.shape[1]
    mg = m // group
    y = np.zeros((x.shape[0], m, *out), dtype=x.dtype)
    for tap, sl in _taps(kernel, d, s, out):
        patch = x[(slice(None), slice(None), *sl)]
        for g in range(group):
            taps: tuple[slice | int, ...] = (slice(g * mg, (g + 1) * mg), slice(None), *tap)
            y[:, g * mg:(g + 1) * mg] += np.einsum(
                "nc...,mc->nm...", patch[:, g * cg:(g + 1) * cg], w[taps])
    return y


def _conv_transpose_nd(x: Array, w: Array, s: Sequence[int], d: Sequence[int], group: int,
                       full: Sequence[int]) -> Array:
    """Transposed convolution in numpy before cropping (output ``full``), one
    kernel tap at a time (any number of spatial axes)."""
    cg, mg = w.shape[0] // group, w.shape[1]
    y = np.zeros((x.shape[0], mg * group, *full), dtype=x.dtype)
    for tap, sl in _taps(w.shape[2:], d, s, x.shape[2:]):
        for g in range(group):
            taps: tuple[slice | int, ...] = (slice(g * cg, (g + 1) * cg), slice(None), *tap)
            y[(slice(None), slice(g * mg, (g + 1) * mg), *sl)] += np.einsum(
                "nc...,cm->nm...", x[:, g * cg:(g + 1) * cg], w[taps])
    return y


def _kernel_input(x: Array, kernel: Sequence[int], s: Sequence[int], d: Sequence[int],
                  pb: Sequence[int], pe: Sequence[int], out: Sequence[int], ceil: bool,
                  fill: float) -> tuple[Array, list[int], bool, list[int]]:
    """(input, symmetric padding, ceil_mode, offset of the input in it) for a
    PyTorch-style pooling kernel computing ONNX's windows: ``x`` itself when
    the padding is symmetric and at most half the kernel, else ``x`` padded
    explicitly with ``fill`` (``pe`` extended to cover the last window)."""
    if list(pb) == list(pe) and all(2 * p <= k for p, k in zip(pb, kernel)):
        return x, list(pb), ceil, [0] * len(pb)
    end = [max(b, (o - 1) * ss + (k - 1) * dd + 1 - h - a) for o, ss, k, dd, h, a, b
           in zip(out, s, kernel, d, x.shape[2:], pb, pe)]
    return _pad(x, pb, end, fill), [0] * len(pb), False, list(pb)


def _tap_pool(x: Array, kernel: Sequence[int], s: Sequence[int], d: Sequence[int],
              pb: Sequence[int], pe: Sequence[int], out: Sequence[int], kind: str,
              include: bool = False, order: int | None = None) -> list[Array | None]:
    """ONNX pooling in numpy, one kernel tap at a time over the padded input
    (any number of spatial axes, any numeric type; memory of one output).
    ``order``: also the max's indices, in that storage order."""
    n = len(kernel)
    end = [max(b, (o - 1) * ss + (k - 1) * dd + 1 - h - a) for o, ss, k, dd, h, a, b
           in zip(out, s, kernel, d, x.shape[2:], pb, pe)]
    if kind == "avg":
        xp = _pad(_widen(x) if x.dtype.kind == "f" else x.astype(np.float64), pb, end)
        total = np.zeros((*x.shape[:2], *out), dtype=xp.dtype)
        for _, sl in _taps(kernel, d, s, out):
            total += xp[(slice(None), slice(None), *sl)]
        count: Array = np.ones((), dtype=np.int64)
        for ax in range(n):  # windows are boxes: counts multiply across axes
            pos = (np.arange(out[ax])[:, None] * s[ax] + np.arange(kernel[ax]) * d[ax]
                   - pb[ax])
            lo, hi = (-pb[ax], x.shape[2 + ax] + pe[ax]) if include else (0, x.shape[2 + ax])
            shape = [1] * n
            shape[ax] = out[ax]
            count = count * ((pos >= lo) & (pos < hi)).sum(axis=1).reshape(shape)
        return [(total / np.maximum(count, 1)).astype(x.dtype)]
    xp = _pad(x, pb, end, _lowest(x.dtype))
    y: Array | None = None
    idx: Array | None = None
    grid = [np.arange(o).reshape([o if a == ax else 1 for a in range(n)]) * ss
            for ax, (o, ss) in enumerate(zip(out, s))]
    for tap, sl in _taps(kernel, d, s, out):
        patch = xp[(slice(None), slice(None), *sl)]
        here = None
        if order is not None:
            here = _flat_index(x.shape, [g + t * dd - p for g, t, dd, p
                                         in zip(grid, tap, d, pb)], bool(order))
        if y is None:
            y, idx = patch.copy(), here
            continue
        better = patch > y  # the first maximum in window order stays; a NaN wins
        if x.dtype.kind == "f":
            better |= np.isnan(patch) & ~np.isnan(y)
        y = np.where(better, patch, y)
        if here is not None and idx is not None:
            idx = np.where(better, here, idx)
    return [y] if order is None else [y, idx]


def _lowest(dt: np.dtype[Any]) -> Any:
    if dt.kind == "f":
        return -np.inf
    if dt.kind == "b":
        return False
    return np.iinfo(dt).min


def _flat_index(x_shape: Sequence[int], coords: Sequence[Array], column_major: bool) -> Array:
    """ONNX's flat index over the whole input of per-axis spatial coordinates."""
    sp = x_shape[2:]
    idx = np.zeros(coords[0].shape, dtype=np.int64)
    axes = range(len(sp) - 1, -1, -1) if column_major else range(len(sp))
    for i in axes:
        idx = idx * sp[i] + coords[i]
    plane = math.prod(sp)
    n, c = x_shape[:2]
    base = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * plane
    return idx + base.reshape(n, c, *([1] * len(sp)))


def _max_pool(at: _Attrs, const: list[Array | None]) -> Step:
    win = _Window(at, pool=True)
    ceil = bool(at.integer("ceil_mode", 0))
    order = at.integer("storage_order", 0)
    if order not in (0, 1):
        raise _bad(f"MaxPool: storage_order must be 0 or 1, got {order}")
    kernel = win.kernel
    assert kernel is not None
    want_idx = len(at.node.output) > 1 and at.node.output[1] != ""
    plans: dict[tuple[int, ...], Any] = {}

    def run(v: list[Array | None]) -> list[Array | None]:
        x = v[0]
        assert x is not None
        n = _spatial(x, "MaxPool")
        if len(kernel) != n:
            raise ValueError(f"cnnext.onnx: MaxPool kernel_shape {kernel} for {n} spatial axes")
        geo = plans.get(x.shape)
        if geo is None:
            geo = plans[x.shape] = win.geometry(x.shape[2:], kernel, ceil)
        s, d, pb, pe, out = geo
        if n <= 2 and _is_float(x):  # the kernel, after explicit padding if need be
            xk, pk, ceil_k, off = _kernel_input(x, kernel, s, d, pb, pe, out, ceil, -np.inf)
            k2, s2, d2 = ([1] * (2 - n) + list(a) for a in (kernel, s, d))
            p2 = [0] * (2 - n) + list(pk)
            x2 = xk if n == 2 else xk.reshape(*xk.shape[:2], 1, *xk.shape[2:])
            if not want_idx:
                y = F.max_pool2d(x2, _pair(k2), _pair(s2), _pair(p2), _pair(d2), ceil_k)
                return [y.reshape(*x.shape[:2], *out)]
            y, i = F.max_pool2d(x2, _pair(k2), _pair(s2), _pair(p2), _pair(d2), ceil_k, True)
            y = y.reshape(*x.shape[:2], *out)
            i = i.reshape(y.shape)
            wp = xk.shape[-1]
            coords = [i // wp - off[0], i % wp - off[1]] if n == 2 else [i - off[0]]
            return [y, _flat_index(x.shape, coords, bool(order))]
        return _tap_pool(x, kernel, s, d, pb, pe, out, "max",
                         order=order if want_idx else None)

    return run


def _avg_pool(at: _Attrs, const: list[Array | None]) -> Step:
    win = _Window(at, pool=True)
    ceil = bool(at.integer("ceil_mode", 0))
    include = bool(at.integer("count_include_pad", 0))
    kernel = win.kernel
    assert kernel is not None
    plans: dict[tuple[int, ...], Any] = {}
    shares: dict[tuple[tuple[int, ...], str], Array] = {}

    def run(v: list[Array | None]) -> list[Array | None]:
        x = v[0]
        assert x is not None
        n = _spatial(x, "AveragePool")
        if len(kernel) != n:
            raise ValueError(f"cnnext.onnx: AveragePool kernel_shape {kernel} for {n} spatial "
                             "axes")
        geo = plans.get(x.shape)
        if geo is None:
            geo = plans[x.shape] = win.geometry(x.shape[2:], kernel, ceil)
        s, d, pb, pe, out = geo
        if n <= 2 and _is_float(x) and all(dd == 1 for dd in d):
            xk, pk, ceil_k, _ = _kernel_input(x, kernel, s, d, pb, pe, out, ceil, 0.0)
            k2, s2 = ([1] * (2 - n) + list(a) for a in (kernel, s))
            p2 = [0] * (2 - n) + list(pk)
            x2 = xk if n == 2 else xk.reshape(*xk.shape[:2], 1, *xk.shape[2:])
            y = F.avg_pool2d(x2, _pair(k2), _pair(s2), _pair(p2), ceil_k, include)
            if xk is not x:  # explicit padding: divide by the share of counted positions
                key = (x.shape, x.dtype.char)
                share = shares.get(key)
                if share is None:  # counted: the declared padding too, or the input only
                    mask = np.zeros((1, 1, *x2.shape[2:]), dtype=x.dtype)
                    counted = [slice(0, a + h + b) if include else slice(a, a + h)
                               for a, h, b in zip(pb, x.shape[2:], pe)]
                    mask[(0, 0, *([0] * (2 - n)), *counted)] = 1
                    share = shares[key] = F.avg_pool2d(mask, _pair(k2), _pair(s2), 0)
                y = y / share
            return [y.reshape(*x.shape[:2], *out)]
        return _tap_pool(x, kernel, s, d, pb, pe, out, "avg", include)

    return run


def _global_pool(kind: str) -> Callable[[_Attrs, list[Array | None]], Step]:
    def build(at: _Attrs, const: list[Array | None]) -> Step:
        def run(v: list[Array | None]) -> list[Array | None]:
            x = v[0]
            assert x is not None
            n = _spatial(x, at.op)
            if n == 2 and _is_float(x):
                if kind == "avg":
                    return [F.adaptive_avg_pool2d(x, 1)]
                return [F.adaptive_max_pool2d(x, 1)]
            axes = tuple(range(2, x.ndim))
            if kind == "avg":
                return [x.mean(axis=axes, keepdims=True).astype(x.dtype)]
            return [x.max(axis=axes, keepdims=True)]

        return run

    return build


def _max_unpool(at: _Attrs, const: list[Array | None]) -> Step:
    win = _Window(at, pool=True)
    kernel = win.kernel
    assert kernel is not None

    def run(v: list[Array | None]) -> list[Array | None]:
        x, idx = v[0], v[1]
        shape = v[2] if len(v) > 2 else None
        assert x is not None and idx is not None
        n = _spatial(x, "MaxUnpool")
        if idx.shape != x.shape or idx.dtype.kind not in "iu":
            raise ValueError(f"cnnext.onnx: MaxUnpool indices must be integers of X's shape "
                             f"{x.shape}, got {idx.dtype} {idx.shape}")
        s = _per_axis(win.strides, n, 1, "strides", "MaxUnpool")
        pads = _per_axis(win.pads, 2 * n, 0, "pads", "MaxUnpool")
        # ONNX's convention: the indices address the inferred output; a
        # larger output_shape adds zeros after it.
        sp = [(h - 1) * ss - p0 - p1 + k for h, ss, p0, p1, k
              in zip(x.shape[2:], s, pads[:n], pads[n:], kernel)]
        out = [*x.shape[:2], *sp]
        if shape is not None:
            out = [int(o) for o in shape.reshape(-1)]
            if (len(out) != x.ndim or out[:2] != list(x.shape[:2])
                    or any(o < i for o, i in zip(out[2:], sp))):
                raise ValueError(f"cnnext.onnx: MaxUnpool output_shape {out} does not fit X "
                                 f"of shape {x.shape} (spatial size at least {sp})")
        if min(sp) < 1:
            raise ValueError(f"cnnext.onnx: MaxUnpool output size {sp} is not positive")
        _room(out, x.dtype, "MaxUnpool's output")
        plane = math.prod(sp)
        nb, c = x.shape[:2]
        base = ((np.arange(nb)[:, None] * c + np.arange(c)[None, :]) * plane).reshape(
            nb, c, *([1] * n))
        local = idx.astype(np.int64) - base
        if local.size and (local.min() < 0 or local.max() >= plane):
            raise ValueError("cnnext.onnx: MaxUnpool index outside its (n, c) output plane "
                             f"of {sp}")
        if n == 2 and _is_float(x):
            y = F.max_unpool2d(x, local, _pair(kernel), _pair(s), 0, tuple(sp))
        else:
            flat = np.zeros((nb * c, plane), dtype=x.dtype)
            np.put_along_axis(flat, local.reshape(nb * c, -1), x.reshape(nb * c, -1), axis=1)
            y = flat.reshape(nb, c, *sp)
        if out[2:] != sp:
            y = _pad(y, [0] * n, [o - i for o, i in zip(out[2:], sp)])
        return [y]

    return run


def _gemm(at: _Attrs, const: list[Array | None]) -> Step:
    alpha, beta = at.real("alpha", 1.0), at.real("beta", 1.0)
    ta, tb = at.integer("transA", 0), at.integer("transB", 0)
    # B given as a constant: its (N, K) layout for F.linear made once here.
    wb = const[1]
    w_const = None
    if wb is not None and _is_float(wb) and wb.ndim == 2:
        w_const = np.ascontiguousarray(wb if tb else wb.T)

    def run(v: list[Array | None]) -> list[Array | None]:
        a, b, c = v[0], v[1], v[2] if len(v) > 2 else None
        assert a is not None and b is not None
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"cnnext.onnx: Gemm needs 2-D A and B, got {a.shape} and {b.shape}")
        a2 = a.T if ta else a
        if _is_float(a) and a.dtype == b.dtype:
            w = w_const if w_const is not None else (b if tb else b.T)
            if (alpha == 1.0 and beta == 1.0 and c is not None and c.dtype == a.dtype
                    and c.size == w.shape[0] and c.shape[-1:] == (c.size,) and c.ndim <= 2):
                return [F.linear(a2, w, c.reshape(-1))]  # the common case: a bias vector
            y = F.linear(a2, w)
        else:
            y = a2 @ (b.T if tb else b)
        if alpha != 1.0:
            y = y * y.dtype.type(alpha)
        if c is not None:
            y = y + (c if beta == 1.0 else c * c.dtype.type(beta))
        return [y.astype(a.dtype, copy=False)]

    return run


def _matmul(at: _Attrs, const: list[Array | None]) -> Step:
    wb = const[1]
    w_const = np.ascontiguousarray(wb.T) if wb is not None and wb.ndim == 2 and _is_float(
        wb) else None

    def run(v: list[Array | None]) -> list[Array | None]:
        a, b = v[0], v[1]
        assert a is not None and b is not None
        if b.ndim == 2 and a.ndim >= 2 and _is_float(a) and a.dtype == b.dtype:
            w = w_const if w_const is not None else b.T
            y = F.linear(a.reshape(-1, a.shape[-1]), w)
            return [y.reshape(*a.shape[:-1], b.shape[-1])]
        return [np.matmul(a, b)]

    return run


def _binary(fn: Callable[[Array, Array], Array]) -> Callable[[_Attrs, list[Array | None]], Step]:
    def build(at: _Attrs, const: list[Array | None]) -> Step:
        def run(v: list[Array | None]) -> list[Array | None]:
            a, b = v[0], v[1]
            assert a is not None and b is not None
            if a.dtype != b.dtype:
                raise ValueError(f"cnnext.onnx: {at.op} of {a.dtype} and {b.dtype}")
            return [np.asarray(fn(a, b), dtype=a.dtype)]

        return run

    return build


def _unary(f: Callable[[Array], Array], g: Callable[[Array], Array]) -> Callable[
        [_Attrs, list[Array | None]], Step]:
    """``f`` (a cnnext op) for float32/float64, ``g`` (numpy) otherwise."""
    def build(at: _Attrs, const: list[Array | None]) -> Step:
        def run(v: list[Array | None]) -> list[Array | None]:
            x = v[0]
            assert x is not None
            if _is_float(x):
                return [f(x)]
            return [np.asarray(g(x), dtype=x.dtype)]

        return run

    return build


def _relu_in_place(x: Array) -> Array:
    """``relu`` overwriting ``x``, an intermediate result nothing else reads
    (the executor owns it): the compiled kernel with out = x, no new array."""
    if (x.dtype not in (np.float32, np.float64) or not x.flags.c_contiguous
            or not x.flags.writeable or not _config.compiled_backend()):
        return F.relu(x)
    flat = x.reshape(-1)
    _eltwise.relu(flat, flat, _plan.threads_for(x.size, elements=True))
    return x


def _leaky_relu(at: _Attrs, const: list[Array | None]) -> Step:
    alpha = at.real("alpha", 0.01)

    def run(v: list[Array | None]) -> list[Array | None]:
        x = v[0]
        assert x is not None
        if _is_float(x):
            return [F.leaky_relu(x, alpha)]
        return [np.where(x < 0, x * alpha, x).astype(x.dtype)]

    return run


def _softmax(log: bool, opset: int) -> Callable[[_Attrs, list[Array | None]], Step]:
    fn = F.log_softmax if log else F.softmax

    def build(at: _Attrs, const: list[Array | None]) -> Step:
        axis = at.integer("axis", -1 if opset >= 13 else 1)

        def run(v: list[Array | None]) -> list[Array | None]:
            x = v[0]
            assert x is not None
            if not -x.ndim <= axis < max(x.ndim, 1):
                raise ValueError(f"cnnext.onnx: {at.op} axis {axis} for a {x.ndim}-D input")
            xf = x if _is_float(x) else _widen(x)
            if opset >= 13:
                y = fn(xf, axis)
            else:  # before opset 13: over the flattened trailing axes
                a = axis % x.ndim
                y = fn(xf.reshape(math.prod(x.shape[:a]), -1), 1).reshape(x.shape)
            return [y.astype(x.dtype, copy=False)]

        return run

    return build


def _flatten(at: _Attrs, const: list[Array | None]) -> Step:
    axis = at.integer("axis", 1)

    def run(v: list[Array | None]) -> list[Array | None]:
        x = v[0]
        assert x is not None
        if not -x.ndim <= axis <= x.ndim:
            raise ValueError(f"cnnext.onnx: Flatten axis {axis} for a {x.ndim}-D input")
        a = axis % x.ndim if axis < 0 else axis
        return [x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))]

    return run


def _reshape_to(x: Array, shape: Sequence[int], allowzero: bool) -> Array:
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= x.ndim:
                raise ValueError(f"cnnext.onnx: Reshape shape {list(shape)}: 0 at axis {i} "
                                 f"copies a dimension the {x.ndim}-D input does not have")
            s = x.shape[i]
        out.append(int(s))
    if out.count(-1) > 1 or any(s < -1 for s in out):
        raise ValueError(f"cnnext.onnx: Reshape shape {list(shape)} is invalid")
    known = math.prod(s for s in out if s != -1)
    if -1 in out:
        if known == 0 or x.size % known:
            raise ValueError(f"cnnext.onnx: cannot reshape {x.shape} to {list(shape)}")
        out[out.index(-1)] = x.size // known
    if math.prod(out) != x.size:
        raise ValueError(f"cnnext.onnx: cannot reshape {x.shape} to {list(shape)}")
    return x.reshape(out)


def _reshape(at: _Attrs, const: list[Array | None]) -> Step:
    allowzero = bool(at.integer("allowzero", 0))

    def run(v: list[Array | None]) -> list[Array | None]:
        x = v[0]
        assert x is not None
        s = v[1] if len(v) > 1 else None
        if s is None or s.ndim != 1 or s.dtype != np.int64:
            raise ValueError("cnnext.onnx: Reshape needs a 1-D int64 shape input")
        return [_reshape_to(x, [int(i) for i in s], allowzero)]

    return run


def _batch_norm(at: _Attrs, const: list[Array | None]) -> Step:
    eps = at.real("epsilon", 1e-5)
    at.real("momentum", 0.9)
    if at.integer("training_mode", 0):
        raise _unsupported("BatchNormalization: training_mode=1 is not supported "
                           "(inference only)")
    if not at.integer("spatial", 1):
        raise _unsupported("BatchNormalization: spatial=0 is not supported")
    if sum(1 for o in at.node.output if o) > 1:
        raise _unsupported("BatchNormalization: the training outputs (running mean and "
                           "variance) are not supported (inference only)")

    def run(v: list[Array | None]) -> list[Array | None]:
        x, scale, b, mean, var = v[:5]
        assert x is not None and scale is not None and b is not None
        assert mean is not None and var is not None
        if _is_float(x) and x.ndim in (2, 3, 4) and all(
                a.dtype == x.dtype for a in (scale, b, mean, var)):
            return [F.batch_norm(x, mean, var, scale, b, False, 0.1, eps)]
        shape = (1, -1, *([1] * (x.ndim - 2)))
        y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
        return [(y * scale.reshape(shape) + b.reshape(shape)).astype(x.dtype)]

    return run


def _dropout(at: _Attrs, const: list[Array | None]) -> Step:
    at.real("ratio", 0.5)
    at.integer("seed", 0)
    mask = len(at.node.output) > 1 and at.node.output[1] != ""

    def run(v: list[Array | None]) -> list[Array | None]:
        x = v[0]
        assert x is not None
        ratio = v[1] if len(v) > 1 else None
        training = v[2] if len(v) > 2 else None
        if training is not None and bool(training) and (ratio is None or float(ratio) != 0):
            raise _unsupported("Dropout: training_mode=True with a nonzero ratio is not "
                               "supported (inference only)", "run")
        out: list[Array | None] = [x]
        if mask:
            out.append(np.ones(x.shape, dtype=bool))
        return out

    return run


def _identity(at: _Attrs, const: list[Array | None]) -> Step:
    def run(v: list[Array | None]) -> list[Array | None]:
        return [v[0]]

    return run


def _constant(at: _Attrs, const: list[Array | None]) -> Step:
    kinds = [k for k in at.values if k != "value"]
    if kinds:
        raise _unsupported(f"Constant: attribute {kinds[0]!r} is not supported (only value)")
    value = at.tensor("value")
    if value is None:
        raise _bad("Constant without a value")
    value.flags.writeable = False  # returned on every run: nobody may change it

    def run(v: list[Array | None]) -> list[Array | None]:
        return [value]

    return run


# Operators ONNX defines for floating-point tensors only.
_FLOAT_ONLY = {"Conv", "ConvTranspose", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
               "MaxUnpool", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
               "BatchNormalization"}


def _float_input(op: str, step: Step) -> Step:
    """``step`` after checking that its first input is floating-point."""
    def run(v: list[Array | None]) -> list[Array | None]:
        x = v[0]
        if x is not None and x.dtype.kind != "f":
            raise ValueError(f"cnnext.onnx: {op} takes floating-point tensors, got {x.dtype}")
        return step(v)

    return run


_WIN = ("auto_pad", "kernel_shape", "pads", "strides", "dilations")
# op -> (allowed attributes, step builder or opset -> builder)
_OPS: dict[str, tuple[tuple[str, ...], Any]] = {
    "Conv": ((*_WIN, "group"), _conv),
    "ConvTranspose": ((*_WIN, "group", "output_padding", "output_shape"), _conv_transpose),
    "MaxPool": ((*_WIN, "ceil_mode", "storage_order"), _max_pool),
    "AveragePool": ((*_WIN, "ceil_mode", "count_include_pad"), _avg_pool),
    "GlobalAveragePool": ((), _global_pool("avg")),
    "GlobalMaxPool": ((), _global_pool("max")),
    "MaxUnpool": (("kernel_shape", "pads", "strides"), _max_unpool),
    "Gemm": (("alpha", "beta", "transA", "transB"), _gemm),
    "MatMul": ((), _matmul),
    "Add": ((), _binary(np.add)),
    "Mul": ((), _binary(np.multiply)),
    "Relu": ((), _unary(F.relu, lambda x: np.maximum(x, 0))),
    "LeakyRelu": (("alpha",), _leaky_relu),
    "Sigmoid": ((), _unary(F.sigmoid, lambda x: 1 / (1 + np.exp(-x)))),
    "Tanh": ((), _unary(F.tanh, np.tanh)),
    "Softmax": (("axis",), lambda opset: _softmax(False, opset)),
    "LogSoftmax": (("axis",), lambda opset: _softmax(True, opset)),
    "Flatten": (("axis",), _flatten),
    "Reshape": (("allowzero",), _reshape),
    "BatchNormalization": (("epsilon", "momentum", "training_mode", "spatial"),
                           _batch_norm),
    "Dropout": (("ratio", "seed"), _dropout),
    "Identity": ((), _identity),
    "Constant": (("value",), _constant),
}
_BY_OPSET = {"Softmax", "LogSoftmax"}
# Attributes that exist only in some versions of their operator: the opsets
# (first, last) that define them.
_ATTR_OPSETS = {
    ("MaxPool", "ceil_mode"): (10, None), ("MaxPool", "dilations"): (10, None),
    ("AveragePool", "ceil_mode"): (10, None), ("AveragePool", "dilations"): (19, None),
    ("Reshape", "allowzero"): (14, None), ("Dropout", "seed"): (12, None),
    ("Dropout", "ratio"): (None, 11), ("BatchNormalization", "spatial"): (None, 8),
    ("BatchNormalization", "training_mode"): (14, None),
}
# Inputs (by position) that must be given; the rest are optional.
_REQUIRED = {"Conv": 2, "ConvTranspose": 2, "MaxUnpool": 2, "Gemm": 2, "MatMul": 2, "Add": 2,
             "Mul": 2, "BatchNormalization": 5, "Reshape": 2, "Constant": 0}
_MAX_INPUTS = {"Conv": 3, "ConvTranspose": 3, "MaxUnpool": 3, "Gemm": 3, "MatMul": 2, "Add": 2,
               "Mul": 2, "BatchNormalization": 5, "Dropout": 3, "Reshape": 2, "Constant": 0}
_MAX_OUTPUTS = {"MaxPool": 2, "Dropout": 2, "BatchNormalization": 5}
