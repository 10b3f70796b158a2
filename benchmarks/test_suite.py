"""The ``cnnext bench`` suite as pytest-benchmark tests.

One test per (case, pass, dtype, peer); the peers of a row share a
benchmark *group*, so pytest-benchmark prints them side by side.  The
callables and their pre-generated inputs come from
:func:`cnnext.bench.make_peers`, i.e. exactly what ``cnnext bench`` times.

pytest-benchmark runs one peer after the other (no interleaving): use it to
track cnnext over time (``--benchmark-autosave`` / ``--benchmark-compare``);
use ``cnnext bench`` for cnnext/PyTorch ratios on a noisy machine.
"""
import functools

import pytest

from cnnext import bench

pytest.importorskip("pytest_benchmark", reason="pip install pytest-benchmark")

ROWS = [
    (case, pass_, dtype)
    for case in bench.SUITE
    for dtype in ("float32", "float64")
    for pass_ in case.passes
]
PEERS = ("cnnext", "pytorch", "reference")


@functools.lru_cache(maxsize=1)
def _peers(case, pass_, dtype, torch):
    # One row's inputs live at a time (maxsize=1; the tests run row by row).
    return bench.make_peers(case, pass_, dtype, seed=0, torch=torch)


def _id(row):
    case, pass_, dtype = row
    return f"{case.name}-{pass_}-{dtype}"


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_suite(benchmark, row, peer, torch_module, pinned_threads):
    case, pass_, dtype = row
    if peer == "pytorch" and torch_module is None:
        pytest.skip("torch is not installed")
    fn = _peers(case, pass_, dtype, torch_module)[peer]
    benchmark.group = _id(row)
    benchmark.extra_info.update(
        case=case.name, pass_=pass_, dtype=dtype, peer=peer, threads=pinned_threads,
        flops=case.flops(pass_), geometry=case.describe(),
    )
    if peer == "reference":
        # The numpy oracle is slow: a few rounds, one warm-up.
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
