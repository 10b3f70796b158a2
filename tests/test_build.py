"""Smoke tests of the build: the kernels are compiled, and installed.

With ``cnnext/`` at the repository root holding only ``.py`` files, a test
run could silently import the uncompiled source tree; these tests fail
loudly if that happens, and check that a missing extension gives a helpful
ImportError rather than a late NameError.
"""
import importlib
import importlib.machinery
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnext
from cnnext._extensions import EXTENSIONS as COMPILED

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", COMPILED)
def test_kernel_modules_are_compiled_extensions(name):
    mod = importlib.import_module(f"cnnext.{name}")
    path = Path(mod.__file__)
    assert any(
        path.name.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES
    ), f"cnnext.{name} was loaded from {path}, which is not a compiled extension"
    assert isinstance(mod.__spec__.loader, importlib.machinery.ExtensionFileLoader)
    # Sits next to the package it belongs to.
    assert path.parent == Path(cnnext.__file__).parent


def test_package_is_imported_from_site_packages_not_source_tree():
    pkg = Path(cnnext.__file__).resolve().parent
    assert pkg != (REPO_ROOT / "cnnext").resolve(), (
        f"cnnext was imported from the source tree {pkg}; the tests must run "
        f"against the installed package (pip install . && pytest)"
    )
    assert "site-packages" in pkg.parts or "dist-packages" in pkg.parts, pkg


def test_openmp_module_reports_consistently():
    from cnnext import _openmp

    assert isinstance(_openmp.openmp_available(), bool)
    assert _openmp.get_max_threads() >= 1
    if not _openmp.openmp_available():
        assert cnnext.get_num_threads() == 1


def test_missing_extensions_raise_importerror_with_build_instructions(tmp_path):
    # A copy of the package's Python files only: what an unbuilt source
    # checkout looks like.
    src = Path(cnnext.__file__).parent
    dst = tmp_path / "cnnext"
    dst.mkdir()
    copied = []
    for f in src.glob("*.py"):
        shutil.copy2(f, dst / f.name)
        copied.append(f.name)
    assert "__init__.py" in copied and "_check_build.py" in copied
    assert not any(
        p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) for p in dst.iterdir()
    )
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import cnnext"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, "importing an unbuilt copy of cnnext succeeded"
    err = proc.stderr
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert "ImportError" in err, err
    assert "NameError" not in err and "AttributeError" not in last, err
    # The message says which module is missing, where it looked, and how to build.
    assert "cnnext._conv" in err, err
    assert str(dst) in err, err
    assert "pip install" in err, err
    assert "has not been built" in err, err


def test_unbuilt_copy_imports_when_extensions_present(tmp_path):
    """Control for the test above: the same copy *with* the extensions imports.

    Shows the failure above is caused by the missing compiled modules, not
    by the copying or the sys.path manipulation.
    """
    src = Path(cnnext.__file__).parent
    dst = tmp_path / "cnnext"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    # auditwheel/delvewheel-repaired wheels keep the bundled OpenMP runtime
    # in a sibling cnnext.libs/ folder that the extensions load by rpath.
    libs = src.parent / "cnnext.libs"
    if libs.is_dir():
        shutil.copytree(libs, tmp_path / "cnnext.libs")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import cnnext; "
        f"print(cnnext.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).parent == dst


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_import_leaves_omp_wait_policy_as_the_user_set_it(user_value):
    """cnnext sets OMP_WAIT_POLICY=PASSIVE only while its OpenMP runtime
    loads (idle workers then sleep instead of spinning), and leaves the
    environment as it found it for other runtimes loaded later."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value is not None:
        env["OMP_WAIT_POLICY"] = user_value
    code = "import os, cnnext; print(os.environ.get('OMP_WAIT_POLICY'))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
        cwd=Path(cnnext.__file__).parent.parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(user_value)
