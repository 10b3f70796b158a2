"""Run the docstring examples of the *installed* cnnext modules.

Every public function carries a runnable example; a wrong example is a
documentation bug users copy.  The modules are listed explicitly: a module
that is missing or fails to import is a test failure, never a skip.  The
only skip is a module whose examples need an optional third-party package
(``cnnext.viz`` needs matplotlib) when that package is not installed.
"""
import doctest
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import cnnext

# Every module with docstring examples.  A package (compat) also runs the
# examples of each of its public submodules.
MODULES = (
    "_config",
    "functional",
    "reference",
    "nn",
    "losses",
    "optim",
    "train",
    "distributed",
    "datasets",
    "models",
    "compat",
    "bench",
    "viz",
    "interop",
    "onnx",
)
# Optional third-party packages a module's examples need.
NEEDS = {"viz": "matplotlib", "interop": "torch", "onnx": "onnx",
         "distributed": "mpi4py"}


def _modules(modname):
    """The module, and every public submodule if it is a package."""
    mod = importlib.import_module(f"cnnext.{modname}")
    mods = [mod]
    if hasattr(mod, "__path__"):
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"{mod.__name__}."):
            if not info.name.rpartition(".")[2].startswith("_"):
                mods.append(importlib.import_module(info.name))
    return mods


def _run(modname):
    installed = Path(cnnext.__file__).resolve().parent
    failed = attempted = 0
    for mod in _modules(modname):
        # The imported package's own modules, never a stray copy elsewhere.
        assert Path(mod.__file__).resolve().is_relative_to(installed), mod.__file__
        backend, threads = cnnext.get_backend(), cnnext.get_num_threads()
        try:
            with np.printoptions(legacy=False):
                res = doctest.testmod(
                    mod,
                    optionflags=doctest.NORMALIZE_WHITESPACE,
                    raise_on_error=False,
                    report=True,
                    verbose=False,
                )
        finally:
            # A doctest that changes global settings must not leak them.
            cnnext.set_backend(backend)
            cnnext.set_num_threads(threads)
        failed += res.failed
        attempted += res.attempted
    return doctest.TestResults(failed, attempted)


@pytest.mark.parametrize("modname", MODULES)
def test_module_doctests(modname):
    if modname in NEEDS:
        pytest.importorskip(NEEDS[modname])
    result = _run(modname)
    assert result.attempted > 0, f"cnnext.{modname} has no doctest examples"
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in cnnext.{modname}"


def test_every_public_module_is_listed():
    """A new public module gets its examples run: it must be added above."""
    pkg = Path(cnnext.__file__).parent
    public = {
        info.name for info in pkgutil.iter_modules([str(pkg)]) if not info.name.startswith("_")
    }
    assert public - set(MODULES) == set()


def test_every_public_functional_has_an_example():
    from cnnext import functional as F

    missing = [
        name
        for name in F.__all__
        if callable(getattr(F, name)) and ">>>" not in (getattr(F, name).__doc__ or "")
    ]
    assert missing == []
