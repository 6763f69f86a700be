# A whole network over the flat parameter buffer, forward only: every layer for a block of
# rows at a time (network_forward), or keeping each layer's outputs for a backward pass
# (forward_keep). Inline functions, as dense.pxd.
from cython.parallel cimport prange, threadid
from libc.stdint cimport uint64_t

from abi cimport ACT_IDENTITY
from act cimport needs_z
from dense cimport layer_forward
from dropout cimport Dropout, dropout_rows, layer_dropout
from layer cimport Layer, bias_offset, widest
from real cimport real
from thread_policy cimport in_parallel, network_threads_for
from tuning cimport MICRO_MAX_WEIGHT_BYTES, NETWORK_BLAS_ROWS, NETWORK_MICRO_ROWS


cdef inline bint small_weights(const Layer* layers, Py_ssize_t L, size_t itemsize) noexcept nogil:
    """Every W fits the micro-kernel path (stays in a core's L2 across row blocks)."""
    cdef Py_ssize_t l
    for l in range(L):
        if layers[l].fan_in * layers[l].fan_out * itemsize > MICRO_MAX_WEIGHT_BYTES:
            return False
    return True


cdef inline int network_threads(Py_ssize_t B, const Layer* layers, Py_ssize_t L,
                                size_t itemsize, bint training=False) noexcept nogil:
    """OpenMP threads of a whole-network call (forward, or training step when training) over
    row blocks: only on the micro-kernel path (a large layer splits its own product over
    columns, or goes to BLAS and its threads; never two pools at once)."""
    cdef Py_ssize_t l, work = 0
    if not small_weights(layers, L, itemsize):
        return 1
    for l in range(L):
        work += B * layers[l].fan_in * layers[l].fan_out
    return network_threads_for(work, training)


cdef inline int forward_plan(Py_ssize_t B, const Layer* layers, Py_ssize_t L, size_t itemsize,
                             Py_ssize_t* block, bint* micro) noexcept nogil:
    """network_forward's row block and path for a batch of B; returns its thread count."""
    micro[0] = small_weights(layers, L, itemsize)
    block[0] = min(B, NETWORK_MICRO_ROWS if micro[0] else NETWORK_BLAS_ROWS)
    return network_threads(B, layers, L, itemsize)


cdef inline Py_ssize_t forward_scratch_size(int threads, Py_ssize_t block, const Layer* layers,
                                            Py_ssize_t L) noexcept nogil:
    """Elements of network_forward's scratch: two halves of block x widest per thread."""
    return threads * 2 * block * widest(layers, L)


cdef inline void forward_block(Py_ssize_t r0, Py_ssize_t rows, const real* x, const real* params,
                               const Layer* layers, Py_ssize_t L, real* out,
                               real* mine, Py_ssize_t half, bint micro) noexcept nogil:
    """network_forward's rows [r0, r0 + rows) through every layer; mine: this thread's two
    halves of scratch."""
    cdef Py_ssize_t l
    cdef const real* src = x + r0 * layers[0].fan_in
    cdef real* dst
    for l in range(L):
        dst = out + r0 * layers[l].fan_out if l == L - 1 else mine + (l % 2) * half
        layer_forward(rows, layers[l].fan_in, layers[l].fan_out, src, params + layers[l].offset,
                      params + bias_offset(&layers[l]), <int>layers[l].activation,
                      <real>layers[l].alpha, dst, NULL, not micro)
        src = dst


cdef inline void network_forward(Py_ssize_t B, const real* x, const real* params, const Layer* layers,
                                 Py_ssize_t L, real* out, real* scratch,
                                 Py_ssize_t block, bint micro, int threads) noexcept nogil:
    """Every layer for `block` rows at a time, so activations stay in cache from one layer
    to the next; hidden layers ping-pong between two halves of the thread's scratch
    (2 x block x widest each), the last layer writes to out. micro: the micro-kernel path,
    row blocks shared out over `threads` OpenMP threads (dynamic schedule: a thread slowed by a
    busy core takes fewer)."""
    cdef Py_ssize_t half = block * widest(layers, L), n_blocks = (B + block - 1) // block, i
    if micro and in_parallel(threads, n_blocks):
        for i in prange(n_blocks, nogil=True, schedule="dynamic", num_threads=threads):
            forward_block(i * block, min(block, B - i * block), x, params, layers, L, out,
                          scratch + 2 * half * threadid(), half, micro)
    else:
        for i in range(n_blocks):
            forward_block(i * block, min(block, B - i * block), x, params, layers, L, out,
                          scratch, half, micro)


cdef inline void keep_block(Py_ssize_t r0, Py_ssize_t rows, const real* x, const real* params,
                            const Layer* layers, Py_ssize_t L, real** z_of,
                            real** y_of, real** in_of, uint64_t step, bint logits_only,
                            bint micro) noexcept nogil:
    """forward_keep's rows [r0, r0 + rows) through every layer."""
    cdef Py_ssize_t l, k, n
    cdef bint last, keep_z
    cdef const real* src
    cdef Dropout drop
    for l in range(L):
        k, n = layers[l].fan_in, layers[l].fan_out
        last = logits_only and l == L - 1
        keep_z = not last and (l == L - 1 or needs_z(<int>layers[l].activation))
        src = (x if l == 0 else y_of[l - 1]) + r0 * k
        if in_of != NULL and in_of[l] != NULL:  # the input through this step's dropout mask
            drop = layer_dropout(&layers[l], l, step)
            dropout_rows(&drop, r0, rows, k, src, in_of[l] + r0 * k)
            src = in_of[l] + r0 * k
        layer_forward(rows, k, n, src,
                      params + layers[l].offset, params + bias_offset(&layers[l]),
                      ACT_IDENTITY if last else <int>layers[l].activation, <real>layers[l].alpha,
                      y_of[l] + r0 * n, z_of[l] + r0 * n if keep_z else NULL, not micro)


cdef inline void forward_keep(Py_ssize_t B, const real* x, const real* params, const Layer* layers,
                              Py_ssize_t L, real** z_of, real** y_of, real** in_of, uint64_t step,
                              bint logits_only, bint micro, int threads) noexcept nogil:
    """Forward keeping every layer's y, and z where the backward reads it: a hidden layer's
    whose activation needs z for its derivative (needs_z; the others' derivatives come from
    y, and skipping z saves a copy of the layer's output) and, unless logits_only, the last
    layer's (MSE's derivative; the logits of a cross-entropy whose outputs are reported).
    logits_only: the last layer writes its pre-activation to y_of[L-1] and nothing to
    z_of[L-1] (the cross-entropies read the logits; its activation, a softmax's exps, would go
    unused). micro: blocks of up to 32 rows through all layers, shared over OpenMP threads (a
    small batch in one block per thread); else the whole batch per layer with BLAS.
    in_of: NULL, or L pointers: where in_of[l] is not NULL, layer l reads its input through
    the dropout mask of ``step`` (dropout.pxd), written there (B x fan_in) for the backward."""
    cdef Py_ssize_t block = min(NETWORK_MICRO_ROWS, (B + threads - 1) // threads) if micro else B
    cdef Py_ssize_t n_blocks = (B + block - 1) // block, i
    if micro and in_parallel(threads, n_blocks):
        for i in prange(n_blocks, nogil=True, schedule="static", num_threads=threads):
            keep_block(i * block, min(block, B - i * block), x, params, layers, L, z_of, y_of,
                       in_of, step, logits_only, micro)
    else:
        for i in range(n_blocks):
            keep_block(i * block, min(block, B - i * block), x, params, layers, L, z_of, y_of,
                       in_of, step, logits_only, micro)
