"""The machine: CPU, library versions, load, and thread counts.

:func:`machine_info` describes the machine and the libraries (recorded in
the JSON output); :func:`cpu_snapshot` and :func:`others_cores` tell how busy
*other* processes kept the CPU during a run; :func:`pinned_threads` runs
cnnext, PyTorch and the BLAS libraries on the same number of threads.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from types import ModuleType

    from .._typing import Record

__all__ = [
    "NOT_INSTALLED",
    "import_torch",
    "machine_info",
    "cpu_snapshot",
    "others_cores",
    "BlasThreads",
    "default_threads",
    "pinned_threads",
]

NOT_INSTALLED = "not installed"


def import_torch() -> tuple[ModuleType | None, str]:
    """(torch module or None, status string); PyTorch is imported only here."""
    try:
        import torch
    except ImportError:
        return None, NOT_INSTALLED
    except Exception as exc:  # a broken install must not break the bench
        return None, f"unavailable ({type(exc).__name__})"
    return torch, "ok"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str] | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl")
                    return [f for f in wanted if f in have]
    except OSError:
        pass
    return None


def _show_config(module: ModuleType) -> dict[str, Any] | None:
    """The BLAS/LAPACK numpy or scipy was built with (None if unknown)."""
    try:
        with contextlib.redirect_stdout(None):
            cfg = module.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        return {k: deps[k] for k in ("blas", "lapack") if k in deps}
    except Exception:
        return None


def _kernel_info() -> Record:
    """The micro-kernel the runtime CPU dispatch chose, and its block sizes."""
    try:
        from .. import _gemm

        return {
            "cnnext_isa": _gemm.isa(),
            "cnnext_block_sizes": {d: list(_gemm.block_sizes(d)) for d in ("float32", "float64")},
        }
    except Exception:  # the build does not report it
        return {"cnnext_isa": None}


def machine_info(torch: ModuleType | Literal["auto"] | None = "auto") -> Record:
    """Machine, library versions, BLAS and thread settings, as a dict.

    Parameters
    ----------
    torch : "auto", module or None
        ``"auto"`` imports torch if it is installed; None leaves it out.

    Returns
    -------
    dict
        ``cpu_model``, ``cpu_flags``, ``cores``, ``cores_available``,
        ``platform``, ``python``, ``versions``, ``blas``, ``threads``,
        ``cnnext_isa``, ``threadpools``, ``loadavg`` and, with PyTorch,
        ``torch_cpu_capability`` and ``torch_mkldnn``.

    Examples
    --------
    >>> from cnnext.bench import machine_info
    >>> info = machine_info(torch=None)
    >>> info["cores"] >= 1 and "numpy" in info["versions"]
    True
    """
    import cnnext

    try:  # not a runtime dependency of cnnext
        import scipy
    except ImportError:
        scipy = None
    if torch == "auto":
        torch, _ = import_torch()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    info = {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "cores_available": affinity,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "cnnext": cnnext.__version__,
            "numpy": np.__version__,
            "scipy": None if scipy is None else scipy.__version__,
            "torch": None if torch is None else torch.__version__,
        },
        "blas": {"numpy": _show_config(np),
                 "scipy": None if scipy is None else _show_config(scipy)},
        "threads": {
            "cnnext": cnnext.get_num_threads(),
            "torch": None if torch is None else torch.get_num_threads(),
            "torch_interop": None if torch is None else torch.get_num_interop_threads(),
            "omp_wait_policy": cnnext._config.OMP_WAIT_POLICY,
            "env": {
                k: os.environ[k]
                for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ
            },
        },
        **_kernel_info(),
    }
    try:
        import threadpoolctl

        info["threadpools"] = threadpoolctl.threadpool_info()
    except Exception:
        info["threadpools"] = None
    if torch is not None:
        try:
            info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
            info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        except Exception:
            pass
    try:
        info["loadavg"] = os.getloadavg()
    except (AttributeError, OSError):
        info["loadavg"] = None
    return info


# --------------------------------------------------------------------------
# Load from other processes
# --------------------------------------------------------------------------


def cpu_snapshot() -> tuple[float, float] | None:
    """(busy seconds of all CPUs, CPU seconds of this process), or None.

    From ``/proc/stat`` (Linux); the difference of two snapshots tells how
    much CPU *other* processes used meanwhile (:func:`others_cores`).
    """
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    vals = [int(v) for v in fields[1:]]
    busy = sum(vals[:8]) - vals[3] - (vals[4] if len(vals) > 4 else 0)  # minus idle, iowait
    t = os.times()
    return busy / hz, t.user + t.system


def others_cores(
    before: tuple[float, float] | None, after: tuple[float, float] | None, elapsed: float
) -> float | None:
    """Average number of cores other processes kept busy between two snapshots.

    Examples
    --------
    >>> from cnnext.bench.machine import others_cores
    >>> others_cores((100.0, 1.0), (125.0, 7.0), 10.0)  # 25 s busy, 6 s of them ours
    1.9
    """
    if before is None or after is None or elapsed <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / elapsed)


# --------------------------------------------------------------------------
# Thread counts
# --------------------------------------------------------------------------


def _openblas_handles() -> list[tuple[Any, Any]]:
    """(set, get) ctypes functions of every OpenBLAS loaded in this process.

    numpy and scipy wheels each bundle an OpenBLAS with prefixed symbols
    (``scipy_openblas_set_num_threads64_``, ...).  Linux only (reads
    ``/proc/self/maps``); an empty list elsewhere.
    """
    import ctypes

    try:
        import scipy.linalg  # noqa: F401  (loads scipy's BLAS, if scipy is there)
    except ImportError:
        pass

    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({ln.split()[-1] for ln in fh
                            if "openblas" in ln.rsplit("/", 1)[-1].lower()})
    except OSError:
        return []
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre, suf in itertools.product(("", "scipy_"), ("", "64_")):
            setter = getattr(lib, f"{pre}openblas_set_num_threads{suf}", None)
            getter = getattr(lib, f"{pre}openblas_get_num_threads{suf}", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                out.append((setter, getter))
                break
    return out


class BlasThreads:
    """Sets the BLAS thread pools' size: threadpoolctl if installed, else
    OpenBLAS through ctypes.  ``method`` says which (None: cannot pin)."""

    def __init__(self) -> None:
        try:
            import threadpoolctl
        except ImportError:
            threadpoolctl = None
        self._handles: list[tuple[Any, Any]]  # OpenBLAS (setter, getter) functions
        self._saved: list[Any]  # threadpoolctl limiters, or OpenBLAS thread counts
        self.method: str | None
        self._tpc, self._handles, self._saved = threadpoolctl, [], []
        if threadpoolctl is not None:
            self.method = "threadpoolctl"
        else:
            try:
                self._handles = _openblas_handles()
            except Exception:
                self._handles = []
            self.method = "OpenBLAS via ctypes" if self._handles else None

    def set(self, n: int) -> None:
        """Run BLAS on ``n`` threads (the first call saves the previous setting)."""
        if self._tpc is not None:
            limiter = self._tpc.threadpool_limits(limits=n, user_api="blas")
            if not self._saved:
                self._saved.append(limiter)
        else:
            if not self._saved:
                self._saved = [g() for _, g in self._handles]
            for setter, _ in self._handles:
                setter(n)

    def restore(self) -> None:
        """Back to the setting before the first :meth:`set`."""
        if self._tpc is not None:
            for limiter in self._saved:
                limiter.restore_original_limits()
        else:
            for (setter, _), v in zip(self._handles, self._saved):
                setter(v)
        self._saved = []


def default_threads() -> int:
    """cnnext's thread count: ``OMP_NUM_THREADS`` or every core, unless set."""
    import cnnext

    return cnnext.get_num_threads()


def set_threads(n: int, torch: ModuleType | None, blas: BlasThreads) -> None:
    """cnnext, PyTorch (if not None) and ``blas`` (a BlasThreads) on ``n`` threads."""
    import cnnext

    cnnext.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    blas.set(n)


@contextlib.contextmanager
def pinned_threads(
    n: int, torch: ModuleType | None, blas: BlasThreads | None = None
) -> Iterator[None]:
    """cnnext, PyTorch and BLAS on ``n`` threads inside the block; restored after."""
    import cnnext

    blas = BlasThreads() if blas is None else blas
    old = cnnext.get_num_threads(), (torch.get_num_threads() if torch is not None else None)
    set_threads(n, torch, blas)
    try:
        yield
    finally:
        cnnext.set_num_threads(old[0])
        if torch is not None:
            torch.set_num_threads(old[1])
        blas.restore()
