"""pytest-benchmark configuration for the cnnext benchmark suite.

Thread counts are pinned so that results stay comparable over time:
cnnext, PyTorch and the BLAS pools all use ``CNNEXT_BENCH_THREADS`` threads
(default 1).  BLAS is pinned at run time the way ``cnnext bench`` does it
(threadpoolctl if installed, else OpenBLAS through ctypes), and the usual
environment variables are set as defaults too (they only act if set
before numpy is first imported; see benchmarks/README.md).
"""
import os

# The environment as the user left it (test_targets.py runs the bench with it).
USER_ENVIRON = dict(os.environ)
THREADS = int(os.environ.get("CNNEXT_BENCH_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import pytest  # noqa: E402

from cnnext import bench  # noqa: E402
from cnnext.bench import machine  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    torch = None


def pytest_addoption(parser):
    parser.addoption(
        "--targets", action="store_true", default=False,
        help="test_targets.py: run cnnext bench and grade it against the speed targets",
    )


def pytest_report_header(config):
    info = bench.machine_info(torch=torch)
    v = info["versions"]
    return [
        f"cnnext {v['cnnext']}, numpy {v['numpy']}, scipy {v['scipy']}, torch {v['torch']}",
        f"CPU {info['cpu_model']} ({info['cores']} cores); pinned threads: cnnext and torch "
        f"{THREADS} (CNNEXT_BENCH_THREADS); BLAS env "
        f"{ {k: os.environ.get(k) for k in ('OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')} }",
    ]


@pytest.fixture(scope="session", autouse=True)
def pinned_threads():
    """cnnext, PyTorch and BLAS run with the same, fixed thread count."""
    with machine.pinned_threads(THREADS, torch):
        yield THREADS


@pytest.fixture(scope="session")
def torch_module():
    """The torch module, or None when it is not installed."""
    return torch


@pytest.fixture(scope="session")
def user_environ():
    """os.environ before this file pinned the BLAS/OpenMP thread variables."""
    return dict(USER_ENVIRON)


@pytest.hookimpl(optionalhook=True)  # a pytest-benchmark hook; absent without the plugin
def pytest_benchmark_update_machine_info(config, machine_info):
    """Store cnnext's machine/BLAS/thread details with every saved run."""
    machine_info["cnnext"] = bench.machine_info(torch=torch)
