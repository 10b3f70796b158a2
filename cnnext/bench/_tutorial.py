"""The pure-numpy CNN of a well-known tutorial: the ``seed-step-compat`` peer.

A reproduction, for timing only, of the ``Conv3x3``, ``MaxPool2`` and
``Softmax`` classes and of the training step from Victor Zhou, "CNNs,
Part 2: Training a Convolutional Neural Network" (2019),
https://victorzhou.com/blog/intro-to-cnns-part-2/ (code:
https://github.com/vzhou842/cnn-from-scratch).  The loops and
numpy calls are the tutorial's, so the time measured is the time its
readers' code takes; :mod:`cnnext.compat.victorzhou` offers the same classes on
cnnext's kernels.  (The tutorial's ``MaxPool2.backprop`` gives the gradient
to every tied maximum, and ``Conv3x3.backprop`` returns None: kept as
published.)

Not part of the public API.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import numpy.typing as npt


class Conv3x3:
    """A convolution layer using 3x3 filters (valid padding, no bias)."""

    def __init__(self, num_filters: int) -> None:
        self.num_filters = num_filters
        # Divided by 9 to reduce the variance of the initial values.
        self.filters = np.random.randn(num_filters, 3, 3) / 9  # noqa: NPY002 (as published)

    def iterate_regions(
        self, image: npt.NDArray[np.float64]
    ) -> Iterator[tuple[npt.NDArray[np.float64], int, int]]:
        """Yield every 3x3 region of the 2-D ``image`` with its position."""
        h, w = image.shape
        for i in range(h - 2):
            for j in range(w - 2):
                im_region = image[i:(i + 3), j:(j + 3)]
                yield im_region, i, j

    def forward(self, input: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(h, w) image -> (h - 2, w - 2, num_filters)."""
        self.last_input = input
        h, w = input.shape
        output = np.zeros((h - 2, w - 2, self.num_filters))
        for im_region, i, j in self.iterate_regions(input):
            output[i, j] = np.sum(im_region * self.filters, axis=(1, 2))
        return output

    def backprop(self, d_L_d_out: npt.NDArray[np.float64], learn_rate: float) -> None:
        """SGD step on the filters; returns None (the first layer needs no input gradient)."""
        d_L_d_filters = np.zeros(self.filters.shape)
        for im_region, i, j in self.iterate_regions(self.last_input):
            for f in range(self.num_filters):
                d_L_d_filters[f] += d_L_d_out[i, j, f] * im_region
        self.filters -= learn_rate * d_L_d_filters
        return None


class MaxPool2:
    """Max pooling over non-overlapping 2x2 regions of an (h, w, c) input."""

    def iterate_regions(
        self, image: npt.NDArray[np.float64]
    ) -> Iterator[tuple[npt.NDArray[np.float64], int, int]]:
        """Yield every 2x2 region of ``image`` with its output position."""
        h, w, _ = image.shape
        new_h = h // 2
        new_w = w // 2
        for i in range(new_h):
            for j in range(new_w):
                im_region = image[(i * 2):(i * 2 + 2), (j * 2):(j * 2 + 2)]
                yield im_region, i, j

    def forward(self, input: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(h, w, c) -> (h // 2, w // 2, c)."""
        self.last_input = input
        h, w, num_filters = input.shape
        output = np.zeros((h // 2, w // 2, num_filters))
        for im_region, i, j in self.iterate_regions(input):
            output[i, j] = np.amax(im_region, axis=(0, 1))
        return output

    def backprop(self, d_L_d_out: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Copy each gradient to the input pixel(s) equal to the region's maximum."""
        d_L_d_input = np.zeros(self.last_input.shape)
        for im_region, i, j in self.iterate_regions(self.last_input):
            h, w, f = im_region.shape
            amax = np.amax(im_region, axis=(0, 1))
            for i2 in range(h):
                for j2 in range(w):
                    for f2 in range(f):
                        if im_region[i2, j2, f2] == amax[f2]:
                            d_L_d_input[i * 2 + i2, j * 2 + j2, f2] = d_L_d_out[i, j, f2]
        return d_L_d_input


class Softmax:
    """A fully connected layer with softmax activation."""

    def __init__(self, input_len: int, nodes: int) -> None:
        # Divided by input_len to reduce the variance of the initial values.
        self.weights = np.random.randn(input_len, nodes) / input_len  # noqa: NPY002 (as published)
        self.biases = np.zeros(nodes)

    def forward(self, input: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Any input with ``input_len`` values -> the ``nodes`` probabilities."""
        self.last_input_shape = input.shape
        input = input.flatten()
        self.last_input = input
        input_len, nodes = self.weights.shape
        totals = np.dot(input, self.weights) + self.biases
        self.last_totals = totals
        exp = np.exp(totals)
        return cast("npt.NDArray[np.float64]", exp / np.sum(exp, axis=0))

    # Falls through to None when every gradient is 0 (as published).
    def backprop(  # type: ignore[return]
        self, d_L_d_out: npt.NDArray[np.float64], learn_rate: float
    ) -> npt.NDArray[np.float64] | None:
        """SGD step on weights and biases; returns the input gradient.

        Only one entry of ``d_L_d_out`` is nonzero (the cross-entropy gradient).
        """
        for i, gradient in enumerate(d_L_d_out):
            if gradient == 0:
                continue
            t_exp = np.exp(self.last_totals)
            S = np.sum(t_exp)
            # Gradients of out[i] against the totals.
            d_out_d_t = -t_exp[i] * t_exp / (S ** 2)
            d_out_d_t[i] = t_exp[i] * (S - t_exp[i]) / (S ** 2)
            # Gradients of the totals against weights, biases and input.
            d_t_d_w = self.last_input
            d_t_d_b = 1
            d_t_d_inputs = self.weights
            d_L_d_t = gradient * d_out_d_t
            d_L_d_w = d_t_d_w[np.newaxis].T @ d_L_d_t[np.newaxis]
            d_L_d_b = d_L_d_t * d_t_d_b
            d_L_d_inputs = d_t_d_inputs @ d_L_d_t
            self.weights -= learn_rate * d_L_d_w
            self.biases -= learn_rate * d_L_d_b
            return cast("npt.NDArray[np.float64]", d_L_d_inputs.reshape(self.last_input_shape))


def train(
    conv: Any, pool: Any, softmax: Any, im: npt.NDArray[Any], label: int, lr: float = 0.005
) -> tuple[float, int]:
    """The tutorial's training step on one (28, 28) uint8 image.

    Works with these classes and with :mod:`cnnext.compat.victorzhou`'s, which
    take the same calls.  Returns ``(loss, acc)``.
    """
    # Forward: the image from [0, 255] to [-0.5, 0.5], then the three layers.
    out = conv.forward((im / 255) - 0.5)
    out = pool.forward(out)
    out = softmax.forward(out)
    loss = -np.log(out[label])
    acc = 1 if np.argmax(out) == label else 0
    # The initial gradient (cross-entropy against the probabilities), then backprop.
    gradient = np.zeros(10)
    gradient[label] = -1 / out[label]
    gradient = softmax.backprop(gradient, lr)
    gradient = pool.backprop(gradient)
    gradient = conv.backprop(gradient, lr)
    return loss, acc
