"""Peers of the small-calls group: one image at a time, through the public API.

Tutorial code trains and predicts one image at a time, so the cost of a
call is mostly fixed overhead (argument checks, allocations, thread
start-up), not arithmetic.  Each row builds cnnext's callable and its
peers' on the same inputs and weights:

``seed-step``
    One SGD step at batch 1 of the tutorial network -- the small MNIST
    network of Victor Zhou's "CNNs, Part 2: Training a Convolutional Neural
    Network" (https://victorzhou.com/blog/intro-to-cnns-part-2/):
    ``Conv2D(1, 8, 3, bias=False)``, ``MaxPool2D(2)``, ``Flatten()``,
    ``Dense(1352, 10)``, with ``SoftmaxCrossEntropy`` and
    ``optim.SGD(lr=0.005)`` -- against the same loop in PyTorch
    (``torch.nn``, ``F.cross_entropy``, ``torch.optim.SGD``).
``seed-step-compat``
    The same network and step written against the tutorial API of
    :mod:`cnnext.compat.victorzhou` (``Conv3x3(8)``, ``MaxPool2()``,
    ``Softmax(13 * 13 * 8, 10)``, forward, loss, backprop with lr 0.005, in
    float64) against PyTorch in float64 and against the tutorial's own
    numpy classes (:mod:`cnnext.bench._tutorial`).
``linear-b1``, ``conv2d-seed``, ``maxpool-seed``
    Single :mod:`cnnext.functional` calls at the tutorial network's sizes,
    against ``x @ w.T + b`` in numpy or ``torch.nn.functional``.
``seed-fwd``
    ``model.forward`` at batch 1 against PyTorch's ``model(x)`` in eval
    mode under ``torch.no_grad()``.
``*-layer-fwd``, ``*-layer-bwd``
    A layer's ``forward``/``backward`` against the functional call it makes
    (peer ``inner``): the difference is the layer's own cost.  Likewise the
    ``inner`` peer of ``conv2d-f`` and ``maxpool-f`` (the calls of
    ``conv2d-seed`` and ``maxpool-seed``) is the compiled kernel alone, on
    preallocated outputs.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _tutorial
from .harness import Peer
from .onnx_models import build_onnx_peers
from .peers import uniform

if TYPE_CHECKING:
    from types import ModuleType

    from .._typing import Thunk
    from ..compat.victorzhou import Conv3x3, MaxPool2, Softmax
    from ..nn import Sequential
    from .cases import SmallCall

    #: Builds one small call's peers from (dtype, rng, torch).
    Builder = Callable[[np.dtype[Any], np.random.Generator, ModuleType | None], dict[str, Peer]]
    #: Arrays by name (a model's parameters, a peer's final state).
    Arrays = dict[str, npt.NDArray[Any]]

__all__ = ["build_small_peers"]

_LR = 0.005


@contextlib.contextmanager
def _global_rng_kept() -> Iterator[None]:
    """numpy's global random state is restored after the block (the tutorial
    classes draw their initial weights from it)."""
    state = np.random.get_state()  # noqa: NPY002 (saved to leave it untouched)
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


# ---- the tutorial network -------------------------------------------------


def _seed_model(dt: np.dtype[Any], rng: np.random.Generator) -> Sequential:
    from .. import nn

    return nn.Sequential(
        nn.Conv2D(1, 8, 3, bias=False, dtype=dt, seed=rng), nn.MaxPool2D(2), nn.Flatten(),
        nn.Dense(13 * 13 * 8, 10, dtype=dt, seed=rng),
    )


def _torch_seed_model(torch: ModuleType, params: Arrays, dt: npt.DTypeLike) -> Any:
    """The tutorial network in ``torch.nn`` with the weights of ``params`` (cnnext names)."""
    tnn = torch.nn
    model = tnn.Sequential(
        tnn.Conv2d(1, 8, 3, bias=False), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(13 * 13 * 8, 10),
    ).to(torch.float64 if dt == np.float64 else torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.array(params[name])))
    return model


def _torch_state(model: Any) -> Arrays:
    return {name: p.detach().numpy() for name, p in model.named_parameters()}


def _seed_step(
    dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    from .. import nn, optim

    model = _seed_model(dt, rng)
    x = rng.standard_normal((1, 1, 28, 28)).astype(dt)
    label = rng.integers(0, 10, size=1)
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model, lr=_LR)

    def step() -> None:
        opt.zero_grad()
        loss(model.forward(x), label)
        model.backward(loss.backward())
        opt.step()

    peers = {"cnnext": Peer(step, impl="cnnext.nn + SoftmaxCrossEntropy + cnnext.optim.SGD",
                            state=lambda: model.params)}
    if torch is not None:
        tmodel = _torch_seed_model(torch, model.params, dt)
        topt = torch.optim.SGD(tmodel.parameters(), lr=_LR)
        ce = torch.nn.functional.cross_entropy
        xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(label.copy())

        def torch_step() -> None:
            topt.zero_grad(set_to_none=True)
            ce(tmodel(xt), yt).backward()
            topt.step()

        peers["pytorch"] = Peer(torch_step, impl="torch.nn + cross_entropy + torch.optim.SGD",
                                state=lambda: _torch_state(tmodel))
    return peers


def _seed_fwd(
    dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    model = _seed_model(dt, rng).eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(dt)
    peers = {"cnnext": Peer(lambda: model.forward(x), impl="cnnext.nn.Sequential.forward")}
    if torch is not None:
        tmodel = _torch_seed_model(torch, model.params, dt).eval()
        xt = torch.from_numpy(x.copy())

        def torch_fwd() -> Any:
            with torch.no_grad():
                return tmodel(xt)

        peers["pytorch"] = Peer(torch_fwd, impl="torch.nn eval forward under torch.no_grad()")
    return peers


# ---- the tutorial's train step -------------------------------------------


def _tutorial_api() -> ModuleType:
    """The cnnext adapter of the tutorial's classes."""
    from ..compat import victorzhou

    return victorzhou


def _compat_state(
    conv: Conv3x3 | _tutorial.Conv3x3, softmax: Softmax | _tutorial.Softmax
) -> Arrays:
    return {"filters": conv.filters, "weights": softmax.weights, "biases": softmax.biases}


def _seed_step_compat(
    rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    api = _tutorial_api()
    im = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    label = int(rng.integers(0, 10))
    layers = (api.Conv3x3(8, seed=rng), api.MaxPool2(), api.Softmax(13 * 13 * 8, 10, seed=rng))
    with _global_rng_kept():
        tut = (_tutorial.Conv3x3(8), _tutorial.MaxPool2(), _tutorial.Softmax(13 * 13 * 8, 10))
    tut[0].filters = layers[0].filters.copy()
    tut[2].weights = layers[2].weights.copy()
    tut[2].biases = layers[2].biases.copy()
    peers = {
        "cnnext": Peer(lambda: _tutorial.train(*layers, im, label, _LR),
                       impl="cnnext.compat.victorzhou Conv3x3, MaxPool2, Softmax",
                       state=lambda: _compat_state(layers[0], layers[2])),
        "numpy": Peer(lambda: _tutorial.train(*tut, im, label, _LR),
                      impl="the tutorial's numpy Conv3x3, MaxPool2, Softmax (Victor Zhou, "
                      "https://victorzhou.com/blog/intro-to-cnns-part-2/)",
                      state=lambda: _compat_state(tut[0], tut[2])),
    }
    if torch is not None:
        peers["pytorch"] = _torch_compat_peer(torch, layers, im, label)
    return peers


def _torch_compat_peer(
    torch: ModuleType, layers: tuple[Conv3x3, MaxPool2, Softmax], im: npt.NDArray[np.uint8],
    label: int,
) -> Peer:
    """The tutorial's step in PyTorch, float64, on the same weights.

    The tutorial flattens (h, w, c) and stores the dense weights as
    (inputs, classes); ``torch.nn`` flattens (c, h, w) and stores (classes,
    inputs): the weights are permuted accordingly.
    """
    conv, _, softmax = layers
    params = {
        "0.weight": conv.filters.reshape(8, 1, 3, 3),
        "3.weight": softmax.weights.reshape(13, 13, 8, 10).transpose(3, 2, 0, 1).reshape(10, -1),
        "3.bias": softmax.biases,
    }
    model = _torch_seed_model(torch, params, np.float64)
    opt = torch.optim.SGD(model.parameters(), lr=_LR)
    ce = torch.nn.functional.cross_entropy
    imt, yt = torch.from_numpy(im.copy()), torch.tensor([label])

    def torch_step() -> None:
        x = (imt.double() / 255 - 0.5)[None, None]
        opt.zero_grad(set_to_none=True)
        ce(model(x), yt).backward()
        opt.step()

    def state() -> Arrays:
        w = model[3].weight.detach().numpy()
        return {"filters": model[0].weight.detach().numpy().reshape(8, 3, 3),
                "weights": w.reshape(10, 8, 13, 13).transpose(2, 3, 1, 0).reshape(-1, 10),
                "biases": model[3].bias.detach().numpy()}

    return Peer(torch_step, impl="torch.nn (float64) + cross_entropy + torch.optim.SGD",
                state=state)


# ---- single functional calls ----------------------------------------------


def _linear_b1(
    dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    from .. import functional as F

    x = rng.standard_normal((1, 13 * 13 * 8)).astype(dt)
    w = uniform(rng, (10, 13 * 13 * 8), 13 * 13 * 8, dt)
    b = uniform(rng, (10,), 13 * 13 * 8, dt)
    return {"cnnext": Peer(lambda: F.linear(x, w, b)),
            "numpy": Peer(lambda: x @ w.T + b, impl="x @ w.T + b")}


def _conv2d_seed(
    dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    from .. import _conv
    from .. import functional as F

    x = rng.standard_normal((1, 1, 28, 28)).astype(dt)
    w = uniform(rng, (8, 1, 3, 3), 9, dt)
    out = np.empty((1, 8, 26, 26), dtype=dt)

    def kernel() -> None:
        _conv.conv2d_forward(x, w, None, out, 1, 1, 0, 0, 1, 1, 1)

    peers = {"cnnext": Peer(lambda: F.conv2d(x, w)),
             "inner": Peer(kernel, impl="the compiled kernel on a preallocated output")}
    if torch is not None:
        xt, wt = torch.from_numpy(x.copy()), torch.from_numpy(w.copy())
        conv2d = torch.nn.functional.conv2d
        peers["pytorch"] = Peer(lambda: conv2d(xt, wt))
    return peers


def _maxpool_seed(
    dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
) -> dict[str, Peer]:
    from .. import _pool
    from .. import functional as F

    x = rng.standard_normal((1, 8, 26, 26)).astype(dt)
    y = np.empty((1, 8, 13, 13), dtype=dt)

    def kernel() -> None:  # F.max_pool2d(x, 2) asks for no indices, so neither does this
        _pool.max_pool2d_forward(x, y, None, 2, 2, 2, 2, 0, 0, 1, 1, 1)

    peers = {"cnnext": Peer(lambda: F.max_pool2d(x, 2)),
             "inner": Peer(kernel, impl="the compiled kernel on preallocated outputs")}
    if torch is not None:
        xt = torch.from_numpy(x.copy())
        max_pool2d = torch.nn.functional.max_pool2d
        peers["pytorch"] = Peer(lambda: max_pool2d(xt, 2))
    return peers


# ---- a layer against the functional call it makes ---------------------------


def _layer_rows(
    dt: np.dtype[Any], rng: np.random.Generator
) -> dict[str, tuple[Thunk, Thunk]]:
    """{row name: (layer call, inner call)} on the seed network's sizes."""
    from .. import functional as F
    from .. import nn

    x = rng.standard_normal((1, 1, 28, 28)).astype(dt)
    conv = nn.Conv2D(1, 8, 3, bias=False, dtype=dt, seed=rng)
    y = conv.forward(x)
    gy = rng.standard_normal(y.shape).astype(dt)
    conv.backward(gy)
    w = conv.weight

    def conv_inner_bwd() -> None:
        _, gw, _ = F.conv2d_backward(gy, x, w, bias=False)
        conv.grads["weight"] += gw

    pool = nn.MaxPool2D(2)
    p = pool.forward(y)
    gp = rng.standard_normal(p.shape).astype(dt)
    _, idx = F.max_pool2d(y, 2, return_indices=True)
    flat = p.reshape(1, -1)
    dense = nn.Dense(13 * 13 * 8, 10, dtype=dt, seed=rng)
    z = dense.forward(flat)
    gz = rng.standard_normal(z.shape).astype(dt)
    dense.backward(gz)

    def dense_inner_bwd() -> None:
        _, gw, gb = F.linear_backward(gz, flat, dense.weight)
        dense.grads["weight"] += gw
        dense.grads["bias"] += gb

    return {
        "conv2d-layer-fwd": (lambda: conv.forward(x), lambda: F.conv2d(x, w)),
        "conv2d-layer-bwd": (lambda: conv.backward(gy), conv_inner_bwd),
        "maxpool-layer-fwd": (lambda: pool.forward(y),
                              lambda: F.max_pool2d(y, 2, return_indices=True)),
        "maxpool-layer-bwd": (lambda: pool.backward(gp),
                              lambda: F.max_pool2d_backward(gp, idx, y.shape)),
        "dense-layer-fwd": (lambda: dense.forward(flat),
                            lambda: F.linear(flat, dense.weight, dense.bias)),
        "dense-layer-bwd": (lambda: dense.backward(gz), dense_inner_bwd),
    }


def _layer_row(name: str) -> Builder:
    def build(
        dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None
    ) -> dict[str, Peer]:
        outer, inner = _layer_rows(dt, rng)[name]
        return {"cnnext": Peer(outer), "inner": Peer(inner)}

    return build


_BUILDERS: dict[str, Builder] = {
    "seed-step": _seed_step,
    "seed-step-compat": lambda dt, rng, torch: _seed_step_compat(rng, torch),
    "linear-b1": _linear_b1,
    "conv2d-seed": _conv2d_seed,
    "maxpool-seed": _maxpool_seed,
    "conv2d-f": _conv2d_seed,
    "maxpool-f": _maxpool_seed,
    "seed-fwd": _seed_fwd,
    **{name: _layer_row(name) for name in (
        "conv2d-layer-fwd", "conv2d-layer-bwd", "maxpool-layer-fwd", "maxpool-layer-bwd",
        "dense-layer-fwd", "dense-layer-bwd")},
}


def build_small_peers(
    call: SmallCall, dt: np.dtype[Any], rng: np.random.Generator, torch: ModuleType | None,
    torch_status: str = "not installed",
) -> dict[str, Peer]:
    """``{"cnnext": Peer, <peer>: Peer, ...}`` for one small call.

    Parameters
    ----------
    call : SmallCall
    dt : numpy.dtype
        Ignored by calls with a fixed dtype (``call.dtype``).
    rng : numpy.random.Generator
        Source of the inputs and weights.
    torch : module or None
    torch_status : str
        The PyTorch peer's status when ``torch`` is None.

    Returns
    -------
    dict of {str: Peer}
        cnnext first, then the peers of ``call.peers`` in order.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext.bench import SMALL_CALLS
    >>> from cnnext.bench.small_calls import build_small_peers
    >>> peers = build_small_peers(SMALL_CALLS[2], np.dtype("float32"),
    ...                           np.random.default_rng(0), torch=None)
    >>> list(peers), peers["cnnext"].fn().shape
    (['cnnext', 'numpy'], (1, 10))
    """
    if call.group == "onnx":
        built = build_onnx_peers(call.name, rng, torch, torch_status)
    elif call.group == "netplan":
        from .netplan_rows import NETPLAN_BUILDERS

        built = NETPLAN_BUILDERS[call.name](dt, rng, torch)
    else:
        built = _BUILDERS[call.name](dt, rng, torch)
    out = {"cnnext": built["cnnext"]}
    for name in call.peers:
        out[name] = built.get(name) or Peer(None, torch_status)
    return out
