"""``cnnext bench``: the command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .cases import ALL_CASES, GROUPS, QUICK_CASES, SCALING_CASES, Case, SmallCall, select_cases
from .harness import BenchConfig
from .machine import (BlasThreads, cpu_snapshot, default_threads, import_torch, machine_info,
                      others_cores, pinned_threads)
from .report import (format_onnx_models, format_scaling, format_small_calls, format_summary,
                     format_table, header, json_document, load_line, plot)
from .runner import run_scaling, run_small_calls, run_suite

if TYPE_CHECKING:
    from types import ModuleType

    from .._typing import Record

__all__ = ["main"]


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnext bench",
        description="Time cnnext against the numpy reference and PyTorch CPU, interleaved in one "
        "process, and print tables of medians and ratios (cnnext / peer): the layer suite "
        "(convolutions, pooling, a LeNet-5 training step), then the small calls of "
        "one-image-at-a-time code.",
        epilog="Examples: cnnext bench --quick;  cnnext bench --threads 1 --cases small-calls;  "
        "cnnext bench --dtype float32 --cases '*-3x3' --json out.json;  cnnext bench --list",
    )
    p.add_argument("--quick", action="store_true",
                   help="smoke run of a few seconds: one cheap case per kind and the small "
                   "calls, float32, few samples")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default=None,
                   help="dtype(s) of the layer suite (default: both; float32 with --quick); "
                   "small calls run in float32, or float64 with --dtype float64")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads for cnnext, PyTorch and BLAS alike (default: "
                   "cnnext.get_num_threads(), i.e. OMP_NUM_THREADS or all cores)")
    p.add_argument("--cases", default=None, metavar="PATTERN",
                   help="comma-separated fnmatch patterns or substrings of case names or "
                   f"groups ({', '.join(GROUPS)}); default: all (see --list)")
    p.add_argument("--list", action="store_true", help="list the cases by group and exit")
    p.add_argument("--passes", default=None, metavar="LIST",
                   help="comma-separated subset of fwd,fwd+bwd,step (layer suite)")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="counted samples per peer (default: adaptive)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write results and machine info as JSON")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="bar chart of the ratios (needs matplotlib)")
    p.add_argument("--memory", action="store_true",
                   help="also report peak traced (numpy) allocation per call and maxrss growth")
    p.add_argument("--full-reference", action="store_true",
                   help="time the numpy reference even where it is estimated to be very slow")
    p.add_argument("--scaling", action="store_true",
                   help="instead of the suite: fwd+bwd at 1 thread vs --threads threads, "
                   f"interleaved, on {' and '.join(SCALING_CASES)} (or the --cases given)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--torch-autograd", action="store_true",
                   help="time PyTorch fwd+bwd through torch.autograd.grad instead of "
                   "aten.convolution_backward")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show progress on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def _list_cases() -> str:
    lines = []
    for group in GROUPS:
        names = [c.name for c in ALL_CASES if c.group == group]
        lines.append(f"{group + ':':<13}{', '.join(names)}")
    lines.append(f"{'--quick:':<13}{', '.join(QUICK_CASES)}")
    lines.append(f"{'--scaling:':<13}{', '.join(SCALING_CASES)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cnnext bench``; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. ``cnnext bench | head``: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _fail(msg: str) -> int:
    print(f"cnnext bench: {msg}", file=sys.stderr)
    return 2


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        print(_list_cases())
        return 0
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib, which is not installed "
                         "(pip install matplotlib, or pip install 'cnnext[plot]')")
    if args.scaling:
        patterns = args.cases or ",".join(SCALING_CASES)
    else:
        patterns = args.cases or (",".join(QUICK_CASES) if args.quick else None)
    cases = select_cases(patterns)
    if not cases:
        return _fail(f"--cases {args.cases!r} matches no case (cnnext bench --list shows them)")
    passes = None
    if args.passes:
        passes = [s.strip() for s in args.passes.split(",") if s.strip()]
        bad = [s for s in passes if s not in ("fwd", "fwd+bwd", "step")]
        if bad:
            return _fail(f"--passes accepts fwd, fwd+bwd, step; got {bad}")
    dtype = args.dtype or ("float32" if args.quick else "both")
    dtypes = ("float32", "float64") if dtype == "both" else (dtype,)
    small_dtypes = ["float32"] if "float32" in dtypes else list(dtypes)
    torch: ModuleType | None
    if args.no_torch:
        torch, torch_status = None, "not used (--no-torch)"
    else:
        torch, torch_status = import_torch()
    layer = [c for c in cases if isinstance(c, Case)]
    small = [] if args.scaling else [c for c in cases if isinstance(c, SmallCall)]
    onnx_calls = [c for c in small if c.group == "onnx"]
    small = [c for c in small if c.group != "onnx"]
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    cfg.memory, cfg.full_reference = args.memory, args.full_reference
    small_cfg = BenchConfig.small_calls(quick=args.quick)
    if args.repeats:
        cfg.repeats = small_cfg.repeats = args.repeats
        cfg.ref_max_repeats = min(cfg.ref_max_repeats, args.repeats)
    threads = args.threads if args.threads is not None else default_threads()

    blas = BlasThreads()
    with pinned_threads(threads, torch, blas):
        info = machine_info(torch=torch)
    info["threads"]["blas"] = (
        f"{threads} ({blas.method})" if blas.method
        else "library default (install threadpoolctl to pin)"
    )
    print(header(info, cfg if layer else None, small_cfg if small or onnx_calls else None,
                 torch_status, args.torch_autograd), flush=True)
    common: dict[str, Any] = dict(threads=threads, torch=torch, torch_status=torch_status,
                                  seed=args.seed, progress=args.progress)
    cores = info.get("cores_available") or info.get("cores")
    t0, cpu0 = time.perf_counter(), cpu_snapshot()
    results: list[Record]
    small_rows: list[Record]
    scaling: list[Record]
    small_others: float | None
    results, small_rows, scaling, small_others = [], [], [], None
    if args.scaling:
        scaling = run_scaling(layer, dtypes=dtypes, config=cfg, **common)
        print()
        print(format_scaling(scaling) or "no convolution case selected for --scaling")
    if layer and not args.scaling:
        results = run_suite(layer, dtypes=dtypes, passes=passes, config=cfg,
                            torch_autograd=args.torch_autograd, **common)
        print()
        print(format_table(results, memory=args.memory))
        summary = format_summary(results)
        if summary:
            print()
            print(summary)
    if small:
        s0, st0 = cpu_snapshot(), time.perf_counter()
        small_rows = run_small_calls(small, dtypes=small_dtypes, config=small_cfg, **common)
        small_others = others_cores(s0, cpu_snapshot(), time.perf_counter() - st0)
        print()
        print(format_small_calls(small_rows, small_others, cores))
    if onnx_calls:
        s0, st0 = cpu_snapshot(), time.perf_counter()
        onnx_rows = run_small_calls(onnx_calls, config=small_cfg, **common)
        print()
        print(format_onnx_models(onnx_rows, others_cores(s0, cpu_snapshot(),
                                                         time.perf_counter() - st0), cores))
        small_rows += onnx_rows
    elapsed = time.perf_counter() - t0
    others = others_cores(cpu0, cpu_snapshot(), elapsed)
    print(f"\n{len(results) + len(small_rows) + len(scaling)} rows in {elapsed:.0f} s")
    if others is not None:
        print(load_line(others, cores, threads))
    if args.json:
        try:
            loadavg_end = os.getloadavg()
        except (AttributeError, OSError):
            loadavg_end = None
        settings = {
            **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "small_calls_timing": {k: getattr(small_cfg, k) for k in
                                   ("repeats", "min_repeats", "max_repeats", "warmup",
                                    "min_sample", "row_budget")},
            "quick": args.quick,
            "threads": threads,
            "dtypes": list(dtypes),
            "small_calls_dtypes": small_dtypes,
            "torch_status": torch_status,
            "torch_fwd_bwd": "autograd.grad" if args.torch_autograd
            else "aten.convolution_backward",
            "seed": args.seed,
        }
        command = ["cnnext", "bench", *(sys.argv[2:] if argv is None else argv)]
        doc = json_document(command, elapsed, others, {**info, "loadavg_end": loadavg_end},
                            settings, results, small_rows, scaling, small_others)
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results + small_rows, args.plot)
        print(f"wrote {args.plot}")
    return 0
