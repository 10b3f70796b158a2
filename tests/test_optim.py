"""Optimizers: hand-computed steps, PyTorch's torch.optim, validation."""

import numpy as np
import pytest

from cnnext import nn
from cnnext.optim import SGD, Adam


def _pair(rng, shape=(3, 2), dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def test_sgd_plain_step_by_hand():
    p = np.array([1.0, -2.0, 0.5])
    g = np.array([0.5, 0.25, -1.0])
    obj = p
    SGD([(p, g)], lr=0.1).step()
    np.testing.assert_allclose(p, [0.95, -2.025, 0.6])
    assert p is obj  # in place
    np.testing.assert_array_equal(g, [0.5, 0.25, -1.0])  # gradient untouched


def test_sgd_momentum_and_weight_decay_by_hand():
    p = np.array([1.0, -1.0])
    g = np.array([0.5, 0.5])
    opt = SGD([(p, g)], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    # d = g + 0.1*p = [0.6, 0.4]; buf = d; p -= 0.1*buf
    np.testing.assert_allclose(p, [0.94, -1.04])
    g[...] = [-1.0, 2.0]
    opt.step()
    # d = g + 0.1*p = [-0.906, 1.896]; buf = 0.9*[0.6, 0.4] + d = [-0.366, 2.256]
    np.testing.assert_allclose(p, [0.94 + 0.0366, -1.04 - 0.2256])
    np.testing.assert_array_equal(g, [-1.0, 2.0])


def test_adam_two_steps_by_hand():
    p = np.array([1.0, -2.0])
    g = np.array([0.3, -0.1])
    opt = Adam([(p, g)], lr=0.01, betas=(0.8, 0.9), eps=1e-6)
    opt.step()
    # step 1: m_hat = g, v_hat = g**2 -> p -= lr * g / (|g| + eps)
    p1 = np.array([1.0, -2.0]) - 0.01 * g / (np.abs(g) + 1e-6)
    np.testing.assert_allclose(p, p1, rtol=1e-12)
    g2 = np.array([-0.2, 0.4])
    g[...] = g2
    opt.step()
    m = 0.8 * (0.2 * np.array([0.3, -0.1])) + 0.2 * g2
    v = 0.9 * (0.1 * np.array([0.3, -0.1]) ** 2) + 0.1 * g2**2
    m_hat, v_hat = m / (1 - 0.8**2), v / (1 - 0.9**2)
    np.testing.assert_allclose(p, p1 - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-6), rtol=1e-12)


def test_adam_weight_decay_is_l2_not_decoupled():
    p = np.array([2.0])
    g = np.array([0.0])
    Adam([(p, g)], lr=0.1, weight_decay=0.5).step()
    # effective gradient 0.5 * 2 = 1 > 0: the first step moves by ~lr against it
    np.testing.assert_allclose(p, [1.9], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_zero_grad(rng, dtype):
    p, g = _pair(rng, dtype=dtype)
    for opt in (SGD([(p, g)], lr=0.1, momentum=0.5), Adam([(p, g)], lr=0.1)):
        opt.step()
        opt.step()
        assert p.dtype == dtype and g.dtype == dtype
        gobj = g
        opt.zero_grad()
        assert g is gobj and not g.any()
        g[...] = rng.standard_normal(g.shape)


def test_accepts_a_model_and_updates_its_parameters(rng):
    model = nn.Sequential(nn.Dense(3, 2, seed=0), nn.ReLU(), nn.Dense(2, 1, seed=1))
    opt = SGD(model, lr=0.5)
    before = model.state_dict()
    x = rng.standard_normal((4, 3)).astype(np.float32)
    opt.zero_grad()
    model.backward(np.ones_like(model.forward(x)) * rng.standard_normal((4, 1)).astype(np.float32))
    grads = {k: v.copy() for k, v in model.grads.items()}
    opt.step()
    for k, v in model.params.items():
        np.testing.assert_allclose(v, before[k] - 0.5 * grads[k], rtol=1e-6, atol=1e-7)
    opt.zero_grad()
    assert not any(g.any() for g in model.grads.values())


def test_lr_is_mutable_between_steps():
    p, g = np.array([1.0]), np.array([1.0])
    opt = SGD([(p, g)], lr=0.1)
    opt.step()
    opt.lr = 0.01
    opt.step()
    np.testing.assert_allclose(p, [0.89])


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda p: SGD(p, lr=0), ValueError, "lr"),
        (lambda p: SGD(p, lr=float("nan")), ValueError, "lr"),
        (lambda p: SGD(p, lr="0.1"), TypeError, "lr"),
        (lambda p: SGD(p, lr=0.1, momentum=-0.1), ValueError, "momentum"),
        (lambda p: SGD(p, lr=0.1, weight_decay=-1), ValueError, "weight_decay"),
        (lambda p: Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
        (lambda p: Adam(p, betas=0.9), TypeError, "betas"),
        (lambda p: Adam(p, eps=0), ValueError, "eps"),
        (lambda p: SGD([], lr=0.1), ValueError, "empty"),
        (lambda p: SGD(p[0][0], lr=0.1), TypeError, "params"),
        (lambda p: SGD(42, lr=0.1), TypeError, "params"),
        (lambda p: SGD([p[0][0]], lr=0.1), TypeError, r"params\[0\]"),
        (lambda p: SGD([(p[0][0], p[0][1][:1])], lr=0.1), ValueError, "shape"),
        (lambda p: SGD([(np.zeros(2, int), np.zeros(2))], lr=0.1), TypeError, "floating"),
        (lambda p: SGD(p + p, lr=0.1), ValueError, "more than once"),
    ],
)
def test_validation(make, exc, match, rng):
    pairs = [_pair(rng)]
    with pytest.raises(exc, match=match):
        make(pairs)


def test_read_only_param_rejected(rng):
    p, g = _pair(rng)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Adam([(p, g)])


@pytest.mark.parametrize("kind", ["sgd", "sgd_momentum_wd", "adam", "adam_wd"])
def test_matches_torch_optim(kind, rng):
    torch = pytest.importorskip("torch")
    shapes = [(4, 3), (4,), (2, 1, 3, 3)]
    params = [rng.standard_normal(s) for s in shapes]
    grads = [np.zeros(s) for s in shapes]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    pairs = list(zip(params, grads))
    if kind == "sgd":
        ours, theirs = SGD(pairs, lr=0.05), torch.optim.SGD(tparams, lr=0.05)
    elif kind == "sgd_momentum_wd":
        ours = SGD(pairs, lr=0.05, momentum=0.9, weight_decay=0.01)
        theirs = torch.optim.SGD(tparams, lr=0.05, momentum=0.9, weight_decay=0.01)
    elif kind == "adam":
        ours, theirs = Adam(pairs, lr=0.01), torch.optim.Adam(tparams, lr=0.01)
    else:
        ours = Adam(pairs, lr=0.01, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.1)
        theirs = torch.optim.Adam(tparams, lr=0.01, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.1)
    for _ in range(6):
        for g, tp in zip(grads, tparams):
            g[...] = rng.standard_normal(g.shape)
            tp.grad = torch.tensor(g.copy())
        ours.step()
        theirs.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "make",
    [
        lambda pairs: Adam(pairs, lr=1e-2, weight_decay=0.1),
        lambda pairs: Adam(pairs, lr=1e-2),
        lambda pairs: SGD(pairs, lr=0.1, momentum=0.9, weight_decay=0.01),
        lambda pairs: SGD(pairs, lr=0.1),
    ],
)
@pytest.mark.parametrize("shape", [(6, 5), (37, 29)])  # vector loops and their tails
def test_one_pass_update_equals_the_numpy_expressions(make, dtype, shape):
    """Contiguous float parameters take the one-pass kernels; other layouts
    the numpy expressions.  Both compute the same updates."""
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(shape).astype(dtype)
    fast_p, slow_p = p0.copy(), np.asfortranarray(p0)
    fast_g, slow_g = np.zeros_like(fast_p), np.asfortranarray(np.zeros_like(p0))
    fast, slow = make([(fast_p, fast_g)]), make([(slow_p, slow_g)])
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for _ in range(4):
        g = rng.standard_normal(p0.shape).astype(dtype)
        fast_g[...] = g
        slow_g[...] = g
        fast.step()
        slow.step()
        np.testing.assert_allclose(fast_p, slow_p, rtol=tol, atol=tol)
