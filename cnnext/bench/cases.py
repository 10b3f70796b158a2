"""The benchmark cases: layer geometries (:data:`SUITE`) and small calls.

Two kinds of rows:

* :class:`Case` -- one layer geometry (a convolution, a pooling layer or a
  LeNet-5 training step) timed for cnnext, the numpy reference and PyTorch;
* :class:`SmallCall` -- one call in the one-image-at-a-time regime of
  tutorial code (a batch-1 training step, a single ``linear`` ...), timed for
  cnnext and its peer (PyTorch, numpy, or a tutorial's own numpy code).

:func:`select_cases` picks rows by name or group.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Case",
    "SmallCall",
    "SUITE",
    "SMALL_CALLS",
    "NETPLAN_CALLS",
    "ONNX_CALLS",
    "ALL_CASES",
    "QUICK_CASES",
    "SCALING_CASES",
    "GROUPS",
    "select_cases",
]


@dataclass(frozen=True)
class Case:
    """One layer case: a geometry and the passes timed on it.

    Parameters
    ----------
    name : str
        Short name shown in the table (``--cases`` matches against it).
    kind : {"conv", "maxpool", "avgpool", "gap", "batchnorm", "train"}
        Also the case's group (``"gap"``: global average pooling, an
        adaptive average pool to 1x1 with ``kernel == H``).
    N, C, H : int
        Input batch ``(N, C, H, H)``.
    C_out : int
        Output channels (convolutions only; 0 otherwise).
    kernel, stride, padding : int
        Square kernel, stride and padding.
    passes : tuple of str
        ``"fwd"``, ``"fwd+bwd"`` or ``"step"`` (training step).
    groups : int
        Channel groups of a convolution (weight ``(C_out, C/groups, k, k)``).
    dilation : int
        Dilation of a convolution's kernel.
    transposed : bool
        A transposed convolution (``conv_transpose2d``, weight
        ``(C, C_out, k, k)``; ``fwd+bwd`` adds ``conv_transpose2d_backward``).

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
    passes: tuple[str, ...] = ("fwd", "fwd+bwd")
    groups: int = 1
    dilation: int = 1
    transposed: bool = False

    @property
    def group(self) -> str:
        """The group ``--cases`` can select: the kind."""
        return self.kind

    @property
    def out_size(self) -> int:
        """Output height (= width)."""
        span = self.dilation * (self.kernel - 1) + 1
        if self.transposed:
            return (self.H - 1) * self.stride - 2 * self.padding + span
        return (self.H + 2 * self.padding - span) // self.stride + 1

    def flops(self, pass_: str) -> int | None:
        """Floating-point operations of one call (convolutions), else None.

        ``2 * N * C_out * OH * OW * (C_in/groups) * kH * kW`` for the
        forward pass; the backward pass (``grad_x`` and ``grad_weight``)
        costs twice that, so ``fwd+bwd`` counts three times the forward.  A
        transposed convolution counts its input positions instead of its
        output positions (``2 * N * C * H * W * (C_out/groups) * kH * kW``).
        """
        if self.kind != "conv":
            return None
        if self.transposed:
            fwd = (2 * self.N * self.C * self.H**2 * (self.C_out // self.groups)
                   * self.kernel**2)
        else:
            fwd = (2 * self.N * self.C_out * self.out_size**2 * (self.C // self.groups)
                   * self.kernel**2)
        return fwd * (3 if pass_ == "fwd+bwd" else 1)

    def describe(self) -> dict[str, str | int]:
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
            "groups": self.groups,
            "dilation": self.dilation,
            "transposed": int(self.transposed),
        }


@dataclass(frozen=True)
class SmallCall:
    """One call of the small-calls group: one image at a time, as tutorial code runs.

    Parameters
    ----------
    name : str
    what : str
        What cnnext runs, in one line.
    peers : tuple of {"pytorch", "numpy", "inner", "onnxruntime", "jax"}
        The peers timed against cnnext, interleaved with it.  ``"numpy"`` is
        plain numpy code doing the same thing (for ``seed-step-compat``: the
        tutorial's own numpy classes); ``"inner"`` is the call one level
        down (the compiled kernel under a functional call, the functional
        call under a layer), so the difference is what the outer level adds.
    dtype : str or None
        The dtype the row always computes in (the tutorial adapter works in
        float64); None: the dtype selected on the command line.
    kind : str
        The row's group: ``"small-calls"``, or ``"onnx"`` (an imported ONNX
        model against ONNX Runtime and PyTorch).

    Examples
    --------
    >>> from cnnext.bench import SMALL_CALLS
    >>> [c.name for c in SMALL_CALLS][:2]
    ['seed-step', 'seed-step-compat']
    """

    name: str
    what: str
    peers: tuple[str, ...]
    dtype: str | None = None
    kind: str = "small-calls"

    @property
    def group(self) -> str:
        """The group ``--cases`` can select: ``"small-calls"``."""
        return self.kind


_POOL_SHAPE = (32, 64, 32)

#: The layer suite, in the order it runs.
SUITE = (
    Case("seed-mnist", "conv", 1, 1, 28, 8, 3, 1, 0),
    Case("lenet-conv1", "conv", 64, 1, 28, 6, 5, 1, 0),
    Case("lenet-conv2", "conv", 64, 6, 12, 16, 5, 1, 0),
    Case("cs231n", "conv", 100, 3, 31, 25, 3, 2, 1),
    Case("cifar-3x3", "conv", 32, 64, 32, 64, 3, 1, 1),
    Case("resnet-3x3", "conv", 8, 128, 28, 128, 3, 1, 1),
    # VGG-style 3x3 layers: many channels on a mid-sized (56) and a small
    # (14) image.
    Case("vgg-3x3", "conv", 8, 64, 56, 64, 3, 1, 1),
    Case("vgg-c256-3x3", "conv", 8, 256, 14, 256, 3, 1, 1),
    Case("strided", "conv", 32, 16, 32, 32, 3, 2, 1),
    Case("cifar-grouped-g4", "conv", 32, 64, 32, 64, 3, 1, 1, groups=4),
    # A MobileNet depthwise layer: groups == C.
    Case("depthwise-c64", "conv", 32, 64, 56, 64, 3, 1, 1, groups=64),
    Case("maxpool-2x2", "maxpool", *_POOL_SHAPE, 0, 2, 2, 0),
    Case("maxpool-3x3s2p1", "maxpool", *_POOL_SHAPE, 0, 3, 2, 1),
    Case("avgpool-2x2", "avgpool", *_POOL_SHAPE, 0, 2, 2, 0),
    # the head of a ResNet: the mean of each 7x7 plane of the last stage
    Case("resnet-head-gap", "gap", 32, 512, 7, 0, 7, 1, 0),
    # LeNet-5 on MNIST-sized input: conv(1->6, 5) relu maxpool2
    # conv(6->16, 5) relu maxpool2 fc(256->120) relu fc(120->84) relu fc(84->10),
    # softmax cross-entropy, Adam.
    Case("lenet5-train", "train", 64, 1, 28, 10, 5, 1, 0, passes=("step",)),
    # Batch normalization as in a ResNet training step: nn.BatchNorm2D forward
    # in training mode (statistics, normalisation, running-statistics update)
    # and backward; PyTorch: F.batch_norm(training=True) and autograd.
    Case("batchnorm-train", "batchnorm", 32, 64, 56, 0, 1, 1, 0, passes=("fwd+bwd",)),
    # cnnext.models.resnet8 (batch norm, residual blocks, global average
    # pooling) on MNIST-sized input, softmax cross-entropy, Adam.
    Case("resnet8-train", "train", 64, 1, 28, 10, 3, 1, 1, passes=("step",)),
    # Kernel shapes beyond 3x3: a 5x5 "same" layer, a dilated 3x3 (the
    # context module of a segmentation network), a DCGAN generator's 4x4
    # stride-2 upsampling (transposed), a ResNet bottleneck's 1x1 reduction
    # and an ImageNet network's 7x7 stride-2 stem.
    Case("conv-5x5", "conv", 32, 32, 32, 64, 5, 1, 2),
    Case("3x3-dilated", "conv", 16, 64, 32, 64, 3, 1, 2, dilation=2),
    Case("transposed-4x4s2", "conv", 16, 64, 16, 32, 4, 2, 1, transposed=True),
    Case("pointwise-1x1", "conv", 32, 256, 28, 64, 1, 1, 0),
    Case("stem-7x7s2", "conv", 8, 3, 112, 64, 7, 2, 3),
)

_SEED_NET = "Conv2D(1, 8, 3, bias=False), MaxPool2D(2), Flatten(), Dense(1352, 10)"

#: The small-calls group: batch-1 calls of the kind tutorial code makes.
SMALL_CALLS = (
    SmallCall("seed-step", f"one SGD training step at batch 1 of {_SEED_NET}",
              ("pytorch",)),
    SmallCall("seed-step-compat", "the same step through cnnext.compat.victorzhou, as the "
              "tutorial's train loop runs it", ("pytorch", "numpy"), dtype="float64"),
    SmallCall("linear-b1", "F.linear, x (1, 1352), weight (10, 1352), bias (10,)", ("numpy",)),
    SmallCall("conv2d-seed", "F.conv2d, x (1, 1, 28, 28), weight (8, 1, 3, 3)", ("pytorch",)),
    SmallCall("maxpool-seed", "F.max_pool2d, x (1, 8, 26, 26), kernel 2", ("pytorch",)),
    SmallCall("seed-fwd", f"model.forward at batch 1 of {_SEED_NET}", ("pytorch",)),
    SmallCall("conv2d-f", "F.conv2d as conv2d-seed (inner: the compiled kernel on a "
              "preallocated output)", ("inner",)),
    SmallCall("maxpool-f", "F.max_pool2d as maxpool-seed (inner: the compiled kernel on "
              "preallocated outputs)", ("inner",)),
    SmallCall("conv2d-layer-fwd", "Conv2D(1, 8, 3).forward at batch 1 (inner: F.conv2d)",
              ("inner",)),
    SmallCall("conv2d-layer-bwd", "Conv2D(1, 8, 3).backward at batch 1 (inner: "
              "F.conv2d_backward and the gradient accumulation)", ("inner",)),
    SmallCall("maxpool-layer-fwd", "MaxPool2D(2).forward on (1, 8, 26, 26) (inner: "
              "F.max_pool2d with indices)", ("inner",)),
    SmallCall("maxpool-layer-bwd", "MaxPool2D(2).backward (inner: F.max_pool2d_backward)",
              ("inner",)),
    SmallCall("dense-layer-fwd", "Dense(1352, 10).forward at batch 1 (inner: F.linear)",
              ("inner",)),
    SmallCall("dense-layer-bwd", "Dense(1352, 10).backward at batch 1 (inner: "
              "F.linear_backward and the gradient accumulation)", ("inner",)),
)

_SMALL_CNN = ("the small CNN (conv 3->32 3x3 pad 1, ReLU, max-pool 2, conv 32->64, ReLU, "
              "max-pool 2, dense 4096->10)")

#: The whole-network rows (group ``netplan``): a model's plan against ONNX
#: Runtime, JAX and PyTorch (see :mod:`cnnext.bench.netplan_rows`).
NETPLAN_CALLS = (
    SmallCall("lenet5-infer-b1", "LeNet-5 planned inference, batch 1",
              ("onnxruntime", "pytorch"), kind="netplan"),
    SmallCall("lenet5-infer-b64", "LeNet-5 planned inference, batch 64",
              ("onnxruntime", "pytorch"), kind="netplan"),
    SmallCall("smallcnn-infer-b1", f"{_SMALL_CNN} planned inference, batch 1",
              ("onnxruntime", "pytorch"), kind="netplan"),
    SmallCall("smallcnn-infer-b64", f"{_SMALL_CNN} planned inference, batch 64",
              ("onnxruntime", "pytorch"), kind="netplan"),
    SmallCall("seed-step-plan", f"one planned SGD training step at batch 1 of {_SEED_NET}",
              ("jax", "pytorch"), kind="netplan"),
    SmallCall("smallcnn-step-b128", f"one planned SGD training step at batch 128 of "
              f"{_SMALL_CNN}", ("jax", "pytorch"), kind="netplan"),
)

#: The onnx group: inference of cnnext's model zoo through an imported ONNX
#: model (the PyTorch twin exported by ``torch.onnx.export``, loaded by
#: ``cnnext.onnx.load``) against ONNX Runtime and PyTorch on the same file
#: and weights; needs torch and onnx (and onnxruntime for its peer).
ONNX_CALLS = tuple(
    SmallCall(f"onnx-{short}-b{n}", f"cnnext.onnx.load(torch.onnx.export({model})) forward "
              f"at batch {n} on (N, 1, 28, 28)", ("onnxruntime", "pytorch"), "float32", "onnx")
    for short, model in (("lenet5", "lenet5"), ("resnet8", "resnet8"),
                         ("mobilenet", "mobilenet_small"))
    for n in (1, 64)
)

#: Every row ``cnnext bench`` runs by default, layer cases first.
ALL_CASES = SUITE + SMALL_CALLS + NETPLAN_CALLS + ONNX_CALLS

#: The rows of ``cnnext bench --quick`` (a smoke run): one cheap case per
#: code path, and the small calls.
QUICK_CASES = ("seed-mnist", "lenet-conv2", "maxpool-2x2", "avgpool-2x2", "lenet5-train",
               *(c.name for c in SMALL_CALLS if "inner" not in c.peers))

#: Default cases of ``cnnext bench --scaling``.
SCALING_CASES = ("cifar-3x3", "resnet-3x3")

#: The groups ``--cases`` accepts besides case names.
GROUPS = ("conv", "maxpool", "avgpool", "gap", "batchnorm", "train", "small-calls", "netplan",
          "onnx")


def select_cases(
    patterns: str | Iterable[str] | None = None, suite: Sequence[Case | SmallCall] = ALL_CASES
) -> list[Case | SmallCall]:
    """Cases whose name (or group) matches any of ``patterns``.

    Parameters
    ----------
    patterns : str or list of str, optional
        Case names or groups (:data:`GROUPS`), fnmatch patterns
        (``"*-3x3"``) or plain substrings (``"lenet"``), comma-separated
        when a single string.  A pattern equal to a case name or a group
        selects just that (``"seed-step"`` is not ``"seed-step-compat"``).
        None or empty: every case.
    suite : sequence of Case or SmallCall

    Returns
    -------
    list of Case or SmallCall
        In suite order.

    Examples
    --------
    >>> from cnnext.bench import select_cases
    >>> [c.name for c in select_cases("*-3x3")]
    ['cifar-3x3', 'resnet-3x3', 'vgg-3x3', 'vgg-c256-3x3']
    >>> [c.name for c in select_cases("maxpool")]
    ['maxpool-2x2', 'maxpool-3x3s2p1']
    >>> [c.name for c in select_cases("seed-step")]
    ['seed-step']
    >>> [c.name for c in select_cases("small-calls")][-2:]
    ['dense-layer-fwd', 'dense-layer-bwd']
    """
    if not patterns:
        return list(suite)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]

    exact = {c.name.lower() for c in suite} | {c.group for c in suite}

    def hit(case: Case | SmallCall, pat: str) -> bool:
        pat = pat.lower()
        keys = (case.name.lower(), case.group)
        if pat in exact:
            return pat in keys
        if any(ch in pat for ch in "*?["):
            return any(fnmatch.fnmatchcase(k, pat) for k in keys)
        return any(pat in k for k in keys)

    return [c for c in suite if any(hit(c, p) for p in patterns)]
