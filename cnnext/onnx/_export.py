"""ONNX export: a cnnext model as an ONNX graph (:func:`export`)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .. import __version__, _io, nn
from .. import _validate as V
from ._proto import _onnx

if TYPE_CHECKING:
    from types import ModuleType

    from .._typing import StrPath

__all__ = ["export"]

MIN_OPSET = 13  # Softmax along one axis (earlier opsets flatten the trailing axes)
DEFAULT_OPSET = 17


def export(
    model: nn.Module, path: StrPath, input_shape: Sequence[int], opset: int = DEFAULT_OPSET,
    *, dynamic_batch: bool = True, dtype: npt.DTypeLike | None = None,
) -> None:
    """Write ``model`` (evaluation mode) to ``path`` as an ONNX model.

    Each layer becomes the ONNX operator computing it: convolutions
    ``Conv``/``ConvTranspose``, :class:`~cnnext.nn.Dense` ``Gemm``, batch
    normalization (with its running statistics, as in evaluation mode)
    ``BatchNormalization``, max and average pools ``MaxPool``/
    ``AveragePool`` with all their options (``divisor_override`` as a
    window sum divided), adaptive pools ``GlobalAveragePool``/
    ``GlobalMaxPool`` (output size 1), a window pool (input sizes
    divisible by the output size) or one reduction per bin,
    :class:`~cnnext.nn.Flatten`
    ``Flatten``, :class:`~cnnext.nn.Residual` its two branches and
    ``Add``, activations ``Relu``, ``LeakyRelu``, ``Sigmoid``, ``Tanh``,
    ``Softmax``, and :class:`~cnnext.nn.Dropout`/:class:`~cnnext.nn.Identity`
    ``Identity``.  The parameters are stored as initializers under their
    :meth:`~cnnext.nn.Module.state_dict` names; the graph's input is
    ``"input"`` and its output ``"output"``.  The file is checked with
    ``onnx.checker`` before it is written (atomically).

    Parameters
    ----------
    model : cnnext.nn.Module
        Its parameters all of one dtype (float32 or float64), which is the
        dtype of the graph's input and output.
    path : str or path-like
        Where to write the ``.onnx`` file.
    input_shape : sequence of int
        The input's shape, batch axis first, e.g. ``(1, 1, 28, 28)``.  The
        model runs once on zeros of that shape (in evaluation mode, its
        modes restored afterwards) to find every layer's shapes.
    opset : int
        The ONNX operator set version, from 13 to the newest the installed
        ``onnx`` knows.
    dynamic_batch : bool
        Make the batch axis a named, free dimension (``"batch"``); else it
        is fixed to ``input_shape[0]``.
    dtype : float32, float64 or None
        The graph's dtype: None for the parameters' (float32 for a model
        without parameters).  A model with parameters must have this dtype.

    Returns
    -------
    None

    Raises
    ------
    ImportError
        Without the ``onnx`` package (``pip install "cnnext[onnx]"``).
    TypeError
        Naming the first layer (by its path) that has no ONNX form.
    ValueError
        Naming the first layer whose options have no ONNX form (batch
        normalization without running statistics), or a bad argument.

    Notes
    -----
    The graph computes in the model's dtype; ONNX Runtime's CPU kernels
    for convolutions and pools are float32 only, so run float64 exports with
    another runtime or export a float32 model.

    Examples
    --------
    >>> import os, tempfile
    >>> import onnx
    >>> from cnnext import models
    >>> from cnnext.onnx import export
    >>> path = os.path.join(tempfile.mkdtemp(), "lenet5.onnx")
    >>> export(models.lenet5(seed=0), path, (1, 1, 28, 28))
    >>> graph = onnx.load(path).graph
    >>> [node.op_type for node in graph.node][:4]
    ['Conv', 'Relu', 'MaxPool', 'Conv']
    >>> graph.input[0].type.tensor_type.shape.dim[0].dim_param
    'batch'
    """
    fname = "export"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fname}: model must be a cnnext.nn.Module, got {type(model).__name__}")
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise TypeError(
            f"{fname}: input_shape must be a non-empty tuple of ints (batch axis first), got "
            f"{input_shape!r}"
        )
    shape = tuple(V.as_int(fname, f"input_shape[{i}]", n, 1) for i, n in enumerate(input_shape))
    V.boolean(fname, "dynamic_batch", dynamic_batch)
    onnx = _onnx(fname)
    top = int(onnx.defs.onnx_opset_version())
    opset = V.as_int(fname, "opset", opset, MIN_OPSET)
    if opset > top:
        raise ValueError(
            f"{fname}: opset must be at most {top} (the newest the installed onnx "
            f"{onnx.__version__} knows), got {opset}"
        )
    dtype = _model_dtype(fname, model, None if dtype is None else V.float_dtype(fname, dtype))
    V.check_alloc(fname, shape, dtype.itemsize, what="input")
    graph = _Graph(onnx, dtype, opset)
    modes = [(m, m.training) for m in _modules(model)]
    try:
        model.eval()
        x = np.zeros(shape, dtype)
        out_name, y = graph.emit(model, "", "input", x)
    finally:
        for m, mode in modes:
            m.training = mode
    proto = graph.model(out_name, shape, y, opset, dynamic_batch)
    onnx.checker.check_model(proto, full_check=True)
    with _io.atomic_write(path, ".onnx") as fh:
        fh.write(proto.SerializeToString())


def _modules(model: nn.Module) -> list[nn.Module]:
    """``model`` and every layer inside it."""
    out = [model]
    for _, child in getattr(model, "_children", list)():
        out += _modules(child)
    return out


def _model_dtype(
    fname: str, model: nn.Module, dtype: np.dtype[Any] | None
) -> np.dtype[Any]:
    """The graph's dtype: ``dtype``, or the parameters' (float32 without
    parameters); ValueError when the parameters disagree with it or among
    themselves."""
    dtypes = sorted({str(a.dtype) for n, a in model.state_dict().items()
                     if not n.endswith("num_batches_tracked")})
    if len(dtypes) > 1 or (dtype is not None and dtypes and dtypes != [str(dtype)]):
        raise ValueError(
            f"{fname}: the model's parameters must all have one dtype"
            + ("" if dtype is None else f", {dtype}") + f"; got {dtypes}"
        )
    if dtype is not None:
        return dtype
    return np.dtype(dtypes[0] if dtypes else np.float32)


def _layer_error(path: str, layer: nn.Module, why: str) -> ValueError:
    return ValueError(f"export: layer {path or 'model'} ({layer!r}) {why}")


class _Graph:
    """The nodes and initializers of the graph being built."""

    def __init__(self, onnx: ModuleType, dtype: np.dtype[Any], opset: int) -> None:
        self.onnx = onnx
        self.dtype = dtype
        self.opset = opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.names: set[str] = {"input", "output"}

    # -- helpers ------------------------------------------------------------

    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def const(self, path: str, key: str, value: npt.ArrayLike) -> str:
        """An initializer holding ``value``, named ``"<path>.<key>"`` (as in
        ``state_dict``; made unique)."""
        name = self._unique(f"{path}.{key}" if path else key)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, path: str, op: str, inputs: list[str], **attrs: Any) -> str:
        """Append ``op`` (named after the layer's path) and return its output's name."""
        name = self._unique(f"{path}/{op}" if path else op)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    # -- layers -------------------------------------------------------------

    def emit(self, layer: nn.Module, path: str, x_name: str, x: Any) -> tuple[str, Any]:
        """Emit ``layer`` on the tensor ``x_name`` (whose value is ``x``); returns
        the output's name and value."""
        prefix = f"{path}." if path else ""
        if isinstance(layer, nn.Sequential):
            for i, sub in enumerate(layer):
                x_name, x = self.emit(sub, f"{prefix}{i}", x_name, x)
            return x_name, x
        if isinstance(layer, nn.Residual):
            b_name, yb = self.emit(layer.block, f"{prefix}block", x_name, x)
            if layer.shortcut is None:
                s_name, ys = x_name, np.asarray(x)
            else:
                s_name, ys = self.emit(layer.shortcut, f"{prefix}shortcut", x_name, x)
            if ys.shape != yb.shape or ys.dtype != yb.dtype:
                raise _layer_error(path, layer, f"adds a block output of shape {yb.shape} "
                                                f"({yb.dtype}) and a shortcut output of "
                                                f"shape {ys.shape} ({ys.dtype})")
            return self.node(path, "Add", [b_name, s_name]), yb + ys
        emit = _EMITTERS.get(type(layer))
        if emit is None:
            raise TypeError(
                f"export: layer {path or 'model'} ({type(layer).__name__}) has no ONNX form"
            )
        y = layer.forward(x)
        if y.dtype != self.dtype:
            raise _layer_error(path, layer, f"computes in {y.dtype}, the model in {self.dtype}")
        return emit(self, layer, path, x_name, np.shape(x), y.shape), y

    def model(
        self, out: str, in_shape: tuple[int, ...], y: Any, opset: int, dynamic_batch: bool
    ) -> Any:
        onnx, helper = self.onnx, self.onnx.helper
        if out == "input":  # a model that returns its input
            out = self.node("", "Identity", ["input"])
        for node in self.nodes:  # the last tensor is named "output"
            node.input[:] = ["output" if i == out else i for i in node.input]
            node.output[:] = ["output" if o == out else o for o in node.output]
        elem = helper.np_dtype_to_tensor_dtype(self.dtype)
        batch: list[int | str] = ["batch"] if dynamic_batch else [in_shape[0]]
        inp = helper.make_tensor_value_info("input", elem, batch + list(in_shape[1:]))
        outp = helper.make_tensor_value_info("output", elem, batch + list(y.shape[1:]))
        graph = helper.make_graph(self.nodes, "cnnext", [inp], [outp], self.inits)
        opsets = [helper.make_opsetid("", opset)]
        return helper.make_model(
            graph, opset_imports=opsets, producer_name="cnnext", producer_version=__version__,
            ir_version=onnx.helper.find_min_ir_version_for(opsets),
        )


# --------------------------------------------------------------------------
# One function per layer: (graph, layer, path, input name, input shape,
# output shape) -> output name
# --------------------------------------------------------------------------

_Shape = tuple[int, ...]


def _pair(v: Any, n: int) -> list[int]:
    return list(v) if isinstance(v, tuple) else [int(v)] * n


def _conv(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    n = len(xs) - 2
    k, s, d = _pair(layer.kernel_size, n), _pair(layer.stride, n), _pair(layer.dilation, n)
    pad = layer.padding if isinstance(layer.padding, str) else _pair(layer.padding, n)
    before, extra = V.resolve_padding("export", pad, s, k, d)
    inputs = [x, g.const(path, "weight", layer.weight)]
    if layer.bias is not None:
        inputs.append(g.const(path, "bias", layer.bias))
    return g.node(path, "Conv", inputs, kernel_shape=k, strides=s, dilations=d,
                  group=layer.groups, pads=list(before) + [b + e for b, e in zip(before, extra)])


def _conv_transpose(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    inputs = [x, g.const(path, "weight", layer.weight)]
    if layer.bias is not None:
        inputs.append(g.const(path, "bias", layer.bias))
    p = list(layer.padding)
    return g.node(path, "ConvTranspose", inputs, kernel_shape=list(layer.kernel_size),
                  strides=list(layer.stride), dilations=list(layer.dilation),
                  group=layer.groups, pads=p + p, output_padding=list(layer.output_padding))


def _dense(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    inputs = [x, g.const(path, "weight", layer.weight)]
    if layer.bias is not None:
        inputs.append(g.const(path, "bias", layer.bias))
    return g.node(path, "Gemm", inputs, transB=1)


def _batch_norm(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    if not layer.track_running_stats:
        raise _layer_error(path, layer, "has no running statistics (track_running_stats="
                                        "False normalises with the batch's, which ONNX's "
                                        "BatchNormalization does not do in inference)")
    c = layer.num_features
    scale = layer.weight if layer.affine else np.ones(c, g.dtype)
    shift = layer.bias if layer.affine else np.zeros(c, g.dtype)
    # ONNX's float attributes are float32: the rest of eps goes into the variance
    # (exact in float64, nothing in float32).
    eps32 = float(np.float32(layer.eps))
    var = layer.running_var + np.asarray(layer.eps - eps32, g.dtype)
    inputs = [x, g.const(path, "weight", scale), g.const(path, "bias", shift),
              g.const(path, "running_mean", layer.running_mean),
              g.const(path, "running_var", var)]
    return g.node(path, "BatchNormalization", inputs, epsilon=eps32)


def _crop(g: _Graph, path: str, y: str, onnx_shape: list[int], ys: _Shape) -> str:
    """Slice the trailing windows ONNX's ``ceil_mode`` adds but PyTorch's drops
    (a window that would start in the right padding)."""
    axes = [i + 2 for i, (a, b) in enumerate(zip(onnx_shape, ys[2:])) if a != b]
    if not axes:
        return y
    ends = [ys[a] for a in axes]
    starts = [0] * len(axes)
    return g.node(path, "Slice", [y, g.const(path, "starts", np.array(starts, np.int64)),
                                  g.const(path, "ends", np.array(ends, np.int64)),
                                  g.const(path, "axes", np.array(axes, np.int64))])


def _pool(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    n = len(xs) - 2
    if n not in (1, 2):
        raise _layer_error(path, layer, f"got a {len(xs)}-D input; ONNX pools take a batch "
                                        f"axis (N, C, ...)")
    k, s, p = (_pair(layer.kernel_size, n), _pair(layer.stride, n), _pair(layer.padding, n))
    d = _pair(getattr(layer, "dilation", 1), n)
    attrs: dict[str, Any] = dict(kernel_shape=k, strides=s, pads=p + p,
                                 ceil_mode=int(layer.ceil_mode))
    rnd = math.ceil if layer.ceil_mode else math.floor
    # ONNX's output size (rounded up or down, without PyTorch's rule on the last window)
    onnx_shape = [rnd((xs[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) / s[i]) + 1
                  for i in range(n)]
    if isinstance(layer, (nn.MaxPool2D, nn.MaxPool1D)):
        y = g.node(path, "MaxPool", [x], dilations=d, **attrs)
        return _crop(g, path, y, onnx_shape, ys)
    div = getattr(layer, "divisor_override", None)
    if div is not None:
        return _window_sum(g, path, x, xs, ys, k, s, p, div)
    y = g.node(path, "AveragePool", [x], count_include_pad=int(layer.count_include_pad),
               **attrs)
    return _crop(g, path, y, onnx_shape, ys)


def _window_sum(g: _Graph, path: str, x: str, xs: _Shape, ys: _Shape, k: list[int],
                s: list[int], p: list[int], div: int) -> str:
    """An average pool with ``divisor_override``: each window's sum (a
    depthwise convolution with a kernel of ones over the zero-padded input,
    padded at the end as far as PyTorch's last window reaches) divided by
    ``div``."""
    n = len(k)
    end = [max(p[i], (ys[2 + i] - 1) * s[i] + k[i] - xs[2 + i] - p[i]) for i in range(n)]
    ones = g.const(path, "ones", np.ones((xs[1], 1, *k), g.dtype))
    y = g.node(path, "Conv", [x, ones], kernel_shape=k, strides=s, pads=p + end,
               group=xs[1])
    return g.node(path, "Div", [y, g.const(path, "divisor", np.array(div, g.dtype))])


def _adaptive(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    """A global pool (output 1x1), a window pool (even bins), else each axis
    in turn: one reduction per bin (PyTorch's bins ``[floor(i*H/OH),
    ceil((i+1)*H/OH))``), concatenated.  Averages of averages over equal-size
    rows are the average over the rectangle, and a max is a max of maxes."""
    kind = "Max" if isinstance(layer, nn.AdaptiveMaxPool2D) else "Average"
    if len(xs) != 4:
        raise _layer_error(path, layer, f"got a {len(xs)}-D input; the export needs "
                                        f"(N, C, H, W)")
    if ys[2:] == (1, 1):
        return g.node(path, f"Global{kind}Pool", [x])
    if not any(i % o for i, o in zip(xs[2:], ys[2:])):
        k = [i // o for i, o in zip(xs[2:], ys[2:])]
        return g.node(path, f"{kind}Pool", [x], kernel_shape=k, strides=k)
    reduce = "ReduceMax" if kind == "Max" else "ReduceMean"
    for axis in (2, 3):
        size, out = xs[axis], ys[axis]
        if size == out:
            continue
        parts = []
        for i in range(out):
            start, end = (i * size) // out, -(-((i + 1) * size) // out)
            part = g.node(path, "Slice", [
                x, g.const(path, "starts", np.array([start], np.int64)),
                g.const(path, "ends", np.array([end], np.int64)),
                g.const(path, "axes", np.array([axis], np.int64))])
            if g.opset >= 18:  # the axes became an input
                axes = g.const(path, "reduce_axes", np.array([axis], np.int64))
                parts.append(g.node(path, reduce, [part, axes], keepdims=1))
            else:
                parts.append(g.node(path, reduce, [part], axes=[axis], keepdims=1))
        x = g.node(path, "Concat", parts, axis=axis)
    return x


def _simple(op: str) -> Any:
    def emit(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
        return g.node(path, op, [x])

    return emit


def _leaky_relu(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    """``LeakyRelu``, whose float32 ``alpha`` attribute holds the slope, or
    ``PRelu`` with the slope as a tensor of the model's dtype (float64
    slopes that float32 does not hold exactly)."""
    alpha = layer.alpha
    if g.dtype == np.float32 or float(np.float32(alpha)) == alpha:
        return g.node(path, "LeakyRelu", [x], alpha=alpha)
    return g.node(path, "PRelu", [x, g.const(path, "slope", np.array([alpha], g.dtype))])


def _flatten(g: _Graph, layer: Any, path: str, x: str, xs: _Shape, ys: _Shape) -> str:
    return g.node(path, "Flatten", [x], axis=1)


_EMITTERS: dict[type, Any] = {
    nn.Conv2D: _conv,
    nn.Conv1D: _conv,
    nn.ConvTranspose2D: _conv_transpose,
    nn.Dense: _dense,
    nn.BatchNorm1D: _batch_norm,
    nn.BatchNorm2D: _batch_norm,
    nn.MaxPool2D: _pool,
    nn.MaxPool1D: _pool,
    nn.AvgPool2D: _pool,
    nn.AvgPool1D: _pool,
    nn.AdaptiveAvgPool2D: _adaptive,
    nn.AdaptiveMaxPool2D: _adaptive,
    nn.Flatten: _flatten,
    nn.ReLU: _simple("Relu"),
    nn.Sigmoid: _simple("Sigmoid"),
    nn.Tanh: _simple("Tanh"),
    nn.Dropout: _simple("Identity"),
    nn.Identity: _simple("Identity"),
    nn.LeakyReLU: _leaky_relu,
    nn.Softmax: lambda g, layer, path, x, xs, ys: g.node(path, "Softmax", [x],
                                                         axis=layer.axis),
}
