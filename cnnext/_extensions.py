"""The compiled kernel modules, in one place.

``setup.py`` builds one extension ``cnnext.<name>`` from ``src/<name>.pyx``
for each name; the import-time build check, the tests and the wheel check
read the same tuple.  This file must stay importable on its own (``setup.py``
runs it without importing the package).
"""

#: ``cnnext.<name>`` is compiled from ``src/<name>.pyx``.
EXTENSIONS = (
    "_gemm", "_conv", "_depthwise", "_pool", "_eltwise", "_openmp", "_norm", "_winograd",
    "_winograd64",
)
