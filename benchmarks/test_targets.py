"""The speed targets (benchmarks/targets.py) as pytest tests.

The grading tests run on made-up bench documents and take no time.
``test_targets_are_met`` runs the bench itself (about 3 minutes) and only
with ``pytest benchmarks/test_targets.py --targets``; the repository's
plain ``pytest`` never collects this directory (``testpaths = ["tests"]``).
"""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("targets", Path(__file__).with_name("targets.py"))
targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(targets)


def _doc(results=(), small_calls=(), scaling=(), threads=2):
    return {"schema": "cnnext-bench/2", "settings": {"threads": threads},
            "results": list(results), "small_calls": list(small_calls), "scaling": list(scaling)}


def _row(case, kind, pass_, dtype, ratio_pytorch, ratio_reference=None):
    return {"case": case, "pass": pass_, "dtype": dtype, "geometry": {"kind": kind},
            "ratio_pytorch": ratio_pytorch, "ratio_reference": ratio_reference}


def _by_target(grades):
    return {g.target: g for g in grades}


def test_conv_and_pool_targets():
    doc = _doc([
        _row("seed-mnist", "conv", "fwd", "float32", 0.5, 0.1),
        _row("seed-mnist", "conv", "fwd+bwd", "float32", 1.6, 0.1),
        _row("cifar-3x3", "conv", "fwd+bwd", "float32", 0.4, 0.4),
        _row("maxpool-2x2", "maxpool", "fwd+bwd", "float32", 0.9),
        _row("lenet5-train", "train", "step", "float32", 0.7),
    ])
    g = _by_target(targets.grade(doc))
    worst = g["conv fwd+bwd float32, 2 threads: every cnnext/PyTorch <= 1.5"]
    assert not worst.met and worst.measured == "worst 1.60 (seed-mnist)"
    geo = g["conv fwd+bwd float32, 2 threads: geomean cnnext/PyTorch <= 1.0"]
    assert geo.met and geo.measured == "0.80"
    ref = g["conv float32, 2 threads: >= 5x faster than the reference (geomean)"]
    assert ref.met and ref.measured == "6.3x"  # geomean(0.1, 0.1, 0.4) = 0.159
    assert g["pooling fwd+bwd, 2 threads: every cnnext/PyTorch <= 1.0"].met
    assert not g["LeNet-5 training step float32, 2 threads: cnnext/PyTorch <= 0.5"].met
    assert g["seed-mnist fwd float32, 2 threads: cnnext/PyTorch <= 1.0"].met
    assert str(worst).startswith("[NOT met] conv fwd+bwd float32")


def test_small_call_and_scaling_targets():
    compat = {"case": "seed-step-compat", "threads": 1, "ratio_numpy": 1 / 40,
              "ratio_pytorch": 0.5}
    other = {"case": "linear-b1", "threads": 1, "ratio_numpy": 5.0, "ratio_pytorch": None}
    scaling = [{"case": "cifar-3x3", "dtype": "float32", "threads": 2, "speedup_cnnext": 1.8},
               {"case": "seed-mnist", "dtype": "float32", "threads": 2, "speedup_cnnext": 0.9}]
    g = targets.grade(_doc(small_calls=[compat, other], scaling=scaling, threads=1))
    assert [(x.target, x.measured, x.met) for x in g] == [
        ("seed-step-compat, 1 thread: >= 50x faster than the tutorial's numpy code", "40x",
         False),
        ("seed-step-compat, 1 thread: cnnext/PyTorch <= 0.6", "0.50", True),
        ("cifar-3x3 float32: 2 threads >= 1.6x 1-thread throughput", "1.80x", True),
    ]


def test_nothing_measured_nothing_graded():
    assert targets.grade(_doc([_row("seed-mnist", "conv", "fwd", "float32", None)])) == []
    with pytest.raises(ValueError, match="schema"):
        targets.grade({"schema": "cnnext-bench/1"})


def test_targets_are_met(request, user_environ):
    if not request.config.getoption("--targets"):
        pytest.skip("runs the whole bench: pass --targets")
    # The bench runs with the user's environment: conftest.py's thread pins
    # (1 by default) would make "the default thread count" 1.
    docs = [targets.run_bench(run, env=user_environ) for run in targets.RUNS]
    grades = [g for doc in docs for g in targets.grade(doc)]
    assert grades, "the bench produced nothing to grade"
    missed = [str(g) for g in grades if not g.met]
    assert not missed, "\n".join(missed)
