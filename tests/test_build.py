"""Smoke tests of the build: the kernels are compiled, and installed.

The tests run against the installed package: either a regular install
(``pip install .``, the package in site-packages) or an editable install
(``pip install -e .``, the source tree itself with the kernels compiled in
place).  They fail loudly if an unbuilt source tree or a stray copy is
imported instead, and check that a missing extension gives a helpful
ImportError rather than a late NameError.
"""
import importlib
import importlib.machinery
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

import cnnext
from cnnext._extensions import EXTENSIONS as COMPILED

REPO_ROOT = Path(__file__).resolve().parent.parent
# Subprocesses below import an unbuilt copy of cnnext.  In an environment
# with an editable install, setuptools' import hook would complete that copy
# with the kernels of the editable source tree; without the hook, the copy
# is what an unbuilt clone is for a user with a regular install.
NO_EDITABLE_HOOK = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
    "if not getattr(f, '__module__', '').startswith('__editable__')]; "
)


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


def test_tests_run_against_the_installed_package():
    """The imported cnnext is the installed distribution's: its package in
    site-packages, or for an editable install the source tree it points at."""
    pkg = Path(cnnext.__file__).resolve().parent
    dist = importlib.metadata.distribution("cnnext")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        source = Path(url2pathname(urlparse(direct_url["url"]).path)).resolve()
        assert pkg == source / "cnnext", (
            f"cnnext was imported from {pkg}, not from the editable install's source tree "
            f"{source}"
        )
    else:
        installed = Path(dist.locate_file("cnnext")).resolve()
        assert pkg == installed, (
            f"cnnext was imported from {pkg}, not from the installed package {installed} "
            f"(an unbuilt source tree in the current directory shadows it?)"
        )


def test_openmp_module_reports_consistently():
    from cnnext import _openmp

    assert isinstance(_openmp.openmp_available(), bool)
    assert _openmp.get_max_threads() >= 1
    if not _openmp.openmp_available():
        assert cnnext.get_num_threads() == 1


def _unbuilt_copy(parent):
    """A copy of the package's Python files only: an unbuilt source checkout."""
    src = Path(cnnext.__file__).parent
    dst = parent / "cnnext"
    dst.mkdir(parents=True)
    for f in src.glob("*.py"):
        shutil.copy2(f, dst / f.name)
    assert (dst / "__init__.py").is_file() and (dst / "_check_build.py").is_file()
    assert not any(
        p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) for p in dst.iterdir()
    )
    return dst


def _import_error(code, cwd):
    """stderr of ``python -c code`` run in ``cwd``, which must fail with an ImportError."""
    proc = subprocess.run(
        [sys.executable, "-c", NO_EDITABLE_HOOK + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, "importing an unbuilt copy of cnnext succeeded"
    err = proc.stderr
    assert "\nImportError: " in err, err
    assert "NameError" not in err and "AttributeError" not in err, err
    return err


def _message(err):
    """The text of the last ImportError in a traceback."""
    return err[err.rindex("ImportError: ") + len("ImportError: "):]


def test_unbuilt_tree_elsewhere_says_not_built(tmp_path):
    dst = _unbuilt_copy(tmp_path / "checkout")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = f"sys.path.insert(0, {str(dst.parent)!r}); import cnnext"
    msg = _message(_import_error(code, cwd=elsewhere))
    # Which module is missing, where it looked, and how to build.
    assert msg.startswith(
        f"cnnext's compiled kernels (cnnext.{COMPILED[0]}) could not be imported"
    ), msg
    assert str(dst) in msg, msg
    assert "has not been built" in msg and "pip install -e ." in msg, msg
    assert "shadows" not in msg, msg


def test_unbuilt_tree_in_current_directory_says_it_shadows(tmp_path):
    """``python -c "import cnnext"`` in the root of an unbuilt clone."""
    dst = _unbuilt_copy(tmp_path)
    msg = _message(_import_error("import cnnext", cwd=tmp_path))
    # First: what happened and what to do.
    assert msg.startswith(f"cnnext is being imported from {dst},\na source tree under"), msg
    first = " ".join(msg[: msg.index("pip install -e .")].split())
    assert "shadows" in first and "another directory (cd elsewhere)" in first, msg
    # Then the failing import.
    assert f"Importing cnnext.{COMPILED[0]} failed" in msg, msg
    assert "has not been built" not in msg, msg


def test_python_m_pytest_in_an_unbuilt_clone_says_it_shadows(tmp_path):
    """``python -m pytest`` puts the current directory first on sys.path, as
    ``python -c`` does (run here through ``-c`` to remove the editable hook)."""
    _unbuilt_copy(tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_smoke.py").write_text("import cnnext\n")
    code = "import pytest; sys.exit(pytest.main(['-p', 'no:cacheprovider', 'tests']))"
    proc = subprocess.run(
        [sys.executable, "-c", NO_EDITABLE_HOOK + code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout
    out = proc.stdout
    assert "ImportError: cnnext is being imported from" in out, out
    assert "a source tree under the current" in out and "pip install -e ." in out, out


def test_unbuilt_copy_imports_when_extensions_present(tmp_path):
    """Control for the tests above: the same copy *with* the extensions imports.

    Shows the failures above are caused by the missing compiled modules, not
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
        f"sys.path.insert(0, {str(tmp_path)!r}); import cnnext; "
        f"print(cnnext.__file__)"
    )
    for cwd in (tmp_path, tmp_path.parent):
        proc = subprocess.run(
            [sys.executable, "-c", NO_EDITABLE_HOOK + code],
            cwd=cwd, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert Path(proc.stdout.strip()).parent == dst


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_import_leaves_omp_wait_policy_as_the_user_set_it(user_value, tmp_path):
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
        cwd=tmp_path,  # outside the clone, which may sit in a directory named cnnext
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(user_value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("preload,user_value,expected", [
    (False, None, "PASSIVE"), (True, None, "None"), (True, "active", "active")])
def test_wait_policy_records_a_runtime_loaded_before_cnnext(preload, user_value, expected,
                                                            tmp_path):
    """A runtime already loaded (PyTorch's, say) keeps the policy it started
    with: cnnext records that it could not set PASSIVE (None), and the bench
    says so."""
    import os

    pytest.importorskip("cnnext._openmp")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value is not None:
        env["OMP_WAIT_POLICY"] = user_value
    code = ("import ctypes, sys\n"
            "if sys.argv[1] == '1':\n"
            "    try:\n"
            "        ctypes.CDLL('libgomp.so.1')\n"
            "    except OSError:\n"
            "        print('no-libgomp'); sys.exit()\n"
            "import cnnext\n"
            "print(cnnext._config.OMP_WAIT_POLICY)\n")
    proc = subprocess.run([sys.executable, "-c", code, "1" if preload else "0"],
                          capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.strip() == "no-libgomp":
        pytest.skip("no libgomp.so.1 to load first")
    assert proc.stdout.strip() == expected
