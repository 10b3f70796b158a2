"""The 2x2 stride-2 max-pool rows of each compiled variant (AVX-512
intrinsics or portable loops, chosen by CNNEXT_ISA): the same values and
argmax indices, bit for bit, over row widths around the vector and mask
boundaries, odd leftovers, ties, signed zeros, infinities and NaN."""


import numpy as np
import pytest

from cnnext import _pool
from cnnext import functional as F

DTYPES = (np.float32, np.float64)
WIDTHS = [2, 3, 4, 5, 10, 11, 15, 16, 17, 28, 29, 31, 32, 33, 34, 35, 63, 64, 65, 66]
SPECIAL = [-1.0, 0.0, -0.0, 1.0, 2.0, np.nan, np.inf, -np.inf]


def _inputs(dt):
    """(name, x) pairs: random values, and values drawn from SPECIAL (ties,
    signed zeros, NaN, infinities) -- several (H, W) with odd leftovers."""
    rng = np.random.default_rng(11)
    for h in (2, 3, 5):
        for w in WIDTHS:
            yield f"rand-{h}x{w}", rng.standard_normal((2, 3, h, w)).astype(dt)
            yield f"special-{h}x{w}", rng.choice(SPECIAL, size=(2, 3, h, w)).astype(dt)


_SCRIPT = """
import json, sys
import numpy as np
from cnnext import _pool
from cnnext import functional as F
sys.path.insert(0, {here!r})
from test_pool_rows import DTYPES, _inputs
out = {{}}
for dt in DTYPES:
    for name, x in _inputs(dt):
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        v = F.max_pool2d(x, 2)
        gx = np.full(x.shape, np.nan, dt)
        if x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0:
            g = np.random.default_rng(0).standard_normal(y.shape).astype(dt)
            _pool.max_pool2d_backward_2x2(g, idx, gx, 1)
        out[f"{{np.dtype(dt).name}}-{{name}}"] = [y.tobytes().hex(), idx.tolist(),
                                                 v.tobytes().hex(), gx.tobytes().hex()]
print(_pool.pool_isa())
print(json.dumps(out))
"""


def test_variants_give_the_same_values_and_indices(run_with_isa):
    if _pool.pool_isa() != "avx512":
        pytest.skip("this CPU runs only the portable rows")
    fast, slow = run_with_isa(_SCRIPT, "generic")
    assert len(fast) == 2 * 2 * 3 * len(WIDTHS)
    for key in fast:
        assert fast[key] == slow[key], key


@pytest.mark.parametrize("dt", DTYPES)
def test_rows_follow_the_pooling_rules(dt):
    """First maximum in row-major window order, NaN propagates (the last NaN
    of a window is its index), indices are flat plane positions; rows wider
    than one vector and with a masked last step."""
    for name, x in _inputs(dt):
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        n, c, h, w = x.shape
        win = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
        win = win.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        best = np.zeros(win.shape[:-1], np.int64)
        for t in range(1, 4):
            cur = np.take_along_axis(win, best[..., None], -1)[..., 0]
            v = win[..., t]
            best = np.where((v > cur) | np.isnan(v), t, best)
        want = np.take_along_axis(win, best[..., None], -1)[..., 0]
        oh, ow = np.meshgrid(np.arange(h // 2), np.arange(w // 2), indexing="ij")
        want_idx = (2 * oh + best // 2) * w + 2 * ow + best % 2
        np.testing.assert_array_equal(y, want, err_msg=name)
        assert (np.signbit(y) == np.signbit(want)).all(), name
        np.testing.assert_array_equal(idx, want_idx, err_msg=name)
        np.testing.assert_array_equal(F.max_pool2d(x, 2), y, err_msg=name)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_backward_2x2_equals_the_scatter(dt, threads):
    """The exactly tiled 2x2 backward equals the zero-then-scatter kernel bit
    for bit (+0 where a window's argmax is not, 0 + g -- so -0.0 gives +0.0
    -- where it is; NaN and infinite gradients), rows around the vector and
    mask widths."""
    rng = np.random.default_rng(13)
    for ow in [1, 2, 5, 7, 8, 9, 14, 15, 16, 17, 31, 33]:
        for name, x in [("rand", rng.standard_normal((2, 3, 6, 2 * ow))),
                        ("special", rng.choice(SPECIAL, size=(2, 3, 6, 2 * ow)))]:
            x = x.astype(dt)
            y = np.empty((2, 3, 3, ow), dt)
            idx = np.empty(y.shape, np.int64)
            _pool.max_pool2d_forward(x, y, idx, 2, 2, 2, 2, 0, 0, 1, 1, 1)
            g = rng.choice([1.5, -2.0, 0.0, -0.0, np.nan, np.inf], size=y.shape).astype(dt)
            want = np.full(x.shape, np.nan, dt)
            got = np.full(x.shape, np.nan, dt)
            _pool.max_pool2d_backward(g, idx, want, 1)
            _pool.max_pool2d_backward_2x2(g, idx, got, threads)
            assert got.tobytes() == want.tobytes(), (ow, name)
