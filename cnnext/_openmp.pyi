"""Type stubs for the compiled OpenMP thread-count helpers (``src/_openmp.pyx``).

Private module: the public API is :func:`cnnext.set_num_threads` and
:func:`cnnext.get_num_threads`.
"""

# Cython's doctest registry, present on every compiled module.
__test__: dict[str, str]

def openmp_available() -> bool: ...
def get_max_threads() -> int: ...
