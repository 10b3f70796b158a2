"""The depthwise-convolution kernels (``cnnext._depthwise``).

Depthwise convolution is ``conv2d`` with ``groups == C``: weight
``(C*M, 1, kh, kw)``, output channel ``o`` reads input channel ``o // M``.
Each kernel is compared with

* an independent oracle: ``cnnext.reference.conv2d`` and
  ``conv2d_backward`` (windows + einsum, float64) applied to one channel
  slice at a time, the input gradient summed over the ``M`` outputs of a
  channel, and
* PyTorch (``torch.nn.functional.conv2d(..., groups=C)`` and autograd, for a
  random upstream gradient), including where NaN propagates,

over both dtypes and odd geometry (non-square kernels, stride larger than
the kernel, padding up to the kernel size, dilation, images smaller than the
vector width, widths that leave a partial last vector), plus thread-count
independence, read-only inputs, outputs that are overwritten, and every
instruction-set variant of the row loops.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cnnext import _depthwise as D
from cnnext import reference as R

DTYPES = [np.float32, np.float64]

# (id, N, C, M, H, W, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
GEOMS = [
    ("3x3", 3, 3, 1, 7, 11, (3, 3), (1, 1), (1, 1), (1, 1)),
    ("3x3-m2-wide", 1, 2, 2, 9, 37, (3, 3), (1, 1), (1, 1), (1, 1)),
    ("3x3-s2", 3, 2, 1, 13, 20, (3, 3), (2, 2), (1, 1), (1, 1)),
    ("3x3-s2-m2-p0", 1, 3, 2, 12, 35, (3, 3), (2, 2), (0, 0), (1, 1)),
    ("3x3-pad2", 1, 2, 1, 5, 6, (3, 3), (1, 1), (2, 2), (1, 1)),
    ("3x3-dil2", 3, 2, 2, 11, 19, (3, 3), (1, 1), (2, 2), (2, 2)),
    ("5x5", 1, 2, 1, 9, 21, (5, 5), (1, 1), (2, 2), (1, 1)),
    ("5x5-s2-m2", 3, 2, 2, 17, 40, (5, 5), (2, 2), (2, 2), (1, 1)),
    ("5x5-s3-dil2", 1, 3, 1, 19, 23, (5, 5), (3, 3), (2, 1), (2, 2)),
    ("2x3", 3, 3, 2, 7, 11, (2, 3), (1, 1), (0, 1), (1, 1)),
    ("2x3-s3x2-dil", 1, 2, 1, 11, 13, (2, 3), (3, 2), (1, 2), (2, 1)),
    ("1x1", 3, 4, 2, 5, 6, (1, 1), (1, 1), (0, 0), (1, 1)),
    ("1x1-s2-pad", 1, 2, 1, 7, 7, (1, 1), (2, 2), (1, 1), (1, 1)),
    ("7x7-s2", 1, 2, 2, 20, 30, (7, 7), (2, 2), (2, 1), (1, 1)),
    ("7x7-s3-dil2", 3, 1, 1, 25, 23, (7, 7), (3, 3), (2, 2), (2, 2)),
    ("stride>kernel", 1, 2, 1, 11, 13, (2, 2), (3, 3), (0, 0), (1, 1)),
    ("image-1x1", 3, 2, 2, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1)),
    ("image-1x1-pad", 1, 2, 1, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    ("kernel-covers-image", 1, 1, 2, 3, 3, (3, 3), (2, 2), (0, 0), (1, 1)),
    ("huge-stride-one-output", 2, 2, 2, 5, 7, (3, 2), (10**9, 10**9), (1, 0), (1, 2)),
    ("huge-stride-one-row", 1, 2, 1, 4, 9, (3, 3), (10**9, 2), (1, 1), (1, 1)),
]
IDS = [g[0] for g in GEOMS]


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _problem(rng, geom, dtype):
    """x, weight, bias, upstream gradient and the flat geometry arguments."""
    _, N, C, M, H, W, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    OH, OW = _out(H, kh, sh, ph, dh), _out(W, kw, sw, pw, dw)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C * M, 1, kh, kw)).astype(dtype)
    b = rng.standard_normal(C * M).astype(dtype)
    g = rng.standard_normal((N, C * M, OH, OW)).astype(dtype)
    return x, w, b, g, (sh, sw, ph, pw, dh, dw)


def forward(x, w, b, geo, threads=1):
    N, C = x.shape[:2]
    out = np.empty((N, w.shape[0], _out(x.shape[2], w.shape[2], geo[0], geo[2], geo[4]),
                    _out(x.shape[3], w.shape[3], geo[1], geo[3], geo[5])), dtype=x.dtype)
    D.depthwise_forward(x, w, b, out, *geo, threads)
    return out


def grad_input(g, w, x_shape, geo, threads=1, fill=np.nan):
    gx = np.full(x_shape, fill, dtype=g.dtype)
    D.depthwise_grad_input(g, w, gx, *geo, threads)
    return gx


def grad_weight(x, g, w_shape, geo, threads=1, fill=np.nan):
    gw = np.full(w_shape, fill, dtype=x.dtype)
    D.depthwise_grad_weight(x, g, gw, *geo, threads)
    return gw


def _reference(x, w, b, g, geo):
    """(out, grad_x, grad_weight) in float64, one channel slice at a time."""
    sh, sw, ph, pw, dh, dw = geo
    opts = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
    x, w, b, g = (a.astype(np.float64) for a in (x, w, b, g))
    C, M = x.shape[1], w.shape[0] // x.shape[1]
    out = np.empty(g.shape)
    gx = np.zeros(x.shape)
    gw = np.empty(w.shape)
    for o in range(C * M):
        c = o // M
        xs, ws = x[:, c:c + 1], w[o:o + 1]
        out[:, o:o + 1] = R.conv2d(xs, ws, b[o:o + 1], **opts)
        sx, sw_, _ = R.conv2d_backward(g[:, o:o + 1], xs, ws, **opts, bias=False)
        gx[:, c:c + 1] += sx
        gw[o:o + 1] = sw_
    return out, gx, gw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMS, ids=IDS)
def test_kernels_match_reference(geom, dtype, rng, close):
    x, w, b, g, geo = _problem(rng, geom, dtype)
    want_out, want_gx, want_gw = _reference(x, w, b, g, geo)
    close(forward(x, w, b, geo), want_out, dtype, err_msg="forward")
    close(forward(x, w, None, geo), want_out - b.astype(np.float64)[:, None, None], dtype,
          err_msg="forward without bias")
    close(grad_input(g, w, x.shape, geo), want_gx, dtype, err_msg="grad_input")
    close(grad_weight(x, g, w.shape, geo), want_gw, dtype, err_msg="grad_weight")


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_kernels_match_reference_hypothesis(data, dtype, close):
    """Any geometry: kernel 1..7 per axis, stride 1..3, padding 0..3,
    dilation 1..2, multiplier 1..3, images up to 24 wide (a partial last
    vector or a single one) and down to 1x1."""
    ints = st.integers
    kh, kw = data.draw(ints(1, 7), label="kh"), data.draw(ints(1, 7), label="kw")
    sh, sw = data.draw(ints(1, 3), label="sh"), data.draw(ints(1, 3), label="sw")
    ph, pw = data.draw(ints(0, 3), label="ph"), data.draw(ints(0, 3), label="pw")
    dh, dw = data.draw(ints(1, 2), label="dh"), data.draw(ints(1, 2), label="dw")
    H, W = data.draw(ints(1, 12), label="H"), data.draw(ints(1, 24), label="W")
    assume(_out(H, kh, sh, ph, dh) >= 1 and _out(W, kw, sw, pw, dw) >= 1)
    geom = ("drawn", data.draw(ints(1, 2), label="N"), data.draw(ints(1, 3), label="C"),
            data.draw(ints(1, 3), label="M"), H, W, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    rng = np.random.default_rng(data.draw(ints(0, 2**32 - 1), label="seed"))
    x, w, b, g, geo = _problem(rng, geom, dtype)
    want_out, want_gx, want_gw = _reference(x, w, b, g, geo)
    close(forward(x, w, b, geo, 2), want_out, dtype, err_msg="forward")
    close(grad_input(g, w, x.shape, geo, 2), want_gx, dtype, err_msg="grad_input")
    close(grad_weight(x, g, w.shape, geo, 2), want_gw, dtype, err_msg="grad_weight")


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _torch_all(torch, x, w, b, g, geo):
    """PyTorch's forward and autograd gradients (numpy arrays)."""
    sh, sw, ph, pw, dh, dw = geo
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    wt = torch.from_numpy(w.copy()).requires_grad_(True)
    y = torch.nn.functional.conv2d(xt, wt, torch.from_numpy(b), (sh, sw), (ph, pw), (dh, dw),
                                   x.shape[1])
    y.backward(torch.from_numpy(g))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMS, ids=IDS)
def test_kernels_match_torch(geom, dtype, rng, close, torch):
    x, w, b, g, geo = _problem(rng, geom, dtype)
    want_out, want_gx, want_gw = _torch_all(torch, x, w, b, g, geo)
    close(forward(x, w, b, geo, threads=2), want_out, dtype, err_msg="forward")
    close(grad_input(g, w, x.shape, geo, threads=2), want_gx, dtype, err_msg="grad_input")
    close(grad_weight(x, g, w.shape, geo, threads=2), want_gw, dtype, err_msg="grad_weight")


NAN_GEOMS = [GEOMS[IDS.index(i)] for i in ("3x3", "3x3-m2-wide", "3x3-s2", "5x5-s2-m2",
                                           "2x3-s3x2-dil", "7x7-s2")]
NAN_IDS = [g[0] for g in NAN_GEOMS]


def _same_nonfinite(got, want, name):
    """NaN and infinities at the same places, close elsewhere."""
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(want), err_msg=f"{name}: {test.__name__}")
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", NAN_GEOMS, ids=NAN_IDS)
def test_nan_in_input_propagates_as_in_torch(geom, dtype, rng, torch):
    """A NaN in the input reaches exactly the outputs and weight-gradient
    taps whose windows read it.  The last input column is poisoned too: the
    weight gradient's vector loops read it in lanes past a row's end, which
    must not count."""
    x, w, b, g, geo = _problem(rng, geom, dtype)
    x[0, 0, x.shape[2] // 2, x.shape[3] // 3] = np.nan
    x[-1, -1, -1, -1] = np.nan
    want = _torch_all(torch, x, w, b, g, geo)
    got = (forward(x, w, b, geo), grad_input(g, w, x.shape, geo),
           grad_weight(x, g, w.shape, geo))
    for name, mine, theirs in zip(("forward", "grad_input", "grad_weight"), got, want):
        _same_nonfinite(mine, theirs, name)
    assert np.isnan(got[0]).any() and np.isnan(got[2]).any()


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", NAN_GEOMS, ids=NAN_IDS)
def test_nonfinite_weight_and_upstream_gradient_as_in_torch(geom, dtype, rng, torch):
    """inf and NaN in a weight and NaN in its upstream gradient.  Padding
    is multiplied like data (0 * NaN = NaN), as in PyTorch's float64 path and
    its ``groups=1`` convolutions, so the oracle is PyTorch in float64 on the
    same values (its float32 depthwise kernel skips padded taps instead).
    The input gradient never multiplies a weight by padding: a finite value
    where PyTorch has one."""
    x, w, b, g, geo = _problem(rng, geom, dtype)
    w[0, 0, 0, 0] = np.inf
    w[0, 0, -1, -1] = np.nan
    g[-1, 0, 0, g.shape[3] - 1] = np.nan
    want = _torch_all(torch, *(a.astype(np.float64) for a in (x, w, b, g)), geo)
    got = (forward(x, w, b, geo), grad_input(g, w, x.shape, geo),
           grad_weight(x, g, w.shape, geo))
    for name, mine, theirs in zip(("forward", "grad_input", "grad_weight"), got, want):
        _same_nonfinite(mine, theirs, name)
        assert np.isfinite(mine).any(), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [GEOMS[i] for i in (0, 2, 7, 13)],
                         ids=[IDS[i] for i in (0, 2, 7, 13)])
def test_thread_count_does_not_change_the_result(geom, dtype, rng):
    """Bitwise: each output plane and each filter's gradient is computed by
    one thread, in the same order, whatever the thread count."""
    x, w, b, g, geo = _problem(rng, geom, dtype)
    for threads in (2, 3):
        np.testing.assert_array_equal(forward(x, w, b, geo, threads), forward(x, w, b, geo, 1))
        np.testing.assert_array_equal(grad_input(g, w, x.shape, geo, threads),
                                      grad_input(g, w, x.shape, geo, 1))
        np.testing.assert_array_equal(grad_weight(x, g, w.shape, geo, threads),
                                      grad_weight(x, g, w.shape, geo, 1))


def test_realistic_layer_at_two_threads(rng, close):
    """The benchmark's layer shape (64 channels of 56x56, 3x3, padding 1),
    at a smaller batch: the specialised, whole-vector row loops."""
    geom = ("mobilenet", 4, 64, 1, 56, 56, (3, 3), (1, 1), (1, 1), (1, 1))
    x, w, b, g, geo = _problem(rng, geom, np.float32)
    want_out, want_gx, want_gw = _reference(x, w, b, g, geo)
    close(forward(x, w, b, geo, 2), want_out, np.float32, err_msg="forward")
    close(grad_input(g, w, x.shape, geo, 2), want_gx, np.float32, err_msg="grad_input")
    close(grad_weight(x, g, w.shape, geo, 2), want_gw, np.float32, err_msg="grad_weight")


def test_read_only_inputs_are_accepted_and_left_alone(rng):
    x, w, b, g, geo = _problem(rng, GEOMS[1], np.float32)
    copies = [a.copy() for a in (x, w, b, g)]
    for a in (x, w, b, g):
        a.setflags(write=False)
    out = forward(x, w, b, geo)
    gx = grad_input(g, w, x.shape, geo)
    gw = grad_weight(x, g, w.shape, geo)
    for a, c in zip((x, w, b, g), copies):
        np.testing.assert_array_equal(a, c)
    assert np.isfinite(out).all() and np.isfinite(gx).all() and np.isfinite(gw).all()


def test_gradients_overwrite_their_outputs(rng):
    """grad_x and grad_weight are written, not accumulated into: garbage
    (here NaN or a large constant) in the caller's buffer never leaks through,
    including the input positions no output window reaches."""
    geom = ("uncovered", 2, 2, 2, 10, 12, (2, 2), (3, 3), (0, 0), (1, 1))
    x, w, b, g, geo = _problem(rng, geom, np.float64)
    gx_nan = grad_input(g, w, x.shape, geo, fill=np.nan)
    np.testing.assert_array_equal(gx_nan, grad_input(g, w, x.shape, geo, fill=1e30))
    # Between the windows (every third row and column) and past the last
    # one (rows 8, 9 and column 11).
    for rows, cols in (([2, 5, 8, 9], slice(None)), (slice(None), [2, 5, 8, 11])):
        np.testing.assert_array_equal(gx_nan[:, :, rows, cols], 0)
    assert (gx_nan[:, :, [0, 1, 3, 4, 6, 7]][:, :, :, [0, 1, 3, 4, 6, 7, 9, 10]] != 0).all()
    np.testing.assert_array_equal(grad_weight(x, g, w.shape, geo, fill=np.nan),
                                  grad_weight(x, g, w.shape, geo, fill=1e30))


def test_empty_batch(rng):
    geom = ("empty", 0, 3, 2, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1))
    x, w, b, g, geo = _problem(rng, geom, np.float32)
    assert forward(x, w, b, geo).shape == (0, 6, 5, 5)
    assert grad_input(g, w, x.shape, geo).shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(grad_weight(x, g, w.shape, geo), 0)


_ISA_SCRIPT = """
import json, sys
import numpy as np
from cnnext import _depthwise as D
from cnnext import reference as R

def out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1

worst = 0.0
rng = np.random.default_rng(7)
for geom in json.loads(sys.argv[1]):
    N, C, M, H, W, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    geo = (sh, sw, ph, pw, dh, dw)
    opts = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
    OH, OW = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    for dt in (np.float32, np.float64):
        tol = 1e-4 if dt == np.float32 else 1e-10
        x = rng.standard_normal((N, C, H, W)).astype(dt)
        w = rng.standard_normal((C * M, 1, kh, kw)).astype(dt)
        g = rng.standard_normal((N, C * M, OH, OW)).astype(dt)
        out = np.empty((N, C * M, OH, OW), dt)
        gx = np.empty_like(x)
        gw = np.empty_like(w)
        D.depthwise_forward(x, w, None, out, *geo, 2)
        D.depthwise_grad_input(g, w, gx, *geo, 2)
        D.depthwise_grad_weight(x, g, gw, *geo, 2)
        x64, w64, g64 = x.astype(float), w.astype(float), g.astype(float)
        want_gx = np.zeros(x.shape)
        for o in range(C * M):
            c = o // M
            xs, ws = x64[:, c:c + 1], w64[o:o + 1]
            want = R.conv2d(xs, ws, None, **opts)
            sx, sw_, _ = R.conv2d_backward(g64[:, o:o + 1], xs, ws, **opts, bias=False)
            want_gx[:, c:c + 1] += sx
            for mine, ref in ((out[:, o:o + 1], want), (gw[o:o + 1], sw_)):
                scale = max(1.0, float(np.abs(ref).max()))
                worst = max(worst, float(np.abs(mine - ref).max()) / (tol * scale))
        scale = max(1.0, float(np.abs(want_gx).max()))
        worst = max(worst, float(np.abs(gx - want_gx).max()) / (tol * scale))
print(D.ISA, worst)
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_instruction_set_variant(isa, tmp_path):
    """CNNEXT_ISA selects each compiled variant of the row loops the CPU
    supports; only the best one runs in the main test process."""
    rank = ["generic", "avx2", "avx512"]
    if rank.index(isa) > rank.index(D.ISA):
        pytest.skip(f"this CPU runs {D.ISA}, not {isa}")
    geoms = [list(g[1:]) for g in GEOMS if g[0] in (
        "3x3-m2-wide", "3x3-s2", "5x5-s2-m2", "5x5-s3-dil2", "2x3", "7x7-s2", "image-1x1-pad")]
    proc = subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT, json.dumps(geoms)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, CNNEXT_ISA=isa),
    )
    assert proc.returncode == 0, proc.stderr
    name, worst = proc.stdout.split()
    assert name == isa
    assert float(worst) <= 1.0, f"{isa}: error {worst} x the allowed tolerance"
