"""cnnext: fast CPU kernels for convolutional-network layers.

Cython kernels over typed memoryviews with PyTorch's CPU semantics (NCHW,
weight ``(C_out, C_in, kH, kW)``, cross-correlation, first maximum wins), a
validated functional API (:mod:`cnnext.functional`, also ``cnnext.F``), and
an independent numpy reference (:mod:`cnnext.reference`).
"""
from ._check_build import check_build as _check_build

_check_build()
del _check_build

from ._config import (  # noqa: E402
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    use_backend,
)
from . import functional  # noqa: E402
from . import functional as F  # noqa: E402
from . import reference  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "F",
    "functional",
    "reference",
    "set_backend",
    "get_backend",
    "use_backend",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]

# Higher-level modules are imported on first use, so ``import cnnext`` stays
# cheap and a problem in one of them cannot break the kernels.
_LAZY = ("nn", "losses", "optim", "train", "datasets", "compat", "bench")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
