"""cnnext.models: structure, seeding, validation, and equality with PyTorch.

The PyTorch comparisons build each model's twin with
:func:`cnnext.bench.twin.torch_twin` (same weights and buffers) and compare
the logits, every parameter gradient for a random upstream gradient, the
running statistics after a training step, and the eval-mode output.
"""
import numpy as np
import pytest

from cnnext import models, nn, optim

BUILDERS = {"lenet5": models.lenet5, "resnet8": models.resnet8,
            "mobilenet": models.mobilenet_small}
N_PARAMS = {"lenet5": 61706, "resnet8": 77754, "mobilenet": 136202}


def _n_params(model):
    return sum(p.size for p, _ in model.parameters())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_shapes_and_parameter_count(name):
    model = BUILDERS[name](seed=0)
    y = model.forward(np.zeros((3, 1, 28, 28), dtype=np.float32))
    assert y.shape == (3, 10) and y.dtype == np.float32
    g = model.backward(np.ones_like(y))
    assert g.shape == (3, 1, 28, 28)
    if N_PARAMS[name] is not None:
        assert _n_params(model) == N_PARAMS[name]


@pytest.mark.parametrize("name", ["resnet8", "mobilenet"])
def test_channels_classes_and_any_image_size(name):
    model = BUILDERS[name](in_channels=3, num_classes=7, seed=1)
    assert model.forward(np.ones((2, 3, 13, 17), dtype=np.float32)).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_seed_fixes_every_weight(name):
    a, b, c = BUILDERS[name](seed=5), BUILDERS[name](seed=5), BUILDERS[name](seed=6)
    assert list(a.params) == list(b.params)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params
               if a.params[k].size > 1)


def test_resnet8_has_projection_shortcuts_where_the_shape_changes():
    residuals = [m for m in models.resnet8(seed=0) if isinstance(m, nn.Residual)]
    assert [r.shortcut is None for r in residuals] == [True, False, False]


def test_mobilenet_convolutions_are_depthwise_separable():
    convs = [m for m in _walk(models.mobilenet_small(seed=0)) if isinstance(m, nn.Conv2D)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 5
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)


def _walk(module):
    if isinstance(module, nn.Sequential):
        for sub in module:
            yield from _walk(sub)
    elif isinstance(module, nn.Residual):
        yield from _walk(module.block)
        if module.shortcut is not None:
            yield from _walk(module.shortcut)
    else:
        yield module


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_channels=0), "in_channels"),
    (dict(num_classes=2.5), "num_classes"),
    (dict(seed="x"), "seed"),
])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_bad_arguments_name_the_parameter(name, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        BUILDERS[name](**kwargs)


@pytest.mark.parametrize("name", ["resnet8", "mobilenet"])
def test_save_and_load_carry_the_running_statistics(name, tmp_path):
    model = BUILDERS[name](seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    model.forward(x)  # training mode: updates the running statistics
    model.save(tmp_path / "m.npz")
    other = BUILDERS[name](seed=1)
    other.load(tmp_path / "m.npz")
    model.eval(), other.eval()
    np.testing.assert_array_equal(model.forward(x), other.forward(x))


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_equals_pytorch_twin(name):
    torch = pytest.importorskip("torch")
    from cnnext.bench.twin import torch_twin

    rng = np.random.default_rng(3)
    model = BUILDERS[name](seed=2)
    twin = torch_twin(model, torch)
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    y = model.forward(x)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = twin(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    model.zero_grad()
    gx = model.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-3, atol=1e-4)
    theirs = {k: v.grad.numpy() for k, v in twin.named_parameters()}
    ours = model.grads
    assert len(theirs) == len(ours)
    for (k, a), b in zip(ours.items(), theirs.values()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=k)
    # The running statistics moved as PyTorch's did, and eval mode uses them.
    model.eval(), twin.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.forward(x), twin(torch.from_numpy(x)).numpy(),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet8", "mobilenet"])
def test_a_few_adam_steps_lower_the_loss(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 3, size=16)
    model = BUILDERS[name](num_classes=3, seed=0)
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.Adam(model, lr=1e-2)
    first = None
    for _ in range(15):
        opt.zero_grad()
        value = loss(model.forward(x), labels)
        first = value if first is None else first
        model.backward(loss.backward(), input_grad=False)
        opt.step()
    assert value < 0.5 * first
