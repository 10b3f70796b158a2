"""The project's speed targets, graded from ``cnnext bench --json`` output.

``cnnext bench`` measures and reports; deciding whether the measurements
meet the goals the project set itself is the job of this script, which is
not part of the installed package.

Usage (from the repository root, against an installed cnnext)::

    python benchmarks/targets.py                   # run the bench 3 times (~3 min), grade
    python benchmarks/targets.py --quick           # the same runs with --quick (smoke test)
    python benchmarks/targets.py --json a.json ... # grade runs already saved
    pytest benchmarks/test_targets.py --targets    # the same as a pytest test

The exit status is 1 when a target is missed.  Ratios are cnnext time /
peer time, medians of interleaved samples, so the grades hold for the
machine and load of the run; on a busy machine rerun, or compare the
1-thread runs.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

#: The bench runs graded by default: the whole suite at the default thread
#: count, the small calls and the LeNet-5 step at 1 thread, thread scaling.
RUNS = (
    (),
    ("--threads", "1", "--cases", "small-calls,lenet5-train"),
    ("--scaling",),
)

#: Thread scaling: 2+ threads must give this speed-up over 1 on these cases.
SCALING_CASES = ("cifar-3x3", "resnet-3x3")
SCALING_MIN = 1.6


@dataclass(frozen=True)
class Grade:
    """One target: what it asks, what was measured, and whether that meets it."""

    target: str
    measured: str
    met: bool

    def __str__(self):
        return f"[{'met' if self.met else 'NOT met'}] {self.target}: {self.measured}"


def _geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _threads(doc):
    n = doc["settings"]["threads"]
    return f"{n} thread{'s' if n != 1 else ''}"


def _suite_grades(doc):
    rows = [r for r in doc.get("results", []) if r.get("ratio_pytorch") is not None]
    where = _threads(doc)
    out = []
    for dt in sorted({r["dtype"] for r in doc.get("results", [])}):
        conv = [r for r in doc["results"] if r["dtype"] == dt and r["geometry"]["kind"] == "conv"]
        fb = [r for r in conv if r["pass"] == "fwd+bwd" and r["ratio_pytorch"] is not None]
        if fb:
            worst = max(fb, key=lambda r: r["ratio_pytorch"])
            out.append(Grade(f"conv fwd+bwd {dt}, {where}: every cnnext/PyTorch <= 1.5",
                             f"worst {worst['ratio_pytorch']:.2f} ({worst['case']})",
                             worst["ratio_pytorch"] <= 1.5))
            g = _geomean([r["ratio_pytorch"] for r in fb])
            out.append(Grade(f"conv fwd+bwd {dt}, {where}: geomean cnnext/PyTorch <= 1.0",
                             f"{g:.2f}", g <= 1.0))
        g = _geomean([r["ratio_reference"] for r in conv])
        if g:
            out.append(Grade(f"conv {dt}, {where}: >= 5x faster than the reference (geomean)",
                             f"{1 / g:.1f}x", 1 / g >= 5))
    pool = [r for r in rows if r["geometry"]["kind"] in ("maxpool", "avgpool")
            and r["pass"] == "fwd+bwd"]
    if pool:
        worst = max(pool, key=lambda r: r["ratio_pytorch"])
        out.append(Grade(f"pooling fwd+bwd, {where}: every cnnext/PyTorch <= 1.0",
                         f"worst {worst['ratio_pytorch']:.2f} ({worst['case']} {worst['dtype']})",
                         worst["ratio_pytorch"] <= 1.0))
    for r in rows:
        v = r["ratio_pytorch"]
        if r["case"] == "lenet5-train":
            out.append(Grade(f"LeNet-5 training step {r['dtype']}, {where}: cnnext/PyTorch <= 0.5",
                             f"{v:.2f}", v <= 0.5))
        if r["case"] == "seed-mnist" and r["pass"] == "fwd":
            out.append(Grade(f"seed-mnist fwd {r['dtype']}, {where}: cnnext/PyTorch <= 1.0",
                             f"{v:.2f}", v <= 1.0))
    return out


def _small_call_grades(doc):
    out = []
    for r in doc.get("small_calls", []):
        if r["case"] != "seed-step-compat":
            continue
        where = f"{r['threads']} thread{'s' if r['threads'] != 1 else ''}"
        if r.get("ratio_numpy"):
            speedup = 1 / r["ratio_numpy"]
            out.append(Grade(f"seed-step-compat, {where}: >= 50x faster than the tutorial's "
                             "numpy code", f"{speedup:.0f}x", speedup >= 50))
        if r.get("ratio_pytorch") is not None:
            out.append(Grade(f"seed-step-compat, {where}: cnnext/PyTorch <= 0.6",
                             f"{r['ratio_pytorch']:.2f}", r["ratio_pytorch"] <= 0.6))
    return out


def _scaling_grades(doc):
    out = []
    for r in doc.get("scaling", []):
        s = r.get("speedup_cnnext")
        if r["case"] in SCALING_CASES and r["threads"] >= 2 and s is not None:
            out.append(Grade(f"{r['case']} {r['dtype']}: {r['threads']} threads >= "
                             f"{SCALING_MIN}x 1-thread throughput", f"{s:.2f}x", s >= SCALING_MIN))
    return out


def grade(doc):
    """Every target a ``cnnext bench --json`` document has the data for.

    Parameters
    ----------
    doc : dict
        The JSON document (schema ``cnnext-bench/2``).

    Returns
    -------
    list of Grade
    """
    if doc.get("schema") != "cnnext-bench/2":
        raise ValueError(f"grade: doc['schema'] must be 'cnnext-bench/2', got "
                         f"{doc.get('schema')!r}")
    return _suite_grades(doc) + _small_call_grades(doc) + _scaling_grades(doc)


def run_bench(args, quick=False, env=None):
    """Run ``python -m cnnext bench ARGS --json`` (output shown) and return its document.

    ``env``: the environment of the run (default: this process's).
    """
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        cmd = [sys.executable, "-m", "cnnext", "bench", *args, "--json", path]
        if quick:
            cmd.append("--quick")
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, env=env)
        with open(path) as fh:
            return json.load(fh)
    finally:
        os.unlink(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", nargs="+", metavar="FILE",
                   help="grade these cnnext bench --json files instead of running the bench")
    p.add_argument("--quick", action="store_true", help="run the bench with --quick")
    args = p.parse_args(argv)
    if args.json:
        docs = []
        for path in args.json:
            with open(path) as fh:
                docs.append(json.load(fh))
    else:
        docs = [run_bench(run, args.quick) for run in RUNS]
    grades = [g for doc in docs for g in grade(doc)]
    print("\nspeed targets:")
    for g in grades:
        print(f"  {g}")
    missed = sum(not g.met for g in grades)
    print(f"{len(grades) - missed} of {len(grades)} met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
