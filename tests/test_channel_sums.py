"""The bias gradient's per-channel sums (``_eltwise.channel_sums``) of each
compiled variant (AVX-512 intrinsics or the portable loop, chosen by
CNNEXT_ISA): the same values, bit for bit, over batch, channel and plane
sizes around the vector and block boundaries, with infinities, NaN and
signed zeros; and the sums against numpy's float64 sums."""


import numpy as np
import pytest

import cnnext
from cnnext import _eltwise
from cnnext import functional as F
from cnnext import reference as R

DTYPES = (np.float32, np.float64)
NS = (1, 3, 64)
CS = (1, 2, 3, 4, 5, 8, 9, 16, 17, 120)
PS = (0, 1, 2, 7, 8, 9, 17, 100, 784)
SPECIAL = [-1.0, 0.0, -0.0, 1.5, np.nan, np.inf, -np.inf]


def _inputs(dt):
    """(name, g) pairs: random values, and values drawn from SPECIAL."""
    rng = np.random.default_rng(5)
    for n in NS:
        for c in CS:
            for p in PS:
                yield f"rand-{n}-{c}-{p}", (rng.standard_normal((n, c, p)) * 10).astype(dt)
            if n == 3:
                for p in (1, 9):
                    yield f"special-{c}-{p}", rng.choice(SPECIAL, size=(n, c, p)).astype(dt)


def _sums(g):
    out = np.full(g.shape[1], np.nan, g.dtype)
    _eltwise.channel_sums(g, out)
    return out


_SCRIPT = """
import json, sys
import numpy as np
from cnnext import _eltwise
sys.path.insert(0, {here!r})
from test_channel_sums import DTYPES, _inputs, _sums
out = {{f"{{np.dtype(dt).name}}-{{name}}": _sums(g).tobytes().hex()
        for dt in DTYPES for name, g in _inputs(dt)}}
print(_eltwise.eltwise_isa())
print(json.dumps(out))
"""


def test_variants_give_the_same_values(run_with_isa):
    if _eltwise.eltwise_isa() != "avx512":
        pytest.skip("this CPU runs only the portable loop")
    fast, slow = run_with_isa(_SCRIPT, "avx2")
    assert len(fast) > 500
    for key in fast:
        a = np.frombuffer(bytes.fromhex(fast[key]), key.split("-")[0])
        b = np.frombuffer(bytes.fromhex(slow[key]), key.split("-")[0])
        # bit for bit, but for the sign of a NaN (which NaN operand an
        # addition passes on is the compiler's choice of operand order)
        assert np.array_equal(np.isnan(a), np.isnan(b)), key
        assert a[~np.isnan(a)].tobytes() == b[~np.isnan(b)].tobytes(), key


@pytest.mark.parametrize("dt", DTYPES)
def test_sums_match_numpy(dt):
    # float64 sums in another order: errors bounded by the sum of magnitudes
    tol = 1e-6 if dt == np.float32 else 1e-13
    for name, g in _inputs(dt):
        g64 = g.astype(np.float64)
        with np.errstate(invalid="ignore"):
            want = g64.sum(axis=(0, 2))
            bound = tol * (np.abs(g64).sum(axis=(0, 2)) + 1)
        got = _sums(g)
        assert got.dtype == dt, name
        # a channel holding inf and -inf sums to NaN; NaN propagates; inf stays
        assert np.array_equal(np.isnan(got), np.isnan(want)), name
        assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)]), name
        fin = np.isfinite(want)
        assert np.all(np.abs(got[fin] - want[fin]) <= bound[fin]), name


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_bias_gradient(dt, threads):
    """The bias gradient of conv2d's backward (odd sizes, a non-contiguous
    upstream gradient) against the reference, at one and two threads."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 9, 7)).astype(dt)
    w = rng.standard_normal((5, 2, 2, 3)).astype(dt)
    b = rng.standard_normal(5).astype(dt)
    y = F.conv2d(x, w, b, padding=1)
    g = np.asfortranarray(rng.standard_normal(y.shape).astype(dt))
    old = cnnext.get_num_threads()
    cnnext.set_num_threads(threads)
    try:
        _, _, gb = F.conv2d_backward(g, x, w, bias=True, padding=1)
    finally:
        cnnext.set_num_threads(old)
    _, _, want = R.conv2d_backward(g, x, w, bias=True, padding=1)
    tol = 1e-5 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(gb, want, rtol=tol, atol=tol)
    assert gb.dtype == dt and not np.shares_memory(gb, g)
