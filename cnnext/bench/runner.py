"""Running rows: the layer suite, the small calls and the thread-scaling check.

Each function pins cnnext, PyTorch and BLAS to the same thread count for the
run, builds each row's peers (inputs generated up front), times them
interleaved (:func:`cnnext.bench.harness.measure`) and returns one dict per
row with the timings and the ratios ``cnnext time / peer time``.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Literal, TextIO, TypeVar, cast

import numpy as np
import numpy.typing as npt

from .cases import SCALING_CASES, Case, SmallCall, select_cases
from .harness import BenchConfig, Peer, error_status, measure, noisy
from .machine import BlasThreads, default_threads, import_torch, pinned_threads, set_threads
from .peers import PEERS, build_peers, row_rng
from .small_calls import build_small_peers

if TYPE_CHECKING:
    from types import ModuleType

    from .._typing import Record

    #: The torch argument: the module, None (not installed), or "auto" (import it).
    TorchArg = ModuleType | Literal["auto"] | None
    #: Cases to run: names or patterns (str, comma-separated), case objects, or None.
    Cases = str | Sequence[str] | Sequence[Case | SmallCall] | None

_CaseT = TypeVar("_CaseT", Case, SmallCall)

__all__ = ["run_suite", "run_small_calls", "run_scaling"]


class Progress:
    """A one-line progress display on a terminal (nothing otherwise)."""

    def __init__(
        self, total: int, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled, self.total, self.i, self.label = enabled, total, 0, ""
        self.t0 = time.perf_counter()
        self._width = 0

    def row(self, label: str) -> None:
        self.i += 1
        self.label = label
        self.show("")

    def show(self, msg: str) -> None:
        if not self.enabled:
            return
        el = time.perf_counter() - self.t0
        line = f"[{self.i}/{self.total} {el:5.0f}s] {self.label} {msg}"
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _resolve(
    torch: TorchArg, torch_status: str | None
) -> tuple[ModuleType | None, str]:
    """(torch module or None, status) from a ``torch`` argument."""
    if torch == "auto":
        return import_torch()
    if torch is None:
        return None, torch_status or "not installed"
    return torch, "ok"


def _cases(cases: Cases, kind: type[_CaseT]) -> list[_CaseT]:
    """The ``kind`` rows (Case or SmallCall) among ``cases`` (patterns or objects)."""
    if cases is None or isinstance(cases, str) or (cases and isinstance(cases[0], str)):
        cases = select_cases(cast("str | Sequence[str] | None", cases))  # names, not objects
    return [c for c in cases if isinstance(c, kind)]


def _dtypes(fname: str, dtypes: Iterable[npt.DTypeLike]) -> list[str]:
    names = [np.dtype(d).name for d in dtypes]
    for d in names:
        if d not in ("float32", "float64"):
            raise ValueError(f"{fname}: dtypes must be float32 or float64, got {d!r}")
    return names


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def run_suite(
    cases: Cases = None,
    dtypes: Iterable[npt.DTypeLike] = ("float32", "float64"),
    passes: Collection[str] | None = None,
    threads: int | None = None,
    config: BenchConfig | None = None,
    quick: bool = False,
    torch: TorchArg = "auto",
    torch_autograd: bool = False,
    seed: int = 0,
    progress: bool | None = None,
    *,
    torch_status: str | None = None,
) -> list[Record]:
    """Run the layer suite and return one result dict per row.

    Parameters
    ----------
    cases : str, list of str or list of Case, optional
        Patterns for :func:`~cnnext.bench.select_cases`, or the cases
        themselves; small calls among them are left out (see
        :func:`run_small_calls`).  Default: the whole :data:`SUITE`.
    dtypes : sequence of {"float32", "float64"}
    passes : sequence of {"fwd", "fwd+bwd", "step"}, optional
        Only these passes (default: all passes of each case).
    threads : int, optional
        Thread count for cnnext, PyTorch *and* the BLAS libraries (these
        through threadpoolctl when installed, else OpenBLAS via ctypes; the
        numpy reference runs on BLAS) -- default: ``cnnext.get_num_threads()``,
        i.e. ``OMP_NUM_THREADS`` or every core.  Restored afterwards.
    config : BenchConfig, optional
    quick : bool
        Use :meth:`BenchConfig.quick` when ``config`` is None.
    torch : "auto", module or None
        None benchmarks without PyTorch.
    torch_autograd : bool
        Time PyTorch ``fwd+bwd`` via autograd (see :mod:`cnnext.bench.peers`).
    seed : int
        Seed for the random inputs.
    progress : bool, optional
        Show progress on stderr (default: only when stderr is a terminal).
    torch_status : str, optional
        What the PyTorch column says when ``torch`` is None (default
        ``"not installed"``).

    Returns
    -------
    list of dict
        Keys: ``case``, ``pass``, ``dtype``, ``geometry``, ``flops``,
        ``cnnext``/``pytorch``/``reference`` (timing stats with
        ``median``/``min``/``q1``/``q3``/``samples`` in seconds, or just a
        ``status`` such as ``"not installed"``), ``ratio_pytorch`` and
        ``ratio_reference`` (cnnext median / peer median, or None; with
        ``_min`` the same from the fastest samples), ``noisy``, ``gflops``
        and ``gflops_pytorch`` (convolutions).

    Examples
    --------
    >>> from cnnext.bench import run_suite
    >>> rows = run_suite("seed-mnist", dtypes=["float32"], passes=["fwd"],
    ...                  quick=True, torch=None)
    >>> r = rows[0]
    >>> (r["case"], r["pass"], r["pytorch"]["status"], r["cnnext"]["median"] > 0)
    ('seed-mnist', 'fwd', 'not installed', True)
    """
    torch, torch_status = _resolve(torch, torch_status)
    config = config or (BenchConfig.quick() if quick else BenchConfig())
    dtypes = _dtypes("run_suite", dtypes)
    rows = [(c, p, d) for c in _cases(cases, Case) for d in dtypes for p in c.passes
            if passes is None or p in passes]
    bar = Progress(len(rows), enabled=progress)
    results = []
    with pinned_threads(default_threads() if threads is None else threads, torch):
        try:
            for case, pass_, dt in rows:
                bar.row(f"{case.name} {pass_} {dt}")
                results.append(_suite_row(case, pass_, dt, config, torch, torch_status,
                                          torch_autograd, seed, bar))
        finally:
            bar.close()
    return results


def _suite_row(
    case: Case, pass_: str, dt: str, cfg: BenchConfig, torch: ModuleType | None,
    torch_status: str, torch_autograd: bool, seed: int, bar: Progress,
) -> Record:
    peers = None
    try:
        peers = build_peers(case, pass_, np.dtype(dt), row_rng(case, seed), torch, torch_autograd)
        if torch is None:
            peers["pytorch"] = Peer(None, torch_status)
        res = measure(peers, cfg, note=bar.show)
    except Exception as exc:  # e.g. a kernel under construction
        res = {n: error_status(exc) for n in PEERS}
    impl = {n: p.impl for n, p in (peers or {}).items() if p.impl}
    del peers
    row: Record = {
        "case": case.name,
        "pass": pass_,
        "dtype": dt,
        "geometry": case.describe(),
        "flops": case.flops(pass_),
        **{n: res[n] for n in PEERS},
    }
    if impl:
        row["impl"] = impl
    for peer in ("pytorch", "reference"):
        row[f"ratio_{peer}"] = _ratio(res["cnnext"].get("median"), res[peer].get("median"))
        row[f"ratio_{peer}_min"] = _ratio(res["cnnext"].get("min"), res[peer].get("min"))
    row["noisy"] = noisy(res)
    fl, cn, pt = row["flops"], res["cnnext"].get("median"), res["pytorch"].get("median")
    row["gflops"] = fl / cn / 1e9 if fl and cn else None
    row["gflops_pytorch"] = fl / pt / 1e9 if fl and pt else None
    return row


def run_small_calls(
    cases: Cases = None,
    dtypes: Iterable[npt.DTypeLike] = ("float32",),
    threads: int | None = None,
    config: BenchConfig | None = None,
    quick: bool = False,
    torch: TorchArg = "auto",
    seed: int = 0,
    progress: bool | None = None,
    *,
    torch_status: str | None = None,
) -> list[Record]:
    """Time the small calls: cnnext and each peer interleaved, one call at a time.

    Parameters
    ----------
    cases : str, list of str or list of SmallCall, optional
        Patterns for :func:`~cnnext.bench.select_cases` or the calls; layer
        cases among them are left out.  Default: all of :data:`SMALL_CALLS`.
    dtypes : sequence of {"float32", "float64"}
        Calls with a fixed dtype (``seed-step-compat``: float64) run once in it.
    threads, torch, seed, progress, torch_status
        As for :func:`run_suite`.
    config : BenchConfig, optional
        Default :meth:`BenchConfig.small_calls` (samples of >= 200 us).
    quick : bool
        Fewer samples.

    Returns
    -------
    list of dict
        Keys: ``case``, ``group`` (``"small-calls"``), ``dtype``,
        ``threads``, ``what``, ``cnnext`` and one entry per peer of the call
        (``pytorch``, ``numpy``, ``inner``; timing stats in seconds per call,
        or a ``status``), ``ratio_pytorch``, ``ratio_numpy`` and ``ratio_onnxruntime`` (cnnext
        median / peer median, None where not measured), ``overhead`` (cnnext
        median minus the median of ``inner``, the call one level down, in
        seconds; None where the row has no inner call), ``impl``, ``noisy``.

    Examples
    --------
    >>> from cnnext.bench import run_small_calls
    >>> (row,) = run_small_calls("linear-b1", quick=True, torch=None)
    >>> row["case"], row["dtype"], row["ratio_numpy"] > 0, "pytorch" in row
    ('linear-b1', 'float32', True, False)
    """
    torch, torch_status = _resolve(torch, torch_status)
    config = config or BenchConfig.small_calls(quick=quick)
    dtypes = _dtypes("run_small_calls", dtypes)
    rows = []
    for call in _cases(cases, SmallCall):
        for dt in [call.dtype] if call.dtype else dtypes:
            rows.append((call, dt))
    threads = default_threads() if threads is None else threads
    bar = Progress(len(rows), enabled=progress)
    out = []
    with pinned_threads(threads, torch):
        try:
            for i, (call, dt) in enumerate(rows):
                bar.row(f"{call.name} {dt}")
                rng = np.random.default_rng([seed, 1000 + i])
                out.append(_small_row(call, dt, threads, config, torch, torch_status, rng, bar))
        finally:
            bar.close()
    return out


def _small_row(
    call: SmallCall, dt: str, threads: int, cfg: BenchConfig, torch: ModuleType | None,
    torch_status: str, rng: np.random.Generator, bar: Progress,
) -> Record:
    names = ("cnnext",) + call.peers
    peers = None
    try:
        peers = build_small_peers(call, np.dtype(dt), rng, torch, torch_status)
        res = measure(peers, cfg, note=bar.show)
    except Exception as exc:
        res = {n: error_status(exc) for n in names}
    impl = {n: p.impl for n, p in (peers or {}).items() if p.impl}
    del peers
    row = {"case": call.name, "group": call.group, "dtype": dt, "threads": threads,
           "what": call.what, **{n: res[n] for n in names}}
    cn = res["cnnext"].get("median")
    for peer in ("pytorch", "numpy", "onnxruntime", "jax"):
        row[f"ratio_{peer}"] = _ratio(cn, res.get(peer, {}).get("median"))
    inner = res.get("inner", {}).get("median")
    row["overhead"] = cn - inner if cn is not None and inner is not None else None
    row["impl"] = impl
    row["noisy"] = noisy(res, names)
    return row


def run_scaling(
    cases: Cases = SCALING_CASES,
    dtypes: Iterable[npt.DTypeLike] = ("float32", "float64"),
    threads: int | None = None,
    config: BenchConfig | None = None,
    quick: bool = False,
    torch: TorchArg = "auto",
    seed: int = 0,
    progress: bool | None = None,
    *,
    torch_status: str | None = None,
) -> list[Record]:
    """Thread scaling: ``fwd+bwd`` at 1 thread vs ``threads``, interleaved.

    cnnext at 1 and at ``threads`` threads (and PyTorch likewise, for
    context) run round-robin in one process; the thread count is set,
    untimed, before each sample.

    Parameters
    ----------
    cases : str or list of str or list of Case
        Convolution cases (default: :data:`SCALING_CASES`).
    dtypes, config, quick, torch, seed, progress, torch_status
        As for :func:`run_suite`.
    threads : int, optional
        The multi-threaded count (default: ``cnnext.get_num_threads()``).

    Returns
    -------
    list of dict
        One per (case, dtype): ``cnnext_1``, ``cnnext_n``, ``pytorch_1``,
        ``pytorch_n`` timing stats, ``threads`` and ``speedup_cnnext`` /
        ``speedup_pytorch`` (1-thread median / n-thread median).

    Examples
    --------
    >>> from cnnext.bench import run_scaling
    >>> rows = run_scaling("seed-mnist", dtypes=["float64"], threads=2,
    ...                    quick=True, torch=None)
    >>> rows[0]["threads"], rows[0]["speedup_cnnext"] > 0
    (2, True)
    """
    torch, torch_status = _resolve(torch, torch_status)
    config = config or (BenchConfig.quick() if quick else BenchConfig())
    cases = [c for c in _cases(cases, Case) if c.kind == "conv"]
    n = default_threads() if threads is None else threads
    rows = [(c, d) for c in cases for d in _dtypes("run_scaling", dtypes)]
    bar = Progress(len(rows), enabled=progress)
    blas = BlasThreads()
    out = []
    with pinned_threads(n, torch, blas):
        try:
            for case, dt in rows:
                bar.row(f"scaling {case.name} {dt}")
                base = build_peers(case, "fwd+bwd", np.dtype(dt), row_rng(case, seed), torch)
                if torch is None:
                    base["pytorch"] = Peer(None, torch_status)
                peers = {}
                for name in ("cnnext", "pytorch"):
                    for k, tag in ((1, "1"), (n, "n")):
                        peers[f"{name}_{tag}"] = Peer(
                            base[name].fn, base[name].status,
                            # (mypy cannot type a lambda with a default argument)
                            setup=lambda k=k: set_threads(k, torch, blas))  # type: ignore[misc]
                res = measure(peers, config, note=bar.show)
                row = {"case": case.name, "pass": "fwd+bwd", "dtype": dt, "threads": n, **res,
                       "noisy": noisy(res, list(res))}
                for name in ("cnnext", "pytorch"):
                    row[f"speedup_{name}"] = _ratio(res[f"{name}_1"].get("median"),
                                                    res[f"{name}_n"].get("median"))
                out.append(row)
        finally:
            bar.close()
    return out
