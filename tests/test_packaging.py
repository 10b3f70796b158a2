"""Packaging checks: the cibuildwheel config, the GitHub workflows, the sdist
manifest, the type stubs and the README/CI contract.

These are fast, static checks of the files that build and ship cnnext (the
heavy end-to-end check is ``tools/check_wheel.sh``).  Checks of repository
files skip when the files are absent, e.g. when cibuildwheel runs the suite
from a copy of ``tests/`` and ``pyproject.toml`` only.
"""
import ast
import importlib
import inspect
import json
import os
import re
import sys
from pathlib import Path

import pytest

import cnnext
from cnnext._extensions import EXTENSIONS as COMPILED

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
PYPROJECT = ROOT / "pyproject.toml"
WORKFLOWS = ROOT / ".github" / "workflows"
# The supported CPython versions: cibuildwheel builds, CI test matrix and
# requires-python must all agree with this list.
PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} is not available (tests run from a copy)")
    return path


@pytest.fixture(scope="module")
def pyproject():
    with open(_need(PYPROJECT), "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def cibw(pyproject):
    return pyproject["tool"]["cibuildwheel"]


def _load_workflow(name):
    yaml = pytest.importorskip("yaml")
    path = _need(WORKFLOWS / name)
    with open(path, encoding="utf-8") as f:
        wf = yaml.safe_load(f)
    assert isinstance(wf, dict), f"{name}: not a YAML mapping"
    # YAML 1.1 reads the bare key `on` as the boolean True.
    if True in wf:
        wf["on"] = wf.pop(True)
    return wf


@pytest.fixture(scope="module")
def tests_wf():
    return _load_workflow("tests.yml")


@pytest.fixture(scope="module")
def wheels_wf():
    return _load_workflow("wheels.yml")


def _version_key(spec):
    return tuple(int(p) for p in spec.split("."))


def _lower_bound(deps, name):
    for dep in deps:
        m = re.fullmatch(rf"{name}\s*>=\s*([\d.]+)", dep.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"no '{name}>=' lower bound in {deps}")


# --------------------------------------------------------------- cibuildwheel


def test_cibuildwheel_builds_every_supported_cpython_and_no_free_threaded(cibw, pyproject):
    build = cibw["build"]
    assert build == [f"cp{v.replace('.', '')}-*" for v in PYTHONS]
    assert any(re.fullmatch(r"cp3\?\?t-\*", s) for s in cibw["skip"]), cibw["skip"]
    lowest = pyproject["project"]["requires-python"]
    assert lowest == f">={PYTHONS[0]}", lowest


def test_cibuildwheel_platforms_and_archs(cibw):
    assert set(cibw["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert set(cibw["macos"]["archs"]) == {"x86_64", "arm64"}
    assert cibw["windows"]["archs"] == ["AMD64"]
    assert "auditwheel repair" in cibw["linux"]["repair-wheel-command"]
    assert "delocate-wheel" in cibw["macos"]["repair-wheel-command"]
    assert "delvewheel repair" in cibw["windows"]["repair-wheel-command"]
    assert "delvewheel" in cibw["windows"]["before-build"]


def test_cibuildwheel_requires_openmp_everywhere(cibw):
    # A per-platform `environment` replaces the global one, so each must set it.
    envs = [cibw["environment"]] + [
        cibw[p]["environment"] for p in ("linux", "macos", "windows") if "environment" in cibw[p]
    ]
    for env in envs:
        assert env.get("CNNEXT_REQUIRE_OPENMP") == "1", env
        assert "CNNEXT_CYTHON_DEBUG" not in env, "wheels must be release builds"
    mac = cibw["macos"]
    assert "libomp" in mac["before-all"]
    assert "libomp" in mac["environment"]["CPATH"]
    assert "libomp" in mac["environment"]["LIBRARY_PATH"]


def test_cibuildwheel_tests_the_installed_wheel_not_the_source_tree(cibw, pyproject):
    assert cibw["test-command"].split()[0] == "pytest"
    # Only tests/ and pyproject.toml are copied next to the test run: the
    # uncompiled cnnext/ package directory must never be importable there.
    sources = cibw["test-sources"]
    assert "tests" in sources and "pyproject.toml" in sources
    assert not any(s.rstrip("/") in ("cnnext", ".") for s in sources), sources
    assert cibw["test-extras"] == ["test"]
    addopts = pyproject["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--import-mode=importlib" in addopts


def test_oldest_numpy_run_pins_the_declared_lower_bounds(cibw, pyproject):
    deps = pyproject["project"]["dependencies"]
    numpy_floor = _lower_bound(deps, "numpy")
    # scipy is only a test dependency (scipy.signal cross-checks).
    scipy_floor = _lower_bound(pyproject["project"]["optional-dependencies"]["test"], "scipy")
    overrides = [o for o in cibw.get("overrides", []) if "test-requires" in o]
    assert overrides, "no override runs the tests against the oldest numpy"
    pins = {}
    for o in overrides:
        for req in o["test-requires"]:
            name, _, ver = req.partition("==")
            pins[name.strip()] = ver.strip()
        select = [o["select"]] if isinstance(o["select"], str) else o["select"]
        # The oldest stack has wheels on CPython 3.10 only (and none for musl).
        assert all(s.startswith(f"cp{PYTHONS[0].replace('.', '')}-") for s in select), select
        assert not any("musllinux" in s for s in select), select
    # X.Y pins match the X.Y lower bounds exactly: the floor is what is tested.
    for name, floor in (("numpy", numpy_floor), ("scipy", scipy_floor)):
        assert name in pins, f"{name} is not pinned in the oldest-deps run"
        assert _version_key(pins[name])[:2] == _version_key(floor)[:2], (name, pins, floor)


def test_build_requires_numpy2_headers(pyproject):
    # Extensions built against numpy 2 headers run on numpy 1.x (>= the C-API
    # target, 1.23 by default) and 2.x; built against 1.x they break on 2.x.
    reqs = pyproject["build-system"]["requires"]
    floor = _lower_bound(reqs, "numpy")
    assert _version_key(floor) >= (2, 0), reqs


# ------------------------------------------------------------------ workflows


def _steps(job):
    return job.get("steps", [])


def _uses(wf):
    for job in wf["jobs"].values():
        for step in _steps(job):
            if "uses" in step:
                yield step["uses"]


def _runs(job):
    return "\n".join(step.get("run", "") for step in _steps(job))


def _matrix_keys(job):
    matrix = job.get("strategy", {}).get("matrix", {})
    keys = {k for k in matrix if k not in ("include", "exclude")}
    for entry in matrix.get("include", []):
        keys |= set(entry)
    return keys


@pytest.mark.parametrize("name", ["tests.yml", "wheels.yml"])
def test_workflow_structure(name):
    wf = _load_workflow(name)
    assert isinstance(wf.get("name"), str)
    assert wf.get("on"), f"{name}: no triggers"
    assert wf.get("permissions") == {"contents": "read"}, "least privilege by default"
    jobs = wf["jobs"]
    assert jobs
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    for job_id, job in jobs.items():
        assert "runs-on" in job, f"{name}:{job_id} has no runs-on"
        assert _steps(job), f"{name}:{job_id} has no steps"
        for need in [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", []):
            assert need in jobs, f"{name}:{job_id} needs unknown job {need!r}"
        for step in _steps(job):
            assert ("uses" in step) != ("run" in step), f"{name}:{job_id}: {step}"
        # Every ${{ matrix.X }} used by a job is defined by that job's matrix.
        job_text = json.dumps(job)
        for key in re.findall(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}", job_text):
            assert key in _matrix_keys(job), f"{name}:{job_id}: matrix.{key} undefined"
    assert "\t" not in text


@pytest.mark.parametrize("name", ["tests.yml", "wheels.yml"])
def test_workflow_actions_are_pinned_to_commit_shas(name):
    wf = _load_workflow(name)
    uses = list(_uses(wf))
    assert uses
    for u in uses:
        assert SHA_PIN.match(u), f"{name}: action {u!r} is not pinned to a full commit SHA"


@pytest.mark.parametrize("name", ["tests.yml", "wheels.yml"])
def test_workflow_matches_github_schema(name):
    """JSON-schema validation (SchemaStore's github-workflow schema, vendored
    by check-jsonschema; installed with the ``lint`` extra)."""
    pytest.importorskip("check_jsonschema")
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources

    schema_file = resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    schema = json.loads((schema_file / "github-workflows.json").read_text(encoding="utf-8"))
    yaml = pytest.importorskip("yaml")
    with open(_need(WORKFLOWS / name), encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["on"] = doc.pop(True, doc.get("on"))
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_tests_workflow_lints_builds_and_tests_everywhere(tests_wf):
    on = tests_wf["on"]
    assert "push" in on and "pull_request" in on
    jobs = tests_wf["jobs"]
    lint = [j for j in jobs.values() if "ruff check" in _runs(j)]
    assert lint, "no ruff job"
    test = jobs["test"]
    matrix = test["strategy"]["matrix"]
    assert matrix["python"] == PYTHONS
    oses = " ".join(matrix["os"])
    for family in ("ubuntu", "macos", "windows"):
        assert family in oses, f"no {family} runner in the test matrix"
    # README's contract, verbatim.
    runs = _runs(test)
    assert 'pip install ".[test]"' in runs
    assert re.search(r"^pytest$", runs, re.M)
    assert tests_wf["env"]["CNNEXT_REQUIRE_OPENMP"] == "1"
    debug = [j for j in jobs.values() if j.get("env", {}).get("CNNEXT_CYTHON_DEBUG") == "1"]
    assert len(debug) == 1, "exactly one debug (bounds-checked) build job"
    assert re.search(r"^pytest$", _runs(debug[0]), re.M)


def test_wheels_workflow_builds_natively_and_publishes_on_tags(wheels_wf, cibw):
    on = wheels_wf["on"]
    assert any(t.startswith("v") for t in on["push"]["tags"])
    jobs = wheels_wf["jobs"]
    include = jobs["wheels"]["strategy"]["matrix"]["include"]
    pairs = {(e["os"], e["arch"]) for e in include}
    archs = {a for _, a in pairs}
    assert {"x86_64", "aarch64", "arm64", "AMD64"} <= archs, pairs
    # Native runners: aarch64 on an arm runner, arm64 on Apple silicon.
    assert any("arm" in os_ for os_, a in pairs if a == "aarch64")
    for entry in include:
        if entry["os"].startswith("macos"):
            assert _version_key(entry["macos-target"]) >= (14, 0), entry
    runs = _runs(jobs["wheels"])
    assert re.search(r"cibuildwheel==\d+\.\d+\.\d+", runs), "cibuildwheel version not pinned"
    assert "python -m build --sdist" in _runs(jobs["sdist"])
    uploads = [s for j in ("wheels", "sdist") for s in _steps(jobs[j])
               if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(uploads) == 2
    publish = jobs["publish"]
    assert set(publish["needs"]) == {"wheels", "sdist"}
    assert "refs/tags/v" in publish["if"]
    assert publish["permissions"] == {"id-token": "write"}
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")
               for s in _steps(publish))
    text = (WORKFLOWS / "wheels.yml").read_text(encoding="utf-8")
    assert "secrets." not in text and "password" not in text, "trusted publishing needs no token"


# ---------------------------------------------------------- sdist and README


def test_manifest_ships_pyx_not_generated_c():
    text = _need(ROOT / "MANIFEST.in").read_text(encoding="utf-8")
    lines = [ln.split("#")[0].split() for ln in text.splitlines()]
    assert ["recursive-include", "src", "*.pyx", "*.pxd", "*.pxi", "*.h"] in lines
    excluded = {p for ln in lines if ln[:1] == ["global-exclude"] for p in ln[1:]}
    assert {"*.c", "*.so", "*.pyd"} <= excluded


def test_readme_and_ci_share_the_test_command():
    readme = _need(ROOT / "README.md").read_text(encoding="utf-8")
    ci = _need(ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for text in (readme, ci):
        assert 'pip install ".[test]"' in text
        assert re.search(r"^pytest$", text, re.M)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The README's ```python blocks run verbatim, in order, in one namespace."""
    readme = _need(ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 4, "the README's API tour has lost its examples"
    monkeypatch.chdir(tmp_path)  # the tour saves model.npz
    namespace = {"__name__": "__readme__"}
    threads = cnnext.get_num_threads()
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"README.md[python block {i}]", "exec"), namespace)
    finally:
        cnnext.set_num_threads(threads)
    assert (tmp_path / "model.npz").is_file()


def test_readme_error_example_is_current():
    readme = _need(ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"`F\.conv2d\(x, w\[:, :2\]\)` raises `ValueError: (.*?)`", readme, re.S)
    assert m, "README no longer shows the conv2d error example"
    import numpy as np

    x = np.zeros((8, 3, 32, 32), dtype=np.float32)
    w = np.zeros((16, 3, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError) as info:
        cnnext.functional.conv2d(x, w[:, :2])
    assert str(info.value) == " ".join(m.group(1).split())


def test_version_is_reported_and_changelogged(pyproject):
    version = pyproject["project"]["version"]
    assert cnnext.__version__ == version
    changelog = _need(ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[?{re.escape(version)}\]?", changelog, re.M), (
        f"CHANGELOG.md has no section for {version}"
    )


# ------------------------------------------------------- stubs and OpenMP


def test_package_ships_type_information():
    pkg = Path(cnnext.__file__).parent
    assert (pkg / "py.typed").is_file()
    for name in COMPILED:
        assert (pkg / f"{name}.pyi").is_file(), f"{name}.pyi is not installed"


def test_every_source_module_is_installed():
    """A subpackage or module missing from [tool.setuptools] packages is
    silently left out of wheels; compare the installed package with the tree."""
    src = _need(ROOT / "cnnext")
    installed = Path(cnnext.__file__).parent
    if installed.resolve() == src.resolve():
        pytest.skip("cnnext is imported from the source tree")
    missing = [
        str(f.relative_to(src))
        for f in src.rglob("*.py")
        if "__pycache__" not in f.parts and not (installed / f.relative_to(src)).is_file()
    ]
    assert not missing, f"not installed (check [tool.setuptools] packages): {missing}"


@pytest.mark.parametrize("name", COMPILED)
def test_stub_matches_compiled_module(name):
    """A quick stubtest: same public functions and classes, the functions'
    parameter names, the classes' methods."""
    pkg = Path(cnnext.__file__).parent
    stub = ast.parse((pkg / f"{name}.pyi").read_text(encoding="utf-8"))
    stub_funcs = {
        node.name: [a.arg for a in node.args.args]
        for node in stub.body
        if isinstance(node, ast.FunctionDef)
    }
    stub_classes = {
        node.name: {m.name for m in node.body if isinstance(m, ast.FunctionDef)} - {"__init__"}
        for node in stub.body
        if isinstance(node, ast.ClassDef)
    }
    mod = importlib.import_module(f"cnnext.{name}")
    runtime = {
        n: obj for n, obj in vars(mod).items() if not n.startswith("_") and callable(obj)
    }
    assert set(stub_funcs) | set(stub_classes) == set(runtime), (
        sorted(stub_funcs), sorted(stub_classes), sorted(runtime))
    for cname, methods in stub_classes.items():
        public = {m for m in vars(runtime[cname]) if not m.startswith("_")}
        assert methods == public, f"{name}.{cname}: {sorted(public)} vs stub {sorted(methods)}"
    for fname, params in stub_funcs.items():
        sig = inspect.signature(runtime[fname])
        assert list(sig.parameters) == params, f"{name}.{fname}: {sig} vs stub {params}"


def test_openmp_is_on_when_required():
    if os.environ.get("CNNEXT_REQUIRE_OPENMP", "0") in ("", "0"):
        pytest.skip("CNNEXT_REQUIRE_OPENMP is not set")
    from cnnext import _openmp

    assert _openmp.openmp_available(), (
        "CNNEXT_REQUIRE_OPENMP is set but the installed kernels were built without OpenMP"
    )
