"""Type stubs for the compiled convolution kernels (``src/_conv.pyx``).

Private tier-1 module: every function assumes valid, C-contiguous input of
one floating dtype (float32 *or* float64 for all array arguments of a call,
the Cython fused type ``floating``) and never validates.
:mod:`cnnext.functional` is the only caller.
"""

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def conv2d_forward(
    x: _Float,
    wmat: _Float,
    bias: _Float | None,
    out: _Float,
    col: _Float,
    tmp: _Float,
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
    chunk: int,
    n_threads: int,
) -> None: ...
def conv2d_grad_weight(
    x: _Float,
    gout: _Float,
    gw: _Float,
    col: _Float,
    gbuf: _Float,
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
    chunk: int,
    n_threads: int,
) -> None: ...
def conv_transpose_core(
    g: _Float,
    wmat: _Float,
    out: _Float,
    col: _Float,
    gbuf: _Float,
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
    chunk: int,
    n_threads: int,
) -> None: ...
