"""Dense layers and whole networks: the entry points dense_forward, dense_backward,
mlp_forward, loss, mlp_gradient, mlp_train_step and mlp_train_epoch. The kernels behind them are split by job:
dense.pxd (one layer, forward and backward), network.pxd (every layer), losses.pxd,
train.pxd (the fused training step), thread_policy.pxd (OpenMP thread counts).

Every product goes through gemm.matmul-style dispatch: BLAS for large shapes (its own
threads), register-blocked micro-kernels for small ones (no temporaries). The epilogue
(bias, activation) runs on row blocks right after the product wrote them, while they are
still in cache. One thread pool at a time: mlp_forward over small weights splits the batch
across OpenMP threads, each running the micro-kernels on its own row blocks, and never calls
BLAS inside that region; a large layer of up to PACKED_MAX_ROWS rows splits its product over
output columns on OpenMP threads (dense.layer_forward); larger batches leave threading to BLAS:
two pools spinning against each other cost a thousand times the call.
"""
cimport numpy as cnp
from libc.math cimport NAN, isfinite, pow, sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from abi cimport H_APPLIED, H_EPS, H_PENALTY_SCALE, H_STEP, LOSS_SPARSE_XENT
from act cimport check_act, needs_z
from arrays cimport buffer, dim, is_float32, optional_buffer, typenum
from dense cimport layer_backward, layer_forward
from layer cimport Layer, records
from losses cimport loss_forward_backward
from network cimport forward_plan, forward_scratch_size, network_forward, network_threads
from optim cimport Optimizer, optimizer_pass
from real cimport real
from thread_policy cimport fd_num_threads, fd_set_num_threads
from train cimport alloc_train_work, check_training, layers_tile, train_gradients, train_work_size

cnp.import_array()

cdef Layer _probe
#: sizeof(Layer) and each field's byte offset, for tests/test_abi.py to compare with
#: fusedense.layout.LAYER (records are read in place: the two must agree byte for byte).
LAYER_STRUCT = (sizeof(Layer), {
    "offset": <char*>&_probe.offset - <char*>&_probe, "fan_in": <char*>&_probe.fan_in - <char*>&_probe,
    "fan_out": <char*>&_probe.fan_out - <char*>&_probe, "activation": <char*>&_probe.activation - <char*>&_probe,
    "alpha": <char*>&_probe.alpha - <char*>&_probe, "l1": <char*>&_probe.l1 - <char*>&_probe,
    "l2": <char*>&_probe.l2 - <char*>&_probe, "dropout": <char*>&_probe.dropout - <char*>&_probe,
    "seed": <char*>&_probe.seed - <char*>&_probe})


def set_num_threads(int n):
    """OpenMP threads of this module's kernels (BLAS threads: set by the backend)."""
    fd_set_num_threads(n)


def get_num_threads():
    return fd_num_threads


# --- one layer ------------------------------------------------------------------------------

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


# --- losses -----------------------------------------------------------------------------------

cdef int targets_of(real tag, int loss_id, targets, Py_ssize_t B, Py_ssize_t C,
                    const int64_t** labels, const real** values) except -1:
    """The targets of loss_id: int64 labels (B,) for sparse cross-entropy, else (B, C) values."""
    if loss_id == LOSS_SPARSE_XENT:
        labels[0] = <int64_t*>buffer(targets, "targets", cnp.NPY_INT64, -1, B)
    else:
        values[0] = <real*>buffer(targets, "targets", typenum(tag), B, C)
    return 0


cdef double _loss(real tag, int loss_id, outputs, targets, grad) except? -1:
    cdef Py_ssize_t B = dim(outputs, 0, "outputs"), C = dim(outputs, 1, "outputs")
    cdef int t = typenum(tag)
    cdef const real* op = <real*>buffer(outputs, "outputs", t, B, C)
    cdef const int64_t* lab = NULL
    cdef const real* tp = NULL
    targets_of(tag, loss_id, targets, B, C, &lab, &tp)
    # the row losses compute the gradient on the way (the softmax rows keep their exps in it)
    cdef real* gp = <real*>optional_buffer(grad, "grad", t, B, C, True)
    cdef real* scratch = NULL
    if gp == NULL:
        gp = scratch = <real*>malloc(B * C * sizeof(real))
        if scratch == NULL:
            raise MemoryError()
    cdef double value
    with nogil:
        value = loss_forward_backward(loss_id, B, C, op, lab, tp, NULL, gp)
    free(scratch)
    return value


def loss(int loss_id, outputs, targets, grad):
    """Mean loss of outputs against targets (fusedense.abi.LOSS_*); grad = dLoss/doutputs
    unless None."""
    if is_float32(outputs):
        return _loss(<float>0, loss_id, outputs, targets, grad)
    return _loss(<double>0, loss_id, outputs, targets, grad)


# --- the fused training step ------------------------------------------------------------------

cdef inline double fused_step(Py_ssize_t rows, const real* x, const int64_t* labels,
                              const real* targets, const real* weights, real* params, real* grads,
                              Py_ssize_t P, const Layer* layers, Py_ssize_t L, int loss_id,
                              real* work, real** kept, real* outputs, Optimizer* opt,
                              real* state, double* h, bint tiled) noexcept nogil:
    """One step on a batch of rows, shared by mlp_train_step (and mlp_gradient) and each batch
    of mlp_train_epoch: forward, loss, backward into grads and, unless opt is NULL (mlp_gradient:
    no hyper, no state), the optimizer update from hyper's H_STEP and H_PENALTY_SCALE, recorded
    in H_APPLIED. Layers tiling params take their update inside the gradient pass; otherwise
    the gaps get a zero gradient, as in the reference, and one pass updates all. A loss that
    is not finite updates nothing (the step is transactional)."""
    cdef int threads = network_threads(rows, layers, L, sizeof(real), True)
    cdef double loss
    if not tiled:
        memset(grads, 0, P * sizeof(real))
    # mlp_gradient (no opt) takes the record's penalties as they are, and no dropout
    loss = train_gradients(rows, x, labels, targets, weights, params, grads, layers, L, loss_id, work,
                           kept, threads, NULL, outputs, opt if tiled else NULL, state,
                           state + P if opt != NULL else NULL,
                           h[H_PENALTY_SCALE] if opt != NULL else 1.0,
                           <uint64_t>h[H_STEP] if opt != NULL else 0)
    if opt != NULL and isfinite(loss):
        if not tiled:
            optimizer_pass(opt, params, grads, state, state + P, 0, P, threads)
        h[H_APPLIED] = h[H_STEP]
    return loss


cdef double _mlp_step(real tag, x, targets, params, grads, opt_state, const Layer* layers,
                      Py_ssize_t L, int loss_id, hyper, outputs, sample_weight) except? -1:
    """mlp_train_step, or mlp_gradient when hyper is None (no update; opt_state unused)."""
    cdef Py_ssize_t B = dim(x, 0, "x"), P = dim(params, 0, "params"), C = layers[L - 1].fan_out
    cdef int t = typenum(tag)
    cdef bint update = hyper is not None
    cdef Optimizer opt
    cdef double* h = NULL
    cdef real* sp = NULL
    if update:
        check_training(tag, params, grads, opt_state, hyper, &opt)
        h = <double*>cnp.PyArray_DATA(hyper)
        sp = <real*>cnp.PyArray_DATA(opt_state)
    cdef const real* xp = <real*>buffer(x, "x", t, B, layers[0].fan_in)
    cdef real* pp = <real*>buffer(params, "params", t, -1, P, True)
    cdef real* gp = <real*>buffer(grads, "grads", t, -1, P, True)
    cdef const int64_t* lab = NULL
    cdef const real* tp = NULL
    targets_of(tag, loss_id, targets, B, C, &lab, &tp)
    cdef real* op = <real*>optional_buffer(outputs, "outputs", t, B, C, True)
    cdef const real* wp = <real*>optional_buffer(sample_weight, "sample_weight", t, -1, B)
    cdef double loss
    cdef real** kept
    cdef real* work = <real*>alloc_train_work(train_work_size(B, layers, L) * sizeof(real), L,
                                              <void**>&kept)
    with nogil:
        loss = fused_step(B, xp, lab, tp, wp, pp, gp, P, layers, L, loss_id, work, kept, op,
                          &opt if update else NULL, sp, h, layers_tile(layers, L, 0, P))
    free(work)
    free(kept)
    return loss


def mlp_gradient(x, targets, params, grads, layers, int loss_id, sample_weight):
    """Forward, loss and backward into grads (every element), no update; returns the loss."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(x):
        return _mlp_step(<float>0, x, targets, params, grads, None, lp, L, loss_id, None, None,
                         sample_weight)
    return _mlp_step(<double>0, x, targets, params, grads, None, lp, L, loss_id, None, None,
                     sample_weight)


def mlp_train_step(x, targets, params, grads, opt_state, layers, int loss_id, hyper, outputs,
                   sample_weight):
    """Forward, loss, backward and optimizer update in one call; returns the loss. grads
    receives the gradient; params and opt_state are updated in place (see fusedense.abi), unless
    the loss is not finite; outputs, unless None, the network's outputs before the update."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(x):
        return _mlp_step(<float>0, x, targets, params, grads, opt_state, lp, L, loss_id, hyper,
                         outputs, sample_weight)
    return _mlp_step(<double>0, x, targets, params, grads, opt_state, lp, L, loss_id, hyper,
                     outputs, sample_weight)


# --- a whole epoch of fused training steps ----------------------------------------------------

cdef double _mlp_epoch(real tag, x, targets, order, Py_ssize_t batch_size, params, grads, opt_state,
                       const Layer* layers, Py_ssize_t L, int loss_id, hyper, sample_weight,
                       batch_losses, outputs, bint penalty_over_weight, bint epsilon_on_sqrt_v) except? -1:
    """mlp_train_epoch: the loop of _mlp_step over minibatches without returning to Python
    (the per-call costs, argument checks, work allocation, optimizer read, are paid once)."""
    cdef Py_ssize_t n = dim(x, 0, "x"), k = layers[0].fan_in, P = dim(params, 0, "params")
    cdef Py_ssize_t C = layers[L - 1].fan_out
    cdef Py_ssize_t m = n if order is None else dim(order, 0, "order")
    cdef Py_ssize_t B = min(batch_size, m)
    cdef Py_ssize_t n_batches = (m + B - 1) // B
    cdef int t = typenum(tag)
    cdef Optimizer opt
    check_training(tag, params, grads, opt_state, hyper, &opt)
    cdef double* h = <double*>cnp.PyArray_DATA(hyper)
    cdef real* sp = <real*>cnp.PyArray_DATA(opt_state)
    cdef const real* xp = <real*>buffer(x, "x", t, n, k)
    cdef real* pp = <real*>buffer(params, "params", t, -1, P, True)
    cdef real* gp = <real*>buffer(grads, "grads", t, -1, P, True)
    cdef const int64_t* lab = NULL
    cdef const real* tp = NULL
    targets_of(tag, loss_id, targets, n, C, &lab, &tp)
    cdef const int64_t* idx = <int64_t*>optional_buffer(order, "order", cnp.NPY_INT64, -1, m)
    cdef const real* wp = <real*>optional_buffer(sample_weight, "sample_weight", t, -1, n)
    cdef double* lp = <double*>buffer(batch_losses, "batch_losses", cnp.NPY_FLOAT64, -1, n_batches, True)
    cdef real* op = <real*>optional_buffer(outputs, "outputs", t, m, C, True)
    cdef bint tiled = layers_tile(layers, L, 0, P)
    cdef real** kept
    cdef real* work = <real*>alloc_train_work(train_work_size(B, layers, L) * sizeof(real), L,
                                              <void**>&kept)
    # one batch's gathered rows: x, float targets (or labels), weights; used only where needed
    cdef real* xb = <real*>malloc((B * k + B * C + B) * sizeof(real))
    cdef int64_t* lb = <int64_t*>malloc(B * sizeof(int64_t))
    if xb == NULL or lb == NULL:
        free(work)
        free(kept)
        free(xb)
        free(lb)
        raise MemoryError()
    cdef real* tb = xb + B * k
    cdef real* wb = tb + B * C
    cdef double base_eps = h[H_EPS], base_scale = h[H_PENALTY_SCALE], total = 0, loss = 0, weight_sum, w
    cdef Py_ssize_t i, r, j, start, rows, row
    cdef uint64_t step
    cdef const real* bx
    cdef const int64_t* blab
    cdef const real* bt
    cdef const real* bw
    with nogil:
        for i in range(n_batches):
            start = i * B
            rows = min(B, m - start)
            if idx == NULL:  # stored order: the batch is a slice, read in place
                bx = xp + start * k
                blab = NULL if lab == NULL else lab + start
                bt = NULL if tp == NULL else tp + start * C
            else:  # gather; the gate checked every index is in [0, n)
                for r in range(rows):
                    row = idx[start + r]
                    memcpy(xb + r * k, xp + row * k, k * sizeof(real))
                    if lab != NULL:
                        lb[r] = lab[row]
                    else:
                        memcpy(tb + r * C, tp + row * C, C * sizeof(real))
                bx, blab, bt = xb, (lb if lab != NULL else NULL), (tb if tp != NULL else NULL)
            # scikit-learn's weighted average: the weights rescaled to sum to the batch's rows
            weight_sum = rows
            bw = NULL
            if wp != NULL:
                weight_sum = 0
                for r in range(rows):
                    weight_sum += wp[start + r if idx == NULL else idx[start + r]]
                w = rows / weight_sum if weight_sum > 0 else 0.0
                for r in range(rows):
                    wb[r] = <real>(wp[start + r if idx == NULL else idx[start + r]] * w)
                bw = wb
            step = <uint64_t>h[H_APPLIED] + 1
            h[H_STEP] = <double>step
            opt.correction1, opt.correction2 = 1 - pow(opt.beta1, <double>step), 1 - pow(opt.beta2, <double>step)
            if epsilon_on_sqrt_v:  # ε on √v = ε/√(1−β2^t) on √v̂
                opt.eps = base_eps / sqrt(opt.correction2)
            h[H_PENALTY_SCALE] = base_scale
            if penalty_over_weight:
                h[H_PENALTY_SCALE] = base_scale / weight_sum if weight_sum > 0 else 0.0
            loss = fused_step(rows, bx, blab, bt, bw, pp, gp, P, layers, L, loss_id, work, kept,
                              NULL if op == NULL else op + start * C, &opt, sp, h, tiled)
            lp[i] = loss
            if not isfinite(loss):  # this batch not applied (transactional, as mlp_train_step)
                for j in range(i + 1, n_batches):
                    lp[j] = NAN
                break
            total += loss * rows
        h[H_PENALTY_SCALE] = base_scale
    free(work)
    free(kept)
    free(xb)
    free(lb)
    return total / m if isfinite(loss) else loss


def mlp_train_epoch(x, targets, order, Py_ssize_t batch_size, params, grads, opt_state, layers,
                    int loss_id, hyper, sample_weight, batch_losses, outputs, bint penalty_over_weight,
                    bint epsilon_on_sqrt_v):
    """One pass of mlp_train_step over the rows of x in minibatches (see the interface);
    returns the rows' mean loss, or the first loss that is not finite."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if is_float32(x):
        return _mlp_epoch(<float>0, x, targets, order, batch_size, params, grads, opt_state, lp, L,
                          loss_id, hyper, sample_weight, batch_losses, outputs, penalty_over_weight,
                          epsilon_on_sqrt_v)
    return _mlp_epoch(<double>0, x, targets, order, batch_size, params, grads, opt_state, lp, L,
                      loss_id, hyper, sample_weight, batch_losses, outputs, penalty_over_weight,
                      epsilon_on_sqrt_v)
