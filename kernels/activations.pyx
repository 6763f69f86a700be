"""Activation forward and backward over a (rows, cols) batch, in place of the caller's
outputs. Element-wise activations run over the flat buffer in chunks; softmax and
log_softmax run row by row. Large arrays are split across OpenMP threads."""
cimport numpy as cnp
from cython.parallel cimport prange

from abi cimport *
from act cimport act_backward_row, act_forward_row, check_act, needs_z
from arrays cimport buffer, is_float32, optional_buffer, typenum
from thread_policy cimport elementwise_threads, fd_num_threads, fd_set_num_threads, in_parallel
from tuning cimport ACTIVATION_CHUNK
from real cimport real

cnp.import_array()

#: The compiled codes, for tests/test_abi.py to compare with fusedense.abi and the registry.
ABI = {
    "activations": [ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_SIGMOID, ACT_TANH,
                    ACT_GELU, ACT_GELU_ERF, ACT_SILU, ACT_SOFTPLUS, ACT_SOFTMAX,
                    ACT_LOG_SOFTMAX],
    "n_activations": N_ACTIVATIONS,
    "LOSS_SPARSE_XENT": LOSS_SPARSE_XENT, "LOSS_CATEGORICAL_XENT": LOSS_CATEGORICAL_XENT,
    "LOSS_BINARY_XENT": LOSS_BINARY_XENT, "LOSS_MSE": LOSS_MSE,
    "OPT_SGD": OPT_SGD, "OPT_ADAM": OPT_ADAM, "OPT_ADAGRAD": OPT_ADAGRAD, "OPT_RMSPROP": OPT_RMSPROP,
    "H_OPTIMIZER": H_OPTIMIZER, "H_LR": H_LR, "H_BETA1": H_BETA1, "H_BETA2": H_BETA2,
    "H_EPS": H_EPS, "H_WEIGHT_DECAY": H_WEIGHT_DECAY, "H_NESTEROV": H_NESTEROV,
    "H_DECOUPLED": H_DECOUPLED, "H_STEP": H_STEP, "H_APPLIED": H_APPLIED,
    "H_PENALTY_SCALE": H_PENALTY_SCALE, "N_HYPER": N_HYPER,
}


def set_num_threads(int n):
    fd_set_num_threads(n)


def get_num_threads():
    return fd_num_threads


cdef inline Py_ssize_t split(int act, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t* width) noexcept nogil:
    """How the batch is cut into independent pieces: whole rows for the row-wise activations,
    flat chunks otherwise. Returns the piece count; *width is the piece length."""
    if act == ACT_SOFTMAX or act == ACT_LOG_SOFTMAX:
        width[0] = cols
        return rows
    width[0] = ACTIVATION_CHUNK
    return (rows * cols + ACTIVATION_CHUNK - 1) // ACTIVATION_CHUNK


cdef int _forward(real tag, z, int act, double alpha, y) except -1:
    cdef Py_ssize_t rows = z.shape[0], cols = z.shape[1], total = rows * cols, width, p
    cdef const real* zp = <real*>buffer(z, "z", typenum(tag), rows, cols)
    cdef real* yp = <real*>buffer(y, "y", typenum(tag), rows, cols, True)
    cdef Py_ssize_t pieces = split(act, rows, cols, &width)
    if in_parallel(elementwise_threads(fd_num_threads, total), pieces):
        for p in prange(pieces, nogil=True, schedule="static", num_threads=fd_num_threads):
            act_forward_row(act, <real>alpha, zp + p * width, yp + p * width,
                            min(width, total - p * width))
    else:
        with nogil:
            for p in range(pieces):
                act_forward_row(act, <real>alpha, zp + p * width, yp + p * width,
                                min(width, total - p * width))
    return 0


cdef int _backward(real tag, dy, z, y, int act, double alpha, dz) except -1:
    cdef Py_ssize_t rows = dy.shape[0], cols = dy.shape[1], total = rows * cols, width, p
    cdef const real* dyp = <real*>buffer(dy, "dy", typenum(tag), rows, cols)
    cdef const real* zp = <real*>optional_buffer(z, "z", typenum(tag), rows, cols)
    cdef const real* yp = <real*>optional_buffer(y, "y", typenum(tag), rows, cols)
    cdef real* dzp = <real*>buffer(dz, "dz", typenum(tag), rows, cols, True)
    cdef Py_ssize_t pieces = split(act, rows, cols, &width)
    if zp == NULL and (yp == NULL or needs_z(act)):
        raise ValueError(f"z: activation id {act} needs z to compute its derivative")
    if in_parallel(elementwise_threads(fd_num_threads, total), pieces):
        for p in prange(pieces, nogil=True, schedule="static", num_threads=fd_num_threads):
            backward_piece(act, <real>alpha, dyp, zp, yp, dzp, p * width,
                           min(width, total - p * width))
    else:
        with nogil:
            for p in range(pieces):
                backward_piece(act, <real>alpha, dyp, zp, yp, dzp, p * width,
                               min(width, total - p * width))
    return 0


cdef inline void backward_piece(int act, real alpha, const real* dy, const real* z, const real* y,
                                real* dz, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    """act_backward_row on elements [start, start + n) (z and y may be NULL)."""
    act_backward_row(act, alpha, dy + start, NULL if z == NULL else z + start,
                     NULL if y == NULL else y + start, dz + start, n)


def activation_forward(z, int act_id, double alpha, y):
    """y = act(z) for a (rows, cols) batch."""
    check_act(act_id)
    if is_float32(z):
        _forward(<float>0, z, act_id, alpha, y)
    else:
        _forward(<double>0, z, act_id, alpha, y)


def activation_backward(dy, z, y, int act_id, double alpha, dz):
    """dz = dy · act'(z) (from y where the activation allows; z or y may be None)."""
    check_act(act_id)
    if is_float32(dy):
        _backward(<float>0, dy, z, y, act_id, alpha, dz)
    else:
        _backward(<double>0, dy, z, y, act_id, alpha, dz)
