"""How each operation runs: plans, built once, run many times.

A plan is a small immutable object built from *validated* arguments (prior
validation of the arrays is assumed; the builders check only what depends
on the geometry).  It records the sizes, the output shape, the algorithm it
chose and why, the thread count and the scratch it needs, and its ``run``
methods call the compiled kernels with nothing left to decide -- oneDNN's
"create a primitive once, execute it many times".

:mod:`cnnext.functional` builds (or fetches from :func:`cached`) a plan per
call; a layer keeps the plan for the input it sees and, while the input
stays the same kind of array, only checks that before running it.

Algorithm names (``plan.method``, ``plan.grad_input``, ``plan.grad_weight``):

``direct``
    the fused-im2col GEMM kernels on the input.
``subsampled``
    a 1x1 convolution at a stride above 1 without padding (a ResNet's
    projection shortcut): the input at the output's positions
    (``x[:, :, ::sh, ::sw]``, one pass) and the stride-1 1x1 convolution on
    it (``plan.sub_plan``), forward and weight gradient, instead of the
    stride phases of every sample; the input gradient as ``direct``.
``gather``
    index arithmetic without padding, for geometries whose padded input
    cannot be allocated (padding near 2**31); numpy einsum.
``empty``
    nothing to read (an empty batch, image or channel axis): zeros or bias.
``depthwise``
    ``groups == C_in`` with one input channel per filter: the direct
    per-plane kernels of ``_depthwise`` (forward, input and weight
    gradients), no GEMM.
``grouped``
    any other ``groups > 1``: the algorithms of one group's convolution
    (``plan.group_plan``) run on every group at once, forward and backward:
    one kernel call whose (sample, group) units share the threads, each
    group read in place in its channels of the batch (a ``gather`` group
    plan runs group by group on copies).  :func:`_conv_method` makes every
    ``method`` choice.
``winograd``
    float32 3x3 convolutions at stride 1 (``_winograd``): Winograd's
    F(2x2, 3x3) for the forward pass, the input gradient (the forward
    kernel on the upstream gradient with the rotated, transposed filters)
    and the weight gradient; F(4x4, 3x3) for the forward pass and the input
    gradient of layers with enough channels (``plan.winograd_tiles``, see
    :func:`_winograd_tile`); chosen by :func:`_conv_method` from the
    :func:`cnnext.set_conv_algorithm` setting in force (``plan.algorithm``).
``winograd-5x5``
    float32 5x5 convolutions at stride 1 (padding at most 2): the 3x3
    Winograd kernels on four views of the input shifted by 0 or 2 rows and
    columns, one 3x3 block of the filter each
    (``_winograd.winograd_forward_quad``: 64 multiplications per 2x2 output
    tile and channel pair instead of 100); the input gradient likewise when its
    result has enough channels (``grad_input``), the weight gradient direct.
``winograd-phases``
    float32 3x3 convolutions at stride 1 with a dilation ``(dh, dw)`` above
    1: ``dh * dw`` undilated convolutions, one per phase (the rows ``r::dh``
    and columns ``c::dw`` of the padded input), stacked along the batch axis
    (``plan.phase_plan`` describes that convolution), forward and backward,
    by Winograd kernels that read and write the phases in place
    (``_winograd.*_phases``).
``winograd-float64``
    float64 3x3 convolutions at stride 1 (``_winograd64``): F(2x2, 3x3) for
    the forward pass, the input gradient (the rotated, transposed filters)
    and the weight gradient, on the float64 GEMM micro-kernel.
``full-rotated``
    input gradient of a dilated convolution at stride 1, and of a float64
    one at stride 1 with many channels (``FULL_ROTATED_MIN_C64``): the full
    convolution of the output gradient with the 180-degree-rotated kernel,
    on the forward kernel.
``phases``
    input gradient of an undilated convolution at stride s: such a full
    convolution per stride phase (the taps ``a::s, b::s``; one phase at
    stride 1), all in one kernel call (``_conv.conv2d_grad_input_phases``)
    that writes each phase's rows and columns of the result directly.
``col2im``
    input gradient by ``Wmat^T @ g`` scattered back (any geometry).
``dot`` / ``transposed`` / ``packed`` / ``split``
    weight-gradient schedules of ``_conv.conv2d_grad_weight`` (``split``:
    the transposed product into one result, each unit's rows shared by the
    threads; a float64 result of at least ``SPLIT_MIN_BYTES``, computed
    beside the input gradient at two or more threads).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import numpy as np

from . import (
    _config, _conv, _depthwise, _eltwise, _gemm, _norm, _pool, _winograd, _winograd64, _workers,
)
from . import _validate as V

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._typing import FloatArray, FloatDType, IndexArray, Pair, Shape

_PlanT = TypeVar("_PlanT")

#: Below this many multiply-adds a kernel runs on one thread: waking a
#: sleeping worker costs more than it saves.  (Measured on a 2-core VM at 2
#: threads, where a wake-up costs about 0.1 ms: convolutions of 8-11 million
#: multiply-adds ran 20-30% slower on two threads than on one, from 21
#: million 2x faster.)
PARALLEL_MIN_MACS = 1 << 24

#: Pooling and elementwise work is memory-bound: one thread below this many
#: elements (the same VM: a max pool of 0.8 million elements still ran 25%
#: slower on two threads, 3.2 million 1.4x faster).
PARALLEL_MIN_ELEMENTS = 1 << 20

#: Batch normalization's two passes each way (counted as twice its
#: elements) run on one thread below this.  On 2 cores, right after a
#: convolution on two threads (as in a training step): (64, 16, 28, 28)
#: float32 ran its forward and backward 1.7-1.9x faster on two threads
#: than on one; (64, 32, 14, 14) 1.1-1.3x (1.2-1.5x with an OpenMP runtime
#: whose idle workers spin, PyTorch's); (64, 64, 7, 7) 0.9-1.6x, so it
#: keeps one thread.
BATCH_NORM_PARALLEL_MIN = 1 << 19

#: (PARALLEL_MIN_MACS, PARALLEL_MIN_ELEMENTS, BATCH_NORM_PARALLEL_MIN) as
#: shipped.
DEFAULT_PARALLEL_MIN = (PARALLEL_MIN_MACS, PARALLEL_MIN_ELEMENTS, BATCH_NORM_PARALLEL_MIN)

_CACHE: dict[Hashable, Any] = {}
_CACHE_MAX = 512


def cached(key: Hashable, build: Callable[..., _PlanT], *args: Any) -> _PlanT:
    """The plan for ``key``, built by ``build(*args)`` on first use.

    Keys are tuples of hashable values in a canonical form (the op's name
    first, then shapes, dtypes, int tuples, plain ints, the thread count), so
    equal keys mean equal validated arguments.
    """
    plan: _PlanT | None = lookup(key)
    if plan is None:
        plan = store(key, build(*args))
    return plan


lookup = _CACHE.get


def store(key: Hashable, plan: _PlanT) -> _PlanT:
    """Remember ``plan`` under ``key`` (the cache is bounded); returns it."""
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = plan
    return plan


def forget() -> None:
    """Drop every plan (the next call of each op builds a new one)."""
    _CACHE.clear()


def threads_for(work: int, elements: bool = False, minimum: int | None = None) -> int:
    """The kernel thread count for ``work``: multiply-adds, or with
    ``elements`` the elements of memory-bound work (``minimum``: a
    threshold of the caller's own instead)."""
    if minimum is None:
        minimum = PARALLEL_MIN_ELEMENTS if elements else PARALLEL_MIN_MACS
    return 1 if work < minimum else _config.get_num_threads()


def bias_grad(g: FloatArray) -> FloatArray:
    """The bias gradient of an (N, C, ...) upstream gradient: its sum over
    every axis but the channel axis."""
    N, C = g.shape[0], g.shape[1]
    out = np.empty(C, dtype=g.dtype)
    _eltwise.channel_sums(g.reshape(N, C, -1) if g.size else np.zeros((N, C, 0), g.dtype), out)
    return out


def _needs_gather(C: int, H: int, W: int, s: Pair, p: Pair, itemsize: int) -> bool:
    """True when the kernels' padded, phase-split sample would not fit in
    memory (padding near 2**31, say) although the output may be small."""
    elems = s[0] * s[1] * C * (-(-(H + 2 * p[0]) // s[0])) * (-(-(W + 2 * p[1]) // s[1]))
    return elems * itemsize > V.MEMORY_LIMIT // 4


def _effective_stride(s: Pair, out: Pair, padded: Pair, k: Pair, d: Pair) -> Pair:
    """With a single output along an axis the stride is never used; replace
    a huge one by the smallest that still gives one output (<= the padded
    size), so the kernels' stride-phase scratch stays bounded."""
    return cast("Pair", tuple(
        min(s_i, n_i - (d_i * (k_i - 1) + 1) + 1) if o_i == 1 else s_i
        for s_i, o_i, n_i, k_i, d_i in zip(s, out, padded, k, d)
    ))


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------


def _forward_kernel(
    x: FloatArray, weight: FloatArray, bias: FloatArray | None, s: Pair, p: Pair, d: Pair,
    OH: int, OW: int, threads: int, groups: int = 1, out: FloatArray | None = None,
) -> FloatArray:
    """y (N, Co, OH, OW) = conv2d(x, weight, groups=groups) by the
    fused-im2col kernel (into ``out`` when given)."""
    if out is None:
        out = np.empty((x.shape[0], weight.shape[0], OH, OW), dtype=x.dtype)
    _conv.conv2d_forward(x, weight, bias, out, s[0], s[1], p[0], p[1], d[0], d[1], threads,
                         groups)
    return out


def _rotated_transposed(weight: FloatArray, groups: int = 1) -> FloatArray:
    """(G*A, B, kH, kW) -> (G*B, A, kH, kW), each group's filters transposed
    and rotated by 180 degrees, contiguous."""
    GA, B, kh, kw = weight.shape
    w5 = weight.reshape(groups, GA // groups, B, kh, kw).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(w5[..., ::-1, ::-1]).reshape(groups * B, GA // groups, kh, kw)


_WG_MR = _gemm.block_sizes(np.float32)[0]


def _winograd5_filters(weight: FloatArray, threads: int = 1, tile: int = 2) -> FloatArray | None:
    """The packed transform (see _winograd_filters) of a float32 5x5
    ``weight`` (Co, C, 5, 5) as the (Co, 4C, 3, 3) filters of
    ``_winograd.winograd_forward_quad``: view (a, b)'s filter the 3x3 block
    at rows 2a.., columns 2b.., its row (column) shared with view a = 0
    (b = 0) zeroed; None if the weight holds inf/NaN."""
    Co, C = weight.shape[:2]
    views = np.zeros((Co, 4, C, 3, 3), dtype=np.float32)
    for a in (0, 1):
        for b in (0, 1):
            views[:, 2 * a + b, :, a:, b:] = weight[:, :, 2 * a + a:2 * a + 3, 2 * b + b:2 * b + 3]
    return _winograd_filters(views.reshape(Co, 4 * C, 3, 3), threads=threads, tile=tile)


def _winograd_filters(
    weight: FloatArray, adjoint: bool = False, threads: int = 1, tile: int = 2
) -> FloatArray | None:
    """The packed Winograd transform of a float32 3x3 ``weight`` (the
    kernel's filter operand) for F(tile x tile, 3x3): 16 (36 for tile 4)
    rows (points) of C_out/MR panels of (C, MR), a cache line longer than
    they need (see ``_winograd.winograd_filters``); with ``adjoint``, of the
    input gradient's filters (transposed, rotated by 180 degrees); None if
    the weight holds inf/NaN.  On up to ``threads`` threads from
    ``WINOGRAD_FILTER_PARALLEL`` filters (the same result)."""
    upk = _winograd_upk(weight, adjoint, tile)
    nt = _filter_threads(weight, threads)
    transform = _winograd.winograd4_filters if tile == 4 else _winograd.winograd_filters
    return upk if transform(weight, upk, adjoint, nt) else None


def _winograd_upk(weight: FloatArray, adjoint: bool, tile: int) -> FloatArray:
    """An empty array for _winograd_filters' result."""
    Co, C = weight.shape[1::-1] if adjoint else weight.shape[:2]
    return np.empty(((tile + 2) ** 2, -(-Co // _WG_MR) * _WG_MR * C + 16), dtype=np.float32)


def _winograd_apply(
    tile: int, x: FloatArray, weight: FloatArray, bias: FloatArray | None, y: FloatArray,
    padding: Pair, threads: int, adjoint: bool = False,
) -> bool:
    """y = the Winograd convolution (F(tile x tile, 3x3)) of x by the 3x3
    float32 ``weight`` (with ``adjoint``, by the input gradient's filters:
    see _winograd_filters); False when the weight or y holds inf/NaN.
    F(2x2, 3x3) transforms the filters in the kernel's own parallel region
    (one wake-up of the threads instead of two)."""
    if tile == 2:
        return _winograd.winograd_forward_filters(x, weight, _winograd_upk(weight, adjoint, 2),
                                                  bias, y, padding[0], padding[1], threads,
                                                  adjoint)
    upk = _winograd_filters(weight, adjoint, threads, tile)
    return upk is not None and _winograd_run(tile, x, upk, bias, y, padding, threads)


def _winograd_run(
    tile: int, x: FloatArray, upk: FloatArray, bias: FloatArray | None, y: FloatArray,
    padding: Pair, threads: int, quad: bool = False,
) -> bool:
    """y = the Winograd convolution of x by the packed filters ``upk`` (of
    F(tile x tile, 3x3); ``quad``: a 5x5 kernel's four views); False when y
    holds inf or NaN (the kernels check their outputs as they store them)."""
    if tile == 4:
        return _winograd.winograd4_forward(x, upk, bias, y, padding[0], padding[1], threads,
                                           quad)
    run = _winograd.winograd_forward_quad if quad else _winograd.winograd_forward
    return run(x, upk, bias, y, padding[0], padding[1], threads)


def _filter_threads(weight: FloatArray, threads: int) -> int:
    """Threads of a Winograd filter step on ``weight``'s filters (see
    ``WINOGRAD_FILTER_PARALLEL``)."""
    return threads if weight.shape[0] * weight.shape[1] >= WINOGRAD_FILTER_PARALLEL else 1


def grad_input(
    g: FloatArray, weight: FloatArray, out_hw: Shape, s: Pair, p: Pair, d: Pair, method: str,
    threads: int, groups: int = 1, bias: FloatArray | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    """dL/dx of a convolution with ``weight`` (Co, C, kh, kw) and ``groups``
    for upstream ``g`` (N, Co, OH, OW): an (N, groups*C, H, W) array, by
    ``method`` (every group in one kernel call, but ``col2im``: one call per
    group, on its channel windows); plus ``bias`` (groups*C,) per channel
    when given (a transposed convolution's: the kernels add it before the
    taps' sum when that is one block of taps, so the result is bitwise the
    sum plus the bias either way).  ``out``: a C-contiguous array of the
    result's shape and dtype that ``full-rotated`` and ``phases`` write
    into (the other methods allocate their result).

    ``full-rotated`` and ``phases`` multiply g's implicit zero padding by the
    weight: with an inf/NaN weight that is 0*inf = NaN where PyTorch (summing
    valid taps only) gives a number, so such weights take ``col2im``.
    """
    N, _, OH, OW = g.shape
    Co, C, kh, kw = weight.shape
    H, W = out_hw
    G = groups
    if method != "col2im" and not _eltwise.all_finite(weight.reshape(-1)):
        method = "col2im"
    # The kernels add the bias before the taps' sum; with more taps than one
    # block (KC) the later blocks would round differently from sum + bias.
    in_kernel = (bias is not None and method not in ("col2im", "small")
                 and (Co // G) * -(-kh // s[0]) * -(-kw // s[1])
                 <= _gemm.block_sizes(g.dtype)[2])
    kbias = bias if in_kernel else None
    if method == "full-rotated":
        pf = (d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1])
        gx = _forward_kernel(g, _rotated_transposed(weight, G), kbias, (1, 1), pf, d, H, W,
                             threads, G, out)
    elif method == "phases":
        gx = np.empty((N, G * C, H, W), dtype=g.dtype) if out is None else out
        _conv.conv2d_grad_input_phases(g, weight, gx, s[0], s[1], p[0], p[1], threads, G, kbias)
    elif method == "small":
        gx = np.empty((N, G * C, H, W), dtype=g.dtype)
        _conv.conv2d_grad_input_small(g.reshape(N, Co, OH * OW), weight, gx, d[0], d[1],
                                      threads)
    else:
        gx = _grad_input_col2im(g, weight, (H, W), s, p, d, threads, G)
    if bias is not None and not in_kernel:
        gx += bias[:, None, None]
    return gx


def _grad_input_col2im(
    g: FloatArray, weight: FloatArray, out_hw: Shape, s: Pair, p: Pair, d: Pair, threads: int,
    G: int,
) -> FloatArray:
    """grad_input by ``col2im``: one kernel call per group, on its channel
    windows."""
    N, Co, OH, OW = g.shape
    _, C, kh, kw = weight.shape
    H, W = out_hw
    gx = np.empty((N, G * C, H, W), dtype=g.dtype)
    Cog = Co // G
    for i in range(G):  # each group's channel windows, in place
        _conv.conv_grad_input(
            g.reshape(N, Co, OH * OW), weight[i * Cog : (i + 1) * Cog].reshape(Cog, C * kh * kw),
            gx, kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], OH, OW, threads, i * Cog, i * C,
        )
    return gx


#: A float64 weight gradient of at least this many bytes runs the ``split``
#: schedule: the transposed schedule's product into one result, each sample's
#: share split between the threads by rows (taps), instead of one partial
#: per thread summed afterwards (VGG's 256 -> 256 3x3 at 14x14, 4.7 MB per
#: partial: measured faster at two threads, and the same bits at any count).
SPLIT_MIN_BYTES = 1 << 20

#: A float64 input gradient at stride 1 (undilated, kernel above 1x1) of at
#: least this many channels per group runs ``full-rotated`` instead of
#: ``phases``: at stride 1 the two are the same bits, and the forward
#: kernels' 16-channel tiles fit rows that are no multiple of a vector
#: (measured at one and two threads, 3x3 and 5x5 kernels, 7x7 to 56x56
#: maps, 32 to 256 channels: 0.72-1.0x the phase kernel's time; with 3 to
#: 16 channels 0.97-1.04x).
FULL_ROTATED_MIN_C64 = 32

#: The small convolutions' direct backward kernels (float32, AVX-512F or
#: AVX2): at most this many input x output channels (of a group) ...
SMALL_MAX_CHANNELS = 256
#: ... and input positions per sample (their scratch per sample stays in L1).
SMALL_MAX_POSITIONS = 1024
#: With AVX2 (8-lane vectors), the input gradient's kernel at most this many
#: output channels, and the channel-vector weight gradient at least this
#: many taps per channel: measured on a Zen 3 core at one and two threads,
#: against the general kernels -- input gradient 0.45-0.9x with 6 to 16
#: output channels, 0.8-1.4x with 4 -> 64 (its 6-channel blocks a third
#: empty); weight gradient 0.83-0.89x with 5x5 kernels (6 -> 16 on 12x12,
#: 16 -> 16 at stride 2), 0.9-1.2x with 3x3 ones (16 -> 16 on 8x8 and 16x16,
#: 4 -> 64) where the packed gradient fills its 16-column panels.
SMALL_AVX2_MAX_OUT_CHANNELS = 16
SMALL_AVX2_MIN_TAPS = 25


def _small_backward(
    C: int, Co: int, H: int, W: int, k: Pair, s: Pair, p: Pair, itemsize: int
) -> tuple[str | None, bool]:
    """The weight-gradient schedule (None: the general rule's) and whether
    the input gradient of one group's convolution (C -> Co channels, a
    ``k`` kernel over an H x W input, kernel stride ``s``, padding ``p``)
    run by the small convolutions' direct kernels (src/cnnext_smallconv.h):
    float32 on AVX-512F or AVX2, at most ``SMALL_MAX_CHANNELS`` channel pairs
    and ``SMALL_MAX_POSITIONS`` (padded) input positions; ``small`` and the
    input gradient unpadded.

    * ``small`` weight gradient, vectorised over output channels: at least
      half of its 16-channel tiles' lanes busy and at least 32 taps (LeNet's
      6 -> 16 channels, 150 taps on 12x12: 1.4x faster than the packed
      gradient at one thread with AVX-512F, 1.15x with AVX2), with AVX2 a
      kernel of at least ``SMALL_AVX2_MIN_TAPS`` taps;
    * ``pvec`` weight gradient, vectorised over positions, at stride 1 with
      fewer channels or taps -- output channels filling at most half of the
      general kernels' panel, where those take dot products -- any padding
      (a padded copy of each sample; LeNet's 1 -> 6 channels, 25 taps on
      28x28: 1.5-2x faster than the dot products);
    * the input gradient, vectorised over input positions, at stride 1
      (LeNet's 6 -> 16: 1.5x faster than the phases kernel with AVX-512F,
      2x with AVX2), with AVX2 into at most ``SMALL_AVX2_MAX_OUT_CHANNELS``.
    """
    if (itemsize != 4 or C * Co > SMALL_MAX_CHANNELS
            or (H + 2 * p[0]) * (W + 2 * p[1]) > SMALL_MAX_POSITIONS
            or not _conv.small_kernels()):
        return None, False
    avx2 = _gemm.isa() != "avx512"
    taps = k[0] * k[1]
    gw: str | None = None
    if (2 * Co >= 16 * -(-Co // 16) and C * taps >= 32 and p == (0, 0)
            and (not avx2 or taps >= SMALL_AVX2_MIN_TAPS)):
        gw = "small"
    elif s == (1, 1) and 2 * Co <= _gemm.block_sizes(np.dtype(np.float32))[1] and C * taps <= 64:
        gw = "pvec"
    gi = s == (1, 1) and p == (0, 0) and (not avx2 or Co <= SMALL_AVX2_MAX_OUT_CHANNELS)
    return gw, gi


def _grad_input_method(
    s: Pair, p: Pair, d: Pair, k: Pair, itemsize: int = 4, channels: int = 0
) -> tuple[str, str]:
    """(name, reason) of the input-gradient algorithm for this geometry
    (``itemsize`` of the dtype; ``channels``: the input gradient's channels
    per group)."""
    pf = (d[0] * (k[0] - 1) - p[0], d[1] * (k[1] - 1) - p[1])
    if (d == (1, 1) and s == (1, 1) and itemsize == 8 and channels >= FULL_ROTATED_MIN_C64
            and k[0] * k[1] > 1 and pf[0] >= 0 and pf[1] >= 0):
        return "full-rotated", (f"float64 at stride 1 with {channels} input channels: the "
                                f"full convolution with the rotated kernel on the forward "
                                f"kernels (their 16-channel tiles), the phase kernel's bits")
    if d == (1, 1):
        # At stride 1 this is the full convolution with the rotated kernel,
        # bitwise, without rotating a copy of the weight first.
        return "phases", "undilated: one full convolution per stride phase, in one kernel pass"
    if s == (1, 1) and pf[0] >= 0 and pf[1] >= 0:
        return "full-rotated", "stride 1: full convolution with the rotated (dilated) kernel"
    return "col2im", "dilation with stride or with padding beyond the kernel: col2im scatter"


def _gather_taps(
    fname: str, x: FloatArray, kh: int, kw: int, s: Pair, p: Pair, d: Pair, OH: int, OW: int
) -> tuple[FloatArray, FloatArray, IndexArray, IndexArray]:
    """im2col without padding: (N, C, OH, kH, OW, kW) values and 0/1 mask,
    from index arithmetic only (for geometries whose padding is too large to
    materialise; the windows that reach the input are few)."""
    N, C, H, W = x.shape
    V.check_alloc(fname, (N, C, OH, kh, OW, kw), x.dtype.itemsize, what="gathered input")
    ih = np.arange(OH, dtype=np.int64)[:, None] * s[0] - p[0] + np.arange(kh)[None, :] * d[0]
    iw = np.arange(OW, dtype=np.int64)[:, None] * s[1] - p[1] + np.arange(kw)[None, :] * d[1]
    vh, vw = (ih >= 0) & (ih < H), (iw >= 0) & (iw < W)
    ih, iw = np.clip(ih, 0, H - 1), np.clip(iw, 0, W - 1)
    mask = (vh[:, :, None, None] & vw[None, None, :, :]).astype(x.dtype)
    cols = x[:, :, ih[:, :, None, None], iw[None, None, :, :]] * mask
    return cols, mask, ih, iw


@dataclass(frozen=True, slots=True)
class ConvPlan:
    """How one ``conv2d`` geometry runs, forward and backward.

    Built by :func:`conv2d_plan`.  ``x_shape``/``out_shape`` are the shapes
    the user sees (3-D for an unbatched sample); the kernels see the 4-D
    ``(N, C, H, W)`` view and ``kernel_stride`` (the stride with unused huge
    values clamped, see :func:`_effective_stride`).
    """

    fname: str
    dtype: FloatDType
    x_shape: Shape
    weight_shape: Shape
    out_shape: Shape
    has_bias: bool
    stride: Pair
    padding: Pair
    dilation: Pair
    kernel_stride: Pair
    method: str
    reason: str
    grad_input: str
    grad_input_reason: str
    grad_weight: str
    grad_weight_reason: str
    grad_weight_tasks: int
    threads: int
    scratch_bytes: int

    # Derived once at construction (see conv2d_plan): the kernels' 4-D view
    # of the input (after pad_extra) and output, and the geometry arguments
    # of _conv.conv2d_forward.
    x4: Shape
    out4: Shape
    kernel_args: tuple[int, ...]

    #: Channel groups; with more than one, ``method`` is ``grouped``.
    groups: int = 1
    #: Zero rows/columns added after the input before ``padding`` (``"same"``
    #: with an odd total padding, the extra one at the bottom/right, as
    #: PyTorch); None when there are none.
    pad_extra: Pair | None = None
    #: ``grouped``: the plan of one group's convolution.
    group_plan: ConvPlan | None = None
    #: The :func:`cnnext.set_conv_algorithm` setting the plan was made for.
    algorithm: str = "direct"
    #: ``winograd-phases``: the plan of the stacked phases' (undilated)
    #: convolution, and its padding (see :func:`_phase_axis`); whether the
    #: phases tile the input and the result exactly (no offset, sizes
    #: multiples of the dilation), so that they are copied out once
    #: (copy_phases), run as one undilated Winograd convolution of the
    #: stacked phases and copied back, faster than reading and writing them
    #: in place.
    phase_plan: ConvPlan | None = None
    phase_pad: Pair = (0, 0)
    phase_split: bool = False
    #: ``subsampled``: the plan of the stride-1 1x1 convolution of the
    #: input at the output's positions (:meth:`subsample`).
    sub_plan: ConvPlan | None = None
    #: ``direct``: the kernel of the forward pass (``_conv.KERNEL_NAMES``:
    #: ``"tiles"`` of the GEMM micro-kernels; ``"in-place 3x3"``, the small
    #: 3x3 convolutions' kernel reading the input in place; ``"result
    #: channel"``, the kernel holding output channels in its vector lanes),
    #: without a fused activation; "" for the other methods.
    forward_kernel: str = ""
    #: ``winograd`` and ``winograd-5x5``: the output tile side m of
    #: Winograd's F(m x m, 3x3) in the forward pass and in the input gradient
    #: (2 or 4, see :func:`_winograd_tile`); the weight gradient runs F(2x2,
    #: 3x3).
    winograd_tiles: Pair = (2, 2)

    @property
    def unbatched(self) -> bool:
        return len(self.x_shape) == 3

    def forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None
    ) -> FloatArray:
        """y = conv2d(x, weight, bias) for arrays of this plan's shapes/dtype."""
        if self.method == "direct" and self.pad_extra is None:
            out = np.empty(self.out_shape, dtype=self.dtype)
            if len(self.x_shape) == 3:
                _conv.conv2d_forward(x[None], weight, bias, out[None], *self.kernel_args)
            else:
                _conv.conv2d_forward(x, weight, bias, out, *self.kernel_args)
            return out
        x4 = self._input4(x)
        if self.method == "direct":
            y = np.empty(self.out4, dtype=self.dtype)
            _conv.conv2d_forward(x4, weight, bias, y, *self.kernel_args)
        elif self.method == "winograd":
            y = self._winograd_forward(x4, weight, bias)
        elif self.method == "winograd-5x5":
            y = self._winograd5(x4, weight, bias, self.padding, self.out4)
        elif self.method == "winograd-float64":
            y = self._winograd64_forward(x4, weight, bias)
        elif self.method == "winograd-phases":
            y = self._phases_forward(x4, weight, bias)
        elif self.method == "subsampled":
            y = cast("ConvPlan", self.sub_plan).forward(self.subsample(x4), weight, bias)
        elif self.method == "depthwise":
            y = np.empty(self.out4, dtype=self.dtype)
            _depthwise.depthwise_forward(x4, weight, bias, y, *self.kernel_args)
        elif self.method == "grouped":
            y = self._grouped_forward(x4, weight, bias)
        elif self.method == "gather":
            y = self._gather_forward(x4, weight, bias)
        else:
            y = np.zeros(self.out4, dtype=self.dtype)
            if bias is not None:
                y += bias[:, None, None]
        return y.reshape(self.out_shape)

    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: Literal[True] = True,
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool, need_input: bool
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]: ...
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: bool = True,
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]:
        """(grad_x or None, grad_weight, grad_bias or None) for upstream ``g``."""
        unb = len(self.x_shape) == 3
        g4 = g[None] if unb else g
        x4 = self._input4(x)
        gb = bias_grad(g4) if bias else None
        gx: FloatArray | None
        if self.method == "gather":
            gx, gw = self._gather_backward(g4, x4, weight)
        elif self.method == "empty":
            gx = np.zeros(x4.shape, dtype=self.dtype) if need_input else None
            gw = np.zeros(self.weight_shape, dtype=self.dtype)
        elif self.method == "depthwise":
            gw = np.empty(self.weight_shape, dtype=self.dtype)
            _depthwise.depthwise_grad_weight(x4, g4, gw, *self.kernel_args)
            gx = None
            if need_input:
                gx = np.empty(x4.shape, dtype=self.dtype)
                _depthwise.depthwise_grad_input(g4, weight, gx, *self.kernel_args)
        elif self.method == "grouped":
            gx, gw = self._grouped_backward(g4, x4, weight, need_input)
        elif self.method == "winograd" and need_input and self._winograd_beside():
            gx, gw = self._winograd_gx_beside_gw(g4, x4, weight)
        elif self.method == "winograd":
            gw = self._winograd_grad_weight(g4, x4)
            gx = self._winograd_grad_input(g4, weight) if need_input else None
        elif self.method == "winograd-phases":
            gx, gw = self._phases_backward(g4, x4, weight, need_input)
        elif self.method == "winograd-float64":
            gx = self._winograd64_grad_input(g4, weight) if need_input else None
            gw = self._winograd64_grad_weight(g4, x4)
        elif self.method == "winograd-5x5":
            gw = self._grad_weight(g4, x4)
            gx = None
            if need_input and self.grad_input == "winograd-5x5":
                gx = self._winograd5(g4, weight, None, (4 - self.padding[0],
                                                        4 - self.padding[1]), self.x4, True)
            elif need_input:
                gx = grad_input(g4, weight, x4.shape[2:], self.kernel_stride, self.padding,
                                self.dilation, self.grad_input, self.threads)
        elif need_input and self.grad_weight == "split" and self.threads > 1:
            gx, gw = self._gx_beside_gw(g4, x4, weight)
        else:
            gw = self._grad_weight(g4, x4)
            gx = None
            if need_input:
                gx = grad_input(g4, weight, x4.shape[2:], self.kernel_stride, self.padding,
                                self.dilation, self.grad_input, self.threads)
        if gx is not None and self.pad_extra is not None:
            H, W = self.x_shape[-2:]
            gx = np.ascontiguousarray(gx[:, :, :H, :W])
        if unb and gx is not None:
            gx = gx[0]
        return gx, gw, gb

    def _gx_beside_gw(
        self, g: FloatArray, x: FloatArray, weight: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """(grad_x, grad_w) of a ``split`` weight gradient side by side: the
        weight gradient on half the threads in a worker thread, the input
        gradient on the others in the caller's.  Each half runs on its own
        cores without waiting for the other's threads; neither result
        depends on the thread count, so these are the bits of the two run
        one after the other."""
        tw = self.threads // 2
        return cast("tuple[FloatArray, FloatArray]", _workers.beside(
            lambda: self._grad_weight(g, x, threads=tw),
            lambda: grad_input(g, weight, x.shape[2:], self.kernel_stride, self.padding,
                               self.dilation, self.grad_input, self.threads - tw)))

    def subsample(self, x: FloatArray, out: FloatArray | None = None) -> FloatArray:
        """A ``subsampled`` plan's ``x[:, :, ::sh, ::sw]`` at the output's
        size, contiguous (into ``out`` when given): ``sub_plan``'s input."""
        sp = cast("ConvPlan", self.sub_plan)
        if out is None:
            out = np.empty(sp.x4, dtype=self.dtype)
        _eltwise.take_strided(x, out, *self.kernel_stride, self.threads)
        return out

    def _input4(self, x: FloatArray) -> FloatArray:
        """The kernels' (N, C, H, W) input: batched, with ``pad_extra`` zeros."""
        x4 = x[None] if len(self.x_shape) == 3 else x
        if self.pad_extra is not None:
            x4 = np.pad(x4, ((0, 0), (0, 0), (0, self.pad_extra[0]), (0, self.pad_extra[1])))
        return x4

    def _grouped_forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None
    ) -> FloatArray:
        """Every group in one direct-kernel call, or the (gather) group plan
        on copies of each group's channels."""
        G, gp = self.groups, cast("ConvPlan", self.group_plan)
        if gp.method == "direct":
            OH, OW = self.out4[2:]
            return _forward_kernel(x, weight, bias, self.kernel_stride, self.padding,
                                   self.dilation, OH, OW, self.threads, G)
        y = np.empty(self.out4, dtype=self.dtype)
        Cog, Cg = self.weight_shape[0] // G, self.x4[1] // G
        for i in range(G):
            sl, xsl = slice(i * Cog, (i + 1) * Cog), slice(i * Cg, (i + 1) * Cg)
            b = None if bias is None else bias[sl]
            y[:, sl] = gp.forward(np.ascontiguousarray(x[:, xsl]), weight[sl], b)
        return y

    def _grouped_backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, need_input: bool
    ) -> tuple[FloatArray | None, FloatArray]:
        """(grad_x or None, grad_w): every group at once by the group plan's
        algorithms, or the (gather) group plan on copies of each group's
        channels."""
        G, gp = self.groups, cast("ConvPlan", self.group_plan)
        gx: FloatArray | None = None
        if gp.method == "direct":
            if need_input:
                gx = grad_input(g, weight, x.shape[2:], self.kernel_stride, self.padding,
                                self.dilation, gp.grad_input, self.threads, G)
            return gx, self._grad_weight(g, x)
        Cog, Cg = self.weight_shape[0] // G, self.x4[1] // G
        gw = np.empty(self.weight_shape, dtype=self.dtype)
        gx = np.empty(x.shape, dtype=self.dtype) if need_input else None
        for i in range(G):
            sl, xsl = slice(i * Cog, (i + 1) * Cog), slice(i * Cg, (i + 1) * Cg)
            gxi, gw[sl], _ = gp.backward(np.ascontiguousarray(g[:, sl]),
                                         np.ascontiguousarray(x[:, xsl]), weight[sl],
                                         False, need_input)
            if gx is not None:
                gx[:, xsl] = gxi
        return gx, gw

    def _phase_offset(self) -> Pair:
        """Where the input's phases start: ``padding - d * P`` for the phase
        convolutions' padding P."""
        (dh, dw), (P, Q) = self.dilation, self.phase_pad
        return self.padding[0] - dh * P, self.padding[1] - dw * Q

    def _split(self, a: FloatArray) -> FloatArray:
        """The dilation phases of a (N, C, H, W), stacked: (N*dh*dw, C, H/dh, W/dw)."""
        (dh, dw), (N, C, H, W) = self.dilation, a.shape
        out = np.empty((N * dh * dw, C, H // dh, W // dw), dtype=self.dtype)
        _winograd.copy_phases(np.ascontiguousarray(a), out, dh, dw, False, self.threads)
        return out

    def _merge(self, a: FloatArray, shape: Shape) -> FloatArray:
        """The inverse of _split, to an array of ``shape``."""
        out = np.empty(shape, dtype=self.dtype)
        _winograd.copy_phases(a, out, *self.dilation, True, self.threads)
        return out

    def _phases_forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None
    ) -> FloatArray:
        """y by Winograd on the phases of x, read and written in place (or
        copied, see phase_split); the direct kernel when the weight or the
        result holds inf/NaN (see _winograd_forward)."""
        pp = cast("ConvPlan", self.phase_plan)
        if self.phase_split:
            return self._merge(pp._winograd_forward(self._split(x), weight, bias), self.out4)
        (P, Q), (dh, dw), (y0, x0) = self.phase_pad, self.dilation, self._phase_offset()
        y = np.empty(self.out4, dtype=self.dtype)
        upk = _winograd_filters(weight, threads=self.threads)
        if upk is None or not _winograd.winograd_forward_phases(
                np.ascontiguousarray(x), upk, bias, y, P, Q, dh, dw, y0, x0, 0, 0, pp.out4[2],
                pp.out4[3], self.threads):
            _conv.conv2d_forward(x, weight, bias, y, *self.kernel_args)
        return y

    def _phases_backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, need_input: bool
    ) -> tuple[FloatArray | None, FloatArray]:
        """(grad_x or None, grad_w) by Winograd on the phases of g and x (read
        in place): the phases' weight gradients summed (they share the
        weight), their input gradients written in place; the direct algorithm
        for a result that holds inf/NaN."""
        pp = cast("ConvPlan", self.phase_plan)
        if self.phase_split:
            xs, gs = self._split(x), self._split(g)
            gw = pp._winograd_dw(gs, xs)
            if gw is None:
                gw = self._grad_weight(g, x, "packed")
            if not need_input:
                return None, gw
            return self._merge(pp._winograd_grad_input(gs, weight), self.x4), gw
        (P, Q), (dh, dw), (y0, x0) = self.phase_pad, self.dilation, self._phase_offset()
        g, x = np.ascontiguousarray(g), np.ascontiguousarray(x)
        Co, C = self.weight_shape[:2]
        dup = np.empty((self.grad_weight_tasks, 16, Co, C), dtype=self.dtype)
        _winograd.winograd_grad_weight_phases(x, g, dup, P, Q, dh, dw, y0, x0, pp.out4[2],
                                              pp.out4[3], pp.threads)
        gw = np.empty(self.weight_shape, dtype=self.dtype)
        if not _winograd.winograd_filter_grad(dup, gw, _filter_threads(gw, self.threads)):
            gw = self._grad_weight(g, x, "packed")
        if not need_input:
            return None, gw
        upk = _winograd_filters(weight, adjoint=True, threads=self.threads)
        if upk is not None:
            gx = np.empty(self.x4, dtype=self.dtype)
            if _winograd.winograd_forward_phases(g, upk, None, gx, 2 - P, 2 - Q, dh, dw, 0, 0,
                                                 y0, x0, pp.x4[2], pp.x4[3], self.threads):
                return gx, gw
        method = _grad_input_method(self.kernel_stride, self.padding, self.dilation, (3, 3))[0]
        return grad_input(g, weight, self.x4[2:], self.kernel_stride, self.padding,
                          self.dilation, method, self.threads), gw

    def _winograd_forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None,
        out: FloatArray | None = None,
    ) -> FloatArray:
        """y (into ``out`` when given) by Winograd's F(m x m, 3x3), m =
        ``winograd_tiles[0]``; the direct kernel when the weight holds
        inf/NaN, or when the result does (an inf/NaN input always reaches it,
        and Winograd's transforms would spread it to the neighbouring
        outputs, as inf - inf = NaN)."""
        y = np.empty(self.out4, dtype=self.dtype) if out is None else out
        if not _winograd_apply(self.winograd_tiles[0], x, weight, bias, y, self.padding,
                               self.threads):
            _conv.conv2d_forward(x, weight, bias, y, *self.kernel_args)
        return y

    def _winograd64_forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None,
        out: FloatArray | None = None,
    ) -> FloatArray:
        """y (into ``out`` when given) by float64 Winograd F(2x2, 3x3); the
        direct kernel when the result holds inf/NaN (see _winograd_forward)."""
        y = np.empty(self.out4, dtype=self.dtype) if out is None else out
        if not _winograd64.winograd64_forward(x, weight, bias, y, *self.padding, False,
                                              self.threads):
            _conv.conv2d_forward(x, weight, bias, y, *self.kernel_args)
        return y

    def _winograd64_grad_input(
        self, g: FloatArray, weight: FloatArray, out: FloatArray | None = None
    ) -> FloatArray:
        """grad_x (into ``out`` when given) by float64 Winograd on g with the
        rotated, transposed filters (padding 2 - p); the direct kernels,
        into a new array, when it holds inf/NaN."""
        gx = np.empty(self.x4, dtype=self.dtype) if out is None else out
        if not _winograd64.winograd64_forward(g, weight, None, gx, 2 - self.padding[0],
                                              2 - self.padding[1], True, self.threads):
            method = _grad_input_method(self.kernel_stride, self.padding, self.dilation, (3, 3),
                                        8, self.x4[1])[0]
            return grad_input(g, weight, self.x4[2:], self.kernel_stride, self.padding,
                              self.dilation, method, self.threads)
        return gx

    def _winograd64_grad_weight(self, g: FloatArray, x: FloatArray) -> FloatArray:
        """grad_w by float64 Winograd; the direct kernels when it holds
        inf/NaN (as it does when x or g does)."""
        gw = np.empty(self.weight_shape, dtype=self.dtype)
        if not _winograd64.winograd64_grad_weight(x, g, gw, *self.padding, self.threads):
            return self._grad_weight(g, x, "packed")
        return gw

    def _winograd5(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None, padding: Pair,
        out_shape: Shape, adjoint: bool = False,
    ) -> FloatArray:
        """A 5x5 convolution of x at stride 1 by Winograd on four shifted
        views (``winograd-5x5``): the forward, or with ``adjoint`` the input
        gradient (x the upstream gradient, the filters rotated and
        transposed); the direct kernels when the weight or the result holds
        inf/NaN (see _winograd_forward)."""
        y = np.empty(out_shape, dtype=self.dtype)
        w = _rotated_transposed(weight) if adjoint else weight
        tile = self.winograd_tiles[1 if adjoint else 0]
        upk = _winograd5_filters(w, self.threads, tile)
        if upk is None or not _winograd_run(tile, x, upk, bias, y, padding, self.threads,
                                            quad=True):
            if adjoint:
                method = _grad_input_method(self.kernel_stride, self.padding, self.dilation,
                                            (5, 5))[0]
                return grad_input(x, weight, out_shape[2:], self.kernel_stride, self.padding,
                                  self.dilation, method, self.threads)
            _conv.conv2d_forward(x, weight, bias, y, *self.kernel_args)
        return y

    def _winograd_grad_input(
        self, g: FloatArray, weight: FloatArray, threads: int | None = None,
        out: FloatArray | None = None,
    ) -> FloatArray:
        """grad_x (into ``out`` when given) = the full convolution of g with
        the rotated kernel: the Winograd forward kernel (F(m x m, 3x3), m =
        ``winograd_tiles[1]``) with padding 2 - p, on ``threads`` (default:
        the plan's); the direct algorithm, into a new array, when the weight
        or the result holds inf/NaN (see _winograd_forward)."""
        nt = self.threads if threads is None else threads
        gx = np.empty(self.x4, dtype=self.dtype) if out is None else out
        pad = (2 - self.padding[0], 2 - self.padding[1])
        if not _winograd_apply(self.winograd_tiles[1], g, weight, None, gx, pad, nt, True):
            return grad_input(g, weight, self.x4[2:], self.kernel_stride, self.padding,
                              self.dilation, "full-rotated", self.threads)
        return gx

    def _winograd_grad_weight(self, g: FloatArray, x: FloatArray) -> FloatArray:
        """grad_w by _winograd_dw; the direct kernels when the result holds
        inf/NaN (as it does when x or g does)."""
        gw = self._winograd_dw(g, x)
        return self._grad_weight(g, x, "packed") if gw is None else gw

    def _winograd_beside(self) -> bool:
        """Whether the backward runs the weight gradient beside the input
        gradient, one thread each (the input gradient's then joining the
        weight gradient's products): at two threads, when the weight gradient
        has one dU partial (a dU of 2 MB and more, whose two threads would
        split the output channels and each transform the whole input; the
        same bits on any number of threads).  Measured on 2 cores at 256 ->
        256 channels, 14x14, batch 8: the backward 7.6-8.4 ms instead of
        8.7-9.9 (alternating runs, minimum of 30)."""
        return self.threads == 2 and self.grad_weight_tasks == 1

    def _winograd_gx_beside_gw(
        self, g: FloatArray, x: FloatArray, weight: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """(grad_x, grad_w) side by side: the weight gradient's products in
        a worker thread, the input gradient in the caller's, which then
        joins the weight gradient's last products (whole transform points
        of a block each), then the last step of the weight gradient on
        every thread: the bits of the two run one after the other."""
        Co, C = self.weight_shape[:2]
        dup = np.empty((1, 16, Co, C), dtype=self.dtype)
        job = _winograd.SharedWeightGrad(x, g, dup, self.padding[0], self.padding[1])

        def grad_input_then_help() -> FloatArray:
            gx = self._winograd_grad_input(g, weight, threads=1)
            job.help()
            return gx

        gx, _ = _workers.beside(job.run, grad_input_then_help)
        gw = np.empty(self.weight_shape, dtype=self.dtype)
        if not _winograd.winograd_filter_grad(dup, gw, _filter_threads(gw, self.threads)):
            gw = self._grad_weight(g, x, "packed")
        return gx, gw

    def _winograd_dw(self, g: FloatArray, x: FloatArray) -> FloatArray | None:
        """grad_w = G^T (sum over tiles of (A g A^T) (x) (B^T x B)) G, one
        partial per thread added in order; None when it holds inf/NaN."""
        Co, C = self.weight_shape[:2]
        dup = np.empty((self.grad_weight_tasks, 16, Co, C), dtype=self.dtype)
        _winograd.winograd_grad_weight(x, g, dup, self.padding[0], self.padding[1], self.threads)
        gw = np.empty(self.weight_shape, dtype=self.dtype)
        ok = _winograd.winograd_filter_grad(dup, gw, _filter_threads(gw, self.threads))
        return gw if ok else None

    def _grad_weight(
        self, g: FloatArray, x: FloatArray, schedule: str | None = None,
        threads: int | None = None,
    ) -> FloatArray:
        """The weight gradient (of every group, by the group plan's schedule,
        or by ``schedule``); a ``split`` schedule on ``threads`` threads when
        given (the same bits on any number)."""
        if self.sub_plan is not None:
            return self.sub_plan._grad_weight(g, self.subsample(x), schedule, threads)
        G = self.groups
        Co, C, kh, kw = self.weight_shape
        N, _, OH, OW = g.shape
        s, p, d = self.kernel_stride, self.padding, self.dilation
        geom = (kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], OH, OW)
        g3 = g.reshape(N, Co, OH * OW)
        if schedule is None:
            schedule = (self.grad_weight if G == 1
                        else cast("ConvPlan", self.group_plan).grad_weight)
        gw = self._grad_weight_run(x, g3, schedule, geom, threads or self.threads)
        if schedule != "packed" and not _eltwise.all_finite(gw.reshape(-1)):
            # The fast schedules pair junk positions' image values with a
            # zero gradient: an inf/NaN input can turn 0*inf into NaN there.
            gw = self._grad_weight_run(x, g3, "packed", geom)
        return gw

    def _grad_weight_run(
        self, x: FloatArray, g3: FloatArray, schedule: str, geom: tuple[int, ...],
        threads: int = 1,
    ) -> FloatArray:
        """The weight gradient by ``schedule`` (``split``: on ``threads``
        threads, the others on the plan's tasks)."""
        T, G = self.grad_weight_tasks, self.groups
        Co, C, kh, kw = self.weight_shape
        K, Cog = C * kh * kw, Co // G
        if schedule == "split" and G > 1:  # (a group plan's choice)
            schedule = "transposed"
        transposed = schedule in ("transposed", "small", "split")
        if schedule == "split":
            T = 1
        gwp = np.empty((T, G, K, Cog) if transposed else (T, G, Cog, K), dtype=self.dtype)
        kh_, kw_, sh, sw, ph, pw, dh, dw, OH, OW = geom
        if schedule == "split":
            _conv.conv2d_grad_weight(x, g3, gwp, schedule, kh_, kw_, sh, sw, ph, pw, dh, dw, OH,
                                     OW, threads)
        elif schedule == "small":
            _conv.conv2d_grad_weight_small(x, g3, gwp, kh_, kw_, sh, sw, dh, dw, OH, OW)
        elif schedule == "pvec":
            _conv.conv2d_grad_weight_pvec(x, g3, gwp, kh_, kw_, ph, pw, dh, dw, OH, OW)
        else:
            _conv.conv2d_grad_weight(x, g3, gwp, schedule, *geom)
        gw: FloatArray
        if transposed:  # summed and transposed in one pass
            gw = np.empty((G, Cog, K), dtype=self.dtype)
            _conv.sum_transposed(gwp, gw, threads)
        else:
            gw = gwp[0] if T == 1 else gwp.sum(axis=0)
        return gw.reshape(self.weight_shape)

    def _gather_forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None
    ) -> FloatArray:
        kh, kw = self.weight_shape[2:]
        OH, OW = self.out4[2:]
        cols, _, _, _ = _gather_taps(self.fname, x, kh, kw, self.kernel_stride, self.padding,
                                     self.dilation, OH, OW)
        y = np.einsum("ncakbl,ockl->noab", cols, weight)
        if bias is not None:
            y += bias[:, None, None]
        return np.ascontiguousarray(y, dtype=self.dtype)

    def _gather_backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        kh, kw = self.weight_shape[2:]
        OH, OW = g.shape[2:]
        cols, mask, ih, iw = _gather_taps(self.fname, x, kh, kw, self.kernel_stride,
                                          self.padding, self.dilation, OH, OW)
        gw = np.einsum("noab,ncakbl->ockl", g, cols).astype(self.dtype)
        contrib = np.einsum("noab,ockl->ncakbl", g, weight) * mask
        gx = np.zeros_like(x)
        # numpy's stub types ufunc.at's indices as an integer array only; a
        # tuple of slices and arrays is valid (numpy.ufunc.at's documentation).
        np.add.at(gx, (slice(None), slice(None), ih[:, :, None, None], iw[None, None, :, :]),  # type: ignore[arg-type]
                  contrib)
        return gx, gw


#: Channels (in and out) from which ``"auto"`` picks Winograd.
WINOGRAD_MIN_CHANNELS = 32
#: 2x2 output tiles (over the whole batch) from which ``"auto"`` picks Winograd.
WINOGRAD_MIN_TILES = 64
#: A 5x5 convolution (``winograd-5x5``): output channels and 2x2 output
#: tiles from which ``"auto"`` picks it, with WINOGRAD_MIN_CHANNELS input
#: channels.  Measured at one and two threads, padding 2: 32 -> 64 channels
#: on 32x32 (batch 32) 0.84-0.88x the direct forward's time, 64 -> 64 on
#: 28x28 or 56x56 0.67-0.78x, 128 -> 128 on 28x28 0.70-0.72x, 64 -> 64 on
#: 16x16 (batch 32) 0.83-0.92x; 32 output channels 0.84-1.13x (its four
#: views' input transforms weigh more), 14x14 maps of up to 784 tiles
#: 0.88-1.08x, 98 tiles 1.4-2.2x.
WINOGRAD5_MIN_OUT_CHANNELS = 64
WINOGRAD5_MIN_TILES = 1024
#: With AVX2 but not AVX-512 (its transforms relatively cheaper against its
#: products), from 32 output channels: on a Zen 3 core, padding 2, minimum
#: of 6 interleaved calls, forward time over the direct one's, one and two
#: threads: 32 -> 32 on 32x32 (batch 32) 0.84, 0.79; 64 -> 32 0.96, 0.78;
#: 128 -> 32 on 16x16 0.73, 0.75; 64 -> 32 on 28x28 (batch 8) 0.92, 0.91.
WINOGRAD5_MIN_OUT_CHANNELS_AVX2 = 32


#: ``"auto"`` runs a float64 3x3 convolution by Winograd F(2x2, 3x3) with at
#: least this many input and output channels, at most
#: ``WINOGRAD64_MAX_FILTERS`` channel pairs (its transformed filters, 128
#: bytes a pair, are read once per block of tiles) and at least
#: ``WINOGRAD64_MIN_TILES`` 2x2 output tiles.  Measured on a Zen 3 core,
#: minimum of 8 interleaved calls, time over the direct kernels' (forward,
#: backward) at one thread: 256 -> 256 on 14x14, batch 8: 0.69, 0.69; batch
#: 2 (98 tiles) 0.74, 0.67; 128 -> 128 on 28x28 0.70, 0.67; 64 -> 64 on
#: 32x32 (batch 32) 0.81, 0.73, on 56x56 0.68, 0.77, on 14x14 0.80, 0.82;
#: 48 -> 48 0.96, 0.96; 32 -> 32 1.05, 1.11; 512 -> 512 on 7x7 1.27, 0.94;
#: one 14x14 sample of 256 -> 256 (49 tiles) 1.14, 0.82.  At two threads:
#: 0.66-0.82.
WINOGRAD64_MIN_CHANNELS = 64
WINOGRAD64_MAX_FILTERS = 256 * 256
WINOGRAD64_MIN_TILES = 96


def _winograd64_pays(C: int, Co: int, tiles: int) -> bool:
    """Whether ``"auto"`` runs a float64 3x3 convolution of ``C -> Co``
    channels over ``tiles`` 2x2 output tiles by Winograd (see
    ``WINOGRAD64_MIN_CHANNELS``)."""
    return (min(C, Co) >= WINOGRAD64_MIN_CHANNELS and C * Co <= WINOGRAD64_MAX_FILTERS
            and tiles >= WINOGRAD64_MIN_TILES)


def _winograd5_pays(C: int, Co: int, tiles: int) -> bool:
    """Whether ``"auto"`` runs a 5x5 convolution of ``C -> Co`` channels and
    ``tiles`` 2x2 output tiles (Winograd can run it) as ``winograd-5x5``."""
    min_co = (WINOGRAD5_MIN_OUT_CHANNELS_AVX2 if _winograd.isa() == "avx2"
              else WINOGRAD5_MIN_OUT_CHANNELS)
    return C >= WINOGRAD_MIN_CHANNELS and Co >= min_co and tiles >= WINOGRAD5_MIN_TILES


#: Filters (C_out * C_in) from which the Winograd filter transforms and the
#: weight gradient's last step (memory-bound passes over the filters) run on
#: the plan's threads: on 2 cores, 64 x 64 filters took 0.03 ms on one
#: thread, 256 x 256 0.4 ms (each transform) and 0.6-0.9 ms (the last step).
WINOGRAD_FILTER_PARALLEL = 128 * 128
#: 2x2 output tiles below which a Winograd convolution runs on one thread:
#: measured on 2 cores, 64 tiles (a 16x16 map at batch 1) ran 10% slower on
#: two, 256 as fast, 512 20% faster.  (The forward and input gradient do not
#: depend on the thread count: tiles are independent.)
WINOGRAD_PARALLEL_TILES = 256


#: ``"auto"`` runs a dilated convolution (column dilation 2, AVX-512: its
#: results are written back every other column by masked stores) on its
#: phases from this many channels (in and out), or from twice
#: ``WINOGRAD_MIN_CHANNELS`` with ``WINOGRAD_PHASES_TILES`` 2x2 tiles over
#: the stacked phases, or with phases that tile the input and the result
#: exactly (copied out and back, see ``_phases_split_axis``) of at least
#: ``WINOGRAD_SPLIT_MIN_MAP`` outputs a side.  Measured at one thread,
#: float32 (phases / direct, forward and forward plus backward): read in
#: place, 128 channels 16x16 batch 8 0.80; 64 channels 32x32 batch 16 (4096
#: tiles) 0.90-0.97; 64 channels 16x16 batch 4 (256 tiles) 1.1-1.2; 32
#: channels 32x32 batch 16 1.3; dilation 3 (written back one value at a
#: time) 1.13.  Copied (padding = dilation, even sizes): 64 channels 32x32
#: batch 16 0.78, 0.68; 16x16 batch 1, 2, 4: 0.86, 0.80; 0.78, 0.69; 0.83,
#: 0.77; 8x8 batch 4 (4x4 phases) 1.00, 0.94; 32 channels 32x32 1.04, 0.98;
#: padding 1 (read in place) 64 channels 16x16 batch 4 1.37, 1.44.
#: With AVX2 (no masked stores to write back every other column) only the
#: copied phases: on a Zen 3 core, 64 channels 32x32 batch 16, minimum of 8
#: interleaved calls, 0.84 and 0.78 at one thread, 0.91 and 0.90 at two.
WINOGRAD_PHASES_CHANNELS = 128
WINOGRAD_PHASES_TILES = 2048
WINOGRAD_SPLIT_MIN_MAP = 8


#: Winograd F(4x4, 3x3) (36 multiplications per 4x4 output tile and channel
#: pair, against F(2x2, 3x3)'s 64) runs the forward pass (and the input
#: gradient) of a ``winograd`` or ``winograd-5x5`` convolution whose products
#: sum at least ``WINOGRAD4_MIN_CHANNELS`` channels (the input channels; a
#: 5x5 kernel's four views: 4 times them) into at least
#: ``WINOGRAD4_MIN_OUT_CHANNELS`` output channels, with at most
#: ``WINOGRAD4_MAX_FILTERS`` filters (summed times output channels), on maps
#: of at least ``WINOGRAD4_MIN_MAP`` outputs a side with
#: ``WINOGRAD4_MIN_TILES`` 4x4 output tiles per thread.  Measured on a Zen 3
#: core, time against F(2x2, 3x3)'s (filter transforms included), one
#: thread: 64 -> 64 channels on 16x16 (batch 8) 0.88, 32x32 (batch 32)
#: 0.72-0.76, 56x56 (batch 8) 0.69-0.81, 128 -> 128 on 28x28 (batch 8)
#: 0.77-0.86, 64 -> 32 and 128 -> 32 on 32x32 (batch 32) 0.67-0.72; 5x5
#: 32 -> 64 and 64 -> 64 on 32x32 0.74-0.75, its input gradient (256 -> 32
#: summed channels) 0.71; 14x14 (batch 8) 0.96-1.05, 7x7 to 12x12 1.1-2.0
#: (F(2x2, 3x3) has kernels for small maps), 49 tiles (28x28, batch 1)
#: 1.05-1.25; 256 -> 256 on 14x14 1.06-1.6 and a 5x5 128 -> 128 on 16x16
#: 1.13 (the filter transform, 36 points per filter, and the transformed
#: filters read for every block weigh more).  Two threads: 16x16 (batch 8,
#: 128 tiles) 1.15, 20x20 (200 tiles) 0.89, 28x28 (batch 8) 0.81.  Its
#: float32 error is larger (see ``_winograd.KC4``): on unit-variance data
#: with weights scaled by 1/sqrt(fan_in), 3.0-3.4x the direct algorithm's
#: relative RMS error from 64 summed channels (``benchmarks/
#: winograd_accuracy.py``), within the 4x that ``"auto"`` allows; summing
#: 32 channels, 3.9x.
WINOGRAD4_MIN_CHANNELS = 64
WINOGRAD4_MIN_OUT_CHANNELS = 32
WINOGRAD4_MAX_FILTERS = 128 * 128
WINOGRAD4_MIN_MAP = 16
WINOGRAD4_MIN_TILES = 128


def _winograd_tile(N: int, K: int, Co: int, OH: int, OW: int, threads: int) -> int:
    """The output tile side (2 or 4) of a float32 Winograd convolution
    whose products sum ``K`` channels into ``Co`` on N ``OH x OW`` maps on
    ``threads`` threads (see ``WINOGRAD4_MIN_CHANNELS``)."""
    tiles = N * -(-OH // 4) * -(-OW // 4)
    if (K >= WINOGRAD4_MIN_CHANNELS and Co >= WINOGRAD4_MIN_OUT_CHANNELS
            and K * Co <= WINOGRAD4_MAX_FILTERS and min(OH, OW) >= WINOGRAD4_MIN_MAP
            and tiles >= WINOGRAD4_MIN_TILES * threads):
        return 4
    return 2


def _winograd_obstacle(
    weight_shape: Shape, groups: int, stride: Pair, padding: Pair, dilation: Pair,
    itemsize: int,
) -> str | None:
    """Why Winograd's F(2x2, 3x3) (on four shifted views for a 5x5 kernel)
    cannot run this convolution (None: it can)."""
    if itemsize != 4 and weight_shape[2:] != (3, 3):
        return (f"a float64 {weight_shape[2]}x{weight_shape[3]} kernel (float64 Winograd "
                f"needs 3x3)")
    if weight_shape[2:] not in ((3, 3), (5, 5)):
        return f"a {weight_shape[2]}x{weight_shape[3]} kernel (Winograd needs 3x3 or 5x5)"
    if groups != 1:
        return f"groups = {groups} (Winograd needs 1)"
    if stride != (1, 1) or dilation != (1, 1):
        return "stride or dilation > 1 (Winograd needs 1)"
    if max(padding) > 2:
        return f"padding {padding} (Winograd needs at most 2)"
    return None


def _phase_axis(size: int, out: int, p: int, d: int) -> tuple[int, int]:
    """(padding P, length) of the phase buffers along one axis of a
    stride-1 convolution dilated by ``d`` (input ``size``, padding ``p``,
    ``out`` outputs): phase r's element i is the padded input's ``r + d *
    (i + P)``, and the phase convolution (undilated, padding P) gives the
    ``ceil(out / d)`` outputs of the longest phase.  P is the largest (at
    most 2 and ``p // d``) for which every element a phase's outputs read
    through that padding is padding of the original input."""
    om = -(-out // d)
    for P in range(min(2, p // d), 0, -1):
        n = om + 2 - 2 * P
        # the first element past the buffer, for each phase that reads it
        if all(r + d * (n + P) >= p + size for r in range(d) if len(range(r, out, d)) + P > om):
            return P, n
    return 0, om + 2


def _phases_split_axis(size: int, out: int, p: int, d: int) -> bool:
    """True when along this axis the phases tile the input and the result
    exactly: no offset (``p == d * P``, see :func:`_phase_axis`), and input
    and result lengths multiples of ``d`` filled by the phase buffers."""
    P, n = _phase_axis(size, out, p, d)
    return p == d * P and n * d == size and out % d == 0


def _conv_method(
    x4: Shape, weight_shape: Shape, groups: int, stride: Pair, padding: Pair, itemsize: int,
    dilation: Pair = (1, 1), algorithm: str = "direct", out_hw: Pair = (1, 1),
    subsample: bool = True,
) -> tuple[str, str]:
    """(name, reason) of the algorithm of a conv2d geometry: every choice of
    ``ConvPlan.method`` is made here (one branch per method).  ``algorithm``
    is the :func:`cnnext.set_conv_algorithm` setting; ``"auto"`` picks
    Winograd for a float32 3x3 stride-1 convolution (groups 1, padding <= 2)
    with at least ``WINOGRAD_MIN_CHANNELS`` input and output channels and
    ``WINOGRAD_MIN_TILES`` 2x2 output tiles over the batch (below either,
    measured at one thread, the direct kernels were as fast or faster), a
    5x5 one where :func:`_winograd5_pays`, and
    Winograd on the dilation phases for a dilated one where
    ``WINOGRAD_PHASES_CHANNELS`` / ``WINOGRAD_PHASES_TILES`` /
    ``WINOGRAD_SPLIT_MIN_MAP`` say."""
    N, C, H, W = x4
    Co, Cw, kh, kw = weight_shape
    if N == 0 or Co == 0 or Cw * kh * kw == 0 or H == 0 or W == 0:
        return "empty", "nothing to read: the result is zeros (or the bias)"
    if groups > 1 and groups == C and Cw == 1 and not _needs_gather(1, H, W, stride, padding,
                                                                    itemsize):
        return "depthwise", (f"groups = C_in = {C}: one filter plane per channel "
                             f"(x{Co // C}), the direct per-plane kernels")
    if groups > 1:
        return "grouped", (f"groups = {groups}: the algorithms of one group's convolution, "
                           f"every group at once")
    if _needs_gather(C, H, W, stride, padding, itemsize):
        return "gather", "the padded input would not fit in memory"
    if subsample and (kh, kw) == (1, 1) and padding == (0, 0) and stride != (1, 1):
        return "subsampled", (f"a 1x1 kernel at stride {stride}: the input at the output's "
                              f"positions, then the stride-1 1x1 convolution on it")
    if algorithm != "direct" and dilation != (1, 1) and (kh, kw) == (3, 3) and itemsize == 4:
        obstacle = _winograd_obstacle(weight_shape, groups, stride, (0, 0), (1, 1), itemsize)
        if obstacle is None and out_hw[0] >= dilation[0] and out_hw[1] >= dilation[1]:
            dh, dw = dilation
            tiles = N * dh * dw * -(-out_hw[0] // (2 * dh)) * -(-out_hw[1] // (2 * dw))
            phases = (f"on the {dh * dw} undilated phase convolutions of a dilation "
                      f"{dilation}")
            if algorithm == "winograd":
                return "winograd-phases", (
                    f"Winograd F(2x2, 3x3), as set by set_conv_algorithm, {phases}")
            split = (_phases_split_axis(H, out_hw[0], padding[0], dh)
                     and _phases_split_axis(W, out_hw[1], padding[1], dw)
                     and min(out_hw[0] // dh, out_hw[1] // dw) >= WINOGRAD_SPLIT_MIN_MAP)
            isa = _winograd.isa()
            if (dw == 2 and (isa == "avx512" or (isa == "avx2" and split))
                    and (min(C, Co) >= WINOGRAD_PHASES_CHANNELS
                         or (min(C, Co) >= WINOGRAD_MIN_CHANNELS * 2
                             and (tiles >= WINOGRAD_PHASES_TILES or split)))):
                return "winograd-phases", (
                    f"auto: 3x3 stride 1 float32 with {C} -> {Co} channels and {tiles} 2x2 "
                    f"output tiles: Winograd F(2x2, 3x3) {phases}"
                    + (", copied out and back" if split else ""))
    if algorithm != "direct":
        obstacle = _winograd_obstacle(weight_shape, groups, stride, padding, dilation,
                                      itemsize)
        five = (kh, kw) == (5, 5)
        tiles = N * -(-out_hw[0] // 2) * -(-out_hw[1] // 2)
        if obstacle is None and itemsize == 8:
            if algorithm == "winograd":
                return "winograd-float64", ("Winograd F(2x2, 3x3) in float64, as set by "
                                            "set_conv_algorithm")
            if _winograd64_pays(C, Co, tiles):
                return "winograd-float64", (
                    f"auto: 3x3 stride 1 float64 with {C} -> {Co} channels and {tiles} 2x2 "
                    f"output tiles: Winograd F(2x2, 3x3)")
            return "direct", "fused-im2col GEMM on the micro-kernels"
        if algorithm == "winograd":
            if obstacle is None and five:
                return "winograd-5x5", ("Winograd F(2x2, 3x3) on four shifted views, as set "
                                        "by set_conv_algorithm")
            if obstacle is None:
                return "winograd", "Winograd F(2x2, 3x3), as set by set_conv_algorithm"
            return "direct", f"fused-im2col GEMM: Winograd was set, but {obstacle}"
        if obstacle is None and five:
            if _winograd5_pays(C, Co, tiles):
                return "winograd-5x5", (
                    f"auto: 5x5 stride 1 float32 with {C} -> {Co} channels and {tiles} 2x2 "
                    f"output tiles: Winograd F(2x2, 3x3) on four shifted views")
        elif (obstacle is None and min(C, Co) >= WINOGRAD_MIN_CHANNELS
                and tiles >= WINOGRAD_MIN_TILES):
            return "winograd", (f"auto: 3x3 stride 1 float32 with {C} -> {Co} channels and "
                                f"{tiles} 2x2 output tiles: Winograd F(2x2, 3x3)")
    return "direct", "fused-im2col GEMM on the micro-kernels"


def conv2d_plan(
    fname: str, x_shape: Shape, weight_shape: Shape, bias_shape: Shape | None,
    dtype: FloatDType, stride: Pair, padding: Pair | str, dilation: Pair, groups: int = 1,
    algorithm: str = "direct", one_group: bool = False,
) -> ConvPlan:
    """Validate a conv2d geometry and decide how it runs (a :class:`ConvPlan`).

    ``x_shape`` is 3-D or 4-D and ``weight_shape`` 4-D (checked by the
    caller); ``bias_shape`` is None without a bias; ``stride``/``padding``/
    ``dilation`` are normalised pairs (``padding`` may be ``"same"`` or
    ``"valid"``), ``groups`` an int >= 1 and ``algorithm`` the
    :func:`cnnext.set_conv_algorithm` setting (the callers that do not take
    it, transposed and 1-D convolutions, run direct).  ``one_group``: the
    plan of one group of a grouped convolution, whose groups run together
    on the direct kernels (never ``subsampled``).
    """
    Co, Cw, kh, kw = weight_shape
    V.conv_groups(fname, x_shape, len(x_shape) - 3, weight_shape, groups)
    if groups == 1:
        V.channels_match(fname, x_shape, Cw, "weight.shape[1]")
    if kh < 1 or kw < 1:
        raise ValueError(f"{fname}: weight kernel size must be >= 1, got {kh}x{kw}")
    V.bias_shape(fname, bias_shape, Co)
    has_bias = bias_shape is not None
    unb = len(x_shape) == 3
    N, C, H, W = ((1,) + tuple(x_shape)) if unb else tuple(x_shape)
    s, d = stride, dilation
    p2, extra = V.resolve_padding(fname, padding, s, (kh, kw), d)
    p = cast("Pair", p2)
    pad_extra = cast("Pair", extra) if any(extra) else None
    H, W = H + extra[0], W + extra[1]
    OH = V.conv_out_size(fname, H, kh, s[0], p[0], d[0], "height")
    OW = V.conv_out_size(fname, W, kw, s[1], p[1], d[1], "width")
    ks = s
    if OH == 1 or OW == 1:
        ks = _effective_stride(s, (OH, OW), (H + 2 * p[0], W + 2 * p[1]), (kh, kw), d)
    V.check_alloc(fname, (N, Co, OH, OW), dtype.itemsize)
    K = Cw * kh * kw
    macs = N * Co * K * OH * OW
    threads = threads_for(macs)
    gi, gi_why = _grad_input_method(ks, p, d, (kh, kw), dtype.itemsize, Cw)
    method, why = _conv_method((N, C, H, W), weight_shape, groups, ks, p, dtype.itemsize, d,
                               algorithm, (OH, OW), subsample=not one_group)
    if method in ("empty", "gather"):
        gi, gi_why = method, why
    MR, NR, KC = _gemm.block_sizes(dtype)
    Wq = -(-(W + 2 * p[1]) // ks[1])
    Hq = -(-(H + 2 * p[0]) // ks[0])
    Cgi, Cgo = C // groups, Co // groups  # one group's channels
    units = N * groups * -(-(OH * Wq) // KC)
    tasks = max(1, min(threads, units))
    planes = (kh, kw) == (1, 1) and ks == (1, 1) and p == (0, 0) and groups == 1
    if planes:
        # (measured at one thread, 1x1 over 7x7 to 56x56 maps, C_in 8-64 ->
        # C_out 16-64: 1.0-6x faster than the dot products or the small
        # kernels in float32, 0.9-2.5x in float64)
        gw, gw_why = "transposed", ("a 1x1 kernel at stride 1: each tap a whole input plane, "
                                    "read in place; only the gradient packed")
    elif K < 32 and dtype.itemsize == 4 and Co > NR // 2:
        # (float32, measured at one and two threads: 1 -> 32 to 3 -> 64
        # channels, K = 9-27 taps, 80 to 12656 positions per sample: 0.25-0.87x
        # the dot products' time; with 16 output channels and long rows the
        # two are alike)
        gw, gw_why = "transposed", (f"few taps (K = {K}) into {Co} output channels: taps "
                                    f"read in place, only the gradient packed")
    elif (K <= 64 and (K < 32 or OH * Wq >= 256 or dtype.itemsize == 8)) or Co <= NR // 4:
        gw, gw_why = "dot", (f"few taps (K = {K}) or output channels (C_out = {Co}): "
                             f"dot products, nothing packed")
    elif K <= 64:
        # (float32, measured at one thread: K = 32-64 taps over short rows --
        # a 7x7 or 14x14 map, a strided 1x1 shortcut -- ran 1.1-3.5x faster
        # transposed; from 256 positions per sample the dot products win)
        gw, gw_why = "transposed", (f"{K} taps over short rows ({OH * Wq} positions per "
                                    f"sample): taps read in place, only the gradient packed")
    elif (Co < NR // 2 or (Co == NR // 2 and dtype.itemsize == 8)) and OH * Wq >= 256:
        # (float32 C_out = 16 fills the one-vector panel of the transposed
        # schedule's 16 x 16 kernel: measured 10-20% faster there, K >= 108)
        gw, gw_why = "dot", (f"C_out = {Co} fills less than half a {NR}-column panel, and "
                             f"long rows ({OH * Wq} positions per sample): dot products")
    else:
        gw, gw_why = "transposed", "taps read in place, only the gradient packed"
    if gw == "transposed" and dtype.itemsize == 8 and Co * K * 8 >= SPLIT_MIN_BYTES:
        gw, gw_why = "split", (f"taps read in place, only the gradient packed; a {K} x {Co} "
                               f"float64 result: one, its rows split between the threads "
                               f"sample by sample")
    small_gw, small_gi = _small_backward(Cgi, Cgo, H, W, (kh, kw), ks, p, dtype.itemsize)
    if method in ("empty", "gather"):
        small_gw, small_gi = None, False
    if planes:
        small_gw = None
    if small_gw == "small":
        gw, gw_why = "small", (f"few channels ({Cgi} -> {Cgo}) on a small map: the direct "
                               f"kernel, one vector of output channels per tap")
    elif small_gw == "pvec":
        gw, gw_why = "pvec", (f"few channels ({Cgi} -> {Cgo}) and taps ({K}) on a small map: "
                              f"the direct kernel, vectors of positions")
    if small_gi:
        gi, gi_why = "small", (f"few channels ({Cgi} -> {Cgo}) on a small map, stride 1: "
                               f"the direct kernel over the input's positions")
    prepared = ks[0] * ks[1] * Cgi * Hq * Wq if (p != (0, 0) or ks != (1, 1)) else 0
    scratch = (tasks * (KC * NR + -(-Cgo // MR) * MR * NR + prepared)
               + groups * -(-Cgo // MR) * MR * K)
    scratch *= dtype.itemsize
    if dtype.itemsize == 8 and Cgo * K * 8 > 1 << 20:
        # the forward's chunks of tiles (a float64 weight over 1 MB): up to
        # 512 KB of result tiles per thread
        scratch += tasks * (512 << 10)
    group_plan = phase_plan = None
    phase_pad: Pair = (0, 0)
    phase_split = False
    if method == "winograd-phases":
        (P, Hb), (Q, Wb) = _phase_axis(H, OH, p[0], d[0]), _phase_axis(W, OW, p[1], d[1])
        phase_pad = (P, Q)
        phase_split = (_phases_split_axis(H, OH, p[0], d[0])
                       and _phases_split_axis(W, OW, p[1], d[1]))
        phase_plan = conv2d_plan(fname, (N * d[0] * d[1], C, Hb, Wb), weight_shape, bias_shape,
                                 dtype, (1, 1), phase_pad, (1, 1), 1, "winograd")
        gi = gw = method
        gi_why = gw_why = "Winograd F(2x2, 3x3) on the stacked phases: see phase_plan"
        tasks, threads = phase_plan.grad_weight_tasks, phase_plan.threads
        scratch = phase_plan.scratch_bytes
    winograd_tiles: Pair = (2, 2)
    if method == "winograd":
        if N * -(-OH // 2) * -(-OW // 2) < WINOGRAD_PARALLEL_TILES:
            threads = 1
        winograd_tiles = (_winograd_tile(N, C, Co, OH, OW, threads),
                          _winograd_tile(N, Co, C, H, W, threads))
        if winograd_tiles[0] == 4:
            why = why.replace("F(2x2, 3x3)", "F(4x4, 3x3)")
        gi = gw = "winograd"
        m = winograd_tiles[1]
        gi_why = f"Winograd F({m}x{m}, 3x3) on g with the rotated, transposed filters"
        gw_why = "Winograd F(2x2, 3x3): per-point products of transformed g and x"
        tasks = _winograd.weight_grad_threads(N, OH, OW, threads, Co, C)
        tb, Cmax = _winograd.tile_block(), max(C, Co) + MR
        xi = 36 if 4 in winograd_tiles else 16
        scratch = (threads * xi * tb * (1 + 2 * Cmax) + xi * Cmax * Cmax * (1 + tasks)) * 4
        # the weight gradient's blocks may be larger (fewer additions into dU)
        tbw = _winograd.weight_grad_tiles(N, OH, OW, threads, Co, C)
        scratch = max(scratch, (threads * 16 * tbw * (1 + 2 * Cmax)
                                + 16 * Cmax * Cmax * (1 + tasks)) * 4)
    if method == "winograd-float64":
        gi, gi_why = method, "Winograd F(2x2, 3x3) on g with the rotated, transposed filters"
        gw, gw_why = method, "Winograd F(2x2, 3x3): per-point products of transformed g and x"
        tasks = max(1, min(threads, -(-C // NR)))
        T = N * -(-OH // 2) * -(-OW // 2)
        tb, tbw = _winograd64.block_tiles(T, threads), _winograd64.grad_weight_tiles(T)
        Cmax = -(-max(C, Co) // MR) * MR + NR
        scratch = 16 * 8 * max(Cmax * Cmax + threads * tb * 2 * Cmax,
                               Co * C + tasks * tbw * 2 * Cmax)
    if method == "winograd-5x5":
        # the products run over the four views' 4 * C_in channels
        winograd_tiles = (_winograd_tile(N, 4 * C, Co, OH, OW, threads),
                          _winograd_tile(N, 4 * Co, C, H, W, threads))
        if winograd_tiles[0] == 4:
            why = why.replace("F(2x2, 3x3)", "F(4x4, 3x3)")
        gtiles = N * -(-H // 2) * -(-W // 2)
        if min(p) >= 2 and (algorithm == "winograd" or _winograd5_pays(Co, C, gtiles)):
            gi = "winograd-5x5"
            m = winograd_tiles[1]
            gi_why = (f"Winograd F({m}x{m}, 3x3) on four shifted views of g, with the rotated, "
                      f"transposed filters")
        tb, Cmax = _winograd.tile_block(), 4 * max(C, Co) + max(C, Co) + MR
        xi = 36 if 4 in winograd_tiles else 16
        scratch = max(scratch, (threads * xi * tb * (1 + 2 * Cmax) + 4 * xi * C * Co) * 4)
    if method == "depthwise":
        gi = gw = "depthwise"
        gi_why = gw_why = "the depthwise kernels, one channel plane per task"
        tasks = max(1, min(threads, N * C))
        rows = (OH - 1) * ks[0] + (kh - 1) * d[0] + 1
        cols = ks[1] * (-(-OW // 16) * 16 + (kw - 1) * d[1] // ks[1])
        scratch = tasks * rows * cols * dtype.itemsize
    if method == "grouped":
        group_plan = conv2d_plan(fname, (N, C // groups, H, W), (Co // groups, Cw, kh, kw),
                                 None, dtype, s, p, d, one_group=True)
        gi = gw = "grouped"
        gi_why = gw_why = "every group at once by group_plan's algorithms"
        if group_plan.method != "direct":  # the groups run one after the other
            gi_why = gw_why = "group by group: see group_plan"
            tasks, threads = group_plan.grad_weight_tasks, group_plan.threads
            scratch = group_plan.scratch_bytes
    sub_plan = None
    if method == "subsampled":
        sub_plan = conv2d_plan(fname, (N, C, OH, OW), weight_shape, bias_shape, dtype, (1, 1),
                               (0, 0), (1, 1))
        gw, gw_why = sub_plan.grad_weight, ("on the input at the output's positions: "
                                            + sub_plan.grad_weight_reason)
        tasks = sub_plan.grad_weight_tasks
        scratch = sub_plan.scratch_bytes + N * C * OH * OW * dtype.itemsize
    fk = ""
    if method == "direct":
        fk = _conv.forward_kernel(dtype.itemsize == 4, C, Co, H, W, kh, kw, ks[0], ks[1], p[0],
                                  p[1], d[0], d[1], OH, OW)
        if fk != "tiles":
            why += f"; the forward on the {fk} kernel"
    out_shape = (Co, OH, OW) if unb else (N, Co, OH, OW)
    kernel_args = (ks[0], ks[1], p[0], p[1], d[0], d[1], threads)
    return ConvPlan(
        fname, dtype, tuple(x_shape), tuple(weight_shape), out_shape, has_bias, s, p, d, ks,
        method, why, gi, gi_why, gw, gw_why, tasks, threads, scratch,
        (N, C, H, W), (N, Co, OH, OW), kernel_args,
        groups=groups, pad_extra=pad_extra, group_plan=group_plan, algorithm=algorithm,
        phase_plan=phase_plan, phase_pad=phase_pad, phase_split=phase_split, sub_plan=sub_plan,
        forward_kernel=fk, winograd_tiles=winograd_tiles,
    )


@dataclass(frozen=True, slots=True)
class ConvTransposePlan:
    """How one ``conv_transpose2d`` (or ``full_conv2d``) geometry runs: the
    input gradient of the convolution whose weight it shares, ``grad_input``
    naming the algorithm as for :class:`ConvPlan` (every group in one kernel
    call when ``groups > 1``; ``col2im`` group by group).  ``adjoint`` is the plan of that
    convolution applied to this op's output: its forward is this op's input
    gradient and its weight gradient this op's (see :meth:`backward`)."""

    dtype: FloatDType
    x_shape: Shape
    weight_shape: Shape
    out_shape: Shape
    stride: Pair
    padding: Pair
    output_padding: Pair
    dilation: Pair
    grad_input: str
    reason: str
    threads: int
    groups: int = 1
    adjoint: ConvPlan | None = None

    def forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None
    ) -> FloatArray:
        unb = len(self.x_shape) == 3
        out4 = ((1,) + self.out_shape) if unb else self.out_shape
        x4 = x[None] if unb else x
        if self.grad_input == "empty":
            y = np.zeros(out4, dtype=self.dtype)
            if bias is not None:
                y += bias[:, None, None]
        else:
            y = grad_input(x4, weight, out4[2:], self.stride, self.padding, self.dilation,
                           self.grad_input, self.threads, self.groups, bias)
        return y[0] if unb else y

    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: Literal[True] = True,
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool, need_input: bool
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]: ...
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: bool = True,
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]:
        """(grad_x or None, grad_weight, grad_bias or None) for upstream ``g``.

        grad_x is the adjoint convolution of ``g`` (cropped to x: with
        ``output_padding`` it can see a row or column more); grad_weight is
        that convolution's weight gradient with ``x`` (zero-extended to its
        output) as the upstream gradient.
        """
        unb = len(self.x_shape) == 3
        g4, x4 = (g[None], x[None]) if unb else (g, x)
        gb = bias_grad(g4) if bias else None
        adj = self.adjoint
        if adj is None:  # nothing was scattered
            gx = np.zeros(x.shape, dtype=self.dtype) if need_input else None
            return gx, np.zeros(self.weight_shape, dtype=self.dtype), gb
        H, W = x4.shape[2:]
        OH, OW = adj.out4[2:]
        gx = None
        if need_input:
            gx = adj.forward(g4, weight, None)
            if (OH, OW) != (H, W):
                gx = np.ascontiguousarray(gx[:, :, :H, :W])
            if unb:
                gx = gx[0]
        xe = x4 if (OH, OW) == (H, W) else np.pad(
            x4, ((0, 0), (0, 0), (0, OH - H), (0, OW - W)))
        _, gw, _ = adj.backward(xe, g4, weight, False, False)
        return gx, gw, gb


def conv_transpose2d_plan(
    fname: str, x_shape: Shape, weight_shape: Shape, bias_shape: Shape | None,
    dtype: FloatDType, stride: Pair, padding: Pair, output_padding: Pair, dilation: Pair,
    groups: int = 1,
) -> ConvTransposePlan:
    """Validate a transposed-convolution geometry (normalised pairs, ``groups``
    an int >= 1) and plan it."""
    Ci, Cog, kh, kw = weight_shape
    Co = Cog * groups
    V.channels_match(fname, x_shape, Ci, "weight.shape[0]")
    V.conv_groups(fname, x_shape, len(x_shape) - 3, weight_shape, groups, transposed=True)
    if kh < 1 or kw < 1:
        raise ValueError(f"{fname}: weight kernel size must be >= 1, got {kh}x{kw}")
    V.bias_shape(fname, bias_shape, Co)
    s, p, op, d = stride, padding, output_padding, dilation
    for ax, name in enumerate(("height", "width")):
        if op[ax] >= max(s[ax], d[ax]):
            raise ValueError(
                f"{fname}: output_padding must be smaller than stride or dilation "
                f"along {name}: output_padding {op[ax]}, stride {s[ax]}, dilation {d[ax]}"
            )
    unb = len(x_shape) == 3
    N, _, H, W = ((1,) + tuple(x_shape)) if unb else tuple(x_shape)
    out_hw = []
    for ax, (size, k, name) in enumerate(((H, kh, "height"), (W, kw, "width"))):
        o = (size - 1) * s[ax] - 2 * p[ax] + d[ax] * (k - 1) + op[ax] + 1
        if o < 1:
            raise ValueError(
                f"{fname}: output size along {name} would be {o} (< 1): input size "
                f"{size}, kernel {k}, stride {s[ax]}, padding {p[ax]}, dilation "
                f"{d[ax]}, output_padding {op[ax]}"
            )
        out_hw.append(o)
    OH, OW = out_hw
    V.check_alloc(fname, (N, Co, OH, OW), dtype.itemsize)
    if N * Ci * H * W == 0 or Co == 0:
        method, why = "empty", "nothing to scatter: the result is zeros (or the bias)"
    elif op != (0, 0):
        method, why = "col2im", "output_padding: col2im scatter"
    else:
        method, why = _grad_input_method(s, p, d, (kh, kw), dtype.itemsize, Cog)
    if groups > 1:
        why += (f", group by group on the {groups} groups' channels" if method == "col2im"
                else f", the {groups} groups in one kernel call")
    out_shape = (Co, OH, OW) if unb else (N, Co, OH, OW)
    threads = threads_for(N * Ci * Cog * kh * kw * H * W)
    adjoint = None
    if method != "empty":
        adjoint = conv2d_plan(fname, (N, Co, OH, OW), tuple(weight_shape), None, dtype, s, p, d,
                              groups)
    return ConvTransposePlan(dtype, tuple(x_shape), tuple(weight_shape), out_shape, s, p, op,
                             d, method, why, threads, groups, adjoint)


@dataclass(frozen=True, slots=True)
class Conv1dPlan:
    """How one ``conv1d`` geometry runs: ``plan2d``, the :class:`ConvPlan` of
    the ``(N, C, 1, L)`` images, with the user's shapes around it."""

    x_shape: Shape
    weight_shape: Shape
    out_shape: Shape
    plan2d: ConvPlan

    def forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None
    ) -> FloatArray:
        p = self.plan2d
        return p.forward(x.reshape(p.x_shape), weight[:, :, None], bias).reshape(self.out_shape)

    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: Literal[True] = True,
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool, need_input: bool
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]: ...
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: bool = True,
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]:
        """(grad_x or None, grad_weight, grad_bias or None) for upstream ``g``."""
        p = self.plan2d
        gx, gw, gb = p.backward(g.reshape(p.out_shape), x.reshape(p.x_shape), weight[:, :, None],
                                bias, need_input)
        return (None if gx is None else gx.reshape(self.x_shape)), gw.reshape(
            self.weight_shape), gb


def conv1d_plan(
    fname: str, x_shape: Shape, weight_shape: Shape, bias_shape: Shape | None,
    dtype: FloatDType, stride: int, padding: int | str, dilation: int, groups: int,
) -> Conv1dPlan:
    """Validate a conv1d geometry ((N, C, L) or (C, L) input, (C_out, C/groups,
    k) weight, normalised ints) and plan it as a conv2d of (1, L) images."""
    Co, Cw, k = weight_shape
    axis = len(x_shape) - 2
    V.conv_groups(fname, x_shape, axis, weight_shape, groups)
    if x_shape[axis] != Cw * groups:  # groups == 1 (conv_groups checked the others)
        raise ValueError(f"{fname}: x.shape[{axis}] ({x_shape[axis]}) must equal "
                         f"weight.shape[1] ({Cw}), the number of input channels")
    if k < 1:
        raise ValueError(f"{fname}: weight kernel size must be >= 1, got {k}")
    (p,), (extra,) = V.resolve_padding(
        fname, padding if isinstance(padding, str) else (padding,), (stride,), (k,), (dilation,))
    V.conv_out_size(fname, x_shape[-1] + extra, k, stride, p, dilation, "length")
    N = x_shape[0] if len(x_shape) == 3 else 1
    plan2d = conv2d_plan(fname, (N, x_shape[axis], 1, x_shape[-1]), (Co, Cw, 1, k), bias_shape,
                         dtype, (1, stride), padding if isinstance(padding, str) else (0, padding),
                         (1, dilation), groups)
    out_shape = tuple(x_shape[:-2]) + (Co, plan2d.out_shape[-1])
    return Conv1dPlan(tuple(x_shape), tuple(weight_shape), out_shape, plan2d)


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------


_MAX_KINDS = ("max", "adaptive_max")
_INT64 = np.dtype(np.int64)


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """How one pooling geometry runs, forward and backward.

    ``kind`` is ``"max"``/``"avg"`` (a kernel window) or
    ``"adaptive_max"``/``"adaptive_avg"`` (PyTorch's adaptive windows);
    ``method`` names the kernels: ``"windows"``, ``"adaptive"``,
    ``"global"`` (an adaptive average to 1x1: one sum per plane, the head of
    a ResNet) or ``"indices"`` (a max-pool backward from shapes alone).
    """

    fname: str
    kind: str
    dtype: FloatDType
    x_shape: Shape
    out_shape: Shape
    kernel_size: Pair | None   # None: adaptive, or a max-pool backward plan from shapes
    stride: Pair | None
    padding: Pair | None
    threads: int
    kernel_args: tuple[int, ...]   # the kernel's geometry arguments, then the thread count
    dilation: Pair = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    method: str = "windows"
    reason: str = ""

    def forward(
        self, x: FloatArray, indices: bool = True
    ) -> FloatArray | tuple[FloatArray, IndexArray | None]:
        """max: (y, indices), or (y, None) with ``indices=False``; avg: y."""
        unb = len(self.x_shape) == 3
        if self.kind == "max" and self.method == "windows":
            # (the common case first; outputs allocated by the kernel module)
            oh, ow = self.out_shape[-2:]
            y, idx = _pool.max_pool2d_forward_new(x[None] if unb else x, oh, ow, indices,
                                                  *self.kernel_args)
            if unb:
                return y[0], None if idx is None else idx[0]
            return y, idx
        y = np.empty(self.out_shape, dtype=self.dtype)
        x4, y4 = (x[None], y[None]) if unb else (x, y)
        if self.kind == "adaptive_max":
            idx = np.empty(self.out_shape, dtype=_INT64) if indices else None
            i4 = idx[None] if unb and idx is not None else idx
            _pool.adaptive_max_pool2d_forward(x4, y4, i4, *self.kernel_args)
            return y, idx
        if self.method == "windows":
            _pool.avg_pool2d_forward(x4, y4, *self.kernel_args)
        elif self.method == "global":
            _pool.global_avg_pool2d_forward(x4, y4, *self.kernel_args)
        else:
            _pool.adaptive_avg_pool2d_forward(x4, y4, *self.kernel_args)
        return y

    def backward(self, g: FloatArray, indices: IndexArray | None = None) -> FloatArray:
        """grad_x from upstream ``g`` (and, for max, the forward's indices)."""
        unb = len(self.x_shape) == 3
        gx = np.empty(self.x_shape, dtype=self.dtype)
        g4, gx4 = (g[None], gx[None]) if unb else (g, gx)
        if self.kind in _MAX_KINDS:
            idx = cast("IndexArray", indices)  # the forward's, given for max pooling
            _pool.max_pool2d_backward(g4, idx[None] if unb else idx, gx4, self.threads)
        elif self.method == "windows":
            _pool.avg_pool2d_backward(g4, gx4, *self.kernel_args)
        elif self.method == "global":
            _pool.global_avg_pool2d_backward(g4, gx4, *self.kernel_args)
        else:
            _pool.adaptive_avg_pool2d_backward(g4, gx4, *self.kernel_args)
        return gx


def max_pool2d_backward_plan(
    fname: str, x_shape: Shape, out_shape: Shape, dtype: FloatDType
) -> PoolPlan:
    """The plan of a max-pool backward pass from shapes alone (the argmax
    indices carry the geometry: kernel, dilation, ceil_mode or adaptive)."""
    threads = threads_for(math.prod(x_shape), elements=True)
    return PoolPlan(fname, "max", dtype, tuple(x_shape), tuple(out_shape), None, None, None,
                    threads, (), method="indices", reason="the indices carry the geometry")


def pool2d_plan(
    fname: str, kind: str, x_shape: Shape, dtype: FloatDType, kernel_size: Pair, stride: Pair,
    padding: Pair, dilation: Pair = (1, 1), ceil_mode: bool = False,
    count_include_pad: bool = True, divisor_override: int | None = None,
    axes: tuple[str, str] = ("height", "width"),
) -> PoolPlan:
    """Validate a max/avg pooling geometry (normalised pairs) and plan it.

    ``axes`` names the two spatial axes in messages (a 1-D pool is a 2-D
    pool of height 1)."""
    H, W = x_shape[-2:]
    k, s, p, d = kernel_size, stride, padding, dilation
    OH = V.pool_out_size(fname, H, k[0], s[0], p[0], axes[0], d[0], ceil_mode)
    OW = V.pool_out_size(fname, W, k[1], s[1], p[1], axes[1], d[1], ceil_mode)
    out_shape = tuple(x_shape[:-2]) + (OH, OW)
    V.check_alloc(fname, out_shape, dtype.itemsize + (8 if kind == "max" else 0))
    if kind == "max" and H * W >= 2**31:
        raise ValueError(
            f"{fname}: an input plane must have fewer than 2**31 elements "
            f"(H*W = {H}*{W} = {H * W})"
        )
    threads = threads_for(math.prod(x_shape), elements=True)
    geom = (k[0], k[1], s[0], s[1], p[0], p[1])
    if kind == "max":
        kernel_args: tuple[int, ...] = geom + (d[0], d[1], threads)
    else:
        kernel_args = geom + (int(count_include_pad), divisor_override or 0, threads)
    return PoolPlan(fname, kind, dtype, tuple(x_shape), out_shape, k, s, p, threads,
                    kernel_args, d, ceil_mode, count_include_pad, divisor_override)


def adaptive_pool2d_plan(
    fname: str, kind: str, x_shape: Shape, dtype: FloatDType, output_size: Pair
) -> PoolPlan:
    """Plan an adaptive pool (``kind`` "adaptive_max"/"adaptive_avg") of an
    input with non-empty planes (checked by the caller) to ``output_size``."""
    out_shape = tuple(x_shape[:-2]) + tuple(output_size)
    V.check_alloc(fname, out_shape, dtype.itemsize + (8 if kind == "adaptive_max" else 0))
    threads = threads_for(math.prod(x_shape), elements=True)
    if kind == "adaptive_avg" and tuple(output_size) == (1, 1):
        method, why = "global", "a 1x1 output: the mean of each plane, one contiguous sum"
    else:
        method, why = "adaptive", "windows [floor(i*H/OH), ceil((i+1)*H/OH))"
    return PoolPlan(fname, kind, dtype, tuple(x_shape), out_shape, None, None, None, threads,
                    (threads,), method=method, reason=why)


@dataclass(frozen=True, slots=True)
class UnpoolPlan:
    """How one ``max_unpool2d`` geometry runs: a scatter forward, a gather backward."""

    fname: str
    dtype: FloatDType
    x_shape: Shape
    out_shape: Shape
    threads: int

    def forward(self, x: FloatArray, indices: IndexArray) -> FloatArray:
        """Zeros of ``out_shape`` with each value of ``x`` at its index."""
        y = np.empty(self.out_shape, dtype=self.dtype)
        if len(self.x_shape) == 3:
            _pool.max_unpool2d_forward(x[None], indices[None], y[None], self.threads)
        else:
            _pool.max_unpool2d_forward(x, indices, y, self.threads)
        return y

    def backward(self, g: FloatArray, indices: IndexArray) -> FloatArray:
        """The upstream gradient read back at each index."""
        gx = np.empty(self.x_shape, dtype=self.dtype)
        if len(self.x_shape) == 3:
            _pool.max_unpool2d_backward(g[None], indices[None], gx[None], self.threads)
        else:
            _pool.max_unpool2d_backward(g, indices, gx, self.threads)
        return gx


def max_unpool2d_plan(
    fname: str, x_shape: Shape, dtype: FloatDType, output_size: Pair
) -> UnpoolPlan:
    """Plan a max unpooling of ``x_shape`` to planes of ``output_size``."""
    out_shape = tuple(x_shape[:-2]) + tuple(output_size)
    V.check_alloc(fname, out_shape, dtype.itemsize)
    threads = threads_for(max(math.prod(out_shape), math.prod(x_shape)), elements=True)
    return UnpoolPlan(fname, dtype, tuple(x_shape), out_shape, threads)


# --------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinearPlan:
    """How one ``linear`` shape runs.  ``method`` names the product's path in
    :func:`cnnext._gemm.gemm`: ``dot`` (few rows: dot products),
    ``gemm`` (packed micro-kernels)."""

    dtype: FloatDType
    x_shape: Shape
    weight_shape: Shape
    method: str
    threads: int

    @property
    def out_shape(self) -> Shape:
        return (self.x_shape[0], self.weight_shape[0])

    def forward(
        self, x: FloatArray, weight: FloatArray, bias: FloatArray | None
    ) -> FloatArray:
        n, n_out = self.x_shape[0], self.weight_shape[0]
        y = np.empty((n, n_out), dtype=self.dtype)
        _gemm.gemm(x, weight, y, False, True, False, self.threads, bias)
        return y

    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: Literal[True] = True,
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
    @overload
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool, need_input: bool
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]: ...
    def backward(
        self, g: FloatArray, x: FloatArray, weight: FloatArray, bias: bool,
        need_input: bool = True,
    ) -> tuple[FloatArray | None, FloatArray, FloatArray | None]:
        n, n_in = self.x_shape
        n_out = self.weight_shape[0]
        gx = np.empty((n, n_in), dtype=self.dtype) if need_input else None
        gw = np.empty((n_out, n_in), dtype=self.dtype)
        if need_input:
            _gemm.gemm(g, weight, cast("FloatArray", gx), False, False, False, self.threads)
        _gemm.gemm(g, x, gw, True, False, False, self.threads)
        gb = bias_grad(g) if bias else None
        return gx, gw, gb


def linear_plan(
    fname: str, x_shape: Shape, weight_shape: Shape, bias_shape: Shape | None,
    dtype: FloatDType,
) -> LinearPlan:
    """Validate a linear layer's shapes (2-D x and weight) and plan it."""
    if x_shape[1] != weight_shape[1]:
        raise ValueError(
            f"{fname}: x.shape[1] ({x_shape[1]}) must equal weight.shape[1] "
            f"({weight_shape[1]}), the number of input features"
        )
    n, n_in = x_shape
    n_out = weight_shape[0]
    V.bias_shape(fname, bias_shape, n_out)
    V.check_alloc(fname, (n, n_out), dtype.itemsize)
    method = "dot" if n <= 4 else "gemm"
    return LinearPlan(dtype, tuple(x_shape), tuple(weight_shape), method,
                      threads_for(n * n_out * n_in))


# --------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchNormPlan:
    """How one ``batch_norm`` shape runs.

    The kernels see the ``(N, C, P)`` view ``x3`` of the (N, C), (N, C, L)
    or (N, C, H, W) input.  ``method`` is ``fused`` (one pass per channel
    for the statistics and one for the normalisation, channels shared
    between ``threads``) or ``empty`` (no value per channel: an empty
    result, statistics untouched).  Per-channel statistics are float64.
    """

    fname: str
    dtype: FloatDType
    x_shape: Shape
    x3: Shape
    method: str
    reason: str
    threads: int

    @property
    def count(self) -> int:
        """Values per channel (N times the spatial size)."""
        return self.x3[0] * self.x3[2]

    def forward(
        self, x: FloatArray, weight: FloatArray | None, bias: FloatArray | None, eps: float,
        mean: npt.NDArray[np.float64] | None = None, var: npt.NDArray[np.float64] | None = None,
    ) -> tuple[FloatArray, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(y, mean, biased var): with batch statistics when ``mean``/``var``
        are None (training), else normalised with the given float64 ones."""
        C = self.x3[1]
        y = np.empty(self.x_shape, dtype=self.dtype)
        training = mean is None or var is None
        if mean is None or var is None:
            mean, var = np.zeros(C), np.ones(C)
        if self.method == "fused":
            _norm.batch_norm_forward(x.reshape(self.x3), y.reshape(self.x3), mean, var,
                                     weight, bias, eps, training, self.threads)
        return y, mean, var

    def statistics(self, x: FloatArray) -> tuple[npt.NDArray[np.float64],
                                                 npt.NDArray[np.float64]]:
        """(mean, biased var) per channel, float64 (no output written)."""
        C = self.x3[1]
        mean, var = np.zeros(C), np.ones(C)
        if self.method == "fused":
            _norm.batch_norm_forward(x.reshape(self.x3), None, mean, var, None, None, 0.0,
                                     True, self.threads)
        return mean, var

    def update_running(
        self, running_mean: FloatArray | None, running_var: FloatArray | None,
        mean: npt.NDArray[np.float64], var: npt.NDArray[np.float64], momentum: float,
    ) -> None:
        """``r = (1 - momentum) * r + momentum * batch value`` in place, with
        the unbiased variance for ``running_var`` (nothing without values)."""
        M = self.count
        if self.method == "empty":
            return
        if running_mean is not None:
            np.copyto(running_mean, (1.0 - momentum) * running_mean + momentum * mean,
                      casting="unsafe")
        if running_var is not None:
            unbiased = var * (M / (M - 1))
            np.copyto(running_var, (1.0 - momentum) * running_var + momentum * unbiased,
                      casting="unsafe")

    def backward(
        self, g: FloatArray, x: FloatArray, mean: npt.NDArray[np.float64],
        invstd: npt.NDArray[np.float64], weight: FloatArray | None, training: bool,
        need_input: bool = True,
    ) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]:
        """(grad_x or None, grad_weight, grad_bias) -- the last two None
        without ``weight`` -- for the ``mean``/``invstd`` the forward used."""
        C = self.x3[1]
        gx = np.empty(self.x_shape, dtype=self.dtype) if need_input else None
        sum_g, sum_gx = np.zeros(C), np.zeros(C)
        if self.method == "fused":
            _norm.batch_norm_backward(g.reshape(self.x3), x.reshape(self.x3), mean, invstd,
                                      weight, None if gx is None else gx.reshape(self.x3),
                                      sum_g, sum_gx, training, self.threads)
        if weight is None:
            return gx, None, None
        return gx, sum_gx.astype(self.dtype), sum_g.astype(self.dtype)


def batch_norm_plan(
    fname: str, x_shape: Shape, dtype: FloatDType, training: bool
) -> BatchNormPlan:
    """Validate a batch-norm shape ((N, C, ...), 2-D to 4-D) and plan it."""
    N, C = x_shape[0], x_shape[1]
    P = math.prod(x_shape[2:])
    if training and N * P == 1:
        raise ValueError(
            f"{fname}: expected more than 1 value per channel when training, got input of "
            f"shape {tuple(x_shape)}"
        )
    V.check_alloc(fname, x_shape, dtype.itemsize)
    if N * P == 0 or C == 0:
        method, why = "empty", "no value per channel: an empty result"
    else:
        method, why = "fused", "per channel: statistics, then the normalisation, in cache"
    # Two passes over the data each way (the statistics or the sums, then the
    # normalisation or the input gradient): counted as twice the elements.
    threads = threads_for(2 * N * C * P, minimum=BATCH_NORM_PARALLEL_MIN)
    return BatchNormPlan(fname, dtype, tuple(x_shape), (N, C, P), method, why, threads)
