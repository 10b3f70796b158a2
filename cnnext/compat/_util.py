"""Small argument checks shared by the compat adapters.

Messages follow the rest of cnnext: they name the function, the parameter,
the rule and the value received.  Shapes and dtypes of the arrays that reach
:mod:`cnnext.functional` are checked there as well; what is checked here is
what only the adapter knows (the tutorial's layout and its dict keys).
"""
import numbers
from collections.abc import Mapping

import numpy as np

from .. import _validate as V


def array(fname, name, value, ndim, layout):
    """``np.asarray(value)`` of real numbers with exactly ``ndim`` dimensions."""
    a = V.as_array(fname, name, value)
    if a.dtype.kind not in "fiu":
        raise TypeError(
            f"{fname}: {name} must hold real numbers (float or integer), got dtype {a.dtype}"
        )
    if a.ndim not in ndim:
        want = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(
            f"{fname}: {name} must be {want} {layout}, got {a.ndim}-D array of shape {a.shape}"
        )
    return a


def hparam(fname, hparameters, key, minimum, default=None):
    """An int hyper-parameter from an ``hparameters`` dict."""
    if not isinstance(hparameters, Mapping):
        raise TypeError(
            f"{fname}: hparameters must be a dict, got {type(hparameters).__name__}"
        )
    if key not in hparameters:
        if default is not None:
            return default
        raise ValueError(
            f"{fname}: hparameters must contain the key {key!r}, got keys "
            f"{sorted(map(str, hparameters))}"
        )
    return V.as_int(fname, f"hparameters[{key!r}]", hparameters[key], minimum)


def positive_int(fname, name, value, minimum=1):
    return V.as_int(fname, name, value, minimum)


def real(fname, name, value):
    """A finite Python float (learning rates and the like)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fname}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{fname}: {name} must be finite, got {v}")
    return v


def generator(fname, seed):
    """The random source for a tutorial-style initialisation.

    ``None`` keeps the tutorials' behaviour: numpy's *global* legacy random
    state, so ``np.random.seed(0)`` followed by the constructor gives
    exactly the tutorial's initial weights.  An int (or a
    ``numpy.random.Generator``) gives an independent, reproducible
    :class:`numpy.random.Generator` instead.
    """
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"{fname}: seed must be None, an int or a numpy.random.Generator, got {seed!r}"
        )
    return np.random.default_rng(int(seed))


def randn(rng, shape):
    if rng is None:
        return np.random.randn(*shape)  # noqa: NPY002 (the tutorials' global state)
    return rng.standard_normal(shape)


def uniform(rng, low, high, shape):
    if rng is None:
        return np.random.uniform(low, high, shape)  # noqa: NPY002 (as in the tutorial)
    return rng.uniform(low, high, shape)


def not_before_forward(fname, state):
    if state is None:
        raise RuntimeError(
            f"{fname}: called before forward (there is no forward pass to differentiate)"
        )
