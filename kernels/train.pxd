# The fused training step: forward keeping what the backward reads, the loss, each layer's
# backward from the last down with its optimizer step right behind its gradient. Shared by
# layers.pyx (mlp_train_step) and embedding.pyx. Inline functions, as dense.pxd.
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport fabs, isfinite, pow
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from abi cimport *
from act cimport act_backward_rows
from arrays cimport buffer, dim, typenum
from dense cimport column_sums, layer_backward
from dropout cimport Dropout, dropout_rows, layer_dropout
from gemm cimport micro_gemm_atb, micro_gemm_nb, transpose
from layer cimport Layer, bias_offset, widest
from losses cimport loss_forward_backward
from network cimport forward_keep, small_weights
from optim cimport Optimizer, optimizer_pass, optimizer_update
from real cimport real
from thread_policy cimport in_parallel
from tuning cimport DW_ROWS, DX_ROWS

# partial sums of penalty_value (independent adds in flight)
cdef enum:
    PENALTY_SUMS = 8


cdef inline bint layers_tile(const Layer* layers, Py_ssize_t L, Py_ssize_t start,
                             Py_ssize_t n_params) noexcept nogil:
    """True when the layers tile params[start:] exactly (as make_layout lays them out)."""
    cdef Py_ssize_t l, end = start
    for l in range(L):
        if layers[l].offset != end:
            return False
        end = bias_offset(&layers[l]) + layers[l].fan_out
    return end == n_params


cdef inline double penalty_value(const real* params, const Layer* layers, Py_ssize_t L,
                                 double scale) noexcept nogil:
    """scale·Σ_l (l1_l·Σ|W_l| + l2_l·ΣW_l²): the kernel penalties of the record, summed in double
    in one fixed order (the same bits at any thread count); W as it is before the update.
    Element i goes to partial sum i % PENALTY_SUMS, the partial sums are added in order: one
    running sum waited on the adder's latency for every element (8 µs a step over the 7 400
    weights of the digits MLP, issue 19); a sum whose factor is 0 is skipped."""
    cdef Py_ssize_t l, i, j, count, whole
    cdef double total, l1, l2, sum_abs, sum_sq, w
    cdef double abs_part[PENALTY_SUMS]
    cdef double sq_part[PENALTY_SUMS]
    cdef const real* W
    total = 0
    for l in range(L):
        l1, l2 = scale * layers[l].l1, scale * layers[l].l2
        if l1 == 0 and l2 == 0:
            continue
        W, count = params + layers[l].offset, layers[l].fan_in * layers[l].fan_out
        whole = count - count % PENALTY_SUMS
        for j in range(PENALTY_SUMS):
            abs_part[j] = sq_part[j] = 0
        if l1 != 0:
            for i in range(whole // PENALTY_SUMS):
                for j in range(PENALTY_SUMS):
                    abs_part[j] += fabs(<double>W[i * PENALTY_SUMS + j])
            for i in range(whole, count):
                abs_part[i - whole] += fabs(<double>W[i])
        if l2 != 0:
            for i in range(whole // PENALTY_SUMS):
                for j in range(PENALTY_SUMS):
                    w = W[i * PENALTY_SUMS + j]
                    sq_part[j] += w * w
            for i in range(whole, count):
                w = W[i]
                sq_part[i - whole] += w * w
        sum_abs = sum_sq = 0
        for j in range(PENALTY_SUMS):
            sum_abs += abs_part[j]
            sum_sq += sq_part[j]
        total += scale * (layers[l].l1 * sum_abs + layers[l].l2 * sum_sq)
    return total


cdef inline void add_penalty_gradient(const real* W, real* dW, Py_ssize_t count, real l1, real l2) noexcept nogil:
    """dW += l1·sign(W) + 2·l2·W over count elements (a slice of dW fresh from its product,
    before its optimizer step). Without l1 (scikit-learn's alpha, Keras's L2) the loop is a
    plain multiply-add the compiler vectorizes; the sign's compare-and-select made it 5% of a
    digits fit (the same bits: g ± 0 is g)."""
    cdef Py_ssize_t i
    cdef real w, g, twice = 2 * l2
    if l1 == 0 and l2 == 0:
        return
    if l1 == 0:
        for i in range(count):
            dW[i] += twice * W[i]
        return
    for i in range(count):
        w = W[i]
        g = twice * w
        if w > 0:
            g = g + l1
        elif w < 0:
            g = g - l1
        dW[i] += g


cdef inline void backward_task(Py_ssize_t task, Py_ssize_t B, Py_ssize_t k, Py_ssize_t n, const real* dz,
                               const real* inp, const real* Wt, real* dW, real* dx,
                               int prev_act, real prev_alpha, const real* prev_z, const real* prev_y,
                               const Dropout* drop, const Optimizer* opt, real* W, real* first,
                               real* second, real l1, real l2) noexcept nogil:
    """Task `task` of backward_tasks: dW's rows (with their kernel penalty l1, l2), then db,
    then dx's row blocks."""
    cdef Py_ssize_t n_dW = (k + DW_ROWS - 1) // DW_ROWS, i0, rows
    if task < n_dW:
        i0 = task * DW_ROWS
        rows = min(DW_ROWS, k - i0)
        micro_gemm_atb(rows, n, B, inp + i0, k, dz, n, dW + i0 * n)
        add_penalty_gradient(W + i0 * n, dW + i0 * n, rows * n, l1, l2)
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
        if drop.threshold:  # the input went through a dropout mask: so does its gradient
            dropout_rows(drop, i0, rows, k, dx + i0 * k, dx + i0 * k)
        act_backward_rows(prev_act, prev_alpha, rows, k, dx + i0 * k, prev_z + i0 * k,
                          prev_y + i0 * k, dx + i0 * k)


cdef inline void backward_tasks(Py_ssize_t B, Py_ssize_t k, Py_ssize_t n, const real* dz,
                                const real* inp, const real* Wt, real* dW, real* dx,
                                int prev_act, real prev_alpha, const real* prev_z, const real* prev_y,
                                const Dropout* drop, const Optimizer* opt, real* W, real* first,
                                real* second, real l1, real l2, int threads) noexcept nogil:
    """One layer's backward on the micro-kernel path as independent tasks over OpenMP
    threads: slices of dW's rows (dW = inpᵀ dz), db (Σ rows of dz) at dW + k·n (W and b, and
    their gradients, lie as params lays them out), and unless dx is NULL,
    row blocks of dx = dz Wᵀ (Wt holds Wᵀ, n x k), each turned at once into the previous
    layer's dz (through the layer's dropout mask ``drop`` first, when its threshold is not 0).
    l1, l2: the layer's kernel penalty, its gradient added to each slice of dW.
    Unless opt is NULL, each slice of W (and b, which follows W) takes its
    optimizer step right after its gradient, while that is still in L1 (nothing reads W
    any more: dx reads the copy Wt); first and second: the optimizer state, indexed like W.
    A static schedule: each thread takes the same tasks, and so the same slices of W, its
    gradient and the optimizer state, at every step, which stay in its core's caches. Every
    output element has one writer: no races, no reductions, and the same result for
    any thread count."""
    cdef Py_ssize_t n_tasks = ((k + DW_ROWS - 1) // DW_ROWS + 1
                               + ((B + DX_ROWS - 1) // DX_ROWS if dx != NULL else 0))
    cdef Py_ssize_t task
    if in_parallel(threads, n_tasks):
        for task in prange(n_tasks, nogil=True, schedule="static", num_threads=threads):
            backward_task(task, B, k, n, dz, inp, Wt, dW, dx, prev_act, prev_alpha, prev_z, prev_y,
                          drop, opt, W, first, second, l1, l2)
    else:
        for task in range(n_tasks):
            backward_task(task, B, k, n, dz, inp, Wt, dW, dx, prev_act, prev_alpha, prev_z, prev_y,
                          drop, opt, W, first, second, l1, l2)


cdef inline Py_ssize_t train_work_size(Py_ssize_t B, const Layer* layers, Py_ssize_t L) noexcept nogil:
    """Elements of train_gradients' work: z and y per layer, the masked input of each layer
    with dropout, two gradient buffers, one Wᵀ."""
    cdef Py_ssize_t l, n_work = 0, biggest = 0
    for l in range(L):
        n_work += 2 * B * layers[l].fan_out
        if layers[l].dropout > 0:
            n_work += B * layers[l].fan_in
        biggest = max(biggest, layers[l].fan_in * layers[l].fan_out)
    return n_work + 2 * B * widest(layers, L) + biggest


cdef inline real* offset_or_null(real* a, Py_ssize_t by) noexcept nogil:
    """a + by, or NULL for an absent buffer (SGD without momentum has no state)."""
    return NULL if a == NULL else a + by


cdef inline double train_gradients(Py_ssize_t B, const real* x, const int64_t* labels,
                                   const real* targets, const real* weights, real* params, real* grads,
                                   const Layer* layers, Py_ssize_t L, int loss_id, real* work,
                                   real** kept, int threads, real* dx, real* outputs,
                                   const Optimizer* opt, real* first, real* second,
                                   double penalty_scale, uint64_t step) noexcept nogil:
    """Forward keeping every layer's y and the z the backward reads (forward_keep; a copy of
    the outputs in ``outputs`` unless it is NULL), the loss, backward from the last layer down
    (dz of each layer is made as soon as its dy is) into the layers' W and b in grads (the
    rest of grads is left as it is);
    dx = dLoss/dx too unless it is NULL (an embedding in front of the network needs it).
    weights: the rows' sample weights, or NULL. The loss and every dW include the layers' kernel
    penalties (l1, l2) times penalty_scale: the value from W before any update, the gradient
    added to each slice of dW as it is made (before its optimizer step). Returns the loss; a loss that is not finite
    ends the call before the backward (no gradient, no update: the step is transactional).
    Unless opt is NULL, each layer's W and b also take the optimizer step (state first and
    second, indexed like params) as soon as their gradient is complete and nothing reads
    them any more: the update runs while the gradient is in cache instead of in a pass of
    its own over the whole buffer. The layers must not overlap (each element updated once).
    Small weights: micro-kernels over `threads` OpenMP threads; large: BLAS.
    step >= 1: each layer with a dropout rate reads its input through that step's mask and its
    input gradient goes through the same mask (dropout.pxd); 0: no dropout (mlp_gradient).
    work: train_work_size elements (z and y per layer, masked inputs, two gradient buffers,
    one Wᵀ); kept: 3 L pointers, set here to each layer's z, y and masked input (or NULL)."""
    cdef Py_ssize_t l, k, n, offset, width = widest(layers, L), used = 0
    cdef bint micro = small_weights(layers, L, sizeof(real))
    cdef real** z_of = kept
    cdef real** y_of = kept + L
    cdef real** in_of = kept + 2 * L
    cdef const real* inp
    cdef Dropout drop
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
    for l in range(L):
        in_of[l] = NULL
        if step and layers[l].dropout > 0:
            in_of[l] = work + used
            used += B * layers[l].fan_in
    dcur = work + used
    dnext = dcur + B * width
    Wt = dnext + B * width
    cdef bint logits_only = loss_id != LOSS_MSE and outputs == NULL
    forward_keep(B, x, params, layers, L, z_of, y_of, in_of, step, logits_only, micro, threads)
    if logits_only:
        z_of[L - 1] = y_of[L - 1]  # the logits (see forward_keep)
    n = layers[L - 1].fan_out
    if outputs != NULL:
        memcpy(outputs, y_of[L - 1], B * n * sizeof(real))
    # the cross-entropies give dLoss/dlogits (the last activation folded in); MSE gives dLoss/dy
    loss = loss_forward_backward(loss_id, B, n, y_of[L - 1] if loss_id == LOSS_MSE else z_of[L - 1],
                                 labels, targets, weights, dcur)
    loss += penalty_value(params, layers, L, penalty_scale)
    if not isfinite(loss):
        return loss
    if loss_id == LOSS_MSE:
        act_backward_rows(<int>layers[L - 1].activation, <real>layers[L - 1].alpha, B, n, dcur,
                          z_of[L - 1], y_of[L - 1], dcur)
    for l in range(L - 1, -1, -1):  # dcur holds this layer's dz
        offset, k, n = layers[l].offset, layers[l].fan_in, layers[l].fan_out
        dW = grads + offset
        d_in = dnext if l > 0 else dx  # the first layer's dx is the network's (NULL: skipped)
        # dW from the input the forward read (masked, with dropout); the mask again on dx
        inp = in_of[l] if in_of[l] != NULL else (x if l == 0 else y_of[l - 1])
        drop = layer_dropout(&layers[l], l, step)
        if micro:
            if d_in != NULL:
                transpose(k, n, params + offset, n, Wt)
            backward_tasks(B, k, n, dcur, inp, Wt, dW, d_in,
                           <int>layers[l - 1].activation if l > 0 else ACT_IDENTITY,
                           <real>layers[l - 1].alpha if l > 0 else 0, z_of[l - 1] if l > 0 else NULL,
                           y_of[l - 1] if l > 0 else NULL, &drop, opt, params + offset,
                           offset_or_null(first, offset), offset_or_null(second, offset),
                           <real>(penalty_scale * layers[l].l1), <real>(penalty_scale * layers[l].l2), threads)
        else:
            layer_backward(B, k, n, dcur, inp, params + offset, NULL,
                           NULL, ACT_IDENTITY, 0, dcur, d_in, dW, dW + k * n)
            add_penalty_gradient(params + offset, dW, k * n, <real>(penalty_scale * layers[l].l1),
                                 <real>(penalty_scale * layers[l].l2))
            if d_in != NULL and drop.threshold:
                dropout_rows(&drop, 0, B, k, d_in, d_in)
            if l > 0:
                act_backward_rows(<int>layers[l - 1].activation, <real>layers[l - 1].alpha, B, k, dnext,
                                  z_of[l - 1], y_of[l - 1], dnext)
            if opt != NULL:  # after dx, the last reader of W
                optimizer_pass(opt, params, grads, first, second, offset, offset + k * n + n, threads)
        dcur, dnext = dnext, dcur
    return loss


cdef inline int read_optimizer(hyper, Optimizer* opt) except -1:
    """opt from the hyper vector (see fusedense.abi), with the step's bias corrections."""
    cdef const double* h = <double*>buffer(hyper, "hyper", cnp.NPY_FLOAT64, -1, N_HYPER, True)
    if h[H_OPTIMIZER] not in (OPT_SGD, OPT_ADAM, OPT_RMSPROP):
        raise ValueError(f"hyper[{H_OPTIMIZER}]: unknown optimizer code {h[H_OPTIMIZER]}")
    opt.kind = <int>h[H_OPTIMIZER]
    opt.lr, opt.beta1, opt.beta2, opt.eps = h[H_LR], h[H_BETA1], h[H_BETA2], h[H_EPS]
    opt.weight_decay, opt.nesterov, opt.decoupled = h[H_WEIGHT_DECAY], h[H_NESTEROV] != 0, h[H_DECOUPLED] != 0
    opt.correction1, opt.correction2 = 1 - pow(h[H_BETA1], h[H_STEP]), 1 - pow(h[H_BETA2], h[H_STEP])
    return 0


cdef inline int check_training(real tag, params, grads, opt_state, hyper, Optimizer* opt) except -1:
    """The arrays every training step shares: grads and opt_state (1 row for SGD, 2 for Adam)
    shaped like params, all writeable; hyper (writeable: H_APPLIED) read into opt."""
    cdef Py_ssize_t P = dim(params, 0, "params")
    cdef int t = typenum(tag)
    read_optimizer(hyper, opt)
    buffer(params, "params", t, -1, P, True)
    buffer(grads, "grads", t, -1, P, True)
    buffer(opt_state, "opt_state", t, 1 if opt.kind == OPT_SGD else 2, P, True)
    return 0


cdef inline void* alloc_train_work(size_t work_bytes, Py_ssize_t L, void** kept) except NULL:
    """train_gradients' work (work_bytes) and its 3 L layer pointers (*kept); free both."""
    cdef void* work = malloc(work_bytes)
    kept[0] = malloc(3 * L * sizeof(void*))
    if work == NULL or kept[0] == NULL:
        free(work)
        free(kept[0])
        raise MemoryError()
    return work
