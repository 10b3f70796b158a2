"""Type stubs for the compiled convolution kernels (``src/_conv.pyx``).

Private tier-1 module: every kernel assumes valid, C-contiguous input of one
floating dtype (float32 *or* float64 for all array arguments of a call, the
Cython fused type ``floating``) and never validates.
:mod:`cnnext._plan` is the only caller.
"""

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

SCHEDULES: tuple[str, ...]

def conv2d_forward(
    x: _Float,
    weight: _Float,
    bias: _Float | None,
    out: _Float,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    n_threads: int,
    groups: int = 1,
    act: int = 0,
    alpha: float = 0.0,
) -> None: ...

KERNEL_NAMES: tuple[str, ...]

def forward_kernel(
    f32: bool,
    C: int,
    Co: int,
    H: int,
    W: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    OH: int,
    OW: int,
    groups: int = 1,
    act: int = 0,
) -> str: ...
def conv2d_grad_weight(
    x: _Float,
    gout: _Float,
    gwp: _Float,
    schedule: str,
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
    n_threads: int = 1,
) -> None: ...
def sum_transposed(gwp: _Float, out: _Float, n_threads: int = 1) -> None: ...
def conv2d_grad_input_phases(
    gout: _Float,
    weight: _Float,
    out: _Float,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    n_threads: int,
    groups: int = 1,
    bias: _Float | None = None,
) -> None: ...
def conv_grad_input(
    gout: _Float,
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
    g_c0: int = 0,
    out_c0: int = 0,
) -> None: ...

# The small convolutions' direct backward kernels (float32 only).
_F32 = npt.NDArray[np.float32]

def small_kernels() -> bool: ...
def conv2d_grad_weight_small(
    x: _F32,
    gout: _F32,
    gwp: _F32,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    dh: int,
    dw: int,
    oh_n: int,
    ow_n: int,
) -> None: ...
def conv2d_grad_input_small(
    gout: _F32, weight: _F32, gx: _F32, dh: int, dw: int, threads: int
) -> None: ...
def conv2d_grad_weight_pvec(
    x: _F32,
    gout: _F32,
    gwp: _F32,
    kh: int,
    kw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh_n: int,
    ow_n: int,
) -> None: ...
