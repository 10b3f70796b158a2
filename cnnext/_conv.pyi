"""Type stubs for the compiled convolution kernels (``src/_conv.pyx``).

Private tier-1 module: every kernel assumes valid, C-contiguous input of one
floating dtype (float32 *or* float64 for all array arguments of a call, the
Cython fused type ``floating``) and never validates.
:mod:`cnnext.functional` is the only caller.
"""

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def isa() -> str: ...
def scratch_high_water(reset: bool = ...) -> int: ...
def block_sizes(dtype: npt.DTypeLike) -> tuple[int, int, int]: ...
def conv2d_forward(
    x: _Float,
    wmat: _Float,
    bias: _Float | None,
    out: _Float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh_n: int,
    ow_n: int,
    n_threads: int,
) -> None: ...
def conv2d_grad_weight(
    x: _Float,
    g: _Float,
    gwp: _Float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh_n: int,
    ow_n: int,
) -> None: ...
def conv_grad_input(
    g: _Float,
    wmat: _Float,
    out: _Float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh_n: int,
    ow_n: int,
    n_threads: int,
) -> None: ...
def gemm(
    A: _Float,
    B: _Float,
    C: _Float,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
    n_threads: int,
) -> None: ...
def conv2d_grad_weight_t(
    x: _Float,
    g: _Float,
    gwtp: _Float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh_n: int,
    ow_n: int,
) -> None: ...
def conv2d_grad_weight_dot(
    x: _Float,
    g: _Float,
    gwp: _Float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh_n: int,
    ow_n: int,
) -> None: ...
