"""Layers: thin, stateful wrappers around :mod:`cnnext.functional`.

Every layer has ``forward(x) -> y`` and ``backward(grad_y) -> grad_x``, keeps
its parameters in ``layer.params`` (name -> ndarray, ``"weight"`` and
``"bias"`` as in PyTorch) and their gradients in ``layer.grads`` (same names,
shapes and dtypes), and keeps *one* named forward cache (``layer._cache``),
replaced on every ``forward`` so it never grows.

Conventions
-----------
* ``backward`` *accumulates* into ``grads`` (like PyTorch's ``.grad``); call
  ``optimizer.zero_grad()`` (or ``model.zero_grad()``) before each backward
  pass.  Optimizers update ``params`` in place, so the arrays in ``params``
  and ``grads`` keep their identity for the life of the layer.
* ``backward`` before ``forward`` raises ``RuntimeError``.  ``backward`` uses
  the input of the *last* ``forward``; the caller's arrays (``x``,
  ``grad_y``) are never modified, so do not modify them between the two
  calls either.
* Layers with parameters (:class:`Conv2D`, :class:`Dense`) compute in their
  ``dtype`` (float32 by default): inputs of another dtype are converted (a
  copy; the caller's array is untouched).  The other layers keep the dtype
  they receive.
* ``train()``/``eval()`` switch the mode (only :class:`Dropout` behaves
  differently).
* :class:`Sequential` exposes the parameters of its layers under
  PyTorch-``state_dict``-style names (``"0.weight"``, ``"3.bias"``, ...);
  ``model.parameters()`` is the list of ``(param, grad)`` pairs optimizers
  take, and ``model.save(path)``/``model.load(path)`` store them in a
  ``.npz`` file without pickle.

Initialization (``init=`` of :class:`Conv2D` and :class:`Dense`), with
``fan_in = in_channels*kH*kW`` (or ``in_features``) and ``fan_out =
out_channels*kH*kW`` (or ``out_features``):

``"he"`` (default)
    He/Kaiming *normal*: weight ~ N(0, 2/fan_in), bias 0.  For layers
    followed by ReLU-style activations (He et al., 2015).
``"glorot"``
    Glorot/Xavier *uniform*: weight ~ U(-a, a), a = sqrt(6/(fan_in+fan_out)),
    bias 0.  For layers followed by tanh/sigmoid/softmax (e.g. the last
    layer of a classifier).
``"torch"``
    PyTorch's default for ``Conv2d``/``Linear`` (``kaiming_uniform_`` with
    ``a=sqrt(5)``): weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Random numbers are drawn in float64 from ``seed`` (an int, a
``numpy.random.Generator`` -- pass one Generator to every layer of a model
for a reproducible model -- or None for fresh entropy) and then cast to
``dtype``, so a float32 and a float64 layer with the same seed agree up to
rounding.
"""

import numbers
import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import _validate as V
from . import functional as F
from .losses import MSELoss, SoftmaxCrossEntropy

__all__ = [
    "Module",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "Dense",
    "Flatten",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Dropout",
    "Sequential",
    "SoftmaxCrossEntropy",
    "MSELoss",
]

_INITS = ("he", "glorot", "torch")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _as_rng(fname, seed):
    """A numpy Generator from an int seed, a Generator, or None."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"{fname}: seed must be an int, a numpy.random.Generator or None, got "
            f"{type(seed).__name__} {seed!r}"
        )
    if seed < 0:
        raise ValueError(f"{fname}: seed must be >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def _float_dtype(fname, dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fname}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{fname}: dtype must be float32 or float64, got {dt}")
    return dt


def _check_init(fname, init):
    if init not in _INITS:
        raise ValueError(f"{fname}: init must be one of {_INITS}, got {init!r}")
    return init


def _init_weight(rng, init, shape, fan_in, fan_out, dtype):
    n = 1
    for v in shape:
        n *= int(v)
    if n * np.dtype(dtype).itemsize > V._MEMORY_LIMIT:
        raise MemoryError(
            f"the weight of shape {tuple(int(v) for v in shape)} would need "
            f"{n * np.dtype(dtype).itemsize / 2**30:.1f} GiB, more than this machine has "
            f"(check in_channels/out_channels/kernel_size or in/out_features)"
        )
    if init == "he":
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    elif init == "glorot":
        a = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-a, a, size=shape)
    else:  # "torch"
        a = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-a, a, size=shape)
    return w.astype(dtype)


def _init_bias(rng, init, n, fan_in, dtype):
    if init == "torch":
        a = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-a, a, size=n).astype(dtype)
    return np.zeros(n, dtype=dtype)


def _as_dtype(fname, name, x, dtype):
    """``x`` as an array of ``dtype`` (a copy only when the dtype differs)."""
    a = V.as_array(fname, name, x)
    if a.dtype != dtype:
        V.compute_dtype(fname, [(name, a)])  # TypeError for bool/complex/str
        a = a.astype(dtype)
    return a


def _check_bool(fname, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fname}: {name} must be a bool, got {value!r}")
    return bool(value)


def _npz_error(path, why):
    return ValueError(f"load: {os.fspath(path)!r} is not a valid cnnext model file: {why}")


# --------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------


class Module:
    """Base class of every layer: mode, parameter access, save and load.

    Subclasses set ``self._params``/``self._grads`` (dicts of ndarrays) and
    implement ``forward`` and ``backward``.  ``module(x)`` is
    ``module.forward(x)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> layer = nn.Dense(3, 2, seed=0)
    >>> sorted(layer.params), layer.params["weight"].shape
    (['bias', 'weight'], (2, 3))
    """

    def __init__(self):
        self.training = True
        self._params = {}
        self._grads = {}
        self._cache = None

    # -- parameters ---------------------------------------------------------

    @property
    def params(self):
        """Parameters by name (the live arrays, updated in place by optimizers)."""
        return self._params

    @property
    def grads(self):
        """Gradients by name, same names/shapes/dtypes as :attr:`params`."""
        return self._grads

    def named_parameters(self):
        """List of ``(name, param, grad)`` triples, in a stable order."""
        return [(name, p, self._grads[name]) for name, p in self._params.items()]

    def parameters(self):
        """List of ``(param, grad)`` pairs, the input of the optimizers."""
        return [(p, g) for _, p, g in self.named_parameters()]

    def zero_grad(self):
        """Set every gradient to zero (in place)."""
        for _, _, g in self.named_parameters():
            g.fill(0)

    # -- mode ---------------------------------------------------------------

    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode; returns self."""
        self.training = _check_bool(f"{type(self).__name__}.train", "mode", mode)
        return self

    def eval(self):
        """Set evaluation mode (``train(False)``); returns self."""
        return self.train(False)

    # -- forward/backward ---------------------------------------------------

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _saved(self):
        """The forward cache; RuntimeError when there was no forward yet."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: called before forward; call forward(x) first"
            )
        return self._cache

    def _accumulate(self, name, value):
        g = self._grads[name]
        g += value

    # -- state --------------------------------------------------------------

    def state_dict(self):
        """Copies of the parameters, ``{name: ndarray}``."""
        return {name: p.copy() for name, p, _ in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy ``state`` (name -> array) into the parameters, in place.

        Everything is checked before anything is assigned: the names must be
        exactly those of :meth:`state_dict`, and every array must have the
        parameter's shape and dtype.  On error (``ValueError``) the module
        is unchanged.
        """
        fname = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys"):
            raise TypeError(
                f"{fname}: state must be a mapping name -> array, got {type(state).__name__}"
            )
        arrays = self._checked_state(fname, {k: state[k] for k in state.keys()})
        for name, p, _ in self.named_parameters():
            np.copyto(p, arrays[name])

    def _checked_state(self, fname, state):
        own = {name: p for name, p, _ in self.named_parameters()}
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(
                f"{fname}: parameter names do not match the model: missing {missing}, "
                f"unexpected {extra}"
            )
        out = {}
        for name, p in own.items():
            a = state[name]
            if not isinstance(a, np.ndarray):
                raise ValueError(f"{fname}: {name!r} must be an ndarray, got {type(a).__name__}")
            if a.dtype != p.dtype or a.shape != p.shape:
                raise ValueError(
                    f"{fname}: {name!r} must have shape {p.shape} and dtype {p.dtype}, "
                    f"got shape {a.shape} and dtype {a.dtype}"
                )
            out[name] = a
        return out

    def save(self, path):
        """Save the parameters to ``path`` as an uncompressed ``.npz`` file.

        The file is written exactly at ``path`` (no suffix is added) and
        atomically: to a temporary file in the same directory, then renamed
        over ``path`` with :func:`os.replace`, so a crash never leaves a
        half-written model behind.  Keys are the names of
        :meth:`named_parameters`; no pickle is involved.

        Examples
        --------
        >>> import os, tempfile
        >>> from cnnext import nn
        >>> model = nn.Sequential(nn.Dense(4, 3, seed=0), nn.ReLU(), nn.Dense(3, 2, seed=1))
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> model.save(path)
        >>> other = nn.Sequential(nn.Dense(4, 3, seed=5), nn.ReLU(), nn.Dense(3, 2, seed=6))
        >>> other.load(path)
        >>> bool((other.params["2.weight"] == model.params["2.weight"]).all())
        True
        """
        path = os.fspath(path)
        state = {name: np.ascontiguousarray(p) for name, p, _ in self.named_parameters()}
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **state)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def load(self, path):
        """Load parameters saved by :meth:`save` (``np.load(allow_pickle=False)``).

        Raises
        ------
        ValueError
            If the file is not a readable ``.npz`` archive (corrupt,
            truncated, pickled object arrays), or its names, shapes or dtypes
            do not match this model.  The model is left unchanged.
        FileNotFoundError
            If ``path`` does not exist.
        """
        path = os.fspath(path)
        readable = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
        try:
            npz = np.load(path, allow_pickle=False)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except readable as exc:
            raise _npz_error(path, f"{type(exc).__name__}: {exc}") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise _npz_error(path, "it holds a single array (.npy), not an .npz archive")
        try:
            with npz:
                # Check names, shapes and dtypes from the .npy headers first,
                # so a hostile header declaring a huge array is a clear
                # ValueError, not an attempt to allocate it.
                self._check_headers(path, npz)
                state = {name: npz[name] for name in npz.files}
        except readable as exc:
            raise _npz_error(path, f"{type(exc).__name__}: {exc}") from None
        arrays = self._checked_state("load", state)
        for name, p, _ in self.named_parameters():
            np.copyto(p, arrays[name])

    def _check_headers(self, path, npz):
        own = {name: p for name, p, _ in self.named_parameters()}
        if sorted(npz.files) != sorted(own):
            return  # names are reported by _checked_state
        fmt = np.lib.format
        for name in npz.files:
            with npz.zip.open(name + ".npy") as fh:
                version = fmt.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = fmt.read_array_header_2_0(fh)
            p = own[name]
            if shape != p.shape or dtype != p.dtype:
                raise _npz_error(
                    path,
                    f"{name!r} must have shape {p.shape} and dtype {p.dtype}, the file declares "
                    f"shape {shape} and dtype {dtype}",
                )

    def __repr__(self):
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------
# Layers with parameters
# --------------------------------------------------------------------------


class Conv2D(Module):
    """2-D convolution layer (cross-correlation), as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation : int or (int, int)
        As in :func:`cnnext.functional.conv2d`.
    bias : bool
        Whether to learn a per-channel bias.
    init : {"he", "glorot", "torch"}
        Weight initialization (module docstring); default He normal, for a
        convolution followed by ReLU.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape ``(out_channels, in_channels, kH, kW)`` and,
        with ``bias=True``, ``"bias"`` of shape ``(out_channels,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> conv = nn.Conv2D(1, 8, 3, bias=False, seed=0)
    >>> y = conv.forward(np.zeros((2, 1, 28, 28), dtype=np.float32))
    >>> y.shape, conv.backward(np.ones_like(y)).shape
    ((2, 8, 26, 26), (2, 1, 28, 28))
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        *,
        init="he",
        dtype=np.float32,
        seed=None,
    ):
        super().__init__()
        fname = "Conv2D"
        self.in_channels = V.as_int(fname, "in_channels", in_channels, 1)
        self.out_channels = V.as_int(fname, "out_channels", out_channels, 1)
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = V.pair(fname, "stride", stride, 1)
        self.padding = V.pair(fname, "padding", padding, 0)
        self.dilation = V.pair(fname, "dilation", dilation, 1)
        has_bias = _check_bool(fname, "bias", bias)
        self.init = _check_init(fname, init)
        self.dtype = _float_dtype(fname, dtype)
        rng = _as_rng(fname, seed)
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        fan_out = self.out_channels * kh * kw
        shape = (self.out_channels, self.in_channels, kh, kw)
        self._params["weight"] = _init_weight(rng, init, shape, fan_in, fan_out, self.dtype)
        if has_bias:
            self._params["bias"] = _init_bias(rng, init, self.out_channels, fan_in, self.dtype)
        self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}

    @property
    def bias(self):
        """Whether the layer has a bias."""
        return "bias" in self._params

    def forward(self, x):
        x = _as_dtype("Conv2D.forward", "x", x, self.dtype)
        w, b = self._params["weight"], self._params.get("bias")
        y = F.conv2d(x, w, b, self.stride, self.padding, self.dilation)
        self._cache = x
        return y

    def backward(self, grad_y):
        x = self._saved()
        g = _as_dtype("Conv2D.backward", "grad_y", grad_y, self.dtype)
        gx, gw, gb = F.conv2d_backward(
            g, x, self._params["weight"], self.stride, self.padding, self.dilation, bias=self.bias
        )
        self._accumulate("weight", gw)
        if gb is not None:
            self._accumulate("bias", gb)
        return gx

    def __repr__(self):
        return (
            f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias})"
        )


class Dense(Module):
    """Fully connected layer ``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    init : {"he", "glorot", "torch"}
        Weight initialization (module docstring).  Default He normal, for a
        layer followed by ReLU; use ``"glorot"`` for the last layer of a
        classifier.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape ``(out_features, in_features)`` (PyTorch's
        layout) and, with ``bias=True``, ``"bias"`` of shape
        ``(out_features,)``.

    Notes
    -----
    Input must be 2-D ``(N, in_features)``; put a :class:`Flatten` before
    it after convolutions.  Calls :func:`cnnext.functional.linear` and
    :func:`~cnnext.functional.linear_backward` (cnnext's own GEMM kernels and
    threads, no BLAS).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> fc = nn.Dense(3, 2, seed=0)
    >>> fc.params["weight"][...] = [[1, 0, 0], [0, 1, 1]]
    >>> fc.forward(np.array([[1.0, 2.0, 3.0]]))
    array([[1., 5.]], dtype=float32)
    """

    def __init__(
        self, in_features, out_features, bias=True, *, init="he", dtype=np.float32, seed=None
    ):
        super().__init__()
        fname = "Dense"
        self.in_features = V.as_int(fname, "in_features", in_features, 1)
        self.out_features = V.as_int(fname, "out_features", out_features, 1)
        has_bias = _check_bool(fname, "bias", bias)
        self.init = _check_init(fname, init)
        self.dtype = _float_dtype(fname, dtype)
        rng = _as_rng(fname, seed)
        shape = (self.out_features, self.in_features)
        self._params["weight"] = _init_weight(
            rng, init, shape, self.in_features, self.out_features, self.dtype
        )
        if has_bias:
            self._params["bias"] = _init_bias(
                rng, init, self.out_features, self.in_features, self.dtype
            )
        self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}

    @property
    def bias(self):
        """Whether the layer has a bias."""
        return "bias" in self._params

    def forward(self, x):
        x = _as_dtype("Dense.forward", "x", x, self.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense.forward: x must be 2-D (N, in_features={self.in_features}), got "
                f"shape {x.shape}"
            )
        y = F.linear(x, self._params["weight"], self._params.get("bias"))
        self._cache = x
        return y

    def backward(self, grad_y):
        x = self._saved()
        g = _as_dtype("Dense.backward", "grad_y", grad_y, self.dtype)
        if g.shape != (x.shape[0], self.out_features):
            raise ValueError(
                f"Dense.backward: grad_y.shape must be {(x.shape[0], self.out_features)} "
                f"(the forward output shape), got {g.shape}"
            )
        gx, gw, gb = F.linear_backward(g, x, self._params["weight"], bias=self.bias)
        self._accumulate("weight", gw)
        if gb is not None:
            self._accumulate("bias", gb)
        return gx

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features}, bias={self.bias})"


# --------------------------------------------------------------------------
# Pooling and reshaping
# --------------------------------------------------------------------------


class MaxPool2D(Module):
    """2-D max pooling, as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        ``-inf`` padding (never selected), at most half the kernel.

    Notes
    -----
    The first maximum of each window (row-major) wins; in backward, the
    gradient goes to that position only, and overlapping windows accumulate.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> pool = nn.MaxPool2D(2)
    >>> pool.forward(np.arange(16.).reshape(1, 1, 4, 4))
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        fname = "MaxPool2D"
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else V.pair(fname, "stride", stride, 1)
        self.padding = V.pair(fname, "padding", padding, 0)

    def forward(self, x):
        x = V.as_array("MaxPool2D.forward", "x", x)
        y, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, return_indices=True)
        self._cache = (idx, x.shape)
        return y

    def backward(self, grad_y):
        idx, shape = self._saved()
        return F.max_pool2d_backward(grad_y, idx, shape)

    def __repr__(self):
        k, s, p = self.kernel_size, self.stride, self.padding
        return f"MaxPool2D(kernel_size={k}, stride={s}, padding={p})"


class AvgPool2D(Module):
    """2-D average pooling, as ``torch.nn.AvgPool2d`` (``count_include_pad=True``).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Zero padding, counted in the average; at most half the kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.AvgPool2D(2).forward(np.arange(16.).reshape(1, 1, 4, 4))
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        fname = "AvgPool2D"
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else V.pair(fname, "stride", stride, 1)
        self.padding = V.pair(fname, "padding", padding, 0)

    def forward(self, x):
        x = V.as_array("AvgPool2D.forward", "x", x)
        y = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._cache = x.shape
        return y

    def backward(self, grad_y):
        shape = self._saved()
        return F.avg_pool2d_backward(grad_y, shape, self.kernel_size, self.stride, self.padding)

    def __repr__(self):
        k, s, p = self.kernel_size, self.stride, self.padding
        return f"AvgPool2D(kernel_size={k}, stride={s}, padding={p})"


class Flatten(Module):
    """Flatten all axes after the first: ``(N, ...) -> (N, prod(...))``.

    Returns a view when possible (as ``torch.flatten``), never modifying it.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.Flatten().forward(np.zeros((2, 8, 13, 13))).shape
    (2, 1352)
    """

    def forward(self, x):
        x = V.as_array("Flatten.forward", "x", x)
        if x.ndim < 1:
            raise ValueError("Flatten.forward: x must have a batch axis, got a 0-D array")
        self._cache = x.shape
        # Explicit feature count: reshape(N, -1) is ambiguous for N = 0.
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))

    def backward(self, grad_y):
        shape = self._saved()
        g = V.as_array("Flatten.backward", "grad_y", grad_y)
        if g.size != int(np.prod(shape)) or g.shape[:1] != shape[:1]:
            raise ValueError(
                f"Flatten.backward: grad_y.shape {g.shape} does not match the forward "
                f"output for input shape {shape}"
            )
        return g.reshape(shape)


# --------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------


class ReLU(Module):
    """``max(x, 0)``.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.ReLU().forward([-1.0, 2.0])
    array([0., 2.])
    """

    def forward(self, x):
        x = V.as_array("ReLU.forward", "x", x)
        self._cache = x
        return F.relu(x)

    def backward(self, grad_y):
        return F.relu_backward(grad_y, self._saved())


class LeakyReLU(Module):
    """``x`` where ``x > 0``, else ``alpha * x`` (``torch.nn.LeakyReLU(negative_slope)``).

    Parameters
    ----------
    alpha : float
        Slope for negative inputs (default 0.01).

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.LeakyReLU(0.1).forward([-1.0, 2.0])
    array([-0.1,  2. ])
    """

    def __init__(self, alpha=0.01):
        super().__init__()
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
            raise TypeError(f"LeakyReLU: alpha must be a real number, got {alpha!r}")
        if not np.isfinite(alpha):
            raise ValueError(f"LeakyReLU: alpha must be finite, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x):
        x = V.as_array("LeakyReLU.forward", "x", x)
        self._cache = x
        return F.leaky_relu(x, self.alpha)

    def backward(self, grad_y):
        return F.leaky_relu_backward(grad_y, self._saved(), self.alpha)

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"


class Sigmoid(Module):
    """Logistic sigmoid.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.Sigmoid().forward([0.0])
    array([0.5])
    """

    def forward(self, x):
        y = F.sigmoid(x)
        self._cache = y
        return y

    def backward(self, grad_y):
        return F.sigmoid_backward(grad_y, self._saved())


class Tanh(Module):
    """Hyperbolic tangent.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.Tanh().forward([0.0])
    array([0.])
    """

    def forward(self, x):
        y = F.tanh(x)
        self._cache = y
        return y

    def backward(self, grad_y):
        return F.tanh_backward(grad_y, self._saved())


class Softmax(Module):
    """Softmax along ``axis`` (default 1, the class axis of ``(N, K)``).

    For training a classifier prefer ending the model with its last
    :class:`Dense` and using :class:`SoftmaxCrossEntropy`, which applies the
    softmax itself, stably; this layer is for models that need the
    probabilities inside the network.

    Examples
    --------
    >>> from cnnext import nn
    >>> nn.Softmax().forward([[0.0, 0.0]])
    array([[0.5, 0.5]])
    """

    def __init__(self, axis=1):
        super().__init__()
        self.axis = V.as_int("Softmax", "axis", axis)

    def forward(self, x):
        y = F.softmax(x, axis=self.axis)
        self._cache = y
        return y

    def backward(self, grad_y):
        return F.softmax_backward(grad_y, self._saved(), axis=self.axis)

    def __repr__(self):
        return f"Softmax(axis={self.axis})"


class Dropout(Module):
    """Inverted dropout, as ``torch.nn.Dropout``.

    In training mode each element is zeroed with probability ``p`` and the
    survivors are scaled by ``1 / (1 - p)``; in evaluation mode the layer is
    the identity (it returns its input unchanged).

    Parameters
    ----------
    p : float in [0, 1]
    seed : int, numpy.random.Generator or None
        Source of the masks.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> drop = nn.Dropout(0.5, seed=0)
    >>> y = drop.forward(np.ones((2, 4)))
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    >>> drop.eval().forward(np.ones(3))
    array([1., 1., 1.])
    """

    def __init__(self, p=0.5, *, seed=None):
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
            raise TypeError(f"Dropout: p must be a real number, got {p!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self._rng = _as_rng("Dropout", seed)

    def forward(self, x):
        x = V.as_array("Dropout.forward", "x", x)
        # Same dtype rule in every mode (eval must not pass str/complex on).
        V.compute_dtype("Dropout.forward", [("x", x)])
        if not self.training or self.p == 0.0:
            self._cache = False  # identity: no mask
            return x
        dt = np.result_type(x.dtype, np.float32)
        if self.p == 1.0:
            mask = np.zeros(x.shape, dtype=dt)
        else:
            keep = self._rng.random(x.shape) >= self.p
            mask = keep.astype(dt) * dt.type(1.0 / (1.0 - self.p))
        self._cache = mask
        with np.errstate(invalid="ignore"):  # NaN/inf propagate silently
            return x * mask

    def backward(self, grad_y):
        mask = self._saved()
        g = V.as_array("Dropout.backward", "grad_y", grad_y)
        if mask is False:
            return g
        if g.shape != mask.shape:
            raise ValueError(
                f"Dropout.backward: grad_y.shape {g.shape} must equal the forward shape "
                f"{mask.shape}"
            )
        with np.errstate(invalid="ignore"):  # NaN/inf propagate silently
            return g * mask

    def __repr__(self):
        return f"Dropout(p={self.p})"


# --------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------


class Sequential(Module):
    """A chain of layers: ``forward`` runs them in order, ``backward`` in reverse.

    Parameters are exposed under the names ``"<index>.<name>"`` (nested
    containers add more prefixes), as in PyTorch's ``state_dict``.

    Parameters
    ----------
    *layers : Module
        Each layer may appear only once (a layer has a single forward
        cache, so it cannot sit at two places in a chain).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> rng = np.random.default_rng(0)
    >>> model = nn.Sequential(
    ...     nn.Conv2D(1, 8, 3, bias=False, seed=rng), nn.MaxPool2D(2), nn.Flatten(),
    ...     nn.Dense(13 * 13 * 8, 10, init="glorot", seed=rng))
    >>> list(model.params)
    ['0.weight', '3.weight', '3.bias']
    >>> logits = model.forward(np.zeros((4, 1, 28, 28), dtype=np.float32))
    >>> logits.shape, model.backward(np.ones_like(logits)).shape
    ((4, 10), (4, 1, 28, 28))
    """

    def __init__(self, *layers):
        super().__init__()
        seen = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: layer {i} must be a cnnext.nn.Module, got {type(layer).__name__}"
                )
            if id(layer) in seen:
                raise ValueError(
                    f"Sequential: layer {i} ({layer!r}) appears twice; a layer has one "
                    f"forward cache and cannot be used at two places"
                )
            seen.add(id(layer))
        self.layers = list(layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    @property
    def params(self):
        """All parameters, ``{"<index>.<name>": ndarray}`` (live arrays)."""
        return {name: p for name, p, _ in self.named_parameters()}

    @property
    def grads(self):
        """All gradients, same names as :attr:`params`."""
        return {name: g for name, _, g in self.named_parameters()}

    def named_parameters(self):
        return [
            (f"{i}.{name}", p, g)
            for i, layer in enumerate(self.layers)
            for name, p, g in layer.named_parameters()
        ]

    def train(self, mode=True):
        super().train(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        self._cache = True
        return x

    def backward(self, grad_y):
        self._saved()
        g = grad_y
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def __repr__(self):
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"
