"""Smoke and unit tests of ``cnnext bench`` (the cnnext.bench package).

The command-line tests run the *installed* console script and
``python -m cnnext`` in a subprocess from a directory outside the
repository, on one or two cases with ``--quick``, so they take seconds.
The harness tests use fake peers with known call order and cost.  Nothing
here asserts on timings: only on what is reported and how.
"""
import doctest
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnext
from cnnext import bench
from cnnext.bench import harness, machine, report, runner
from cnnext.bench.small_calls import build_small_peers

COLUMNS = ["case", "pass", "dtype", "cnnext", "reference", "PyTorch",
           "cnnext/PyTorch", "cnnext/ref", "GFLOP/s"]
SMALL_COLUMNS = ["case", "dtype", "cnnext", "PyTorch", "cnnext/PyTorch", "numpy", "cnnext/numpy"]
SMALL_NAMES = [c.name for c in bench.cases.SMALL_CALLS]
MODULES = ["cases", "harness", "peers", "small_calls", "_tutorial", "runner", "machine",
           "report", "cli"]
# Words of internal grading that must never reach the user's output.
GRADING = ("target", "[met]", "not met", "issue")

# Hide torch from a child interpreter: ``import torch`` raises ImportError
# when sys.modules["torch"] is None, exactly as when it is not installed.
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; "
    "from cnnext.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def _torch_or_none():
    torch, _ = machine.import_torch()
    return torch


def _run(cmd, cwd):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the installed cnnext, never the source tree
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _table(stdout, first_columns, columns):
    """{row key: [cells]} of the table whose header starts with ``first_columns``."""
    lines = stdout.splitlines()
    k = len(first_columns)
    start = next(i for i, ln in enumerate(lines) if ln.split()[:k] == first_columns)
    header = lines[start]
    for col in columns:
        assert col in header.split(), f"column {col!r} missing from {header!r}"
    assert set(lines[start + 1]) <= {"-", " "}
    rows = {}
    for line in lines[start + 2:]:
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        if not line.strip() or not line.startswith(cells[0]) or len(cells) < len(columns) - 2:
            break
        rows[tuple(cells[:k])] = cells
    return rows


def _table_rows(stdout):
    return _table(stdout, ["case", "pass", "dtype"], COLUMNS)


def _small_rows(stdout):
    return _table(stdout, ["case", "dtype"], SMALL_COLUMNS)


def _assert_no_grading(text):
    low = text.lower()
    for word in GRADING:
        assert word not in low, f"{word!r} in the output:\n{text}"


def _script():
    exe = Path(sys.executable).with_name("cnnext")
    if not exe.exists():
        pytest.skip(f"console script not found next to {sys.executable}")
    return str(exe)


@pytest.fixture
def outside(tmp_path):
    """A working directory outside the repository (no source tree on sys.path)."""
    repo = Path(__file__).resolve().parent.parent
    assert repo not in tmp_path.parents
    return tmp_path


# ---- the package --------------------------------------------------------------


def test_package_layout():
    """One module per job, each small enough to read; the old single file is gone."""
    pkg = Path(bench.__file__).parent
    assert pkg.name == "bench" and Path(bench.__file__).name == "__init__.py"
    assert not (pkg.parent / "bench.py").exists()
    for name in MODULES:
        mod = importlib.import_module(f"cnnext.bench.{name}")
        lines = Path(mod.__file__).read_text().count("\n")
        assert lines < 800, f"cnnext/bench/{name}.py has {lines} lines"
        assert mod.__doc__, f"cnnext.bench.{name} has no docstring"
    for name in bench.__all__:
        assert hasattr(bench, name), name
    assert bench.main is importlib.import_module("cnnext.bench.cli").main


def test_import_is_cheap_and_torch_free(outside):
    code = ("import sys, cnnext.bench; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'scipy', 'cnnext.nn') "
            "if m in sys.modules))")
    assert _run([sys.executable, "-c", code], outside).strip() == "[]"


def test_removed_code_stays_removed():
    """No fallback LeNet step from functional + a numpy Adam (the nn path always exists)."""
    for name in ("_lenet_functional_step", "_NumpyAdam"):
        assert not any(hasattr(importlib.import_module(f"cnnext.bench.{m}"), name)
                       for m in MODULES)


# ---- the command line ---------------------------------------------------------


def test_console_script_quick_json(outside):
    out_json = outside / "bench.json"
    stdout = _run(
        [_script(), "bench", "--quick", "--cases", "seed-mnist,linear-b1,seed-step",
         "--threads", "1", "--json", str(out_json)],
        outside,
    )
    _assert_no_grading(stdout)
    rows = _table_rows(stdout)
    assert set(rows) == {("seed-mnist", "fwd", "float32"), ("seed-mnist", "fwd+bwd", "float32")}
    assert "geomean cnnext/reference" in stdout
    assert set(_small_rows(stdout)) == {("seed-step", "float32"), ("linear-b1", "float32")}
    assert "other processes kept" in stdout

    doc = json.loads(out_json.read_text())
    assert doc["schema"] == "cnnext-bench/2"
    assert "targets" not in doc
    assert set(doc) >= {"command", "created", "elapsed_s", "other_processes_cores", "machine",
                        "settings", "results", "small_calls", "scaling", "summary",
                        "small_calls_other_processes_cores"}
    m = doc["machine"]
    assert m["cores"] >= 1 and m["cpu_model"]
    assert m["versions"]["numpy"] == np.__version__
    assert m["versions"]["cnnext"]
    assert "numpy" in m["blas"] and "scipy" in m["blas"]
    assert m["threads"]["cnnext"] == 1
    assert doc["settings"]["threads"] == 1 and doc["settings"]["quick"] is True
    res = {(r["case"], r["pass"]): r for r in doc["results"]}
    assert set(res) == {("seed-mnist", "fwd"), ("seed-mnist", "fwd+bwd")}
    torch_there = _torch_or_none() is not None
    for r in res.values():
        cn, ref = r["cnnext"], r["reference"]
        assert cn["status"] == "ok" and ref["status"] == "ok"
        assert 0 < cn["min"] <= cn["median"] < 1.0
        assert r["ratio_reference"] == pytest.approx(cn["median"] / ref["median"])
        # GFLOP/s of N=1, C=1, 28x28 -> 26x26, 8 filters, 3x3.
        fwd_flops = 2 * 1 * 8 * 26 * 26 * 1 * 3 * 3
        assert r["flops"] == fwd_flops * (3 if r["pass"] == "fwd+bwd" else 1)
        assert r["gflops"] == pytest.approx(r["flops"] / cn["median"] / 1e9)
        if torch_there:
            assert r["pytorch"]["status"] == "ok"
            assert m["threads"]["torch"] == 1
            assert r["ratio_pytorch"] == pytest.approx(cn["median"] / r["pytorch"]["median"])
        else:
            assert r["pytorch"]["status"] == "not installed"
    small = {r["case"]: r for r in doc["small_calls"]}
    assert set(small) == {"seed-step", "linear-b1"}
    lin = small["linear-b1"]
    assert (lin["group"], lin["dtype"], lin["threads"]) == ("small-calls", "float32", 1)
    assert set(lin) >= {"what", "cnnext", "numpy", "ratio_numpy", "ratio_pytorch", "impl",
                        "noisy"}
    assert "pytorch" not in lin and lin["ratio_pytorch"] is None
    assert lin["ratio_numpy"] == pytest.approx(lin["cnnext"]["median"] / lin["numpy"]["median"])
    # Samples of microsecond calls are loops of many calls (>= 200 us each).
    assert lin["cnnext"]["number"] * lin["cnnext"]["min"] >= 100e-6
    step = small["seed-step"]
    if torch_there:
        assert step["ratio_pytorch"] == pytest.approx(
            step["cnnext"]["median"] / step["pytorch"]["median"])
    else:
        assert step["pytorch"] == {"status": "not installed"} and step["ratio_pytorch"] is None


def test_python_m_from_outside(outside):
    stdout = _run([sys.executable, "-m", "cnnext", "bench", "--quick", "--cases", "seed-mnist",
                   "--dtype", "float64", "--passes", "fwd"], outside)
    rows = _table_rows(stdout)
    assert list(rows) == [("seed-mnist", "fwd", "float64")]
    cells = rows[("seed-mnist", "fwd", "float64")]
    assert cells[3].endswith(("us", "ms", " s"))
    if _torch_or_none() is None:
        assert cells[5] == "not installed"
    assert "small calls" not in stdout


def test_quick_run_covers_every_section_without_grading(capsys, tmp_path):
    """The default --quick run: both tables, geomeans, JSON and plot; no grading text."""
    out_json, out_png = tmp_path / "q.json", tmp_path / "q.png"
    argv = ["--quick", "--no-progress", "--json", str(out_json)]
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    if has_mpl:
        argv += ["--plot", str(out_png)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    _assert_no_grading(text)
    layer = _table_rows(text)
    assert {case for case, _, _ in layer} == {c for c in bench.cases.QUICK_CASES
                                               if c not in SMALL_NAMES}
    assert {dt for _, _, dt in layer} == {"float32"}
    assert {p for _, p, _ in layer} == {"fwd", "fwd+bwd", "step"}
    small = _small_rows(text)
    quick_small = [c for c in bench.cases.QUICK_CASES if c in SMALL_NAMES]
    # The quick run leaves out the rows that only break a call down by level.
    assert quick_small == [c.name for c in bench.cases.SMALL_CALLS if "inner" not in c.peers]
    assert [case for case, _ in small] == quick_small
    assert small[("seed-step-compat", "float64")][5].endswith(("ms", " s"))  # tutorial numpy
    assert "cnnext is" in text and "faster" in text  # vs the tutorial's numpy code
    doc = json.loads(out_json.read_text())
    assert [r["case"] for r in doc["small_calls"]] == quick_small
    _assert_no_grading(json.dumps({k: v for k, v in doc.items() if k != "machine"}))
    if has_mpl:
        assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_small_calls_at_one_thread(capsys):
    argv = ["--quick", "--cases", "small-calls", "--threads", "1", "--no-progress"]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "small calls, one image at a time (1 thread;" in text
    assert "case  " not in text.split("small calls")[0]  # no layer table
    assert "timing: medians" not in text  # nor its timing line
    rows = _small_rows(text)
    assert [case for case, _ in rows] == SMALL_NAMES
    torch_there = _torch_or_none() is not None
    calls = {c.name: c for c in bench.cases.SMALL_CALLS}
    for (case, _), cells in rows.items():
        # case, dtype, cnnext, PyTorch, cnnext/PyTorch, numpy, cnnext/numpy,
        # inner call, cnnext - inner
        assert cells[2].endswith(("us", "ms")), cells
        has_torch = "pytorch" in calls[case].peers
        has_numpy = "numpy" in calls[case].peers
        has_inner = "inner" in calls[case].peers
        if has_torch and torch_there:
            assert float(cells[4]) > 0, cells
        else:
            assert cells[4] == "-", cells
        assert (cells[6] != "-") == has_numpy, cells
        assert (cells[8] != "-") == has_inner, cells
        if has_inner:
            assert cells[8].endswith(" us") and cells[8][0] in "+-", cells
    assert "other processes kept" in text


def test_torch_hidden_says_not_installed(outside):
    stdout = _run([sys.executable, "-c", NO_TORCH, "bench", "--quick", "--cases",
                   "seed-mnist,seed-fwd", "--threads", "1"], outside)
    assert "torch not installed" in stdout.splitlines()[0]
    rows = _table_rows(stdout)
    assert len(rows) == 2
    for cells in rows.values():
        # cnnext, reference, PyTorch, cnnext/PyTorch, cnnext/ref
        assert cells[5] == "not installed", cells
        assert cells[6] == "-", cells
        assert float(cells[7]) > 0, cells
    (cells,) = _small_rows(stdout).values()
    assert cells[3] == "not installed" and cells[4] == "-", cells


def test_list_shows_groups(capsys):
    assert bench.main(["--list"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("small-calls:"))
    assert line.split(":", 1)[1].strip().split(", ") == SMALL_NAMES
    assert any(ln.startswith("conv:") and "seed-mnist" in ln for ln in text.splitlines())


def test_cli_rejects_bad_arguments(capsys):
    assert bench.main(["--cases", "no-such-case"]) == 2
    assert "matches no case" in capsys.readouterr().err
    assert bench.main(["--passes", "sideways"]) == 2
    assert "--passes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--threads", "0"])


def test_plot_without_matplotlib_is_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert bench.main(["--quick", "--cases", "seed-mnist", "--plot", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "not installed" in err
    assert not (tmp_path / "r.png").exists()


def test_memory_and_no_torch_in_process(capsys, tmp_path):
    out = tmp_path / "m.json"
    argv = ["--quick", "--cases", "seed-mnist", "--dtype", "float32", "--passes", "fwd",
            "--memory", "--no-torch", "--threads", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "cnnext peak MiB" in text and "not used (--no-torch)" in text
    (row,) = json.loads(out.read_text())["results"]
    # One call allocates at least its float32 output, (1, 8, 26, 26).
    assert row["cnnext"]["traced_peak_bytes"] >= 8 * 26 * 26 * 4
    assert row["reference"]["traced_peak_bytes"] >= 8 * 26 * 26 * 4
    assert row["pytorch"] == {"status": "not used (--no-torch)"}


def test_scaling_section(capsys):
    argv = ["--quick", "--scaling", "--cases", "seed-mnist", "--dtype", "float64",
            "--threads", "2", "--no-torch"]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    _assert_no_grading(text)
    assert "thread scaling, fwd+bwd, 1 vs 2 threads" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("seed-mnist"))
    cells = [c.strip() for c in line.split("  ") if c.strip()]
    # case, dtype, cnnext 1t, cnnext 2t, speed-up, PyTorch 1t, PyTorch 2t, speed-up
    assert cells[4].endswith("x") and float(cells[4][:-1]) >= 0, cells
    assert cells[5] == cells[6] == "not used (--no-torch)", cells


def test_runs_without_scipy(outside):
    """scipy is not a runtime dependency: the bench must not need it."""
    hide = NO_TORCH.replace("sys.modules['torch'] = None",
                            "sys.modules['torch'] = None; sys.modules['scipy'] = None")
    stdout = _run([sys.executable, "-c", hide, "bench", "--quick", "--cases", "seed-mnist",
                   "--dtype", "float32", "--passes", "fwd", "--threads", "1"], outside)
    assert "scipy not installed" in stdout.splitlines()[0]
    assert list(_table_rows(stdout)) == [("seed-mnist", "fwd", "float32")]


# ---- the importable API ---------------------------------------------------------


def test_select_cases_patterns():
    names = lambda pats: [c.name for c in bench.select_cases(pats)]  # noqa: E731
    assert names(None) == [c.name for c in bench.ALL_CASES]
    netplan = [c.name for c in bench.cases.NETPLAN_CALLS]
    onnx_names = [c.name for c in bench.cases.ONNX_CALLS]
    assert [c.name for c in bench.ALL_CASES] == ([c.name for c in bench.SUITE] + SMALL_NAMES
                                                 + netplan + onnx_names)
    assert names("netplan") == netplan
    assert names("seed-mnist") == ["seed-mnist"]
    assert names("lenet") == ["lenet-conv1", "lenet-conv2", "lenet5-train", "lenet5-infer-b1",
                              "lenet5-infer-b64", "onnx-lenet5-b1", "onnx-lenet5-b64",
                              "onnx-mobilenet-b1", "onnx-mobilenet-b64"]
    assert names("onnx") == onnx_names
    assert names("*-3x3") == ["cifar-3x3", "resnet-3x3", "vgg-3x3", "vgg-c256-3x3"]
    assert names("avgpool,strided") == ["strided", "avgpool-2x2"]
    assert names("small-calls") == SMALL_NAMES
    assert names("small") == SMALL_NAMES + [n for n in netplan if "small" in n]
    assert names("small-calls,lenet5-train") == ["lenet5-train"] + SMALL_NAMES
    # A case name or group is matched exactly; other patterns as substrings.
    assert names("seed-step") == ["seed-step"]
    assert names("seed-step*") == ["seed-step", "seed-step-compat", "seed-step-plan"]
    assert names("conv") == [c.name for c in bench.SUITE if c.kind == "conv"]
    assert names("maxpool") == ["maxpool-2x2", "maxpool-3x3s2p1"]
    assert names("pool") == ["maxpool-2x2", "maxpool-3x3s2p1", "avgpool-2x2", "maxpool-seed",
                             "maxpool-f", "maxpool-layer-fwd", "maxpool-layer-bwd"]
    assert names("*-layer-*") == [n for n in SMALL_NAMES if "-layer-" in n]
    assert names("nothing-like-this") == []


def test_suite_geometry():
    table = {
        "seed-mnist": (1, 1, 28, 8, 3, 1, 0),
        "lenet-conv1": (64, 1, 28, 6, 5, 1, 0),
        "lenet-conv2": (64, 6, 12, 16, 5, 1, 0),
        "cs231n": (100, 3, 31, 25, 3, 2, 1),
        "cifar-3x3": (32, 64, 32, 64, 3, 1, 1),
        "resnet-3x3": (8, 128, 28, 128, 3, 1, 1),
        "vgg-3x3": (8, 64, 56, 64, 3, 1, 1),
        "vgg-c256-3x3": (8, 256, 14, 256, 3, 1, 1),
        "strided": (32, 16, 32, 32, 3, 2, 1),
        "cifar-grouped-g4": (32, 64, 32, 64, 3, 1, 1),
        "depthwise-c64": (32, 64, 56, 64, 3, 1, 1),
        "conv-5x5": (32, 32, 32, 64, 5, 1, 2),
        "3x3-dilated": (16, 64, 32, 64, 3, 1, 2),
        "transposed-4x4s2": (16, 64, 16, 32, 4, 2, 1),
        "pointwise-1x1": (32, 256, 28, 64, 1, 1, 0),
        "stem-7x7s2": (8, 3, 112, 64, 7, 2, 3),
    }
    conv = {c.name: (c.N, c.C, c.H, c.C_out, c.kernel, c.stride, c.padding)
            for c in bench.SUITE if c.kind == "conv"}
    assert conv == table
    cs = next(c for c in bench.SUITE if c.name == "cs231n")
    assert cs.out_size == 16  # (31 + 2 - 3) // 2 + 1
    assert cs.flops("fwd") == 2 * 100 * 25 * 16 * 16 * 3 * 9
    assert cs.flops("fwd+bwd") == 3 * cs.flops("fwd")
    gr = next(c for c in bench.SUITE if c.name == "cifar-grouped-g4")
    assert gr.groups == 4 and gr.flops("fwd") == 2 * 32 * 64 * 32 * 32 * 16 * 9
    dil = next(c for c in bench.SUITE if c.name == "3x3-dilated")
    assert dil.dilation == 2 and dil.out_size == 32  # (32 + 4 - 5) // 1 + 1
    tr = next(c for c in bench.SUITE if c.name == "transposed-4x4s2")
    assert tr.transposed and tr.out_size == 32  # (16 - 1) * 2 - 2 + 4
    assert tr.flops("fwd") == 2 * 16 * 64 * 16 * 16 * 32 * 16


@pytest.mark.parametrize("case", ["3x3-dilated", "transposed-4x4s2"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_dilated_and_transposed_rows_time_the_same_work_as_pytorch(case, pass_):
    """The peers of the dilated and transposed rows compute what PyTorch
    computes (the cnnext forward equals torch's on the row's inputs)."""
    torch = pytest.importorskip("torch")
    import dataclasses

    c = dataclasses.replace(next(c for c in bench.SUITE if c.name == case), N=2)
    fns = bench.make_peers(c, pass_, "float64", torch=torch)
    fns["cnnext"]()
    fns["pytorch"]()
    from cnnext import functional as F
    from cnnext.bench.peers import _conv_inputs

    x, w, b, _ = _conv_inputs(c, np.dtype("float64"), np.random.default_rng(0))
    tf = torch.nn.functional
    if c.transposed:
        want = tf.conv_transpose2d(*(torch.from_numpy(a) for a in (x, w, b)), c.stride,
                                   c.padding).numpy()
        got = F.conv_transpose2d(x, w, b, c.stride, c.padding)
    else:
        want = tf.conv2d(*(torch.from_numpy(a) for a in (x, w, b)), c.stride, c.padding,
                         c.dilation).numpy()
        got = F.conv2d(x, w, b, c.stride, c.padding, c.dilation)
    assert got.shape == (2, c.C_out, c.out_size, c.out_size)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["seed-mnist", "maxpool-3x3s2p1", "avgpool-2x2",
                                  "resnet-head-gap", "cifar-grouped-g4"])
def test_peers_compute_the_same_thing(case, dtype):
    """The timed callables of the peers agree (same inputs, same op)."""
    c = bench.select_cases(case)[0]
    if c.N > 1:  # keep the test fast: a 4-sample version of the case
        c = bench.Case(c.name, c.kind, 4, 8, c.H, c.C_out and 8, c.kernel, c.stride, c.padding,
                       groups=c.groups)
    fns = bench.make_peers(c, "fwd", dtype, seed=3, torch=None)
    y_cn, y_ref = fns["cnnext"](), fns["reference"]()
    y_cn = y_cn[0] if isinstance(y_cn, tuple) else y_cn
    y_ref = y_ref[0] if isinstance(y_ref, tuple) else y_ref
    assert y_cn.dtype == np.dtype(dtype) and y_cn.shape == y_ref.shape
    np.testing.assert_allclose(y_cn, y_ref, rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-5)


def test_torch_global_average_pool_peer_matches_cnnext():
    torch = pytest.importorskip("torch")
    c = bench.select_cases("resnet-head-gap")[0]
    c = bench.Case(c.name, c.kind, 2, 8, c.H, c.C_out, c.kernel, c.stride, c.padding)
    fns = bench.make_peers(c, "fwd", "float64", seed=5, torch=torch)
    np.testing.assert_allclose(fns["pytorch"]().numpy(), fns["cnnext"](), rtol=1e-12)


@pytest.mark.parametrize("case", ["seed-mnist", "cifar-grouped-g4"])
def test_torch_peer_matches_cnnext(case):
    torch = pytest.importorskip("torch")
    c = bench.select_cases(case)[0]
    c = bench.Case(c.name, c.kind, 1, c.C, 12, c.C_out, c.kernel, c.stride, c.padding,
                   groups=c.groups)
    fns = bench.make_peers(c, "fwd", "float64", seed=5, torch=torch)
    np.testing.assert_allclose(fns["pytorch"]().numpy(), fns["cnnext"](), rtol=1e-10, atol=1e-12)


def _same_training(peers, names, steps, tol, adam_lr=None):
    """The peers' parameters start equal, move, and stay equal after ``steps`` calls each.

    With ``adam_lr``, at most 0.1% of a parameter's elements may differ by more than ``tol``,
    and none by more than two Adam steps each: Adam divides each update by the gradient's own
    size, so where a gradient is near float32 rounding (a weight the loss hardly depends on) two
    correct implementations take steps of a different size, up to ``adam_lr`` each.
    """
    before = {n: {k: np.array(v) for k, v in peers[n].state().items()} for n in names}
    for n in names:
        for _ in range(steps):
            peers[n].fn()
    after = {n: peers[n].state() for n in names}
    for k in before[names[0]]:
        moved = np.abs(after[names[0]][k] - before[names[0]][k]).max()
        assert moved > 1e-6, f"{k} did not move ({moved})"
        for n in names[1:]:
            np.testing.assert_array_equal(before[n][k], before[names[0]][k])
            got, want = np.asarray(after[n][k]), np.asarray(after[names[0]][k])
            if adam_lr is None:
                np.testing.assert_allclose(got, want, **tol, err_msg=f"{n} {k}")
                continue
            off = ~np.isclose(got, want, **tol)
            assert off.sum() <= max(1, want.size // 1000), f"{n} {k}: {off.sum()} elements differ"
            np.testing.assert_allclose(got, want, rtol=0, atol=2 * steps * adam_lr,
                                       err_msg=f"{n} {k}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lenet_step_peers_do_the_same_training(dtype):
    """cnnext, reference and PyTorch steps start equal and stay equal (two Adam steps)."""
    c = bench.select_cases("lenet5-train")[0]
    small = bench.Case(c.name, c.kind, 8, c.C, c.H, c.C_out, c.kernel, c.stride, c.padding,
                       passes=c.passes)
    torch = _torch_or_none()
    peers = bench.peers.build_peers(small, "step", np.dtype(dtype), np.random.default_rng(1),
                                    torch)
    names = ["cnnext", "reference"] + (["pytorch"] if torch is not None else [])
    tol = {"float32": dict(rtol=1e-3, atol=1e-5), "float64": dict(rtol=1e-7, atol=1e-10)}[dtype]
    _same_training(peers, names, 2, tol)


@pytest.mark.parametrize("threads", [1, 2])
def test_resnet8_step_peers_do_the_same_training(threads):
    """cnnext's planned resnet8 step and PyTorch's start equal and stay equal,
    also when the thread count is set after the step was made (the plan is
    made, or made again, at the call)."""
    c = bench.select_cases("resnet8-train")[0]
    small = bench.Case(c.name, c.kind, 8, c.C, 12, c.C_out, c.kernel, c.stride, c.padding,
                       passes=c.passes)
    torch = _torch_or_none()
    peers = bench.peers.build_peers(small, "step", np.dtype("float32"),
                                    np.random.default_rng(1), torch)
    names = ["cnnext"] + (["pytorch"] if torch is not None else [])
    before = cnnext.get_num_threads()
    cnnext.set_num_threads(threads)
    try:
        _same_training(peers, names, 2, dict(rtol=1e-3, atol=1e-4), adam_lr=1e-3)
    finally:
        cnnext.set_num_threads(before)
    peers["cnnext"].fn()  # the thread count changed again: a new plan
    assert peers["cnnext"].impl.endswith("planned as fit runs it")


@pytest.mark.parametrize("name", ["seed-step", "seed-step-compat"])
def test_small_call_steps_do_the_same_training(name):
    """cnnext's step, PyTorch's and (compat) the tutorial's numpy step agree."""
    call = bench.select_cases(name)[0]
    torch = _torch_or_none()
    peers = build_small_peers(call, np.dtype("float32"), np.random.default_rng(2), torch)
    names = [n for n in ("cnnext", "numpy", "pytorch") if n in peers and peers[n].fn]
    assert names[1:] == [n for n in ("numpy", "pytorch") if n in call.peers
                         and (n != "pytorch" or torch is not None)]
    tol = dict(rtol=1e-4, atol=1e-6) if name == "seed-step" else dict(rtol=1e-9, atol=1e-12)
    _same_training(peers, names, 2, tol)


def test_small_call_peers_agree_on_outputs():
    torch = _torch_or_none()
    rng = np.random.default_rng(4)
    for name in ("linear-b1", "conv2d-seed", "maxpool-seed", "seed-fwd"):
        call = bench.select_cases(name)[0]
        peers = build_small_peers(call, np.dtype("float32"), rng, torch)
        y = peers["cnnext"].fn()
        for peer in call.peers:
            if peers[peer].fn is None:
                assert torch is None and peers[peer].status == "not installed"
                continue
            other = peers[peer].fn()
            other = other.numpy() if hasattr(other, "numpy") else other
            assert other.shape == y.shape and other.dtype == y.dtype, (name, peer)
            np.testing.assert_allclose(other, y, rtol=1e-4, atol=1e-5, err_msg=name)


def test_tutorial_peer_is_the_published_code():
    """The tutorial's quirks are kept: every tied maximum gets the gradient, and the
    convolution's backprop returns None; cnnext's adapter matches it elsewhere."""
    from cnnext.bench import _tutorial
    from cnnext.compat import victorzhou

    pool = _tutorial.MaxPool2()
    x = np.array([[1.0, 2.0], [2.0, 0.0]])[:, :, None]
    assert pool.forward(x)[0, 0, 0] == 2.0
    np.testing.assert_array_equal(pool.backprop(np.array([[[7.0]]]))[:, :, 0],
                                  [[0.0, 7.0], [7.0, 0.0]])
    # Both draw their filters from numpy's global state, as the tutorial does.
    state = np.random.get_state()  # noqa: NPY002
    try:
        conv = _tutorial.Conv3x3(8)
        np.random.set_state(state)  # noqa: NPY002
        mine = victorzhou.Conv3x3(8)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    assert conv.filters.shape == (8, 3, 3)
    np.testing.assert_array_equal(mine.filters, conv.filters)
    im = np.random.default_rng(0).random((28, 28))
    np.testing.assert_allclose(conv.forward(im), mine.forward(im), rtol=1e-12, atol=1e-12)
    assert conv.backprop(np.ones((26, 26, 8)), 0.005) is None


def test_run_small_calls_rows_and_dtypes():
    rows = bench.run_small_calls(["linear-b1", "seed-step-compat"], dtypes=["float64"],
                                 quick=True, torch=None, threads=1)
    assert [(r["case"], r["dtype"]) for r in rows] == [("seed-step-compat", "float64"),
                                                      ("linear-b1", "float64")]
    compat = rows[0]
    assert compat["pytorch"] == {"status": "not installed"} and compat["ratio_pytorch"] is None
    assert compat["ratio_numpy"] == pytest.approx(
        compat["cnnext"]["median"] / compat["numpy"]["median"])
    assert "victorzhou.com" in compat["impl"]["numpy"]
    text = bench.format_small_calls(rows, others=0.0, cores=2)
    _assert_no_grading(text)
    assert "other processes kept 0.0 of 2 cores busy during these rows" in text
    assert "(1 thread;" in text


# ---- the harness -------------------------------------------------------------------


class _Clock:
    """A virtual ``time`` module and fake peers that advance it.

    Each fake call logs its name and adds its cost to the virtual clock, so
    the harness's arithmetic (calls per sample, medians, ratios) can be
    checked exactly, whatever the load on the machine.
    """

    def __init__(self):
        self.calls = []
        self.now_ns = 0

    def perf_counter_ns(self):
        return self.now_ns

    def perf_counter(self):
        return self.now_ns * 1e-9

    def peer(self, name, seconds, probe=None):
        def fn():
            self.calls.append(name)
            self.now_ns += round(seconds * 1e9)

        return harness.Peer(fn, probe=probe)


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(harness, "time", c)
    return c


def test_measure_interleaves_and_rotates(clock):
    names = ("cnnext", "pytorch", "jax", "reference")
    peers = {n: clock.peer(n, 0.01) for n in names}
    cfg = bench.BenchConfig(repeats=6, warmup=1, min_sample=0.0, ref_max_repeats=6, ref_budget=10)
    res = harness.measure(peers, cfg)
    timed = clock.calls[-24:]  # 6 rounds x 3 fast peers, then 6 reference samples
    rounds = [timed[i:i + 3] for i in range(0, 18, 3)]
    assert rounds[0] == ["cnnext", "pytorch", "jax"]
    assert rounds[1] == ["pytorch", "jax", "cnnext"]
    assert rounds[2] == ["jax", "cnnext", "pytorch"]
    assert rounds[3] == rounds[0]
    assert timed[18:] == ["reference"] * 6
    assert list(res) == list(names)
    for n in names:
        assert res[n]["status"] == "ok" and res[n]["repeats"] == 6
        assert res[n]["number"] == 1
        assert res[n]["median"] == pytest.approx(0.01)


def test_measure_ratio_direction_and_reference_budget(clock):
    peers = {
        "cnnext": clock.peer("cnnext", 0.002),
        "pytorch": clock.peer("pytorch", 0.001),
        "reference": clock.peer("reference", 0.4),
    }
    cfg = bench.BenchConfig(repeats=5, warmup=2, min_sample=0.005, ref_max_repeats=4, ref_budget=1)
    res = harness.measure(peers, cfg)
    # Calls per sample: enough to reach min_sample; the reference needs one.
    assert res["cnnext"]["number"] == 3 and res["pytorch"]["number"] == 5
    assert res["reference"]["number"] == 1
    # The reference budget (1 s at 0.4 s per call) allows 2 of its 4 samples.
    assert res["reference"]["repeats"] == 2 and res["cnnext"]["repeats"] == 5
    # 2 warm-up calls + one calibration sample of 3 calls + 5 samples of 3 calls.
    assert clock.calls.count("cnnext") == 2 + 3 + 5 * 3
    assert clock.calls.count("reference") == 1 + 2
    assert res["cnnext"]["median"] == pytest.approx(0.002)
    assert res["pytorch"]["median"] == pytest.approx(0.001)
    assert res["reference"]["median"] == pytest.approx(0.4)
    # The reference's threads (OpenBLAS spins after a product) never run just
    # before a timed sample of the fast peers: its one-call estimate comes
    # before their warm-ups, its samples after their rounds.
    assert clock.calls[0] == "reference" and clock.calls[1] == "cnnext"
    assert clock.calls[-2:] == ["reference", "reference"]
    assert "reference" not in clock.calls[1:-2]


def test_microsecond_calls_are_timed_in_loops(clock):
    """A 1 us call: each sample loops over enough calls to last >= 200 us."""
    peers = {"cnnext": clock.peer("cnnext", 1e-6), "numpy": clock.peer("numpy", 3e-6)}
    res = harness.measure(peers, bench.BenchConfig.small_calls(quick=True))
    assert 200 <= res["cnnext"]["number"] <= 400
    assert 67 <= res["numpy"]["number"] <= 134
    assert res["cnnext"]["median"] == pytest.approx(1e-6)
    assert res["numpy"]["median"] == pytest.approx(3e-6)
    # Interleaved: the timed samples alternate between the two peers.
    n_cn, n_np = res["cnnext"]["number"], res["numpy"]["number"]
    timed = clock.calls[-5 * (n_cn + n_np):]
    assert timed[:n_cn] == ["cnnext"] * n_cn and timed[n_cn:n_cn + n_np] == ["numpy"] * n_np
    assert timed[n_cn + n_np:n_cn + 2 * n_np] == ["numpy"] * n_np  # the order rotates


def test_measure_skips_slow_reference_and_reports_errors(clock):
    def broken():
        raise RuntimeError("kernel under construction")

    peers = {
        "cnnext": clock.peer("cnnext", 0.0),
        "pytorch": harness.Peer(broken),
        "reference": clock.peer("reference", 0.0, probe=lambda: 100.0),
    }
    cfg = bench.BenchConfig(repeats=3, warmup=1, min_sample=0.0, ref_limit=20.0)
    res = harness.measure(peers, cfg)
    assert res["reference"]["status"] == "skipped (slow)"
    assert "reference" not in clock.calls
    assert res["pytorch"]["status"].startswith("error: RuntimeError")
    assert res["cnnext"]["repeats"] == 3
    cfg.full_reference = True
    res = harness.measure(peers, cfg)
    assert res["reference"]["status"] == "ok"


def test_noisy_rows_are_flagged():
    def stats(median, lo):
        return {"status": "ok", "median": median, "min": lo, "repeats": 5}

    calm = {"cnnext": stats(1.0, 0.9), "pytorch": stats(2.0, 1.5)}
    assert not harness.noisy(calm)
    assert harness.noisy({**calm, "pytorch": stats(2.0, 0.5)})
    assert harness.noisy({**calm, "cnnext": stats(1.0, 0.3)})
    # The slow reference, with its few samples, does not decide.
    assert not harness.noisy({**calm, "reference": stats(9.0, 1.0)})
    assert not harness.noisy({**calm, "pytorch": {"status": "not installed"}})
    assert harness.noisy({**calm, "numpy": stats(2.0, 0.5)}, ("cnnext", "numpy"))


# ---- reporting -------------------------------------------------------------------


def test_summary_geomeans_without_grading():
    def row(case, pass_, dt, rp, rr):
        return {"case": case, "pass": pass_, "dtype": dt, "geometry": {"kind": "conv"},
                "ratio_pytorch": rp, "ratio_reference": rr}

    rows = [row("a", "fwd", "float32", 0.5, 0.1), row("b", "fwd", "float32", 2.0, 0.4),
            row("a", "fwd+bwd", "float32", 1.5, None), row("a", "fwd", "float64", 0.8, 0.2)]
    s = bench.summarize(rows)
    assert s["float32"]["pytorch"]["fwd"] == pytest.approx(1.0)
    assert s["float32"]["pytorch"]["all"] == pytest.approx(math.exp((math.log(1.5)) / 3))
    assert s["float32"]["reference"]["all"] == pytest.approx(0.2)
    assert s["float64"]["pytorch"]["fwd+bwd"] is None
    text = bench.format_summary(rows)
    assert "geomean cnnext/PyTorch, conv cases, float32: fwd 1.00, fwd+bwd 1.50" in text
    _assert_no_grading(text)


def _fake_rows(torch_ratio):
    suite = {"case": "seed-mnist", "pass": "fwd", "dtype": "float32",
             "ratio_pytorch": torch_ratio, "ratio_reference": 0.1}
    small = {"case": "linear-b1", "dtype": "float32", "ratio_pytorch": None,
             "ratio_numpy": 2.0}
    return [suite, small]


def test_plot_bars_leave_out_absent_peers():
    rows, series, bars = report._bars(_fake_rows(None))
    assert [lab for _, lab in series] == ["cnnext / reference", "cnnext / numpy"]
    # One bar per row, centred on its tick: no empty slot for PyTorch.
    assert bars == [(0.0, 0.1, "ratio_reference"), (1.0, 2.0, "ratio_numpy")]
    _, series, bars = report._bars(_fake_rows(0.5))
    assert [lab for _, lab in series] == ["cnnext / PyTorch", "cnnext / reference",
                                          "cnnext / numpy"]
    assert [x for x, _, _ in bars] == pytest.approx([-0.4 / 3, 0.4 / 3, 1.0])


def test_plot_without_torch(tmp_path):
    pytest.importorskip("matplotlib")
    rows = bench.run_suite("seed-mnist", dtypes=["float32"], passes=["fwd"], quick=True,
                           torch=None, threads=1)
    rows += bench.run_small_calls("linear-b1", quick=True, torch=None, threads=1)
    out = tmp_path / "ratios.png"
    labels = report.plot(rows, out)
    assert labels == ["cnnext / reference", "cnnext / numpy"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_docstring_examples():
    attempted = 0
    for name in ["cnnext.bench"] + [f"cnnext.bench.{m}" for m in MODULES]:
        result = doctest.testmod(importlib.import_module(name),
                                 optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, name
        attempted += result.attempted
    assert attempted >= 15


# ---- machine -----------------------------------------------------------------------


def test_blas_threads_are_pinned_and_restored():
    blas = machine.BlasThreads()
    if blas.method != "OpenBLAS via ctypes":
        pytest.skip(f"BLAS pinned by {blas.method!r}, not the OpenBLAS ctypes path")
    before = [g() for _, g in blas._handles]
    blas.set(1)
    assert [g() for _, g in blas._handles] == [1] * len(before)
    blas.restore()
    assert [g() for _, g in blas._handles] == before


def test_threads_are_restored_after_a_run():
    import cnnext

    before = cnnext.get_num_threads()
    bench.run_small_calls("maxpool-seed", quick=True, torch=None, threads=1)
    assert cnnext.get_num_threads() == before


def test_other_processes_load_estimate():
    # 10 s of wall time; all CPUs busy 25 s in total, 6 s of them ours -> 1.9 cores.
    assert machine.others_cores((100.0, 1.0), (125.0, 7.0), 10.0) == pytest.approx(1.9)
    assert machine.others_cores((100.0, 1.0), (103.0, 4.0), 10.0) == 0.0
    assert machine.others_cores(None, (1.0, 1.0), 10.0) is None
    snap = machine.cpu_snapshot()
    if sys.platform.startswith("linux"):
        busy, ours = snap
        assert busy > 0 and ours > 0
    assert runner  # the runner module is importable on its own


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_peers_compute_the_same_gradient(dtype):
    c = bench.select_cases("batchnorm-train")[0]
    assert c.kind == "batchnorm" and c.passes == ("fwd+bwd",)
    small = bench.Case(c.name, c.kind, 4, 3, 5, 0, 1, 1, 0, passes=c.passes)
    torch = pytest.importorskip("torch")
    fns = bench.make_peers(small, "fwd+bwd", dtype, seed=2, torch=torch)
    gx = fns["cnnext"]()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    assert gx.shape == (4, 3, 5, 5) and gx.dtype == np.dtype(dtype)
    np.testing.assert_allclose(gx, fns["reference"](), **tol)
    np.testing.assert_allclose(gx, fns["pytorch"]().numpy(), **tol)
