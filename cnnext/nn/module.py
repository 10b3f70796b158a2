"""The layer contract (:class:`Module`) and what every layer shares."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeGuard, TypeVar, overload

import numpy as np
import numpy.typing as npt

from .. import _config
from .. import _validate as V

if TYPE_CHECKING:
    from .._plan import Conv1dPlan, ConvPlan, ConvTransposePlan, LinearPlan
    from .._typing import FloatArray, FloatDType, Seed, Shape, StrPath

    LayerPlan = ConvPlan | LinearPlan | ConvTransposePlan | Conv1dPlan

_ModuleT = TypeVar("_ModuleT", bound="Module")


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns (as PyTorch's namesake):
    the model's names the state lacked, and the state's names the model
    lacks (both empty after a strict load)."""

    missing_keys: list[str]
    unexpected_keys: list[str]

_INITS = ("he", "glorot", "torch")


class Module:
    """Base class of every layer: mode, parameter access, save and load.

    A layer keeps its parameters in ``params`` (name -> ndarray, updated in
    place by optimizers) and their gradients in ``grads`` (same names,
    shapes and dtypes), its non-trainable state (running statistics) in
    ``buffers`` (never seen by optimizers, saved with the parameters),
    implements ``forward(x) -> y`` and
    ``backward(grad_y) -> grad_x``, and keeps one named forward cache,
    replaced on every ``forward``.  ``module(x)`` is ``module.forward(x)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> layer = nn.Dense(3, 2, seed=0)
    >>> sorted(layer.params), layer.params["weight"].shape
    (['bias', 'weight'], (2, 3))
    """

    def __init__(self) -> None:
        self.training = True
        self._params: dict[str, FloatArray] = {}
        self._grads: dict[str, FloatArray] = {}
        self._buffers: dict[str, npt.NDArray[Any]] = {}
        # What the last forward left for backward; each layer keeps its own kind.
        self._cache: Any = None

    # -- parameters ---------------------------------------------------------

    @property
    def params(self) -> dict[str, FloatArray]:
        """Parameters by name (the live arrays, updated in place by optimizers)."""
        return self._params

    @property
    def grads(self) -> dict[str, FloatArray]:
        """Gradients by name, same names/shapes/dtypes as :attr:`params`."""
        return self._grads

    def named_parameters(self) -> list[tuple[str, FloatArray, FloatArray]]:
        """List of ``(name, param, grad)`` triples, in a stable order."""
        return [(name, p, self._grads[name]) for name, p in self._params.items()]

    def parameters(self) -> list[tuple[FloatArray, FloatArray]]:
        """List of ``(param, grad)`` pairs, the input of the optimizers."""
        return [(p, g) for _, p, g in self.named_parameters()]

    # -- buffers ------------------------------------------------------------

    @property
    def buffers(self) -> dict[str, npt.NDArray[Any]]:
        """Non-trainable state by name (running statistics: the live arrays,
        updated by ``forward`` in training mode)."""
        return dict(self.named_buffers())

    def named_buffers(self) -> list[tuple[str, npt.NDArray[Any]]]:
        """List of ``(name, buffer)`` pairs, in a stable order.  Buffers are
        part of :meth:`state_dict` and of model files, never of
        :meth:`parameters`, so optimizers never touch them."""
        return list(self._buffers.items())

    def _state(self) -> dict[str, npt.NDArray[Any]]:
        """Every saved array by name (live): parameters, then buffers."""
        state: dict[str, npt.NDArray[Any]] = {n: p for n, p, _ in self.named_parameters()}
        state.update(self.named_buffers())
        return state

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place)."""
        for _, _, g in self.named_parameters():
            g.fill(0)

    # -- mode ---------------------------------------------------------------

    def train(self: _ModuleT, mode: bool = True) -> _ModuleT:
        """Set training mode (``mode=True``) or evaluation mode; returns self."""
        self.training = V.boolean(f"{type(self).__name__}.train", "mode", mode)
        return self

    def eval(self: _ModuleT) -> _ModuleT:
        """Set evaluation mode (``train(False)``); returns self."""
        return self.train(False)

    # -- forward/backward ---------------------------------------------------

    def __call__(self, x: npt.ArrayLike) -> FloatArray:
        return self.forward(x)

    def forward(self, x: npt.ArrayLike) -> FloatArray:  # pragma: no cover - abstract
        """The layer's output for input ``x``."""
        raise NotImplementedError

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:  # pragma: no cover - abstract
        """The gradient with respect to the last ``forward``'s input."""
        raise NotImplementedError

    def _saved(self) -> Any:
        """The forward cache; RuntimeError when there was no forward yet."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: called before forward; call forward(x) first"
            )
        return self._cache

    # -- state --------------------------------------------------------------

    def state_dict(self) -> dict[str, npt.NDArray[Any]]:
        """Copies of the parameters and buffers, ``{name: ndarray}``.

        The names and layouts are PyTorch's ``state_dict``'s for the layers
        that have a PyTorch twin (``"0.weight"``, ``"1.running_mean"``,
        ``"3.block.0.weight"``, ...): a PyTorch model's ``state_dict()``,
        turned into numpy arrays, loads into the matching cnnext model with
        :meth:`load_state_dict`, and back.
        """
        return {name: a.copy() for name, a in self._state().items()}

    def load_state_dict(
        self, state: Mapping[str, npt.ArrayLike], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy ``state`` (name -> array) into the parameters and buffers, in place.

        As ``torch.nn.Module.load_state_dict``: every array must have the
        shape of the parameter (or buffer) of its name and is converted to
        its dtype (float to float, integer to integer or float; a
        ``torch.Tensor`` on the CPU is accepted as it is).  With
        ``strict=True`` the names must be exactly those of
        :meth:`state_dict`; with ``strict=False`` missing and unexpected
        names are skipped and returned.  Everything is checked before
        anything is assigned: on error (``ValueError``, one message naming
        every missing, unexpected and mis-shaped key) the module is
        unchanged.

        Parameters
        ----------
        state : mapping of str to array
            E.g. another model's :meth:`state_dict`, or
            ``{k: v.numpy() for k, v in torch_model.state_dict().items()}``.
        strict : bool
            Require the names to match exactly.

        Returns
        -------
        IncompatibleKeys
            The named tuple ``(missing_keys, unexpected_keys)`` (both empty
            lists after a strict load).

        Examples
        --------
        >>> from cnnext import nn
        >>> src = nn.Sequential(nn.Dense(3, 2, seed=0), nn.BatchNorm1D(2))
        >>> dst = nn.Sequential(nn.Dense(3, 2, seed=1), nn.BatchNorm1D(2))
        >>> dst.load_state_dict(src.state_dict())
        IncompatibleKeys(missing_keys=[], unexpected_keys=[])
        >>> state = src.state_dict()
        >>> del state["1.running_var"]
        >>> dst.load_state_dict(state, strict=False).missing_keys
        ['1.running_var']
        """
        fname = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys"):
            raise TypeError(
                f"{fname}: state must be a mapping name -> array, got {type(state).__name__}"
            )
        strict = V.boolean(fname, "strict", strict)
        own = self._state()
        given = {k: state[k] for k in state.keys()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        arrays: dict[str, npt.NDArray[Any]] = {}
        problems = []
        if strict and missing:
            problems.append(f"missing {missing}")
        if strict and unexpected:
            problems.append(f"unexpected {unexpected}")
        for name, p in own.items():
            if name not in given:
                continue
            a = _state_array(fname, name, given[name], p.dtype)
            if a.shape != p.shape:
                problems.append(
                    f"{name!r} must have shape {p.shape}, got shape {a.shape}"
                )
            arrays[name] = a
        if problems:
            raise ValueError(
                f"{fname}: the state does not match the model: " + "; ".join(problems)
            )
        self._assign(arrays)
        return IncompatibleKeys(missing, unexpected)

    def _assign(self, arrays: Mapping[str, npt.ArrayLike]) -> None:
        """Copy ``arrays`` into the parameters and buffers of their names
        (names absent from ``arrays`` are left alone)."""
        for name, a in self._state().items():
            if name in arrays:
                np.copyto(a, arrays[name], casting="unsafe")

    def save(self, path: StrPath) -> None:
        """Save the parameters and buffers to ``path`` as an uncompressed ``.npz`` file.

        The file is written exactly at ``path`` (no suffix is added) and
        atomically: to a temporary file in the same directory, then renamed
        over ``path``, so a crash never leaves a half-written model behind.
        Keys are the names of :meth:`state_dict`; no pickle is involved.

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
        from .. import _io  # (zipfile: imported when a model is saved or loaded)

        _io.save_npz(path, self._state())

    def load(self, path: StrPath) -> None:
        """Load parameters and buffers saved by :meth:`save` (never unpickles anything).

        Raises
        ------
        ValueError
            If the file is not a readable ``.npz`` archive (corrupt,
            truncated, holding Python objects), or its names, shapes or
            dtypes do not match this model.  The model is left unchanged.
        FileNotFoundError
            If ``path`` does not exist.
        """
        from .. import _io

        expected = {name: (a.shape, a.dtype) for name, a in self._state().items()}
        self._assign(_io.load_npz(path, expected))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Weighted(Module):
    """A layer with a ``weight`` and an optional ``bias`` that runs through a
    kept plan.

    ``weight``/``bias`` are the parameter arrays (views of :attr:`params`, as
    PyTorch users expect).  ``forward``/``backward`` here are the fast path
    every such layer shares: while the input (and upstream gradient) is the
    kind of array the kept plan expects, run the plan; otherwise convert,
    call the functional op (``_call_forward``/``_call_backward``, the
    subclass's) and keep its plan (``_plan_of``).
    """

    dtype: FloatDType
    init: str
    _skips_input_grad = True

    def __init__(self) -> None:
        super().__init__()
        self._plan: LayerPlan | None = None
        self._plan_threads = 0
        # The convolution-algorithm setting the kept plan was made under.
        self._plan_algorithm = ""

    @property
    def weight(self) -> FloatArray:
        """The weight array (``params["weight"]``), updated in place by optimizers."""
        return self._params["weight"]

    @property
    def bias(self) -> FloatArray | None:
        """The bias array (``params["bias"]``), or None for a layer without bias."""
        return self._params.get("bias")

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The layer's output for ``x`` (see the class's Notes); caches ``x``."""
        plan, w, b = self._plan, self._params["weight"], self._params.get("bias")
        if (
            plan is not None
            and steady(x, plan.x_shape, self.dtype, self._plan_threads)
            and self._plan_algorithm == _config.get_conv_algorithm()
        ):
            y = plan.forward(x, w, b)
        else:
            name = type(self).__name__
            x = np.ascontiguousarray(as_dtype(f"{name}.forward", "x", x, self.dtype))
            y = self._call_forward(x, w, b)
            self._plan = self._plan_of(x, w, b) if _config.compiled_backend() else None
            self._plan_threads = _config.get_num_threads()
            self._plan_algorithm = _config.get_conv_algorithm()
        self._cache = x
        return y

    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: Literal[True] = True) -> FloatArray: ...
    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool) -> FloatArray | None: ...
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool = True) -> FloatArray | None:
        """Gradient w.r.t. the last input; accumulates ``grads["weight"]`` (and
        ``grads["bias"]``).  With ``input_grad=False`` (a first layer) only the
        parameter gradients are computed and None is returned."""
        x: FloatArray = self._saved()
        plan, w = self._plan, self._params["weight"]
        has_bias = "bias" in self._params
        if (
            plan is not None
            and x.shape == plan.x_shape
            and steady(grad_y, plan.out_shape, self.dtype, self._plan_threads)
            and self._plan_algorithm == _config.get_conv_algorithm()
        ):
            gx, gw, gb = plan.backward(grad_y, x, w, has_bias, input_grad)
        else:
            g = as_dtype(f"{type(self).__name__}.backward", "grad_y", grad_y, self.dtype)
            gx, gw, gb = self._call_backward(g, x, w, has_bias)
            if not input_grad:
                gx = None
        self._grads["weight"] += gw
        if gb is not None:
            self._grads["bias"] += gb
        return gx

    def _call_forward(
        self, x: FloatArray, w: FloatArray, b: FloatArray | None
    ) -> FloatArray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _call_backward(
        self, g: FloatArray, x: FloatArray, w: FloatArray, has_bias: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _plan_of(
        self, x: FloatArray, w: FloatArray, b: FloatArray | None
    ) -> LayerPlan:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------
# What layers share
# --------------------------------------------------------------------------


def check_init(fname: str, init: str) -> str:
    return V.one_of(fname, "init", init, _INITS)


def init_weight(
    fname: str, rng: np.random.Generator, init: str, shape: Shape, fan_in: int, fan_out: int,
    dtype: FloatDType,
) -> FloatArray:
    """Initial weights (see the package docstring for the schemes)."""
    V.check_alloc(fname, shape, np.dtype(dtype).itemsize,
                  what="weight (check the channel, kernel and feature counts)")
    if init == "he":
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    elif init == "glorot":
        a = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-a, a, size=shape)
    else:  # "torch"
        a = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-a, a, size=shape)
    return w.astype(dtype)


def init_params(
    layer: Weighted, fname: str, init: str, dtype: npt.DTypeLike, seed: Seed, shape: Shape,
    n_bias: int,
) -> None:
    """Set a layer's ``init``, ``dtype``, a weight of ``shape``, a bias of
    ``n_bias`` entries (none when 0) and zero gradients, with PyTorch's fans:
    ``fan_in = shape[1]*k``, ``fan_out = shape[0]*k`` (k the kernel's size,
    1 for a dense layer)."""
    layer.init = check_init(fname, init)
    layer.dtype = V.float_dtype(fname, dtype)
    rng = V.rng(fname, seed)
    taps = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * taps, shape[0] * taps
    layer._params["weight"] = init_weight(fname, rng, init, shape, fan_in, fan_out, layer.dtype)
    if n_bias:
        layer._params["bias"] = init_bias(rng, init, n_bias, fan_in, layer.dtype)
    layer._grads = {k: np.zeros_like(v) for k, v in layer._params.items()}


def init_bias(
    rng: np.random.Generator, init: str, n: int, fan_in: int, dtype: FloatDType
) -> FloatArray:
    if init == "torch":
        a = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-a, a, size=n).astype(dtype)
    return np.zeros(n, dtype=dtype)


def _state_array(
    fname: str, name: str, value: object, dtype: np.dtype[Any]
) -> npt.NDArray[Any]:
    """``value`` (an entry of a state dict) as an array that converts to
    ``dtype`` without changing kind: TypeError for objects, booleans,
    complex numbers, and floats for an integer buffer."""
    try:
        a = np.asarray(value)
    except Exception as exc:  # e.g. a tensor that needs .detach() or .cpu() first
        raise TypeError(
            f"{fname}: {name!r} must be an array, got {type(value).__name__} ({exc})"
        ) from None
    kinds = "iu" if dtype.kind in "iu" else "fiu"
    if a.dtype.kind not in kinds:
        raise TypeError(
            f"{fname}: {name!r} must hold {'integers' if kinds == 'iu' else 'real numbers'} "
            f"(it is loaded as {dtype}), got dtype {a.dtype}"
        )
    return a


def as_dtype(fname: str, name: str, x: object, dtype: FloatDType) -> FloatArray:
    """``x`` as an array of ``dtype`` (a copy only when the dtype differs)."""
    a = V.as_array(fname, name, x)
    if a.dtype != dtype:
        V.compute_dtype(fname, [(name, a)])  # TypeError for bool/complex/str
        a = a.astype(dtype)
    return a


def steady(a: object, shape: Shape, dtype: FloatDType, threads: int) -> TypeGuard[FloatArray]:
    """True when ``a`` is exactly the kind of array a kept plan expects: an
    ndarray of ``shape`` and ``dtype``, C-contiguous, with the compiled
    backend and the thread count the plan was made for (a layer's fast path:
    nothing else to check)."""
    return (
        type(a) is np.ndarray
        and a.shape == shape
        and a.dtype is dtype
        and a.flags.c_contiguous
        and threads == _config._kernel_threads
        and _config.compiled_backend()
    )
