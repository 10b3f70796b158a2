"""Type stubs for the compiled batch-normalization kernels (``src/_norm.pyx``).

Private tier-1 module: C-contiguous ``(N, C, P)`` views of one floating
dtype (float32 or float64, the Cython fused type ``floating``) and float64
per-channel statistics.  Nothing is validated here: :mod:`cnnext._plan` is
the caller.
"""

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_F64 = npt.NDArray[np.float64]

def batch_norm_forward(
    x: _Float,
    out: _Float | None,
    mean: _F64,
    var: _F64,
    weight: _Float | None,
    bias: _Float | None,
    eps: float,
    training: bool,
    n_threads: int,
    relu: bool = ...,
    add: _Float | None = ...,
) -> None: ...
def batch_norm_backward(
    g: _Float,
    x: _Float,
    mean: _F64,
    invstd: _F64,
    weight: _Float | None,
    gx: _Float | None,
    sum_g: _F64,
    sum_gx: _F64,
    training: bool,
    n_threads: int,
    ref: _Float | None = ...,
    input_grad: bool = ...,
) -> None: ...
def isa() -> str: ...
