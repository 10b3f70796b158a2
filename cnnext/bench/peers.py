"""The peers of the layer suite: one zero-argument callable per implementation.

``cnnext``
    :mod:`cnnext.functional` (the compiled kernels); the training step uses
    :mod:`cnnext.nn` and :mod:`cnnext.optim`.
``reference``
    :mod:`cnnext.reference`, the slow numpy oracle (the training step runs
    the cnnext step under ``cnnext.use_backend("numpy")``).
``pytorch``
    ``torch`` CPU, when it is installed (batch normalization:
    ``torch.nn.functional.batch_norm`` in training mode and
    ``torch.autograd.grad``).  ``fwd+bwd`` calls
    ``torch.nn.functional.conv2d`` and then
    ``torch.ops.aten.convolution_backward`` with ``output_mask [True, True,
    True]`` -- the very kernel autograd's ``ConvolutionBackward0`` node runs,
    without the autograd bookkeeping, so both sides do exactly the same
    work.  With ``torch_autograd=True`` it times ``torch.autograd.grad``
    instead.  Pooling uses the matching ``aten.*_backward`` ops the same way.

All inputs (and upstream gradients) are generated when the peers are built,
before any timing.  PyTorch is passed in as a module (or None): nothing here
imports it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from .cases import SUITE
from .harness import Peer
from .machine import NOT_INSTALLED, import_torch

if TYPE_CHECKING:
    from types import ModuleType

    from .._typing import FloatArray, Thunk
    from .cases import Case

    #: One LeNet-5 parameter set by name (``w1``, ``b1``, ..., ``b5``).
    Params = dict[str, npt.NDArray[Any]]

__all__ = ["PEERS", "make_peers", "build_peers"]

#: The peers of a layer-suite row, in table order.
PEERS = ("cnnext", "pytorch", "reference")


def uniform(
    rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dt: npt.DTypeLike
) -> FloatArray:
    """PyTorch's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dt)


def _conv_inputs(
    case: Case, dt: np.dtype[Any], rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    x = rng.standard_normal((case.N, case.C, case.H, case.H)).astype(dt)
    c_g = case.C // case.groups
    fan_in = c_g * case.kernel**2
    w_shape = ((case.C, case.C_out // case.groups) if case.transposed else (case.C_out, c_g))
    w = uniform(rng, (*w_shape, case.kernel, case.kernel), fan_in, dt)
    b = uniform(rng, (case.C_out,), fan_in, dt)
    g = rng.standard_normal((case.N, case.C_out, case.out_size, case.out_size)).astype(dt)
    return x, w, b, g


def _conv_peers(
    case: Case, pass_: str, dt: np.dtype[Any], rng: np.random.Generator,
    torch: ModuleType | None, torch_autograd: bool,
) -> dict[str, Peer]:
    from .. import functional as F
    from .. import reference as R

    x, w, b, g = _conv_inputs(case, dt, rng)
    s, p, G = case.stride, case.padding, case.groups
    peers: dict[str, Peer] = {}
    if case.transposed:
        return _conv_transpose_peers(case, pass_, x, w, b, g, torch)
    d = case.dilation
    if pass_ == "fwd":
        peers["cnnext"] = Peer(lambda: F.conv2d(x, w, b, s, p, d, G))

        # The reference on the batch, or on one sample (probe); gg is unused
        # in the forward pass and the result is ignored.
        def ref(xx: FloatArray = x, gg: Any = None) -> Any:
            return R.conv2d(xx, w, b, s, p, d, G)
    else:

        def cn() -> None:
            F.conv2d(x, w, b, s, p, d, G)
            F.conv2d_backward(g, x, w, s, p, d, G, bias=True)

        def ref(xx: FloatArray = x, gg: Any = g) -> Any:
            R.conv2d(xx, w, b, s, p, d, G)
            R.conv2d_backward(gg, xx, w, s, p, d, G, bias=True)

        peers["cnnext"] = Peer(cn)

    def probe() -> float:
        # One sample of the batch, scaled by N: the reference is linear in N.
        t0 = time.perf_counter()
        ref(x[:1], g[:1])
        return (time.perf_counter() - t0) * case.N

    peers["reference"] = Peer(ref, probe=probe if case.N > 1 else None)
    peers["pytorch"] = _torch_conv_peer(case, pass_, x, w, b, g, torch, torch_autograd)
    return peers


def _torch_conv_peer(
    case: Case, pass_: str, x: FloatArray, w: FloatArray, b: FloatArray, g: FloatArray,
    torch: ModuleType | None, torch_autograd: bool,
) -> Peer:
    if torch is None:
        return Peer(None, NOT_INSTALLED)
    tf = torch.nn.functional
    s, p, G, d = case.stride, case.padding, case.groups, case.dilation
    xt, wt, bt, gt = (torch.from_numpy(a.copy()) for a in (x, w, b, g))
    if pass_ == "fwd":
        return Peer(lambda: tf.conv2d(xt, wt, bt, s, p, d, G))
    if torch_autograd:
        xa, wa, ba = (t.clone().requires_grad_(True) for t in (xt, wt, bt))

        def fb_autograd() -> None:
            y = tf.conv2d(xa, wa, ba, s, p, d, G)
            torch.autograd.grad(y, (xa, wa, ba), gt)

        return Peer(fb_autograd)
    conv_bwd = torch.ops.aten.convolution_backward.default
    bias_sizes, st, pd, dil = [case.C_out], [s, s], [p, p], [d, d]
    mask = [True, True, True]

    def fb() -> None:
        tf.conv2d(xt, wt, bt, s, p, d, G)
        conv_bwd(gt, xt, wt, bias_sizes, st, pd, dil, False, [0, 0], G, mask)

    return Peer(fb)


def _conv_transpose_peers(
    case: Case, pass_: str, x: FloatArray, w: FloatArray, b: FloatArray, g: FloatArray,
    torch: ModuleType | None,
) -> dict[str, Peer]:
    """``conv_transpose2d`` (and ``conv_transpose2d_backward``); PyTorch's
    backward is ``aten.convolution_backward`` with ``transposed=True``."""
    from .. import functional as F
    from .. import reference as R

    s, p, G = case.stride, case.padding, case.groups
    fwd = pass_ == "fwd"

    def cn() -> None:
        F.conv_transpose2d(x, w, b, s, p, 0, G)
        if not fwd:
            F.conv_transpose2d_backward(g, x, w, s, p, 0, G, bias=True)

    def ref(xx: FloatArray = x, gg: FloatArray = g) -> None:
        R.conv_transpose2d(xx, w, b, s, p, 0, G)
        if not fwd:
            R.conv_transpose2d_backward(gg, xx, w, s, p, 0, G, bias=True)

    def probe() -> float:
        t0 = time.perf_counter()
        ref(x[:1], g[:1])
        return (time.perf_counter() - t0) * case.N

    peers = {"cnnext": Peer(cn), "reference": Peer(ref, probe=probe if case.N > 1 else None)}
    if torch is None:
        peers["pytorch"] = Peer(None, NOT_INSTALLED)
        return peers
    tf = torch.nn.functional
    xt, wt, bt, gt = (torch.from_numpy(a.copy()) for a in (x, w, b, g))
    conv_bwd = torch.ops.aten.convolution_backward.default
    bias_sizes, st, pd = [case.C_out], [s, s], [p, p]

    def pt() -> None:
        tf.conv_transpose2d(xt, wt, bt, s, p, 0, G)
        if not fwd:
            conv_bwd(gt, xt, wt, bias_sizes, st, pd, [1, 1], True, [0, 0], G,
                     [True, True, True])

    peers["pytorch"] = Peer(pt)
    return peers


def _pool_peers(
    case: Case, pass_: str, dt: np.dtype[Any], rng: np.random.Generator,
    torch: ModuleType | None,
) -> dict[str, Peer]:
    from .. import functional as F
    from .. import reference as R

    x = rng.standard_normal((case.N, case.C, case.H, case.H)).astype(dt)
    k, s, p = case.kernel, case.stride, case.padding
    g = rng.standard_normal((case.N, case.C, case.out_size, case.out_size)).astype(dt)
    shape = x.shape
    peers: dict[str, Peer] = {}
    if case.kind == "maxpool":
        if pass_ == "fwd":
            peers["cnnext"] = Peer(lambda: F.max_pool2d(x, k, s, p))
            peers["reference"] = Peer(lambda: R.max_pool2d(x, k, s, p))
        else:

            def cn() -> None:
                _, idx = F.max_pool2d(x, k, s, p, return_indices=True)
                F.max_pool2d_backward(g, idx, shape)

            def ref() -> None:
                _, idx = R.max_pool2d(x, k, s, p, return_indices=True)
                R.max_pool2d_backward(g, idx, shape)

            peers["cnnext"], peers["reference"] = Peer(cn), Peer(ref)
    elif case.kind == "gap":
        if pass_ == "fwd":
            peers["cnnext"] = Peer(lambda: F.adaptive_avg_pool2d(x, 1))
            peers["reference"] = Peer(lambda: R.adaptive_avg_pool2d(x, 1))
        else:

            def cn() -> None:
                F.adaptive_avg_pool2d(x, 1)
                F.adaptive_avg_pool2d_backward(g, shape)

            def ref() -> None:
                R.adaptive_avg_pool2d(x, 1)
                R.adaptive_avg_pool2d_backward(g, shape)

            peers["cnnext"], peers["reference"] = Peer(cn), Peer(ref)
    else:
        if pass_ == "fwd":
            peers["cnnext"] = Peer(lambda: F.avg_pool2d(x, k, s, p))
            peers["reference"] = Peer(lambda: R.avg_pool2d(x, k, s, p))
        else:

            def cn() -> None:
                F.avg_pool2d(x, k, s, p)
                F.avg_pool2d_backward(g, shape, k, s, p)

            def ref() -> None:
                R.avg_pool2d(x, k, s, p)
                R.avg_pool2d_backward(g, shape, k, s, p)

            peers["cnnext"], peers["reference"] = Peer(cn), Peer(ref)
    peers["pytorch"] = _torch_pool_peer(case, pass_, x, g, torch)
    return peers


def _torch_pool_peer(
    case: Case, pass_: str, x: FloatArray, g: FloatArray, torch: ModuleType | None
) -> Peer:
    if torch is None:
        return Peer(None, NOT_INSTALLED)
    xt, gt = torch.from_numpy(x.copy()), torch.from_numpy(g.copy())
    k, s, p = case.kernel, case.stride, case.padding
    kk, ss, pp, dd = [k, k], [s, s], [p, p], [1, 1]
    aten = torch.ops.aten
    if case.kind == "maxpool":
        if pass_ == "fwd":
            mp = torch.nn.functional.max_pool2d
            return Peer(lambda: mp(xt, k, s, p))
        fwd_op = aten.max_pool2d_with_indices.default
        bwd_op = aten.max_pool2d_with_indices_backward.default

        def max_fb() -> None:
            _, idx = fwd_op(xt, kk, ss, pp, dd, False)
            bwd_op(gt, xt, kk, ss, pp, dd, False, idx)

        return Peer(max_fb)
    if case.kind == "gap":
        gap_op = aten._adaptive_avg_pool2d.default
        if pass_ == "fwd":
            return Peer(lambda: gap_op(xt, [1, 1]))
        gap_bwd = aten._adaptive_avg_pool2d_backward.default

        def gap_fb() -> None:
            gap_op(xt, [1, 1])
            gap_bwd(gt, xt)

        return Peer(gap_fb)
    avg_op = aten.avg_pool2d.default
    if pass_ == "fwd":
        return Peer(lambda: avg_op(xt, kk, ss, pp, False, True, None))
    avg_bwd = aten.avg_pool2d_backward.default

    def avg_fb() -> None:
        avg_op(xt, kk, ss, pp, False, True, None)
        avg_bwd(gt, xt, kk, ss, pp, False, True, None)

    return Peer(avg_fb)


# ---- batch normalization ---------------------------------------------------


def _batchnorm_peers(
    case: Case, dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    from .. import nn
    from .. import reference as R

    shape = (case.N, case.C, case.H, case.H)
    x = rng.standard_normal(shape).astype(dt)
    g = rng.standard_normal(shape).astype(dt)
    layer = nn.BatchNorm2D(case.C, dtype=dt)

    # Each returns grad_x (the peers compute the same thing; tests compare).
    def cn() -> FloatArray:
        layer.forward(x)
        return layer.backward(g)

    rm, rv, w = np.zeros(case.C, dt), np.ones(case.C, dt), np.ones(case.C, dt)

    def ref() -> FloatArray:
        R.batch_norm(x, rm, rv, w, np.zeros(case.C, dt), training=True)
        return R.batch_norm_backward(g, x, None, None, w, training=True)[0]

    peers = {"cnnext": Peer(cn), "reference": Peer(ref)}
    if torch is None:
        peers["pytorch"] = Peer(None, NOT_INSTALLED)
        return peers
    xt, gt = torch.from_numpy(x.copy()).requires_grad_(True), torch.from_numpy(g.copy())
    wt = torch.ones(case.C, dtype=xt.dtype, requires_grad=True)
    bt = torch.zeros(case.C, dtype=xt.dtype, requires_grad=True)
    tm, tv = torch.zeros(case.C, dtype=xt.dtype), torch.ones(case.C, dtype=xt.dtype)
    bn = torch.nn.functional.batch_norm

    def fb() -> Any:
        y = bn(xt, tm, tv, wt, bt, training=True)
        return torch.autograd.grad(y, (xt, wt, bt), gt)[0]

    peers["pytorch"] = Peer(fb)
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


def _lenet_nn_step(
    x: FloatArray, labels: npt.NDArray[np.int64], init: Params
) -> tuple[Thunk, Callable[[], Params]]:
    """One LeNet-5 training step from :mod:`cnnext.nn` and :mod:`cnnext.optim`.

    ``zero_grad``, ``model.forward``, ``SoftmaxCrossEntropy``,
    ``model.backward``, ``optim.Adam.step`` -- what a user of the layer API
    runs.  Returns ``(step, state)``; ``state()`` gives the live parameters.
    """
    from .. import nn

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
    step = _model_step(model, x, labels)

    def state() -> Params:
        out = {}
        for i, layer in enumerate(layers, start=1):
            out[f"w{i}"], out[f"b{i}"] = layer.params["weight"], layer.params["bias"]
        return out

    return step, state


def _train_peers(
    case: Case, dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    import cnnext

    if case.name == "resnet8-train":
        return _resnet8_peers(case, dt, rng, torch)

    x = rng.standard_normal((case.N, 1, 28, 28)).astype(dt)
    labels = rng.integers(0, 10, size=case.N)
    init = {n: uniform(rng, shape, fan, dt) for n, (shape, fan) in _LENET_SHAPES.items()}
    cn_step, cn_state = _lenet_nn_step(x, labels, init)
    ref_inner, ref_state = _lenet_nn_step(x, labels, init)

    def ref_step() -> None:
        with cnnext.use_backend("numpy"):
            ref_inner()

    impl = "cnnext.nn + cnnext.optim.Adam"
    peers = {"cnnext": Peer(cn_step, impl=impl + ", planned as fit runs it", state=cn_state),
             "reference": Peer(ref_step, impl=impl + ' under use_backend("numpy") (layer by '
                                                     'layer)', state=ref_state)}
    peers["pytorch"] = _torch_train_peer(x, labels, init, torch)
    return peers


def _torch_train_peer(
    x: FloatArray, labels: npt.NDArray[np.int64], init: Params, torch: ModuleType | None
) -> Peer:
    if torch is None:
        return Peer(None, NOT_INSTALLED)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    model = model.to(torch.float64 if x.dtype == np.float64 else torch.float32)
    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for i, layer in enumerate(layers, start=1):
            layer.weight.copy_(torch.from_numpy(init[f"w{i}"]))
            layer.bias.copy_(torch.from_numpy(init[f"b{i}"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(labels.copy())
    ce = torch.nn.functional.cross_entropy

    def torch_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = ce(model(xt), yt)
        loss.backward()
        opt.step()

    def torch_state() -> Params:
        out = {}
        for i, layer in enumerate(layers, start=1):
            out[f"w{i}"] = layer.weight.detach().numpy()
            out[f"b{i}"] = layer.bias.detach().numpy()
        return out

    return Peer(torch_step, impl="torch.nn + torch.optim.Adam + cross_entropy",
                state=torch_state)


# ---- resnet8 training step --------------------------------------------------


def _model_step(model: Any, x: FloatArray, labels: npt.NDArray[np.int64]) -> Thunk:
    """One Adam training step of a cnnext model, as :func:`cnnext.train.fit` runs it.

    Each call asks for the model's whole-network plan as ``fit`` does for
    each batch (made at the first call, so under the thread count and
    backend the row runs with, and made again if they change) and runs its
    ``train_step``; where ``fit`` runs layer by layer (the numpy backend),
    so does the step.  As in ``fit`` (and PyTorch, whose input needs no
    gradient), the first layer's input gradient is not computed.
    """
    from .. import nn, optim
    from ..train import _layered_step, _net_plan

    loss = nn.SoftmaxCrossEntropy()
    opt = optim.Adam(model, lr=1e-3)

    def step() -> None:
        plan = _net_plan(model, x.shape, True)
        if plan is None:
            _layered_step(model, loss, opt, x, labels)
        else:
            plan.train_step(x, labels, loss, opt)

    return step


def _resnet8_peers(
    case: Case, dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    from .. import models
    from .twin import torch_twin

    x = rng.standard_normal((case.N, case.C, case.H, case.H)).astype(dt)
    labels = rng.integers(0, case.C_out, size=case.N)
    seed = int(rng.integers(1 << 31))
    model = models.resnet8(case.C, case.C_out, seed=seed, dtype=dt)
    peers = {"cnnext": Peer(_model_step(model, x, labels),
                            impl="cnnext.models.resnet8 + cnnext.optim.Adam, planned as fit "
                                 "runs it", state=lambda: model.params),
             # The numpy reference takes minutes per step at this size.
             "reference": Peer(None, "not timed (minutes per step)")}
    if torch is None:
        peers["pytorch"] = Peer(None, NOT_INSTALLED)
        return peers
    twin = torch_twin(models.resnet8(case.C, case.C_out, seed=seed, dtype=dt), torch)
    opt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(labels.copy())
    ce = torch.nn.functional.cross_entropy

    def torch_step() -> None:
        opt.zero_grad(set_to_none=True)
        ce(twin(xt), yt).backward()
        opt.step()

    def torch_state() -> Params:
        return {k: v.detach().numpy() for k, v in twin.named_parameters()}

    peers["pytorch"] = Peer(torch_step, impl="the same network in torch.nn + torch.optim.Adam",
                            state=torch_state)
    return peers


def build_peers(
    case: Case, pass_: str, dt: np.dtype[Any], rng: np.random.Generator,
    torch: ModuleType | None, torch_autograd: bool = False,
) -> dict[str, Peer]:
    """``{"cnnext": Peer, "reference": Peer, "pytorch": Peer}`` for one row."""
    if case.kind == "conv":
        return _conv_peers(case, pass_, dt, rng, torch, torch_autograd)
    if case.kind in ("maxpool", "avgpool", "gap"):
        return _pool_peers(case, pass_, dt, rng, torch)
    if case.kind == "batchnorm":
        return _batchnorm_peers(case, dt, rng, torch)
    return _train_peers(case, dt, rng, torch)


def row_rng(case: Case, seed: int) -> np.random.Generator:
    """The random generator of a row's inputs (the same for every pass and dtype)."""
    return np.random.default_rng([seed, SUITE.index(case) if case in SUITE else 99])


def make_peers(
    case: Case,
    pass_: str,
    dtype: npt.DTypeLike,
    *,
    seed: int = 0,
    torch: ModuleType | Literal["auto"] | None = "auto",
    torch_autograd: bool = False,
) -> dict[str, Thunk | None]:
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
        torch, _ = import_torch()
    rng = np.random.default_rng(seed)
    peers = build_peers(case, pass_, np.dtype(dtype), rng, torch, torch_autograd)
    return {name: peers[name].fn for name in PEERS}
