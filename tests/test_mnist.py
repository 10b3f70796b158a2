"""The MNIST examples and models reach their accuracy on the real test split.

Skipped without the MNIST test split (see the ``mnist_dir`` fixture):

* the tiny network of Victor Zhou's "CNNs, Part 2: Training a Convolutional
  Neural Network" (https://victorzhou.com/blog/intro-to-cnns-part-2/), SGD
  lr 0.005, batch 1, 3 epochs on [0, 1000): accuracy >= 0.85 on [5000, 6000);
* LeNet-5, Adam, 3 epochs on [0, 8000): accuracy >= 0.96 on [8000, 10000);
* ``cnnext train --model resnet8`` and ``--model mobilenet`` (same recipe):
  accuracy >= 0.98 on [8000, 10000).

The example scripts run in a subprocess with one kernel thread and one BLAS
thread: on a shared 2-core machine, multi-threaded kernels and BLAS at these
tiny batch sizes were measured 10-200x slower (spinning thread teams), which
would make the suite take minutes instead of seconds.  The PyTorch comparison
trains both libraries from identical weights on the identical sample order.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnext
from cnnext import nn, optim
from cnnext.datasets import load_mnist
from cnnext.train import evaluate, fit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run_example(script, mnist_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--data", str(mnist_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    acc = float(re.search(r"test accuracy ([0-9.]+)", proc.stdout).group(1))
    wall = float(re.search(r"training wall time ([0-9.]+) s", proc.stdout).group(1))
    return acc, wall, proc.stdout


@pytest.mark.slow
def test_tiny_network_reaches_085(mnist_dir):
    acc, wall, out = _run_example("tiny_mnist.py", mnist_dir)
    assert acc >= 0.85, out
    assert "epoch 3:" in out and wall > 0


@pytest.mark.slow
def test_lenet5_reaches_096(mnist_dir):
    acc, wall, out = _run_example("lenet5_mnist.py", mnist_dir)
    assert acc >= 0.96, out
    assert "epoch 3:" in out and wall > 0


@pytest.fixture
def one_thread():
    old = cnnext.get_num_threads()
    cnnext.set_num_threads(1)
    yield
    cnnext.set_num_threads(old)


@pytest.mark.slow
def test_tiny_network_trains_like_pytorch(mnist_dir, one_thread):
    """Same init, same order, batch size 1: cnnext and PyTorch end up together."""
    torch = pytest.importorskip("torch")
    images, labels = load_mnist(mnist_dir, "test")
    x = images - np.float32(0.5)
    x_tr, y_tr, x_te, y_te = x[:1000], labels[:1000], x[5000:6000], labels[5000:6000]
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2D(1, 8, 3, bias=False, seed=rng),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(13 * 13 * 8, 10, init="glorot", seed=rng),
    )
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, bias=False),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(1352, 10),
    )
    with torch.no_grad():
        for k, v in model.params.items():
            tnet.state_dict()[k].copy_(torch.from_numpy(v))
    loss = nn.SoftmaxCrossEntropy()
    fit(
        model,
        loss,
        optim.SGD(model, lr=0.005),
        x_tr,
        y_tr,
        epochs=3,
        batch_size=1,
        seed=0,
        progress=False,
    )
    ours = evaluate(model, loss, x_te, y_te)["accuracy"]

    torch.manual_seed(0)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = torch.optim.SGD(tnet.parameters(), lr=0.005)
        order = np.random.default_rng(0)  # fit's shuffling: one permutation per epoch
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        for _ in range(3):
            for i in order.permutation(1000):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(tnet(xt[i : i + 1]), yt[i : i + 1]).backward()
                opt.step()
        with torch.no_grad():
            pred = tnet(torch.from_numpy(x_te)).argmax(1).numpy()
    finally:
        torch.set_num_threads(old_threads)
    theirs = float(np.mean(pred == y_te))
    assert ours >= 0.85 and theirs >= 0.85
    assert abs(ours - theirs) <= 0.005, (ours, theirs)
    for name, p in tnet.named_parameters():
        np.testing.assert_allclose(
            model.params[name], p.detach().numpy(), rtol=0, atol=2e-4, err_msg=name
        )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet8", "mobilenet"])
def test_resnet8_and_mobilenet_reach_098(mnist_dir, model, tmp_path):
    """``cnnext train --model resnet8|mobilenet``: Adam, batch 32, 3 epochs on
    test-split images [0, 8000), tested on [8000, 10000)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(  # (outside the source tree: the installed package runs)
        [sys.executable, "-m", "cnnext", "train", "--model", model, "--data", str(mnist_dir),
         "--split", "test", "--no-progress", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    acc = float(re.search(r"^test accuracy ([0-9.]+)", proc.stdout, re.M).group(1))
    assert acc >= 0.98, proc.stdout
