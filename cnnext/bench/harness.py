"""The timing harness: interleaved samples, calibration, medians.

Every input is generated before timing starts; each peer is warmed up, then
calibrated: the number of calls that make one *sample* is raised until a
sample lasts at least ``min_sample`` seconds, so the timer's resolution and
the loop overhead are negligible even for calls of a microsecond.  The peers
then run *interleaved*, round-robin, with the order rotated every round
(cnnext, torch, jax / torch, jax, cnnext / ...) and the garbage collector
disabled, so a burst of load from another process hits all peers alike.
The slow numpy reference is timed apart, before and after those rounds: its
matrix products leave OpenBLAS's threads spinning for a while after each
call, which would slow down whichever peer ran next (a 2-thread
convolution of 1.7 ms took 3-11 ms right after one).  Samples are timed
with :func:`time.perf_counter_ns` around a plain loop of calls.  Reported
times are medians of the per-call time over the samples.
"""
from __future__ import annotations

import gc
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy.typing as npt

    from .._typing import Record, Thunk

__all__ = ["BenchConfig", "Peer", "measure", "noisy", "NOISY_SPREAD", "SKIPPED_SLOW"]

SKIPPED_SLOW = "skipped (slow)"

#: A row is flagged noisy when a peer's median exceeds its fastest sample by this factor.
NOISY_SPREAD = 2.0

# Upper bound of calls per sample (a call of 20 ns would otherwise ask for 10^4+).
_MAX_NUMBER = 100_000


@dataclass
class BenchConfig:
    """Knobs of the timing harness (see ``cnnext bench --help``).

    ``repeats`` fixes the number of counted samples per fast peer; None
    chooses between ``min_repeats`` and ``max_repeats`` to fit
    ``row_budget`` seconds per row.  The reference gets at most
    ``ref_max_repeats`` samples within ``ref_budget`` seconds, and is
    skipped when one call is estimated to exceed ``ref_limit`` seconds
    (unless ``full_reference``).  Each fast peer first gets ``warmup``
    calls (fewer once they exceed ``warmup_budget`` seconds), then as many
    calls per sample as make a sample of at least ``min_sample`` seconds.
    """

    repeats: int | None = None
    min_repeats: int = 5
    max_repeats: int = 21
    warmup: int = 2
    warmup_budget: float = 1.0
    min_sample: float = 0.005
    row_budget: float = 1.2
    ref_budget: float = 2.0
    ref_max_repeats: int = 5
    ref_limit: float = 20.0
    full_reference: bool = False
    memory: bool = False

    @classmethod
    def quick(cls, **kw: Any) -> BenchConfig:
        """Settings for a smoke run: few, short samples."""
        base: dict[str, Any] = dict(
            repeats=3, warmup=1, min_sample=0.001, row_budget=0.2,
            ref_budget=0.3, ref_max_repeats=1, ref_limit=1.0,
        )
        base.update(kw)
        return cls(**base)

    @classmethod
    def small_calls(cls, quick: bool = False, **kw: Any) -> BenchConfig:
        """Settings for calls of microseconds: samples of >= 200 us, many rounds."""
        base: dict[str, Any]
        if quick:
            base = dict(repeats=5, warmup=5, warmup_budget=0.05, min_sample=200e-6)
        else:
            base = dict(min_repeats=15, max_repeats=101, warmup=20, warmup_budget=0.2,
                        min_sample=200e-6, row_budget=1.0)
        base.update(kw)
        return cls(**base)


@dataclass
class Peer:
    """One implementation of a row, ready to time.

    Attributes
    ----------
    fn : callable or None
        Zero-argument callable doing one call; None when unavailable.
    status : str
        Why ``fn`` is None (e.g. ``"not installed"``); ``"ok"`` otherwise.
    probe : callable, optional
        ``() -> estimated seconds of one fn() call`` (the slow reference).
    setup : callable, optional
        Run, untimed, before each sample.
    impl : str, optional
        What ``fn`` runs, when not obvious (JSON ``"impl"``).
    state : callable, optional
        ``() -> {name: ndarray}``, e.g. a model's parameters (tests).
    """

    fn: Thunk | None = None
    status: str = "ok"
    probe: Callable[[], float | None] | None = None
    setup: Thunk | None = None
    impl: str | None = None
    state: Callable[[], dict[str, npt.NDArray[Any]]] | None = None


def _time_once(fn: Thunk) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) * 1e-9


def _sample(fn: Thunk, number: int) -> float:
    """Mean seconds per call over ``number`` back-to-back calls."""
    it = itertools.repeat(None, number)
    t0 = time.perf_counter_ns()
    for _ in it:
        fn()
    return (time.perf_counter_ns() - t0) * 1e-9 / number


def _calibrate(fn: Thunk, t: float, min_sample: float) -> tuple[float, int]:
    """(seconds per call, calls per sample) so that a sample lasts >= ``min_sample``.

    ``t`` is the time of one call already measured.  The count grows from
    the estimate ``min_sample / t`` until a measured sample is long enough.
    """
    number = 1
    while t * number < min_sample and number < _MAX_NUMBER:
        number = min(_MAX_NUMBER, max(2 * number, math.ceil(min_sample / max(t, 1e-9))))
        t = _sample(fn, number)
    return t, number


def _warm_up(fn: Thunk, cfg: BenchConfig) -> tuple[float, int]:
    """Warm-up calls (at least one; stop after ``warmup_budget`` s), then calibrate."""
    spent = 0.0
    for _ in range(max(1, cfg.warmup)):
        t = _time_once(fn)
        spent += t
        if spent > cfg.warmup_budget:
            break
    return _calibrate(fn, t, cfg.min_sample)


def _stats(samples: list[float], number: int) -> Record:
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return {
        "status": "ok",
        "median": statistics.median(samples),
        "min": min(samples),
        "q1": q[0],
        "q3": q[2],
        "repeats": len(samples),
        "number": number,
        "samples": samples,
    }


def error_status(exc: BaseException) -> Record:
    """A peer's result when it raised: ``{"status": "error: ..."}``."""
    return {"status": f"error: {type(exc).__name__}: {exc}"[:200]}


def measure(
    peers: Mapping[str, Peer], cfg: BenchConfig, note: Callable[[str], object] = lambda msg: None
) -> dict[str, Record]:
    """Time the peers interleaved; return ``{name: stats or {"status": ...}}``.

    Parameters
    ----------
    peers : dict of {str: Peer}
        In display order.  The peer named ``"reference"`` (if any) is the
        slow one, with its own budget (see :class:`BenchConfig`), timed
        after the interleaved rounds of the others.
    cfg : BenchConfig
    note : callable, optional
        Progress messages.

    Returns
    -------
    dict
        Per peer: ``median``, ``min``, ``q1``, ``q3`` (seconds per call),
        ``samples``, ``repeats`` (samples) and ``number`` (calls per
        sample), or only a ``status`` when it was not timed.
    """
    out: dict[str, Record] = {}
    est: dict[str, float] = {}
    number: dict[str, int] = {}
    ref_runs = _prepare_reference(peers, cfg, out, est, number, note)
    for name, peer in peers.items():
        if name == "reference":
            continue
        if peer.fn is None:
            out[name] = {"status": peer.status}
            continue
        note(f"warm-up {name}")
        try:
            if peer.setup is not None:
                peer.setup()
            est[name], number[name] = _warm_up(peer.fn, cfg)
        except Exception as exc:
            out[name] = error_status(exc)
    fast = [n for n in peers if n in number and n != "reference"]
    if cfg.repeats is not None:
        rounds = cfg.repeats
    else:
        cost = sum(est[n] * number[n] for n in fast) or 1e-3
        rounds = int(min(cfg.max_repeats, max(cfg.min_repeats, cfg.row_budget // cost)))
    samples: dict[str, list[float]] = {n: [] for n in number}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            note(f"round {r + 1}/{rounds}")
            k = r % len(fast) if fast else 0
            for name in fast[k:] + fast[:k]:
                _take_sample(peers[name], number[name], samples[name])
        for r in range(min(ref_runs, rounds)):
            note(f"reference {r + 1}/{ref_runs}")
            _take_sample(peers["reference"], number["reference"], samples["reference"])
    finally:
        if gc_was_enabled:
            gc.enable()
    for name in peers:
        if name in number:
            out[name] = _stats(samples[name], number[name])
            if cfg.memory:
                out[name].update(_memory(cast("Thunk", peers[name].fn)))
    return out


def _take_sample(peer: Peer, number: int, into: list[float]) -> None:
    """Run the peer's setup, then append one sample of ``number`` calls."""
    if peer.setup is not None:
        peer.setup()
    # A timed peer has a fn (one without never got a calibrated number).
    into.append(_sample(cast("Thunk", peer.fn), number))


def _prepare_reference(
    peers: Mapping[str, Peer], cfg: BenchConfig, out: dict[str, Record], est: dict[str, float],
    number: dict[str, int], note: Callable[[str], object],
) -> int:
    """Probe, maybe skip, else time one call of the slow reference.

    Fills ``out``/``est``/``number`` for it; returns how many samples it gets.
    """
    ref = peers.get("reference")
    if ref is None:
        return 0
    if ref.fn is None:
        out["reference"] = {"status": ref.status}
        return 0
    try:
        guess = None
        if ref.probe is not None:
            note("probe reference")
            guess = ref.probe()
        if guess is not None and guess > cfg.ref_limit and not cfg.full_reference:
            out["reference"] = {"status": SKIPPED_SLOW, "estimate": guess}
            return 0
        note("warm-up reference")
        t = _time_once(ref.fn)
        est["reference"], number["reference"] = t, _calls_for(t, cfg.min_sample)
        per = max(t * number["reference"], 1e-9)
        return int(max(1, min(cfg.ref_max_repeats, cfg.ref_budget // per)))
    except Exception as exc:
        out["reference"] = error_status(exc)
        return 0


def _calls_for(t: float, min_sample: float) -> int:
    """Calls per sample for a call of ``t`` seconds (the reference: from one call)."""
    if t >= min_sample:
        return 1
    return int(min(_MAX_NUMBER, max(1, math.ceil(min_sample / max(t, 1e-9)))))


def noisy(res: Mapping[str, Record], names: Iterable[str] = ("cnnext", "pytorch")) -> bool:
    """True when the median of one of ``names`` is far above its fastest sample.

    On a busy machine multi-threaded calls stall for whole scheduler time
    slices, so the samples become bimodal and the median measures the load,
    not the kernel.  The slow reference, with its few samples, does not
    count.
    """
    for name in names:
        r = res.get(name, {})
        if r.get("status") == "ok" and r["repeats"] >= 3 and r["median"] > NOISY_SPREAD * r["min"]:
            return True
    return False


def _maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _memory(fn: Thunk) -> Record:
    """Peak traced (numpy/Python) allocation of one call, and maxrss growth."""
    import tracemalloc

    from .. import _gemm

    gc.collect()
    rss0 = _maxrss_bytes()
    _gemm.scratch_high_water(reset=True)
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss1 = _maxrss_bytes()
    return {
        "traced_peak_bytes": peak,
        # The kernels' malloc'd scratch (not seen by tracemalloc); only
        # meaningful for cnnext's own calls.
        "kernel_scratch_bytes": _gemm.scratch_high_water(reset=True),
        "maxrss_delta_bytes": None if rss0 is None else cast(int, rss1) - rss0,
    }
