"""Run the docstring examples of the *installed* cnnext modules.

Every public function carries a runnable Example (STYLE.md); a wrong example
is a documentation bug users copy.  Modules that do not exist yet (or cannot
be imported) are skipped, not silently passed.
"""
import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import cnnext

CORE = ("functional", "reference", "_config")
OPTIONAL = ("nn", "optim", "train", "datasets", "compat", "losses")


def _modules(modname):
    """The module, and every submodule if it is a package."""
    mod = importlib.import_module(f"cnnext.{modname}")
    mods = [mod]
    if hasattr(mod, "__path__"):
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"{mod.__name__}."):
            mods.append(importlib.import_module(info.name))
    return mods


def _run(modname):
    installed = Path(cnnext.__file__).resolve().parent
    failed = attempted = 0
    for mod in _modules(modname):
        # The installed copy, never the source tree (see test_build.py).
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


@pytest.mark.parametrize("modname", CORE)
def test_core_module_doctests(modname):
    result = _run(modname)
    assert result.attempted > 0, f"cnnext.{modname} has no doctest examples"
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in cnnext.{modname}"


@pytest.mark.parametrize("modname", OPTIONAL)
def test_optional_module_doctests(modname):
    if importlib.util.find_spec(f"cnnext.{modname}") is None:
        pytest.skip(f"cnnext.{modname} does not exist (yet)")
    try:
        importlib.import_module(f"cnnext.{modname}")
    except ImportError as exc:
        # A missing optional third-party dependency is a skip; a broken
        # import inside cnnext itself is a failure.
        if exc.name and not exc.name.startswith("cnnext"):
            pytest.skip(f"cnnext.{modname} needs {exc.name}: {exc}")
        raise
    result = _run(modname)
    assert result.attempted > 0, f"cnnext.{modname} has no doctest examples"
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in cnnext.{modname}"


def test_every_public_functional_has_an_example():
    from cnnext import functional as F

    missing = [
        name
        for name in F.__all__
        if callable(getattr(F, name)) and ">>>" not in (getattr(F, name).__doc__ or "")
    ]
    assert missing == []
