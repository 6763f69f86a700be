"""Matrix products for the layer kernels (the numba mirror of ``kernels/gemm.pxd``): BLAS
(``np.dot``, the BLAS SciPy ships) for large shapes, register-tiled loops for small ones, the
same tiles over packed copies for a large weight matrix at moderate batch sizes.

Why tiles: a loop that adds ``a[i, k] * b[k, :]`` into a row of ``out`` for every k loads and
stores that row once per k, so it runs at the speed of the cache, not of the FMA units. A tile
keeps a block of ``out`` (TILE_ROWS rows × two vectors of columns) in registers for the
whole k loop. Numba has no vector types, so the tile lives in a stack array (:func:`_stack_tile`)
indexed only by loop counters over constant ranges: LLVM unrolls those loops, turns the stack
array into registers (SROA) and emits one vector FMA per register and k. Indices into the
operands are unsigned, so numba emits no negative-index wraparound (which would turn the
vector loads into gathers). Check with ``_row_tiles.inspect_asm(sig)``: the k loop is
broadcasts of a, vector loads of b and ``vfmadd231p*``, nothing else.
"""
import numba
import numpy as np
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
try:  # private to numba (see _num_threads below); a numba without them still runs, uncached
    from numba.np.ufunc.parallel import _iget_num_threads, _launch_threads
except ImportError:
    _iget_num_threads = _launch_threads = None

from .jit import TUNING, VECTOR_BYTES, inline_kernel, kernel

#: Products of fewer multiply-adds (or with fewer than BLAS_MIN_ROWS rows or columns) use the
#: tiles: a BLAS call wakes BLAS's thread pool, which on shared cores costs milliseconds.
BLAS_MIN_WORK = TUNING["BLAS_MIN_WORK"]
BLAS_MIN_ROWS = TUNING["BLAS_MIN_ROWS"]

#: A batch tile: TILE_ROWS rows × 2 vectors of accumulators, each broadcast of a[i, k] shared
#: by 2 FMAs and each load of b[k, j] by TILE_ROWS.
TILE_ROWS = TUNING["TILE_ROWS"]
EDGE_ROWS = 8 * TILE_ROWS
TILE_BYTES = 2 * VECTOR_BYTES
#: A lone row (a batch's last rows): enough independent accumulators to hide the FMA latency.
ROW_BYTES = TUNING["ROW_VECTORS"] * VECTOR_BYTES
HALF_ROW_BYTES = ROW_BYTES // 2
STACK_BYTES = max(TILE_ROWS * TILE_BYTES, ROW_BYTES)


@kernel
def worth_blas(m, n, k):
    return m >= BLAS_MIN_ROWS and n >= BLAS_MIN_ROWS and m * n * k >= BLAS_MIN_WORK


if numba.config.DISABLE_JIT:  # the kernels run as plain Python: the intrinsics cannot
    _num_threads = numba.get_num_threads

    def _scratch(like, shape):
        return np.empty(shape, like.dtype)

    def _prefer_wide_vectors():
        pass

    def _columns(like, n_bytes):
        return n_bytes // like.itemsize
else:
    # numba.get_num_threads() in a kernel makes it and every kernel calling it uncacheable
    # ("dynamic globals": it calls the threading layer through an address known only at run
    # time); numba's own intrinsic calls it by symbol name, which the cache can store. The
    # threading layer registers that symbol when it starts: start it now, before any cached
    # kernel is loaded (so importing this backend starts numba's thread pool, as its first
    # parallel kernel would).
    if _iget_num_threads is None:
        _num_threads = numba.get_num_threads
    else:
        _launch_threads()
        _num_threads = _iget_num_threads

    @intrinsic
    def _stack_tile(typingctx, like):
        """A pointer to STACK_BYTES of scratch for ``like``'s dtype on the stack (allocated in
        the function's entry block: a tile inlined in a loop reuses it)."""
        dtype = like.dtype

        def codegen(context, builder, signature, args):
            element = context.get_value_type(dtype)
            return cgutils.alloca_once(builder, element, size=STACK_BYTES // context.get_abi_sizeof(element))
        return types.CPointer(dtype)(like), codegen

    @intrinsic
    def _prefer_wide_vectors(typingctx):
        """Lets LLVM vectorise the calling function with 512-bit registers where the CPU has
        them: for Intel CPUs LLVM prefers 256-bit vectors unless told (a no-op on AVX2). Also
        keeps the function out of line (the tile loops call it): inlined into tiled_matmul
        beside the edge's scratch arrays, LLVM kept the accumulators in memory."""
        def codegen(context, builder, signature, args):
            # a string attribute: llvmlite's add() accepts only the attributes it knows
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
            builder.function.attributes.add("noinline")
            return context.get_dummy_value()
        return types.none(), codegen

    @intrinsic
    def _columns(typingctx, like, n_bytes):
        """n_bytes (a literal) in elements of ``like``'s dtype: a tile width as a constant."""
        if not isinstance(n_bytes, types.IntegerLiteral):
            return None  # numba retries with the literal
        n = n_bytes.literal_value // (like.dtype.bitwidth // 8)

        def codegen(context, builder, signature, args):
            return context.get_constant(types.intp, n)
        return types.intp(like, n_bytes), codegen

    @inline_kernel
    def _scratch(like, shape):
        """An array of ``shape`` on the caller's stack (inlined: the caller's frame)."""
        return carray(_stack_tile(like), shape)


@inline_kernel
def _tile(a, b, out, i, j0, b_j0, rows, width, accumulate):
    """out[i:i+rows, j0:j0+width] (+)= a[i:i+rows] @ b[:, b_j0:b_j0+width] (b_j0 = j0, or 0 in
    a packed or padded copy of b); with ``accumulate`` (a constant at each call site: True on
    the packed path) the sums start from out, else from 0. ``rows`` and ``width`` are
    constants at every call site (inlined: the loops over them unroll). Always whole: the
    right edge of a product is computed into padded arrays (:func:`_edge_tiles`), because
    stores under a per-column test keep LLVM from vectorising the accumulators. Each element
    sums its k in order, one FMA at a time, whatever the tile (a sum carried over in out, in
    out's dtype, continues exactly as if it had stayed in a register): a row's result does
    not depend on where it sits in the batch, nor on the path that computed it."""
    acc = _scratch(out, (rows, width))
    av = _scratch(out, rows)
    j0, b_j0 = np.uint64(j0), np.uint64(b_j0)
    for r in range(rows):
        out_r = out[np.uint64(i + r)]
        for j in range(width):
            acc[r, j] = out_r[j0 + np.uint64(j)] if accumulate else 0.0
    for kk in range(a.shape[1]):
        k = np.uint64(kk)
        b_k = b[k]
        for r in range(rows):
            av[r] = a[np.uint64(i + r), k]
        for j in range(width):
            w = b_k[b_j0 + np.uint64(j)]
            for r in range(rows):
                acc[r, j] += av[r] * w
    for r in range(rows):
        out_r = out[np.uint64(i + r)]
        for j in range(width):
            out_r[j0 + np.uint64(j)] = acc[r, j]


#: A b of at least this size does not fit L2 beside a and out: it comes from memory, and the
#: products read it in the order memory serves best (packed copies for a batch, streamed rows
#: for a few rows).
LARGE_B_BYTES = TUNING["PACKED_MIN_B_BYTES"]


def _tile_loops(tile_bytes):
    """The tile loops for tiles ``tile_bytes`` wide (a constant in them): TILE_BYTES for a
    product's columns, VECTOR_BYTES for a narrow right edge (200 = 6 x 32 + 8 float32 columns:
    the 8 in a 16-wide tile, not a 32-wide one). Each loop is a function of its own, taking its
    arrays as arguments: beside arrays allocated in the same function LLVM kept the
    accumulators in memory (it could not rule out aliasing); and apart, a first call compiles
    only the ones its batch needs. (Made twice here rather than given the width as a literal
    argument: called from Python, a literal argument sends every call through numba's compile
    path again.)"""
    @kernel
    def row_tiles(a, b, out, n_rows, n_cols):
        """out[:n_rows, :n_cols] = a[:n_rows] @ b[:, :n_cols] in TILE_ROWS-row tiles (n_rows a
        multiple of TILE_ROWS, n_cols of tile_bytes)."""
        _prefer_wide_vectors()
        tile_cols = _columns(out, tile_bytes)
        for j0 in range(0, n_cols, tile_cols):
            for i in range(0, n_rows, TILE_ROWS):
                _tile(a, b, out, i, j0, j0, TILE_ROWS, tile_cols, False)

    @kernel
    def leftover_tiles(a, b, out, first, fours, twos, n_cols):
        """Rows first.. of out in a 4-row tile (if ``fours``) then a 2-row tile (if ``twos``)."""
        _prefer_wide_vectors()
        tile_cols = _columns(out, tile_bytes)
        for j0 in range(0, n_cols, tile_cols):
            if fours:
                _tile(a, b, out, first, j0, j0, 4, tile_cols, False)
            if twos:
                _tile(a, b, out, first + 4 * fours, j0, j0, 2, tile_cols, False)

    @inline_kernel
    def whole_tiles(a, b, out, n_rows, n_cols):
        """out[:n_rows, :n_cols] = a[:n_rows] @ b[:, :n_cols], n_rows even (a lone row is
        :func:`_lone_row`'s), n_cols a multiple of tile_bytes: TILE_ROWS-row tiles, the rows left
        in a 4- and a 2-row tile."""
        m_tiled = n_rows - n_rows % TILE_ROWS
        fours = TILE_ROWS > 4 and n_rows - m_tiled >= 4
        twos = TILE_ROWS > 2 and n_rows - m_tiled - 4 * fours >= 2
        if m_tiled > 0:
            row_tiles(a, b, out, m_tiled, n_cols)
        if fours or twos:
            leftover_tiles(a, b, out, m_tiled, fours, twos, n_cols)
    return row_tiles, leftover_tiles, whole_tiles


_row_tiles, _leftover_tiles, _whole_tiles = _tile_loops(TILE_BYTES)
_vector_tiles = _tile_loops(VECTOR_BYTES)[2]


def _pad_columns(b, first, padded):
    """padded = b[:, first:] followed by zero columns (padded as wide as a tile)."""
    width = b.shape[1] - first
    padded[:, :width] = b[:, first:]
    padded[:, width:] = 0.0


def _copy_columns(src, rows, out, start, first):
    """out[start:start+rows, first:] = src[:rows] (its first columns)."""
    out[start:start + rows, first:] = src[:rows, :out.shape[1] - first]


# Compiled, the two copies above are explicit loops: numba's 2-D slice assignment walks every
# element through a generic n-d iterator (a few ns each), which cost the LM's products with a
# right edge (27, 30 or 200 = 6 x 32 + 8 columns) more than the edge tile's arithmetic.
# As Python (product() runs _tiled as Python), NumPy's slices are the fast form.
@overload(_pad_columns, jit_options={"fastmath": {"contract"}})
def _pad_columns_loops(b, first, padded):
    def impl(b, first, padded):
        width = np.uint64(b.shape[1] - first)
        first = np.uint64(first)
        for i in range(b.shape[0]):
            b_i, p_i = b[i], padded[i]
            for j in range(width):  # unsigned indices: no wraparound test, a vector copy
                p_i[j] = b_i[first + j]
            for j in range(width, np.uint64(padded.shape[1])):
                p_i[j] = 0.0
    return impl


@overload(_copy_columns, jit_options={"fastmath": {"contract"}})
def _copy_columns_loops(src, rows, out, start, first):
    def impl(src, rows, out, start, first):
        width = np.uint64(out.shape[1] - first)
        first = np.uint64(first)
        for i in range(rows):
            s_i, o_i = src[i], out[start + i]
            for j in range(width):
                o_i[first + j] = s_i[j]
    return impl


@inline_kernel
def _tiled(a, b, out, whole_tiles, vector_tiles, edge_tiles):
    """tiled_matmul's body, with :func:`_whole_tiles`, :func:`_vector_tiles` and
    :func:`_edge_tiles` as arguments: compiled, the kernel; run as Python by :func:`product`
    with their Python source, so that each tile loop is compiled as its own entry, only when a
    product first needs it."""
    m, n = out.shape
    tile_cols = TILE_BYTES // out.itemsize  # (not _columns: this body also runs as Python)
    n_whole = n - n % tile_cols
    streamed = m % TILE_ROWS > 0 and b.size * b.itemsize >= LARGE_B_BYTES
    n_rows = m - m % TILE_ROWS if streamed else m - m % 2
    if n_whole > 0 and n_rows > 0:
        whole_tiles(a, b, out, n_rows, n_whole)
    # the last columns through a zero-padded copy one vector wide when they fit one (200 = 6 x
    # 32 + 8 float32 columns: the 8 cost a 16-wide tile, not a 32-wide one), else a tile wide
    if n_rows == 0 or n_whole == n:
        pass
    elif n - n_whole > VECTOR_BYTES // out.itemsize:
        edge_tiles(a, b, out, n_rows, n_whole, whole_tiles, TILE_BYTES // out.itemsize)
    else:
        edge_tiles(a, b, out, n_rows, n_whole, vector_tiles, VECTOR_BYTES // out.itemsize)
    if streamed:
        _streamed_rows(a, b, out, n_rows)
    elif n_rows < m:
        _lone_row(a, b, out, n_rows)


@inline_kernel
def _edge_tiles(a, b, out, n_rows, n_whole, whole_tiles, edge_cols):
    """out[:n_rows, n_whole:] = a[:n_rows] @ b[:, n_whole:] as whole_tiles (edge_cols wide) over
    a zero-padded copy of b's last columns, EDGE_ROWS rows at a time (a scratch that does not
    grow with m, and few steps when product() runs this body as Python), copied into out.
    Chunks start at whole tiles: the same tiles as one pass."""
    edge_b = np.empty((b.shape[0], edge_cols), b.dtype)
    _pad_columns(b, n_whole, edge_b)
    edge_out = np.empty((EDGE_ROWS, edge_cols), out.dtype)
    for start in range(0, n_rows, EDGE_ROWS):
        rows = min(EDGE_ROWS, n_rows - start)
        whole_tiles(a[start:start + rows], edge_b, edge_out, rows, edge_cols)
        _copy_columns(edge_out, rows, out, start, n_whole)


@kernel
def tiled_matmul(a, b, out):
    """out = a @ b without BLAS (b and out C-contiguous; a any layout, read element-wise):
    whole tiles; the last, partial TILE_BYTES of columns as whole tiles over a zero-padded copy
    of b into a scratch, then copied into out; with a large b the rows after the TILE_ROWS-row
    tiles are streamed."""
    _tiled(a, b, out, _whole_tiles, _vector_tiles, _edge_tiles)


@inline_kernel
def _stream(a, b, out, i, rows, first):
    """out[i:i+rows, first:] = a[i:i+rows] @ b[:, first:] with b read once, row after row
    (``rows`` a constant at every call site). A lone row's tiles would read a large b in strips
    of columns, each k step on a new page; streamed, the rows of out stay in cache while b comes
    from memory once (docs/performance-notes.md, "Numba engine"). Four k steps per pass over
    out (as the Cython kernels' streams): one load and store of out for four FMAs. Each element
    sums its k in order, one FMA at a time, as in the tiles: the same bits."""
    n = np.uint64(out.shape[1])
    first = np.uint64(first)
    depth = a.shape[1]
    for r in range(rows):
        out_r = out[np.uint64(i + r)]
        for j in range(first, n):
            out_r[j] = 0.0
    for kk in range(0, depth - depth % 4, 4):
        k = np.uint64(kk)
        b_0, b_1, b_2, b_3 = b[k], b[k + np.uint64(1)], b[k + np.uint64(2)], b[k + np.uint64(3)]
        for r in range(rows):
            row = np.uint64(i + r)
            a_0, a_1 = a[row, k], a[row, k + np.uint64(1)]
            a_2, a_3 = a[row, k + np.uint64(2)], a[row, k + np.uint64(3)]
            out_r = out[row]
            for j in range(first, n):
                c = out_r[j]
                c += a_0 * b_0[j]
                c += a_1 * b_1[j]
                c += a_2 * b_2[j]
                c += a_3 * b_3[j]
                out_r[j] = c
    for kk in range(depth - depth % 4, depth):
        k = np.uint64(kk)
        b_k = b[k]
        for r in range(rows):
            a_rk = a[np.uint64(i + r), k]
            out_r = out[np.uint64(i + r)]
            for j in range(first, n):
                out_r[j] += a_rk * b_k[j]


@kernel
def _streamed_rows(a, b, out, first):
    """Rows first.. of out (fewer than TILE_ROWS) streamed: four at a time, then two, then one.
    A function of its own: its row views inside loops would keep LLVM from holding the
    caller's tiles in registers (as in packed_matmul)."""
    _prefer_wide_vectors()
    m = out.shape[0]
    i = first
    if m - i >= 4:
        _stream(a, b, out, i, 4, 0)
        i += 4
    if m - i >= 2:
        _stream(a, b, out, i, 2, 0)
        i += 2
    if m - i == 1:
        _stream(a, b, out, i, 1, 0)


@kernel
def _lone_row(a, b, out, i):
    """out[i] = a[i] @ b, the last row of an odd batch (batch 1 among them): ROW_BYTES-wide
    tiles, then tiles half as wide, the last one ending at n; a b narrower than that is
    streamed. LLVM leaves a one-row tile of one or two vectors unvectorised (its unrolled sums
    stay scalar: 1.3 against 0.19 µs for 1×128×64 float32 on Zen 5), so no tile here is
    narrower than four vectors."""
    _prefer_wide_vectors()
    n = out.shape[1]
    row_cols, half_cols = _columns(out, ROW_BYTES), _columns(out, HALF_ROW_BYTES)
    j0 = 0
    while j0 + row_cols <= n:
        _tile(a, b, out, i, j0, j0, 1, row_cols, False)
        j0 += row_cols
    if j0 + half_cols <= n:
        _tile(a, b, out, i, j0, j0, 1, half_cols, False)
        j0 += half_cols
    if j0 < n and n >= half_cols:  # a tile ending at n: the columns it recomputes get the same bits
        _tile(a, b, out, i, n - half_cols, n - half_cols, 1, half_cols, False)
    elif j0 < n:
        _stream(a, b, out, i, 1, j0)


#: The packed path (:func:`packed_matmul`, the numba mirror of the Cython kernels' gemm_packed)
#: for a large b (LARGE_B_BYTES) and PACKED_MIN_ROWS to NUMBA_PACKED_MAX_ROWS rows of a: read
#: in place, a large b comes from memory for every row tile; packed, each strip of b comes from
#: memory once and then from L1. Fewer rows do not repay the copy; more go to BLAS, faster
#: than these loops there (docs/performance-notes.md, "Numba engine").
PACKED_MIN_ROWS = TUNING["PACKED_MIN_ROWS"]
PACKED_MAX_ROWS = TUNING["NUMBA_PACKED_MAX_ROWS"]
#: k slice of the copy: a strip (PACKED_K x TILE_BYTES) stays in L1 while every row tile
#: passes over it
PACKED_K = TUNING["PACKED_KC"]
#: the copy holds one k slice x as many columns as fit this (in L2)
PACKED_B_BYTES = TUNING["PACKED_B_BYTES"]


@kernel
def worth_packing(m, n, k, itemsize, n_threads):
    return (PACKED_MIN_ROWS <= m <= PACKED_MAX_ROWS and k * n * itemsize >= LARGE_B_BYTES
            and n_threads == 1)


@kernel
def _pack_strips(b, p0, c0, strips, kc, nc):
    """b[p0:p0+kc, c0:c0+nc] into strips of TILE_BYTES of columns, strips[s, p, l] =
    b[p0 + p, c0 + s * width + l]: a strip is contiguous. Row by row, so that the reads of b
    stream along its rows (the lanes past nc in the last strip keep what they held: zeros or
    earlier columns, read into accumulators that are never written back). Unsigned
    indices, as in _tile: the copies are vector loads and stores."""
    width = _columns(strips, TILE_BYTES)
    n_whole = nc // width
    for p in range(kc):
        row = b[p0 + p]
        for s in range(n_whole + (nc % width > 0)):
            first = np.uint64(c0 + s * width)
            n_cols = width if s < n_whole else nc % width
            s_, p_ = np.uint64(s), np.uint64(p)
            for l in range(width):
                if n_cols == width or l < n_cols:
                    strips[s_, p_, np.uint64(l)] = row[first + np.uint64(l)]


@kernel
def _strip_tiles(a, strip, out, j0):
    """out[:, j0:j0+width] += a @ strip (one packed strip): TILE_ROWS-row tiles, the rest in
    tiles of 4, 2 and 1 rows. A function of its own (not inlined into packed_matmul's loops,
    whose array views LLVM could not see through): there the tiles' accumulators stayed in
    memory."""
    _prefer_wide_vectors()
    width = _columns(out, TILE_BYTES)
    m = out.shape[0]
    m_tiled = m - m % TILE_ROWS
    for i in range(0, m_tiled, TILE_ROWS):
        _tile(a, strip, out, i, j0, 0, TILE_ROWS, width, True)
    i = m_tiled
    if TILE_ROWS > 4 and m - i >= 4:
        _tile(a, strip, out, i, j0, 0, 4, width, True)
        i += 4
    if m - i >= 2:
        _tile(a, strip, out, i, j0, 0, 2, width, True)
        i += 2
    if m - i == 1:
        _tile(a, strip, out, i, j0, 0, 1, width, True)


@kernel
def packed_chunk_columns(like):
    """Columns of b that packed_matmul copies at a time for ``like``'s dtype (whole strips)."""
    width = _columns(like, TILE_BYTES)
    return max(width, PACKED_B_BYTES // (like.itemsize * PACKED_K) // width * width)


@kernel
def packed_matmul(a, b, out):
    """out = a @ b through copies of b (GotoBLAS-style): one k slice (PACKED_K) and column
    chunk (PACKED_B_BYTES) at a time, b is copied into contiguous strips of TILE_BYTES of
    columns, and every row tile passes over a strip while it is in L1, continuing the sums held
    in out (zeroed first: every tile of this path is the accumulating one); the last, partial
    strip's into a padded scratch, copied into out at the end. The same products in the same
    order as tiled_matmul: the same bits."""
    _prefer_wide_vectors()
    m, n = out.shape
    depth = a.shape[1]
    out[:, :] = 0.0
    if depth == 0:
        return
    width = _columns(out, TILE_BYTES)
    chunk = min(packed_chunk_columns(out), n)
    strips = np.zeros(((chunk + width - 1) // width, min(PACKED_K, depth), width), out.dtype)
    n_whole = n - n % width
    edge_out = np.zeros((m if n_whole < n else 0, width), out.dtype)
    for p0 in range(0, depth, PACKED_K):
        kc = min(PACKED_K, depth - p0)
        a_slice = a[:, p0:p0 + kc]
        for c0 in range(0, n, chunk):
            nc = min(chunk, n - c0)
            _pack_strips(b, p0, c0, strips, kc, nc)
            for s in range((nc + width - 1) // width):
                if c0 + s * width < n_whole:
                    _strip_tiles(a_slice, strips[s, :kc], out, c0 + s * width)
                else:
                    _strip_tiles(a_slice, strips[s, :kc], edge_out, 0)
    if n_whole < n:
        out[:, n_whole:] = edge_out[:, :n - n_whole]


def _c_order(b):
    """b, or a C-ordered copy of it (b F-ordered: a transposed W)."""
    return np.ascontiguousarray(b)


@overload(_c_order, jit_options={"fastmath": {"contract"}})
def _c_order_typed(b):
    """Chosen by b's layout when compiling, so the result is typed C-ordered (a branch at run
    time would type it 'A', any layout, and the tiles over it would not vectorise). The copy is
    a transpose of b.T (C-ordered) with unsigned indices: numba's np.ascontiguousarray walks a
    generic n-d iterator, several times slower at the LM's Wᵀ (27 x 200)."""
    if b.layout == "C":
        return lambda b: b
    if b.layout != "F":
        return lambda b: np.ascontiguousarray(b)

    def transpose(b):
        copy = np.empty(b.shape, b.dtype)
        b_t = b.T
        for jj in range(b_t.shape[0]):
            j = np.uint64(jj)
            row = b_t[j]
            for i in range(np.uint64(row.size)):
                copy[i, j] = row[i]
        return copy
    return transpose


@kernel
def matmul(a, b, out):
    """out = a @ b (a, b C- or F-contiguous, out C-contiguous): packed copies of a large
    C-ordered b for a moderate number of rows on one thread, BLAS for other large products,
    else the tiles (on a C-ordered copy of b if b is transposed). The packed path and BLAS
    round differently: as in the Cython kernels, results are reproducible for a given thread
    count, not across thread counts."""
    m, depth = a.shape
    n = b.shape[1]
    if b.flags.c_contiguous and worth_packing(m, n, depth, out.itemsize, _num_threads()):
        packed_matmul(a, b, out)
    elif worth_blas(m, n, depth):
        np.dot(a, b, out)
    else:
        tiled_matmul(a, _c_order(b), out)


@kernel
def blas_matmul(a, b, out):
    """out = a @ b by the BLAS numba's np.dot calls (SciPy's, whose pool the backend sizes to
    fusedense's thread count; NumPy's own np.dot would call NumPy's OpenBLAS, at every core)."""
    np.dot(a, b, out)


def product(a, b, out):
    """matmul called from Python: the path is chosen here, so the first call compiles only the
    path it takes (one entry kernel, not matmul's three)."""
    m, depth = a.shape
    n = b.shape[1]
    if b.flags.c_contiguous and _WORTH_PACKING(m, n, depth, out.itemsize, _python_num_threads()):
        packed_matmul(a, b, out)
    elif _WORTH_BLAS(m, n, depth):
        blas_matmul(a, b, out)
    else:
        _TILED(a, np.ascontiguousarray(b), out, _WHOLE_TILES, _VECTOR_TILES, _EDGE_TILES)


def _py(function):
    """A kernel's Python source (itself under NUMBA_DISABLE_JIT): decisions made in Python
    compile nothing."""
    return getattr(function, "py_func", function)


# product() runs on every fd.dense call, where a batch-1 layer's arithmetic costs a few µs:
# its Python pieces are looked up once, and the thread count is read from numba's threading
# layer directly (numba.get_num_threads() takes two locks first: ~1.2 µs against ~0.2).
_WORTH_PACKING, _WORTH_BLAS, _TILED, _WHOLE_TILES, _VECTOR_TILES, _EDGE_TILES = map(
    _py, (worth_packing, worth_blas, _tiled, _whole_tiles, _vector_tiles, _edge_tiles))
_python_num_threads = numba.get_num_threads
if not numba.config.DISABLE_JIT and _launch_threads is not None:  # the pool was started above
    try:  # private to numba, as _iget_num_threads
        from numba.np.ufunc.parallel import _get_num_threads as _python_num_threads
    except ImportError:
        pass
