"""Peers of the whole-network rows (group ``netplan``): a model's planned
inference or training step against ONNX Runtime, JAX and PyTorch.

``lenet5-infer-b1``, ``lenet5-infer-b64``, ``smallcnn-infer-b1``, ``smallcnn-infer-b64``
    ``model.plan(shape).forward(x)`` in evaluation mode, for
    :func:`cnnext.models.lenet5` and the small CNN (conv 3->32 3x3 pad 1,
    ReLU, max-pool 2, conv 32->64 3x3 pad 1, ReLU, max-pool 2, dense
    4096->10) on 32x32 RGB images; peers: ONNX Runtime running the PyTorch
    twin exported with ``torch.onnx.export`` (on as many intra-op threads as
    cnnext, which do not spin between runs: they would take the cores of the
    next peer in the interleaved round), and the twin itself under
    ``torch.no_grad()``.
``seed-step-plan``, ``smallcnn-step-b128``
    One SGD training step (forward, softmax cross-entropy, backward,
    update) through ``model.plan(shape, training=True).train_step``: the
    tutorial network of ``seed-step`` at batch 1, the small CNN at batch
    128; peers: ``jax.jit`` of ``value_and_grad`` and the SGD update (XLA's
    CPU threads are fixed when JAX is first imported: one thread when the
    first row runs on one), and PyTorch (``torch.nn``, ``cross_entropy``,
    ``torch.optim.SGD``).

ONNX Runtime and JAX are optional: imported when a row is built, and
reported "not installed" when absent.  The ONNX export needs PyTorch and
the ``onnx`` package.
"""
from __future__ import annotations

import importlib
import io
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from .harness import Peer
from .twin import torch_twin

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from ..nn import Sequential

    Builder = Callable[[np.dtype[Any], np.random.Generator, ModuleType | None], dict[str, Peer]]

__all__ = ["NETPLAN_BUILDERS", "small_cnn"]

_LR = 0.005


def small_cnn(seed: Any = None, dtype: Any = np.float32) -> Sequential:
    """The small CNN of the ``smallcnn-*`` rows, for (N, 3, 32, 32) input."""
    from .. import nn

    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(3, 32, 3, padding=1, dtype=dtype, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(32, 64, 3, padding=1, dtype=dtype, seed=rng), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dense(64 * 8 * 8, 10, init="glorot", dtype=dtype, seed=rng),
    )


def _seed_net(seed: Any, dtype: Any) -> Sequential:
    from .small_calls import _seed_model

    return _seed_model(np.dtype(dtype), np.random.default_rng(seed))


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _absent(name: str) -> Peer:
    return Peer(None, f"not installed ({name}, an optional benchmark peer)")


# ---- inference ---------------------------------------------------------------


def _ort_peer(model: Sequential, x: np.ndarray[Any, Any], torch: ModuleType | None) -> Peer:
    """ONNX Runtime on the PyTorch twin of ``model``, exported to ONNX."""
    import cnnext

    ort = _optional("onnxruntime")
    if ort is None:
        return _absent("onnxruntime")
    if torch is None or _optional("onnx") is None:
        return Peer(None, "needs PyTorch and onnx to export the model")
    twin = torch_twin(model, torch).eval()
    buf = io.BytesIO()
    torch.onnx.export(twin, (torch.from_numpy(x.copy()),), buf, input_names=["x"],
                      dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cnnext.get_num_threads()
    opts.inter_op_num_threads = 1
    # Its pool's threads would otherwise spin after each run, on the cores
    # the next peer of the interleaved round needs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": x}
    run = sess.run
    return Peer(lambda: run(None, feed),
                impl=f"onnxruntime {ort.__version__} InferenceSession.run, "
                     f"{opts.intra_op_num_threads} intra-op thread(s), no spinning")


def _infer(make: Callable[[Any, Any], Sequential], shape: tuple[int, ...]) -> Builder:
    def build(dt: np.dtype[Any], rng: np.random.Generator,
              torch: ModuleType | None) -> dict[str, Peer]:
        model = make(rng, dt).eval()
        x = rng.standard_normal(shape).astype(dt)
        plan = model.plan(shape)
        peers = {"cnnext": Peer(lambda: plan.forward(x), impl="Sequential.plan(...).forward")}
        if dt == np.float32:
            peers["onnxruntime"] = _ort_peer(model, x, torch)
        else:
            peers["onnxruntime"] = Peer(None, "float32 only")
        if torch is not None:
            twin = torch_twin(model, torch).eval()
            xt = torch.from_numpy(x.copy())

            def torch_fwd() -> Any:
                with torch.no_grad():
                    return twin(xt)

            peers["pytorch"] = Peer(torch_fwd, impl="torch.nn eval forward under no_grad")
        return peers

    return build


# ---- training step -----------------------------------------------------------


def _jax() -> ModuleType | None:
    """JAX, imported with XLA's CPU threads set to cnnext's (when first imported)."""
    import cnnext

    if "jax" not in sys.modules and cnnext.get_num_threads() == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    return _optional("jax")


def _jax_peer(model: Sequential, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Peer:
    """``jax.jit`` of the loss's value_and_grad and the SGD update."""
    from .. import nn

    jax = _jax()
    if jax is None:
        return _absent("jax")
    jnp, lax = jax.numpy, jax.lax
    layers = list(model.layers)

    def forward(params: list[Any], h: Any) -> Any:
        i = 0
        for layer in layers:
            if isinstance(layer, nn.Conv2D):
                pad = [(p, p) for p in layer.padding]
                h = lax.conv_general_dilated(h, params[i], layer.stride, pad,
                                             rhs_dilation=layer.dilation,
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
                i += 1
                if layer.bias is not None:
                    h = h + params[i][None, :, None, None]
                    i += 1
            elif isinstance(layer, nn.Dense):
                h = h @ params[i].T
                i += 1
                if layer.bias is not None:
                    h = h + params[i]
                    i += 1
            elif isinstance(layer, nn.ReLU):
                h = jax.nn.relu(h)
            elif isinstance(layer, nn.MaxPool2D):
                h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1) + layer.kernel_size,
                                      (1, 1) + layer.stride, "VALID")
            elif isinstance(layer, nn.Flatten):
                h = h.reshape(h.shape[0], -1)
            else:
                raise TypeError(f"no JAX twin for {type(layer).__name__}")
        return h

    def loss(params: list[Any], xb: Any, yb: Any) -> Any:
        z = forward(params, xb)
        return jnp.mean(-jax.nn.log_softmax(z)[jnp.arange(z.shape[0]), yb])

    def sgd(params: list[Any], xb: Any, yb: Any) -> Any:
        value, grads = jax.value_and_grad(loss)(params, xb, yb)
        return [p - _LR * g for p, g in zip(params, grads)], value

    step = jax.jit(sgd)

    state = {"p": [jnp.asarray(p) for p in model.params.values()]}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def run() -> None:
        state["p"], value = step(state["p"], xj, yj)
        value.block_until_ready()

    run()  # compile (and one step: the state after it is the peer's ``state``)
    names = list(model.params)
    return Peer(run, impl=f"jax {jax.__version__}: jit(value_and_grad + SGD update)",
                state=lambda: {n: np.asarray(p) for n, p in zip(names, state["p"])})


def _train(make: Callable[[Any, Any], Sequential], shape: tuple[int, ...]) -> Builder:
    def build(dt: np.dtype[Any], rng: np.random.Generator,
              torch: ModuleType | None) -> dict[str, Peer]:
        from .. import nn, optim

        model = make(rng, dt)
        x = rng.standard_normal(shape).astype(dt)
        y = rng.integers(0, 10, size=shape[0])
        loss, opt = nn.SoftmaxCrossEntropy(), optim.SGD(model, lr=_LR)
        plan = model.plan(shape, training=True)
        peers = {"cnnext": Peer(lambda: plan.train_step(x, y, loss, opt),
                                impl="Sequential.plan(..., training=True).train_step",
                                state=lambda: model.params)}
        peers["jax"] = _jax_peer(model, x, y) if dt == np.float32 else Peer(None,
                                                                             "float32 only")
        if torch is not None:
            twin = torch_twin(model, torch)
            topt = torch.optim.SGD(twin.parameters(), lr=_LR)
            ce = torch.nn.functional.cross_entropy
            xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())

            def torch_step() -> None:
                topt.zero_grad(set_to_none=True)
                ce(twin(xt), yt).backward()
                topt.step()

            peers["pytorch"] = Peer(torch_step, impl="torch.nn + cross_entropy + optim.SGD")
        return peers

    return build


def _lenet(seed: Any, dtype: Any) -> Sequential:
    from .. import models

    return models.lenet5(seed=seed, dtype=dtype)


#: Builders of the ``netplan`` rows, by name.
NETPLAN_BUILDERS: dict[str, Builder] = {
    "lenet5-infer-b1": _infer(_lenet, (1, 1, 28, 28)),
    "lenet5-infer-b64": _infer(_lenet, (64, 1, 28, 28)),
    "smallcnn-infer-b1": _infer(small_cnn, (1, 3, 32, 32)),
    "smallcnn-infer-b64": _infer(small_cnn, (64, 3, 32, 32)),
    "seed-step-plan": _train(_seed_net, (1, 1, 28, 28)),
    "smallcnn-step-b128": _train(small_cnn, (128, 3, 32, 32)),
}
