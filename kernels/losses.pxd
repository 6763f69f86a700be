# Losses on rows of a network's outputs: each row function returns the row's loss and writes
# its gradient, scaled by 1/B (cross-entropies) or 1/(B·C) (element means). Inline functions,
# as dense.pxd.
from libc.stdint cimport int64_t

from abi cimport LOSS_BINARY_XENT, LOSS_CATEGORICAL_XENT, LOSS_SPARSE_XENT
from act cimport exp_nonpos, exp_shifted_row, r_log, r_log1p, relu, sigmoid
from real cimport real


cdef inline real row_max(const real* z, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef real top = z[0]
    for j in range(1, n):
        if z[j] > top:
            top = z[j]
    return top


cdef inline void shift_rows(const real* z, real* shifted, Py_ssize_t B, Py_ssize_t n) noexcept nogil:
    """shifted = z − (its row's largest entry), row by row: what e^(z − top) exponentiates."""
    cdef Py_ssize_t i, j
    cdef real top
    for i in range(B):
        top = row_max(z + i * n, n)
        for j in range(n):
            shifted[i * n + j] = z[i * n + j] - top


cdef inline double xent_row(const real* z, int64_t label, real* dz, Py_ssize_t n, real scale) noexcept nogil:
    """−log softmax(z)[label]; dz = (softmax(z) − onehot(label))·scale, from dz = e^(z − top)
    (top: z's largest entry) as shift_rows and one exp_shifted_row over all rows leave it:
    one exp call per 10-wide row of a classifier cost more than its exps (issue 19)."""
    cdef Py_ssize_t j
    cdef real top = row_max(z, n), total = 0, total_scale
    for j in range(n):
        total += dz[j]
    total_scale = scale / total
    for j in range(n):
        dz[j] *= total_scale
    dz[label] -= scale
    return r_log(total) - (z[label] - top)


cdef inline double xent_probs_row(const real* z, const real* t, real* dz, Py_ssize_t n,
                                  real scale) noexcept nogil:
    """−Σ t log softmax(z); dz = (softmax(z)·Σt − t)·scale."""
    cdef Py_ssize_t j
    cdef real top = row_max(z, n), total = 0, t_sum = 0
    cdef double loss = 0
    exp_shifted_row(z, top, dz, n)  # dz holds e^(z - top) until the total is known
    for j in range(n):
        total += dz[j]
        t_sum += t[j]
    cdef real log_total = r_log(total)
    for j in range(n):
        loss -= t[j] * (z[j] - top - log_total)
        dz[j] = (dz[j] / total * t_sum - t[j]) * scale
    return loss


cdef inline double binary_xent_row(const real* z, const real* t, real* dz, Py_ssize_t n,
                                   real scale) noexcept nogil:
    """Σ log(1 + e^z) − z·t written without overflow; dz = (σ(z) − t)·scale."""
    cdef Py_ssize_t j
    cdef double loss = 0
    for j in range(n):
        loss += relu(z[j]) - z[j] * t[j] + r_log1p(exp_nonpos(-z[j] if z[j] >= 0 else z[j]))
        dz[j] = (sigmoid(z[j]) - t[j]) * scale
    return loss


cdef inline double squared_error_row(const real* y, const real* t, real* dy, Py_ssize_t n,
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


cdef inline double loss_forward_backward(int loss_id, Py_ssize_t B, Py_ssize_t C, const real* outputs,
                                         const int64_t* labels, const real* targets,
                                         const real* weights, real* grad) noexcept nogil:
    """Mean loss of outputs (B x C: logits for the cross-entropies, predictions for MSE) and
    grad = dLoss/doutputs (see fusedense._backends.interface.loss); unless weights is NULL,
    row i's loss and gradient are scaled by weights[i] (the mean still over B rows)."""
    cdef Py_ssize_t i
    cdef double total = 0, row_loss
    cdef real scale = <real>1 / (B if loss_id == LOSS_SPARSE_XENT or loss_id == LOSS_CATEGORICAL_XENT
                                 else B * C)
    cdef real row_scale = scale
    if loss_id == LOSS_SPARSE_XENT:  # every row's exps in one call (xent_row reads them)
        shift_rows(outputs, grad, B, C)
        exp_shifted_row(grad, 0, grad, B * C)
    for i in range(B):
        if weights != NULL:
            row_scale = scale * weights[i]
        if loss_id == LOSS_SPARSE_XENT:
            row_loss = xent_row(outputs + i * C, labels[i], grad + i * C, C, row_scale)
        elif loss_id == LOSS_CATEGORICAL_XENT:
            row_loss = xent_probs_row(outputs + i * C, targets + i * C, grad + i * C, C, row_scale)
        elif loss_id == LOSS_BINARY_XENT:
            row_loss = binary_xent_row(outputs + i * C, targets + i * C, grad + i * C, C, row_scale)
        else:
            row_loss = squared_error_row(outputs + i * C, targets + i * C, grad + i * C, C, row_scale)
        total += row_loss if weights == NULL else row_loss * weights[i]
    return total * scale
