"""Dense layers and whole networks: dense_forward, dense_backward, mlp_forward, loss and
the fused training step mlp_train_step.

Every product goes through gemm.matmul-style dispatch: BLAS for large shapes (its own
threads), register-blocked micro-kernels for small ones (no temporaries). The epilogue
(bias, activation) runs on row blocks right after the product wrote them, while they are
still in cache. One thread pool at a time: mlp_forward over small weights splits the batch
across OpenMP threads, each running the micro-kernels on its own row blocks, and never calls
BLAS inside that region; everything else leaves threading to BLAS. Two pools spinning
against each other once made a batch-1 call take 17 ms instead of 20 µs.
"""
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.math cimport pow
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from abi cimport *
from act cimport (act_backward_row, bias_act_forward_row, check_act, exp_nonpos, exp_shifted_row,
                 needs_z, r_log, r_log1p, relu, sigmoid)
from arrays cimport buffer, dim, is_float32, optional_buffer, typenum
from layer cimport Layer, bias_offset, records, widest
from gemm cimport (blas_gemm, matmul, micro_gemm_atb, micro_gemm_nb, packed_gemm_nb, transpose,
                  worth_blas, worth_packing)
from optim cimport Optimizer, optimizer_pass, optimizer_update
from parallel cimport in_parallel
from real cimport real

cnp.import_array()

# Rows per block between a product and its epilogue. Micro-kernel blocks stay in L1. BLAS
# blocks are large: every BLAS call re-packs all of W (measured: 512-row blocks of a
# 2048x1024x1024 product cost +14%, 256-row blocks +33%), while an epilogue pass over a
# 16 MB block still runs from L3 (the relu pass over 8 MB takes ~0.85 ms against ~31 ms
# for the product, single-threaded).
# The packed micro-kernel path (large W, at most PACKED_MAX_ROWS rows) takes all rows in one
# block: each block packs all of W again, which costs more than an epilogue pass from L3.
cdef enum:
    BLAS_BLOCK_BYTES = 1 << 24
    MICRO_BLOCK_BYTES = 1 << 15
    # single-threaded, the packed micro-kernels beat SciPy's OpenBLAS on a large W up to this
    # batch (measured at 64x1024x1024: ~100 GFLOP/s against ~60), BLAS beats them above
    # (2048x1024x1024: ~140 against ~105); with more threads BLAS shares the rows out
    PACKED_MAX_ROWS = 256
    # mlp_forward carries a block of rows through every layer before starting the next:
    # 256 rows when BLAS does the products, 32 on the micro-kernel path, where each thread
    # takes blocks in turn (dynamic schedule: a thread slowed by a busy core takes fewer)
    NETWORK_BLAS_ROWS = 256
    NETWORK_MICRO_ROWS = 32
    # weights up to this size stay in a core's L2 across row blocks: the micro-kernel path
    MICRO_MAX_WEIGHT_BYTES = 1 << 20
    # OpenMP threads only for calls with at least this many multiply-adds (batch x Σ W sizes):
    # each parallel region ends in a barrier, and on a busy machine a descheduled thread
    # holds it for a scheduler time slice (measured: a batch-32 training step at 72 ms
    # instead of 0.3 ms). The seed MLP at batch 32 (3.5 M) stays on one thread, at 256 not.
    PARALLEL_MIN_WORK = 1 << 24

cdef int n_threads = 1


cdef int threads_for(Py_ssize_t B, const Layer* layers, Py_ssize_t L) noexcept nogil:
    """OpenMP threads for a micro-kernel network call of batch B."""
    cdef Py_ssize_t l, work = 0
    for l in range(L):
        work += B * layers[l].fan_in * layers[l].fan_out
    return n_threads if work >= PARALLEL_MIN_WORK else 1

def set_num_threads(int n):
    """OpenMP threads of mlp_forward's micro-kernel path (BLAS threads: set by the backend)."""
    global n_threads
    n_threads = max(n, 1)


def get_num_threads():
    return n_threads


# --- one layer ------------------------------------------------------------------------------

cdef void finish_rows(real* y, real* z, Py_ssize_t rows, Py_ssize_t n, const real* bias,
                      int act, real alpha) noexcept nogil:
    """The epilogue on a block that holds x@W (+ b when bias is NULL): adds bias, keeps z when
    asked, applies the activation in place (bias and activation in one pass when z is not kept)."""
    cdef Py_ssize_t r
    for r in range(rows):
        if z != NULL:
            bias_act_forward_row(ACT_IDENTITY, alpha, y + r * n, bias, z + r * n, n)
            bias_act_forward_row(act, alpha, z + r * n, NULL, y + r * n, n)
        else:
            bias_act_forward_row(act, alpha, y + r * n, bias, y + r * n, n)


cdef void layer_forward(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* x, const real* W,
                        const real* b, int act, real alpha, real* y, real* z,
                        bint allow_blas=True) noexcept nogil:
    """y = act(x @ W + b) for m rows (x m x k, W k x n); z = x @ W + b too unless z is NULL.
    y must not overlap x. allow_blas=False inside OpenMP regions."""
    # (inside OpenMP regions, allow_blas=False, every W is under MICRO_MAX_WEIGHT_BYTES: never packed)
    cdef bint pack_operands = (allow_blas and n_threads == 1 and m <= PACKED_MAX_ROWS
                               and worth_packing(m, n, k, sizeof(real)))
    cdef bint blas = allow_blas and not pack_operands and worth_blas(m, n, k)
    # the micro-kernels apply a relu as they write y back; z, when kept, is the pre-activation
    cdef bint relu_in_product = not blas and act == ACT_RELU and z == NULL
    cdef Py_ssize_t block = m if pack_operands else max(
        1, (BLAS_BLOCK_BYTES if blas else MICRO_BLOCK_BYTES) // (n * sizeof(real)))
    cdef Py_ssize_t r0 = 0, rows
    while r0 < m:
        rows = min(block, m - r0)
        if blas:
            blas_gemm(False, False, rows, n, k, x + r0 * k, k, W, n, 0, y + r0 * n, n)
        elif pack_operands:  # the micro-kernels start their accumulators at b: the bias costs nothing
            packed_gemm_nb(rows, n, k, x + r0 * k, k, W, n, b, y + r0 * n, n, relu_in_product)
        else:
            micro_gemm_nb(rows, n, k, x + r0 * k, k, 1, W, n, b, y + r0 * n, n, False, relu_in_product)
        if not relu_in_product:
            finish_rows(y + r0 * n, NULL if z == NULL else z + r0 * n, rows, n,
                        b if blas else NULL, act, alpha)
        r0 += block


cdef void column_sums(const real* a, Py_ssize_t rows, Py_ssize_t n, real* out) noexcept nogil:
    """out = Σ_rows a, rows added in order (deterministic): the product 1ᵀ a through the
    micro-kernels (a row of ones: one `one` read at strides 0), whose FMAs add 1·a exactly.
    They run in the CPU's widest vectors, where a loop here is compiled for SSE2 (AVX2, AMD
    EPYC, 200 x 100: float64 2.4 against 7.3 µs, float32 1.4 against 2.1; the same bits)."""
    cdef real one = 1
    micro_gemm_nb(1, n, rows, &one, 0, 0, a, n, NULL, out, n, False)


cdef void layer_backward(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* dy, const real* x,
                         const real* W, const real* z, const real* y, int act, real alpha,
                         real* dz, real* dx, real* dW, real* db) noexcept nogil:
    """dz = dy · act'(z or y), db = Σ_rows dz, dW = xᵀ dz, dx = dz Wᵀ (skipped when dx is NULL).
    dz (m x n scratch) may be dy. db sums rows in order: deterministic."""
    cdef Py_ssize_t r
    for r in range(m):
        act_backward_row(act, alpha, dy + r * n, NULL if z == NULL else z + r * n,
                         NULL if y == NULL else y + r * n, dz + r * n, n)
    column_sums(dz, m, n, db)
    matmul(True, False, k, n, m, x, k, dz, n, dW, n)
    if dx != NULL:
        matmul(False, True, m, k, n, dz, n, W, n, dx, k)


cdef int _dense_forward(real tag, x, W, b, int act, double alpha, y, z) except -1:
    cdef Py_ssize_t m = dim(x, 0, "x"), k = dim(W, 0, "W"), n = dim(W, 1, "W")
    cdef int t = typenum(tag)
    cdef const real* xp = <real*>buffer(x, "x", t, m, k)
    cdef const real* Wp = <real*>buffer(W, "W", t, k, n)
    cdef const real* bp = <real*>buffer(b, "b", t, -1, n)
    cdef real* yp = <real*>buffer(y, "y", t, m, n, True)
    cdef real* zp = <real*>optional_buffer(z, "z", t, m, n, True)
    with nogil:
        layer_forward(m, k, n, xp, Wp, bp, act, <real>alpha, yp, zp)
    return 0


cdef int _dense_backward(real tag, dy, x, W, z, y, int act, double alpha, dx, dW, db) except -1:
    cdef Py_ssize_t m = dim(x, 0, "x"), k = dim(W, 0, "W"), n = dim(W, 1, "W")
    cdef int t = typenum(tag)
    cdef const real* dyp = <real*>buffer(dy, "dy", t, m, n)
    cdef const real* xp = <real*>buffer(x, "x", t, m, k)
    cdef const real* Wp = <real*>buffer(W, "W", t, k, n)
    cdef const real* zp = <real*>optional_buffer(z, "z", t, m, n)
    cdef const real* yp = <real*>optional_buffer(y, "y", t, m, n)
    cdef real* dxp = <real*>optional_buffer(dx, "dx", t, m, k, True)
    cdef real* dWp = <real*>buffer(dW, "dW", t, k, n, True)
    cdef real* dbp = <real*>buffer(db, "db", t, -1, n, True)
    if zp == NULL and (yp == NULL or needs_z(act)):
        raise ValueError(f"z: activation id {act} needs z to compute its derivative")
    cdef real* dz = <real*>malloc(m * n * sizeof(real))
    if dz == NULL:
        raise MemoryError()
    with nogil:
        layer_backward(m, k, n, dyp, xp, Wp, zp, yp, act, <real>alpha, dz, dxp, dWp, dbp)
    free(dz)
    return 0


def dense_forward(x, W, b, int act_id, double alpha, y, z):
    """y = act(x @ W + b); z = x @ W + b as well unless z is None."""
    check_act(act_id)
    if is_float32(x):
        _dense_forward(<float>0, x, W, b, act_id, alpha, y, z)
    else:
        _dense_forward(<double>0, x, W, b, act_id, alpha, y, z)


def dense_backward(dy, x, W, z, y, int act_id, double alpha, dx, dW, db):
    """dW = xᵀ dz, db = Σ dz, dx = dz Wᵀ (dx None: skipped) with dz = dy · act'(z or y)."""
    check_act(act_id)
    if is_float32(x):
        _dense_backward(<float>0, dy, x, W, z, y, act_id, alpha, dx, dW, db)
    else:
        _dense_backward(<double>0, dy, x, W, z, y, act_id, alpha, dx, dW, db)


# --- whole networks over the flat parameter buffer --------------------------------------------

cdef void network_forward(Py_ssize_t B, const real* x, const real* params, const Layer* layers,
                          Py_ssize_t L, real* out, real* scratch,
                          Py_ssize_t block, bint micro, int threads) noexcept nogil:
    """Every layer for `block` rows at a time, so activations stay in cache from one layer
    to the next; hidden layers ping-pong between two halves of the thread's scratch
    (2 x block x widest each), the last layer writes to out. micro: the micro-kernel path,
    row blocks shared out over `threads` OpenMP threads."""
    cdef Py_ssize_t half = block * widest(layers, L), n_blocks = (B + block - 1) // block, i
    if micro and in_parallel(threads, n_blocks):
        for i in prange(n_blocks, nogil=True, schedule="dynamic", num_threads=threads):
            forward_block(i * block, min(block, B - i * block), x, params, layers, L, out,
                          scratch + 2 * half * threadid(), half, micro)
    else:
        for i in range(n_blocks):
            forward_block(i * block, min(block, B - i * block), x, params, layers, L, out,
                          scratch, half, micro)


cdef void forward_block(Py_ssize_t r0, Py_ssize_t rows, const real* x, const real* params,
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


cdef int forward_plan(Py_ssize_t B, const Layer* layers, Py_ssize_t L, size_t itemsize,
                      Py_ssize_t* block, bint* micro) noexcept nogil:
    """network_forward's row block and path for a batch of B; returns its thread count."""
    micro[0] = small_weights(layers, L, itemsize)
    block[0] = min(B, NETWORK_MICRO_ROWS if micro[0] else NETWORK_BLAS_ROWS)
    return network_threads(B, layers, L, itemsize)


cdef Py_ssize_t forward_scratch_size(int threads, Py_ssize_t block, const Layer* layers,
                                     Py_ssize_t L) noexcept nogil:
    """Elements of network_forward's scratch: two halves of block x widest per thread."""
    return threads * 2 * block * widest(layers, L)


cdef int _mlp_forward(real tag, x, params, const Layer* layers, Py_ssize_t L, out) except -1:
    cdef Py_ssize_t B = dim(x, 0, "x")
    cdef int t = typenum(tag)
    cdef const real* xp = <real*>buffer(x, "x", t, B, layers[0].fan_in)
    cdef const real* pp = <real*>buffer(params, "params", t, -1, dim(params, 0, "params"))
    cdef real* outp = <real*>buffer(out, "out", t, B, layers[L - 1].fan_out, True)
    cdef Py_ssize_t block
    cdef bint micro
    cdef int threads = forward_plan(B, layers, L, sizeof(real), &block, &micro)
    cdef real* scratch = <real*>malloc(forward_scratch_size(threads, block, layers, L) * sizeof(real))
    if scratch == NULL:
        raise MemoryError()
    with nogil:
        network_forward(B, xp, pp, layers, L, outp, scratch, block, micro, threads)
    free(scratch)
    return 0


def mlp_forward(x, params, layers, out):
    """out = the network's output for x: every layer in one call (see fusedense.layout)."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(x):
        _mlp_forward(<float>0, x, params, lp, L, out)
    else:
        _mlp_forward(<double>0, x, params, lp, L, out)


# --- losses on one row: return the row's loss, write its gradient (scaled by 1/B or 1/(B·C)) ---

cdef double xent_row(const real* z, int64_t label, real* dz, Py_ssize_t n, real scale) noexcept nogil:
    """−log softmax(z)[label]; dz = (softmax(z) − onehot(label))·scale."""
    cdef Py_ssize_t j
    cdef real top = z[0], total = 0, total_scale
    for j in range(1, n):
        if z[j] > top:
            top = z[j]
    exp_shifted_row(z, top, dz, n)  # one exp per entry: dz holds e^(z - top) until the total is known
    for j in range(n):
        total += dz[j]
    total_scale = scale / total
    for j in range(n):
        dz[j] *= total_scale
    dz[label] -= scale
    return r_log(total) - (z[label] - top)


cdef double xent_probs_row(const real* z, const real* t, real* dz, Py_ssize_t n,
                           real scale) noexcept nogil:
    """−Σ t log softmax(z); dz = (softmax(z)·Σt − t)·scale."""
    cdef Py_ssize_t j
    cdef real top = z[0], total = 0, t_sum = 0
    cdef double loss = 0
    for j in range(1, n):
        if z[j] > top:
            top = z[j]
    exp_shifted_row(z, top, dz, n)  # dz holds e^(z - top) until the total is known
    for j in range(n):
        total += dz[j]
        t_sum += t[j]
    cdef real log_total = r_log(total)
    for j in range(n):
        loss -= t[j] * (z[j] - top - log_total)
        dz[j] = (dz[j] / total * t_sum - t[j]) * scale
    return loss


cdef double binary_xent_row(const real* z, const real* t, real* dz, Py_ssize_t n,
                            real scale) noexcept nogil:
    """Σ log(1 + e^z) − z·t written without overflow; dz = (σ(z) − t)·scale."""
    cdef Py_ssize_t j
    cdef double loss = 0
    for j in range(n):
        loss += relu(z[j]) - z[j] * t[j] + r_log1p(exp_nonpos(-z[j] if z[j] >= 0 else z[j]))
        dz[j] = (sigmoid(z[j]) - t[j]) * scale
    return loss


cdef double squared_error_row(const real* y, const real* t, real* dy, Py_ssize_t n,
                              real scale) noexcept nogil:
    """Σ (y − t)²; dy = 2 (y − t)·scale."""
    cdef Py_ssize_t j
    cdef double loss = 0
    cdef real diff
    for j in range(n):
        diff = y[j] - t[j]
        loss += diff * diff
        dy[j] = 2 * diff * scale
    return loss


cdef double loss_forward_backward(int loss_id, Py_ssize_t B, Py_ssize_t C, const real* outputs,
                                  const int64_t* labels, const real* targets,
                                  real* grad) noexcept nogil:
    """Mean loss of outputs (B x C: logits for the cross-entropies, predictions for MSE) and
    grad = dLoss/doutputs (see fusedense._backends.interface.loss)."""
    cdef Py_ssize_t i
    cdef double total = 0
    cdef real scale = <real>1 / (B if loss_id == LOSS_SPARSE_XENT or loss_id == LOSS_CATEGORICAL_XENT
                                 else B * C)
    for i in range(B):
        if loss_id == LOSS_SPARSE_XENT:
            total += xent_row(outputs + i * C, labels[i], grad + i * C, C, scale)
        elif loss_id == LOSS_CATEGORICAL_XENT:
            total += xent_probs_row(outputs + i * C, targets + i * C, grad + i * C, C, scale)
        elif loss_id == LOSS_BINARY_XENT:
            total += binary_xent_row(outputs + i * C, targets + i * C, grad + i * C, C, scale)
        else:
            total += squared_error_row(outputs + i * C, targets + i * C, grad + i * C, C, scale)
    return total * scale


cdef double _loss(real tag, int loss_id, outputs, targets, grad) except? -1:
    cdef Py_ssize_t B = dim(outputs, 0, "outputs"), C = dim(outputs, 1, "outputs")
    cdef int t = typenum(tag)
    cdef const real* op = <real*>buffer(outputs, "outputs", t, B, C)
    cdef const int64_t* lab = NULL
    cdef const real* tp = NULL
    if loss_id == LOSS_SPARSE_XENT:
        lab = <int64_t*>buffer(targets, "targets", cnp.NPY_INT64, -1, B)
    else:
        tp = <real*>buffer(targets, "targets", t, B, C)
    # the row losses compute the gradient on the way (the softmax rows keep their exps in it)
    cdef real* gp = <real*>optional_buffer(grad, "grad", t, B, C, True)
    cdef real* scratch = NULL
    if gp == NULL:
        gp = scratch = <real*>malloc(B * C * sizeof(real))
        if scratch == NULL:
            raise MemoryError()
    cdef double value
    with nogil:
        value = loss_forward_backward(loss_id, B, C, op, lab, tp, gp)
    free(scratch)
    return value


def loss(int loss_id, outputs, targets, grad):
    """Mean loss of outputs against targets (fusedense.abi.LOSS_*); grad = dLoss/doutputs
    unless None."""
    if is_float32(outputs):
        return _loss(<float>0, loss_id, outputs, targets, grad)
    return _loss(<double>0, loss_id, outputs, targets, grad)


# --- the fused training step ------------------------------------------------------------------

cdef bint layers_tile(const Layer* layers, Py_ssize_t L, Py_ssize_t start,
                      Py_ssize_t n_params) noexcept nogil:
    """True when the layers tile params[start:] exactly (as make_layout lays them out)."""
    cdef Py_ssize_t l, end = start
    for l in range(L):
        if layers[l].offset != end:
            return False
        end = bias_offset(&layers[l]) + layers[l].fan_out
    return end == n_params


cdef bint small_weights(const Layer* layers, Py_ssize_t L, size_t itemsize) noexcept nogil:
    """Every W fits the micro-kernel path (stays in a core's L2 across row blocks)."""
    cdef Py_ssize_t l
    for l in range(L):
        if layers[l].fan_in * layers[l].fan_out * itemsize > MICRO_MAX_WEIGHT_BYTES:
            return False
    return True


cdef void forward_keep(Py_ssize_t B, const real* x, const real* params, const Layer* layers,
                       Py_ssize_t L, real** z_of, real** y_of,
                       bint logits_only, bint micro, int threads) noexcept nogil:
    """Forward keeping every layer's y, and z where the backward reads it: a hidden layer's
    whose activation needs z for its derivative (needs_z; the others' derivatives come from
    y, and skipping z saves a copy of the layer's output) and, unless logits_only, the last
    layer's (MSE's derivative; the logits of a cross-entropy whose outputs are reported).
    logits_only: the last layer writes its pre-activation to y_of[L-1] and nothing to
    z_of[L-1] (the cross-entropies read the logits; its activation, a softmax's exps, would go
    unused). micro: 32-row blocks through all layers, shared over OpenMP threads; else the
    whole batch per layer with BLAS."""
    cdef Py_ssize_t block = NETWORK_MICRO_ROWS if micro else B
    cdef Py_ssize_t n_blocks = (B + block - 1) // block, i
    if micro and in_parallel(threads, n_blocks):
        for i in prange(n_blocks, nogil=True, schedule="dynamic", num_threads=threads):
            keep_block(i * block, min(block, B - i * block), x, params, layers, L, z_of, y_of,
                       logits_only, micro)
    else:
        for i in range(n_blocks):
            keep_block(i * block, min(block, B - i * block), x, params, layers, L, z_of, y_of,
                       logits_only, micro)


cdef void keep_block(Py_ssize_t r0, Py_ssize_t rows, const real* x, const real* params,
                     const Layer* layers, Py_ssize_t L, real** z_of,
                     real** y_of, bint logits_only, bint micro) noexcept nogil:
    """forward_keep's rows [r0, r0 + rows) through every layer."""
    cdef Py_ssize_t l, k, n
    cdef bint last, keep_z
    for l in range(L):
        k, n = layers[l].fan_in, layers[l].fan_out
        last = logits_only and l == L - 1
        keep_z = not last and (l == L - 1 or needs_z(<int>layers[l].activation))
        layer_forward(rows, k, n, (x if l == 0 else y_of[l - 1]) + r0 * k,
                      params + layers[l].offset, params + bias_offset(&layers[l]),
                      ACT_IDENTITY if last else <int>layers[l].activation, <real>layers[l].alpha,
                      y_of[l] + r0 * n, z_of[l] + r0 * n if keep_z else NULL, not micro)


cdef enum:
    DW_ROWS = 16  # rows of dW per task
    DX_ROWS = 32  # batch rows of dx per task


cdef void backward_tasks(Py_ssize_t B, Py_ssize_t k, Py_ssize_t n, const real* dz,
                         const real* inp, const real* Wt, real* dW, real* dx,
                         int prev_act, real prev_alpha, const real* prev_z, const real* prev_y,
                         const Optimizer* opt, real* W, real* first, real* second,
                         int threads) noexcept nogil:
    """One layer's backward on the micro-kernel path as independent tasks over OpenMP
    threads: slices of dW's rows (dW = inpᵀ dz), db (Σ rows of dz) at dW + k·n (W and b, and
    their gradients, lie as params lays them out), and unless dx is NULL,
    row blocks of dx = dz Wᵀ (Wt holds Wᵀ, n x k), each turned at once into the previous
    layer's dz. Unless opt is NULL, each slice of W (and b, which follows W) takes its
    optimizer step right after its gradient, while that is still in L1 (nothing reads W
    any more: dx reads the copy Wt); first and second: the optimizer state, indexed like W.
    Every output element has one writer: no races, no reductions, and the same result for
    any thread count."""
    cdef Py_ssize_t n_tasks = ((k + DW_ROWS - 1) // DW_ROWS + 1
                               + ((B + DX_ROWS - 1) // DX_ROWS if dx != NULL else 0))
    cdef Py_ssize_t task
    if in_parallel(threads, n_tasks):
        for task in prange(n_tasks, nogil=True, schedule="dynamic", num_threads=threads):
            backward_task(task, B, k, n, dz, inp, Wt, dW, dx, prev_act, prev_alpha, prev_z, prev_y,
                          opt, W, first, second)
    else:
        for task in range(n_tasks):
            backward_task(task, B, k, n, dz, inp, Wt, dW, dx, prev_act, prev_alpha, prev_z, prev_y,
                          opt, W, first, second)


cdef void backward_task(Py_ssize_t task, Py_ssize_t B, Py_ssize_t k, Py_ssize_t n, const real* dz,
                        const real* inp, const real* Wt, real* dW, real* dx,
                        int prev_act, real prev_alpha, const real* prev_z, const real* prev_y,
                        const Optimizer* opt, real* W, real* first, real* second) noexcept nogil:
    """Task `task` of backward_tasks: dW's rows, then db, then dx's row blocks."""
    cdef Py_ssize_t n_dW = (k + DW_ROWS - 1) // DW_ROWS, i0, rows, r
    if task < n_dW:
        i0 = task * DW_ROWS
        rows = min(DW_ROWS, k - i0)
        micro_gemm_atb(rows, n, B, inp + i0, k, dz, n, dW + i0 * n)
        if opt != NULL:
            optimizer_update(opt, W, dW, first, second, i0 * n, rows * n)
    elif task == n_dW:
        column_sums(dz, B, n, dW + k * n)
        if opt != NULL:
            optimizer_update(opt, W, dW, first, second, k * n, n)
    else:
        i0 = (task - n_dW - 1) * DX_ROWS
        rows = min(DX_ROWS, B - i0)
        micro_gemm_nb(rows, k, n, dz + i0 * n, n, 1, Wt, k, NULL, dx + i0 * k, k, False)
        for r in range(i0, i0 + rows):
            act_backward_row(prev_act, prev_alpha, dx + r * k, prev_z + r * k,
                             prev_y + r * k, dx + r * k, k)


cdef int network_threads(Py_ssize_t B, const Layer* layers, Py_ssize_t L,
                         size_t itemsize) noexcept nogil:
    """OpenMP threads of a whole-network call (forward or training step): only on the
    micro-kernel path (BLAS brings its own threads; never two pools at once)."""
    return threads_for(B, layers, L) if small_weights(layers, L, itemsize) else 1


cdef Py_ssize_t train_work_size(Py_ssize_t B, const Layer* layers, Py_ssize_t L) noexcept nogil:
    """Elements of train_gradients' work: z and y per layer, two gradient buffers, one Wᵀ."""
    cdef Py_ssize_t l, n_work = 0, biggest = 0
    for l in range(L):
        n_work += 2 * B * layers[l].fan_out
        biggest = max(biggest, layers[l].fan_in * layers[l].fan_out)
    return n_work + 2 * B * widest(layers, L) + biggest


cdef inline real* offset_or_null(real* a, Py_ssize_t by) noexcept nogil:
    """a + by, or NULL for an absent buffer (SGD without momentum has no state)."""
    return NULL if a == NULL else a + by


cdef double train_gradients(Py_ssize_t B, const real* x, const int64_t* labels,
                            const real* targets, real* params, real* grads,
                            const Layer* layers, Py_ssize_t L, int loss_id, real* work,
                            real** kept, int threads, real* dx, real* outputs,
                            const Optimizer* opt, real* first, real* second) noexcept nogil:
    """Forward keeping every layer's y and the z the backward reads (forward_keep; a copy of
    the outputs in ``outputs`` unless it is NULL), the loss, backward from the last layer down (dz of each layer is made as soon
    as its dy is) into the layers' W and b in grads (the rest of grads is left as it is);
    dx = dLoss/dx too unless it is NULL (an embedding in front of the network needs it).
    Returns the loss.
    Unless opt is NULL, each layer's W and b also take the optimizer step (state first and
    second, indexed like params) as soon as their gradient is complete and nothing reads
    them any more: the update runs while the gradient is in cache instead of in a pass of
    its own over the whole buffer. The layers must not overlap (each element updated once).
    Small weights: micro-kernels over `threads` OpenMP threads; large: BLAS.
    work: train_work_size elements (z and y per layer, two gradient buffers, one Wᵀ);
    kept: 2 L pointers, set here to each layer's z and y in work."""
    cdef Py_ssize_t l, r, k, n, offset, width = widest(layers, L), used = 0
    cdef bint micro = small_weights(layers, L, sizeof(real))
    cdef real** z_of = kept
    cdef real** y_of = kept + L
    cdef real* dcur
    cdef real* dnext
    cdef real* d_in
    cdef real* Wt
    cdef real* dW
    cdef double loss
    for l in range(L):
        z_of[l] = work + used
        y_of[l] = work + used + B * layers[l].fan_out
        used += 2 * B * layers[l].fan_out
    dcur = work + used
    dnext = dcur + B * width
    Wt = dnext + B * width
    cdef bint logits_only = loss_id != LOSS_MSE and outputs == NULL
    forward_keep(B, x, params, layers, L, z_of, y_of, logits_only, micro, threads)
    if logits_only:
        z_of[L - 1] = y_of[L - 1]  # the logits (see forward_keep)
    n = layers[L - 1].fan_out
    if outputs != NULL:
        memcpy(outputs, y_of[L - 1], B * n * sizeof(real))
    # the cross-entropies give dLoss/dlogits (the last activation folded in); MSE gives dLoss/dy
    loss = loss_forward_backward(loss_id, B, n, y_of[L - 1] if loss_id == LOSS_MSE else z_of[L - 1],
                                 labels, targets, dcur)
    if loss_id == LOSS_MSE:
        for r in range(B):
            act_backward_row(<int>layers[L - 1].activation, <real>layers[L - 1].alpha, dcur + r * n,
                             z_of[L - 1] + r * n, y_of[L - 1] + r * n, dcur + r * n, n)
    for l in range(L - 1, -1, -1):  # dcur holds this layer's dz
        offset, k, n = layers[l].offset, layers[l].fan_in, layers[l].fan_out
        dW = grads + offset
        d_in = dnext if l > 0 else dx  # the first layer's dx is the network's (NULL: skipped)
        if micro:
            if d_in != NULL:
                transpose(k, n, params + offset, n, Wt)
            backward_tasks(B, k, n, dcur, x if l == 0 else y_of[l - 1], Wt, dW, d_in,
                           <int>layers[l - 1].activation if l > 0 else ACT_IDENTITY,
                           <real>layers[l - 1].alpha if l > 0 else 0, z_of[l - 1] if l > 0 else NULL,
                           y_of[l - 1] if l > 0 else NULL, opt, params + offset,
                           offset_or_null(first, offset), offset_or_null(second, offset), threads)
        else:
            layer_backward(B, k, n, dcur, x if l == 0 else y_of[l - 1], params + offset, NULL,
                           NULL, ACT_IDENTITY, 0, dcur, d_in, dW, dW + k * n)
            for r in range(B if l > 0 else 0):
                act_backward_row(<int>layers[l - 1].activation, <real>layers[l - 1].alpha, dnext + r * k,
                                 z_of[l - 1] + r * k, y_of[l - 1] + r * k, dnext + r * k, k)
            if opt != NULL:  # after dx, the last reader of W
                optimizer_pass(opt, params, grads, first, second, offset, offset + k * n + n, threads)
        dcur, dnext = dnext, dcur
    return loss


cdef int read_optimizer(hyper, Optimizer* opt) except -1:
    """opt from the hyper vector (see fusedense.abi), with the step's bias corrections."""
    cdef const double* h = <double*>buffer(hyper, "hyper", cnp.NPY_FLOAT64, -1, N_HYPER)
    if h[H_OPTIMIZER] not in (OPT_SGD, OPT_ADAM):
        raise ValueError(f"hyper[{H_OPTIMIZER}]: unknown optimizer code {h[H_OPTIMIZER]}")
    opt.kind = <int>h[H_OPTIMIZER]
    opt.lr, opt.beta1, opt.beta2, opt.eps = h[H_LR], h[H_BETA1], h[H_BETA2], h[H_EPS]
    opt.weight_decay, opt.nesterov, opt.decoupled = h[H_WEIGHT_DECAY], h[H_NESTEROV] != 0, h[H_DECOUPLED] != 0
    opt.correction1, opt.correction2 = 1 - pow(h[H_BETA1], h[H_STEP]), 1 - pow(h[H_BETA2], h[H_STEP])
    return 0


cdef int check_training(real tag, params, grads, opt_state, hyper, Optimizer* opt) except -1:
    """The arrays every training step shares: grads and opt_state (1 row for SGD, 2 for Adam)
    shaped like params, all writeable; hyper read into opt."""
    cdef Py_ssize_t P = dim(params, 0, "params")
    cdef int t = typenum(tag)
    read_optimizer(hyper, opt)
    buffer(params, "params", t, -1, P, True)
    buffer(grads, "grads", t, -1, P, True)
    buffer(opt_state, "opt_state", t, 1 if opt.kind == OPT_SGD else 2, P, True)
    return 0


cdef void* alloc_train_work(size_t work_bytes, Py_ssize_t L, void** kept) except NULL:
    """train_gradients' work (work_bytes) and its 2 L layer pointers (*kept); free both."""
    cdef void* work = malloc(work_bytes)
    kept[0] = malloc(2 * L * sizeof(void*))
    if work == NULL or kept[0] == NULL:
        free(work)
        free(kept[0])
        raise MemoryError()
    return work


cdef double _mlp_train_step(real tag, x, targets, params, grads, opt_state, const Layer* layers,
                            Py_ssize_t L, int loss_id, hyper, outputs) except? -1:
    cdef Py_ssize_t B = dim(x, 0, "x"), P = dim(params, 0, "params"), C = layers[L - 1].fan_out
    cdef int t = typenum(tag)
    cdef Optimizer opt
    check_training(tag, params, grads, opt_state, hyper, &opt)
    cdef const real* xp = <real*>buffer(x, "x", t, B, layers[0].fan_in)
    cdef real* pp = <real*>cnp.PyArray_DATA(params)
    cdef real* gp = <real*>cnp.PyArray_DATA(grads)
    cdef real* sp = <real*>cnp.PyArray_DATA(opt_state)
    cdef const int64_t* lab = NULL
    cdef const real* tp = NULL
    if loss_id == LOSS_SPARSE_XENT:
        lab = <int64_t*>buffer(targets, "targets", cnp.NPY_INT64, -1, B)
    else:
        tp = <real*>buffer(targets, "targets", t, B, C)
    cdef real* op = <real*>optional_buffer(outputs, "outputs", t, B, C, True)
    cdef double loss
    cdef int threads = network_threads(B, layers, L, sizeof(real))
    # layers tiling params (as make_layout lays them out) take their step inside the gradient
    # pass; otherwise gaps get a zero gradient, as in the reference, and one pass updates all
    cdef bint fused = layers_tile(layers, L, 0, P)
    cdef real** kept
    cdef real* work = <real*>alloc_train_work(train_work_size(B, layers, L) * sizeof(real), L,
                                              <void**>&kept)
    with nogil:
        if not fused:
            memset(gp, 0, P * sizeof(real))
        loss = train_gradients(B, xp, lab, tp, pp, gp, layers, L, loss_id, work, kept, threads,
                               NULL, op, &opt if fused else NULL, sp, sp + P)
        if not fused:
            optimizer_pass(&opt, pp, gp, sp, sp + P, 0, P, threads)
    free(work)
    free(kept)
    return loss


def mlp_train_step(x, targets, params, grads, opt_state, layers, int loss_id,
                   hyper, outputs):
    """Forward, loss, backward and optimizer update in one call; returns the loss. grads
    receives the gradient; params and opt_state are updated in place (see fusedense.abi);
    outputs, unless None, the network's outputs before the update."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(x):
        return _mlp_train_step(<float>0, x, targets, params, grads, opt_state, lp, L, loss_id, hyper,
                               outputs)
    return _mlp_train_step(<double>0, x, targets, params, grads, opt_state, lp, L, loss_id, hyper,
                           outputs)
