"""Small argument checks shared by the compat adapters.

Messages follow the rest of cnnext: they name the function, the parameter,
the rule and the value received.  Shapes and dtypes of the arrays that reach
:mod:`cnnext.functional` are checked there as well; what is checked here is
what only the adapter knows (the tutorial's layout and its dict keys).

The generic rules (ints, reals, seeds, arrays) are cnnext's own
(:mod:`cnnext._validate`), so an adapter reports a bad value exactly as the
rest of the package does.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from .. import _validate as V

if TYPE_CHECKING:
    from .._typing import FloatArray

_T = TypeVar("_T")

as_int = V.as_int


def array(
    fname: str, name: str, value: object, ndim: Collection[int], layout: str
) -> npt.NDArray[Any]:
    """``np.asarray(value)`` of real numbers with exactly ``ndim`` dimensions."""
    a = V.as_array(fname, name, value)
    if a.dtype.kind not in "fiu":
        raise TypeError(
            f"{fname}: {name} must hold real numbers (float or integer), got dtype {a.dtype}"
        )
    V.check_ndim(fname, name, a, tuple(ndim), layout)
    return a


def hparam(
    fname: str,
    hparameters: Mapping[str, object],
    key: str,
    minimum: int,
    default: int | None = None,
    dict_name: str = "hparameters",
) -> int:
    """An int hyper-parameter from a tutorial's dict (``hparameters``, ``conv_param``...)."""
    if not isinstance(hparameters, Mapping):
        raise TypeError(
            f"{fname}: {dict_name} must be a dict, got {type(hparameters).__name__}"
        )
    if key not in hparameters:
        if default is not None:
            return default
        raise ValueError(
            f"{fname}: {dict_name} must contain the key {key!r}, got keys "
            f"{sorted(map(str, hparameters))}"
        )
    return as_int(fname, f"{dict_name}[{key!r}]", hparameters[key], minimum)


def positive_int(fname: str, name: str, value: object, minimum: int = 1) -> int:
    return as_int(fname, name, value, minimum)


def out_size(fname: str, size: int, k: int, s: int, p: int, axis: str) -> int:
    """Output length ``(size + 2*p - k) // s + 1`` of a window sliding along ``axis``.

    Only used to check the shape of an upstream gradient against its
    forward pass; the forward functions leave the geometry checks to
    :mod:`cnnext.functional`.
    """
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ValueError(
            f"{fname}: the window ({k}) is larger than the padded input along {axis} "
            f"(size {size}, padding {p})"
        )
    return out


def real(fname: str, name: str, value: object) -> float:
    """A finite Python float (learning rates and the like)."""
    return V.real(fname, name, value)


def generator(fname: str, seed: object) -> np.random.Generator | None:
    """The random source for a tutorial-style initialisation.

    ``None`` keeps the tutorials' behaviour: numpy's *global* legacy random
    state, so ``np.random.seed(0)`` followed by the constructor gives
    exactly the tutorial's initial weights.  An int (or a
    ``numpy.random.Generator``) gives an independent, reproducible
    :class:`numpy.random.Generator` instead.
    """
    return None if seed is None else V.rng(fname, seed)


def randn(rng: np.random.Generator | None, shape: Sequence[int]) -> FloatArray:
    if rng is None:
        return np.random.randn(*shape)  # noqa: NPY002 (the tutorials' global state)
    return rng.standard_normal(shape)


def uniform(
    rng: np.random.Generator | None, low: float, high: float, shape: Sequence[int]
) -> FloatArray:
    if rng is None:
        return np.random.uniform(low, high, shape)  # noqa: NPY002 (as in the tutorial)
    return rng.uniform(low, high, shape)


def not_before_forward(fname: str, state: _T | None) -> _T:
    if state is None:
        raise RuntimeError(
            f"{fname}: called before forward (there is no forward pass to differentiate)"
        )
    return state
