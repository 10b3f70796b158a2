"""Time cnnext's depthwise-convolution kernels against PyTorch, interleaved.

Depthwise convolution is ``conv2d`` with ``groups == C`` (weight
``(C*M, 1, kh, kw)``).  For each case and thread count this script times

* ``fwd``: the forward pass, and
* ``fwd+bwd``: forward, then the input, weight and bias gradients of a
  random upstream gradient

for the kernels of ``cnnext._depthwise`` (outputs allocated per call, as
the functional API does) and for ``torch.nn.functional.conv2d(...,
groups=C)`` with autograd.  The two peers alternate call by call, each
repeat is the best of a few calls, and the table shows the median over
the repeats, the spread (min-max) and the ratio cnnext/PyTorch (< 1:
cnnext is faster).  Both libraries get the same thread count: the kernels
receive it as an argument, PyTorch through ``torch.set_num_threads``.

Usage::

    python benchmarks/depthwise_kernels.py                 # 1 and 2 threads
    python benchmarks/depthwise_kernels.py --threads 1 --repeats 11
    python benchmarks/depthwise_kernels.py --case 3x3s1 --dtype float64

On a shared machine absolute times are noise; the ratios, measured in the
same run, are the signal.  Run it a few times and compare the medians.
"""
import argparse
import statistics
import time

import numpy as np

from cnnext import _depthwise
from cnnext._plan import bias_grad

# name: (N, C, M, H, W, kernel, stride, padding)
CASES = {
    "3x3s1": (32, 64, 1, 56, 56, 3, 1, 1),
    "3x3s2": (32, 64, 1, 56, 56, 3, 2, 1),
    "5x5s1": (32, 64, 1, 56, 56, 5, 1, 2),
    "5x5s2": (32, 64, 1, 56, 56, 5, 2, 2),
    "3x3s1-m2": (32, 32, 2, 56, 56, 3, 1, 1),
}


def _out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _cnnext_calls(x, w, b, g, s, p, threads):
    """(forward, forward+backward) callables running the kernels."""
    N, C, H, W = x.shape
    OH, OW = g.shape[2], g.shape[3]
    geo = (s, s, p, p, 1, 1, threads)

    def fwd():
        out = np.empty((N, w.shape[0], OH, OW), dtype=x.dtype)
        _depthwise.depthwise_forward(x, w, b, out, *geo)
        return out

    def fwd_bwd():
        out = fwd()
        gx = np.empty_like(x)
        gw = np.empty_like(w)
        _depthwise.depthwise_grad_input(g, w, gx, *geo)
        _depthwise.depthwise_grad_weight(x, g, gw, *geo)
        return out, gx, gw, bias_grad(g)

    return fwd, fwd_bwd


def _torch_calls(torch, x, w, b, g, s, p):
    F = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    gt = torch.from_numpy(g)
    C = x.shape[1]

    def fwd():
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, s, p, 1, C)

    def fwd_bwd():
        xt.grad = wt.grad = bt.grad = None
        y = F.conv2d(xt, wt, bt, s, p, 1, C)
        y.backward(gt)
        return y, xt.grad, wt.grad, bt.grad

    return fwd, fwd_bwd


def _best_of(fn, calls):
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def interleaved(a, b, repeats, calls):
    """Median, min and max seconds of a and of b, alternating the two."""
    ta, tb = [], []
    a()
    b()  # warm up (allocators, thread pools, caches)
    for r in range(repeats):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        t1, t2 = _best_of(first, calls), _best_of(second, calls)
        ta.append(t1 if first is a else t2)
        tb.append(t2 if first is a else t1)
    return ta, tb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="a case (repeatable; default: all)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2, help="calls per repeat (best is kept)")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    cases = args.case or list(CASES)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)

    data = {}
    for name in cases:
        N, C, M, H, W, k, s, p = CASES[name]
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((C * M, 1, k, k)).astype(dtype)
        b = rng.standard_normal(C * M).astype(dtype)
        g = rng.standard_normal((N, C * M, _out_size(H, k, s, p), _out_size(W, k, s, p)))
        data[name] = (x, w, b, g.astype(dtype), s, p)

    # PyTorch only now: its OpenMP runtime is then the second one loaded,
    # and each side's thread count is set explicitly below anyway.
    import torch

    print(f"depthwise kernels ({_depthwise.ISA}) vs torch {torch.__version__}, {dtype.name}, "
          f"median of {args.repeats} repeats (best of {args.calls} calls each)")
    print(f"{'case':<10} {'pass':<8} {'threads':>7} {'cnnext ms':>10} {'(min-max)':>15} "
          f"{'torch ms':>9} {'(min-max)':>15} {'ratio':>6}")
    for nt in threads:
        torch.set_num_threads(nt)
        for name in cases:
            x, w, b, g, s, p = data[name]
            ours = _cnnext_calls(x, w, b, g, s, p, nt)
            theirs = _torch_calls(torch, x, w, b, g, s, p)
            for label, mine, peer in zip(("fwd", "fwd+bwd"), ours, theirs):
                ta, tb = interleaved(mine, peer, args.repeats, args.calls)
                ma, mb = statistics.median(ta), statistics.median(tb)
                print(f"{name:<10} {label:<8} {torch.get_num_threads():>7} {ma * 1e3:>10.2f} "
                      f"({min(ta) * 1e3:6.2f}-{max(ta) * 1e3:6.2f}) {mb * 1e3:>9.2f} "
                      f"({min(tb) * 1e3:6.2f}-{max(tb) * 1e3:6.2f}) {ma / mb:>6.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
