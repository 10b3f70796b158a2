"""What the functional ops share: operand checks (dtype, layout, ndim), the
backend switch, and the NaN-quiet wrapper."""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt

from .. import _config, _eltwise
from .. import _validate as V

_P = ParamSpec("_P")
_R = TypeVar("_R")

if TYPE_CHECKING:
    from .._typing import FloatArray, FloatDType, IntOrPair, Pair, Shape


class _Reference:
    """:mod:`cnnext.reference` (what the numpy backend runs), imported at its
    first use: the compiled backend never needs it, and ``import cnnext``
    skips it."""

    def __getattr__(self, name: str) -> object:
        from .. import reference

        return getattr(reference, name)


_reference = _Reference()


def _numpy_backend() -> bool:
    # (_config.compiled_backend() inlined: this runs on every call)
    return (_config._backend_override.get() or _config._default_backend) != "cython"


def _as(a: npt.ArrayLike, dt: FloatDType) -> FloatArray:
    """The numpy backend's result as an array of the compute dtype."""
    return np.asarray(a, dtype=dt)


# Allowed ndim of each operand.
_CONV_NDIM = ((3, 4), (4,), (1,))
_CONV_GRAD_NDIM = ((3, 4), (3, 4), (4,))
_CONV1D_NDIM = ((2, 3), (3,), (1,))
_CONV1D_GRAD_NDIM = ((2, 3), (2, 3), (3,))
_LINEAR_NDIM = ((2,), (2,), (1,))
_LINEAR_GRAD_NDIM = ((2,), (2,), (2,))
_LINEAR_LAYOUT = {"x": "(N, in_features)"}
_POOL_NDIM = ((3, 4),)
_POOL_LAYOUT = {"x": "(N, C, H, W) or (C, H, W)"}
_GRAD_LAYOUT = {"grad_out": "(N, C, OH, OW) or (C, OH, OW)"}


_float_operands = _eltwise.float_operands  # the one-step check of a steady call
_XWB = ("x", "weight", "bias")
_GXW = ("grad_out", "x", "weight")


@overload
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike, npt.ArrayLike, None], names: tuple[str, ...],
    ndims: tuple[tuple[int, ...] | None, ...], layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, FloatArray, None], FloatDType]: ...
@overload
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
    names: tuple[str, ...], ndims: tuple[tuple[int, ...] | None, ...],
    layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, FloatArray, FloatArray], FloatDType]: ...
# A 3-tuple without None also matches the variadic overload below; the
# first match wins.
@overload
def _operands(  # type: ignore[overload-overlap]
    fname: str, arrays: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike | None],
    names: tuple[str, ...], ndims: tuple[tuple[int, ...] | None, ...],
    layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, FloatArray, FloatArray | None], FloatDType]: ...
@overload
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike, ...], names: tuple[str, ...],
    ndims: tuple[tuple[int, ...] | None, ...], layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, ...], FloatDType]: ...
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike | None, ...], names: tuple[str, ...],
    ndims: tuple[tuple[int, ...] | None, ...], layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray | None, ...], FloatDType]:
    """Check -> (arrays as C-contiguous arrays of the compute dtype, dtype).

    A None bias (an absent one) stays None.  The common case (native
    float32/float64 C-contiguous arrays of one dtype) is one check in C;
    anything else gets the full validation and a converted copy.  The arrays
    keep the caller's shapes (3-D unbatched included): the numpy backend
    receives exactly these.
    """
    optional = names[-1] == "bias"
    dt = _eltwise.float_operands(arrays, ndims, True, optional)
    if dt is not None:
        return cast("tuple[FloatArray | None, ...]", arrays), dt
    dt = _eltwise.float_operands(arrays, ndims, False, optional)
    if dt is not None:  # the right kind of arrays, in another memory layout
        return tuple(None if a is None else np.ascontiguousarray(a) for a in arrays), dt
    present = [i for i, a in enumerate(arrays) if a is not None or names[i] != "bias"]
    arrs, dt = V.float_arrays(
        fname, [(names[i], arrays[i]) for i in present], [ndims[i] for i in present], layouts
    )
    out = list(arrays)
    for i, a in zip(present, arrs):
        out[i] = a
    return cast("tuple[FloatArray | None, ...]", tuple(out)), dt


def _shape(a: FloatArray | None) -> Shape | None:
    return None if a is None else a.shape


def _conv_params(
    fname: str, stride: IntOrPair, padding: IntOrPair, dilation: IntOrPair
) -> tuple[Pair, Pair, Pair]:
    return (
        V.pair(fname, "stride", stride, 1),
        V.pair(fname, "padding", padding, 0),
        V.pair(fname, "dilation", dilation, 1),
    )


def _grad_operands(
    fname: str, grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    ndims: tuple[tuple[int, ...], ...],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatDType]:
    """A convolution backward's checked (grad_out, x, weight, dtype):
    ``grad_out`` and ``x`` both batched or both unbatched."""
    (g, xa, w), dt = _operands(fname, (grad_out, x, weight), _GXW, ndims)
    if g.ndim != xa.ndim:
        batched = max(ndims[1])
        raise ValueError(
            f"{fname}: grad_out ({g.ndim}-D) and x ({xa.ndim}-D) must both be "
            f"batched ({batched}-D) or both unbatched ({batched - 1}-D)"
        )
    return g, xa, w, dt


def _as_grads(
    gx: FloatArray, gw: FloatArray, gb: FloatArray | None, dt: FloatDType, bias: bool
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """The reference's (grad_x, grad_weight, grad_bias or None) in ``dt``."""
    return _as(gx, dt), _as(gw, dt), _as(cast("FloatArray", gb), dt) if bias else None


# Default option values, compared by identity on the hot paths (an int 0 or
# 1 is one object; True and 1.0 are other objects).
_ZERO, _ONE = 0, 1

def _nan_quiet(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` without numpy's RuntimeWarnings for NaN/inf arithmetic:
    non-finite values propagate silently, as in PyTorch."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return wrapper
