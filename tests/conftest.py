"""Shared test configuration: hypothesis profiles, tolerances, data paths.

The tests import the *installed* cnnext (pyproject sets
``--import-mode=importlib`` and there is no ``tests/__init__.py``);
``tests/test_build.py`` checks that this really is the case.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE=dev pytest``):

``ci`` (default)
    Few examples, no deadline: the whole suite stays within a few minutes
    on a shared 2-core machine, and timing noise never fails a test.
``dev``
    Many more examples, for a local hunt after touching a kernel.
"""
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Per-dtype tolerances for comparing a kernel result with an oracle.
#: ``atol`` is *relative to the magnitude of the compared values* (see
#: :func:`assert_close`): a convolution of O(100) numbers has absolute
#: rounding errors O(100 * eps), so a fixed absolute tolerance is either too
#: loose for small outputs or too tight for large ones.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-10},
}

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = (REPO_ROOT / ".." / "shared" / "data" / "mnist").resolve()


def assert_close(actual, desired, dtype=None, err_msg=""):
    """``assert_allclose`` with the tolerance of ``dtype`` scaled by magnitude.

    The absolute tolerance is ``atol * max(1, max|desired|)`` so that sums of
    many terms are judged on their relative accuracy; the relative
    tolerance applies element-wise as usual.
    """
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    dt = np.dtype(dtype if dtype is not None else actual.dtype)
    tol = TOLERANCES[dt]
    scale = 1.0
    finite = desired[np.isfinite(desired)]
    if finite.size:
        scale = max(1.0, float(np.max(np.abs(finite))))
    np.testing.assert_allclose(
        actual, desired, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=err_msg
    )


@pytest.fixture(scope="session")
def tolerances():
    """The per-dtype tolerance table ``{np.dtype: {"rtol": .., "atol": ..}}``."""
    return TOLERANCES


@pytest.fixture(scope="session")
def close():
    """:func:`assert_close` as a fixture (test modules cannot import conftest).

    Session-scoped, so hypothesis tests may use it too.
    """
    return assert_close


@pytest.fixture(scope="session")
def mnist_dir():
    """Path to the real MNIST test split (IDX gzip files); skip if absent.

    Lives outside the repository at ``<repo>/../shared/data/mnist`` and is
    never copied into it.
    """
    required = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    if not all((MNIST_DIR / name).is_file() for name in required):
        pytest.skip(f"MNIST test split not found in {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id (reproducible, distinct per test)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
