"""Type stubs for the compiled elementwise kernels (``src/_eltwise.pyx``).

Private tier-1 module: flat or 2-D C-contiguous operands of one floating
dtype (float32 or float64); nothing is validated here.
"""

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Index = npt.NDArray[np.int64]

def relu(x: _Float, out: _Float, n_threads: int) -> None: ...
def relu_backward(g: _Float, x: _Float, out: _Float, n_threads: int) -> None: ...
def leaky_relu_backward(
    g: _Float, x: _Float, out: _Float, slope: float, n_threads: int
) -> None: ...
def add_relu(a: _Float, b: _Float, out: _Float, relu: bool, n_threads: int) -> None: ...
def add_masked(a: _Float, g: _Float, ref: _Float, out: _Float, n_threads: int) -> None: ...
def all_finite(a: _Float) -> bool: ...
def softmax_cross_entropy(z: _Float, labels: _Index, grad: _Float) -> float: ...
def indices_within(a: _Index, lo: int, hi: int) -> bool: ...
def float_operands(
    arrays: tuple[object, ...],
    ndims: tuple[object, ...],
    contiguous: bool = ...,
    last_optional: bool = ...,
) -> np.dtype | None: ...
def channel_sums(g: _Float, out: _Float) -> None: ...
def adam_update(
    p: _Float, g: _Float, m: _Float, v: _Float, beta1: float, beta2: float, step_size: float,
    bc2_sqrt: float, eps: float, weight_decay: float,
) -> None: ...
def sgd_update(
    p: _Float, g: _Float, buf: _Float, lr: float, momentum: float, weight_decay: float,
    first: bool,
) -> None: ...
