"""No leaks: thousands of forward/backward calls and a short training run
keep the resident set size flat.

Measured in a fresh subprocess (so other tests' allocations do not blur the
numbers) from ``/proc/self/statm`` after a warm-up; the figures are printed
(``pytest -s``) and recorded in docs/robustness.md.  A leak of the kernels'
per-call scratch (tens of KB per call here) would show as 100+ MB.
"""
import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/statm"
)

#: Allowed RSS growth after warm-up.
BOUND_MB = 16

SCRIPT = textwrap.dedent(
    """
    import gc, json, os
    import numpy as np
    import cnnext
    from cnnext import functional as F, nn, optim, train

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 24, 24)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    xr = np.maximum(x, 0)

    def calls():
        y = F.conv2d(x, w, b, stride=2, padding=2)
        g = rng.standard_normal(y.shape).astype(np.float32)
        F.conv2d_backward(g, x, w, stride=2, padding=2)
        F.conv2d_backward(F.conv2d(x, w, padding=1), x, w, padding=1, dilation=1)
        F.conv_transpose2d(y, w, stride=2, padding=2)
        p, i = F.max_pool2d(xr, 3, 2, 1, return_indices=True)
        F.max_pool2d_backward(p, i, xr.shape)
        a = F.avg_pool2d(x, 2)
        F.avg_pool2d_backward(a, x.shape, 2)
        F.softmax_cross_entropy(rng.standard_normal((4, 10)), [1, 2, 3, 4])

    out = {}
    for _ in range(300):
        calls()
    gc.collect()
    r0 = rss_mb()
    for _ in range(N_CALLS):
        calls()
    gc.collect()
    out["functional"] = [r0, rss_mb()]

    model = nn.Sequential(
        nn.Conv2D(1, 6, 5, padding=2, seed=0), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(6, 16, 5, seed=1), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
        nn.Dense(16 * 5 * 5, 10, seed=2),
    )
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    xs = rng.random((256, 1, 28, 28), dtype=np.float32)
    ys = rng.integers(0, 10, 256)
    train.fit(model, loss, opt, xs, ys, epochs=1, batch_size=32, seed=0, progress=False)
    gc.collect()
    r0 = rss_mb()
    train.fit(model, loss, opt, xs, ys, epochs=EPOCHS, batch_size=32, seed=1, progress=False)
    gc.collect()
    out["training"] = [r0, rss_mb()]
    print(json.dumps(out))
    """
)


def _measure(n_calls, epochs):
    code = f"N_CALLS = {n_calls}\nEPOCHS = {epochs}\n" + SCRIPT
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
        cwd="/",  # never import the uncompiled source tree
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_rss_stays_flat():
    figures = _measure(n_calls=3000, epochs=8)
    lines = []
    for what, (before, after) in figures.items():
        lines.append(f"{what}: RSS {before:.1f} MB -> {after:.1f} MB ({after - before:+.1f} MB)")
    print("\n" + "\n".join(lines))
    for before, after in figures.values():
        assert after - before < BOUND_MB, lines
