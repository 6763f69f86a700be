"""A token embedding in front of a network (fusedense.embedding): embedding_forward,
embedding_train_step and embedding_generate, each one call with the gather inside.

The table (vocab_size x dim, dim = the first layer's fan_in / context) is the front of the
flat buffer, params[:vocab_size * dim]; the layers (network.pxd, train.pxd) follow it. Tokens are int64
(n, context), in range (the gate checks them); a generated token indexes the table only
because the output layer is vocab_size wide.
"""
cimport numpy as cnp
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from abi cimport H_APPLIED, H_PENALTY_SCALE, H_STEP, LOSS_SPARSE_XENT
from act cimport exp_nonpos
from arrays cimport buffer, dim, is_float32, optional_buffer, typenum
from layer cimport Layer, records
from network cimport forward_plan, forward_scratch_size, network_forward, network_threads
from optim cimport Optimizer, optimizer_pass
from real cimport real
from thread_policy cimport fd_num_threads, fd_set_num_threads
from train cimport alloc_train_work, check_training, layers_tile, train_gradients, train_work_size

cnp.import_array()


def set_num_threads(int n):
    fd_set_num_threads(n)


def get_num_threads():
    return fd_num_threads


cdef void gather(const int64_t* tokens, Py_ssize_t n, Py_ssize_t context, const real* table,
                 Py_ssize_t width, real* x) noexcept nogil:
    """x[i] = the table rows (width wide) of tokens[i], side by side."""
    cdef Py_ssize_t i
    for i in range(n * context):
        memcpy(x + i * width, table + tokens[i] * width, width * sizeof(real))


cdef void scatter_add(const int64_t* tokens, Py_ssize_t n, Py_ssize_t context, const real* dx,
                      Py_ssize_t width, real* table_grad) noexcept nogil:
    """table_grad[v] += the dx slices of every (row, position) holding token v, in order."""
    cdef Py_ssize_t i, c
    cdef real* row
    for i in range(n * context):
        row = table_grad + tokens[i] * width
        for c in range(width):
            row[c] += dx[i * width + c]


cdef inline Py_ssize_t table_width(const Layer* layers, Py_ssize_t context) noexcept nogil:
    """dim: a context of tokens, side by side, is the first layer's input."""
    return layers[0].fan_in // context


# --- inference --------------------------------------------------------------------------------

cdef int _embedding_forward(real tag, tokens, params, const Layer* layers, Py_ssize_t L,
                            out) except -1:
    cdef Py_ssize_t B = dim(tokens, 0, "tokens"), context = dim(tokens, 1, "tokens"), block
    cdef Py_ssize_t width = table_width(layers, context)
    cdef int t = typenum(tag)
    cdef const int64_t* tok = <int64_t*>buffer(tokens, "tokens", cnp.NPY_INT64, B, context)
    cdef const real* pp = <real*>buffer(params, "params", t, -1, dim(params, 0, "params"))
    cdef real* outp = <real*>buffer(out, "out", t, B, layers[L - 1].fan_out, True)
    cdef bint micro
    cdef int threads = forward_plan(B, layers, L, sizeof(real), &block, &micro)
    cdef Py_ssize_t n_x = B * context * width
    cdef real* x = <real*>malloc((n_x + forward_scratch_size(threads, block, layers, L)) * sizeof(real))
    if x == NULL:
        raise MemoryError()
    with nogil:
        gather(tok, B, context, pp, width, x)
        network_forward(B, x, pp, layers, L, outp, x + n_x, block, micro, threads)
    free(x)
    return 0


def embedding_forward(tokens, params, layers, Py_ssize_t vocab_size, out):
    """out = the network's output for token contexts (the gather inside)."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(params):
        _embedding_forward(<float>0, tokens, params, lp, L, out)
    else:
        _embedding_forward(<double>0, tokens, params, lp, L, out)


# --- training -----------------------------------------------------------------------------------

cdef double _embedding_train_step(real tag, tokens, labels, params, grads, opt_state,
                                  const Layer* layers, Py_ssize_t L, hyper, Py_ssize_t vocab_size,
                                  outputs) except? -1:
    cdef Py_ssize_t B = dim(tokens, 0, "tokens"), context = dim(tokens, 1, "tokens")
    cdef Py_ssize_t P = dim(params, 0, "params"), width = table_width(layers, context)
    cdef Optimizer opt
    check_training(tag, params, grads, opt_state, hyper, &opt)
    cdef double* h = <double*>cnp.PyArray_DATA(hyper)
    cdef const int64_t* tok = <int64_t*>buffer(tokens, "tokens", cnp.NPY_INT64, B, context)
    cdef const int64_t* lab = <int64_t*>buffer(labels, "labels", cnp.NPY_INT64, -1, B)
    cdef real* op = <real*>optional_buffer(outputs, "outputs", typenum(tag), B,
                                           layers[L - 1].fan_out, True)
    cdef real* pp = <real*>cnp.PyArray_DATA(params)
    cdef real* gp = <real*>cnp.PyArray_DATA(grads)
    cdef real* sp = <real*>cnp.PyArray_DATA(opt_state)
    cdef Py_ssize_t n_x = B * context * width, n_table = vocab_size * width
    cdef int threads = network_threads(B, layers, L, sizeof(real), True)
    # layers tiling params behind the table take their step inside the gradient pass (as in
    # mlp_train_step), the table after its scatter-add; otherwise one pass updates all
    cdef bint fused = layers_tile(layers, L, n_table, P)
    cdef real** kept
    cdef real* x = <real*>alloc_train_work((2 * n_x + train_work_size(B, layers, L)) * sizeof(real),
                                           L, <void**>&kept)
    cdef double loss
    with nogil:  # x, then dLoss/dx, then the gradient pass's work
        gather(tok, B, context, pp, width, x)
        # the table's gradient starts at zero for the scatter-add; unfused, so do the gaps (as
        # in the reference)
        memset(gp, 0, (n_table if fused else P) * sizeof(real))
        loss = train_gradients(B, x, lab, NULL, NULL, pp, gp, layers, L, LOSS_SPARSE_XENT,
                               x + 2 * n_x, kept, threads, x + n_x, op, &opt if fused else NULL,
                               sp, sp + P, h[H_PENALTY_SCALE], <uint64_t>h[H_STEP])
        if isfinite(loss):  # else nothing was updated (transactional, as mlp_train_step)
            scatter_add(tok, B, context, x + n_x, width, gp)
            optimizer_pass(&opt, pp, gp, sp, sp + P, 0, n_table if fused else P, threads)
            h[H_APPLIED] = h[H_STEP]
    free(x)
    free(kept)
    return loss


def embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper,
                         Py_ssize_t vocab_size, outputs):
    """Gather, forward, softmax cross-entropy, backward down to dLoss/dx, scatter-add of dx
    into the table's rows of grads, optimizer update of the whole buffer; returns the loss.
    outputs, unless None, the network's outputs before the update."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(params):
        return _embedding_train_step(<float>0, tokens, labels, params, grads, opt_state,
                                     lp, L, hyper, vocab_size, outputs)
    return _embedding_train_step(<double>0, tokens, labels, params, grads, opt_state, lp, L, hyper,
                                 vocab_size, outputs)


# --- generation -----------------------------------------------------------------------------

cdef Py_ssize_t sample_row(const real* logits, Py_ssize_t n, double temperature, double u,
                           double* cdf) noexcept nogil:
    """reference.sample_tokens for one row, in double whatever real is. The exps come first in
    a loop of their own (exp_nonpos vectorizes; libm's exp cost a tenth of a batch-256 step),
    then the running sum in NumPy's order; exp_nonpos is within an ulp of NumPy's exp, so the
    same uniforms give the same tokens unless one falls within rounding of a CDF step."""
    cdef Py_ssize_t j, best = 0
    cdef double top = logits[0], threshold
    for j in range(1, n):
        if logits[j] > top:
            best, top = j, logits[j]
    if temperature == 0:
        return best
    for j in range(n):
        cdf[j] = exp_nonpos((<double>logits[j] - top) / temperature)
    for j in range(1, n):
        cdf[j] += cdf[j - 1]
    threshold = u * cdf[n - 1]
    for j in range(n):
        if not cdf[j] < threshold:
            return j
    return n - 1


cdef void generate(const real* params, const Layer* layers, Py_ssize_t L,
                   Py_ssize_t width, Py_ssize_t context, const double* uniforms, Py_ssize_t n,
                   Py_ssize_t max_len, double temperature, int64_t boundary, int64_t* tokens,
                   int64_t* lengths, Py_ssize_t* rows, int64_t* ctx, real* x, real* logits,
                   double* cdf, real* scratch) noexcept nogil:
    """reference.embedding_generate. The running rows stay packed at the front of ctx and
    logits (a finished row is dropped by moving the later ones up), so each step's forward
    covers only them; rows[r] is the sequence number of running row r."""
    cdef Py_ssize_t vocab = layers[L - 1].fan_out, running = n, kept, r, p, t, row, block
    cdef int64_t token
    cdef bint micro
    cdef int threads
    for r in range(n):
        rows[r] = r
        lengths[r] = max_len
    for r in range(n * context):
        ctx[r] = boundary
    for r in range(n * max_len):
        tokens[r] = boundary
    for t in range(max_len):
        if running == 0:
            break
        gather(ctx, running, context, params, width, x)
        threads = forward_plan(running, layers, L, sizeof(real), &block, &micro)
        network_forward(running, x, params, layers, L, logits, scratch, block, micro, threads)
        kept = 0
        for r in range(running):
            row = rows[r]
            token = sample_row(logits + r * vocab, vocab, temperature, uniforms[row * max_len + t], cdf)
            if token == boundary:
                lengths[row] = t
                continue
            tokens[row * max_len + t] = token
            rows[kept] = row
            for p in range(context - 1):  # kept <= r: row `kept` is done with, or is row r itself
                ctx[kept * context + p] = ctx[r * context + p + 1]
            ctx[kept * context + context - 1] = token
            kept += 1
        running = kept


cdef int _embedding_generate(real tag, params, const Layer* layers, Py_ssize_t L,
                             Py_ssize_t vocab_size, Py_ssize_t context, uniforms,
                             double temperature, int64_t boundary, tokens, lengths) except -1:
    cdef Py_ssize_t n = dim(uniforms, 0, "uniforms"), max_len = dim(uniforms, 1, "uniforms"), block
    cdef Py_ssize_t width = table_width(layers, context)
    cdef int t = typenum(tag)
    cdef const real* pp = <real*>buffer(params, "params", t, -1, dim(params, 0, "params"))
    cdef const double* up = <double*>buffer(uniforms, "uniforms", cnp.NPY_FLOAT64, n, max_len)
    cdef int64_t* tp = <int64_t*>buffer(tokens, "tokens", cnp.NPY_INT64, n, max_len, True)
    cdef int64_t* lp = <int64_t*>buffer(lengths, "lengths", cnp.NPY_INT64, -1, n, True)
    cdef bint micro
    cdef int threads = forward_plan(n, layers, L, sizeof(real), &block, &micro)  # the most a step needs
    cdef Py_ssize_t n_x = n * context * width, n_scratch = forward_scratch_size(threads, block, layers, L)
    cdef real* x = <real*>malloc((n_x + n * vocab_size + n_scratch) * sizeof(real))
    cdef Py_ssize_t* rows = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
    cdef int64_t* ctx = <int64_t*>malloc(n * context * sizeof(int64_t))
    cdef double* cdf = <double*>malloc(vocab_size * sizeof(double))
    if x == NULL or rows == NULL or ctx == NULL or cdf == NULL:
        free_all(x, rows, ctx, cdf)
        raise MemoryError()
    with nogil:
        generate(pp, layers, L, width, context, up, n, max_len,
                 temperature, boundary, tp, lp, rows, ctx, x, x + n_x, cdf, x + n_x + n * vocab_size)
    free_all(x, rows, ctx, cdf)
    return 0


cdef void free_all(void* a, void* b, void* c, void* d) noexcept nogil:
    free(a)
    free(b)
    free(c)
    free(d)


def embedding_generate(params, layers, Py_ssize_t vocab_size, Py_ssize_t context, uniforms,
                       double temperature, int64_t boundary, tokens, lengths):
    """Batched autoregressive sampling, the whole loop in one call (see
    fusedense.reference.embedding_generate); writes tokens (n, max_len) and lengths (n,)."""
    cdef Py_ssize_t L
    cdef const Layer* lp = records(layers, &L)
    if is_float32(params):
        _embedding_generate(<float>0, params, lp, L, vocab_size, context, uniforms,
                            temperature, boundary, tokens, lengths)
    else:
        _embedding_generate(<double>0, params, lp, L, vocab_size, context, uniforms,
                            temperature, boundary, tokens, lengths)
