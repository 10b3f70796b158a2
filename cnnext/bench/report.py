"""Reporting: the text tables, geometric means, the JSON document and the plot."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .harness import NOISY_SPREAD
from .peers import PEERS

if TYPE_CHECKING:
    from .._typing import Record, StrPath
    from .harness import BenchConfig

__all__ = [
    "format_table",
    "summarize",
    "format_summary",
    "format_small_calls",
    "format_onnx_models",
    "format_scaling",
    "json_document",
    "plot",
]

#: Version tag of the JSON document written by ``cnnext bench --json``.
SCHEMA = "cnnext-bench/2"


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_cell(res: Record) -> str:
    """A peer's median, or why there is none."""
    status = res.get("status", "-")
    if status != "ok":
        return "error" if status.startswith("error") else status
    return _fmt_time(res["median"])


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}" if r >= 0.095 else f"{r:.2g}"


def _fmt_mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def _format_cells(head: Sequence[str], lines: Sequence[Sequence[str]], left: int) -> str:
    """Fixed-width columns: the first ``left`` left-aligned, the rest right."""
    widths = [max([len(h)] + [len(cells[i]) for cells in lines]) for i, h in enumerate(head)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])


def _errors(
    rows: Iterable[Record], label: Callable[[Record], str], peers: Iterable[str]
) -> list[str]:
    return [
        f"  {label(r)} {n}: {r[n]['status']}"
        for r in rows for n in peers if r.get(n, {}).get("status", "").startswith("error")
    ]


_NOISY_NOTE = (
    f"noisy: a peer's median is over {NOISY_SPREAD:g}x its fastest sample (the machine was "
    "busy); rerun that row (--cases) or use --threads 1"
)


def format_table(results: Sequence[Record], memory: bool = False) -> str:
    """The layer-suite results as a fixed-width text table (one line per row).

    Parameters
    ----------
    results : list of dict
        From :func:`~cnnext.bench.run_suite`.
    memory : bool
        Add the memory columns (``--memory``).

    Returns
    -------
    str

    Examples
    --------
    >>> from cnnext.bench import format_table, run_suite
    >>> rows = run_suite("seed-mnist", dtypes=["float64"], passes=["fwd"],
    ...                  quick=True, torch=None)
    >>> print(format_table(rows).splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    case pass dtype cnnext reference PyTorch cnnext/PyTorch cnnext/ref GFLOP/s PyTorch GFLOP/s note
    """
    head = ["case", "pass", "dtype", "cnnext", "reference", "PyTorch",
            "cnnext/PyTorch", "cnnext/ref", "GFLOP/s", "PyTorch GFLOP/s"]
    if memory:
        head += ["cnnext peak MiB", "kernel scratch MiB", "ref peak MiB", "maxrss+ MiB"]
    head.append("note")
    lines = []
    for r in results:
        line = [
            r["case"], r["pass"], r["dtype"],
            _fmt_cell(r["cnnext"]), _fmt_cell(r["reference"]), _fmt_cell(r["pytorch"]),
            _fmt_ratio(r["ratio_pytorch"]), _fmt_ratio(r["ratio_reference"]),
            "-" if r["gflops"] is None else f"{r['gflops']:.1f}",
            "-" if r["gflops_pytorch"] is None else f"{r['gflops_pytorch']:.1f}",
        ]
        if memory:
            rss = [r[n].get("maxrss_delta_bytes") for n in PEERS]
            rss = [v for v in rss if v is not None]
            line += [
                _fmt_mib(r["cnnext"].get("traced_peak_bytes")),
                _fmt_mib(r["cnnext"].get("kernel_scratch_bytes")),
                _fmt_mib(r["reference"].get("traced_peak_bytes")),
                _fmt_mib(max(rss)) if rss else "-",
            ]
        line.append("noisy" if r.get("noisy") else "")
        lines.append(line)
    out = [_format_cells(head, lines, left=3)]
    if any(r.get("noisy") for r in results):
        out += ["", _NOISY_NOTE]
    errors = _errors(results, lambda r: f"{r['case']} {r['pass']} {r['dtype']}", PEERS)
    if errors:
        out += ["", "errors:"] + errors
    return "\n".join(out)


def _geomean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in vals) / len(vals)) if vals else None


def summarize(results: Sequence[Record]) -> dict[str, dict[str, Record]]:
    """Geometric means of the ratios over the convolution rows, per dtype.

    Parameters
    ----------
    results : list of dict
        From :func:`~cnnext.bench.run_suite`.

    Returns
    -------
    dict
        ``{dtype: {"pytorch": {"fwd": g, "fwd+bwd": g, "all": g, "n": rows,
        "all_min": g}, "reference": {...}}}`` (None where nothing was
        measured); ``all_min`` is the geomean of the ratios of the fastest
        samples, a check on medians inflated by a busy machine.

    Examples
    --------
    >>> from cnnext.bench import summarize
    >>> rows = [{"dtype": "float32", "pass": "fwd", "geometry": {"kind": "conv"},
    ...          "ratio_pytorch": r, "ratio_reference": None} for r in (0.5, 2.0)]
    >>> summarize(rows)["float32"]["pytorch"]["fwd"]
    1.0
    """
    out = {}
    for dt in sorted({r["dtype"] for r in results}):
        conv = [r for r in results if r["dtype"] == dt and r["geometry"]["kind"] == "conv"]
        d = {}
        for peer, key in (("pytorch", "ratio_pytorch"), ("reference", "ratio_reference")):
            d[peer] = {
                p: _geomean([r[key] for r in conv if p == "all" or r["pass"] == p])
                for p in ("fwd", "fwd+bwd", "all")
            }
            d[peer]["n"] = sum(1 for r in conv if r[key])
            d[peer]["all_min"] = _geomean([r.get(key + "_min") for r in conv])
        out[dt] = d
    return out


def format_summary(results: Sequence[Record]) -> str:
    """Geomean lines of :func:`summarize`, per dtype and peer.

    Examples
    --------
    >>> from cnnext.bench import format_summary
    >>> rows = [{"dtype": "float32", "pass": "fwd", "geometry": {"kind": "conv"},
    ...          "ratio_pytorch": 0.5, "ratio_reference": None}]
    >>> print(format_summary(rows))
    geomean cnnext/PyTorch, conv cases, float32: fwd 0.50, all 0.50  (1 rows)
    """
    lines = []
    keys = ("fwd", "fwd+bwd", "all")
    for dt, d in summarize(results).items():
        p, r = d["pytorch"], d["reference"]
        if p["n"]:
            lines.append(
                f"geomean cnnext/PyTorch, conv cases, {dt}: "
                + ", ".join(f"{k} {p[k]:.2f}" for k in keys if p[k] is not None)
                + f"  ({p['n']} rows"
                + (f"; from fastest samples: all {p['all_min']:.2f})" if p["all_min"] else ")")
            )
        if r["n"]:
            lines.append(
                f"geomean cnnext/reference, conv cases, {dt}: "
                + ", ".join(f"{k} {r[k]:.3f}" for k in keys if r[k] is not None)
                + f"  (speed-up over reference {1 / r['all']:.1f}x, {r['n']} rows)"
            )
    return "\n".join(lines)


def format_small_calls(
    rows: Sequence[Record], others: float | None = None, cores: int | None = None
) -> str:
    """The small-calls rows as a text table, with the load during them.

    Parameters
    ----------
    rows : list of dict
        From :func:`~cnnext.bench.run_small_calls`.
    others : float, optional
        Cores other processes kept busy meanwhile (``cpu_snapshot``).
    cores : int, optional

    Returns
    -------
    str
    """
    if not rows:
        return ""
    threads = rows[0]["threads"]
    head = ["case", "dtype", "cnnext", "PyTorch", "cnnext/PyTorch", "numpy", "cnnext/numpy",
            "inner call", "cnnext - inner", "note"]
    # The optional peers of the whole-network rows, as columns when present.
    extra = [(p, name) for p, name in (("onnxruntime", "ONNX Runtime"), ("jax", "JAX"))
             if any(p in r for r in rows)]
    for _, name in extra:
        head[-1:-1] = [name, f"cnnext/{name}"]
    lines = []
    for r in rows:
        over = r.get("overhead")
        cells = [
            r["case"], r["dtype"], _fmt_cell(r["cnnext"]),
            _fmt_cell(r["pytorch"]) if "pytorch" in r else "-", _fmt_ratio(r["ratio_pytorch"]),
            _fmt_cell(r["numpy"]) if "numpy" in r else "-", _fmt_ratio(r["ratio_numpy"]),
            _fmt_cell(r["inner"]) if "inner" in r else "-",
            f"{over * 1e6:+.2f} us" if over is not None else "-",
        ]
        for p, _ in extra:
            cells += [_fmt_cell(r[p]) if p in r else "-", _fmt_ratio(r.get(f"ratio_{p}"))]
        lines.append(cells + ["noisy" if r["noisy"] else ""])
    plural = "s" if threads != 1 else ""
    out = [f"small calls, one image at a time ({threads} thread{plural}; times per call, "
           "cnnext and its peers interleaved):", _format_cells(head, lines, left=2)]
    notes = []
    for r in rows:
        if r["case"] == "seed-step-compat" and r["ratio_numpy"]:
            notes.append(f"seed-step-compat: numpy is the tutorial's own numpy code; cnnext "
                         f"is {1 / r['ratio_numpy']:.0f}x faster")
        if r["case"] == "linear-b1" and "numpy" in r:
            notes.append("linear-b1: numpy is x @ w.T + b")
    if any(r.get("overhead") is not None for r in rows):
        notes.append("inner call: the call one level down (the compiled kernel under F, the "
                      "F call under a layer); cnnext - inner is what the outer level adds")
    notes += _rows_notes(rows, others, cores, ("cnnext", "pytorch", "numpy", "onnxruntime", "jax"))
    return "\n".join(out + notes)


def format_onnx_models(
    rows: Sequence[Record], others: float | None = None, cores: int | None = None
) -> str:
    """The onnx group's rows (imported ONNX models against ONNX Runtime and
    PyTorch) as a text table, with the load during them.

    Parameters
    ----------
    rows : list of dict
        From :func:`~cnnext.bench.run_small_calls` on the onnx group.
    others : float, optional
        Cores other processes kept busy meanwhile (``cpu_snapshot``).
    cores : int, optional

    Returns
    -------
    str
    """
    if not rows:
        return ""
    threads = rows[0]["threads"]
    head = ["case", "dtype", "cnnext", "ONNX Runtime", "cnnext/ORT", "PyTorch",
            "cnnext/PyTorch", "note"]
    lines = [[
        r["case"], r["dtype"], _fmt_cell(r["cnnext"]), _fmt_cell(r["onnxruntime"]),
        _fmt_ratio(r["ratio_onnxruntime"]), _fmt_cell(r["pytorch"]),
        _fmt_ratio(r["ratio_pytorch"]), "noisy" if r["noisy"] else "",
    ] for r in rows]
    plural = "s" if threads != 1 else ""
    out = [f"imported ONNX models, inference ({threads} thread{plural}; times per forward, "
           "cnnext and its peers interleaved on the same file and input):",
           _format_cells(head, lines, left=2)]
    return "\n".join(out + _rows_notes(rows, others, cores, ("cnnext", "onnxruntime", "pytorch")))


def _rows_notes(
    rows: Sequence[Record], others: float | None, cores: int | None, peers: Sequence[str]
) -> list[str]:
    """The notes under a table of per-call rows: the load during them, the
    noisy-rows note, and the peers' errors."""
    notes = []
    if others is not None:
        notes.append(_load_line(others, cores, rows[0]["threads"], "these rows"))
    if any(r["noisy"] for r in rows):
        notes.append(_NOISY_NOTE)
    errors = _errors(rows, lambda r: f"{r['case']} {r['dtype']}", peers)
    if errors:
        notes += ["errors:"] + errors
    return notes


def format_scaling(rows: Sequence[Record]) -> str:
    """The thread-scaling rows (:func:`~cnnext.bench.run_scaling`) as a text table."""
    if not rows:
        return ""
    n = rows[0]["threads"]
    head = ["case", "dtype", "cnnext 1t", f"cnnext {n}t", "speed-up",
            "PyTorch 1t", f"PyTorch {n}t", "speed-up", "note"]
    lines = []
    for r in rows:
        lines.append([
            r["case"], r["dtype"],
            _fmt_cell(r["cnnext_1"]), _fmt_cell(r["cnnext_n"]),
            "-" if r["speedup_cnnext"] is None else f"{r['speedup_cnnext']:.2f}x",
            _fmt_cell(r["pytorch_1"]), _fmt_cell(r["pytorch_n"]),
            "-" if r["speedup_pytorch"] is None else f"{r['speedup_pytorch']:.2f}x",
            "noisy" if r.get("noisy") else "",
        ])
    return "\n".join([f"thread scaling, fwd+bwd, 1 vs {n} threads (interleaved):",
                      _format_cells(head, lines, left=2)])


def _load_line(others: float, cores: int | None, threads: int, during: str) -> str:
    msg = f"other processes kept {others:.1f} of {cores} cores busy during {during}"
    if threads > 1 and others > 0.25:
        msg += (f": {threads}-thread calls had to wait for a free core, so multi-threaded "
                "times (and their ratios) are unreliable; compare with --threads 1")
    return msg


def load_line(others: float, cores: int | None, threads: int) -> str:
    """The closing line: how busy other processes kept the machine during the run."""
    return _load_line(others, cores, threads, "the run")


def header(
    info: Record, cfg: BenchConfig | None, small_cfg: BenchConfig | None, torch_status: str,
    torch_autograd: bool,
) -> str:
    """The lines printed before the tables: versions, CPU, threads, timing.

    ``cfg`` / ``small_cfg``: the BenchConfig of the layer suite / of the
    small calls, or None when that group does not run.
    """
    v, t = info["versions"], info["threads"]
    cores = info["cores"]
    if info.get("cores_available") not in (None, cores):
        cores = f"{info['cores_available']} of {cores}"
    torch_desc = f"torch {v['torch']}" if v["torch"] else f"torch {torch_status}"
    lines = [
        f"cnnext bench: cnnext {v['cnnext']}, numpy {v['numpy']}, "
        f"scipy {v['scipy'] or 'not installed'}, {torch_desc}",
        f"CPU: {info['cpu_model']} ({cores} cores"
        + (f", cnnext kernels: {info['cnnext_isa']}" if info.get("cnnext_isa") else "")
        + f"); threads: cnnext {t['cnnext']}, "
        f"torch {t['torch'] if t['torch'] is not None else '-'}"
        + (f", BLAS {t['blas']}" if t.get("blas") else ""),
    ]
    if cfg is not None:
        reps = (f"{cfg.repeats}" if cfg.repeats
                else f"{cfg.min_repeats}-{cfg.max_repeats} (adaptive)")
        how = ("autograd.grad" if torch_autograd else
               "aten.convolution_backward (no autograd; batch norm: autograd.grad)")
        lines.append(
            f"timing: medians of {reps} interleaved samples (>= {cfg.min_sample * 1e3:g} ms "
            f"each), {cfg.warmup} warm-up calls; reference <= {cfg.ref_max_repeats} samples; "
            f"PyTorch fwd+bwd via {how}")
    if small_cfg is not None:
        sreps = (f"{small_cfg.repeats}" if small_cfg.repeats
                 else f"{small_cfg.min_repeats}-{small_cfg.max_repeats}")
        lines.append(f"small calls: medians of {sreps} interleaved samples of "
                     f">= {small_cfg.min_sample * 1e6:g} us")
    if "omp_wait_policy" in t and t["omp_wait_policy"] is None:
        lines.append("OpenMP: a runtime loaded before cnnext keeps its default idle-worker "
                     "policy (spinning); set OMP_WAIT_POLICY=passive for timings like "
                     "cnnext's own")
    lines.append("ratios are cnnext time / peer time (< 1: cnnext faster)")
    return "\n".join(lines + _load_warning(info, t["cnnext"]))


def _load_warning(info: Record, threads: int) -> list[str]:
    load, cores = info.get("loadavg"), info.get("cores_available") or info.get("cores")
    if not load or not cores or load[0] <= cores - 0.5:
        return []
    return [
        f"warning: load average {load[0]:.1f} on {cores} cores -- other processes compete for "
        "the CPU; timings are noisy"
        + (f", most of all with {threads} threads (--threads 1 is steadier)" if threads > 1 else "")
    ]


def json_document(
    command: list[str], elapsed: float, others: float | None, info: Record, settings: Record,
    results: Sequence[Record], small_calls: Sequence[Record], scaling: Sequence[Record],
    small_others: float | None = None,
) -> Record:
    """The ``--json`` document (schema ``cnnext-bench/2``).

    Top-level keys: ``schema``, ``command``, ``created``, ``elapsed_s``,
    ``other_processes_cores`` (cores other processes kept busy during the
    run; ``small_calls_other_processes_cores``: during the small calls),
    ``machine``, ``settings``, ``results`` (layer-suite rows),
    ``small_calls``, ``scaling`` and ``summary`` (geomeans).
    """
    return {
        "schema": SCHEMA,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": elapsed,
        "other_processes_cores": others,
        "small_calls_other_processes_cores": small_others,
        "machine": info,
        "settings": settings,
        "results": results,
        "small_calls": small_calls,
        "scaling": scaling,
        "summary": summarize(results),
    }


#: (row key, legend label) of the plotted ratios.
_SERIES = (("ratio_pytorch", "cnnext / PyTorch"), ("ratio_reference", "cnnext / reference"),
           ("ratio_numpy", "cnnext / numpy"))


def _bars(
    rows: Sequence[Record],
) -> tuple[list[Record], list[tuple[str, str]], list[tuple[float, float, str]]]:
    """(rows with a ratio, [(key, label)] of the series drawn, [(x, height, key)] of the bars).

    A series appears only when some row has it, and each row's bars are
    centred on its tick: an absent peer leaves neither a legend entry nor
    an empty slot.
    """
    rows = [r for r in rows if any(r.get(key) for key, _ in _SERIES)]
    series = [(key, lab) for key, lab in _SERIES if any(r.get(key) for r in rows)]
    width = 0.8 / max(1, len(series))
    bars = []
    for i, r in enumerate(rows):
        present = [key for key, _ in series if r.get(key)]
        for j, key in enumerate(present):
            bars.append((i + (j - (len(present) - 1) / 2) * width, r[key], key))
    return rows, series, bars


def plot(rows: Sequence[Record], path: StrPath) -> list[str]:
    """Bar chart of the ratios of ``rows`` (suite and small-calls rows).

    Parameters
    ----------
    rows : list of dict
        From :func:`~cnnext.bench.run_suite` and/or
        :func:`~cnnext.bench.run_small_calls`.
    path : str or path-like
        The image file to write (PNG, SVG, ... by extension).

    Returns
    -------
    list of str
        The legend's labels: only the peers that were measured.

    Notes
    -----
    Needs matplotlib (``pip install 'cnnext[plot]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows, series, bars = _bars(rows)
    colors = {key: f"C{i}" for i, (key, _) in enumerate(series)}
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows) + 2), 5))
    for x, height, key in bars:
        ax.bar(x, height, width, color=colors[key])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time ratio (< 1: cnnext faster)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([" ".join(filter(None, (r["case"], r.get("pass"), r["dtype"])))
                        for r in rows], rotation=70, ha="right", fontsize=7)
    labels = [lab for _, lab in series]
    if series:
        ax.legend(handles=[Patch(color=colors[key], label=lab) for key, lab in series])
    ax.set_title("cnnext bench")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return labels
