"""Whole-network plans: a model's inference and training step, planned once.

:meth:`Sequential.plan <cnnext.nn.Sequential.plan>` returns a
:class:`NetPlan` for one input shape, dtype and mode.  Building it validates
every layer against the shapes once, fixes every layer's plan, and turns the
model into a list of *steps*, each a kernel call on buffers allocated at
build time; running it checks only that the input is the kind of array the
plan expects and that the model has not changed (prior validation is
assumed, as for a layer's kept plan).

What the plan saves over the layer-by-layer path:

- a ReLU or LeakyReLU (slope >= 0) right after a convolution or a dense
  layer is fused into that layer's output loop (the same values, bit for
  bit: the activation is applied to each value as it is stored);
- batch normalization (``BatchNorm1D``/``BatchNorm2D``) runs its kernels
  on kept buffers, a ReLU after it applied in its normalising pass and the
  ReLU's backward in its backward passes;
- a residual block (``Residual``) is planned recursively (its branches get
  these steps too); its sum and a ReLU after it take one pass -- the
  normalising pass of the block's last batch normalization when it ends
  in one -- and the ReLU's backward is fused into the branches' last batch
  normalizations;
- max pooling in evaluation mode computes no argmax indices (and applies
  a ReLU that precedes it, after a Winograd convolution, to its output);
  a Winograd convolution, its ReLU and a 2x2 stride-2 max pool whose
  windows are the convolution's 2x2 output tiles run as one kernel, each
  tile pooled as the output transform makes it (the same numbers);
  on AVX-512 CPUs, a float32 convolution of few taps (a first layer on a
  few image channels: stride 1, at most 75 taps), its ReLU and a 2x2
  stride-2 max pool after it run as one kernel, the convolution's output
  pooled while in registers (the same numbers);
- in evaluation mode, Winograd filters and a narrow dense layer's packed
  weight are kept with the plan (derived again when a byte comparison with
  a kept copy of the weight shows a change);
- ``Flatten`` is a reshape (a view) both ways;
- in evaluation mode on several threads, a batch with enough work is cut
  into contiguous blocks of samples that the threads take in turn, each
  block through the whole network on one thread (every step a one-thread
  kernel call on that thread's own buffers, the threads at the same time:
  the kernels release the GIL); this replaces one parallel region per
  layer -- and its synchronisation -- by one hand-over per call.  Done
  only when every block's steps use the same algorithms as the whole
  batch's (the per-sample results of these kernels do not depend on the
  batch size or the thread count: the same numbers);
- outputs, gradients and indices live in buffers allocated once (a
  direct convolution's input gradient too, made at the first backward);
- in a training step, the layers before the first one with parameters run
  no backward pass, and that one computes no input gradient;
- in a training step on AVX-512 CPUs, a ReLU fused into a float32 layer
  has its backward applied by the exactly tiled 2x2 max pool after it, in
  the pool's backward pass (the same values).

Other layers (dropout, average and adaptive pools, other activations, ...)
run through their own ``forward``/``backward`` inside the plan, so every
model can be planned.
"""
from __future__ import annotations

import itertools
import math
import operator
import queue
import threading
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
from functools import partial

from .. import _config, _conv, _eltwise, _gemm, _norm, _pool, _winograd, _workers
from .._plan import _winograd_filters, _winograd_run, bias_grad, grad_input, threads_for
from .. import _validate as V
from .activation import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .containers import Identity, Residual, Sequential
from .conv import Conv1D, Conv2D, ConvTranspose2D
from .linear import Dense, Flatten
from .module import Module, Weighted, as_dtype
from .norm import BatchNorm1D, BatchNorm2D, _BatchNorm
from .pooling import (
    AdaptiveAvgPool2D, AdaptiveMaxPool2D, AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .._plan import BatchNormPlan, ConvPlan, LinearPlan, PoolPlan
    from .._typing import FloatArray, FloatDType, IndexArray, Shape

    #: A Winograd convolution plan's forward, input and weight gradients.
    _WinogradCalls = tuple[Callable[..., FloatArray], Callable[..., FloatArray],
                           Callable[[FloatArray, FloatArray], FloatArray]]

__all__ = ["NetPlan"]

_INT64 = np.dtype(np.int64)
#: The layers a plan runs by their kept plans (exact types: a subclass may
#: compute something else, and runs through its own forward/backward).
_WEIGHTED = (Conv2D, ConvTranspose2D, Conv1D, Dense)
#: The input ndim of a batch for each of those layers.
_BATCHED_NDIM = {Conv2D: 4, ConvTranspose2D: 4, Conv1D: 3, Dense: 2}
#: Layers whose results do not depend on the train/eval mode (exact types):
#: :attr:`NetPlan.valid` watches the mode of every other module.
_MODE_FREE = frozenset((*_WEIGHTED, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Flatten, Identity,
                        MaxPool2D, AvgPool2D, MaxPool1D, AvgPool1D, AdaptiveAvgPool2D,
                        AdaptiveMaxPool2D))
_LAYERS = operator.attrgetter("layers")
_BRANCHES = operator.attrgetter("block", "shortcut")
_TRAINING = operator.attrgetter("training")
_ACT_NONE, _ACT_RELU, _ACT_LEAKY = 0, 1, 2
#: The batch normalizations a plan runs by its own step (exact types).
_BATCH_NORMS = (BatchNorm1D, BatchNorm2D)
#: Inputs of at least this many bytes are read in place by the first step
#: (rebinding its call costs about as much as copying 64 KB).
_READ_IN_PLACE_BYTES = 1 << 16


# --------------------------------------------------------------------------
# Steps: each holds its layer's buffers and runs kernels on them
# --------------------------------------------------------------------------


class _Step:
    """One layer of the plan: ``forward(x) -> y``, ``backward(g, need_input)
    -> grad_x``; ``params`` is True for a layer with parameters."""

    params = False
    out_shape: Shape

    def forward(self, x: FloatArray) -> FloatArray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:  # pragma: no cover
        raise NotImplementedError

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        """(the step's forward as one kernel call on the buffer ``x`` -- None:
        nothing to call --, its output), or None when the step cannot be
        prebound (it allocates its output)."""
        return None


class _LayerStep(_Step):
    """Any layer, through its own ``forward``/``backward`` (which keep their
    own per-layer plans)."""

    def __init__(self, layer: Module, out_shape: Shape) -> None:
        self.layer = layer
        self.out_shape = out_shape
        self.params = bool(layer.named_parameters())

    def forward(self, x: FloatArray) -> FloatArray:
        y = self.layer.forward(x)
        if type(y) is not np.ndarray or not y.flags.c_contiguous:  # what kernels read
            y = np.ascontiguousarray(y)
        return y

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:
        layer = self.layer
        if not need_input and getattr(layer, "_skips_input_grad", False):
            return cast("Any", layer).backward(g, input_grad=False)  # type: ignore[no-any-return]
        return layer.backward(g)


class _WeightedStep(_Step):
    """A convolution or dense layer by its kept plan, an activation fused
    into the forward's output loop where the kernel takes one."""

    params = True

    def __init__(self, layer: Weighted, x_shape: Shape, dtype: FloatDType, act: int,
                 alpha: float) -> None:
        self.layer = layer
        w, b = layer._params["weight"], layer._params.get("bias")
        probe = np.zeros(x_shape, dtype)
        # The shapes validated as the layer validates them, on one sample of
        # a batch (a forward pass over a whole batch of zeros costs as much
        # as a real one).
        batched = len(x_shape) == _BATCHED_NDIM[type(layer)]
        y = layer._call_forward(probe[:1] if batched else probe, w, b)
        self.plan: Any = layer._plan_of(probe, w, b)
        self.out_shape: Shape = (x_shape[0], *y.shape[1:]) if batched else y.shape
        self.w, self.b = w, b
        self.gw, self.gb = layer._grads["weight"], layer._grads.get("bias")
        self.act, self.alpha = act, alpha
        #: The fused activation's backward runs in the next step's backward
        #: (a max pool's: see _MaxPoolStep.relu_ref).
        self.act_grad_after = False
        self.y = np.empty(self.out_shape, dtype)
        self.x: FloatArray | None = None
        # The kernel call with the epilogue, when the plan's forward is that call.
        self.kernel: tuple[Any, ...] | None = None
        #: A direct convolution's input gradient by stride phases or the
        #: rotated kernel (the plan's ``grad_input``) into a kept buffer (made
        #: at the first backward) of this shape; None: the plan's backward
        #: allocates it.
        self.kept_gi: Shape | None = None
        self.gx: FloatArray | None = None
        #: A strided 1x1 convolution's input gradient on its stride grid
        #: (made at the first add_grad_input).
        self.g_grid: FloatArray | None = None
        #: A Winograd convolution (float32 ``winograd`` or
        #: ``winograd-float64``) run by its plan into the kept output (and, in
        #: a training step, input gradient) buffers: the plan's forward,
        #: input and weight gradients (None otherwise).
        self.winograd: _WinogradCalls | None = None
        #: A ``subsampled`` convolution's input at its output's positions
        #: (the forward's, kept for the weight gradient).
        self.xs: FloatArray | None = None
        if type(layer) is Dense:
            lp = cast("LinearPlan", self.plan)
            self.kernel = (_gemm.gemm, x_shape, lp.threads)
        elif type(layer) is Conv2D:
            cp = cast("ConvPlan", self.plan)
            sp = cp.sub_plan
            if sp is not None and len(x_shape) == 4:
                self.xs = np.empty(sp.x4, dtype)
            if cp.method in ("direct", "subsampled") and cp.pad_extra is None and len(x_shape) == 4:
                self.kernel = (_conv.conv2d_forward, *(sp or cp).kernel_args)
                if cp.grad_input in ("phases", "full-rotated"):
                    self.kept_gi = x_shape
            elif cp.pad_extra is None and len(x_shape) == 4:
                if cp.method == "winograd":
                    self.winograd = (cp._winograd_forward, cp._winograd_grad_input,
                                     cp._winograd_grad_weight)
                elif cp.method == "winograd-float64":
                    self.winograd = (cp._winograd64_forward, cp._winograd64_grad_input,
                                     cp._winograd64_grad_weight)

    def forward(self, x: FloatArray) -> FloatArray:
        y, k = self.y, self.kernel
        if x.dtype != y.dtype or not x.flags.c_contiguous:  # as the layer converts
            x = np.ascontiguousarray(x, y.dtype)
        self.x = x
        if self.winograd is not None:
            self._winograd_forward(x)
        elif k is None:
            np.copyto(y, self.plan.forward(x, self.w, self.b))
            _activate(y, self.act, self.alpha)
        elif k[0] is _gemm.gemm:
            _gemm.gemm(x, self.w, y, False, True, False, k[2], self.b, self.act, self.alpha)
        else:
            if self.xs is not None:
                x = cast("ConvPlan", self.plan).subsample(x, self.xs)
            _, sh, sw, ph, pw, dh, dw, nt = k
            _conv.conv2d_forward(x, self.w, self.b, y, sh, sw, ph, pw, dh, dw, nt, 1, self.act,
                                 self.alpha)
        return y

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        k = self.kernel
        if self.winograd is not None and x.dtype == self.y.dtype:
            return partial(self._winograd_forward, x), self.y
        if k is None or x.dtype != self.y.dtype:
            return None
        if self.xs is not None:
            return partial(self.forward, x), self.y
        if k[0] is _gemm.gemm:
            return partial(_typed(_gemm.gemm, x.dtype), x, self.w, self.y, False, True, False,
                           k[2], self.b, self.act, self.alpha), self.y
        _, sh, sw, ph, pw, dh, dw, nt = k
        return partial(_typed(_conv.conv2d_forward, x.dtype), x, self.w, self.b, self.y, sh,
                       sw, ph, pw, dh, dw, nt, 1, self.act, self.alpha), self.y

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:
        if self.act != _ACT_NONE and not self.act_grad_after:
            _activation_grad(g, self.y, g, self.act, self.alpha)
        if need_input and g.dtype == self.y.dtype and g.flags.c_contiguous:
            if self.kept_gi is not None and _eltwise.all_finite(self.w.reshape(-1)):
                return self._kept_backward(g, self.kept_gi)
            if self.winograd is not None:
                return self._winograd_backward(g)
        gx, gw, gb = self.plan.backward(g, self.x, self.w, self.b is not None, need_input)
        self.gw += gw
        if gb is not None:
            cast("FloatArray", self.gb)[...] += gb
        return cast("FloatArray | None", gx)


    def _kept_backward(self, g: FloatArray, shape: Shape) -> FloatArray:
        """The plan's direct backward (the same kernels, the same numbers)
        with the input gradient written into a kept buffer: a fresh array
        of a few MB per call costs its page faults at every step.  (A weight
        with inf/NaN takes the plan's backward, whose input gradient then
        sums valid taps only.)"""
        gx = self.gx
        if gx is None:
            gx = self.gx = np.empty(shape, self.y.dtype)
        self._param_grads(g)
        cp = cast("ConvPlan", self.plan)
        return grad_input(g, self.w, shape[2:], cp.kernel_stride, cp.padding, cp.dilation,
                          cp.grad_input, cp.threads, out=gx)

    def _param_grads(self, g: FloatArray) -> None:
        """Accumulate a direct (or Winograd) convolution's weight and bias
        gradients."""
        if self.b is not None:
            cast("FloatArray", self.gb)[...] += bias_grad(g)
        cp = cast("ConvPlan", self.plan)
        if self.winograd is not None:
            self.gw += self.winograd[2](g, cast("FloatArray", self.x))
        elif self.xs is not None:  # the forward's subsampled input
            self.gw += cast("ConvPlan", cp.sub_plan)._grad_weight(g, self.xs)
        else:
            self.gw += cp._grad_weight(g, cast("FloatArray", self.x))

    def strided_1x1(self) -> bool:
        """True for a direct strided 1x1 convolution without padding,
        dilation, groups or a fused activation (a projection shortcut),
        whose input gradient :meth:`add_grad_input` can add to another."""
        if self.kept_gi is None or self.act != _ACT_NONE:
            return False
        cp = cast("ConvPlan", self.plan)
        return (cp.weight_shape[2:] == (1, 1) and cp.padding == (0, 0) and cp.groups == 1
                and cp.dilation == (1, 1) and cp.kernel_stride != (1, 1))

    def add_grad_input(self, g: FloatArray, dst: FloatArray) -> bool:
        """The backward of a :meth:`strided_1x1` step with its input gradient
        added to ``dst``: that gradient is zero off the stride grid, so it
        is computed at the output's size (the phases kernel's one phase, the
        same numbers) and added on the grid only -- no full-size zeros, no
        full-size sum.  Returns False, having done nothing, for a gradient
        the kernels do not take or a weight holding inf/NaN (``backward``
        then runs as usual)."""
        if (g.dtype != self.y.dtype or not g.flags.c_contiguous
                or not _eltwise.all_finite(self.w.reshape(-1))):
            return False
        self._param_grads(g)
        cp = cast("ConvPlan", self.plan)
        small = self.g_grid
        if small is None:
            small = self.g_grid = np.empty((g.shape[0], cp.weight_shape[1], *g.shape[2:]),
                                           self.y.dtype)
        _conv.conv2d_grad_input_phases(g, self.w, small, 1, 1, 0, 0, cp.threads)
        s = cp.kernel_stride
        _eltwise.add_strided(small, dst, s[0], s[1], _threads(dst.size))
        return True


    def _winograd_forward(self, x: FloatArray) -> None:
        """y = the plan's Winograd forward (its kernels and inf/NaN fallback),
        in the output buffer, and the fused activation."""
        cast("_WinogradCalls", self.winograd)[0](x, self.w, self.b, out=self.y)
        _activate(self.y, self.act, self.alpha)

    def _winograd_backward(self, g: FloatArray) -> FloatArray:
        """The weight and bias gradients, and the input gradient into a kept
        buffer, by the plan's Winograd (its direct fallback, which allocates,
        on inf/NaN)."""
        self._param_grads(g)
        if self.gx is None:
            self.gx = np.empty(cast("FloatArray", self.x).shape, self.y.dtype)
        return cast("_WinogradCalls", self.winograd)[1](g, self.w, out=self.gx)


class _KeptWeightStep(_WeightedStep):
    """An inference step that keeps something derived from its weight
    (``run`` refreshes it when the weight changed, then computes ``y``)."""

    def run(self, x: FloatArray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: FloatArray) -> FloatArray:
        if x.dtype != self.y.dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, self.y.dtype)
        self.run(x)
        return self.y

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        if x.dtype != self.y.dtype:
            return None
        return partial(self.run, x), self.y


class _WinogradStep(_KeptWeightStep):
    """An inference convolution by Winograd's F(m x m, 3x3) (its layer's kept
    plan chose it, and m), the weight's transformed filters kept between calls:
    each call compares the weight with the copy they were made from (bytes)
    and transforms it again only when its values changed.  Its fused
    activation is applied to the output, or (``defer_act``) by the max pool
    that follows (max and ReLU commute: the same values)."""

    def __init__(self, layer: Weighted, x_shape: Shape, dtype: FloatDType, act: int,
                 alpha: float) -> None:
        super().__init__(layer, x_shape, dtype, act, alpha)
        cp = cast("ConvPlan", self.plan)
        self.pad = cp.padding
        self.threads = cp.threads  # (one below WINOGRAD_PARALLEL_TILES tiles)
        self.args = cp.kernel_args
        self.tile = cp.winograd_tiles[0]
        self.wflat = self.w.reshape(-1)  # a view: sees the weight's in-place updates
        self.kept = self.wflat.copy()    # the values self.upk was made from
        self.upk = _winograd_filters(self.w, tile=self.tile)
        self.refresh = _typed(_gemm.refresh_copy, dtype)
        self.defer_act = False

    def run(self, x: FloatArray) -> None:
        """y = the convolution of ``x`` (+ the activation unless deferred)."""
        if self.refresh(self.wflat, self.kept):
            self.upk = _winograd_filters(self.w, tile=self.tile)
        upk, y = self.upk, self.y
        # inf/NaN: the direct kernel (as the layer's plan does, see ConvPlan)
        if upk is None or not _winograd_run(self.tile, x, upk, self.b, y, self.pad,
                                            self.threads):
            _conv.conv2d_forward(x, self.w, self.b, y, *self.args)
        if not self.defer_act and self.act != _ACT_NONE:
            _activate(y, self.act, self.alpha)


class _WinogradPoolStep(_WinogradStep):
    """An inference Winograd convolution, its ReLU and the 2x2 stride-2 max
    pool after it by one kernel (``_winograd.winograd_relu_pool2x2``) when
    the convolution's output tiles are the pool's windows: each tile's four
    outputs pooled as the output transform makes them, the convolution's
    output never stored; the numbers of the two steps it replaces (on an
    inf or NaN in the convolution's output, the same direct-kernel fallback,
    then the pool).  Built from those two steps."""

    def __init__(self, conv: _WinogradStep, pool: _MaxPoolStep) -> None:
        vars(self).update(vars(conv))  # the layer, its plan, kept filters, activation
        self.pool = pool
        pool.relu = True
        #: The convolution's output shape (its multiply-adds are those of
        #: the full output) and, made at the first inf/NaN fallback, a buffer.
        self.conv_shape = conv.out_shape
        self.full: FloatArray | None = None
        self.out_shape = pool.out_shape
        self.y = cast("Any", pool.y)

    @staticmethod
    def fits(conv: _Step | None, pool: _MaxPoolStep) -> bool:
        """Whether ``conv`` (the step before the max pool ``pool``) and
        ``pool`` can run as one: a Winograd F(2x2, 3x3) convolution with a
        fused ReLU, then a 2x2 stride-2 pool without padding, dilation or indices whose
        windows tile the convolution's output exactly."""
        if type(conv) is not _WinogradStep or conv.act != _ACT_RELU or conv.tile != 2:
            return False
        pp = pool.plan
        return (pool.tiled and pool.idx is None and pp.x_shape == conv.out_shape)

    def run(self, x: FloatArray) -> None:
        """y = the pooled ReLU of the convolution of ``x``."""
        if self.refresh(self.wflat, self.kept):
            self.upk = _winograd_filters(self.w, tile=self.tile)
        upk = self.upk
        if upk is None or not _winograd.winograd_relu_pool2x2(x, upk, self.b, self.y,
                                                              self.pad[0], self.pad[1],
                                                              self.threads):
            full = self.full
            if full is None:
                full = self.full = np.empty(self.conv_shape, self.y.dtype)
            _conv.conv2d_forward(x, self.w, self.b, full, *self.args)
            self.pool.forward(full)  # the pool and the ReLU into self.y


class _NarrowDenseStep(_KeptWeightStep):
    """An inference dense layer to at most one vector of outputs (a few
    classes) over more rows than the dot-product path takes: the weight kept
    transposed in the narrow kernel's packed panel (packed again only when a
    byte comparison with a kept copy shows a change), 16 input rows read in
    place per tile; the sums of the packed GEMM, in its order."""

    def __init__(self, layer: Weighted, x_shape: Shape, dtype: FloatDType, act: int,
                 alpha: float) -> None:
        super().__init__(layer, x_shape, dtype, act, alpha)
        self.threads = cast("LinearPlan", self.plan).threads
        self.wflat = self.w.reshape(-1)  # a view: sees the weight's in-place updates
        self.kept = self.wflat.copy()
        self.bpk = np.empty((self.w.shape[1], _gemm.narrow_width(dtype)), dtype)
        _gemm.pack_narrow(self.w, self.bpk)
        self.narrow = _typed(_gemm.gemm_narrow, dtype)

    @staticmethod
    def fits(step: _WeightedStep) -> bool:
        """Whether the dense layer's planned forward is the packed GEMM (more
        rows than the dot products take) to at most one vector."""
        return (type(step.layer) is Dense and step.plan.method == "gemm"
                and 0 < step.out_shape[1] <= _gemm.narrow_width(step.y.dtype))

    def run(self, x: FloatArray) -> None:
        if _gemm.refresh_copy(self.wflat, self.kept):
            _gemm.pack_narrow(self.w, self.bpk)
        self.narrow(x, self.bpk, self.y, self.b, self.threads, self.act, self.alpha)


class _ActStep(_Step):
    """A ReLU or LeakyReLU on its own (not after a fusable layer)."""

    def __init__(self, shape: Shape, dtype: FloatDType, act: int, alpha: float) -> None:
        self.out_shape = shape
        self.act, self.alpha = act, alpha
        self.x: FloatArray | None = None
        self.y = np.empty(shape, dtype)
        self.gx = np.empty(shape, dtype)
        self.threads = _threads(math.prod(shape))

    def forward(self, x: FloatArray) -> FloatArray:
        self.x = x
        if self.act == _ACT_RELU:
            _eltwise.relu(x.reshape(-1), self.y.reshape(-1), self.threads)
        else:
            a = x.dtype.type(self.alpha)
            np.multiply(x, a, out=self.y)
            np.copyto(self.y, x, where=x > 0)
        return self.y

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:
        _activation_grad(g, cast("FloatArray", self.x), self.gx, self.act, self.alpha)
        return self.gx

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        if self.act != _ACT_RELU:
            return None
        return partial(_typed(_eltwise.relu, x.dtype), x.reshape(-1), self.y.reshape(-1),
                       self.threads), self.y


class _MaxPoolStep(_Step):
    """A 2-D max pool by its window kernel: without indices at inference."""

    def __init__(self, plan: PoolPlan, training: bool) -> None:
        self.plan = plan
        self.out_shape = plan.out_shape
        self.y = np.empty(plan.out_shape, plan.dtype)
        self.idx: IndexArray | None = np.empty(plan.out_shape, _INT64) if training else None
        self.gx = np.empty(plan.x_shape, plan.dtype) if training else None
        #: A ReLU of the step before, applied here to the pooled values
        #: (ReLU(max) = max(ReLU): the same values, 1/k of the work).
        self.relu = False
        self.pool = _typed(_pool.max_pool2d_forward, plan.dtype)
        # Windows tiling the input exactly: each input row written once.
        tiled = (plan.kernel_size == (2, 2) and plan.stride == (2, 2)
                 and plan.padding == (0, 0) and plan.dilation == (1, 1)
                 and plan.x_shape[-2:] == (2 * plan.out_shape[-2], 2 * plan.out_shape[-1]))
        self.tiled = tiled
        #: In a training step, the output of a ReLU fused into the step
        #: before (this pool's input): its backward applied here, in the
        #: pool's backward pass (the same values, one pass less).
        self.relu_ref: FloatArray | None = None
        self.pool_backward = _typed(_pool.max_pool2d_backward_2x2 if tiled
                                    else _pool.max_pool2d_backward, plan.dtype)
        yflat = self.y.reshape(-1)
        self.relu_call = partial(_typed(_eltwise.relu, plan.dtype), yflat, yflat,
                                 _threads(yflat.size))

    def forward(self, x: FloatArray) -> FloatArray:
        self.pool(x, self.y, self.idx, *self.plan.kernel_args)
        if self.relu:
            self.relu_call()
        return self.y

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        pool = partial(self.pool, x, self.y, self.idx, *self.plan.kernel_args)
        if self.relu and self.tiled and self.y.dtype == np.float32 and _pool.pool_isa() == "avx512":
            # one kernel: each plane's ReLU while it is in cache
            return partial(_pool.max_pool2x2_relu, x, self.y, self.plan.threads), self.y
        if self.relu:
            relu = self.relu_call

            def pool_relu() -> None:
                pool()
                relu()
            return pool_relu, self.y
        return pool, self.y

    def takes_relu(self) -> bool:
        """Whether a ReLU on this pool's input can be applied to its output
        instead: every window holds an input value (no padding) -- a window
        of padding only would give -inf, not 0 -- and no indices are kept."""
        return self.idx is None and self.plan.padding == (0, 0)

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:
        gx = cast("FloatArray", self.gx)
        if self.relu_ref is not None:
            _pool.max_pool2d_backward_2x2_relu(g, cast("IndexArray", self.idx), self.relu_ref,
                                               gx, self.plan.threads)
            return gx
        self.pool_backward(g, cast("IndexArray", self.idx), gx, self.plan.threads)
        return gx

    def takes_relu_grad(self, prev: _Step | None) -> bool:
        """Whether, in a training step, the backward of the ReLU fused into
        ``prev`` (the step before) can run in this pool's backward: a
        float32 exactly tiled 2x2 pool on AVX-512 after a convolution or
        dense step with a fused ReLU (its output, a kept buffer, is this
        pool's input)."""
        return (type(prev) is _WeightedStep and prev.act == _ACT_RELU and self.tiled
                and self.idx is not None and self.y.dtype == np.float32
                and prev.y.shape == self.plan.x_shape and _pool.pool_isa() == "avx512")


class _ConvPoolStep(_WeightedStep):
    """An inference convolution of few taps (a network's first layer on a
    few image channels), its ReLU and the 2x2 stride-2 max pool after it by
    one kernel (``_pool.conv_max_pool2x2``; on narrow maps with 16 or more
    output channels, such as LeNet-5's second layer, its variant with the
    output channels in the vector lanes): each sample's convolution rows
    pooled while in registers, the convolution's output never stored; the
    numbers of the two steps it replaces (the direct convolution's sums in
    its order, the pool's rule).  Built from those two steps."""

    #: At most this many taps (C_in * kh * kw): a few-channel first layer,
    #: where the GEMM's panels are short.
    MAX_TAPS = 75
    #: At most this many taps for the kernel with the output channels in the
    #: vector lanes (LeNet-5's second layer: 6 * 5 * 5).
    MAX_LANE_TAPS = 150

    def __init__(self, conv: _WeightedStep, pool: _MaxPoolStep) -> None:
        vars(self).update(vars(conv))  # the layer, its plan, weight, bias, activation
        self.out_shape = pool.out_shape
        self.conv_shape = conv.out_shape  # (the work: the convolution's outputs)
        self.y = cast("Any", pool.y)
        self.pad = cast("ConvPlan", conv.plan).padding
        self.threads = cast("ConvPlan", conv.plan).threads
        self.lanes = self.channel_lanes(self.w.shape, pool.out_shape[3])

    @staticmethod
    def channel_lanes(w_shape: Shape, pw: int) -> bool:
        """Whether the kernel with 16 output channels in the vector lanes
        runs (rather than the one with 32 convolution columns in them): at
        least 16 output channels filling more of their lanes than the
        ``pw`` pooled columns fill the row kernel's 16."""
        co = w_shape[0]
        return co >= 16 and co / (-(-co // 16) * 16) > pw / (-(-pw // 16) * 16)

    @classmethod
    def fits(cls, conv: _Step | None, pool: _MaxPoolStep) -> bool:
        """Whether ``conv`` (the step before the max pool ``pool``) and
        ``pool`` can run as one: a float32 direct convolution of at most
        MAX_TAPS taps, stride and dilation 1, no groups, no activation or a
        ReLU, then a 2x2 stride-2 pool without padding, dilation, indices or
        a clipped last window, on an AVX-512 CPU."""
        if type(conv) is not _WeightedStep or type(conv.layer) is not Conv2D:
            return False
        cp, pp, w = cast("ConvPlan", conv.plan), pool.plan, conv.w
        x_shape, y_shape = pp.x_shape, conv.out_shape
        return (conv.kernel is not None and w.dtype == np.float32
                and _pool.pool_isa() == "avx512" and conv.act in (_ACT_NONE, _ACT_RELU)
                and math.prod(w.shape[1:]) <= (
                    cls.MAX_LANE_TAPS if cls.channel_lanes(w.shape, pool.out_shape[3])
                    else cls.MAX_TAPS)
                and cp.stride == (1, 1) and cp.dilation == (1, 1) and cp.groups == 1
                and pool.idx is None and pp.kernel_size == (2, 2) and pp.stride == (2, 2)
                and pp.padding == (0, 0) and pp.dilation == (1, 1) and x_shape == y_shape
                and pp.out_shape[2:] == (y_shape[2] // 2, y_shape[3] // 2))

    def forward(self, x: FloatArray) -> FloatArray:
        if x.dtype != self.y.dtype or not x.flags.c_contiguous:  # as the layer converts
            x = np.ascontiguousarray(x, self.y.dtype)
        _pool.conv_max_pool2x2(x, self.w, self.b, self.y, *self.pad, self.act, self.threads,
                               self.lanes)
        return self.y

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        if x.dtype != self.y.dtype:
            return None
        return partial(_pool.conv_max_pool2x2, x, self.w, self.b, self.y, *self.pad, self.act,
                       self.threads, self.lanes), self.y


class _FlattenStep(_Step):
    """``Flatten``: a view forward, a view backward."""

    def __init__(self, x_shape: Shape) -> None:
        self.x_shape = x_shape
        self.out_shape = (x_shape[0], math.prod(x_shape[1:]))

    def forward(self, x: FloatArray) -> FloatArray:
        return x.reshape(self.out_shape)

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:
        return g.reshape(self.x_shape)

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        return None, x.reshape(self.out_shape)


class _BatchNormStep(_Step):
    """A ``BatchNorm1D``/``BatchNorm2D`` by its kernels on kept buffers.

    Forward: one pass per channel for the statistics (training, or without
    running statistics), one normalising into the output buffer, a
    following ReLU applied to each value as it is stored; the running
    statistics are updated as the layer updates them.  Backward: one pass
    per channel for the two sums (the parameter gradients, accumulated as
    the layer does) and one for the input gradient; with ``ref`` (the output
    of a ReLU after this layer, or after the residual sum this layer ends a
    branch of) the ReLU's backward is applied to each upstream row as it
    is read.  The same kernels in the same order as the layer's, and the
    ReLU's formulas: the same numbers."""

    def __init__(self, layer: _BatchNorm, plan: BatchNormPlan, training: bool,
                 relu: bool) -> None:
        self.layer = layer
        self.plan = plan
        self.out_shape = plan.x_shape
        self.dtype = plan.dtype
        self.params = layer.affine
        self.use_batch = layer.training or not layer.track_running_stats
        self.update = layer.training and layer.track_running_stats
        self.relu = relu
        C = plan.x3[1]
        self.mean, self.var, self.invstd = np.zeros(C), np.ones(C), np.ones(C)
        self.sum_g, self.sum_gx = np.zeros(C), np.zeros(C)
        self.y = np.empty(plan.x_shape, plan.dtype)
        self.y3 = self.y.reshape(plan.x3)
        self.training = training
        self.gx = np.empty(plan.x_shape, plan.dtype) if training else None
        self.x: FloatArray | None = None
        self.ref3: FloatArray | None = None
        #: What is added to the result (a residual sum fused in), set per call.
        self.add3: FloatArray | None = None
        if relu:
            self.mask_by(self.y)

    def sum_into(self, y: FloatArray, relu: bool) -> None:
        """Write ``result + add3`` (then a ReLU with ``relu``) into ``y``: the
        last step of a residual block computing the block's sum."""
        self.y, self.y3, self.relu = y, y.reshape(self.plan.x3), relu

    def mask_by(self, ref: FloatArray) -> None:
        """Apply the backward of the ReLU whose output is ``ref`` to the
        upstream gradient (fused into this step's backward)."""
        self.ref3 = ref.reshape(self.plan.x3)

    def forward(self, x: FloatArray) -> FloatArray:
        layer, plan = self.layer, self.plan
        if x.dtype != self.dtype or not x.flags.c_contiguous:  # as the layer converts
            x = np.ascontiguousarray(x, self.dtype)
        self.x = x
        w, b = layer._params.get("weight"), layer._params.get("bias")
        mean, var, buffers = self.mean, self.var, layer._buffers
        if self.use_batch:
            _norm.batch_norm_forward(x.reshape(plan.x3), self.y3, mean, var, w, b, layer.eps,
                                     True, plan.threads, self.relu, self.add3)
            if self.update:
                nbt = buffers["num_batches_tracked"]
                nbt += 1
                factor = 1.0 / float(nbt) if layer.momentum is None else layer.momentum
                plan.update_running(buffers["running_mean"], buffers["running_var"], mean, var,
                                    factor)
        else:  # the running statistics, read at each call (they may be loaded in place)
            np.copyto(mean, buffers["running_mean"])
            np.copyto(var, buffers["running_var"])
            _norm.batch_norm_forward(x.reshape(plan.x3), self.y3, mean, var, w, b, layer.eps,
                                     False, plan.threads, self.relu, self.add3)
        if self.training:
            np.divide(1.0, np.sqrt(var + layer.eps), out=self.invstd)  # as the layer saves it
        return self.y

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        if x.dtype != self.dtype:
            return None
        return partial(self.forward, x), self.y

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:
        layer, plan = self.layer, self.plan
        if g.dtype != self.dtype or not g.flags.c_contiguous:
            g = np.ascontiguousarray(g, self.dtype)
        w = layer._params.get("weight")
        gx = cast("FloatArray", self.gx)
        _norm.batch_norm_backward(g.reshape(plan.x3), cast("FloatArray", self.x).reshape(plan.x3),
                                  self.mean, self.invstd, w, gx.reshape(plan.x3), self.sum_g,
                                  self.sum_gx, self.use_batch, plan.threads, self.ref3,
                                  need_input)
        if w is not None:
            grads = layer._grads
            grads["weight"] += self.sum_gx.astype(self.dtype)
            grads["bias"] += self.sum_g.astype(self.dtype)
        return gx if need_input else None


class _ResidualStep(_Step):
    """A ``Residual``: its block and shortcut planned as nested step lists
    (so their layers get the fused steps too), the sum and a following ReLU
    in one pass into a kept buffer -- the pass of the block's last batch
    normalization when it has one (the shortcut then runs first).
    Backward: the ReLU's mask fused into the branches' last batch
    normalizations when both branches end in one (and into the final sum
    for an identity shortcut), else applied once
    into a kept buffer; the same upstream gradient goes to both branches
    (copied only when the block's last step would overwrite it), and the
    two input gradients are summed into a kept buffer -- or, for a
    shortcut led by a strided 1x1 convolution, that convolution's input
    gradient (zero off its stride grid) is computed at its output's size
    and added on the grid to the block's (no full-size zeros and sum; the
    same values, except that a -0.0 of the block's gradient off the grid
    stays -0.0 where ``-0.0 + 0.0`` gave +0.0)."""

    def __init__(self, block: list[_Step], shortcut: list[_Step] | None, x_shape: Shape,
                 out_shape: Shape, dtype: FloatDType, training: bool, relu: bool) -> None:
        self.block, self.shortcut = block, shortcut
        self.out_shape = out_shape
        self.params = any(s.params for s in _all_steps([*block, *(shortcut or [])]))
        self.relu = relu
        self.threads = _threads(math.prod(out_shape))
        self.y = np.empty(out_shape, dtype)
        self.first_b, self.first_s = _first_params(block), _first_params(shortcut or [])
        lasts = [s[-1] if s else None for s in ([block] if shortcut is None
                                                else [block, shortcut])]
        self.masked = relu and training and all(
            isinstance(s, _BatchNormStep) and s.ref3 is None for s in lasts)
        if self.masked:
            for s in lasts:
                cast("_BatchNormStep", s).mask_by(self.y)
        last = block[-1] if block else None
        # The sum in the block's last normalising pass, when running the
        # shortcut first changes nothing (every step a kernel call: no
        # layer's own forward, which might draw random numbers).
        self.summing: _BatchNormStep | None = None
        if (isinstance(last, _BatchNormStep) and not last.relu
                and not any(isinstance(s, _LayerStep) for s in _all_steps(shortcut or []))):
            self.summing = last
            last.sum_into(self.y, relu)
        train = training
        self.gm = np.empty(out_shape, dtype) if train and relu and not self.masked else None
        self.gcopy = np.empty(out_shape, dtype) if train and _overwrites_grad(block) else None
        self.gx = np.empty(x_shape, dtype) if train else None
        self.gx_shape = x_shape
        # The block's first step returns its own buffer (or a fresh array)
        # as the input gradient.
        self.inplace = bool(block) and isinstance(block[0], (_WeightedStep, _BatchNormStep))
        #: A projection shortcut led by a strided 1x1 convolution: its input
        #: gradient added on the stride grid of the block's (training).
        self.strided: _WeightedStep | None = None
        head = shortcut[0] if shortcut else None
        if train and type(head) is _WeightedStep and head.strided_1x1():
            self.strided = head

    def forward(self, x: FloatArray) -> FloatArray:
        if self.summing is not None:
            ys = x
            for step in self.shortcut or ():
                ys = step.forward(ys)
            if not ys.flags.c_contiguous:
                ys = np.ascontiguousarray(ys)
            self.summing.add3 = ys.reshape(self.summing.plan.x3)
            for step in self.block:
                x = step.forward(x)
            return self.y
        yb = x
        for step in self.block:
            yb = step.forward(yb)
        ys = x
        for step in self.shortcut or ():
            ys = step.forward(ys)
        _eltwise.add_relu(yb.reshape(-1), ys.reshape(-1), self.y.reshape(-1), self.relu,
                          self.threads)
        return self.y

    def bind(self, x: FloatArray) -> tuple[Callable[[], object] | None, FloatArray] | None:
        return partial(self.forward, x), self.y

    def backward(self, g: FloatArray, need_input: bool) -> FloatArray | None:
        gm = g
        if self.gm is not None:  # the ReLU's mask, once for both branches
            gm = self.gm
            _eltwise.relu_backward(g.reshape(-1), self.y.reshape(-1), gm.reshape(-1),
                                   self.threads)
        gin = gm
        if self.gcopy is not None:  # the block would overwrite what the shortcut reads
            gin = self.gcopy
            np.copyto(gin, gm)
        gb = _branch_backward(self.block, gin, need_input, self.first_b)
        if need_input and self.strided is not None:
            gsc = cast("FloatArray", _branch_backward(cast("list[_Step]", self.shortcut)[1:],
                                                      gm, True, 0))
            gb = cast("FloatArray", gb)
            gx = gb if self._owns(gb, g, gm, gsc) else cast("FloatArray", self.gx)
            if gx is not gb:
                np.copyto(gx, gb)
            if self.strided.add_grad_input(gsc, gx):
                return gx
            gs = cast("FloatArray", self.strided.backward(gsc, True))
            _eltwise.add_relu(gb.reshape(-1), gs.reshape(-1), gx.reshape(-1), False,
                              self.threads)
            return gx
        gs = gm
        if self.shortcut is not None:
            gs = cast("FloatArray", _branch_backward(self.shortcut, gm, need_input,
                                                     self.first_s))
        if not need_input:
            return None
        gb = cast("FloatArray", gb)
        # The sum in place of the block's gradient when nothing else reads it
        # (it was just written: no pass over a cold buffer), else into gx.
        gx = gb if self._owns(gb, g, gm, gs, self.y) else cast("FloatArray", self.gx)
        if self.shortcut is None and self.masked:
            _eltwise.add_masked(gb.reshape(-1), g.reshape(-1), self.y.reshape(-1),
                                gx.reshape(-1), self.threads)
        else:
            _eltwise.add_relu(gb.reshape(-1), gs.reshape(-1), gx.reshape(-1), False,
                              self.threads)
        return gx

    def _owns(self, gb: FloatArray, *others: FloatArray) -> bool:
        """True when the shortcut's gradient may be added in place to the
        block's input gradient ``gb`` (a buffer of the block's first step, or
        a fresh array, that nothing else reads): no full-size copy."""
        return (self.inplace and gb.flags.writeable and gb.flags.c_contiguous
                and gb.shape == self.gx_shape and gb.dtype == self.y.dtype
                and not any(np.may_share_memory(gb, o) for o in others))


def _all_steps(steps: list[_Step]) -> list[_Step]:
    """``steps`` and the steps nested in residual steps, in order."""
    out: list[_Step] = []
    for s in steps:
        out.append(s)
        if isinstance(s, _ResidualStep):
            out += _all_steps([*s.block, *(s.shortcut or [])])
    return out


def _first_params(steps: list[_Step]) -> int:
    """Index of the first step with parameters (``len(steps)`` without one)."""
    return next((k for k, s in enumerate(steps) if s.params), len(steps))


def _overwrites_grad(steps: list[_Step]) -> bool:
    """True when the backward of ``steps`` may write into the upstream
    gradient it receives: a layer with a fused activation computes the
    activation's gradient in place, reached directly or through steps whose
    backward passes that array on (a view or the array itself)."""
    for s in reversed(steps):
        if isinstance(s, _WeightedStep):
            return s.act != _ACT_NONE
        if not isinstance(s, (_FlattenStep, _LayerStep)):
            return False
    return False


def _branch_backward(steps: list[_Step], g: FloatArray, need_input: bool,
                     first: int) -> FloatArray | None:
    """The backward of a residual branch: every step when the input gradient
    is needed, else down to the first step with parameters (which computes
    none)."""
    if need_input:
        for k in range(len(steps) - 1, -1, -1):
            g = cast("FloatArray", steps[k].backward(g, True))
        return g
    for k in range(len(steps) - 1, first - 1, -1):
        g = cast("FloatArray", steps[k].backward(g, k != first))
    return None


def _typed(kernel: Any, dtype: FloatDType) -> Any:
    """The compiled specialization of a fused-type kernel for ``dtype``:
    calling it skips the per-call dispatch on the arguments' types (a
    microsecond or two, as much as a small layer's kernel)."""
    sigs = getattr(kernel, "__signatures__", None)
    return sigs["float" if dtype == np.float32 else "double"] if sigs else kernel


def _threads(n: int) -> int:
    return threads_for(n, elements=True)


def _activate(y: FloatArray, act: int, alpha: float) -> None:
    """The activation ``act`` on ``y`` in place (the unfused epilogue)."""
    if act == _ACT_RELU:
        _eltwise.relu(y.reshape(-1), y.reshape(-1), _threads(y.size))
    elif act == _ACT_LEAKY:
        np.copyto(y, y * y.dtype.type(alpha), where=~(y > 0))


def _activation_grad(g: FloatArray, ref: FloatArray, out: FloatArray, act: int,
                     alpha: float) -> None:
    """out = the activation's input gradient for upstream ``g``; ``ref`` is
    its input or (fused, slope >= 0) its output: both are > 0 at the same
    places."""
    n = _threads(g.size)
    if act == _ACT_RELU:
        _eltwise.relu_backward(g.reshape(-1), ref.reshape(-1), out.reshape(-1), n)
    else:
        _eltwise.leaky_relu_backward(g.reshape(-1), ref.reshape(-1), out.reshape(-1), alpha, n)


# --------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------


def _modules(model: Module) -> list[Module]:
    """``model`` and every layer inside it (containers' children)."""
    out = [model]
    if isinstance(model, (Sequential, Residual)):
        for _, sub in model._children():
            out += _modules(sub)
    return out


def _shape_of(layer: Module, shape: Shape, dtype: FloatDType) -> tuple[Shape, FloatDType]:
    """The output shape and dtype of ``layer`` for inputs of ``shape`` and
    ``dtype``: its forward on
    zeros in evaluation mode (no running statistics updated, no random mask
    drawn), its modes restored after."""
    mods = _modules(layer)
    modes = [m.training for m in mods]
    try:
        for m in mods:
            m.training = False
        y = np.asarray(layer.forward(np.zeros(shape, dtype)))
        return y.shape, y.dtype
    finally:
        for m, mode in zip(mods, modes):
            m.training = mode


def _leaves(model: Module) -> list[Module]:
    """The layers of ``model`` in order, nested Sequentials inlined."""
    if isinstance(model, Sequential):
        return [leaf for layer in model.layers for leaf in _leaves(layer)]
    return [model]


def _act_of(layer: Module) -> tuple[int, float] | None:
    if type(layer) is ReLU:
        return _ACT_RELU, 0.0
    if type(layer) is LeakyReLU:
        return _ACT_LEAKY, float(layer.alpha)
    return None


def _build_steps(fname: str, leaves: list[Module], shape: Shape, cur: FloatDType,
                 dtype: FloatDType, training: bool) -> tuple[list[_Step], Shape, FloatDType]:
    """The steps of ``leaves`` for inputs of ``shape`` and dtype ``cur`` in a
    plan of ``dtype``: (steps, output shape, output dtype)."""
    steps: list[_Step] = []
    i = 0
    while i < len(leaves):
        layer = leaves[i]
        nxt = _act_of(leaves[i + 1]) if i + 1 < len(leaves) else None
        step: _Step
        if type(layer) in _WEIGHTED:
            wl = cast("Weighted", layer)
            if wl.dtype != dtype:
                raise ValueError(
                    f"{fname}: layer {i} ({wl!r}) computes in {wl.dtype}, the plan's "
                    f"dtype is {dtype}; plan with dtype={wl.dtype}"
                )
            fuse = nxt is not None and (nxt[1] >= 0 or not training)
            act, alpha = nxt if fuse and nxt is not None else (_ACT_NONE, 0.0)
            step = _WeightedStep(wl, shape, dtype, act, alpha)
            if (not training and type(wl) is Conv2D and len(shape) == 4
                    and step.plan.method == "winograd"):
                step = _WinogradStep(wl, shape, dtype, act, alpha)
            elif not training and _NarrowDenseStep.fits(step):
                step = _NarrowDenseStep(wl, shape, dtype, act, alpha)
            cur = dtype
            i += 2 if fuse else 1
        elif _act_of(layer) is not None:
            act, alpha = cast("tuple[int, float]", _act_of(layer))
            step = _ActStep(shape, cur, act, alpha)
            i += 1
        elif type(layer) is MaxPool2D and len(shape) == 4:
            probe = np.zeros(shape, cur)
            layer._call_forward(probe)  # validates the geometry, as the layer does
            step = _MaxPoolStep(layer._new_plan(probe), training)
            prev = steps[-1] if steps else None
            if _WinogradPoolStep.fits(prev, step):
                step = _WinogradPoolStep(cast("_WinogradStep", steps.pop()), step)
            elif (isinstance(prev, _WinogradStep) and prev.act == _ACT_RELU
                    and step.takes_relu()):
                prev.defer_act = step.relu = True
            elif _ConvPoolStep.fits(prev, step):
                step = _ConvPoolStep(cast("_WeightedStep", steps.pop()), step)
            elif training and step.takes_relu_grad(prev):
                step.relu_ref = cast("_WeightedStep", prev).y
                cast("_WeightedStep", prev).act_grad_after = True
            i += 1
        elif type(layer) is Flatten and len(shape) >= 1:
            step = _FlattenStep(shape)
            i += 1
        elif type(layer) in _BATCH_NORMS and (bn := _bn_plan(layer, shape, cur)) is not None:
            relu = nxt is not None and nxt[0] == _ACT_RELU
            step = _BatchNormStep(cast("_BatchNorm", layer), bn, training, relu)
            cur = bn.dtype
            i += 2 if relu else 1
        elif type(layer) is Residual and (res := _residual_step(
                fname, layer, shape, cur, dtype, training,
                nxt is not None and nxt[0] == _ACT_RELU)) is not None:
            step = res
            i += 2 if res.relu else 1
        else:
            out_shape, cur = _shape_of(layer, shape, cur)
            step = _LayerStep(layer, out_shape)
            i += 1
        steps.append(step)
        shape = step.out_shape
    return steps, shape, cur


def _bn_plan(layer: Module, shape: Shape, cur: FloatDType) -> BatchNormPlan | None:
    """The kept plan of a batch normalization for inputs of ``shape``
    (validated as the layer validates them), None when there is no value to
    normalise (the layer's own forward handles that)."""
    bn = cast("_BatchNorm", layer)
    plan = bn._input(np.zeros(shape, cur), bn.training or not bn.track_running_stats)[1]
    return plan if plan.method == "fused" else None


def _residual_step(fname: str, layer: Residual, shape: Shape, cur: FloatDType,
                   dtype: FloatDType, training: bool, relu: bool) -> _ResidualStep | None:
    """The planned residual block (with a following ReLU when ``relu``), or
    None when its branches' outputs differ in dtype from its input (the
    layer's own forward converts them)."""
    block, out_shape, bdt = _build_steps(fname, _leaves(layer.block), shape, cur, dtype,
                                         training)
    short, s_shape, sdt = None, shape, cur
    if layer.shortcut is not None:
        short, s_shape, sdt = _build_steps(fname, _leaves(layer.shortcut), shape, cur, dtype,
                                           training)
    if out_shape != s_shape:
        _shape_of(layer, shape, cur)  # raises the layer's own message
    if out_shape != s_shape or not cur == bdt == sdt:
        return None
    return _ResidualStep(block, short, shape, out_shape, cur, training, relu)


def _bind_steps(steps: list[_Step], input_shape: Shape, dtype: FloatDType
                ) -> tuple[list[Callable[[], object]] | None, Any, Any]:
    """(the prebound calls of ``steps``, the input buffer they read, the
    output buffer they write), or (None, None, None) when a step cannot be
    prebound."""
    xbuf = np.empty(input_shape, dtype)
    calls: list[Callable[[], object]] = []
    cur = xbuf
    for step in steps:
        bound = step.bind(cur)
        if bound is None:
            return None, None, None
        call, cur = bound
        if call is not None:
            calls.append(call)
    return calls, xbuf, cur


# --------------------------------------------------------------------------
# Batch-split inference: each thread runs a slice of the batch through the
# whole network
# --------------------------------------------------------------------------


_ONE_THREAD_BUILD = threading.Lock()


def _macs(steps: list[_Step]) -> int:
    """The multiply-adds of the convolution and dense steps (about)."""
    return sum(math.prod(getattr(s, "conv_shape", s.out_shape)) * s.w.size // max(1, s.w.shape[0])
               for s in _all_steps(steps) if isinstance(s, _WeightedStep))


def _algorithms(steps: list[_Step]) -> list[tuple[Any, ...]]:
    """What decides a step list's arithmetic: each step's kind, algorithm
    and fused activation."""
    return [(type(s), getattr(getattr(s, "plan", None), "method", None),
             getattr(s, "act", None)) for s in _all_steps(steps)]


class _BatchSplit:
    """An inference plan's batch in contiguous blocks of samples, each run
    through the whole network by one-thread steps; the calling thread and
    the workers (one per further thread) each take the next block not yet
    taken until none is left, so a thread that the system delays leaves
    its blocks to the others.  Every thread has its own steps and buffers
    for the (at most two) block sizes."""

    #: Multiply-adds per thread below which a split does not pay for the
    #: hand-over to the workers (tens of microseconds).
    MIN_MACS = 1 << 21
    #: Multiply-adds per block below which blocks are not cut smaller than
    #: one per thread (each block costs two copies and a call per step).
    BLOCK_MACS = 1 << 23
    #: At most this many blocks per thread.
    MAX_BLOCKS = 4

    def __init__(self, blocks: list[tuple[int, int]],
                 bound: list[dict[int, tuple[list[Callable[[], object]], Any, Any]]],
                 out_shape: Shape, dtype: FloatDType) -> None:
        self.blocks = blocks
        self.bound = bound  # per thread: block size -> (calls, input buffer, output buffer)
        self.out_shape = out_shape
        self.dtype = dtype
        self.done: _workers.Done = queue.SimpleQueue()

    @classmethod
    def build(cls, fname: str, model: Sequential, input_shape: Shape, dtype: FloatDType,
              steps: list[_Step], out_shape: Shape) -> _BatchSplit | None:
        """The split of an inference plan of ``steps``, or None when it
        would not pay (one thread, too little work, fewer samples than
        threads) or a block's steps would compute differently."""
        threads = _config.get_num_threads()
        n = input_shape[0] if len(input_shape) >= 2 else 0
        macs = _macs(steps)
        if threads < 2 or n < threads or macs < threads * cls.MIN_MACS:
            return None
        most = max(1, min(cls.MAX_BLOCKS, n // threads, macs // (threads * cls.BLOCK_MACS)))
        algorithms = _algorithms(steps)
        # The blocks' steps are planned for one-thread kernel calls: the
        # thread count is 1 while they are built (one build at a time; a
        # count set meanwhile by another thread is kept).
        with _ONE_THREAD_BUILD:
            kept = _config._kernel_threads
            _config._kernel_threads = 1
            try:
                # the most blocks whose steps take the batch's algorithms
                for per_thread in range(most, 0, -1):
                    count = threads * per_thread
                    edges = [n * k // count for k in range(count + 1)]
                    blocks = list(zip(edges[:-1], edges[1:]))
                    bound = cls._bind_blocks(fname, model, input_shape, dtype, threads,
                                             sorted({b - a for a, b in blocks}), algorithms)
                    if bound is not None:
                        out = next(iter(bound[0].values()))[2]
                        return cls(blocks, bound, out_shape, out.dtype)
                return None
            finally:
                if _config._kernel_threads == 1:
                    _config._kernel_threads = kept

    @staticmethod
    def _bind_blocks(fname: str, model: Sequential, input_shape: Shape, dtype: FloatDType,
                     threads: int, sizes: list[int], algorithms: list[tuple[Any, ...]]
                     ) -> list[dict[int, tuple[list[Callable[[], object]], Any, Any]]] | None:
        """Per thread, the prebound steps of each block size, or None when
        a size's steps take other algorithms than ``algorithms``."""
        bound: list[dict[int, tuple[list[Callable[[], object]], Any, Any]]] = []
        for _ in range(threads):
            sets = {}
            for size in sizes:
                shape = (size, *input_shape[1:])
                sub = _build_steps(fname, _leaves(model), shape, dtype, dtype, False)[0]
                calls, xbuf, out = _bind_steps(sub, shape, dtype)
                if _algorithms(sub) != algorithms or calls is None:
                    return None
                sets[size] = (calls, xbuf, out)
            bound.append(sets)
        return bound

    def _drain(self, taken: Iterator[int], sets: dict[int, tuple[list[Callable[[], object]],
                                                                Any, Any]],
               x: FloatArray, y: FloatArray) -> None:
        """Run blocks until none is left (``next(taken)``: the next block,
        atomic under the GIL)."""
        blocks = self.blocks
        for k in taken:
            if k >= len(blocks):
                return
            a, b = blocks[k]
            calls, xbuf, out = sets[b - a]
            np.copyto(xbuf, x[a:b])
            for call in calls:
                call()
            np.copyto(y[a:b], out)

    def run(self, x: FloatArray) -> FloatArray:
        """The network's output for ``x`` (a new array)."""
        y = np.empty(self.out_shape, self.dtype)
        taken = itertools.count()
        done, bound = self.done, self.bound
        workers = _workers.workers(len(bound) - 1)
        for w, sets in zip(workers, bound[1:]):
            w.jobs.put((partial(self._drain, taken, sets, x, y), done))
        error: BaseException | None = None
        try:
            self._drain(taken, bound[0], x, y)
        except BaseException as exc:  # noqa: BLE001 - the workers are waited for first
            error = exc
        for _ in workers:
            error = done.get()[1] or error
        if error is not None:
            raise error
        return y


class NetPlan:
    """A model's forward pass (and training step) for one input shape,
    dtype and mode, planned once.

    Made by :meth:`cnnext.nn.Sequential.plan`; see :mod:`cnnext.nn.plan`.
    A plan keeps working while the model is unchanged; :attr:`valid` is
    False (and :meth:`Sequential.plan <cnnext.nn.Sequential.plan>` builds a
    new one) once a layer was added, removed or replaced, a parameter array
    (for a training plan, a gradient array) replaced, the train/eval mode,
    the thread count, the backend or the convolution algorithm setting
    changed.
    Running an invalid plan raises RuntimeError.

    A plan never shares memory with a caller's array in a way that lets
    later writes change results: the input is only read during the call,
    and :meth:`forward` returns a new array each call.

    Notes
    -----
    Results equal the layer-by-layer path's bit for bit: fused activations
    are applied to each value as it is stored, with the separate
    activation's formula, and the backward passes run the same kernels in
    the same order.  One difference: after a planned call the layers' own
    forward caches are not updated (a following ``model.backward`` needs a
    ``model.forward`` first).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import models
    >>> model = models.lenet5(seed=0).eval()
    >>> plan = model.plan((2, 1, 28, 28))
    >>> x = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32)
    >>> bool((plan.forward(x) == model.forward(x)).all())
    True
    """

    def __init__(self, model: Sequential, input_shape: Shape, dtype: FloatDType,
                 training: bool) -> None:
        fname = "Sequential.plan"
        self.model = model
        self.input_shape = input_shape
        self.dtype = dtype
        self.training = training
        self._threads = _config.get_num_threads()
        self._algorithm = _config.get_conv_algorithm()
        self.steps, shape, cur = _build_steps(fname, _leaves(model), input_shape, dtype,
                                              dtype, training)
        self.out_shape = shape
        first = [k for k, s in enumerate(self.steps) if s.params]
        #: Index of the first step with parameters: backward stops there.
        self._first_param = first[0] if first else len(self.steps)
        self.out_dtype = cur
        self._grad = np.empty(shape, cur)
        self._calls, self._xbuf, self._out = self._prebind()
        # Whether the first prebound call is the first step's (reading the
        # input buffer, writing its own), and the calls after it.
        bound0 = self.steps[0].bind(self._xbuf) if self._calls and self.steps else None
        self._first_reads_input = bound0 is not None and bound0[0] is not None
        self._rest = self._calls[1:] if self._first_reads_input and self._calls else []
        self._split = (_BatchSplit.build(fname, model, input_shape, dtype, self.steps,
                                         shape) if self._calls is not None else None)
        self._check = self._snapshot(model)

    def _prebind(self) -> tuple[list[Callable[[], object]] | None, Any, Any]:
        """Inference with every step a kernel call on kept buffers: the
        calls, prebound (``functools.partial``: no Python frame per step),
        the input buffer they start from and the output buffer; (None, None,
        None) when a step allocates its output."""
        if self.training:
            return None, None, None
        return _bind_steps(self.steps, self.input_shape, self.dtype)

    # -- validity ----------------------------------------------------------

    def _snapshot(self, model: Module) -> tuple[Any, ...]:
        """What :attr:`valid` compares, as flat lists (the checks are C-level
        ``map`` calls): the containers' layers, every module's mode, and the
        parameter (in training, also gradient) arrays the steps hold -- the
        other layers read theirs when they run."""
        seqs: list[Sequential] = []
        res: list[Residual] = []
        mods = _modules(model)
        for m in mods:
            if isinstance(m, Sequential):
                seqs.append(m)
            elif isinstance(m, Residual):
                res.append(m)
        held = [s.layer for s in _all_steps(self.steps) if isinstance(s, _WeightedStep)]
        # The model's own mode, and that of every layer whose results depend on it.
        watched = [model] + [m for m in mods[1:] if type(m) not in _MODE_FREE]
        full = [d for m in held for d in ((m._params, m._grads) if self.training
                                          else (m._params,))]
        arrays = list(itertools.chain.from_iterable(map(dict.values, full)))
        return (seqs, [list(c.layers) for c in seqs], res,
                [(c.block, c.shortcut) for c in res],
                watched, [m.training for m in watched], full, list(map(len, full)), arrays)

    @property
    def valid(self) -> bool:
        """True while the model is the one this plan was made for (same
        layers, parameter arrays -- and gradient arrays for training --,
        modes, thread count, backend and convolution algorithm setting)."""
        if (self._threads != _config._kernel_threads or not _config.compiled_backend()
                or self._algorithm != _config.get_conv_algorithm()):
            return False
        seqs, layers, res, branches, watched, modes, full, sizes, arrays = self._check
        return (
            list(map(_LAYERS, seqs)) == layers
            and list(map(_BRANCHES, res)) == branches
            and list(map(_TRAINING, watched)) == modes
            and list(map(len, full)) == sizes
            and all(map(operator.is_, itertools.chain.from_iterable(map(dict.values, full)),
                        arrays))
        )

    def _input(self, fname: str, x: npt.ArrayLike, checked: bool = False) -> FloatArray:
        """``x`` as the plan's input array; ``checked``: the caller has just
        confirmed :attr:`valid`."""
        if not checked and not self.valid:
            raise RuntimeError(
                f"{fname}: the model changed since this plan was made (layers, parameter "
                f"arrays, train/eval mode, thread count, backend or convolution algorithm); "
                f"make a new plan with model.plan(...)"
            )
        if (type(x) is np.ndarray and x.shape == self.input_shape and x.dtype == self.dtype
                and x.flags.c_contiguous):
            return x
        a = np.ascontiguousarray(as_dtype(fname, "x", x, self.dtype))
        if a.shape != self.input_shape:
            raise ValueError(
                f"{fname}: x.shape must be {self.input_shape}, the shape this plan was made "
                f"for, got {a.shape}"
            )
        return a

    # -- running -----------------------------------------------------------

    def _forward(self, x: FloatArray) -> FloatArray:
        for step in self.steps:
            x = step.forward(x)
        return x

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The model's output for ``x`` (a new array).

        Parameters
        ----------
        x : array_like of the plan's input shape
            Converted to the plan's dtype (copied) if needed.

        Returns
        -------
        ndarray of shape :attr:`out_shape`
        """
        xa = self._input("NetPlan.forward", x)
        calls = self._calls
        if calls is None:
            return np.array(self._forward(xa))
        if self._split is not None:
            return self._split.run(xa)
        if xa.nbytes >= _READ_IN_PLACE_BYTES and self._first_reads_input:
            # The first step bound to the input itself (only read, during
            # this call) rather than to a copy of it.
            first = cast("tuple[Callable[[], object], FloatArray]", self.steps[0].bind(xa))[0]
            first()
            calls = self._rest
        else:
            np.copyto(self._xbuf, xa)  # (the caller's array is never kept)
        for call in calls:
            call()
        return self._out.copy()  # type: ignore[no-any-return]

    __call__ = forward

    def train_step(self, x: npt.ArrayLike, y: npt.ArrayLike, loss: Any, optimizer: Any) -> float:
        """One training step: ``optimizer.zero_grad()``, forward, ``loss``,
        backward, ``optimizer.step()``; returns the batch loss.

        The same arithmetic as the layer-by-layer step, with the
        plan's savings (the loss :class:`~cnnext.nn.SoftmaxCrossEntropy`
        writes its gradient into a kept buffer).  The plan must have been
        made with ``training=True`` (layers in training mode).

        Parameters
        ----------
        x : array_like of the plan's input shape
        y : array_like
            The targets, as ``loss.forward`` takes them.
        loss : loss object (``forward(pred, target)``, ``backward()``)
        optimizer : optimizer over the model's parameters

        Returns
        -------
        float
        """
        return self._step("NetPlan.train_step", x, y, loss, optimizer)[0]

    def _step(self, fname: str, x: npt.ArrayLike, y: npt.ArrayLike, loss: Any,
              optimizer: Any, checked: bool = False) -> tuple[float, FloatArray]:
        """(batch loss, the output buffer) of one training step; ``checked``:
        the caller has just confirmed :attr:`valid`."""
        if not self.training:
            raise RuntimeError(f"{fname}: this plan was made for inference (training=False)")
        xa = self._input(fname, x, checked)
        optimizer.zero_grad()
        out = self._forward(xa)
        value, g = self._loss(loss, out, y)
        first = self._first_param
        steps = self.steps
        for k in range(len(steps) - 1, first - 1, -1):
            g = cast("FloatArray", steps[k].backward(g, k != first))  # None only at first
        optimizer.step()
        return value, out

    def _loss(self, loss: Any, out: FloatArray, y: npt.ArrayLike) -> tuple[float, FloatArray]:
        from ..losses import SoftmaxCrossEntropy

        if (type(loss) is SoftmaxCrossEntropy and type(y) is np.ndarray and y.dtype == _INT64
                and out.ndim == 2 and y.shape == out.shape[:1] and y.flags.c_contiguous
                and out.shape[0] > 0
                and _eltwise.indices_within(y, 0, out.shape[1])):
            g = self._grad
            value = float(_eltwise.softmax_cross_entropy(out, y, g))
            loss._grad = g  # as loss.forward leaves it (backward returns a copy)
            return value, g
        value = float(loss.forward(out, y))
        return value, np.ascontiguousarray(as_dtype("NetPlan.train_step", "loss gradient",
                                                    loss.backward(), self.out_dtype))

    def __repr__(self) -> str:
        names = ", ".join(type(s).__name__.strip("_") for s in self.steps)
        return (f"NetPlan(input_shape={self.input_shape}, dtype={self.dtype}, "
                f"training={self.training}, steps=[{names}])")


class _Kept(dict[Any, NetPlan]):
    """A model's kept plans.  Copies and pickles of the model start without
    any (a plan's buffers are views of one another, which a deep copy would
    not preserve; they are rebuilt on first use)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Kept:
        return _Kept()

    def __reduce__(self) -> tuple[type[_Kept], tuple[()]]:
        return _Kept, ()


def plan_of(model: Sequential, fname: str, input_shape: Any, dtype: Any,
            training: bool | None) -> NetPlan:
    """The model's kept plan for these arguments, or a new one (kept)."""
    shape = tuple(V.as_int(fname, f"input_shape[{i}]", s, 0) for i, s in
                  enumerate(input_shape if isinstance(input_shape, (tuple, list)) else
                            [input_shape]))
    if dtype is None:
        dts = {p.dtype for _, p, _ in model.named_parameters()}
        dtype = dts.pop() if len(dts) == 1 else np.float32
    dt = V.float_dtype(fname, dtype)
    mode = model.training if training is None else V.boolean(fname, "training", training)
    if any(m.training != mode for m in _modules(model)):
        raise ValueError(
            f"{fname}: training={mode} but the model is in "
            f"{'training' if model.training else 'evaluation'} mode (or its layers' modes "
            f"differ); call model.train() or model.eval() first"
        )
    if not _config.compiled_backend():
        raise RuntimeError(f"{fname}: whole-network plans need the compiled backend "
                           f"(cnnext.set_backend('cython'))")
    key = (shape, dt, mode)
    kept: _Kept = model.__dict__.setdefault("_netplans", _Kept())
    plan = kept.get(key)
    if plan is None or not plan.valid:
        if len(kept) >= 8:
            kept.clear()
        plan = kept[key] = NetPlan(model, shape, dt, mode)
    return plan
