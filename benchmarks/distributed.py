"""Data-parallel training throughput: ranks x threads against one process.

Trains LeNet-5 (float32, Adam) for one epoch on 8,000 MNIST images at a
global batch of 64 in three configurations, interleaved and repeated:

* one process, 1 thread;
* one process, 2 threads;
* 2 ranks (``mpiexec -n 2``), 1 thread each (``fit(..., distributed=True)``).

Reports the median epoch time of each (training only: :func:`cnnext.train.fit`'s
``history["time"]``, after a warm-up epoch on 640 images), the speed-ups of
the 2-rank run, the median time of one in-place ``Allreduce`` of LeNet-5's
gradients between the 2 ranks, and the load average before each run.  On a
busy machine the 2 ranks rarely get 2 cores at once, so it also prints the
speed-up to expect on 2 idle cores, from times that do not need them: one
process's step time at the global batch and at half of it (what each rank
computes), measured interleaved, plus the Allreduce and the gradient packing.

With ``--weights`` it instead compares the weights after the epoch: the
float32 difference between one process with 1 and with 2 threads (the
kernels' own thread-count variation: a convolution's weight gradient adds
per-thread partial sums) and between 2 or 3 ranks and one process.

Usage::

    python benchmarks/distributed.py [--repeat 3] [--images 8000] [--batch-size 64]
    python benchmarks/distributed.py --weights

Needs mpi4py and an MPI implementation (``pip install "cnnext[mpi]" mpich``)
and uses the MNIST test split when present (``--data``, default
``$CNNEXT_MNIST`` or :func:`cnnext.datasets.default_root`), random images
otherwise (the time does not depend on the pixels).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _data(root: str | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    from cnnext import datasets

    root = root or os.environ.get("CNNEXT_MNIST") or datasets.default_root()
    try:
        x, y = datasets.load_mnist(root, "test")
        x, y, what = x[:n], y[:n], f"MNIST test split [0, {n})"
    except (FileNotFoundError, ValueError):
        rng = np.random.default_rng(0)
        x, y = rng.random((n, 1, 28, 28), np.float32), rng.integers(0, 10, n)
        what = f"{n} random images"
    return (x - np.float32(0.1307)) / np.float32(0.3081), y, what


def worker(args: argparse.Namespace) -> None:
    """One run (one rank of a distributed run): prints a JSON record (rank 0)."""
    import cnnext
    from cnnext import models, nn, optim
    from cnnext.train import fit

    comm = None
    if args.distributed:
        from cnnext import distributed

        comm = distributed.init(threads=args.threads)
    else:
        cnnext.set_num_threads(args.threads)
    x, y, what = _data(args.data, args.images)
    model = models.lenet5(seed=0)
    opt = optim.Adam(model, lr=1e-3)
    loss = nn.SoftmaxCrossEntropy()
    kw = dict(batch_size=args.batch_size, seed=0, progress=False, comm=comm)
    fit(model, loss, opt, x[:640], y[:640], epochs=1, **kw)  # warm-up: plans, caches
    history = fit(model, loss, opt, x, y, epochs=1, **kw)
    record = {"epoch": history["time"][0], "data": what,
              "threads": cnnext.get_num_threads()}
    if args.save and (comm is None or comm.Get_rank() == 0):
        model.save(args.save)
    if comm is None and args.threads == 1:
        record["step_ms"] = _step_times(model, loss, opt, x, y, args.batch_size)
    if comm is not None:
        from mpi4py import MPI

        grads = np.zeros(sum(p.size for p, _ in model.parameters()) + 1, np.float32)
        times = []
        for _ in range(200):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
            times.append(time.perf_counter() - t)
        record["allreduce_us"] = statistics.median(times) * 1e6
        record["gradients"] = int(grads.size - 1)
        if comm.Get_rank() != 0:
            return
    print(json.dumps(record), flush=True)


def _step_times(model: Any, loss: Any, opt: Any, x: np.ndarray, y: np.ndarray,
                batch_size: int) -> dict[str, float]:
    """Median ms per step at the global batch and at half of it (what each
    of 2 ranks computes), interleaved in this process, and of the gradient
    packing a distributed step adds (scale into the flat buffer and back)."""
    from cnnext.train import fit

    half = batch_size // 2
    per: dict[int, list[float]] = {batch_size: [], half: []}
    for _ in range(5):
        for bs in (batch_size, half):
            n = 20 * bs
            h = fit(model, loss, opt, x[:n], y[:n], epochs=1, batch_size=bs, seed=0,
                    progress=False)
            per[bs].append(h["time"][0] / 20 * 1e3)
    grads = [g for _, g in model.parameters()]
    flat = np.empty(sum(g.size for g in grads), grads[0].dtype)
    views = np.split(flat, np.cumsum([g.size for g in grads])[:-1])
    times = []
    for _ in range(200):
        t = time.perf_counter()
        for g, v in zip(grads, views):
            np.multiply(g.reshape(-1), half, out=v)
        for g, v in zip(grads, views):
            np.divide(v, batch_size, out=g.reshape(-1))
        times.append(time.perf_counter() - t)
    out = {str(k): statistics.median(v) for k, v in per.items()}
    out["pack"] = statistics.median(times) * 1e3
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--images", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data", default=None)
    p.add_argument("--weights", action="store_true",
                   help="compare the float32 weights after the epoch instead of timing")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    mpiexec = Path(sys.executable).with_name("mpiexec")
    launcher = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if launcher is None:
        sys.exit("needs mpiexec (pip install \"cnnext[mpi]\" mpich)")
    me = [sys.executable, __file__, "--worker", "--images", str(args.images),
          "--batch-size", str(args.batch_size)] + (["--data", args.data] if args.data else [])
    configs = {
        "1 process x 1 thread": me + ["--threads", "1"],
        "1 process x 2 threads": me + ["--threads", "2"],
        "2 ranks x 1 thread": [launcher, "-n", "2"] + me + ["--distributed", "--threads", "1"],
    }
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if args.weights:
        configs["3 ranks x 1 thread"] = [launcher, "-n", "3"] + me + ["--distributed",
                                                                     "--threads", "1"]
        compare_weights(configs, env)
        return
    times: dict[str, list[float]] = {k: [] for k in configs}
    loads: list[float] = []
    allreduce: list[float] = []
    steps_ms: list[dict[str, float]] = []
    what = ""
    names = list(configs)
    for rep in range(args.repeat):
        for name in names[rep % 3:] + names[:rep % 3]:  # rotate the order
            loads.append(os.getloadavg()[0])
            out = subprocess.run(configs[name], capture_output=True, text=True, env=env,
                                 timeout=600, check=True).stdout
            record = json.loads(out.strip().splitlines()[-1])
            times[name].append(record["epoch"])
            what = record["data"]
            if "allreduce_us" in record:
                allreduce.append(record["allreduce_us"])
                grads = record["gradients"]
            if "step_ms" in record:
                steps_ms.append(record["step_ms"])
            print(f"  {name:<24} {record['epoch']:.3f} s  (load {loads[-1]:.2f})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    steps = -(-args.images // args.batch_size)
    print(f"\nLeNet-5 float32, Adam, one epoch on {what}, global batch {args.batch_size} "
          f"({steps} steps); median of {args.repeat}; load average {min(loads):.2f}-"
          f"{max(loads):.2f}")
    for k, v in med.items():
        print(f"  {k:<24} {v:.3f} s  ({v / steps * 1e3:.2f} ms/step)")
    two = med["2 ranks x 1 thread"]
    for other in ("1 process x 1 thread", "1 process x 2 threads"):
        print(f"  2 ranks x 1 thread vs {other}: {med[other] / two:.2f}x")
    ar = statistics.median(allreduce)
    print(f"  Allreduce of {grads} float32 gradients, 2 ranks: {ar:.0f} us (median)")
    full, half = (statistics.median(s[str(b)] for s in steps_ms)
                  for b in (args.batch_size, args.batch_size // 2))
    pack = statistics.median(s["pack"] for s in steps_ms)
    print(f"  one process x 1 thread, interleaved: {full:.2f} ms/step at batch "
          f"{args.batch_size}, {half:.2f} ms/step at batch {args.batch_size // 2}; "
          f"gradient packing {pack * 1e3:.0f} us")
    print(f"  expected 2 ranks x 1 thread vs 1 process x 1 thread with 2 idle cores: "
          f"{full / (half + pack + ar / 1e3):.2f}x")


def compare_weights(configs: dict[str, list[str]], env: dict[str, str]) -> None:
    """Run each configuration once and print how far their weights are apart."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        w = {}
        for i, (name, cmd) in enumerate(configs.items()):
            path = os.path.join(tmp, f"{i}.npz")
            subprocess.run(cmd + ["--save", path], capture_output=True, env=env, timeout=600,
                           check=True)
            with np.load(path) as f:
                w[name] = {k: f[k].astype(np.float64) for k in f.files}
    ref = w["1 process x 1 thread"]
    scale = max(float(np.abs(a).max()) for a in ref.values())
    print(f"float32 weights after one epoch (max |w| = {scale:.3g}):")
    for name in ("1 process x 2 threads", "2 ranks x 1 thread", "3 ranks x 1 thread"):
        diff = max(float(np.abs(w[name][k] - ref[k]).max()) for k in ref)
        print(f"  {name} vs 1 process x 1 thread: max |difference| {diff:.3g}")


if __name__ == "__main__":
    main()
