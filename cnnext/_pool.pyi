"""Type stubs for the compiled pooling kernels (``src/_pool.pyx``).

Private tier-1 module: inputs are C-contiguous ``(N, C, H, W)`` arrays of
one floating dtype (float32 or float64, the Cython fused type ``floating``);
max-pool indices are int64 flat positions ``h * W + w`` in each plane.
Nothing is validated here: :mod:`cnnext._plan` is the caller.
"""

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Index = npt.NDArray[np.int64]

def max_pool2d_forward(
    x: _Float,
    out: _Float,
    idx: _Index | None,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    n_threads: int,
) -> None: ...
def max_pool2d_forward_new(
    x: _Float,
    oh: int,
    ow: int,
    indices: bool,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    n_threads: int,
) -> tuple[_Float, _Index | None]: ...
def max_pool2d_backward(
    gout: _Float,
    idx: _Index,
    gx: _Float,
    n_threads: int,
) -> None: ...
def avg_pool2d_forward(
    x: _Float,
    out: _Float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: int,  # a bint: 0 or 1
    divisor: int,
    n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    gout: _Float,
    gx: _Float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: int,  # a bint: 0 or 1
    divisor: int,
    n_threads: int,
) -> None: ...
def adaptive_avg_pool2d_forward(x: _Float, out: _Float, n_threads: int) -> None: ...
def adaptive_avg_pool2d_backward(gout: _Float, gx: _Float, n_threads: int) -> None: ...
def global_avg_pool2d_forward(x: _Float, out: _Float, n_threads: int) -> None: ...
def global_avg_pool2d_backward(gout: _Float, gx: _Float, n_threads: int) -> None: ...
def adaptive_max_pool2d_forward(
    x: _Float, out: _Float, idx: _Index | None, n_threads: int
) -> None: ...
def max_unpool2d_forward(x: _Float, idx: _Index, out: _Float, n_threads: int) -> None: ...
def max_unpool2d_backward(gout: _Float, idx: _Index, gx: _Float, n_threads: int) -> None: ...
def pool_isa() -> str: ...
def max_pool2d_backward_2x2(gout: _Float, idx: _Index, gx: _Float, n_threads: int) -> None: ...
def max_pool2d_backward_2x2_relu(
    gout: npt.NDArray[np.float32],
    idx: _Index,
    x: npt.NDArray[np.float32],
    gx: npt.NDArray[np.float32],
    n_threads: int,
) -> None: ...
def conv_max_pool2x2(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None,
    out: npt.NDArray[np.float32],
    ph: int,
    pw: int,
    act: int,
    n_threads: int,
    channel_lanes: bool = ...,
) -> None: ...
def max_pool2x2_relu(
    x: npt.NDArray[np.float32], out: npt.NDArray[np.float32], n_threads: int
) -> None: ...
