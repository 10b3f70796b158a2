"""cnnext.viz: filters, feature maps and training curves as matplotlib figures.

Tests that draw skip when matplotlib is absent; the message for a missing
matplotlib is tested either way.
"""
import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnext import nn, viz

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(
    not HAVE_MPL, reason='matplotlib is not installed (pip install "cnnext[plot]")'
)


def png_size(path):
    """(width, height) of a PNG file; fails unless it is one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND", f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


def assert_png_of(fig, path):
    """``path`` is a PNG of ``fig``'s size in pixels."""
    width, height = fig.get_size_inches() * fig.dpi
    assert png_size(path) == (round(width), round(height))


def _images(fig):
    """The one image of each axes, in order."""
    out = []
    for ax in fig.axes:
        imgs = ax.get_images()
        assert len(imgs) == 1
        out.append(np.asarray(imgs[0].get_array()))
    return out


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make ``import matplotlib`` fail, as when it is not installed."""
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


# ------------------------------------------------------------------ filters


@needs_mpl
def test_plot_filters_draws_one_image_per_filter_and_writes_a_png(tmp_path):
    conv = nn.Conv2D(1, 8, 3, seed=0)
    path = tmp_path / "filters.png"
    fig = viz.plot_filters(conv, path)
    assert len(fig.axes) == 8
    for i, img in enumerate(_images(fig)):
        np.testing.assert_array_equal(img, conv.params["weight"][i, 0])
    assert_png_of(fig, path)


@needs_mpl
def test_plot_filters_of_a_model_uses_its_first_convolution(tmp_path):
    model = nn.Sequential(
        nn.Conv2D(1, 6, 5, seed=0), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(6, 3, 3, seed=1)
    )
    fig = viz.plot_filters(model, tmp_path / "f.png", ncols=3)
    assert len(fig.axes) == 6
    # Two rows of three.
    rows = {ax.get_subplotspec().rowspan.start for ax in fig.axes}
    cols = {ax.get_subplotspec().colspan.start for ax in fig.axes}
    assert (len(rows), len(cols)) == (2, 3)
    np.testing.assert_array_equal(_images(fig)[5], model.layers[0].params["weight"][5, 0])


@needs_mpl
def test_plot_filters_rgb_filters_are_colour_images_scaled_to_0_1():
    w = np.random.default_rng(0).normal(size=(5, 3, 4, 4))
    fig = viz.plot_filters(w)
    images = _images(fig)
    assert len(images) == 5
    for i, img in enumerate(images):
        assert img.shape == (4, 4, 3)
        assert img.min() == 0.0 and img.max() == 1.0
        lo, hi = w[i].min(), w[i].max()
        np.testing.assert_allclose(img, ((w[i] - lo) / (hi - lo)).transpose(1, 2, 0))


@needs_mpl
def test_plot_filters_other_input_channels_one_row_per_filter(tmp_path):
    w = np.arange(4 * 6 * 3 * 3, dtype=np.float32).reshape(4, 6, 3, 3)
    path = tmp_path / "f.png"
    fig = viz.plot_filters(w, path)
    assert len(fig.axes) == 24
    np.testing.assert_array_equal(_images(fig)[6 * 2 + 5], w[2, 5])
    assert_png_of(fig, path)


@needs_mpl
def test_plot_filters_handles_constant_and_nonfinite_filters():
    w = np.zeros((3, 3, 2, 2))
    w[1] = np.nan
    w[2, 0, 0, 0] = np.inf
    w[2, 1, 1, 1] = 1.0
    images = _images(viz.plot_filters(w))
    assert np.all(images[0] == 0.5)  # constant: mid-grey
    assert np.all(images[1] == 0.0)  # nothing finite
    assert np.isfinite(images[2]).all() and images[2].max() == 1.0


@needs_mpl
@pytest.mark.parametrize(
    "arg, error, match",
    [
        (np.zeros((2, 3, 3)), ValueError, r"plot_filters: the weight must be .* shape \(2, 3, 3\)"),
        (np.zeros((0, 1, 3, 3)), ValueError, "non-empty"),
        (nn.Sequential(nn.Dense(3, 2, seed=0)), ValueError, "no layer with a 4-D weight"),
        (nn.ReLU(), ValueError, "ReLU has no weight"),
        (object(), ValueError, "plot_filters: the weight must be"),
    ],
)
def test_plot_filters_rejects_what_is_not_a_convolution(arg, error, match):
    with pytest.raises(error, match=match):
        viz.plot_filters(arg)


@needs_mpl
def test_bad_paths_and_grid_are_rejected_before_drawing(tmp_path):
    conv = nn.Conv2D(1, 2, 3, seed=0)
    with pytest.raises(ValueError, match=r"plot_filters: path must end in one of .*\.png"):
        viz.plot_filters(conv, tmp_path / "f.bmpx")
    with pytest.raises(ValueError, match="directory of path .* does not exist"):
        viz.plot_filters(conv, tmp_path / "no" / "f.png")
    with pytest.raises(TypeError, match="path must be a str"):
        viz.plot_filters(conv, 3)
    with pytest.raises(ValueError, match="ncols must be >= 1, got 0"):
        viz.plot_filters(conv, ncols=0)
    assert list(tmp_path.iterdir()) == []


@needs_mpl
def test_path_without_extension_is_a_png_and_pdf_works(tmp_path):
    conv = nn.Conv2D(1, 2, 3, seed=0)
    fig = viz.plot_filters(conv, tmp_path / "filters")
    assert_png_of(fig, tmp_path / "filters")
    viz.plot_filters(conv, str(tmp_path / "filters.pdf"))
    assert (tmp_path / "filters.pdf").read_bytes()[:5] == b"%PDF-"


# ------------------------------------------------------------- feature maps


def _small_model():
    rng = np.random.default_rng(0)
    return nn.Sequential(
        nn.Conv2D(1, 4, 3, seed=rng),
        nn.ReLU(),
        nn.Dropout(0.5, seed=rng),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(4 * 13 * 13, 10, seed=rng),
    )


@needs_mpl
@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (1, 1, 28, 28)])
def test_plot_feature_maps_shows_each_channel_after_the_layer(tmp_path, shape):
    model = _small_model()
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    path = tmp_path / "maps.png"
    fig = viz.plot_feature_maps(model, image, 3, path)
    assert len(fig.axes) == 4
    # Dropout is off (evaluation mode): the maps are conv -> relu -> pool.
    x = image.reshape(1, 1, 28, 28)
    expected = model.layers[3].forward(model.layers[1].forward(model.layers[0].forward(x)))
    for c, img in enumerate(_images(fig)):
        np.testing.assert_array_equal(img, expected[0, c])
    assert_png_of(fig, path)
    assert model.training  # left in the mode it had


@needs_mpl
def test_plot_feature_maps_negative_index_and_eval_mode_kept():
    model = _small_model().eval()
    fig = viz.plot_feature_maps(model, np.zeros((28, 28)), -3, ncols=4)
    assert len(fig.axes) == 4
    assert not model.training


@needs_mpl
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(layer_index=4), ValueError, r"layer 4 \(Flatten\) outputs shape \(1, 676\)"),
        (dict(layer_index=6), ValueError, r"layer_index must be in \[-6, 6\).* got 6"),
        (dict(layer_index=1.0), TypeError, "layer_index must be an int"),
        (
            dict(layer_index=0, image=np.zeros((2, 1, 28, 28))),
            ValueError,
            r"image must have shape .* \(one image\), got \(2, 1, 28, 28\)",
        ),
        (dict(layer_index=0, model=nn.Conv2D(1, 2, 3)), TypeError, "model must be a cnnext.nn.Seq"),
    ],
)
def test_plot_feature_maps_rejects_bad_arguments(kwargs, error, match):
    args = dict(model=_small_model(), image=np.zeros((28, 28), dtype=np.float32))
    args.update(kwargs)
    with pytest.raises(error, match=f"plot_feature_maps: {match}"):
        viz.plot_feature_maps(**args)


# ------------------------------------------------------------------ history


HISTORY = {
    "epoch": [1, 2, 3],
    "loss": [0.9, 0.5, 0.4],
    "accuracy": [0.7, 0.85, 0.9],
    "time": [0.1, 0.1, 0.1],
    "val_loss": [0.6, 0.5, 0.45],
    "val_accuracy": [0.8, 0.84, 0.86],
}


@needs_mpl
def test_plot_history_loss_and_accuracy_per_epoch(tmp_path):
    path = tmp_path / "curves.png"
    fig = viz.plot_history(HISTORY, path, val_label="test")
    loss_ax, acc_ax = fig.axes
    for ax, keys in ((loss_ax, ("loss", "val_loss")), (acc_ax, ("accuracy", "val_accuracy"))):
        assert [line.get_label() for line in ax.get_lines()] == ["training", "test"]
        for line, key in zip(ax.get_lines(), keys):
            np.testing.assert_array_equal(line.get_xdata(), HISTORY["epoch"])
            np.testing.assert_array_equal(line.get_ydata(), HISTORY[key])
    assert_png_of(fig, path)


@needs_mpl
def test_plot_history_without_validation_or_accuracy():
    fig = viz.plot_history({"loss": [1.0, 0.5], "accuracy": [0.5, 0.6]})
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), [1, 2])
    # Regression: accuracy does not apply, only the loss is drawn.
    fig = viz.plot_history({"loss": [1.0, 0.5], "accuracy": [float("nan")] * 2})
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss"]


@needs_mpl
def test_plot_history_rejects_what_is_not_a_history():
    with pytest.raises(TypeError, match="plot_history: history must be a dict with a 'loss'"):
        viz.plot_history([0.5, 0.4])
    with pytest.raises(ValueError, match=r"history\['val_loss'\] must be a list of 3 numbers"):
        viz.plot_history({**HISTORY, "val_loss": [0.5]})


# ------------------------------------------------- backend, missing package


@needs_mpl
def test_no_display_and_no_pyplot_needed(tmp_path):
    """Files are written with an interactive backend configured and no
    display: the figures never go through pyplot or a GUI."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "TkAgg"
    path = tmp_path / "f.png"
    code = (
        "import sys; from cnnext import nn, viz; "
        f"viz.plot_filters(nn.Conv2D(1, 4, 3, seed=0), {str(path)!r}); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    png_size(path)


@pytest.mark.parametrize(
    "call",
    [
        lambda: viz.plot_filters(np.zeros((2, 1, 3, 3))),
        lambda: viz.plot_feature_maps(_small_model(), np.zeros((28, 28)), 0),
        lambda: viz.plot_history(HISTORY),
    ],
    ids=["plot_filters", "plot_feature_maps", "plot_history"],
)
def test_missing_matplotlib_names_the_extra(no_matplotlib, call):
    with pytest.raises(ImportError, match=r'needs matplotlib.*pip install "cnnext\[plot\]"') as e:
        call()
    assert e.value.name == "matplotlib"


@needs_mpl
def test_visualize_mnist_example_writes_its_three_pictures(mnist_dir, tmp_path):
    example = Path(__file__).resolve().parent.parent / "examples" / "visualize_mnist.py"
    if not example.is_file():
        pytest.skip(f"{example} is not available (tests run from a copy)")
    proc = subprocess.run(
        [sys.executable, str(example), "--data", str(mnist_dir), "--out", str(tmp_path),
         "--epochs", "1", "--train-size", "300"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("filters", "feature_maps", "curves"):
        assert f"wrote {tmp_path / name}.png" in proc.stdout
        png_size(tmp_path / f"{name}.png")
