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

The weight gradient sums the same products the other way round: per point,
``dU[p] (Co x C) = sum over tiles of Gy[p] V[p]^T`` with ``Gy = A dY A^T``
the transformed upstream gradient (the micro-kernel's row panels) and ``V``
the transformed input (its column panels, the tiles as the depth), then
``gw = G^T dU G``.  Its threads split the input channels, each summing its
columns of ``dU`` over every tile in the same blocks: the same bits on any
number of threads.

The transforms compute up to eight tiles or channels at once (the values
contiguous in the packed layouts), which the compiler vectorises.

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
# Tiles per block of the weight gradient: the depth of its products.
cdef Py_ssize_t GW_BLOCK_TILES = 128


cdef inline Py_ssize_t tile_at(Py_ssize_t t, Py_ssize_t TT, Py_ssize_t TW, Py_ssize_t* oy,
                               Py_ssize_t* ox) noexcept nogil:
    """Tile t's sample (returned) and its first output row and column (TT
    tiles per sample, TW per row of tiles)."""
    cdef Py_ssize_t n = t // TT, r = t - n * TT
    oy[0] = r // TW * 2
    ox[0] = r % TW * 2
    return n


cdef inline void filter_point(const double* g, double* u) noexcept nogil:
    """u (4 x 4) = G g G^T of one 3x3 filter g."""
    cdef double t[12]
    cdef Py_ssize_t i
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


cdef void transform_filters(const double* w, Py_ssize_t Cout, Py_ssize_t Cin, bint adjoint,
                            Py_ssize_t MR, Py_ssize_t o0, Py_ssize_t o1,
                            double* upk) noexcept nogil:
    """U[p][o][k] = (G g G^T)[p] for outputs o0 <= o < o1, into upk: per
    point ``p`` (Cop*Cin values, Cop = Cout rounded up to MR), per KC block
    of inputs ``pc``, MR-row panels of ``kc`` columns (pack_a's layout,
    written in place of a second pass over U); zero for the panel rows
    o >= Cout."""
    cdef Py_ssize_t Cop = cdiv(Cout, MR) * MR, o, k, i, p, pc, kc
    cdef const double* wv
    cdef double g[9]
    cdef double u[16]
    for o in range(o0, o1):
        for k in range(Cin):
            if o >= Cout:
                memset(u, 0, sizeof(u))
            else:
                if adjoint:  # the weight is (Cin, Cout, 3, 3): rotated, transposed
                    wv = w + (k * Cout + o) * 9
                    for i in range(9):
                        g[i] = wv[8 - i]
                else:
                    wv = w + (o * Cin + k) * 9
                    for i in range(9):
                        g[i] = wv[i]
                filter_point(g, u)
            pc = k // KC * KC
            kc = min(<Py_ssize_t>KC, Cin - pc)
            for p in range(16):
                upk[p * Cop * Cin + pc * Cop + o // MR * kc * MR + (k - pc) * MR + o % MR] = u[p]


ctypedef struct Layout:
    # Where a transformed value of tile l (of a block) and channel c >= c0
    # goes, per point: (l // NR) * lp + (l % NR) * ll + ((c - c0) // NR) *
    # cp + ((c - c0) % NR) * cl.  The forward's column panels (NR tiles,
    # every channel a row): lp = C * NR, ll = 1, cp = NR * NR, cl = NR.  The
    # weight gradient's (NR channels, every tile a row): lp = NR * NR,
    # ll = NR, cp = nb * NR, cl = 1.
    Py_ssize_t NR, lp, ll, cp, cl


cdef inline Py_ssize_t at(const Layout* o, Py_ssize_t l, Py_ssize_t c) noexcept nogil:
    return (l // o.NR * o.lp + l % o.NR * o.ll + c // o.NR * o.cp + c % o.NR * o.cl)


cdef inline void patch(const double* plane, Py_ssize_t H, Py_ssize_t W, Py_ssize_t iy0,
                       Py_ssize_t ix0, double* d, Py_ssize_t q) noexcept nogil:
    """Lane q of d (d[8k + q], k < 16): the 4x4 block of the H x W plane
    at (iy0, ix0), zero outside the plane."""
    cdef Py_ssize_t i, j, yy, xx
    if iy0 >= 0 and ix0 >= 0 and iy0 + 4 <= H and ix0 + 4 <= W:
        for i in range(4):
            for j in range(4):
                d[8 * (4 * i + j) + q] = plane[(iy0 + i) * W + ix0 + j]
    else:
        for i in range(4):
            yy = iy0 + i
            for j in range(4):
                xx = ix0 + j
                d[8 * (4 * i + j) + q] = (plane[yy * W + xx]
                                          if 0 <= yy < H and 0 <= xx < W else 0.0)


cdef inline void store_lanes(const double* u, double* out, Py_ssize_t so,
                             Py_ssize_t n) noexcept nogil:
    """out[k*so + q] = u[8k + q] for k < 16, q < n (the usual counts
    constant: vector moves, not a string copy)."""
    cdef Py_ssize_t k, q
    if n == 8:
        for k in range(16):
            for q in range(8):
                out[k * so + q] = u[8 * k + q]
    elif n == 6:
        for k in range(16):
            for q in range(6):
                out[k * so + q] = u[8 * k + q]
    else:
        for k in range(16):
            for q in range(n):
                out[k * so + q] = u[8 * k + q]


cdef inline void input_lanes(const double* d, double* out, Py_ssize_t sv,
                             Py_ssize_t n) noexcept nogil:
    """out[k*sv + q] = (B^T d B)[k] of lane q of d (d[8k + q]), q < n: the
    arithmetic on all 8 lanes at once (vectorised by the compiler)."""
    cdef double e[128]
    cdef double v[128]
    cdef Py_ssize_t i, j, q
    for j in range(4):  # rows: B^T d
        for q in range(8):
            e[8 * j + q] = d[8 * j + q] - d[8 * (8 + j) + q]
            e[8 * (4 + j) + q] = d[8 * (4 + j) + q] + d[8 * (8 + j) + q]
            e[8 * (8 + j) + q] = d[8 * (8 + j) + q] - d[8 * (4 + j) + q]
            e[8 * (12 + j) + q] = d[8 * (4 + j) + q] - d[8 * (12 + j) + q]
    for i in range(4):  # columns: (B^T d) B
        for q in range(8):
            v[8 * (4 * i) + q] = e[8 * (4 * i) + q] - e[8 * (4 * i + 2) + q]
            v[8 * (4 * i + 1) + q] = e[8 * (4 * i + 1) + q] + e[8 * (4 * i + 2) + q]
            v[8 * (4 * i + 2) + q] = e[8 * (4 * i + 2) + q] - e[8 * (4 * i + 1) + q]
            v[8 * (4 * i + 3) + q] = e[8 * (4 * i + 1) + q] - e[8 * (4 * i + 3) + q]
    store_lanes(v, out, sv, n)


cdef void transform_input(const double* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t TW, Py_ssize_t TT, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t t0, Py_ssize_t nb, Py_ssize_t c0, Py_ssize_t c1,
                          Py_ssize_t lpad, Py_ssize_t cpad, const Layout* o, double* vpk,
                          Py_ssize_t sv) noexcept nogil:
    """V = B^T d B of tiles [t0, t0 + nb) (TT tiles per sample, TW per
    row) for channels [c0, c1), into vpk as ``o`` lays it out (sv values
    per point); zero for the tiles [nb, lpad) and channels [c1, cpad).
    Eight values contiguous in the layout at a time: eight tiles of one
    channel (``o.ll == 1``) or eight channels of one tile (``o.cl == 1``;
    NR is a multiple of 8)."""
    cdef Py_ssize_t l, n, c, i, q, cnt, oy, ox
    cdef Py_ssize_t iy[8]
    cdef Py_ssize_t ix[8]
    cdef Py_ssize_t smp[8]
    cdef double d[128]
    memset(d, 0, sizeof(d))
    for l in range(lpad):  # the padding: whole tiles, then channels past c1
        for c in range(c0 if l >= nb else c1, cpad):
            for i in range(16):
                vpk[i * sv + at(o, l, c - c0)] = 0
    if o.ll == 1:  # lanes: eight tiles of one channel
        l = 0
        while l < nb:
            cnt = min(8, nb - l)
            for q in range(cnt):
                smp[q] = tile_at(t0 + l + q, TT, TW, &oy, &ox)
                iy[q] = oy - ph
                ix[q] = ox - pw
            for c in range(c0, c1):
                for q in range(cnt):
                    patch(x + (smp[q] * C + c) * H * W, H, W, iy[q], ix[q], d, q)
                input_lanes(d, vpk + at(o, l, c - c0), sv, cnt)
            l = l + cnt
    else:          # lanes: eight channels of every tile in turn (each point's values in order)
        c = c0
        while c < c1:
            cnt = min(8, c1 - c)
            for l in range(nb):
                n = tile_at(t0 + l, TT, TW, &oy, &ox)
                for q in range(cnt):
                    patch(x + (n * C + c + q) * H * W, H, W, oy - ph, ox - pw, d, q)
                input_lanes(d, vpk + at(o, l, c - c0), sv, cnt)
            c = c + 8


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
    """y's 2x2 blocks = A^T M A (+ bias) for tiles [t0, t0 + nb), up to 8
    tiles' arithmetic at once (a point's values of consecutive tiles are
    contiguous in m); False if any of them is inf or NaN."""
    cdef Py_ssize_t co, l0, n, oy, ox, q, k, cnt, sp = Co * ldm
    cdef double s0[32]
    cdef double s1[32]
    cdef double v[32]
    cdef double b
    cdef double* o
    cdef const double* mv
    cdef bint finite = True
    for co in range(Co):
        b = bias[co] if bias != NULL else 0.0
        l0 = 0
        while l0 < nb:
            cnt = min(8, nb - l0)
            mv = m + co * ldm + l0
            for k in range(4):  # rows: A^T M
                for q in range(cnt):
                    s0[8 * k + q] = mv[k * sp + q] + mv[(4 + k) * sp + q] + mv[(8 + k) * sp + q]
                    s1[8 * k + q] = (mv[(4 + k) * sp + q] - mv[(8 + k) * sp + q]
                                     - mv[(12 + k) * sp + q])
            for q in range(cnt):  # columns: (A^T M) A
                v[q] = b + (s0[q] + s0[8 + q] + s0[16 + q])
                v[8 + q] = b + (s0[8 + q] - s0[16 + q] - s0[24 + q])
                v[16 + q] = b + (s1[q] + s1[8 + q] + s1[16 + q])
                v[24 + q] = b + (s1[8 + q] - s1[16 + q] - s1[24 + q])
            for q in range(cnt):
                if not (v[q] - v[q] == 0 and v[8 + q] - v[8 + q] == 0
                        and v[16 + q] - v[16 + q] == 0 and v[24 + q] - v[24 + q] == 0):
                    finite = False
                n = tile_at(t0 + l0 + q, TT, TW, &oy, &ox)
                o = y + ((n * Co + co) * OH + oy) * OW + ox
                o[0] = v[q]
                if ox + 1 < OW:
                    o[1] = v[8 + q]
                if oy + 1 < OH:
                    o[OW] = v[16 + q]
                    if ox + 1 < OW:
                        o[OW + 1] = v[24 + q]
            l0 = l0 + 8
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
    cdef Layout lay
    lay.NR, lay.lp, lay.ll, lay.cp, lay.cl = NR, C * NR, 1, NR * NR, NR
    with nogil:
        for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            transform_filters(&w[0, 0, 0, 0], Co, C, adjoint, MR, Co * tid // nt,
                              Cop if tid == nt - 1 else Co * (tid + 1) // nt, upk)
        for blk in prange(nblk, schedule="static", num_threads=nt):
            tid = threadid()
            vpk = scr + tid * per
            m = vpk + round16(16 * sv)
            t0 = blk * tb
            transform_input(&x[0, 0, 0, 0], C, H, W, TW, TT, ph, pw, t0, min(tb, T - t0), 0, C,
                            cdiv(min(tb, T - t0), NR) * NR, C, &lay, vpk, sv)
            products(ker, upk, vpk, Co, C, min(tb, T - t0), sv, m, tb)
            if not transform_output(m, Co, tb, t0, min(tb, T - t0), TW, TT, pb,
                                    &y[0, 0, 0, 0], OH, OW):
                ok[tid % 64] = 0
    free(upk)
    for tid in range(nt):
        finite = finite and ok[tid % 64] != 0
    return finite


cdef void transform_grad(const double* g, Py_ssize_t Co, Py_ssize_t OH, Py_ssize_t OW,
                         Py_ssize_t TW, Py_ssize_t TT, Py_ssize_t t0, Py_ssize_t nb,
                         Py_ssize_t MR, double* gpk, Py_ssize_t sg) noexcept nogil:
    """Gy = A dY A^T of the upstream gradient's 2x2 blocks of tiles [t0,
    t0 + nb) for every output channel, into gpk: per point (sg values), per
    MR-channel panel (MR <= 8), nb rows of MR values (pack_a's layout; rows
    past Co zero).  Outputs past the map's edge count as zeros.  Panel by
    panel, so that each point's values are written in order; the
    arithmetic on 8 lanes (channels) at once."""
    cdef Py_ssize_t l, n, oy, ox, co0, q, cnt
    cdef const double* pl
    cdef double a[8]
    cdef double b[8]
    cdef double c[8]
    cdef double d[8]
    cdef double u[128]
    co0 = 0
    while co0 < Co:
        cnt = min(MR, Co - co0)
        for l in range(nb):
            n = tile_at(t0 + l, TT, TW, &oy, &ox)
            for q in range(cnt):
                pl = g + ((n * Co + co0 + q) * OH + oy) * OW + ox
                a[q] = pl[0]
                b[q] = pl[1] if ox + 1 < OW else 0.0
                c[q] = pl[OW] if oy + 1 < OH else 0.0
                d[q] = pl[OW + 1] if ox + 1 < OW and oy + 1 < OH else 0.0
            for q in range(cnt, 8):  # a last panel's missing channels
                a[q] = b[q] = c[q] = d[q] = 0
            for q in range(8):  # A dY: rows (p, s); then (p, s) -> p, p + s, p - s, -s
                u[q] = a[q]
                u[8 + q] = a[q] + b[q]
                u[16 + q] = a[q] - b[q]
                u[24 + q] = -b[q]
                u[32 + q] = a[q] + c[q]
                u[40 + q] = (a[q] + c[q]) + (b[q] + d[q])
                u[48 + q] = (a[q] + c[q]) - (b[q] + d[q])
                u[56 + q] = -(b[q] + d[q])
                u[64 + q] = a[q] - c[q]
                u[72 + q] = (a[q] - c[q]) + (b[q] - d[q])
                u[80 + q] = (a[q] - c[q]) - (b[q] - d[q])
                u[88 + q] = -(b[q] - d[q])
                u[96 + q] = -c[q]
                u[104 + q] = -(c[q] + d[q])
                u[112 + q] = d[q] - c[q]
                u[120 + q] = d[q]
            store_lanes(u, gpk + co0 * nb + l * MR, sg, MR)
        co0 = co0 + MR


cdef bint filter_grad(const double* du, Py_ssize_t Co, Py_ssize_t C, Py_ssize_t o0,
                      Py_ssize_t o1, double* gw) noexcept nogil:
    """gw[o] = G^T dU[o] G (4x4 -> 3x3) for output channels [o0, o1) of
    du (16, Co, C); False if any of them is inf or NaN."""
    cdef Py_ssize_t o, c, i, j, sp = Co * C
    cdef double u[16]
    cdef double h[12]
    cdef double* dst
    cdef bint finite = True
    for o in range(o0, o1):
        for c in range(C):
            for i in range(16):
                u[i] = du[i * sp + o * C + c]
            for j in range(4):  # rows: G^T u
                h[j] = u[j] + 0.5 * (u[4 + j] + u[8 + j])
                h[4 + j] = 0.5 * (u[4 + j] - u[8 + j])
                h[8 + j] = 0.5 * (u[4 + j] + u[8 + j]) + u[12 + j]
            dst = gw + (o * C + c) * 9
            for i in range(3):  # columns: (G^T u) G
                dst[3 * i] = h[4 * i] + 0.5 * (h[4 * i + 1] + h[4 * i + 2])
                dst[3 * i + 1] = 0.5 * (h[4 * i + 1] - h[4 * i + 2])
                dst[3 * i + 2] = 0.5 * (h[4 * i + 1] + h[4 * i + 2]) + h[4 * i + 3]
                for j in range(3):
                    if not dst[3 * i + j] - dst[3 * i + j] == 0:
                        finite = False
    return finite


def grad_weight_tiles(Py_ssize_t T):
    """Tiles per block of a weight gradient over T tiles (its sums' order:
    independent of the thread count)."""
    return max(1, min(T, GW_BLOCK_TILES))


ctypedef struct GradWeight:
    const cnx_kernels* ker
    const double* x          # (N, C, H, W)
    const double* g          # (N, Co, OH, OW)
    double* du               # (16, Co, C)
    Py_ssize_t C, H, W, Co, OH, OW, ph, pw, TW, TT, T, tb, sg, sv


cdef void grad_weight_part(const GradWeight* a, Py_ssize_t q0, Py_ssize_t q1, double* gpk,
                           double* vpk) noexcept nogil:
    """dU's columns of the NR-channel panels [q0, q1), summed over every
    tile, block by block (gpk: Gy, sg values per point; vpk: V, sv)."""
    cdef const cnx_kernels* ker = a.ker
    cdef Py_ssize_t MR = ker.d_mr, NR = ker.d_nr, C = a.C, Co = a.Co
    cdef Py_ssize_t c0 = q0 * NR, c1 = min(C, q1 * NR), t0, nb, p, i, j
    cdef Layout lay
    t0 = 0
    while t0 < a.T:
        nb = min(a.tb, a.T - t0)
        lay.NR, lay.lp, lay.ll, lay.cp, lay.cl = NR, NR * NR, NR, nb * NR, 1
        transform_input(a.x, C, a.H, a.W, a.TW, a.TT, a.ph, a.pw, t0, nb, c0, c1, nb, q1 * NR,
                        &lay, vpk, a.sv)
        transform_grad(a.g, Co, a.OH, a.OW, a.TW, a.TT, t0, nb, MR, gpk, a.sg)
        for p in range(16):
            i = 0
            while i < Co:  # along MR rows of dU[p]: their NR-column tiles in turn
                for j in range(q1 - q0):
                    ker.d(nb, gpk + p * a.sg + i // MR * nb * MR, NULL,
                          vpk + p * a.sv + j * nb * NR, NULL,
                          a.du + (p * Co + i) * C + c0 + j * NR, C, <int>min(MR, Co - i),
                          <int>min(NR, c1 - c0 - j * NR), 1, NULL)
                i = i + MR
        t0 = t0 + a.tb


def winograd64_grad_weight(const double[:, :, :, ::1] x,   # IN  (N, C, H, W)
                           const double[:, :, :, ::1] g,   # IN  (N, Co, OH, OW)
                           double[:, :, :, ::1] gw,        # OUT (Co, C, 3, 3)
                           int ph, int pw, int n_threads):
    """gw = the weight gradient of the stride-1 3x3 convolution of x
    (padding ph, pw) for the upstream gradient g, by F(2x2, 3x3):
    dU[p] = sum over tiles of Gy[p] V[p]^T, then gw = G^T dU G.  The
    threads split the input channels (NR-channel panels), each summing its
    columns of dU over every tile, block by block: the same bits on any
    number of threads.  Returns False when gw holds an inf or a NaN."""
    cdef GradWeight a
    a.ker = kernels()
    cdef Py_ssize_t MR = a.ker.d_mr, NR = a.ker.d_nr
    a.C, a.H, a.W = x.shape[1], x.shape[2], x.shape[3]
    a.Co, a.OH, a.OW = g.shape[1], g.shape[2], g.shape[3]
    a.ph, a.pw = ph, pw
    a.TW = cdiv(a.OW, 2)
    a.TT = cdiv(a.OH, 2) * a.TW
    a.T = x.shape[0] * a.TT
    a.tb = grad_weight_tiles(a.T)
    cdef Py_ssize_t Q = cdiv(a.C, NR), per
    cdef int nt = <int>max(1, min(n_threads, Q)), tid
    cdef char[64] ok
    if a.Co == 0 or a.C == 0:
        return True
    if a.T == 0:
        return False  # nothing summed: the direct kernels write the zeros
    a.sg = cdiv(a.Co, MR) * MR * a.tb
    a.sv = cdiv(Q, nt) * NR * a.tb
    per = round16(16 * a.sg) + round16(16 * a.sv)
    a.du = <double*>alloc_scratch((16 * a.Co * a.C + nt * per) * sizeof(double))
    cdef double* scr = a.du + 16 * a.Co * a.C
    a.x = &x[0, 0, 0, 0]
    a.g = &g[0, 0, 0, 0]
    memset(ok, 1, sizeof(ok))
    with nogil:
        memset(a.du, 0, 16 * a.Co * a.C * sizeof(double))
        for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            grad_weight_part(&a, Q * tid // nt, Q * (tid + 1) // nt, scr + tid * per,
                             scr + tid * per + round16(16 * a.sg))
        for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            if not filter_grad(a.du, a.Co, a.C, a.Co * tid // nt, a.Co * (tid + 1) // nt,
                               &gw[0, 0, 0, 0]):
                ok[tid % 64] = 0
    free(a.du)
    for tid in range(nt):
        if ok[tid % 64] == 0:
            return False
    return True
