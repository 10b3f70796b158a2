"""Private Winograd convolution kernels (tier 1): 3x3, stride 1, float32.

Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016) computes each 2x2 output tile
from a 4x4 input tile with 16 multiplications per channel pair instead of
36: ``Y = A^T [(G w G^T) . (B^T d B)] A``.  Over channels, the element-wise
products become 16 independent matrix products (one per transform point
``xi``): ``M[xi] = U[xi] @ V[xi]`` with ``U[xi]`` (C_out, C) the transformed
filters and ``V[xi]`` (C, tiles) the transformed input tiles.

Stateless, GIL-free, no validation: C-contiguous float32 NCHW arrays,
outputs allocated by the caller.  The filter transform (and the weight
gradient's last step, ``G^T dU G``) are small and done by the caller
(``cnnext._plan``) in float64.

Design:

* **Tile blocks.**  The output tiles of the whole batch, in (n, tile row,
  tile column) order, are cut into blocks of ``TB`` tiles (a few
  micro-kernel panels wide; in the forward pass, few enough that the
  block's transformed input and products stay within about 1 MB of L2).  A block is one work unit: its transformed
  input (16 x C x TB), its products (16 x C_out x TB) and its output stay
  in the thread's scratch, so every stage reads what the previous one just
  wrote, from cache.
* **Transforms** (``src/cnnext_winograd_body.h``, compiled per instruction
  set and chosen at run time like the GEMM micro-kernels) run along the
  block's tiles, vectorised: per run of tiles along a tile row, the 4
  input rows it covers are read (with AVX-512 or AVX2, in place by masked
  loads; elsewhere copied once; zero outside the image: the padding) and
  transformed in one pass straight into the micro-kernel's packed-B
  layout; the output transform and scatter undo it per output channel.
  With AVX-512 and AVX2 the per-run transforms are written with
  intrinsics (``src/cnnext_winograd.h``, ``src/cnnext_winograd_avx2.h``),
  a run's last vector partial: a compiled loop would run a run of 7 tiles
  in its scalar tail.  A map of 4 tile columns from at most 8 input
  columns (7x7 or 8x8 with padding 1) takes four tile rows per vector
  with AVX-512, two with AVX2, in the input transform, the scatter and
  the weight gradient's upstream-gradient transform (``input_tw4``,
  ``scatter_tw4``, ``grad_tw4``).  On AVX-512, a map of 8 tile columns
  from at most 16 input columns (16x16 with padding 1) is transformed two
  tile rows per vector, each input row one vector
  (``src/cnnext_wgpool.h``): the runs of 8 tiles would fill half vectors;
  and one of 6 or 7 tile columns from at most 16 (12x12, 14x14) takes the
  up to four tile rows of 16 consecutive tiles per vector in the input
  transform (``input_tw16``).
* **Fused pool** (inference): when the output's 2x2 tiles are the windows
  of a 2x2 stride-2 max pool, :func:`winograd_relu_pool2x2` pools each
  tile (and applies the bias and a ReLU) as the output transform makes it
  and stores the pooled map only.
* **Products**: the filters are packed once per call (``upk``: 16 points x
  C_out/MR panels x C x MR); with AVX-512 an 8x48 micro-kernel of this
  module (``src/cnnext_winograd.h``; 8x16 or 8x32 for a block's last,
  narrower panel) multiplies them by the transformed input, elsewhere the
  GEMM micro-kernel of ``_gemm``.
* **F(4x4, 3x3)** (``winograd4_forward``, ``winograd4_filters``): the
  same blocks, products and threads with 4x4 output tiles from 6x6 input
  tiles, 36 points (``src/cnnext_winograd4.h``: per run of tiles, the
  input transform read in place and the output transform that stores the
  outputs, no scatter step); the products sum the channels in runs of
  ``KC4`` (its accuracy).  Forward pass and input gradient only.
* **Forward** blocks are handed out one at a time by a ``prange``
  (dynamic: a few blocks over two threads stay balanced, as does a thread
  that waits for its core); each block is computed the same way whichever
  thread takes it, so the result does not depend on the thread count.
  The input gradient is the forward kernel on the upstream gradient with
  the rotated, transposed filters.
* **Inf and NaN** are not handled here: the kernels report them (the
  filter transforms in the weight, the forward's stores and the weight
  gradient's last step in their results, each as it reads or writes the
  values) and the caller recomputes the result with the direct algorithm.
* **Weight gradient**: ``dU[xi] = sum over tiles of (A g A^T)[xi] (x)
  V[xi]``, one product per point and block (the transformed gradient's
  rows read in place by the micro-kernel, the transformed input
  transposed into panels); thread ``tid`` sums a fixed,
  contiguous range of blocks into its own ``dU`` partial (reproducible for
  a given thread count; the caller adds the partials in order).

With one thread the block bodies (``fwd_block``, ``gw_range``) are called
directly, entering no OpenMP region.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t
from libc.stdlib cimport free
from libc.string cimport memset

from cnnext._common cimport KC, cnx_kernels, round16
from cnnext._gemm cimport alloc_scratch, kernels

cdef extern from "cnnext_prep.h" nogil:
    void cnx_prefetch_lines(const char* p, int64_t l0, int64_t l1)

cdef extern from "cnnext_wgfilter.h" nogil:
    ctypedef int (*cnx_wg_filter_fn)(const float* w, int64_t rs, int nvalid, int adjoint,
                                     float* dst, int64_t ld, int lanes) noexcept nogil
    cnx_wg_filter_fn cnx_wg_filter(int64_t mr)

    ctypedef int (*cnx_wg_filter_grad_fn)(const float* dup, int64_t nt, int64_t ts, int64_t xs,
                                          int64_t C, float* gw) noexcept nogil
    cnx_wg_filter_grad_fn cnx_wg_filter_grad()
    int cnx_wg_filter_grad_one(const float* dup, int64_t nt, int64_t ts, int64_t xs,
                               float* gw) noexcept nogil

cdef cnx_wg_filter_fn WG_FILTER = cnx_wg_filter(kernels().s_mr)
cdef cnx_wg_filter_grad_fn WG_FILTER_GRAD = cnx_wg_filter_grad()


cdef extern from "cnnext_winograd.h" nogil:
    ctypedef void (*cnx_wg_rows)(const float* plane, int64_t H, int64_t W, int64_t iy0,
                                 int64_t ix0, int64_t n, int P, float* p,
                                 int64_t lp) noexcept nogil
    ctypedef int (*cnx_wg_finite)(const float* a, int64_t n, float b) noexcept nogil
    ctypedef void (*cnx_wg_pack_lanes)(const float* src, int64_t ld, int64_t nr, int64_t n,
                                       int64_t NR, float* dst) noexcept nogil
    ctypedef void (*cnx_wg_input_rows)(const float* p, int64_t lp, int64_t cnt, float* v,
                                       int64_t sxi) noexcept nogil
    ctypedef void (*cnx_wg_input_plane)(const float* plane, int64_t H, int64_t W, int64_t iy0,
                                        int64_t ix0, int64_t cnt, float* v,
                                        int64_t sxi) noexcept nogil
    ctypedef void (*cnx_wg_input_tw4)(const float* x, int64_t C, int64_t H, int64_t W,
                                      int64_t ph, int64_t pw, int64_t th, int64_t t0,
                                      int64_t nv, int64_t PN, float* v, int64_t sp, int64_t sc,
                                      int64_t sxi) noexcept nogil
    ctypedef void (*cnx_wg_scatter_tw4)(const float* y, int64_t ld, int64_t nv, float b,
                                        float* out, int64_t Co, int64_t co, int64_t OH,
                                        int64_t OW, int64_t th, int64_t t0) noexcept nogil
    ctypedef void (*cnx_wg_grad_tw4)(const float* g, int64_t Co, int64_t OH, int64_t OW,
                                     int64_t th, int64_t t0, int64_t nv, float* gy, int64_t ld,
                                     int64_t sxi) noexcept nogil
    ctypedef void (*cnx_wg_input_tw16)(const float* x, int64_t C, int64_t H, int64_t W,
                                       int64_t ph, int64_t pw, int64_t th, int64_t tw,
                                       int64_t t0, int64_t nv, int64_t PN, float* v, int64_t sp,
                                       int64_t sc, int64_t sxi) noexcept nogil
    ctypedef void (*cnx_wg_output)(const float* m, int64_t sxi, int64_t n,
                                   float* y) noexcept nogil
    ctypedef int (*cnx_wg_scatter)(const float* y, int64_t ld, int64_t cnt, float b,
                                    float* out, int64_t OH, int64_t OW, int64_t oy0,
                                    int64_t ox0) noexcept nogil
    ctypedef void (*cnx_wg_ukr)(int64_t kc, const float* a, const float* b, float* c,
                                int64_t ldc, int accumulate) noexcept nogil
    ctypedef void (*cnx_wg_store2)(const float* src, int64_t n, float* dst) noexcept nogil
    ctypedef struct cnx_wg_kernels:
        cnx_wg_ukr ukr
        cnx_wg_ukr ukr_n[3]
        int pn
        cnx_wg_rows rows
        cnx_wg_finite finite
        cnx_wg_pack_lanes pack_lanes
        cnx_wg_input_rows input_rows
        cnx_wg_input_rows grad_rows
        cnx_wg_input_plane input_plane
        cnx_wg_input_tw4 input_tw4
        cnx_wg_scatter_tw4 scatter_tw4
        cnx_wg_grad_tw4 grad_tw4
        cnx_wg_input_tw16 input_tw16
        cnx_wg_output output
        cnx_wg_scatter scatter
        cnx_wg_store2 store2
        const char* name
    cnx_wg_kernels cnx_wg_select() noexcept nogil
    void cnx_wg_prefetch(const float* plane, int64_t H, int64_t W, int64_t iy0, int64_t ix0,
                         int64_t n, int P) noexcept nogil

cdef cnx_wg_kernels WG = cnx_wg_select()

cdef extern from "cnnext_atomic.h" nogil:
    int64_t cnx_atomic_load(int64_t* p)
    void cnx_atomic_store(int64_t* p, int64_t v)
    bint cnx_atomic_cas(int64_t* p, int64_t expected, int64_t v)
    int64_t cnx_atomic_add(int64_t* p, int64_t v)
    void cnx_relax()

cdef extern from "cnnext_winograd4.h" nogil:
    ctypedef void (*cnx_w4_input_fn)(const float* plane, int64_t H, int64_t W, int64_t iy0,
                                     int64_t ix0, int64_t cnt, float* v,
                                     int64_t sxi) noexcept nogil
    ctypedef int (*cnx_w4_output_fn)(const float* m, int64_t sxi, int64_t cnt, float b,
                                     float* out, int64_t OH, int64_t OW, int64_t oy0,
                                     int64_t ox0) noexcept nogil
    ctypedef struct cnx_w4_kernels:
        cnx_w4_input_fn input
        cnx_w4_output_fn output
        const char* name
    cnx_w4_kernels cnx_w4_select() noexcept nogil
    enum: CNX_W4_FC
    void cnx_w4_filters(const float* w, int64_t Co, int64_t C, int adjoint, int64_t MR,
                        int64_t p0, int64_t p1, float* upk, int64_t su,
                        float* tmp) noexcept nogil

cdef cnx_w4_kernels W4 = cnx_w4_select()

cdef extern from "cnnext_wgpool.h" nogil:
    ctypedef int (*cnx_wgp_output_pool)(const float* m, int64_t sxi, int64_t n, float b,
                                        float* out) noexcept nogil
    cnx_wgp_output_pool cnx_wgp_select() noexcept nogil
    ctypedef void (*cnx_wgp_input_tw8)(const float* x, int64_t C, int64_t H, int64_t W,
                                       int64_t ph, int64_t pw, int64_t th, int64_t t0,
                                       int64_t nv, int64_t PN, float* v, int64_t sp, int64_t sc,
                                       int64_t sxi) noexcept nogil
    cnx_wgp_input_tw8 cnx_wgp_select_tw8() noexcept nogil

cdef cnx_wgp_output_pool WGP_OUTPUT_POOL = cnx_wgp_select()
cdef cnx_wgp_input_tw8 WGP_INPUT_TW8 = cnx_wgp_select_tw8()

# Transform points of F(2x2, 3x3): a 4x4 tile.
cdef enum:
    XI = 16
    # At most these bytes of a forward block's transformed input and
    # products (measured with AVX2 on a Zen 3 core: 2 panels for 64
    # channels, 1 for 128 and more beat 3, the transforms' results then read
    # back from L2; with AVX-512 on a 2 MB-L2 Xeon, 3 MB made F(4x4, 3x3)'s
    # forward on 64 channels (32x32, batch 32) take 1.7x the time).
    L2_BLOCK = 1 << 20
    # At most these bytes of a weight gradient's block of transformed input
    # and gradient (16 x (C + Co) x tiles floats) per thread: its products
    # add into dU, out of cache when large, once per block (measured, AVX2
    # on a Zen 3 core, 256 -> 256 channels on 14x14, batch 8, 392 tiles: in
    # blocks of 64, 63% of the products' time went to those additions; two
    # blocks of about 200: the backward 0.85-0.90x the time).  With AVX-512
    # (48-tile panels) on a 2 MB-L2 Xeon, one thread, the same layer's
    # backward in three blocks of 131 tiles (4 MB) took 0.87-0.93x the time
    # of two of 196, and 128 -> 128 channels on 28x28 (batch 8) in seven
    # blocks of 224 0.92x that of four of 392 (builds alternated in one
    # process); blocks of 96 or 48 tiles were no faster.
    GW_BLOCK_BYTES_AVX2 = 8 << 20
    GW_BLOCK_BYTES_AVX512 = 4 << 20
    GW_DU_CACHED = 512 << 10
    # The weight gradient's products add at most this many tiles in one run
    # of the micro-kernel, then add the run into dU (measured, relative RMS
    # error on unit-variance data, blocks of about 200 tiles summed in one
    # run: 1.8-2.6x the direct algorithm's at 128 to 512 channels, against
    # 1.0-1.9x in runs of 64).
    GW_RUN = 64
    # A weight gradient's dU (16, Co, C) of at least these bytes is split
    # between threads by output channels rather than summed from one
    # partial per thread (measured at 256 -> 256 channels, 4 MB).
    PANEL_SPLIT_BYTES = 2 << 20
    # F(4x4, 3x3)'s products sum at most this many input channels in one
    # run of the micro-kernel, then add the partial sums: its float32 error
    # grows with the length of the run (measured on unit-variance data, 64
    # and 128 channels: 3.0-3.2x the direct algorithm's RMS error with runs
    # of 32, 3.9-4.2x with 64, 5.3-5.4x with 128), at 5-15% more time.
    KC4 = 32
    # The adjoint filter transform prefetches the filters of this many
    # input channels on (measured on a Xeon, 256 -> 256 channels, one
    # thread, out of cache: 0.93 ms without, 0.51 at 4 ahead, 0.46-0.49
    # at 8, 0.49-0.50 at 16; the forward's filters, read in order: 0.41).
    FILTER_AHEAD = 8


def isa():
    """Name of the transform-loop variant in use ("avx512", "avx2", "generic")."""
    return WG.name.decode()


cdef Py_ssize_t panel_lanes() noexcept nogil:
    """Tiles in one panel of the products: the columns of their micro-kernel."""
    return WG.pn if WG.ukr != NULL else kernels().s_nr


cdef Py_ssize_t max_panels() noexcept nogil:
    return 3 if WG.ukr != NULL else 4


cdef Py_ssize_t block_tiles(Py_ssize_t T, Py_ssize_t nt, Py_ssize_t rows,
                            Py_ssize_t xi=XI) noexcept nogil:
    """Tiles per work unit for T tiles, nt threads and ``rows`` channels of
    transformed input plus products per tile (C + Cop; 0 for no limit): up
    to ``max_panels`` panels, fewer when the batch is small, so that each
    thread gets about two blocks (and little of the last panel is padding),
    and fewer when the block's ``xi`` points of V and M would pass L2_BLOCK
    bytes (they are written and read back from L2)."""
    cdef Py_ssize_t cap = max_panels()
    if rows > 0:
        cap = max(1, min(cap, L2_BLOCK // (xi * rows * panel_lanes() * <Py_ssize_t>sizeof(float))))
    return max(1, min(cap, T // (2 * nt * panel_lanes()))) * panel_lanes()


cdef Py_ssize_t gw_block_tiles(Py_ssize_t N, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t nt,
                               Py_ssize_t C, Py_ssize_t Co) noexcept nogil:
    """Tiles per block of a weight gradient of N samples' OH x OW outputs
    (T 2x2 tiles) into ``nt`` partials (C -> Co channels).  Each block's
    products add into dU (16 x Co x C) once: where dU is larger than
    GW_DU_CACHED, blocks of whole panels, about one per partial, of at most
    GW_BLOCK_BYTES_AVX512 (with Winograd's AVX-512 micro-kernel; else
    GW_BLOCK_BYTES_AVX2) of transformed input and gradient (and at least
    max_panels panels), the tiles split evenly between them; otherwise the
    forward's blocks (block_tiles), whose transformed data stay in L2."""
    cdef Py_ssize_t lanes = panel_lanes(), T = N * ((OH + 1) // 2) * ((OW + 1) // 2)
    if XI * C * Co * <Py_ssize_t>sizeof(float) <= GW_DU_CACHED:
        return block_tiles(T, nt, 0)
    cdef Py_ssize_t limit = GW_BLOCK_BYTES_AVX512 if WG.ukr != NULL else GW_BLOCK_BYTES_AVX2
    cdef Py_ssize_t cap = max(max_panels(), limit // (XI * (C + Co) * lanes
                                                      * <Py_ssize_t>sizeof(float)))
    cdef Py_ssize_t per = max(1, min(cap, T // (nt * lanes)))
    cdef Py_ssize_t nb = (T + per * lanes - 1) // (per * lanes)
    return ((T + nb - 1) // nb + lanes - 1) // lanes * lanes


def tile_block():
    """The most tiles a work unit holds: a few panels of the products."""
    return max_panels() * panel_lanes()


def panel_tiles():
    """Tiles in one panel of the products (the weight gradient's blocks
    hold whole panels)."""
    return panel_lanes()


ctypedef struct Args:
    const float* x           # (N, C, H, W)
    const float* upk         # (16, su): per point, Cop/MR panels of (C, MR)
    Py_ssize_t su            # its point stride (>= Cop*C)
    const float* bias        # (Co,) or NULL
    const float* g           # weight gradient: (N, Co, OH, OW)
    float* out               # forward: (N, Co, OH, OW); weight gradient: (nt, 16, Co, C)
    Py_ssize_t N, C, H, W, Co, Cop, OH, OW, ph, pw
    # The forward's products run over Cv rows of transformed input: C, or
    # 4*C for a 5x5 kernel (quad): the 3x3 Winograd convolution of four
    # views of x shifted by (0, 0), (0, 2), (2, 0) and (2, 2) (see
    # winograd_forward_quad).
    Py_ssize_t Cv
    bint quad
    # Output tile side m (2: F(2x2, 3x3); 4: F(4x4, 3x3), the forward
    # kernel only) and transform points xi = (m + 2)**2.
    Py_ssize_t m, xi
    Py_ssize_t th, tw, T, tb, blocks, MR, NR
    Py_ssize_t PN            # tiles per panel of the forward products
    Py_ssize_t sv, sm        # point strides of V (C*tb) and of the products, plus a line
    Py_ssize_t per           # scratch floats per thread
    float* scr
    int64_t* seg             # per thread: 5 * (tb + 1) segment fields
    const cnx_kernels* ker
    int nt
    # Dilation phases (dh > 0): x, g and the forward's out are the original
    # (Ns, C, Hs, Ws), (Ns, Co, OHs, OWs) and (Ns, Co, OHs, OWs) arrays, the
    # convolution's sample n the phase (r, c) = divmod(n % (dh*dw), dw) of
    # sample n // (dh*dw) (a sample's phases adjacent: they read and write
    # the same cache lines), the element [i, j] of x's phase x[., ., dh*i + r - y0,
    # dw*j + c - x0], of g's g[., ., dh*i + r, dw*j + c] (zero outside) and
    # of out's out[., ., dh*i + r - yo, dw*j + c - xo] (dropped outside).
    Py_ssize_t dh, dw, Hs, Ws, OHs, OWs, y0, x0, yo, xo


ctypedef struct Share:
    # A one-partial weight gradient's products shared with a helper thread
    # (see SharedWeightGrad): each block's XI points handed out one at a
    # time, the same products into the same dU rows whichever thread runs
    # them.
    int64_t state            # 0: not started; (block + 1) << 8 | next point; -1: done
    int64_t done             # the current block's points done
    Py_ssize_t nv            # its tiles
    float* bpack             # the helper's panel of V (tb x NR)
    int64_t helped           # points the helper took
    int64_t joined           # 1 once a helper is in gw_help
    bint wait                # leave each block's first point to the helper


ctypedef struct Filters:
    # A filter transform run in a forward's parallel region (see fwd_run):
    # w (Co, C, 3, 3), or (C, Co, 3, 3) when adjoint, into the packed upk.
    const float* w
    Py_ssize_t w1            # w.shape[1]
    float* upk
    Py_ssize_t su            # upk's point stride
    Py_ssize_t Co, C, MR
    bint adjoint


cdef Py_ssize_t segments(const Args* a, Py_ssize_t t0, Py_ssize_t nv,
                         int64_t* seg) noexcept nogil:
    """Cut tiles [t0, t0 + nv) into runs along one tile row: seg[5*i:5*i+5] =
    (n, tile row, first tile column, count, lane).  Returns the run count."""
    cdef Py_ssize_t t = t0, nseg = 0, n, r, ti, tj, cnt, per_img = a.th * a.tw
    while t < t0 + nv:
        n = t // per_img
        r = t - n * per_img
        ti = r // a.tw
        tj = r - ti * a.tw
        cnt = min(a.tw - tj, t0 + nv - t)
        seg[5 * nseg] = n
        seg[5 * nseg + 1] = ti
        seg[5 * nseg + 2] = tj
        seg[5 * nseg + 3] = cnt
        seg[5 * nseg + 4] = t - t0
        nseg += 1
        t += cnt
    return nseg


cdef void zero_tail(float* V, Py_ssize_t sxi, Py_ssize_t sp, Py_ssize_t sr, Py_ssize_t rows,
                    Py_ssize_t nv, Py_ssize_t tb, Py_ssize_t NR, Py_ssize_t nxi) noexcept nogil:
    """Lanes [nv, tb) of every point (``nxi``) and row of V (point stride
    sxi, panel stride sp, row stride sr): zeros, so that a block past the
    last tile adds nothing (and reads no stale inf/NaN)."""
    cdef Py_ssize_t xi, r, l, n
    for xi in range(nxi):
        for r in range(rows):
            l = nv
            while l < tb:  # one memset per panel
                n = min(tb - l, NR - l % NR)
                memset(V + xi * sxi + (l // NR) * sp + r * sr + l % NR, 0, n * sizeof(float))
                l += n


cdef void transform_input(const Args* a, Py_ssize_t nseg, const int64_t* seg, float* P,
                          float* V, Py_ssize_t sp, Py_ssize_t sc, Py_ssize_t ph,
                          Py_ssize_t pw) noexcept nogil:
    """V[xi, c] (lane l at (l // NR)*sp + l % NR, channel stride sc) = B^T d B
    of every tile of the block, for every input channel c: per run of tiles,
    the 4 input rows it covers (at padding (ph, pw): zeros outside the
    image), then the transform; with AVX-512 (undilated), both in one pass
    that reads the plane in place."""
    cdef Py_ssize_t c, i, j, n, l, cnt, pos, lp = 2 * a.tb + 16
    cdef const float* plane
    for c in range(a.C):
        if c + 1 < a.C and a.dh == 0:  # the next channel's rows, while this one is transformed
            for i in range(nseg):
                cnx_wg_prefetch(a.x + (seg[5 * i] * a.C + c + 1) * a.H * a.W, a.H, a.W,
                                seg[5 * i + 1] * 2 - ph, seg[5 * i + 2] * 2 - pw,
                                2 * seg[5 * i + 3] + 2, 4)
        for i in range(nseg):
            cnt = seg[5 * i + 3]
            pos = seg[5 * i + 4]
            if a.dh == 0 and WG.input_plane != NULL:  # read from the plane, no copy
                plane = a.x + (seg[5 * i] * a.C + c) * a.H * a.W
                j = 0
                while j < cnt:  # the run's lanes, cut at panel boundaries
                    l = pos + j
                    n = min(cnt - j, a.PN - l % a.PN)
                    WG.input_plane(plane, a.H, a.W, seg[5 * i + 1] * 2 - ph,
                                   (seg[5 * i + 2] + j) * 2 - pw, n,
                                   V + c * sc + (l // a.PN) * sp + l % a.PN, a.sv)
                    j += n
                continue
            if a.dh:
                phase_rows(a.x, seg[5 * i], c, a.C, a.Hs, a.Ws, a.dh, a.dw,
                           seg[5 * i + 1] * 2 - ph, seg[5 * i + 2] * 2 - pw, 4, 2 * cnt + 2,
                           a.y0, a.x0, P, lp)
            else:
                plane = a.x + (seg[5 * i] * a.C + c) * a.H * a.W
                WG.rows(plane, a.H, a.W, seg[5 * i + 1] * 2 - ph, seg[5 * i + 2] * 2 - pw,
                        2 * cnt + 2, 4, P, lp)
            j = 0
            while j < cnt:  # the run's lanes, cut at panel boundaries
                l = pos + j
                n = min(cnt - j, a.PN - l % a.PN)
                WG.input_rows(P + 2 * j, lp, n, V + c * sc + (l // a.PN) * sp + l % a.PN,
                              a.sv)
                j += n


cdef void transform_input4(const Args* a, Py_ssize_t nseg, const int64_t* seg, float* V,
                           Py_ssize_t sp, Py_ssize_t sc, Py_ssize_t ph,
                           Py_ssize_t pw) noexcept nogil:
    """transform_input for F(4x4, 3x3): V[xi, c] = B^T d B of the block's
    6x6 input tiles (36 points) at padding (ph, pw), read from the plane in
    place."""
    cdef Py_ssize_t c, i, j, n, l, cnt, pos
    cdef const float* plane
    for c in range(a.C):
        if c + 1 < a.C:  # the next channel's rows, while this one is transformed
            for i in range(nseg):
                cnx_wg_prefetch(a.x + (seg[5 * i] * a.C + c + 1) * a.H * a.W, a.H, a.W,
                                seg[5 * i + 1] * 4 - ph, seg[5 * i + 2] * 4 - pw,
                                4 * seg[5 * i + 3] + 2, 6)
        for i in range(nseg):
            cnt = seg[5 * i + 3]
            pos = seg[5 * i + 4]
            plane = a.x + (seg[5 * i] * a.C + c) * a.H * a.W
            j = 0
            while j < cnt:  # the run's lanes, cut at panel boundaries
                l = pos + j
                n = min(cnt - j, a.PN - l % a.PN)
                W4.input(plane, a.H, a.W, seg[5 * i + 1] * 4 - ph,
                         (seg[5 * i + 2] + j) * 4 - pw, n,
                         V + c * sc + (l // a.PN) * sp + l % a.PN, a.sv)
                j += n


cdef int phase_scatter(const Args* a, const float* y, Py_ssize_t ld, Py_ssize_t cnt, float b,
                       Py_ssize_t n, Py_ssize_t co, Py_ssize_t oy0, Py_ssize_t ox0,
                       float* tmp) noexcept nogil:
    """WG.scatter into a phase of out: the outputs [oy0 + i, ox0 + m] (i < 2,
    m < 2*cnt) of phase divmod(n % (dh*dw), dw) of sample n // (dh*dw),
    channel co, plus b, those inside out (see Args): WG.scatter into ``tmp``
    (2 rows of 2*cnt), then copied with the column stride dw.  Returns 1
    when a value of ``tmp`` (those dropped outside out included) is inf or
    NaN."""
    cdef Py_ssize_t k = n % (a.dh * a.dw), i, m, yy, xx, m0 = 0, m1 = 2 * cnt, dw = a.dw
    cdef float* out = a.out + (n // (a.dh * a.dw) * a.Co + co) * a.OHs * a.OWs
    cdef float* row
    cdef const float* t
    cdef int bad = WG.scatter(y, ld, cnt, b, tmp, 2, 2 * cnt, 0, 0)
    xx = dw * ox0 + k % dw - a.xo  # column m's: xx + dw*m
    if xx < 0 or xx + dw * (m1 - 1) >= a.OWs:
        m0 = 0 if xx >= 0 else (dw - 1 - xx) // dw
        m1 = 0 if xx >= a.OWs else min(m1, (a.OWs - xx + dw - 1) // dw)
    for i in range(2):
        yy = a.dh * (oy0 + i) + k // dw - a.yo
        if yy < 0 or yy >= a.OHs:
            continue
        row = out + yy * a.OWs + xx
        t = tmp + i * 2 * cnt
        if dw == 2 and WG.store2 != NULL:
            WG.store2(t + m0, m1 - m0, row + 2 * m0)
        else:
            for m in range(m0, m1):
                row[dw * m] = t[m]
    return bad


cdef inline bint tw4(const Args* a) noexcept nogil:
    """True when WG.input_tw4 transforms this geometry's input: 4 tile
    columns from rows of at most 8 values, undilated, whole 16-lane vectors
    in the blocks and panels."""
    return (WG.input_tw4 != NULL and a.tw == 4 and a.W <= 8 and a.dh == 0 and a.tb % 16 == 0
            and a.PN % 16 == 0 and not a.quad)


cdef inline bint tw16(const Args* a) noexcept nogil:
    """True when WG.input_tw16 transforms this geometry's input: 6 to 8 tile
    columns from rows of at most 16 values, undilated, whole 16-lane
    vectors in the blocks and panels."""
    return (WG.input_tw16 != NULL and 6 <= a.tw <= 8 and a.W <= 16 and a.dh == 0
            and a.tb % 16 == 0 and a.PN % 16 == 0 and not a.quad)


cdef Py_ssize_t fwd_products(const Args* a, Py_ssize_t blk, int tid) noexcept nogil:
    """Block ``blk``'s input transform and a.xi products (Mb in the thread's
    scratch, its runs of tiles in seg); returns the run count."""
    cdef Py_ssize_t tb = a.tb, C = a.Cv, Cop = a.Cop, MR = a.MR, NR = a.PN
    cdef Py_ssize_t t0 = blk * tb, nv = min(tb, a.T - t0), q
    cdef float* D = a.scr + tid * a.per
    cdef float* V = D + a.xi * tb
    cdef float* Mb = V + a.xi * a.sv
    cdef int64_t* seg = a.seg + tid * 5 * (tb + 1)
    cdef Py_ssize_t nseg = segments(a, t0, nv, seg)
    cdef Py_ssize_t panels = (nv + NR - 1) // NR  # the last block may be narrower
    cdef Py_ssize_t xi, pc, kc, mp, p
    cdef const float* A
    cdef Py_ssize_t read = panels * NR if WG.ukr == NULL else min(panels * NR, round16(nv))
    cdef Py_ssize_t kmax = KC4 if a.m == 4 else KC  # channels per run of the products
    if a.m == 4:
        for q in range(4 if a.quad else 1):  # quad: the views, channel blocks in view order
            transform_input4(a, nseg, seg, V + q * a.C * NR, C * NR, NR,
                             a.ph - 2 * (q // 2), a.pw - 2 * (q % 2))
    elif a.quad:  # the four shifted views, channel blocks of V in view order
        for q in range(4):
            transform_input(a, nseg, seg, D, V + q * a.C * NR, C * NR, NR,
                            a.ph - 2 * (q // 2), a.pw - 2 * (q % 2))
    elif (WGP_INPUT_TW8 != NULL and a.tw == 8 and a.W <= 16 and a.dh == 0 and tb % 16 == 0
            and NR % 16 == 0):  # small maps: two tile rows per vector
        WGP_INPUT_TW8(a.x, C, a.H, a.W, a.ph, a.pw, a.th, t0, nv, NR, V, C * NR, NR, a.sv)
    elif tw4(a):  # 7x7 and 8x8 maps: four tile rows per vector
        WG.input_tw4(a.x, C, a.H, a.W, a.ph, a.pw, a.th, t0, nv, NR, V, C * NR, NR, a.sv)
    elif tw16(a):  # 12x12 to 16x16 maps: up to four tile rows per vector
        WG.input_tw16(a.x, C, a.H, a.W, a.ph, a.pw, a.th, a.tw, t0, nv, NR, V, C * NR, NR,
                      a.sv)
    else:
        transform_input(a, nseg, seg, D, V, C * NR, NR, a.ph, a.pw)
    if nv < read:  # the lanes the products read past the last tile
        zero_tail(V, a.sv, C * NR, NR, C, nv, read, NR, a.xi)
    for xi in range(a.xi):
        A = a.upk + xi * a.su
        pc = 0
        while pc < C:
            kc = min(kmax, C - pc)
            for mp in range(Cop // MR):
                for p in range(panels):
                    if WG.ukr != NULL:  # the last panel: as few 16-lane columns as it needs
                        WG.ukr_n[(min(NR, nv - p * NR) + 15) // 16 - 1](
                            kc, A + mp * C * MR + pc * MR, V + xi * a.sv + p * C * NR + pc * NR,
                            Mb + xi * a.sm + mp * MR * tb + p * NR, tb, pc > 0)
                    else:
                        a.ker.s(kc, A + mp * C * MR + pc * MR, NULL,
                                V + xi * a.sv + p * C * NR + pc * NR, NULL,
                                Mb + xi * a.sm + mp * MR * tb + p * NR, tb,
                                <int>MR, <int>NR, pc > 0, NULL)
            pc += kmax
    return nseg


cdef int fwd_block(const Args* a, Py_ssize_t blk, int tid) noexcept nogil:
    """Output tiles of block ``blk``: transform, a.xi products, inverse
    transform.  Returns 1 when an output is inf or NaN (checked in cache,
    as it is stored; F(2x2, 3x3) on 4-tile-column maps and on dilation
    phases also counts the unstored positions of tiles past an edge: the
    caller's direct recomputation is exact)."""
    cdef Py_ssize_t tb = a.tb, nv = min(tb, a.T - blk * tb)
    cdef float* D = a.scr + tid * a.per
    cdef float* Mb = D + a.xi * tb + a.xi * a.sv
    cdef float* Y = Mb + a.xi * a.sm
    cdef int64_t* seg = a.seg + tid * 5 * (tb + 1)
    cdef Py_ssize_t nseg = fwd_products(a, blk, tid)
    cdef Py_ssize_t co, i
    cdef bint small = tw4(a)
    cdef float b
    cdef int bad = 0
    if a.m == 4:  # F(4x4, 3x3): the output transform stores each run's rows
        for co in range(a.Co):
            b = a.bias[co] if a.bias != NULL else 0
            for i in range(nseg):
                bad |= W4.output(Mb + co * tb + seg[5 * i + 4], a.sm, seg[5 * i + 3], b,
                                 a.out + (seg[5 * i] * a.Co + co) * a.OH * a.OW, a.OH,
                                 a.OW, seg[5 * i + 1] * 4, seg[5 * i + 2] * 4)
        return bad
    for co in range(a.Co):
        WG.output(Mb + co * tb, a.sm, nv, Y)
        b = a.bias[co] if a.bias != NULL else 0
        if small:
            if not WG.finite(Y, 4 * nv, b):
                bad = 1
            WG.scatter_tw4(Y, nv, nv, b, a.out, a.Co, co, a.OH, a.OW, a.th, blk * tb)
            continue
        for i in range(nseg):
            if a.dh:
                bad |= phase_scatter(a, Y + seg[5 * i + 4], nv, seg[5 * i + 3], b, seg[5 * i],
                                     co, seg[5 * i + 1] * 2, seg[5 * i + 2] * 2, D)
            else:  # (the values it stores)
                bad |= WG.scatter(Y + seg[5 * i + 4], nv, seg[5 * i + 3], b,
                                  a.out + (seg[5 * i] * a.Co + co) * a.OH * a.OW, a.OH, a.OW,
                                  seg[5 * i + 1] * 2, seg[5 * i + 2] * 2)
    return bad


cdef int fwd_run(Args* a, const Filters* f=NULL) noexcept nogil:
    """Every block of a set-up forward, on a.nt threads; with ``f``, its
    filter transform first, its panels split between the same threads in
    the same parallel region (a region costs tens of microseconds to wake
    sleeping threads); frees the scratch.  Returns fwd_block's and the
    filter transform's flags OR-ed."""
    cdef Py_ssize_t blk, p0, panels = (f.Co + f.MR - 1) // f.MR if f != NULL else 0
    cdef int bad = 0
    cdef int64_t shared = 0
    cdef int64_t* flag = &shared
    if a.nt == 1:
        for p0 in range(panels):
            bad |= filters_panel(f.w, f.w1, f.upk, f.su, f.Co, f.C, f.adjoint, f.MR, p0)
        for blk in range(a.blocks):
            bad |= fwd_block(a, blk, 0)
    else:
        with parallel(num_threads=a.nt):
            for p0 in prange(panels, schedule="static"):
                if filters_panel(f.w, f.w1, f.upk, f.su, f.Co, f.C, f.adjoint, f.MR, p0):
                    cnx_atomic_store(flag, 1)
            for blk in prange(a.blocks, schedule="dynamic", chunksize=1):
                if fwd_block(a, blk, threadid()):
                    cnx_atomic_store(flag, 1)
        bad = <int>shared
    free(a.scr)
    free(a.seg)
    return bad


cdef int fwd_block_pool(const Args* a, Py_ssize_t blk, int tid) noexcept nogil:
    """fwd_block with the bias, a 2x2 stride-2 max pool and a ReLU fused
    into the output transform (a tile is a pool window): a.out is the
    pooled (N, Co, th, tw) output, a sample's tiles contiguous in it.
    Returns 1 when an output (plus bias) is inf or NaN."""
    cdef Py_ssize_t tb = a.tb, t0 = blk * tb, nv = min(tb, a.T - t0)
    cdef Py_ssize_t per_img = a.th * a.tw, t, e, n, co
    cdef float* Mb = a.scr + tid * a.per + XI * tb + XI * a.sv
    cdef float b
    cdef int bad = 0
    fwd_products(a, blk, tid)
    for co in range(a.Co):
        b = a.bias[co] if a.bias != NULL else 0
        t = t0
        while t < t0 + nv:  # the block's tiles of one sample at a time
            n = t // per_img
            e = min(t0 + nv, (n + 1) * per_img)
            bad |= WGP_OUTPUT_POOL(Mb + co * tb + t - t0, a.sm, e - t, b,
                                   a.out + (n * a.Co + co) * per_img + t - n * per_img)
            t = e
    return bad


cdef void gw_point(const Args* a, Py_ssize_t nv, const float* Gy, const float* V, float* dU,
                   float* bpack, Py_ssize_t co_lo, Py_ssize_t co_hi, Py_ssize_t xi) noexcept nogil:
    """dU[xi] (rows co_lo .. co_hi of Co, C) += Gy[xi] (those rows, nv) @
    V[xi]^T (the block's nv lanes): Gy's rows read in place by the
    micro-kernel (its lanes are the reduction), each NR-channel panel of V
    transposed once into ``bpack`` and used by every row panel (``co_lo`` a
    multiple of MR: the panels, and so the bits, of the whole range).  Each
    tile of dU adds the block's lanes in runs of at most GW_RUN (its float32
    error grows with the length of a run), the tile in L1 after the
    first."""
    cdef Py_ssize_t tb = a.tb, C = a.C, Co = a.Co, MR = a.MR, NR = a.NR
    cdef Py_ssize_t c0 = 0, co0, nr, mr, i, k0
    cdef int64_t aoff[32]
    while c0 < C:
        nr = min(NR, C - c0)
        WG.pack_lanes(V + xi * a.sv + c0 * tb, tb, nr, nv, NR, bpack)
        co0 = co_lo
        while co0 < co_hi:
            mr = min(MR, co_hi - co0)
            for i in range(MR):
                aoff[i] = (co0 + min(i, mr - 1)) * tb
            k0 = 0
            while k0 < nv:
                a.ker.s_inda(min(<Py_ssize_t>GW_RUN, nv - k0), Gy + xi * a.sm + k0, aoff,
                             bpack + k0 * NR, NULL, dU + xi * Co * C + co0 * C + c0, C,
                             <int>mr, <int>nr, 1, NULL)
                k0 += GW_RUN
            co0 += MR
        c0 += NR


cdef void gw_products(const Args* a, Share* sh, Py_ssize_t blk, Py_ssize_t nv, const float* Gy,
                      const float* V, float* dU, float* bpack, Py_ssize_t co_lo,
                      Py_ssize_t co_hi) noexcept nogil:
    """A block's products (:func:`gw_point`) at every point; with a share
    (``sh`` not NULL), the points handed out one at a time to this thread
    and a helper (:func:`gw_help`), returning once both are done."""
    cdef Py_ssize_t xi
    cdef int64_t s
    if sh == NULL:
        for xi in range(XI):
            gw_point(a, nv, Gy, V, dU, bpack, co_lo, co_hi, xi)
        return
    sh.nv = nv
    cnx_atomic_store(&sh.done, 0)
    cnx_atomic_store(&sh.state, (blk + 1) << 8)
    while sh.wait and (cnx_atomic_load(&sh.state) & 255) == 0:
        cnx_relax()
    while True:
        s = cnx_atomic_load(&sh.state)
        if (s & 255) >= XI:
            break
        if cnx_atomic_cas(&sh.state, s, s + 1):
            gw_point(a, nv, Gy, V, dU, bpack, co_lo, co_hi, s & 255)
            cnx_atomic_add(&sh.done, 1)
    while cnx_atomic_load(&sh.done) < XI:
        cnx_relax()


cdef inline float* gw_V(const Args* a, int tid) noexcept nogil:
    """Thread ``tid``'s transformed input V (XI rows of stride a.sv) in the
    weight gradient's scratch, after its staging rows D (XI x tb); the
    transformed gradient Gy follows at V + XI*a.sv, the panel of V at
    Gy + XI*a.sm."""
    return a.scr + tid * a.per + XI * a.tb


cdef void gw_range(const Args* a, Py_ssize_t b0, Py_ssize_t b1, int tid, float* dU,
                   Py_ssize_t co_lo, Py_ssize_t co_hi, Share* sh=NULL) noexcept nogil:
    """Thread ``tid``'s dU (16, Co, C), its rows co_lo .. co_hi (co_lo a
    multiple of MR) = sum over blocks [b0, b1) of (A g A^T)[xi] @ V[xi]^T;
    the products shared with a helper when ``sh`` is not NULL."""
    cdef Py_ssize_t tb = a.tb, C = a.C, Co = a.Co
    cdef float* D = a.scr + tid * a.per
    cdef float* V = gw_V(a, tid)
    cdef float* Gy = V + XI * a.sv
    cdef float* bpack = Gy + XI * a.sm
    cdef int64_t* seg = a.seg + tid * 5 * (tb + 1)
    cdef Py_ssize_t blk, t0, nv, nseg, co, i, cnt, oy, ox, xi, lp = 2 * tb + 16
    cdef const float* plane
    for xi in range(XI):
        memset(dU + (xi * Co + co_lo) * C, 0, (co_hi - co_lo) * C * sizeof(float))
    for blk in range(b0, b1):
        t0 = blk * tb
        nv = min(tb, a.T - t0)
        if tw4(a):  # 7x7 and 8x8 maps: four tile rows per vector
            WG.input_tw4(a.x, C, a.H, a.W, a.ph, a.pw, a.th, t0, nv, a.PN, V, a.PN, tb, a.sv)
            WG.grad_tw4(a.g, Co, a.OH, a.OW, a.th, t0, nv, Gy, tb, a.sm)  # every row
            gw_products(a, sh, blk, nv, Gy, V, dU, bpack, co_lo, co_hi)
            continue
        nseg = segments(a, t0, nv, seg)
        if tw16(a):
            WG.input_tw16(a.x, C, a.H, a.W, a.ph, a.pw, a.th, a.tw, t0, nv, a.PN, V, a.PN, tb,
                          a.sv)
        else:
            transform_input(a, nseg, seg, D, V, a.PN, tb, a.ph, a.pw)
        for co in range(co_lo, co_hi):
            if co + 1 < co_hi and a.dh == 0:  # the next output channel's gradient rows
                for i in range(nseg):
                    cnx_wg_prefetch(a.g + (seg[5 * i] * Co + co + 1) * a.OH * a.OW, a.OH, a.OW,
                                    seg[5 * i + 1] * 2, seg[5 * i + 2] * 2, 2 * seg[5 * i + 3], 2)
            for i in range(nseg):
                cnt = seg[5 * i + 3]
                plane = a.g + (seg[5 * i] * Co + co) * a.OH * a.OW
                oy = seg[5 * i + 1] * 2
                ox = seg[5 * i + 2] * 2
                if a.dh:  # a phase of g
                    phase_rows(a.g, seg[5 * i], co, Co, a.OHs, a.OWs, a.dh, a.dw, oy, ox,
                               2, 2 * cnt, 0, 0, D, lp)
                    WG.grad_rows(D, lp, cnt, Gy + co * tb + seg[5 * i + 4], a.sm)
                elif oy + 2 <= a.OH and ox + 2 * cnt <= a.OW:  # inside: read in place
                    WG.grad_rows(plane + oy * a.OW + ox, a.OW, cnt, Gy + co * tb + seg[5 * i + 4],
                                 a.sm)
                else:  # an odd last row or column: zero-filled copy
                    WG.rows(plane, a.OH, a.OW, oy, ox, 2 * cnt, 2, D, lp)
                    WG.grad_rows(D, lp, cnt, Gy + co * tb + seg[5 * i + 4], a.sm)
        gw_products(a, sh, blk, nv, Gy, V, dU, bpack, co_lo, co_hi)


cdef void gw_run(Args* a, Py_ssize_t nt) noexcept nogil:
    """Every block of a set-up weight gradient into the ``nt`` partials at
    a.out, on a.nt threads (partials beyond a.nt are zeroed); frees the
    scratch."""
    cdef Py_ssize_t tid, run = a.nt, part = XI * a.Co * a.C
    for tid in range(run, nt):
        memset(a.out + tid * part, 0, part * sizeof(float))
    if run == 1:
        gw_range(a, 0, a.blocks, 0, a.out, 0, a.Co)
    else:
        for tid in prange(run, schedule="static", chunksize=1, num_threads=run):
            gw_range(a, a.blocks * tid // run, a.blocks * (tid + 1) // run, <int>tid,
                     a.out + tid * part, 0, a.Co)
    free(a.scr)
    free(a.seg)


cdef int gw_panel_threads(Args* a, int n_threads) except -1:
    """Re-size a weight gradient set up for one thread (its blocks, and so
    its sums, those of one thread) for up to ``n_threads`` threads that
    split the output channels' MR-row panels (see :func:`gw_run_panels`)."""
    cdef int run = <int>max(1, min(n_threads, a.Cop // a.MR))
    if run == 1:
        return 0
    free(a.scr)
    free(a.seg)
    a.seg = NULL
    a.scr = <float*>alloc_scratch(run * a.per * sizeof(float))
    try:
        a.seg = <int64_t*>alloc_scratch(run * 5 * (a.tb + 1) * sizeof(int64_t))
    except MemoryError:
        free(a.scr)
        raise
    a.nt = run
    return 0


cdef void gw_run_panels(Args* a) noexcept nogil:
    """Every block of a set-up weight gradient into the one dU at a.out, the
    output channels' MR-row panels split between a.nt threads (each
    transforms every block's input and its own channels' gradient): the
    same blocks, panels and so bits as one thread; frees the scratch."""
    cdef Py_ssize_t tid, run = a.nt, panels = a.Cop // a.MR
    if run == 1:
        gw_range(a, 0, a.blocks, 0, a.out, 0, a.Co)
    else:
        for tid in prange(run, schedule="static", chunksize=1, num_threads=run):
            gw_range(a, 0, a.blocks, <int>tid, a.out, panels * tid // run * a.MR,
                     min(a.Co, panels * (tid + 1) // run * a.MR))
    free(a.scr)
    free(a.seg)


cdef int setup(Args* a, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
               Py_ssize_t Co, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t ph, Py_ssize_t pw,
               int n_threads, Py_ssize_t rows, Py_ssize_t per_extra,
               Py_ssize_t fwd_rows, bint quad=False, Py_ssize_t m=2,
               Py_ssize_t tb=0) except -1:
    """Fill the geometry and allocate per-thread scratch (D, V, a.xi point
    blocks of ``rows`` x tb products, then ``per_extra`` floats) for
    ``n_threads`` (at most one per block); ``fwd_rows``: see
    :func:`block_tiles`; ``quad``, ``m``: see Args.  The point strides are padded by
    a cache line: 16 streams a power of two apart would share cache sets."""
    a.ker = kernels()
    a.MR = a.ker.s_mr
    a.NR = a.ker.s_nr
    a.PN = panel_lanes()
    a.N = N; a.C = C; a.H = H; a.W = W; a.Co = Co; a.OH = OH; a.OW = OW
    a.ph = ph; a.pw = pw
    a.quad = quad
    a.Cv = 4 * C if quad else C
    a.m = m
    a.xi = (m + 2) * (m + 2)
    a.dh = 0
    a.Cop = (Co + a.MR - 1) // a.MR * a.MR
    a.th = (OH + m - 1) // m
    a.tw = (OW + m - 1) // m
    a.T = N * a.th * a.tw
    a.tb = tb if tb > 0 else block_tiles(a.T, n_threads, fwd_rows, a.xi)
    a.blocks = (a.T + a.tb - 1) // a.tb
    a.nt = <int>max(1, min(n_threads, a.blocks))
    a.sv = a.Cv * a.tb + 16
    a.sm = rows * a.tb + 16
    a.per = round16(a.xi * a.tb + a.xi * a.sv + a.xi * a.sm + per_extra)
    a.scr = NULL
    a.seg = NULL
    a.scr = <float*>alloc_scratch(a.nt * a.per * sizeof(float))
    try:
        a.seg = <int64_t*>alloc_scratch(a.nt * 5 * (a.tb + 1) * sizeof(int64_t))
    except MemoryError:
        free(a.scr)
        raise
    return 0


cdef int fwd_setup(Args* a, const float[:, :, :, ::1] x, const float[:, ::1] upk,
                   const float[::1] bias, float* out, Py_ssize_t N, Py_ssize_t H,
                   Py_ssize_t W, Py_ssize_t Co, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t ph,
                   Py_ssize_t pw, int n_threads, Py_ssize_t per_extra,
                   bint quad=False, Py_ssize_t m=2) except -1:
    """:func:`setup` (N images of H x W) for a forward of ``x`` by the
    packed filter transform ``upk`` (and ``bias``) into ``out`` (Co, OH, OW
    per image)."""
    cdef Py_ssize_t MR = kernels().s_mr
    cdef Py_ssize_t Cop = (Co + MR - 1) // MR * MR
    cdef Py_ssize_t Cv = 4 * x.shape[1] if quad else x.shape[1]
    setup(a, N, x.shape[1], H, W, Co, OH, OW, ph, pw, n_threads, Cop, per_extra, Cv + Cop,
          quad, m)
    a.x = &x[0, 0, 0, 0]
    a.upk = &upk[0, 0]
    a.su = upk.shape[1]
    a.bias = &bias[0] if bias is not None else NULL
    a.g = NULL
    a.out = out
    return 0


def winograd_forward(const float[:, :, :, ::1] x,    # IN  (N, C, H, W)
                     const float[:, ::1] upk,        # IN  (16, >= Cop*C)
                     const float[::1] bias,          # IN  (Co,) or None
                     float[:, :, :, ::1] out,        # OUT (N, Co, OH, OW)
                     Py_ssize_t ph, Py_ssize_t pw, int n_threads):
    """out = conv2d(x, w, bias, stride 1, padding (ph, pw)) for a 3x3 ``w``
    given as its packed transform ``upk`` (see :mod:`cnnext._plan`).
    Returns False when an output is inf or NaN (checked as it is stored)."""
    if out.shape[0] == 0 or out.shape[1] == 0 or out.shape[2] == 0 or out.shape[3] == 0:
        return True
    return forward_run(x, upk, bias, out, ph, pw, n_threads) == 1


cdef int forward_run(const float[:, :, :, ::1] x, const float[:, ::1] upk,
                     const float[::1] bias, float[:, :, :, ::1] out, Py_ssize_t ph,
                     Py_ssize_t pw, int n_threads, const Filters* f=NULL) except -1:
    """Set up and run the F(2x2, 3x3) forward of a non-empty ``out`` (with
    ``f``, its filter transform into ``upk`` first, in the same parallel
    region): 1, or 0 when a filter or an output is inf or NaN."""
    cdef Args a
    cdef int bad
    fwd_setup(&a, x, upk, bias, &out[0, 0, 0, 0], x.shape[0], x.shape[2], x.shape[3],
              out.shape[1], out.shape[2], out.shape[3], ph, pw, n_threads, 4 * tile_block())
    with nogil:
        bad = fwd_run(&a, f)
    return bad == 0


def winograd_forward_filters(const float[:, :, :, ::1] x,    # IN  (N, C, H, W)
                             const float[:, :, :, ::1] w,    # IN  (Co, C, 3, 3), (C, Co, 3, 3) if adjoint
                             float[:, ::1] upk,              # OUT (16, >= Cop*C)
                             const float[::1] bias,          # IN  (Co,) or None
                             float[:, :, :, ::1] out,        # OUT (N, Co, OH, OW)
                             Py_ssize_t ph, Py_ssize_t pw, int n_threads,
                             bint adjoint=False):
    """:func:`winograd_filters` (``w`` into ``upk``) then
    :func:`winograd_forward` by ``upk``, in one parallel region.  Returns
    False when ``w`` or an output holds an inf or a NaN (``out`` is then
    to be recomputed)."""
    cdef Filters f
    if (WG_FILTER == NULL or w.shape[0] == 0 or w.shape[1] == 0 or out.shape[0] == 0
            or out.shape[1] == 0 or out.shape[2] == 0 or out.shape[3] == 0):
        # (the portable transform, filter by filter; or nothing to compute)
        return (winograd_filters(w, upk, adjoint, n_threads)
                and winograd_forward(x, upk, bias, out, ph, pw, n_threads))
    f.w = &w[0, 0, 0, 0]
    f.w1 = w.shape[1]
    f.upk = &upk[0, 0]
    f.su = upk.shape[1]
    f.Co = w.shape[1 if adjoint else 0]
    f.C = w.shape[0 if adjoint else 1]
    f.MR = kernels().s_mr
    f.adjoint = adjoint
    return forward_run(x, upk, bias, out, ph, pw, n_threads, &f) == 1


def winograd4_forward(const float[:, :, :, ::1] x,    # IN  (N, C, H, W)
                      const float[:, ::1] upk,        # IN  (36, >= Cop*C), quad: Cop*4C
                      const float[::1] bias,          # IN  (Co,) or None
                      float[:, :, :, ::1] out,        # OUT (N, Co, OH, OW)
                      Py_ssize_t ph, Py_ssize_t pw, int n_threads, bint quad=False):
    """:func:`winograd_forward` by F(4x4, 3x3): 4x4 output tiles from 6x6
    input tiles, 36 products; ``upk`` from :func:`winograd4_filters`.  With
    ``quad``, :func:`winograd_forward_quad` (a 5x5 kernel as four 3x3 views)
    by F(4x4, 3x3): each view's tiles read at its shift.  Returns False when
    an output is inf or NaN (checked as it is stored)."""
    cdef Args a
    cdef int bad
    if out.shape[0] == 0 or out.shape[1] == 0 or out.shape[2] == 0 or out.shape[3] == 0:
        return True
    fwd_setup(&a, x, upk, bias, &out[0, 0, 0, 0], x.shape[0], x.shape[2], x.shape[3],
              out.shape[1], out.shape[2], out.shape[3], ph, pw, n_threads, 0, quad, 4)
    with nogil:
        bad = fwd_run(&a)
    return bad == 0


def winograd_forward_quad(const float[:, :, :, ::1] x,    # IN  (N, C, H, W)
                          const float[:, ::1] upk,        # IN  (16, >= Cop*4C)
                          const float[::1] bias,          # IN  (Co,) or None
                          float[:, :, :, ::1] out,        # OUT (N, Co, OH, OW)
                          Py_ssize_t ph, Py_ssize_t pw, int n_threads):
    """out = conv2d(x, w, bias, stride 1, padding (ph, pw)) for a 5x5 ``w``
    as the 3x3 Winograd convolution of four views of x, shifted by (2a, 2b)
    for a, b in {0, 1}: view (a, b)'s input channel c is channel
    ``(2a + b)*C + c`` of the products, its filter the 3x3 block of ``w``
    at rows ``2a..2a+2``, columns ``2b..2b+2`` with the row (column) it
    shares with block a = 0 (b = 0) zeroed; ``upk`` is the packed
    transform of those (Co, 4C, 3, 3) filters.  Each tile's input is read
    once per view, transformed in place: no shifted copies.  ``ph``, ``pw``
    at most 2.  Returns False when an output is inf or NaN."""
    cdef Args a
    cdef int bad
    if out.shape[0] == 0 or out.shape[1] == 0 or out.shape[2] == 0 or out.shape[3] == 0:
        return True
    fwd_setup(&a, x, upk, bias, &out[0, 0, 0, 0], x.shape[0], x.shape[2], x.shape[3],
              out.shape[1], out.shape[2], out.shape[3], ph, pw, n_threads, 4 * tile_block(),
              True)
    with nogil:
        bad = fwd_run(&a)
    return bad == 0


def winograd_relu_pool2x2(const float[:, :, :, ::1] x,    # IN  (N, C, H, W)
                          const float[:, ::1] upk,        # IN  (16, >= Cop*C)
                          const float[::1] bias,          # IN  (Co,) or None
                          float[:, :, :, ::1] out,        # OUT (N, Co, PH, PW)
                          Py_ssize_t ph, Py_ssize_t pw, int n_threads):
    """out = the 2x2 stride-2 max pool of ReLU(conv2d(x, w, bias, stride 1,
    padding (ph, pw))) for a 3x3 ``w`` given as its packed transform
    ``upk``, when the convolution's output is (2*PH, 2*PW) (each output
    tile one pool window): the numbers of :func:`winograd_forward`, a ReLU
    and ``_pool.max_pool2d_forward``, the convolution's output never
    stored.  Returns False when one of its values is inf or NaN (``out`` is
    then incomplete: the caller recomputes with the direct algorithm, as
    it does after :func:`winograd_forward`)."""
    cdef Args a
    cdef Py_ssize_t blk
    cdef Py_ssize_t OH = x.shape[2] + 2 * ph - 2, OW = x.shape[3] + 2 * pw - 2
    cdef int bad = 0
    if OH != 2 * out.shape[2] or OW != 2 * out.shape[3]:
        raise ValueError(f"winograd_relu_pool2x2: the convolution's output {OH}x{OW} is not "
                         f"twice the pooled {out.shape[2]}x{out.shape[3]}")
    if out.shape[0] == 0 or out.shape[1] == 0 or out.shape[2] == 0:
        return True
    fwd_setup(&a, x, upk, bias, &out[0, 0, 0, 0], x.shape[0], x.shape[2], x.shape[3],
              out.shape[1], OH, OW, ph, pw, n_threads, 0)
    with nogil:
        if a.nt == 1:
            for blk in range(a.blocks):
                bad += fwd_block_pool(&a, blk, 0)
        else:
            for blk in prange(a.blocks, schedule="guided", num_threads=a.nt):
                bad += fwd_block_pool(&a, blk, threadid())
        free(a.scr)
        free(a.seg)
    return bad == 0


cdef int gw_setup(Args* a, const float[:, :, :, ::1] x, const float[:, :, :, ::1] g,
                  float[:, :, :, ::1] dup, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W,
                  Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t ph, Py_ssize_t pw) except -1:
    """:func:`setup` (N images of H x W) for a weight gradient of ``x`` and
    ``g`` into the ``dup.shape[0]`` partials ``dup``."""
    cdef Py_ssize_t tb = gw_block_tiles(N, OH, OW, dup.shape[0], x.shape[1], g.shape[1])
    setup(a, N, x.shape[1], H, W, g.shape[1], OH, OW, ph, pw, <int>dup.shape[0], g.shape[1],
          tb * kernels().s_nr, 0, False, 2, tb)
    a.x = &x[0, 0, 0, 0]
    a.g = &g[0, 0, 0, 0]
    a.upk = NULL
    a.bias = NULL
    a.out = &dup[0, 0, 0, 0]
    return 0


cdef int gw_go(Args* a, Py_ssize_t nt, int n_threads) except -1:
    """Run a set-up weight gradient: ``nt`` partials, each thread's share of
    the tiles, or one, its output channels split over up to ``n_threads``."""
    if nt == 1:
        gw_panel_threads(a, n_threads)
    with nogil:
        if nt == 1:
            gw_run_panels(a)
        else:
            gw_run(a, nt)
    return 0


def winograd_grad_weight(const float[:, :, :, ::1] x,  # IN  (N, C, H, W)
                         const float[:, :, :, ::1] g,  # IN  (N, Co, OH, OW)
                         float[:, :, :, ::1] dup,      # OUT (nt, 16, Co, C)
                         Py_ssize_t ph, Py_ssize_t pw, int n_threads=1):
    """dup[t] = thread t's share of dU[xi] = sum over tiles of
    (A g A^T)[xi] (x) (B^T d B)[xi]; the weight gradient is
    G^T (sum_t dup[t]) G.  Uses ``dup.shape[0]`` threads, each summing its
    share of the tiles, or, for one partial, up to ``n_threads`` threads
    that split the output channels (the same bits as one thread); the
    caller sizes ``dup`` with :func:`weight_grad_threads`."""
    cdef Args a
    if dup.shape[0] == 0 or g.shape[1] == 0 or x.shape[1] == 0:
        return
    gw_setup(&a, x, g, dup, x.shape[0], x.shape[2], x.shape[3], g.shape[2], g.shape[3], ph, pw)
    gw_go(&a, dup.shape[0], n_threads)


cdef void gw_help(const Args* a, Share* sh) noexcept nogil:
    """Take points of the blocks a :func:`gw_range` with share ``sh`` has
    transformed, until it is done (at once if it has not started)."""
    cdef const float* V = gw_V(a, 0)  # the run's buffers (thread 0)
    cdef const float* Gy = V + XI * a.sv
    cdef int64_t s
    cnx_atomic_store(&sh.joined, 1)
    while True:
        s = cnx_atomic_load(&sh.state)
        if s <= 0:
            return
        if (s & 255) >= XI:
            cnx_relax()
        elif cnx_atomic_cas(&sh.state, s, s + 1):
            gw_point(a, sh.nv, Gy, V, a.out, sh.bpack, 0, a.Co, s & 255)
            sh.helped += 1
            cnx_atomic_add(&sh.done, 1)


cdef class SharedWeightGrad:
    """:func:`winograd_grad_weight` into one partial ``dup`` (1, 16, Co, C)
    by :meth:`run` on one thread, which another thread may join by calling
    :meth:`help` (say, once its own part of a backward pass is done): the
    helper takes whole points of each block's products, so the result has
    the bits of one thread."""
    cdef Args a
    cdef Share sh
    cdef object keep

    def __cinit__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] g,
                  float[:, :, :, ::1] dup, Py_ssize_t ph, Py_ssize_t pw):
        self.a.scr = NULL
        self.a.seg = NULL
        self.sh.bpack = NULL
        self.sh.state = 0
        self.sh.done = 0
        self.sh.helped = 0
        self.sh.joined = 0
        self.sh.wait = False
        if dup.shape[0] != 1:
            raise ValueError(f"SharedWeightGrad: dup holds {dup.shape[0]} partials, not 1")
        self.keep = (x, g, dup)
        if g.shape[1] == 0 or x.shape[1] == 0:
            self.sh.state = -1
            return
        gw_setup(&self.a, x, g, dup, x.shape[0], x.shape[2], x.shape[3], g.shape[2],
                 g.shape[3], ph, pw)
        self.sh.bpack = <float*>alloc_scratch(self.a.tb * self.a.NR * sizeof(float))

    def __dealloc__(self):
        free(self.a.scr)
        free(self.a.seg)
        free(self.sh.bpack)

    def run(self, bint wait_for_helper=False):
        """Compute the weight gradient's partial (once); with
        ``wait_for_helper``, only once a thread has called :meth:`help` (the
        caller makes sure one will), leaving each block's first point to
        it."""
        if not cnx_atomic_cas(&self.sh.state, 0, XI):  # started, no block yet
            return
        self.sh.wait = wait_for_helper
        with nogil:
            while wait_for_helper and not cnx_atomic_load(&self.sh.joined):
                cnx_relax()
            gw_range(&self.a, 0, self.a.blocks, 0, self.a.out, 0, self.a.Co, &self.sh)
            cnx_atomic_store(&self.sh.state, -1)

    def help(self):
        """Share :meth:`run`'s products until it is done; returns at once if
        it has not started."""
        with nogil:
            gw_help(&self.a, &self.sh)

    @property
    def started(self):
        """Whether :meth:`run` has started."""
        return cnx_atomic_load(&self.sh.state) != 0

    @property
    def helped(self):
        """How many products (one point of one block each) :meth:`help` took."""
        return self.sh.helped


def winograd_forward_phases(const float[:, :, :, ::1] x,    # IN  (Ns, C, Hs, Ws)
                            const float[:, ::1] upk,        # IN  (16, >= Cop*C)
                            const float[::1] bias,          # IN  (Co,) or None
                            float[:, :, :, ::1] out,        # OUT (Ns, Co, OHs, OWs)
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                            Py_ssize_t y0, Py_ssize_t x0, Py_ssize_t yo, Py_ssize_t xo,
                            Py_ssize_t OH, Py_ssize_t OW, int n_threads):
    """:func:`winograd_forward` on the dilation phases, read and written in
    place: for each phase (r, c) < (dh, dw), the (OH, OW) result of
    conv2d(x_rc, w, bias, padding (ph, pw)) on the phase x_rc[n, :, i, j] =
    x[n, :, dh*i + r - y0, dw*j + c - x0] (zero outside x), its [i, j] stored
    at out[n, :, dh*i + r - yo, dw*j + c - xo] where that is inside out.
    Returns False when an output is inf or NaN (see fwd_block)."""
    cdef Args a
    cdef int bad
    if out.shape[0] == 0 or out.shape[1] == 0 or OH <= 0 or OW <= 0:
        return True
    fwd_setup(&a, x, upk, bias, &out[0, 0, 0, 0], x.shape[0] * dh * dw, 0, 0, out.shape[1],
              OH, OW, ph, pw, n_threads, 4 * tile_block())
    a.dh = dh; a.dw = dw; a.Hs = x.shape[2]; a.Ws = x.shape[3]
    a.OHs = out.shape[2]; a.OWs = out.shape[3]; a.y0 = y0; a.x0 = x0; a.yo = yo; a.xo = xo
    with nogil:
        bad = fwd_run(&a)
    return bad == 0


def winograd_grad_weight_phases(const float[:, :, :, ::1] x,  # IN  (Ns, C, Hs, Ws)
                                const float[:, :, :, ::1] g,  # IN  (Ns, Co, OHs, OWs)
                                float[:, :, :, ::1] dup,      # OUT (nt, 16, Co, C)
                                Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                                Py_ssize_t y0, Py_ssize_t x0, Py_ssize_t OH, Py_ssize_t OW,
                                int n_threads=1):
    """:func:`winograd_grad_weight` on the dilation phases of x (as in
    :func:`winograd_forward_phases`) and of g (phase (r, c)'s [i, j] =
    g[n, :, dh*i + r, dw*j + c], zero outside g), read in place, the phase
    convolutions giving (OH, OW) outputs: the sum of the phases' weight
    gradients."""
    cdef Args a
    if dup.shape[0] == 0 or g.shape[1] == 0 or x.shape[1] == 0:
        return
    gw_setup(&a, x, g, dup, x.shape[0] * dh * dw, 0, 0, OH, OW, ph, pw)
    a.dh = dh; a.dw = dw; a.Hs = x.shape[2]; a.Ws = x.shape[3]
    a.OHs = g.shape[2]; a.OWs = g.shape[3]; a.y0 = y0; a.x0 = x0
    gw_go(&a, dup.shape[0], n_threads)


def weight_grad_threads(Py_ssize_t N, Py_ssize_t OH, Py_ssize_t OW, int n_threads,
                        Py_ssize_t Co=0, Py_ssize_t C=0):
    """dU partials :func:`winograd_grad_weight` fills with ``n_threads``
    threads: one per thread (at most one per tile block), or one for a dU
    of at least PANEL_SPLIT_BYTES (Co x C channels) and at least four
    MR-row panels of output channels per thread, which the threads split
    by output channels instead (partials that large would be written and
    read back from memory; maps with four tile columns excepted: their
    gradient transform is not split)."""
    cdef Py_ssize_t MR = kernels().s_mr
    if (n_threads > 1 and XI * Co * C * <Py_ssize_t>sizeof(float) >= PANEL_SPLIT_BYTES
            and (Co + MR - 1) // MR >= 4 * n_threads and (OW + 1) // 2 != 4):
        return 1
    cdef Py_ssize_t T = N * ((OH + 1) // 2) * ((OW + 1) // 2)
    cdef Py_ssize_t tb = gw_block_tiles(N, OH, OW, n_threads, C, Co)
    return <int>max(1, min(n_threads, (T + tb - 1) // tb))


def weight_grad_tiles(Py_ssize_t N, Py_ssize_t OH, Py_ssize_t OW, int n_threads,
                      Py_ssize_t Co, Py_ssize_t C):
    """Tiles per block of :func:`winograd_grad_weight` with ``n_threads``
    threads (C -> Co channels): its scratch per thread is about 16 x (C +
    Co + 1) floats per tile."""
    return gw_block_tiles(N, OH, OW, weight_grad_threads(N, OH, OW, n_threads, Co, C), C, Co)


# --------------------------------------------------------------------------
# Filter transforms (float64 arithmetic, one rounding per result)
# --------------------------------------------------------------------------

cdef inline void g_apply(const double* w, Py_ssize_t s, double* t, Py_ssize_t ts) noexcept nogil:
    """t[0:4] (stride ts) = G w for w[0:3] (stride s), G = [[1, 0, 0],
    [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]."""
    t[0] = w[0]
    t[ts] = 0.5 * (w[0] + w[s] + w[2 * s])
    t[2 * ts] = 0.5 * (w[0] - w[s] + w[2 * s])
    t[3 * ts] = w[2 * s]


cdef int filters_panel(const float* w, Py_ssize_t w1, float* upk, Py_ssize_t su, Py_ssize_t Co,
                       Py_ssize_t C, bint adjoint, Py_ssize_t MR, Py_ssize_t p0) noexcept nogil:
    """Panel ``p0`` (output channels MR*p0 ..) of filters_simd; nonzero if
    one of its filters holds inf/NaN.  The adjoint's input channels are a
    row of w apart (Co*9 floats, too far for the hardware prefetcher): each
    step prefetches the filters FILTER_AHEAD channels on."""
    cdef Py_ssize_t rs = 9 if adjoint else w1 * 9  # between output channels
    cdef Py_ssize_t cs = w1 * 9 if adjoint else 9  # between input channels
    cdef Py_ssize_t c, nv = min(MR, Co - p0 * MR)
    cdef const float* base = w + p0 * MR * rs
    cdef int bad = 0
    for c in range(C):
        if adjoint and c + FILTER_AHEAD < C:
            cnx_prefetch_lines(<const char*>(base + (c + FILTER_AHEAD) * cs), 0,
                               (nv * 9 * <Py_ssize_t>sizeof(float) + 63) // 64 + 1)
        bad |= WG_FILTER(base + c * cs, rs, <int>nv, adjoint, upk + (p0 * C + c) * MR, su,
                         <int>MR)
    return bad


cdef int filters_simd(const float[:, :, :, ::1] w, float[:, ::1] upk, Py_ssize_t Co,
                      Py_ssize_t C, bint adjoint, Py_ssize_t MR, int n_threads) noexcept nogil:
    """winograd_filters' packing, a panel's MR filters of one input channel
    transformed at once (the same bits as the scalar loop:
    cnnext_wgfilter.h); the panels split between up to ``n_threads``
    threads.  Nonzero if ``w`` holds inf/NaN."""
    cdef Py_ssize_t p0, panels = (Co + MR - 1) // MR
    cdef int run = <int>max(1, min(n_threads, panels))
    cdef int bad = 0
    if run == 1:
        for p0 in range(panels):
            bad |= filters_panel(&w[0, 0, 0, 0], w.shape[1], &upk[0, 0], upk.shape[1], Co, C,
                                 adjoint, MR, p0)
    else:
        for p0 in prange(panels, schedule="static", num_threads=run):
            bad |= filters_panel(&w[0, 0, 0, 0], w.shape[1], &upk[0, 0], upk.shape[1], Co, C,
                                 adjoint, MR, p0)
    return bad


def winograd_filters(const float[:, :, :, ::1] w,   # IN  (Co, C, 3, 3), (C, Co, 3, 3) if adjoint
                     float[:, ::1] upk,             # OUT (16, >= Cop*C)
                     bint adjoint=False, int n_threads=1):
    """upk[xi, ((co // MR)*C + c)*MR + co % MR] = (G w[co, c] G^T)[xi]
    (MR-row panels of the micro-kernel's A operand), zero for the rows
    co >= Co that fill the last panel.  A row longer than Cop*C (a point
    stride that is not a large power of two) keeps the 16 points out of
    each other's cache sets.  With ``adjoint``, the filters are those of the
    input gradient: ``w`` transposed (C and Co swapped) and rotated by 180
    degrees.  With AVX2 or AVX-512, the filters are split between up to
    ``n_threads`` threads (the same bits whatever the count).  Returns
    False if ``w`` holds an inf or a NaN."""
    cdef Py_ssize_t Co = w.shape[1 if adjoint else 0], C = w.shape[0 if adjoint else 1]
    if Co == 0 or C == 0:
        return True
    cdef Py_ssize_t MR = kernels().s_mr
    cdef Py_ssize_t Cop = (Co + MR - 1) // MR * MR, co, c, i, xi, p0
    cdef int ok
    cdef double wd[9]
    cdef double t[12]
    cdef double u[16]
    with nogil:
        if WG_FILTER != NULL:  # (checks w as it reads it)
            ok = filters_simd(w, upk, Co, C, adjoint, MR, n_threads) == 0
        else:
            for p0 in range(Cop // MR):  # a panel's MR rows are adjacent in upk
                for c in range(C):
                    for co in range(p0 * MR, p0 * MR + MR):
                        if co < Co:
                            for i in range(9):
                                if adjoint:
                                    wd[i] = w[c, co, 2 - i // 3, 2 - i % 3]
                                else:
                                    wd[i] = w[co, c, i // 3, i % 3]
                            for i in range(3):
                                g_apply(&wd[i], 3, &t[i], 3)         # columns: t (4, 3)
                            for i in range(4):
                                g_apply(&t[3 * i], 1, &u[4 * i], 1)  # rows: u (4, 4)
                        else:
                            for xi in range(16):
                                u[xi] = 0
                        for xi in range(16):
                            upk[xi, (p0 * C + c) * MR + co - p0 * MR] = <float>u[xi]
            # one vectorised pass (a sum per filter would be a chain of
            # dependent additions, the transform's bottleneck)
            ok = WG.finite(&w[0, 0, 0, 0], w.shape[0] * w.shape[1] * 9, 0)
    return ok != 0


def winograd4_filters(const float[:, :, :, ::1] w,   # IN  (Co, C, 3, 3), (C, Co, 3, 3) if adjoint
                      float[:, ::1] upk,             # OUT (36, >= Cop*C)
                      bint adjoint=False, int n_threads=1):
    """:func:`winograd_filters` for F(4x4, 3x3): the 36 points of G w G^T
    (computed in float64, rounded once), the rows of output channels
    split between up to ``n_threads`` threads (the same bits whatever the
    count).  Returns False if ``w`` holds an inf or a NaN."""
    cdef Py_ssize_t Co = w.shape[1 if adjoint else 0], C = w.shape[0 if adjoint else 1]
    if Co == 0 or C == 0:
        return True
    cdef Py_ssize_t MR = kernels().s_mr
    cdef Py_ssize_t panels = (Co + MR - 1) // MR, nt = max(1, min(n_threads, panels)), t
    cdef Py_ssize_t per = 36 * CNX_W4_FC * MR
    cdef int ok
    cdef float* tmp = <float*>alloc_scratch(nt * per * sizeof(float))
    with nogil:
        if nt == 1:
            cnx_w4_filters(&w[0, 0, 0, 0], Co, C, adjoint, MR, 0, panels, &upk[0, 0],
                           upk.shape[1], tmp)
        else:
            for t in prange(nt, schedule="static", num_threads=nt):
                cnx_w4_filters(&w[0, 0, 0, 0], Co, C, adjoint, MR, panels * t // nt,
                               panels * (t + 1) // nt, &upk[0, 0], upk.shape[1], tmp + t * per)
        free(tmp)
        ok = WG.finite(&w[0, 0, 0, 0], w.shape[0] * w.shape[1] * 9, 0)
    return ok != 0


def w4_isa():
    """Name of the F(4x4, 3x3) transform variant in use ("avx2", "generic")."""
    return W4.name.decode()


cdef int filter_grad_row(const float[:, :, :, ::1] dup, float[:, :, :, ::1] gw,
                         Py_ssize_t co) noexcept nogil:
    """Output channel ``co`` of winograd_filter_grad; nonzero when one of
    its results is inf or NaN."""
    cdef Py_ssize_t nt = dup.shape[0], C = gw.shape[1], c
    cdef Py_ssize_t ts = 16 * dup.shape[2] * dup.shape[3], xs = dup.shape[2] * dup.shape[3]
    cdef const float* d = &dup[0, 0, co, 0]
    cdef float* out = &gw[co, 0, 0, 0]
    cdef int bad = 0
    if WG_FILTER_GRAD != NULL:
        return WG_FILTER_GRAD(d, nt, ts, xs, C, out)
    for c in range(C):
        bad |= cnx_wg_filter_grad_one(d + c, nt, ts, xs, out + 9 * c)
    return bad


def winograd_filter_grad(const float[:, :, :, ::1] dup,  # IN  (nt, 16, Co, C)
                         float[:, :, :, ::1] gw,          # OUT (Co, C, 3, 3)
                         int n_threads=1):
    """gw[co, c] = G^T (sum_t dup[t, :, co, c]) G, the partials added in
    order in float64, transformed in float64 and rounded once
    (cnnext_wgfilter.h); the output channels split between up to
    ``n_threads`` threads (the same bits whatever the count).  Returns
    False when gw holds an inf or a NaN."""
    cdef Py_ssize_t Co = gw.shape[0], C = gw.shape[1], co
    cdef int run = <int>max(1, min(n_threads, Co))
    cdef int bad = 0
    if Co == 0 or C == 0:
        return True
    with nogil:
        if run == 1:
            for co in range(Co):
                bad |= filter_grad_row(dup, gw, co)
        else:
            for co in prange(Co, schedule="static", num_threads=run):
                bad |= filter_grad_row(dup, gw, co)
    return bad == 0


# --------------------------------------------------------------------------
# Dilation phases: a stride-1 convolution dilated by (dh, dw) is dh*dw
# undilated ones on the sub-grids of rows r::dh and columns c::dw (of the
# padded input), stacked along the batch axis, which the *_phases kernels
# read (phase_rows) and write (phase_scatter) in place.
# --------------------------------------------------------------------------

cdef inline void gather2(const float* s, float* d, Py_ssize_t n) noexcept nogil:
    """d[j] = s[2*j] for j < n."""
    cdef Py_ssize_t j
    for j in range(n):
        d[j] = s[2 * j]


cdef void split_plane(const float* src, Py_ssize_t H, Py_ssize_t W, float* dst,
                      Py_ssize_t Hb, Py_ssize_t Wb, Py_ssize_t ld, Py_ssize_t dh, Py_ssize_t dw,
                      Py_ssize_t y0, Py_ssize_t x0) noexcept nogil:
    """dst[i*ld + j] = src[dh*i + y0, dw*j + x0] for i < Hb, j < Wb (zero
    outside src)."""
    cdef Py_ssize_t i, j, iy, j0 = 0, j1 = Wb
    if x0 < 0 or x0 + dw * (Wb - 1) >= W:  # the columns j with 0 <= dw*j + x0 < W
        j0 = min(Wb, 0 if x0 >= 0 else (dw - 1 - x0) // dw)
        j1 = max(j0, min(Wb, 0 if x0 >= W else (W - x0 + dw - 1) // dw))
    cdef const float* row
    cdef float* out
    for i in range(Hb):
        iy = dh * i + y0
        out = dst + i * ld
        if iy < 0 or iy >= H:
            memset(out, 0, Wb * sizeof(float))
            continue
        row = src + iy * W + dw * j0 + x0
        for j in range(j0):
            out[j] = 0
        if dw == 2:  # a constant stride the compiler vectorises
            gather2(row, out + j0, j1 - j0)
        else:
            for j in range(j1 - j0):
                out[j0 + j] = row[dw * j]
        for j in range(j1, Wb):
            out[j] = 0


cdef inline void phase_rows(const float* base, Py_ssize_t n, Py_ssize_t ch, Py_ssize_t chans,
                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t dh,
                            Py_ssize_t dw, Py_ssize_t iy0, Py_ssize_t ix0, Py_ssize_t rows,
                            Py_ssize_t cols, Py_ssize_t y0, Py_ssize_t x0, float* p,
                            Py_ssize_t lp) noexcept nogil:
    """WG.rows on a phase: p[y*lp + i] = element [iy0 + y, ix0 + i] (y <
    rows, i < cols) of channel ``ch`` of the phase ``divmod(n % (dh*dw), dw)``
    of sample n // (dh*dw) of ``base`` (., chans, H, W), offset by (y0, x0) (see
    Args)."""
    cdef Py_ssize_t k = n % (dh * dw)
    split_plane(base + (n // (dh * dw) * chans + ch) * H * W, H, W, p, rows, cols, lp, dh, dw,
                dh * iy0 + k // dw - y0, dw * ix0 + k % dw - x0)


cdef void split_one(const float* s, Py_ssize_t H, Py_ssize_t W, Py_ssize_t dh, Py_ssize_t dw,
                    float* d, Py_ssize_t ds) noexcept nogil:
    """Phase (r, c) of the (H, W) plane s to d + (r*dw + c)*ds: its [i, j] =
    s[dh*i + r, dw*j + c] (H, W multiples of dh, dw)."""
    cdef Py_ssize_t y, c, j, Wp = W // dw
    cdef float* t
    for y in range(H):
        for c in range(dw):
            t = d + ((y % dh) * dw + c) * ds + (y // dh) * Wp
            if dw == 2:
                gather2(s + y * W + c, t, Wp)
            else:
                for j in range(Wp):
                    t[j] = s[y * W + dw * j + c]


cdef void merge_one(const float* s, Py_ssize_t ss, Py_ssize_t H, Py_ssize_t W, Py_ssize_t dh,
                    Py_ssize_t dw, float* d) noexcept nogil:
    """The inverse of split_one: d[dh*i + r, dw*j + c] = phase (r, c)'s
    [i, j], the phases ss apart from s."""
    cdef Py_ssize_t y, c, j, Wp = W // dw
    cdef const float* t
    cdef const float* u
    cdef float* row
    for y in range(H):
        t = s + (y % dh) * dw * ss + (y // dh) * Wp
        row = d + y * W
        if dw == 2:  # interleave two rows, a loop the compiler vectorises
            u = t + ss
            for j in range(Wp):
                row[2 * j] = t[j]
                row[2 * j + 1] = u[j]
        else:
            for c in range(dw):
                for j in range(Wp):
                    row[dw * j + c] = t[c * ss + j]


cdef inline void phases_plane(const float* a, float* b, Py_ssize_t p, Py_ssize_t C,
                              Py_ssize_t H, Py_ssize_t W, Py_ssize_t dh, Py_ssize_t dw,
                              bint merge) noexcept nogil:
    """Plane p = n*C + ch of a batch (N, C, H, W): split_one from ``a`` (the
    batch) into ``b`` (the stacked phases), or with ``merge`` merge_one
    from ``a`` (the stacked phases) into ``b`` (the batch)."""
    cdef Py_ssize_t ds = C * (H // dh) * (W // dw)
    cdef Py_ssize_t ph = (p // C) * dh * dw * ds + (p % C) * (ds // C)
    if merge:
        merge_one(a + ph, ds, H, W, dh, dw, b + p * H * W)
    else:
        split_one(a + p * H * W, H, W, dh, dw, b + ph, ds)


def copy_phases(const float[:, :, :, ::1] a,  # IN  (N, C, H, W); merge: (N*dh*dw, C, H/dh, W/dw)
                float[:, :, :, ::1] b,        # OUT (N*dh*dw, C, H/dh, W/dw); merge: (N, C, H, W)
                Py_ssize_t dh, Py_ssize_t dw, bint merge, int n_threads):
    """The dilation phases of a batch stacked along the batch axis as the
    *_phases kernels stack them, b[(n*dh + r)*dw + c, ch, i, j] = a[n, ch,
    dh*i + r, dw*j + c] (H, W multiples of dh, dw), or with ``merge`` the
    inverse, b[n, ch, dh*i + r, dw*j + c] = a[(n*dh + r)*dw + c, ch, i, j];
    one plane per task."""
    cdef Py_ssize_t N = a.shape[0], C = a.shape[1], H = a.shape[2], W = a.shape[3], p
    if merge:
        N, C, H, W = b.shape[0], b.shape[1], b.shape[2], b.shape[3]
    cdef int nt = <int>max(1, min(n_threads, N * C))
    if N * C * H * W == 0:
        return
    cdef const float* ap = &a[0, 0, 0, 0]
    cdef float* bp = &b[0, 0, 0, 0]
    with nogil:
        if nt == 1:
            for p in range(N * C):
                phases_plane(ap, bp, p, C, H, W, dh, dw, merge)
        else:
            for p in prange(N * C, schedule="static", num_threads=nt):
                phases_plane(ap, bp, p, C, H, W, dh, dw, merge)


