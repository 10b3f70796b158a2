"""Load an ONNX model into a runnable cnnext graph.

The file is parsed with the ``onnx`` package's protobuf classes (data only:
nothing in a model file is ever executed), every tensor is converted here
(types, shapes, sizes and external-data paths checked), the nodes are
ordered topologically (cycles and undefined names rejected) and each node
becomes a *step*: a closure over its checked attributes and converted
constants that calls :mod:`cnnext.functional` where a compiled kernel fits
and numpy otherwise.
"""
from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from .. import _config, _eltwise, _plan
from .. import functional as F

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["MAX_TENSOR_BYTES", "OnnxModel", "UnsupportedModelError", "load"]

#: The largest tensor (initializer, constant or external-data block) a model
#: may declare, in bytes; larger declarations are rejected before anything is
#: allocated.  ``load(..., max_tensor_bytes=...)`` changes it per call.
MAX_TENSOR_BYTES = 1 << 31
_MAX_RANK = 16
_MIN_OPSET = 7
# The newest version of each operator whose definition cnnext implements (an
# operator's version is the opset that last changed it): a model whose opset
# resolves an operator to a newer definition is refused, not guessed at.
_VERSIONS = {
    "Conv": 22, "ConvTranspose": 22, "MaxPool": 22, "AveragePool": 22,
    "GlobalAveragePool": 22, "GlobalMaxPool": 22, "MaxUnpool": 22, "Gemm": 13, "MatMul": 13,
    "Add": 14, "Mul": 14, "Relu": 14, "LeakyRelu": 16, "Sigmoid": 13, "Tanh": 13,
    "Softmax": 13, "LogSoftmax": 13, "Flatten": 25, "Reshape": 25, "BatchNormalization": 15,
    "Dropout": 22, "Identity": 25, "Constant": 25,
}
_INSTALL = 'reading ONNX models needs the onnx package: pip install "cnnext[onnx]"'

Array = npt.NDArray[Any]
Step = Callable[[list[Array | None]], list[Array | None]]


class UnsupportedModelError(ValueError):
    """A well-formed ONNX model using an operator, attribute, domain, opset or
    type that cnnext does not run."""


def _onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - exercised without onnx
        raise ImportError(_INSTALL) from e
    return cast("ModuleType", onnx)


def _bad(msg: str) -> ValueError:
    return ValueError(f"cnnext.onnx.load: {msg}")


def _unsupported(msg: str, when: str = "load") -> UnsupportedModelError:
    return UnsupportedModelError(f"cnnext.onnx.{when}: {msg}")


# ONNX TensorProto data types cnnext reads: code -> (name, numpy dtype, typed field).
_DTYPES: dict[int, tuple[str, np.dtype[Any], str]] = {
    1: ("FLOAT", np.dtype(np.float32), "float_data"),
    2: ("UINT8", np.dtype(np.uint8), "int32_data"),
    3: ("INT8", np.dtype(np.int8), "int32_data"),
    4: ("UINT16", np.dtype(np.uint16), "int32_data"),
    5: ("INT16", np.dtype(np.int16), "int32_data"),
    6: ("INT32", np.dtype(np.int32), "int32_data"),
    7: ("INT64", np.dtype(np.int64), "int64_data"),
    9: ("BOOL", np.dtype(np.bool_), "int32_data"),
    10: ("FLOAT16", np.dtype(np.float16), "int32_data"),
    11: ("DOUBLE", np.dtype(np.float64), "double_data"),
    12: ("UINT32", np.dtype(np.uint32), "uint64_data"),
    13: ("UINT64", np.dtype(np.uint64), "uint64_data"),
}
_CODES = {dt: code for code, (_, dt, _) in _DTYPES.items()}


def _dtype(code: int, what: str) -> np.dtype[Any]:
    if code not in _DTYPES:
        raise _unsupported(f"{what} has data type {code}, which cnnext does not read "
                           f"(supported: {', '.join(n for n, _, _ in _DTYPES.values())})")
    return _DTYPES[code][1]


def _dims(dims: Sequence[int], what: str, cap: int, itemsize: int) -> tuple[int, ...]:
    if len(dims) > _MAX_RANK:
        raise _bad(f"{what} has rank {len(dims)} (at most {_MAX_RANK})")
    if any(d < 0 for d in dims):
        raise _bad(f"{what} has a negative dimension: {list(dims)}")
    n = math.prod(dims)
    if n * itemsize > cap:
        raise _bad(f"{what} declares {n * itemsize} bytes (shape {list(dims)}), more than the "
                   f"limit of {cap} bytes (max_tensor_bytes)")
    return tuple(int(d) for d in dims)


def _external(t: Any, what: str, base_dir: str | None, nbytes: int) -> bytes:
    info = {e.key: e.value for e in t.external_data}
    if base_dir is None:
        raise _bad(f"{what} keeps its data in an external file, which needs the model to be "
                   "loaded from a path (not from bytes or a ModelProto)")
    loc = info.get("location", "")
    if not loc or os.path.isabs(loc) or "\x00" in loc:
        raise _bad(f"{what} has an invalid external-data location {loc!r} (must be a "
                   "relative path)")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, loc))
    if os.path.commonpath([root, path]) != root:
        raise _bad(f"{what}: external-data location {loc!r} leaves the model's directory")
    if not os.path.isfile(path):
        raise _bad(f"{what}: external-data file {loc!r} does not exist")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        raise _bad(f"{what}: external-data offset/length are not integers: {info}") from None
    if offset < 0 or length != nbytes or offset + length > os.path.getsize(path):
        raise _bad(f"{what}: external data (offset {offset}, length {length}) does not match "
                   f"the {nbytes} bytes declared or lies outside {loc!r}")
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _tensor_array(t: Any, base_dir: str | None = None, cap: int = MAX_TENSOR_BYTES) -> Array:
    """A TensorProto as a new numpy array, every field checked."""
    what = f"tensor {t.name!r}" if t.name else "a tensor"
    if t.HasField("segment"):
        raise _unsupported(f"{what} is segmented")
    dt = _dtype(t.data_type, what)
    shape = _dims(list(t.dims), what, cap, dt.itemsize)
    n = math.prod(shape)
    nbytes = n * dt.itemsize
    if t.data_location == 1:
        raw = _external(t, what, base_dir, nbytes)
    elif t.HasField("raw_data"):
        raw = t.raw_data
    else:
        raw = None
    if raw is not None:
        if len(raw) != nbytes:
            raise _bad(f"{what}: raw data has {len(raw)} bytes, shape {list(shape)} of "
                       f"{dt} needs {nbytes}")
        return np.frombuffer(raw, dtype=dt.newbyteorder("<")).astype(dt).reshape(shape)
    field = _DTYPES[t.data_type][2]
    values = getattr(t, field)
    if len(values) != n:
        raise _bad(f"{what}: {field} has {len(values)} values, shape {list(shape)} needs {n}")
    wide = np.array(values, dtype=np.float64 if dt.kind == "f" and dt != np.float16 else
                    np.uint64 if dt.kind == "u" else np.int64)
    store = np.dtype(np.uint16) if dt == np.float16 else dt
    if store.kind in "iu" and wide.size and (wide.min() < np.iinfo(store).min
                                             or wide.max() > np.iinfo(store).max):
        raise _bad(f"{what}: {field} holds values outside the range of {store}")
    arr = wide.astype(store)
    return (arr.view(np.float16) if dt == np.float16 else arr).reshape(shape)


# ---------------------------------------------------------------- attributes

_ATTR_KIND = {1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 6: "FLOATS", 7: "INTS"}


class _Attrs:
    """A node's attributes, each read once with its expected type checked."""

    def __init__(self, node: Any, allowed: Collection[str], base_dir: str | None, cap: int):
        self.op = node.op_type
        self.node = node
        self.values: dict[str, Any] = {}
        self.base_dir, self.cap = base_dir, cap
        for a in node.attribute:
            if a.name not in allowed:
                raise _unsupported(f"node {_label(node)}: attribute {a.name!r} of {node.op_type} "
                                   "is not supported")
            if a.name in self.values:
                raise _bad(f"node {_label(node)}: attribute {a.name!r} given twice")
            self.values[a.name] = a

    def _get(self, name: str, kind: int) -> Any:
        a = self.values.get(name)
        if a is None:
            return None
        if a.type != kind:
            raise _bad(f"node {_label(self.node)}: attribute {name!r} must be "
                       f"{_ATTR_KIND.get(kind, kind)}, got type {a.type}")
        return a

    def integer(self, name: str, default: int) -> int:
        a = self._get(name, 2)
        return default if a is None else int(a.i)

    def real(self, name: str, default: float) -> float:
        a = self._get(name, 1)
        return default if a is None else float(a.f)

    def ints(self, name: str) -> list[int] | None:
        a = self._get(name, 7)
        return None if a is None else [int(v) for v in a.ints]

    def string(self, name: str, default: str) -> str:
        a = self._get(name, 3)
        if a is None:
            return default
        try:
            return bytes(a.s).decode("ascii")
        except UnicodeDecodeError:
            raise _bad(f"node {_label(self.node)}: attribute {name!r} is not ASCII") from None

    def tensor(self, name: str) -> Array | None:
        a = self._get(name, 4)
        return None if a is None else _tensor_array(a.t, self.base_dir, self.cap)


def _label(node: Any) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"{node.op_type}"


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
    cin = w.shape[0] if transposed else w.shape[1] * group
    cout = w.shape[1] * group if transposed else w.shape[0]
    if (w.ndim != x.ndim or x.shape[1] != cin or w.shape[0] % group
            or (b is not None and b.shape != (cout,))):
        raise ValueError(f"cnnext.onnx: {op} shapes do not fit: X {x.shape}, W {w.shape}, "
                         f"B {None if b is None else b.shape}, group {group}")


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
    if at.values.get("broadcast") is not None and at.integer("broadcast", 0) != 1:
        raise _unsupported("Gemm: broadcast=0 is not supported")
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
        if at.integer("broadcast", 0) != 0 or at.values.get("axis") is not None:
            raise _unsupported(f"{at.op}: the legacy broadcast/axis attributes are not supported")

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
    _eltwise.relu(flat, flat, _plan.threads_for(x.size, _plan.PARALLEL_MIN_ELEMENTS))
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
            xf = x if _is_float(x) else x.astype(np.float32)
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

    def run(v: list[Array | None]) -> list[Array | None]:
        return [value]

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
    "Gemm": (("alpha", "beta", "transA", "transB", "broadcast"), _gemm),
    "MatMul": ((), _matmul),
    "Add": (("broadcast", "axis"), _binary(np.add)),
    "Mul": (("broadcast", "axis"), _binary(np.multiply)),
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
# Inputs (by position) that must be given; the rest are optional.
_REQUIRED = {"Conv": 2, "ConvTranspose": 2, "MaxUnpool": 2, "Gemm": 2, "MatMul": 2, "Add": 2,
             "Mul": 2, "BatchNormalization": 5, "Reshape": 2, "Constant": 0}
_MAX_INPUTS = {"Conv": 3, "ConvTranspose": 3, "MaxUnpool": 3, "Gemm": 3, "MatMul": 2, "Add": 2,
               "Mul": 2, "BatchNormalization": 5, "Dropout": 3, "Reshape": 2, "Constant": 0}
_MAX_OUTPUTS = {"MaxPool": 2, "Dropout": 2, "BatchNormalization": 5}


# ------------------------------------------------------------------ the model


class _Value:
    """A graph input's or output's declared element type and shape."""

    def __init__(self, vi: Any, where: str, need_type: bool):
        self.name = vi.name
        self.dtype: np.dtype[Any] | None = None
        self.shape: list[int | None] | None = None
        kind = vi.type.WhichOneof("value") if vi.HasField("type") else None
        if kind is None:
            if need_type:
                raise _bad(f"{where} {vi.name!r} has no type")
            return
        if kind != "tensor_type":
            raise _unsupported(f"{where} {vi.name!r} has {kind.replace('_type', '')} type "
                               "(cnnext runs graphs of tensors only)")
        tt = vi.type.tensor_type
        if tt.elem_type:
            self.dtype = _dtype(tt.elem_type, f"{where} {vi.name!r}")
        elif need_type:
            raise _bad(f"{where} {vi.name!r} has no element type")
        if tt.HasField("shape"):
            dims: list[int | None] = []
            for dim in tt.shape.dim:
                if dim.HasField("dim_value"):
                    if dim.dim_value < 0:
                        raise _bad(f"{where} {vi.name!r} has a negative dimension")
                    dims.append(int(dim.dim_value))
                else:
                    dims.append(None)
            if len(dims) > _MAX_RANK:
                raise _bad(f"{where} {vi.name!r} has rank {len(dims)} (at most {_MAX_RANK})")
            self.shape = dims


class OnnxModel:
    """An ONNX graph loaded by :func:`load`, run with cnnext's kernels.

    Attributes
    ----------
    inputs : list of str
        The names of the graph inputs to feed (initializers excluded).
    outputs : list of str
        The names of the graph outputs, in order.
    opset : int
        The default-domain opset the model was written for.
    """

    def __init__(self, inputs: list[_Value], outputs: list[str],
                 steps: list[tuple[Step, list[str], list[str]]], consts: dict[str, Array],
                 opset: int):
        self._inputs = inputs
        self.inputs = [v.name for v in inputs]
        self.outputs = outputs
        self.opset = opset
        self._steps = steps
        self._consts = consts
        # The last use of every value: freed after it, so a long chain keeps
        # only live activations.
        last: dict[str, int] = {}
        for i, (_, ins, _) in enumerate(steps):
            for name in ins:
                last[name] = i
        self._free = [[n for n in set(ins) if last.get(n) == i and n not in outputs]
                      for i, (_, ins, _) in enumerate(steps)]

    def __repr__(self) -> str:
        return (f"OnnxModel(inputs={self.inputs}, outputs={self.outputs}, "
                f"nodes={len(self._steps)}, opset={self.opset})")

    def _feed(self, spec: _Value, value: object) -> Array:
        a = np.asarray(value, dtype=spec.dtype) if not isinstance(value, np.ndarray) else value
        if spec.dtype is not None and a.dtype != spec.dtype:
            raise TypeError(f"OnnxModel.run: input {spec.name!r} must be {spec.dtype}, "
                            f"got {a.dtype}")
        if spec.shape is not None and (len(spec.shape) != a.ndim or any(
                d is not None and d != s for d, s in zip(spec.shape, a.shape))):
            want = ["?" if d is None else d for d in spec.shape]
            raise ValueError(f"OnnxModel.run: input {spec.name!r} must have shape {want}, "
                             f"got {a.shape}")
        return a

    def run(self, feeds: Mapping[str, npt.ArrayLike]) -> dict[str, Array]:
        """Run the graph on ``feeds`` ({input name: array}); every output by name.

        Parameters
        ----------
        feeds : mapping of str to array_like
            One array per name in :attr:`inputs`, of the declared element
            type and shape.

        Returns
        -------
        dict of str to numpy.ndarray
            Every graph output, in :attr:`outputs` order.
        """
        if not isinstance(feeds, Mapping):
            raise TypeError(f"OnnxModel.run: feeds must be a mapping of input names to arrays, "
                            f"got {type(feeds).__name__}")
        unknown = set(feeds) - set(self.inputs)
        missing = [n for n in self.inputs if n not in feeds]
        if unknown or missing:
            raise ValueError(f"OnnxModel.run: inputs {self.inputs} expected; missing "
                             f"{missing}, unexpected {sorted(unknown)}")
        env: dict[str, Any] = dict(self._consts)
        for spec in self._inputs:
            env[spec.name] = self._feed(spec, feeds[spec.name])
        for (step, ins, outs), free in zip(self._steps, self._free):
            results = step([env[n] if n else None for n in ins])
            for name, r in zip(outs, results):
                if name:
                    env[name] = r
            for name in free:
                if name not in self._consts:
                    env.pop(name, None)
        return {name: env[name] for name in self.outputs}

    def __call__(self, *xs: npt.ArrayLike) -> Any:
        """Run on the inputs in :attr:`inputs` order: the output, or a tuple of
        outputs for a graph with several."""
        if len(xs) != len(self.inputs):
            raise TypeError(f"OnnxModel: {len(self.inputs)} inputs expected {self.inputs}, "
                            f"got {len(xs)}")
        out = self.run(dict(zip(self.inputs, xs)))
        values = tuple(out[n] for n in self.outputs)
        return values[0] if len(values) == 1 else values

    def forward(self, x: npt.ArrayLike) -> Any:
        """The output of a single-input graph for ``x`` (as calling the model)."""
        return self(x)


def _parse(onnx: ModuleType, source: object) -> tuple[Any, str | None]:
    if isinstance(source, onnx.ModelProto):
        return source, None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, base = bytes(source), None
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cnnext.onnx.load: no such file: {path!r}")
        with open(path, "rb") as f:
            data = f.read()
        base = os.path.dirname(os.path.abspath(path))
    else:
        raise TypeError("cnnext.onnx.load: model must be a path, bytes or an onnx.ModelProto, "
                        f"got {type(source).__name__}")
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and its relatives
        raise _bad(f"not an ONNX model (protobuf parse failed: {e})") from None
    if not m.HasField("graph"):
        raise _bad("not an ONNX model (no graph)")
    return m, base


def _opset(m: Any) -> int:
    version = None
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            version = int(imp.version)
    if version is None:
        if m.opset_import:
            raise _unsupported("the model imports no default-domain (ai.onnx) opset")
        version = 1
    if version < _MIN_OPSET:
        raise _unsupported(f"opset {version} of the default domain (supported: "
                           f"{_MIN_OPSET} and later)")
    return version


def _since(onnx: ModuleType, op: str, opset: int) -> int:
    """The version of ``op``'s definition in effect at ``opset``."""
    try:
        return int(onnx.defs.get_schema(op, opset, "").since_version)
    except onnx.defs.SchemaError:
        raise _bad(f"operator {op!r} is not defined at opset {opset}") from None


def _order(nodes: Sequence[Any], known: set[str]) -> list[Any]:
    """Nodes in a topological order; ValueError for undefined inputs,
    repeated outputs and cycles."""
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for o in node.output:
            if not o:
                continue
            if o in producer or o in known:
                raise _bad(f"value {o!r} is produced twice (by node {_label(node)})")
            producer[o] = i
    waiting = [0] * len(nodes)
    users: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for name in node.input:
            if not name or name in known:
                continue
            if name not in producer:
                raise _bad(f"node {_label(node)} reads {name!r}, which no graph input, "
                           "initializer or node defines")
            waiting[i] += 1
            users[producer[name]].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order = []
    while ready:  # the file's order wherever the dependencies allow it
        i = heapq.heappop(ready)
        order.append(i)
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = next(i for i, w in enumerate(waiting) if w > 0)
        raise _bad(f"the graph has a cycle through node {_label(nodes[stuck])}")
    return [nodes[i] for i in order]


def load(model: str | os.PathLike[str] | bytes | Any, *,
         max_tensor_bytes: int = MAX_TENSOR_BYTES) -> OnnxModel:
    """Build a runnable cnnext model from an ONNX model.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        A ``.onnx`` file, its contents, or a parsed model.  External tensor
        data is read only when loading from a path, only from files inside
        the model's directory.
    max_tensor_bytes : int
        The largest tensor the model may declare (default 2 GiB); larger
        declarations raise ValueError before anything is allocated.

    Returns
    -------
    OnnxModel
        Call it with the inputs (``model(x)``), or ``model.run({name:
        array})`` for every output by name.

    Raises
    ------
    ImportError
        Without the ``onnx`` package (``pip install "cnnext[onnx]"``).
    UnsupportedModelError
        (a ValueError) naming the first operator, attribute, domain, opset
        or type cnnext does not run.
    ValueError
        A malformed or hostile file: wrong types, unknown data types,
        negative or oversized shapes, cycles, undefined values, external
        data outside the model's directory.

    Notes
    -----
    Nothing in the file is executed: the graph is data, each node becomes
    a call to :mod:`cnnext.functional` (numpy for the rest).  Initializers
    are converted once, here.

    Examples
    --------
    >>> import numpy as np
    >>> import cnnext.onnx
    >>> from onnx import helper, TensorProto
    >>> g = helper.make_graph(
    ...     [helper.make_node("Relu", ["x"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    >>> m = cnnext.onnx.load(helper.make_model(g))
    >>> m(np.array([-1.0, 2.0], dtype=np.float32))
    array([0., 2.], dtype=float32)
    """
    onnx = _onnx()
    if not isinstance(max_tensor_bytes, int) or max_tensor_bytes < 0:
        raise TypeError(f"cnnext.onnx.load: max_tensor_bytes must be an int >= 0, got "
                        f"{max_tensor_bytes!r}")
    m, base = _parse(onnx, model)
    opset = _opset(m)
    g = m.graph
    consts: dict[str, Array] = {}
    for t in g.initializer:
        if not t.name:
            raise _bad("an initializer has no name")
        if t.name in consts:
            raise _bad(f"initializer {t.name!r} is given twice")
        consts[t.name] = _tensor_array(t, base, max_tensor_bytes)
    for st in g.sparse_initializer:
        raise _unsupported(f"sparse initializer {st.values.name!r}")
    inputs = []
    for vi in g.input:
        spec = _Value(vi, "graph input", vi.name not in consts)
        if vi.name not in consts:
            inputs.append(spec)
    names = {v.name for v in inputs}
    if len(names) != len(inputs):
        raise _bad("two graph inputs have the same name")
    outputs = [o.name for o in g.output]
    for o in g.output:
        _Value(o, "graph output", False)
    known = set(consts) | names
    steps = []
    nodes = _order(list(g.node), known)
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            raise _unsupported(f"node {_label(node)} is in domain {node.domain!r} (cnnext runs "
                               "the default ai.onnx domain)")
        if node.op_type not in _OPS:
            raise _unsupported(f"operator {node.op_type!r} (node {_label(node)}) is not "
                               f"supported; supported: {', '.join(sorted(_OPS))}")
        allowed, build = _OPS[node.op_type]
        since = _since(onnx, node.op_type, opset)
        if since > _VERSIONS[node.op_type]:
            raise _unsupported(f"operator {node.op_type!r} (node {_label(node)}) at opset "
                               f"{opset} is version {since}, newer than the version "
                               f"{_VERSIONS[node.op_type]} cnnext implements")
        ins, outs = list(node.input), list(node.output)
        need = _REQUIRED.get(node.op_type, 1)
        if len(ins) < need or any(not n for n in ins[:need]) or len(ins) > _MAX_INPUTS.get(
                node.op_type, 1):
            raise _bad(f"node {_label(node)} has inputs {ins}")
        if not outs or not outs[0] or len(outs) > _MAX_OUTPUTS.get(node.op_type, 1):
            raise _bad(f"node {_label(node)} has outputs {outs}")
        at = _Attrs(node, allowed, base, max_tensor_bytes)
        if node.op_type in _BY_OPSET:
            build = build(opset)
        steps.append((build(at, [consts.get(n) for n in ins]), ins, outs))
        known.update(o for o in outs if o)
    for name in outputs:
        if name not in known:
            raise _bad(f"graph output {name!r} is not computed by any node")
    _relus_in_place(nodes, steps, set(outputs))
    return OnnxModel(inputs, outputs, steps, consts, opset)


# Operators whose outputs are always new arrays (never views of an input).
_FRESH = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
          "GlobalMaxPool", "MaxUnpool", "Gemm", "MatMul", "Add", "Mul", "BatchNormalization"}


def _relus_in_place(nodes: Sequence[Any], steps: list[tuple[Step, list[str], list[str]]],
                    outputs: set[str]) -> None:
    """Let each Relu overwrite its input when that is a new array of a node
    no one else reads (a convolution's output, typically)."""
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    fresh = {o for node in nodes if node.op_type in _FRESH for o in node.output[:1]}
    for i, node in enumerate(nodes):
        src = node.input[0] if node.input else ""
        if (node.op_type == "Relu" and src in fresh and readers[src] == 1
                and src not in outputs):
            steps[i] = (_relu_step, steps[i][1], steps[i][2])


def _relu_step(v: list[Array | None]) -> list[Array | None]:
    x = v[0]
    assert x is not None
    return [_relu_in_place(x)]
