"""Matrix products for the layer kernels (the numba mirror of ``kernels/gemm.pxd``): BLAS
(``np.dot``, the BLAS SciPy ships) for large shapes, register-tiled loops for small ones.

Why tiles: a loop that adds ``a[i, k] * b[k, :]`` into a row of ``out`` for every k loads and
stores that row once per k, so it runs at the speed of the cache, not of the FMA units. A tile
keeps a block of ``out`` (TILE_ROWS rows × two vectors of columns) in registers for the
whole k loop. Numba has no vector types, so the tile lives in a stack array (:func:`_stack_tile`)
indexed only by loop counters over constant ranges: LLVM unrolls those loops, turns the stack
array into registers (SROA) and emits one vector FMA per register and k. Indices into the
operands are unsigned, so numba emits no negative-index wraparound (which would turn the
vector loads into gathers). Check with ``tiled_matmul.inspect_asm(sig)``: the k loop is
broadcasts of a, vector loads of b and ``vfmadd231p*``, nothing else.
"""
import numba
import numpy as np
from llvmlite import binding as llvm
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import inline_kernel, kernel

#: Products of fewer multiply-adds (or with fewer than BLAS_MIN_ROWS rows or columns) use the
#: tiles (the same thresholds as the Cython kernels). A BLAS call wakes BLAS's thread pool, and
#: on shared cores waiting for those threads cost milliseconds per call.
BLAS_MIN_WORK = 1 << 23
BLAS_MIN_ROWS = 8

#: Vector registers: 512-bit on AVX-512 (32 of them), else 256-bit (16 of them).
_AVX512 = bool(llvm.get_host_cpu_features().get("avx512f", False))
VECTOR_BYTES = 64 if _AVX512 else 32
#: A batch tile: 8 rows × 2 vectors = 16 accumulators (half the AVX-512 registers), each
#: broadcast of a[i, k] shared by 2 FMAs and each load of b[k, j] by 8. AVX2 has 16
#: registers: 4 rows there.
TILE_ROWS = 8 if _AVX512 else 4
TILE_BYTES = 2 * VECTOR_BYTES
#: A lone row (batch 1-7 and a batch's last rows): 8 vectors, enough independent
#: accumulators to hide the FMA latency.
ROW_BYTES = 8 * VECTOR_BYTES
STACK_BYTES = max(TILE_ROWS * TILE_BYTES, ROW_BYTES)


@kernel
def worth_blas(m, n, k):
    return m >= BLAS_MIN_ROWS and n >= BLAS_MIN_ROWS and m * n * k >= BLAS_MIN_WORK


if numba.config.DISABLE_JIT:  # the kernels run as plain Python: the intrinsics cannot
    def _scratch(like, shape):
        return np.empty(shape, like.dtype)

    def _prefer_wide_vectors():
        pass

    def _columns(like, n_bytes):
        return n_bytes // like.itemsize
else:
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
        them: for Intel CPUs LLVM prefers 256-bit vectors unless told (a no-op on AVX2)."""
        def codegen(context, builder, signature, args):
            # a string attribute: llvmlite's add() accepts only the attributes it knows
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
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
def _tile(a, b, out, i, j0, rows, width, n_cols):
    """out[i:i+rows, j0:j0+n_cols] = a[i:i+rows] @ b[:, j0:j0+n_cols]. ``rows`` and ``width``
    are constants at every call site (inlined: the loops over them unroll); n_cols <= width
    (fewer at the right edge of out, where a test per column keeps the loads in bounds and
    the loop scalar: a few columns of the product). Each element sums its k in
    order, one FMA at a time, whatever the tile: a row's result does not depend on where it
    sits in the batch."""
    acc = _scratch(out, (rows, width))
    av = _scratch(out, rows)
    for r in range(rows):
        for j in range(width):
            acc[r, j] = 0.0
    j0 = np.uint64(j0)
    full = n_cols == width
    for kk in range(a.shape[1]):
        k = np.uint64(kk)
        b_k = b[k]
        for r in range(rows):
            av[r] = a[np.uint64(i + r), k]
        for j in range(width):
            if full or j < n_cols:
                w = b_k[j0 + np.uint64(j)]
                for r in range(rows):
                    acc[r, j] += av[r] * w
    for r in range(rows):
        out_r = out[np.uint64(i + r)]
        for j in range(width):
            if full or j < n_cols:
                out_r[j0 + np.uint64(j)] = acc[r, j]


@kernel
def tiled_matmul(a, b, out):
    """out = a @ b without BLAS (b and out C-contiguous; a any layout, read element-wise):
    TILE_ROWS-row tiles, then lone rows (ROW_BYTES wide, the rest of the row TILE_BYTES wide)."""
    _prefer_wide_vectors()
    m, n = out.shape
    tile_cols, row_cols = _columns(out, TILE_BYTES), _columns(out, ROW_BYTES)
    m_tiled = m - m % TILE_ROWS
    for j0 in range(0, n, tile_cols):
        for i in range(0, m_tiled, TILE_ROWS):
            _tile(a, b, out, i, j0, TILE_ROWS, tile_cols, min(tile_cols, n - j0))
    n_row_tiled = n - n % row_cols
    for i in range(m_tiled, m):
        for j0 in range(0, n_row_tiled, row_cols):
            _tile(a, b, out, i, j0, 1, row_cols, row_cols)
        for j0 in range(n_row_tiled, n, tile_cols):  # the rest: two vectors at a time
            _tile(a, b, out, i, j0, 1, tile_cols, min(tile_cols, n - j0))


@kernel
def matmul(a, b, out):
    """out = a @ b (a, b C- or F-contiguous, out C-contiguous): BLAS when the product is
    large, else the tiles (on a C-ordered copy of b if b is transposed)."""
    m, depth = a.shape
    if worth_blas(m, b.shape[1], depth):
        np.dot(a, b, out)
    else:
        tiled_matmul(a, np.ascontiguousarray(b), out)
