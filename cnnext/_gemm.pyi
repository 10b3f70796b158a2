"""Type stubs for the compiled GEMM kernels (``src/_gemm.pyx``).

Private tier-1 module: C-contiguous operands of one floating dtype (float32
or float64); nothing is validated here.
"""

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]
# The C functions the other kernel modules cimport (Cython's capsules).
__pyx_capi__: dict[str, object]

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def isa() -> str: ...
def block_sizes(dtype: npt.DTypeLike) -> tuple[int, int, int]: ...
def scratch_high_water(reset: bool = ...) -> int: ...
def gemm(
    A: _Float,
    B: _Float,
    C: _Float,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
    n_threads: int,
    bias: _Float | None = ...,
    act: int = ...,
    alpha: float = ...,
) -> None: ...
def refresh_copy(src: _Float, kept: _Float) -> bool: ...
def narrow_width(dtype: npt.DTypeLike) -> int: ...
def pack_narrow(B: _Float, bpk: _Float) -> None: ...
def gemm_narrow(
    A: _Float,
    bpk: _Float,
    C: _Float,
    bias: _Float | None,
    n_threads: int,
    act: int = ...,
    alpha: float = ...,
) -> None: ...
