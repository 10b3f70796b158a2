"""Smoke and unit tests of ``cnnext bench`` (cnnext/bench.py).

The command-line tests run the *installed* console script and
``python -m cnnext`` in a subprocess from a directory outside the
repository, on the smallest case with ``--quick``, so they take seconds.
The harness tests use fake peers with known call order and cost.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnext import bench

COLUMNS = ["case", "pass", "dtype", "cnnext", "reference", "PyTorch",
           "cnnext/PyTorch", "cnnext/ref", "GFLOP/s"]

# Hide torch from a child interpreter: ``import torch`` raises ImportError
# when sys.modules["torch"] is None, exactly as when it is not installed.
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; "
    "from cnnext.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def _torch_importable():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _run(cmd, cwd):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the installed cnnext, never the source tree
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _table_rows(stdout):
    """{(case, pass, dtype): [cells]} parsed from the printed table."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["case", "pass", "dtype"])
    header = lines[start]
    for col in COLUMNS:
        assert col in header.split(), f"column {col!r} missing from {header!r}"
    assert set(lines[start + 1]) <= {"-", " "}
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        rows[tuple(cells[:3])] = cells
    return rows


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


def test_console_script_quick_json(outside):
    out_json = outside / "bench.json"
    stdout = _run(
        [_script(), "bench", "--quick", "--cases", "seed-mnist", "--dtype", "float32",
         "--threads", "1", "--json", str(out_json)],
        outside,
    )
    rows = _table_rows(stdout)
    assert set(rows) == {("seed-mnist", "fwd", "float32"), ("seed-mnist", "fwd+bwd", "float32")}
    assert "geomean cnnext/reference" in stdout

    doc = json.loads(out_json.read_text())
    m = doc["machine"]
    assert m["cores"] >= 1 and m["cpu_model"]
    assert m["versions"]["numpy"] == np.__version__
    assert m["versions"]["cnnext"]
    assert "numpy" in m["blas"] and "scipy" in m["blas"]
    assert m["threads"]["cnnext"] == 1
    assert doc["settings"]["threads"] == 1
    res = {(r["case"], r["pass"]): r for r in doc["results"]}
    assert set(res) == {("seed-mnist", "fwd"), ("seed-mnist", "fwd+bwd")}
    for r in res.values():
        cn, ref = r["cnnext"], r["reference"]
        assert cn["status"] == "ok" and ref["status"] == "ok"
        assert 0 < cn["min"] <= cn["median"] < 1.0
        assert r["ratio_reference"] == pytest.approx(cn["median"] / ref["median"])
        # GFLOP/s of N=1, C=1, 28x28 -> 26x26, 8 filters, 3x3.
        fwd_flops = 2 * 1 * 8 * 26 * 26 * 1 * 3 * 3
        assert r["flops"] == fwd_flops * (3 if r["pass"] == "fwd+bwd" else 1)
        assert r["gflops"] == pytest.approx(r["flops"] / cn["median"] / 1e9)
        if _torch_importable():
            assert r["pytorch"]["status"] == "ok"
            assert m["threads"]["torch"] == 1
            assert r["ratio_pytorch"] == pytest.approx(cn["median"] / r["pytorch"]["median"])
        else:
            assert r["pytorch"]["status"] == "not installed"


def test_python_m_from_outside(outside):
    stdout = _run([sys.executable, "-m", "cnnext", "bench", "--quick", "--cases", "seed-mnist",
                   "--dtype", "float64", "--passes", "fwd"], outside)
    rows = _table_rows(stdout)
    assert list(rows) == [("seed-mnist", "fwd", "float64")]
    cells = rows[("seed-mnist", "fwd", "float64")]
    assert cells[3].endswith(("us", "ms", " s"))
    expected = "not installed" if not _torch_importable() else None
    if expected:
        assert cells[5] == expected


def test_torch_hidden_says_not_installed(outside):
    stdout = _run([sys.executable, "-c", NO_TORCH, "bench", "--quick", "--cases", "seed-mnist",
                   "--dtype", "float32", "--threads", "1"], outside)
    assert "torch not installed" in stdout.splitlines()[0]
    rows = _table_rows(stdout)
    assert len(rows) == 2
    for cells in rows.values():
        # cnnext, reference, PyTorch, cnnext/PyTorch, cnnext/ref
        assert cells[5] == "not installed", cells
        assert cells[6] == "-", cells
        assert float(cells[7]) > 0, cells


# ---- the importable API ---------------------------------------------------


def test_select_cases_patterns():
    names = lambda pats: [c.name for c in bench.select_cases(pats)]  # noqa: E731
    assert names(None) == [c.name for c in bench.SUITE]
    assert names("seed-mnist") == ["seed-mnist"]
    assert names("lenet") == ["lenet-conv1", "lenet-conv2", "lenet5-train"]
    assert names("*-3x3") == ["cifar-3x3", "resnet-3x3"]
    assert names("avgpool,strided") == ["strided", "avgpool-2x2"]
    assert names("conv") == [c.name for c in bench.SUITE if c.kind == "conv" or "conv" in c.name]
    assert names("nothing-like-this") == []


def test_suite_geometry_matches_issue_table():
    table = {
        "seed-mnist": (1, 1, 28, 8, 3, 1, 0),
        "lenet-conv1": (64, 1, 28, 6, 5, 1, 0),
        "lenet-conv2": (64, 6, 12, 16, 5, 1, 0),
        "cs231n": (100, 3, 31, 25, 3, 2, 1),
        "cifar-3x3": (32, 64, 32, 64, 3, 1, 1),
        "resnet-3x3": (8, 128, 28, 128, 3, 1, 1),
        "strided": (32, 16, 32, 32, 3, 2, 1),
    }
    conv = {c.name: (c.N, c.C, c.H, c.C_out, c.kernel, c.stride, c.padding)
            for c in bench.SUITE if c.kind == "conv"}
    assert conv == table
    cs = next(c for c in bench.SUITE if c.name == "cs231n")
    assert cs.out_size == 16  # (31 + 2 - 3) // 2 + 1
    assert cs.flops("fwd") == 2 * 100 * 25 * 16 * 16 * 3 * 9
    assert cs.flops("fwd+bwd") == 3 * cs.flops("fwd")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["seed-mnist", "maxpool-3x3s2p1", "avgpool-2x2"])
def test_peers_compute_the_same_thing(case, dtype):
    """The timed callables of the peers agree (same inputs, same op)."""
    c = bench.select_cases(case)[0]
    if c.N > 1:  # keep the test fast: a 4-sample version of the pooling case
        c = bench.Case(c.name, c.kind, 4, 8, c.H, c.C_out, c.kernel, c.stride, c.padding)
    fns = bench.make_peers(c, "fwd", dtype, seed=3, torch=None)
    y_cn, y_ref = fns["cnnext"](), fns["reference"]()
    y_cn = y_cn[0] if isinstance(y_cn, tuple) else y_cn
    y_ref = y_ref[0] if isinstance(y_ref, tuple) else y_ref
    assert y_cn.dtype == np.dtype(dtype) and y_cn.shape == y_ref.shape
    np.testing.assert_allclose(y_cn, y_ref, rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-5)


def test_torch_peer_matches_cnnext():
    torch = pytest.importorskip("torch")
    c = bench.select_cases("seed-mnist")[0]
    fns = bench.make_peers(c, "fwd", "float64", seed=5, torch=torch)
    np.testing.assert_allclose(fns["pytorch"]().numpy(), fns["cnnext"](), rtol=1e-10, atol=1e-12)


class _Clock:
    """A virtual ``time`` module and fake peers that advance it.

    Each fake call logs its name and adds its cost to the virtual clock, so
    the harness's arithmetic (calls per sample, medians, ratios) can be
    checked exactly, whatever the load on the machine.
    """

    def __init__(self):
        self.calls = []
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def peer(self, name, seconds, probe=None):
        def fn():
            self.calls.append(name)
            self.now += seconds

        return bench._Peer(fn, probe=probe)


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(bench, "time", c)
    return c


def test_measure_interleaves_and_rotates(clock):
    peers = {n: clock.peer(n, 0.01) for n in bench.PEERS}
    cfg = bench.BenchConfig(repeats=6, warmup=1, min_sample=0.0, ref_max_repeats=6, ref_budget=10)
    res = bench._measure(peers, cfg)
    timed = clock.calls[-18:]  # 6 rounds x 3 peers, one call per sample
    rounds = [timed[i:i + 3] for i in range(0, 18, 3)]
    assert rounds[0] == ["cnnext", "pytorch", "reference"]
    assert rounds[1] == ["pytorch", "reference", "cnnext"]
    assert rounds[2] == ["reference", "cnnext", "pytorch"]
    assert rounds[3] == rounds[0]
    for n in bench.PEERS:
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
    res = bench._measure(peers, cfg)
    # Calls per sample: enough to reach min_sample; the reference needs one.
    assert res["cnnext"]["number"] == 3 and res["pytorch"]["number"] == 5
    assert res["reference"]["number"] == 1
    # The reference budget (1 s at 0.4 s per call) allows 2 of its 4 samples.
    assert res["reference"]["repeats"] == 2 and res["cnnext"]["repeats"] == 5
    # 2 warm-up calls (the second one calibrates) + 5 samples of 3 calls.
    assert clock.calls.count("cnnext") == 2 + 5 * 3
    assert clock.calls.count("reference") == 1 + 2
    assert res["cnnext"]["median"] == pytest.approx(0.002)
    assert res["pytorch"]["median"] == pytest.approx(0.001)
    assert res["reference"]["median"] == pytest.approx(0.4)
    # The reference samples are spread over the rounds, not bunched at the start.
    timed = [c for c in clock.calls[-(5 * 3 + 5 * 5 + 2):]]
    ref_at = [i for i, c in enumerate(timed) if c == "reference"]
    assert ref_at[1] - ref_at[0] > 3 * 5


def test_measure_skips_slow_reference_and_reports_errors(clock):
    def broken():
        raise RuntimeError("kernel under construction")

    peers = {
        "cnnext": clock.peer("cnnext", 0.0),
        "pytorch": bench._Peer(broken),
        "reference": clock.peer("reference", 0.0, probe=lambda: 100.0),
    }
    cfg = bench.BenchConfig(repeats=3, warmup=1, min_sample=0.0, ref_limit=20.0)
    res = bench._measure(peers, cfg)
    assert res["reference"]["status"] == "skipped (slow)"
    assert "reference" not in clock.calls
    assert res["pytorch"]["status"].startswith("error: RuntimeError")
    assert res["cnnext"]["repeats"] == 3
    cfg.full_reference = True
    res = bench._measure(peers, cfg)
    assert res["reference"]["status"] == "ok"


def test_summary_geomeans():
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
    assert "[NOT met] conv fwd+bwd float32: every cnnext/PyTorch <= 1.5: worst 1.50" not in text
    assert "[met] conv fwd+bwd float32: every cnnext/PyTorch <= 1.5: worst 1.50 (a)" in text


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
    assert "thread scaling, fwd+bwd, 1 vs 2 threads" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("seed-mnist"))
    cells = [c.strip() for c in line.split("  ") if c.strip()]
    # case, dtype, cnnext 1t, cnnext 2t, speed-up, PyTorch 1t, PyTorch 2t, speed-up
    assert cells[4].endswith("x") and float(cells[4][:-1]) >= 0, cells
    assert cells[5] == cells[6] == "not used (--no-torch)", cells


def test_docstring_examples():
    import doctest

    result = doctest.testmod(bench, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lenet_step_peers_do_the_same_training(dtype):
    """cnnext, reference and PyTorch steps start equal and stay equal.

    Two Adam steps on a small batch: the timed callables do the same math,
    so the benchmark compares like with like.
    """
    c = bench.select_cases("lenet5-train")[0]
    small = bench.Case(c.name, c.kind, 8, c.C, c.H, c.C_out, c.kernel, c.stride, c.padding,
                       passes=c.passes)
    torch, _ = bench._import_torch()
    peers = bench._build_peers(small, "step", np.dtype(dtype), np.random.default_rng(1),
                               torch, False)
    names = ["cnnext", "reference"] + (["pytorch"] if torch is not None else [])
    before = {n: {k: v.copy() for k, v in peers[n].state().items()} for n in names}
    for n in names:
        for _ in range(2):
            peers[n].fn()
    after = {n: peers[n].state() for n in names}
    tol = {"float32": dict(rtol=1e-3, atol=1e-5), "float64": dict(rtol=1e-7, atol=1e-10)}[dtype]
    for k in before["cnnext"]:
        moved = np.abs(after["cnnext"][k] - before["cnnext"][k]).max()
        assert moved > 1e-4, f"{k} did not move ({moved})"  # Adam moves each entry ~lr
        for n in names[1:]:
            np.testing.assert_array_equal(before[n][k], before["cnnext"][k])
            np.testing.assert_allclose(after[n][k], after["cnnext"][k], **tol,
                                       err_msg=f"{n} {k}")


def test_noisy_rows_are_flagged():
    def stats(median, lo):
        return {"status": "ok", "median": median, "min": lo, "repeats": 5}

    calm = {"cnnext": stats(1.0, 0.9), "pytorch": stats(2.0, 1.5)}
    assert not bench._noisy(calm)
    assert bench._noisy({**calm, "pytorch": stats(2.0, 0.5)})
    assert bench._noisy({**calm, "cnnext": stats(1.0, 0.3)})
    # The slow reference, with its few samples, does not decide.
    assert not bench._noisy({**calm, "reference": stats(9.0, 1.0)})
    assert not bench._noisy({**calm, "pytorch": {"status": "not installed"}})


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "ratios.png"
    argv = ["--quick", "--cases", "seed-mnist", "--dtype", "float32", "--passes", "fwd",
            "--threads", "1", "--no-torch", "--plot", str(out)]
    assert bench.main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_blas_threads_are_pinned_and_restored():
    blas = bench._BlasThreads()
    if blas.method != "OpenBLAS via ctypes":
        pytest.skip(f"BLAS pinned by {blas.method!r}, not the OpenBLAS ctypes path")
    before = [g() for _, g in blas._handles]
    blas.set(1)
    assert [g() for _, g in blas._handles] == [1] * len(before)
    blas.restore()
    assert [g() for _, g in blas._handles] == before


def test_other_processes_load_estimate():
    # 10 s of wall time; all CPUs busy 25 s in total, 6 s of them ours -> 1.9 cores.
    assert bench._others_cores((100.0, 1.0), (125.0, 7.0), 10.0) == pytest.approx(1.9)
    assert bench._others_cores((100.0, 1.0), (103.0, 4.0), 10.0) == 0.0
    assert bench._others_cores(None, (1.0, 1.0), 10.0) is None
    snap = bench._cpu_snapshot()
    if sys.platform.startswith("linux"):
        busy, ours = snap
        assert busy > 0 and ours > 0


def test_runs_without_scipy(outside):
    """scipy is not a runtime dependency: the bench must not need it."""
    hide = NO_TORCH.replace("sys.modules['torch'] = None",
                            "sys.modules['torch'] = None; sys.modules['scipy'] = None")
    stdout = _run([sys.executable, "-c", hide, "bench", "--quick", "--cases", "seed-mnist",
                   "--dtype", "float32", "--passes", "fwd", "--threads", "1"], outside)
    assert "scipy not installed" in stdout.splitlines()[0]
    assert list(_table_rows(stdout)) == [("seed-mnist", "fwd", "float32")]
