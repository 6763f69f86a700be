"""A sparse (CSR) input in front of a network: sparse_dense_forward, sparse_dense_backward and
sparse_train_step (fusedense.reference has the equations).

The first layer is a gather-sum, the close relative of embedding.pyx's gather: row i of
z = b + Σ_k values[k] · W[indices[k]] over the row's non-zeros, so only the rows of W the
batch names are read. Its backward scatter-adds values[k] · dz[i] into a compact (n_rows × n)
block, one row per DISTINCT column of the batch (found by a radix sort of the indices for
sparse_dense_backward's sorted rows, by a slot map kept between training steps in the step), and
the training step updates only those rows of W and of its optimizer state: a step costs
O(nnz · n), never O(n_features · n). The indices are in range (the gate checks them); they may
be unsorted or repeated (repeats add up, as in SciPy's product).

Threads: the forward splits rows over OpenMP threads for large batches (each z row has one writer); the
scatter-add runs in the order of the non-zeros on one thread, so results do not depend on
the thread count.
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport isfinite, sqrt, sqrtf
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from abi cimport H_APPLIED, H_EPS, H_LR, H_OPTIMIZER, H_PENALTY_SCALE, H_STEP, H_WEIGHT_DECAY, N_HYPER, OPT_ADAGRAD, OPT_ADAM, OPT_RMSPROP, OPT_SGD
from act cimport act_backward_row, act_forward_row
from arrays cimport buffer, dim, is_float32, optional_buffer, typenum
from dense cimport column_sums
from layer cimport Layer, bias_offset, records
from network cimport forward_plan, forward_scratch_size, network_forward, network_threads
from optim cimport Optimizer, optimizer_update
from real cimport real
from thread_policy cimport fd_num_threads, fd_set_num_threads, in_parallel, network_threads_for
from train cimport read_optimizer, train_gradients, train_work_size

cnp.import_array()

cdef extern from *:
    """
    #define fd_prefetch(p) __builtin_prefetch((const void*)(p))
    """
    void fd_prefetch(const void* p) noexcept nogil

#: Non-zeros (or rows) ahead whose table row is prefetched: the rows are scattered over a large
#: table, so every one is a cache miss the hardware prefetcher cannot predict.
DEF PREFETCH_AHEAD = 16


def set_num_threads(int n):
    fd_set_num_threads(n)


def get_num_threads():
    return fd_num_threads


# --- the training step's scratch ----------------------------------------------------------------
# Kept between steps: a step's tens of MB, freed and allocated again every call, came back as
# fresh pages (page faults and the kernel zeroing them: about a tenth of a step); and the slot
# map (one entry per column of W0, -1 between steps) is filled once, not per step. A call takes
# them and gives them back while holding the GIL; a concurrent call (another thread) allocates
# its own.

cdef void* step_scratch = NULL
cdef size_t step_scratch_bytes = 0
cdef int64_t* step_slot_map = NULL
cdef Py_ssize_t step_slot_map_len = 0
cdef bint step_scratch_busy = False


cdef void* take_step_scratch(size_t nbytes, Py_ssize_t columns, int64_t** slot_map) except NULL:
    """nbytes of scratch and a slot map of `columns` entries, all -1 (give both back with
    give_back_step_scratch)."""
    global step_scratch, step_scratch_bytes, step_slot_map, step_slot_map_len, step_scratch_busy
    cdef bint own = step_scratch_busy
    cdef void* p
    if own or step_scratch_bytes < nbytes:
        p = malloc(nbytes)
        if p == NULL:
            raise MemoryError()
        if not own:
            free(step_scratch)
            step_scratch, step_scratch_bytes = p, nbytes
    if own or step_slot_map_len < columns:
        slot_map[0] = <int64_t*>malloc(columns * sizeof(int64_t))
        if slot_map[0] == NULL:
            if own:
                free(p)
            raise MemoryError()
        memset(slot_map[0], 0xFF, columns * sizeof(int64_t))  # all -1
        if not own:
            free(step_slot_map)
            step_slot_map, step_slot_map_len = slot_map[0], columns
    if own:
        return p
    slot_map[0] = step_slot_map
    step_scratch_busy = True
    return step_scratch


cdef void give_back_step_scratch(void* p, int64_t* slot_map, const int64_t* rows, Py_ssize_t count) noexcept:
    """Returns take_step_scratch's scratch and map; rows[:count]: the map entries the step set."""
    global step_scratch_busy
    cdef Py_ssize_t r
    if p == step_scratch:
        for r in range(count):
            slot_map[rows[r]] = -1
        step_scratch_busy = False
    else:
        free(p)
        free(slot_map)


# --- the pieces ------------------------------------------------------------------------------

cdef inline void prefetch_row(const real* row, Py_ssize_t n) noexcept nogil:
    """Asks for every 64-byte cache line of a table row."""
    cdef Py_ssize_t c = 0, line = 64 // sizeof(real)
    while c < n:
        fd_prefetch(row + c)
        c += line


cdef inline void gather_sum_row(const int64_t* indptr, const int64_t* indices, const real* values,
                                Py_ssize_t i, const real* W, const real* b, Py_ssize_t n,
                                real* z, Py_ssize_t nnz) noexcept nogil:
    """z = b + Σ values[k] · W[indices[k]] over row i's non-zeros (an axpy per non-zero: the
    inner loop over n vectorizes); the rows PREFETCH_AHEAD non-zeros on (of the next rows too,
    up to nnz) are asked for meanwhile."""
    cdef Py_ssize_t k, c, end = indptr[i + 1]
    cdef const real* w
    cdef real v
    memcpy(z, b, n * sizeof(real))
    for k in range(indptr[i], end):
        if k + PREFETCH_AHEAD < nnz:
            prefetch_row(W + indices[k + PREFETCH_AHEAD] * n, n)
        v = values[k]
        w = W + indices[k] * n
        for c in range(n):
            z[c] += v * w[c]


cdef void sparse_forward(Py_ssize_t B, const int64_t* indptr, const int64_t* indices, const real* values,
                         const real* W, const real* b, Py_ssize_t n, int act, real alpha, real* z, real* y,
                         int threads) noexcept nogil:
    """z = X W + b and y = act(z), rows shared over threads; z may be y (activated in place)."""
    cdef Py_ssize_t i
    if in_parallel(threads, B):
        for i in prange(B, nogil=True, schedule="static", num_threads=threads):
            gather_sum_row(indptr, indices, values, i, W, b, n, z + i * n, indptr[B])
            act_forward_row(act, alpha, z + i * n, y + i * n, n)
    else:
        for i in range(B):
            gather_sum_row(indptr, indices, values, i, W, b, n, z + i * n, indptr[B])
            act_forward_row(act, alpha, z + i * n, y + i * n, n)


cdef Py_ssize_t distinct_slots(const int64_t* indices, Py_ssize_t nnz, int64_t* rows, int64_t* slot,
                               int64_t* scratch) noexcept nogil:
    """rows[:count] = the sorted distinct values of indices[:nnz] and slot[k] = the position of
    indices[k] in rows; returns count. A stable LSD radix sort of the non-zeros' positions by
    index, 11 bits a pass (two passes below 2^22 columns): no comparisons, no lookups.
    scratch: 2 nnz int64."""
    cdef Py_ssize_t k, count, d, passes = 0
    cdef int64_t top = 0, key
    cdef int64_t* order = scratch
    cdef int64_t* other = scratch + nnz
    cdef int64_t* swap
    cdef Py_ssize_t counts[2049]
    if nnz == 0:
        return 0
    for k in range(nnz):
        order[k] = k
        top = max(top, indices[k])
    while passes == 0 or (top >> (11 * passes)) > 0:
        memset(counts, 0, sizeof(counts))
        for k in range(nnz):
            counts[((indices[order[k]] >> (11 * passes)) & 2047) + 1] += 1
        for d in range(2048):
            counts[d + 1] += counts[d]
        for k in range(nnz):
            key = (indices[order[k]] >> (11 * passes)) & 2047
            other[counts[key]] = order[k]
            counts[key] += 1
        swap = order
        order = other
        other = swap
        passes += 1
    count = 0
    rows[0] = indices[order[0]]
    for k in range(nnz):
        if indices[order[k]] != rows[count]:
            count += 1
            rows[count] = indices[order[k]]
        slot[order[k]] = count
    return count + 1


cdef Py_ssize_t first_seen_slots(const int64_t* indices, Py_ssize_t nnz, int64_t* slot_of_column, int64_t* rows,
                                 int64_t* slot) noexcept nogil:
    """rows[:count] = the distinct values of indices[:nnz] in the order they first appear and
    slot[k] = the position of indices[k] in rows; returns count. One pass through
    slot_of_column (-1 for every column on entry; on return set for rows[:count]), no sort:
    the training step's lazy update visits each row once, in any order."""
    cdef Py_ssize_t k, count = 0
    cdef int64_t s
    for k in range(nnz):
        s = slot_of_column[indices[k]]
        if s < 0:
            s = count
            slot_of_column[indices[k]] = s
            rows[count] = indices[k]
            count += 1
        slot[k] = s
    return count


cdef void scatter_slots(Py_ssize_t B, const int64_t* indptr, const int64_t* slot, const real* values,
                        const real* dz, Py_ssize_t n, Py_ssize_t count, real* dW_rows) noexcept nogil:
    """dW_rows[r] = Σ values[k] · dz[row of k] over the non-zeros k with slot[k] == r, in the
    order of the non-zeros (one thread: the sums do not depend on the thread count)."""
    cdef Py_ssize_t i, k, c
    cdef real v
    cdef real* out
    cdef Py_ssize_t nnz = indptr[B]
    memset(dW_rows, 0, count * n * sizeof(real))
    for i in range(B):
        for k in range(indptr[i], indptr[i + 1]):
            if k + PREFETCH_AHEAD < nnz:
                prefetch_row(dW_rows + slot[k + PREFETCH_AHEAD] * n, n)
            v = values[k]
            out = dW_rows + slot[k] * n
            for c in range(n):
                out[c] += v * dz[i * n + c]


cdef void sgd_scatter(Py_ssize_t B, const int64_t* indptr, const int64_t* indices, const real* values,
                      const real* dz, Py_ssize_t n, real lr, real* W) noexcept nogil:
    """Plain SGD on W's touched rows, non-zero by non-zero: W[indices[k]] −= lr · values[k] ·
    dz[row of k]. The step is linear in the gradient, so this is the step on each row's summed
    gradient (up to rounding) without finding the distinct rows (fastText's update); in the
    order of the non-zeros, on one thread."""
    cdef Py_ssize_t i, k, c
    cdef real scale
    cdef real* w
    for i in range(B):
        for k in range(indptr[i], indptr[i + 1]):
            scale = -lr * values[k]
            w = W + indices[k] * n
            for c in range(n):
                w[c] += scale * dz[i * n + c]


cdef inline void adagrad_update(real* p, const real* g, real* acc, Py_ssize_t n, real lr, real eps,
                                real weight_decay) noexcept nogil:
    """PyTorch's Adagrad on p[:n]: g += wd·p; G += g²; p −= lr · g / (√G + eps)."""
    cdef Py_ssize_t j
    cdef real gj
    for j in range(n):
        gj = g[j] + weight_decay * p[j]
        acc[j] += gj * gj
        if real is float:  # (sqrt would widen to double: half the lanes, and a slower root)
            p[j] -= lr * gj / (sqrtf(acc[j]) + eps)
        else:
            p[j] -= lr * gj / (sqrt(acc[j]) + eps)


cdef inline void update_span(const Optimizer* opt, real* p, const real* g, real* first, real* second,
                             Py_ssize_t n) noexcept nogil:
    """The step on p[:n] with gradient g[:n] and state first/second[:n] (Adagrad: first = G)."""
    if opt.kind == OPT_ADAGRAD:
        adagrad_update(p, g, first, n, <real>opt.lr, <real>opt.eps, <real>opt.weight_decay)
    else:
        optimizer_update(opt, p, g, first, second, 0, n)


cdef int read_sparse_optimizer(hyper, Optimizer* opt) except -1:
    """read_optimizer (train.pxd), plus OPT_ADAGRAD, which only this step takes, less OPT_RMSPROP
    (the gate refuses it: the lazy row updates follow SGD, Adam and Adagrad only)."""
    cdef const double* h = <double*>buffer(hyper, "hyper", cnp.NPY_FLOAT64, -1, N_HYPER, True)
    if h[H_OPTIMIZER] == OPT_RMSPROP:
        raise ValueError("optimizer: the sparse training step takes SGD, Adam or Adagrad, not RMSprop")
    if h[H_OPTIMIZER] != OPT_ADAGRAD:
        return read_optimizer(hyper, opt)
    memset(opt, 0, sizeof(Optimizer))
    opt.kind, opt.lr, opt.eps, opt.weight_decay = OPT_ADAGRAD, h[H_LR], h[H_EPS], h[H_WEIGHT_DECAY]
    return 0


# --- one layer -------------------------------------------------------------------------------------

cdef int _sparse_dense_forward(real tag, indptr, indices, values, W, b, int act_id, double alpha, y,
                               z) except -1:
    cdef Py_ssize_t B = dim(indptr, 0, "indptr") - 1, nnz = dim(indices, 0, "indices")
    cdef Py_ssize_t k = dim(W, 0, "W"), n = dim(W, 1, "W")
    cdef int t = typenum(tag)
    cdef const int64_t* ip = <int64_t*>buffer(indptr, "indptr", cnp.NPY_INT64, -1, B + 1)
    cdef const int64_t* ix = <int64_t*>buffer(indices, "indices", cnp.NPY_INT64, -1, nnz)
    cdef const real* vp = <real*>buffer(values, "values", t, -1, nnz)
    cdef const real* wp = <real*>buffer(W, "W", t, k, n)
    cdef const real* bp = <real*>buffer(b, "b", t, -1, n)
    cdef real* yp = <real*>buffer(y, "y", t, B, n, True)
    cdef real* zp = <real*>optional_buffer(z, "z", t, B, n, True)
    with nogil:
        sparse_forward(B, ip, ix, vp, wp, bp, n, act_id, <real>alpha, yp if zp == NULL else zp, yp,
                       network_threads_for(nnz * n, False))
    return 0


def sparse_dense_forward(indptr, indices, values, W, b, int act_id, double alpha, y, z):
    """z = X @ W + b (CSR X), y = act(z); z (None: not kept)."""
    if is_float32(W):
        _sparse_dense_forward(<float>0, indptr, indices, values, W, b, act_id, alpha, y, z)
    else:
        _sparse_dense_forward(<double>0, indptr, indices, values, W, b, act_id, alpha, y, z)


cdef int _sparse_mlp_forward(real tag, indptr, indices, values, params, const Layer* layers, Py_ssize_t L,
                            out) except -1:
    cdef Py_ssize_t B = dim(indptr, 0, "indptr") - 1, nnz = dim(indices, 0, "indices"), n = layers[0].fan_out
    cdef int t = typenum(tag)
    cdef const int64_t* ip = <int64_t*>buffer(indptr, "indptr", cnp.NPY_INT64, -1, B + 1)
    cdef const int64_t* ix = <int64_t*>buffer(indices, "indices", cnp.NPY_INT64, -1, nnz)
    cdef const real* vp = <real*>buffer(values, "values", t, -1, nnz)
    cdef const real* pp = <real*>buffer(params, "params", t, -1, dim(params, 0, "params"))
    cdef real* outp = <real*>buffer(out, "out", t, B, layers[L - 1].fan_out, True)
    cdef Py_ssize_t block = 0, h_size = B * n if L > 1 else 0
    cdef bint micro = False
    cdef int threads = 1
    if L > 1:  # the layers above: network_forward's plan, as mlp_forward makes it
        threads = forward_plan(B, layers + 1, L - 1, sizeof(real), &block, &micro)
    # the first layer's output, then the dense stack's scratch
    cdef real* h = <real*>malloc((h_size + (forward_scratch_size(threads, block, layers + 1, L - 1) if L > 1 else 0))
                                 * sizeof(real) + 1)
    if h == NULL:
        raise MemoryError()
    with nogil:
        sparse_forward(B, ip, ix, vp, pp + layers[0].offset, pp + bias_offset(&layers[0]), n,
                       <int>layers[0].activation, <real>layers[0].alpha, h if L > 1 else outp,
                       h if L > 1 else outp, network_threads_for(nnz * n, False))
        if L > 1:
            network_forward(B, h, pp, layers + 1, L - 1, outp, h + h_size, block, micro, threads)
    free(h)
    return 0


def sparse_mlp_forward(indptr, indices, values, params, layers, out):
    """out = the network's output for CSR rows into layers[0] (see interface.sparse_mlp_forward)."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(params):
        _sparse_mlp_forward(<float>0, indptr, indices, values, params, lp, L, out)
    else:
        _sparse_mlp_forward(<double>0, indptr, indices, values, params, lp, L, out)


cdef int _sparse_dense_backward(real tag, dy, indptr, indices, values, z, y, int act_id, double alpha,
                                rows, dW_rows, db) except -1:
    cdef Py_ssize_t B = dim(dy, 0, "dy"), n = dim(dy, 1, "dy"), nnz = dim(indices, 0, "indices")
    cdef Py_ssize_t count = dim(rows, 0, "rows"), i
    cdef int t = typenum(tag)
    cdef const real* dyp = <real*>buffer(dy, "dy", t, B, n)
    cdef const int64_t* ip = <int64_t*>buffer(indptr, "indptr", cnp.NPY_INT64, -1, B + 1)
    cdef const int64_t* ix = <int64_t*>buffer(indices, "indices", cnp.NPY_INT64, -1, nnz)
    cdef const real* vp = <real*>buffer(values, "values", t, -1, nnz)
    cdef const real* zp = <real*>optional_buffer(z, "z", t, B, n)
    cdef const real* yp = <real*>optional_buffer(y, "y", t, B, n)
    buffer(rows, "rows", cnp.NPY_INT64, -1, count)  # the distinct indices (the gate checked them)
    cdef real* dWp = <real*>buffer(dW_rows, "dW_rows", t, count, n, True)
    cdef real* dbp = <real*>buffer(db, "db", t, -1, n, True)
    # dz, then each non-zero's row in dW_rows and the sort's scratch (rows are the distinct
    # indices: the gate checked it, so distinct_slots finds them again)
    cdef real* dz = <real*>malloc(B * n * sizeof(real) + 4 * nnz * sizeof(int64_t))
    if dz == NULL:
        raise MemoryError()
    cdef int64_t* slot = <int64_t*>(dz + B * n)
    with nogil:
        for i in range(B):
            act_backward_row(act_id, <real>alpha, dyp + i * n, NULL if zp == NULL else zp + i * n,
                             NULL if yp == NULL else yp + i * n, dz + i * n, n)
        column_sums(dz, B, n, dbp)
        count = distinct_slots(ix, nnz, slot + nnz, slot, slot + 2 * nnz)
        scatter_slots(B, ip, slot, vp, dz, n, count, dWp)
    free(dz)
    return 0


def sparse_dense_backward(dy, indptr, indices, values, z, y, int act_id, double alpha, rows, dW_rows, db):
    """dz = dy · act'(z), db = Σ dz, dW_rows = W's gradient at its rows ``rows`` only."""
    if is_float32(dy):
        _sparse_dense_backward(<float>0, dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db)
    else:
        _sparse_dense_backward(<double>0, dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db)


# --- the training step ------------------------------------------------------------------------------

cdef double _sparse_train_step(real tag, indptr, indices, values, labels, targets, params, grads, opt_state,
                               const Layer* layers, Py_ssize_t L, int loss_id, hyper, outputs,
                               sample_weight) except? -1:
    cdef Py_ssize_t B = dim(indptr, 0, "indptr") - 1, nnz = dim(indices, 0, "indices")
    cdef Py_ssize_t P = dim(params, 0, "params"), n = layers[0].fan_out, l, r, start, count
    cdef int t = typenum(tag)
    cdef Optimizer opt
    read_sparse_optimizer(hyper, &opt)
    cdef Py_ssize_t state_rows = 2 if opt.kind == OPT_ADAM else 1  # Adam: m and v
    cdef real* pp = <real*>buffer(params, "params", t, -1, P, True)
    cdef real* gp = <real*>buffer(grads, "grads", t, -1, P, True)
    cdef real* first = <real*>buffer(opt_state, "opt_state", t, state_rows, P, True)
    cdef real* second = first + P if state_rows == 2 else NULL
    cdef double* h = <double*>cnp.PyArray_DATA(hyper)
    cdef const int64_t* ip = <int64_t*>buffer(indptr, "indptr", cnp.NPY_INT64, -1, B + 1)
    cdef const int64_t* ix = <int64_t*>buffer(indices, "indices", cnp.NPY_INT64, -1, nnz)
    cdef const real* vp = <real*>buffer(values, "values", t, -1, nnz)
    cdef const int64_t* lab = NULL
    cdef const real* tp = NULL
    if labels is not None:
        lab = <int64_t*>buffer(labels, "labels", cnp.NPY_INT64, -1, B)
    else:
        tp = <real*>buffer(targets, "targets", t, B, layers[L - 1].fan_out)
    cdef real* op = <real*>optional_buffer(outputs, "outputs", t, B, layers[L - 1].fan_out, True)
    cdef const real* wp = NULL
    if sample_weight is not None:
        wp = <real*>buffer(sample_weight, "sample_weight", t, -1, B)
    cdef int threads = network_threads(B, layers + 1, L - 1, sizeof(real))
    cdef real* W0 = pp + layers[0].offset
    cdef real* b0 = pp + bias_offset(&layers[0])
    # the distinct rows (int64 first: aligned), z0, h0 (the first layer's pre-activation and
    # output), dh0 (dLoss/dh0, then dz0), W0's gradient at the rows, the dense layers' work
    cdef real** kept = <real**>malloc(3 * (L - 1) * sizeof(real*) + 1)  # train_gradients' 3 pointers per layer
    if kept == NULL:
        raise MemoryError()
    cdef int64_t* rows
    cdef int64_t* slot_of_column
    try:
        rows = <int64_t*>take_step_scratch(2 * nnz * sizeof(int64_t) + (3 * B * n + nnz * n
                                           + train_work_size(B, layers + 1, L - 1)) * sizeof(real),
                                           layers[0].fan_in, &slot_of_column)
    except MemoryError:
        free(kept)
        raise
    cdef int64_t* slot = rows + nnz
    cdef real* z0 = <real*>(rows + 2 * nnz)
    cdef real* h0 = z0 + B * n
    cdef real* dh0 = h0 + B * n
    cdef real* dW_rows = dh0 + B * n
    cdef real* dense_work = dW_rows + nnz * n
    cdef double loss
    cdef bint plain_sgd
    count = 0
    with nogil:
        sparse_forward(B, ip, ix, vp, W0, b0, n, <int>layers[0].activation, <real>layers[0].alpha, z0, h0,
                       network_threads_for(nnz * n, True))
        # the dense layers with h0 as their input, down to dLoss/dh0; their update comes after
        # (unfused: Adagrad is not among the fused optimizers)
        loss = train_gradients(B, h0, lab, tp, wp, pp, gp, layers + 1, L - 1, loss_id, dense_work, kept,
                               threads, dh0, op, NULL, NULL, NULL, h[H_PENALTY_SCALE],
                               0)  # the gate refuses dropout here
        if isfinite(loss):  # else nothing is updated (transactional)
            for r in range(B):
                act_backward_row(<int>layers[0].activation, <real>layers[0].alpha, dh0 + r * n, z0 + r * n,
                                 h0 + r * n, dh0 + r * n, n)
            column_sums(dh0, B, n, gp + bias_offset(&layers[0]))
            plain_sgd = opt.kind == OPT_SGD and opt.beta1 == 0 and opt.weight_decay == 0
            if not plain_sgd:
                count = first_seen_slots(ix, nnz, slot_of_column, rows, slot)
                scatter_slots(B, ip, slot, vp, dh0, n, count, dW_rows)
            for l in range(1, L):
                start = layers[l].offset
                update_span(&opt, pp + start, gp + start, first + start, NULL if second == NULL else second + start,
                            (layers[l].fan_in + 1) * layers[l].fan_out)
            start = bias_offset(&layers[0])
            update_span(&opt, pp + start, gp + start, first + start, NULL if second == NULL else second + start, n)
            if plain_sgd:  # linear in the gradient: straight into W0's rows, no distinct rows needed
                sgd_scatter(B, ip, ix, vp, dh0, n, <real>opt.lr, W0)
            else:
                for r in range(count):  # the lazy step: the touched rows of W0 and of its state only
                    if r + PREFETCH_AHEAD < count:
                        prefetch_row(W0 + rows[r + PREFETCH_AHEAD] * n, n)
                        prefetch_row(first + layers[0].offset + rows[r + PREFETCH_AHEAD] * n, n)
                    start = layers[0].offset + rows[r] * n
                    update_span(&opt, pp + start, dW_rows + r * n, first + start,
                                NULL if second == NULL else second + start, n)
            h[H_APPLIED] = h[H_STEP]
    give_back_step_scratch(rows, slot_of_column, rows, count)
    free(kept)
    return loss


def sparse_train_step(indptr, indices, values, labels, targets, params, grads, opt_state, layers,
                      int loss_id, hyper, outputs, sample_weight):
    """The fused step with a CSR batch into layers[0] (see the module docstring); ``labels``
    (int64) for the sparse cross-entropy, else None and ``targets``. Returns the loss."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(params):
        return _sparse_train_step(<float>0, indptr, indices, values, labels, targets, params, grads,
                                  opt_state, lp, L, loss_id, hyper, outputs, sample_weight)
    return _sparse_train_step(<double>0, indptr, indices, values, labels, targets, params, grads, opt_state,
                              lp, L, loss_id, hyper, outputs, sample_weight)
