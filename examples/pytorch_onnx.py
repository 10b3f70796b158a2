"""Models in and out: train in PyTorch, run with cnnext; train with cnnext,
deploy with ONNX Runtime.

1. A LeNet-5 is trained in PyTorch; its ``state_dict()`` (as numpy arrays)
   loads into ``cnnext.models.lenet5``, which then runs without PyTorch
   (``cnnext.interop.from_torch`` does the same from the module itself).
2. A small ResNet is trained with cnnext, exported with
   ``cnnext.onnx.export`` and run by ONNX Runtime.

Each stage prints the largest difference between the two engines' outputs.
The data are synthetic 28x28 images (a bright square in one of four
quadrants, the class), so the script needs no download.

Run from the repository root (needs torch, onnx and onnxruntime, which
cnnext itself never needs)::

    python examples/pytorch_onnx.py [--out DIR] [--seed 0]
"""

import argparse
import os
import tempfile

import numpy as np

import cnnext
from cnnext import interop, models, nn, optim
from cnnext.train import evaluate, fit


def quadrant_images(n, rng):
    """``n`` noisy 28x28 images with a bright 8x8 square in quadrant ``label``."""
    labels = rng.integers(0, 4, n)
    x = 0.3 * rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    for i, q in enumerate(labels):
        r, c = 14 * (q // 2) + rng.integers(0, 6), 14 * (q % 2) + rng.integers(0, 6)
        x[i, 0, r:r + 8, c:c + 8] += 1.0
    return x, labels


def torch_lenet5(torch):
    """PyTorch's LeNet-5, layer for layer the one of ``cnnext.models.lenet5``."""
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
        tnn.Linear(84, 4),
    )


def train_in_pytorch_run_with_cnnext(x, y, x_test, y_test, seed):
    import torch

    torch.manual_seed(seed)
    tmodel = torch_lenet5(torch)
    opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(2):  # epochs
        for i in range(0, len(x), 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(tmodel(xt[i:i + 32]), yt[i:i + 32]).backward()
            opt.step()
    tmodel.eval()

    # The weights as numpy arrays: all cnnext needs (PyTorch's names and layouts).
    state = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    model = models.lenet5(num_classes=4).eval()
    model.load_state_dict(state)

    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x_test)).numpy()
    got = model(x_test)
    accuracy = float((got.argmax(1) == y_test).mean())
    print(f"PyTorch -> cnnext: test accuracy {accuracy:.3f}, largest difference "
          f"{np.abs(got - expected).max():.2e} (logits up to {np.abs(expected).max():.1f})")
    # The same model straight from the PyTorch module:
    assert np.array_equal(interop.from_torch(tmodel)(x_test), got)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def train_with_cnnext_deploy_with_onnx(x, y, x_test, y_test, seed, out_dir):
    import onnxruntime

    model = models.resnet8(num_classes=4, seed=seed, width=8)
    fit(model, nn.SoftmaxCrossEntropy(), optim.Adam(model, lr=1e-3), x, y,
        epochs=2, batch_size=32, seed=seed)
    accuracy = evaluate(model, nn.SoftmaxCrossEntropy(), x_test, y_test)["accuracy"]

    path = os.path.join(out_dir, "resnet8.onnx")
    cnnext.onnx.export(model, path, input_shape=(1, 1, 28, 28))  # any batch size at run time

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    deployed = session.run(None, {"input": x_test})[0]
    expected = model.eval()(x_test)
    print(f"cnnext -> ONNX Runtime: test accuracy {accuracy:.3f}, largest difference "
          f"{np.abs(deployed - expected).max():.2e} (logits up to "
          f"{np.abs(expected).max():.1f}); model file {path}")
    return float(np.abs(deployed - expected).max() / np.abs(expected).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where to write resnet8.onnx "
                        "(default: a new temporary directory)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    x, y = quadrant_images(1024, rng)
    x_test, y_test = quadrant_images(256, rng)
    out_dir = args.out or tempfile.mkdtemp()
    return (train_in_pytorch_run_with_cnnext(x, y, x_test, y_test, args.seed),
            train_with_cnnext_deploy_with_onnx(x, y, x_test, y_test, args.seed, out_dir))


if __name__ == "__main__":
    main()
