"""Shared test configuration: hypothesis profiles, tolerances, the MNIST location.

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
import json
import os
import subprocess
import sys
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


def _has_mnist_test_split(root):
    """Whether ``root`` holds both test-split IDX files, raw or ``.gz``."""
    return all(
        (root / base).is_file() or (root / (base + ".gz")).is_file()
        for base in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    )


@pytest.fixture(scope="session")
def mnist_dir():
    """Directory holding the real MNIST test split; skip the test if there is none.

    The directory named by the environment variable ``CNNEXT_MNIST`` when it
    is set, else cnnext's default data directory
    (:func:`cnnext.datasets.default_root`: ``$CNNEXT_DATA/mnist`` or
    ``~/.cache/cnnext/mnist``).  It must hold ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` (raw or ``.gz``); ``cnnext train --download``
    fetches them into the default directory.
    """
    from cnnext.datasets import default_root

    env = os.environ.get("CNNEXT_MNIST")
    root = Path(env if env else default_root()).expanduser().resolve()
    if not _has_mnist_test_split(root):
        if env:
            pytest.skip(f"MNIST test split not found in CNNEXT_MNIST={env}")
        pytest.skip(
            f"MNIST test split not found in {root}; set CNNEXT_MNIST to the directory holding it"
        )
    return root


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id (reproducible, distinct per test)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


#: The parallel-work thresholds the tests run under: lower than the
#: library's, so that the small inputs of the tests reach the kernels'
#: multi-thread paths whenever a test sets two threads.
TEST_PARALLEL_MIN_MACS = 1 << 20
TEST_PARALLEL_MIN_ELEMENTS = 1 << 16


@pytest.fixture(autouse=True)
def small_parallel_thresholds(monkeypatch):
    """Every test plans with the test thresholds (the library's defaults are
    kept in ``cnnext._plan.DEFAULT_PARALLEL_MIN`` for the tests of the rule
    itself); plans cached under other thresholds are dropped on both sides."""
    from cnnext import _plan

    monkeypatch.setattr(_plan, "PARALLEL_MIN_MACS", TEST_PARALLEL_MIN_MACS)
    monkeypatch.setattr(_plan, "PARALLEL_MIN_ELEMENTS", TEST_PARALLEL_MIN_ELEMENTS)
    monkeypatch.setattr(_plan, "BATCH_NORM_PARALLEL_MIN", TEST_PARALLEL_MIN_ELEMENTS)
    _plan.forget()
    yield
    _plan.forget()


@pytest.fixture
def run_with_isa(tmp_path):
    """``run(script, portable)``: run ``script`` (Python source; ``{here}``
    is the tests directory) in two fresh interpreters, with
    ``CNNEXT_ISA=avx512`` and with ``CNNEXT_ISA=portable``; it prints the
    variant a module chose on its first line and a JSON object after it.
    Checks that the variants were ``avx512`` and ``generic`` and that both
    objects have the same keys; returns the two objects."""
    here = os.path.dirname(os.path.abspath(__file__))

    def one(script, isa):
        proc = subprocess.run(
            [sys.executable, "-c", script.format(here=here)], capture_output=True,
            text=True, timeout=300, cwd=tmp_path, env=dict(os.environ, CNNEXT_ISA=isa),
        )
        assert proc.returncode == 0, proc.stderr
        name, data = proc.stdout.split("\n", 1)
        return name, json.loads(data)

    def run(script, portable):
        (fast_name, fast), (slow_name, slow) = one(script, "avx512"), one(script, portable)
        assert (fast_name, slow_name) == ("avx512", "generic")
        assert fast.keys() == slow.keys()
        return fast, slow

    return run


@pytest.fixture
def restore_threads():
    """Put the kernel thread count back as it was after the test."""
    import cnnext

    old = cnnext.get_num_threads()
    yield
    cnnext.set_num_threads(old)


#: The convolution-algorithm settings every convolution test runs under.
CONV_ALGORITHMS = ("auto", "direct", "winograd")


def pytest_generate_tests(metafunc):
    """Run every convolution test (``conv`` in its name) once per
    :func:`cnnext.set_conv_algorithm` setting, through the autouse
    ``conv_algorithm`` fixture."""
    if "conv" in metafunc.function.__name__.lower():
        metafunc.parametrize("conv_algorithm", CONV_ALGORITHMS, indirect=True)


@pytest.fixture(autouse=True)
def conv_algorithm(request):
    """A convolution test's algorithm, in force for the whole test (through
    :func:`cnnext.use_conv_algorithm`); None for any other test, which runs
    under the process setting."""
    import cnnext

    name = getattr(request, "param", None)
    if name is None:
        yield None
        return
    with cnnext.use_conv_algorithm(name):
        yield name
