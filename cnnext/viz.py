"""Pictures of a network: its filters, its feature maps, its training curves.

Needs matplotlib, an optional dependency: ``pip install "cnnext[plot]"``.
Importing this module works without it; calling a function raises an
``ImportError`` that says what to install.

Every function returns a :class:`matplotlib.figure.Figure` and, given
``path``, also saves it there (the format follows the extension: ``.png``,
``.pdf``, ``.svg``, ...).  The figures are made with matplotlib's
object-oriented API, not with ``pyplot``: no display or GUI backend is
needed (files are written with the non-interactive Agg renderer), nothing
is registered with ``pyplot``, so figures made in a loop are freed like
any other object, and a returned figure shows itself in a Jupyter
notebook.

Examples
--------
>>> import numpy as np
>>> from cnnext import nn, viz
>>> conv = nn.Conv2D(1, 6, 5, seed=0)
>>> fig = viz.plot_filters(conv)          # viz.plot_filters(conv, "filters.png") saves it
>>> len(fig.axes)
6
"""
from __future__ import annotations

import math
import numbers
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._typing import StrPath
    from .nn import Module, Sequential

__all__ = ["plot_filters", "plot_feature_maps", "plot_history"]

_EXTRA = 'pip install "cnnext[plot]"'
# Inches per image cell of a grid, and the figure's resolution.
_CELL = 1.1
_DPI = 100


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _require_matplotlib(fname: str) -> type[Figure]:
    """``matplotlib.figure.Figure``, or an ImportError naming the extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"{fname} needs matplotlib, which is not installed; install it with {_EXTRA} "
            f"(or pip install matplotlib)",
            name="matplotlib",
        ) from exc
    # Figure is Any to the checker when matplotlib is not installed.
    return Figure  # type: ignore[no-any-return, unused-ignore]


def _figure(fname: str) -> Figure:
    """A new, empty figure (not registered with pyplot)."""
    return _require_matplotlib(fname)(dpi=_DPI)


def _check_path(fname: str, path: StrPath | None) -> str | None:
    """Validate ``path`` before any work: a str or os.PathLike in an existing
    directory, with an extension matplotlib can write (or none: PNG)."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{fname}: path must be a str, an os.PathLike or None, got "
            f"{type(path).__name__} {path!r}"
        )
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{fname}: path must not be empty")
    from matplotlib.backend_bases import FigureCanvasBase

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise ValueError(
            f"{fname}: path must end in one of {', '.join('.' + f for f in sorted(formats))} "
            f"(the file format), got {path!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{fname}: the directory of path {path!r} does not exist ({folder})")
    return path


def _save(fig: Figure, path: str | None) -> Figure:
    if path is not None:
        fig.savefig(path, format=None if os.path.splitext(path)[1] else "png")
    return fig


def _grid(n: int, ncols: int | None, fname: str) -> tuple[int, int]:
    """(rows, cols) of a grid of ``n`` cells, ``ncols`` wide (default: square)."""
    if ncols is None:
        ncols = max(1, math.ceil(math.sqrt(n)))
    elif isinstance(ncols, (bool, np.bool_)) or not isinstance(ncols, numbers.Integral):
        raise TypeError(f"{fname}: ncols must be an int or None, got {ncols!r}")
    elif ncols < 1:
        raise ValueError(f"{fname}: ncols must be >= 1, got {ncols}")
    ncols = int(min(ncols, n))
    return math.ceil(n / ncols), ncols


def _image_axes(
    fig: Figure, n: int, ncols: int | None, fname: str, title: str
) -> list[Axes]:
    """``n`` image axes on a grid (no ticks, equal aspect), in reading order."""
    nrows, ncols = _grid(n, ncols, fname)
    fig.set_size_inches(ncols * _CELL + 0.3, nrows * _CELL + 0.6)
    fig.suptitle(title, fontsize=9)
    axes = []
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        axes.append(ax)
    return axes


def _unit_range(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``a`` scaled to [0, 1] by its own finite min and max (0.5 if constant)."""
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros_like(a)
    lo, hi = a[finite].min(), a[finite].max()
    if hi == lo:
        return np.where(finite, 0.5, 0.0)
    return np.where(finite, (a - lo) / (hi - lo), 0.0)


def _conv_weight(fname: str, layer_or_weight: object) -> npt.NDArray[Any]:
    """The 4-D weight of a Conv2D layer, of a model's first such layer, or an array."""
    obj = layer_or_weight
    if hasattr(obj, "layers"):  # a Sequential: its first layer with a 4-D weight
        for layer in obj.layers:
            w = getattr(layer, "params", {}).get("weight")
            if w is not None and np.ndim(w) == 4:
                return np.asarray(w)
        raise ValueError(f"{fname}: the model has no layer with a 4-D weight (no Conv2D)")
    params = getattr(obj, "params", None)
    if isinstance(params, dict):
        if "weight" not in params:
            raise ValueError(f"{fname}: {type(obj).__name__} has no weight to show")
        obj = params["weight"]
    try:
        w = np.asarray(obj)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{fname}: layer_or_weight must be a Conv2D layer, a model or a weight array, "
            f"got {type(layer_or_weight).__name__}"
        ) from exc
    if w.ndim != 4 or w.dtype.kind not in "biuf" or 0 in w.shape:
        raise ValueError(
            f"{fname}: the weight must be a non-empty real array of shape (C_out, C_in, kH, kW), "
            f"got shape {w.shape} and dtype {w.dtype}"
        )
    return w


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def plot_filters(
    layer_or_weight: Module | npt.ArrayLike,
    path: StrPath | None = None,
    *,
    ncols: int | None = None,
    cmap: str = "gray",
) -> Figure:
    """Show convolution filters as a grid of small images.

    Parameters
    ----------
    layer_or_weight : cnnext.nn.Conv2D, cnnext.nn.Sequential or array_like
        A convolution layer, a model (its first layer with a 4-D weight,
        usually the first convolution), or a weight of shape
        ``(C_out, C_in, kH, kW)``.
    path : str or os.PathLike, optional
        Also save the figure there (format from the extension; PNG when
        there is none).
    ncols : int, optional
        Images per row (default: a square grid).
    cmap : str
        Colormap for one-channel filters (default ``"gray"``: dark is the
        filter's lowest weight, bright its highest).

    Returns
    -------
    matplotlib.figure.Figure
        One image per filter, numbered from 0, when ``C_in`` is 1 (shown with
        ``cmap``) or 3 (shown in colour, the input channels as red, green
        and blue); otherwise one image per (filter, input channel) pair, a
        row per filter.  Each image is scaled to its own minimum and
        maximum.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install "cnnext[plot]"``).

    Examples
    --------
    >>> from cnnext import nn, viz
    >>> model = nn.Sequential(nn.Conv2D(3, 16, 3, seed=0), nn.ReLU())
    >>> fig = viz.plot_filters(model, ncols=8)
    >>> len(fig.axes), fig.axes[0].get_images()[0].get_array().shape
    (16, (3, 3, 3))
    """
    fname = "plot_filters"
    fig = _figure(fname)
    path = _check_path(fname, path)
    w = _conv_weight(fname, layer_or_weight).astype(np.float64)
    c_out, c_in, kh, kw = w.shape
    if c_in in (1, 3):
        title = f"{c_out} filters, {kh}x{kw}" + (", RGB" if c_in == 3 else "")
        axes = _image_axes(fig, c_out, ncols, fname, title)
        for i, ax in enumerate(axes):
            if c_in == 1:
                ax.imshow(w[i, 0], cmap=cmap, interpolation="nearest")
            else:
                ax.imshow(_unit_range(w[i]).transpose(1, 2, 0), interpolation="nearest")
            ax.set_title(str(i), fontsize=7, pad=2)
    else:
        title = f"{c_out} filters x {c_in} input channels, {kh}x{kw} (row: filter)"
        axes = _image_axes(fig, c_out * c_in, c_in, fname, title)
        for k, ax in enumerate(axes):
            i, c = divmod(k, c_in)
            ax.imshow(w[i, c], cmap=cmap, interpolation="nearest")
            if i == 0:
                ax.set_title(f"in {c}", fontsize=7, pad=2)
            if c == 0:
                ax.set_ylabel(str(i), fontsize=7, rotation=0, labelpad=8)
    return _save(fig, path)


def plot_feature_maps(
    model: Sequential,
    image: npt.ArrayLike,
    layer_index: int,
    path: StrPath | None = None,
    *,
    ncols: int | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Show one image's feature maps after a given layer of a model.

    The image runs through ``model.layers[0]`` to ``model.layers[layer_index]``
    in evaluation mode (the model is left in the mode it had); as with any
    forward pass, the layers' forward caches are replaced.

    Parameters
    ----------
    model : cnnext.nn.Sequential
        Any model with a ``layers`` list whose layers have ``forward``.
    image : array_like, shape (H, W), (C, H, W) or (1, C, H, W)
        One input image, transformed as the model expects (e.g. normalized).
    layer_index : int
        Show the output of this layer; negative counts from the end, as for
        a list.  It must output feature maps ``(1, C, H, W)``: a
        convolution, pooling or activation layer before ``Flatten``.
    path : str or os.PathLike, optional
        Also save the figure there (format from the extension).
    ncols : int, optional
        Maps per row (default: a square grid).
    cmap : str
        Colormap (default ``"viridis"``); each map is scaled to its own
        range.

    Returns
    -------
    matplotlib.figure.Figure
        One image per channel of the layer's output, numbered from 0.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install "cnnext[plot]"``).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn, viz
    >>> model = nn.Sequential(nn.Conv2D(1, 4, 3, seed=0), nn.ReLU(), nn.MaxPool2D(2))
    >>> image = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    >>> fig = viz.plot_feature_maps(model, image, layer_index=-1)
    >>> len(fig.axes), fig.axes[0].get_images()[0].get_array().shape
    (4, (13, 13))
    """
    fname = "plot_feature_maps"
    fig = _figure(fname)
    path = _check_path(fname, path)
    layers = getattr(model, "layers", None)
    if not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(
            f"{fname}: model must be a cnnext.nn.Sequential (a non-empty layers list), "
            f"got {type(model).__name__}"
        )
    if isinstance(layer_index, (bool, np.bool_)) or not isinstance(layer_index, numbers.Integral):
        raise TypeError(f"{fname}: layer_index must be an int, got {layer_index!r}")
    n = len(layers)
    if not -n <= layer_index < n:
        raise ValueError(
            f"{fname}: layer_index must be in [{-n}, {n}) for a model of {n} layers, "
            f"got {layer_index}"
        )
    index = int(layer_index) % n
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"{fname}: image must have shape (H, W), (C, H, W) or (1, C, H, W) (one image), "
            f"got {np.shape(image)}"
        )
    was_training = getattr(model, "training", None)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for layer in layers[: index + 1]:
            x = layer.forward(x)
    finally:
        if was_training is not None and hasattr(model, "train"):
            model.train(bool(was_training))
    x = np.asarray(x)
    name = type(layers[index]).__name__
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"{fname}: layer {index} ({name}) outputs shape {x.shape}, not feature maps "
            f"(1, C, H, W); choose a convolution, pooling or activation layer before Flatten"
        )
    channels = x.shape[1]
    title = f"layer {index} ({name}): {channels} feature maps, {x.shape[2]}x{x.shape[3]}"
    for c, ax in enumerate(_image_axes(fig, channels, ncols, fname, title)):
        ax.imshow(x[0, c], cmap=cmap, interpolation="nearest")
        ax.set_title(str(c), fontsize=7, pad=2)
    return _save(fig, path)


def plot_history(
    history: dict[str, list[float]], path: StrPath | None = None, *, val_label: str = "validation"
) -> Figure:
    """Plot the per-epoch loss and accuracy of a training run.

    Parameters
    ----------
    history : dict of lists
        As returned by :func:`cnnext.train.fit`: ``"loss"`` and, when
        present, ``"epoch"``, ``"accuracy"``, ``"val_loss"`` and
        ``"val_accuracy"``, one entry per epoch.
    path : str or os.PathLike, optional
        Also save the figure there (format from the extension).
    val_label : str
        Legend label of the ``val_*`` curves (``cnnext train --plot`` uses
        ``"test"``).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes, loss and accuracy against the epoch, with a training
        curve and, given validation data, a validation curve each; only
        the loss axes when accuracy does not apply (all NaN, e.g. a
        regression).

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install "cnnext[plot]"``).

    Examples
    --------
    >>> from cnnext import viz
    >>> history = {"epoch": [1, 2, 3], "loss": [0.9, 0.5, 0.4],
    ...            "accuracy": [0.7, 0.85, 0.9], "val_loss": [0.6, 0.5, 0.45],
    ...            "val_accuracy": [0.8, 0.84, 0.86]}
    >>> fig = viz.plot_history(history)
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['loss', 'accuracy']
    """
    fname = "plot_history"
    fig = _figure(fname)
    path = _check_path(fname, path)
    if not isinstance(history, dict) or "loss" not in history:
        raise TypeError(
            f"{fname}: history must be a dict with a 'loss' list (the result of fit), "
            f"got {type(history).__name__}"
        )
    n = len(history["loss"])
    curves: dict[str, npt.NDArray[np.float64]] = {}
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy"):
        if key in history:
            values = np.asarray(history[key], dtype=np.float64)
            if values.shape != (n,):
                raise ValueError(
                    f"{fname}: history[{key!r}] must be a list of {n} numbers (one per "
                    f"epoch, like history['loss']), got shape {values.shape}"
                )
            curves[key] = values
    epochs = curves.pop("epoch", np.arange(1, n + 1, dtype=np.float64))
    has_accuracy = any(
        k in curves and np.isfinite(curves[k]).any() for k in ("accuracy", "val_accuracy")
    )
    panels = [("loss", "loss", "val_loss")]
    if has_accuracy:
        panels.append(("accuracy", "accuracy", "val_accuracy"))
    fig.set_size_inches(4.2 * len(panels) + 0.4, 3.4)
    from matplotlib.ticker import MaxNLocator

    for i, (label, train_key, val_key) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, curve_label in ((train_key, "training"), (val_key, val_label)):
            if key in curves:
                ax.plot(epochs, curves[key], marker="o", label=curve_label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend()
    fig.tight_layout()
    return _save(fig, path)
