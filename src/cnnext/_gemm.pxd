# The GEMM building blocks other kernel modules use (defined in src/_gemm.pyx).
from cython cimport floating
from cnnext._common cimport cnx_kernels


cdef const cnx_kernels* kernels() noexcept nogil
cdef void* alloc_scratch(Py_ssize_t nbytes) except NULL
cdef void pack_a(const floating* src, Py_ssize_t rs, Py_ssize_t cs,
                 Py_ssize_t m, Py_ssize_t k, Py_ssize_t MR, floating* dst) noexcept nogil
cdef void gemm_st(Py_ssize_t M, Py_ssize_t N, Py_ssize_t Kd,
                  const floating* A, Py_ssize_t rsa, Py_ssize_t csa,
                  const floating* B, Py_ssize_t rsb, Py_ssize_t csb,
                  floating* C, Py_ssize_t ldc, bint accumulate,
                  floating* apack, floating* bpack,
                  Py_ssize_t MR, Py_ssize_t NR) noexcept nogil
