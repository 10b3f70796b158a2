"""Float64 Winograd F(2x2, 3x3) for 3x3 convolutions at stride 1.

Each 2x2 block of outputs (a *tile*) comes from a 4x4 block of the padded
input: ``Y = A^T [sum over channels (G g G^T) * (B^T d B)] A`` (Lavin and
Gray, https://arxiv.org/abs/1509.09308), 16 multiplications per channel
pair and tile where the direct algorithm takes 36.  The sum over channels
is 16 matrix products, one per transform point ``p``:

    M[p] (Co x tiles) = U[p] (Co x C) @ V[p] (C x tiles)

run on the float64 GEMM micro-kernel (src/cnnext_ukernel.h) with the
filters ``U`` packed once per call in its row panels and the transformed
input ``V`` written straight into its column panels.  Each thread takes
blocks of tiles: transforms the block's input (all channels), runs the 16
products over it, and transforms the results into the output, so ``V`` and
``M`` stay per-thread and a block's results never depend on the thread
count (the same bits on any number of threads).

With ``adjoint`` the filters are the weight's, rotated by 180 degrees with
input and output channels swapped: the convolution is then the input
gradient of the forward one (the full convolution of the upstream gradient
with the rotated kernel), with padding ``2 - p``.

Private: C-contiguous float64 arrays, prior validation assumed;
:mod:`cnnext._plan` is the only caller.
"""
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free
from libc.string cimport memset

from cnnext._common cimport KC, cdiv, cnx_kernels, round16
from cnnext._gemm cimport alloc_scratch, kernels

# Tiles per block (a multiple of the micro-kernel's 8 columns), and rows of
# U (output channels) whose KC-deep panels one pass over a block's columns
# reads from L2.
cdef Py_ssize_t BLOCK_TILES = 64
cdef Py_ssize_t ROW_BLOCK = 96


cdef void transform_filters(const double* w, Py_ssize_t Cout, Py_ssize_t Cin, bint adjoint,
                            Py_ssize_t MR, Py_ssize_t o0, Py_ssize_t o1,
                            double* upk) noexcept nogil:
    """U[p][o][k] = (G g G^T)[p] for outputs o0 <= o < o1, into upk: per
    point ``p`` (Cop*Cin values, Cop = Cout rounded up to MR), per KC block
    of inputs ``pc``, MR-row panels of ``kc`` columns (pack_a's layout)."""
    cdef Py_ssize_t Cop = cdiv(Cout, MR) * MR, o, k, i, p, pc, kc
    cdef const double* wv
    cdef double g[9]
    cdef double t[12]
    cdef double u[16]
    for o in range(o0, o1):
        for k in range(Cin):
            if adjoint:  # the weight is (Cin, Cout, 3, 3): rotated, transposed
                wv = w + (k * Cout + o) * 9
                for i in range(9):
                    g[i] = wv[8 - i]
            else:
                wv = w + (o * Cin + k) * 9
                for i in range(9):
                    g[i] = wv[i]
            for i in range(3):  # T = G g (4 x 3)
                t[i] = g[i]
                t[3 + i] = 0.5 * (g[i] + g[3 + i] + g[6 + i])
                t[6 + i] = 0.5 * (g[i] - g[3 + i] + g[6 + i])
                t[9 + i] = g[6 + i]
            for i in range(4):  # U = T G^T (4 x 4)
                u[4 * i] = t[3 * i]
                u[4 * i + 1] = 0.5 * (t[3 * i] + t[3 * i + 1] + t[3 * i + 2])
                u[4 * i + 2] = 0.5 * (t[3 * i] - t[3 * i + 1] + t[3 * i + 2])
                u[4 * i + 3] = t[3 * i + 2]
            pc = k // KC * KC
            kc = min(<Py_ssize_t>KC, Cin - pc)
            for p in range(16):
                upk[p * Cop * Cin + pc * Cop + o // MR * kc * MR + (k - pc) * MR + o % MR] = u[p]


cdef void transform_input(const double* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t TW, Py_ssize_t TT, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t t0, Py_ssize_t nb, Py_ssize_t NR, double* vpk,
                          Py_ssize_t sv) noexcept nogil:
    """V = B^T d B of tiles [t0, t0 + nb) (TT tiles per sample, TW per
    row) for every channel, into vpk: per point (sv values), per NR-tile
    panel, C rows of NR values (lanes past nb zero)."""
    cdef Py_ssize_t l, t, n, r, iy0, ix0, c, i, j, yy, xx, base
    cdef const double* plane
    cdef double d[16]
    cdef double e[16]
    cdef bint inside
    for l in range(nb, cdiv(nb, NR) * NR):
        for c in range(C):
            for i in range(16):
                vpk[i * sv + l // NR * C * NR + c * NR + l % NR] = 0
    for l in range(nb):
        t = t0 + l
        n = t // TT
        r = t - n * TT
        iy0 = r // TW * 2 - ph
        ix0 = r % TW * 2 - pw
        inside = iy0 >= 0 and ix0 >= 0 and iy0 + 4 <= H and ix0 + 4 <= W
        base = l // NR * C * NR + l % NR
        for c in range(C):
            plane = x + (n * C + c) * H * W
            if inside:
                for i in range(4):
                    for j in range(4):
                        d[4 * i + j] = plane[(iy0 + i) * W + ix0 + j]
            else:
                for i in range(4):
                    yy = iy0 + i
                    for j in range(4):
                        xx = ix0 + j
                        d[4 * i + j] = (plane[yy * W + xx]
                                        if 0 <= yy < H and 0 <= xx < W else 0.0)
            for j in range(4):  # rows: B^T d
                e[j] = d[j] - d[8 + j]
                e[4 + j] = d[4 + j] + d[8 + j]
                e[8 + j] = d[8 + j] - d[4 + j]
                e[12 + j] = d[4 + j] - d[12 + j]
            for i in range(4):  # columns: (B^T d) B
                vpk[(4 * i) * sv + base + c * NR] = e[4 * i] - e[4 * i + 2]
                vpk[(4 * i + 1) * sv + base + c * NR] = e[4 * i + 1] + e[4 * i + 2]
                vpk[(4 * i + 2) * sv + base + c * NR] = e[4 * i + 2] - e[4 * i + 1]
                vpk[(4 * i + 3) * sv + base + c * NR] = e[4 * i + 1] - e[4 * i + 3]


cdef void products(const cnx_kernels* ker, const double* upk, const double* vpk,
                   Py_ssize_t Co, Py_ssize_t C, Py_ssize_t nb, Py_ssize_t sv, double* m,
                   Py_ssize_t ldm) noexcept nogil:
    """M[p] = U[p] @ V[p] for the 16 points: m holds (16, Co, ldm)."""
    cdef Py_ssize_t MR = ker.d_mr, NR = ker.d_nr, Cop = cdiv(Co, MR) * MR
    cdef Py_ssize_t rb = max(1, ROW_BLOCK // MR) * MR, p, pc, kc, ic, i, j
    cdef const double* up
    for p in range(16):
        up = upk + p * Cop * C
        pc = 0
        while pc < C:
            kc = min(<Py_ssize_t>KC, C - pc)
            ic = 0
            while ic < Co:
                for j in range(cdiv(nb, NR)):
                    i = ic
                    while i < min(Co, ic + rb):
                        ker.d(kc, up + pc * Cop + i // MR * kc * MR, NULL,
                              vpk + p * sv + j * C * NR + pc * NR, NULL,
                              m + (p * Co + i) * ldm + j * NR, ldm, <int>min(MR, Co - i),
                              <int>min(NR, nb - j * NR), pc > 0, NULL)
                        i = i + MR
                ic = ic + rb
            pc = pc + KC


cdef bint transform_output(const double* m, Py_ssize_t Co, Py_ssize_t ldm, Py_ssize_t t0,
                           Py_ssize_t nb, Py_ssize_t TW, Py_ssize_t TT, const double* bias,
                           double* y, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """y's 2x2 blocks = A^T M A (+ bias) for tiles [t0, t0 + nb); False if
    any of them is inf or NaN."""
    cdef Py_ssize_t co, l, t, n, r, oy, ox, q, sp = Co * ldm
    cdef double s0[4]
    cdef double s1[4]
    cdef double b, v00, v01, v10, v11
    cdef double* o
    cdef const double* mv
    cdef bint finite = True
    for co in range(Co):
        b = bias[co] if bias != NULL else 0.0
        for l in range(nb):
            mv = m + co * ldm + l
            for q in range(4):
                s0[q] = mv[q * sp] + mv[(4 + q) * sp] + mv[(8 + q) * sp]
                s1[q] = mv[(4 + q) * sp] - mv[(8 + q) * sp] - mv[(12 + q) * sp]
            v00 = b + (s0[0] + s0[1] + s0[2])
            v01 = b + (s0[1] - s0[2] - s0[3])
            v10 = b + (s1[0] + s1[1] + s1[2])
            v11 = b + (s1[1] - s1[2] - s1[3])
            if not (v00 - v00 == 0 and v01 - v01 == 0 and v10 - v10 == 0
                    and v11 - v11 == 0):
                finite = False
            t = t0 + l
            n = t // TT
            r = t - n * TT
            oy = r // TW * 2
            ox = r % TW * 2
            o = y + ((n * Co + co) * OH + oy) * OW + ox
            o[0] = v00
            if ox + 1 < OW:
                o[1] = v01
            if oy + 1 < OH:
                o[OW] = v10
                if ox + 1 < OW:
                    o[OW + 1] = v11
    return finite


def block_tiles(Py_ssize_t T, int n_threads):
    """Tiles per block of a convolution of T tiles on ``n_threads``: about
    BLOCK_TILES, a multiple of the micro-kernel's columns, the blocks a
    multiple of the threads where there are enough."""
    cdef Py_ssize_t NR = kernels().d_nr, nt = max(1, n_threads), nblk
    nblk = cdiv(max(nt, cdiv(T, BLOCK_TILES)), nt) * nt
    return cdiv(cdiv(max(T, 1), nblk), NR) * NR


def winograd64_forward(const double[:, :, :, ::1] x,   # IN  (N, C, H, W)
                       const double[:, :, :, ::1] w,   # IN  (Co, C, 3, 3); adjoint: (C, Co, 3, 3)
                       const double[::1] bias,         # IN  (Co,) or None
                       double[:, :, :, ::1] y,         # OUT (N, Co, H + 2ph - 2, W + 2pw - 2)
                       int ph, int pw, bint adjoint, int n_threads):
    """y = the convolution of x by the 3x3 filters w (or, with ``adjoint``,
    by their rotated transposes), padding (ph, pw), stride 1, by F(2x2,
    3x3).  Returns False when y holds an inf or a NaN (the caller then
    recomputes it directly: the transforms spread a non-finite value to the
    neighbouring outputs)."""
    cdef const cnx_kernels* ker = kernels()
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Co = y.shape[1], OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t MR = ker.d_mr, NR = ker.d_nr
    cdef Py_ssize_t TW = cdiv(OW, 2), TT = cdiv(OH, 2) * TW, T = N * TT
    cdef Py_ssize_t Cop = cdiv(Co, MR) * MR
    cdef Py_ssize_t nblk, tb, sv, per, blk, t0, o0, o1
    cdef int nt, tid
    cdef double* upk
    cdef double* vpk
    cdef double* m
    cdef const double* pb = &bias[0] if bias is not None else NULL
    cdef bint finite = True
    if T == 0 or Co == 0:
        return True
    if C == 0:
        return False  # an empty sum: the direct kernels write the bias
    tb = block_tiles(T, n_threads)
    nblk = cdiv(T, tb)
    nt = <int>max(1, min(n_threads, nblk))
    sv = tb * C
    per = round16(16 * sv) + round16(16 * Co * tb)
    upk = <double*>alloc_scratch((16 * Cop * C + nt * per) * sizeof(double))
    cdef double* scr = upk + 16 * Cop * C
    cdef char[64] ok
    memset(ok, 1, sizeof(ok))
    with nogil:
        memset(upk, 0, 16 * Cop * C * sizeof(double))
        for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            transform_filters(&w[0, 0, 0, 0], Co, C, adjoint, MR, Co * tid // nt,
                              Co * (tid + 1) // nt, upk)
        for blk in prange(nblk, schedule="static", num_threads=nt):
            tid = threadid()
            vpk = scr + tid * per
            m = vpk + round16(16 * sv)
            t0 = blk * tb
            transform_input(&x[0, 0, 0, 0], C, H, W, TW, TT, ph, pw, t0, min(tb, T - t0), NR,
                            vpk, sv)
            products(ker, upk, vpk, Co, C, min(tb, T - t0), sv, m, tb)
            if not transform_output(m, Co, tb, t0, min(tb, T - t0), TW, TT, pb,
                                    &y[0, 0, 0, 0], OH, OW):
                ok[tid % 64] = 0
    free(upk)
    for tid in range(nt):
        finite = finite and ok[tid % 64] != 0
    return finite
