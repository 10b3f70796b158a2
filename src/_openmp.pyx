# Thread-count control for cnnext's OpenMP kernels.
# Private module: the public API is cnnext.set_num_threads / get_num_threads.

cdef extern from *:
    """
    #if CNNEXT_HAVE_OPENMP
    #include <omp.h>
    static int cnnext_omp_available(void) { return 1; }
    static int cnnext_omp_get_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int cnnext_omp_available(void) { return 0; }
    static int cnnext_omp_get_max_threads(void) { return 1; }
    #endif
    """
    int cnnext_omp_available() noexcept nogil
    int cnnext_omp_get_max_threads() noexcept nogil


def openmp_available():
    """True when the extension was compiled with OpenMP."""
    return bool(cnnext_omp_available())


def get_max_threads():
    """OpenMP's current maximum team size for the calling thread."""
    return cnnext_omp_get_max_threads()

