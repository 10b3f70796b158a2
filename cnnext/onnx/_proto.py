"""Reading ONNX protobuf data safely: errors, tensors and node attributes.

Every TensorProto becomes a new numpy array only after its data type, shape,
size (against a cap), byte count and any external-data path are checked;
every attribute is read with its declared type checked.  Nothing here runs
code from a model.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from types import ModuleType

#: The largest tensor (initializer, constant or external-data block) a model
#: may declare, in bytes; larger declarations are rejected before anything is
#: allocated.  ``load(..., max_tensor_bytes=...)`` changes it per call.
MAX_TENSOR_BYTES = 1 << 31
_MAX_RANK = 16
_INSTALL = 'reading ONNX models needs the onnx package: pip install "cnnext[onnx]"'

Array = npt.NDArray[Any]
#: One node, ready to run: its input values (None: an absent optional one) ->
#: its output values.
Step = Callable[[list[Array | None]], list[Array | None]]


class UnsupportedModelError(ValueError):
    """A well-formed ONNX model using an operator, attribute, domain, opset or
    type that cnnext does not run."""


def _onnx(fname: str = "reading ONNX models") -> ModuleType:
    """The ``onnx`` package, or ImportError saying how to install it."""
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - exercised without onnx
        raise ImportError(f'{fname} needs the onnx package: pip install "cnnext[onnx]"') from e
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
