"""``cnnext bench``: time cnnext against the numpy reference and PyTorch CPU.

The standard suite (:data:`SUITE`) covers seven convolution geometries,
forward (``fwd``) and forward+backward (``fwd+bwd``: ``grad_x``,
``grad_weight`` and ``grad_bias``), three pooling layers, and one LeNet-5
training step.  Each row is timed for three *peers* in the same process:

``cnnext``
    :mod:`cnnext.functional` (the compiled kernels).
``reference``
    :mod:`cnnext.reference`, the slow numpy oracle (the training step runs
    the cnnext step under ``cnnext.use_backend("numpy")``).  Timed with fewer
    repeats and a time budget; a row whose single call is estimated to take
    longer than ``ref_limit`` seconds is reported as ``skipped (slow)``.
``pytorch``
    ``torch`` CPU, when ``import torch`` works (otherwise the column says
    ``not installed``).  ``fwd+bwd`` calls ``torch.nn.functional.conv2d`` and
    then ``torch.ops.aten.convolution_backward`` with ``output_mask
    [True, True, True]`` -- the very kernel autograd's ``ConvolutionBackward0``
    node runs, without the autograd bookkeeping, so both sides do exactly
    the same work: one forward, then the three gradients from a given upstream
    gradient.  Pass ``torch_autograd=True`` (``--torch-autograd``) to time
    ``torch.autograd.grad`` instead.  Pooling uses the matching
    ``aten.*_backward`` ops the same way.

How the timing works: every input (and every upstream gradient) is
generated before timing starts; each peer is warmed up, then a single call
calibrates how many calls make one *sample* (at least ``min_sample``
seconds, so the ``perf_counter`` resolution and loop overhead are
negligible).  The peers then run *interleaved*, round-robin, with the order
rotated every round (cnnext, torch, reference / torch, reference, cnnext /
...) and the garbage collector disabled, so a burst of load from another
process hits all peers alike.  Reported times are medians of the per-call
time over the samples; ratios are ``cnnext time / peer time`` (below 1:
cnnext is faster).  On a shared machine absolute times are noise -- the
ratios are the signal.
"""
import argparse
import contextlib
import fnmatch
import gc
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Case",
    "SUITE",
    "BenchConfig",
    "select_cases",
    "make_peers",
    "run_suite",
    "machine_info",
    "summarize",
    "format_table",
    "format_summary",
    "run_scaling",
    "format_scaling",
    "SCALING_CASES",
    "main",
]

PEERS = ("cnnext", "pytorch", "reference")
NOT_INSTALLED = "not installed"
SKIPPED_SLOW = "skipped (slow)"


# --------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One benchmark case: a layer geometry and the passes timed on it.

    Parameters
    ----------
    name : str
        Short name shown in the table (``--cases`` matches against it).
    kind : {"conv", "maxpool", "avgpool", "train"}
    N, C, H : int
        Input batch ``(N, C, H, H)``.
    C_out : int
        Output channels (convolutions only; 0 otherwise).
    kernel, stride, padding : int
        Square kernel, stride and padding.
    passes : tuple of str
        ``"fwd"``, ``"fwd+bwd"`` or ``"step"`` (training step).

    Examples
    --------
    >>> from cnnext.bench import Case
    >>> c = Case("tiny", "conv", 2, 3, 8, 4, 3, 1, 1)
    >>> c.out_size, c.flops("fwd"), c.flops("fwd+bwd")
    (8, 27648, 82944)
    """

    name: str
    kind: str
    N: int
    C: int
    H: int
    C_out: int
    kernel: int
    stride: int
    padding: int
    passes: tuple = ("fwd", "fwd+bwd")

    @property
    def out_size(self):
        """Output height (= width)."""
        return (self.H + 2 * self.padding - self.kernel) // self.stride + 1

    def flops(self, pass_):
        """Floating-point operations of one call (convolutions), else None.

        ``2 * N * C_out * OH * OW * C_in * kH * kW`` for the forward pass;
        the backward pass (``grad_x`` and ``grad_weight``) costs twice that,
        so ``fwd+bwd`` counts three times the forward.
        """
        if self.kind != "conv":
            return None
        fwd = 2 * self.N * self.C_out * self.out_size**2 * self.C * self.kernel**2
        return fwd * (3 if pass_ == "fwd+bwd" else 1)

    def describe(self):
        """Geometry as a dict (for JSON output)."""
        return {
            "kind": self.kind,
            "N": self.N,
            "C": self.C,
            "H": self.H,
            "W": self.H,
            "C_out": self.C_out,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }


_POOL_SHAPE = (32, 64, 32)
_BOTH = ("fwd", "fwd+bwd")

#: The standard suite, in the order it runs.
SUITE = (
    Case("seed-mnist", "conv", 1, 1, 28, 8, 3, 1, 0),
    Case("lenet-conv1", "conv", 64, 1, 28, 6, 5, 1, 0),
    Case("lenet-conv2", "conv", 64, 6, 12, 16, 5, 1, 0),
    Case("cs231n", "conv", 100, 3, 31, 25, 3, 2, 1),
    Case("cifar-3x3", "conv", 32, 64, 32, 64, 3, 1, 1),
    Case("resnet-3x3", "conv", 8, 128, 28, 128, 3, 1, 1),
    Case("strided", "conv", 32, 16, 32, 32, 3, 2, 1),
    Case("maxpool-2x2", "maxpool", *_POOL_SHAPE, 0, 2, 2, 0),
    Case("maxpool-3x3s2p1", "maxpool", *_POOL_SHAPE, 0, 3, 2, 1),
    Case("avgpool-2x2", "avgpool", *_POOL_SHAPE, 0, 2, 2, 0),
    # LeNet-5 on MNIST-sized input: conv(1->6, 5) relu maxpool2
    # conv(6->16, 5) relu maxpool2 fc(256->120) relu fc(120->84) relu fc(84->10),
    # softmax cross-entropy, Adam.
    Case("lenet5-train", "train", 64, 1, 28, 10, 5, 1, 0, passes=("step",)),
)


def select_cases(patterns=None, suite=SUITE):
    """Cases whose name (or kind) matches any of ``patterns``.

    Parameters
    ----------
    patterns : str or list of str, optional
        fnmatch patterns (``"*-3x3"``) or plain substrings (``"lenet"``),
        comma-separated when a single string.  None or empty: every case.
    suite : sequence of Case

    Returns
    -------
    list of Case

    Examples
    --------
    >>> from cnnext.bench import select_cases
    >>> [c.name for c in select_cases("*-3x3")]
    ['cifar-3x3', 'resnet-3x3']
    >>> [c.name for c in select_cases("pool")]
    ['maxpool-2x2', 'maxpool-3x3s2p1', 'avgpool-2x2']
    """
    if not patterns:
        return list(suite)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]

    def hit(case, pat):
        pat = pat.lower()
        for s in (case.name.lower(), case.kind):
            if s == pat or fnmatch.fnmatchcase(s, pat):
                return True
            if not any(ch in pat for ch in "*?[") and pat in s:
                return True
        return False

    return [c for c in suite if any(hit(c, p) for p in patterns)]


# --------------------------------------------------------------------------
# Peers: one zero-argument callable per implementation, inputs pre-generated
# --------------------------------------------------------------------------


@dataclass
class _Peer:
    fn: object = None  # zero-argument callable, or None when unavailable
    status: str = "ok"
    probe: object = None  # () -> estimated seconds of one fn() call
    setup: object = None  # () -> None, run untimed before each sample
    impl: str = None  # what the callable runs, when not obvious (JSON "impl")
    state: object = None  # () -> {name: ndarray}, e.g. a model's parameters (tests)


def _import_torch():
    """(torch module or None, status string)."""
    try:
        import torch
    except ImportError:
        return None, NOT_INSTALLED
    except Exception as exc:  # a broken install must not break the bench
        return None, f"unavailable ({type(exc).__name__})"
    return torch, "ok"


def _uniform(rng, shape, fan_in, dt):
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dt)


def _conv_inputs(case, dt, rng):
    x = rng.standard_normal((case.N, case.C, case.H, case.H)).astype(dt)
    fan_in = case.C * case.kernel**2
    w = _uniform(rng, (case.C_out, case.C, case.kernel, case.kernel), fan_in, dt)
    b = _uniform(rng, (case.C_out,), fan_in, dt)
    g = rng.standard_normal((case.N, case.C_out, case.out_size, case.out_size)).astype(dt)
    return x, w, b, g


def _conv_peers(case, pass_, dt, rng, torch, torch_autograd):
    from . import functional as F
    from . import reference as R

    x, w, b, g = _conv_inputs(case, dt, rng)
    s, p = case.stride, case.padding
    peers = {}
    if pass_ == "fwd":
        peers["cnnext"] = _Peer(lambda: F.conv2d(x, w, b, s, p))
        ref = lambda xx=x: R.conv2d(xx, w, b, s, p)  # noqa: E731
    else:

        def cn():
            F.conv2d(x, w, b, s, p)
            F.conv2d_backward(g, x, w, s, p, bias=True)

        def ref(xx=x, gg=g):
            R.conv2d(xx, w, b, s, p)
            R.conv2d_backward(gg, xx, w, s, p, bias=True)

        peers["cnnext"] = _Peer(cn)

    def probe():
        # One sample of the batch, scaled by N: the reference is linear in N.
        t0 = time.perf_counter()
        ref(x[:1], g[:1]) if pass_ != "fwd" else ref(x[:1])
        return (time.perf_counter() - t0) * case.N

    peers["reference"] = _Peer(ref, probe=probe if case.N > 1 else None)
    peers["pytorch"] = _torch_conv_peer(case, pass_, x, w, b, g, torch, torch_autograd)
    return peers


def _torch_conv_peer(case, pass_, x, w, b, g, torch, torch_autograd):
    if torch is None:
        return _Peer(None, NOT_INSTALLED)
    tf = torch.nn.functional
    s, p = case.stride, case.padding
    xt, wt, bt, gt = (torch.from_numpy(a.copy()) for a in (x, w, b, g))
    if pass_ == "fwd":
        return _Peer(lambda: tf.conv2d(xt, wt, bt, s, p))
    if torch_autograd:
        xa, wa, ba = (t.clone().requires_grad_(True) for t in (xt, wt, bt))

        def fb_autograd():
            y = tf.conv2d(xa, wa, ba, s, p)
            torch.autograd.grad(y, (xa, wa, ba), gt)

        return _Peer(fb_autograd)
    conv_bwd = torch.ops.aten.convolution_backward.default
    bias_sizes, st, pd, dil = [case.C_out], [s, s], [p, p], [1, 1]
    mask = [True, True, True]

    def fb():
        tf.conv2d(xt, wt, bt, s, p)
        conv_bwd(gt, xt, wt, bias_sizes, st, pd, dil, False, [0, 0], 1, mask)

    return _Peer(fb)


def _pool_peers(case, pass_, dt, rng, torch):
    from . import functional as F
    from . import reference as R

    x = rng.standard_normal((case.N, case.C, case.H, case.H)).astype(dt)
    k, s, p = case.kernel, case.stride, case.padding
    g = rng.standard_normal((case.N, case.C, case.out_size, case.out_size)).astype(dt)
    shape = x.shape
    peers = {}
    if case.kind == "maxpool":
        if pass_ == "fwd":
            peers["cnnext"] = _Peer(lambda: F.max_pool2d(x, k, s, p))
            peers["reference"] = _Peer(lambda: R.max_pool2d(x, k, s, p))
        else:

            def cn():
                _, idx = F.max_pool2d(x, k, s, p, return_indices=True)
                F.max_pool2d_backward(g, idx, shape)

            def ref():
                _, idx = R.max_pool2d(x, k, s, p, return_indices=True)
                R.max_pool2d_backward(g, idx, shape)

            peers["cnnext"], peers["reference"] = _Peer(cn), _Peer(ref)
    else:
        if pass_ == "fwd":
            peers["cnnext"] = _Peer(lambda: F.avg_pool2d(x, k, s, p))
            peers["reference"] = _Peer(lambda: R.avg_pool2d(x, k, s, p))
        else:

            def cn():
                F.avg_pool2d(x, k, s, p)
                F.avg_pool2d_backward(g, shape, k, s, p)

            def ref():
                R.avg_pool2d(x, k, s, p)
                R.avg_pool2d_backward(g, shape, k, s, p)

            peers["cnnext"], peers["reference"] = _Peer(cn), _Peer(ref)

    if torch is None:
        peers["pytorch"] = _Peer(None, NOT_INSTALLED)
        return peers
    xt, gt = torch.from_numpy(x.copy()), torch.from_numpy(g.copy())
    kk, ss, pp, dd = [k, k], [s, s], [p, p], [1, 1]
    aten = torch.ops.aten
    if case.kind == "maxpool":
        if pass_ == "fwd":
            mp = torch.nn.functional.max_pool2d
            fn = lambda: mp(xt, k, s, p)  # noqa: E731
        else:
            fwd_op = aten.max_pool2d_with_indices.default
            bwd_op = aten.max_pool2d_with_indices_backward.default

            def fn():
                _, idx = fwd_op(xt, kk, ss, pp, dd, False)
                bwd_op(gt, xt, kk, ss, pp, dd, False, idx)

    else:
        fwd_op = aten.avg_pool2d.default
        if pass_ == "fwd":
            fn = lambda: fwd_op(xt, kk, ss, pp, False, True, None)  # noqa: E731
        else:
            bwd_op = aten.avg_pool2d_backward.default

            def fn():
                fwd_op(xt, kk, ss, pp, False, True, None)
                bwd_op(gt, xt, kk, ss, pp, False, True, None)

    peers["pytorch"] = _Peer(fn)
    return peers


# ---- LeNet-5 training step ------------------------------------------------

_LENET_SHAPES = {
    # name: (shape, fan_in)
    "w1": ((6, 1, 5, 5), 25),
    "b1": ((6,), 25),
    "w2": ((16, 6, 5, 5), 150),
    "b2": ((16,), 150),
    "w3": ((120, 256), 256),
    "b3": ((120,), 256),
    "w4": ((84, 120), 120),
    "b4": ((84,), 120),
    "w5": ((10, 84), 84),
    "b5": ((10,), 84),
}


def _lenet_params(rng, dt):
    return {n: _uniform(rng, shape, fan, dt) for n, (shape, fan) in _LENET_SHAPES.items()}


class _NumpyAdam:
    """Adam exactly as ``torch.optim.Adam`` (defaults, single-tensor path).

    Updates the arrays in place; the moment buffers are preallocated.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = {n: np.zeros_like(a) for n, a in params.items()}
        self.v = {n: np.zeros_like(a) for n, a in params.items()}
        self.t = 0

    def step(self, grads):
        self.t += 1
        bc1 = 1.0 - self.b1**self.t
        bc2_sqrt = math.sqrt(1.0 - self.b2**self.t)
        step = self.lr / bc1
        for n, p in self.params.items():
            g, m, v = grads[n], self.m[n], self.v[n]
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * (g * g)
            denom = np.sqrt(v)
            denom /= bc2_sqrt
            denom += self.eps
            p -= step * (m / denom)


def _lenet_functional_step(x, labels, params):
    """One LeNet-5 training step from :mod:`cnnext.functional` + numpy Adam.

    Returns a zero-argument callable; the backend in force when it is called
    (``cnnext.use_backend``) decides which kernels run.
    """
    from . import functional as F

    P = params
    opt = _NumpyAdam(P)
    N = x.shape[0]

    def step():
        a1 = F.conv2d(x, P["w1"], P["b1"])
        r1 = F.relu(a1)
        p1, i1 = F.max_pool2d(r1, 2, return_indices=True)
        a2 = F.conv2d(p1, P["w2"], P["b2"])
        r2 = F.relu(a2)
        p2, i2 = F.max_pool2d(r2, 2, return_indices=True)
        f = p2.reshape(N, -1)
        h3 = f @ P["w3"].T + P["b3"]
        r3 = F.relu(h3)
        h4 = r3 @ P["w4"].T + P["b4"]
        r4 = F.relu(h4)
        z = r4 @ P["w5"].T + P["b5"]
        _, gz = F.softmax_cross_entropy(z, labels)
        gr = {}
        gr["w5"], gr["b5"] = gz.T @ r4, gz.sum(axis=0)
        gh4 = F.relu_backward(gz @ P["w5"], h4)
        gr["w4"], gr["b4"] = gh4.T @ r3, gh4.sum(axis=0)
        gh3 = F.relu_backward(gh4 @ P["w4"], h3)
        gr["w3"], gr["b3"] = gh3.T @ f, gh3.sum(axis=0)
        gp2 = (gh3 @ P["w3"]).reshape(p2.shape)
        ga2 = F.relu_backward(F.max_pool2d_backward(gp2, i2, r2.shape), a2)
        gp1, gr["w2"], gr["b2"] = F.conv2d_backward(ga2, p1, P["w2"])
        ga1 = F.relu_backward(F.max_pool2d_backward(gp1, i1, r1.shape), a1)
        _, gr["w1"], gr["b1"] = F.conv2d_backward(ga1, x, P["w1"])
        opt.step(gr)

    return step


def _lenet_nn_step(x, labels, init):
    """One LeNet-5 training step from :mod:`cnnext.nn` and :mod:`cnnext.optim`.

    ``model.forward``, ``SoftmaxCrossEntropy``, ``model.backward``,
    ``optim.Adam.step`` -- what a user of the layer API runs.  Returns None
    when those modules (or the names used here) are not available, else
    ``(step, state)`` where ``state()`` gives the live parameters.
    """
    try:
        from . import nn, optim
    except ImportError:
        return None
    names = ("Sequential", "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense",
             "SoftmaxCrossEntropy")
    if not all(hasattr(nn, n) for n in names) or not hasattr(optim, "Adam"):
        return None
    dt = x.dtype
    model = nn.Sequential(
        nn.Conv2D(1, 6, 5, dtype=dt), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(6, 16, 5, dtype=dt), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
        nn.Dense(256, 120, dtype=dt), nn.ReLU(), nn.Dense(120, 84, dtype=dt), nn.ReLU(),
        nn.Dense(84, 10, dtype=dt),
    )
    layers = [m for m in model.layers if isinstance(m, (nn.Conv2D, nn.Dense))]
    for i, layer in enumerate(layers, start=1):
        layer.params["weight"][...] = init[f"w{i}"]
        layer.params["bias"][...] = init[f"b{i}"]
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.Adam(model, lr=1e-3)

    def step():
        opt.zero_grad()
        loss(model.forward(x), labels)
        model.backward(loss.backward())
        opt.step()

    def state():
        out = {}
        for i, layer in enumerate(layers, start=1):
            out[f"w{i}"], out[f"b{i}"] = layer.params["weight"], layer.params["bias"]
        return out

    return step, state


def _lenet_step(x, labels, init):
    """(step, implementation name, params getter): cnnext.nn if present, else functional."""
    init = {n: a.copy() for n, a in init.items()}
    got = _lenet_nn_step(x, labels, init)
    if got is not None:
        return got[0], "cnnext.nn + cnnext.optim.Adam", got[1]
    step = _lenet_functional_step(x, labels, init)
    return step, "cnnext.functional + numpy Adam", lambda: init


def _train_peers(case, dt, rng, torch):
    import cnnext

    x = rng.standard_normal((case.N, 1, 28, 28)).astype(dt)
    labels = rng.integers(0, 10, size=case.N)
    init = _lenet_params(rng, dt)
    cn_step, impl, cn_state = _lenet_step(x, labels, init)
    ref_inner, _, ref_state = _lenet_step(x, labels, init)

    def ref_step():
        with cnnext.use_backend("numpy"):
            ref_inner()

    peers = {"cnnext": _Peer(cn_step, impl=impl, state=cn_state),
             "reference": _Peer(ref_step, impl=impl + ' under use_backend("numpy")',
                                state=ref_state)}
    if torch is None:
        peers["pytorch"] = _Peer(None, NOT_INSTALLED)
        return peers
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    tdt = torch.float64 if dt == np.float64 else torch.float32
    model = model.to(tdt)
    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for i, layer in enumerate(layers, start=1):
            layer.weight.copy_(torch.from_numpy(init[f"w{i}"]))
            layer.bias.copy_(torch.from_numpy(init[f"b{i}"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(labels.copy())
    ce = torch.nn.functional.cross_entropy

    def torch_step():
        opt.zero_grad(set_to_none=True)
        loss = ce(model(xt), yt)
        loss.backward()
        opt.step()

    def torch_state():
        out = {}
        for i, layer in enumerate(layers, start=1):
            out[f"w{i}"] = layer.weight.detach().numpy()
            out[f"b{i}"] = layer.bias.detach().numpy()
        return out

    peers["pytorch"] = _Peer(torch_step, impl="torch.nn + torch.optim.Adam + cross_entropy",
                             state=torch_state)
    return peers


def make_peers(case, pass_, dtype, *, seed=0, torch="auto", torch_autograd=False):
    """Zero-argument callables timing ``case``/``pass_`` for each peer.

    All inputs are generated here, before any timing.

    Parameters
    ----------
    case : Case
    pass_ : {"fwd", "fwd+bwd", "step"}
    dtype : {"float32", "float64"}
    seed : int
        Seed of the random inputs.
    torch : "auto", module or None
        ``"auto"`` imports torch if it is installed; None leaves it out.
    torch_autograd : bool
        Time PyTorch's ``fwd+bwd`` through ``torch.autograd.grad`` instead
        of calling ``aten.convolution_backward`` directly.

    Returns
    -------
    dict
        ``{"cnnext": fn, "reference": fn, "pytorch": fn or None}``.

    Examples
    --------
    >>> from cnnext.bench import SUITE, make_peers
    >>> fns = make_peers(SUITE[0], "fwd", "float32", torch=None)
    >>> sorted(fns), fns["pytorch"]
    (['cnnext', 'pytorch', 'reference'], None)
    >>> fns["cnnext"]().shape
    (1, 8, 26, 26)
    """
    if torch == "auto":
        torch, _ = _import_torch()
    rng = np.random.default_rng(seed)
    peers = _build_peers(case, pass_, np.dtype(dtype), rng, torch, torch_autograd)
    return {name: peers[name].fn for name in PEERS}


def _build_peers(case, pass_, dt, rng, torch, torch_autograd):
    if case.kind == "conv":
        return _conv_peers(case, pass_, dt, rng, torch, torch_autograd)
    if case.kind in ("maxpool", "avgpool"):
        return _pool_peers(case, pass_, dt, rng, torch)
    return _train_peers(case, dt, rng, torch)


# --------------------------------------------------------------------------
# Timing harness
# --------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """Knobs of the timing harness (see ``cnnext bench --help``).

    ``repeats`` fixes the number of counted samples per fast peer; None
    chooses between ``min_repeats`` and ``max_repeats`` to fit
    ``row_budget`` seconds per row.  The reference gets at most
    ``ref_max_repeats`` samples within ``ref_budget`` seconds, and is
    skipped when one call is estimated to exceed ``ref_limit`` seconds
    (unless ``full_reference``).  Each fast peer first gets ``warmup``
    calls (fewer once they exceed ``warmup_budget`` seconds), the last one
    timed to choose how many calls make one sample of at least
    ``min_sample`` seconds.
    """

    repeats: int = None
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
    def quick(cls, **kw):
        """Settings for a CI smoke run: few, short samples."""
        base = dict(
            repeats=3, warmup=1, min_sample=0.001, row_budget=0.2,
            ref_budget=0.3, ref_max_repeats=1, ref_limit=5.0,
        )
        base.update(kw)
        return cls(**base)


def _time_once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _sample(fn, number):
    it = itertools.repeat(None, number)
    t0 = time.perf_counter()
    for _ in it:
        fn()
    return (time.perf_counter() - t0) / number


def _number_for(t, min_sample):
    if t >= min_sample:
        return 1
    return int(min(10000, max(1, math.ceil(min_sample / max(t, 1e-7)))))


def _stats(samples, number):
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


def _err(exc):
    return {"status": f"error: {type(exc).__name__}: {exc}"[:200]}


def _measure(peers, cfg, note=lambda msg: None):
    """Time the peers interleaved; return ``{name: stats or {"status": ...}}``.

    ``peers`` is an ordered ``{name: _Peer}``; the peer named
    ``"reference"`` (if any) is the slow one with its own budget.
    """
    out, est, number = {}, {}, {}
    names = list(peers)
    fast = [n for n in names if n != "reference"]
    # Warm-up and calibration of the fast peers.
    for name in fast:
        peer = peers[name]
        if peer.fn is None:
            out[name] = {"status": peer.status}
            continue
        note(f"warm-up {name}")
        try:
            if peer.setup is not None:
                peer.setup()
            # Warm-up calls, the last one timed to calibrate; stop early
            # (after at least one) once they exceed the warm-up budget.
            spent = 0.0
            for _ in range(max(1, cfg.warmup)):
                t = _time_once(peer.fn)
                spent += t
                if spent > cfg.warmup_budget:
                    break
            est[name] = t
        except Exception as exc:
            out[name] = _err(exc)
            continue
        number[name] = _number_for(est[name], cfg.min_sample)
    # The reference: estimate (probe), maybe skip, else calibrate with one call.
    ref = peers.get("reference", _Peer(None))
    ref_runs = 0
    if ref.fn is not None:
        try:
            guess = None
            if ref.probe is not None:
                note("probe reference")
                guess = ref.probe()
            if guess is not None and guess > cfg.ref_limit and not cfg.full_reference:
                out["reference"] = {"status": SKIPPED_SLOW, "estimate": guess}
            else:
                note("warm-up reference")
                t = _time_once(ref.fn)
                est["reference"] = t
                number["reference"] = _number_for(t, cfg.min_sample)
                per = max(t * number["reference"], 1e-9)
                ref_runs = int(max(1, min(cfg.ref_max_repeats, cfg.ref_budget // per)))
        except Exception as exc:
            out["reference"] = _err(exc)
    running = [n for n in names if n in number]
    timed_fast = [n for n in running if n != "reference"]
    if cfg.repeats is not None:
        rounds = cfg.repeats
    else:
        cost = sum(est[n] * number[n] for n in timed_fast) or 1e-3
        rounds = int(min(cfg.max_repeats, max(cfg.min_repeats, cfg.row_budget // cost)))
    if "reference" in number:
        ref_runs = min(ref_runs, rounds)
    samples = {n: [] for n in running}
    fns = {n: peers[n].fn for n in running}
    setups = {n: peers[n].setup for n in running}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            note(f"round {r + 1}/{rounds}")
            order = running[r % len(running):] + running[: r % len(running)] if running else []
            # The reference takes part in ref_runs rounds spread evenly.
            with_ref = (r + 1) * ref_runs // rounds > r * ref_runs // rounds
            for name in order:
                if name == "reference" and not with_ref:
                    continue
                if setups[name] is not None:
                    setups[name]()
                samples[name].append(_sample(fns[name], number[name]))
    finally:
        if gc_was_enabled:
            gc.enable()
    for name in running:
        out[name] = _stats(samples[name], number[name])
    if cfg.memory:
        for name in running:
            out[name].update(_memory(fns[name]))
    return out


def _cpu_snapshot():
    """(busy seconds of all CPUs, CPU seconds of this process), or None.

    From ``/proc/stat`` (Linux); the difference of two snapshots tells how
    much CPU *other* processes used meanwhile.
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


def _others_cores(before, after, elapsed):
    """Average number of cores other processes kept busy between two snapshots."""
    if before is None or after is None or elapsed <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / elapsed)


def _maxrss_bytes():
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _memory(fn):
    """Peak traced (numpy/Python) allocation of one call, and maxrss growth."""
    import tracemalloc

    from cnnext import _conv

    gc.collect()
    rss0 = _maxrss_bytes()
    _conv.scratch_high_water(reset=True)
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
        "kernel_scratch_bytes": _conv.scratch_high_water(reset=True),
        "maxrss_delta_bytes": None if rss0 is None else rss1 - rss0,
    }


# --------------------------------------------------------------------------
# Machine information
# --------------------------------------------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags():
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


def _show_config(module):
    try:
        with contextlib.redirect_stdout(None):
            cfg = module.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        return {k: deps[k] for k in ("blas", "lapack") if k in deps}
    except Exception:
        return None


def machine_info(torch="auto"):
    """Machine, library versions, BLAS and thread settings, as a dict.

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
        torch, _ = _import_torch()
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
            "env": {
                k: os.environ[k]
                for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ
            },
        },
    }
    try:  # the micro-kernel the runtime CPU dispatch chose, if the build reports it
        from . import _conv

        info["cnnext_isa"] = _conv.isa() if hasattr(_conv, "isa") else None
        if hasattr(_conv, "block_sizes"):
            info["cnnext_block_sizes"] = {
                d: list(_conv.block_sizes(d)) for d in ("float32", "float64")
            }
    except Exception:
        info["cnnext_isa"] = None
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
# Running the suite
# --------------------------------------------------------------------------


class _Progress:
    """A one-line progress display on a terminal (nothing otherwise)."""

    def __init__(self, total, stream=None, enabled=None):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled, self.total, self.i, self.label = enabled, total, 0, ""
        self.t0 = time.perf_counter()
        self._width = 0

    def row(self, label):
        self.i += 1
        self.label = label
        self.show("")

    def show(self, msg):
        if not self.enabled:
            return
        el = time.perf_counter() - self.t0
        line = f"[{self.i}/{self.total} {el:5.0f}s] {self.label} {msg}"
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def close(self):
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def _default_threads():
    import cnnext

    return cnnext.get_num_threads()


def _openblas_handles():
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


class _BlasThreads:
    """Sets the BLAS thread pools' size: threadpoolctl if installed, else
    OpenBLAS through ctypes.  ``method`` says which (None: cannot pin)."""

    def __init__(self):
        try:
            import threadpoolctl
        except ImportError:
            threadpoolctl = None
        self._tpc, self._handles, self._saved = threadpoolctl, [], []
        if threadpoolctl is not None:
            self.method = "threadpoolctl"
        else:
            try:
                self._handles = _openblas_handles()
            except Exception:
                self._handles = []
            self.method = "OpenBLAS via ctypes" if self._handles else None

    def set(self, n):
        if self._tpc is not None:
            limiter = self._tpc.threadpool_limits(limits=n, user_api="blas")
            if not self._saved:
                self._saved.append(limiter)
        else:
            if not self._saved:
                self._saved = [g() for _, g in self._handles]
            for setter, _ in self._handles:
                setter(n)

    def restore(self):
        if self._tpc is not None:
            for limiter in self._saved:
                limiter.restore_original_limits()
        else:
            for (setter, _), v in zip(self._handles, self._saved):
                setter(v)
        self._saved = []


@contextlib.contextmanager
def _threads(n, torch, blas=None):
    """cnnext, PyTorch and (``blas``, a _BlasThreads) BLAS on ``n`` threads."""
    import cnnext

    old = cnnext.get_num_threads(), (torch.get_num_threads() if torch is not None else None)
    cnnext.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    if blas is not None:
        blas.set(n)
    try:
        yield
    finally:
        cnnext.set_num_threads(old[0])
        if torch is not None:
            torch.set_num_threads(old[1])
        if blas is not None:
            blas.restore()


def run_suite(
    cases=None,
    dtypes=("float32", "float64"),
    passes=None,
    threads=None,
    config=None,
    quick=False,
    torch="auto",
    torch_autograd=False,
    seed=0,
    progress=None,
):
    """Run the benchmark suite and return one result dict per row.

    Parameters
    ----------
    cases : str, list of str or list of Case, optional
        Patterns for :func:`select_cases`, or the cases themselves.
        Default: the whole :data:`SUITE`.
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
        Time PyTorch ``fwd+bwd`` via autograd (see the module docstring).
    seed : int
        Seed for the random inputs.
    progress : bool or _Progress, optional
        Show progress on stderr (default: only when stderr is a terminal).

    Returns
    -------
    list of dict
        Keys: ``case``, ``pass``, ``dtype``, ``geometry``, ``flops``,
        ``cnnext``/``pytorch``/``reference`` (timing stats with
        ``median``/``min``/``q1``/``q3``/``samples`` in seconds, or just a
        ``status`` such as ``"not installed"``), ``ratio_pytorch`` and
        ``ratio_reference`` (cnnext median / peer median, or None),
        ``gflops`` and ``gflops_pytorch`` (convolutions).

    Examples
    --------
    >>> from cnnext.bench import run_suite
    >>> rows = run_suite("seed-mnist", dtypes=["float32"], passes=["fwd"],
    ...                  quick=True, torch=None)
    >>> r = rows[0]
    >>> (r["case"], r["pass"], r["pytorch"]["status"], r["cnnext"]["median"] > 0)
    ('seed-mnist', 'fwd', 'not installed', True)
    """
    if torch == "auto":
        torch, torch_status = _import_torch()
    else:
        torch_status = "ok" if torch is not None else NOT_INSTALLED
    if config is None:
        config = BenchConfig.quick() if quick else BenchConfig()
    if cases is None or isinstance(cases, str) or (cases and isinstance(cases[0], str)):
        cases = select_cases(cases)
    dtypes = [np.dtype(d).name for d in dtypes]
    for d in dtypes:
        if d not in ("float32", "float64"):
            raise ValueError(f"run_suite: dtypes must be float32 or float64, got {d!r}")
    rows = [
        (c, p, d)
        for c in cases
        for d in dtypes
        for p in c.passes
        if passes is None or p in passes
    ]
    if threads is None:
        threads = _default_threads()
    if not isinstance(progress, _Progress):
        progress = _Progress(len(rows), enabled=progress)
    results = []
    with _threads(threads, torch, _BlasThreads()):
        try:
            for case, pass_, dt in rows:
                progress.row(f"{case.name} {pass_} {dt}")
                row = _run_row(case, pass_, dt, config, torch, torch_status, torch_autograd,
                               seed, progress)
                results.append(row)
        finally:
            progress.close()
    return results


def _run_row(case, pass_, dt, cfg, torch, torch_status, torch_autograd, seed, progress):
    rng = np.random.default_rng([seed, SUITE.index(case) if case in SUITE else 99])
    peers = None
    try:
        peers = _build_peers(case, pass_, np.dtype(dt), rng, torch, torch_autograd)
        if torch is None:
            peers["pytorch"] = _Peer(None, torch_status)
        res = _measure(peers, cfg, note=progress.show)
    except Exception as exc:  # e.g. a kernel under construction
        res = {n: _err(exc) for n in PEERS}
    impl = {n: p.impl for n, p in (peers or {}).items() if p.impl}
    del peers
    row = {
        "case": case.name,
        "pass": pass_,
        "dtype": dt,
        "geometry": case.describe(),
        "flops": case.flops(pass_),
        **{n: res[n] for n in PEERS},
    }
    if impl:
        row["impl"] = impl
    cn, cn_min = res["cnnext"].get("median"), res["cnnext"].get("min")
    for peer, key in (("pytorch", "ratio_pytorch"), ("reference", "ratio_reference")):
        other, other_min = res[peer].get("median"), res[peer].get("min")
        row[key] = cn / other if cn and other else None
        row[key + "_min"] = cn_min / other_min if cn_min and other_min else None
    row["noisy"] = _noisy(res)
    fl = row["flops"]
    row["gflops"] = fl / cn / 1e9 if fl and cn else None
    pt = res["pytorch"].get("median")
    row["gflops_pytorch"] = fl / pt / 1e9 if fl and pt else None
    return row


#: A row is flagged noisy when a peer's median exceeds its fastest sample by this factor.
NOISY_SPREAD = 2.0


def _noisy(res):
    """True when the median of cnnext or PyTorch is far above its fastest sample.

    On a busy machine multi-threaded calls stall for whole scheduler time
    slices, so the samples become bimodal and the median measures the load,
    not the kernel.
    """
    for name in ("cnnext", "pytorch"):
        r = res.get(name, {})
        if r.get("status") == "ok" and r["repeats"] >= 3 and r["median"] > NOISY_SPREAD * r["min"]:
            return True
    return False


#: Cases of the thread-scaling check (issue 4: 2 threads >= 1.6x 1 thread).
SCALING_CASES = ("cifar-3x3", "resnet-3x3")
SCALING_TARGET = 1.6


def run_scaling(
    cases=SCALING_CASES,
    dtypes=("float32", "float64"),
    threads=None,
    config=None,
    quick=False,
    torch="auto",
    seed=0,
    progress=None,
):
    """Thread scaling: ``fwd+bwd`` at 1 thread vs ``threads``, interleaved.

    cnnext at 1 and at ``threads`` threads (and PyTorch likewise, for
    context) run round-robin in one process; the thread count is set,
    untimed, before each sample.

    Parameters
    ----------
    cases : str or list of str or list of Case
        Convolution cases (default: :data:`SCALING_CASES`).
    dtypes, config, quick, torch, seed, progress
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
    import cnnext

    if torch == "auto":
        torch, _ = _import_torch()
    if config is None:
        config = BenchConfig.quick() if quick else BenchConfig()
    if cases is None or isinstance(cases, str) or (cases and isinstance(cases[0], str)):
        cases = select_cases(cases)
    cases = [c for c in cases if c.kind == "conv"]
    n = _default_threads() if threads is None else threads
    rows = [(c, np.dtype(d).name) for c in cases for d in dtypes]
    if not isinstance(progress, _Progress):
        progress = _Progress(len(rows), enabled=progress)

    blas = _BlasThreads()

    def set_threads(k):
        def setup():
            cnnext.set_num_threads(k)
            if torch is not None:
                torch.set_num_threads(k)
            blas.set(k)

        return setup

    out = []
    with _threads(n, torch, blas):
        try:
            for case, dt in rows:
                progress.row(f"scaling {case.name} {dt}")
                rng = np.random.default_rng([seed, 7])
                base = _build_peers(case, "fwd+bwd", np.dtype(dt), rng, torch, False)
                peers = {}
                for name in ("cnnext", "pytorch"):
                    for k, tag in ((1, "1"), (n, "n")):
                        p = base[name]
                        peers[f"{name}_{tag}"] = _Peer(p.fn, p.status, setup=set_threads(k))
                res = _measure(peers, config, note=progress.show)
                row = {"case": case.name, "pass": "fwd+bwd", "dtype": dt, "threads": n, **res}
                row["noisy"] = any(
                    r.get("status") == "ok" and r["repeats"] >= 3
                    and r["median"] > NOISY_SPREAD * r["min"]
                    for r in res.values()
                )
                for name in ("cnnext", "pytorch"):
                    t1 = res[f"{name}_1"].get("median")
                    tn = res[f"{name}_n"].get("median")
                    row[f"speedup_{name}"] = t1 / tn if t1 and tn else None
                out.append(row)
        finally:
            progress.close()
    return out


def format_scaling(rows):
    """The thread-scaling rows as a text table plus target lines."""
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
    out = [f"thread scaling, fwd+bwd, 1 vs {n} threads (interleaved):",
           _format_cells(head, lines, left=2)]
    if n >= 2:
        for r in rows:
            s = r["speedup_cnnext"]
            if s is not None and r["case"] in SCALING_CASES:
                ok = "met" if s >= SCALING_TARGET else "NOT met"
                out.append(f"  [{ok}] {r['case']} {r['dtype']}: {n} threads >= "
                           f"{SCALING_TARGET}x 1-thread throughput: {s:.2f}x")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def _fmt_time(s):
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_cell(res):
    if res.get("status") != "ok":
        return res.get("status", "-") if not res.get("status", "").startswith("error") else "error"
    return _fmt_time(res["median"])


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def _fmt_mib(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


def _format_cells(head, lines, left):
    """Fixed-width columns: the first ``left`` left-aligned, the rest right."""
    widths = [max([len(h)] + [len(cells[i]) for cells in lines]) for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])


def format_table(results, memory=False):
    """The results as a fixed-width text table (one line per row).

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
        out.append(
            f"\nnoisy: a peer's median is over {NOISY_SPREAD:g}x its fastest sample (the machine "
            "was busy); rerun that row (--cases) or use --threads 1"
        )
    errors = [
        f"  {r['case']} {r['pass']} {r['dtype']} {n}: {r[n]['status']}"
        for r in results for n in PEERS if r[n].get("status", "").startswith("error")
    ]
    if errors:
        out += ["", "errors:"] + errors
    return "\n".join(out)


def _geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarize(results):
    """Geometric means of the ratios over the convolution rows, per dtype.

    Returns
    -------
    dict
        ``{dtype: {"pytorch": {"fwd": g, "fwd+bwd": g, "all": g, "n": rows,
        "all_min": g}, "reference": {...}}}`` (None where nothing was
        measured); ``all_min`` is the geomean of the ratios of the fastest
        samples, a check on medians inflated by a busy machine.
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


def _targets(results, summary):
    """(target, measured, met) for each target of the speed issue it can check."""
    def ratio(case=None, pass_=None, kind=None, dt=None):
        return [
            (r, r["ratio_pytorch"]) for r in results
            if r["ratio_pytorch"] is not None
            and (case is None or r["case"] == case)
            and (pass_ is None or r["pass"] == pass_)
            and (kind is None or r["geometry"]["kind"] in kind)
            and (dt is None or r["dtype"] == dt)
        ]

    out = []
    for dt in sorted(summary):
        conv = ratio(pass_="fwd+bwd", kind=("conv",), dt=dt)
        if conv:
            worst = max(conv, key=lambda t: t[1])
            out.append((f"conv fwd+bwd {dt}: every cnnext/PyTorch <= 1.5",
                        f"worst {worst[1]:.2f} ({worst[0]['case']})", worst[1] <= 1.5))
        g = summary[dt]["pytorch"]["fwd+bwd"]
        if g is not None:
            out.append((f"conv fwd+bwd {dt}: geomean cnnext/PyTorch <= 1.0", f"{g:.2f}", g <= 1.0))
        gr = summary[dt]["reference"]["all"]
        if gr is not None:
            out.append((f"conv {dt}: >= 5x faster than reference (geomean)",
                        f"{1 / gr:.1f}x", 1 / gr >= 5))
    pool = ratio(pass_="fwd+bwd", kind=("maxpool", "avgpool"))
    if pool:
        worst = max(pool, key=lambda t: t[1])
        where = f"{worst[0]['case']} {worst[0]['dtype']}"
        out.append(("pooling fwd+bwd: cnnext/PyTorch <= 1.0",
                    f"worst {worst[1]:.2f} ({where})", worst[1] <= 1.0))
    for r, v in ratio(kind=("train",)):
        out.append((f"LeNet-5 train step {r['dtype']}: cnnext/PyTorch <= 0.5",
                    f"{v:.2f}", v <= 0.5))
    for r, v in ratio(case="seed-mnist", pass_="fwd"):
        out.append((f"seed-mnist fwd {r['dtype']}: cnnext/PyTorch <= 1.0", f"{v:.2f}", v <= 1.0))
    return out


def format_summary(results):
    """Summary lines: geomeans per dtype and the issue's targets."""
    summary = summarize(results)
    lines = []
    keys = ("fwd", "fwd+bwd", "all")
    for dt, d in summary.items():
        p, r = d["pytorch"], d["reference"]
        if d["pytorch"]["n"]:
            lines.append(
                f"geomean cnnext/PyTorch, conv cases, {dt}: "
                + ", ".join(f"{k} {p[k]:.2f}" for k in keys if p[k] is not None)
                + f"  ({p['n']} rows"
                + (f"; from fastest samples: all {p['all_min']:.2f})" if p["all_min"] else ")")
            )
        if d["reference"]["n"]:
            lines.append(
                f"geomean cnnext/reference, conv cases, {dt}: "
                + ", ".join(f"{k} {r[k]:.3f}" for k in keys if r[k] is not None)
                + f"  (speed-up over reference {1 / r['all']:.1f}x, {r['n']} rows)"
            )
    targets = _targets(results, summary)
    if targets:
        lines += ["", "targets (issue 4):"]
        lines += [f"  [{'met' if ok else 'NOT met'}] {t}: {m}" for t, m, ok in targets]
    return "\n".join(lines)


def _header(info, cfg, torch_status, torch_autograd):
    v, t = info["versions"], info["threads"]
    cores = info["cores"]
    if info.get("cores_available") not in (None, cores):
        cores = f"{info['cores_available']} of {cores}"
    torch_desc = f"torch {v['torch']}" if v["torch"] else f"torch {torch_status}"
    reps = f"{cfg.repeats}" if cfg.repeats else f"{cfg.min_repeats}-{cfg.max_repeats} (adaptive)"
    how = ("autograd.grad" if torch_autograd else "aten.convolution_backward (no autograd)")
    return "\n".join([
        f"cnnext bench: cnnext {v['cnnext']}, numpy {v['numpy']}, "
        f"scipy {v['scipy'] or 'not installed'}, {torch_desc}",
        f"CPU: {info['cpu_model']} ({cores} cores"
        + (f", cnnext kernels: {info['cnnext_isa']}" if info.get("cnnext_isa") else "")
        + f"); threads: cnnext {t['cnnext']}, "
        f"torch {t['torch'] if t['torch'] is not None else '-'}"
        + (f", BLAS {t['blas']}" if t.get("blas") else ""),
        f"timing: medians of {reps} interleaved samples (>= {cfg.min_sample * 1e3:g} ms each), "
        f"{cfg.warmup} warm-up calls; reference <= {cfg.ref_max_repeats} samples; "
        f"PyTorch fwd+bwd via {how}",
        "ratios are cnnext time / peer time (< 1: cnnext faster)",
    ] + _load_warning(info, t["cnnext"]))


def _load_warning(info, threads):
    load, cores = info.get("loadavg"), info.get("cores_available") or info.get("cores")
    if not load or not cores or load[0] <= cores - 0.5:
        return []
    return [
        f"warning: load average {load[0]:.1f} on {cores} cores -- other processes compete for "
        "the CPU; timings are noisy"
        + (f", most of all with {threads} threads (--threads 1 is steadier)" if threads > 1 else "")
    ]


# --------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["ratio_pytorch"] or r["ratio_reference"]]
    labels = [f"{r['case']} {r['pass']} f{r['dtype'][-2:]}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rows) + 2), 5))
    xs = np.arange(len(rows))
    wdt = 0.4
    for off, key, lab in ((-wdt / 2, "ratio_pytorch", "cnnext / PyTorch"),
                          (wdt / 2, "ratio_reference", "cnnext / reference")):
        vals = [r[key] if r[key] else np.nan for r in rows]
        ax.bar(xs + off, vals, wdt, label=lab)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time ratio (< 1: cnnext faster)")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=70, ha="right", fontsize=7)
    ax.legend()
    ax.set_title("cnnext bench")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _parser():
    p = argparse.ArgumentParser(
        prog="cnnext bench",
        description="Time cnnext against the numpy reference and PyTorch CPU, interleaved in one "
        "process, and print a table of medians and ratios (cnnext / peer).",
        epilog="Example: cnnext bench --dtype float32 --cases '*-3x3' --json out.json",
    )
    p.add_argument("--quick", action="store_true", help="few, short samples (CI smoke test)")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                   help="dtype(s) to run (default: both)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="threads for cnnext, PyTorch and BLAS alike (default: "
                   "cnnext.get_num_threads(), i.e. OMP_NUM_THREADS or all cores)")
    p.add_argument("--cases", default=None, metavar="PATTERN",
                   help="comma-separated fnmatch patterns or substrings of case names/kinds "
                   "(conv, maxpool, avgpool, train); default: all")
    p.add_argument("--passes", default=None, metavar="LIST",
                   help="comma-separated subset of fwd,fwd+bwd,step")
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


def main(argv=None):
    """Entry point of ``cnnext bench``; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. ``cnnext bench | head``: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv):
    args = _parser().parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "cnnext bench: --plot needs matplotlib, which is not installed "
                "(pip install matplotlib, or pip install 'cnnext[plot]')",
                file=sys.stderr,
            )
            return 2
    cases = select_cases(args.cases)
    if not cases:
        names = ", ".join(c.name for c in SUITE)
        print(f"cnnext bench: --cases {args.cases!r} matches no case; cases: {names}",
              file=sys.stderr)
        return 2
    passes = None
    if args.passes:
        passes = [s.strip() for s in args.passes.split(",") if s.strip()]
        bad = [s for s in passes if s not in ("fwd", "fwd+bwd", "step")]
        if bad:
            print(f"cnnext bench: --passes accepts fwd, fwd+bwd, step; got {bad}", file=sys.stderr)
            return 2
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    if args.no_torch:
        torch, torch_status = None, "not used (--no-torch)"
    else:
        torch, torch_status = _import_torch()
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    cfg.memory, cfg.full_reference = args.memory, args.full_reference
    if args.repeats:
        cfg.repeats = args.repeats
        cfg.ref_max_repeats = min(cfg.ref_max_repeats, args.repeats)
    threads = args.threads if args.threads is not None else _default_threads()

    blas = _BlasThreads()
    with _threads(threads, torch, blas):
        info = machine_info(torch=torch)
    info["threads"]["blas"] = (
        f"{threads} ({blas.method})" if blas.method
        else "library default (install threadpoolctl to pin)"
    )
    print(_header(info, cfg, torch_status, args.torch_autograd), flush=True)
    t0 = time.perf_counter()
    cpu0 = _cpu_snapshot()
    results, scaling = [], []
    if args.scaling:
        chosen = [c for c in cases if c.name in SCALING_CASES] if args.cases is None else cases
        scaling = run_scaling(
            chosen, dtypes=dtypes, threads=threads, config=cfg, torch=torch, seed=args.seed,
            progress=args.progress,
        )
        if torch is None:
            for r in scaling:
                r["pytorch_1"] = r["pytorch_n"] = {"status": torch_status}
        print()
        print(format_scaling(scaling) or "no convolution case selected for --scaling")
    else:
        results = run_suite(
            cases, dtypes=dtypes, passes=passes, threads=threads, config=cfg, torch=torch,
            torch_autograd=args.torch_autograd, seed=args.seed, progress=args.progress,
        )
        if torch is None:
            for r in results:
                r["pytorch"] = {"status": torch_status}
        print()
        print(format_table(results, memory=args.memory))
        summary = format_summary(results)
        if summary:
            print()
            print(summary)
    elapsed = time.perf_counter() - t0
    others = _others_cores(cpu0, _cpu_snapshot(), elapsed)
    print(f"\n{len(results) + len(scaling)} rows in {elapsed:.0f} s")
    if others is not None:
        cores = info.get("cores_available") or info.get("cores")
        msg = f"other processes kept {others:.1f} of {cores} cores busy during the run"
        if threads > 1 and others > 0.25:
            msg += (f": {threads}-thread calls had to wait for a free core, so multi-threaded "
                    "times (and their ratios) are unreliable; compare with --threads 1")
        print(msg)
    if args.json:
        try:
            loadavg_end = os.getloadavg()
        except (AttributeError, OSError):
            loadavg_end = None
        doc = {
            "schema": "cnnext-bench/1",
            "command": ["cnnext", "bench", *(sys.argv[2:] if argv is None else argv)],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "elapsed_s": elapsed,
            "other_processes_cores": others,
            "machine": {**info, "loadavg_end": loadavg_end},
            "settings": {
                **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                "threads": threads,
                "dtypes": list(dtypes),
                "torch_status": torch_status,
                "torch_fwd_bwd": (
                    "autograd.grad" if args.torch_autograd else "aten.convolution_backward"
                ),
                "seed": args.seed,
            },
            "results": results,
            "scaling": scaling,
            "summary": summarize(results),
            "targets": [{"target": t, "measured": m, "met": ok}
                        for t, m, ok in _targets(results, summarize(results))],
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        _plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0
