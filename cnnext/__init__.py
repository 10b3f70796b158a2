"""cnnext: fast CPU kernels for convolutional-network layers.

Cython kernels over typed memoryviews with PyTorch's CPU semantics (NCHW,
weight ``(C_out, C_in, kH, kW)``, cross-correlation, first maximum wins), a
validated functional API (:mod:`cnnext.functional`, also ``cnnext.F``), and
an independent numpy reference (:mod:`cnnext.reference`).
"""
import os as _os
import typing as _typing

from ._check_build import check_build as _check_build


def _openmp_runtime_loaded() -> bool:
    """True when this process has already loaded an OpenMP runtime under a
    name the kernels' own would resolve to (Linux; False where that cannot
    be read).  A runtime bundled under a private name (``libgomp-<hash>``)
    is a separate copy and does not count."""
    try:
        with open("/proc/self/maps") as maps:
            names = {line.rsplit("/", 1)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return False
    return any(n.startswith(("libgomp.so", "libiomp5.so", "libomp.so")) for n in names)


# Idle OpenMP workers sleep instead of spinning, unless the user chose
# otherwise.  With the runtimes' default (spin for a while after every
# parallel region) a machine shared with other busy processes stalls each
# region for whole scheduler time slices: measured 90x slower for a loop of
# small calls on a busy 2-core machine, with no loss on a quiet one.  The
# runtime reads the variable once, when the compiled modules load it, so
# it is set only for that moment: OpenMP runtimes loaded later (e.g.
# PyTorch's) see the environment as the user left it.
# An OpenMP runtime already loaded (PyTorch imported first, say) has read its
# settings: cnnext's kernels then share it with its idle-worker policy.
_WAIT = "OMP_WAIT_POLICY"
_user_wait = _os.environ.get(_WAIT)
_preloaded = _user_wait is None and _openmp_runtime_loaded()
if _user_wait is None:
    _os.environ[_WAIT] = "PASSIVE"
try:
    _check_build()
finally:
    if _user_wait is None:
        _os.environ.pop(_WAIT, None)

from . import _config  # noqa: E402

_config.OMP_WAIT_POLICY = _user_wait or (None if _preloaded else "PASSIVE")
del _check_build, _openmp_runtime_loaded, _WAIT, _user_wait, _preloaded, _os

from ._config import (  # noqa: E402
    get_backend,
    get_conv_algorithm,
    get_num_threads,
    set_backend,
    set_conv_algorithm,
    set_num_threads,
    use_backend,
    use_conv_algorithm,
)
from . import functional  # noqa: E402
from . import functional as F  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "F",
    "functional",
    "reference",
    "set_backend",
    "get_backend",
    "use_backend",
    "set_conv_algorithm",
    "get_conv_algorithm",
    "use_conv_algorithm",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]

# Higher-level modules are imported on first use, so ``import cnnext`` stays
# cheap and a problem in one of them cannot break the kernels.
_LAZY = ("reference", "nn", "losses", "optim", "train", "datasets", "models", "compat", "bench",
         "viz", "interop", "onnx")


if _typing.TYPE_CHECKING:  # the lazily imported modules, for type checkers
    from types import ModuleType

    from . import bench as bench
    from . import compat as compat
    from . import datasets as datasets
    from . import interop as interop
    from . import losses as losses
    from . import models as models
    from . import nn as nn
    from . import onnx as onnx
    from . import optim as optim
    from . import reference as reference
    from . import train as train
    from . import viz as viz
del _typing


def __getattr__(name: str) -> "ModuleType":
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
