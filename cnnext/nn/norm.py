"""Normalization layers: batch normalization."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast, overload

import numpy as np
import numpy.typing as npt

from .. import _config, _plan
from .. import _validate as V
from .. import functional as F
from .module import Module, as_dtype, steady

if TYPE_CHECKING:
    from .._typing import FloatArray, Shape

_F64 = npt.NDArray[np.float64]


class _BatchNorm(Module):
    """What :class:`BatchNorm1D` and :class:`BatchNorm2D` share (they differ
    only in the input ranks they accept)."""

    _ndims: tuple[int, ...] = ()
    _layout = ""
    _skips_input_grad = True

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
        affine: bool = True, track_running_stats: bool = True, dtype: npt.DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = V.as_int(name, "num_features", num_features, 1)
        self.eps = V.real(name, "eps", eps, 0.0, low_open=True)
        self.momentum = None if momentum is None else V.real(name, "momentum", momentum, 0.0,
                                                             1.0)
        self.affine = V.boolean(name, "affine", affine)
        self.track_running_stats = V.boolean(name, "track_running_stats", track_running_stats)
        self.dtype = V.float_dtype(name, dtype)
        C = self.num_features
        V.check_alloc(name, (C,), self.dtype.itemsize, what="per-channel state")
        if self.affine:
            self._params = {"weight": np.ones(C, self.dtype), "bias": np.zeros(C, self.dtype)}
            self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        if self.track_running_stats:
            self._buffers = {
                "running_mean": np.zeros(C, self.dtype),
                "running_var": np.ones(C, self.dtype),
                "num_batches_tracked": np.zeros((), np.int64),
            }
        self._plan: _plan.BatchNormPlan | None = None
        self._plan_key: tuple[Shape, bool, int] | None = None

    @property
    def weight(self) -> FloatArray | None:
        """The scale (``params["weight"]``, ones initially), None without ``affine``."""
        return self._params.get("weight")

    @property
    def bias(self) -> FloatArray | None:
        """The shift (``params["bias"]``, zeros initially), None without ``affine``."""
        return self._params.get("bias")

    @property
    def running_mean(self) -> FloatArray | None:
        """``buffers["running_mean"]`` (zeros initially), None without ``track_running_stats``."""
        return self._buffers.get("running_mean")

    @property
    def running_var(self) -> FloatArray | None:
        """``buffers["running_var"]`` (ones initially), None without ``track_running_stats``."""
        return self._buffers.get("running_var")

    def _input(self, x: npt.ArrayLike, use_batch: bool) -> tuple[FloatArray, _plan.BatchNormPlan]:
        """``x`` as a C-contiguous array of the layer's dtype, and its plan."""
        plan, key = self._plan, self._plan_key
        if (
            plan is not None and key is not None and key[1] == use_batch
            and steady(x, plan.x_shape, self.dtype, key[2])
        ):
            return x, plan
        fname = f"{type(self).__name__}.forward"
        a = as_dtype(fname, "x", x, self.dtype)
        V.check_ndim(fname, "x", a, self._ndims, self._layout)
        V.features_match(fname, a.shape, self.num_features)
        a = np.ascontiguousarray(a)
        plan = _plan.batch_norm_plan(fname, a.shape, self.dtype, use_batch)
        self._plan, self._plan_key = plan, (a.shape, use_batch, _config.get_num_threads())
        return a, plan

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """Normalise ``x`` per channel: with the batch statistics in training
        mode (updating the running statistics, when tracked), with the
        running statistics in evaluation mode (the batch's again without
        ``track_running_stats``)."""
        use_batch = self.training or not self.track_running_stats
        x, plan = self._input(x, use_batch)
        w, b = self._params.get("weight"), self._params.get("bias")
        rm, rv = self._buffers.get("running_mean"), self._buffers.get("running_var")
        update = self.training and self.track_running_stats
        factor = 0.0
        if update:
            nbt = self._buffers["num_batches_tracked"]
            nbt += 1
            factor = 1.0 / float(nbt) if self.momentum is None else self.momentum
        compiled = _config.compiled_backend()
        saved: tuple[_F64, _F64] | tuple[FloatArray, FloatArray] | None
        if compiled:
            if use_batch:
                y, mean, var = plan.forward(x, w, b, self.eps)
                if update:
                    plan.update_running(rm, rv, mean, var, factor)
            else:
                mean, var = np.array(rm, dtype=np.float64), np.array(rv, dtype=np.float64)
                y = plan.forward(x, w, b, self.eps, mean, var)[0]
            saved = (mean, 1.0 / np.sqrt(var + self.eps))  # what backward uses
        else:  # the numpy backend: the functional op, whose backward recomputes
            given = update or not use_batch
            y = F.batch_norm(x, rm if given else None, rv if given else None, w, b,
                             training=use_batch, momentum=factor, eps=self.eps)
            saved = None if use_batch else (cast("FloatArray", rm).copy(),
                                            cast("FloatArray", rv).copy())
        self._cache = (x, use_batch, compiled, saved)
        return y

    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: Literal[True] = True) -> FloatArray: ...
    @overload
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool) -> FloatArray | None: ...
    def backward(self, grad_y: npt.ArrayLike, input_grad: bool = True) -> FloatArray | None:
        """Gradient w.r.t. the last input, from the statistics the forward
        used (saved, not recomputed); accumulates ``grads["weight"]`` and
        ``grads["bias"]``.  With ``input_grad=False`` only the parameter
        gradients are computed and None is returned."""
        x, use_batch, compiled, saved = self._saved()
        plan = self._plan
        w = self._params.get("weight")
        if not (plan is not None and plan.x_shape == x.shape
                and steady(grad_y, x.shape, self.dtype, _config._kernel_threads)):
            fname = f"{type(self).__name__}.backward"
            g = np.ascontiguousarray(as_dtype(fname, "grad_y", grad_y, self.dtype))
            if g.shape != x.shape:
                raise ValueError(
                    f"{fname}: grad_y.shape must equal the forward input's shape {x.shape}, "
                    f"got {g.shape}"
                )
            grad_y = g
            plan = _plan.batch_norm_plan(fname, x.shape, self.dtype, use_batch)
        gx: FloatArray | None
        if compiled:  # the forward's mean and inverse standard deviation
            mean, invstd = cast("tuple[_F64, _F64]", saved)
            gx, gw, gb = plan.backward(grad_y, x, mean, invstd, w, use_batch, input_grad)
        else:  # the forward's running statistics (evaluation mode), or None
            rm, rv = saved if saved is not None else (None, None)
            gx, gw, gb = F.batch_norm_backward(grad_y, x, rm, rv, w, training=use_batch,
                                               eps=self.eps)
            gx = gx if input_grad else None
        if gw is not None and gb is not None:
            self._grads["weight"] += gw
            self._grads["bias"] += gb
        return gx

    def _extra(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._extra()})"


_DOC = """Batch normalization over the channel axis of {shapes}, as
    ``torch.nn.{torch}``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel (see
    :func:`cnnext.functional.batch_norm`).  In training mode ``mean`` and
    ``var`` are the batch's (biased variance) and, with
    ``track_running_stats``, the running statistics (buffers
    ``running_mean``, ``running_var``, ``num_batches_tracked``) are updated:
    ``r = (1 - momentum) * r + momentum * batch_value`` with the unbiased
    variance, or the cumulative average (``momentum = 1 /
    num_batches_tracked``) when ``momentum`` is None.  In evaluation mode the
    running statistics are used, or the batch's without
    ``track_running_stats``.  ``backward`` uses the mean and inverse
    standard deviation the forward used.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float > 0
        Added to the variance.
    momentum : float in [0, 1], or None
        Weight of the batch statistics in the running update (None: the
        cumulative average).
    affine : bool
        Learn ``weight`` (ones initially) and ``bias`` (zeros initially).
    track_running_stats : bool
        Keep running statistics (else batch statistics in both modes, and
        no buffers).
    dtype : float32 or float64
        The dtype of the parameters, buffers and computation.

    Notes
    -----
    Shape:

    - Input: {shapes}.
    - Output: the shape of the input.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> bn = nn.{name}(3)
    >>> x = np.arange({size}, dtype=np.float32).reshape{example}
    >>> y = bn(x)
    >>> bool(abs(y.mean()) < 1e-5), sorted(bn.buffers)
    (True, ['num_batches_tracked', 'running_mean', 'running_var'])
    """


class BatchNorm1D(_BatchNorm):
    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2D(_BatchNorm):
    _ndims = (4,)
    _layout = "(N, C, H, W)"


BatchNorm1D.__doc__ = _DOC.format(shapes="(N, C) or (N, C, L)", torch="BatchNorm1d",
                                  name="BatchNorm1D", size=24, example="(4, 3, 2)")
BatchNorm2D.__doc__ = _DOC.format(shapes="(N, C, H, W)", torch="BatchNorm2d",
                                  name="BatchNorm2D", size=48, example="(2, 3, 2, 4)")


__all__ = ["BatchNorm1D", "BatchNorm2D"]
