"""Fail early, and helpfully, when the compiled kernels are missing.

Modelled on scikit-learn's ``__check_build``: importing cnnext from a source
checkout that was never built would otherwise fail later with an obscure
error, or silently run something else.
"""
import os


_MSG = """\
cnnext's compiled kernels ({missing}) could not be imported from {where}.

{error}

It seems that cnnext has not been built correctly. If you are working in a
source checkout, install it (this compiles the Cython kernels):

    pip install .            # or:  pip install -e . --no-build-isolation

and run Python from outside the source tree (an uncompiled ``cnnext/``
directory in the current working directory shadows the installed package).
Building needs a C compiler; see README.md, "Building from source".
"""


def check_build():
    import importlib

    from ._extensions import EXTENSIONS

    where = os.path.dirname(os.path.abspath(__file__))
    for name in EXTENSIONS:
        try:
            importlib.import_module(f"cnnext.{name}")
        except ImportError as exc:
            raise ImportError(
                _MSG.format(missing=f"cnnext.{name}", where=where, error=exc)
            ) from exc
