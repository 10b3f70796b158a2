"""``cnnext train``: argument handling, data discovery, messages, saving."""

import gzip
import re
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import cnnext
from cnnext import _train_cli as cli
from cnnext import nn


@pytest.fixture(autouse=True)
def _restore_threads():
    old = cnnext.get_num_threads()
    yield
    cnnext.set_num_threads(old)


def _write_split(root, split, n, rng):
    """A synthetic split whose label is readable from the image (a bright row)."""
    prefix = "t10k" if split == "test" else "train"
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pix = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        pix[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 255
    img = struct.pack(">IIII", 2051, n, 28, 28) + pix.tobytes()
    lab = struct.pack(">II", 2049, n) + labels.tobytes()
    (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(img))
    (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab))


def _accuracy(text):
    return float(re.search(r"^test accuracy ([0-9.]+)", text, re.M).group(1))


def test_missing_dataset_exits_2_without_traceback(tmp_path, capsys):
    assert cli.main(["--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnext train: error: no MNIST data in")
    assert "--download" in err and "Traceback" not in err


def test_console_script_and_module_report_missing_data(tmp_path):
    runs = [[sys.executable, "-m", "cnnext", "train"]]
    script = Path(sys.executable).with_name("cnnext")
    if script.exists():
        runs.append([str(script), "train"])
    for cmd in runs:
        proc = subprocess.run(
            cmd + ["--data", str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "no MNIST data in" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "cnnext", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0 and "--train-range" in proc.stdout and "--download" in proc.stdout


def test_training_imports_only_what_it_needs(tmp_path):
    """`cnnext train` on local files imports no download, archive or numpy
    reference code: ``import cnnext`` and the modules training uses leave
    them out (each is imported where it is used)."""
    code = (
        "import sys, cnnext, cnnext._train_cli; "
        "from cnnext import datasets, losses, models, nn, optim, train; "
        "print(sorted(m for m in ('cnnext.reference', 'urllib.request', 'http.client', "
        "'hashlib', 'ssl', 'zipfile', 'tempfile', 'gzip', 'cnnext._io', 'cnnext.bench', "
        "'cnnext.onnx', 'cnnext.compat', 'cnnext.distributed') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_trains_on_test_split_ranges_and_saves(tmp_path, capsys, rng):
    _write_split(tmp_path, "test", 300, rng)
    path = tmp_path / "tiny.npz"
    code = cli.main(
        [
            "--data",
            str(tmp_path),
            "--train-range",
            "0:200",
            "--test-range",
            "200:300",
            "--epochs",
            "2",
            "--no-progress",
            "--threads",
            "1",
            "--save",
            str(path),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "note: no MNIST train split" in err and "[0, 200)" in err and "[200, 300)" in err
    assert "training tiny on 200 images (test split [0, 200)), testing on 100" in out
    assert "epoch 1/2:" in out and "epoch 2/2:" in out
    assert _accuracy(out) >= 0.9  # the synthetic label is a bright row: easy
    assert f"saved model to {path}" in out
    model, transform = cli.build_model("tiny", 123)
    before = model.params["0.weight"].copy()
    model.load(path)
    assert not np.array_equal(model.params["0.weight"], before)
    assert cnnext.get_num_threads() == 1
    # The final line (the last epoch's validation, not a second pass) equals
    # a fresh evaluation of the saved model.
    from cnnext.datasets import load_mnist
    from cnnext.train import evaluate

    x, y = load_mnist(tmp_path, "test")
    r = evaluate(model, nn.SoftmaxCrossEntropy(), transform(x[200:300]), y[200:300])
    last = re.search(r"^test accuracy ([0-9.]+) \(loss ([0-9.]+)\)", out, re.M)
    assert last.group(1) == f"{r['accuracy']:.4f}" and last.group(2) == f"{r['loss']:.4f}"


def test_lenet5_and_train_split_when_present(tmp_path, capsys, rng):
    _write_split(tmp_path, "train", 256, rng)
    _write_split(tmp_path, "test", 64, rng)
    code = cli.main(
        [
            "--model",
            "lenet5",
            "--data",
            str(tmp_path),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--lr",
            "0.003",
            "--seed",
            "1",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "note:" not in err
    assert "training lenet5 on 256 images (train split [0, 256)), testing on 64" in out
    assert "Adam lr 0.003" in out and "batch size 16" in out
    assert _accuracy(out) >= 0.8


@pytest.mark.parametrize(
    "args, match",
    [
        (["--split", "train"], "train split not found"),
        (["--train-range", "0:20000"], r"--train-range \[0, 20000\) must satisfy"),
        (["--train-range", "0:50", "--test-range", "50:10"], r"--test-range \[50, 10\)"),
    ],
)
def test_bad_split_or_range_exit_2(tmp_path, capsys, rng, args, match):
    _write_split(tmp_path, "test", 100, rng)
    assert cli.main(["--data", str(tmp_path), "--epochs", "0"] + args) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.startswith("cnnext train: error:")


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "vgg"],
        ["--lr", "0"],
        ["--batch-size", "-3"],
        ["--train-range", "a:b"],
        ["--epochs", "-1"],
        ["--seed", "-2"],
        ["--threads", "0"],
    ],
)
def test_bad_arguments_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    assert "usage: cnnext train" in capsys.readouterr().err


def test_corrupt_dataset_exits_2(tmp_path, capsys, rng):
    _write_split(tmp_path, "test", 20, rng)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">II", 2051, 20))
    )
    assert cli.main(["--data", str(tmp_path)]) == 2
    assert "magic number 2051" in capsys.readouterr().err


def test_download_offline_exits_2(tmp_path, capsys, monkeypatch):
    def offline(req, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert cli.main(["--download", "--data", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "offline" in err and "Traceback" not in err


def test_save_into_missing_directory_exits_2(tmp_path, capsys, rng):
    _write_split(tmp_path, "test", 30, rng)
    code = cli.main(
        [
            "--data",
            str(tmp_path),
            "--epochs",
            "0",
            "--train-range",
            "0:10",
            "--test-range",
            "10:30",
            "--save",
            str(tmp_path / "no" / "dir" / "m.npz"),
        ]
    )
    assert code == 2
    assert "could not save the model" in capsys.readouterr().err


def test_real_data_short_run(mnist_dir, capsys):
    code = cli.main(
        [
            "--data",
            str(mnist_dir),
            "--train-range",
            "0:300",
            "--test-range",
            "5000:5500",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "training tiny on 300 images (test split [0, 300)), testing on 500" in out
    assert _accuracy(out) >= 0.6


def test_one_epoch_and_one_image_are_singular(tmp_path, capsys, rng):
    _write_split(tmp_path, "test", 20, rng)
    args = ["--data", str(tmp_path), "--train-range", "0:1", "--test-range", "1:20"]
    code = cli.main(args + ["--epochs", "1", "--no-progress", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "training tiny on 1 image (test split [0, 1)), testing on 19" in out
    assert ": 1 epoch, batch size 1," in out
    assert "1 epochs" not in out + err and "1 images" not in out + err
    cli.main(args + ["--epochs", "2", "--no-progress"])
    assert ": 2 epochs, batch size 1," in capsys.readouterr().out
    assert cli.main(["--data", str(tmp_path), "--train-range", "0:25", "--epochs", "0"]) == 2
    assert "(the test split has 20 images)" in capsys.readouterr().err


def test_plot_writes_the_loss_and_accuracy_curves(tmp_path, capsys, rng, monkeypatch):
    pytest.importorskip("matplotlib")
    from cnnext import viz

    figures = []

    def recording_plot_history(*args, **kwargs):
        figures.append(plot_history(*args, **kwargs))
        return figures[-1]

    plot_history = viz.plot_history
    monkeypatch.setattr(viz, "plot_history", recording_plot_history)
    _write_split(tmp_path, "test", 120, rng)
    path = tmp_path / "curves.png"
    code = cli.main(
        ["--data", str(tmp_path), "--train-range", "0:80", "--test-range", "80:120",
         "--epochs", "3", "--no-progress", "--threads", "1", "--plot", str(path)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"saved the loss and accuracy curves to {path}" in out
    (fig,) = figures
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["training", "test"]
        for line in ax.get_lines():
            assert list(line.get_xdata()) == [1, 2, 3]
    # The last test-accuracy point is the accuracy printed for epoch 3.
    last = float(re.search(r"^epoch 3/3: .*test accuracy ([0-9.]+)", out, re.M).group(1))
    assert fig.axes[1].get_lines()[1].get_ydata()[-1] == pytest.approx(last, abs=5e-5)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == tuple(round(v) for v in fig.get_size_inches() * fig.dpi)


@pytest.mark.parametrize(
    "plot, match",
    [
        ("curves.bmpx", r"--plot: path must end in one of .*\.png"),
        ("no/such/dir/curves.png", "directory of path .* does not exist"),
    ],
)
def test_bad_plot_path_fails_before_training(tmp_path, capsys, rng, plot, match):
    pytest.importorskip("matplotlib")
    _write_split(tmp_path, "test", 20, rng)
    assert cli.main(["--data", str(tmp_path), "--plot", str(tmp_path / plot)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("cnnext train: error: ") and re.search(match, err)
    assert "training" not in out


def test_plot_without_matplotlib_names_the_extra_before_training(
    tmp_path, capsys, rng, monkeypatch
):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    _write_split(tmp_path, "test", 20, rng)
    assert cli.main(["--data", str(tmp_path), "--plot", str(tmp_path / "c.png")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("cnnext train: error: cnnext train --plot needs matplotlib")
    assert 'pip install "cnnext[plot]"' in err and "Traceback" not in err
    assert "training" not in out and not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("model", ["resnet8", "mobilenet"])
def test_resnet8_and_mobilenet_train_and_save_their_statistics(tmp_path, capsys, rng, model):
    _write_split(tmp_path, "test", 160, rng)
    path = tmp_path / "model.npz"
    code = cli.main(["--model", model, "--data", str(tmp_path), "--epochs", "4",
                     "--train-range", "0:128", "--test-range", "128:160", "--batch-size", "8",
                     "--no-progress", "--threads", "1", "--save", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"training {model} on 128 images" in out and "Adam lr 0.002" in out
    losses = [float(v) for v in re.findall(r"^epoch \d/4: loss ([0-9.]+)", out, re.M)]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], out
    # The label is the position of a bright row, which global average
    # pooling mostly averages away: well above chance (0.1) is what a short
    # run shows.
    assert _accuracy(out) >= 0.2
    with np.load(path) as saved:
        assert any(k.endswith("running_mean") for k in saved.files)
