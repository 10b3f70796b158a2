"""Type stubs for the compiled float64 Winograd kernel (``src/_winograd64.pyx``).

Private tier-1 module: C-contiguous float64 arrays; nothing is validated
here.  :mod:`cnnext._plan` is the only caller.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

# float64 only (typed as the callers' arrays: their plans checked the dtype)
_F64 = npt.NDArray[np.floating[Any]]

def block_tiles(T: int, n_threads: int) -> int: ...
def winograd64_forward(
    x: _F64,
    w: _F64,
    bias: _F64 | None,
    y: _F64,
    ph: int,
    pw: int,
    adjoint: bool,
    n_threads: int,
) -> bool: ...
def grad_weight_tiles(T: int) -> int: ...
def winograd64_grad_weight(
    x: _F64,
    g: _F64,
    gw: _F64,
    ph: int,
    pw: int,
    n_threads: int,
) -> bool: ...
