"""Type stubs for the compiled Winograd kernels (``src/_winograd.pyx``).

Private tier-1 module: C-contiguous float32 arrays (the packed filters may
have a padded first axis); nothing is validated here.  :mod:`cnnext._plan`
is the only caller.
"""

import numpy as np
import numpy.typing as npt

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

_F32 = npt.NDArray[np.float32]

def isa() -> str: ...
def tile_block() -> int: ...
def panel_tiles() -> int: ...
def winograd_forward(
    x: _F32,
    upk: _F32,
    bias: _F32 | None,
    out: _F32,
    ph: int,
    pw: int,
    n_threads: int,
) -> bool: ...
def winograd_forward_filters(
    x: _F32,
    w: _F32,
    upk: _F32,
    bias: _F32 | None,
    out: _F32,
    ph: int,
    pw: int,
    n_threads: int,
    adjoint: bool = ...,
) -> bool: ...
def winograd4_forward(
    x: _F32,
    upk: _F32,
    bias: _F32 | None,
    out: _F32,
    ph: int,
    pw: int,
    n_threads: int,
    quad: bool = ...,
) -> bool: ...
def winograd4_filters(
    w: _F32, upk: _F32, adjoint: bool = ..., n_threads: int = ...
) -> bool: ...
def w4_isa() -> str: ...
def winograd_forward_quad(
    x: _F32,
    upk: _F32,
    bias: _F32 | None,
    out: _F32,
    ph: int,
    pw: int,
    n_threads: int,
) -> bool: ...
def winograd_relu_pool2x2(
    x: _F32,
    upk: _F32,
    bias: _F32 | None,
    out: _F32,
    ph: int,
    pw: int,
    n_threads: int,
) -> bool: ...
def winograd_grad_weight(
    x: _F32, g: _F32, dup: _F32, ph: int, pw: int, n_threads: int = 1
) -> None: ...

class SharedWeightGrad:
    def __init__(self, x: _F32, g: _F32, dup: _F32, ph: int, pw: int) -> None: ...
    def run(self, wait_for_helper: bool = False) -> None: ...
    def help(self) -> None: ...
    @property
    def started(self) -> bool: ...
    @property
    def helped(self) -> int: ...

def weight_grad_threads(
    N: int, OH: int, OW: int, n_threads: int, Co: int = 0, C: int = 0
) -> int: ...
def weight_grad_tiles(N: int, OH: int, OW: int, n_threads: int, Co: int, C: int) -> int: ...
def winograd_filters(
    w: _F32, upk: _F32, adjoint: bool = ..., n_threads: int = ...
) -> bool: ...
def winograd_filter_grad(dup: _F32, gw: _F32, n_threads: int = ...) -> bool: ...
def copy_phases(a: _F32, b: _F32, dh: int, dw: int, merge: bool, n_threads: int) -> None: ...
def winograd_forward_phases(
    x: _F32,
    upk: _F32,
    bias: _F32 | None,
    out: _F32,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    y0: int,
    x0: int,
    yo: int,
    xo: int,
    OH: int,
    OW: int,
    n_threads: int,
) -> bool: ...
def winograd_grad_weight_phases(
    x: _F32,
    g: _F32,
    dup: _F32,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    y0: int,
    x0: int,
    OH: int,
    OW: int,
    n_threads: int = 1,
) -> None: ...
