"""Load an ONNX model into a runnable cnnext graph.

The file is parsed with the ``onnx`` package's protobuf classes (data only:
nothing in a model file is ever executed), every tensor is converted and
checked (:mod:`._proto`), the nodes are ordered topologically (cycles and
undefined names rejected) and each node becomes a *step* (:mod:`._ops`).
"""
from __future__ import annotations

import heapq
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._ops import (_ATTR_OPSETS, _BY_OPSET, _FLOAT_ONLY, _MAX_INPUTS, _MAX_OUTPUTS, _OPS,
                   _REQUIRED, _float_input, _relu_in_place)
from ._proto import (_MAX_RANK, MAX_TENSOR_BYTES, Array, Step, UnsupportedModelError, _Attrs,
                     _bad, _dtype, _label, _onnx, _tensor_array, _unsupported)

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["MAX_TENSOR_BYTES", "OnnxModel", "UnsupportedModelError", "load"]

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
        # Each value is dropped after its last reader, so a long chain keeps
        # only the live activations.
        last: dict[str, int] = {}
        for i, (_, ins, _) in enumerate(steps):
            for name in ins:
                last[name] = i
        self._plan = [
            (step, ins, [(k, name) for k, name in enumerate(outs) if name],
             [n for n in set(ins) if n and last[n] == i and n not in outputs and n not in consts])
            for i, (step, ins, outs) in enumerate(steps)
        ]

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
        for step, ins, outs, free in self._plan:
            results = step([env[n] if n else None for n in ins])
            for k, name in outs:
                env[name] = results[k]
            for name in free:
                del env[name]
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


_MAX_FILE = (1 << 31) - 1  # protobuf's limit on one message


def _parse(onnx: ModuleType, source: object) -> tuple[Any, str | None]:
    if isinstance(source, onnx.ModelProto):
        return source, None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, base = bytes(source), None
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cnnext.onnx.load: no such file: {path!r}")
        if os.path.getsize(path) > _MAX_FILE:
            raise _bad(f"{path!r} is larger than the 2 GiB a protobuf file can hold (larger "
                       "weights belong in external data files)")
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
        consts[t.name].flags.writeable = False  # an output may be a constant itself
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
        for name in at.values:
            first, last = _ATTR_OPSETS.get((node.op_type, name), (None, None))
            if (first is not None and opset < first) or (last is not None and opset > last):
                raise _bad(f"node {_label(node)}: {node.op_type} has no attribute {name!r} at "
                           f"opset {opset} (it exists in opsets {first or _MIN_OPSET} to "
                           f"{last or 'now'})")
        if node.op_type in _BY_OPSET:
            build = build(opset)
        step = build(at, [consts.get(n) for n in ins])
        if node.op_type in _FLOAT_ONLY:
            step = _float_input(node.op_type, step)
        steps.append((step, ins, outs))
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
