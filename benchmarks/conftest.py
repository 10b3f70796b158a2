"""pytest-benchmark configuration for the cnnext benchmark suite.

Thread counts are pinned so that results stay comparable over time:
cnnext and PyTorch both use ``CNNEXT_BENCH_THREADS`` threads (default 1).
The BLAS libraries are pinned through the usual environment variables,
which only take effect if they are set before numpy is first imported --
this file sets defaults early, but exporting them in the shell is the
reliable way (see benchmarks/README.md).
"""
import os

THREADS = int(os.environ.get("CNNEXT_BENCH_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import pytest  # noqa: E402

import cnnext  # noqa: E402
from cnnext import bench  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    torch = None


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
    """cnnext and PyTorch run with the same, fixed thread count."""
    old = cnnext.get_num_threads()
    cnnext.set_num_threads(THREADS)
    if torch is not None:
        old_t = torch.get_num_threads()
        torch.set_num_threads(THREADS)
    yield THREADS
    cnnext.set_num_threads(old)
    if torch is not None:
        torch.set_num_threads(old_t)


@pytest.fixture(scope="session")
def torch_module():
    """The torch module, or None when it is not installed."""
    return torch


def pytest_benchmark_update_machine_info(config, machine_info):
    """Store cnnext's machine/BLAS/thread details with every saved run."""
    machine_info["cnnext"] = bench.machine_info(torch=torch)
