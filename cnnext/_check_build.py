"""Fail early, and helpfully, when the compiled kernels are missing.

Modelled on scikit-learn's ``__check_build``: importing cnnext from a source
checkout that was never built would otherwise fail later with an obscure
error, or silently run something else.

The usual cause is a clone's uncompiled ``cnnext/`` directory in the current
directory, which Python imports before the installed package (``python -c``,
``python -m pytest`` and the interactive interpreter all put the current
directory first on ``sys.path``); the message says so first when that is
the case.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys

from ._extensions import EXTENSIONS

_SHADOWED = """\
cnnext is being imported from {where},
a source tree under the current directory that has no compiled kernels;
it shadows {installed}.

To fix it, either run Python (or pytest) from another directory (cd
elsewhere), or build the kernels in this source tree with an editable
install, the way to work in a clone of cnnext:

    pip install -e .

(Importing {missing} failed: {error})
"""

_NOT_BUILT = """\
cnnext's compiled kernels ({missing}) could not be imported from {where}.

{error}

It seems that cnnext has not been built correctly. Install it, which
compiles the Cython kernels:

    pip install cnnext      # or, in a clone of the repository:  pip install -e .

Building needs a C compiler; see README.md, "Building from source".
"""


def _has_compiled_modules(folder: str) -> bool:
    """Whether ``folder`` holds any compiled extension module."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    try:
        return any(name.endswith(suffixes) for name in os.listdir(folder))
    except OSError:
        return False


def _installed_elsewhere(package_dir: str) -> str | None:
    """Directory of another ``cnnext`` package on ``sys.path``, or None."""
    parent = os.path.dirname(os.path.realpath(package_dir))
    others = [p for p in sys.path if os.path.realpath(p or os.curdir) != parent]
    try:
        spec = importlib.machinery.PathFinder.find_spec("cnnext", others)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def _is_shadowing_source_tree(package_dir: str) -> bool:
    """An uncompiled source tree under the current directory."""
    try:
        cwd = os.path.realpath(os.getcwd())
        under_cwd = os.path.commonpath([cwd, os.path.realpath(package_dir)]) == cwd
    except (OSError, ValueError):  # no current directory; another drive (Windows)
        return False
    return under_cwd and not _has_compiled_modules(package_dir)


def _message(package_dir: str, missing: str, error: ImportError) -> str:
    if _is_shadowing_source_tree(package_dir):
        other = _installed_elsewhere(package_dir)
        installed = (
            f"the cnnext installed in {other}" if other else "any installed cnnext"
        )
        return _SHADOWED.format(
            where=package_dir, installed=installed, missing=missing, error=error
        )
    return _NOT_BUILT.format(missing=missing, where=package_dir, error=error)


def check_build() -> None:
    """Import the compiled modules; ImportError with what to do if one is missing."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for name in EXTENSIONS:
        try:
            importlib.import_module(f"cnnext.{name}")
        except ImportError as exc:
            raise ImportError(_message(package_dir, f"cnnext.{name}", exc)) from exc
