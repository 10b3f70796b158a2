"""Type stubs for the compiled depthwise-convolution kernels (``src/_depthwise.pyx``).

Private tier-1 module: every kernel assumes valid, C-contiguous NCHW input of
one floating dtype (float32 *or* float64 for all array arguments of a call,
the Cython fused type ``floating``), outputs allocated by the caller with
PyTorch's output-size formula, and never validates.  The weight is
``(C*M, 1, kh, kw)``: output channel ``o`` reads input channel ``o // M``.
"""

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

#: The instruction set the row loops run on: "avx512", "avx2" or "generic".
ISA: str

def depthwise_forward(
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
) -> None: ...
def depthwise_grad_input(
    grad_out: _Float,
    weight: _Float,
    grad_x: _Float,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    n_threads: int,
) -> None: ...
def depthwise_grad_weight(
    x: _Float,
    grad_out: _Float,
    grad_weight: _Float,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    n_threads: int,
) -> None: ...
