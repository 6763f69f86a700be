"""A token embedding in front of a network (fusedense.embedding): embedding_forward,
embedding_train_step and embedding_generate, each one call with the gather inside.

The table (vocab_size x dim, dim = the first layer's fan_in / context) is the front of the
flat buffer, params[:vocab_size * dim]; the layers (layers.pyx) follow it. Tokens are int64
(n, context). Every token is range-checked before a kernel indexes the table with it, and a
generated token indexes it only when the output layer is vocab_size wide.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from abi cimport LOSS_SPARSE_XENT
from act cimport exp_nonpos
from arrays cimport buffer, dim, is_float32, optional_buffer, typenum
from fusedense._kernels.layers cimport (check_labels, check_network, check_training, forward_plan,
                                        forward_scratch_size, layers_tile, network_forward,
                                        train_gradients, train_work_size, network_threads)
from optim cimport Optimizer, optimizer_pass
from real cimport real

cnp.import_array()


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


cdef Py_ssize_t check_embedding(params, layout, alphas, Py_ssize_t vocab_size, Py_ssize_t context,
                                Py_ssize_t n_out) except -1:
    """The network behind a (vocab_size x dim) table at the front of params; returns dim."""
    cdef Py_ssize_t L = dim(layout, 0, "layout")
    if L < 1:
        raise ValueError("layout: expected at least one layer")
    cdef const int64_t* lay = <int64_t*>buffer(layout, "layout", cnp.NPY_INT64, L, 4)
    cdef Py_ssize_t n_in = lay[1]
    if context < 1 or n_in % context:
        raise ValueError(f"context: the first layer's fan_in {n_in} is not a multiple of context {context}")
    check_network(params, layout, alphas, n_in, n_out if n_out >= 0 else lay[4 * (L - 1) + 2])
    if vocab_size < 1 or vocab_size * (n_in // context) > dim(params, 0, "params"):
        raise ValueError(f"vocab_size: a table of {vocab_size} x {n_in // context} does not fit in params")
    return n_in // context


cdef int check_tokens(tokens, Py_ssize_t n, Py_ssize_t context, Py_ssize_t vocab_size) except -1:
    cdef const int64_t* tok = <int64_t*>buffer(tokens, "tokens", cnp.NPY_INT64, n, context)
    cdef Py_ssize_t i
    for i in range(n * context):
        if not 0 <= tok[i] < vocab_size:
            raise ValueError(f"tokens: expected ids in [0, {vocab_size}), got {tok[i]}")
    return 0


# --- inference --------------------------------------------------------------------------------

cdef int _embedding_forward(real tag, tokens, params, layout, alphas, Py_ssize_t vocab_size,
                            out) except -1:
    cdef Py_ssize_t B = dim(tokens, 0, "tokens"), context = dim(tokens, 1, "tokens")
    cdef Py_ssize_t L = dim(layout, 0, "layout"), n_out = dim(out, 1, "out"), block
    cdef int t = typenum(tag)
    cdef Py_ssize_t width = check_embedding(params, layout, alphas, vocab_size, context, n_out)
    check_tokens(tokens, B, context, vocab_size)
    cdef const real* pp = <real*>buffer(params, "params", t, -1, dim(params, 0, "params"))
    cdef real* outp = <real*>buffer(out, "out", t, B, n_out, True)
    cdef const int64_t* lay = <int64_t*>cnp.PyArray_DATA(layout)
    cdef const int64_t* tok = <int64_t*>cnp.PyArray_DATA(tokens)
    cdef const double* al = <double*>cnp.PyArray_DATA(alphas)
    cdef bint micro
    cdef int threads = forward_plan(B, lay, L, sizeof(real), &block, &micro)
    cdef Py_ssize_t n_x = B * context * width
    cdef real* x = <real*>malloc((n_x + forward_scratch_size(threads, block, lay, L)) * sizeof(real))
    if x == NULL:
        raise MemoryError()
    with nogil:
        gather(tok, B, context, pp, width, x)
        network_forward(B, x, pp, lay, al, L, outp, x + n_x, block, micro, threads)
    free(x)
    return 0


def embedding_forward(tokens, params, layout, alphas, Py_ssize_t vocab_size, out):
    """out = the network's output for token contexts (the gather inside)."""
    if is_float32(params):
        _embedding_forward(<float>0, tokens, params, layout, alphas, vocab_size, out)
    else:
        _embedding_forward(<double>0, tokens, params, layout, alphas, vocab_size, out)


# --- training -----------------------------------------------------------------------------------

cdef double _embedding_train_step(real tag, tokens, labels, params, grads, opt_state, layout,
                                  alphas, hyper, Py_ssize_t vocab_size, outputs) except? -1:
    cdef Py_ssize_t B = dim(tokens, 0, "tokens"), context = dim(tokens, 1, "tokens")
    cdef Py_ssize_t L = dim(layout, 0, "layout"), P = dim(params, 0, "params")
    cdef Py_ssize_t width = check_embedding(params, layout, alphas, vocab_size, context, -1)
    cdef Optimizer opt
    check_training(tag, params, grads, opt_state, layout, alphas, hyper, context * width, &opt)
    check_tokens(tokens, B, context, vocab_size)
    cdef const int64_t* lay = <int64_t*>cnp.PyArray_DATA(layout)
    check_labels(labels, B, lay[4 * (L - 1) + 2])
    cdef real* op = <real*>optional_buffer(outputs, "outputs", typenum(tag), B, lay[4 * (L - 1) + 2], True)
    cdef const int64_t* tok = <int64_t*>cnp.PyArray_DATA(tokens)
    cdef real* pp = <real*>cnp.PyArray_DATA(params)
    cdef real* gp = <real*>cnp.PyArray_DATA(grads)
    cdef real* sp = <real*>cnp.PyArray_DATA(opt_state)
    cdef const int64_t* lab = <int64_t*>cnp.PyArray_DATA(labels)
    cdef const double* al = <double*>cnp.PyArray_DATA(alphas)
    cdef Py_ssize_t n_x = B * context * width, n_table = vocab_size * width
    cdef int threads = network_threads(B, lay, L, sizeof(real))
    # layers tiling params behind the table take their step inside the gradient pass (as in
    # mlp_train_step), the table after its scatter-add; otherwise one pass updates all
    cdef bint fused = layers_tile(lay, L, n_table, P)
    cdef real* x = <real*>malloc((2 * n_x + train_work_size(B, lay, L)) * sizeof(real))
    cdef double loss
    if x == NULL:
        raise MemoryError()
    with nogil:  # x, then dLoss/dx, then the gradient pass's work
        gather(tok, B, context, pp, width, x)
        # the table's gradient starts at zero for the scatter-add; unfused, so do the gaps (as
        # in the reference)
        memset(gp, 0, (n_table if fused else P) * sizeof(real))
        loss = train_gradients(B, x, lab, NULL, pp, gp, lay, al, L, LOSS_SPARSE_XENT,
                               x + 2 * n_x, threads, x + n_x, op, &opt if fused else NULL,
                               sp, sp + P)
        scatter_add(tok, B, context, x + n_x, width, gp)
        optimizer_pass(&opt, pp, gp, sp, sp + P, 0, n_table if fused else P, threads)
    free(x)
    return loss


def embedding_train_step(tokens, labels, params, grads, opt_state, layout, alphas, hyper,
                         Py_ssize_t vocab_size, outputs=None):
    """Gather, forward, softmax cross-entropy, backward down to dLoss/dx, scatter-add of dx
    into the table's rows of grads, optimizer update of the whole buffer; returns the loss.
    outputs, unless None, the network's outputs before the update."""
    if is_float32(params):
        return _embedding_train_step(<float>0, tokens, labels, params, grads, opt_state, layout,
                                     alphas, hyper, vocab_size, outputs)
    return _embedding_train_step(<double>0, tokens, labels, params, grads, opt_state, layout,
                                 alphas, hyper, vocab_size, outputs)


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


cdef void generate(const real* params, const int64_t* lay, const double* alphas, Py_ssize_t L,
                   Py_ssize_t width, Py_ssize_t context, const double* uniforms, Py_ssize_t n,
                   Py_ssize_t max_len, double temperature, int64_t boundary, int64_t* tokens,
                   int64_t* lengths, Py_ssize_t* rows, int64_t* ctx, real* x, real* logits,
                   double* cdf, real* scratch) noexcept nogil:
    """reference.embedding_generate. The running rows stay packed at the front of ctx and
    logits (a finished row is dropped by moving the later ones up), so each step's forward
    covers only them; rows[r] is the sequence number of running row r."""
    cdef Py_ssize_t vocab = lay[4 * (L - 1) + 2], running = n, kept, r, p, t, row, block
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
        threads = forward_plan(running, lay, L, sizeof(real), &block, &micro)
        network_forward(running, x, params, lay, alphas, L, logits, scratch, block, micro, threads)
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


cdef int _embedding_generate(real tag, params, layout, alphas, Py_ssize_t vocab_size,
                             Py_ssize_t context, uniforms, double temperature, int64_t boundary,
                             tokens, lengths) except -1:
    cdef Py_ssize_t n = dim(uniforms, 0, "uniforms"), max_len = dim(uniforms, 1, "uniforms")
    cdef Py_ssize_t L = dim(layout, 0, "layout"), block
    cdef int t = typenum(tag)
    # the output layer is vocab_size wide: every sampled token indexes the table
    cdef Py_ssize_t width = check_embedding(params, layout, alphas, vocab_size, context, vocab_size)
    if not 0 <= boundary < vocab_size:
        raise ValueError(f"boundary: expected a token id in [0, {vocab_size}), got {boundary}")
    if not temperature >= 0:
        raise ValueError(f"temperature: expected a number >= 0, got {temperature}")
    cdef const real* pp = <real*>buffer(params, "params", t, -1, dim(params, 0, "params"))
    cdef const double* up = <double*>buffer(uniforms, "uniforms", cnp.NPY_FLOAT64, n, max_len)
    cdef int64_t* tp = <int64_t*>buffer(tokens, "tokens", cnp.NPY_INT64, n, max_len, True)
    cdef int64_t* lp = <int64_t*>buffer(lengths, "lengths", cnp.NPY_INT64, -1, n, True)
    cdef const int64_t* lay = <int64_t*>cnp.PyArray_DATA(layout)
    cdef const double* al = <double*>cnp.PyArray_DATA(alphas)
    cdef bint micro
    cdef int threads = forward_plan(n, lay, L, sizeof(real), &block, &micro)  # the most a step needs
    cdef Py_ssize_t n_x = n * context * width, n_scratch = forward_scratch_size(threads, block, lay, L)
    cdef real* x = <real*>malloc((n_x + n * vocab_size + n_scratch) * sizeof(real))
    cdef Py_ssize_t* rows = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
    cdef int64_t* ctx = <int64_t*>malloc(n * context * sizeof(int64_t))
    cdef double* cdf = <double*>malloc(vocab_size * sizeof(double))
    if x == NULL or rows == NULL or ctx == NULL or cdf == NULL:
        free_all(x, rows, ctx, cdf)
        raise MemoryError()
    with nogil:
        generate(pp, lay, al, L, width, context, up, n, max_len,
                 temperature, boundary, tp, lp, rows, ctx, x, x + n_x, cdf, x + n_x + n * vocab_size)
    free_all(x, rows, ctx, cdf)
    return 0


cdef void free_all(void* a, void* b, void* c, void* d) noexcept nogil:
    free(a)
    free(b)
    free(c)
    free(d)


def embedding_generate(params, layout, alphas, Py_ssize_t vocab_size, Py_ssize_t context, uniforms,
                       double temperature, int64_t boundary, tokens, lengths):
    """Batched autoregressive sampling, the whole loop in one call (see
    fusedense.reference.embedding_generate); writes tokens (n, max_len) and lengths (n,)."""
    if is_float32(params):
        _embedding_generate(<float>0, params, layout, alphas, vocab_size, context, uniforms,
                            temperature, boundary, tokens, lengths)
    else:
        _embedding_generate(<double>0, params, layout, alphas, vocab_size, context, uniforms,
                            temperature, boundary, tokens, lengths)
