"""Float32 error of the Winograd and direct convolution algorithms.

For 3x3 and 5x5 stride-1 convolutions with 32-512 channels on realistic data
(unit-variance input and upstream gradient, weights scaled by
1/sqrt(fan_in)), prints the relative RMS error ``||r - ref|| / ||ref||``
of the float32 forward pass, input gradient and weight gradient against
the float64 result (cnnext's float64 direct kernels), for each algorithm,
and their ratio, and the output tile of the Winograd forward pass and input
gradient (F(2x2, 3x3) or F(4x4, 3x3), as the plan chose it).
``cnnext.set_conv_algorithm("auto")`` picks Winograd only where this ratio
stays within 4.  The dilated cases (padding = dilation)
run Winograd on the dilation phases, the 5x5 ones (padding 2) on four
shifted views, their weight gradient direct (``set_conv_algorithm("winograd")``).

With ``--float64``: the float64 forward pass, input and weight gradients of
3x3 convolutions with 64-512 channels (padding 1) against a long-double
reference (``np.longdouble``, an extended 64-bit mantissa on x86), direct
and Winograd.

    python benchmarks/winograd_accuracy.py [--seed S] [--float64]
"""
import argparse

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import cnnext
from cnnext import functional as F
from cnnext.functional.conv import _conv2d_plan

# (N, C, H = W, dilation, kernel); padding = dilation (3x3) or 2 (5x5)
CASES = [(8, 64, 56, 1, 3), (8, 128, 28, 1, 3), (8, 256, 14, 1, 3), (8, 512, 7, 1, 3),
         (32, 64, 32, 1, 3), (32, 32, 32, 1, 3), (16, 64, 32, 2, 3), (8, 64, 27, 3, 3),
         (8, 64, 32, 1, 5), (8, 128, 16, 1, 5), (8, 256, 14, 1, 5), (4, 512, 8, 1, 5)]


def rel_rms(a, ref):
    return float(np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref**2)))


def conv_longdouble(x, w, p):
    """conv2d of x by the 3x3 filters w, padding p, stride 1, in long double."""
    xp = np.pad(x.astype(np.longdouble), ((0, 0), (0, 0), (p, p), (p, p)))
    cols = sliding_window_view(xp, (3, 3), axis=(2, 3))
    n, c, oh, ow = cols.shape[:4]
    a = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * 9)
    y = a @ w.astype(np.longdouble).reshape(w.shape[0], -1).T
    return y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


def grad_weight_longdouble(x, g, p):
    """The weight gradient of conv2d(x, w) (3x3, padding p) for g, in long double."""
    xp = np.pad(x.astype(np.longdouble), ((0, 0), (0, 0), (p, p), (p, p)))
    cols = sliding_window_view(xp, g.shape[2:], axis=(2, 3))  # (N, C, 3, 3, OH, OW)
    a = cols.transpose(1, 2, 3, 0, 4, 5).reshape(x.shape[1] * 9, -1)
    gg = g.astype(np.longdouble).transpose(1, 0, 2, 3).reshape(g.shape[1], -1)
    return (gg @ a.T).reshape(g.shape[1], x.shape[1], 3, 3)


def float64_table(rng) -> None:
    print("| N, C = C_out, H = W | result | direct | Winograd | Winograd / direct |")
    print("|---|---|---:|---:|---:|")
    for n, c, hw in [(2, 64, 32), (2, 128, 28), (2, 256, 14), (1, 512, 14)]:
        x = rng.standard_normal((n, c, hw, hw))
        w = rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)
        g = rng.standard_normal((n, c, hw, hw))
        adjoint = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        ref = (conv_longdouble(x, w, 1), conv_longdouble(g, adjoint, 1),
               grad_weight_longdouble(x, g, 1))
        err = {}
        for alg in ("direct", "winograd"):
            with cnnext.use_conv_algorithm(alg):
                got = (F.conv2d(x, w, padding=1),) + F.conv2d_backward(g, x, w, padding=1)[:2]
            err[alg] = [rel_rms(a, r) for a, r in zip(got, ref)]
        for i, what in enumerate(("forward", "input gradient", "weight gradient")):
            d, wg = err["direct"][i], err["winograd"][i]
            print(f"| {n}, {c}, {hw} | {what} | {d:.2e} | {wg:.2e} | {wg / d:.2f} |")


def winograd_tiles(x, w, kw):
    """The plan's F(m x m, 3x3) tiles (forward, input gradient), as text."""
    with cnnext.use_conv_algorithm("winograd"):
        plan = _conv2d_plan("conv2d", x, w, None, x.dtype, 1, kw["padding"], kw["dilation"], 1)
    plan = plan.phase_plan or plan
    if plan.method != "winograd":
        return "2x2"  # 5x5: four shifted views of F(2x2, 3x3)
    return ", ".join(f"{m}x{m}" for m in plan.winograd_tiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float64", action="store_true",
                        help="the float64 table (against a long-double reference)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.float64:
        float64_table(rng)
        return
    print("| N, C, H=W | Winograd tile | result | direct | winograd | winograd / direct |")
    print("|---|---|---|---:|---:|---:|")
    for n, c, hw, dil, k in CASES:
        kw = {"padding": dil if k == 3 else 2, "dilation": dil}
        x = rng.standard_normal((n, c, hw, hw))
        w = rng.standard_normal((c, c, k, k)) / np.sqrt(k * k * c)
        g = rng.standard_normal((n, c, hw, hw))
        with cnnext.use_conv_algorithm("direct"):
            ref = (F.conv2d(x, w, **kw),) + F.conv2d_backward(g, x, w, **kw)[:2]
        x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
        tiles = winograd_tiles(x32, w32, kw)
        err = {}
        for alg in ("direct", "winograd"):
            with cnnext.use_conv_algorithm(alg):
                got = (F.conv2d(x32, w32, **kw),) + F.conv2d_backward(g32, x32, w32, **kw)[:2]
            err[alg] = [rel_rms(a.astype(np.float64), r) for a, r in zip(got, ref)]
        for i, what in enumerate(("forward", "grad_input", "grad_weight")):
            d, wg = err["direct"][i], err["winograd"][i]
            case = (f"{n}, {c}, {hw}" + (f" (dilation {dil})" if dil > 1 else "")
                    + (f" ({k}x{k})" if k != 3 else ""))
            print(f"| {case} | {tiles} | {what} | {d:.2e} | {wg:.2e} | {wg / d:.2f} |")


if __name__ == "__main__":
    main()
