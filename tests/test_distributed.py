"""Data-parallel training over MPI (cnnext.distributed, fit(distributed=True),
cnnext train --distributed).

The jobs run under ``mpiexec`` in subprocesses (``tests/distributed_worker.py``),
each with a timeout, so a hung job fails its test instead of the suite.  The
tests that need MPI skip without mpi4py or without an ``mpiexec``; CI's
``.ci/run`` installs ``mpi4py mpich``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from cnnext import distributed, optim
from cnnext.distributed import _share, _spans
from cnnext.train import fit

WORKER = Path(__file__).with_name("distributed_worker.py")
sys.path.insert(0, str(WORKER.parent))
import distributed_worker as W  # noqa: E402

JOB_TIMEOUT = 120.0  # seconds for any mpiexec job


def _mpiexec():
    try:
        if importlib.util.find_spec("mpi4py") is None:
            return None
    except ValueError:  # sys.modules["mpi4py"] is None: imports of it are blocked
        return None
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs mpi4py and mpiexec")


def _env():
    env = dict(os.environ)
    # Open MPI: allow more ranks than cores, and running as root (containers).
    env.update(OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=
               ":oversubscribe", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("OMP_NUM_THREADS", None)
    return env


def _ours(token):
    """Processes whose command line holds ``token``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if token.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def mpirun(n, *args, timeout=JOB_TIMEOUT, module=None):
    """Run ``n`` ranks of the worker (or ``python -m module``); returns
    (completed process, seconds, processes left behind)."""
    token = f"cnnext-test-{uuid.uuid4().hex}"
    target = ["-m", module] if module else [str(WORKER)]
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *target, *args]
    if module is None:
        cmd.append(f"--tag={token}")
    start = time.monotonic()
    # cwd: tests/, so that ``python -m cnnext`` imports the installed package,
    # never an uncompiled source tree in the current directory.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True, cwd=WORKER.parent)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(args)} still running after {timeout} s")
    elapsed = time.monotonic() - start
    left = []
    if module is None:
        deadline = time.monotonic() + 5  # the launcher's clean-up may lag its exit
        while (left := _ours(token)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), elapsed, left


def _single(model="lenet5", optimizer="adam", dtype="float64", n=200, batch_size=64,
            epochs=1, threads=1):
    """The single-process run the distributed ones must reproduce."""
    import cnnext

    old = cnnext.get_num_threads()
    cnnext.set_num_threads(threads)
    try:
        m = W.build(model, np.dtype(dtype), seed=10)
        x, y = W.problem(n, np.dtype(dtype), kind=model)
        hist = fit(m, W.nn.SoftmaxCrossEntropy(), W.make_optimizer(optimizer, m), x, y,
                   epochs=epochs, batch_size=batch_size, seed=3, progress=False,
                   validation_data=(x[: n // 3], y[: n // 3]))
    finally:
        cnnext.set_num_threads(old)
    return m.state_dict(), hist


def _max_diff(a, b):
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


# --------------------------------------------------------------------------
# without MPI
# --------------------------------------------------------------------------


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(ImportError, match=r'pip install "cnnext\[mpi\]" mpich'):
        distributed._mpi()


@pytest.mark.parametrize("n", [0, 1, 2, 5, 64, 200, 194])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shares_cover_every_global_batch_contiguously(n, size):
    per_rank = [_spans(n, 64, r, size) for r in range(size)]
    for b, start in enumerate(range(0, n, 64)):
        parts = [per_rank[r][b] for r in range(size)]
        stop = min(start + 64, n)
        assert parts[0][0] == start and parts[-1][1] == stop
        assert all(parts[r][1] == parts[r + 1][0] for r in range(size - 1))
        lengths = [hi - lo for lo, hi in parts]
        assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    assert _share(10, 13, 2, 4) == (12, 13) and _share(10, 13, 3, 4) == (13, 13)  # empty


def test_distributed_optimizer_checks_its_arguments():
    model = W.build("dense", np.float32)
    with pytest.raises(TypeError, match=r"optimizer must have a zero_grad\(\) method"):
        distributed.DistributedOptimizer(object(), model)
    with pytest.raises(TypeError, match="model must have named_parameters"):
        distributed.DistributedOptimizer(optim.SGD(model, lr=0.1), object())
    mixed = W.nn.Sequential(W.nn.Dense(2, 2, dtype=np.float32), W.nn.Dense(2, 2, dtype=np.float64))
    with pytest.raises(TypeError, match="share one dtype"):
        distributed.DistributedOptimizer(optim.SGD(mixed, lr=0.1), mixed)


def test_sampler_checks_its_arguments():
    with pytest.raises(ValueError, match="ShardedSampler: batch_size"):
        distributed.ShardedSampler(10, 0)
    with pytest.raises(TypeError, match="ShardedSampler: shuffle"):
        distributed.ShardedSampler(10, 2, shuffle=1)


def test_fit_checks_distributed_before_starting_mpi():
    model = W.build("dense", np.float32)
    x, y = W.problem(4, np.float32)
    with pytest.raises(TypeError, match="fit: distributed must be a bool"):
        fit(model, W.nn.SoftmaxCrossEntropy(), optim.SGD(model, lr=0.1), x, y, 1, 2,
            distributed="yes")


# --------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize(
    "ranks, model, optimizer, n",
    [
        (2, "lenet5", "adam", 200),  # equal shares but for the short last batch
        (3, "lenet5", "sgd", 194),  # unequal shares, an empty one in the last batch
        (3, "mixed", "adam", 150),  # most layer kinds
        (2, "mixed", "sgd", 129),
        (3, "seq", "adam", 100),  # 1-D layers, a residual block
    ],
)
def test_float64_weights_equal_one_process(tmp_path, ranks, model, optimizer, n):
    out = str(tmp_path / "w.npz")
    proc, _, left = mpirun(ranks, "fit", out, f"--model={model}", f"--optimizer={optimizer}",
                           f"--n={n}", "--epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert not left
    want, hist = _single(model, optimizer, n=n, epochs=2)
    got = dict(np.load(out))
    assert _max_diff(got, want) < 1e-12
    for r in range(1, ranks):  # every rank holds the same model
        assert _max_diff(dict(np.load(f"{out}.rank{r}.npz")), got) == 0
    job = json.load(open(out + ".json"))
    assert job["size"] == ranks
    ours = sorted(os.sched_getaffinity(0))
    if ranks <= len(ours):  # each rank pinned to its own share of the cores
        share = len(ours) // ranks
        assert job["cores"] == [ours[r * share:(r + 1) * share] for r in range(ranks)]
    else:  # more ranks than cores: left as the launcher started them
        assert job["cores"] == [ours] * ranks
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(job["history"][key], hist[key], rtol=1e-12)


@needs_mpi
def test_own_loop_with_the_public_pieces_equals_fit(tmp_path):
    out = str(tmp_path / "w.npz")
    proc, _, left = mpirun(3, "loop", out, "--model=mixed", "--optimizer=sgd", "--n=194",
                           "--epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert not left
    want, _ = _single("mixed", "sgd", n=194, epochs=2)
    assert _max_diff(dict(np.load(out)), want) < 1e-12


@needs_mpi
def test_float32_close_to_one_process(tmp_path):
    out = str(tmp_path / "w.npz")
    proc, _, _ = mpirun(2, "fit", out, "--dtype=float32", "--n=256")
    assert proc.returncode == 0, proc.stderr
    want, _ = _single(dtype="float32", n=256)
    got = dict(np.load(out))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


@needs_mpi
def test_batch_norm_statistics_are_averaged_over_the_ranks(tmp_path):
    out = str(tmp_path / "w.npz")
    proc, _, _ = mpirun(2, "fit", out, "--model=resnet8", "--n=96", "--batch-size=32")
    assert proc.returncode == 0, proc.stderr
    states = [dict(np.load(f"{out}.rank{r}.npz")) for r in range(2)]
    assert _max_diff(states[0], states[1]) == 0
    stats = [k for k in states[0] if k.endswith("running_mean")]
    assert stats and all(np.any(states[0][k] != 0) for k in stats)
    # each rank normalizes its own share: not the one-process result
    want, _ = _single("resnet8", n=96, batch_size=32)
    assert _max_diff(states[0], want) > 1e-6


# --------------------------------------------------------------------------
# a failing rank ends the whole job
# --------------------------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "exit", "kill", "term"])
def test_a_failing_rank_ends_the_job(tmp_path, how):
    out = str(tmp_path / "w.npz")
    # 1000 steps of a small model: the failure comes mid-epoch
    proc, elapsed, left = mpirun(2, "fail", out, "--model=dense", f"--how={how}", "--step=20",
                                 "--n=16000", "--batch-size=16", "--dtype=float32")
    assert proc.returncode != 0
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end"
    assert not left, f"processes left behind: {left}"
    assert not os.path.exists(out)
    if how == "raise":
        assert "a failure on rank 1" in proc.stderr
    if how == "exit":
        assert "rank 1 exits (status 3)" in proc.stderr


@needs_mpi
def test_a_rank_leaving_its_own_loop_ends_the_job(tmp_path):
    out = str(tmp_path / "w.npz")
    proc, elapsed, left = mpirun(2, "exit-loop", out, "--model=dense", "--how=exit0",
                                 "--step=20", "--n=16000", "--batch-size=16", "--dtype=float32")
    assert proc.returncode != 0
    assert elapsed < 30
    assert not left
    assert re.search(r"rank 1 exits while other ranks are still running", proc.stderr)


@needs_mpi
def test_different_models_on_the_ranks_are_an_error(tmp_path):
    proc, elapsed, left = mpirun(2, "mismatch", str(tmp_path / "w.npz"))
    assert proc.returncode != 0
    assert "broadcast_parameters: the model of rank 1 is not rank 0's" in proc.stderr
    assert elapsed < 30 and not left


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------


@needs_mpi
def test_cli_distributed_prints_and_saves_once(tmp_path):
    from test_cli_train import _write_split

    rng = np.random.default_rng(0)
    _write_split(tmp_path, "test", 300, rng)
    save = tmp_path / "m.npz"
    args = ["train", "--model", "lenet5", "--distributed", "--epochs", "1", "--data",
            str(tmp_path), "--train-range", "0:200", "--test-range", "200:300",
            "--batch-size", "64", "--save", str(save), "--no-progress"]
    proc, _, _ = mpirun(3, *args, module="cnnext")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy") == 2  # the epoch line and the result, once
    assert "3 ranks x 1 thread" in proc.stdout
    assert save.exists()
    bad = [a if a != str(tmp_path) else str(tmp_path / "missing") for a in args]
    proc, _, _ = mpirun(2, *bad, module="cnnext")
    assert proc.returncode == 2
    assert proc.stderr.count("no MNIST data") == 1
